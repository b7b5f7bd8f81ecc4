"""NetworkPolicy's flows (controller/pipeline/network_policy.py) driven by packets on the
fake switches of tests/unit/flowsim.py.

The cluster is upstream e2e's model on the default three nodes: namespaces x, y and z,
pods a (control-plane), b (worker-1) and c (worker-2) in each, labelled ``pod: a``...,
each serving ports 80 and 81 on TCP and UDP under the names ``serve-80-tcp``...; a
Service ``x/svc`` (ClusterIP and NodePort, Cluster policy) in front of x/b, and
``x/local`` (externalTrafficPolicy Local) too. Each test applies policies and checks
where a connection's first packet ends, and what happens to its answer.
"""

import re

import pytest
import yaml

from controller.flows import Conjunction, Ct
from controller.pipeline import desired, TABLE_NAMES
from controller.pipeline.network_policy import node_policy, port_masks, policy_keys
from controller.pipeline.tables import T, check_pipeline
from controller.state import ClusterState
from services import manifests
from services.cluster import default_cluster
from tests.unit.flowsim import Conntrack, Lab, answer

CLUSTER = default_cluster()
NODES = {'a': 'control-plane', 'b': 'worker-1', 'c': 'worker-2'}
NS_INDEX = {'x': 10, 'y': 20, 'z': 30}
POD_INDEX = {'a': (1, 0), 'b': (2, 0), 'c': (3, 0)}
EXTERNAL = '203.0.113.10'
NODE_IP = {'control-plane': '10.128.0.11', 'worker-1': '10.128.0.12',
           'worker-2': '10.128.0.13'}
SVC_VIP, LOCAL_VIP, NODE_PORT, LOCAL_NODE_PORT = '10.96.0.50', '10.96.0.51', 30080, 30081
POLICY_TABLES = tuple(T[name] for name in ('EgressRule', 'EgressDefaultRule', 'IngressRule',
                                           'IngressDefaultRule', 'PolicyVerdict'))


def ip(ns_pod: str) -> str:
    ns, name = ns_pod.split('/')
    return f'192.168.{POD_INDEX[name][0]}.{NS_INDEX[ns] + 1}'


def pod_object(ns: str, name: str, extra_labels=None, renumbered=None) -> dict:
    """``renumbered``: {port name: number} that differ from the model's."""
    ports = [{'name': f'serve-{p}-{proto.lower()}', 'containerPort': p, 'protocol': proto}
             for p in (80, 81) for proto in ('TCP', 'UDP')]
    for port in ports:
        port['containerPort'] = (renumbered or {}).get(port['name'], port['containerPort'])
    return {'metadata': {'name': name, 'namespace': ns,
                         'labels': dict({'pod': name}, **(extra_labels or {}))},
            'spec': {'nodeName': NODES[name], 'containers': [{'name': 'c', 'ports': ports}]},
            'status': {'podIP': ip(f'{ns}/{name}')}}


def services() -> list:
    def svc(name, vip, node_port, policy):
        return {'metadata': {'name': name, 'namespace': 'x'},
                'spec': {'type': 'NodePort', 'clusterIP': vip, 'externalTrafficPolicy': policy,
                         'ports': [{'name': 'http', 'port': 80, 'targetPort': 80,
                                    'nodePort': node_port, 'protocol': 'TCP'}]}}
    slices = [{'metadata': {'name': f'{name}-1', 'namespace': 'x',
                            'labels': {'kubernetes.io/service-name': name}},
               'ports': [{'name': 'http', 'port': 80, 'protocol': 'TCP'}],
               'endpoints': [{'addresses': [ip('x/b')], 'nodeName': 'worker-1',
                              'conditions': {'ready': True}}]}
              for name in ('svc', 'local')]
    return [svc('svc', SVC_VIP, NODE_PORT, 'Cluster'),
            svc('local', LOCAL_VIP, LOCAL_NODE_PORT, 'Local')], slices


def policy(text: str) -> dict:
    return manifests.validate(yaml.safe_load(text))


