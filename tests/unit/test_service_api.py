"""The Service API beyond ClusterIP and NodePort, walked through the pipeline: load
balancer addresses and external IPs caught on every node (kube-proxy's KUBE-EXT), the
Local policies' per-node fallback to terminating endpoints, loadBalancerSourceRanges
for in-cluster clients, the labels with which kube-proxy leaves a Service alone,
ExternalName, and the external router's route to an external IP.

Packets go through fake switches (tests/unit/flowsim.py) as in test_pipeline.py, whose
cluster (three nodes, a client pod on control-plane and one on worker-2) and helpers
this module reuses; each case says which endpoint gets the connection and which source
address it sees.
"""

import pytest

from controller.pipeline import desired
from controller.pipeline.shared import group_id
from controller.state import ClusterState
from services import wiring
from services.endpoints import local_endpoint_addresses
from tests.unit.flowsim import Lab, answer, l4
from tests.unit.test_pipeline import (CLIENT, CLIENT_W2, CLUSTER, CP, EXTERNAL_1, EXTERNAL_2,
                                      HTTP, HTTP_EP, W1, W2, WEB_1, WEB_2, check_reply,
                                      endpoint_slice, objects, receiver, send, service,
                                      switches)

LB_VIP, LBL_VIP, EXT_VIP, EXTL_VIP, TERM_VIP, RANGED_VIP, OWNED_VIP = (
    f'10.96.1.{i}' for i in range(1, 8))
LB_IP, LBL_IP, RANGED_IP = '198.51.100.5', '198.51.100.6', '198.51.100.7'
EXT_IP, EXTL_IP = '192.0.2.10', '192.0.2.11'
LB_NP, LBL_NP, TERM_NP, RANGED_NP = 31001, 31002, 31003, 31004
SERVING_TERMINATING = {'ready': False, 'serving': True, 'terminating': True}
BOTH = [(WEB_1, 'control-plane', True), (WEB_2, 'worker-1', True)]


def typed(name, vip, svc_type, node_port=None, lb_ip=None, **spec):
    svc = service(name, vip, dict(HTTP, nodePort=node_port) if node_port else HTTP)
    svc['spec'].update(type=svc_type, **spec)
    if lb_ip:
        svc['status'] = {'loadBalancer': {'ingress': [{'ip': lb_ip}]}}
    return svc


def api_objects():
    objs = objects()
    owned = service('owned', OWNED_VIP, HTTP)
    owned['metadata']['labels'] = {'service.kubernetes.io/service-proxy-name': 'other'}
    objs['Service'] = [
        typed('lb', LB_VIP, 'LoadBalancer', LB_NP, LB_IP),
        typed('lbl', LBL_VIP, 'LoadBalancer', LBL_NP, LBL_IP, externalTrafficPolicy='Local'),
        typed('ext', EXT_VIP, 'ClusterIP', externalIPs=[EXT_IP]),
        typed('extl', EXTL_VIP, 'ClusterIP', externalIPs=[EXTL_IP],
              externalTrafficPolicy='Local'),
        typed('term', TERM_VIP, 'NodePort', TERM_NP, externalTrafficPolicy='Local'),
        typed('ranged', RANGED_VIP, 'LoadBalancer', RANGED_NP, RANGED_IP,
              loadBalancerSourceRanges=[f'{EXTERNAL_1}/32', '192.168.3.0/24']),
        owned,
        {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': 'alias'},
         'spec': {'type': 'ExternalName', 'externalName': 'lb.default.svc.cluster.local',
                  'ports': [HTTP]}},
    ]
    objs['EndpointSlice'] = [endpoint_slice(name, [HTTP_EP], *BOTH)
                             for name in ('lb', 'lbl', 'ext', 'extl', 'ranged', 'owned')]
    # term: worker-1's only endpoint is terminating but still serving.
    objs['EndpointSlice'].append(endpoint_slice(
        'term', [HTTP_EP], (WEB_1, 'control-plane', True),
        (WEB_2, 'worker-1', SERVING_TERMINATING)))
    return objs


STATE = ClusterState.from_objects(CLUSTER, api_objects())


@pytest.fixture
def lab():
    return Lab(STATE)


