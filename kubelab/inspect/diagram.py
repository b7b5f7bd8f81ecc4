"""``kubelab diagram``: a picture of the live lab, drawn by Graphviz's ``dot``.

``dot_source`` is pure: it turns the lab's objects (kind -> items, as the lab's API
returns them) and the lab's own description (``/lab/v1/lab``: the nodes with their
address, role and bridge, the external hosts, the failed nodes) into DOT text.
``render`` runs ``dot -Tsvg`` or ``dot -Tpng`` on it and writes the file atomically.

The picture reads left to right, the way a request travels in the Kubernetes
networking chart:

    external hosts -> cloud load balancer -> Ingress / Gateway -> HTTPRoute
        -> Services (NodePort, ClusterIP, EndpointSlices) -> pods, inside their nodes

- External hosts (name, IP) in one box; from it, orange arrows: to the cloud load
  balancer, whose rows are the LoadBalancer addresses (and the nodes its health checks
  find healthy) each going on to its Service's NodePort; straight to the NodePort of
  each NodePort Service ("NodeIP:NodePort"); to each pod with a ``hostPort`` (the
  ingress controller: node:80/443).
- Ingresses (class, address, host + path -> Service:port rows), Gateways (class,
  address, listeners) and HTTPRoutes (match -> Service:port, weight) in purple; purple
  arrows to the Services they route to. The proxy pods that run the rules
  (ingress-nginx, a Gateway's nginx) have a purple border, and each box names the
  other (the endpoints of the LoadBalancer Service whose address the Ingress or
  Gateway publishes).
- Services in blue, grouped by namespace: type, ClusterIP, ports, the NodePort / load
  balancer entry, non-default policies, the selector and one row per EndpointSlice,
  from which a blue arrow goes to each ready endpoint's pod (grey and dashed: not
  ready or terminating).
- Nodes as grey boxes (name, role, InternalIP, pod CIDR, bridge; red when failed)
  holding their pods, grouped by namespace (dashed boxes; ``default`` unboxed): name,
  pod IP, each container with its image shortened and its ports; not-ready pods grey
  and dashed.
- A legend (top left) says what each colour and dashed line means.

Every text that comes from an object goes through ``_text`` (control characters
dropped, long lines wrapped, ``& < > "`` escaped) into an HTML-like label; node and
cluster ids are generated, never taken from names, so no user text reaches DOT syntax.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from collections import defaultdict
from datetime import datetime, timezone

from kubelab import printers
from services.errors import KubelabError

#: Output formats, by file extension.
FORMATS = ('svg', 'png')
#: Characters per label line before wrapping.
WRAP = 48
#: Seconds ``dot`` may take.
DOT_TIMEOUT = 120

FONT = 'Helvetica,Arial,sans-serif'
# One colour per kind of thing, used for its boxes and for the arrows it sends.
EXTERNAL, EXTERNAL_FILL = '#d46b08', '#fff3e6'    # external hosts, the cloud LB
SERVICE, SERVICE_FILL = '#1d5fa6', '#eaf1fb'      # Services and EndpointSlice arrows
L7, L7_FILL = '#7b3fa1', '#f5edfa'                # Ingress, Gateway, HTTPRoute
NODE_LINE, NODE_FILL = '#8c8c8c', '#f3f3f3'       # nodes
POD_LINE = '#333333'
DIM = '#a0a0a0'                                   # not ready / terminating
BAD = '#c62828'                                   # failed node, missing backend
NOTE = '#595959'                                  # secondary text

#: Pod STATUS words that are no failure (others, like CrashLoopBackOff, are red).
CALM = ('Running', 'NotReady', 'Terminating', 'Pending', 'ContainerCreating',
        'PodInitializing', 'Completed')

GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name'
SERVICE_NAME_LABEL = 'kubernetes.io/service-name'
#: Any fixed time: the printers' pod STATUS does not depend on it (only AGE does).
_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


# ---------------------------------------------------------------- text
def _clean(value) -> str:
    """``value`` as text that is valid XML: control characters (but newlines), lone
    surrogates and non-characters become nothing."""
    out = []
    for ch in str(value):
        code = ord(ch)
        if ch == '\n':
            out.append(ch)
        elif ch == '\t':
            out.append(' ')
        elif code < 0x20 or 0x7f <= code < 0xa0 or 0xd800 <= code < 0xe000 \
                or code in (0xfffe, 0xffff):
            continue
        else:
            out.append(ch)
    return ''.join(out)


def _escape(text: str) -> str:
    return (text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')
            .replace('"', '&quot;'))


def _text(value, width: int = WRAP) -> str:
    """Object text for an HTML-like label: cleaned, wrapped at ``width`` characters
    (newlines kept as line breaks) and escaped."""
    lines = []
    for line in _clean(value).split('\n'):
        lines.extend(textwrap.wrap(line, width, break_on_hyphens=True,
                                   drop_whitespace=False) or [''])
    return '<BR ALIGN="LEFT"/>'.join(_escape(line) for line in lines)


def _font(html: str, color: str | None = None, size: float | None = None,
          bold: bool = False) -> str:
    if not html:
        return html                    # Graphviz refuses an empty <B></B> or <FONT>
    if bold:
        html = f'<B>{html}</B>'
    attrs = (f' COLOR="{color}"' if color else '') + \
        (f' POINT-SIZE="{size:g}"' if size else '')
    return f'<FONT{attrs}>{html}</FONT>' if attrs else html


def _row(html: str, port: str | None = None) -> str:
    """A left-aligned row of a box; ``port`` names it as an end of edges."""
    attrs = f' PORT="{port}"' if port else ''
    return f'<TR><TD ALIGN="LEFT" BALIGN="LEFT"{attrs}>{html}</TD></TR>'


def _table(rows: list[str], color: str, fill: str, dashed: bool = False) -> str:
    style = 'rounded,dashed' if dashed else 'rounded'
    return (f'<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" '
            f'COLOR="{color}" BGCOLOR="{fill}" STYLE="{style}">{"".join(rows)}</TABLE>>')


def _title(name, kind: str, color: str = NOTE) -> str:
    """``name`` in bold, then the kind in small type."""
    name = name if name not in (None, '') else '(no name)'
    return _font(_text(name), bold=True) + ' ' + _font(_text(kind), color, 9)


def short_image(image: str) -> str:
    """An image without its registry and path: ``agnhost:2.53`` for
    ``registry.k8s.io/e2e-test-images/agnhost:2.53``; a generic last part keeps its
    parent (``ingress-nginx/controller:v1.11.3``); a digest is cut to 12 hex digits."""
    image = str(image or '')
    name, at, digest = image.partition('@')
    parts = name.split('/')
    if len(parts) > 1 and ('.' in parts[0] or ':' in parts[0] or parts[0] == 'localhost'):
        parts = parts[1:]                                 # the registry
    short = parts[-1]
    if len(parts) > 1 and short.split(':')[0] in ('controller', 'nginx', 'server',
                                                   'proxy', 'app', 'agent'):
        short = f'{parts[-2]}/{short}'
    if at:
        algo, _, hexdigits = digest.partition(':')
        short += f'@{algo}:{hexdigits[:12]}' if hexdigits else f'@{digest[:12]}'
    return short or image


# ---------------------------------------------------------------- object helpers
def _meta(obj: dict) -> dict:
    return obj.get('metadata') or {}


def _spec(obj: dict) -> dict:
    return obj.get('spec') or {}


def _status(obj: dict) -> dict:
    return obj.get('status') or {}


def _ns(obj: dict) -> str:
    return _meta(obj).get('namespace') or 'default'


def _name(obj: dict) -> str:
    return str(_meta(obj).get('name') or '')


def _key(obj: dict) -> tuple[str, str]:
    return _ns(obj), _name(obj)


def pod_ready(pod: dict) -> bool:
    """Ready condition True and not being deleted: what the EndpointSlice
    controller calls ready."""
    if _meta(pod).get('deletionTimestamp'):
        return False
    return any(c.get('type') == 'Ready' and c.get('status') == 'True'
               for c in _status(pod).get('conditions') or [])


def pod_ip(pod: dict) -> str | None:
    status = _status(pod)
    ips = status.get('podIPs') or []
    return (ips[0].get('ip') if ips and isinstance(ips[0], dict) else None) \
        or status.get('podIP')


def _lb_addresses(svc: dict) -> list[str]:
    found = []
    for entry in (_status(svc).get('loadBalancer') or {}).get('ingress') or []:
        address = entry.get('ip') or entry.get('hostname')
        if address and address not in found:
            found.append(str(address))
    return found


def _port_text(port: dict) -> str:
    """``80/TCP -> http``: a Service port and its targetPort (when it differs)."""
    text = f'{port.get("port", "?")}/{port.get("protocol") or "TCP"}'
    target = port.get('targetPort')
    if target is not None and target != port.get('port'):
        text += f' \u2192 {target}'
    return text


def _service_ref(svc: dict) -> str:
    return _name(svc) if _ns(svc) == 'default' else f'{_ns(svc)}/{_name(svc)}'


# ---------------------------------------------------------------- the graph
class _Graph:
    """The DOT text being built, with generated ids."""

    def __init__(self):
        self.lines: list[str] = []
        self.counter = 0
        self.columns: dict[int, list[str]] = defaultdict(list)

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        return f'{prefix}{self.counter}'

    def add(self, line: str, indent: int = 1):
        self.lines.append('  ' * indent + line)

    def node(self, node_id: str, label: str, column: int | None = None,
             indent: int = 1):
        """A box (``label`` is an HTML-like label), in a column of the picture."""
        self.add(f'{node_id} [label={label}];', indent)
        if column is not None:
            self.columns[column].append(node_id)

    def edge(self, tail: str, head: str, **attrs):
        """An arrow; ``attrs`` are the lab's own constants, never object text."""
        text = ', '.join(f'{k}="{v}"' for k, v in attrs.items())
        self.add(f'{tail} -> {head}' + (f' [{text}]' if text else '') + ';')