def state(*policies: str, labels=None, namespace_labels=None, ports=None) -> ClusterState:
    """The model with ``policies`` (YAML); ``labels``: extra labels per 'ns/pod',
    ``ports``: port names renumbered per 'ns/pod'."""
    labels, ports = labels or {}, ports or {}
    svcs, slices = services()
    namespaces = [{'metadata': {'name': ns, 'labels': dict(
        {'kubernetes.io/metadata.name': ns, 'ns': ns}, **(namespace_labels or {}).get(ns, {}))}}
        for ns in NS_INDEX]
    return ClusterState.from_objects(CLUSTER, {
        'Pod': [pod_object(ns, name, labels.get(f'{ns}/{name}'), ports.get(f'{ns}/{name}'))
                for ns in NS_INDEX for name in NODES],
        'Service': svcs, 'EndpointSlice': slices, 'Namespace': namespaces,
        'NetworkPolicy': [policy(p) for p in policies]})


def connect(lab: Lab, src: str, dst: str, port: int, proto: str = 'tcp') -> tuple:
    """Send the first packet of a connection from ``src`` (an address); (where it
    ended: the receiving host's address or the table that dropped it, the trip)."""
    trip = lab.send(lab.packet(src, dst, port, proto=proto))
    kind = trip.outcome[0]
    if kind == 'output':
        return lab.owner_of(trip.dpids[-1], trip.outcome[1]), trip
    return (f'drop:{trip.outcome[1]}' if kind == 'drop' else kind), trip


def reaches(st, src, dst, port=80, proto='tcp') -> bool:
    got, _ = connect(Lab(st), src, dst, port, proto)
    return got == dst


def policy_tables(trip) -> list:
    return [t for _, w in trip.hops for t in w.tables if t in (
        'EgressRule', 'EgressDefaultRule', 'IngressRule', 'IngressDefaultRule',
        'PolicyVerdict')]


DENY_X = '''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}}
'''
DENY_X_EGRESS = '''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: x}
spec: {podSelector: {}, policyTypes: [Egress]}
'''
ALLOW_Y_TO_A_80 = '''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: 80}]
'''


# ---------------------------------------------------------------- without policies
def test_without_policies_nothing_goes_through_the_policy_tables():
    st = state()
    _, trip = connect(Lab(st), ip('y/a'), ip('x/a'), 80)
    assert policy_tables(trip) == []
    for dpid in (1, 2, 3):
        assert not [f for f in desired(st, dpid).flows if f.table in POLICY_TABLES]


# ---------------------------------------------------------------- isolation
@pytest.mark.parametrize('src', ['y/a', 'y/b', 'z/c', 'x/b'])
def test_default_deny_drops_every_new_connection_to_the_namespace(src):
    got, trip = connect(Lab(state(DENY_X)), ip(src), ip('x/a'), 80)
    assert got == 'drop:PolicyVerdict'
    assert policy_tables(trip)[-3:] == ['IngressRule', 'IngressDefaultRule', 'PolicyVerdict']


def test_default_deny_leaves_other_namespaces_and_egress_alone():
    st = state(DENY_X)
    assert reaches(st, ip('x/a'), ip('y/b'), 81, 'udp')
    assert reaches(st, ip('y/a'), ip('z/c'))


def test_a_rule_admits_its_peers_on_its_port_and_nothing_else():
    st = state(DENY_X, ALLOW_Y_TO_A_80)
    assert reaches(st, ip('y/b'), ip('x/a'), 80)
    assert reaches(st, ip('y/a'), ip('x/a'), 80)
    assert not reaches(st, ip('y/b'), ip('x/a'), 81)
    assert not reaches(st, ip('y/b'), ip('x/a'), 80, 'udp')
    assert not reaches(st, ip('z/b'), ip('x/a'), 80)
    assert not reaches(st, ip('y/b'), ip('x/b'), 80)       # x/b: only deny-all


def test_the_rule_that_allowed_is_the_conj_id_flow_on_the_way():
    st = state(DENY_X, ALLOW_Y_TO_A_80)
    _, trip = connect(Lab(st), ip('y/b'), ip('x/a'), 80)
    owners = [owner for _, w in trip.hops for table, owner, _ in w.trace
              if table == 'IngressRule']
    assert owners == ['networkpolicy x/allow-y ingress[0]']


