"""Exercise 1, Pods and containers: the checks of ``kubelab lab check 1``.

A multi-container pod: an app and a logger sidecar sharing the pod's network (localhost,
one IP), an emptyDir volume and the pod's IPC namespace; the pod behind a ClusterIP, a
NodePort and an Ingress (README.md beside this file). kubelab/course/ctx.py has what
the checks use; ``TASKS``, at the end, names the tasks.
"""

from __future__ import annotations

import re

from kubelab.course.ctx import Ctx, Failed, wait

#: An access log line of busybox httpd (-vv) for a request from the loopback address.
LOOPBACK = re.compile(r'^(127\.0\.0\.1|\[::1\]|\[::ffff:127\.0\.0\.1\]):\d+: url:',
                      re.MULTILINE)
ACCESS = re.compile(r'^\S+:\d+: url:/', re.MULTILINE)


def _web(ctx: Ctx) -> dict:
    pod = ctx.get('Pod', 'web')
    if pod is None:
        raise Failed('there is no pod web in namespace lab-01')
    return pod


def ex1_two_containers(ctx: Ctx):
    pod = _web(ctx)
    names = [c['name'] for c in pod['spec']['containers']]
    if len(names) < 2:
        raise Failed(f'pod web has {len(names)} container ({", ".join(names)}): add a '
                     'logger sidecar container to its spec.containers')
    if not ctx.ready(pod):
        raise Failed(f'pod web is not ready: {ctx.why_not_ready(pod)}')


def ex1_one_ip(ctx: Ctx):
    pod = _web(ctx)
    if not pod.get('status', {}).get('podIP'):
        raise Failed('pod web has no IP yet')
    client = ctx.client_pod()
    [r] = ctx.http(client, pod['status']['podIP'], 8080, '/hostname')
    if not r['ok']:
        raise Failed(f'{pod["status"]["podIP"]}:8080 from the client pod: {r["error"]}: '
                     'the app container must listen on 8080')
    if r['body'].strip() != 'web':
        raise Failed(f'the pod IP answered as {r["body"]!r}, not web')


def _sidecars(ctx: Ctx) -> list[str]:
    pod = _web(ctx)
    return [c['name'] for c in pod['spec']['containers'] if c['name'] != 'app']


def _sidecar_logs(ctx: Ctx) -> dict:
    out = {}
    for name in _sidecars(ctx):
        proc = ctx.lab.kubelab('logs', '-n', ctx.ns, 'web', '-c', name, check=False)
        out[name] = proc.stdout
    return out


def _last_lines(logs: dict) -> str:
    return '; '.join(f'{n}: {(t.strip().splitlines() or ["(empty)"])[-1][:80]}'
                     for n, t in logs.items())


def ex1_shared_log(ctx: Ctx):
    if not _sidecars(ctx):
        raise Failed('pod web has no sidecar container to read the app\'s log')
    if wait(lambda: any(ACCESS.search(t) for t in _sidecar_logs(ctx).values()), 6):
        return
    raise Failed('the logger\'s log shows none of the app\'s access log: the app writes '
                 '/var/log/app/access.log in its own container\'s filesystem, which no '
                 'other container sees; mount one emptyDir volume in both containers at '
                 '/var/log/app (last line: ' + _last_lines(_sidecar_logs(ctx)) + ')')


def ex1_localhost(ctx: Ctx):
    if not _sidecars(ctx):
        raise Failed('pod web has no sidecar container to call the app')
    if wait(lambda: any(LOOPBACK.search(t) for t in _sidecar_logs(ctx).values()), 6):
        return
    raise Failed('no access log line shows a request from the loopback address: let the '
                 'logger call http://localhost:8080/hostname (the app sees it come from '
                 '127.0.0.1 or ::1) and read the shared log (last line: '
                 + _last_lines(_sidecar_logs(ctx)) + ')')


def ex1_ipc(ctx: Ctx):
    sidecars = _sidecars(ctx)
    if not sidecars:
        raise Failed('pod web has no sidecar container to look at the pod\'s IPC')
    proc = ctx.lab.kubelab('exec', '-n', ctx.ns, 'web', '-c', sidecars[0], '--', 'ls',
                           '/dev/mqueue', check=False)
    if 'app-events' not in proc.stdout.split():
        raise Failed(f'the {sidecars[0]} container does not see the app\'s message queue '
                     f'/dev/mqueue/app-events ({(proc.stdout + proc.stderr).strip()!r}): '
                     'the containers of a pod share one IPC namespace')
    proc = ctx.exec(ctx.client_pod(), 'ls', '/dev/mqueue')
    if 'app-events' in proc.stdout.split():
        raise Failed('the client pod sees the queue app-events: is the app running in '
                     'the client pod too?')


def ex1_services(ctx: Ctx):
    svc = ctx.service('web')
    [r] = ctx.http(ctx.client_pod(), svc['spec']['clusterIP'], 80, '/hostname')
    if not r['ok'] or r['body'].strip() != 'web':
        raise Failed(f'Service web ({svc["spec"]["clusterIP"]}:80) from the client pod: '
                     f'{r.get("error") or r["body"]!r}: {ctx.diagnose("web") or ""}')
    worker = ctx.nodes['worker-1']
    [r] = ctx.http('host/client-1', worker, 30100, '/hostname')
    if not r['ok'] or r['body'].strip() != 'web':
        raise Failed(f'NodePort {worker}:30100 from client-1: '
                     f'{r.get("error") or r["body"]!r}')
    [r] = ctx.request('host/client-1', worker, 80, '/hostname',
                      host_header='web.lab-01.example')
    if r.get('status') != 200 or r.get('body', '').strip() != 'web':
        raise Failed(f'http://web.lab-01.example/hostname through the Ingress on '
                     f'worker-1: HTTP {r.get("status")} {r.get("error") or ""}')


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ('pod web runs an app and a logger sidecar, and is ready', ex1_two_containers),
    ('the app answers on the pod IP from another node', ex1_one_ip),
    ("the logger reads the app's access log through a shared emptyDir", ex1_shared_log),
    ('the logger calls the app over localhost', ex1_localhost),
    ("the app's message queue is the pod's: the logger sees it, another pod does not",
     ex1_ipc),
    ('the pod answers through its ClusterIP, its NodePort and the Ingress', ex1_services),
]
