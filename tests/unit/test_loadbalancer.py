"""``type: LoadBalancer`` in the object model: validation (services/validation/service.py),
the pool's allocator (services/allocation/allocators.py), the store playing the API server plus a
cloud's service controller and LB IPAM (services/store.py), and ``kubelab get svc``.

A LoadBalancer Service is a NodePort Service plus an address of the cluster's
``loadBalancerPool`` in ``status.loadBalancer.ingress``; with ``externalTrafficPolicy:
Local`` also a ``spec.healthCheckNodePort``. Every test reads like what a user does:
apply, change the type, delete, and what the cluster holds afterwards.
"""

from datetime import datetime, timezone

import pytest

from kubelab.printers import service_row
from services.allocation.allocators import LoadBalancerIPAllocator
from services.cluster import default_cluster, load_cluster
from services.errors import AllocationError, ApplyError
from services.manifests import validate
from services.store import Store

POOL = '198.51.100.0/24'
NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def store():
    return Store(default_cluster())


def lb_service(name='web', namespace='default', ports=None, **spec):
    """A LoadBalancer Service; ``ports``: (name, port, nodePort or None)."""
    body = []
    for port_name, number, node_port in ports or [('', 80, None)]:
        item = {'port': number, 'targetPort': 8080}
        if port_name:
            item['name'] = port_name
        if node_port is not None:
            item['nodePort'] = node_port
        body.append(item)
    return {'apiVersion': 'v1', 'kind': 'Service',
            'metadata': {'name': name, 'namespace': namespace},
            'spec': {'type': 'LoadBalancer', 'selector': {'app': name}, 'ports': body,
                     **spec}}


def of_type(service_type, name='web', **spec):
    """The same Service as ``lb_service``, of another type (no LoadBalancer fields)."""
    svc = lb_service(name, **spec)
    svc['spec']['type'] = service_type
    return svc


def local(name='web', **spec):
    """A LoadBalancer Service with ``externalTrafficPolicy: Local``."""
    return lb_service(name, externalTrafficPolicy='Local', **spec)


def spec_of(store, name='web', namespace='default'):
    return store.get('Service', namespace, name)['spec']


def address_of(store, name='web', namespace='default'):
    """The Service's load balancer address, or None."""
    ingress = store.get('Service', namespace, name)['status']['loadBalancer'].get('ingress')
    return ingress[0]['ip'] if ingress else None


def node_port(store, name='web'):
    return spec_of(store, name)['ports'][0]['nodePort']


def problems(store, docs):
    """``path: message`` of every problem of an apply that must fail."""
    with pytest.raises(ApplyError) as info:
        store.apply(docs)
    return [f'{e.path}: {e.message}' for e in info.value.errors]


def invalid(obj):
    """``path: message`` of every problem ``validate`` finds in one object."""
    with pytest.raises(ApplyError) as info:
        validate(obj)
    return [f'{e.path}: {e.message}' for e in info.value.errors]


def broken_pod():
    return {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': 'broken'},
            'spec': {'containers': []}}


def small_pool(cidr):
    return Store(load_cluster(f'networking: {{loadBalancerPool: {cidr}}}\n',
                              'cluster.yaml'))


# ---------------------------------------------------------------- the pool
def test_the_pool_hands_out_its_lowest_free_host_address_first():
    pool = LoadBalancerIPAllocator(POOL)
    assert [pool.allocate(f'Service default/s{i}') for i in range(3)] == [
        '198.51.100.1', '198.51.100.2', '198.51.100.3']
    pool.release('198.51.100.2')
    assert pool.allocate('Service default/again') == '198.51.100.2'
    assert pool.reserve('198.51.100.254', 'Service default/last') == '198.51.100.254'
    assert pool.allocated()[-1] == '198.51.100.254'


