"""kube-proxy as OpenFlow: the pipeline of every lab switch, computed from cluster state.

``desired(state, dpid)`` is a pure function: it returns every flow, group and meter that
switch ``dpid`` should hold. The Ryu shell diffs that against the switch and sends the
difference; nothing here sends anything.

The node-bridge pipeline, with the stage of kube-proxy's iptables rules each table plays
(docs/pipeline.md has one section per table with a dumped flow):

  Classifier      (raw PREROUTING)  which port a packet came in on; a pod may only send
                                    from its own IP and MAC (spoof guard), else drop
  ARPResponder    (the node's ARP)  answers every ARP request with the gateway's MAC:
                                    all traffic is routed, never bridged or flooded
  UnSNAT          (conntrack)       replies to the node's masquerade (hairpin, egress)
                                    get their destination back (SNAT zone)
  ConntrackZone   (conntrack)       ct(nat) in the node's zone: replies are un-NATed
  ConntrackState  (conntrack)       invalid -> drop; established -> L3Forwarding;
                                    new -> ServiceLB
  ServiceLB       (KUBE-SERVICES)   ClusterIP:port -> the Service's select group, whose
                                    buckets DNAT to one endpoint each (KUBE-SVC/KUBE-SEP);
                                    no ready endpoint -> the controller REJECTs
  ConntrackCommit (conntrack)       commits every other new connection
  L3Forwarding    (routing)         local pod or node -> its port; other node's pods ->
                                    the underlay; external network -> SNAT
  SNAT            (KUBE-POSTROUTING) masquerade: a pod that reached itself through a
                                    Service (hairpin) is seen as the pod gateway; a pod
                                    talking to the external network as its node
  Output          (output)          delivers what SNAT translated (hairpin: back out the
                                    pod's own port)

Conntrack zones: all userspace bridges share one conntrack table, so each node bridge
tracks in its own zone (the node's index) and masquerades in another (1000 + index). A
connection is committed once on every node bridge it crosses.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass

from controller.flows import (Bucket, Ct, Group, GroupSpec, MeterSpec, Move, Nat, Output,
                              SetField, SwitchConfig, ToController, ct_state, flow)
from topo import wiring

ETH_IP = 0x0800
ETH_ARP = 0x0806
REJECT_METER = 1
REJECT_RATE_PPS = 200
SNAT_ZONE_BASE = 1000


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    stage: str       # the kube-proxy / iptables place this table plays
    gotos: tuple     # names of the tables it may continue in


TABLES = (
    Table(0, 'Classifier', 'raw PREROUTING', ('ARPResponder', 'UnSNAT', 'L3Forwarding')),
    Table(10, 'ARPResponder', 'ARP (the node answers for its routes)', ()),
    Table(15, 'UnSNAT', 'conntrack (un-masquerade)', ('ConntrackZone',)),
    Table(20, 'ConntrackZone', 'conntrack', ('ConntrackState',)),
    Table(21, 'ConntrackState', 'conntrack (ctstate INVALID/ESTABLISHED)',
          ('ServiceLB', 'L3Forwarding')),
    Table(40, 'ServiceLB', 'nat PREROUTING: KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP (DNAT)',
          ('ConntrackCommit', 'L3Forwarding')),
    Table(60, 'ConntrackCommit', 'conntrack commit', ('L3Forwarding',)),
    Table(70, 'L3Forwarding', 'routing (FORWARD)', ('SNAT', 'Output')),
    Table(75, 'SNAT', 'nat POSTROUTING: KUBE-POSTROUTING (masquerade)', ('Output',)),
    Table(80, 'Output', 'output', ()),
)
T = {t.name: t.id for t in TABLES}
TABLE_NAMES = {t.id: t.name for t in TABLES}


class PipelineError(Exception):
    """A flow that breaks the declared pipeline (a goto its table does not allow)."""


def check_pipeline(config: SwitchConfig) -> None:
    """Refuse a goto (or a ct recirculation) that the source table does not declare."""
    allowed = {t.id: {T[n] for n in t.gotos} for t in TABLES}
    groups = {g.group_id: g for g in config.groups}
    for f in config.flows:
        targets = [f.goto] if f.goto is not None else []
        actions = list(f.actions)
        for a in f.actions:                 # a group's buckets continue where its flow is
            if isinstance(a, Group) and a.group_id in groups:
                actions += [b for bucket in groups[a.group_id].buckets for b in bucket.actions]
        targets += [a.table for a in actions if isinstance(a, Ct) and a.table is not None]
        for target in targets:
            if target not in allowed.get(f.table, set()):
                raise PipelineError(f'{TABLE_NAMES.get(f.table, f.table)} may not go to '
                                    f'{TABLE_NAMES.get(target, target)}: {f.to_ofctl()}')


def desired(state, dpid: int) -> SwitchConfig:
    """Everything switch ``dpid`` should hold for ``state`` (empty for an unknown switch)."""
    role = wiring.switch_role(state.cluster, dpid)
    if role is None:
        return SwitchConfig()
    if role.kind == 'node':
        config = node_bridge(state, role.node)
    elif role.kind == 'underlay':
        config = underlay(state.cluster)
    else:
        config = external(state.cluster)
    check_pipeline(config)
    return config


# ---------------------------------------------------------------- shared pieces
def arp_responder(gateway_mac: str, owner: str) -> list:
    """Answer every ARP request with ``gateway_mac``: proxy ARP for all routed addresses."""
    actions = (
        Move('eth_src', 'eth_dst', 48), SetField('eth_src', gateway_mac),
        SetField('arp_op', 2), Move('arp_sha', 'arp_tha', 48),
        SetField('arp_sha', gateway_mac), Move('arp_tpa', 'reg2', 32),
        Move('arp_spa', 'arp_tpa', 32), Move('reg2', 'arp_spa', 32), Output('in_port'),
    )
    return [flow(T['ARPResponder'], 200, {'eth_type': ETH_ARP, 'arp_op': 1}, actions,
                 owner=owner),
            flow(T['ARPResponder'], 0, owner=owner)]


def port_guard(port: int, ip: str, mac: str, ip_next: str, owner: str) -> list:
    """Classifier: traffic from ``port`` must carry its own IP and MAC (spoof guard).
    A gratuitous ARP for its own address is not answered (it would look like a clash)."""
    return [
        flow(T['Classifier'], 210, {'in_port': port, 'eth_type': ETH_ARP, 'arp_tpa': ip},
             owner=owner),
        flow(T['Classifier'], 200, {'in_port': port, 'eth_type': ETH_IP, 'eth_src': mac,
                                    'ipv4_src': ip}, goto=T[ip_next], owner=owner),
        flow(T['Classifier'], 200, {'in_port': port, 'eth_type': ETH_ARP, 'eth_src': mac,
                                    'arp_spa': ip, 'arp_sha': mac},
             goto=T['ARPResponder'], owner=owner),
    ]


def route(dst: str, port: int, src_mac: str, dst_mac: str, owner: str,
          priority: int = 200) -> object:
    """L3Forwarding: rewrite the MACs for the next hop and send to ``port``."""
    net = ipaddress.IPv4Network(dst)
    match = {'eth_type': ETH_IP,
             'ipv4_dst': str(net.network_address) if net.prefixlen == 32
             else (str(net.network_address), str(net.netmask))}
    return flow(T['L3Forwarding'], priority, match,
                (SetField('eth_src', src_mac), SetField('eth_dst', dst_mac), Output(port)),
                owner=owner)


def group_id(key: str, taken: set) -> int:
    """A stable group id for a Service port: crc32 of its name, probing past collisions."""
    gid = (zlib.crc32(key.encode()) & 0x7FFFFFFF) or 1
    while gid in taken:
        gid = (gid + 1) & 0x7FFFFFFF or 1
    taken.add(gid)
    return gid


# ---------------------------------------------------------------- node bridge
def node_bridge(state, node) -> SwitchConfig:
    cluster = state.cluster
    zone = node.index
    gw_mac = wiring.mac_for(wiring.pod_gateway(node))
    uplink_mac = wiring.router_mac(node.ip)
    cfg = SwitchConfig(meters=[MeterSpec(REJECT_METER, REJECT_RATE_PPS, REJECT_RATE_PPS)])
    add = cfg.flows.extend

    # Classifier: the underlay, the node itself, each pod.
    add([flow(T['Classifier'], 200, {'in_port': wiring.UPLINK_PORT, 'eth_type': ETH_IP},
              goto=T['UnSNAT'], owner='underlay'),
         flow(T['Classifier'], 0, owner='spoof guard')])
    add(port_guard(wiring.NODE_HOST_PORT, node.ip, wiring.mac_for(node.ip),
                   'UnSNAT', f'node {node.name}'))
    local_pods = state.pods_on(node.name)
    for pod in local_pods:
        add(port_guard(wiring.pod_port(node, pod.ip), pod.ip, wiring.mac_for(pod.ip),
                       'UnSNAT', pod.owner))
    add(arp_responder(gw_mac, f'node {node.name}'))

    # UnSNAT: replies to the addresses this node masquerades as.
    snat_zone = SNAT_ZONE_BASE + node.index
    gateway = wiring.pod_gateway(node)
    for addr, why in ((gateway, 'hairpin masquerade'), (node.ip, 'egress masquerade')):
        add([flow(T['UnSNAT'], 200, {'eth_type': ETH_IP, 'ipv4_dst': addr},
                  (Ct(zone=snat_zone, table=T['ConntrackZone'], nat=Nat()),), owner=why)])
    add([flow(T['UnSNAT'], 0, goto=T['ConntrackZone'], owner='conntrack')])

    # Conntrack: un-NAT replies, drop invalid, send new connections to ServiceLB.
    add([flow(T['ConntrackZone'], 200, {'eth_type': ETH_IP},
              (Ct(zone=zone, table=T['ConntrackState'], nat=Nat()),), owner='conntrack'),
         flow(T['ConntrackState'], 210, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+inv')},
              owner='conntrack'),
         flow(T['ConntrackState'], 200, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+new')},
              goto=T['ServiceLB'], owner='conntrack'),
         flow(T['ConntrackState'], 190, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk-new')},
              goto=T['L3Forwarding'], owner='conntrack'),
         flow(T['ConntrackState'], 0, owner='conntrack'),
         flow(T['ServiceLB'], 0, goto=T['ConntrackCommit'], owner='conntrack'),
         flow(T['ConntrackCommit'], 200, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+new')},
              (Ct(zone=zone, commit=True),), goto=T['L3Forwarding'], owner='conntrack'),
         flow(T['ConntrackCommit'], 0, goto=T['L3Forwarding'], owner='conntrack')])

    # ServiceLB: one flow per Service port, one select group per Service port.
    taken = set()
    vips = {}
    for sp in state.service_ports:
        owner = f'service {sp.key}'
        vips.setdefault(sp.vip, f'service {sp.namespace}/{sp.service}')
        l4_dst = 'tcp_dst' if sp.protocol == 'TCP' else 'udp_dst'
        match = {'eth_type': ETH_IP, 'ip_proto': sp.proto_number, 'ipv4_dst': sp.vip,
                 l4_dst: sp.port}
        if not sp.endpoints:
            add([flow(T['ServiceLB'], 200, match, (ToController(),), meter=REJECT_METER,
                      owner=owner)])
            continue
        gid = group_id(sp.key, taken)
        buckets = tuple(
            Bucket((Ct(zone=zone, commit=True, table=T['L3Forwarding'],
                       nat=Nat(dst=ep.ip, port=ep.port)),))
            for ep in sp.endpoints)
        cfg.groups.append(GroupSpec(gid, buckets, owner=owner))
        add([flow(T['ServiceLB'], 200, match, (Group(gid),), owner=owner)])
    for vip, owner in sorted(vips.items()):
        # A ClusterIP answers only on its ports: anything else is rejected, as nftables'
        # kube-proxy does (the controller drops what it cannot answer, e.g. ICMP).
        add([flow(T['ServiceLB'], 100, {'eth_type': ETH_IP, 'ipv4_dst': vip},
                  (ToController(),), meter=REJECT_METER, owner=owner)])

    # L3Forwarding: local pods and the node, then the other nodes, then the outside.
    for pod in local_pods:
        port = wiring.pod_port(node, pod.ip)
        cfg.flows.append(route(pod.ip + '/32', port, gw_mac, wiring.mac_for(pod.ip),
                               pod.owner))
        # Hairpin: the pod reached itself through a Service. OpenFlow never outputs to
        # the in_port, and the pod would drop a packet from its own address: masquerade
        # it as the gateway and send it back out the pod's own port (IN_PORT).
        add([flow(T['L3Forwarding'], 220, {'eth_type': ETH_IP, 'in_port': port,
                                           'ipv4_src': pod.ip, 'ipv4_dst': pod.ip},
                  goto=T['SNAT'], owner=pod.owner),
             flow(T['L3Forwarding'], 210, {'eth_type': ETH_IP, 'in_port': port,
                                           'ipv4_dst': pod.ip},
                  goto=T['Output'], owner=pod.owner),
             flow(T['Output'], 200, {'eth_type': ETH_IP, 'ipv4_dst': pod.ip},
                  (SetField('eth_src', gw_mac), SetField('eth_dst', wiring.mac_for(pod.ip)),
                   Output('in_port')), owner=pod.owner)])
    add([flow(T['SNAT'], 200, {'eth_type': ETH_IP, 'ipv4_dst': (
              node.pod_cidr.split('/')[0], str(ipaddress.IPv4Network(node.pod_cidr).netmask))},
              (Ct(zone=snat_zone, commit=True, table=T['Output'], nat=Nat(src=gateway)),),
              owner='hairpin masquerade'),
         flow(T['SNAT'], 100, {'eth_type': ETH_IP},
              (Ct(zone=snat_zone, commit=True, table=T['Output'], nat=Nat(src=node.ip)),),
              owner='egress masquerade'),
         flow(T['SNAT'], 0, owner='egress masquerade'),
         flow(T['Output'], 0, owner='output')])
    cfg.flows.append(route(node.ip + '/32', wiring.NODE_HOST_PORT, gw_mac,
                           wiring.mac_for(node.ip), f'node {node.name}'))
    for other in cluster.nodes:
        if other.name == node.name:
            continue
        for dst in (other.pod_cidr, other.ip + '/32'):
            cfg.flows.append(route(dst, wiring.UPLINK_PORT, uplink_mac,
                                   wiring.router_mac(other.ip), f'node {other.name}', 100))
    # The outside: every new connection leaves masqueraded as the node (SNAT): the pods'
    # and the node's own share one SNAT zone, so their ports never clash. Replies (to
    # connections that came in from outside) leave as they are.
    ext = ipaddress.IPv4Network(cluster.external_cidr)
    ext_match = {'eth_type': ETH_IP, 'ipv4_dst': (str(ext.network_address), str(ext.netmask))}
    add([flow(T['L3Forwarding'], 100, ext_match, goto=T['SNAT'], owner='external network'),
         flow(T['SNAT'], 110, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+rpl')},
              goto=T['Output'], owner='egress masquerade'),
         flow(T['Output'], 100, ext_match,
              (SetField('eth_src', uplink_mac),
               SetField('eth_dst', wiring.router_mac(cluster.external_gateway)),
               Output(wiring.UPLINK_PORT)), owner='external network')])
    cfg.flows.append(flow(T['L3Forwarding'], 0, owner='no route'))
    return cfg


# ---------------------------------------------------------------- underlay
def underlay(cluster) -> SwitchConfig:
    """The fabric between the nodes: forward by destination MAC, nothing else."""
    flows = [flow(0, 100, {'eth_dst': wiring.router_mac(n.ip)},
                  (Output(n.index),), owner=f'node {n.name}') for n in cluster.nodes]
    flows.append(flow(0, 100, {'eth_dst': wiring.router_mac(cluster.external_gateway)},
                      (Output(wiring.UNDERLAY_EXTERNAL_PORT),), owner='external network'))
    flows.append(flow(0, 0, owner='underlay'))
    return SwitchConfig(flows=flows)


# ---------------------------------------------------------------- external network
def external(cluster) -> SwitchConfig:
    """The world outside the cluster: clients, and a router that reaches the node IPs.

    Pod IPs and ClusterIPs are not routed here: the cluster is reachable from outside
    only through its nodes (and, later, NodePorts, load balancers and Ingress)."""
    gw = cluster.external_gateway
    gw_mac = wiring.router_mac(gw)
    cfg = SwitchConfig()
    add = cfg.flows.extend
    add([flow(T['Classifier'], 200, {'in_port': wiring.EXTERNAL_UPLINK_PORT,
                                     'eth_type': ETH_IP},
              goto=T['L3Forwarding'], owner='underlay'),
         flow(T['Classifier'], 0, owner='spoof guard')])
    for j, client in enumerate(cluster.clients, start=1):
        owner = f'host {client.name}'
        add(port_guard(wiring.client_port(j), client.ip, wiring.mac_for(client.ip),
                       'L3Forwarding', owner))
        cfg.flows.append(route(client.ip + '/32', wiring.client_port(j), gw_mac,
                               wiring.mac_for(client.ip), owner))
    add(arp_responder(gw_mac, 'external router'))
    for node in cluster.nodes:
        cfg.flows.append(route(node.ip + '/32', wiring.EXTERNAL_UPLINK_PORT, gw_mac,
                               wiring.router_mac(node.ip), f'node {node.name}'))
    cfg.flows.append(flow(T['L3Forwarding'], 0, owner='no route'))
    return cfg
