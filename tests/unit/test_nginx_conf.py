"""The rendered nginx configuration, proven with a real nginx on loopback: Python
backends on 127.0.0.1 answer with their name and echo what they received, and real
HTTP and HTTPS requests (Host headers, SNI, a test CA) show which backend answered or
which status nginx gave. Every rendered configuration passes ``nginx -t``."""

import collections
import os
import random
import re
import urllib.parse

import pytest

from services.l7 import certificates
from services.l7.nginx_conf import (Listen, NginxConfig, gateway_config, ingress_config,
                                 render)
from tests.unit.l7helpers import (ACROSS_CASES, HEADER_CASES, INGRESS_PATH_TABLE,
                                  METHOD_CASES, NGINX, PATH_ORDER_CASES, QUERY_CASES,
                                  Backends, LabCA, Nginx, across_routes, backend, bref,
                                  der, free_ports, gateway, gateway_class,
                                  header_matching_route, hrule, httproute, ingress,
                                  ingress_class, ipath, irule, listener, match,
                                  method_matching_route, nginx_test, objects,
                                  path_order_route, path_table_objects,
                                  query_matching_route, request, self_signed, stamp,
                                  tls_secret, unverified_context)

pytestmark = pytest.mark.skipif(
    not os.path.exists(NGINX),
    reason=f'{NGINX} is missing: install Debian\'s nginx to run the nginx tests')


class Lab:
    """A rendered configuration served by a real nginx on free loopback ports."""

    def __init__(self, tmp, render_config, backends, front_ports):
        ports = free_ports(len(front_ports) + 3)
        self.port = dict(zip(front_ports, ports))
        self.health = ports[-3]
        self.listen = Listen('127.0.0.1', dict(self.port), ports[-3], tuple(ports[-2:]))
        self.prefix = str(tmp)
        self.backends = backends
        self.config = render_config(files_dir=os.path.join(self.prefix, 'files'),
                                    listen=self.listen)
        self.nginx = Nginx(self.config, self.prefix, ports)

    def get(self, front, path='/', host=None, **kwargs) -> 'object':
        return request(self.port[front], path, host, **kwargs)

    def close(self):
        self.nginx.stop()
        self.backends.close()


@pytest.fixture(scope='module')
def ca(tmp_path_factory):
    return LabCA(tmp_path_factory.mktemp('ca'))


@pytest.fixture(scope='module')
def fake(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp('fake'))


# ---------------------------------------------------------------- Ingress
def ingress_objects(ca):
    others = ingress_class('other', 'acme.io/other')
    return objects(
        ingress_class('nginx', default=True), others,
        [item for name in ('web', 'api', 'wild', 'exact', 'catch', 'host-default',
                           'global-default', 'young-default', 'old', 'new', 'secure',
                           'noredirect') for item in backend(name)],
        backend('down', ready=False),
        tls_secret('secure-tls', *ca.issue('secure.test')),
        tls_secret('wild-tls', *ca.issue('*.tls.test')),
        tls_secret('noredirect-tls', *ca.issue('noredirect.test')),
        ingress('global', default_backend='global-default', created=stamp(0)),
        ingress('young-global', default_backend='young-default', created=stamp(30)),
        ingress('web', irule('web.test', ipath('/', 'web'), ipath('/api', 'api'),
                             ipath('/exact', 'api', path_type='Exact')),
                irule('down.test', ipath('/', 'down')),
                irule('ghost.test', ipath('/', 'ghost')), created=stamp(1)),
        ingress('wild', irule('*.wild.test', ipath('/', 'wild')), created=stamp(2)),
        ingress('one', irule('one.wild.test', ipath('/only', 'exact')), created=stamp(3)),
        ingress('hostless', irule(None, ipath('/hostless', 'catch')), created=stamp(4)),
        ingress('host-default', irule('hd.test', ipath('/x', 'web')),
                default_backend='host-default', created=stamp(5)),
        ingress('conflict-new', irule('conflict.test', ipath('/', 'new')),
                created=stamp(7)),
        ingress('conflict-old', irule('conflict.test', ipath('/', 'old')),
                created=stamp(6)),
        ingress('secure', irule('secure.test', ipath('/', 'secure')),
                tls=[(['secure.test'], 'secure-tls')], created=stamp(8)),
        ingress('wildtls', irule('*.tls.test', ipath('/', 'secure')),
                tls=[(['*.tls.test'], 'wild-tls')], created=stamp(9)),
        ingress('nosecret', irule('nosecret.test', ipath('/', 'secure')),
                tls=[(['nosecret.test'], 'missing')], created=stamp(10)),
        ingress('noredirect', irule('noredirect.test', ipath('/', 'noredirect')),
                tls=[(['noredirect.test'], 'noredirect-tls')], created=stamp(11),
                annotations={'nginx.ingress.kubernetes.io/ssl-redirect': 'false'}),
        ingress('foreign', irule('other.test', ipath('/', 'web')), class_name='other'),
        path_table_objects())