# The columns, left to right.
COL_EXTERNAL, COL_LB, COL_L7, COL_ROUTES, COL_SERVICES, COL_PODS = range(6)


def dot_source(objects: dict[str, list[dict]], info: dict) -> str:
    """The DOT text of the lab's picture (see the module's docstring)."""
    return _Diagram(objects, info).source()


class _Diagram:
    def __init__(self, objects: dict[str, list[dict]], info: dict):
        self.objects = objects or {}
        self.info = info or {}
        self.g = _Graph()
        order = lambda items: sorted(items, key=_key)             # noqa: E731
        self.pods = order(self.items('Pod'))
        self.services = order(self.items('Service'))
        self.slices = order(self.items('EndpointSlice'))
        self.ingresses = order(self.items('Ingress'))
        self.gateways = order(self.items('Gateway'))
        self.routes = order(self.items('HTTPRoute'))
        self.pod_ids: dict[tuple[str, str], str] = {}
        self.pod_objs: dict[str, dict] = {}
        self.pod_by_ip: dict[str, str] = {}
        self.service_ids: dict[tuple[str, str], str] = {}
        self.missing: dict[tuple[str, str], str] = {}
        self.host_by_ip: dict[str, str] = {}
        self.proxy_of: dict[str, list[str]] = defaultdict(list)  # pod -> 'Ingress x'
        self.external_anchor: str | None = None
        self.lb: str | None = None
        self.l7_ids: dict[int, str] = {}            # id(Ingress or Gateway) -> box
        self.route_ids: dict[int, str] = {}         # id(HTTPRoute) -> box
        self.l7_proxies: dict[int, list[str]] = {}  # id(Ingress or Gateway) -> pods
        self.l7_targets: list[tuple[str, str, tuple[str, str]]] = []  # box, row, Service
        self.slice_ports: dict[int, tuple[str, str]] = {}  # id(slice) -> Service, row
        self.later: list[tuple[str, str, dict]] = []     # edges drawn after the boxes

    def items(self, kind: str) -> list[dict]:
        return [o for o in self.objects.get(kind) or [] if isinstance(o, dict)]

    # ------------------------------------------------------------ assembling
    def source(self) -> str:
        g = self.g
        for pod in self.pods:
            pid = g.new_id('pod')
            self.pod_ids[_key(pod)] = pid
            self.pod_objs[pid] = pod
            ip = pod_ip(pod)
            if ip:
                self.pod_by_ip.setdefault(str(ip), pid)
        for svc in self.services:
            self.service_ids[_key(svc)] = g.new_id('svc')
        self.find_proxies()
        g.lines = [
            'digraph kubelab {',
            f'  graph [rankdir=LR, newrank=true, compound=true, nodesep=0.18, '
            f'ranksep=0.75, fontname="{FONT}", fontsize=11, labelloc=t, labeljust=l, '
            f'pad=0.3, label={self.heading()}];',
            f'  node [shape=plaintext, margin=0, fontname="{FONT}", fontsize=10];',
            f'  edge [fontname="{FONT}", fontsize=9, arrowsize=0.7, color="{SERVICE}"];',
        ]
        self.external()
        self.load_balancer()
        self.l7()
        self.service_boxes()
        self.nodes()
        for tail, head, attrs in self.later:
            g.edge(tail, head, **attrs)
        self.endpoint_edges()
        self.l7_edges()
        self.legend()
        self.ranks()
        g.lines.append('}')
        return '\n'.join(g.lines) + '\n'

    def heading(self) -> str:
        nodes = len(self.node_list())
        namespaces = sorted({_ns(o) for o in self.pods + self.services + self.ingresses
                             + self.gateways + self.routes})
        text = (f'kubelab: {nodes} node{"s" * (nodes != 1)}, {len(self.pods)} '
                f'pod{"s" * (len(self.pods) != 1)}, {len(self.services)} '
                f'Service{"s" * (len(self.services) != 1)}')
        where = ('namespace ' if len(namespaces) == 1 else 'namespaces ') + \
            ', '.join(namespaces) if namespaces else 'no namespaced objects'
        flow = ('left to right, as a request travels: external hosts \u2192 cloud load '
                'balancer \u2192 Ingress / Gateway \u2192 Service (NodePort, ClusterIP) '
                '\u2192 EndpointSlice \u2192 pod IP \u2192 container, in its node')
        return (f'<{_font(_text(text, 200), size=14, bold=True)}<BR ALIGN="LEFT"/>'
                f'{_font(_text(where, 200), NOTE, 10)}<BR ALIGN="LEFT"/>'
                f'{_font(_text(flow, 200), NOTE, 10)}<BR ALIGN="LEFT"/>>')

    # ------------------------------------------------------------ external side
    def external(self):
        g = self.g
        g.add('subgraph cluster_external {')
        g.add(f'label=<{_font("External network", EXTERNAL, 11, bold=True)}>; '
              f'style="rounded"; color="{EXTERNAL}"; fontname="{FONT}";', 2)
        hosts = [h for h in self.info.get('hosts') or [] if isinstance(h, dict)]
        for host in hosts:
            hid = g.new_id('host')
            if host.get('ip'):
                self.host_by_ip[str(host['ip'])] = hid
            rows = [_row(_title(host.get('name', '?'), 'external host')),
                    _row(_text(host.get('ip') or 'no address'))]
            g.node(hid, _table(rows, EXTERNAL, EXTERNAL_FILL), COL_EXTERNAL, 2)
        if not hosts:
            hid = g.new_id('host')
            g.node(hid, _table([_row(_font('no external hosts', NOTE))], EXTERNAL,
                               EXTERNAL_FILL, dashed=True), COL_EXTERNAL, 2)
        self.external_anchor = next(iter(g.columns[COL_EXTERNAL]))
        g.add('}')

    def from_outside(self, head: str):
        """An orange arrow from the external network (the whole box) to ``head``, drawn
        once the boxes are (an edge written inside a cluster would pull its ends in)."""
        self.later.append((self.external_anchor, head,
                           {'ltail': 'cluster_external', 'color': EXTERNAL}))

    def load_balancer(self):
        g = self.g
        health = {_key(h): (_status(h).get('healthyNodes') or [])
                  for h in self.items('LoadBalancerHealth')}
        rows = [_row(_title('Cloud load balancer', 'kl-lb')),
                _row(_font(_text('passthrough: LB address:port \u2192 NodeIP:NodePort, '
                                 'client IP kept; health-checked nodes', 40), NOTE, 8))]
        targets = []
        for svc in self.services:
            if _spec(svc).get('type') != 'LoadBalancer':
                continue
            ports = _spec(svc).get('ports') or []
            node_ports = ', '.join(str(p['nodePort']) for p in ports if p.get('nodePort'))
            for address in _lb_addresses(svc):
                port = f'lb{len(targets)}'
                listen = address + ' ' + ', '.join(f':{p.get("port")}' for p in ports)
                text = (_font(_text(listen), bold=True) + '<BR ALIGN="LEFT"/>'
                        + _text(f'\u2192 {_service_ref(svc)}'
                                + (f' NodePort {node_ports}' if node_ports else '')))
                if _key(svc) in health:
                    healthy = health[_key(svc)]
                    text += '<BR ALIGN="LEFT"/>' + (
                        _font(_text('healthy: ' + ', '.join(map(str, healthy))), NOTE, 8)
                        if healthy else _font('no healthy node', BAD, 8))
                rows.append(_row(text, port))
                targets.append((port, svc))
        if not targets:
            rows.append(_row(_font('no LoadBalancer address', NOTE)))
        self.lb = g.new_id('lb')
        g.node(self.lb, _table(rows, EXTERNAL, EXTERNAL_FILL), COL_LB)
        self.from_outside(self.lb)
        for port, svc in targets:
            g.edge(f'{self.lb}:{port}:e', f'{self.service_ids[_key(svc)]}:np:w',
                   color=EXTERNAL)

    # ------------------------------------------------------------ layer 7
    def find_proxies(self):
        """Which pods run which Ingress's or Gateway's rules: the endpoints of the
        LoadBalancer Service whose address the Ingress/Gateway publishes (and, for a
        Gateway, of the Services labelled with its name)."""
        by_address = defaultdict(list)
        for svc in self.services:
            for address in _lb_addresses(svc):
                by_address[address].append(svc)
        for obj in self.ingresses + self.gateways:
            addresses = [e.get('ip') or e.get('hostname') for e in
                         (_status(obj).get('loadBalancer') or {}).get('ingress') or []]
            addresses += [a.get('value') for a in _status(obj).get('addresses') or []
                          if isinstance(a, dict)]
            services = [s for a in addresses if a for s in by_address.get(a, [])
                        if _ns(s) == _ns(obj) or obj.get('kind') != 'Gateway']
            if obj.get('kind') == 'Gateway':
                services += [s for s in self.services if _ns(s) == _ns(obj) and
                             (_meta(s).get('labels') or {}).get(GATEWAY_NAME_LABEL)
                             == _name(obj)]
            wanted = {_key(s) for s in services}
            pods = []
            for eps in self.slices:
                owner = (_meta(eps).get('labels') or {}).get(SERVICE_NAME_LABEL)
                if (_ns(eps), owner) not in wanted:
                    continue
                for endpoint in eps.get('endpoints') or []:
                    pid = self.endpoint_pod(endpoint, _ns(eps))
                    if pid and pid not in pods:
                        pods.append(pid)
            self.l7_proxies[id(obj)] = pods
            for pid in pods:
                self.proxy_of[pid].append(f'{obj.get("kind")} {_name(obj)}')

    def l7(self):
        if not (self.ingresses or self.gateways or self.routes):
            return
        g = self.g
        g.add('subgraph cluster_l7 {')
        g.add(f'label=<{_font("Ingress and Gateway API", L7, 11, bold=True)}>; '
              f'style="rounded"; color="{L7}"; fontname="{FONT}";', 2)
        for ing in self.ingresses:
            self.ingress_box(ing)
        for gw in self.gateways:
            self.gateway_box(gw)
        for route in self.routes:
            self.route_box(route)
        g.add('}')

    def _namespace_line(self, obj: dict) -> list[str]:
        if _ns(obj) == 'default':
            return []
        return [_row(_font(_text(f'namespace {_ns(obj)}'), NOTE, 9))]

    def ingress_box(self, ing: dict):
        g, spec = self.g, _spec(ing)
        iid = g.new_id('ing')
        self.l7_ids[id(ing)] = iid
        rows = [_row(_title(_name(ing), 'Ingress'))] + self._namespace_line(ing)
        addresses = [e.get('ip') or e.get('hostname') for e in
                     (_status(ing).get('loadBalancer') or {}).get('ingress') or []]
        cls = spec.get('ingressClassName') or \
            (_meta(ing).get('annotations') or {}).get('kubernetes.io/ingress.class')
        rows.append(_row(_text(f'class {cls or "(default)"} \u00b7 address '
                               + (', '.join(str(a) for a in addresses if a) or 'none'))))
        rows += self.proxy_rows(ing)
        for tls in spec.get('tls') or []:
            hosts = ', '.join(str(h) for h in tls.get('hosts') or []) or '*'
            rows.append(_row(_font(_text(f'TLS {hosts} (secret '
                                         f'{tls.get("secretName") or "none"})'), NOTE, 9)))
        for rule in spec.get('rules') or []:
            host = rule.get('host') or '*'
            for path in (rule.get('http') or {}).get('paths') or []:
                match = (f'{host}{path.get("path") or "/"} '
                         f'({path.get("pathType") or "Prefix"})')
                rows.append(self.backend_row(iid, _ns(ing), path.get('backend'), match))
        if spec.get('defaultBackend'):
            rows.append(self.backend_row(iid, _ns(ing), spec['defaultBackend'],
                                         'default backend'))
        if not (spec.get('rules') or spec.get('defaultBackend')):
            rows.append(_row(_font('no rules', NOTE)))
        g.node(iid, _table(rows, L7, L7_FILL), COL_L7, 2)

    def proxy_rows(self, obj: dict) -> list[str]:
        """The pods that run ``obj``'s rules, in the Ingress's or Gateway's box."""
        rows = []
        for pid in self.l7_proxies.get(id(obj), []):
            pod = self.pod_objs[pid]
            where = _spec(pod).get('nodeName')
            name = _name(pod) if _ns(pod) == _ns(obj) else '/'.join(_key(pod))
            text = f'proxy pod {name}' + (f' on {where}' if where else '')
            rows.append(_row(_font(_text(text), L7, 9)))
        return rows

    def backend_row(self, box: str, namespace: str, backend: dict | None,
                    match: str) -> str:
        backend = backend or {}
        service = backend.get('service')
        port = f'r{len(self.l7_targets)}'
        if service:
            number = (service.get('port') or {}).get('number')
            ref = number if number is not None else (service.get('port') or {}).get('name')
            target = f'{service.get("name")}:{ref}'
            self.l7_targets.append((box, port, (namespace, str(service.get('name')))))
        else:
            resource = backend.get('resource') or {}
            target = f'{resource.get("kind", "?")}/{resource.get("name", "?")} (503)'
        return _row(_text(f'{match} \u2192 {target}'), port)

    def gateway_box(self, gw: dict):
        g, spec = self.g, _spec(gw)
        gid = g.new_id('gw')
        self.l7_ids[id(gw)] = gid
        rows = [_row(_title(_name(gw), 'Gateway'))] + self._namespace_line(gw)
        addresses = [str(a.get('value')) for a in _status(gw).get('addresses') or []
                     if isinstance(a, dict) and a.get('value')]
        rows.append(_row(_text(f'class {spec.get("gatewayClassName") or "?"} \u00b7 '
                               f'address {", ".join(addresses) or "none"}')))
        rows += self.proxy_rows(gw)
        for index, listener in enumerate(spec.get('listeners') or []):
            text = (f'listener {listener.get("name", "?")}: '
                    f'{listener.get("protocol", "HTTP")} :{listener.get("port", "?")}')
            if listener.get('hostname'):
                text += f' {listener["hostname"]}'
            rows.append(_row(_font(_text(text), NOTE, 9), f'l{index}'))
        g.node(gid, _table(rows, L7, L7_FILL), COL_L7, 2)

    def route_box(self, route: dict):
        g, spec = self.g, _spec(route)
        rid = g.new_id('route')
        self.route_ids[id(route)] = rid
        rows = [_row(_title(_name(route), 'HTTPRoute'))] + self._namespace_line(route)
        if spec.get('hostnames'):
            rows.append(_row(_text('hosts ' + ', '.join(map(str, spec['hostnames'])))))
        for number, rule in enumerate(spec.get('rules') or [], 1):
            match = self.route_matches(rule.get('matches') or [])
            refs = [r for r in rule.get('backendRefs') or [] if isinstance(r, dict)]
            total = sum(int(r.get('weight', 1) or 0) for r in refs
                        if str(r.get('weight', 1)).isdigit())
            for ref in refs:
                port = f'r{len(self.l7_targets)}'
                weight = ref.get('weight', 1)
                share = ''
                if len(refs) > 1 and total and str(weight).isdigit():
                    share = f' \u00b7 {round(100 * int(weight) / total)}%'
                namespace = ref.get('namespace') or _ns(route)
                kind = ref.get('kind') or 'Service'
                target = f'{ref.get("name")}:{ref.get("port", "?")}' if kind == 'Service' \
                    else f'{kind}/{ref.get("name")}'
                if kind == 'Service':
                    self.l7_targets.append((rid, port, (namespace, str(ref.get('name')))))
                rows.append(_row(_text(f'{match} \u2192 {target}{share}'), port))
            if not refs:
                rows.append(_row(_text(f'{match} \u2192 no backend (500)')))
        if not spec.get('rules'):
            rows.append(_row(_font('no rules', NOTE)))
        g.node(rid, _table(rows, L7, L7_FILL), COL_ROUTES, 2)

    @staticmethod
    def route_matches(matches: list[dict]) -> str:
        texts = []
        for match in matches or [{}]:
            if not isinstance(match, dict):
                continue
            path = match.get('path') or {'type': 'PathPrefix', 'value': '/'}
            text = f'{path.get("value", "/")} ({path.get("type", "PathPrefix")})'
            if match.get('method'):
                text += f' {match["method"]}'
            if match.get('headers'):
                text += f' +{len(match["headers"])} header(s)'
            if match.get('queryParams'):
                text += f' +{len(match["queryParams"])} query'
            texts.append(text)
        return ' | '.join(texts) or '/ (PathPrefix)'

    def l7_edges(self):
        g = self.g
        for box, port, key in self.l7_targets:
            head = self.service_ids.get(key) or self.missing.get(key)
            if head:
                g.edge(f'{box}:{port}:e', f'{head}:vip:w', color=L7)
        for route in self.routes:
            for ref in _spec(route).get('parentRefs') or []:
                if not isinstance(ref, dict) or (ref.get('kind') or 'Gateway') != 'Gateway':
                    continue
                key = (ref.get('namespace') or _ns(route), str(ref.get('name')))
                for index, gw in enumerate(self.gateways):
                    if _key(gw) != key:
                        continue
                    tail = self.l7_ids[id(gw)]
                    listeners = _spec(gw).get('listeners') or []
                    names = [lst.get('name') for lst in listeners]
                    if ref.get('sectionName') in names:
                        tail += f':l{names.index(ref["sectionName"])}'
                    g.edge(f'{tail}:e', f'{self.route_ids[id(route)]}:w', color=L7)

    # ------------------------------------------------------------ Services
    def service_boxes(self):
        g = self.g
        referenced = {key for _, _, key in self.l7_targets}
        missing = sorted(k for k in referenced if k not in self.service_ids)
        namespaces = sorted({_ns(s) for s in self.services} | {ns for ns, _ in missing})
        if not namespaces:
            return
        g.add('subgraph cluster_services {')
        note = _font(_text('(kube-proxy: ClusterIP \u2192 EndpointSlice \u2192 pod IP)',
                           80), NOTE, 9)
        g.add(f'label=<{_font("Services", SERVICE, 11, bold=True)} {note}>; '
              f'style="rounded"; color="{SERVICE}"; fontname="{FONT}";', 2)
        for index, namespace in enumerate(namespaces):
            g.add(f'subgraph cluster_services_ns{index} {{', 2)
            g.add(f'label=<{_font(_text(f"namespace {namespace}"), NOTE, 9)}>; '
                  f'style="dashed,rounded"; color="{NODE_LINE}"; fontname="{FONT}";', 3)
            for svc in self.services:
                if _ns(svc) == namespace:
                    self.service_box(svc)
            for key in missing:
                if key[0] == namespace:
                    sid = g.new_id('svc')
                    self.missing[key] = sid
                    rows = [_row(_title(key[1], 'Service'), 'vip'),
                            _row(_font('not found: requests get 500', BAD))]
                    g.node(sid, _table(rows, BAD, 'white', dashed=True), COL_SERVICES, 3)
            g.add('}', 2)
        g.add('}')

    def service_box(self, svc: dict):
        g, spec = self.g, _spec(svc)
        sid = self.service_ids[_key(svc)]
        kind = spec.get('type') or 'ClusterIP'
        ports = [p for p in spec.get('ports') or [] if isinstance(p, dict)]
        rows = [_row(_title(_name(svc), f'Service \u00b7 {kind}'))]
        if _key(svc) == ('kube-system', 'kube-dns'):
            rows.append(_row(_font('cluster DNS: every pod\'s nameserver', NOTE, 9)))
        node_ports = ', '.join(str(p['nodePort']) for p in ports if p.get('nodePort'))
        if kind == 'LoadBalancer':
            text = 'LB ' + (', '.join(_lb_addresses(svc)) or '<pending>')
            if node_ports:
                text += f' \u2192 NodeIP:{node_ports}'
            rows.append(_row(_font(_text(text), EXTERNAL), 'np'))
        elif node_ports:
            rows.append(_row(_font(_text(f'NodeIP:{node_ports} on every node'), EXTERNAL),
                             'np'))
            self.from_outside(f'{sid}:np:w')
        if kind == 'ExternalName':
            rows.append(_row(_text(f'ExternalName {spec.get("externalName", "?")}'), 'vip'))
        elif spec.get('clusterIP') in (None, '', 'None'):
            rows.append(_row(_text('headless (no ClusterIP)'), 'vip'))
        else:
            ips = spec.get('clusterIPs') or [spec.get('clusterIP')]
            rows.append(_row(_font(_text('ClusterIP ' + ', '.join(map(str, ips))),
                                   bold=True), 'vip'))
        if ports:
            rows.append(_row(_text(', '.join(_port_text(p) for p in ports))))
        for external in spec.get('externalIPs') or []:
            rows.append(_row(_font(_text(f'externalIP {external}'), EXTERNAL)))
        notes = []
        if spec.get('externalTrafficPolicy') == 'Local':
            notes.append('externalTrafficPolicy Local')
        if spec.get('internalTrafficPolicy') == 'Local':
            notes.append('internalTrafficPolicy Local')
        if spec.get('sessionAffinity') == 'ClientIP':
            timeout = ((spec.get('sessionAffinityConfig') or {}).get('clientIP') or {}) \
                .get('timeoutSeconds', 10800)
            notes.append(f'sessionAffinity ClientIP {timeout} s')
        if spec.get('loadBalancerSourceRanges'):
            notes.append('source ranges ' + ', '.join(map(str,
                                                         spec['loadBalancerSourceRanges'])))
        if spec.get('healthCheckNodePort'):
            notes.append(f'healthCheckNodePort {spec["healthCheckNodePort"]}')
        if notes:
            rows.append(_row(_font(_text(' \u00b7 '.join(notes)), NOTE, 9)))
        selector = spec.get('selector')
        text = 'selector ' + printers.format_labels(selector) if selector \
            else 'no selector: EndpointSlices by hand'
        rows.append(_row(_font(_text(text), NOTE, 9)))
        slices = [s for s in self.slices if _ns(s) == _ns(svc) and
                  (_meta(s).get('labels') or {}).get(SERVICE_NAME_LABEL) == _name(svc)]
        for index, eps in enumerate(slices):
            endpoints = [e for e in eps.get('endpoints') or [] if isinstance(e, dict)]
            ready = sum(1 for e in endpoints if self.endpoint_ready(e))
            ports_text = ', '.join(
                f'{p.get("port", "*")}/{p.get("protocol") or "TCP"}'
                for p in eps.get('ports') or [] if isinstance(p, dict)) or 'no ports'
            counts = f'{ready} ready' + (f', {len(endpoints) - ready} not ready'
                                         if len(endpoints) > ready else '')
            color = SERVICE if ready else BAD
            text = (_font(_text(f'EndpointSlice {_name(eps)}'), color, 9)
                    + '<BR ALIGN="LEFT"/>'
                    + _font(_text(f'\u2192 :{ports_text} \u00b7 {counts}'), color, 9))
            rows.append(_row(text, f'es{index}'))
            self.slice_ports[id(eps)] = (sid, f'es{index}')
        if not slices and kind != 'ExternalName':
            rows.append(_row(_font('no EndpointSlice', BAD, 9)))
        g.node(sid, _table(rows, SERVICE, SERVICE_FILL), COL_SERVICES, 3)

    @staticmethod
    def endpoint_ready(endpoint: dict) -> bool:
        conditions = endpoint.get('conditions') or {}
        return conditions.get('ready') is not False and not conditions.get('terminating')

    def endpoint_pod(self, endpoint: dict, namespace: str) -> str | None:
        ref = endpoint.get('targetRef') or {}
        if ref.get('kind', 'Pod') == 'Pod' and ref.get('name'):
            pid = self.pod_ids.get((ref.get('namespace') or namespace, str(ref['name'])))
            if pid:
                return pid
        for address in endpoint.get('addresses') or []:
            if str(address) in self.pod_by_ip:
                return self.pod_by_ip[str(address)]
        return None

    def endpoint_edges(self):
        g = self.g
        others: dict[str, str] = {}
        for eps in self.slices:
            where = self.slice_ports.get(id(eps))
            if where is None:
                continue
            sid, port = where
            for endpoint in eps.get('endpoints') or []:
                if not isinstance(endpoint, dict):
                    continue
                head = self.endpoint_pod(endpoint, _ns(eps))
                if head is None:
                    addresses = [str(a) for a in endpoint.get('addresses') or []]
                    head = next((self.host_by_ip[a] for a in addresses
                                 if a in self.host_by_ip), None)
                if head is None:
                    address = ', '.join(addresses) or '?'
                    if address not in others:
                        others[address] = g.new_id('addr')
                    head = others[address]
                style = {'color': SERVICE, 'penwidth': '1.2'} \
                    if self.endpoint_ready(endpoint) \
                    else {'color': DIM, 'style': 'dashed'}
                g.edge(f'{sid}:{port}:e', f'{head}:w', **style)
        if others:
            g.add('subgraph cluster_addresses {')
            g.add(f'label=<{_font("endpoints that are no pod", NOTE, 9)}>; '
                  f'style="dashed,rounded"; color="{NODE_LINE}"; fontname="{FONT}";', 2)
            for address, aid in others.items():
                g.node(aid, _table([_row(_text(address))], POD_LINE, 'white'),
                       COL_PODS, 2)
            g.add('}')

    # ------------------------------------------------------------ nodes and pods
    def node_list(self) -> list[dict]:
        """Each node: name, role, ip, pod CIDR, bridge, ready, failed; from the lab's
        description and the Node objects, in the lab's order."""
        objs = {_name(n): n for n in self.items('Node')}
        failed = {str(n) for n in self.info.get('failedNodes') or []}
        out, seen = [], set()
        lab_nodes = [n for n in self.info.get('nodes') or [] if isinstance(n, dict)]
        for name in [str(n.get('name')) for n in lab_nodes] + sorted(objs):
            if name in seen:
                continue
            seen.add(name)
            lab = next((n for n in lab_nodes if str(n.get('name')) == name), {})
            obj = objs.get(name, {})
            labels = _meta(obj).get('labels') or {}
            roles = printers.node_roles(labels) if obj else None
            address = next((a.get('address') for a in _status(obj).get('addresses') or []
                            if a.get('type') == 'InternalIP'), None)
            ready = [c.get('status') for c in _status(obj).get('conditions') or []
                     if c.get('type') == 'Ready']
            out.append({
                'name': name,
                'role': lab.get('role') or (roles if roles not in (None, '<none>')
                                            else 'worker'),
                'ip': lab.get('ip') or address,
                'cidr': _spec(obj).get('podCIDR'),
                'bridge': lab.get('bridge'),
                'ready': {'True': 'Ready', 'False': 'NotReady'}.get(
                    ready[-1] if ready else None, 'Unknown'),
                'failed': name in failed})
        return out

    def nodes(self):
        g = self.g
        nodes = self.node_list()
        by_node: dict[str | None, list[dict]] = defaultdict(list)
        names = {n['name'] for n in nodes}
        for pod in self.pods:
            node = _spec(pod).get('nodeName')
            by_node[node if node in names else None].append(pod)
        for index, node in enumerate(nodes):
            color = BAD if node['failed'] else NODE_LINE
            first = (_font(_text(node['name']), bold=True) + ' '
                     + _font(_text(node['role']), NOTE, 9))
            state = ''
            if node['failed']:
                state = _font(' cable cut (kubelab node fail)', BAD, 9, bold=True)
            elif node['ready'] != 'Ready':
                state = _font(_text(f' {node["ready"]}'), NOTE, 9)
            details = ' \u00b7 '.join(x for x in (
                f'InternalIP {node["ip"]}' if node['ip'] else '',
                f'pods {node["cidr"]}' if node['cidr'] else '',
                f'bridge {node["bridge"]}' if node['bridge'] else '') if x)
            g.add(f'subgraph cluster_node{index} {{')
            g.add(f'label=<{first}{state}<BR ALIGN="LEFT"/>'
                  f'{_font(_text(details, 80), NOTE, 9)}<BR ALIGN="LEFT"/>>; '
                  f'style="rounded,filled{",bold" if node["failed"] else ""}"; '
                  f'color="{color}"; fillcolor="{NODE_FILL}"; fontname="{FONT}";', 2)
            self.pod_group(by_node.get(node['name'], []), node, 2)
            g.add('}')
        if by_node.get(None):
            g.add('subgraph cluster_unscheduled {')
            g.add(f'label=<{_font("not on a node of the lab (Pending)", BAD, 10)}>; '
                  f'style="dashed,rounded"; color="{BAD}"; fontname="{FONT}";', 2)
            self.pod_group(by_node[None], None, 2)
            g.add('}')

    def pod_group(self, pods: list[dict], node: dict | None, indent: int):
        g = self.g
        if not pods:
            g.node(g.new_id('empty'), _table([_row(_font('no pods', NOTE))], NODE_LINE,
                                             'white', dashed=True), COL_PODS, indent)
            return
        namespaces = sorted({_ns(p) for p in pods}, key=lambda ns: (ns != 'default', ns))
        for namespace in namespaces:
            members = [p for p in pods if _ns(p) == namespace]
            inner = indent
            if namespace != 'default':
                cluster = g.new_id('cluster_ns')
                g.add(f'subgraph {cluster} {{', indent)
                g.add(f'label=<{_font(_text(f"namespace {namespace}"), NOTE, 9)}>; '
                      f'style="dashed,rounded,filled"; fillcolor="white"; '
                      f'color="{NODE_LINE}"; fontname="{FONT}";', indent + 1)
                inner = indent + 1
            for pod in members:
                self.pod_box(pod, node, inner)
            if namespace != 'default':
                g.add('}', indent)

    def pod_box(self, pod: dict, node: dict | None, indent: int):
        g, spec = self.g, _spec(pod)
        pid = self.pod_ids[_key(pod)]
        ready = pod_ready(pod)
        status = printers.pod_row(pod, _EPOCH, False)[2]
        line = POD_LINE if ready else DIM
        if pid in self.proxy_of:
            line = L7
        title = _title(_name(pod), 'Pod', NOTE if ready else DIM)
        rows = [_row(title if ready else _font(title, DIM))]
        ip = pod_ip(pod)
        ip_text = _font(_text(ip), bold=True) if ip else _font('no IP yet', DIM)
        if not ready and status == 'Running':
            status = 'NotReady'
        if status != 'Running':
            ip_text += ' ' + _font(_text(status), DIM if status in CALM else BAD, 9)
        rows.append(_row(ip_text))
        host_ports = []
        for container in spec.get('containers') or []:
            if not isinstance(container, dict):
                continue
            ports = []
            for port in container.get('ports') or []:
                if not isinstance(port, dict):
                    continue
                text = str(port.get('containerPort', '?'))
                if (port.get('protocol') or 'TCP') != 'TCP':
                    text += f'/{port["protocol"]}'
                ports.append(text)
                if port.get('hostPort'):
                    host_ports.append(str(port['hostPort']))
            image = short_image(container.get('image'))
            text = f'\u25b8 {container.get("name", "?")}: {image}'
            if ports:
                text += ' :' + ', '.join(ports)
            rows.append(_row(_font(_text(text), NOTE if ready else DIM, 9)))
        if host_ports:
            where = f'{node["ip"]}' if node and node.get('ip') else 'its node'
            rows.append(_row(_font(_text(f'hostPort {where}:{", ".join(host_ports)}'),
                                   EXTERNAL, 9)))
        if pid in self.proxy_of:
            rows.append(_row(_font(_text('proxy of ' + ', '.join(self.proxy_of[pid])),
                                   L7, 9)))
        g.node(pid, _table(rows, line, 'white', dashed=not ready), COL_PODS, indent)
        if host_ports and node is not None:
            self.from_outside(f'{pid}:w')

    # ------------------------------------------------------------ legend and ranks
    def legend(self):
        def swatch(color, text, dashed=False):
            cell = (f'<TD WIDTH="26" BGCOLOR="{color}"></TD>' if not dashed else
                    f'<TD WIDTH="26" BORDER="1" STYLE="dashed" COLOR="{color}"></TD>')
            return (f'<TR>{cell}<TD ALIGN="LEFT" BALIGN="LEFT">'
                    f'{_font(_text(text, 60), size=9)}</TD></TR>')
        rows = [
            f'<TR><TD COLSPAN="2" ALIGN="LEFT">{_font("Legend", bold=True)}</TD></TR>',
            swatch(EXTERNAL, 'from outside: client \u2192 LB address \u2192 NodePort; '
                   'client \u2192 NodeIP:NodePort; client \u2192 node hostPort'),
            swatch(L7, 'Ingress / Gateway API: rule \u2192 Service; a purple pod: the '
                   'proxy running the rules'),
            swatch(SERVICE, 'Service: EndpointSlice \u2192 ready endpoint pod'),
            swatch(DIM, 'not ready or terminating (pod, endpoint)', dashed=True),
            swatch(NODE_FILL, 'node (InternalIP, pod CIDR, bridge); dashed box: a '
                   'namespace other than default'),
            swatch(BAD, 'failed node, missing backend, no endpoints'),
        ]
        table = ('<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="2" CELLPADDING="2" '
                 f'COLOR="{NODE_LINE}" BGCOLOR="white">{"".join(rows)}</TABLE>>')
        self.g.node(self.g.new_id('legend'), table, COL_EXTERNAL)

    def ranks(self):
        """One rank per column; an invisible edge between neighbouring columns keeps
        them in order."""
        g = self.g
        previous = None
        for column in sorted(g.columns):
            members = g.columns[column]
            g.add('{rank=same; ' + '; '.join(members) + ';}')
            if previous is not None:
                g.edge(previous, members[0], style='invis')
            previous = members[0]