@pytest.mark.parametrize('cidr, hosts', [
    ('172.20.0.0/30', ['172.20.0.1', '172.20.0.2']),
    ('172.20.0.0/31', ['172.20.0.0', '172.20.0.1']),      # no network/broadcast here
    ('172.20.0.7/32', ['172.20.0.7']),
])
def test_a_small_pool_has_the_hosts_ipaddress_counts(cidr, hosts):
    pool = LoadBalancerIPAllocator(cidr)
    assert [pool.allocate('x') for _ in hosts] == hosts
    with pytest.raises(AllocationError) as info:
        pool.allocate('x')
    assert str(info.value) == f'no addresses left in the load balancer pool {cidr}'


@pytest.mark.parametrize('ip', ['198.51.100.0', '198.51.100.255', '203.0.113.5', 'nope'])
def test_a_requested_address_outside_the_pool_names_the_pool(ip):
    with pytest.raises(AllocationError) as info:
        LoadBalancerIPAllocator(POOL).reserve(ip, 'Service default/web')
    assert str(info.value) == ('provided IP is not in the load balancer pool '
                               '198.51.100.0/24 (valid: 198.51.100.1-198.51.100.254)')


def test_a_requested_address_that_is_taken_names_its_holder():
    pool = LoadBalancerIPAllocator(POOL)
    pool.reserve('198.51.100.7', 'Service dev/api')
    with pytest.raises(AllocationError) as info:
        pool.reserve('198.51.100.7', 'Service default/web')
    assert str(info.value) == 'provided IP is already allocated to Service dev/api'
    assert pool.owner('198.51.100.7') == 'Service dev/api'


def test_a_copy_of_the_pool_is_independent():
    pool = LoadBalancerIPAllocator(POOL)
    pool.allocate('a')
    clone = pool.copy()
    clone.allocate('b')
    clone.release('198.51.100.1')
    assert pool.allocated() == ['198.51.100.1'] and clone.allocated() == ['198.51.100.2']


# ---------------------------------------------------------------- allocation in the store
def test_a_load_balancer_service_is_a_node_port_service_with_an_address(store):
    assert store.apply([lb_service()])['results'] == [['service/web', 'created']]
    svc = store.get('Service', 'default', 'web')
    spec = svc['spec']
    assert svc['status'] == {'loadBalancer': {'ingress': [{'ip': '198.51.100.1',
                                                           'ipMode': 'VIP'}]}}
    assert store.cluster_ips.is_allocated(spec['clusterIP'])
    assert store.node_ports.allocated() == [node_port(store)]
    assert spec['externalTrafficPolicy'] == 'Cluster'
    assert spec['allocateLoadBalancerNodePorts'] is True
    assert 'healthCheckNodePort' not in spec
    assert store.lb_ips.allocated() == ['198.51.100.1']
    assert store.lb_ips.owner('198.51.100.1') == 'Service default/web'


def test_services_get_the_pool_in_order_and_a_requested_free_address(store):
    store.apply([lb_service('a'), lb_service('b', loadBalancerIP='198.51.100.2'),
                 lb_service('c'), lb_service('d', loadBalancerIP='198.51.100.200')])
    assert [address_of(store, n) for n in 'abcd'] == [
        '198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.200']


def events_of(store, name='web'):
    """(type, reason, message) of the events about a Service, oldest first."""
    from services.events import about
    svc = store.get('Service', 'default', name)
    return [(e['type'], e['reason'], e['message']) for e in about(store.list('Event'), svc)]


def test_a_requested_address_outside_the_pool_leaves_it_pending_with_an_event(store):
    store.apply([lb_service('a'), lb_service(loadBalancerIP='203.0.113.50')])
    assert address_of(store, 'a') == '198.51.100.1' and address_of(store) is None
    assert service_row(store.get('Service', 'default', 'web'), NOW, False)[3] == '<pending>'
    assert events_of(store)[-1] == (
        'Warning', 'SyncLoadBalancerFailed', 'Error syncing load balancer: failed to '
        'ensure load balancer: requested IP "203.0.113.50": provided IP is not in the load '
        'balancer pool 198.51.100.0/24 (valid: 198.51.100.1-198.51.100.254)')
    assert events_of(store, 'a') == [('Normal', 'EnsuredLoadBalancer',
                                      'Ensured load balancer')]


