"""The lab's cabling plan: which bridge is which, which port goes where, which MAC is whose.

Pure data derived from a ClusterConfig, shared by the topology (which builds the cables)
and the controller (which programs the flows on them), so the two never disagree.
No Mininet import here.

Bridges (all Open vSwitch, all named ``kl-*`` so the lab can find and remove its own):

- one per node, ``kl-n<i>`` (datapath id ``i``): port 1 is the uplink to the underlay,
  port 2 the node's own network namespace (its InternalIP), ports 1000+ the pods;
  a pod's port number is 1000 + its address's offset inside the node's pod CIDR, so the
  controller derives it from ``status.podIP`` alone;
- the underlay ``kl-ul`` (datapath id ``0x100``) that links the nodes: port ``i`` goes to
  node ``i``, port 250 to the external network;
- the external network ``kl-ex`` (datapath id ``0x101``) with the client hosts: port 1 is
  its uplink, client ``j`` (1-based) is on port 100+j, the cloud load balancer's health
  checker (host ``kl-hc``, the external subnet's last host address) on port 99;
- the cloud edge ``kl-lb`` (datapath id ``0x102``) between them, the emulated cloud load
  balancer: port 1 to the external network, port 2 to the underlay (port 250 there).
  On the userspace datapath that second cable is a patch port when the Open vSwitch
  allows a packet ``DEEPEST_PASS`` recirculations in one pass (4.0: 8; Debian 12's 3.1:
  6): a packet from outside then crosses the whole lab in one pass. On the kernel
  datapath it is a veth pair: the packet leaves the datapath and
  comes back in with a fresh budget, as it would cross from a cloud's load balancer
  into the cluster's network (on the userspace datapath such a second pass cost about
  40% of the NodePort's and the load balancer's new-connection rate).

A bare-metal cluster (``cloud: none``) has no cloud edge and no health checker: a router
host ``kl-rt`` (a Linux network namespace with IP forwarding and a real neighbour cache)
joins the external network (its first interface on ``kl-ex`` port 1, the external
subnet's first address) and the nodes' network (its second on ``kl-ul`` port 250, the
node subnet's first address). Both switches then forward as a LAN: by destination MAC,
broadcasts to every other port, so ARP is real on both sides of the router.

MAC addresses are derived from IP addresses, as OVN-Kubernetes does (``0a:58`` + the four
address bytes) so that every dump can be read without a lookup table. Router-side MACs
(the node bridge on the underlay, the external router) use ``0a:5a`` + the address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

PREFIX = 'kl-'

UPLINK_PORT = 1
NODE_HOST_PORT = 2
POD_PORT_BASE = 1000
UNDERLAY_DPID = 0x100
EXTERNAL_DPID = 0x101
UNDERLAY_EXTERNAL_PORT = 250
EXTERNAL_UPLINK_PORT = 1
CLIENT_PORT_BASE = 100
HEALTH_CHECKER_PORT = 99
HEALTH_CHECKER_HOST = f'{PREFIX}hc'
EDGE_DPID = 0x102
EDGE_EXTERNAL_PORT = 1
EDGE_UNDERLAY_PORT = 2
#: The recirculations of the deepest path from outside in one datapath pass: a load
#: balancer's SYN to a node that sends it on to an endpoint on another node (the edge's
#: conntrack lookup and DNAT, its node picked by flows on the source port, without a
#: group; the node's un-SNAT lookup, select group hash and DNAT (its masquerade does
#: not recirculate); the endpoint node's lookup). tests/unit/test_pipeline.py counts it.
DEEPEST_PASS = 6
ROUTER_HOST = f'{PREFIX}rt'       # bare metal: the router between the two networks
BROADCAST = 'ff:ff:ff:ff:ff:ff'


def mac_for(ip: str, prefix: str = '0a:58') -> str:
    """The MAC address the lab gives the interface that owns ``ip``."""
    packed = ipaddress.IPv4Address(ip).packed
    return prefix + ''.join(f':{b:02x}' for b in packed)


def router_mac(ip: str) -> str:
    """The MAC of a lab router port (node bridge on the underlay, external gateway)."""
    return mac_for(ip, prefix='0a:5a')


def outside_mac(cluster) -> str:
    """Where a node sends what leaves for the external network: the external router
    (cloud: the flows of kl-ex behind the cloud edge) or, on bare metal, the router's
    interface on the nodes' network."""
    if cluster.bare_metal:
        return router_mac(cluster.lan_gateway)
    return router_mac(cluster.external_gateway)


