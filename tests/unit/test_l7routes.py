"""The route tables of the Ingress controller and the Gateway API implementation: which
objects are served, how backends resolve, the precedence of routes (with ``select``,
the Python twin of the rendered nginx), and the statuses written back."""

import pytest

from services.l7 import routes as l7routes
from services.l7.backends import NO_ENDPOINTS, NOT_FOUND, READY, resolve_backend
from services.l7.certificates import load_certificate
from services.l7.gateway import gateway_fronts, intersect_hostnames
from services.l7.ingress import ingress_fronts, served_ingresses
from services.l7.routes import (ANY, EXACT, PREFIX, REDIRECT, Action, Front, Route, Target,
                                regex_is_safe, route_rows, select)
from services.l7.status import gateway_status, gatewayclass_status, httproute_statuses
from tests.unit.l7helpers import (ACROSS_CASES, HEADER_CASES, INGRESS_PATH_TABLE,
                                  METHOD_CASES, PATH_ORDER_CASES, QUERY_CASES, LabCA,
                                  across_routes, backend, bref, endpoint_slice, gateway,
                                  gateway_class, header_matching_route, hrule,
                                  httproute, ingress, ingress_class, ipath, irule,
                                  listener, match, method_matching_route, namespace,
                                  objects, path_order_route, path_table_objects,
                                  query_matching_route, service, stamp, tls_secret)

NOW = '2024-06-01T00:00:00Z'


def target_of(route):
    """The Service a route sends to, or its status."""
    if route is None:
        return 404
    action = route.action
    if action.status is not None:
        return action.status
    assert len(action.targets) == 1
    return action.targets[0].backend.split('/')[1].split(':')[0]


def ingress_front(objs, tls=False):
    fronts = ingress_fronts(objs)
    return fronts[1] if tls else fronts[0]


# ---------------------------------------------------------------- Ingress
def test_served_ingresses_follow_the_class():
    classes = [ingress_class('nginx', default=True), ingress_class('other', 'acme.io/x')]
    items = [ingress('named', class_name='nginx'),
             ingress('foreign', class_name='other'),
             ingress('classless', class_name=None),
             ingress('legacy', class_name=None,
                     annotations={'kubernetes.io/ingress.class': 'nginx'}),
             ingress('legacy-foreign', class_name=None,
                     annotations={'kubernetes.io/ingress.class': 'other'}),
             ingress('missing-class', class_name='nope')]
    names = [i['metadata']['name'] for i in served_ingresses(objects(classes, items))]
    assert sorted(names) == ['classless', 'legacy', 'named']
    not_default = [ingress_class('nginx'), ingress_class('other', 'acme.io/x')]
    names = [i['metadata']['name']
             for i in served_ingresses(objects(not_default, items))]
    assert sorted(names) == ['legacy', 'named']
    assert served_ingresses(objects(classes, items), 'acme.io/x')[0]['metadata'][
        'name'] == 'foreign'


def test_served_ingresses_are_oldest_first():
    items = [ingress('b', created=stamp(5)), ingress('a', created=stamp(5)),
             ingress('c', created=stamp(1)), ingress('a', namespace='z',
                                                     created=stamp(1))]
    served = served_ingresses(objects(ingress_class(), items))
    assert [(i['metadata']['namespace'], i['metadata']['name']) for i in served] == [
        ('default', 'c'), ('z', 'a'), ('default', 'a'), ('default', 'b')]


def test_backends_resolve_through_the_cluster_ip():
    svc = service('web', ip='10.96.0.20', ports=(('http', 80), ('admin', 9000)))
    objs = objects(svc, endpoint_slice('web', port_names=('http', 'admin')))
    assert resolve_backend(objs, 'default', 'web', 80) == (READY, '10.96.0.20:80')
    assert resolve_backend(objs, 'default', 'web', 'admin') == (READY, '10.96.0.20:9000')
    assert resolve_backend(objs, 'default', 'web', 81) == (NOT_FOUND, None)
    assert resolve_backend(objs, 'default', 'web', 'nope') == (NOT_FOUND, None)
    assert resolve_backend(objs, 'default', 'ghost', 80) == (NOT_FOUND, None)
    assert resolve_backend(objs, 'other', 'web', 80) == (NOT_FOUND, None)
    override = resolve_backend(objs, 'default', 'web', 80,
                               address_of=lambda s, p: f'127.0.0.1:{p["port"] + 1}')
    assert override == (READY, '127.0.0.1:81')
    assert resolve_backend(objs, 'default', 'web', 80,
                           address_of=lambda s, p: 'evil; host')[0] == NOT_FOUND


