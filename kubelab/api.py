"""kubelab from Python: bring a lab up, apply manifests, send traffic, read the answers
as objects. For scripts and tests (kubelab/pytest_plugin.py gives pytest a ``kubelab``
fixture built on it); the CLI prints, this module returns.

    from kubelab.api import Lab

    with Lab.start('cluster.yaml') as lab:        # or Lab.start(): the default cluster
        lab.apply('app.yaml')                     # a file, a directory or YAML text; waits
        answer = lab.probe_url('client', 'http://web/hostname')
        assert answer.pod == 'web-6d4f9-x2k7q'    # which pod answered (agnhost netexec)
        assert answer.client == lab.pod_ip('client')   # the address the server saw
        trace = lab.trace('host/client-1', 'svc/web')
        assert trace.forward.outcome == 'delivered'
    # down: every bridge, namespace and process of the lab is gone

``Lab`` is the tests' ``LabControl`` (kubelab/labctl.py: ``kubelab`` commands, and
``probe``/``http``/``matrix``: netprobe's modes in any pod, node or host) plus these verbs. Root is needed, as for ``kubelab up``.

``trace`` is ``kubelab trace`` without the text: the same resolution of a source (a
pod, ``node/NAME``, ``host/NAME``) and a destination (``IP:PORT`` or
``svc/NAME[:PORT]``) to addresses, and the same walk through the live switches
(kubelab/inspect/trace.py), returned as a ``Trace`` whose legs say how each direction
ended (``outcome``: delivered, dropped, rejected), where, and with which addresses
(``final``: the fields the receiver sees).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from kubelab.client import Client
from kubelab.labctl import LabControl
from services.errors import KubelabError

#: The kinds a trace reads from the lab.
TRACE_KINDS = ('Pod', 'Service', 'EndpointSlice', 'Node', 'LoadBalancerHealth',
               'L2Announcement', 'Namespace',
               'NetworkPolicy', 'Ingress', 'IngressClass', 'Gateway', 'GatewayClass',
               'HTTPRoute', 'Secret')


def source_address(client: Client, cluster, source: str, namespace: str = 'default') -> str:
    """The address of a pod, ``node/NAME`` or ``host/NAME``."""
    if source.startswith(('node/', 'host/')):
        kind, name = source.split('/', 1)
        return (cluster.node(name) if kind == 'node' else cluster.client(name)).ip
    pod = client.get('Pod', namespace, source.split('/', 1)[-1])
    ip = (pod.get('status') or {}).get('podIP')
    if not ip:
        raise KubelabError(f'pod {source} has no IP yet')
    return ip


def destination_address(client: Client, destination: str, namespace: str = 'default',
                        proto: str | None = None) -> tuple[str, int, str]:
    """(IP, port, protocol) of ``IP:PORT`` or ``svc/NAME[:PORT]`` (its ClusterIP)."""
    if destination.startswith(('svc/', 'service/')):
        name, _, port = destination.split('/', 1)[1].partition(':')
        svc = client.get('Service', namespace, name)
        ports = svc['spec'].get('ports') or []
        chosen = next((p for p in ports if port in (str(p['port']), p.get('name'))),
                      None) if port else (ports[0] if ports else None)
        if chosen is None or svc['spec'].get('clusterIP') in (None, 'None'):
            raise KubelabError(f'service {name} has no ClusterIP port {port or ""}; ports: '
                               + ', '.join(str(p['port']) for p in ports))
        return (svc['spec']['clusterIP'], int(chosen['port']),
                proto or chosen.get('protocol', 'TCP').lower())
    ip, _, text = destination.partition(':')
    if not text.isdigit():
        raise KubelabError(f'destination "{destination}": give IP:PORT or svc/NAME[:PORT]')
    return ip, int(text), proto or 'tcp'


def trace(source: str, destination: str, *, namespace: str = 'default',
          proto: str | None = None, endpoint: str | None = None, host: str = '',
          path: str = '/', client: Client | None = None, sport: int = 40000):
    """A new connection's path through the live switches: (tracer, Trace). When it
    reaches an Ingress controller or a Gateway's proxy, the Trace also holds the second
    leg: the proxy's route for ``host`` + ``path`` (``proxy``) and its own connection to
    the backend's ClusterIP (``backend``, a Trace). ``sport``: the client's source port
    (the cloud's load balancer picks a node from it)."""
    if not 1 <= sport <= 65535:
        raise KubelabError(f'--sport {sport}: give a port from 1 to 65535')
    from kubelab.inspect import switches
    from kubelab.inspect import trace as tracing
    from services.cluster import load_cluster_file
    client = client or Client()
    switches.use_lab_openvswitch(client.state_dir)
    info = client.lab()
    cluster = load_cluster_file(os.path.join(info['stateDir'], 'cluster.json'))
    objects = {kind: client.list(kind) for kind in TRACE_KINDS}
    src_ip = source_address(client, cluster, source, namespace)
    dst_ip, port, proto = destination_address(client, destination, namespace, proto)
    from kubelab.inspect.trace_legs import proxy_leg
    tracer = tracing.Tracer(cluster, objects, router_pid=(info.get('router') or {}).get('pid'))
    result = tracing.trace_connection(tracer, src_ip, dst_ip, port, proto, endpoint, sport)
    result.proxy = proxy_leg(tracer, objects, result, host, path)
    if result.proxy is not None and result.proxy.address:
        ip, _, backend_port = result.proxy.address.rpartition(':')
        result.backend = tracing.trace_connection(tracer, result.proxy.pod_ip, ip,
                                                  int(backend_port), 'tcp')
    return tracer, result


# ---------------------------------------------------------------- the lab as an object
@dataclass
class Answer:
    """What one HTTP request saw: its status and body; with agnhost netexec behind the
    URL, the pod that answered and the client address it saw (asked on the same
    connection, so from the same pod); ``error`` (refused, timeout...) when none came."""
    ok: bool
    status: int | None = None
    body: str = ''
    pod: str | None = None
    client: str | None = None
    error: str | None = None


#: Runs in the source's network namespace: one keep-alive connection, three requests.
_PROBE = r"""
import http.client, json, sys, urllib.parse
url, timeout = sys.argv[1], float(sys.argv[2])
u = urllib.parse.urlsplit(url)
out = {'ok': False}
try:
    c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    c.request('GET', (u.path or '/') + ('?' + u.query if u.query else ''),
              headers={'Host': u.netloc})
    r = c.getresponse()
    out.update(ok=True, status=r.status, body=r.read().decode(errors='replace'))
    for path, key in (('/hostname', 'pod'), ('/clientip', 'client')):
        try:
            c.request('GET', path, headers={'Host': u.netloc})
            r = c.getresponse()
            text = r.read().decode(errors='replace').strip()
            if r.status == 200 and text:
                out[key] = text.rsplit(':', 1)[0] if key == 'client' else text
        except Exception:
            break
except ConnectionRefusedError:
    out['error'] = 'refused'
except (TimeoutError, OSError) as exc:
    out['error'] = 'timeout' if 'timed out' in str(exc) else str(exc)
print(json.dumps(out))
"""


class Lab(LabControl):
    """A running lab. ``Lab.start(...)`` brings one up; ``Lab()`` attaches to the running
    one; ``down()`` (or leaving a ``with`` block) takes it down."""

    @classmethod
    def start(cls, cluster: str | None = None, *manifests: str) -> 'Lab':
        """Bring up a lab from a cluster file (None: the default cluster), applying
        ``manifests`` (files or directories) once it is ready. (``lab.up()`` on an
        object is LabControl's: ``kubelab up --detach`` again after a ``down()``.)"""
        lab = cls()
        lab.up(*([cluster] if cluster else []))
        try:
            for manifest in manifests:
                lab.apply(manifest)
        except BaseException:
            lab.down()
            raise
        return lab

    def __enter__(self) -> 'Lab':
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def apply(self, what: str, wait: bool = True, check: bool = True):
        """Apply a file, a directory or YAML text, all or nothing; with ``wait``, until
        its pods are ready and the switches carry it."""
        if '\n' not in what and os.path.exists(what):
            args = ['apply', '-f', what] + (['--wait'] if wait else [])
            return self.kubelab(*args, check=check)
        return LabControl.apply(self, what, wait=wait, check=check)

    def wait(self, namespace: str | None = None, timeout: float = 60) -> None:
        """Until every pod (of ``namespace``, or all) is ready, every Deployment rolled
        out and every switch carries the current state."""
        self.client.wait_ready(namespace, timeout=timeout)

    def get(self, kind: str, name: str | None = None, namespace: str = 'default') -> dict:
        """An object (``kind`` as kubectl names it: pod, svc, deploy...) or, without a
        name, the List of them, as ``kubelab get -o json`` prints it."""
        return self.get_json(kind, *([name] if name else []), '-n', namespace)

    def exec(self, target: str, *argv: str, namespace: str = 'default',
             timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``argv`` in the network namespace of a pod, ``node/NAME`` or
        ``host/NAME``; its exit code, stdout and stderr."""
        return self.run_in(target, list(argv), timeout=timeout, namespace=namespace)

    def probe_url(self, source: str, url: str, *, namespace: str = 'default',
                  timeout: float = 2) -> Answer:
        """GET ``url`` from ``source`` (a pod, node/NAME, host/NAME): the answer, and on
        the same connection which pod answered and which client address it saw. A
        Service name in the URL (``web``, ``web.NS``, ``web.NS.svc.cluster.local``)
        is replaced by its ClusterIP, what the cluster DNS answers."""
        host = url.split('//', 1)[-1].split('/', 1)[0].split(':')[0]
        if not host.replace('.', '').isdigit():
            url = url.replace(host, self._resolve(host, namespace), 1)
        proc = self.exec(source, sys.executable, '-c', _PROBE, url, str(timeout),
                         namespace=namespace, timeout=timeout * 3 + 30)
        if proc.returncode != 0:
            raise KubelabError(f'probe from {source} failed: {proc.stderr.strip()}')
        return Answer(**json.loads(proc.stdout))

    def _resolve(self, name: str, namespace: str) -> str:
        """A Service name (``web``, ``web.ns``, ``web.ns.svc.cluster.local``) -> its
        ClusterIP, as the cluster DNS answers it."""
        parts = name.split('.')
        ns = parts[1] if len(parts) > 1 and parts[1] != 'svc' else namespace
        return self.cluster_ip(parts[0], ns)

    def trace(self, source: str, destination: str, **kw):
        """``kubelab trace`` as an object: the Trace (see ``trace`` above)."""
        return trace(source, destination, client=self.client, **kw)[1]