# 'seen': the source address the endpoint sees.
CASES = [
    {'name': 'pod to a LoadBalancer address, Cluster policy: masqueraded as its node',
     'src': CLIENT, 'dst': LB_IP, 'port': 80, 'bucket': 1, 'want': f'{WEB_2}:8080',
     'seen': CP.ip, 'path': ['control-plane', 'underlay', 'worker-1']},
    {'name': 'pod to a LoadBalancer address, endpoint on its own node', 'src': CLIENT,
     'dst': LB_IP, 'port': 80, 'bucket': 0, 'want': f'{WEB_1}:8080', 'seen': CP.ip,
     'path': ['control-plane']},
    {'name': 'pod on a node without endpoints to a Local LoadBalancer address: any '
             'endpoint, its own address kept', 'src': CLIENT_W2, 'dst': LBL_IP,
     'port': 80, 'bucket': 1, 'want': f'{WEB_2}:8080', 'seen': CLIENT_W2,
     'path': ['worker-2', 'underlay', 'worker-1']},
    {'name': 'node to a Local LoadBalancer address: any endpoint', 'src': W2.ip,
     'dst': LBL_IP, 'port': 80, 'bucket': 0, 'want': f'{WEB_1}:8080', 'seen': W2.ip,
     'path': ['worker-2', 'underlay', 'control-plane']},
    {'name': 'pod to an external IP: caught on its own node', 'src': CLIENT_W2,
     'dst': EXT_IP, 'port': 80, 'bucket': 0, 'want': f'{WEB_1}:8080', 'seen': W2.ip,
     'path': ['worker-2', 'underlay', 'control-plane']},
    {'name': 'external client to an external IP: the router sends it to worker-1',
     'src': EXTERNAL_1, 'dst': EXT_IP, 'port': 80, 'bucket': 0, 'want': f'{WEB_1}:8080',
     'seen': W1.ip, 'path': ['external', 'underlay', 'worker-1', 'underlay',
                             'control-plane']},
    {'name': "external client to a Local external IP: worker-1's own endpoint",
     'src': EXTERNAL_2, 'dst': EXTL_IP, 'port': 80, 'want': f'{WEB_2}:8080',
     'seen': EXTERNAL_2, 'path': ['external', 'underlay', 'worker-1']},
    {'name': "Local NodePort on a node whose only endpoint is terminating: that one",
     'src': EXTERNAL_1, 'dst': W1.ip, 'port': TERM_NP, 'want': f'{WEB_2}:8080',
     'seen': EXTERNAL_1, 'path': ['external', 'underlay', 'worker-1']},
    {'name': 'Local NodePort on a node with a ready endpoint: that one', 'src': EXTERNAL_1,
     'dst': CP.ip, 'port': TERM_NP, 'want': f'{WEB_1}:8080', 'seen': EXTERNAL_1,
     'path': ['external', 'underlay', 'control-plane']},
    {'name': 'pod in a source range to its LoadBalancer address', 'src': CLIENT_W2,
     'dst': RANGED_IP, 'port': 80, 'bucket': 1, 'want': f'{WEB_2}:8080', 'seen': W2.ip,
     'path': ['worker-2', 'underlay', 'worker-1']},
]


@pytest.mark.parametrize('case', CASES, ids=[c['name'] for c in CASES])
def test_traffic_arrives_where_kube_proxy_sends_it(lab, case):
    _, trip = send(lab, case)
    assert trip.dpids == switches(case['path'])
    got = trip.outcome[2]
    host = receiver(lab, trip)
    assert f'{host}:{l4(got)[1]}' == case['want']
    assert got['ipv4_src'] == case['seen']


@pytest.mark.parametrize('case', CASES, ids=[c['name'] for c in CASES])
def test_the_answer_comes_from_the_address_called(lab, case):
    host = check_reply(lab, case)
    for bucket in (0, 1):                 # the rest of the connection: the same endpoint
        _, more = send(lab, case, flags='A', bucket=bucket)
        assert receiver(lab, more) == host