def test_a_requested_address_another_service_holds_waits_until_it_frees(store):
    store.apply([lb_service('a', loadBalancerIP='198.51.100.9')])
    assert store.apply([lb_service('b', loadBalancerIP='198.51.100.9')])['results'] == [
        ['service/b', 'created']]
    assert address_of(store, 'b') is None
    assert events_of(store, 'b') == [(
        'Warning', 'SyncLoadBalancerFailed', 'Error syncing load balancer: failed to '
        'ensure load balancer: requested IP "198.51.100.9": provided IP is already '
        'allocated to Service default/a')]
    store.delete('Service', 'default', 'a')
    assert address_of(store, 'b') == '198.51.100.9'


def test_an_exhausted_pool_leaves_a_service_pending_until_an_address_frees():
    store = small_pool('172.20.0.0/30')
    store.apply([lb_service('a'), lb_service('b')])
    rv = store.snapshot()[0]
    assert store.apply([lb_service('c')])['results'] == [['service/c', 'created']]
    assert address_of(store, 'c') is None and store.snapshot()[0] > rv
    assert events_of(store, 'c') == [(
        'Warning', 'SyncLoadBalancerFailed', 'Error syncing load balancer: failed to '
        'ensure load balancer: no addresses left in the load balancer pool 172.20.0.0/30')]
    store.tick()                                # time alone changes nothing: one event
    [event] = [e for e in store.list('Event') if e['involvedObject']['name'] == 'c']
    assert event['count'] == 1 and store.snapshot()[0] == rv + 1
    store.delete('Service', 'default', 'a')
    assert address_of(store, 'c') == '172.20.0.1'
    assert events_of(store, 'c')[-1] == ('Normal', 'EnsuredLoadBalancer',
                                         'Ensured load balancer')


def test_applying_it_again_is_unchanged_and_a_users_status_is_ignored(store):
    store.apply([lb_service(ports=[('http', 80, None), ('admin', 81, 30081)])])
    before = store.get('Service', 'default', 'web')
    rv = store.snapshot()[0]
    again = lb_service(ports=[('http', 80, None), ('admin', 81, None)])
    again['status'] = {'loadBalancer': {'ingress': [{'ip': '198.51.100.77'}]}}
    assert store.apply([again])['results'] == [['service/web', 'unchanged']]
    assert store.get('Service', 'default', 'web') == before
    assert store.snapshot()[0] == rv
    assert store.lb_ips.allocated() == ['198.51.100.1']


def test_what_kubectl_get_printed_applies_back_unchanged(store):
    store.apply([local(loadBalancerSourceRanges=['203.0.113.0/24'])])
    printed = store.get('Service', 'default', 'web')
    assert store.apply([printed])['results'] == [['service/web', 'unchanged']]
    assert store.get('Service', 'default', 'web') == printed


def test_a_new_load_balancer_ip_moves_the_address_and_frees_the_old_one(store):
    store.apply([lb_service()])
    store.apply([lb_service(loadBalancerIP='198.51.100.50'), lb_service('other')])
    assert address_of(store) == '198.51.100.50'
    assert address_of(store, 'other') == '198.51.100.1'      # free at once
    # Leaving loadBalancerIP out again keeps the address the Service has.
    assert store.apply([lb_service(), lb_service('other')])['results'] == [
        ['service/web', 'configured'], ['service/other', 'unchanged']]
    assert address_of(store) == '198.51.100.50'
    assert store.lb_ips.allocated() == ['198.51.100.1', '198.51.100.50']


