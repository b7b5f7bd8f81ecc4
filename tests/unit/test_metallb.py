"""MetalLB in the object model: its objects' validation (services/validation/metallb.py),
its controller's addresses (services/metallb/ipam.py, through the store), its speakers'
election (services/metallb/speaker.py) and a speaker's decisions and gratuitous ARP
(topo/metallb.py, without sockets)."""

import hashlib
import struct

import pytest

from services.cluster import load_cluster
from services.errors import ApplyError
from services.manifests import validate
from services.metallb import speaker as election
from services.store import Store
from topo.metallb import Speaker, gratuitous_arp

BARE = load_cluster('cloud: none\n', 'cluster.yaml')
NODES = {'control-plane', 'worker-1', 'worker-2'}


def pool(name='lan', addresses=('10.128.0.200-10.128.0.202',), namespace='metallb-system',
         **spec):
    return {'apiVersion': 'metallb.io/v1beta1', 'kind': 'IPAddressPool',
            'metadata': {'name': name, 'namespace': namespace},
            'spec': {'addresses': list(addresses), **spec}}


def advertisement(name='lan', **spec):
    return {'apiVersion': 'metallb.io/v1beta1', 'kind': 'L2Advertisement',
            'metadata': {'name': name, 'namespace': 'metallb-system'}, 'spec': spec}


def lb(name, annotations=None, **spec):
    meta = {'name': name}
    if annotations:
        meta['annotations'] = annotations
    return {'apiVersion': 'v1', 'kind': 'Service', 'metadata': meta,
            'spec': {'type': 'LoadBalancer', 'selector': {'app': name},
                     'ports': [{'port': 80, 'targetPort': 8080}], **spec}}


@pytest.fixture
def store():
    s = Store(BARE)
    for node in BARE.nodes:
        s.renew_lease(node.name)
    return s


def address(store, name):
    ingress = store.get('Service', 'default', name)['status']['loadBalancer'].get('ingress')
    return ingress[0]['ip'] if ingress else None


def problems(obj):
    with pytest.raises(ApplyError) as info:
        validate(obj)
    return [f'{e.path}: {e.message}' for e in info.value.errors]


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize('addresses, problem', [
    ([], 'spec.addresses: must have at least one item'),
    (['10.128.0.200/33'], 'spec.addresses[0]: invalid CIDR "10.128.0.200/33"'),
    (['10.128.0.201/30'], 'spec.addresses[0]: invalid CIDR "10.128.0.201/30": host bits '
                          'set; did you mean 10.128.0.200/30?'),
    (['10.128.0.9-10.128.0.1'], 'spec.addresses[0]: invalid range "10.128.0.9-10.128.0.1": '
                                '10.128.0.9 is after 10.128.0.1'),
    (['10.128.0.1-x'], 'spec.addresses[0]: invalid range "10.128.0.1-x"'),
    (['10.128.0.0/29', '10.128.0.4-10.128.0.9'], 'spec.addresses[1]: '
                                                 '"10.128.0.4-10.128.0.9" overlaps'),
    ([7], 'spec.addresses[0]: must be a string, got integer 7'),
])
def test_a_bad_pool_address_gets_the_field_and_the_expected_form(addresses, problem):
    found = problems(pool(addresses=addresses))
    assert any(p.startswith(problem) for p in found), found


def test_unsupported_fields_are_refused_with_their_path():
    assert any('spec.serviceAllocation' in p for p in problems(
        pool(serviceAllocation={'priority': 1})))
    assert any('spec.interfaces' in p for p in problems(advertisement(interfaces=['eth0'])))
    found = problems(advertisement(nodeSelectors=[{'matchExpressions': [
        {'key': 'x', 'operator': 'Sometimes'}]}]))
    assert any(p.startswith('spec.nodeSelectors[0].matchExpressions[0].operator') for p in found)


def test_valid_objects_get_metallbs_defaults():
    assert validate(pool())['spec'] == {'addresses': ['10.128.0.200-10.128.0.202'],
                                        'autoAssign': True, 'avoidBuggyIPs': False}
    validate(advertisement(ipAddressPools=['lan'], nodeSelectors=[{}]))