def test_readiness_comes_from_the_slices_of_that_port():
    svc = service('web', ports=(('http', 80), ('admin', 9000)))
    only_admin = endpoint_slice('web', port_names=('admin',))
    objs = objects(svc, only_admin)
    assert resolve_backend(objs, 'default', 'web', 80)[0] == NO_ENDPOINTS
    assert resolve_backend(objs, 'default', 'web', 9000)[0] == READY
    not_ready = endpoint_slice('web', ready=False)
    assert resolve_backend(objects(svc, not_ready), 'default', 'web', 80)[0] == \
        NO_ENDPOINTS
    unknown = endpoint_slice('web')
    del unknown['endpoints'][0]['conditions']['ready']      # unset counts as ready
    assert resolve_backend(objects(svc, unknown), 'default', 'web', 80)[0] == READY
    elsewhere = endpoint_slice('web', namespace='other')
    assert resolve_backend(objects(svc, elsewhere), 'default', 'web', 80)[0] == \
        NO_ENDPOINTS


def test_headless_and_udp_services_are_not_found():
    headless = service('web', ip='None')
    udp = service('dns')
    udp['spec']['ports'][0]['protocol'] = 'UDP'
    objs = objects(headless, udp, endpoint_slice('web'), endpoint_slice('dns'))
    assert resolve_backend(objs, 'default', 'web', 80) == (NOT_FOUND, None)
    assert resolve_backend(objs, 'default', 'dns', 80) == (NOT_FOUND, None)


@pytest.mark.parametrize('paths,request_path,expected', INGRESS_PATH_TABLE)
def test_the_kubernetes_docs_path_table(paths, request_path, expected):
    row = INGRESS_PATH_TABLE.index((paths, request_path, expected))
    front = ingress_front(objects(ingress_class(default=True), path_table_objects()))
    chosen = target_of(select(front, f'row{row}.paths.test', request_path))
    assert chosen == (f'row{row}-p{expected}' if expected is not None
                      else 'paths-default')


def test_implementation_specific_is_a_prefix():
    objs = objects(ingress_class(), backend('web'), ingress('i', irule('h.test', ipath(
        '/foo', 'web', path_type='ImplementationSpecific'))))
    front = ingress_front(objs)
    assert target_of(select(front, 'h.test', '/foo/bar')) == 'web'
    assert target_of(select(front, 'h.test', '/foobar')) == 404


def test_longest_path_wins_and_exact_beats_prefix_at_equal_length():
    objs = objects(ingress_class(), backend('a'), backend('b'), backend('c'), ingress(
        'i', irule('h.test', ipath('/', 'a'), ipath('/foo/', 'b'),
                   ipath('/foo', 'c', path_type='Exact'))))
    front = ingress_front(objs)
    assert target_of(select(front, 'h.test', '/foo')) == 'c'
    assert target_of(select(front, 'h.test', '/foo/')) == 'b'
    assert target_of(select(front, 'h.test', '/foox')) == 'a'


def test_wildcard_hosts_match_one_label_and_exact_hosts_come_first():
    objs = objects(ingress_class(), backend('wild'), backend('exact'), backend('any'),
                   ingress('w', irule('*.foo.com', ipath('/', 'wild'))),
                   ingress('e', irule('bar.foo.com', ipath('/only', 'exact'))),
                   ingress('h', irule(None, ipath('/', 'any'))))
    front = ingress_front(objs)
    assert target_of(select(front, 'x.foo.com', '/a')) == 'wild'
    assert target_of(select(front, 'X.Foo.COM:8080', '/a')) == 'wild'
    assert target_of(select(front, 'bar.foo.com', '/only/x')) == 'exact'
    # a host with rules is decided by its rules only: no fall back to the wildcard
    assert target_of(select(front, 'bar.foo.com', '/other')) == 404
    # the wildcard covers exactly one label
    assert target_of(select(front, 'baz.bar.foo.com', '/a')) == 'any'
    assert target_of(select(front, 'foo.com', '/a')) == 'any'
    assert target_of(select(front, '', '/a')) == 'any'


def test_default_backends_of_hosts_and_of_the_oldest_ingress():
    objs = objects(
        ingress_class(), backend('web'), backend('host-default'), backend('old-default'),
        backend('young-default'), backend('hostless'),
        ingress('young', default_backend='young-default', created=stamp(9)),
        ingress('old', default_backend='old-default', created=stamp(1)),
        ingress('h', irule('h.test', ipath('/x', 'web')), default_backend='host-default',
                created=stamp(5)),
        ingress('n', irule('n.test', ipath('/x', 'web')), created=stamp(2)),
        ingress('hl', irule(None, ipath('/hostless', 'hostless')), created=stamp(3)))
    front = ingress_front(objs)
    assert target_of(select(front, 'h.test', '/x')) == 'web'
    assert target_of(select(front, 'h.test', '/y')) == 'host-default'
    assert target_of(select(front, 'n.test', '/y')) == 404
    assert target_of(select(front, 'other.test', '/hostless/1')) == 'hostless'
    assert target_of(select(front, 'other.test', '/y')) == 'old-default'
    assert target_of(select(front, None or '', '/y')) == 'old-default'


