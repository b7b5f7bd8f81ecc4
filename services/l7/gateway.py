"""Gateway API (gateway.networking.k8s.io/v1) -> a Gateway's fronts.

A Gateway is ours when its GatewayClass's ``spec.controllerName`` is. Its listeners
(HTTP or HTTPS; others are refused with ``UnsupportedProtocol``) on the same port form
one front. Listeners sharing a port and hostname, or a port with both protocols, are
``Conflicted`` and not served. HTTPS listeners need a usable Secret in
``tls.certificateRefs`` (same namespace; there is no ReferenceGrant support).

An HTTPRoute attaches through each ``parentRef`` naming the Gateway (``sectionName`` and
``port`` narrow the listeners) to the listeners that allow it (``allowedRoutes``: kinds,
namespaces ``Same``/``All``/``Selector``) and whose hostname intersects the route's
hostnames. Gateway API wildcards match ONE OR MORE labels (``*.example.com`` matches
``a.example.com`` and ``a.b.example.com``, not ``example.com``). The effective hostnames
are the intersections (``intersect_hostnames``). ``GatewayModel`` holds a Gateway's
listeners and the routes attached to them; the statuses (status.py) read it too.

Precedence, within a front: listeners from the most specific hostname to none, and a
request matching a listener's hostname is decided by the routes of that listener only
(listener isolation). Within a listener, every match of every attached route, sorted by
the spec's rules: hostname (exact before wildcard, longer first, none last); then an
Exact path; a RegularExpression path (longer pattern first; its rank is
implementation-specific, after Envoy Gateway); the longest PathPrefix (its trailing
slash ignored); a method match; the most header matches; the most query parameter
matches; then the oldest route, namespace/name, rule order and match order. The first
match wins; nothing matching answers 404. Matching itself is routes.py's. Filters,
timeouts and session persistence are not implemented.

Backends of a rule: its backendRefs split the requests by weight (weight 0 never
receives). A reference to an unsupported kind, to another namespace (RefNotPermitted)
or to a Service or port that does not exist makes its share answer 500; a Service
without ready endpoints makes its share answer 503; a rule whose backendRefs are all of
weight 0 (or absent) answers 500.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.l7.backends import NOT_FOUND, READY, Objects
from services.l7.certificates import load_certificate
from services.l7.routes import (ANY, ANY_LABELS, EXACT, PREFIX, REGEX, Action, Certificate,
                                Front, Route, Target, ValueMatch, age_key, host_order,
                                key_of, name_of, namespace_of, prefix_base, regex_is_safe)
from services.selectors import matches_label_selector

GATEWAY_CONTROLLER = 'kubelab.io/gateway-controller'
GATEWAY_GROUP = 'gateway.networking.k8s.io'

_HEADER_NAME = re.compile(r'[A-Za-z0-9-]+\Z')


def _gateway_host_covers(pattern: str, name: str) -> bool:
    """True when Gateway API hostname ``pattern`` covers ``name`` (a hostname or a
    narrower wildcard)."""
    if pattern == name:
        return True
    if not pattern.startswith('*.'):
        return False
    suffix = pattern[1:]
    return name.endswith(suffix) and len(name) > len(suffix) and \
        name[:-len(suffix)] != '*'


def intersect_hostnames(listener: str | None, hostnames) -> list:
    """The effective hostnames of a route on a listener ([None]: every host; []: the
    route does not attach)."""
    hostnames = [str(h).lower() for h in hostnames or ()]
    listener = listener.lower() if listener else None
    if not hostnames:
        return [listener]
    out = []
    for hostname in hostnames:
        if listener is None or _gateway_host_covers(listener, hostname):
            found = hostname
        elif _gateway_host_covers(hostname, listener):
            found = listener
        else:
            continue
        if found not in out:
            out.append(found)
    return out


@dataclass
class _Listener:
    index: int
    spec: dict
    name: str
    port: int
    protocol: str
    hostname: str | None
    accepted: tuple = (True, 'Accepted', '')
    resolved: tuple = (True, 'ResolvedRefs', '')
    conflicted: tuple = (False, 'NoConflicts', '')
    certificate: Certificate | None = None
    kinds: tuple = ()

    @property
    def attachable(self) -> bool:
        return self.accepted[0] and not self.conflicted[0]

    @property
    def programmed(self) -> bool:
        return self.attachable and (self.protocol == 'HTTP' or
                                    self.certificate is not None)


def parent_ref_key(ref: dict, namespace: str) -> tuple:
    return (ref.get('group', GATEWAY_GROUP), ref.get('kind', 'Gateway'),
            ref.get('namespace') or namespace, ref.get('name'), ref.get('sectionName'),
            ref.get('port'))


def gateway_class_is_ours(objects: dict, gateway: dict, controller: str) -> bool:
    name = (gateway.get('spec') or {}).get('gatewayClassName')
    return any(name_of(c) == name and (c.get('spec') or {}).get('controllerName') ==
               controller for c in objects.get('GatewayClass') or ())


class GatewayModel:
    """A Gateway's listeners and the routes attached to them."""

    def __init__(self, cluster: Objects, gateway: dict, controller: str):
        self.cluster = cluster
        self.gateway = gateway
        self.namespace, self.name = key_of(gateway)
        self.ours = gateway_class_is_ours(cluster.objects, gateway, controller)
        self.listeners = [self._listener(i, spec) for i, spec in
                          enumerate((gateway.get('spec') or {}).get('listeners') or ())]
        self._conflicts()
        self.results: dict[tuple, tuple] = {}     # (route key, parentRef key) -> result
        self.attached: dict[int, list] = {l.index: [] for l in self.listeners}
        for route in sorted(cluster.objects.get('HTTPRoute') or (), key=age_key):
            for ref in (route.get('spec') or {}).get('parentRefs') or ():
                key = (key_of(route), parent_ref_key(ref, namespace_of(route)))
                if key in self.results or not self._names_us(ref, namespace_of(route)):
                    continue
                result = self._attach(route, ref)
                self.results[key] = result[:3]
                for listener, hostnames in result[3]:
                    attached = self.attached[listener.index]
                    for i, (other, names) in enumerate(attached):
                        if other is route:
                            attached[i] = (route, names + [h for h in hostnames
                                                           if h not in names])
                            break
                    else:
                        attached.append((route, list(hostnames)))

    def _listener(self, index: int, spec: dict) -> _Listener:
        protocol = spec.get('protocol')
        listener = _Listener(index, spec, spec.get('name') or f'#{index}',
                             spec.get('port'), protocol,
                             str(spec.get('hostname')).lower()
                             if spec.get('hostname') else None)
        if protocol not in ('HTTP', 'HTTPS'):
            listener.accepted = (False, 'UnsupportedProtocol',
                                 f'protocol {protocol!r} is not supported; supported: '
                                 f'HTTP, HTTPS')
            return listener
        allowed = (spec.get('allowedRoutes') or {}).get('kinds')
        if allowed is None:
            listener.kinds = ({'group': GATEWAY_GROUP, 'kind': 'HTTPRoute'},)
        else:
            good = [k for k in allowed if k.get('group', GATEWAY_GROUP) == GATEWAY_GROUP
                    and k.get('kind') == 'HTTPRoute']
            listener.kinds = tuple({'group': GATEWAY_GROUP, 'kind': 'HTTPRoute'}
                                   for _ in good[:1])
            if len(good) != len(allowed):
                listener.resolved = (False, 'InvalidRouteKinds',
                                     'only HTTPRoute is supported')
        if protocol == 'HTTPS':
            self._certificate(listener)
        return listener

    def _certificate(self, listener: _Listener) -> None:
        tls = listener.spec.get('tls') or {}
        if tls.get('mode', 'Terminate') != 'Terminate':
            listener.accepted = (False, 'UnsupportedProtocol',
                                 'HTTPS listeners terminate TLS (mode Terminate)')
            return
        problems = []
        for ref in tls.get('certificateRefs') or ():
            namespace = ref.get('namespace') or self.namespace
            label = f'{namespace}/{ref.get("name")}'
            if ref.get('group', '') not in ('', 'core') or \
                    ref.get('kind', 'Secret') != 'Secret':
                problems.append(('InvalidCertificateRef',
                                 f'{label}: only core Secrets are supported'))
            elif namespace != self.namespace:
                problems.append(('RefNotPermitted',
                                 f'Secret {label} is in another namespace (no '
                                 f'ReferenceGrant support)'))
            else:
                certificate, why = load_certificate(
                    self.cluster.secrets.get((namespace, ref.get('name'))))
                if certificate is None:
                    problems.append(('InvalidCertificateRef', f'Secret {label}: {why}'))
                elif listener.certificate is None:
                    listener.certificate = certificate
        if not tls.get('certificateRefs'):
            problems.append(('InvalidCertificateRef', 'no certificateRefs'))
        if problems:
            listener.resolved = (False, problems[0][0],
                                 '; '.join(message for _, message in problems))

    def _conflicts(self) -> None:
        by_port: dict = {}
        for listener in self.listeners:
            if listener.accepted[0]:
                by_port.setdefault(listener.port, []).append(listener)
        for group in by_port.values():
            if len({l.protocol for l in group}) > 1:
                for listener in group:
                    listener.conflicted = (True, 'ProtocolConflict',
                                           f'port {listener.port} has listeners of '
                                           f'several protocols')
                continue
            for listener in group:
                if sum(1 for l in group if l.hostname == listener.hostname) > 1:
                    listener.conflicted = (True, 'HostnameConflict',
                                           f'another listener on port {listener.port} '
                                           f'has hostname {listener.hostname or "(none)"}')

    def _names_us(self, ref: dict, route_namespace: str) -> bool:
        return ref.get('group', GATEWAY_GROUP) == GATEWAY_GROUP and \
            ref.get('kind', 'Gateway') == 'Gateway' and \
            (ref.get('namespace') or route_namespace) == self.namespace and \
            ref.get('name') == self.name

    def _allows(self, listener: _Listener, namespace: str) -> bool:
        if not listener.kinds:
            return False
        namespaces = (listener.spec.get('allowedRoutes') or {}).get('namespaces') or {}
        source = namespaces.get('from', 'Same')
        if source == 'All':
            return True
        if source == 'Selector':
            return matches_label_selector(namespaces.get('selector'),
                                          self.cluster.namespace_labels(namespace))
        return source == 'Same' and namespace == self.namespace

    def _attach(self, route: dict, ref: dict) -> tuple:
        section, port = ref.get('sectionName'), ref.get('port')
        candidates = [l for l in self.listeners
                      if (section is None or l.name == section) and
                      (port is None or l.port == port)]
        if not candidates:
            return (False, 'NoMatchingParent',
                    f'Gateway {self.namespace}/{self.name} has no listener' +
                    (f' {section}' if section is not None else '') +
                    (f' on port {port}' if port is not None else ''), [])
        allowed = [l for l in candidates
                   if l.attachable and self._allows(l, namespace_of(route))]
        if not allowed:
            return (False, 'NotAllowedByListeners',
                    f'no listener of Gateway {self.namespace}/{self.name} allows '
                    f'HTTPRoutes from namespace {namespace_of(route)}', [])
        hits = []
        for listener in allowed:
            hostnames = intersect_hostnames(listener.hostname,
                                            (route.get('spec') or {}).get('hostnames'))
            if hostnames:
                hits.append((listener, hostnames))
        if not hits:
            return (False, 'NoMatchingListenerHostname',
                    'no listener hostname intersects the route\'s hostnames', [])
        return True, 'Accepted', 'attached to listener(s) ' + ', '.join(
            l.name for l, _ in hits), hits

    def attached_count(self, listener: _Listener) -> int:
        return len(self.attached[listener.index])