@pytest.fixture(scope='module')
def ing(tmp_path_factory, ca, fake):
    objs = ingress_objects(ca)
    names = ['web', 'api', 'wild', 'exact', 'catch', 'host-default', 'global-default',
             'young-default', 'old', 'new', 'secure', 'noredirect', 'p0', 'p1', 'p2',
             'paths-default']
    alias = {f'row{i}-p{k}': f'p{k}' for i in range(len(INGRESS_PATH_TABLE))
             for k in range(3)}
    backends = Backends(names, alias)
    lab = Lab(tmp_path_factory.mktemp('ingress'), lambda **kw: ingress_config(
        objs, default_cert=fake, address_of=backends.address_of, **kw),
        backends, [80, 443])
    lab.objects = objs
    yield lab
    lab.close()


def test_ingress_routes_by_host_and_path(ing):
    cases = [('web.test', '/', 'web'), ('web.test', '/api/v1', 'api'),
             ('web.test', '/apix', 'web'), ('web.test', '/exact', 'api'),
             ('web.test', '/exact/', 'web'), ('WEB.Test:8080', '/api', 'api'),
             ('conflict.test', '/', 'old')]
    for host, path, expected in cases:
        assert ing.get(80, path, host).backend == expected, (host, path)


@pytest.mark.parametrize('row', range(len(INGRESS_PATH_TABLE)))
def test_ingress_docs_path_table(ing, row):
    paths, request_path, expected = INGRESS_PATH_TABLE[row]
    reply = ing.get(80, request_path, f'row{row}.paths.test')
    assert reply.backend == (f'p{expected}' if expected is not None else 'paths-default')
    assert reply.json['path'] == request_path


def test_ingress_wildcards_cover_one_label_and_hosts_decide_alone(ing):
    assert ing.get(80, '/', 'a.wild.test').backend == 'wild'
    assert ing.get(80, '/', 'a.b.wild.test').backend == 'global-default'
    assert ing.get(80, '/', 'wild.test').backend == 'global-default'
    assert ing.get(80, '/only/x', 'one.wild.test').backend == 'exact'
    assert ing.get(80, '/other', 'one.wild.test').status == 404


def test_ingress_hostless_rules_and_default_backends(ing):
    assert ing.get(80, '/hostless/x', 'unknown.test').backend == 'catch'
    assert ing.get(80, '/hostless').backend == 'catch'          # no Host at all
    assert ing.get(80, '/', 'unknown.test').backend == 'global-default'
    assert ing.get(80, '/x', 'hd.test').backend == 'web'
    assert ing.get(80, '/y', 'hd.test').backend == 'host-default'
    assert ing.get(80, '/', 'other.test').backend == 'global-default'   # not our class


def test_ingress_unusable_backends_answer_503(ing):
    assert ing.get(80, '/', 'down.test').status == 503
    assert ing.get(80, '/', 'ghost.test').status == 503


def test_ingress_forwards_host_and_client_headers(ing):
    reply = ing.get(80, '/api/x?q=1&r=%20', 'web.test',
                    headers=[('X-Forwarded-For', '203.0.113.9')])
    assert reply.json == {'backend': 'api', 'method': 'GET', 'path': '/api/x?q=1&r=%20',
                          'host': 'web.test', 'xff': '203.0.113.9, 127.0.0.1',
                          'xri': '127.0.0.1', 'xfp': 'http'}
    assert ing.get(80, '/', 'web.test', method='POST').json['method'] == 'POST'