def test_identical_paths_go_to_the_oldest_ingress():
    def build(created_a, created_b):
        return ingress_front(objects(
            ingress_class(), backend('a'), backend('b'),
            ingress('a', irule('h.test', ipath('/p', 'a')), created=created_a),
            ingress('b', irule('h.test', ipath('/p/', 'b')), created=created_b)))
    assert target_of(select(build(stamp(1), stamp(2)), 'h.test', '/p')) == 'a'
    assert target_of(select(build(stamp(2), stamp(1)), 'h.test', '/p')) == 'b'
    assert target_of(select(build(stamp(1), stamp(1)), 'h.test', '/p')) == 'a'
    front = build(stamp(1), stamp(2))
    assert sum(1 for r in front.routes if r.path_type == PREFIX) == 1


def test_missing_and_unready_backends_answer_503():
    objs = objects(ingress_class(), backend('down', ready=False), ingress('i', irule(
        'h.test', ipath('/down', 'down'), ipath('/ghost', 'ghost'),
        ipath('/port', 'down', port=81), ipath('/named', 'down', port='nope'))))
    front = ingress_front(objs)
    for path in ('/down', '/ghost', '/port', '/named'):
        assert select(front, 'h.test', path).action.status == 503


@pytest.fixture(scope='module')
def ca(tmp_path_factory):
    return LabCA(tmp_path_factory.mktemp('ca'))


def test_tls_hosts_get_their_certificate_and_http_redirects(ca):
    good = ca.issue('secure.test')
    wild = ca.issue('*.w.test')
    objs = objects(
        ingress_class(), backend('web'),
        tls_secret('good', *good), tls_secret('wild', *wild),
        ingress('s', irule('secure.test', ipath('/', 'web')),
                tls=[(['secure.test'], 'good')]),
        ingress('m', irule('missing.test', ipath('/', 'web')),
                tls=[(['missing.test'], 'nope')]),
        ingress('off', irule('off.test', ipath('/', 'web')),
                tls=[(['off.test'], 'good')],
                annotations={'nginx.ingress.kubernetes.io/ssl-redirect': 'false'}),
        ingress('w', irule('a.w.test', ipath('/', 'web')), tls=[(['*.w.test'], 'wild')]),
        ingress('plain', irule('plain.test', ipath('/', 'web'))))
    http, https = ingress_fronts(objs)
    assert [(host, c.name) for host, c in https.sni] == [
        ('off.test', 'good'), ('secure.test', 'good'), ('*.w.test', 'wild')]
    for host in ('secure.test', 'missing.test', 'a.w.test'):
        assert select(http, host, '/x').action.status == REDIRECT
        assert select(http, host, '/x').action == Action(status=REDIRECT)
        assert target_of(select(https, host, '/x')) == 'web'
    assert target_of(select(http, 'off.test', '/x')) == 'web'
    assert target_of(select(http, 'plain.test', '/x')) == 'web'


def test_unusable_secrets_are_refused(ca):
    cert, key = ca.issue('a.test')
    _, other_key = ca.issue('b.test')
    assert load_certificate(tls_secret('ok', cert, key))[0].cert == cert
    assert load_certificate(None) == (None, 'not found')
    opaque = tls_secret('x', cert, key)
    opaque['type'] = 'Opaque'
    assert load_certificate(opaque)[0] is None
    assert load_certificate(tls_secret('x', cert, other_key))[0] is None
    assert load_certificate(tls_secret('x', b'garbage', key))[0] is None
    assert load_certificate(tls_secret('x', cert, b'-----BEGIN PRIVATE KEY-----\nxx'))[
        0] is None
    broken = tls_secret('x', cert, key)
    broken['data']['tls.crt'] = '!!!not base64'
    assert load_certificate(broken) == (None, 'data is not base64')


# ---------------------------------------------------------------- Gateway API
GW = [gateway_class(), gateway('gw', listener('http', source='All'))]


def gw_front(*items, gw=None):
    objs = objects(GW if gw is None else gw, *items)
    [front] = gateway_fronts(objs, objs['Gateway'][0])
    return front


def v(*names):
    """Services ``names`` on port 8080 (as the conformance backends), ready."""
    return [item for name in names for item in backend(name, port=8080)]


