"""Gateway API: a Gateway of class ``nginx`` gets its own nginx Deployment behind a
LoadBalancer Service; HTTPRoutes attached to it route from an external client through
the cloud load balancer and nginx to ClusterIP Services:
External Client -> Gateway address -> nginx -> ClusterIP -> Pod.

The backends are the conformance suite's: infra-backend-v1, -v2 and -v3 (its echo server,
whose answers name the pod and Service that gave them). The cases follow the Gateway API
conformance tests (exact path matching, path match order, header, query and method
matching, weights, hostname intersection, invalid backends).
"""

import json

import pytest

from tests.traffic.manifests import echo_backend

V1, V2, V3 = 'infra-backend-v1', 'infra-backend-v2', 'infra-backend-v3'

GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: nginx
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: wild, port: 8080, protocol: HTTP, hostname: "*.example.com"}
"""


def route(name, rules, hostnames=None, section=None) -> str:
    """An HTTPRoute attached to gw as JSON: ``rules`` is [(matches, backendRefs)] with
    backendRefs as [(service, weight)] (port 8080)."""
    spec = {'parentRefs': [dict({'name': 'gw'}, **({'sectionName': section}
                                                  if section else {}))],
            'rules': [{'matches': matches,
                       'backendRefs': [{'name': svc, 'port': 8080, 'weight': weight}
                                       for svc, weight in refs]}
                      for matches, refs in rules]}
    if hostnames:
        spec['hostnames'] = hostnames
    return json.dumps({'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'HTTPRoute',
                       'metadata': {'name': name}, 'spec': spec}) + '\n---\n'


def path(kind, value):
    return {'path': {'type': kind, 'value': value}}


def headers(**values):
    return {'headers': [{'name': k.replace('_', '-'), 'value': v} for k, v in values.items()]}


@pytest.fixture(scope='module')
def gw(lab):
    lab.apply(''.join(echo_backend(name, port=8080) for name in (V1, V2, V3)) + '---\n'
              + GATEWAY)
    lab.client.wait_ready()
    lab.client.wait_for(lambda: lab.client.get('Gateway', 'default', 'gw').get(
        'status', {}).get('addresses'), 'the Gateway to get its address')
    lab.client.wait_dataplane()
    return lab


@pytest.fixture(scope='module')
def address(gw):
    return gw.client.get('Gateway', 'default', 'gw')['status']['addresses'][0]['value']


@pytest.fixture(scope='module')
def client(gw):
    return 'host/' + gw.get_json('hosts')['items'][0]['metadata']['name']


def ask(gw, client, address, target, *, host='gw.example', method='GET', hdrs=None,
        port=80):
    [r] = gw.request(client, address, port, target, host_header=host, method=method,
                     headers=hdrs)
    assert 'status' in r, r
    return json.loads(r['body'])['service'] if r['status'] == 200 else r['status']


def test_the_gateway_is_programmed_with_its_own_proxy_and_address(gw, address):
    got = gw.client.get('Gateway', 'default', 'gw')
    conds = {c['type']: c['status'] for c in got['status']['conditions']}
    assert conds == {'Accepted': 'True', 'Programmed': 'True'}
    svc = gw.client.get('Service', 'default', 'gw-nginx')
    assert svc['spec']['type'] == 'LoadBalancer'
    assert address == svc['status']['loadBalancer']['ingress'][0]['ip']
    assert [p['port'] for p in svc['spec']['ports']] == [80, 8080]
    table = gw.kubelab('get', 'gateways').stdout.splitlines()
    assert table[0].split() == ['NAME', 'CLASS', 'ADDRESS', 'PROGRAMMED', 'AGE']
    assert table[1].split()[:4] == ['gw', 'nginx', address, 'True']
    assert 'nginx' in gw.kubelab('get', 'gatewayclasses').stdout


def test_exact_path_matching(gw, client, address, applied):
    applied(route('exact', [([path('Exact', '/one')], [(V1, 1)]),
                            ([path('Exact', '/two')], [(V2, 1)])]))
    cases = {'/one': V1, '/two': V2, '/': 404, '/one/example': 404, '/two/': 404,
             '/onetwo': 404, '/one?x=1': V1}
    assert {p: ask(gw, client, address, p) for p in cases} == cases
    table = gw.kubelab('get', 'httproutes').stdout
    assert 'exact' in table


def test_path_match_order(gw, client, address, applied):
    applied(route('order', [
        ([path('PathPrefix', '/match')], [(V1, 1)]),
        ([path('PathPrefix', '/match/prefix')], [(V2, 1)]),
        ([path('Exact', '/match/exact')], [(V3, 1)]),
        ([path('PathPrefix', '/match/exact/one')], [(V2, 1)]),
        ([dict(path('PathPrefix', '/match/prefix/one'), method='POST')], [(V3, 1)]),
    ]))
    cases = {'/match': V1, '/match/': V1, '/matchx': 404, '/match/other': V1,
             '/match/prefix': V2, '/match/prefix/deeper': V2, '/match/exact': V3,
             '/match/exact/': V1, '/match/exact/one': V2, '/match/prefix/one': V2}
    assert {p: ask(gw, client, address, p) for p in cases} == cases
    assert ask(gw, client, address, '/match/prefix/one/x', method='POST') == V3


def test_header_matching_and_precedence(gw, client, address, applied):
    applied(route('headers', [
        ([headers(version='one')], [(V1, 1)]),
        ([headers(version='two')], [(V2, 1)]),
        ([headers(version='two', color='orange')], [(V1, 1)]),
        ([headers(color='blue'), headers(color='green')], [(V1, 1)]),
        ([headers(color='red'), headers(color='yellow')], [(V2, 1)]),
    ]))
    cases = [({'version': 'one'}, V1), ({'Version': 'one'}, V1), ({'version': 'two'}, V2),
             ({'version': 'two', 'color': 'orange'}, V1),   # more header matches win
             ({'color': 'blue'}, V1), ({'color': 'green'}, V1), ({'color': 'red'}, V2),
             ({'color': 'yellow'}, V2), ({'version': 'ONE'}, 404), ({}, 404),
             ({'version': 'three'}, 404)]
    assert [ask(gw, client, address, '/', hdrs=h) for h, _ in cases] == \
        [want for _, want in cases]


def test_query_and_method_matching(gw, client, address, applied):
    applied(route('query', [
        ([{'queryParams': [{'name': 'animal', 'value': 'whale'}]}], [(V1, 1)]),
        ([{'queryParams': [{'name': 'animal', 'value': 'whale'},
                           {'name': 'color', 'value': 'blue'}]}], [(V2, 1)]),
        ([{'method': 'POST'}], [(V3, 1)]),
    ]))
    assert ask(gw, client, address, '/?animal=whale') == V1
    assert ask(gw, client, address, '/?animal=whale&color=blue') == V2
    assert ask(gw, client, address, '/?animal=dolphin') == 404
    assert ask(gw, client, address, '/', method='POST') == V3
    assert ask(gw, client, address, '/', method='GET') == 404


def test_weights_split_the_requests(gw, client, address, applied):
    applied(route('weighted', [([path('PathPrefix', '/')], [(V1, 70), (V2, 30), (V3, 0)])]))
    got = gw.request(client, address, 80, '/', host_header='gw.example', count=500)
    served = [json.loads(r['body'])['service'] for r in got if r.get('status') == 200]
    assert len(served) == 500, [r for r in got if r.get('status') != 200][:3]
    share = served.count(V1) / 500
    print(f'\n70/30 split over 500 requests: {served.count(V1)} / {served.count(V2)}'
          f' / {served.count(V3)}')
    assert abs(share - 0.7) <= 0.05 and served.count(V3) == 0


def test_missing_backend_is_500_and_no_endpoints_503(gw, client, address, applied):
    applied(route('broken', [([path('PathPrefix', '/missing')], [('nonexistent', 1)]),
                             ([path('PathPrefix', '/idle')], [(V3, 1)])]))
    assert ask(gw, client, address, '/missing') == 500
    got = gw.client.get('HTTPRoute', 'default', 'broken')['status']['parents'][0]
    resolved = {c['type']: (c['status'], c['reason']) for c in got['conditions']}
    assert resolved['ResolvedRefs'] == ('False', 'BackendNotFound')
    assert resolved['Accepted'] == ('True', 'Accepted')
    gw.kubelab('scale', 'deployment', V3, '--replicas', '0')
    try:
        gw.client.wait_for(lambda: not gw.pods({'app': V3}), f'{V3} to scale down')
        gw.client.wait_dataplane()
        assert ask(gw, client, address, '/idle') == 503
    finally:
        gw.kubelab('scale', 'deployment', V3, '--replicas', '1')
        gw.client.wait_ready()
    assert ask(gw, client, address, '/idle') == V3


def test_hostnames_intersect_with_the_listener(gw, client, address, applied):
    applied(route('named', [([path('PathPrefix', '/')], [(V1, 1)])],
                  hostnames=['foo.example.com', 'other.org'], section='wild')
            + route('elsewhere', [([path('PathPrefix', '/')], [(V2, 1)])],
                    hostnames=['only.other.org'], section='wild'))
    assert ask(gw, client, address, '/', host='foo.example.com', port=8080) == V1
    assert ask(gw, client, address, '/', host='bar.example.com', port=8080) == 404
    assert ask(gw, client, address, '/', host='other.org', port=8080) == 404
    status = gw.client.get('HTTPRoute', 'default', 'elsewhere')['status']['parents'][0]
    accepted = {c['type']: (c['status'], c['reason']) for c in status['conditions']}
    assert accepted['Accepted'] == ('False', 'NoMatchingListenerHostname')


def test_an_https_listener_terminates_tls_with_its_certificate(gw, client, applied):
    import base64
    import os
    import tempfile

    from tests.traffic.test_ingress import make_certificate
    tmp = tempfile.mkdtemp()
    cacert = make_certificate(tmp, 'secure.example.com')
    data = {k: base64.b64encode(open(os.path.join(tmp, k), 'rb').read()).decode()
            for k in ('tls.crt', 'tls.key')}
    applied(json.dumps({'apiVersion': 'v1', 'kind': 'Secret', 'type': 'kubernetes.io/tls',
                        'metadata': {'name': 'gw-tls'}, 'data': data}) + '\n---\n'
            + json.dumps({'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'Gateway',
                          'metadata': {'name': 'tls-gw'},
                          'spec': {'gatewayClassName': 'nginx', 'listeners': [{
                              'name': 'https', 'port': 443, 'protocol': 'HTTPS',
                              'hostname': 'secure.example.com',
                              'tls': {'certificateRefs': [{'name': 'gw-tls'}]}}]}})
            + '\n---\n' + json.dumps({
                'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'HTTPRoute',
                'metadata': {'name': 'secure'},
                'spec': {'parentRefs': [{'name': 'tls-gw'}],
                         'rules': [{'backendRefs': [{'name': V2, 'port': 8080}]}]}}) + '\n')
    gw.client.wait_for(lambda: gw.client.get('Gateway', 'default', 'tls-gw').get(
        'status', {}).get('addresses'), 'tls-gw to get its address')
    gw.client.wait_ready()
    address = gw.client.get('Gateway', 'default', 'tls-gw')['status']['addresses'][0]['value']
    [r] = gw.request(client, address, 443, '/pay', tls=True, sni='secure.example.com',
                     cacert=cacert)
    assert r.get('status') == 200, r
    assert json.loads(r['body'])['service'] == V2 and r['subject'] == 'secure.example.com'
    listener = gw.client.get('Gateway', 'default', 'tls-gw')['status']['listeners'][0]
    assert listener['attachedRoutes'] == 1
