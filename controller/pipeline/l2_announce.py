"""A bare-metal node on its LAN: the ARP answers of its uplink, and MetalLB's addresses.

On bare metal (``cloud: none``) the router resolves addresses on the nodes' network
with real ARP (controller/pipeline/lan_switch.py). A node bridge's uplink is the node's
network card there, and its MAC the node's (``wiring.router_mac(node.ip)``):

* Classifier sends an ARP request that comes in by the uplink to ARPResponder when it
  asks for the node's own address, or for an address this node's MetalLB speaker
  announces (``state.announced``, from the speakers: topo/metallb.py). Every other one
  is dropped: exactly one node answers for a MetalLB address, the elected one;
* ARPResponder answers it with the uplink's MAC, out of the uplink.

``lb_ip_fronts`` is kube-proxy's handling of a load balancer address on a node
(KUBE-EXT): with ``externalTrafficPolicy: Cluster`` every endpoint, masqueraded as the
node; with ``Local`` the node's own endpoints, the client's address kept (the node's
pods and the node itself reach every endpoint). Written here, for the bare-metal
profile only, because MetalLB's traffic arrives at a node addressed to the load
balancer address itself (a cloud load balancer DNATs to NodeIP:NodePort first).
"""

from __future__ import annotations

from controller.flows import Move, Output, SetField, flow
from controller.pipeline.tables import (CT_MARK_NODE_MASQ, ETH_ARP, ETH_IP, PRIORITY_HIGH,
                                        PRIORITY_NODEPORT_FROM_NODE, PRIORITY_NORMAL,
                                        REG0_LOCAL_ORIGIN, T)
from services import wiring


def uplink_arp_classifier(ctx) -> list:
    """Classifier: ARP requests from the LAN for this node's address and the addresses
    its speaker announces."""
    if not ctx.state.cluster.bare_metal:
        return []
    node = ctx.node
    wanted = [(node.ip, ctx.node_owner)] + [
        (ip, f'metallb speaker: service {svc}')
        for ip, svc in sorted(ctx.state.announced.get(node.name, {}).items())]
    return [flow(T['Classifier'], PRIORITY_NORMAL,
                 {'in_port': wiring.UPLINK_PORT, 'eth_type': ETH_ARP, 'arp_op': 1,
                  'arp_tpa': ip}, goto=T['ARPResponder'], owner=owner)
            for ip, owner in wanted]


def uplink_arp_responder(ctx) -> list:
    """ARPResponder: a request from the LAN is answered with the uplink's MAC."""
    if not ctx.state.cluster.bare_metal:
        return []
    mac = ctx.uplink_mac
    actions = (
        Move('eth_src', 'eth_dst', 48), SetField('eth_src', mac),
        SetField('arp_op', 2), Move('arp_sha', 'arp_tha', 48),
        SetField('arp_sha', mac), Move('arp_tpa', 'reg2', 32),
        Move('arp_spa', 'arp_tpa', 32), Move('reg2', 'arp_spa', 32), Output('in_port'),
    )
    return [flow(T['ARPResponder'], PRIORITY_HIGH,
                 {'in_port': wiring.UPLINK_PORT, 'eth_type': ETH_ARP, 'arp_op': 1},
                 actions, owner=ctx.node_owner)]


def lb_ip_fronts(state, node, front) -> None:
    """Per Service port with a load balancer address, on a bare-metal node: ``front``
    (node_switch.service_fronts' maker) for the address and port."""
    if not state.cluster.bare_metal:
        return
    for sp in state.service_ports:
        if not sp.lb_ip:
            continue
        l4_dst = 'tcp_dst' if sp.protocol == 'TCP' else 'udp_dst'
        match = {'eth_type': ETH_IP, 'ip_proto': sp.proto_number, 'ipv4_dst': sp.lb_ip,
                 l4_dst: sp.port}
        local = sp.external_local
        front(match, sp, sp.local_endpoints(node.name) if local else sp.endpoints,
              f'{sp.key}/loadbalancer' + ('@' + node.name if local else ''),
              mark=None if local else CT_MARK_NODE_MASQ, affinity=sp.affinity_timeout)
        if local:
            front(dict(match, reg0=(REG0_LOCAL_ORIGIN, REG0_LOCAL_ORIGIN)), sp,
                  sp.endpoints, f'{sp.key}/loadbalancer-from-node',
                  priority=PRIORITY_NODEPORT_FROM_NODE)