# ---------------------------------------------------------------- rendering
def output_format(path: str) -> str:
    """``svg`` or ``png`` from the file's extension; a clear error otherwise."""
    ext = os.path.splitext(str(path))[1].lower().lstrip('.')
    if ext not in FORMATS:
        raise KubelabError(f'cannot tell the picture\'s format from "{path}": name a '
                           f'file ending in ' + ' or '.join(f'.{f}' for f in FORMATS)
                           + ' (e.g. `kubelab diagram -o lab.svg`)')
    return ext


def find_dot() -> str:
    """The path of Graphviz's ``dot``; a clear error when it is not installed."""
    dot = shutil.which('dot')
    if dot is None:
        raise KubelabError('Graphviz\'s `dot` is not installed: install the graphviz '
                           'package (`sudo apt-get install graphviz`; '
                           '`sudo ./run.sh install` does it)')
    return dot


def render(objects: dict[str, list[dict]], info: dict, path: str) -> None:
    """Draw the picture into ``path`` (.svg or .png): the whole file appears at once,
    or nothing changes."""
    fmt = output_format(path)
    dot = find_dot()
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise KubelabError(f'cannot write "{path}": the directory {directory} does not '
                           'exist')
    source = dot_source(objects, info)
    try:
        done = subprocess.run([dot, f'-T{fmt}'], input=source.encode('utf-8'),
                              capture_output=True, timeout=DOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise KubelabError(f'Graphviz\'s dot took more than {DOT_TIMEOUT} s') from None
    if done.returncode != 0 or not done.stdout:
        errors = done.stderr.decode('utf-8', 'replace').strip()
        raise KubelabError(f'Graphviz\'s dot failed (exit {done.returncode}): '
                           + (errors[-2000:] or 'no output'))
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.{os.getpid()}.tmp')
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, 'wb') as f:
            f.write(done.stdout)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise KubelabError(f'cannot write "{path}": {exc.strerror or exc}') from None