@pytest.mark.parametrize('listener_host,route_hosts,expected', [
    (None, [], [None]),
    ('foo.com', [], ['foo.com']),
    (None, ['a.com', 'b.com'], ['a.com', 'b.com']),
    ('very.specific.com', ['non.matching.com', '*.nonmatchingwildcard.io',
                           'very.specific.com'], ['very.specific.com']),
    ('*.wildcard.io', ['non.matching.com', 'wildcard.io', 'foo.wildcard.io',
                       'bar.wildcard.io', 'foo.bar.wildcard.io'],
     ['foo.wildcard.io', 'bar.wildcard.io', 'foo.bar.wildcard.io']),
    ('very.specific.com', ['non.matching.com', '*.specific.com'], ['very.specific.com']),
    ('*.anotherwildcard.io', ['*.anotherwildcard.io'], ['*.anotherwildcard.io']),
    ('*.wildcard.io', ['*.io'], ['*.wildcard.io']),
    ('*.io', ['*.wildcard.io'], ['*.wildcard.io']),
    ('*.wildcard.io', ['specific.but.wrong.com', 'wildcard.io'], []),
    ('*.example.com', ['*.com'], ['*.example.com']),
])
def test_hostname_intersection(listener_host, route_hosts, expected):
    assert intersect_hostnames(listener_host, route_hosts) == expected


def test_gateway_wildcards_match_one_or_more_labels():
    front = gw_front(v('v1'), httproute('r', hrule(backends=[bref('v1')]),
                                        hostnames=['*.example.com']))
    assert target_of(select(front, 'a.example.com')) == 'v1'
    assert target_of(select(front, 'a.b.example.com')) == 'v1'
    assert select(front, 'example.com') is None


def test_exact_path_matching():
    front = gw_front(v('v1', 'v2'), httproute(
        'exact', hrule(match('/one', 'Exact'), backends=[bref('v1')]),
        hrule(match('/two', 'Exact'), backends=[bref('v2')])))
    cases = {'/one': 'v1', '/two': 'v2', '/': 404, '/one/example': 404, '/two/': 404}
    for path, expected in cases.items():
        assert target_of(select(front, 'gw.test', path)) == expected, path


def test_path_match_order():
    front = gw_front(v('v1', 'v2', 'v3'), path_order_route())
    for path, expected in PATH_ORDER_CASES:
        assert target_of(select(front, 'gw.test', path)) == expected, path


def test_header_matching():
    front = gw_front(v('v1', 'v2'), header_matching_route())
    for headers, expected in HEADER_CASES:
        assert target_of(select(front, 'gw.test', '/', headers=headers)) == expected, \
            headers


def test_query_param_matching():
    front = gw_front(v('v1', 'v2', 'v3'), query_matching_route())
    for path, query, headers, expected in QUERY_CASES:
        chosen = select(front, 'gw.test', path, headers=headers, query=query)
        assert target_of(chosen) == expected, (path, query, headers)


def test_method_matching():
    front = gw_front(v('v1', 'v2', 'v3'), method_matching_route())
    for method, path, headers, expected in METHOD_CASES:
        chosen = select(front, 'gw.test', path, method=method, headers=headers)
        assert target_of(chosen) == expected, (method, path, headers)


def test_matching_across_routes():
    front = gw_front(v('v1', 'v2'), *across_routes())
    for host, path, headers, expected in ACROSS_CASES:
        assert target_of(select(front, host, path, headers=headers)) == expected, \
            (host, path, headers)


def test_hostname_precedence_then_age_then_name_then_rule_order():
    front = gw_front(v('v1', 'v2', 'v3', 'v4'),
                     httproute('wild', hrule(match('/'), backends=[bref('v1')]),
                               hostnames=['*.example.com'], created=stamp(1)),
                     httproute('exact', hrule(match('/x'), backends=[bref('v2')]),
                               hostnames=['a.example.com'], created=stamp(9)),
                     httproute('b-young', hrule(match('/t'), backends=[bref('v3')]),
                               created=stamp(5)),
                     httproute('a-young', hrule(match('/t'), backends=[bref('v4')]),
                               hrule(match('/t'), backends=[bref('v1')]),
                               created=stamp(5)),
                     httproute('old', hrule(match('/t/'), backends=[bref('v2')]),
                               created=stamp(8)))
    assert target_of(select(front, 'a.example.com', '/x')) == 'v2'
    assert target_of(select(front, 'a.example.com', '/y')) == 'v1'   # falls through
    assert target_of(select(front, 'other', '/t')) == 'v4'   # a-young, its first rule
    hosts = [r.host for r in front.routes]
    assert hosts.index('a.example.com') < hosts.index('*.example.com') < hosts.index(None)


