"""Route tables of the lab's Ingress controller and Gateway API implementation.

Pure functions from Kubernetes-shaped objects (``objects``: kind -> list of objects, as
``Store.snapshot`` gives them) to *fronts*: one per listening port, each an ordered
route table whose first matching route decides a request. ``services.l7.nginx_conf``
renders the fronts as nginx configuration; ``select`` is the same decision written in
Python, so the precedence rules can be tested without nginx (and the nginx tests prove
that nginx decides alike).

Backends
--------
A backend is a Service port, reached through its ClusterIP (``spec.clusterIP`` and the
port number of ``spec.ports``): the lab's kube-proxy dataplane balances the pods, as it
does for any client. ``address_of(service, port)`` replaces the address (tests point
backends at loopback servers). A backend is *ready* when the EndpointSlices labelled
``kubernetes.io/service-name=<service>`` in its namespace hold, for that port (slice
ports matched by name and protocol, as kube-proxy does), an endpoint whose
``conditions.ready`` is not false. A missing Service, a missing port, a UDP-only port
or a headless Service (``clusterIP: None``) is *not found*.

Ingress (networking.k8s.io/v1)
------------------------------
Served Ingresses: ``spec.ingressClassName`` (or the legacy annotation
``kubernetes.io/ingress.class``) names an IngressClass whose ``spec.controller`` is ours,
or the Ingress has no class and one of our IngressClasses is the default
(``ingressclass.kubernetes.io/is-default-class: "true"``). Older Ingresses first
(creationTimestamp, then namespace/name): on identical (host, path, pathType) the oldest
wins.

Paths: ``Exact`` is a case-sensitive equality. ``Prefix`` matches path elements, the
trailing slash of the rule ignored: ``/foo`` and ``/foo/`` match ``/foo``, ``/foo/`` and
``/foo/x`` but not ``/foobar``. ``ImplementationSpecific`` is treated as ``Prefix`` here.
Within a host the longest path wins (a Prefix's length without its trailing slash), and
at equal length Exact beats Prefix.

Hosts, as ingress-nginx decides them: a request whose host equals a rule's host is
decided by that host's rules only; else one matching a wildcard rule (``*.foo.com``
matches exactly ONE label: ``bar.foo.com``, not ``baz.bar.foo.com`` nor ``foo.com``) is
decided by that wildcard's rules only. Unmatched paths of such a host go to the
``defaultBackend`` of the oldest Ingress with rules for that host that has one, else
404. Any other request (or one without Host) goes through the host-less rules, then the
``defaultBackend`` of the oldest Ingress that has one, else 404. A backend without ready
endpoints, or one that does not exist, answers 503 (ingress-nginx's behaviour).

TLS: ``spec.tls[].hosts`` get the certificate of their Secret (type kubernetes.io/tls,
in the Ingress's namespace; the oldest Ingress wins a host) by SNI on 443; a missing or
unusable Secret leaves the host on the default (fake) certificate. A ``tls`` entry
without hosts is ignored. Plain HTTP requests for a TLS host are redirected (308) to
https unless the Ingress of the matched rule says
``nginx.ingress.kubernetes.io/ssl-redirect: "false"``; otherwise 80 and 443 route alike.

Gateway API (gateway.networking.k8s.io/v1)
------------------------------------------
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
are the intersections (``intersect_hostnames``).

Precedence, within a front: listeners from the most specific hostname to none, and a
request matching a listener's hostname is decided by the routes of that listener only
(listener isolation). Within a listener, every match of every attached route, sorted by
the spec's rules: hostname (exact before wildcard, longer first, none last); then an
Exact path; a RegularExpression path (longer pattern first; its rank is
implementation-specific, after Envoy Gateway); the longest PathPrefix (its trailing
slash ignored); a method match; the most header matches; the most query parameter
matches; then the oldest route, namespace/name, rule order and match order. The first
match wins; nothing matching answers 404.

Matching: PathPrefix by path element like Ingress Prefix. RegularExpression values (path,
header, query) are anchored full matches, implementation-specific: PCRE through nginx,
``re`` in ``select``. A pattern that Python's ``re`` cannot compile, or that uses
constructs where the two differ in syntax (named groups, ``\\N``, ``\\u``, inline
flags other than ``ims``...), never matches (``regex_is_safe``), so no object can break
the nginx configuration. Header names are case-insensitive (only letters, digits and
``-``: nginx drops other request headers), values case-sensitive; an absent header reads
as the empty value. Query parameter names are case-sensitive; the first occurrence of a
name counts; values are compared as sent (not percent-decoded). Filters, timeouts and
session persistence are not implemented.

Backends of a rule: its backendRefs split the requests by weight (weight 0 never
receives). A reference to an unsupported kind, to another namespace (RefNotPermitted)
or to a Service or port that does not exist makes its share answer 500; a Service
without ready endpoints makes its share answer 503; a rule whose backendRefs are all of
weight 0 (or absent) answers 500.

Statuses (``httproute_statuses``, ``gateway_status``, ``gatewayclass_status``) are in
metav1.Condition shape; a condition keeps its ``lastTransitionTime`` from the object's
current status while its status value does not change.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import hashlib
import ipaddress
import os
import re
import ssl
import tempfile
from dataclasses import dataclass

from services import naming
from services.controllers.endpointslices import SERVICE_NAME_LABEL
from services.selectors import matches_label_selector

INGRESS_CONTROLLER = 'k8s.io/ingress-nginx'
GATEWAY_CONTROLLER = 'kubelab.io/gateway-controller'
GATEWAY_GROUP = 'gateway.networking.k8s.io'
IS_DEFAULT_CLASS = 'ingressclass.kubernetes.io/is-default-class'
LEGACY_CLASS = 'kubernetes.io/ingress.class'
SSL_REDIRECT = 'nginx.ingress.kubernetes.io/ssl-redirect'
#: The label the API server puts on every Namespace (namespace selectors use it).
NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name'
TLS_SECRET_TYPE = 'kubernetes.io/tls'

#: Host wildcard semantics of a front: Ingress's ``*.foo.com`` covers one label,
#: Gateway API's one or more.
ONE_LABEL = 'one-label'
ANY_LABELS = 'any-labels'

#: Path match types of a ``Route`` (``ANY``: every path, for catch-all routes).
EXACT = 'Exact'
PREFIX = 'Prefix'
REGEX = 'RegularExpression'
ANY = 'Any'

#: Backend states of ``resolve_backend``.
READY = 'ready'
NO_ENDPOINTS = 'no-endpoints'
NOT_FOUND = 'not-found'

#: The status of requests that go to https instead (Ingress ssl-redirect).
REDIRECT = 308

_HEADER_NAME = re.compile(r'[A-Za-z0-9-]+\Z')
_FLAG_GROUP = re.compile(r'\(\?([A-Za-z]*)(?:-([A-Za-z]*))?[:)]')


# ---------------------------------------------------------------- the tables
@dataclass(frozen=True)
class ValueMatch:
    """A header or query parameter condition: ``type`` Exact or RegularExpression."""
    name: str
    value: str
    type: str = EXACT


@dataclass(frozen=True)
class Target:
    """One weighted share of a route's requests: proxied to ``address`` (``IP:PORT``),
    or answered with ``status`` (500/503) when its backend is unusable."""
    weight: int
    backend: str                    # 'namespace/service:port', for humans
    address: str | None = None
    status: int | None = None


@dataclass(frozen=True)
class Action:
    """What a route does: ``status`` set -> every request gets it (308: a redirect to
    https); else the requests are split over ``targets`` by weight."""
    targets: tuple = ()
    status: int | None = None

    def describe(self) -> str:
        if self.status == REDIRECT:
            return '308 -> https'
        if self.status is not None and not self.targets:
            return str(self.status)
        total = sum(t.weight for t in self.targets) or 1
        parts = []
        for t in self.targets:
            where = t.address if t.status is None else str(t.status)
            share = f' {100 * t.weight / total:.0f}%' if len(self.targets) > 1 else ''
            parts.append(f'{t.backend} ({where}){share}')
        return ', '.join(parts)


@dataclass(frozen=True)
class Route:
    """One entry of a front's table. ``host`` None matches every host; ``path`` is the
    rule's value as written (``path_type`` ANY ignores it)."""
    host: str | None
    path_type: str
    path: str
    action: Action
    method: str | None = None
    headers: tuple = ()             # ValueMatch, names as written
    query: tuple = ()               # ValueMatch
    source: str = ''                # the object and rule it comes from, for humans


