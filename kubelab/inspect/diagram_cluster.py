"""The lab's picture, inside the cluster: the Services grouped by namespace (type,
addresses, ports, policies, one row per EndpointSlice) with an arrow from each
EndpointSlice to each endpoint's pod, and the nodes with their pods grouped by
namespace. A part of ``_Diagram`` (kubelab/inspect/diagram.py).
"""

from __future__ import annotations

from collections import defaultdict

from kubelab import printers
from kubelab.inspect.diagram_dot import (
    BAD, CALM, COL_PODS, COL_SERVICES, DIM, EXTERNAL, FONT, L7, NODE_FILL, NODE_LINE,
    NOTE, POD_LINE, POLICY, SERVICE, SERVICE_FILL, SERVICE_NAME_LABEL, _EPOCH, _font, _key,
    _lb_addresses, _meta, _name, _ns, _port_text, _row, _spec, _status, _table, _text,
    _title, pod_ip, pod_ready, short_image)
from services import networkpolicy
from services.endpoints import endpoint_ready


class ServicesAndNodes:
    """The Services, endpoints, nodes and pods of ``_Diagram``: methods on its state
    (the graph ``g``, the objects, the ids of the boxes drawn so far)."""

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
        """Ready (services/endpoints.py) and not terminating: drawn as a live endpoint."""
        return endpoint_ready(endpoint) and not (endpoint.get('conditions') or {}).get(
            'terminating')

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

    def isolation(self, pod: dict) -> list[str]:
        """'\u26d4 ingress isolated by x/deny-all' per direction NetworkPolicies isolate
        the pod in (everything else is let through)."""
        meta = _meta(pod)
        member = networkpolicy.Member(_ns(pod), _name(pod), pod_ip(pod) or '', tuple(
            sorted((meta.get('labels') or {}).items())))
        out = []
        for direction in (networkpolicy.INGRESS, networkpolicy.EGRESS):
            keys = [p.key for p in networkpolicy.isolating(self.policies, member, direction)]
            if keys:
                out.append(f'\u26d4 {direction.lower()} isolated by {", ".join(keys)}')
        return out

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
        rows += [_row(_font(_text(text), POLICY, 9)) for text in self.isolation(pod)]
        g.node(pid, _table(rows, line, 'white', dashed=not ready), COL_PODS, indent)
        if host_ports and node is not None:
            self.from_outside(f'{pid}:w')