DROPPED = [
    # Not in loadBalancerSourceRanges: kube-proxy's firewall drops pods' connections too.
    {'name': 'pod outside the source ranges', 'src': CLIENT, 'dst': RANGED_IP, 'port': 80},
    # kube-proxy leaves the Service alone: no flow for its ClusterIP, no reject either.
    {'name': 'a Service another proxy owns', 'src': CLIENT, 'dst': OWNED_VIP, 'port': 80},
]


def test_no_local_endpoint_for_a_local_external_ip_is_a_drop():
    # externalTrafficPolicy Local and no endpoint on worker-1: the external client's
    # connection is dropped there, as at a NodePort.
    objs = api_objects()
    [extl] = [s for s in objs['EndpointSlice'] if s['metadata']['name'] == 'extl-abcde']
    extl['endpoints'] = [e for e in extl['endpoints'] if e['nodeName'] != 'worker-1']
    lab = Lab(ClusterState.from_objects(CLUSTER, objs))
    trip = lab.send(lab.packet(EXTERNAL_1, EXTL_IP, 80))
    assert trip.dpids[-1] == wiring.node_dpid(W1)
    assert trip.outcome == ('drop', 'ServiceLB')


@pytest.mark.parametrize('case', DROPPED, ids=lambda c: c['name'])
def test_traffic_that_kube_proxy_would_not_deliver_is_dropped(lab, case):
    _, trip = send(lab, case)
    assert trip.outcome[0] == 'drop', trip.outcome
    assert trip.dpids == [wiring.node_dpid(CP)]


def test_the_load_balancer_address_shares_the_node_ports_group():
    # KUBE-EXT: the NodePort and the load balancer address jump to one chain.
    config = desired(STATE, wiring.node_dpid(CP))
    gid = group_id('default/lb/tcp/http/nodeport', set())
    users = [f for f in config.flows if any(getattr(a, 'group_id', None) == gid
                                            for a in f.actions)]
    assert sorted(f.match_dict()['ipv4_dst'] for f in users) == [CP.ip, LB_IP]
    assert [g.group_id for g in config.groups].count(gid) == 1


def test_a_service_kube_proxy_leaves_alone_has_no_flow_on_any_node():
    owned = [sp for sp in STATE.service_ports if sp.service == 'owned']
    assert owned and not any(sp.proxied for sp in owned)
    for node in CLUSTER.nodes:
        config = desired(STATE, wiring.node_dpid(node))
        assert not [f for f in config.flows if 'default/owned' in f.owner]
    # Without the label, the same Service is kube-proxy's again.
    objs = api_objects()
    [svc] = [s for s in objs['Service'] if s['metadata']['name'] == 'owned']
    svc['metadata']['labels'] = {}
    lab = Lab(ClusterState.from_objects(CLUSTER, objs))
    trip = lab.send(lab.packet(CLIENT, OWNED_VIP, 80), bucket=0)
    assert receiver(lab, trip) == WEB_1


@pytest.mark.parametrize('label', ['service.kubernetes.io/service-proxy-name',
                                   'service.kubernetes.io/headless'])
def test_either_label_with_any_value_takes_the_service_from_kube_proxy(label):
    objs = api_objects()
    [svc] = [s for s in objs['Service'] if s['metadata']['name'] == 'lb']
    svc['metadata']['labels'] = {label: ''}
    state = ClusterState.from_objects(CLUSTER, objs)
    [lb] = [sp for sp in state.service_ports if sp.service == 'lb']
    assert lb.proxied is False
    # The cloud's load balancer is not kube-proxy: it still balances the address (to
    # NodePorts no node answers, as in a real cluster).
    edge = desired(state, wiring.EDGE_DPID)
    assert [f for f in edge.flows if f.match_dict().get('ipv4_dst') == LB_IP]


def test_an_external_name_service_has_no_flows():
    assert not [sp for sp in STATE.service_ports if sp.service == 'alias']


def test_the_external_router_routes_external_ips_to_the_first_worker():
    config = desired(STATE, wiring.EXTERNAL_DPID)
    routes = {f.match_dict()['ipv4_dst']: f for f in config.flows
              if f.owner.startswith('external IP')}
    assert sorted(routes) == [EXT_IP, EXTL_IP]
    assert wiring.external_ip_node(CLUSTER) == W1
    eth_dst = [a.value for a in routes[EXT_IP].actions if getattr(a, 'field', '') == 'eth_dst']
    assert eth_dst == [wiring.router_mac(W1.ip)]


