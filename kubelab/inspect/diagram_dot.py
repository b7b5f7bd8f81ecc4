"""The DOT text of the lab's picture (kubelab/inspect/diagram.py): the palette and the
columns, HTML-like labels built from object text, the object fields the boxes read,
and the graph being written.

Every text that comes from an object goes through ``_text`` (control characters
dropped, long lines wrapped, ``& < > "`` escaped) into an HTML-like label; node and
cluster ids are generated (``_Graph.new_id``), never taken from names, so no user text
reaches DOT syntax. The underscored names are the diagram modules' own
(diagram.py, diagram_ingress.py, diagram_cluster.py), not an API.
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from datetime import datetime, timezone
from services import conditions

#: Characters per label line before wrapping.
WRAP = 48

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
POLICY = '#00796b'                                # NetworkPolicy isolation

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
    """Ready (services/conditions.py) and not being deleted: what the EndpointSlice
    controller calls ready."""
    return not _meta(pod).get('deletionTimestamp') and conditions.pod_ready(pod)


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
