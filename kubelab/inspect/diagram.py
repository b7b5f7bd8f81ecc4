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
- A pod that NetworkPolicies isolate says so, per direction, in green (``\u26d4
  ingress isolated by x/deny-all``): only what their rules admit reaches it.
- A legend (top left) says what each colour and dashed line means.

The picture is drawn by ``_Diagram``, in parts: diagram_ingress.py (external hosts,
the cloud load balancer, Ingress and Gateway API), diagram_cluster.py (Services and
EndpointSlices, nodes and pods), and here the heading, the legend and the columns;
diagram_dot.py has the palette, the label text (every text from an object is cleaned,
wrapped and escaped, and no id comes from a name) and the graph being written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import defaultdict

from kubelab.inspect.diagram_cluster import ServicesAndNodes
from kubelab.inspect.diagram_dot import (
    BAD, COL_EXTERNAL, DIM, EXTERNAL, FONT, L7, NODE_FILL, NODE_LINE, NOTE, POLICY, SERVICE,
    _Graph, _font, _key, _ns, _text, pod_ip)
from kubelab.inspect.diagram_ingress import WaysIn
from services import networkpolicy
from services.errors import KubelabError

#: Output formats, by file extension.
FORMATS = ('svg', 'png')
#: Seconds ``dot`` may take.
DOT_TIMEOUT = 120


def dot_source(objects: dict[str, list[dict]], info: dict) -> str:
    """The DOT text of the lab's picture (see the module's docstring)."""
    return _Diagram(objects, info).source()


class _Diagram(WaysIn, ServicesAndNodes):
    """The picture being drawn: the objects, in order, and the ids of what is drawn.
    The parts of the picture are the methods of WaysIn (kubelab/inspect/diagram_ingress.py)
    and ServicesAndNodes (kubelab/inspect/diagram_cluster.py)."""

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
        self.policies = [networkpolicy.from_object(p) for p in self.items('NetworkPolicy')]
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
            swatch(POLICY, 'NetworkPolicy: the pod is isolated (only what a rule admits '
                   'passes)'),
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