def test_exact_then_regex_then_prefix():
    front = gw_front(v('v1', 'v2', 'v3'), httproute(
        'r', hrule(match('/a'), backends=[bref('v1')]),
        hrule(match('/a/[0-9]+', 'RegularExpression'), backends=[bref('v2')]),
        hrule(match('/a/7', 'Exact'), backends=[bref('v3')])))
    assert target_of(select(front, 'h', '/a/7')) == 'v3'
    assert target_of(select(front, 'h', '/a/12')) == 'v2'
    assert target_of(select(front, 'h', '/a/12x')) == 'v1'


def test_regex_headers_and_query_are_full_matches():
    front = gw_front(v('v1', 'v2'), httproute(
        'r', hrule(match(headers=[('x-id', 'v[0-9]+', 'RegularExpression')]),
                   backends=[bref('v1')]),
        hrule(match(query=[('q', 'a.c', 'RegularExpression')]), backends=[bref('v2')])))
    assert target_of(select(front, 'h', headers={'X-Id': 'v12'})) == 'v1'
    assert target_of(select(front, 'h', headers={'X-Id': 'v12x'})) == 404
    assert target_of(select(front, 'h', query='q=abc')) == 'v2'
    assert target_of(select(front, 'h', query='q=abcd')) == 404


@pytest.mark.parametrize('pattern,safe', [
    ('/a/[0-9]+', True), ('(?i)abc', True), ('a|b', True), ('x{2,3}', True),
    ('/q"uote/.*', True), ('(?:a)(?=b)', True),
    ('(', False), ('[', False), ('a)(b', False), ('\\', False),
    ('(?P<host>x)', False), ('(?<host>x)', False), ("(?'n'x)", False),
    ('(?x)a#', False), ('(?a)x', False), ('\\N{DIGIT ONE}', False), ('\\u0041', False),
    ('a\nb', False), ('caf\u00e9', False), (None, False), (42, False),
])
def test_regex_safety(pattern, safe):
    assert regex_is_safe(pattern) is safe


def test_unsafe_matches_never_match():
    front = gw_front(v('v1', 'v2'), httproute(
        'r', hrule(match('(?<host>x)', 'RegularExpression'), backends=[bref('v1')]),
        hrule(match(headers=[('x_under', 'a')]), backends=[bref('v1')]),
        hrule(match(headers=[('x-ok', '[', 'RegularExpression')]), backends=[bref('v1')]),
        hrule(match('/ok'), backends=[bref('v2')])))
    assert [r.path for r in front.routes] == ['/ok']


def test_weights_and_failing_shares():
    objs = objects(GW, v('v1', 'v2', 'v3'), backend('down', ready=False, port=8080), httproute(
        'r',
        hrule(match('/split'), backends=[bref('v1', weight=70), bref('v2', weight=30),
                                         bref('v3', weight=0)]),
        hrule(match('/kind'), backends=[bref('v1', kind='Unknown', group='acme.io')]),
        hrule(match('/xns'), backends=[bref('v1', namespace='other')]),
        hrule(match('/half'), backends=[bref('v1'), bref('ghost')]),
        hrule(match('/zero'), backends=[bref('v1', weight=0), bref('v2', weight=0)]),
        hrule(match('/none'), backends=[]),
        hrule(match('/down'), backends=[bref('down')]),
        hrule(match('/mixed'), backends=[bref('down'), bref('ghost', weight=2)])))
    [front] = gateway_fronts(objs, objs['Gateway'][0])

    def action(path):
        return select(front, 'h', path).action
    split = action('/split')
    assert split.status is None
    assert [(t.weight, t.backend, t.address) for t in split.targets] == [
        (70, 'default/v1:8080', '10.96.0.10:8080'),
        (30, 'default/v2:8080', '10.96.0.10:8080')]
    for path in ('/kind', '/xns', '/zero', '/none'):
        assert action(path).status == 500, path
    half = action('/half')
    assert half.status is None and [t.status for t in half.targets] == [None, 500]
    assert action('/down').status == 503
    mixed = action('/mixed')
    assert mixed.status is None and [(t.weight, t.status) for t in mixed.targets] == [
        (1, 503), (2, 500)]


def test_backend_ports_are_service_port_numbers():
    objs = objects(GW, service('web', ip='10.96.0.30', ports=(('http', 8080),)),
                   endpoint_slice('web'),
                   httproute('r', hrule(match('/a'), backends=[bref('web', port=8080)]),
                             hrule(match('/b'), backends=[bref('web', port=80)])))
    [front] = gateway_fronts(objs, objs['Gateway'][0])
    assert select(front, 'h', '/a').action.targets[0].address == '10.96.0.30:8080'
    assert select(front, 'h', '/b').action.status == 500


ISOLATION_GW = [gateway_class(), gateway(
    'gw', listener('empty-hostname', source='All'),
    listener('wildcard-example-com', hostname='*.example.com', source='All'),
    listener('wildcard-foo-example-com', hostname='*.foo.example.com', source='All'),
    listener('abc-foo-example-com', hostname='abc.foo.example.com', source='All'))]


