"""services/endpoints.py, the one reader of EndpointSlices, and services/conditions.py."""

from services.conditions import node_ready, pod_ready
from services.endpoints import (ANY_PORT, EndpointAddress, by_service, endpoint_addresses,
                                endpoint_ready)


def endpoint(address, node='worker-1', **conditions):
    return {'addresses': [address], 'nodeName': node, 'conditions': conditions}


def eps(name, endpoints, ports=(('http', 80, 'TCP'),), service='web', namespace='default',
        address_type='IPv4'):
    return {'metadata': {'name': name, 'namespace': namespace,
                         'labels': {'kubernetes.io/service-name': service}},
            'addressType': address_type,
            'ports': [{'name': n, 'port': p, 'protocol': proto} for n, p, proto in ports],
            'endpoints': list(endpoints)}


def addresses(found):
    return [(a.address, a.port, a.node) for a in found]


def test_slices_are_grouped_by_their_service_label():
    a, b = eps('web-a', []), eps('web-b', [])
    other = eps('db-a', [], service='db', namespace='dev')
    unlabelled = {'metadata': {'name': 'x', 'namespace': 'default'}, 'endpoints': []}
    assert by_service([a, other, unlabelled, b]) == {('default', 'web'): [a, b],
                                                     ('dev', 'db'): [other]}


def test_an_unset_ready_condition_reads_as_ready():
    assert endpoint_ready({'addresses': ['10.0.0.1']})
    assert endpoint_ready({'conditions': {}})
    assert endpoint_ready({'conditions': {'ready': True}})
    assert not endpoint_ready({'conditions': {'ready': False}})


def test_a_service_port_reads_the_ready_endpoints_of_its_name_and_protocol():
    slices = [eps('web-a', [endpoint('10.1.1.2', ready=True),
                            endpoint('10.1.1.3', ready=False),
                            {'addresses': ['10.1.2.2'], 'nodeName': 'worker-2'}],
                  ports=(('http', 8080, 'TCP'), ('dns', 53, 'UDP'))),
              eps('web-b', [endpoint('10.1.1.9')], ports=(('other', 9090, 'TCP'),))]
    assert addresses(endpoint_addresses(slices, ('http', 'TCP'))) == [
        ('10.1.1.2', 8080, 'worker-1'), ('10.1.2.2', 8080, 'worker-2')]
    assert addresses(endpoint_addresses(slices, ('dns', 'UDP'))) == [
        ('10.1.1.2', 53, 'worker-1'), ('10.1.2.2', 53, 'worker-2')]
    assert endpoint_addresses(slices, ('http', 'UDP')) == []
    assert addresses(endpoint_addresses(slices, ('other', 'TCP'))) == [
        ('10.1.1.9', 9090, 'worker-1')]


def test_an_unnamed_port_is_the_empty_name_and_tcp_the_default_protocol():
    slices = [{'metadata': {'name': 'web-a'},
               'ports': [{'port': 80}],
               'endpoints': [{'addresses': ['10.1.1.2']}]}]
    assert addresses(endpoint_addresses(slices, ('', 'TCP'))) == [('10.1.1.2', 80, '')]


def test_the_terminating_fallback_serves_only_when_nothing_is_ready():
    terminating = endpoint('10.1.1.3', ready=False, serving=True, terminating=True)
    gone = endpoint('10.1.1.4', ready=False, serving=False, terminating=True)
    not_ready = endpoint('10.1.1.5', ready=False, serving=False, terminating=False)
    ready = endpoint('10.1.1.2', ready=True, serving=True, terminating=False)
    without = [eps('web-a', [terminating, gone, not_ready])]
    assert endpoint_addresses(without, ('http', 'TCP')) == []
    assert addresses(endpoint_addresses(without, ('http', 'TCP'), terminating_fallback=True)) \
        == [('10.1.1.3', 80, 'worker-1')]
    with_ready = [eps('web-a', [terminating, ready])]
    assert addresses(endpoint_addresses(with_ready, ('http', 'TCP'),
                                        terminating_fallback=True)) == [
        ('10.1.1.2', 80, 'worker-1')]


def test_the_fallback_is_decided_over_all_slices_of_the_port():
    slices = [eps('web-a', [endpoint('10.1.1.3', ready=False, serving=True,
                                     terminating=True)]),
              eps('web-b', [endpoint('10.1.1.2')])]
    assert addresses(endpoint_addresses(slices, ('http', 'TCP'),
                                        terminating_fallback=True)) == [
        ('10.1.1.2', 80, 'worker-1')]


def test_publish_not_ready_reads_every_endpoint():
    slices = [eps('web-a', [endpoint('10.1.1.2', ready=False), endpoint('10.1.1.3')],
                  ports=())]
    assert [a.address for a in endpoint_addresses(slices)] == ['10.1.1.3']
    assert [a.address for a in endpoint_addresses(slices, publish_not_ready=True)] == [
        '10.1.1.2', '10.1.1.3']


def test_no_port_reads_every_slice_and_any_port_only_slices_with_ports():
    with_ports = eps('web-a', [endpoint('10.1.1.2')])
    without_ports = eps('web-b', [endpoint('10.1.1.3')], ports=())
    slices = [with_ports, without_ports]
    assert addresses(endpoint_addresses(slices)) == [('10.1.1.2', None, 'worker-1'),
                                                     ('10.1.1.3', None, 'worker-1')]
    assert addresses(endpoint_addresses(slices, ANY_PORT)) == [
        ('10.1.1.2', None, 'worker-1')]


def test_a_node_keeps_only_its_own_endpoints():
    slices = [eps('web-a', [endpoint('10.1.1.2', node='worker-1'),
                            endpoint('10.1.2.2', node='worker-2'),
                            {'addresses': ['10.1.3.2']}])]
    assert [a.address for a in endpoint_addresses(slices, ANY_PORT, node='worker-2')] == [
        '10.1.2.2']
    assert [a.address for a in endpoint_addresses(slices, ('http', 'TCP'),
                                                  node='worker-1')] == ['10.1.1.2']


def test_each_address_keeps_its_endpoint_and_slice():
    ep = {'addresses': ['10.1.1.2', '10.1.1.3'], 'hostname': 'db-0'}
    endpoint_slice = eps('web-a', [ep, {'addresses': []}])
    found = endpoint_addresses([endpoint_slice], ('http', 'TCP'))
    assert [a.address for a in found] == ['10.1.1.2', '10.1.1.3']
    assert all(a.endpoint is ep and a.endpoint_slice is endpoint_slice for a in found)
    assert found[0] == EndpointAddress('10.1.1.2', 80, '', {}, {})   # by address, port, node


def test_pod_ready_reads_the_first_ready_condition():
    def pod(*conditions):
        return {'status': {'conditions': [{'type': t, 'status': s} for t, s in conditions]}}
    assert pod_ready(pod(('PodScheduled', 'True'), ('Ready', 'True')))
    assert not pod_ready(pod(('Ready', 'False')))
    assert not pod_ready(pod(('Ready', 'Unknown')))
    assert not pod_ready(pod(('ContainersReady', 'True')))
    assert not pod_ready(pod(('Ready', 'False'), ('Ready', 'True')))
    assert not pod_ready({'status': None})
    assert not pod_ready({})


def test_node_ready_reads_the_ready_condition():
    assert node_ready({'status': {'conditions': [{'type': 'Ready', 'status': 'True'}]}})
    assert not node_ready({'status': {'conditions': [{'type': 'Ready',
                                                      'status': 'Unknown'}]}})
    assert not node_ready({'metadata': {'name': 'worker-1'}})
