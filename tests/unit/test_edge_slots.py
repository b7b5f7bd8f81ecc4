"""The cloud edge's pick of a node, from the client's source port (edge_switch.py).

The edge's ServiceLB flows match bits 1-6 of the source port, each target node an
equal run of the 64 bit-reversed slots. Checked here: the flows and ``pick`` agree on
every port, the shares are equal within one slot, consecutive connections of one
client rotate over the nodes, and, walked through every switch with the flow
simulator (which models Open vSwitch's dp_hash: a packet is hashed once a datapath
pass), each node spreads the load balancer's connections over every endpoint: its
select group hashes the packet itself, as a real node's does.
"""

from collections import Counter

import pytest

from controller.flows import Ct
from controller.pipeline import desired
from controller.pipeline.edge_switch import (SLOTS, pick, port_matches, port_shift,
                                             shares, slot_bits)
from controller.pipeline.service_fronts import split_endpoints
from controller.pipeline.tables import T
from controller.state import ClusterState
from services import wiring
from tests.unit.flowsim import Lab, dp_hash_slots, matches
from tests.unit.test_pipeline import (CLUSTER, DNS, DNS_EP, EXTERNAL_1, HTTP_EP, LB_IP,
                                      LB_STATE, WEB_1, WEB_2, endpoint_slice, lb_objects,
                                      lb_service, node_port_service, pod, receiver)

BIG_IP = '198.51.100.40'
BIG_PODS = [('big-0', 'worker-1', '192.168.2.50'), ('big-1', 'worker-2', '192.168.3.50'),
            ('big-2', 'control-plane', '192.168.1.50'), ('big-3', 'worker-2', '192.168.3.51')]

SPREAD_IP = '198.51.100.20'
#: Six endpoints, two on each node (the traffic test's shape).
SPREAD_PODS = [(f'spread-{n}-{j}', node.name, f'192.168.{n}.{40 + j}')
               for n, node in enumerate(CLUSTER.nodes, start=1) for j in range(2)]


def spread_state():
    objs = lb_objects()
    objs['Pod'] += [pod(name, node, ip) for name, node, ip in SPREAD_PODS]
    objs['Service'].append(lb_service('spread', '10.96.0.93', SPREAD_IP, 30093))
    objs['EndpointSlice'].append(endpoint_slice(
        'spread', [HTTP_EP], *[(ip, node, True) for _, node, ip in SPREAD_PODS]))
    return ClusterState.from_objects(CLUSTER, objs)


def service_lb_flows(state, service: str) -> list:
    return [f for f in desired(state, wiring.EDGE_DPID).flows
            if f.table == T['ServiceLB'] and f.owner.startswith(f'service default/{service}/')]


def node_of(flow_spec) -> str | None:
    """The node address a ServiceLB flow DNATs to (None: a drop)."""
    return next((a.nat.dst for a in flow_spec.actions
                 if isinstance(a, Ct) and a.nat is not None), None)


@pytest.mark.parametrize('count,shift', [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (7, 0),
                                         (16, 0), (17, 0), (200, 0), (3, 1), (3, 4)])
def test_the_port_matches_of_each_share_cover_exactly_the_ports_pick_gives_it(count, shift):
    matched = [port_matches(run, slot_bits(count), shift) for run in shares(count)]
    for port in range(0, 1 << 16, 3):
        owners = [i for i, blocks in enumerate(matched) for m in blocks
                  if m is None or port & m[1] == m[0]]
        assert owners == [pick(port, count, shift)], port
    assert sum(len(b) for b in matched) <= 4 * count     # few flows a target


def test_the_shares_are_equal_within_one_slot_and_bit_0_is_ignored():
    for count in range(1, 201):
        sizes = [len(run) for run in shares(count)]
        assert sum(sizes) == 1 << slot_bits(count) and min(sizes) >= 4, (count, sizes)
        assert max(sizes) - min(sizes) <= 1, (count, sizes)
    assert slot_bits(16) == 6 and sum(len(r) for r in shares(3)) == SLOTS
    got = Counter(pick(port, 3) for port in range(32768, 61000))
    assert max(got.values()) / min(got.values()) < 1.05, got
    assert all(pick(port, 2) == pick(port + 1, 2) for port in range(0, 65535, 2))


def test_consecutive_connections_of_one_client_rotate_over_the_nodes():
    """A client's source ports step by 2: any 6 in a row reach all 3 nodes, two nodes
    alternate, and the same holds for the flows the edge holds."""
    for start in range(32768, 61000, 2):
        assert len({pick(start + 2 * k, 3) for k in range(6)}) == 3, start
        assert pick(start, 2) != pick(start + 2, 2), start
    flows = service_lb_flows(LB_STATE, 'lb')
    nodes = []
    for port in range(40000, 40012, 2):
        pkt = {'eth_type': 0x800, 'ip_proto': 6, 'ipv4_src': EXTERNAL_1, 'ipv4_dst': LB_IP,
               'tcp_src': port, 'tcp_dst': 80}
        [hit] = [f for f in flows if matches(f.match, pkt)]
        nodes.append(node_of(hit))
    assert len(set(nodes)) == 3 and all(a != b for a, b in zip(nodes, nodes[1:])), nodes


