"""A bare-metal cluster's flows (``cloud: none``), walked on the fake switches: the two
LANs around the router host, a node answering ARP on its uplink for its address and for
what its MetalLB speaker announces, and kube-proxy's handling of a MetalLB address on the
node that receives it (services/wiring.py, controller/pipeline/lan_switch.py,
l2_announce.py)."""

import pytest

from controller.pipeline import desired
from controller.state import ClusterState
from services import wiring
from services.cluster import default_cluster, load_cluster
from tests.unit.flowsim import Lab, arp_request, tcp, walk, walk_all

BARE = load_cluster('cloud: none\n', 'cluster.yaml')
CP, W1, W2 = BARE.nodes
LB_IP, LOCAL_IP = '10.128.0.200', '10.128.0.201'
ROUTER_LAN_MAC = wiring.router_mac(BARE.lan_gateway)
ROUTER_EXT_MAC = wiring.router_mac(BARE.external_gateway)
CLIENT = '203.0.113.10'
PODS = [('web-1', 'worker-1', '192.168.2.10'), ('web-2', 'worker-2', '192.168.3.10')]


def lb(name, ip, local=False):
    return {'metadata': {'name': name, 'namespace': 'default'},
            'spec': {'type': 'LoadBalancer', 'clusterIP': f'10.96.0.{20 + len(name)}',
                     'externalTrafficPolicy': 'Local' if local else 'Cluster',
                     'ports': [{'name': 'http', 'port': 80, 'targetPort': 8080,
                                'nodePort': 30080 + len(name), 'protocol': 'TCP'}]},
            'status': {'loadBalancer': {'ingress': [{'ip': ip}]}}}


def objects(announced):
    slices = [{'metadata': {'name': f'{name}-x', 'namespace': 'default',
                            'labels': {'kubernetes.io/service-name': name}},
               'ports': [{'name': 'http', 'port': 8080, 'protocol': 'TCP'}],
               'endpoints': [{'addresses': [ip], 'nodeName': node,
                              'conditions': {'ready': True}}
                             for _, node, ip in PODS if name == 'web' or node == 'worker-2']}
              for name in ('web', 'solo')]
    return {'Pod': [{'metadata': {'name': n, 'namespace': 'default'},
                     'spec': {'nodeName': node}, 'status': {'podIP': ip}}
                    for n, node, ip in PODS],
            'Service': [lb('web', LB_IP), lb('solo', LOCAL_IP, local=True)],
            'EndpointSlice': slices,
            'L2Announcement': [{'metadata': {'name': node}, 'status': {'addresses': [
                {'ip': ip, 'service': svc} for ip, svc in ips.items()]}}
                for node, ips in announced.items()]}


ANNOUNCED = {'worker-1': {LB_IP: 'default/web'}, 'worker-2': {LOCAL_IP: 'default/solo'}}
STATE = ClusterState.from_objects(BARE, objects(ANNOUNCED))


def config(dpid, state=STATE):
    return desired(state, dpid)


def router_asks(ip):
    """The router's ARP request for ``ip`` on the nodes' LAN."""
    return arp_request(ROUTER_LAN_MAC, BARE.lan_gateway, ip)


def answers(ip, state=STATE) -> dict:
    """Node name -> the reply its bridge sends when the router asks for ``ip``: the
    underlay floods the request to every uplink, each bridge answers or not."""
    flooded = walk_all(config(wiring.UNDERLAY_DPID, state), router_asks(ip),
                       wiring.UNDERLAY_EXTERNAL_PORT)
    assert sorted(port for _, port, _ in flooded) == [n.index for n in BARE.nodes]
    out = {}
    for node in BARE.nodes:
        got = walk(config(wiring.node_dpid(node), state), router_asks(ip),
                   wiring.UPLINK_PORT).outcome
        if got[0] == 'output':
            assert got[1] == wiring.UPLINK_PORT
            out[node.name] = got[2]
    return out


def test_the_bare_metal_lab_has_no_cloud_edge():
    assert [name for name, _ in wiring.all_bridges(BARE)] == [
        'kl-n1', 'kl-n2', 'kl-n3', 'kl-ul', 'kl-ex']
    assert wiring.EDGE_BRIDGE in [n for n, _ in wiring.all_bridges(default_cluster())]


@pytest.mark.parametrize('ip, owner', [(LB_IP, 'worker-1'), (LOCAL_IP, 'worker-2'),
                                       (W2.ip, 'worker-2'), (CP.ip, 'control-plane')])
def test_exactly_one_node_answers_the_router_with_its_uplink_mac(ip, owner):
    replies = answers(ip)
    assert list(replies) == [owner]
    reply = replies[owner]
    mac = wiring.router_mac(BARE.node(owner).ip)
    assert (reply['arp_op'], reply['arp_sha'], reply['arp_spa'], reply['eth_src']) == (
        2, mac, ip, mac)
    assert (reply['arp_tha'], reply['arp_tpa'], reply['eth_dst']) == (
        ROUTER_LAN_MAC, BARE.lan_gateway, ROUTER_LAN_MAC)
    # The reply crosses the underlay to the router's port only.
    back = walk(config(wiring.UNDERLAY_DPID), reply, BARE.node(owner).index).outcome
    assert back[:2] == ('output', wiring.UNDERLAY_EXTERNAL_PORT)


def test_an_address_nobody_announces_gets_no_answer():
    assert answers('10.128.0.240') == {}


def test_when_the_announcement_moves_the_answer_moves_with_it():
    moved = ClusterState.from_objects(BARE, objects({'worker-2': {LB_IP: 'default/web'}}))
    assert list(answers(LB_IP, moved)) == ['worker-2']


