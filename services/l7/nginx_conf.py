"""nginx configuration of the lab's Ingress controller and Gateways.

``ingress_config`` and ``gateway_config`` turn objects into an ``NginxConfig``: the text
of one nginx.conf and the files it needs (TLS certificates and keys decoded from
Secrets, under ``tls/``, named after the Secret and a hash of its content). The same
objects always give byte-identical text and files (no times, sorted everything), so
the caller writes and reloads only on a real change. ``render`` does the same for
fronts computed elsewhere (``services.l7.ingress`` and ``services.l7.gateway``; the
routing semantics are ``services.l7.routes``'s).

How a request is decided
------------------------
Every front (listening port) has one ``map`` whose source is the key
``"$host\\n$request_method\\n<flags>\\n$uri"`` and whose entries are one anchored regex
per route, in precedence order: nginx tries ``map`` regexes in the order written, so
the first matching route wins, exactly as ``routes.select`` does. ``\\n`` separators
(the config parser turns them into newlines) cannot occur in a host, a method or the
flags; ``$uri`` (decoded, normalised) comes last, so even a ``%0A`` in a path cannot
shift the fields.

``<flags>`` is one character per condition the front's routes use (``1`` when it
holds): each header, query parameter and RegularExpression path condition is its own
``map`` over exactly the value it tests (``$http_<name>``; the first value of a query
parameter, taken from ``$args`` by a small extracting ``map`` because nginx's
``$arg_<name>`` ignores case; ``$uri``). So a user's regex is only ever applied to its
own value, fully anchored, and can never match across fields (a better fit than one
composite key with user regexes in it).

The map yields an upstream name or an outcome: ``kl_s404``/``kl_s500``/``kl_s503``
answered by ``return`` inside ``if`` in the location (``return`` is what is safe
there), ``kl_r308`` by a redirect to ``https://$host$request_uri``.

Backends: each distinct weighted backend set is an ``upstream`` of ``ClusterIP:port``
servers with their weights (weight 0 left out, weights divided by their gcd);
nginx's smooth weighted round robin (one worker) gives exact splits. A share that must
fail (invalid backend: 500, no ready endpoint: 503) is a member pointing at a tiny
internal server on 127.0.0.1 that answers that status, so a 70/30 split with one bad
backend fails exactly 30% of requests. ``max_fails=0`` keeps nginx from taking members
out, ``proxy_next_upstream off`` makes a failed backend visible instead of retried
elsewhere. ``proxy_pass http://$variable`` names an upstream group, so no resolver is
needed. Requests go upstream as HTTP/1.0 without keepalive: each request is a new
connection through the ClusterIP dataplane (kube-proxy balances per connection), with
``Host $host``, ``X-Forwarded-For``, ``X-Real-IP``, ``X-Forwarded-Proto``.

TLS: one ``server`` per SNI host (regex ``server_name``, most specific first, so a
one-label Ingress wildcard stays one label) with its certificate, and a default server
with the default certificate; all servers of a port share the same routing.

Runtime: the caller runs ``nginx -p PREFIX -c CONF -e stderr -g 'daemon off; pid
PREFIX/nginx.pid;'`` as root, so the config sets neither ``daemon`` nor ``pid``. It has
``worker_processes 1``, ``user root root`` (the lab's directories are root's; workers
must read and write the temp directories), temp paths relative to the prefix,
``error_log stderr``, an access log on stdout with the upstream address and status,
``GET /healthz`` -> 200 on the health port (ingress-nginx's 10254) and fronts on
0.0.0.0. ``Listen`` moves ports and the address (tests bind 127.0.0.1 on free ports).

Everything that comes from an object is escaped: hosts, paths, header and query values
become regex literals (every non-alphanumeric character backslash-escaped, anything
outside printable ASCII as ``\\xHH``), user regexes pass ``routes.regex_is_safe``,
strings are double-quoted with ``\\`` and ``"`` escaped, comments keep printable
ASCII only, file names are sanitised; an object can never break or inject into the
configuration.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from services.l7.gateway import GATEWAY_CONTROLLER, gateway_fronts
from services.l7.ingress import INGRESS_CONTROLLER, ingress_fronts
from services.l7.routes import (EXACT, ONE_LABEL, PREFIX, REDIRECT, REGEX, Front, Route,
                                describe_match, prefix_base, regex_is_safe)

__all__ = ['NginxConfig', 'Listen', 'ingress_config', 'gateway_config', 'render',
           'HEALTH_PORT', 'STATUS_PORTS']

HEALTH_PORT = 10254
#: 127.0.0.1 ports of the internal servers that answer 500 and 503.
STATUS_PORTS = (10281, 10282)
_SAFE_NAME = re.compile(r'[^A-Za-z0-9.-]')
_ADDRESS = re.compile(r'(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):\d{1,5}\Z')
_HEADER_NAME = re.compile(r'[A-Za-z0-9-]+\Z')


@dataclass(frozen=True)
class NginxConfig:
    """``text``: nginx.conf; ``files``: relative path -> bytes, to be written under
    the ``files_dir`` the text refers to."""
    text: str
    files: dict


@dataclass(frozen=True)
class Listen:
    """Where servers listen: fronts on ``address`` at ``port_map.get(port, port)``,
    the health server on ``address:health_port``, the internal 500/503 servers on
    127.0.0.1 ``status_ports``."""
    address: str = '0.0.0.0'
    port_map: dict = field(default_factory=dict)
    health_port: int = HEALTH_PORT
    status_ports: tuple = STATUS_PORTS


# ---------------------------------------------------------------- escaping
def _lit(text: str) -> str:
    """``text`` as a PCRE literal."""
    out = []
    for ch in text:
        if ch.isascii() and (ch.isalnum() or ch in '/_-'):
            out.append(ch)
        elif ' ' <= ch <= '~':
            out.append('\\' + ch)
        else:
            out.extend(f'\\x{byte:02x}' for byte in ch.encode('utf-8', 'replace'))
    return ''.join(out)


def _q(text: str) -> str:
    """``text`` as an nginx double-quoted string (no control characters allowed)."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in text):
        raise ValueError(f'control character in {text!r}')
    return '"' + text.replace('\\', '\\\\').replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    clean = ''.join(ch if ' ' <= ch <= '~' else '?' for ch in text)
    return clean if len(clean) <= 160 else clean[:157] + '...'