def test_a_move_to_a_taken_address_fails_and_keeps_the_old_one(store):
    store.apply([lb_service('a'), lb_service('b')])
    store.apply([lb_service('a', loadBalancerIP='198.51.100.2')])
    assert (address_of(store, 'a'), address_of(store, 'b')) == (
        '198.51.100.1', '198.51.100.2')
    assert events_of(store, 'a')[-1][2].endswith(
        'requested IP "198.51.100.2": provided IP is already allocated to Service '
        'default/b')
    store.delete('Service', 'default', 'b')
    assert address_of(store, 'a') == '198.51.100.2'
    assert store.lb_ips.allocated() == ['198.51.100.2']


def test_deleting_the_service_or_its_namespace_frees_the_address(store):
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'dev'}}])
    store.apply([lb_service('a'), lb_service('b', namespace='dev')])
    store.delete('Service', 'default', 'a')
    assert store.lb_ips.allocated() == ['198.51.100.2']
    store.delete('Namespace', None, 'dev')
    assert store.lb_ips.allocated() == [] and store.node_ports.allocated() == []
    store.apply([lb_service('c')])
    assert address_of(store, 'c') == '198.51.100.1'


def test_node_port_to_load_balancer_and_back_keeps_the_cluster_ip_and_node_ports(store):
    store.apply([of_type('NodePort', ports=[('http', 80, None), ('admin', 81, 30081)])])
    first = spec_of(store)
    store.apply([lb_service(ports=[('http', 80, None), ('admin', 81, None)])])
    spec = spec_of(store)
    assert spec['clusterIP'] == first['clusterIP'] and spec['ports'] == first['ports']
    assert address_of(store) == '198.51.100.1'
    store.apply([of_type('NodePort', ports=[('http', 80, None), ('admin', 81, None)])])
    spec = spec_of(store)
    assert (spec['type'], spec['clusterIP'], spec['ports']) == (
        'NodePort', first['clusterIP'], first['ports'])
    assert 'allocateLoadBalancerNodePorts' not in spec
    assert store.get('Service', 'default', 'web')['status'] == {'loadBalancer': {}}
    assert store.lb_ips.allocated() == []
    assert store.node_ports.allocated() == sorted(p['nodePort'] for p in first['ports'])


def test_load_balancer_to_cluster_ip_gives_back_the_address_and_the_node_ports(store):
    store.apply([local()])
    ip = spec_of(store)['clusterIP']
    store.apply([of_type('ClusterIP')])
    spec = spec_of(store)
    assert spec['clusterIP'] == ip and 'nodePort' not in spec['ports'][0]
    assert 'healthCheckNodePort' not in spec
    assert store.lb_ips.allocated() == [] and store.node_ports.allocated() == []


def test_a_load_balancer_ip_on_another_type_is_kept_and_takes_nothing(store):
    store.apply([of_type('NodePort', loadBalancerIP='198.51.100.5')])
    assert spec_of(store)['loadBalancerIP'] == '198.51.100.5'
    assert store.lb_ips.allocated() == []
    store.apply([lb_service(loadBalancerIP='198.51.100.5')])     # now it asks for it
    assert address_of(store) == '198.51.100.5'


# ---------------------------------------------------------------- healthCheckNodePort
def test_local_policy_gets_a_health_check_node_port_of_its_own(store):
    store.apply([local()])
    spec = spec_of(store)
    health = spec['healthCheckNodePort']
    assert 30000 <= health <= 32767 and health != node_port(store)
    assert store.node_ports.allocated() == sorted([health, node_port(store)])


def test_a_requested_health_check_node_port_is_honoured_or_refused_like_a_node_port(store):
    store.apply([local('a', healthCheckNodePort=31000)])
    assert spec_of(store, 'a')['healthCheckNodePort'] == 31000
    assert problems(store, [local('b', healthCheckNodePort=31000)]) == [
        'spec.healthCheckNodePort: Invalid value: 31000: provided port is already '
        'allocated']
    assert problems(store, [local('b', healthCheckNodePort=40000)]) == [
        'spec.healthCheckNodePort: Invalid value: 40000: provided port is not in the '
        'valid range. The range of valid ports is 30000-32767']
    # A Service's own nodePort is not free for its health checks either.
    assert problems(store, [local('b', ports=[('', 80, 31001)],
                                  healthCheckNodePort=31001)]) == [
        'spec.healthCheckNodePort: Invalid value: 31001: provided port is already '
        'allocated']