@dataclass(frozen=True)
class Certificate:
    """A usable TLS Secret: PEM certificate (chain) and key."""
    namespace: str
    name: str
    cert: bytes
    key: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.cert + b'\0' + self.key).hexdigest()[:16]


@dataclass(frozen=True)
class Front:
    """A listening port. ``sni``: (host pattern, certificate), most specific first;
    ``certificate``: the one for other TLS clients (None: the caller's default)."""
    port: int
    tls: bool
    wildcard: str
    routes: tuple
    sni: tuple = ()
    certificate: Certificate | None = None

    @property
    def name(self) -> str:
        return f'{"https" if self.tls else "http"}:{self.port}'


# ---------------------------------------------------------------- matching
def host_matches(pattern: str | None, host: str, wildcard: str = ANY_LABELS) -> bool:
    """True when a request for ``host`` (lower case, no port) matches ``pattern``."""
    if pattern is None:
        return True
    if not pattern.startswith('*.'):
        return host == pattern
    suffix = pattern[1:]
    if not host.endswith(suffix) or len(host) == len(suffix):
        return False
    return wildcard == ANY_LABELS or '.' not in host[:-len(suffix)]


def prefix_base(path: str) -> str:
    """A Prefix rule's path without its trailing slashes (``/`` -> ``''``)."""
    return path.rstrip('/')