def _safe_path(path: str, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isabs(path) or '$' in path or \
            any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in path):
        raise ValueError(f'{what} must be an absolute path without "$" or control '
                         f'characters: {path!r}')
    return path


def _file_stem(certificate) -> str:
    return (f'{_SAFE_NAME.sub("-", certificate.namespace)[:60]}_'
            f'{_SAFE_NAME.sub("-", certificate.name)[:60]}-{certificate.digest}')


def _host_regex(host: str | None, wildcard: str) -> str:
    if host is None:
        return r'[^\n]*'
    host = host.lower()
    if host.startswith('*.'):
        return (r'[^.\n]+' if wildcard == ONE_LABEL else r'[^\n]+') + _lit(host[1:])
    return _lit(host)


def _server_name(host: str, wildcard: str) -> str:
    return '~^' + _host_regex(host, wildcard) + r'\z'


def _path_regex(route: Route) -> str:
    if route.path_type == EXACT:
        return _lit(route.path)
    if route.path_type == PREFIX:
        return _lit(prefix_base(route.path)) + r'(?:/[\s\S]*)?'
    return r'[\s\S]*'


# ---------------------------------------------------------------- the pieces
class _Conditions:
    """The condition maps: one variable per (source, test), numbered by first use."""

    def __init__(self):
        self.extractors: dict[str, str] = {}      # query name -> variable
        self.tests: dict[tuple, str] = {}         # (source, regex) -> variable
        self.lines: list[str] = []

    def _test(self, source: str, regex: str, label: str) -> str:
        key = (source, regex)
        if key not in self.tests:
            var = f'$kl_c{len(self.tests)}'
            self.tests[key] = var
            self.lines += [f'# {_comment(label)}',
                           f'map {source} {var} {{ {_q("~" + regex)} 1; default 0; }}']
        return self.tests[key]

    def _value_regex(self, match) -> str:
        if match.type == EXACT:
            return '^' + _lit(match.value) + r'\z'
        return '^(?:' + match.value + r')\z'

    def header(self, match) -> str | None:
        if not _HEADER_NAME.match(match.name) or \
                (match.type != EXACT and not regex_is_safe(match.value)):
            return None
        source = '$http_' + match.name.lower().replace('-', '_')
        return self._test(source, self._value_regex(match),
                          f'header {match.name} {match.type} {match.value}')

    def query(self, match) -> str | None:
        if match.type != EXACT and not regex_is_safe(match.value):
            return None
        if match.name not in self.extractors:
            var = f'$kl_q{len(self.extractors)}'
            self.extractors[match.name] = var
            capture = f'{var[1:]}_v'
            self.lines += [
                f'# the first value of query parameter {_comment(match.name)}',
                f'map $args {var} {{ '
                f'{_q("~^(?:[^&]*&)*?" + _lit(match.name) + f"=(?<{capture}>[^&]*)")} '
                f'${capture}; default ""; }}']
        return self._test(self.extractors[match.name], self._value_regex(match),
                          f'query {match.name} {match.type} {match.value}')

    def path(self, pattern: str) -> str | None:
        if not regex_is_safe(pattern):
            return None
        return self._test('$uri', '^(?:' + pattern + r')\z', f'path regex {pattern}')


