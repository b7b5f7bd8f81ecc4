"""Shared by the l7 route tests: object builders (already validated and defaulted, as
the API server hands them over), the Kubernetes documentation's Ingress path table,
loopback HTTP backends that echo what they receive, a test CA made with the openssl
CLI, and a runner for a real nginx."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time

from services.l7.gateway import GATEWAY_CONTROLLER
from services.l7.ingress import INGRESS_CONTROLLER

NGINX = '/usr/sbin/nginx'
ECHO = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'l7echo.py')
CREATED = '2024-05-01T12:00:00Z'


def stamp(minute: int) -> str:
    """A creationTimestamp ``minute`` minutes after CREATED's hour."""
    return f'2024-05-01T12:{minute:02d}:00Z'


# ---------------------------------------------------------------- objects
def meta(name, namespace='default', created=CREATED, **extra) -> dict:
    out = {'name': name, 'namespace': namespace, 'uid': f'uid-{namespace}-{name}',
           'creationTimestamp': created}
    out.update(extra)
    return out


def service(name, namespace='default', ip='10.96.0.10', ports=(('http', 80),)):
    return {'apiVersion': 'v1', 'kind': 'Service', 'metadata': meta(name, namespace),
            'spec': {'clusterIP': ip, 'type': 'ClusterIP',
                     'ports': [{'name': port_name, 'port': number, 'protocol': 'TCP',
                                'targetPort': 8080} for port_name, number in ports]}}


def endpoint_slice(name, namespace='default', ready=True, port_names=('http',),
                   ip='192.168.2.10'):
    return {'apiVersion': 'discovery.k8s.io/v1', 'kind': 'EndpointSlice',
            'metadata': meta(f'{name}-abcde', namespace,
                             labels={'kubernetes.io/service-name': name}),
            'addressType': 'IPv4',
            'ports': [{'name': port_name, 'port': 8080, 'protocol': 'TCP'}
                      for port_name in port_names],
            'endpoints': [{'addresses': [ip], 'conditions': {'ready': ready}}]}


def backend(name, namespace='default', ready=True, ip='10.96.0.10', port=80,
            port_name='http'):
    """A Service and its EndpointSlice (one endpoint, ready or not)."""
    return [service(name, namespace, ip, ((port_name, port),)),
            endpoint_slice(name, namespace, ready, (port_name,))]


def ingress_class(name='nginx', controller=INGRESS_CONTROLLER, default=False):
    annotations = {'ingressclass.kubernetes.io/is-default-class': 'true'} \
        if default else {}
    return {'apiVersion': 'networking.k8s.io/v1', 'kind': 'IngressClass',
            'metadata': {'name': name, 'annotations': annotations,
                         'creationTimestamp': CREATED},
            'spec': {'controller': controller}}


def ibackend(service_name, port=80):
    key = 'name' if isinstance(port, str) else 'number'
    return {'service': {'name': service_name, 'port': {key: port}}}


def ipath(path, service_name, port=80, path_type='Prefix'):
    return {'path': path, 'pathType': path_type, 'backend': ibackend(service_name, port)}


def irule(host, *paths):
    rule = {'http': {'paths': list(paths)}}
    if host:
        rule['host'] = host
    return rule


def ingress(name, *rules, namespace='default', created=CREATED, default_backend=None,
            tls=(), annotations=None, class_name='nginx'):
    spec = {'rules': list(rules)}
    if class_name:
        spec['ingressClassName'] = class_name
    if default_backend:
        spec['defaultBackend'] = ibackend(default_backend)
    if tls:
        spec['tls'] = [{'hosts': list(hosts), 'secretName': secret}
                       for hosts, secret in tls]
    return {'apiVersion': 'networking.k8s.io/v1', 'kind': 'Ingress',
            'metadata': meta(name, namespace, created,
                             annotations=dict(annotations or {})),
            'spec': spec}