def test_ingress_tls_by_sni(ing, ca, fake):
    verified = ca.client_context()
    reply = ing.get(443, '/p', 'secure.test', context=verified, sni='secure.test')
    assert (reply.backend, reply.json['xfp']) == ('secure', 'https')
    assert ing.get(443, '/', 'a.tls.test', context=verified,
                   sni='a.tls.test').backend == 'secure'
    with open(fake[0], 'rb') as f:
        fake_der = der(f.read())
    loose = unverified_context()
    for sni, host, expected in [('a.b.tls.test', 'a.b.tls.test', 'global-default'),
                                ('nosecret.test', 'nosecret.test', 'secure'),
                                (None, 'web.test', 'web')]:
        reply = ing.get(443, '/', host, context=loose, sni=sni)
        assert reply.cert == fake_der, sni
        assert reply.backend == expected, sni


def test_ingress_redirects_plain_http_of_tls_hosts(ing):
    reply = ing.get(80, '/p?q=1', 'secure.test')
    assert (reply.status, reply.headers['Location']) == (308, 'https://secure.test/p?q=1')
    assert ing.get(80, '/', 'a.tls.test').status == 308
    assert ing.get(80, '/', 'nosecret.test').status == 308
    assert ing.get(80, '/', 'noredirect.test').backend == 'noredirect'
    assert ing.get(80, '/', 'web.test').backend == 'web'


def test_health_endpoint(ing):
    reply = request(ing.health, '/healthz', 'x')
    assert (reply.status, reply.body) == (200, b'ok\n')
    assert request(ing.health, '/other', 'x').status == 404


def test_rendering_is_deterministic(ing, fake):
    objs = ing.objects
    again = ingress_config(objs, default_cert=fake, address_of=ing.backends.address_of,
                           files_dir=os.path.join(ing.prefix, 'files'),
                           listen=ing.listen)
    assert again == ing.config
    shuffled = {kind: random.Random(7).sample(items, len(items))
                for kind, items in reversed(list(objs.items()))}
    assert ingress_config(shuffled, default_cert=fake,
                          address_of=ing.backends.address_of,
                          files_dir=os.path.join(ing.prefix, 'files'),
                          listen=ing.listen) == ing.config
    # three Secrets, certificate and key each; the default certificate is a path
    assert len(ing.config.files) == 6
    assert all(name.startswith('tls/default_') for name in ing.config.files)


# ---------------------------------------------------------------- Gateway API
def gateway_objects(ca):
    gw = gateway('gw', listener('http', source='All'),
                 listener('wild', hostname='*.wild.gw', source='All'),
                 listener('https', port=443, protocol='HTTPS', hostname='secure.gw',
                          certs=['secure-gw'], source='All'),
                 listener('https-wild', port=443, protocol='HTTPS', hostname='*.tls.gw',
                          certs=['wild-gw'], source='All'),
                 listener('https-any', port=443, protocol='HTTPS', certs=['any-gw'],
                          source='All'))
    sections = [{'name': 'gw', 'sectionName': name}
                for name in ('https', 'https-wild', 'https-any')]
    return objects(
        gateway_class(), gw,
        [item for name in ('v1', 'v2', 'v3') for item in backend(name, port=8080)],
        backend('down', ready=False, port=8080),
        tls_secret('secure-gw', *ca.issue('secure.gw')),
        tls_secret('wild-gw', *ca.issue('*.tls.gw')),
        tls_secret('any-gw', *ca.issue('any.gw')),
        httproute('exact', hrule(match('/one', 'Exact'), backends=[bref('v1')]),
                  hrule(match('/two', 'Exact'), backends=[bref('v2')]),
                  hostnames=['exact.gw']),
        path_order_route(['order.gw']), header_matching_route(['headers.gw']),
        query_matching_route(['query.gw']), method_matching_route(['method.gw']),
        across_routes(),
        httproute('weights', hrule(backends=[bref('v1', weight=70),
                                             bref('v2', weight=30),
                                             bref('v3', weight=0)]),
                  hostnames=['weights.gw']),
        httproute('invalid',
                  hrule(match('/kind'), backends=[bref('v1', kind='Unknown',
                                                       group='acme.io')]),
                  hrule(match('/xns'), backends=[bref('v1', namespace='other')]),
                  hrule(match('/half'), backends=[bref('v1'), bref('ghost')]),
                  hrule(match('/zero'), backends=[bref('v1', weight=0),
                                                  bref('v2', weight=0)]),
                  hrule(match('/down'), backends=[bref('down')]),
                  hrule(match('/mixed'), backends=[bref('down'), bref('ghost')]),
                  hostnames=['invalid.gw']),
        httproute('regex',
                  hrule(match('/reg/[0-9]+', 'RegularExpression'), backends=[bref('v1')]),
                  hrule(match(headers=[('X-Id', 'v[0-9]+', 'RegularExpression')]),
                        backends=[bref('v2')]),
                  hrule(match(query=[('q', 'a.c', 'RegularExpression')]),
                        backends=[bref('v3')]),
                  hostnames=['regex.gw']),
        httproute('wild-route', hrule(match('/wild'), backends=[bref('v3')]),
                  parents=[{'name': 'gw', 'sectionName': 'wild'}]),
        httproute('isolation', hrule(match('/iso'), backends=[bref('v1')]),
                  parents=[{'name': 'gw', 'sectionName': 'http'}]),
        httproute('tls-route', hrule(backends=[bref('v2')]), parents=sections))