def path_matches(path_type: str, value: str, path: str) -> bool:
    if path_type == ANY:
        return True
    if path_type == EXACT:
        return path == value
    if path_type == PREFIX:
        base = prefix_base(value)
        return path == base or path.startswith(base + '/')
    return regex_is_safe(value) and re.fullmatch(value, path) is not None


def _value_matches(match: ValueMatch, actual: str) -> bool:
    if match.type == EXACT:
        return actual == match.value
    return regex_is_safe(match.value) and re.fullmatch(match.value, actual) is not None


def query_value(query: str, name: str) -> str:
    """The raw value of the first ``name=`` parameter of a query string ('' if none)."""
    for part in query.split('&'):
        key, eq, value = part.partition('=')
        if eq and key == name:
            return value
    return ''


def route_matches(route: Route, front: Front, host: str, method: str, path: str,
                  headers: dict, query: str) -> bool:
    if not host_matches(route.host, host, front.wildcard):
        return False
    if not path_matches(route.path_type, route.path, path):
        return False
    if route.method is not None and route.method != method:
        return False
    for match in route.headers:
        if not _value_matches(match, headers.get(match.name.lower(), '')):
            return False
    return all(_value_matches(m, query_value(query, m.name)) for m in route.query)


def select(front: Front, host: str = '', path: str = '/', method: str = 'GET',
           headers: dict | None = None, query: str = '') -> Route | None:
    """The route that decides a request (None: 404), as the rendered nginx does.

    ``host`` is the Host header (port and trailing dot are dropped, case ignored, as
    nginx's ``$host``); ``headers`` maps names (any case) to their first value;
    ``query`` is the raw query string.
    """
    host = host.split(':')[0].rstrip('.').lower()
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    for route in front.routes:
        if route_matches(route, front, host, method, path, lowered, query):
            return route
    return None


def regex_is_safe(pattern) -> bool:
    """True when ``pattern`` may be given to nginx's PCRE: printable ASCII, compiled by
    Python's ``re``, and without the constructs where Python and PCRE disagree on
    syntax: named groups (nginx would also turn them into variables), ``\\N``,
    ``\\u``, ``\\U``, inline flags other than ``ims`` (a ``(?x)`` comment would run
    past the group the pattern is wrapped in). PCRE accepts every such pattern; an
    unsafe one is dropped rather than rendered."""
    if not isinstance(pattern, str) or len(pattern) > 4096:
        return False
    if any(not ' ' <= ch <= '~' for ch in pattern):
        return False
    escaped = False
    for ch in pattern:
        if escaped:
            if ch in 'NuU':
                return False
            escaped = False
        elif ch == '\\':
            escaped = True
    for on, off in _FLAG_GROUP.findall(pattern):
        if set(on + off) - set('ims'):
            return False
    try:
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return False
    return not compiled.groupindex


# ---------------------------------------------------------------- objects
def _meta(obj: dict) -> dict:
    return obj.get('metadata') or {}


def _ns(obj: dict) -> str:
    return _meta(obj).get('namespace') or 'default'


def _name(obj: dict) -> str:
    return _meta(obj).get('name') or ''


def _key(obj: dict) -> tuple[str, str]:
    return _ns(obj), _name(obj)


def _created(obj: dict) -> float:
    stamp = _meta(obj).get('creationTimestamp')
    try:
        moment = datetime.datetime.fromisoformat(str(stamp).replace('Z', '+00:00'))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return moment.timestamp()
    except (TypeError, ValueError):
        return float('inf')          # unknown: the youngest


def age_key(obj: dict) -> tuple:
    """Oldest first: creationTimestamp, then namespace/name."""
    return _created(obj), _ns(obj), _name(obj)