def test_the_reply_of_an_allowed_connection_passes_an_egress_deny():
    st = state(DENY_X_EGRESS, '''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: open, namespace: x}
spec:
  podSelector: {}
  ingress: [{}]
''')
    lab = Lab(st)
    got, there = connect(lab, ip('y/b'), ip('x/a'), 80)
    assert got == ip('x/a')
    back = lab.send(answer(there.outcome[2]), sender=ip('x/a'))
    assert lab.owner_of(back.dpids[-1], back.outcome[1]) == ip('y/b')
    assert policy_tables(back) == []                        # not judged: established
    # ... while x/a may open nothing itself.
    assert connect(lab, ip('x/a'), ip('y/b'), 80)[0] == 'drop:PolicyVerdict'


def test_egress_is_judged_on_the_endpoint_after_the_service_dnat():
    to_b = '''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-b, namespace: z}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80}]
'''
    lab = Lab(state(to_b))
    got, trip = connect(lab, ip('z/a'), SVC_VIP, 80)
    assert got == ip('x/b')
    assert 'EgressRule' in policy_tables(trip)
    lab = Lab(state(to_b.replace('pod: b}}}]', 'pod: c}}}]')))
    assert connect(lab, ip('z/a'), SVC_VIP, 80)[0] == 'drop:PolicyVerdict'


# ---------------------------------------------------------------- the source the pod sees
FROM_NODES = '''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-nodes, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{ipBlock: {cidr: 10.128.0.0/24}}]
'''
FROM_CLIENTS = FROM_NODES.replace('from-nodes', 'from-clients').replace(
    '10.128.0.0/24', '203.0.113.0/24')


@pytest.mark.parametrize('node', ['worker-1', 'worker-2'])
def test_a_cluster_node_port_is_judged_on_the_node_that_masqueraded_it(node):
    """worker-1 runs x/b itself (masqueraded, then delivered); worker-2 masquerades
    and sends it on: either way x/b sees the node's address."""
    got, _ = connect(Lab(state(FROM_NODES)), EXTERNAL, NODE_IP[node], NODE_PORT)
    assert got == ip('x/b')
    got, trip = connect(Lab(state(FROM_CLIENTS)), EXTERNAL, NODE_IP[node], NODE_PORT)
    assert got == 'drop:PolicyVerdict', trip


def test_a_local_node_port_is_judged_on_the_client():
    st = state(FROM_CLIENTS)
    got, _ = connect(Lab(st), EXTERNAL, NODE_IP['worker-1'], LOCAL_NODE_PORT)
    assert got == ip('x/b')
    got, _ = connect(Lab(state(FROM_NODES)), EXTERNAL, NODE_IP['worker-1'], LOCAL_NODE_PORT)
    assert got == 'drop:PolicyVerdict'


def test_the_pods_own_node_always_reaches_it_and_other_nodes_do_not():
    st = state(DENY_X)
    assert reaches(st, NODE_IP['worker-1'], ip('x/b'), 80)      # kubelet probes
    assert not reaches(st, NODE_IP['worker-2'], ip('x/b'), 80)


def test_a_pod_reaches_itself_through_its_service_under_a_default_deny():
    st = state(DENY_X)
    got, trip = connect(Lab(st), ip('x/b'), SVC_VIP, 80)
    assert got == ip('x/b')
    assert 'IngressRule' in policy_tables(trip)


# ---------------------------------------------------------------- every field
def test_ip_block_except_cuts_out_its_addresses():
    st = state(DENY_X, '''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: block, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.2.0/24]}}]
''')
    assert reaches(st, ip('y/a'), ip('x/c'))              # 192.168.1.x
    assert not reaches(st, ip('y/b'), ip('x/c'))          # 192.168.2.x: excepted
    assert reaches(st, ip('z/c'), ip('x/a'))              # 192.168.3.x