@pytest.fixture(scope='module')
def gw(tmp_path_factory, ca):
    objs = gateway_objects(ca)
    backends = Backends(['v1', 'v2', 'v3'])
    lab = Lab(tmp_path_factory.mktemp('gateway'), lambda **kw: gateway_config(
        objs, objs['Gateway'][0], address_of=backends.address_of, **kw),
        backends, [80, 443])
    lab.objects = objs
    yield lab
    lab.close()


def expect(reply, expected):
    if expected == 404:
        return reply.status == 404
    return reply.backend == expected


def test_gateway_exact_path_matching(gw):
    cases = {'/one': 'v1', '/two': 'v2', '/': 404, '/one/example': 404, '/two/': 404}
    for path, expected in cases.items():
        assert expect(gw.get(80, path, 'exact.gw'), expected), path


def test_gateway_path_match_order(gw):
    for path, expected in PATH_ORDER_CASES:
        assert expect(gw.get(80, path, 'order.gw'), expected), path


def test_gateway_header_matching(gw):
    for headers, expected in HEADER_CASES:
        assert expect(gw.get(80, '/', 'headers.gw', headers=list(headers.items())),
                      expected), headers


def test_gateway_query_param_matching(gw):
    for path, query, headers, expected in QUERY_CASES:
        reply = gw.get(80, path + ('?' + query if query else ''), 'query.gw',
                       headers=list(headers.items()))
        assert expect(reply, expected), (path, query, headers)


def test_gateway_method_matching(gw):
    for method, path, headers, expected in METHOD_CASES:
        reply = gw.get(80, path, 'method.gw', method=method,
                       headers=list(headers.items()))
        assert expect(reply, expected), (method, path, headers)


def test_gateway_matching_across_routes(gw):
    for host, path, headers, expected in ACROSS_CASES:
        assert expect(gw.get(80, path, host, headers=list(headers.items())), expected), \
            (host, path, headers)


def test_gateway_regular_expressions(gw):
    assert gw.get(80, '/reg/12', 'regex.gw').backend == 'v1'
    assert gw.get(80, '/reg/12x', 'regex.gw').status == 404
    assert gw.get(80, '/', 'regex.gw', headers=[('x-id', 'v7')]).backend == 'v2'
    assert gw.get(80, '/', 'regex.gw', headers=[('x-id', 'v7x')]).status == 404
    assert gw.get(80, '/?q=abc', 'regex.gw').backend == 'v3'
    assert gw.get(80, '/?q=abcd', 'regex.gw').status == 404


def test_gateway_weights_split_exactly(gw):
    counts = collections.Counter(gw.get(80, '/', 'weights.gw').backend
                                 for _ in range(500))
    assert set(counts) <= {'v1', 'v2'}
    assert abs(counts['v1'] - 350) <= 25 and abs(counts['v2'] - 150) <= 25, counts