def test_the_health_check_node_port_is_kept_and_cannot_change(store):
    store.apply([local()])
    health = spec_of(store)['healthCheckNodePort']
    assert store.apply([local()])['results'] == [['service/web', 'unchanged']]
    assert store.apply([local(healthCheckNodePort=health)])['results'] == [
        ['service/web', 'unchanged']]
    other = 30000 if health != 30000 else 30001
    assert problems(store, [local(healthCheckNodePort=other)]) == [
        f'spec.healthCheckNodePort: Invalid value: {other}: field is immutable '
        f'(it is {health})']
    assert spec_of(store)['healthCheckNodePort'] == health


@pytest.mark.parametrize('change', [
    lambda: lb_service(),                                              # policy Cluster
    lambda: of_type('NodePort', externalTrafficPolicy='Local'),        # no LB
])
def test_the_health_check_node_port_goes_back_when_no_longer_needed(store, change):
    store.apply([local()])
    health = spec_of(store)['healthCheckNodePort']
    kept = node_port(store)
    store.apply([change()])
    assert 'healthCheckNodePort' not in spec_of(store)
    assert node_port(store) == kept and store.node_ports.allocated() == [kept]
    store.apply([local('other', healthCheckNodePort=health)])         # free at once


def test_a_service_that_starts_to_need_one_gets_one(store):
    store.apply([of_type('NodePort', externalTrafficPolicy='Local')])
    kept = node_port(store)
    store.apply([local()])
    spec = spec_of(store)
    assert node_port(store) == kept
    assert store.node_ports.allocated() == sorted([kept, spec['healthCheckNodePort']])


def test_deleting_the_service_frees_its_health_check_node_port(store):
    store.apply([local(healthCheckNodePort=31000)])
    store.delete('Service', 'default', 'web')
    assert store.node_ports.allocated() == [] and store.lb_ips.allocated() == []


def test_an_exhausted_node_port_range_fails_the_health_check_node_port_too():
    store = Store(load_cluster('networking: {nodePortRange: 30000-30001}\n',
                               'cluster.yaml'))
    store.apply([of_type('NodePort', 'a')])
    assert problems(store, [local('b')]) == [
        'spec.healthCheckNodePort: failed to allocate a healthCheckNodePort: range is '
        'full: every port of the NodePort range 30000-30001 is allocated']


@pytest.mark.parametrize('spec, problem', [
    (dict(type='NodePort', externalTrafficPolicy='Local', healthCheckNodePort=31000),
     "spec.healthCheckNodePort: Invalid value: 31000: may only be set when `type` is "
     "'LoadBalancer' and `externalTrafficPolicy` is 'Local'"),
    (dict(healthCheckNodePort=31000),
     "spec.healthCheckNodePort: Invalid value: 31000: may only be set when `type` is "
     "'LoadBalancer' and `externalTrafficPolicy` is 'Local'"),
    (dict(externalTrafficPolicy='Local', healthCheckNodePort=0),
     'spec.healthCheckNodePort: 0 is not a valid port number, must be 1-65535'),
    (dict(externalTrafficPolicy='Local', healthCheckNodePort='31000'),
     'spec.healthCheckNodePort: must be an integer, got string "31000"'),
])
def test_health_check_node_port_validation(spec, problem):
    assert invalid(lb_service(**spec)) == [problem]


# ---------------------------------------------------------------- the other fields
@pytest.mark.parametrize('ranges', [[], ['203.0.113.0/24'], ['203.0.113.10/32', '0.0.0.0/0']])
def test_source_ranges_are_kept_as_written(store, ranges):
    store.apply([lb_service(loadBalancerSourceRanges=ranges)])
    assert spec_of(store)['loadBalancerSourceRanges'] == ranges


