"""``kubelab lab``: the guided exercises of ``labs/`` and their automatic checks.

Each exercise lives in ``labs/NN-slug/`` (README.md, ``start/`` and ``solution/``
manifests) and keeps its objects in its own namespace ``lab-NN``; objects it must put
elsewhere carry the label ``kubelab.io/lab: "NN"``. ``reset`` deletes exactly those.

The checks are declared here, one table per exercise: ``(task title, check function)``.
A check sends real traffic through the running lab (from the exercise's ``client`` pod
or from an external host) and reads the objects; it returns quietly when the task is
done and raises ``Failed(hint)`` otherwise, the hint naming what is wrong. Checks judge
the result, never the text of the manifests, so any correct solution passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from kubelab import printers
from kubelab.client import Client
from kubelab.labctl import LabControl
from services.errors import KubelabError, NotFound
from services.manifests import read_paths

LABS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'labs')
LABEL = 'kubelab.io/lab'
#: What reset deletes when it finds it labelled outside the exercise's namespace.
LABELLED_KINDS = ('HTTPRoute', 'Gateway', 'Ingress', 'Service', 'Deployment', 'Pod',
                  'Secret')


class Failed(Exception):
    """A task is not done; the message is the hint."""


@dataclass
class Exercise:
    number: int
    slug: str
    title: str
    summary: str
    tasks: list[tuple[str, Callable[['Ctx'], None]]] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return f'lab-{self.number:02d}'

    @property
    def directory(self) -> str:
        return os.path.join(LABS_DIR, f'{self.number:02d}-{self.slug}')


# ---------------------------------------------------------------- what checks use
class Ctx:
    """The running lab seen from one exercise: its objects, and traffic helpers that
    run kubelab.netprobe in a pod of the exercise or on an external host."""

    def __init__(self, lab: LabControl, ex: Exercise):
        self.lab, self.ex, self.ns = lab, ex, ex.namespace
        self.client: Client = lab.client
        info = self.client.lab()
        self.nodes = {n['name']: n['ip'] for n in info['nodes']}
        self.hosts = {h['name']: h['ip'] for h in info['hosts']}
        self.node_of_ip = {ip: name for name, ip in self.nodes.items()}

    # -- objects
    def get(self, kind: str, name: str) -> dict | None:
        try:
            return self.client.get(kind, self.ns, name)
        except NotFound:
            return None

    def service(self, name: str) -> dict:
        svc = self.get('Service', name)
        if svc is None:
            raise Failed(f'there is no Service {name} in namespace {self.ns}')
        return svc

    def pods(self, selector: dict | None = None) -> list[dict]:
        out = []
        for p in self.client.list('Pod', self.ns):
            if p['metadata'].get('deletionTimestamp'):
                continue
            labels = p['metadata'].get('labels') or {}
            if selector is None or all(labels.get(k) == v for k, v in selector.items()):
                out.append(p)
        return sorted(out, key=lambda p: p['metadata']['name'])

    @staticmethod
    def ready(pod: dict) -> bool:
        return any(c['type'] == 'Ready' and c['status'] == 'True'
                   for c in (pod.get('status') or {}).get('conditions', []))

    def client_pod(self, name: str = 'client') -> str:
        pod = self.get('Pod', name)
        if pod is None or not self.ready(pod):
            raise Failed(f'the exercise\'s pod {name} is missing or not ready: '
                         f'`kubelab lab start {self.ex.number}` puts it back')
        return name

    # -- traffic
    def http(self, target: str, host: str, port: int, path: str = '/hostname',
             count: int = 1, timeout: float = 1.5) -> list[dict]:
        return self.lab.probe(target, 'http', host, port, path, count=count,
                              timeout=timeout, namespace=self.ns)

    def tcp(self, target: str, host: str, port: int, timeout: float = 1.5) -> dict:
        return self.lab.probe(target, 'tcp', host, port, timeout=timeout,
                              namespace=self.ns)[0]

    def request(self, target: str, host: str, port: int, path: str = '/', *,
                count: int = 1, host_header: str | None = None, tls: bool = False,
                sni: str | None = None, headers: dict | None = None,
                timeout: float = 2) -> list[dict]:
        """LabControl.request, from a pod of this exercise's namespace too."""
        return self.lab.request(target, host, port, path, count=count,
                                host_header=host_header, headers=headers, tls=tls, sni=sni,
                                timeout=timeout, namespace=self.ns)

    def exec(self, pod: str, *command: str, timeout: float = 15) -> subprocess.CompletedProcess:
        """``kubelab exec -n lab-NN POD -- CMD``: the pod's own resolv.conf included."""
        return self.lab.kubelab('exec', '-n', self.ns, pod, '--', *command, check=False,
                                timeout=timeout)

    def lb_address(self, svc: dict) -> str | None:
        ingress = ((svc.get('status') or {}).get('loadBalancer') or {}).get('ingress') or []
        return ingress[0].get('ip') if ingress else None

    def pod_by_ip(self, ip: str) -> dict | None:
        return next((p for p in self.pods() if (p.get('status') or {}).get('podIP') == ip),
                    None)

    # -- diagnosis
    def diagnose(self, name: str, port: int | None = None) -> str | None:
        """Why Service ``name`` would not answer on ``port`` (its first port by
        default): the hint a learner needs, or None when nothing looks wrong."""
        svc = self.service(name)
        selector = svc['spec'].get('selector') or {}
        if not selector:
            return f'Service {name} has no selector, so no EndpointSlice lists any pod'
        chosen = self.pods(selector)
        if not chosen:
            others = sorted({_labels(p) for p in self.pods()
                             if p['metadata']['name'] != 'client' and _labels(p)})
            return (f'the Service selects no pod: its selector {_labels_of(selector)} '
                    f'matches none of {", ".join(others) or "the pods (there are none)"}')
        ready = [p for p in chosen if self.ready(p)]
        if not ready:
            p = chosen[0]
            return f'pod {p["metadata"]["name"]} is not ready: {self.why_not_ready(p)}'
        sport = _service_port(svc, port)
        for p in ready:
            target = _target_port(sport, p)
            if target is None:
                return (f'targetPort {sport.get("targetPort")} is not a port name of pod '
                        f'{p["metadata"]["name"]}')
            if self.get('Pod', 'client') is None:
                return None
            got = self.tcp('client', p['status']['podIP'], target)
            if not got['ok']:
                listens = ', '.join(str(cp['containerPort']) for c in p['spec']['containers']
                                    for cp in c.get('ports') or []) or 'unknown ports'
                return (f'traffic reached {p["metadata"]["name"]} on {p["spec"]["nodeName"]}'
                        f' but got {got["error"]}: targetPort {target} has no listener (the'
                        f' pod declares {listens})')
        return None

    def why_not_ready(self, pod: dict) -> str:
        for c in pod['spec']['containers']:
            probe = c.get('readinessProbe') or {}
            get = probe.get('httpGet')
            if get:
                port = get['port']
                if not isinstance(port, int):
                    port = next((cp['containerPort'] for cp in c.get('ports') or []
                                 if cp.get('name') == port), port)
                path = get.get('path', '/')
                answer = 'no answer'
                if self.get('Pod', 'client') is not None and isinstance(port, int):
                    [r] = self.http('client', pod['status'].get('podIP') or '0.0.0.0', port,
                                    path)
                    answer = f'HTTP {r["status"]}' if 'status' in r else r['error']
                return (f'its readinessProbe GET :{port}{path} (container {c["name"]}) '
                        f'answers {answer}')
            if probe.get('tcpSocket'):
                return f'its readinessProbe tcpSocket :{probe["tcpSocket"]["port"]} fails'
        return f'phase {(pod.get("status") or {}).get("phase")}'