def test_gateway_invalid_backends(gw):
    for path, status in [('/kind', 500), ('/xns', 500), ('/zero', 500), ('/down', 503)]:
        assert gw.get(80, path, 'invalid.gw').status == status, path
    half = collections.Counter(gw.get(80, '/half', 'invalid.gw').backend or 500
                               for _ in range(100))
    assert set(half) == {'v1', 500} and abs(half['v1'] - 50) <= 10, half
    mixed = collections.Counter(gw.get(80, '/mixed', 'invalid.gw').status
                                for _ in range(100))
    assert set(mixed) == {500, 503} and abs(mixed[503] - 50) <= 10, mixed


def test_gateway_wildcards_and_listener_isolation(gw):
    assert gw.get(80, '/wild', 'a.wild.gw').backend == 'v3'
    assert gw.get(80, '/wild', 'a.b.wild.gw').backend == 'v3'
    assert gw.get(80, '/wild', 'wild.gw').status == 404
    assert gw.get(80, '/iso', 'other.gw').backend == 'v1'
    assert gw.get(80, '/iso', 'a.wild.gw').status == 404


def test_gateway_https_listeners_by_sni(gw, ca):
    certs = {s['metadata']['name']: certificates.load_certificate(s)[0].cert
             for s in gw.objects['Secret']}
    reply = gw.get(443, '/', 'secure.gw', context=ca.client_context(), sni='secure.gw')
    assert (reply.backend, reply.json['xfp']) == ('v2', 'https')
    loose = unverified_context()
    for sni, secret in [('a.tls.gw', 'wild-gw'), ('a.b.tls.gw', 'wild-gw'),
                        ('other.gw', 'any-gw'), (None, 'any-gw')]:
        reply = gw.get(443, '/', sni or 'x.gw', context=loose, sni=sni)
        assert reply.cert == der(certs[secret]), sni
        assert reply.backend == 'v2', sni


def test_gateway_config_of_a_foreign_gateway_only_has_health(tmp_path, ca):
    objs = gateway_objects(ca)
    foreign = dict(objs['Gateway'][0], spec=dict(objs['Gateway'][0]['spec'],
                                                  gatewayClassName='nope'))
    config = gateway_config(objs, foreign, files_dir=str(tmp_path / 'files'))
    assert 'kl_route' not in config.text and config.files == {}
    assert nginx_test(config, tmp_path).returncode == 0


# ---------------------------------------------------------------- hostile objects
EVIL_PATH = '/a";} return 200 "pwned"; #{$host} \\ \'x\' ~*.+?[]()|^'
EVIL_VALUE = '"; return 200 pwned; #${x}{;}'


def hostile_objects(ca):
    evil_name = 'evil"; } server { listen 1; }\n#'
    return objects(
        ingress_class('nginx', default=True), gateway_class(),
        [item for name in ('v1', 'v2', 'v3') for item in backend(name, port=8080)],
        tls_secret('../../etc/passwd"$x', *ca.issue('tls-evil.test')),
        ingress(evil_name, irule('evil.test', ipath(EVIL_PATH, 'v1', 8080),
                                 ipath('/nl\nx', 'v2', 8080, path_type='Exact'),
                                 ipath('/svc', 'v3"; evil {', 8080)),
                irule('x"y;{z}$w\n.test', ipath('/', 'v1', 8080)),
                tls=[(['tls-evil.test', 'a"b$c{d}.test'], '../../etc/passwd"$x')],
                annotations={'nginx.ingress.kubernetes.io/ssl-redirect': '";{'}),
        gateway('gw', listener('http', source='All',
                               hostname=None)),
        httproute(evil_name,
                  hrule(match('/h', headers=[('X-Evil', EVIL_VALUE)]),
                        backends=[bref('v1')]),
                  hrule(match('/q', query=[('a$b{', 'c;d}')]), backends=[bref('v2')]),
                  hrule(match('/re"gex/[0-9]+', 'RegularExpression'),
                        backends=[bref('v3')]),
                  hrule(match('(?<host>x)', 'RegularExpression'), backends=[bref('v1')]),
                  hrule(match('[', 'RegularExpression'), backends=[bref('v1')]),
                  hrule(match('(?x)a#', 'RegularExpression'), backends=[bref('v1')]),
                  hrule(match('/n', headers=[('X-Evil"}', 'x')]), backends=[bref('v1')]),
                  hrule(match('/m', method='GET\n}'), backends=[bref('v1')]),
                  hrule(match(EVIL_PATH, 'Exact'), backends=[bref('v1')]),
                  hrule(match('/nl\nx', 'Exact'), backends=[bref('v2')]),
                  hostnames=['evil.gw', '*.e"v{il}$.gw']))


