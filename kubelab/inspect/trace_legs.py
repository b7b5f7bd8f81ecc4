"""What ``kubelab trace`` tells around the switches' walk (trace.py):

* the Service behind an external front: a connection to a NodePort, a load balancer
  address or an external IP is DNATed by kube-proxy straight to one of the Service's
  endpoints, the same as its ClusterIP's; no packet is ever addressed to the ClusterIP,
  yet the seed's "NodePort -> ClusterIP -> Pod" names it because it is the same Service
  with the same endpoints. ``service_notes`` says so with the ClusterIP's address;
* the cloud edge's pick of a node: from the client's source port (bits 1-6 of it, the
  slots of controller/pipeline/edge_switch.py), a stand-in for the hash of the
  connection a cloud's load balancer computes. ``edge_pick_notes`` says which node, why,
  and that another source port may go to another;
* the second leg of an Ingress or Gateway path: a connection delivered to an L7 proxy
  pod (the ingress-nginx controller, a Gateway's nginx) ends there, and the proxy opens
  its own connection to the backend Service's ClusterIP. ``proxy_leg`` finds the proxy's
  route for the request (host and path, as nginx decides: services/l7/routes.select)
  and the backend it proxies to, so that both legs are traced in one command.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.pipeline.edge_switch import place, port_shift, shares, slot_bits
from services import wiring
from services.l7 import routes
from services.l7.gateway import gateway_fronts
from services.l7.ingress import ingress_fronts


def service_notes(tracer, trace) -> list[str]:
    """A line per external front the connection went through, naming the Service's
    ClusterIP and saying that kube-proxy skips it (once a Service port: the cloud's
    DNAT to a NodePort and the node's DNAT from it tell one story)."""
    nodes = {n.ip for n in tracer.cluster.nodes}
    out, told = [], set()
    for t in trace.forward.translations:
        if t.kind != 'DNAT':
            continue
        ip, _, port = t.before.partition(':')
        for sp in tracer.state.service_ports:
            if ip in nodes and str(sp.node_port) == port:
                front = f'NodePort {port}'
            elif ip == sp.lb_ip and str(sp.port) == port:
                front = f'load balancer address {t.before}'
            elif ip in sp.external_ips and str(sp.port) == port:
                front = f'external IP {t.before}'
            else:
                continue
            if sp.vip in (None, '', 'None') or id(sp) in told:
                break
            told.add(id(sp))
            how = ('the cloud sends it on to a NodeIP:NodePort, where ' if
                   t.after.split(':')[0] in nodes else '')
            out.append(f'The {front} belongs to Service {sp.namespace}/{sp.service}, whose '
                       f'ClusterIP is {sp.vip}:{sp.port} with the same endpoints: {how}'
                       'kube-proxy DNATs straight to one of them, so no packet is ever '
                       'addressed to the ClusterIP.')
            break
    return out


def edge_pick_notes(tracer, trace) -> list[str]:
    """Why the cloud edge sent the connection to the node it DNATed it to: the bits of
    the client's source port its ServiceLB flows match."""
    sport = int(trace.src.rpartition(':')[2])
    nodes = {n.ip: n.name for n in tracer.cluster.nodes}
    out = []
    for t in trace.forward.translations:
        node_ip = t.after.split(':')[0]
        if t.kind != 'DNAT' or t.bridge != wiring.EDGE_BRIDGE or node_ip not in nodes:
            continue
        ip, _, port = t.before.partition(':')
        sp = next((sp for sp in tracer.state.service_ports
                   if sp.lb_ip == ip and str(sp.port) == port), None)
        targets = [n.ip for n in tracer.state.lb_targets(sp)] if sp is not None else []
        bits = slot_bits(len(targets) or 1)
        shift = port_shift(sp) if sp is not None else 0
        text = (f"The cloud's load balancer picked node {nodes[node_ip]} from the client's "
                f'source port {sport}: bits {1 + shift}-{bits + shift} of it are slot '
                f'{(sport >> (1 + shift)) & ((1 << bits) - 1)}, place '
                f'{place(sport, bits, shift)} of {1 << bits} counted bit-reversed')
        if node_ip in targets:
            run = shares(len(targets))[targets.index(node_ip)]
            text += (f', and {nodes[node_ip]} takes places {run.start}-{run.stop - 1} '
                     f'(one share of {len(targets)} target nodes)')
        out.append(text + ". A cloud's load balancer hashes the connection's addresses "
                   'and ports instead: another source port may go to another node.')
    return out


@dataclass
class ProxyLeg:
    proxy: str                  # 'the ingress-nginx controller' / 'Gateway ns/name'
    pod_ip: str
    request: str                # 'http://HOST/PATH'
    route: str                  # the rule that decides, or why none does
    backend: str | None = None  # 'ns/svc:port'
    address: str | None = None  # the ClusterIP:port the proxy connects to
    choices: tuple = ()         # every target of the route (weighted)


def proxy_of(pod: dict) -> tuple[str, str | None] | None:
    """('ingress', controller class) or ('gateway', 'ns/name') of an L7 proxy pod."""
    for container in pod['spec'].get('containers') or []:
        for arg in container.get('args') or []:
            if arg.startswith('--controller-class='):
                return 'ingress', arg.split('=', 1)[1]
            if arg.startswith('--gateway='):
                return 'gateway', arg.split('=', 1)[1]
    return None


def proxy_leg(tracer, objects: dict, trace, host: str = '', path: str = '/') -> \
        ProxyLeg | None:
    """The proxy's connection to the backend of the request ``host`` + ``path``, when
    the traced connection was delivered to an L7 proxy pod; None otherwise."""
    if trace.forward.outcome != 'delivered':
        return None
    final = trace.forward.final
    pod = tracer.pod_objects.get(final.get('nw_dst'))
    kind = proxy_of(pod) if pod else None
    if kind is None:
        return None
    port = int(final.get('tp_dst') or 0)
    if kind[0] == 'ingress':
        fronts = ingress_fronts(objects, controller=kind[1])
        name = f'the Ingress controller {pod["metadata"]["name"]} ({kind[1]})'
    else:
        ns, _, gname = kind[1].partition('/')
        gateway = next((g for g in objects.get('Gateway', [])
                        if (g['metadata'].get('namespace'), g['metadata']['name'])
                        == (ns, gname)), None)
        fronts = gateway_fronts(objects, gateway) if gateway else []
        name = f'Gateway {kind[1]} (pod {pod["metadata"]["name"]})'
    front = next((f for f in fronts if f.port == port), None)
    scheme = 'https' if front is not None and front.tls else 'http'
    request = f'{scheme}://{host or final["nw_dst"]}{path}'
    leg = ProxyLeg(name, final['nw_dst'], request, '')
    if front is None:
        leg.route = f'nothing listens on port {port} of this proxy'
        return leg
    route = routes.select(front, host, path)
    if route is None:
        leg.route = ('no rule matches (404); its rules: '
                     + '; '.join(f'{r.host or "*"}{r.path if r.path_type != routes.ANY else ""}'
                                 f' -> {r.action.describe()}' for r in front.routes[:6]))
        return leg
    leg.route = f'{route.source or "the default backend"}: {route.action.describe()}'
    usable = [t for t in route.action.targets if t.address]
    leg.choices = tuple(f'{t.backend} ({t.address})' for t in route.action.targets)
    if usable:
        leg.backend, leg.address = usable[0].backend, usable[0].address
    return leg


def render_proxy(leg: ProxyLeg, backend_text: str | None) -> list[str]:
    """The second leg, under the first: the proxy's route, then its own connection."""
    out = ['', f'Second leg: {leg.proxy} takes the request {leg.request} '
               '(kubelab trace --host/--path for another)',
           f'  route: {leg.route}']
    if len(leg.choices) > 1:
        out.append(f'  the route splits over {", ".join(leg.choices)}; followed: '
                   f'{leg.backend}')
    if backend_text is None:
        out.append('  => the proxy answers itself; no connection to a backend')
        return out
    out += [f'  the proxy connects from its pod ({leg.pod_ip}) to the Service '
            f'{leg.backend} at its ClusterIP {leg.address}:', '']
    out += ['  ' + line if line else line for line in backend_text.splitlines()]
    return out
