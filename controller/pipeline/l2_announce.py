"""A bare-metal node on its LAN: the ARP answers of its uplink, and MetalLB's addresses.

On bare metal (``cloud: none``) the router resolves addresses on the nodes' network
with real ARP (controller/pipeline/lan_switch.py). A node bridge's uplink is the node's
network card there, and its MAC the node's (``wiring.router_mac(node.ip)``):

* Classifier sends an ARP request that comes in by the uplink to ARPResponder when it
  asks for the node's own address, or for an address this node's MetalLB speaker
  announces (``state.announced``, from the speakers: topo/metallb.py). Every other one
  is dropped: exactly one node answers for a MetalLB address, the elected one;
* ARPResponder answers it with the uplink's MAC, out of the uplink.

What arrives for a MetalLB address is then kube-proxy's, as on every node: ServiceLB
catches load balancer addresses (node_switch.py's ``external_fronts``, KUBE-EXT).
"""

from __future__ import annotations

from controller.flows import Move, Output, SetField, flow
from controller.pipeline.tables import ETH_ARP, PRIORITY_HIGH, PRIORITY_NORMAL, T
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
