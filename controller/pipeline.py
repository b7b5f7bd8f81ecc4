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

from controller.flows import (Bucket, Ct, Group, GroupSpec, LearnAffinity, MeterSpec, Move,
                              Nat, Output, Resubmit, SetField, SwitchConfig, ToController,
                              ct_state, flow)
from controller.state import PROTOCOL_NUMBERS
from services import wiring

ETH_IP = 0x0800
ETH_ARP = 0x0806
AFFINITY_COOKIE = 0x4B41FF0000000000    # the cookie of learned affinity flows (kept on resync)
REJECT_METER = 1
REJECT_RATE_PPS = 200
SNAT_ZONE_BASE = 1000
EDGE_ZONE = 2000             # the cloud load balancer's conntrack zone
# ct_mark bits (the connection remembers them, both directions):
CT_MARK_NODE_MASQ = 0x1      # [0]: reached through a NodePort with externalTrafficPolicy
                             #      Cluster: masquerade as the node (KUBE-MARK-MASQ)
# reg0 bits (one bridge's pipeline; registers start at 0 on every bridge):
REG0_LOCAL_ORIGIN = 0x1      # [0]: sent by this node or one of its pods (Classifier)


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    stage: str       # the kube-proxy / iptables place this table plays
    gotos: tuple     # names of the tables it may continue in


TABLES = (
    Table(0, 'Classifier', 'raw PREROUTING',
          ('ARPResponder', 'UnSNAT', 'ConntrackZone', 'L3Forwarding', 'Output')),
    Table(10, 'ARPResponder', 'ARP (the node answers for its routes)', ()),
    Table(15, 'UnSNAT', 'conntrack (un-masquerade)', ('ConntrackZone', 'ConntrackState')),
    Table(20, 'ConntrackZone', 'conntrack', ('ConntrackState',)),
    Table(21, 'ConntrackState', 'conntrack (ctstate INVALID/ESTABLISHED)',
          ('ServiceLB', 'L3Forwarding', 'Output')),
    Table(30, 'SessionAffinity', 'KUBE-SEP -m recent --rcheck (sessionAffinity ClientIP)',
          ()),
    Table(40, 'ServiceLB', 'nat PREROUTING: KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP (DNAT)',
          ('EndpointDNAT', 'AffinityLearn', 'ConntrackCommit', 'L3Forwarding')),
    Table(45, 'EndpointDNAT', 'KUBE-SEP DNAT for a client with session affinity',
          ('L3Forwarding',)),   # its miss resubmits to ServiceLB (an endpoint that went)
    Table(50, 'AffinityLearn', 'KUBE-SEP -m recent --set (remember the client)',
          ('L3Forwarding',)),
    Table(60, 'ConntrackCommit', 'conntrack commit', ('L3Forwarding',)),
    Table(70, 'L3Forwarding', 'routing (FORWARD)', ('SNAT', 'Output')),
    Table(75, 'SNAT', 'nat POSTROUTING: KUBE-POSTROUTING (masquerade)',
          ('Output', 'L3Forwarding')),
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
    elif role.kind == 'edge':
        config = cloud_edge(state)
    else:
        config = external(state.cluster)
    # One flow may serve two owners (an endpoint of two sticky Service ports): keep one.
    config.flows = list({f.cookie: f for f in config.flows}.values())
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
                                    'ipv4_src': ip},
             (SetField('reg0', REG0_LOCAL_ORIGIN),), goto=T[ip_next], owner=owner),
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