def _check_backend(ref: dict, route_namespace: str, cluster: Objects) -> tuple:
    """(problem, message, state, address, label) of a backendRef: ``problem`` is the
    ResolvedRefs reason of an unusable one (InvalidKind, RefNotPermitted,
    BackendNotFound), else None and ``state`` READY or NO_ENDPOINTS."""
    namespace = ref.get('namespace') or route_namespace
    label = f'{namespace}/{ref.get("name")}:{ref.get("port")}'
    if ref.get('group', '') not in ('', 'core') or ref.get('kind', 'Service') != 'Service':
        return ('InvalidKind', f'{ref.get("group", "")}/{ref.get("kind")} '
                f'{ref.get("name")}: only core Services are supported', None, None, label)
    if namespace != route_namespace:
        return ('RefNotPermitted', f'Service {label} is in another namespace (no '
                f'ReferenceGrant support)', None, None, label)
    state, address, label = cluster.resolve(namespace, ref.get('name'), ref.get('port'))
    if state == NOT_FOUND:
        return 'BackendNotFound', f'Service {label} not found', None, None, label
    return None, '', state, address, label


def resolved_refs(cluster: Objects, route: dict) -> tuple:
    """(ok, reason, message) of a route's ResolvedRefs condition."""
    problems = []
    for rule in (route.get('spec') or {}).get('rules') or ():
        for ref in rule.get('backendRefs') or ():
            problem, message, *_ = _check_backend(ref, namespace_of(route), cluster)
            if problem is not None:
                problems.append((problem, message))
    if not problems:
        return True, 'ResolvedRefs', 'all backend references resolved'
    return False, problems[0][0], '; '.join(message for _, message in problems)


