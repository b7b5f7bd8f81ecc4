"""v1 Endpoints derived from EndpointSlices (services/controllers/endpoints_v1.py) and
printed as ``kubectl get endpoints`` does."""

from datetime import datetime, timezone

from kubelab import printers
from services.controllers.endpoints_v1 import endpoints_for

T0 = '2026-01-01T00:00:00Z'


def service(name='web', selector=None, svc_type='ClusterIP'):
    spec = {'type': svc_type, 'ports': [{'name': 'http', 'port': 80}]}
    if selector is not False:
        spec['selector'] = selector or {'app': 'web'}
    return {'kind': 'Service', 'metadata': {'name': name, 'namespace': 'default',
                                            'labels': {'app': 'web'},
                                            'creationTimestamp': T0}, 'spec': spec}


def endpoint(ip, node, ready=True, serving=None, terminating=False):
    return {'addresses': [ip], 'nodeName': node,
            'targetRef': {'kind': 'Pod', 'name': f'pod-{ip[-1]}', 'namespace': 'default'},
            'conditions': {'ready': ready, 'serving': ready if serving is None else serving,
                           'terminating': terminating}}


def eps(name, service_name, endpoints, ports=(('http', 8080),), ns='default'):
    return {'kind': 'EndpointSlice', 'addressType': 'IPv4',
            'metadata': {'name': name, 'namespace': ns,
                         'labels': {'kubernetes.io/service-name': service_name}},
            'ports': [{'name': n, 'port': p, 'protocol': 'TCP'} for n, p in ports],
            'endpoints': endpoints}


def test_ready_not_ready_and_terminating_endpoints():
    slices = [eps('web-abc', 'web', [endpoint('192.168.2.4', 'worker-1'),
                                     endpoint('192.168.1.3', 'control-plane', ready=False),
                                     endpoint('192.168.3.9', 'worker-2', ready=False,
                                              serving=True, terminating=True)]),
              eps('other-x', 'other', [endpoint('192.168.3.3', 'worker-2')]),
              eps('web-y', 'web', [endpoint('192.168.3.7', 'worker-2')], ns='elsewhere')]
    ep = endpoints_for(service(), slices)
    assert ep['metadata'] == {'name': 'web', 'namespace': 'default',
                              'labels': {'app': 'web'}, 'creationTimestamp': T0}
    [subset] = ep['subsets']
    assert [a['ip'] for a in subset['addresses']] == ['192.168.2.4']
    assert subset['addresses'][0]['nodeName'] == 'worker-1'
    assert subset['addresses'][0]['targetRef']['name'] == 'pod-4'
    assert [a['ip'] for a in subset['notReadyAddresses']] == ['192.168.1.3']
    assert subset['ports'] == [{'name': 'http', 'port': 8080, 'protocol': 'TCP'}]


def test_subsets_by_ports_and_none_without_endpoints():
    slices = [eps('web-a', 'web', [endpoint('192.168.2.4', 'worker-1')]),
              eps('web-b', 'web', [endpoint('192.168.3.4', 'worker-2')],
                  ports=(('http', 9090),))]
    ep = endpoints_for(service(), slices)
    assert [s['ports'][0]['port'] for s in ep['subsets']] == [8080, 9090]
    assert 'subsets' not in endpoints_for(service(), [eps('web-a', 'web', [])])


def test_no_endpoints_object_without_a_selector_or_for_an_external_name():
    assert endpoints_for(service(selector=False), []) is None
    assert endpoints_for(service(svc_type='ExternalName'), []) is None


def test_printed_as_kubectl_does():
    now = datetime(2026, 1, 1, 0, 5, tzinfo=timezone.utc)
    many = eps('web-a', 'web', [endpoint(f'192.168.2.{i}', 'worker-1') for i in range(2, 7)])
    ep = endpoints_for(service(), [many])
    empty = endpoints_for(service('idle'), [])
    out = printers.render('ep', [ep, empty], None, now).splitlines()
    assert out[0].split() == ['NAME', 'ENDPOINTS', 'AGE']
    assert out[1].split(None, 1)[1].rsplit(None, 1)[0] == (
        '192.168.2.2:8080,192.168.2.3:8080,192.168.2.4:8080 + 2 more...')
    assert out[2].split() == ['idle', '<none>', '5m']