def test_pod_and_namespace_selector_in_one_peer_is_an_and_in_two_peers_an_or():
    both = '''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: both, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]
'''
    st = state(both)
    assert reaches(st, ip('y/b'), ip('x/a'))
    assert not reaches(st, ip('y/c'), ip('x/a'))
    assert not reaches(st, ip('z/b'), ip('x/a'))
    either = both.replace('{namespaceSelector: {matchLabels: {ns: y}}, podSelector',
                          '{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector')
    st = state(either)
    assert reaches(st, ip('y/c'), ip('x/a'))
    assert reaches(st, ip('x/b'), ip('x/a'))
    assert not reaches(st, ip('z/b'), ip('x/a'))


def test_the_namespace_name_label_selects_a_namespace():
    st = state(DENY_X, ALLOW_Y_TO_A_80.replace('{ns: y}', '{kubernetes.io/metadata.name: z}'))
    assert reaches(st, ip('z/c'), ip('x/a'))
    assert not reaches(st, ip('y/c'), ip('x/a'))


@pytest.mark.parametrize('direction', ['ingress', 'egress'])
def test_a_named_port_is_the_destination_pods_port_of_that_name(direction):
    """x/a names port 81 serve-80-tcp: the rule admits 81 there, 80 elsewhere."""
    peer = 'from' if direction == 'ingress' else 'to'
    st_policy = f'''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: named, namespace: x}}
spec:
  podSelector: {{}}
  policyTypes: [{direction.capitalize()}]
  {direction}:
  - {peer}: [{{namespaceSelector: {{}}}}]
    ports: [{{port: serve-80-tcp}}]
'''
    st = state(st_policy, ports={'x/a': {'serve-80-tcp': 81}})
    src, dst = (ip('y/c'), ip('x/a')) if direction == 'ingress' else (ip('x/b'), ip('x/a'))
    assert reaches(st, src, dst, 81)
    assert not reaches(st, src, dst, 80)
    src, dst = (ip('y/c'), ip('x/c')) if direction == 'ingress' else (ip('x/b'), ip('y/c'))
    assert reaches(st, src, dst, 80)
    assert not reaches(st, src, dst, 80, 'udp')


def test_a_port_range_admits_every_port_of_it():
    st = state(DENY_X, '''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 1000, endPort: 2000, protocol: UDP}]
''')
    for port in (1000, 1024, 1999, 2000):
        assert reaches(st, ip('y/a'), ip('x/b'), port, 'udp'), port
    for port in (999, 2001, 1500):
        assert not reaches(st, ip('y/a'), ip('x/b'), port, 'udp' if port != 1500 else 'tcp')


@pytest.mark.parametrize('low, high', [(80, 80), (1000, 2000), (0, 65535), (1, 65535),
                                       (32768, 60999), (5, 6)])
def test_port_masks_cover_exactly_the_range(low, high):
    masks = port_masks(low, high)
    covered = {p for p in range(65536) if any(p & m == v for v, m in masks)}
    assert covered == set(range(low, high + 1))


# ---------------------------------------------------------------- state
def forged_answer(lab, src, dst, port, proto='udp'):
    """What ``dst`` would send back on the reply tuple of ``src``'s connection to it
    (UDP: conntrack takes it as an answer if the connection exists, as new if not)."""
    pkt = answer(lab.packet(src, dst, port, proto=proto))
    where = lab.attachment(dst)
    return dict(pkt, eth_src=where.mac, eth_dst=where.gateway_mac)


def test_a_connection_no_service_balanced_is_not_committed_when_dropped():
    lab = Lab(state(DENY_X))
    got, _ = connect(lab, ip('y/b'), ip('x/b'), 80, 'udp')
    assert got == 'drop:PolicyVerdict'
    assert not [c for c in lab.conntrack.connections if c.orig[3] == ip('x/b')]
    # x/b sending to y/b from that port is then a new connection of its own (x/b is
    # not isolated for egress, y/b not for ingress): it passes, judged as new.
    back = lab.send(forged_answer(lab, ip('y/b'), ip('x/b'), 80), sender=ip('x/b'))
    assert lab.owner_of(back.dpids[-1], back.outcome[1]) == ip('y/b')


