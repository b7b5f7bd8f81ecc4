"""Exercise 1, Pods and containers: the checks of ``kubelab lab check 1``.

A multi-container pod: app + logger sidecar over localhost, one IP (README.md beside
this file). kubelab/course/ctx.py has what the checks use; ``TASKS``, at the end, names
the tasks.
"""

from __future__ import annotations

from kubelab.course.ctx import Ctx, Failed, wait


def ex1_two_containers(ctx: Ctx):
    pod = ctx.get('Pod', 'web')
    if pod is None:
        raise Failed('there is no pod web in namespace lab-01')
    names = [c['name'] for c in pod['spec']['containers']]
    if len(names) < 2:
        raise Failed(f'pod web has {len(names)} container ({", ".join(names)}): add a '
                     'logger sidecar container to its spec.containers')
    if not ctx.ready(pod):
        raise Failed(f'pod web is not ready: {ctx.why_not_ready(pod)}')


def ex1_one_ip(ctx: Ctx):
    pod = ctx.get('Pod', 'web')
    if pod is None or not pod.get('status', {}).get('podIP'):
        raise Failed('pod web has no IP yet')
    client = ctx.client_pod()
    [r] = ctx.http(client, pod['status']['podIP'], 8080, '/hostname')
    if not r['ok']:
        raise Failed(f'{pod["status"]["podIP"]}:8080 from the client pod: {r["error"]}: '
                     'the app container must listen on 8080')
    if r['body'] != 'web':
        raise Failed(f'the pod IP answered as {r["body"]!r}, not web')


def _sidecar_logs(ctx: Ctx) -> dict:
    pod = ctx.get('Pod', 'web') or {'spec': {'containers': []}}
    out = {}
    for c in pod['spec']['containers']:
        if 'agnhost' in c.get('image', ''):
            continue
        proc = ctx.lab.kubelab('logs', '-n', ctx.ns, 'web', '-c', c['name'], check=False)
        out[c['name']] = proc.stdout
    return out


def ex1_localhost(ctx: Ctx):
    def seen():
        return any('127.0.0.1:' in text for text in _sidecar_logs(ctx).values())
    if _sidecar_logs(ctx) and wait(seen, 5):
        return
    logs = _sidecar_logs(ctx)
    if not logs:
        raise Failed('pod web has no sidecar container (image busybox) to log anything')
    last = {n: (t.strip().splitlines() or ['(empty)'])[-1][:80] for n, t in logs.items()}
    raise Failed('no sidecar log shows an answer from the app over localhost (the app\'s '
                 '/clientip says 127.0.0.1:PORT when called on localhost:8080); last line: '
                 + '; '.join(f'{n}: {line}' for n, line in last.items()))


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ('pod web runs an app and a logger sidecar, and is ready', ex1_two_containers),
    ('the app answers on the pod IP from another node', ex1_one_ip),
    ('the logger reads the app over localhost', ex1_localhost),
]