class _Upstreams:
    """Weighted backend sets -> upstream names, numbered by first use."""

    def __init__(self, status_ports: tuple):
        self.status_ports = {500: status_ports[0], 503: status_ports[1]}
        self.names: dict[tuple, str] = {}
        self.labels: dict[str, list[str]] = {}

    def name(self, targets) -> str:
        members: dict[str, int] = {}
        labels = []
        for target in targets:
            if target.weight <= 0:
                continue
            if target.status is None:
                if not _ADDRESS.match(target.address or ''):
                    raise ValueError(f'bad backend address {target.address!r}')
                server = target.address
            else:
                server = f'127.0.0.1:{self.status_ports[target.status]}'
            members[server] = members.get(server, 0) + target.weight
            labels.append(f'{target.backend} weight {target.weight}' +
                          (f' -> {target.status}' if target.status else ''))
        divisor = math.gcd(*members.values())
        key = tuple((server, weight // divisor) for server, weight in members.items())
        if key not in self.names:
            self.names[key] = f'kl_b{len(self.names) + 1}'
            self.labels[self.names[key]] = labels
        return self.names[key]

    def lines(self) -> list[str]:
        out = []
        for key, name in self.names.items():
            out += [f'upstream {name} {{']
            out += [f'    # {_comment(label)}' for label in self.labels[name]]
            out += [f'    server {server} weight={weight} max_fails=0;'
                    for server, weight in key]
            out += ['}']
        return out


def _outcome(action, upstreams: _Upstreams) -> str:
    if action.status == REDIRECT:
        return 'kl_r308'
    if action.status is not None:
        return f'kl_s{action.status}'
    return upstreams.name(action.targets)


def _front_map(front: Front, conditions: _Conditions, upstreams: _Upstreams,
               var: str) -> tuple[list[str], set]:
    """The decision map of one front, and the outcomes it yields."""
    compiled = []                     # (route, outcome, required condition variables)
    for route in front.routes:
        required = []
        for match in route.headers:
            required.append(conditions.header(match))
        for match in route.query:
            required.append(conditions.query(match))
        if route.path_type == REGEX:
            required.append(conditions.path(route.path))
        if None in required:
            continue                  # can never match
        compiled.append((route, _outcome(route.action, upstreams), required))
    flags = []
    for _, _, required in compiled:
        flags += [v for v in required if v not in flags]
    key = '$host\\n$request_method\\n' + ''.join(flags) + '\\n$uri'
    lines = [f'map "{key}" {var} {{', '    default kl_s404;']
    for route, outcome, required in compiled:
        positions = [flags.index(v) for v in required]
        field_re = ''
        gap = 0
        for position in range(max(positions) + 1 if positions else 0):
            if position in positions:
                field_re += (f'[01]{{{gap}}}' if gap > 1 else '[01]' * gap) + '1'
                gap = 0
            else:
                gap += 1
        field_re += '[01]*'
        method = _lit(route.method) if route.method is not None else r'[^\n]*'
        regex = (f'^{_host_regex(route.host, front.wildcard)}\\n{method}\\n'
                 f'{field_re}\\n{_path_regex(route)}\\z')
        lines.append(f'    # {_comment(route.source or "")}: '
                     f'{_comment(route.host or "*")} '
                     f'{_comment(describe_match(route))}')
        lines.append(f'    {_q("~" + regex)} {outcome};')
    lines.append('}')
    return lines, {outcome for _, outcome, _ in compiled} | {'kl_s404'}


def _location(var: str, outcomes: set) -> list[str]:
    lines = ['    location / {']
    for outcome in sorted(outcomes):
        if outcome == 'kl_r308':
            lines.append(f'        if ({var} = kl_r308) '
                         '{ return 308 https://$host$request_uri; }')
        elif outcome.startswith('kl_s'):
            lines.append(f'        if ({var} = {outcome}) {{ return {outcome[4:]}; }}')
    lines += [f'        proxy_pass http://{var};', '    }']
    return lines


def _hostport(address: str, port: int) -> str:
    return f'[{address}]:{port}' if ':' in address else f'{address}:{port}'


class _Files:
    """The files a configuration needs (TLS certificates and keys), each under
    ``files_dir`` where the text refers to it."""

    def __init__(self, files_dir: str):
        self.dir = files_dir
        self.files: dict[str, bytes] = {}

    def certificate(self, certificate) -> tuple[str, str]:
        """The paths of a Secret's certificate and key (named after the Secret and a
        hash of its content)."""
        stem = _file_stem(certificate)
        self.files[f'tls/{stem}.crt'] = certificate.cert
        self.files[f'tls/{stem}.key'] = certificate.key
        return (os.path.join(self.dir, 'tls', stem + '.crt'),
                os.path.join(self.dir, 'tls', stem + '.key'))

    def default(self, default_cert) -> tuple | None:
        """The paths of the caller's default (certificate, key): PEM bytes become
        files, paths are used as they are."""
        if default_cert is None:
            return None
        paths = []
        for value, name in zip(default_cert, ('default.crt', 'default.key')):
            if isinstance(value, (bytes, bytearray)):
                self.files[f'tls/{name}'] = bytes(value)
                paths.append(os.path.join(self.dir, 'tls', name))
            else:
                paths.append(_safe_path(value, 'default_cert'))
        return tuple(paths)


def _servers(front: Front, port: str, location: list[str], default_paths,
             files: _Files) -> list[str]:
    """A front's default server (its certificate: the front's own, else the caller's
    default, else its first SNI one), then one server per SNI host."""
    ssl = ' ssl' if front.tls else ''
    default = None
    if front.tls:
        if front.certificate is not None:
            default = files.certificate(front.certificate)
        elif default_paths is not None:
            default = default_paths
        elif front.sni:
            default = files.certificate(front.sni[0][1])
        else:
            raise ValueError(f'{front.name} has no certificate to serve')
    servers = [f'# {front.name}', 'server {', f'    listen {port}{ssl} default_server;',
               '    server_name "";']
    if default:
        servers += [f'    ssl_certificate {_q(default[0])};',
                    f'    ssl_certificate_key {_q(default[1])};']
    servers += location + ['}']
    for host, certificate in front.sni if front.tls else ():
        crt, key = files.certificate(certificate)
        servers += [f'# {front.name} SNI {_comment(host)}: Secret '
                    f'{_comment(certificate.namespace)}/{_comment(certificate.name)}',
                    'server {', f'    listen {port} ssl;',
                    f'    server_name {_q(_server_name(host, front.wildcard))};',
                    f'    ssl_certificate {_q(crt)};',
                    f'    ssl_certificate_key {_q(key)};']
        servers += location + ['}']
    return servers


#: The http block's settings: the access log, temp paths, proxying as HTTP/1.0.
_HTTP_SETTINGS = (
    "log_format kubelab '$remote_addr \"$request\" host=$host status=$status '",
    "                   'upstream=$upstream_addr upstream_status=$upstream_status '",
    "                   'bytes=$body_bytes_sent time=$request_time';",
    'access_log /dev/stdout kubelab;',
    'client_body_temp_path client_body_temp;',
    'proxy_temp_path proxy_temp;',
    'fastcgi_temp_path fastcgi_temp;',
    'uwsgi_temp_path uwsgi_temp;',
    'scgi_temp_path scgi_temp;',
    'server_tokens off;',
    'variables_hash_max_size 8192;',
    'variables_hash_bucket_size 128;',
    'proxy_http_version 1.0;',
    'proxy_set_header Host $host;',
    'proxy_set_header X-Real-IP $remote_addr;',
    'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    'proxy_set_header X-Forwarded-Proto $scheme;',
    'proxy_next_upstream off;',
    'proxy_connect_timeout 5s;',
    'proxy_read_timeout 60s;',
    'proxy_send_timeout 60s;',
)


def _internal_servers(listen: Listen) -> list[str]:
    """The health server and the servers that answer the failing shares' statuses."""
    health = _hostport(listen.address, listen.health_port)
    return [
        '# health: GET /healthz -> 200',
        'server {',
        f'    listen {health};',
        '    server_name "";',
        '    access_log off;',
        '    location = /healthz { default_type text/plain; return 200 "ok\\n"; }',
        '    location / { return 404; }',
        '}',
        '# the statuses of failing shares of weighted backends',
        f'server {{ listen 127.0.0.1:{listen.status_ports[0]}; access_log off; '
        f'return 500; }}',
        f'server {{ listen 127.0.0.1:{listen.status_ports[1]}; access_log off; '
        f'return 503; }}',
    ]


def render(fronts, *, files_dir: str, default_cert=None, listen: Listen | None = None,
           title: str = 'kubelab') -> NginxConfig:
    """The nginx configuration of ``fronts``.

    ``files_dir``: absolute directory where the caller writes ``files``.
    ``default_cert``: (certificate, key) for TLS clients no SNI host claims, each PEM
    ``bytes`` (written to ``files``) or an absolute path; when None a TLS front uses
    its own default (Gateway listener without hostname) or its first SNI certificate.
    """
    listen = listen or Listen()
    files = _Files(_safe_path(files_dir, 'files_dir'))
    default_paths = files.default(default_cert)
    conditions = _Conditions()
    upstreams = _Upstreams(listen.status_ports)
    maps, servers = [], []
    for front in sorted(fronts, key=lambda f: f.port):
        var = f'$kl_route_{front.port}'
        front_map, outcomes = _front_map(front, conditions, upstreams, var)
        maps += [f'# {front.name}: {len(front.routes)} routes, first match wins'] + \
            front_map
        port = _hostport(listen.address, listen.port_map.get(front.port, front.port))
        servers += _servers(front, port, _location(var, outcomes), default_paths, files)
    http = list(_HTTP_SETTINGS)
    for section in (conditions.lines, maps, upstreams.lines(), servers):
        if section:
            http += [''] + section
    http += [''] + _internal_servers(listen)
    lines = [
        f'# {_comment(title)}: generated by kubelab (services/l7/nginx_conf.py); do not edit.',
        'user root root;',
        'worker_processes 1;',
        'error_log stderr notice;',
        'events { worker_connections 1024; }',
        'http {',
    ] + [f'    {line}' if line else '' for line in http] + ['}']
    return NginxConfig('\n'.join(lines) + '\n', dict(sorted(files.files.items())))


def ingress_config(objects: dict, *, controller: str = INGRESS_CONTROLLER,
                   files_dir: str, default_cert, address_of=None,
                   listen: Listen | None = None) -> NginxConfig:
    """The ingress controller's nginx configuration: fronts 80 and 443 of the
    Ingresses ``controller`` serves; ``default_cert`` (certificate, key: PEM bytes or
    absolute paths) is the fake certificate for TLS hosts without a usable Secret."""
    return render(ingress_fronts(objects, controller=controller, address_of=address_of),
                  files_dir=files_dir, default_cert=default_cert, listen=listen,
                  title=f'ingress controller {controller}')


def gateway_config(objects: dict, gateway: dict, *, controller: str = GATEWAY_CONTROLLER,
                   files_dir: str, default_cert=None, address_of=None,
                   listen: Listen | None = None) -> NginxConfig:
    """A Gateway's nginx configuration: one front per port of its programmed
    listeners (only the health server when the Gateway is not ours)."""
    meta = gateway.get('metadata') or {}
    return render(gateway_fronts(objects, gateway, controller=controller,
                                 address_of=address_of),
                  files_dir=files_dir, default_cert=default_cert, listen=listen,
                  title=f'Gateway {meta.get("namespace")}/{meta.get("name")}')
