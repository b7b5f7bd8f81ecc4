"""A Service with more endpoints than one OpenFlow group message carries (about 700
ServiceLB buckets in 64 KiB; issue 20 asks for 5,000): the node bridges split its front
over 2^k select groups of at most MAX_GROUP_BUCKETS, chosen by bits 1..k of the
client's source port. Every endpoint is in exactly one group, the groups' sizes differ
by one at most, and a connection reaches an endpoint far beyond bucket 700 (flowsim)."""

from controller import pipeline
from controller.pipeline.service_fronts import split_endpoints
from controller.pipeline.tables import MAX_GROUP_BUCKETS
from controller.state import ClusterState
from services import wiring
from tests.unit.flowsim import Lab
from tests.unit.test_pipeline import CLIENT, CLUSTER, endpoint_slice, pod, service

VIP = '10.96.0.99'
PODS = [('big-0', 'worker-1', '192.168.2.50'), ('big-1', 'worker-2', '192.168.3.50'),
        ('big-2', 'worker-1', '192.168.2.51'), ('big-3', 'worker-2', '192.168.3.51')]


def big_state(ports: int) -> ClusterState:
    """Service big: len(PODS) x ``ports`` endpoints (each pod serves ports 20000...),
    one slice per port number, as a selectorless Service with its own slices has."""
    slices = [endpoint_slice('big', [{'name': 'http', 'port': 20000 + i, 'protocol': 'TCP'}],
                             *[(ip, node, True) for _, node, ip in PODS], suffix=f'p{i}')
              for i in range(ports)]
    return ClusterState.from_objects(CLUSTER, {
        'Pod': [pod('client', 'control-plane', CLIENT)] + [pod(n, node, ip)
                                                           for n, node, ip in PODS],
        'Service': [service('big', VIP, {'name': 'http', 'port': 80, 'protocol': 'TCP'})],
        'EndpointSlice': slices})


def _groups(state):
    config = pipeline.desired(state, wiring.node_dpid(CLUSTER.nodes[0]))
    return config, [g for g in config.groups if g.owner == 'service default/big/tcp/http']


def _targets(group) -> list:
    return [b.actions[0].nat.dst + f':{b.actions[0].nat.port}' for b in group.buckets]


def test_5000_endpoints_make_16_groups_with_every_endpoint_once():
    state = big_state(1250)
    endpoints = state.service_ports[0].endpoints
    assert len(endpoints) == 5000
    config, groups = _groups(state)
    assert len(groups) == 16
    assert all(len(g.buckets) <= MAX_GROUP_BUCKETS for g in groups)
    assert {len(g.buckets) for g in groups} <= {312, 313}
    seen = [t for g in groups for t in _targets(g)]
    assert sorted(seen) == sorted(f'{e.ip}:{e.port}' for e in endpoints)
    lb = [f for f in config.flows if f.owner == 'service default/big/tcp/http'
          and dict(f.match).get('ipv4_dst') == VIP and f.actions]
    assert sorted(dict(f.match)['tcp_src'] for f in lb) == [(i << 1, 30) for i in range(16)]


def test_a_small_service_keeps_one_group_and_no_source_port_match():
    config, groups = _groups(big_state(100))
    assert len(groups) == 1 and len(groups[0].buckets) == 400
    assert not any('tcp_src' in dict(f.match) for f in config.flows)


def test_a_connection_reaches_an_endpoint_beyond_bucket_700():
    state = big_state(325)                    # 1,300 endpoints: 4 groups of 325
    endpoints = state.service_ports[0].endpoints
    last = endpoints[-1]                      # the 1,300th bucket of one big group
    parts = split_endpoints(endpoints)
    part = next(i for i, p in enumerate(parts) if last in p)
    index = parts[part].index(last)
    lab = Lab(state)
    for sport in (40000 + 2 * part, 40009 + 2 * part):     # bits 1-2 alike: one group
        trip = lab.send(lab.packet(CLIENT, VIP, 80, sport=sport), bucket=index)
        assert trip.outcome[0] == 'output'
        assert trip.outcome[2]['ipv4_dst'] == last.ip
        assert trip.outcome[2]['tcp_dst'] == last.port
    other = lab.send(lab.packet(CLIENT, VIP, 80, sport=40000 + 2 * ((part + 1) % 4)),
                     bucket=0)
    assert (other.outcome[2]['ipv4_dst'], other.outcome[2]['tcp_dst']) == (
        parts[(part + 1) % 4][0].ip, parts[(part + 1) % 4][0].port)


def test_split_endpoints_deals_evenly():
    assert [len(p) for p in split_endpoints(list(range(MAX_GROUP_BUCKETS)))] == [512]
    assert [len(p) for p in split_endpoints(list(range(513)))] == [257, 256]
    assert sorted(x for p in split_endpoints(list(range(3000))) for x in p) == \
        list(range(3000))