def test_one_target_takes_one_flow_without_a_port_match_and_none_a_drop():
    objs = lb_objects()
    objs['LoadBalancerHealth'] = [
        {'metadata': {'name': 'lb', 'namespace': 'default'},
         'status': {'healthyNodes': ['worker-2']}},
        {'metadata': {'name': 'lb-local', 'namespace': 'default'},
         'status': {'healthyNodes': []}}]
    state = ClusterState.from_objects(CLUSTER, objs)
    [one] = service_lb_flows(state, 'lb')
    assert 'tcp_src' not in one.match_dict() and node_of(one) == CLUSTER.nodes[2].ip
    [drop] = service_lb_flows(state, 'lb-local')
    assert drop.actions == () and drop.goto is None
    assert not desired(state, wiring.EDGE_DPID).groups
    # a source range: its flows are the slots' flows, each with the range
    ranged = service_lb_flows(LB_STATE, 'lb-ranges')
    assert len(ranged) == len(service_lb_flows(LB_STATE, 'lb'))
    assert all('ipv4_src' in f.match_dict() for f in ranged)


def test_each_node_spreads_the_load_balancers_connections_over_every_endpoint():
    """With the edge's select group, the node's group picked from the hash the edge's
    had computed for the same packet (one dp_hash a datapath pass), and each node
    reached only 4 of the 6 endpoints. The edge now sets no hash: each node reaches
    all 6, as on a cluster."""
    assert (dp_hash_slots(3), dp_hash_slots(6)) == (16, 32)     # OVS's table sizes
    state = spread_state()
    lab = Lab(state)
    endpoints = {ip for _, _, ip in SPREAD_PODS}
    reached = {node.ip: set() for node in CLUSTER.nodes}
    node_dpids = {wiring.node_dpid(node): node.ip for node in CLUSTER.nodes}
    for port in range(33000, 33000 + 2 * 240, 2):
        trip = lab.send(lab.packet(EXTERNAL_1, SPREAD_IP, 80, sport=port))
        host = receiver(lab, trip)
        assert host in endpoints, port
        first_node = next(node_dpids[d] for d in trip.dpids if d in node_dpids)
        assert first_node == CLUSTER.nodes[pick(port, 3)].ip        # the edge's pick
        reached[first_node].add(host)
    assert reached == {ip: endpoints for ip in reached}, {
        ip: len(hosts) for ip, hosts in reached.items()}



def test_each_node_reaches_every_group_of_a_split_service_behind_the_load_balancer():
    """A Service of 600 endpoints is split over 2 groups on each node, chosen by bit 1 of
    the source port (service_fronts.py). With the edge on bits 1-6 too, control-plane
    reached only group 0 and worker-2 only group 1 through the load balancer; for such
    a Service the edge reads the bits above the split's (2-7 here)."""
    slices = [endpoint_slice('big', [{'name': 'http', 'port': 20000 + i, 'protocol': 'TCP'}],
                             *[(ip, node, True) for _, node, ip in BIG_PODS], suffix=f'p{i}')
              for i in range(150)]
    state = ClusterState.from_objects(CLUSTER, {
        'Pod': [pod(name, node, ip) for name, node, ip in BIG_PODS],
        'Service': [lb_service('big', '10.96.0.99', BIG_IP, 30099)],
        'EndpointSlice': slices})
    parts = split_endpoints(state.service_ports[0].endpoints)
    assert len(parts) == 2 and port_shift(state.service_ports[0]) == 1
    masks = {f.match_dict()['tcp_src'][1] for f in service_lb_flows(state, 'big')}
    assert masks and all(mask & 0b11 == 0 for mask in masks), masks  # not bits 0-1
    group_of = {(e.ip, e.port): i for i, part in enumerate(parts) for e in part}
    lab = Lab(state)
    node_dpids = {wiring.node_dpid(node): node.name for node in CLUSTER.nodes}
    reached = {}
    for port in range(33000, 33000 + 2 * 300, 2):
        trip = lab.send(lab.packet(EXTERNAL_1, BIG_IP, 80, sport=port))
        node = next(node_dpids[d] for d in trip.dpids if d in node_dpids)
        got = trip.outcome[2]
        reached.setdefault(node, set()).add(group_of[(got['ipv4_dst'], got['tcp_dst'])])
        assert node == CLUSTER.nodes[pick(port, 3, shift=1)].name, port
    assert reached == {node.name: {0, 1} for node in CLUSTER.nodes}, reached


def test_a_udp_load_balancer_picks_the_node_from_the_udp_source_port():
    svc = node_port_service('dns-lb', '10.96.0.94', dict(DNS, nodePort=30094))
    svc['spec']['type'] = 'LoadBalancer'
    svc['status'] = {'loadBalancer': {'ingress': [{'ip': '198.51.100.30', 'ipMode': 'VIP'}]}}
    objs = lb_objects()
    objs['Service'].append(svc)
    objs['EndpointSlice'].append(endpoint_slice(
        'dns-lb', [DNS_EP], (WEB_1, 'control-plane', True), (WEB_2, 'worker-1', True)))
    state = ClusterState.from_objects(CLUSTER, objs)
    flows = service_lb_flows(state, 'dns-lb')
    assert flows and all('udp_src' in f.match_dict() for f in flows)
    lab = Lab(state)
    node_dpids = {wiring.node_dpid(node): node.ip for node in CLUSTER.nodes}
    for port in range(40000, 40012, 2):
        trip = lab.send(lab.packet(EXTERNAL_1, '198.51.100.30', 53, proto='udp', sport=port))
        assert receiver(lab, trip) in (WEB_1, WEB_2), port
        first_node = next(node_dpids[d] for d in trip.dpids if d in node_dpids)
        assert first_node == CLUSTER.nodes[pick(port, 3)].ip, port
