"""The second leg of a trace to an L7 proxy (kubelab/inspect/trace_legs.py), without a
lab: a Gateway's proxy pod routes the request by host and path to a Service's ClusterIP,
or answers 404 itself."""

from types import SimpleNamespace

from kubelab.inspect.trace_legs import proxy_leg, proxy_of
from services import addons

T0 = '2026-01-01T00:00:00Z'
POD_IP = '192.168.2.9'


def meta(name, ns='shop'):
    return {'name': name, 'namespace': ns, 'creationTimestamp': T0, 'uid': name}


def objects():
    gw = {'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'Gateway',
          'metadata': meta('gw'),
          'spec': {'gatewayClassName': 'nginx',
                   'listeners': [{'name': 'http', 'port': 80, 'protocol': 'HTTP'}]}}
    route = {'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'HTTPRoute',
             'metadata': meta('web'),
             'spec': {'parentRefs': [{'name': 'gw'}], 'hostnames': ['shop.example'],
                      'rules': [{'matches': [{'path': {'type': 'PathPrefix',
                                                       'value': '/cart'}}],
                                 'backendRefs': [{'name': 'cart', 'port': 80}]}]}}
    svc = {'apiVersion': 'v1', 'kind': 'Service', 'metadata': meta('cart'),
           'spec': {'clusterIP': '10.96.0.50', 'selector': {'app': 'cart'},
                    'ports': [{'port': 80, 'targetPort': 8080, 'protocol': 'TCP'}]}}
    eps = {'kind': 'EndpointSlice', 'addressType': 'IPv4',
           'metadata': dict(meta('cart-x'), labels={'kubernetes.io/service-name': 'cart'}),
           'ports': [{'name': '', 'port': 8080, 'protocol': 'TCP'}],
           'endpoints': [{'addresses': ['192.168.3.4'],
                          'conditions': {'ready': True, 'serving': True,
                                         'terminating': False}}]}
    gc = {'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'GatewayClass',
          'metadata': {'name': 'nginx', 'creationTimestamp': T0},
          'spec': {'controllerName': addons.GATEWAY_CONTROLLER}}
    ns = {'kind': 'Namespace', 'metadata': {'name': 'shop', 'labels': {
        'kubernetes.io/metadata.name': 'shop'}}}
    return {'Gateway': [gw], 'HTTPRoute': [route], 'Service': [svc],
            'EndpointSlice': [eps], 'GatewayClass': [gc], 'Namespace': [ns],
            'Ingress': [], 'IngressClass': [], 'Secret': [], 'Pod': []}


def proxy_pod():
    [deployment, _] = addons.gateway_objects(objects()['Gateway'][0])
    return {'metadata': meta('gw-nginx-abc'), 'spec': deployment['spec']['template']['spec']}


def traced(outcome='delivered'):
    tracer = SimpleNamespace(pod_objects={POD_IP: proxy_pod()})
    trace = SimpleNamespace(forward=SimpleNamespace(
        outcome=outcome, final={'nw_dst': POD_IP, 'tp_dst': '80'}))
    return tracer, trace


def test_a_gateway_pod_is_known_by_its_arguments():
    assert proxy_of(proxy_pod()) == ('gateway', 'shop/gw')
    assert proxy_of({'spec': {'containers': [{'name': 'x', 'args': ['netexec']}]}}) is None


def test_the_route_of_the_request_leads_to_the_services_cluster_ip():
    tracer, trace = traced()
    leg = proxy_leg(tracer, objects(), trace, 'shop.example', '/cart/items')
    assert leg.proxy == 'Gateway shop/gw (pod gw-nginx-abc)'
    assert leg.request == 'http://shop.example/cart/items'
    assert 'HTTPRoute shop/web rules[0].matches[0]' in leg.route
    assert (leg.backend, leg.address) == ('shop/cart:80', '10.96.0.50:80')


def test_no_route_is_a_404_of_the_proxy_and_no_second_connection():
    tracer, trace = traced()
    leg = proxy_leg(tracer, objects(), trace, 'other.example', '/')
    assert leg.route.startswith('no rule matches (404)') and leg.address is None
    tracer, dropped = traced('dropped')
    assert proxy_leg(tracer, objects(), dropped, 'shop.example', '/cart') is None
