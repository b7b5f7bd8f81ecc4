"""The cloud's load balancer, between the external network and the nodes.

A new connection from outside to a LoadBalancer Service's address and port (from a
``loadBalancerSourceRanges`` address, when it has some) goes to a select group over
the Service's target nodes, whose buckets DNAT it to NodeIP:NodePort: a passthrough
load balancer, the client's address kept (Google's network load balancer, AWS's NLB
with instance targets). The targets are every Ready node with
``externalTrafficPolicy: Cluster``, and the nodes with an endpoint of their own with
``Local`` (what the health checks of ``healthCheckNodePort`` find). Replies are
un-DNATed on the way back out; all other traffic passes by its destination MAC,
untracked.

What it costs the datapath: a packet from outside to the pool is looked up with a
recirculation (its route is the lookup's verdict: new, or which node it went to), a SYN
recirculates twice more (the group's hash, the commit of the DNAT); an answer from a node
not at all (its un-DNAT needs no verdict). Committing the DNAT in the bucket without a
recirculation and routing by the bucket's node would save one more on a SYN, but Open
vSwitch would go on translating the pass with the packet's old addresses, across the
patch ports into the node's bridge, whose flows match the NodePort's address: not done.

``cloud_edge(state)`` builds it as the node bridge is built: one function per table
it uses, in pipeline order (``STAGES``), over the node bridge's table names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property

from controller.flows import (Bucket, Ct, Group, GroupSpec, Nat, Output, SetField,
                              SwitchConfig, ct_state, flow)
from controller.pipeline.shared import group_id
from controller.pipeline.tables import (EDGE_ZONE, ETH_IP, PRIORITY_EDGE_DNATED,
                                        PRIORITY_HIGH, PRIORITY_MISS,
                                        PRIORITY_NORMAL, T)
from services import wiring

OWNER = 'cloud load balancer'


@dataclass(frozen=True)
class EdgeFront:
    """A LoadBalancer Service port's address and port, and the nodes it balances to."""
    sp: object              # the ServicePort (with lb_ip and node_port)
    match: dict             # protocol, load balancer address, port
    targets: tuple          # the nodes whose NodePort takes its connections
    group: int | None       # the select group over them; None: no healthy target

    @property
    def owner(self) -> str:
        return f'service {self.sp.key}'


@dataclass(frozen=True)
class CloudEdge:
    """What the stages of the cloud edge read."""
    state: object

    @property
    def cluster(self):
        return self.state.cluster

    @cached_property
    def balanced(self) -> list:
        """The Service ports with a load balancer address (and so a NodePort)."""
        return [sp for sp in self.state.service_ports if sp.lb_ip and sp.node_port]

    @cached_property
    def fronts(self) -> list[EdgeFront]:
        taken, fronts = set(), []
        for sp in self.balanced:
            match = {'eth_type': ETH_IP, 'ip_proto': sp.proto_number, 'ipv4_dst': sp.lb_ip,
                     ('tcp_dst' if sp.protocol == 'TCP' else 'udp_dst'): sp.port}
            targets = tuple(self.state.lb_targets(sp))
            gid = group_id(f'{sp.key}/loadbalancer', taken) if targets else None
            fronts.append(EdgeFront(sp, match, targets, gid))
        return fronts


# ---------------------------------------------------------------- the stages
def classifier(ctx: CloudEdge) -> list:
    """Classifier: conntrack only for what a load balancer has to do with: new
    connections to the pool from outside, and the replies of the nodes' NodePorts
    behind a load balancer. A reply needs only its un-DNAT and its destination MAC,
    neither of which depends on what conntrack finds: it is looked up without a
    recirculation (the datapath translates it in place) and goes on to Output, which
    routes by the MAC the node set. Whatever else comes from such a NodePort (a client
    that called it directly: not the edge's connection) passes unchanged the same way.
    Everything else passes by its destination MAC, untracked."""
    pool = ipaddress.IPv4Network(ctx.cluster.lb_pool)
    flows = [flow(T['Classifier'], PRIORITY_HIGH,
                  {'in_port': wiring.EDGE_EXTERNAL_PORT, 'eth_type': ETH_IP,
                   'ipv4_dst': (str(pool.network_address), str(pool.netmask))},
                  goto=T['ConntrackZone'], owner=OWNER)]
    for sp in ctx.balanced:
        flows += [flow(T['Classifier'], PRIORITY_HIGH, {
            'in_port': wiring.EDGE_UNDERLAY_PORT, 'eth_type': ETH_IP,
            'ip_proto': sp.proto_number, 'ipv4_src': node.ip,
            ('tcp_src' if sp.protocol == 'TCP' else 'udp_src'): sp.node_port},
            (Ct(zone=EDGE_ZONE, nat=Nat()),), goto=T['Output'], owner=f'service {sp.key}')
            for node in ctx.cluster.nodes]
    flows += [flow(T['Classifier'], PRIORITY_NORMAL, {'in_port': port, 'eth_type': ETH_IP},
                   goto=T['Output'], owner=OWNER)
              for port in (wiring.EDGE_EXTERNAL_PORT, wiring.EDGE_UNDERLAY_PORT)]
    return flows + [flow(T['Classifier'], PRIORITY_MISS, owner=OWNER)]


