"""The lab's picture, the ways into the cluster: the external hosts, the cloud load
balancer (its addresses, the healthy nodes, the arrows on to the NodePorts), and layer 7
(Ingress, Gateway and HTTPRoute boxes, the proxy pods that run their rules, the arrows
on to the Services). A part of ``_Diagram`` (kubelab/inspect/diagram.py).
"""

from __future__ import annotations

from collections import defaultdict

from kubelab.inspect.diagram_dot import (
    BAD, COL_EXTERNAL, COL_L7, COL_LB, COL_ROUTES, EXTERNAL, EXTERNAL_FILL, FONT,
    GATEWAY_NAME_LABEL, L7, L7_FILL, NOTE, SERVICE_NAME_LABEL, _font, _key,
    _lb_addresses, _meta, _name, _ns, _row, _service_ref, _spec, _status, _table, _text,
    _title)


class WaysIn:
    """The external side and layer 7 of ``_Diagram``: methods on its state (the graph
    ``g``, the objects, the ids of the boxes drawn so far)."""

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
        bare = self.info.get('cloud') == 'none'
        announced = {e['ip']: a['metadata']['name'] for a in self.items('L2Announcement')
                     for e in (a.get('status') or {}).get('addresses') or ()}
        rows = [_row(_title('Router, MetalLB layer 2', 'kl-rt') if bare else
                     _title('Cloud load balancer', 'kl-lb')),
                _row(_font(_text('the router sends an address to the node that answers '
                                 'ARP for it (MetalLB\'s elected speaker)' if bare else
                                 'passthrough: LB address:port \u2192 NodeIP:NodePort, '
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
                if address in announced:
                    text += '<BR ALIGN="LEFT"/>' + _font(
                        _text(f'announced by {announced[address]}'), NOTE, 8)
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