def tls_secret(name, cert: bytes, key: bytes, namespace='default'):
    return {'apiVersion': 'v1', 'kind': 'Secret', 'type': 'kubernetes.io/tls',
            'metadata': meta(name, namespace),
            'data': {'tls.crt': base64.b64encode(cert).decode(),
                     'tls.key': base64.b64encode(key).decode()}}


def gateway_class(name='kubelab', controller=GATEWAY_CONTROLLER):
    return {'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'GatewayClass',
            'metadata': {'name': name, 'creationTimestamp': CREATED, 'generation': 1},
            'spec': {'controllerName': controller}}


def listener(name, port=80, protocol='HTTP', hostname=None, source='Same',
             certs=(), selector=None, kinds=None):
    out = {'name': name, 'port': port, 'protocol': protocol,
           'allowedRoutes': {'namespaces': {'from': source}}}
    if selector is not None:
        out['allowedRoutes']['namespaces']['selector'] = selector
    if kinds is not None:
        out['allowedRoutes']['kinds'] = kinds
    if hostname:
        out['hostname'] = hostname
    if protocol == 'HTTPS':
        out['tls'] = {'mode': 'Terminate',
                      'certificateRefs': [{'kind': 'Secret', 'group': '', 'name': c}
                                          for c in certs]}
    return out


def gateway(name, *listeners, namespace='default', class_name='kubelab'):
    return {'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'Gateway',
            'metadata': meta(name, namespace, generation=1),
            'spec': {'gatewayClassName': class_name, 'listeners': list(listeners)}}


def match(path='/', path_type='PathPrefix', headers=(), query=(), method=None):
    """An HTTPRouteMatch with the defaults the API server fills in. ``headers`` and
    ``query``: (name, value) or (name, value, type)."""
    out = {'path': {'type': path_type, 'value': path}}
    if headers:
        out['headers'] = [{'name': h[0], 'value': h[1],
                           'type': h[2] if len(h) > 2 else 'Exact'} for h in headers]
    if query:
        out['queryParams'] = [{'name': q[0], 'value': q[1],
                               'type': q[2] if len(q) > 2 else 'Exact'} for q in query]
    if method:
        out['method'] = method
    return out


def bref(name, port=8080, weight=1, **extra):
    return {'group': '', 'kind': 'Service', 'name': name, 'port': port,
            'weight': weight, **extra}


def hrule(*matches, backends=()):
    return {'matches': list(matches) or [match()], 'backendRefs': list(backends)}


def httproute(name, *rules, hostnames=(), parents=('gw',), namespace='default',
              created=CREATED, status=None):
    refs = [p if isinstance(p, dict) else {'group': 'gateway.networking.k8s.io',
                                           'kind': 'Gateway', 'name': p}
            for p in parents]
    out = {'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'HTTPRoute',
           'metadata': meta(name, namespace, created, generation=2),
           'spec': {'parentRefs': refs, 'hostnames': list(hostnames),
                    'rules': list(rules)}}
    if status is not None:
        out['status'] = status
    return out


def namespace(name, labels=None):
    return {'apiVersion': 'v1', 'kind': 'Namespace',
            'metadata': {'name': name, 'labels': dict(labels or {}),
                         'creationTimestamp': CREATED}}


def objects(*items) -> dict:
    """kind -> objects, from objects and lists of objects."""
    out: dict[str, list] = {}
    for item in items:
        for obj in item if isinstance(item, list) else [item]:
            out.setdefault(obj['kind'], []).append(obj)
    return out


