"""Route tables of the lab's Ingress controller and Gateway API implementation.

Pure functions from Kubernetes-shaped objects (``objects``: kind -> list of objects, as
``Store.snapshot`` gives them) to *fronts*: one per listening port, each an ordered
route table whose first matching route decides a request. This module holds the
tables' types, the matching and ``select``, the same decision nginx makes written in
Python, so the precedence rules can be tested without nginx (and the nginx tests prove
that nginx decides alike). The wing, by subject:

* ``ingress.py``: Ingress -> fronts (served Ingresses, hosts, paths, TLS, redirects);
* ``gateway.py``: Gateway API -> fronts (listeners, HTTPRoute attachment, matches,
  weighted backends);
* ``status.py``: the statuses written back (Ingress addresses, GatewayClass, Gateway
  and HTTPRoute conditions);
* ``backends.py``: a Service port as a backend (its address, whether it has ready
  endpoints); ``certificates.py``: TLS Secrets;
* ``nginx_conf.py``: the fronts rendered as nginx configuration;
* ``controller.py``: the controller that keeps it all applied through the store.

Matching: PathPrefix (Ingress Prefix) by path element, the trailing slash of the rule
ignored: ``/foo`` and ``/foo/`` match ``/foo``, ``/foo/`` and ``/foo/x`` but not
``/foobar``. RegularExpression values (path, header, query) are anchored full matches,
implementation-specific: PCRE through nginx, ``re`` in ``select``. A pattern that
Python's ``re`` cannot compile, or that uses constructs where the two differ in syntax
(named groups, ``\\N``, ``\\u``, inline flags other than ``ims``...), never matches
(``regex_is_safe``), so no object can break the nginx configuration. Header names are
case-insensitive (only letters, digits and ``-``: nginx drops other request headers),
values case-sensitive; an absent header reads as the empty value. Query parameter names
are case-sensitive; the first occurrence of a name counts; values are compared as sent
(not percent-decoded). Host wildcards: Ingress's ``*.foo.com`` covers ONE label
(``ONE_LABEL``), Gateway API's one or more (``ANY_LABELS``).

Older objects win ties (``age_key``: creationTimestamp, then namespace/name), and
hosts order exact first, then wildcards from the longest, then none (``host_order``).
"""

from __future__ import annotations

import datetime
import hashlib
import re
from dataclasses import dataclass

#: Host wildcard semantics of a front: Ingress's ``*.foo.com`` covers one label,
#: Gateway API's one or more.
ONE_LABEL = 'one-label'
ANY_LABELS = 'any-labels'

#: Path match types of a ``Route`` (``ANY``: every path, for catch-all routes).
EXACT = 'Exact'
PREFIX = 'Prefix'
REGEX = 'RegularExpression'
ANY = 'Any'

#: The status of requests that go to https instead (Ingress ssl-redirect).
REDIRECT = 308

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
def meta_of(obj: dict) -> dict:
    return obj.get('metadata') or {}


def namespace_of(obj: dict) -> str:
    return meta_of(obj).get('namespace') or 'default'


def name_of(obj: dict) -> str:
    return meta_of(obj).get('name') or ''


def key_of(obj: dict) -> tuple[str, str]:
    return namespace_of(obj), name_of(obj)


def _created(obj: dict) -> float:
    stamp = meta_of(obj).get('creationTimestamp')
    try:
        moment = datetime.datetime.fromisoformat(str(stamp).replace('Z', '+00:00'))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return moment.timestamp()
    except (TypeError, ValueError):
        return float('inf')          # unknown: the youngest


def age_key(obj: dict) -> tuple:
    """Oldest first: creationTimestamp, then namespace/name."""
    return _created(obj), namespace_of(obj), name_of(obj)


def host_order(host: str | None) -> tuple:
    """Exact hosts first (alphabetically: two never match the same request), then
    wildcards from the longest, then 'any host'."""
    if host is None:
        return 2, 0, ''
    if host.startswith('*.'):
        return 1, -len(host), host
    return 0, 0, host


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