def _labels(pod: dict) -> str:
    return _labels_of(pod['metadata'].get('labels') or {})


def _labels_of(labels: dict) -> str:
    return ','.join(f'{k}={v}' for k, v in sorted(labels.items())
                    if k not in ('pod-template-hash', LABEL))


def _service_port(svc: dict, port: int | None) -> dict:
    ports = svc['spec'].get('ports') or []
    if not ports:
        raise Failed(f'Service {svc["metadata"]["name"]} has no ports')
    if port is None:
        return ports[0]
    for p in ports:
        if p['port'] == port:
            return p
    raise Failed(f'Service {svc["metadata"]["name"]} has no port {port} (it has '
                 + ', '.join(str(p['port']) for p in ports) + ')')


def _target_port(sport: dict, pod: dict) -> int | None:
    target = sport.get('targetPort', sport['port'])
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in pod['spec']['containers']:
        for cp in c.get('ports') or []:
            if cp.get('name') == target:
                return cp['containerPort']
    return None


def _bodies(results: list[dict]) -> Counter:
    return Counter(r['body'] for r in results if r['ok'])


def _failures(results: list[dict]) -> Counter:
    return Counter(r.get('error') or f'HTTP {r.get("status")}' for r in results
                   if not r['ok'])


def _wait(predicate, seconds: float, interval: float = 0.3):
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _owner(pod: dict) -> str | None:
    refs = pod['metadata'].get('ownerReferences') or []
    return refs[0]['kind'] if refs else None


# ---------------------------------------------------------------- 01 pods
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
    if _sidecar_logs(ctx) and _wait(seen, 5):
        return
    logs = _sidecar_logs(ctx)
    if not logs:
        raise Failed('pod web has no sidecar container (image busybox) to log anything')
    last = {n: (t.strip().splitlines() or ['(empty)'])[-1][:80] for n, t in logs.items()}
    raise Failed('no sidecar log shows an answer from the app over localhost (the app\'s '
                 '/clientip says 127.0.0.1:PORT when called on localhost:8080); last line: '
                 + '; '.join(f'{n}: {line}' for n, line in last.items()))


# ---------------------------------------------------------------- 02 pod-to-pod
def _server(ctx: Ctx) -> dict:
    pods = [p for p in ctx.pods({'app': 'server'})]
    if not pods:
        raise Failed('no pod labelled app=server in namespace lab-02')
    if len(pods) > 1:
        raise Failed(f'{len(pods)} pods are labelled app=server '
                     f'({", ".join(p["metadata"]["name"] for p in pods)}): keep one')
    if not ctx.ready(pods[0]):
        raise Failed(f'pod {pods[0]["metadata"]["name"]} is not ready')
    return pods[0]