# ---------------------------------------------------------------- the docs' table
#: The "Examples" table under "Path types" of the Kubernetes Ingress documentation:
#: (rule paths as (pathType, path), request path, index of the path that must match,
#: or None: no match, the default backend answers).
INGRESS_PATH_TABLE = [
    ([('Prefix', '/')], '/', 0),
    ([('Prefix', '/')], '/anything/at/all', 0),
    ([('Exact', '/foo')], '/foo', 0),
    ([('Exact', '/foo')], '/bar', None),
    ([('Exact', '/foo')], '/foo/', None),
    ([('Exact', '/foo/')], '/foo', None),
    ([('Prefix', '/foo')], '/foo', 0),
    ([('Prefix', '/foo')], '/foo/', 0),
    ([('Prefix', '/foo/')], '/foo', 0),
    ([('Prefix', '/foo/')], '/foo/', 0),
    ([('Prefix', '/aaa/bb')], '/aaa/bbb', None),
    ([('Prefix', '/aaa/bbb')], '/aaa/bbb', 0),
    ([('Prefix', '/aaa/bbb/')], '/aaa/bbb', 0),
    ([('Prefix', '/aaa/bbb')], '/aaa/bbb/', 0),
    ([('Prefix', '/aaa/bbb')], '/aaa/bbb/ccc', 0),
    ([('Prefix', '/aaa/bbb')], '/aaa/bbbxyz', None),
    ([('Prefix', '/'), ('Prefix', '/aaa')], '/aaa/ccc', 1),
    ([('Prefix', '/'), ('Prefix', '/aaa'), ('Prefix', '/aaa/bbb')], '/aaa/bbb', 2),
    ([('Prefix', '/'), ('Prefix', '/aaa'), ('Prefix', '/aaa/bbb')], '/ccc', 0),
    ([('Prefix', '/aaa')], '/ccc', None),
    ([('Prefix', '/foo'), ('Exact', '/foo')], '/foo', 1),
]


def path_table_objects(domain='paths.test') -> list:
    """One Ingress per row of INGRESS_PATH_TABLE, host ``row<i>.<domain>``; path k
    goes to Service ``row<i>-p<k>``, the default backend is Service ``paths-default``."""
    out = []
    for i, (paths, _, _) in enumerate(INGRESS_PATH_TABLE):
        out.append(ingress(f'row{i}', irule(f'row{i}.{domain}', *[
            ipath(path, f'row{i}-p{k}', path_type=path_type)
            for k, (path_type, path) in enumerate(paths)]),
            default_backend='paths-default'))
        for k in range(len(paths)):
            out += backend(f'row{i}-p{k}')
    return out + backend('paths-default')


# ---------------------------------------------------------------- Gateway API conformance
# The routes and requests of the Gateway API conformance tests HTTPRoutePathMatchOrder,
# HTTPRouteHeaderMatching, HTTPRouteQueryParamMatching, HTTPRouteMethodMatching and
# HTTPRouteMatchingAcrossRoutes, for backends v1, v2, v3 (Services on port 8080).
# Cases: request -> backend, or 404.

def path_order_route(hostnames=()):
    return httproute(
        'path-matching-order',
        hrule(match('/match', 'Exact'), backends=[bref('v1')]),
        hrule(match('/match/exact', 'Exact'), backends=[bref('v2')]),
        hrule(match('/match/exact/one', 'Exact'), backends=[bref('v3')]),
        hrule(match('/match/'), backends=[bref('v3')]),
        hrule(match('/match/prefix/'), backends=[bref('v1')]),
        hrule(match('/match/prefix/one'), backends=[bref('v2')]),
        hostnames=hostnames)


PATH_ORDER_CASES = [('/match/exact/one', 'v3'), ('/match/exact', 'v2'), ('/match', 'v1'),
                    ('/match/prefix/one/any', 'v2'), ('/match/prefix/any', 'v1'),
                    ('/match/any', 'v3'), ('/matchx', 404)]


def header_matching_route(hostnames=()):
    return httproute(
        'header-matching',
        hrule(match(headers=[('version', 'one')]), backends=[bref('v1')]),
        hrule(match(headers=[('version', 'two')]), backends=[bref('v2')]),
        hrule(match(headers=[('version', 'two'), ('color', 'orange')]),
              backends=[bref('v1')]),
        hrule(match(headers=[('color', 'blue')]), match(headers=[('color', 'green')]),
              backends=[bref('v1')]),
        hrule(match(headers=[('color', 'red')]), match(headers=[('color', 'yellow')]),
              backends=[bref('v2')]),
        hostnames=hostnames)