def section(name):
    return {'group': 'gateway.networking.k8s.io', 'kind': 'Gateway', 'name': 'gw',
            'sectionName': name}


def test_listener_isolation():
    routes = [httproute(f'to-{name}', hrule(match(f'/{name}'), backends=[bref('v1')]),
                        parents=[section(name)])
              for name in ('empty-hostname', 'wildcard-example-com',
                           'wildcard-foo-example-com', 'abc-foo-example-com')]
    front = gw_front(v('v1'), *routes, gw=ISOLATION_GW)
    hosts = {'bar.com': 'empty-hostname', 'bar.example.com': 'wildcard-example-com',
             'bar.foo.example.com': 'wildcard-foo-example-com',
             'abc.foo.example.com': 'abc-foo-example-com'}
    for host, owner in hosts.items():
        for path in hosts.values():
            got = select(front, host, f'/{path}')
            assert (got is not None and got.action.status is None) == (path == owner), \
                (host, path)


def test_routes_attach_where_hostnames_intersect():
    gw = [gateway_class(), gateway(
        'gw', listener('listener-1', hostname='very.specific.com'),
        listener('listener-2', hostname='*.wildcard.io'),
        listener('listener-3', hostname='*.anotherwildcard.io'))]
    routes = [
        httproute('s1', hrule(match('/s1'), backends=[bref('v1')]),
                  hostnames=['non.matching.com', '*.nonmatchingwildcard.io',
                             'very.specific.com']),
        httproute('s2', hrule(match('/s2'), backends=[bref('v2')]),
                  hostnames=['non.matching.com', 'wildcard.io', 'foo.wildcard.io',
                             'bar.wildcard.io', 'foo.bar.wildcard.io']),
        httproute('s3', hrule(match('/s3'), backends=[bref('v3')]),
                  hostnames=['non.matching.com', '*.specific.com']),
        httproute('s4', hrule(match('/s4'), backends=[bref('v1')]),
                  hostnames=['*.anotherwildcard.io']),
        httproute('s5', hrule(match('/s5'), backends=[bref('v2')]),
                  hostnames=['specific.but.wrong.com', 'wildcard.io'])]
    front = gw_front(v('v1', 'v2', 'v3'), *routes, gw=gw)
    cases = [('very.specific.com', '/s1', 'v1'), ('non.matching.com', '/s1', 404),
             ('foo.nonmatchingwildcard.io', '/s1', 404),
             ('foo.wildcard.io', '/s2', 'v2'), ('bar.wildcard.io', '/s2', 'v2'),
             ('foo.bar.wildcard.io', '/s2', 'v2'), ('baz.wildcard.io', '/s2', 404),
             ('wildcard.io', '/s2', 404), ('very.specific.com', '/s3', 'v3'),
             ('anotherfoo.specific.com', '/s3', 404), ('x.anotherwildcard.io', '/s4', 'v1'),
             ('a.b.anotherwildcard.io', '/s4', 'v1'), ('wildcard.io', '/s5', 404),
             ('specific.but.wrong.com', '/s5', 404)]
    for host, path, expected in cases:
        assert target_of(select(front, host, path)) == expected, (host, path)
    objs = objects(gw, v('v1', 'v2', 'v3'), routes)
    statuses = httproute_statuses(objs, now=NOW)
    accepted = {name: statuses[('default', name)]['parents'][0]['conditions'][0]
                for name in ('s1', 's2', 's3', 's4', 's5')}
    assert {n: (c['status'], c['reason']) for n, c in accepted.items()} == {
        's1': ('True', 'Accepted'), 's2': ('True', 'Accepted'), 's3': ('True', 'Accepted'),
        's4': ('True', 'Accepted'), 's5': ('False', 'NoMatchingListenerHostname')}