def load_balance(cfg: SwitchConfig, match: dict, sp, endpoints, zone: int, key: str,
                 taken: set, mark: int | None = None, affinity: int | None = None,
                 priority: int = 200):
    """ServiceLB: ``match`` -> a select group over ``endpoints`` (DNAT, commit, and the
    ct_mark ``mark``); REJECT when the Service has no endpoint at all; drop when it has
    some but a traffic policy leaves none for this node.

    With session affinity each bucket also learns the client's choice into
    SessionAffinity; a later connection of that client finds it there (reg5[0] set),
    and goes to EndpointDNAT, which DNATs to the endpoint in reg3/reg4."""
    owner = f'service {sp.key}'
    if not sp.endpoints:
        cfg.flows.append(flow(T['ServiceLB'], priority, match, (ToController(),),
                              meter=REJECT_METER, owner=owner))
        return
    if not endpoints:
        cfg.flows.append(flow(T['ServiceLB'], priority, match, owner=owner))
        return
    gid = group_id(key, taken)
    l4 = 'tcp_dst' if match['ip_proto'] == 6 else 'udp_dst'
    after = T['AffinityLearn'] if affinity else T['L3Forwarding']
    buckets = tuple(Bucket((Ct(zone=zone, commit=True, table=after,
                               nat=Nat(dst=ep.ip, port=ep.port), mark=mark),))
                    for ep in endpoints)
    cfg.groups.append(GroupSpec(gid, buckets, owner=owner))
    if not affinity:
        cfg.flows.append(flow(T['ServiceLB'], priority, match, (Group(gid),), owner=owner))
        return
    # Session affinity: remember which Service address and port this is (reg7, reg8)
    # so that AffinityLearn, after the DNAT, can learn the client's endpoint.
    dst = int(ipaddress.IPv4Address(match['ipv4_dst']))
    cfg.flows += [
        flow(T['ServiceLB'], priority, match, (SetField('reg7', dst),
                                               SetField('reg8', match[l4]), Group(gid)),
             owner=owner),
        flow(T['ServiceLB'], 210, dict(match, reg5=(1, 1)), (SetField('reg6', mark or 0),),
             goto=T['EndpointDNAT'], owner=owner),
        flow(T['AffinityLearn'], 200, {'eth_type': ETH_IP, 'ip_proto': match['ip_proto'],
                                       'reg7': dst, 'reg8': match[l4]},
             (LearnAffinity(T['SessionAffinity'], affinity, match['ip_proto'],
                            AFFINITY_COOKIE),), goto=T['L3Forwarding'], owner=owner),
        # A flow that looks at the source port (0: never used): the userspace datapath
        # then caches this Service's new connections per source port, so each one is
        # looked up afresh and finds what the previous one learned (else a cached miss
        # would send the client's next connections to the group for a few hundred ms).
        flow(T['SessionAffinity'], 1, dict(match, **{l4.replace('dst', 'src'): 0}),
             owner=owner)]
    for ep in endpoints:
        hit = {'eth_type': ETH_IP, 'reg3': int(ipaddress.IPv4Address(ep.ip)),
               'reg4': ep.port, 'reg6': mark or 0}
        cfg.flows.append(flow(T['EndpointDNAT'], 200, hit, (
            Ct(zone=zone, commit=True, table=T['L3Forwarding'],
               nat=Nat(dst=ep.ip, port=ep.port), mark=mark),), owner=owner))