HEADER_CASES = [({'Version': 'one'}, 'v1'), ({'Version': 'two'}, 'v2'),
                ({'Version': 'two', 'Color': 'orange'}, 'v1'),
                ({'Version': 'two', 'Color': 'blue'}, 'v2'), ({'Color': 'orange'}, 404),
                ({'Some-Other-Header': 'one'}, 404), ({'Color': 'blue'}, 'v1'),
                ({'Color': 'green'}, 'v1'), ({'Color': 'red'}, 'v2'),
                ({'Color': 'yellow'}, 'v2'), ({'Color': 'purple'}, 404),
                ({'VERSION': 'ONE'}, 404)]


def query_matching_route(hostnames=()):
    return httproute(
        'query-param-matching',
        hrule(match(query=[('animal', 'whale')]), backends=[bref('v1')]),
        hrule(match(query=[('animal', 'dolphin')]), backends=[bref('v2')]),
        hrule(match(query=[('animal', 'dolphin'), ('color', 'blue')]),
              match(query=[('ANIMAL', 'Whale')]), backends=[bref('v3')]),
        hrule(match('/path1', query=[('animal', 'whale')]), backends=[bref('v1')]),
        hrule(match(headers=[('version', 'one')], query=[('animal', 'whale')]),
              backends=[bref('v2')]),
        hrule(match('/path2', headers=[('version', 'two')], query=[('animal', 'whale')]),
              backends=[bref('v3')]),
        hrule(match('/path3', query=[('animal', 'shark')]),
              match('/path4', headers=[('version', 'three')], query=[('animal', 'kraken')]),
              backends=[bref('v1')]),
        hrule(match('/path5'), backends=[bref('v1')]),
        hrule(match(query=[('animal', 'hydra')]), backends=[bref('v2')]),
        hrule(match(headers=[('version', 'four')]), backends=[bref('v3')]),
        hostnames=hostnames)


QUERY_CASES = [
    ('/', 'animal=whale', {}, 'v1'), ('/', 'animal=dolphin', {}, 'v2'),
    ('/', 'animal=dolphin&color=blue', {}, 'v3'), ('/', 'ANIMAL=Whale', {}, 'v3'),
    ('/', 'animal=whale&otherparam=irrelevant', {}, 'v1'),
    ('/', 'animal=dolphin&color=yellow', {}, 'v2'), ('/', 'color=blue', {}, 404),
    ('/', 'animal=dog', {}, 404), ('/', 'animal=whaledolphin', {}, 404),
    ('/', '', {}, 404), ('/path1', 'animal=whale', {}, 'v1'),
    ('/', 'animal=whale', {'version': 'one'}, 'v2'),
    ('/path2', 'animal=whale', {'version': 'two'}, 'v3'),
    ('/path3', 'animal=shark', {}, 'v1'),
    ('/path4', 'animal=kraken', {'version': 'three'}, 'v1'),
    ('/', 'animal=shark', {}, 404), ('/path4', 'animal=kraken', {}, 404),
    ('/path5', 'animal=hydra', {}, 'v1'), ('/', 'animal=hydra', {'version': 'four'}, 'v3'),
    # the first occurrence of a name decides
    ('/', 'animal=dog&animal=whale', {}, 404), ('/', 'x=1&animal=whale&animal=dog', {}, 'v1'),
]


def method_matching_route(hostnames=()):
    return httproute(
        'method-matching',
        hrule(match(method='POST'), backends=[bref('v1')]),
        hrule(match(method='GET'), backends=[bref('v2')]),
        hrule(match('/path1', method='GET'), backends=[bref('v1')]),
        hrule(match(headers=[('version', 'one')], method='PUT'), backends=[bref('v2')]),
        hrule(match('/path2', headers=[('version', 'two')], method='POST'),
              backends=[bref('v3')]),
        hrule(match('/path3', method='PATCH'),
              match('/path4', headers=[('version', 'three')], method='DELETE'),
              backends=[bref('v1')]),
        hrule(match('/path5'), backends=[bref('v1')]),
        hrule(match(method='PATCH'), backends=[bref('v2')]),
        hrule(match(headers=[('version', 'four')]), backends=[bref('v3')]),
        hostnames=hostnames)


