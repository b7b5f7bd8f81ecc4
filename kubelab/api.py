"""kubelab from Python: the running lab's answers as objects, for scripts and tests.

The CLI prints; this module returns. ``trace`` is ``kubelab trace`` without the text: the
same resolution of a source (a pod, ``node/NAME``, ``host/NAME``) and a destination
(``IP:PORT`` or ``svc/NAME[:PORT]``) to addresses, and the same walk through the live
switches (kubelab/inspect/trace.py), returned as a ``Trace`` whose legs say how each
direction ended (``outcome``: delivered, dropped, rejected), where, and with which
addresses (``final``: the fields the receiver sees).
"""

from __future__ import annotations

import os

from kubelab.client import Client
from services.errors import KubelabError

#: The kinds a trace reads from the lab.
TRACE_KINDS = ('Pod', 'Service', 'EndpointSlice', 'Node', 'LoadBalancerHealth', 'Namespace',
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
          path: str = '/', client: Client | None = None):
    """A new connection's path through the live switches: (tracer, Trace). When it
    reaches an Ingress controller or a Gateway's proxy, the Trace also holds the second
    leg: the proxy's route for ``host`` + ``path`` (``proxy``) and its own connection to
    the backend's ClusterIP (``backend``, a Trace)."""
    from kubelab.inspect import switches
    from kubelab.inspect import trace as tracing
    from services.cluster import load_cluster_file
    client = client or Client()
    switches.use_lab_openvswitch(client.state_dir)
    cluster = load_cluster_file(os.path.join(client.lab()['stateDir'], 'cluster.json'))
    objects = {kind: client.list(kind) for kind in TRACE_KINDS}
    src_ip = source_address(client, cluster, source, namespace)
    dst_ip, port, proto = destination_address(client, destination, namespace, proto)
    from kubelab.inspect.trace_legs import proxy_leg
    tracer = tracing.Tracer(cluster, objects)
    result = tracing.trace_connection(tracer, src_ip, dst_ip, port, proto, endpoint)
    result.proxy = proxy_leg(tracer, objects, result, host, path)
    if result.proxy is not None and result.proxy.address:
        ip, _, backend_port = result.proxy.address.rpartition(':')
        result.backend = tracing.trace_connection(tracer, result.proxy.pod_ip, ip,
                                                  int(backend_port), 'tcp')
    return tracer, result