def also_back_out(f) -> list:
    """``f`` (which ends in output to the uplink) plus its twin for packets that came
    in on the uplink: OpenFlow drops an output to the in_port, so those leave by IN_PORT
    (a NodePort DNATed to another node, the reply of a remote endpoint)."""
    *rest, out = f.actions
    assert isinstance(out, Output) and out.port == wiring.UPLINK_PORT, f
    twin = flow(f.table, f.priority + 1, dict(f.match, in_port=wiring.UPLINK_PORT),
                (*rest, Output('in_port')), owner=f.owner)
    return [f, twin]


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
    # Both lookups in one flow, the first without recirculation: every bridge is a port
    # set of one userspace datapath, a packet keeps its recirculation count from bridge
    # to bridge, and the datapath drops it at the seventh. A pod's SYN to a NodePort on
    # another node, to an endpoint on a third, takes six this way (seven with a
    # recirculation here).
    for addr, why in ((gateway, 'hairpin masquerade'), (node.ip, 'egress masquerade')):
        add([flow(T['UnSNAT'], 200, {'eth_type': ETH_IP, 'ipv4_dst': addr},
                  (Ct(zone=snat_zone, nat=Nat()),
                   Ct(zone=zone, table=T['ConntrackState'], nat=Nat())), owner=why)])
    add([flow(T['UnSNAT'], 0, goto=T['ConntrackZone'], owner='conntrack')])

    # Conntrack: un-NAT replies, drop invalid, send new connections to ServiceLB.
    add([flow(T['ConntrackZone'], 200, {'eth_type': ETH_IP},
              (Ct(zone=zone, table=T['ConntrackState'], nat=Nat()),), owner='conntrack'),
         flow(T['ConntrackState'], 210, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+inv')},
              owner='conntrack'),
         flow(T['ConntrackState'], 200, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+new')},
              (Resubmit(T['SessionAffinity']),) if any(
                  sp.affinity_timeout for sp in state.service_ports) else (),
              goto=T['ServiceLB'], owner='conntrack'),
         flow(T['ConntrackState'], 190, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk-new')},
              goto=T['L3Forwarding'], owner='conntrack'),
         flow(T['ConntrackState'], 0, owner='conntrack'),
         flow(T['ServiceLB'], 0, goto=T['ConntrackCommit'], owner='conntrack'),
         flow(T['ConntrackCommit'], 200, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+new')},
              (Ct(zone=zone, commit=True),), goto=T['L3Forwarding'], owner='conntrack'),
         flow(T['ConntrackCommit'], 0, goto=T['L3Forwarding'], owner='conntrack'),
         # A client remembered for an endpoint that is gone: forget it, choose again.
         flow(T['EndpointDNAT'], 0, None, (SetField('reg5', 0), Resubmit(T['ServiceLB'])),
              owner='session affinity')])

    # ServiceLB: per Service port a flow for its ClusterIP and, for a NodePort, one for
    # this node's IP; each goes to a select group whose buckets DNAT to one endpoint.
    taken = set()
    vips = {}
    for sp in state.service_ports:
        vips.setdefault(sp.vip, f'service {sp.namespace}/{sp.service}')
        l4_dst = 'tcp_dst' if sp.protocol == 'TCP' else 'udp_dst'
        base = {'eth_type': ETH_IP, 'ip_proto': sp.proto_number}
        # internalTrafficPolicy Local: a node's pods reach only the node's endpoints.
        eps = sp.local_endpoints(node.name) if sp.internal_local else sp.endpoints
        load_balance(cfg, dict(base, ipv4_dst=sp.vip, **{l4_dst: sp.port}), sp, eps, zone,
                     sp.key + ('@' + node.name if sp.internal_local else ''), taken,
                     affinity=sp.affinity_timeout)
        if sp.node_port:
            # externalTrafficPolicy Cluster: any endpoint, masqueraded as this node (so
            # replies come back here); Local: this node's endpoints, client IP kept.
            eps = sp.local_endpoints(node.name) if sp.external_local else sp.endpoints
            nodeport = dict(base, ipv4_dst=node.ip, **{l4_dst: sp.node_port})
            load_balance(cfg, nodeport, sp, eps, zone, f'{sp.key}/nodeport' + (
                             '@' + node.name if sp.external_local else ''), taken,
                         mark=None if sp.external_local else CT_MARK_NODE_MASQ,
                         affinity=sp.affinity_timeout)
            if sp.external_local:
                # The policy is about external clients: this node's own pods (and the
                # node) reach every endpoint, as kube-proxy sends them to KUBE-SVC.
                load_balance(cfg, dict(nodeport, reg0=(REG0_LOCAL_ORIGIN,
                                                       REG0_LOCAL_ORIGIN)),
                             sp, sp.endpoints, zone, f'{sp.key}/nodeport-from-node',
                             taken, priority=205)
    # hostPort (the CNI portmap plugin's DNAT): this node's address and the port ->
    # the pod, the client's address kept, whether the pod is ready or not.
    for pod in local_pods:
        for protocol, host_port, container_port in pod.host_ports:
            number = PROTOCOL_NUMBERS[protocol]
            add([flow(T['ServiceLB'], 190, {
                'eth_type': ETH_IP, 'ip_proto': number, 'ipv4_dst': node.ip,
                ('tcp_dst' if number == 6 else 'udp_dst'): host_port},
                (Ct(zone=zone, commit=True, table=T['L3Forwarding'],
                    nat=Nat(dst=pod.ip, port=container_port)),),
                owner=f'{pod.owner} hostPort')])
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
    # NodePort with externalTrafficPolicy Cluster: the connection carries the mark; its
    # packets (not its replies) are masqueraded as this node, then routed.
    add([flow(T['L3Forwarding'], 230, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk-rpl'),
                                       'ct_mark': (CT_MARK_NODE_MASQ, CT_MARK_NODE_MASQ)},
              goto=T['SNAT'], owner='nodeport masquerade'),
         flow(T['SNAT'], 250, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk-rpl'),
                               'ct_mark': (CT_MARK_NODE_MASQ, CT_MARK_NODE_MASQ)},
              # mark 0: the masquerade zone's connection has none anyway; said here so
              # that ofproto/trace (kubelab trace), which keeps one ct_mark across zones,
              # does not send the packet back into SNAT forever.
              (Ct(zone=snat_zone, commit=True, table=T['L3Forwarding'],
                  nat=Nat(src=node.ip), mark=0),), owner='nodeport masquerade')])
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
            add(also_back_out(route(dst, wiring.UPLINK_PORT, uplink_mac,
                                    wiring.router_mac(other.ip), f'node {other.name}', 100)))
    # The outside: every new connection leaves masqueraded as the node (SNAT): the pods'
    # and the node's own share one SNAT zone, so their ports never clash. Replies (to
    # connections that came in from outside) leave as they are.
    ext = ipaddress.IPv4Network(cluster.external_cidr)
    ext_match = {'eth_type': ETH_IP, 'ipv4_dst': (str(ext.network_address), str(ext.netmask))}
    add([flow(T['L3Forwarding'], 100, ext_match, goto=T['SNAT'], owner='external network'),
         flow(T['SNAT'], 110, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+rpl')},
              goto=T['Output'], owner='egress masquerade'),
         *also_back_out(flow(T['Output'], 100, ext_match,
                             (SetField('eth_src', uplink_mac),
                              SetField('eth_dst', wiring.router_mac(cluster.external_gateway)),
                              Output(wiring.UPLINK_PORT)), owner='external network'))])
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
    cfg.flows.append(flow(T['L3Forwarding'], 0, owner='no route'))
    return cfg