def ex2_other_node(ctx: Ctx):
    server, client = _server(ctx), ctx.get('Pod', ctx.client_pod())
    s_node, c_node = server['spec']['nodeName'], client['spec']['nodeName']
    if s_node == c_node:
        raise Failed(f'{server["metadata"]["name"]} runs on {s_node}, the same node as the '
                     'client pod: place it on worker-2 (nodeSelector or nodeName)')
    node = next(n for n in ctx.client.list('Node') if n['metadata']['name'] == s_node)
    cidr = node['spec'].get('podCIDR', '')
    prefix = cidr.rsplit('.', 1)[0]
    if cidr and not server['status']['podIP'].startswith(prefix + '.'):
        raise Failed(f'{server["status"]["podIP"]} is not in {s_node}\'s podCIDR {cidr}')


def ex2_direct(ctx: Ctx):
    server, client = _server(ctx), ctx.client_pod()
    if server['spec']['nodeName'] == ctx.get('Pod', client)['spec']['nodeName']:
        raise Failed('server and client share a node: this is not yet pod-to-pod across '
                     'nodes')
    [r] = ctx.http(client, server['status']['podIP'], 8080, '/clientip')
    if not r['ok']:
        raise Failed(f'client -> {server["status"]["podIP"]}:8080: {r["error"]}')
    seen, mine = r['body'].split(':')[0], ctx.lab.pod_ip(client, ctx.ns)
    if seen != mine:
        raise Failed(f'the server saw {seen}, not the client\'s pod IP {mine}')


def ex2_restart(ctx: Ctx):
    server = _server(ctx)
    if _owner(server) is None:
        raise Failed(f'pod {server["metadata"]["name"]} is a bare Pod: nothing recreates it '
                     'when it goes; run it from a Deployment named server')
    deps = [d for d in ctx.client.list('Deployment', ctx.ns)
            if d['spec']['selector'].get('matchLabels', {}).get('app') == 'server']
    if not deps:
        raise Failed('no Deployment selects app=server')
    old_ip, old_name = server['status']['podIP'], server['metadata']['name']
    ctx.lab.kubelab('rollout', 'restart', '-n', ctx.ns, 'deployment',
                    deps[0]['metadata']['name'])
    ctx.lab.kubelab('rollout', 'status', '-n', ctx.ns, 'deployment',
                    deps[0]['metadata']['name'], '--timeout', '60s')
    ctx.client.wait_ready(ctx.ns)
    new = _server(ctx)
    if new['metadata']['name'] == old_name:
        raise Failed('the rollout restart did not replace the server pod')
    [r] = ctx.http(ctx.client_pod(), new['status']['podIP'], 8080, '/hostname')
    if not r['ok'] or r['body'] != new['metadata']['name']:
        raise Failed(f'the new pod {new["metadata"]["name"]} at {new["status"]["podIP"]} '
                     f'does not answer: {r.get("error")}')
    if new['status']['podIP'] == old_ip:
        raise Failed(f'the new pod kept {old_ip}: expected a new address')


# ---------------------------------------------------------------- 03 ClusterIP
def ex3_selects(ctx: Ctx):
    hint = ctx.diagnose('web')
    if hint:
        raise Failed(hint)
    slices = [s for s in ctx.client.list('EndpointSlice', ctx.ns)
              if (s['metadata'].get('labels') or {}).get('kubernetes.io/service-name') == 'web']
    if not any(e['conditions'].get('ready') for s in slices for e in s.get('endpoints') or []):
        raise Failed('the EndpointSlice of web lists no ready endpoint')


def ex3_dns(ctx: Ctx):
    client = ctx.client_pod()
    proc = ctx.exec(client, 'wget', '-qO-', 'http://web.lab-03.svc.cluster.local/hostname')
    if proc.returncode != 0:
        hint = ctx.diagnose('web') if ctx.get('Service', 'web') else None
        raise Failed(f'wget http://web.lab-03.svc.cluster.local/hostname from the client '
                     f'pod failed ({(proc.stderr.strip().splitlines() or ["?"])[-1]})'
                     + (f': {hint}' if hint else ''))


def ex3_balance(ctx: Ctx):
    svc = ctx.service('web')
    web = [p for p in ctx.pods({'app': 'web'}) if _owner(p)]
    ready = {p['metadata']['name'] for p in web if ctx.ready(p)}
    if len(ready) < 3:
        raise Failed(f'the web Deployment has {len(ready)} ready pod(s): scale it to 3')
    got = ctx.http(ctx.client_pod(), svc['spec']['clusterIP'], 80, '/hostname', count=36)
    answered = set(_bodies(got))
    if not answered:
        raise Failed(f'the ClusterIP {svc["spec"]["clusterIP"]}:80 answered nothing '
                     f'({dict(_failures(got))}): {ctx.diagnose("web") or "see the Service"}')
    missing = ready - answered
    if missing:
        raise Failed(f'36 requests to {svc["spec"]["clusterIP"]}:80 never reached '
                     f'{", ".join(sorted(missing))}')