def test_allowed_routes_by_namespace_and_kind():
    gw = [gateway_class(), gateway(
        'gw', listener('same', port=80),
        listener('all', port=81, source='All'),
        listener('selected', port=82, source='Selector',
                 selector={'matchLabels': {'team': 'a'}}),
        listener('by-name', port=83, source='Selector', selector={'matchLabels': {
            'kubernetes.io/metadata.name': 'other'}}),
        listener('grpc-only', port=84, source='All',
                 kinds=[{'group': 'gateway.networking.k8s.io', 'kind': 'GRPCRoute'}]),
        namespace='infra')]
    parent = {'name': 'gw', 'namespace': 'infra'}
    objs = objects(gw, namespace('infra'), namespace('team-a', {'team': 'a'}),
                   namespace('other'), v('v1'),
                   httproute('same', hrule(backends=[bref('v1')]), namespace='infra',
                             parents=[parent]),
                   httproute('a', hrule(backends=[bref('v1')]), namespace='team-a',
                             parents=[parent]),
                   httproute('o', hrule(backends=[bref('v1')]), namespace='other',
                             parents=[parent]))
    fronts = {f.port: f for f in gateway_fronts(objs, objs['Gateway'][0])}
    attached = {port: sorted({r.source.split()[1] for r in front.routes})
                for port, front in fronts.items()}
    assert attached == {80: ['infra/same'], 81: ['infra/same', 'other/o', 'team-a/a'],
                        82: ['team-a/a'], 83: ['other/o'], 84: []}
    status = gateway_status(objs, objs['Gateway'][0], address='198.51.100.5', now=NOW)
    grpc = status['listeners'][4]
    assert grpc['supportedKinds'] == [] and grpc['attachedRoutes'] == 0
    assert [(c['type'], c['status'], c['reason']) for c in grpc['conditions']][2] == \
        ('ResolvedRefs', 'False', 'InvalidRouteKinds')
    assert [l['attachedRoutes'] for l in status['listeners']] == [1, 3, 1, 1, 0]


def conditions(entry):
    return {c['type']: (c['status'], c['reason']) for c in entry['conditions']}


def test_route_statuses():
    gw = [gateway_class(), gateway_class('foreign', 'acme.io/gateway'),
          gateway('gw', listener('http', source='Same'), listener('other', port=8080)),
          gateway('theirs', listener('http'), class_name='foreign')]
    foreign_entry = {'parentRef': {'name': 'theirs'}, 'controllerName': 'acme.io/gateway',
                     'conditions': [{'type': 'Accepted', 'status': 'True'}]}
    objs = objects(gw, v('v1'), namespace('elsewhere'),
                   httproute('ok', hrule(backends=[bref('v1')]),
                             parents=['gw', 'theirs', 'missing'],
                             status={'parents': [foreign_entry]}),
                   httproute('kind', hrule(backends=[bref('v1', kind='Foo')])),
                   httproute('xns', hrule(backends=[bref('v1', namespace='elsewhere')])),
                   httproute('ghost', hrule(backends=[bref('ghost')])),
                   httproute('section', hrule(backends=[bref('v1')]),
                             parents=[section('nope')]),
                   httproute('port', hrule(backends=[bref('v1')]),
                             parents=[{'name': 'gw', 'port': 9999}]),
                   httproute('far', hrule(backends=[bref('v1')]), namespace='elsewhere',
                             parents=[{'name': 'gw', 'namespace': 'default'}]),
                   httproute('unrelated', hrule(backends=[bref('v1')]),
                             parents=['theirs']))
    statuses = httproute_statuses(objs, now=NOW)
    assert ('default', 'unrelated') not in statuses
    ok = statuses[('default', 'ok')]['parents']
    assert ok[0] == foreign_entry and len(ok) == 2
    assert ok[1]['controllerName'] == 'kubelab.io/gateway-controller'
    assert ok[1]['parentRef']['name'] == 'gw'
    assert conditions(ok[1]) == {'Accepted': ('True', 'Accepted'),
                                 'ResolvedRefs': ('True', 'ResolvedRefs')}
    assert ok[1]['conditions'][0]['observedGeneration'] == 2
    assert ok[1]['conditions'][0]['lastTransitionTime'] == NOW

    def first(name, namespace='default'):
        return conditions(statuses[(namespace, name)]['parents'][0])
    assert first('kind')['ResolvedRefs'] == ('False', 'InvalidKind')
    assert first('xns')['ResolvedRefs'] == ('False', 'RefNotPermitted')
    assert first('ghost')['ResolvedRefs'] == ('False', 'BackendNotFound')
    assert first('kind')['Accepted'] == ('True', 'Accepted')
    assert first('section')['Accepted'] == ('False', 'NoMatchingParent')
    assert first('port')['Accepted'] == ('False', 'NoMatchingParent')
    assert first('far', 'elsewhere')['Accepted'] == ('False', 'NotAllowedByListeners')


def test_condition_times_stay_while_the_status_holds():
    objs = objects(GW, v('v1'), httproute('r', hrule(backends=[bref('v1')])))
    first = httproute_statuses(objs, now='2024-06-01T00:00:00Z')[('default', 'r')]
    objs['HTTPRoute'][0]['status'] = first
    again = httproute_statuses(objs, now='2024-06-02T00:00:00Z')[('default', 'r')]
    assert again == first
    objs['Service'] = []                          # ResolvedRefs turns False
    changed = httproute_statuses(objs, now='2024-06-03T00:00:00Z')[('default', 'r')]
    times = {c['type']: c['lastTransitionTime']
             for c in changed['parents'][0]['conditions']}
    assert times == {'Accepted': '2024-06-01T00:00:00Z',
                     'ResolvedRefs': '2024-06-03T00:00:00Z'}
    # a route that leaves our Gateway loses our entry
    objs['HTTPRoute'][0]['spec']['parentRefs'] = []
    assert httproute_statuses(objs, now=NOW)[('default', 'r')] == {'parents': []}