# ---------------------------------------------------------------- cloud edge
def cloud_edge(state) -> SwitchConfig:
    """The cloud's load balancer, between the external network and the nodes.

    A new connection from outside to a LoadBalancer Service's address and port (from a
    ``loadBalancerSourceRanges`` address, when it has some) goes to a select group over
    the Service's target nodes, whose buckets DNAT it to NodeIP:NodePort: a
    passthrough load balancer, the client's address kept (Google's network load
    balancer, AWS's NLB with instance targets). The targets are every Ready node with
    ``externalTrafficPolicy: Cluster``, and the nodes with an endpoint of their own with
    ``Local`` (what the health checks of ``healthCheckNodePort`` find). Replies are
    un-DNATed on the way back out; all other traffic passes by its destination MAC,
    untracked."""
    cluster = state.cluster
    lb_mac = wiring.load_balancer_mac(cluster)
    pool = ipaddress.IPv4Network(cluster.lb_pool)
    cfg = SwitchConfig()
    add = cfg.flows.extend
    # Conntrack only for what a load balancer has to do with: new connections to the
    # pool from outside, and the replies of the nodes' NodePorts behind a load balancer
    # (to un-DNAT them). Everything else passes by its destination MAC, untracked.
    add([flow(T['Classifier'], 210, {'in_port': wiring.EDGE_EXTERNAL_PORT,
                                     'eth_type': ETH_IP,
                                     'ipv4_dst': (str(pool.network_address),
                                                  str(pool.netmask))},
              goto=T['ConntrackZone'], owner='cloud load balancer')])
    for sp in state.service_ports:
        if sp.lb_ip and sp.node_port:
            add([flow(T['Classifier'], 210, {
                'in_port': wiring.EDGE_UNDERLAY_PORT, 'eth_type': ETH_IP,
                'ip_proto': sp.proto_number, 'ipv4_src': node.ip,
                ('tcp_src' if sp.protocol == 'TCP' else 'udp_src'): sp.node_port},
                goto=T['ConntrackZone'], owner=f'service {sp.key}')
                for node in cluster.nodes])
    add([flow(T['Classifier'], 200, {'in_port': port, 'eth_type': ETH_IP},
              goto=T['Output'], owner='cloud load balancer')
         for port in (wiring.EDGE_EXTERNAL_PORT, wiring.EDGE_UNDERLAY_PORT)])
    add([flow(T['Classifier'], 0, owner='cloud load balancer'),
         flow(T['ConntrackZone'], 200, {'eth_type': ETH_IP},
              (Ct(zone=EDGE_ZONE, table=T['ConntrackState'], nat=Nat()),),
              owner='cloud load balancer'),
         flow(T['ConntrackState'], 210, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+inv'),
                                         'in_port': wiring.EDGE_EXTERNAL_PORT},
              owner='cloud load balancer'),
         flow(T['ConntrackState'], 200, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+new'),
                                         'in_port': wiring.EDGE_EXTERNAL_PORT},
              goto=T['ServiceLB'], owner='cloud load balancer'),
         # A load balancer's connection from outside, DNATed to a node: routed to it.
         flow(T['ConntrackState'], 195, {'eth_type': ETH_IP,
                                         'in_port': wiring.EDGE_EXTERNAL_PORT,
                                         'ct_state': ct_state('+trk-new+dnat')},
              goto=T['L3Forwarding'], owner='cloud load balancer'),
         # From the nodes: a load balancer's replies, un-DNATed, and whatever else came
         # from a NodePort that also serves a load balancer (a client that used the
         # NodePort directly: not the edge's connection, so untracked here or INVALID):
         # out by their destination MAC.
         flow(T['ConntrackState'], 190, {'eth_type': ETH_IP, 'ct_state': ct_state('+trk')},
              goto=T['Output'], owner='cloud load balancer')])
    add([flow(T['ServiceLB'], 0, owner='cloud load balancer')])
    taken = set()
    for sp in state.service_ports:
        if not sp.lb_ip or not sp.node_port:
            continue
        owner = f'service {sp.key}'
        match = {'eth_type': ETH_IP, 'ip_proto': sp.proto_number, 'ipv4_dst': sp.lb_ip,
                 ('tcp_dst' if sp.protocol == 'TCP' else 'udp_dst'): sp.port}
        targets = state.lb_targets(sp)
        if targets:
            gid = group_id(f'{sp.key}/loadbalancer', taken)
            cfg.groups.append(GroupSpec(gid, tuple(
                Bucket((Ct(zone=EDGE_ZONE, commit=True, table=T['L3Forwarding'],
                           nat=Nat(dst=node.ip, port=sp.node_port)),))
                for node in targets), owner=owner))
            actions = (Group(gid),)
        else:
            actions = ()            # no healthy target: the cloud drops it
        for source in sp.source_ranges or ('0.0.0.0/0',):
            net = ipaddress.IPv4Network(source)
            sources = {} if net.prefixlen == 0 else {
                'ipv4_src': (str(net.network_address), str(net.netmask))}
            cfg.flows.append(flow(T['ServiceLB'], 200, dict(match, **sources), actions,
                                  owner=owner))
    for node in cluster.nodes:
        owner = f'node {node.name}'
        add([flow(T['L3Forwarding'], 200, {'eth_type': ETH_IP, 'ipv4_dst': node.ip},
                  (SetField('eth_src', lb_mac), SetField('eth_dst', wiring.router_mac(node.ip)),
                   Output(wiring.EDGE_UNDERLAY_PORT)), owner=owner),
             flow(T['Output'], 200, {'eth_dst': wiring.router_mac(node.ip)},
                  (Output(wiring.EDGE_UNDERLAY_PORT),), owner=owner)])
    add([flow(T['L3Forwarding'], 0, owner='no route'),
         flow(T['Output'], 200, {'eth_dst': wiring.router_mac(cluster.external_gateway)},
              (Output(wiring.EDGE_EXTERNAL_PORT),), owner='external network'),
         flow(T['Output'], 0, owner='output')])
    return cfg