def ex3_readiness(ctx: Ctx):
    warm = ctx.get('Pod', 'web-warming')
    if warm is None or warm['metadata'].get('deletionTimestamp'):
        raise Failed('pod web-warming is gone: keep it (it is the pod that must be taken '
                     'out of rotation, not deleted); `kubelab lab start 3` brings it back')
    svc = ctx.service('web')
    got = ctx.http(ctx.client_pod(), svc['spec']['clusterIP'], 80, '/hostname', count=24)
    bad = _failures(got)
    if bad:
        state = 'ready' if ctx.ready(warm) else 'not ready'
        hint = ctx.diagnose('web')
        if hint or not ctx.ready(warm):
            raise Failed(f'{sum(bad.values())} of 24 requests through the ClusterIP failed'
                         f': {hint or "see the EndpointSlice of web"}')
        raise Failed(f'{sum(bad.values())} of 24 requests through the ClusterIP failed '
                     f'({", ".join(f"{n} {e}" for e, n in bad.items())}): pod web-warming '
                     f'is {state} but serves nothing on 8080; give the pods a '
                     'readinessProbe (httpGet /healthz on 8080)')
    if (warm['metadata'].get('labels') or {}).get('app') != 'web':
        raise Failed('web-warming no longer carries app=web: keep the label and let '
                     'readiness take it out of rotation')
    if ctx.ready(warm):
        raise Failed('web-warming is ready although nothing listens on 8080')


# ---------------------------------------------------------------- 04 NodePort
def _node_port(svc: dict) -> int:
    if svc['spec'].get('type') not in ('NodePort', 'LoadBalancer'):
        raise Failed(f'Service {svc["metadata"]["name"]} is type '
                     f'{svc["spec"].get("type", "ClusterIP")}: it has no NodePort, so '
                     'nothing outside the cluster reaches it')
    return svc['spec']['ports'][0]['nodePort']


def ex4_every_node(ctx: Ctx):
    svc = ctx.service('web')
    port = _node_port(svc)
    for node, ip in ctx.nodes.items():
        got = ctx.http('host/client-1', ip, port, '/clientip', count=2)
        if not all(r['ok'] for r in got):
            hint = ctx.diagnose('web')
            raise Failed(f'client-1 -> {node} {ip}:{port}: {dict(_failures(got))}'
                         + (f': {hint}' if hint else
                            (': externalTrafficPolicy Local drops it on nodes without a '
                             'web pod' if svc['spec'].get('externalTrafficPolicy') == 'Local'
                             else '')))


def ex4_local(ctx: Ctx):
    svc = ctx.service('web-local')
    port = _node_port(svc)
    web = [p for p in ctx.pods({'app': 'web'}) if ctx.ready(p)]
    here = {p['spec']['nodeName'] for p in web}
    client_ip = ctx.hosts['client-1']
    for node in sorted(('worker-1', 'worker-2'), key=lambda n: n not in here):
        [r] = ctx.http('host/client-1', ctx.nodes[node], port, '/clientip', timeout=1)
        if node in here:
            if not r['ok']:
                raise Failed(f'client-1 -> {node}:{port} (it runs a web pod): {r["error"]}'
                             + (f': {ctx.diagnose("web-local")}' if ctx.diagnose('web-local')
                                else ''))
            seen = r['body'].split(':')[0]
            if seen != client_ip:
                raise Failed(f'the web pod saw {seen} ({ctx.node_of_ip.get(seen, "?")}), not '
                             f'client-1\'s {client_ip}: the node masqueraded the connection;'
                             ' set externalTrafficPolicy: Local on web-local')
        elif r['ok']:
            raise Failed(f'{node} runs no web pod yet answered on {port}: with '
                         'externalTrafficPolicy Local it must not forward to other nodes')
    if not here & {'worker-1', 'worker-2'}:
        raise Failed('no ready web pod runs on a worker')


# ---------------------------------------------------------------- 05 LoadBalancer
def _lb(ctx: Ctx, name: str = 'web') -> tuple[dict, str]:
    svc = ctx.service(name)
    if svc['spec'].get('type') != 'LoadBalancer':
        raise Failed(f'Service {name} is type {svc["spec"].get("type", "ClusterIP")}: '
                     'the cloud gives an address only to type LoadBalancer')
    ip = _wait(lambda: ctx.lb_address(ctx.service(name)), 5)
    if not ip:
        raise Failed(f'Service {name} has no address in status.loadBalancer.ingress yet')
    return svc, ip


def ex5_address(ctx: Ctx):
    svc, ip = _lb(ctx)
    port = svc['spec']['ports'][0]['port']
    got = ctx.http('host/client-1', ip, port, '/hostname', count=6)
    if not all(r['ok'] for r in got):
        raise Failed(f'client-1 -> {ip}:{port}: {dict(_failures(got))}'
                     + (f': {ctx.diagnose("web")}' if ctx.diagnose('web') else ''))


def ex5_client_ip(ctx: Ctx):
    svc, ip = _lb(ctx)
    port = svc['spec']['ports'][0]['port']
    got = ctx.http('host/client-1', ip, port, '/clientip', count=6)
    seen = {r['body'].split(':')[0] for r in got if r['ok']}
    if not seen:
        raise Failed(f'client-1 -> {ip}:{port}: {dict(_failures(got))}')
    if seen != {ctx.hosts['client-1']}:
        names = ', '.join(ctx.node_of_ip.get(s, s) for s in sorted(seen))
        raise Failed(f'the pods saw {", ".join(sorted(seen))} ({names}), not client-1\'s '
                     f'{ctx.hosts["client-1"]}: with externalTrafficPolicy '
                     f'{svc["spec"].get("externalTrafficPolicy", "Cluster")} the node '
                     'masquerades; Local keeps the client IP')