def node_bridge(node) -> str:
    return f'{PREFIX}n{node.index}'


def node_dpid(node) -> int:
    return node.index


def node_host_name(node) -> str:
    return f'{PREFIX}h{node.index}'


def client_host_name(index: int) -> str:
    return f'{PREFIX}c{index}'


UNDERLAY_BRIDGE = f'{PREFIX}ul'
EXTERNAL_BRIDGE = f'{PREFIX}ex'
EDGE_BRIDGE = f'{PREFIX}lb'


def load_balancer_mac(cluster) -> str:
    """The cloud load balancer's MAC: the external router sends the pool's addresses to
    it (the router MAC of the pool's network address)."""
    return router_mac(str(ipaddress.IPv4Network(cluster.lb_pool).network_address))


def pod_port(node, pod_ip: str) -> int:
    """The OpenFlow port of the pod with address ``pod_ip`` on ``node``'s bridge."""
    net = ipaddress.IPv4Network(node.pod_cidr)
    offset = int(ipaddress.IPv4Address(pod_ip)) - int(net.network_address)
    if not 0 < offset < net.num_addresses - 1:
        raise ValueError(f'{pod_ip} is not a pod address of node {node.name} ({net})')
    return POD_PORT_BASE + offset


def pod_gateway(node) -> str:
    """The pods' default gateway on ``node``: the first address of its pod CIDR."""
    return str(ipaddress.IPv4Network(node.pod_cidr).network_address + 1)


def client_port(index: int) -> int:
    return CLIENT_PORT_BASE + index


@dataclass(frozen=True)
class SwitchRole:
    """What one datapath id is: a node bridge, the underlay or the external network."""
    kind: str            # 'node' | 'underlay' | 'external' | 'edge'
    node: object = None  # the NodeSpec for kind 'node'


def switch_role(cluster, dpid: int) -> SwitchRole | None:
    if dpid == UNDERLAY_DPID:
        return SwitchRole('underlay')
    if dpid == EXTERNAL_DPID:
        return SwitchRole('external')
    if dpid == EDGE_DPID:
        return SwitchRole('edge')
    for node in cluster.nodes:
        if node_dpid(node) == dpid:
            return SwitchRole('node', node)
    return None


def all_bridges(cluster) -> list[tuple[str, int]]:
    """Every bridge of the lab as (name, dpid)."""
    bridges = [(node_bridge(n), node_dpid(n)) for n in cluster.nodes]
    bridges += [(UNDERLAY_BRIDGE, UNDERLAY_DPID), (EXTERNAL_BRIDGE, EXTERNAL_DPID)]
    return bridges if cluster.bare_metal else bridges + [(EDGE_BRIDGE, EDGE_DPID)]


def external_ip_node(cluster):
    """The node the lab's external router sends every Service's ``externalIPs`` to:
    Kubernetes routes nothing to an external IP, an administrator does (a static route
    to a node, as here, or a BGP speaker); kube-proxy then catches the address on
    whichever node it arrives at. The first worker node (the first node when there is
    no worker)."""
    workers = [n for n in cluster.nodes if n.role == 'worker']
    return (workers or list(cluster.nodes))[0]


def lab_network_of(cluster, ip: str) -> str | None:
    """Which of the lab's own networks ``ip`` is in ('the pod subnet' ...), or None. The
    lab's router does not route an external IP that is (those addresses already go
    where their network goes, or nowhere from outside)."""
    address = ipaddress.IPv4Address(ip)
    for name, cidr in (('the pod subnet', cluster.cluster_cidr),
                       ('the Service subnet', cluster.service_cidr),
                       ('the node subnet', cluster.node_cidr),
                       ('the external subnet', cluster.external_cidr),
                       ('the load balancer pool', cluster.lb_pool)):
        if address in ipaddress.IPv4Network(cidr):
            return name
    return None