METHOD_CASES = [
    ('POST', '/', {}, 'v1'), ('GET', '/', {}, 'v2'), ('HEAD', '/', {}, 404),
    ('GET', '/path1', {}, 'v1'), ('PUT', '/', {'version': 'one'}, 'v2'),
    ('POST', '/path2', {'version': 'two'}, 'v3'), ('PATCH', '/path3', {}, 'v1'),
    ('DELETE', '/path4', {'version': 'three'}, 'v1'), ('PUT', '/', {}, 404),
    ('DELETE', '/path4', {}, 404), ('PATCH', '/path5', {}, 'v1'),
    ('PATCH', '/', {'version': 'four'}, 'v2')]


def across_routes():
    """The two routes of HTTPRouteMatchingAcrossRoutes."""
    return [
        httproute('matching-part1',
                  hrule(match(), match(headers=[('version', 'one')]), backends=[bref('v1')]),
                  hostnames=['example.com', 'example.net'], created=stamp(1)),
        httproute('matching-part2',
                  hrule(match('/v2'), match(headers=[('version', 'two')]),
                        backends=[bref('v2')]),
                  hostnames=['example.com'], created=stamp(2))]


ACROSS_CASES = [('example.com', '/', {}, 'v1'), ('example.com', '/example', {}, 'v1'),
                ('example.net', '/example', {}, 'v1'),
                ('example.com', '/example', {'Version': 'one'}, 'v1'),
                ('example.com', '/v2', {}, 'v2'), ('example.net', '/v2', {}, 'v1'),
                ('example.com', '/v2/example', {}, 'v2'),
                ('example.com', '/', {'Version': 'two'}, 'v2'),
                ('example.org', '/', {}, 404)]


# ---------------------------------------------------------------- backends
class Backends:
    """Echo servers (tests/unit/l7echo.py, in a process of their own) on 127.0.0.1
    that answer with their name and echo the request. ``address_of`` sends Service
    ``name`` to server ``alias.get(name, name)``; a Service without a server gets
    127.0.0.1:9 (nothing listens)."""

    def __init__(self, names, alias=None):
        self.alias = dict(alias or {})
        self.proc = subprocess.Popen([sys.executable, ECHO, *names], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.ports = json.loads(self.proc.stdout.readline())

    def address_of(self, svc, port):
        name = svc['metadata']['name']
        port = self.ports.get(self.alias.get(name, name))
        return f'127.0.0.1:{port}' if port else '127.0.0.1:9'

    def close(self):
        self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()


# ---------------------------------------------------------------- TLS
def _openssl(*args, cwd):
    subprocess.run(['openssl', *args], cwd=cwd, check=True, capture_output=True)


class LabCA:
    """A throwaway CA (openssl CLI) that issues certificates for host names."""

    def __init__(self, directory):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        _openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt',
                 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
                 '-subj', '/CN=kubelab test CA', '-keyout', 'ca.key', '-out', 'ca.crt',
                 '-addext', 'basicConstraints=critical,CA:TRUE',
                 '-addext', 'keyUsage=critical,keyCertSign,cRLSign', cwd=self.dir)
        self.cafile = os.path.join(self.dir, 'ca.crt')
        self.count = 0

    def issue(self, *hosts) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for ``hosts`` (subjectAltName DNS entries)."""
        self.count += 1
        stem = f'leaf{self.count}'
        with open(os.path.join(self.dir, stem + '.ext'), 'w') as f:
            f.write('subjectAltName=' + ','.join(f'DNS:{h}' for h in hosts) + '\n')
        _openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
                 '-nodes', '-subj', f'/CN={hosts[0]}', '-keyout', stem + '.key',
                 '-out', stem + '.csr', cwd=self.dir)
        _openssl('x509', '-req', '-in', stem + '.csr', '-CA', 'ca.crt', '-CAkey',
                 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', stem + '.ext',
                 '-out', stem + '.crt', cwd=self.dir)
        with open(os.path.join(self.dir, stem + '.crt'), 'rb') as crt, \
                open(os.path.join(self.dir, stem + '.key'), 'rb') as key:
            return crt.read(), key.read()

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)


def self_signed(directory, name='fake') -> tuple[str, str]:
    """A self-signed certificate and key (paths), like ingress-nginx's fake one."""
    directory = str(directory)
    _openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
             '-nodes', '-days', '2', '-subj',
             '/O=Acme Co/CN=Kubernetes Ingress Controller Fake Certificate',
             '-keyout', f'{name}.key', '-out', f'{name}.crt', cwd=directory)
    return os.path.join(directory, f'{name}.crt'), os.path.join(directory, f'{name}.key')