def ex5_node_failure(ctx: Ctx):
    svc, ip = _lb(ctx)
    port = svc['spec']['ports'][0]['port']
    ctx.lab.kubelab('node', 'fail', 'worker-1')
    try:
        time.sleep(4)                     # two failed health checks, with margin
        got = ctx.http('host/client-1', ip, port, '/hostname', count=10, timeout=1)
    finally:
        ctx.lab.kubelab('node', 'restore', 'worker-1')
    bad = _failures(got)
    if bad and svc['spec'].get('externalTrafficPolicy') == 'Local':
        raise Failed(f'with worker-1 failed, {sum(bad.values())} of 10 new connections to '
                     f'{ip}:{port} failed ({", ".join(f"{n} {e}" for e, n in bad.items())})'
                     ': every node without a failure needs a ready web pod of its own')
    if bad:
        raise Failed(f'with worker-1 failed, {sum(bad.values())} of 10 new connections to '
                     f'{ip}:{port} failed ({", ".join(f"{n} {e}" for e, n in bad.items())}):'
                     ' the cloud stopped using worker-1, but with externalTrafficPolicy '
                     'Cluster the other nodes still forward to the pod on worker-1; with '
                     'Local each node serves only its own pods and the health check '
                     'tells the cloud which nodes have one')
    time.sleep(3)                         # the cloud takes worker-1 back


# ---------------------------------------------------------------- 06 Ingress
def _ingress_ip(ctx: Ctx) -> str:
    return ctx.nodes['worker-1']          # ingress-nginx's hostPorts 80/443


def _who(result: dict) -> str | None:
    try:
        return json.loads(result['body']).get('pod')
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _route_check(ctx: Ctx, host: str, path: str, service: str, tls: bool = False):
    port = 443 if tls else 80
    [r] = ctx.request('host/client-1', _ingress_ip(ctx), port, path, host_header=host,
                      tls=tls, sni=host if tls else None)
    if not tls and r.get('status') in (301, 302, 307, 308) and \
            str(r.get('location') or '').startswith('https://'):
        return _route_check(ctx, host, path, service, tls=True)     # TLS host: follow
    want = f'{service}-'
    who = _who(r) if r.get('status') == 200 else None
    if who and who.startswith(want):
        return r
    if who:
        raise Failed(f'{"https" if tls else "http"}://{host}{path} was answered by pod '
                     f'{who}, not by a pod of Service {service}: no rule sends it there '
                     '(an Exact path matches only itself, a Prefix path also what lies '
                     'below it)')
    state = r.get('error') or f'HTTP {r.get("status")}'
    hint = ''
    if r.get('status') == 404:
        hint = ': no Ingress rule matches this host and path'
    elif r.get('status') == 503 and ctx.get('Service', service):
        hint = f': {ctx.diagnose(service) or "the backend has no ready endpoint"}'
    elif r.get('status') == 308:
        hint = f' (redirect to {r.get("location")})'
    raise Failed(f'{"https" if tls else "http"}://{host}{path}: {state}{hint}')


def ex6_host(ctx: Ctx):
    _route_check(ctx, 'shop.example', '/', 'shop')
    _route_check(ctx, 'blog.example', '/', 'blog')


def ex6_path(ctx: Ctx):
    _route_check(ctx, 'shop.example', '/api/items', 'api')
    _route_check(ctx, 'shop.example', '/cart', 'shop')


def ex6_tls(ctx: Ctx):
    r = _route_check(ctx, 'shop.example', '/', 'shop', tls=True)
    subject = r.get('subject') or ''
    if 'shop.example' not in subject:
        raise Failed(f'https://shop.example was served with the certificate "{subject}", '
                     'not the one of Secret shop-tls: add a tls section for shop.example')


# ---------------------------------------------------------------- 07 Gateway API
def _gateway_ip(ctx: Ctx) -> str:
    gw = ctx.get('Gateway', 'gw')
    if gw is None:
        raise Failed('there is no Gateway gw in namespace lab-07')
    addresses = (gw.get('status') or {}).get('addresses') or []
    if not addresses:
        raise Failed('Gateway gw has no address yet (status.addresses)')
    return addresses[0]['value']


def _gw_requests(ctx: Ctx, path: str, count: int, host: str = 'app.example',
                 headers: dict | None = None) -> list[dict]:
    ip = _gateway_ip(ctx)
    # A new Gateway's address answers once the cloud's health checks found its node.
    _wait(lambda: ctx.request('host/client-1', ip, 80, '/', host_header=host,
                              timeout=1)[0].get('error') != 'timeout', 6)
    return ctx.request('host/client-1', ip, 80, path, count=count, host_header=host,
                       headers=headers)


def ex7_route(ctx: Ctx):
    [r] = _gw_requests(ctx, '/', 1)
    who = _who(r) or ''
    if r.get('status') != 200 or not who.startswith('app-v1-'):
        raise Failed(f'http://app.example/ via the Gateway: '
                     f'{r.get("error") or "HTTP " + str(r.get("status"))}'
                     + (f', answered by {who}' if who else '')
                     + ': an HTTPRoute for host app.example attached to gw must send it '
                       'to app-v1')


def ex7_docs(ctx: Ctx):
    [r] = _gw_requests(ctx, '/docs/intro', 1)
    who = _who(r) or ''
    if r.get('status') != 200 or not who.startswith('docs-'):
        raise Failed(f'http://app.example/docs/intro: '
                     f'{r.get("error") or "HTTP " + str(r.get("status"))}'
                     + (f', answered by {who}' if who else '')
                     + ': add a rule matching the path prefix /docs to Service docs')