def test_a_dropped_service_connection_keeps_its_verdict_and_its_answer_is_dropped():
    """A Service's group commits (and DNATs) a connection before it is judged: the
    drop marks it, and what would answer it is dropped, not un-DNATed and let in."""
    lab = Lab(state(DENY_X))
    trip = lab.send(lab.packet(ip('y/b'), SVC_VIP, 80))
    assert trip.outcome[:2] == ('drop', 'PolicyVerdict')
    back = lab.send(forged_answer(lab, ip('y/b'), ip('x/b'), 80, 'tcp'), sender=ip('x/b'))
    assert back.outcome[:2] == ('drop', 'ConntrackState')
    assert back.hops[-1][1].trace[-1][1] == 'networkpolicy: answers of a dropped connection'


def test_a_retransmitted_syn_is_judged_again_under_the_new_policies():
    conntrack = Conntrack()
    got, _ = connect(Lab(state(DENY_X), conntrack), ip('y/b'), ip('x/a'), 80)
    assert got == 'drop:PolicyVerdict'
    lab = Lab(state(DENY_X, ALLOW_Y_TO_A_80), conntrack)
    got, there = connect(lab, ip('y/b'), ip('x/a'), 80)
    assert got == ip('x/a')
    back = lab.send(answer(there.outcome[2]), sender=ip('x/a'))
    assert lab.owner_of(back.dpids[-1], back.outcome[1]) == ip('y/b')


def test_a_retransmission_of_a_dropped_service_connection_is_judged_again():
    conntrack = Conntrack()
    lab = Lab(state(DENY_X), conntrack)
    assert lab.send(lab.packet(ip('y/b'), SVC_VIP, 80)).outcome[:2] == ('drop',
                                                                       'PolicyVerdict')
    lab = Lab(state(DENY_X, ALLOW_Y_TO_A_80.replace('pod: a', 'pod: b')), conntrack)
    there = lab.send(lab.packet(ip('y/b'), SVC_VIP, 80))
    assert lab.owner_of(there.dpids[-1], there.outcome[1]) == ip('x/b')
    back = lab.send(answer(there.outcome[2]), sender=ip('x/b'))
    assert lab.owner_of(back.dpids[-1], back.outcome[1]) == ip('y/b')
    kind, _, got = back.outcome
    assert (got['ipv4_src'], got['tcp_src']) == (SVC_VIP, 80)


def test_an_established_connection_outlives_the_policy_that_would_drop_it():
    conntrack = Conntrack()
    lab = Lab(state(), conntrack)
    got, there = connect(lab, ip('y/b'), ip('x/a'), 80)
    lab.send(answer(there.outcome[2]), sender=ip('x/a'))
    lab = Lab(state(DENY_X), conntrack)
    more = lab.send(lab.packet(ip('y/b'), ip('x/a'), 80, flags='A'))
    assert lab.owner_of(more.dpids[-1], more.outcome[1]) == ip('x/a')


# ---------------------------------------------------------------- the flows themselves
def test_flows_grow_with_the_sum_of_pods_peers_and_ports():
    ports = ', '.join(f'{{port: {p}}}' for p in range(1000, 1010))
    many = f'''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: many, namespace: x}}
spec:
  podSelector: {{}}
  ingress:
  - from: [{{namespaceSelector: {{}}}}]
    ports: [{ports}]
'''
    config = desired(state(many), 1)
    clauses = [f for f in config.flows if f.table == T['IngressRule']
               and any(isinstance(a, Conjunction) for a in f.actions)]
    # 3 pods of control-plane (x/a... only x/a is in x) + 9 peers + 10 ports
    assert len(clauses) == 1 + 9 + 10
    [conj_id_flow] = [f for f in config.flows if dict(f.match).get('conj_id')]
    assert conj_id_flow.owner == 'networkpolicy x/many ingress[0]'


def test_a_value_shared_by_two_rules_is_one_flow_with_two_conjunctions():
    st = state(ALLOW_Y_TO_A_80, ALLOW_Y_TO_A_80.replace('allow-y', 'allow-y2'))
    flows = [f for f in desired(st, 1).flows if f.table == T['IngressRule']]
    port_80 = [f for f in flows if dict(f.match).get('tcp_dst') == 80]
    assert len(port_80) == 1 and len(port_80[0].actions) == 2
    assert policy_keys(port_80[0].owner) == ['x/allow-y', 'x/allow-y2'] or \
        'allow-y2' in port_80[0].owner
    assert reaches(st, ip('y/b'), ip('x/a'))