# ---------------------------------------------------------------- conntrack cleanup
@dataclass(frozen=True)
class ConntrackFlush:
    """Delete the conntrack entries of ``zone`` whose original direction matches
    ``orig`` and whose reply direction matches ``reply`` (``ovs-appctl
    dpctl/flush-conntrack`` tuple syntax; unnamed fields match anything)."""
    zone: int
    orig: str
    reply: str


def stale_udp_flushes(old, new) -> list[ConntrackFlush]:
    """What kube-proxy's conntrack cleanup deletes when a UDP Service port loses an
    endpoint: the entries DNATed to it through the ClusterIP and the NodePort. UDP has
    no connection to end: without this, a client that keeps sending from one port keeps
    reaching the gone endpoint until the entry idles out. TCP needs nothing: the client
    sees its connection reset and opens a new one, which the groups balance afresh.

    The entries live in the zone of the node the client's packets entered, so every
    node's zone is flushed."""
    if old is None:
        return []
    now = {sp.key: set(sp.endpoints) for sp in new.service_ports}
    flushes = []
    for sp in old.service_ports:
        if sp.protocol != 'UDP':
            continue
        gone = set(sp.endpoints) - now.get(sp.key, set())
        fronts = [f'ct_nw_dst={sp.vip},ct_nw_proto=17,ct_tp_dst={sp.port}']
        if sp.node_port:
            fronts.append(f'ct_nw_proto=17,ct_tp_dst={sp.node_port}')
        for ep in sorted(gone, key=lambda e: (e.ip, e.port)):
            reply = f'ct_nw_src={ep.ip},ct_nw_proto=17,ct_tp_src={ep.port}'
            flushes.extend(ConntrackFlush(node.index, orig, reply)
                           for node in old.cluster.nodes for orig in fronts)
    return flushes