def _rule_action(cluster: Objects, route: dict, rule: dict) -> Action:
    targets = []
    for ref in rule.get('backendRefs') or ():
        weight = ref.get('weight', 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
            continue
        problem, _, state, address, label = _check_backend(ref, namespace_of(route), cluster)
        if problem is not None:
            targets.append(Target(weight, label, status=500))
        elif state == READY:
            targets.append(Target(weight, label, address))
        else:
            targets.append(Target(weight, label, status=503))
    if not targets:
        return Action(status=500)
    statuses = {t.status for t in targets}
    if len(statuses) == 1 and None not in statuses:
        return Action(tuple(targets), status=statuses.pop())
    return Action(tuple(targets))


def _parse_match(match: dict) -> dict | None:
    """A match's conditions, or None when it can never match (unsafe regex, header
    name nginx cannot see, unknown type)."""
    path = match.get('path') or {}
    path_type = path.get('type', 'PathPrefix')
    value = path.get('value', '/')
    kind = {'PathPrefix': PREFIX, 'Exact': EXACT, 'RegularExpression': REGEX}.get(path_type)
    if kind is None or not isinstance(value, str) or \
            (kind == REGEX and not regex_is_safe(value)):
        return None
    headers, seen = [], set()
    for header in match.get('headers') or ():
        name, htype = str(header.get('name', '')), header.get('type', 'Exact')
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        if not _HEADER_NAME.match(name) or htype not in (EXACT, REGEX) or \
                (htype == REGEX and not regex_is_safe(header.get('value'))):
            return None
        headers.append(ValueMatch(name, str(header.get('value', '')), htype))
    query, seen = [], set()
    for param in match.get('queryParams') or ():
        name, qtype = str(param.get('name', '')), param.get('type', 'Exact')
        if name in seen:
            continue
        seen.add(name)
        if not name or qtype not in (EXACT, REGEX) or \
                (qtype == REGEX and not regex_is_safe(param.get('value'))):
            return None
        query.append(ValueMatch(name, str(param.get('value', '')), qtype))
    method = match.get('method')
    return {'path_type': kind, 'path': value,
            'method': str(method) if method is not None else None,
            'headers': tuple(headers), 'query': tuple(query)}


def _gateway_order(host: str | None, parsed: dict) -> tuple:
    kind, path = parsed['path_type'], parsed['path']
    if kind == EXACT:
        path_key = (0, -len(path))
    elif kind == REGEX:
        path_key = (1, -len(path))
    else:
        path_key = (2, -len(prefix_base(path)))
    return (host_order(host)[:2], path_key, 0 if parsed['method'] else 1,
            -len(parsed['headers']), -len(parsed['query']))


def gateway_fronts(objects: dict, gateway: dict, *,
                   controller: str = GATEWAY_CONTROLLER, address_of=None) -> list[Front]:
    """One front per port of the Gateway's programmed listeners ([] when the Gateway
    is not ours)."""
    cluster = Objects(objects, address_of)
    model = GatewayModel(cluster, gateway, controller)
    if not model.ours:
        return []
    by_port: dict[int, list[_Listener]] = {}
    for listener in model.listeners:
        if listener.programmed:
            by_port.setdefault(listener.port, []).append(listener)
    fronts = []
    for port in sorted(by_port):
        listeners = sorted(by_port[port], key=lambda l: host_order(l.hostname))
        table = []
        for position, listener in enumerate(listeners):
            entries, seen = [], set()
            for route, hostnames in model.attached[listener.index]:
                ref = f'HTTPRoute {namespace_of(route)}/{name_of(route)}'
                for r, rule in enumerate((route.get('spec') or {}).get('rules') or ()):
                    action = _rule_action(cluster, route, rule)
                    for m, match in enumerate(rule.get('matches') or [{}]):
                        parsed = _parse_match(match)
                        if parsed is None:
                            continue
                        for host in hostnames:
                            if (id(route), r, m, host) in seen:
                                continue
                            seen.add((id(route), r, m, host))
                            order = (_gateway_order(host, parsed), age_key(route), r, m)
                            entries.append((order, Route(
                                host, action=action,
                                source=f'{ref} rules[{r}].matches[{m}]', **parsed)))
            entries.sort(key=lambda e: e[0])
            table.extend(route for _, route in entries)
            if listener.hostname and position < len(listeners) - 1:
                table.append(Route(listener.hostname, ANY, '', Action(status=404),
                                   source=f'listener {listener.name}: no route matches'))
        tls = listeners[0].protocol == 'HTTPS'
        sni = tuple((l.hostname, l.certificate) for l in listeners
                    if tls and l.hostname)
        default = next((l.certificate for l in listeners if tls and not l.hostname),
                       None)
        fronts.append(Front(port, tls, ANY_LABELS, tuple(table), sni, default))
    return fronts