def conntrack_zone(ctx: CloudEdge) -> list:
    """ConntrackZone: the edge's own zone, for packets from outside to the pool: a
    load balancer's connection gets its node's NodePort as destination."""
    return [flow(T['ConntrackZone'], PRIORITY_NORMAL, {'eth_type': ETH_IP},
                 (Ct(zone=EDGE_ZONE, table=T['ConntrackState'], nat=Nat()),), owner=OWNER)]


def conntrack_state(ctx: CloudEdge) -> list:
    """ConntrackState (only packets from outside come here): drop invalid, balance new,
    route a load balancer's connection to its node; anything else misses (it was sent
    to the edge's own MAC, which Output would not route either)."""
    return [
        flow(T['ConntrackState'], PRIORITY_HIGH,
             {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+inv'),
              'in_port': wiring.EDGE_EXTERNAL_PORT}, owner=OWNER),
        flow(T['ConntrackState'], PRIORITY_NORMAL,
             {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+new'),
              'in_port': wiring.EDGE_EXTERNAL_PORT}, goto=T['ServiceLB'], owner=OWNER),
        # A load balancer's connection from outside, DNATed to a node: routed to it.
        flow(T['ConntrackState'], PRIORITY_EDGE_DNATED,
             {'eth_type': ETH_IP, 'in_port': wiring.EDGE_EXTERNAL_PORT,
              'ct_state': ct_state('+trk-new+dnat')}, goto=T['L3Forwarding'], owner=OWNER)]


def service_lb(ctx: CloudEdge) -> list:
    """ServiceLB: a load balancer's address and port (per allowed source range) -> its
    group of target nodes; dropped when no target is healthy."""
    flows = [flow(T['ServiceLB'], PRIORITY_MISS, owner=OWNER)]
    for front in ctx.fronts:
        actions = () if front.group is None else (Group(front.group),)
        for source in front.sp.source_ranges or ('0.0.0.0/0',):
            net = ipaddress.IPv4Network(source)
            sources = {} if net.prefixlen == 0 else {
                'ipv4_src': (str(net.network_address), str(net.netmask))}
            flows.append(flow(T['ServiceLB'], PRIORITY_NORMAL, dict(front.match, **sources),
                              actions, owner=front.owner))
    return flows


def service_lb_groups(ctx: CloudEdge) -> list:
    """ServiceLB's select groups: a bucket per target node, DNAT to NodeIP:NodePort."""
    return [GroupSpec(front.group, tuple(
                Bucket((Ct(zone=EDGE_ZONE, commit=True, table=T['L3Forwarding'],
                           nat=Nat(dst=node.ip, port=front.sp.node_port)),))
                for node in front.targets), owner=front.owner)
            for front in ctx.fronts if front.group is not None]


def l3_forwarding(ctx: CloudEdge) -> list:
    """L3Forwarding: a connection DNATed to a node goes to it, over the underlay."""
    lb_mac = wiring.load_balancer_mac(ctx.cluster)
    flows = [flow(T['L3Forwarding'], PRIORITY_NORMAL, {'eth_type': ETH_IP, 'ipv4_dst': node.ip},
                  (SetField('eth_src', lb_mac), SetField('eth_dst', wiring.router_mac(node.ip)),
                   Output(wiring.EDGE_UNDERLAY_PORT)), owner=f'node {node.name}')
             for node in ctx.cluster.nodes]
    return flows + [flow(T['L3Forwarding'], PRIORITY_MISS, owner='no route')]


def output(ctx: CloudEdge) -> list:
    """Output: by destination MAC, to a node or to the external router."""
    flows = [flow(T['Output'], PRIORITY_NORMAL, {'eth_dst': wiring.router_mac(node.ip)},
                  (Output(wiring.EDGE_UNDERLAY_PORT),), owner=f'node {node.name}')
             for node in ctx.cluster.nodes]
    return flows + [
        flow(T['Output'], PRIORITY_NORMAL,
             {'eth_dst': wiring.router_mac(ctx.cluster.external_gateway)},
             (Output(wiring.EDGE_EXTERNAL_PORT),), owner='external network'),
        flow(T['Output'], PRIORITY_MISS, owner='output')]


STAGES = (classifier, conntrack_zone, conntrack_state, service_lb, l3_forwarding, output)


def cloud_edge(state) -> SwitchConfig:
    """Every flow and group of the cloud edge: the stages in pipeline order, and
    ServiceLB's groups."""
    ctx = CloudEdge(state)
    return SwitchConfig(flows=[f for stage in STAGES for f in stage(ctx)],
                        groups=service_lb_groups(ctx))