def der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode().split('-----END CERTIFICATE-----')[0]
                                    + '-----END CERTIFICATE-----\n')


# ---------------------------------------------------------------- HTTP client
class Reply:
    def __init__(self, status, headers, body, cert):
        self.status, self.headers, self.body, self.cert = status, headers, body, cert

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def backend(self) -> str | None:
        """The backend that answered, or None when nginx did."""
        try:
            return self.json['backend'] if self.status == 200 else None
        except ValueError:
            return None


def request(port, path='/', host=None, method='GET', headers=(), context=None,
            sni=None) -> Reply:
    """One request on a new connection to 127.0.0.1:``port`` (HTTP/1.0 without Host
    when ``host`` is None); TLS with ``context`` and ``sni``."""
    sock = socket.create_connection(('127.0.0.1', port), timeout=10)
    cert = None
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=sni)
            cert = sock.getpeercert(binary_form=True)
        lines = [f'{method} {path} HTTP/1.1' if host is not None
                 else f'{method} {path} HTTP/1.0']
        if host is not None:
            lines.append(f'Host: {host}')
        lines += [f'{name}: {value}' for name, value in headers]
        lines += ['Connection: close', '', '']
        sock.sendall('\r\n'.join(lines).encode('latin-1'))
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        return Reply(response.status, dict(response.getheaders()), body, cert)
    finally:
        sock.close()


def unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# ---------------------------------------------------------------- nginx
def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(('127.0.0.1', 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def write_files(config, files_dir):
    for rel, data in config.files.items():
        path = os.path.join(files_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)


def nginx_argv(prefix, *extra):
    return [NGINX, '-p', str(prefix), '-c', os.path.join(str(prefix), 'nginx.conf'),
            '-e', 'stderr', '-g', f'daemon off; pid {prefix}/nginx.pid;', *extra]


def nginx_test(config, prefix) -> subprocess.CompletedProcess:
    """Write ``config`` (its files under ``prefix/files``) and run ``nginx -t``."""
    prefix = str(prefix)
    os.makedirs(prefix, exist_ok=True)
    write_files(config, os.path.join(prefix, 'files'))
    with open(os.path.join(prefix, 'nginx.conf'), 'w') as f:
        f.write(config.text)
    return subprocess.run(nginx_argv(prefix, '-t'), capture_output=True, text=True)


class Nginx:
    """A real nginx on ``config`` (which must use ``prefix/files`` as files_dir)."""

    def __init__(self, config, prefix, ports):
        self.prefix = str(prefix)
        checked = nginx_test(config, self.prefix)
        assert checked.returncode == 0, checked.stderr
        self.log = open(os.path.join(self.prefix, 'nginx.log'), 'ab')   # shared by fds 1, 2
        self.proc = subprocess.Popen(nginx_argv(self.prefix), stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                try:
                    socket.create_connection(('127.0.0.1', port), timeout=1).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise AssertionError('nginx did not start: ' + self.output())
                    time.sleep(0.02)

    def output(self) -> str:
        with open(os.path.join(self.prefix, 'nginx.log'), 'rb') as f:
            return f.read().decode(errors='replace')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