def _valid_address(address) -> bool:
    if not isinstance(address, str):
        return False
    host, sep, port = address.rpartition(':')
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or \
            port != str(int(port)):
        return False
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
        try:
            return ipaddress.ip_address(host).version == 6
        except ValueError:
            return False
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


def _cluster_ip_address(service: dict, port: dict) -> str | None:
    ip = (service.get('spec') or {}).get('clusterIP')
    try:
        parsed = ipaddress.ip_address(ip)
    except (TypeError, ValueError):
        return None
    number = port.get('port')
    host = f'[{parsed}]' if parsed.version == 6 else str(parsed)
    return f'{host}:{number}'


class _Cluster:
    """Indexes of the objects the tables are made of."""

    def __init__(self, objects: dict, address_of=None):
        self.objects = objects
        self.address_of = address_of
        self.services = {_key(s): s for s in objects.get('Service') or ()}
        self.slices: dict[tuple, list] = {}
        for endpoint_slice in objects.get('EndpointSlice') or ():
            service = (_meta(endpoint_slice).get('labels') or {}).get(SERVICE_NAME_LABEL)
            if service:
                self.slices.setdefault((_ns(endpoint_slice), service), []).append(
                    endpoint_slice)
        self.secrets = {_key(s): s for s in objects.get('Secret') or ()}
        self.namespaces = {_name(n): n for n in objects.get('Namespace') or ()}

    def resolve(self, namespace: str, name, port) -> tuple[str, str | None, str]:
        """(state, address, 'namespace/name:port') of a Service port given by number
        or (str) by name."""
        label = f'{namespace}/{name}:{port}'
        service = self.services.get((namespace, name))
        if service is None:
            return NOT_FOUND, None, label
        spec = service.get('spec') or {}
        if spec.get('clusterIP') == 'None':
            return NOT_FOUND, None, label
        chosen = None
        for candidate in spec.get('ports') or ():
            if candidate.get('protocol', 'TCP') != 'TCP':
                continue
            if (isinstance(port, str) and candidate.get('name') == port) or \
                    (not isinstance(port, str) and candidate.get('port') == port):
                chosen = candidate
                break
        if chosen is None:
            return NOT_FOUND, None, label
        address = (self.address_of or _cluster_ip_address)(service, chosen)
        if not _valid_address(address):
            return NOT_FOUND, None, label
        return (READY if self._ready(namespace, name, chosen) else NO_ENDPOINTS,
                address, label)

    def _ready(self, namespace: str, name: str, port: dict) -> bool:
        port_name = port.get('name') or ''
        for endpoint_slice in self.slices.get((namespace, name), ()):
            if not any((p.get('name') or '') == port_name and
                       p.get('protocol', 'TCP') == 'TCP'
                       for p in endpoint_slice.get('ports') or ()):
                continue
            for endpoint in endpoint_slice.get('endpoints') or ():
                if endpoint.get('addresses') and \
                        (endpoint.get('conditions') or {}).get('ready') is not False:
                    return True
        return False

    def namespace_labels(self, name: str) -> dict:
        labels = dict(_meta(self.namespaces.get(name) or {}).get('labels') or {})
        labels[NAMESPACE_NAME_LABEL] = name
        return labels


def resolve_backend(objects: dict, namespace: str, service: str, port,
                    address_of=None) -> tuple[str, str | None]:
    """(READY | NO_ENDPOINTS | NOT_FOUND, 'IP:PORT' or None) of a Service port, given
    by number (int) or by name (str)."""
    state, address, _ = _Cluster(objects, address_of).resolve(namespace, service, port)
    return state, address


# ---------------------------------------------------------------- certificates
def _no_password():
    raise ValueError('encrypted keys are not supported')


@functools.lru_cache(maxsize=256)
def _pair_problem(cert: bytes, key: bytes) -> str:
    """'' when OpenSSL loads the pair as nginx will, else why not."""
    if b'-----BEGIN' not in cert or b'-----BEGIN' not in key:
        return 'tls.crt and tls.key must be PEM'
    with tempfile.TemporaryDirectory(prefix='kubelab-tls-') as tmp:
        cert_path, key_path = os.path.join(tmp, 'c.pem'), os.path.join(tmp, 'k.pem')
        with open(cert_path, 'wb') as f:
            f.write(cert)
        with open(key_path, 'wb') as f:
            f.write(key)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                cert_path, key_path, password=_no_password)
        except (ssl.SSLError, ValueError, OSError) as exc:
            return f'unusable certificate or key: {exc}'
    return ''