def test_metallb_kinds_need_metallb_and_pools_may_not_overlap(store):
    from services.cluster import default_cluster
    with pytest.raises(ApplyError) as info:
        Store(default_cluster()).apply([pool()])
    assert 'no matches for kind "IPAddressPool" in version "metallb.io/v1beta1": MetalLB ' \
           'is not installed' in str(info.value)
    store.apply([pool()])
    with pytest.raises(ApplyError) as info:
        store.apply([pool('other', ['10.128.0.202/32'])])
    assert 'spec.addresses: overlaps with already defined CIDR of IPAddressPool lan: ' \
           '10.128.0.202 is in both' in str(info.value)
    store.apply([pool(addresses=['10.128.0.210/31'])])          # the pool itself may move


# ---------------------------------------------------------------- the controller
def test_services_get_addresses_in_order_and_wait_when_none_is_left(store):
    store.apply([lb('a'), lb('b'), lb('c'), lb('d')])
    assert [address(store, n) for n in 'abcd'] == [None] * 4
    store.apply([pool()])
    assert [address(store, n) for n in 'abcd'] == [
        '10.128.0.200', '10.128.0.201', '10.128.0.202', None]
    svc = store.get('Service', 'default', 'a')
    assert svc['metadata']['annotations'] == {'metallb.io/ip-allocated-from-pool': 'lan'}
    assert store.apply([lb('a')])['results'] == [['service/a', 'unchanged']]
    store.delete('Service', 'default', 'b')
    assert address(store, 'd') == '10.128.0.201'


def test_requests_by_annotation_pool_and_spec_are_honoured(store):
    store.apply([pool(), pool('hidden', ['10.128.0.250/31'], autoAssign=False)])
    store.apply([
        lb('by-ip', {'metallb.universe.tf/loadBalancerIPs': '10.128.0.202'}),
        lb('by-pool', {'metallb.io/address-pool': 'hidden'}),
        lb('by-spec', loadBalancerIP='10.128.0.251'),
        lb('outside', {'metallb.io/loadBalancerIPs': '10.128.0.99'}),
        lb('classy', loadBalancerClass='example.com/other')])
    assert address(store, 'by-ip') == '10.128.0.202'
    assert address(store, 'by-pool') == '10.128.0.250'
    assert address(store, 'by-spec') == '10.128.0.251'
    assert address(store, 'outside') is None and address(store, 'classy') is None
    events = {(e['involvedObject']['name'], e['reason'], e['message'])
              for e in store.list('Event')}
    assert ('outside', 'AllocationFailed', 'Failed to allocate IP for "default/outside": '
            '["10.128.0.99"] is not allowed in config') in events
    assert not [e for e in events if e[0] == 'classy']


def test_avoid_buggy_ips_skips_the_network_and_broadcast_like_addresses(store):
    store.apply([pool(addresses=['10.128.0.255-10.128.1.1'], avoidBuggyIPs=True),
                 lb('a'), lb('b')])
    assert (address(store, 'a'), address(store, 'b')) == ('10.128.1.1', None)


def test_a_pool_outside_metallbs_namespace_is_not_used(store):
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'dev'}}])
    store.apply([pool(namespace='dev'), lb('a')])
    assert address(store, 'a') is None


# ---------------------------------------------------------------- the election
def view(*services, advertisements=(advertisement(),), endpoints=None, labels=None):
    nodes = [{'metadata': {'name': n, 'labels': (labels or {}).get(n, {})}} for n in NODES]
    slices = [{'metadata': {'name': f'{s["metadata"]["name"]}-x', 'namespace': 'default',
                            'labels': {'kubernetes.io/service-name': s['metadata']['name']}},
               'endpoints': [{'addresses': ['192.168.3.4'], 'nodeName': node,
                              'conditions': {'ready': True}}
                             for node in (['worker-2'] if endpoints is None else endpoints)]}
              for s in services]
    return election.View(list(services), slices, [pool()], list(advertisements), nodes)


def held(name, ip, **spec):
    svc = lb(name, **spec)
    svc['metadata']['namespace'] = 'default'
    svc['status'] = {'loadBalancer': {'ingress': [{'ip': ip}]}}
    return svc


def test_the_first_node_by_hash_of_node_and_address_wins():
    ip = '10.128.0.200'
    expected = min(NODES, key=lambda n: hashlib.sha256(f'{n}#{ip}'.encode()).digest())
    assert election.owners(view(held('a', ip)), NODES) == {ip: (expected, ('default', 'a'))}
    rest = NODES - {expected}
    second = min(rest, key=lambda n: hashlib.sha256(f'{n}#{ip}'.encode()).digest())
    assert election.owners(view(held('a', ip)), rest)[ip][0] == second