def ex7_canary(ctx: Ctx):
    got = _gw_requests(ctx, '/', 40)
    who = Counter((_who(r) or '').rsplit('-', 2)[0] for r in got if r.get('status') == 200)
    v1, v2 = who.get('app-v1', 0), who.get('app-v2', 0)
    if v1 + v2 != 40:
        raise Failed(f'of 40 requests to app.example/, {v1} reached app-v1 and {v2} '
                     f'app-v2; the others: {dict(Counter(r.get("status") for r in got))}')
    if not 2 <= v2 <= 6:
        raise Failed(f'{v2} of 40 requests went to app-v2 (the canary) and {v1} to '
                     'app-v1: give the backendRefs weights of about 90 and 10')


# ---------------------------------------------------------------- 08 hierarchy
def _start_record(ctx: Ctx) -> dict:
    try:
        with open(_record_path(ctx.client, ctx.ex)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def ex8_cluster_ip(ctx: Ctx):
    svc = ctx.service('web')
    vip = svc['spec']['clusterIP']
    first = _start_record(ctx).get('clusterIP')
    if first and first != vip:
        raise Failed(f'web\'s ClusterIP changed from {first} to {vip}: change the type of '
                     'the Service in place (apply it again), do not delete and recreate it')
    got = ctx.http(ctx.client_pod(), vip, 80, '/hostname', count=4)
    if not all(r['ok'] for r in got):
        raise Failed(f'client -> {vip}:80: {dict(_failures(got))}'
                     + (f': {ctx.diagnose("web")}' if ctx.diagnose('web') else ''))


def ex8_node_port(ctx: Ctx):
    port = _node_port(ctx.service('web'))
    for node, ip in ctx.nodes.items():
        [r] = ctx.http('host/client-1', ip, port, '/hostname')
        if not r['ok']:
            raise Failed(f'client-1 -> {node} {ip}:{port}: {r["error"]}')


def ex8_load_balancer(ctx: Ctx):
    svc, ip = _lb(ctx)
    got = ctx.http('host/client-1', ip, 80, '/hostname', count=4)
    if not all(r['ok'] for r in got):
        raise Failed(f'client-1 -> {ip}:80: {dict(_failures(got))}')


def ex8_trace(ctx: Ctx):
    svc, ip = _lb(ctx)
    proc = ctx.lab.kubelab('trace', 'host/client-1', f'{ip}:80', check=False)
    out = proc.stdout
    if proc.returncode != 0 or 'delivered to' not in out:
        raise Failed(f'kubelab trace host/client-1 {ip}:80 did not end at a pod: '
                     + ((out or proc.stderr).strip().splitlines() or ['?'])[-1])
    dnats = out.count('DNAT on')
    if dnats < 2:
        raise Failed(f'the trace shows {dnats} DNAT: expected the cloud\'s (to '
                     'NodeIP:NodePort) and kube-proxy\'s (to the pod)')


# ---------------------------------------------------------------- 09 troubleshooting
def _service_works(ctx: Ctx, name: str):
    svc = ctx.service(name)
    got = ctx.http(ctx.client_pod(), svc['spec']['clusterIP'], 80, '/hostname', count=3)
    if not all(r['ok'] for r in got):
        hint = ctx.diagnose(name)
        raise Failed(f'{name} ({svc["spec"]["clusterIP"]}:80) from the client pod: '
                     f'{", ".join(sorted(_failures(got)))}' + (f': {hint}' if hint else ''))


def ex9_catalog(ctx: Ctx):
    _service_works(ctx, 'catalog')


def ex9_orders(ctx: Ctx):
    _service_works(ctx, 'orders')


def ex9_payments(ctx: Ctx):
    _service_works(ctx, 'payments')


def ex9_edge(ctx: Ctx):
    svc = ctx.service('edge')
    port = _node_port(svc)
    ip = ctx.nodes['worker-1']
    got = ctx.http('host/client-1', ip, port, '/hostname', count=3, timeout=1)
    if all(r['ok'] for r in got):
        return
    hint = ctx.diagnose('edge')
    if not hint and svc['spec'].get('externalTrafficPolicy') == 'Local':
        where = sorted({p['spec']['nodeName'] for p in ctx.pods(svc['spec']['selector'])
                        if ctx.ready(p)})
        hint = (f'externalTrafficPolicy Local on worker-1, which runs no endpoint of edge '
                f'(they run on {", ".join(where) or "no node"}): the node drops the '
                'connection')
    raise Failed(f'client-1 -> worker-1 {ip}:{port}: {", ".join(sorted(_failures(got)))}'
                 + (f': {hint}' if hint else ''))


# ---------------------------------------------------------------- the course
EXERCISES = [
    Exercise(1, 'pods-and-containers', 'Pods and containers',
             'a multi-container pod: app + logger sidecar over localhost, one IP', [
                 ('pod web runs an app and a logger sidecar, and is ready', ex1_two_containers),
                 ('the app answers on the pod IP from another node', ex1_one_ip),
                 ('the logger reads the app over localhost', ex1_localhost)]),
    Exercise(2, 'pod-to-pod', 'Pod-to-pod networking across nodes',
             'routes and node bridges between nodes; pod IPs change on restart', [
                 ('the server pod runs on another node than the client, in its podCIDR',
                  ex2_other_node),
                 ('the client reaches the server by pod IP across nodes, no NAT',
                  ex2_direct),
                 ('a Deployment runs the server; a restarted pod gets a new IP', ex2_restart)]),
    Exercise(3, 'clusterip', 'ClusterIP Services and EndpointSlices',
             'a stable VIP over changing pods, load balancing, readiness', [
                 ('Service web selects the web pods (ready endpoints in its EndpointSlice)',
                  ex3_selects),
                 ('web.lab-03.svc.cluster.local answers from the client pod', ex3_dns),
                 ('the ClusterIP balances over every ready pod of the Deployment',
                  ex3_balance),
                 ('a pod that does not serve is out of rotation (readiness)',
                  ex3_readiness)]),
    Exercise(4, 'nodeport', 'NodePort',
             'reaching the cluster from outside; Cluster vs Local traffic policy; source IP', [
                 ('client-1 reaches web on every node\'s NodePort', ex4_every_node),
                 ('web-local keeps client-1\'s IP and only its pod\'s node answers',
                  ex4_local)]),
    Exercise(5, 'loadbalancer', 'LoadBalancer',
             'the cloud LB in front of the NodePorts, health checks, node failure', [
                 ('web has a cloud address that answers client-1 on port 80', ex5_address),
                 ('the pods see client-1\'s own IP', ex5_client_ip),
                 ('with worker-1 failed, every new connection still succeeds',
                  ex5_node_failure)]),
    Exercise(6, 'ingress', 'Ingress',
             'host and path routing to several Services, TLS', [
                 ('shop.example goes to shop, blog.example to blog', ex6_host),
                 ('shop.example/api/... goes to api, the rest of shop.example to shop',
                  ex6_path),
                 ('https://shop.example is served with the shop-tls certificate', ex6_tls)]),
    Exercise(7, 'gateway-api', 'Gateway API',
             'the same with a Gateway and HTTPRoutes; a weighted canary', [
                 ('app.example through Gateway gw reaches app-v1', ex7_route),
                 ('app.example/docs/... goes to docs', ex7_docs),
                 ('about 10% of app.example/ goes to the canary app-v2', ex7_canary)]),
    Exercise(8, 'service-types', 'The Service type hierarchy',
             'one Service from ClusterIP to NodePort to LoadBalancer, traced at each step', [
                 ('the ClusterIP (unchanged) still answers inside the cluster',
                  ex8_cluster_ip),
                 ('the NodePort answers client-1 on every node', ex8_node_port),
                 ('the LoadBalancer address answers client-1 on port 80', ex8_load_balancer),
                 ('kubelab trace follows client-1 -> LB -> NodePort -> pod', ex8_trace)]),
    Exercise(9, 'troubleshooting', 'Troubleshooting',
             'four broken Services to diagnose and fix', [
                 ('catalog answers from the client pod', ex9_catalog),
                 ('orders answers from the client pod', ex9_orders),
                 ('payments answers from the client pod', ex9_payments),
                 ('client-1 reaches edge through worker-1\'s NodePort', ex9_edge)]),
]


def exercise(number: int | str) -> Exercise:
    try:
        n = int(str(number).split('-')[0])
    except ValueError:
        n = -1
    for ex in EXERCISES:
        if ex.number == n:
            return ex
    raise KubelabError(f'no exercise {number}; exercises: '
                       + ', '.join(str(e.number) for e in EXERCISES) + ' (`kubelab lab list`)')


# ---------------------------------------------------------------- start / reset / solve
def _read(directory: str) -> list[dict]:
    return read_paths([directory])


def _record_path(client: Client, ex: Exercise) -> str:
    return os.path.join(client.state_dir, 'labs', f'{ex.number:02d}.json')


def _owned_elsewhere(client: Client, ex: Exercise) -> list[tuple[str, str, str]]:
    tag = f'{ex.number:02d}'
    out = []
    for kind in LABELLED_KINDS:
        for obj in client.list(kind):
            meta = obj['metadata']
            if (meta.get('labels') or {}).get(LABEL) == tag and \
                    meta.get('namespace') != ex.namespace:
                out.append((kind, meta.get('namespace'), meta['name']))
    return out


def reset(ex: Exercise, client: Client, quiet: bool = False) -> list[str]:
    """Delete what the exercise created: its namespace and objects labelled with it."""
    gone = []
    for kind, ns, name in _owned_elsewhere(client, ex):
        try:
            client.delete(kind, ns, name, 0)
            gone.append(f'{kind.lower()}/{name} -n {ns}')
        except NotFound:
            pass
    try:
        client.delete('Namespace', None, ex.namespace, 0)
        gone.append(f'namespace/{ex.namespace}')
    except NotFound:
        pass
    client.wait_for(lambda: not client.list('Pod', ex.namespace),
                    f'the pods of {ex.namespace} to terminate', timeout=60)
    client.wait_dataplane()
    try:
        os.unlink(_record_path(client, ex))
    except FileNotFoundError:
        pass
    return gone


def apply_objects(ex: Exercise, client: Client, objects: list[dict], timeout: float = 90):
    """Apply ``objects`` and wait for them; a Pod whose spec changes is deleted first
    (a pod's spec cannot be updated), as `kubectl replace --force` does."""
    replaced = []
    for obj in objects:
        if obj.get('kind') != 'Pod':
            continue
        meta = obj['metadata']
        ns = meta.get('namespace', 'default')
        try:
            client.get('Pod', ns, meta['name'])
        except NotFound:
            continue
        try:
            client.apply([obj], dry_run=True)
        except KubelabError:
            client.delete('Pod', ns, meta['name'], 0)
            replaced.append((ns, meta['name']))
    for ns, name in replaced:
        print(f'pod/{name} deleted (its spec changes: pods are replaced, not updated)')

        def gone(ns=ns, name=name):
            try:
                client.get('Pod', ns, name)
                return False
            except NotFound:
                return True
        client.wait_for(gone, f'pod {name} to terminate', timeout=60)
    printers.print_apply_results(client.apply(objects))
    settle(ex, client, timeout)


def settle(ex: Exercise, client: Client, timeout: float = 90, grace: float = 4):
    """Wait until every pod of the exercise runs and every Deployment has its pods,
    then up to ``grace`` seconds more for the pods to be ready: some exercises hold a
    pod that is meant never to be ready. Then until the dataplane carries it all."""
    def started():
        pods = [p for p in client.list('Pod', ex.namespace)
                if not p['metadata'].get('deletionTimestamp')]
        deps = client.list('Deployment', ex.namespace)
        running = all((p.get('status') or {}).get('phase') == 'Running' and all(
            c.get('started') for c in p['status'].get('containerStatuses') or [{}])
            for p in pods)
        complete = all((d.get('status') or {}).get('updatedReplicas', 0)
                       == d['spec'].get('replicas', 1)
                       == (d.get('status') or {}).get('replicas', 0) for d in deps)
        return running and complete
    client.wait_for(started, f'the pods of {ex.namespace} to run', timeout=timeout)
    _wait(lambda: all(Ctx.ready(p) for p in client.list('Pod', ex.namespace)
                      if not p['metadata'].get('deletionTimestamp')), grace, 0.2)
    client.wait_dataplane()


def start(ex: Exercise, client: Client):
    gone = reset(ex, client)
    if gone:
        print(f'Reset: deleted {", ".join(gone)}')
    apply_objects(ex, client, _read(os.path.join(ex.directory, 'start')))
    if ex.number == 8:                    # remember the ClusterIP the walk starts from
        path = _record_path(client, ex)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump({'clusterIP': client.get('Service', ex.namespace, 'web')['spec'][
                'clusterIP']}, f)
    print(f'\nExercise {ex.number}: {ex.title}. Read {os.path.relpath(ex.directory)}'
          f'/README.md; `kubelab lab check {ex.number}` checks your work.')


def solve(ex: Exercise, client: Client):
    """Apply the solution over the current state; objects of the exercise's namespace
    that the solution does not have (and nothing owns) are deleted first."""
    objects = _read(os.path.join(ex.directory, 'solution'))
    wanted = {(o['kind'], o['metadata']['name']) for o in objects}
    stale = []
    for kind in LABELLED_KINDS:
        try:
            items = client.list(kind, ex.namespace)
        except KubelabError:
            continue
        for obj in items:
            meta = obj['metadata']
            if meta.get('namespace') != ex.namespace or meta.get('ownerReferences') or \
                    (kind, meta['name']) in wanted:
                continue
            stale.append((kind, meta['name']))
    for kind, name in stale:
        try:
            client.delete(kind, ex.namespace, name, 0)
            print(f'{kind.lower()}/{name} deleted (not in the solution)')
        except NotFound:
            pass
    if stale:
        client.wait_for(lambda: not [p for p in client.list('Pod', ex.namespace)
                                     if ('Pod', p['metadata']['name']) in stale],
                        'the stale pods to terminate', timeout=60)
    apply_objects(ex, client, objects)


def check(ex: Exercise, lab: LabControl, out=print) -> bool:
    try:
        lab.client.get('Namespace', None, ex.namespace)
    except NotFound:
        out(f'[FAIL] exercise {ex.number} is not started: `kubelab lab start {ex.number}`')
        return False
    ctx = Ctx(lab, ex)
    ok = True
    for title, fn in ex.tasks:
        try:
            fn(ctx)
            out(f'[PASS] {title}')
        except Failed as exc:
            ok = False
            out(f'[FAIL] {title}: {exc}')
        except Exception as exc:          # a check that breaks is a failed task, said so
            ok = False
            out(f'[FAIL] {title}: the check itself failed: {exc}')
    return ok


# ---------------------------------------------------------------- the command
def run(args) -> int:
    action = args.action
    if action == 'list':
        for ex in EXERCISES:
            print(f'{ex.number:>2}  {ex.title:38} {ex.summary}')
        return 0
    if args.number is None:
        raise KubelabError(f'`kubelab lab {action}` needs the exercise number, e.g. '
                           f'`kubelab lab {action} 1`')
    ex = exercise(args.number)
    if action == 'check':
        return 0 if check(ex, LabControl()) else 1
    client = Client()
    if action == 'start':
        start(ex, client)
    elif action == 'reset':
        gone = reset(ex, client)
        print(f'Deleted {", ".join(gone)}.' if gone else
              f'Nothing of exercise {ex.number} was in the lab.')
    elif action == 'solve':
        solve(ex, client)
        print(f'\nApplied the solution of exercise {ex.number}; `kubelab lab check '
              f'{ex.number}` should pass.')
    return 0