def load_certificate(secret: dict | None) -> tuple[Certificate | None, str]:
    """(Certificate, '') for a usable kubernetes.io/tls Secret, else (None, why)."""
    if secret is None:
        return None, 'not found'
    if secret.get('type') != TLS_SECRET_TYPE:
        return None, f'type is {secret.get("type")!r}, not {TLS_SECRET_TYPE!r}'
    data = secret.get('data') or {}
    try:
        cert = base64.b64decode(data.get('tls.crt') or '', validate=True)
        key = base64.b64decode(data.get('tls.key') or '', validate=True)
    except (binascii.Error, TypeError, ValueError):
        return None, 'data is not base64'
    problem = _pair_problem(cert, key)
    if problem:
        return None, problem
    return Certificate(_ns(secret), _name(secret), cert, key), ''


def _host_order(host: str | None) -> tuple:
    """Exact hosts first (alphabetically: two never match the same request), then
    wildcards from the longest, then 'any host'."""
    if host is None:
        return 2, 0, ''
    if host.startswith('*.'):
        return 1, -len(host), host
    return 0, 0, host


# ---------------------------------------------------------------- Ingress
def _truthy(value) -> bool:
    return str(value).strip().lower() == 'true'


def served_ingresses(objects: dict, controller: str = INGRESS_CONTROLLER) -> list[dict]:
    """The Ingresses ``controller`` serves, oldest first."""
    ours = {_name(c) for c in objects.get('IngressClass') or ()
            if (c.get('spec') or {}).get('controller') == controller}
    default = any(_truthy((_meta(c).get('annotations') or {}).get(IS_DEFAULT_CLASS))
                  for c in objects.get('IngressClass') or () if _name(c) in ours)
    served = []
    for ingress in objects.get('Ingress') or ():
        cls = (ingress.get('spec') or {}).get('ingressClassName') or \
            (_meta(ingress).get('annotations') or {}).get(LEGACY_CLASS)
        if (cls in ours) if cls else default:
            served.append(ingress)
    return sorted(served, key=age_key)


def _ssl_redirect(ingress: dict) -> bool:
    value = (_meta(ingress).get('annotations') or {}).get(SSL_REDIRECT, 'true')
    return str(value).strip().lower() != 'false'


def _ingress_action(cluster: _Cluster, namespace: str, backend: dict) -> Action:
    service = (backend or {}).get('service')
    if not service:
        resource = (backend or {}).get('resource') or {}
        label = f'{namespace}/{resource.get("kind", "?")}/{resource.get("name", "?")}'
        return Action((Target(1, label, status=503),), status=503)
    port = service.get('port') or {}
    ref = port.get('number') if port.get('number') is not None else port.get('name')
    state, address, label = cluster.resolve(namespace, service.get('name'), ref)
    if state == READY:
        return Action((Target(1, label, address),))
    return Action((Target(1, label, status=503),), status=503)


@dataclass
class _IngressPath:
    order: tuple
    kind: str
    path: str
    ingress: dict
    action: Action
    source: str