@pytest.mark.parametrize('value, problem', [
    ('203.0.113.10', 'Invalid value: "203.0.113.10": must be a list of IP ranges. For '
                     'example, 10.240.0.0/24,10.250.0.0/24 (for this one address write '
                     '203.0.113.10/32)'),
    ('web', 'Invalid value: "web": must be a list of IP ranges. For example, '
            '10.240.0.0/24,10.250.0.0/24'),
    ('10.0.0.0/33', 'Invalid value: "10.0.0.0/33": must be a list of IP ranges. For '
                    'example, 10.240.0.0/24,10.250.0.0/24'),
    (' 10.0.0.0/8', 'Invalid value: " 10.0.0.0/8": must be a list of IP ranges. For '
                    'example, 10.240.0.0/24,10.250.0.0/24'),
    ('203.0.113.10/24', 'Invalid value: "203.0.113.10/24": must not have bits set beyond '
                        'the prefix length (did you mean "203.0.113.0/24" or '
                        '"203.0.113.10/32"?)'),
    ('10.0.0.0/08', 'Invalid value: "10.0.0.0/08": must be in canonical form '
                    '("10.0.0.0/8")'),
    ('10.0.0.0/255.0.0.0', 'Invalid value: "10.0.0.0/255.0.0.0": must be in canonical '
                           'form ("10.0.0.0/8")'),
    ('2001:db8::/64', 'Invalid value: "2001:db8::/64": kubelab is single-stack: use IPv4 '
                      'ranges'),
    (24, 'must be a string, got integer 24'),
])
def test_a_bad_source_range_gets_the_api_servers_words(value, problem):
    assert invalid(lb_service(loadBalancerSourceRanges=['10.0.0.0/8', value])) == [
        f'spec.loadBalancerSourceRanges[1]: {problem}']


@pytest.mark.parametrize('service_type', ['ClusterIP', 'NodePort'])
def test_load_balancer_only_fields_on_another_type_are_refused(service_type):
    assert invalid(of_type(service_type, loadBalancerSourceRanges=['10.0.0.0/8'],
                           loadBalancerClass='example.com/lb',
                           allocateLoadBalancerNodePorts=True)) == [
        f"spec.{field}: may only be used when `type` is 'LoadBalancer'"
        for field in ('loadBalancerSourceRanges', 'loadBalancerClass',
                      'allocateLoadBalancerNodePorts')]


def test_an_empty_source_range_list_is_fine_on_any_type():
    validate(of_type('NodePort', loadBalancerSourceRanges=[]))


def test_a_load_balancer_class_is_accepted_and_must_be_a_qualified_name():
    assert validate(lb_service(loadBalancerClass='example.com/internal-vip'))['spec'][
        'loadBalancerClass'] == 'example.com/internal-vip'
    [problem] = invalid(lb_service(loadBalancerClass='example.com/internal vip'))
    assert problem.startswith('spec.loadBalancerClass: Invalid value: '
                              '"example.com/internal vip": must be a qualified name')



def test_a_load_balancer_without_node_ports_is_refused_with_the_reason():
    assert invalid(lb_service(allocateLoadBalancerNodePorts=False)) == [
        "spec.allocateLoadBalancerNodePorts: false is not supported by kubelab: the lab's "
        'cloud load balancer forwards to NodeIP:NodePort, so a LoadBalancer Service needs '
        'its nodePorts; leave the field out or set it to true']
    assert validate(lb_service(allocateLoadBalancerNodePorts=True))['spec'][
        'allocateLoadBalancerNodePorts'] is True


@pytest.mark.parametrize('value, problem', [
    ('198.51.100', 'spec.loadBalancerIP: "198.51.100" is not a valid IPv4 address; use a '
                   'free address of the load balancer pool, or leave it out to get one '
                   'allocated'),
    (7, 'spec.loadBalancerIP: must be a string, got integer 7 (quote it)'),
])
def test_a_load_balancer_ip_must_be_an_ipv4_address(value, problem):
    assert invalid(lb_service(loadBalancerIP=value)) == [problem]


