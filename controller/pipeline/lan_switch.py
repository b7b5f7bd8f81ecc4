"""A bare-metal cluster's two LANs (``cloud: none``): the nodes' network and the external
network, with the router host between them (services/wiring.py).

Both switches forward as an Ethernet segment does, from a static table: a frame to a
known MAC leaves by that host's port, a broadcast (an ARP request, a gratuitous ARP)
by every other port. There is no MAC learning and no NORMAL action: the lab knows every
MAC (they are derived from addresses), and a host's port stays where its cable is.
ARP itself is real here: the router resolves the nodes and MetalLB's addresses, the
clients resolve the router, each answered by the owner (a node's answers are its
bridge's flows: node_switch.py's ARPResponder).

* ``lan_underlay``: the nodes' uplinks and the router's interface on the nodes'
  network, one table (as the cloud profile's underlay);
* ``lan_external``: the clients, each port guarded (a client sends only from its own
  MAC and address, IP and ARP alike), and the router's external interface.
"""

from __future__ import annotations

from controller.flows import Output, SwitchConfig, flow
from controller.pipeline.tables import (ETH_ARP, ETH_IP, PRIORITY_FALLBACK, PRIORITY_MISS,
                                        PRIORITY_NORMAL, T)
from services import wiring


def _flood(table: int, ports: dict, owner: str) -> list:
    """A broadcast from each port goes out of every other one."""
    return [flow(table, PRIORITY_NORMAL, {'in_port': port, 'eth_dst': wiring.BROADCAST},
                 tuple(Output(other) for other in sorted(ports) if other != port),
                 owner=owner)
            for port in sorted(ports)]


def lan_underlay(cluster) -> SwitchConfig:
    """The nodes' network: each node's uplink MAC, the router's, and broadcasts."""
    ports = {n.index: (wiring.router_mac(n.ip), f'node {n.name}') for n in cluster.nodes}
    ports[wiring.UNDERLAY_EXTERNAL_PORT] = (wiring.router_mac(cluster.lan_gateway),
                                            'router')
    flows = [flow(0, PRIORITY_FALLBACK, {'eth_dst': mac}, (Output(port),), owner=owner)
             for port, (mac, owner) in sorted(ports.items())]
    flows += _flood(0, ports, 'the nodes\' LAN')
    flows.append(flow(0, PRIORITY_MISS, owner='underlay'))
    return SwitchConfig(flows=flows)


def lan_external(cluster) -> SwitchConfig:
    """The external network: guarded client ports, the router's port, the MAC table."""
    ports = {wiring.EXTERNAL_UPLINK_PORT: (wiring.router_mac(cluster.external_gateway),
                                           None, 'router')}
    for j, client in enumerate(cluster.clients, start=1):
        ports[wiring.client_port(j)] = (wiring.mac_for(client.ip), client.ip,
                                        f'host {client.name}')
    flows = [flow(T['Classifier'], PRIORITY_MISS, owner='spoof guard'),
             flow(T['Classifier'], PRIORITY_NORMAL, {'in_port': wiring.EXTERNAL_UPLINK_PORT},
                  goto=T['Output'], owner='router')]
    for port, (mac, ip, owner) in sorted(ports.items()):
        if ip is not None:
            flows += [flow(T['Classifier'], PRIORITY_NORMAL,
                           {'in_port': port, 'eth_type': ETH_IP, 'eth_src': mac,
                            'ipv4_src': ip}, goto=T['Output'], owner=owner),
                      flow(T['Classifier'], PRIORITY_NORMAL,
                           {'in_port': port, 'eth_type': ETH_ARP, 'eth_src': mac,
                            'arp_spa': ip, 'arp_sha': mac}, goto=T['Output'], owner=owner)]
        flows.append(flow(T['Output'], PRIORITY_FALLBACK, {'eth_dst': mac}, (Output(port),),
                          owner=owner))
    flows += _flood(T['Output'], {p: v for p, v in ports.items()}, 'the external LAN')
    flows.append(flow(T['Output'], PRIORITY_MISS, owner='output'))
    return SwitchConfig(flows=flows)