def ingress_fronts(objects: dict, *, controller: str = INGRESS_CONTROLLER,
                   address_of=None, http_port: int = 80,
                   https_port: int = 443) -> list[Front]:
    """The HTTP and HTTPS fronts of the Ingresses ``controller`` serves."""
    cluster = _Cluster(objects, address_of)
    ingresses = served_ingresses(objects, controller)
    by_host: dict[str, list[_IngressPath]] = {}
    owners: dict[str, list[dict]] = {}           # host -> Ingresses with rules for it
    hostless: list[_IngressPath] = []
    global_default = None
    tls_hosts: dict[str, tuple[dict, str]] = {}  # host -> (Ingress, secretName)
    for rank, ingress in enumerate(ingresses):
        namespace, spec = _ns(ingress), ingress.get('spec') or {}
        ref = f'Ingress {namespace}/{_name(ingress)}'
        if spec.get('defaultBackend') and global_default is None:
            global_default = ingress
        for r, rule in enumerate(spec.get('rules') or ()):
            host = str(rule.get('host') or '').lower() or None
            if host is not None:
                by_host.setdefault(host, [])
                if ingress not in owners.setdefault(host, []):
                    owners[host].append(ingress)
            for p, item in enumerate((rule.get('http') or {}).get('paths') or ()):
                kind = EXACT if item.get('pathType') == 'Exact' else PREFIX
                path = item.get('path') or '/'
                length = len(path) if kind == EXACT else len(prefix_base(path))
                entry = _IngressPath(
                    (-length, 0 if kind == EXACT else 1, rank, r, p), kind, path, ingress,
                    _ingress_action(cluster, namespace, item.get('backend')),
                    f'{ref} rules[{r}].http.paths[{p}] {item.get("pathType")} {path}')
                (by_host[host] if host is not None else hostless).append(entry)
        for entry in spec.get('tls') or ():
            for host in entry.get('hosts') or ():
                tls_hosts.setdefault(str(host).lower(), (ingress, entry.get('secretName')))

    def tls_enabled(host: str) -> bool:
        return host in tls_hosts or (not host.startswith('*.') and any(
            pattern.startswith('*.') and host_matches(pattern, host, ONE_LABEL)
            for pattern in tls_hosts))

    def ordered(entries):
        seen, out = set(), []
        for entry in sorted(entries, key=lambda e: e.order):
            identity = (entry.kind, entry.path if entry.kind == EXACT
                        else prefix_base(entry.path))
            if identity not in seen:
                seen.add(identity)
                out.append(entry)
        return out

    def routes(tls: bool) -> tuple:
        table = []
        for host in sorted(by_host, key=_host_order):
            redirect = not tls and tls_enabled(host)
            for entry in ordered(by_host[host]):
                action = Action(status=REDIRECT) \
                    if redirect and _ssl_redirect(entry.ingress) else entry.action
                table.append(Route(host, entry.kind, entry.path, action,
                                   source=entry.source))
            owner = next((i for i in owners[host]
                          if (i.get('spec') or {}).get('defaultBackend')), None)
            if owner is not None:
                action = _ingress_action(cluster, _ns(owner),
                                         owner['spec']['defaultBackend'])
                source = f'Ingress {_ns(owner)}/{_name(owner)} defaultBackend'
                redirect = redirect and _ssl_redirect(owner)
            else:
                action, source = Action(status=404), f'host {host}: no rule matches'
                redirect = redirect and any(_ssl_redirect(i) for i in owners[host])
            table.append(Route(host, ANY, '', Action(status=REDIRECT) if redirect
                               else action, source=source))
        for entry in ordered(hostless):
            table.append(Route(None, entry.kind, entry.path, entry.action,
                               source=entry.source))
        if global_default is not None:
            table.append(Route(None, ANY, '', _ingress_action(
                cluster, _ns(global_default), global_default['spec']['defaultBackend']),
                source=f'Ingress {_ns(global_default)}/{_name(global_default)} '
                       f'defaultBackend'))
        return tuple(table)

    sni = []
    for host in sorted(tls_hosts, key=_host_order):
        ingress, secret_name = tls_hosts[host]
        certificate, _ = load_certificate(
            cluster.secrets.get((_ns(ingress), secret_name)) if secret_name else None)
        if certificate is not None:
            sni.append((host, certificate))
    return [Front(http_port, False, ONE_LABEL, routes(False)),
            Front(https_port, True, ONE_LABEL, routes(True), tuple(sni))]


# ---------------------------------------------------------------- Gateway API
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


def _ref_key(ref: dict, namespace: str) -> tuple:
    return (ref.get('group', GATEWAY_GROUP), ref.get('kind', 'Gateway'),
            ref.get('namespace') or namespace, ref.get('name'), ref.get('sectionName'),
            ref.get('port'))


def gateway_class_is_ours(objects: dict, gateway: dict, controller: str) -> bool:
    name = (gateway.get('spec') or {}).get('gatewayClassName')
    return any(_name(c) == name and (c.get('spec') or {}).get('controllerName') ==
               controller for c in objects.get('GatewayClass') or ())


class _GatewayModel:
    """A Gateway's listeners and the routes attached to them."""

    def __init__(self, cluster: _Cluster, gateway: dict, controller: str):
        self.cluster = cluster
        self.gateway = gateway
        self.namespace, self.name = _key(gateway)
        self.ours = gateway_class_is_ours(cluster.objects, gateway, controller)
        self.listeners = [self._listener(i, spec) for i, spec in
                          enumerate((gateway.get('spec') or {}).get('listeners') or ())]
        self._conflicts()
        self.results: dict[tuple, tuple] = {}     # (route key, parentRef key) -> result
        self.attached: dict[int, list] = {l.index: [] for l in self.listeners}
        for route in sorted(cluster.objects.get('HTTPRoute') or (), key=age_key):
            for ref in (route.get('spec') or {}).get('parentRefs') or ():
                key = (_key(route), _ref_key(ref, _ns(route)))
                if key in self.results or not self._names_us(ref, _ns(route)):
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
                   if l.attachable and self._allows(l, _ns(route))]
        if not allowed:
            return (False, 'NotAllowedByListeners',
                    f'no listener of Gateway {self.namespace}/{self.name} allows '
                    f'HTTPRoutes from namespace {_ns(route)}', [])
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