def test_every_speaker_agrees_and_exactly_one_announces():
    v = view(held('a', '10.128.0.200'), held('b', '10.128.0.201'),
             held('c', '10.128.0.202'))
    mine = {n: election.announcements(n, v, NODES) for n in NODES}
    addresses = [ip for found in mine.values() for ip in found]
    assert sorted(addresses) == ['10.128.0.200', '10.128.0.201', '10.128.0.202']


def test_local_policy_only_nodes_with_an_endpoint_and_none_without_any():
    v = view(held('a', '10.128.0.200', externalTrafficPolicy='Local'),
             endpoints=['worker-1'])
    assert election.owners(v, NODES)['10.128.0.200'][0] == 'worker-1'
    assert election.owners(v, NODES - {'worker-1'}) == {}
    idle = view(held('a', '10.128.0.200'), endpoints=[])
    assert election.owners(idle, NODES) == {}


def test_advertisements_choose_pools_and_nodes():
    a = held('a', '10.128.0.200')
    assert election.owners(view(a, advertisements=()), NODES) == {}
    only = advertisement(ipAddressPools=['lan'], nodeSelectors=[
        {'matchLabels': {'edge': 'yes'}}])
    v = view(a, advertisements=(only,), labels={'worker-1': {'edge': 'yes'}})
    assert election.owners(v, NODES)['10.128.0.200'][0] == 'worker-1'
    other_pool = advertisement(ipAddressPools=['nope'])
    assert election.owners(view(a, advertisements=(other_pool,)), NODES) == {}
    excluded = view(a, labels={n: {election.EXCLUDE_LABEL: ''} for n in NODES})
    assert election.owners(excluded, NODES) == {}


# ---------------------------------------------------------------- a speaker
class FakeStore:
    def __init__(self, objects):
        self.objects, self.rv = objects, 1
        self.announced, self.statuses = {}, {}

    def list(self, kind):
        return self.objects.get(kind, [])

    def set_l2_announcements(self, node, mine):
        self.announced[node] = dict(mine)

    def set_service_l2_statuses(self, node, services, interface):
        self.statuses[node] = (set(services), interface)


def test_a_speaker_announces_sends_gratuitous_arp_and_writes_status_when_it_can():
    v = view(held('a', '10.128.0.200'), endpoints=['worker-2'])
    store = FakeStore({'Service': v.services, 'EndpointSlice': v.slices,
                       'IPAddressPool': v.pools, 'L2Advertisement': v.advertisements,
                       'Node': v.nodes})
    sent, reachable = [], [False]
    owner = election.owners(v, NODES)['10.128.0.200'][0]
    node = BARE.node(owner)
    speaker = Speaker(node, BARE, 0, store, lambda: reachable[0],
                      send=lambda n, frame: sent.append(frame))
    speaker._decide(0.0)                  # never read the API: nothing to decide from
    assert store.announced == {} and sent == []
    reachable[0] = True
    speaker._heard = {n: 0.0 for n in NODES - {owner}}
    speaker._decide(1.0)
    assert store.announced == {owner: {'10.128.0.200': ('default', 'a')}}
    assert store.statuses[owner][0] == {('default', 'a')}
    assert len(sent) == 2 and sent[0] == gratuitous_arp(
        '0a:5a:' + ':'.join(f'{int(b):02x}' for b in node.ip.split('.')), '10.128.0.200', 1)
    speaker._decide(6.0)                  # the others went silent: still its own
    assert store.announced[owner] == {'10.128.0.200': ('default', 'a')}


def test_a_gratuitous_arp_frame_says_who_has_the_address():
    frame = gratuitous_arp('0a:5a:0a:80:00:0c', '10.128.0.200', 2)
    assert frame[:6] == b'\xff' * 6 and frame[12:14] == b'\x08\x06'
    htype, ptype, hlen, plen, op = struct.unpack('!HHBBH', frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 2)
    assert frame[22:28] == bytes.fromhex('0a5a0a80000c')
    assert frame[28:32] == frame[38:42] == bytes([10, 128, 0, 200])