def test_an_external_ip_in_a_lab_network_is_not_routed_from_outside():
    objs = api_objects()
    [svc] = [s for s in objs['Service'] if s['metadata']['name'] == 'ext']
    svc['spec']['externalIPs'] = ['203.0.113.77']       # the external subnet
    state = ClusterState.from_objects(CLUSTER, objs)
    config = desired(state, wiring.EXTERNAL_DPID)
    assert [f.match_dict()['ipv4_dst'] for f in config.flows
            if f.owner.startswith('external IP')] == [EXTL_IP]
    lab = Lab(state)          # pods still reach it: every node catches it
    trip = lab.send(lab.packet(CLIENT, '203.0.113.77', 80), bucket=1)
    assert receiver(lab, trip) == WEB_2


def test_the_local_fallback_is_per_node():
    slices = [s for s in api_objects()['EndpointSlice']
              if s['metadata']['name'] == 'term-abcde']
    local = local_endpoint_addresses(slices, ('http', 'TCP'))
    assert {node: [a.address for a in got] for node, got in local.items()} == {
        'control-plane': [WEB_1], 'worker-1': [WEB_2]}
    [term] = [sp for sp in STATE.service_ports if sp.service == 'term']
    assert [e.ip for e in term.endpoints] == [WEB_1]            # Cluster: ready ones only
    assert [e.ip for e in term.local_endpoints('worker-1')] == [WEB_2]
    assert term.local_endpoints('worker-2') == ()


def test_a_terminating_endpoint_that_stopped_serving_is_no_fallback():
    objs = api_objects()
    [term] = [s for s in objs['EndpointSlice'] if s['metadata']['name'] == 'term-abcde']
    term['endpoints'][1]['conditions'] = {'ready': False, 'serving': False,
                                          'terminating': True}
    lab = Lab(ClusterState.from_objects(CLUSTER, objs))
    trip = lab.send(lab.packet(EXTERNAL_1, W1.ip, TERM_NP))
    assert trip.outcome == ('drop', 'ServiceLB')


def test_a_reply_to_a_masqueraded_load_balancer_connection_is_un_natted_twice(lab):
    case = CASES[0]
    _, trip = send(lab, case)
    back = lab.send(answer(trip.outcome[2]), sender=WEB_2)
    got = back.outcome[2]
    assert (got['ipv4_src'], l4(got)[0]) == (LB_IP, 80)
    assert (got['ipv4_dst'], l4(got)[1]) == (CLIENT, 40000)


def test_a_gone_udp_endpoint_is_flushed_at_the_load_balancer_address_and_external_ips():
    from controller.pipeline.conntrack_cleanup import stale_udp_flushes
    objs = api_objects()
    dns = {'name': 'dns', 'port': 53, 'protocol': 'UDP', 'targetPort': 5353}
    [lb] = [s for s in objs['Service'] if s['metadata']['name'] == 'lb']
    lb['spec']['externalIPs'] = [EXT_IP + '0']
    lb['spec']['ports'] = [dict(dns, nodePort=31053)]
    [lb_slice] = [s for s in objs['EndpointSlice'] if s['metadata']['name'] == 'lb-abcde']
    lb_slice['ports'] = [{'name': 'dns', 'port': 5353, 'protocol': 'UDP'}]
    old = ClusterState.from_objects(CLUSTER, objs)
    lb_slice['endpoints'] = lb_slice['endpoints'][:1]
    new = ClusterState.from_objects(CLUSTER, objs)
    origs = {f.orig for f in stale_udp_flushes(old, new)}
    assert origs == {f'ct_nw_dst={LB_VIP},ct_nw_proto=17,ct_tp_dst=53',
                     f'ct_nw_dst={LB_IP},ct_nw_proto=17,ct_tp_dst=53',
                     f'ct_nw_dst={EXT_IP}0,ct_nw_proto=17,ct_tp_dst=53',
                     'ct_nw_proto=17,ct_tp_dst=31053'}
