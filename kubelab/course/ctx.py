"""What an exercise's checks use: the running lab seen from the exercise (``Ctx``),
``Failed`` (a task not done, with its hint), and the helpers several exercises share.

A check (``labs/NN-slug/check.py``) sends real traffic through the running lab (from the
exercise's ``client`` pod or from an external host) and reads the objects; it returns
quietly when the task is done and raises ``Failed(hint)`` otherwise, the hint naming
what is wrong. Checks judge the result, never the text of the manifests, so any correct
solution passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter

from kubelab.client import Client
from kubelab.course.exercise import LABEL, Exercise
from kubelab.labctl import LabControl
from services.conditions import pod_ready
from services.errors import NotFound


class Failed(Exception):
    """A task is not done; the message is the hint."""


# ---------------------------------------------------------------- the lab of one exercise
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
        return pod_ready(pod)

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


# ---------------------------------------------------------------- shared by the checks
def bodies(results: list[dict]) -> Counter:
    """How often each body came back, of the probes that succeeded."""
    return Counter(r['body'] for r in results if r['ok'])


def failures(results: list[dict]) -> Counter:
    """How often each error (or HTTP status) came back, of the probes that failed."""
    return Counter(r.get('error') or f'HTTP {r.get("status")}' for r in results
                   if not r['ok'])


def wait(predicate, seconds: float, interval: float = 0.3):
    """``predicate()`` until it is true or ``seconds`` have passed: its last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def owner(pod: dict) -> str | None:
    """The kind of the pod's first owner (ReplicaSet, ...); None for a bare Pod."""
    refs = pod['metadata'].get('ownerReferences') or []
    return refs[0]['kind'] if refs else None


def node_port(svc: dict) -> int:
    """The NodePort of the Service's first port; Failed when its type has none."""
    if svc['spec'].get('type') not in ('NodePort', 'LoadBalancer'):
        raise Failed(f'Service {svc["metadata"]["name"]} is type '
                     f'{svc["spec"].get("type", "ClusterIP")}: it has no NodePort, so '
                     'nothing outside the cluster reaches it')
    return svc['spec']['ports'][0]['nodePort']


def load_balancer(ctx: Ctx, name: str = 'web') -> tuple[dict, str]:
    """(the Service, its load balancer address), the address awaited up to 5 s; Failed
    when the Service is no LoadBalancer or gets no address."""
    svc = ctx.service(name)
    if svc['spec'].get('type') != 'LoadBalancer':
        raise Failed(f'Service {name} is type {svc["spec"].get("type", "ClusterIP")}: '
                     'the cloud gives an address only to type LoadBalancer')
    ip = wait(lambda: ctx.lb_address(ctx.service(name)), 5)
    if not ip:
        raise Failed(f'Service {name} has no address in status.loadBalancer.ingress yet')
    return svc, ip


def who_answered(result: dict) -> str | None:
    """The pod that answered, as the JSON body of the lab's apps names it; None if none."""
    try:
        return json.loads(result['body']).get('pod')
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def record_path(client: Client, ex: Exercise) -> str:
    """Where ``kubelab lab start`` notes what a check needs later (exercise 8: the
    ClusterIP its walk starts from)."""
    return os.path.join(client.state_dir, 'labs', f'{ex.number:02d}.json')