def test_policy_flows_keep_to_the_declared_pipeline_and_the_nodes_zones():
    st = state(DENY_X, DENY_X_EGRESS, ALLOW_Y_TO_A_80, FROM_NODES)
    for dpid in (1, 2, 3):
        config = desired(st, dpid)
        check_pipeline(config)
        zones = {a.zone for f in config.flows for a in f.actions if isinstance(a, Ct)}
        assert zones <= {dpid, 1000 + dpid}
        used = {f.table for f in config.flows}
        assert set(POLICY_TABLES) <= used


def test_only_nodes_with_isolated_pods_get_policy_flows():
    st = state(ALLOW_Y_TO_A_80)             # isolates x/a, on control-plane only
    assert node_policy(st, CLUSTER.nodes[0]).active
    assert not node_policy(st, CLUSTER.nodes[1]).active
    assert not [f for f in desired(st, 2).flows if f.table in POLICY_TABLES]


def recirculations(trip) -> int:
    return sum(len(re.findall(r'ct\((?:commit,)?table=', text))
               for _, w in trip.hops for _, _, text in w.trace)


def test_the_policy_tables_add_no_recirculation_on_the_longest_path():
    """A pod's SYN to a NodePort on another node, to an endpoint on a third: the
    userspace datapath drops a packet at its seventh recirculation."""
    open_all = '''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: open, namespace: NS}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: [{}]
  egress: [{}]
'''
    plain = Lab(state())
    _, before = connect(plain, ip('z/a'), NODE_IP['worker-2'], NODE_PORT)
    lab = Lab(state(open_all.replace('NS', 'x'), open_all.replace('NS', 'z')))
    got, after = connect(lab, ip('z/a'), NODE_IP['worker-2'], NODE_PORT)
    assert got == ip('x/b')
    assert 'EgressRule' in policy_tables(after) and 'IngressRule' in policy_tables(after)
    assert recirculations(after) == recirculations(before)


def test_the_flows_render_as_ovs_ofctl_shows_them():
    config = desired(state(DENY_X, ALLOW_Y_TO_A_80), 1)
    lines = {f.to_ofctl(TABLE_NAMES) for f in config.flows}
    assert ('table=L3Forwarding,priority=240,ip,ct_state=+new+trk+dnat,nw_dst=192.168.1.11,'
            'reg1=0/1 actions=resubmit(,54)') in lines
    assert ('table=ServiceLB,priority=10,ip,nw_dst=192.168.1.11 '
            'actions=goto_table:IngressRule') in lines
    assert ('table=IngressDefaultRule,priority=200,ip,nw_dst=192.168.1.11 '
            'actions=set_field:2->reg1,goto_table:PolicyVerdict') in lines
    assert ('table=PolicyVerdict,priority=210,ip,ct_state=+trk+dnat,reg1=2/2 '
            'actions=ct(commit,zone=1,exec(set_field:0x2/0x2->ct_mark))') in lines
    assert any(line.startswith('table=IngressRule,priority=200,tcp,tp_dst=80 actions='
                               'conjunction(') for line in lines)


def test_the_policy_cookies_are_the_flows_a_policy_change_touches():
    """The Ryu shell purges the datapath's cache when one of these changes."""
    from controller.pipeline.network_policy import policy_cookies
    assert policy_cookies(desired(state(), 1)) == set()
    config = desired(state(DENY_X, ALLOW_Y_TO_A_80), 1)
    cookies = policy_cookies(config)
    tables = {f.table for f in config.flows if f.cookie in cookies}
    assert set(POLICY_TABLES) <= tables
    assert {T['ServiceLB'], T['L3Forwarding'], T['ConntrackState']} <= tables
    assert all(f.cookie not in cookies for f in config.flows
               if f.table == T['ServiceLB'] and not f.owner.startswith('networkpolicy'))
