"""The external network's switch: clients outside the cluster, the cloud load
balancer's health checker, and the router between them and the nodes.

It reuses the node bridge's Classifier (spoof guard), ARPResponder and L3Forwarding
tables: every client port may send only its own addresses, every ARP request is
answered with the router's MAC, and every packet is routed.

The router also has a route for every Service's ``externalIPs`` to one node
(``wiring.external_ip_node``, the first worker), as an administrator's static route
would send them: Kubernetes itself routes nothing to an external IP. Addresses inside
the lab's own networks are left to the routes of those networks.
"""

from __future__ import annotations

import ipaddress

from controller.flows import SwitchConfig, flow
from controller.pipeline.shared import arp_responder, port_guard, route
from controller.pipeline.tables import ETH_IP, PRIORITY_MISS, PRIORITY_NORMAL, T
from services import wiring


def external(cluster, external_ips=()) -> SwitchConfig:
    """The world outside the cluster: clients, and a router that reaches the node IPs,
    the load balancer pool (through the cloud edge) and ``external_ips`` (Services'
    ``spec.externalIPs``, through one node).

    Pod IPs and ClusterIPs are not routed here: the cluster is reachable from outside
    only through its nodes, its load balancers and its external IPs."""
    gw = cluster.external_gateway
    gw_mac = wiring.router_mac(gw)
    cfg = SwitchConfig()
    add = cfg.flows.extend
    add([flow(T['Classifier'], PRIORITY_NORMAL, {'in_port': wiring.EXTERNAL_UPLINK_PORT,
                                                 'eth_type': ETH_IP},
              goto=T['L3Forwarding'], owner='underlay'),
         flow(T['Classifier'], PRIORITY_MISS, owner='spoof guard')])
    for j, client in enumerate(cluster.clients, start=1):
        owner = f'host {client.name}'
        add(port_guard(wiring.client_port(j), client.ip, wiring.mac_for(client.ip),
                       'L3Forwarding', owner))
        cfg.flows.append(route(client.ip + '/32', wiring.client_port(j), gw_mac,
                               wiring.mac_for(client.ip), owner))
    checker, owner = cluster.health_checker, "the cloud load balancer's health checker"
    add(port_guard(wiring.HEALTH_CHECKER_PORT, checker, wiring.mac_for(checker),
                   'L3Forwarding', owner))
    cfg.flows.append(route(checker + '/32', wiring.HEALTH_CHECKER_PORT, gw_mac,
                           wiring.mac_for(checker), owner))
    add(arp_responder(gw_mac, 'external router'))
    for node in cluster.nodes:
        cfg.flows.append(route(node.ip + '/32', wiring.EXTERNAL_UPLINK_PORT, gw_mac,
                               wiring.router_mac(node.ip), f'node {node.name}'))
    cfg.flows.append(route(cluster.lb_pool, wiring.EXTERNAL_UPLINK_PORT, gw_mac,
                           wiring.load_balancer_mac(cluster), 'cloud load balancer'))
    via = wiring.external_ip_node(cluster)
    for ip in sorted(set(external_ips), key=ipaddress.IPv4Address):
        if wiring.lab_network_of(cluster, ip) is None:
            cfg.flows.append(route(ip + '/32', wiring.EXTERNAL_UPLINK_PORT, gw_mac,
                                   wiring.router_mac(via.ip),
                                   f'external IP, static route to {via.name}'))
    cfg.flows.append(flow(T['L3Forwarding'], PRIORITY_MISS, owner='no route'))
    return cfg