def _check_backend(ref: dict, route_namespace: str, cluster: _Cluster) -> tuple:
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


def _route_refs(cluster: _Cluster, route: dict) -> tuple:
    """(ok, reason, message) of a route's ResolvedRefs condition."""
    problems = []
    for rule in (route.get('spec') or {}).get('rules') or ():
        for ref in rule.get('backendRefs') or ():
            problem, message, *_ = _check_backend(ref, _ns(route), cluster)
            if problem is not None:
                problems.append((problem, message))
    if not problems:
        return True, 'ResolvedRefs', 'all backend references resolved'
    return False, problems[0][0], '; '.join(message for _, message in problems)


def _rule_action(cluster: _Cluster, route: dict, rule: dict) -> Action:
    targets = []
    for ref in rule.get('backendRefs') or ():
        weight = ref.get('weight', 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
            continue
        problem, _, state, address, label = _check_backend(ref, _ns(route), cluster)
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
    return (_host_order(host)[:2], path_key, 0 if parsed['method'] else 1,
            -len(parsed['headers']), -len(parsed['query']))


def gateway_fronts(objects: dict, gateway: dict, *,
                   controller: str = GATEWAY_CONTROLLER, address_of=None) -> list[Front]:
    """One front per port of the Gateway's programmed listeners ([] when the Gateway
    is not ours)."""
    cluster = _Cluster(objects, address_of)
    model = _GatewayModel(cluster, gateway, controller)
    if not model.ours:
        return []
    by_port: dict[int, list[_Listener]] = {}
    for listener in model.listeners:
        if listener.programmed:
            by_port.setdefault(listener.port, []).append(listener)
    fronts = []
    for port in sorted(by_port):
        listeners = sorted(by_port[port], key=lambda l: _host_order(l.hostname))
        table = []
        for position, listener in enumerate(listeners):
            entries, seen = [], set()
            for route, hostnames in model.attached[listener.index]:
                ref = f'HTTPRoute {_ns(route)}/{_name(route)}'
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


# ---------------------------------------------------------------- statuses
def condition(ctype: str, status: bool, reason: str, message: str, *,
              previous=None, generation=None, now: str) -> dict:
    """A metav1.Condition; ``lastTransitionTime`` comes from the same type in
    ``previous`` while the status value is unchanged."""
    value = 'True' if status else 'False'
    old = next((c for c in previous or () if c.get('type') == ctype), None)
    since = old.get('lastTransitionTime') if old and old.get('status') == value else None
    out = {'type': ctype, 'status': value, 'reason': reason, 'message': message,
           'lastTransitionTime': since or now}
    if generation is not None:
        out['observedGeneration'] = generation
    return out


def httproute_statuses(objects: dict, *, controller: str = GATEWAY_CONTROLLER,
                       address_of=None, now: str | None = None) -> dict:
    """(namespace, name) -> the ``status`` each HTTPRoute should have: one
    ``parents`` entry per parentRef naming one of our Gateways (Accepted and
    ResolvedRefs), the entries of other controllers kept. Routes with nothing of ours
    (now or before) are left out."""
    now = now or naming.now_rfc3339()
    cluster = _Cluster(objects, address_of)
    gateways = {_key(g): g for g in objects.get('Gateway') or ()}
    models: dict[tuple, _GatewayModel] = {}
    out = {}
    for route in objects.get('HTTPRoute') or ():
        namespace = _ns(route)
        previous = (route.get('status') or {}).get('parents') or []
        mine = [p for p in previous if p.get('controllerName') == controller]
        others = [p for p in previous if p.get('controllerName') != controller]
        entries, done, resolved = [], set(), None
        for ref in (route.get('spec') or {}).get('parentRefs') or ():
            ref_key = _ref_key(ref, namespace)
            gateway_key = (ref.get('namespace') or namespace, ref.get('name'))
            if ref_key in done or ref_key[:2] != (GATEWAY_GROUP, 'Gateway') or \
                    gateway_key not in gateways:
                continue
            if gateway_key not in models:
                models[gateway_key] = _GatewayModel(cluster, gateways[gateway_key],
                                                    controller)
            model = models[gateway_key]
            if not model.ours:
                continue
            done.add(ref_key)
            accepted, reason, message = model.results[(_key(route), ref_key)]
            if resolved is None:
                resolved = _route_refs(cluster, route)
            old = next((p.get('conditions') for p in mine
                        if _ref_key(p.get('parentRef') or {}, namespace) == ref_key), None)
            generation = _meta(route).get('generation')
            entries.append({
                'parentRef': dict(ref), 'controllerName': controller,
                'conditions': [
                    condition('Accepted', accepted, reason, message, previous=old,
                              generation=generation, now=now),
                    condition('ResolvedRefs', *resolved, previous=old,
                              generation=generation, now=now)]})
        if entries or mine:
            out[_key(route)] = {'parents': others + entries}
    return out


def gateway_status(objects: dict, gateway: dict, *, controller: str = GATEWAY_CONTROLLER,
                   address: str | None = None, now: str | None = None) -> dict | None:
    """The ``status`` of a Gateway of ours (None when its class is not ours):
    ``addresses`` (``address``, the caller's), conditions Accepted and Programmed,
    and per listener its supportedKinds, attachedRoutes and conditions."""
    now = now or naming.now_rfc3339()
    model = _GatewayModel(_Cluster(objects), gateway, controller)
    if not model.ours:
        return None
    generation = _meta(gateway).get('generation')
    previous = gateway.get('status') or {}
    old_listeners = {l.get('name'): l.get('conditions')
                     for l in previous.get('listeners') or ()}
    listeners = []
    for listener in model.listeners:
        old = old_listeners.get(listener.name)
        programmed = listener.programmed
        listeners.append({
            'name': listener.name,
            'supportedKinds': [dict(k) for k in listener.kinds],
            'attachedRoutes': model.attached_count(listener),
            'conditions': [
                condition('Accepted', *listener.accepted, previous=old,
                          generation=generation, now=now),
                condition('Programmed', programmed,
                          'Programmed' if programmed else 'Invalid',
                          '' if programmed else 'the listener is not served',
                          previous=old, generation=generation, now=now),
                condition('ResolvedRefs', *listener.resolved, previous=old,
                          generation=generation, now=now),
                condition('Conflicted', *listener.conflicted, previous=old,
                          generation=generation, now=now)]})
    valid = [l for l in model.listeners if l.programmed]
    if len(valid) == len(model.listeners):
        accepted = (True, 'Accepted', '')
    else:
        accepted = (bool(valid), 'ListenersNotValid',
                    f'{len(model.listeners) - len(valid)} listener(s) are not valid')
    if not address:
        programmed = (False, 'AddressNotAssigned', 'the Gateway has no address yet')
    elif not valid:
        programmed = (False, 'Invalid', 'no listener is valid')
    else:
        programmed = (True, 'Programmed', '')
    old = previous.get('conditions')
    status = {
        'conditions': [
            condition('Accepted', *accepted, previous=old, generation=generation, now=now),
            condition('Programmed', *programmed, previous=old, generation=generation,
                      now=now)],
        'listeners': listeners}
    if address:
        try:
            ipaddress.ip_address(address)
            kind = 'IPAddress'
        except ValueError:
            kind = 'Hostname'
        status['addresses'] = [{'type': kind, 'value': address}]
    return status


def gatewayclass_status(gatewayclass: dict, *, controller: str = GATEWAY_CONTROLLER,
                        now: str | None = None) -> dict | None:
    """The ``status`` of a GatewayClass of ours (Accepted), None for others'."""
    if (gatewayclass.get('spec') or {}).get('controllerName') != controller:
        return None
    return {'conditions': [condition(
        'Accepted', True, 'Accepted', f'handled by {controller}',
        previous=(gatewayclass.get('status') or {}).get('conditions'),
        generation=_meta(gatewayclass).get('generation'),
        now=now or naming.now_rfc3339())]}


# ---------------------------------------------------------------- for humans
def describe_match(route: Route) -> str:
    parts = [route.path_type if route.path_type == ANY
             else f'{route.path_type} {route.path}']
    if route.method:
        parts.append(route.method)
    for match in route.headers:
        parts.append(f'header {match.name}' +
                     ('=' if match.type == EXACT else '~') + match.value)
    for match in route.query:
        parts.append(f'query {match.name}' +
                     ('=' if match.type == EXACT else '~') + match.value)
    return ' '.join(parts)


def route_rows(fronts) -> list[tuple[str, str, str, str]]:
    """The tables as rows (front, host, match, backends), in precedence order."""
    return [(front.name, route.host or '*', describe_match(route),
             route.action.describe())
            for front in fronts for route in front.routes]