def test_a_gratuitous_arp_from_a_node_reaches_the_router_and_is_answered_by_nobody():
    garp = arp_request(wiring.router_mac(W1.ip), LB_IP, LB_IP)
    garp['eth_dst'] = wiring.BROADCAST
    flooded = walk_all(config(wiring.UNDERLAY_DPID), garp, W1.index)
    assert sorted(port for _, port, _ in flooded) == [CP.index, W2.index,
                                                      wiring.UNDERLAY_EXTERNAL_PORT]
    for node in (CP, W2):
        assert walk(config(wiring.node_dpid(node)), garp,
                    wiring.UPLINK_PORT).outcome[0] == 'drop'


def from_router(dst_ip, dst_mac):
    return tcp(CLIENT, dst_ip, 40000, 80, ROUTER_LAN_MAC, dst_mac)


def test_the_announcing_node_balances_a_cluster_policy_address_and_masquerades():
    for bucket, want in ((0, '192.168.2.10'), (1, '192.168.3.10')):
        trip = Lab(STATE).travel(wiring.node_dpid(W1), from_router(LB_IP, wiring.router_mac(W1.ip)),
                          wiring.UPLINK_PORT, bucket=bucket)
        kind, _, got = trip.outcome
        assert kind == 'output' and got['ipv4_dst'] == want
        assert got['ipv4_src'] == W1.ip            # Cluster: masqueraded as the node


def test_a_local_policy_address_keeps_the_client_on_its_announcing_node():
    trip = Lab(STATE).travel(wiring.node_dpid(W2),
                             from_router(LOCAL_IP, wiring.router_mac(W2.ip)),
                             wiring.UPLINK_PORT)
    kind, _, got = trip.outcome
    assert kind == 'output' and (got['ipv4_dst'], got['ipv4_src']) == ('192.168.3.10',
                                                                       CLIENT)


def test_a_node_sends_what_leaves_the_cluster_to_the_routers_lan_interface():
    lab = Lab(STATE)
    trip = lab.send(lab.packet('192.168.2.10', CLIENT, 80))
    kind, port, got = trip.outcome
    assert (trip.dpids[-1], port) == (wiring.UNDERLAY_DPID, wiring.UNDERLAY_EXTERNAL_PORT)
    assert (got['eth_dst'], got['ipv4_src']) == (ROUTER_LAN_MAC, W1.ip)


def client_arp(j, tpa, spa=None):
    client = BARE.clients[j - 1]
    return arp_request(wiring.mac_for(client.ip), spa or client.ip, tpa)


def test_the_external_lan_carries_real_arp_between_the_clients_and_the_router():
    ex = config(wiring.EXTERNAL_DPID)
    flooded = walk_all(ex, client_arp(1, BARE.external_gateway), wiring.client_port(1))
    assert sorted(p for _, p, _ in flooded) == [wiring.EXTERNAL_UPLINK_PORT,
                                                wiring.client_port(2)]
    reply = arp_request(ROUTER_EXT_MAC, BARE.external_gateway, BARE.clients[0].ip, op=2)
    reply['eth_dst'] = wiring.mac_for(BARE.clients[0].ip)
    assert walk(ex, reply, wiring.EXTERNAL_UPLINK_PORT).outcome[:2] == (
        'output', wiring.client_port(1))


def test_a_client_may_not_claim_another_address_on_the_external_lan():
    ex = config(wiring.EXTERNAL_DPID)
    spoof = client_arp(1, BARE.external_gateway, spa=BARE.clients[1].ip)
    assert walk_all(ex, spoof, wiring.client_port(1))[0][0] == 'drop'
    pkt = tcp(BARE.clients[1].ip, LB_IP, 1, 80, wiring.mac_for(BARE.clients[0].ip),
              ROUTER_EXT_MAC)
    assert walk(ex, pkt, wiring.client_port(1)).outcome[0] == 'drop'


def test_the_cloud_profile_has_none_of_it():
    cloud = ClusterState.from_objects(default_cluster(), objects(ANNOUNCED))
    flows = [f for _, dpid in wiring.all_bridges(cloud.cluster)
             for f in desired(cloud, dpid).flows]
    assert not [f for f in flows if f.owner.startswith('metallb')]
    assert not [f for f in flows if 'arp_tpa' in dict(f.match) and
                dict(f.match).get('in_port') == wiring.UPLINK_PORT]


def test_the_trace_crosses_the_router_to_the_announcing_node():
    from kubelab.inspect.router_hop import RouterHop
    hop = RouterHop(BARE, STATE, pid=None)             # no router to ask: who answers ARP
    out, port, fields, line = hop.forward(wiring.EXTERNAL_BRIDGE, {
        'nw_src': CLIENT, 'nw_dst': LB_IP, 'nw_ttl': '64', 'dl_dst': ROUTER_EXT_MAC})
    assert (out, port) == (wiring.UNDERLAY_BRIDGE, wiring.UNDERLAY_EXTERNAL_PORT)
    assert (fields['dl_src'], fields['dl_dst'], fields['nw_ttl']) == (
        ROUTER_LAN_MAC, wiring.router_mac(W1.ip), '63')
    assert 'answered by node worker-1 (MetalLB speaker, service default/web)' in line
    back = hop.forward(wiring.UNDERLAY_BRIDGE, {'nw_dst': CLIENT, 'nw_ttl': '64'})
    assert back[:2] == (wiring.EXTERNAL_BRIDGE, wiring.EXTERNAL_UPLINK_PORT)
    assert back[2]['dl_dst'] == wiring.mac_for(CLIENT)
    assert hop.forward(wiring.EXTERNAL_BRIDGE, {'nw_dst': '192.168.2.10'}) is None