def test_hostile_values_cannot_break_or_inject(tmp_path, ca, fake):
    objs = hostile_objects(ca)
    backends = Backends(['v1', 'v2', 'v3'])
    lab = Lab(tmp_path / 'gw', lambda **kw: gateway_config(
        objs, objs['Gateway'][0], address_of=backends.address_of, **kw),
        backends, [80])
    try:
        quoted = urllib.parse.quote(EVIL_PATH)
        assert lab.get(80, quoted, 'evil.gw').backend == 'v1'
        assert lab.get(80, '/a', 'evil.gw').status == 404
        assert lab.get(80, '/h', 'evil.gw', headers=[('X-Evil', EVIL_VALUE)]).backend == \
            'v1'
        assert lab.get(80, '/h', 'evil.gw', headers=[('X-Evil', 'x')]).status == 404
        assert lab.get(80, '/q?a$b{=c;d}', 'evil.gw').backend == 'v2'
        assert lab.get(80, '/re%22gex/12', 'evil.gw').backend == 'v3'
        assert lab.get(80, '/nl%0Ax', 'evil.gw').backend == 'v2'
        assert lab.get(80, '/x', 'evil.gw').status == 404
        assert lab.get(80, '/m', 'evil.gw').status == 404
        assert b'pwned' not in lab.get(80, '/', 'evil.gw').body
    finally:
        lab.close()
    backends = Backends(['v1', 'v2', 'v3'])
    lab = Lab(tmp_path / 'ing', lambda **kw: ingress_config(
        objs, default_cert=fake, address_of=backends.address_of, **kw),
        backends, [80, 443])
    try:
        assert lab.get(443, urllib.parse.quote(EVIL_PATH), 'evil.test',
                       context=unverified_context()).backend == 'v1'
        assert lab.get(80, '/nl%0Ax', 'evil.test').backend == 'v2'
        assert lab.get(80, '/svc', 'evil.test').status == 503
        reply = lab.get(443, '/', 'tls-evil.test', context=ca.client_context(),
                        sni='tls-evil.test')
        assert reply.status == 404
    finally:
        lab.close()
    for name in lab.config.files:
        assert name.startswith('tls/') and '/' not in name[4:] and '"' not in name
        assert '$' not in name and not name[4:].startswith('.')
    # outside comments and quoted strings, nothing of the objects is left
    bare = [re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)
            for line in lab.config.text.splitlines() if not line.lstrip().startswith('#')]
    assert not [line for line in bare if 'pwned' in line or 'evil' in line]


def test_default_certificate_given_as_pem_bytes(tmp_path, fake):
    with open(fake[0], 'rb') as crt, open(fake[1], 'rb') as key:
        pem = (crt.read(), key.read())
    config = ingress_config(objects(ingress_class(default=True)), default_cert=pem,
                            files_dir=str(tmp_path / 'files'))
    assert config.files == {'tls/default.crt': pem[0], 'tls/default.key': pem[1]}
    assert f'ssl_certificate "{tmp_path}/files/tls/default.crt";' in config.text
    checked = nginx_test(config, tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_access_log_names_the_upstream(ing):
    ing.get(80, '/api/logged', 'web.test')
    ing.get(80, '/', 'ghost.test')
    with open(os.path.join(ing.prefix, 'nginx.log')) as f:
        log = f.read()
    assert '"GET /api/logged HTTP/1.1" host=web.test status=200 upstream=127.0.0.1:' in log
    assert '"GET / HTTP/1.1" host=ghost.test status=503 upstream=- ' in log


def test_render_refuses_unsafe_directories():
    for bad in ('relative/dir', '/tmp/$x', '/tmp/a\nb'):
        with pytest.raises(ValueError):
            render([], files_dir=bad)
    config = render([], files_dir='/srv/l7')
    assert isinstance(config, NginxConfig) and config.files == {}