def test_a_headless_load_balancer_is_refused():
    assert invalid(lb_service(clusterIP='None')) == [
        "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for "
        "LoadBalancer services"]


def test_an_unknown_type_is_not_held_against_the_load_balancer_fields():
    assert [p.split(':')[0] for p in invalid(of_type(
        'Loadbalancer', loadBalancerSourceRanges=['10.0.0.0/8'],
        healthCheckNodePort=31000))] == ['spec.type']


# ---------------------------------------------------------------- kubelab get svc
def test_kubectl_get_shows_the_address_and_the_node_port(store):
    store.apply([lb_service(ports=[('', 80, 30080)]), of_type('NodePort', 'np')])
    row = service_row(store.get('Service', 'default', 'web'), NOW, wide=True)
    assert row[1:5] == ['LoadBalancer', spec_of(store)['clusterIP'], '198.51.100.1',
                        '80:30080/TCP']
    assert row[6:] == ['app=web']
    assert service_row(store.get('Service', 'default', 'np'), NOW, wide=False)[3] == '<none>'


# ---------------------------------------------------------------- all or nothing
def test_a_failed_apply_takes_no_address_and_gives_none_back(store):
    store.apply([lb_service('kept'), local('moving')])
    before = (store.lb_ips.allocated(), store.node_ports.allocated(),
              store.cluster_ips.allocated())
    rv = store.snapshot()[0]
    with pytest.raises(ApplyError):
        store.apply([lb_service('new'),                                 # allocates .3
                     lb_service('asks', loadBalancerIP='198.51.100.9'),  # reserves .9
                     lb_service('moving', loadBalancerIP='198.51.100.10'),  # moves
                     of_type('ClusterIP', 'kept'),                      # gives .1 back
                     broken_pod()])
    assert (store.lb_ips.allocated(), store.node_ports.allocated(),
            store.cluster_ips.allocated()) == before
    assert (address_of(store, 'kept'), address_of(store, 'moving')) == (
        '198.51.100.1', '198.51.100.2')
    assert 'healthCheckNodePort' in spec_of(store, 'moving')
    assert store.snapshot()[0] == rv
    store.apply([lb_service('new')])
    assert address_of(store, 'new') == '198.51.100.3'


def test_a_dry_run_takes_no_address(store):
    out = store.apply([local(loadBalancerIP='198.51.100.9')], dry_run=True)
    assert out['results'] == [['service/web', 'validated']]
    assert store.lb_ips.allocated() == [] and store.node_ports.allocated() == []


def test_a_class_the_lab_does_not_implement_leaves_the_service_pending(store):
    result = store.apply([lb_service(loadBalancerClass='example.com/internal-vip')])
    assert address_of(store) is None and node_port(store)      # nodePorts as usual
    row = service_row(store.get('Service', 'default', 'web'), NOW, False)
    assert row[3] == '<pending>'
    [warning] = [w for w in result['warnings'] if 'loadBalancerClass' in w]
    assert 'no load balancer of this lab implements class "example.com/internal-vip"' \
        in warning and 'EXTERNAL-IP stays <pending>' in warning
    # The class may not change while the Service is a LoadBalancer ...
    assert problems(store, [lb_service(loadBalancerClass='example.com/other')]) == [
        'spec.loadBalancerClass: Invalid value: "example.com/other": may not change once '
        'set (delete the Service and create it again)']
    assert problems(store, [lb_service()]) == [
        'spec.loadBalancerClass: Invalid value: null: may not change once set (delete '
        'the Service and create it again)']
    # ... but going through another type drops it, and the cloud serves it again.
    store.apply([of_type('NodePort')])
    store.apply([lb_service()])
    assert address_of(store) == '198.51.100.1'