def test_gateway_status(ca):
    cert, key = ca.issue('secure.test')
    gw = gateway('gw', listener('http', source='All'),
                 listener('https', port=443, protocol='HTTPS', hostname='secure.test',
                          certs=['good']),
                 listener('broken', port=443, protocol='HTTPS', hostname='b.test',
                          certs=['missing']),
                 listener('tcp', port=9000, protocol='TCP'),
                 listener('dup-1', port=8080, hostname='d.test'),
                 listener('dup-2', port=8080, hostname='d.test'),
                 listener('mixed-1', port=7000),
                 listener('mixed-2', port=7000, protocol='HTTPS', certs=['good']))
    objs = objects(gateway_class(), gw, tls_secret('good', cert, key), v('v1'),
                   httproute('r', hrule(backends=[bref('v1')])))
    status = gateway_status(objs, gw, address='198.51.100.7', now=NOW)
    assert status['addresses'] == [{'type': 'IPAddress', 'value': '198.51.100.7'}]
    assert conditions(status) == {'Accepted': ('True', 'ListenersNotValid'),
                                  'Programmed': ('True', 'Programmed')}
    listeners = {l['name']: l for l in status['listeners']}
    assert conditions(listeners['http']) == {
        'Accepted': ('True', 'Accepted'), 'Programmed': ('True', 'Programmed'),
        'ResolvedRefs': ('True', 'ResolvedRefs'), 'Conflicted': ('False', 'NoConflicts')}
    assert listeners['http']['attachedRoutes'] == 1
    assert listeners['http']['supportedKinds'] == [
        {'group': 'gateway.networking.k8s.io', 'kind': 'HTTPRoute'}]
    assert conditions(listeners['https'])['Programmed'] == ('True', 'Programmed')
    assert conditions(listeners['broken'])['ResolvedRefs'] == ('False',
                                                              'InvalidCertificateRef')
    assert conditions(listeners['broken'])['Programmed'] == ('False', 'Invalid')
    assert conditions(listeners['tcp'])['Accepted'] == ('False', 'UnsupportedProtocol')
    assert conditions(listeners['dup-1'])['Conflicted'] == ('True', 'HostnameConflict')
    assert conditions(listeners['mixed-2'])['Conflicted'] == ('True', 'ProtocolConflict')
    assert [f.port for f in gateway_fronts(objs, gw)] == [80, 443]
    unaddressed = gateway_status(objs, gw, now=NOW)
    assert conditions(unaddressed)['Programmed'] == ('False', 'AddressNotAssigned')
    assert 'addresses' not in unaddressed
    theirs = gateway('x', listener('http'), class_name='foreign')
    assert gateway_status(objs, theirs, now=NOW) is None
    assert gateway_fronts(objs, theirs) == []


def test_gatewayclass_status():
    ours = gateway_class()
    status = gatewayclass_status(ours, now=NOW)
    assert conditions(status) == {'Accepted': ('True', 'Accepted')}
    assert status['conditions'][0]['observedGeneration'] == 1
    ours['status'] = status
    assert gatewayclass_status(ours, now='2030-01-01T00:00:00Z') == status
    assert gatewayclass_status(gateway_class('x', 'acme.io/gw'), now=NOW) is None


def test_route_rows_for_humans():
    front = gw_front(v('v1', 'v2'), httproute(
        'r', hrule(match('/a', headers=[('x', '1')], method='GET'),
                   backends=[bref('v1', weight=3), bref('v2', weight=1)]),
        hrule(match('/b', 'Exact'), backends=[bref('ghost')]),
        hostnames=['shop.test']))
    assert route_rows([front]) == [
        ('http:80', 'shop.test', 'Exact /b', 'default/ghost:8080 (500)'),
        ('http:80', 'shop.test', 'Prefix /a GET header x=1',
         'default/v1:8080 (10.96.0.10:8080) 75%, default/v2:8080 (10.96.0.10:8080) 25%')]


def test_select_on_a_hand_made_table():
    action = Action((Target(1, 'ns/a:80', '10.0.0.1:80'),))
    front = Front(80, False, l7routes.ONE_LABEL, (
        Route('*.a.test', EXACT, '/x', action),
        Route(None, ANY, '', Action(status=503))))
    assert select(front, 'b.a.test', '/x').action is action
    assert select(front, 'c.b.a.test', '/x').action.status == 503
