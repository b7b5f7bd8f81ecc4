"""The cloud's load balancer, between the external network and the nodes.

A new connection from outside to a LoadBalancer Service's address and port (from a
``loadBalancerSourceRanges`` address, when it has some) is DNATed to one target node's
NodeIP:NodePort and committed: a passthrough load balancer, the client's address kept
(Google's network load balancer, AWS's NLB with instance targets). The targets are every
Ready node with ``externalTrafficPolicy: Cluster``, and the nodes with an endpoint of
their own with ``Local`` (what the health checks of ``healthCheckNodePort`` find).
Replies are un-DNATed on the way back out; all other traffic passes by its destination
MAC, untracked.

How it picks the node: from the client's source port, not with a select group. A real
cloud load balancer hashes the connection's 5-tuple; the lab stands in for that hash
with ``SLOT_BITS`` bits of the source port, bits 1 to 6 (64 slots; bit 0 is left out:
Linux's connect() prefers even source ports, so it is almost always 0; more than 16
targets take more bits, four slots a target at least: ``slot_bits``). The slots are
numbered bit-reversed (slot ``s`` of port ``p`` is ``(p >> 1) & 63``, its place
``reverse6(s)``), and each target gets an equal contiguous run of places (its share
within 1/64 of the others'). An aligned power-of-two block of places is a fixed value of
the low bits of ``p >> 1``: one masked ``tcp_src``/``udp_src`` match, so a target takes
a few flows (3 targets: 3, 5 and 3), a single target one flow without a port match.
And since consecutive source ports (a client's connections step by 2) walk the slots
in order, their places jump by halves and quarters of the range: consecutive
connections of one client go to different nodes. ``pick(port, n)`` says which target
a port gets, as the flows do (``kubelab trace`` explains the edge's step with it). A
node splits a Service of more than 512 endpoints over 2^k groups by bits 1..k of the
source port (service_fronts.py); for such a Service the edge reads the bits above those
(``port_shift``), or each node would reach only the groups of its own slots.

Why not a select group, as the nodes balance to their endpoints: on the lab's own Open
vSwitch 4.0 the edge's cable to the underlay is a patch port (services/wiring.py), so
the edge and the node behind it are one datapath pass, and Open vSwitch's dp_hash select
method hashes a packet only once a pass (a packet whose dp_hash is set keeps it: it is
read-only; ofproto-dpif-xlate.c ``pick_dp_hash_select_group``). The node's group then
picked its endpoint from the edge's hash, and each node sent the load balancer's
connections to only some of the endpoints (4 of 6, measured). With no hash at the edge
the node's group hashes the packet itself, as a real node picks on its own.

What it costs the datapath: a packet from outside to the pool is looked up with a
recirculation (its route is the lookup's verdict: new, or which node it went to), a SYN
recirculates once more (the commit of the DNAT, in the ServiceLB flow); an answer from a
node not at all (its un-DNAT needs no verdict). Committing the DNAT without a
recirculation and routing by the flow's node would save one more on a SYN, but Open
vSwitch would go on translating the pass with the packet's old addresses, across the
patch ports into the node's bridge, whose flows match the NodePort's address: not done.

``cloud_edge(state)`` builds it as the node bridge is built: one function per table
it uses, in pipeline order (``STAGES``), over the node bridge's table names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property

from controller.flows import Ct, Nat, Output, SetField, SwitchConfig, ct_state, flow
from controller.pipeline.service_fronts import split_count
from controller.pipeline.tables import (EDGE_ZONE, ETH_IP, PRIORITY_EDGE_DNATED,
                                        PRIORITY_HIGH, PRIORITY_MISS,
                                        PRIORITY_NORMAL, T)
from services import wiring

OWNER = 'cloud load balancer'
#: The source port bits the edge picks a node from: bits 1..SLOT_BITS (bit 0 left out),
#: more for more than 16 targets (``slot_bits``).
SLOT_BITS = 6
SLOTS = 1 << SLOT_BITS


def slot_bits(count: int) -> int:
    """How many bits of the port pick one of ``count`` targets: 6, or enough for four
    slots a target (17 to 200 nodes: 7 to 10 bits), so that every target has a share
    and the shares stay within a quarter of each other."""
    return max(SLOT_BITS, (count - 1).bit_length() + 2)


def _reverse(value: int, bits: int) -> int:
    """``value``'s ``bits`` low bits in reverse order."""
    return int(format(value, f'0{bits}b')[::-1], 2) if bits else 0


def port_shift(sp) -> int:
    """How many bits above bit 0 the edge skips for ``sp``: the k of the 2^k groups its
    nodes split it over by bits 1..k (more than 512 endpoints), else 0."""
    return split_count(len(sp.endpoints)).bit_length() - 1


def place(port: int, bits: int = SLOT_BITS, shift: int = 0) -> int:
    """A source port's place among the 2**bits slots: its slot ``(port >> (1 + shift)) &
    (2**bits - 1)``, bit-reversed."""
    return _reverse((port >> (1 + shift)) & ((1 << bits) - 1), bits)


def shares(count: int) -> list[range]:
    """The places of each of ``count`` targets: equal contiguous runs (within one)."""
    slots = 1 << slot_bits(count)
    return [range(i * slots // count, (i + 1) * slots // count) for i in range(count)]


def pick(port: int, count: int, shift: int = 0) -> int:
    """The target (0 .. count-1) a connection from source port ``port`` goes to."""
    spot = place(port, slot_bits(count), shift)
    return next(i for i, run in enumerate(shares(count)) if spot in run)


def port_matches(run: range, bits: int = SLOT_BITS,
                 shift: int = 0) -> list[tuple[int, int] | None]:
    """The (value, mask) matches on the source port that cover the places ``run`` (of
    2**bits): one per aligned power-of-two block of it (places ``a .. a + 2**k - 1``
    share their top ``bits - k`` bits, which are the slot's low bits reversed; the slot
    starts at bit ``1 + shift``). None: every port."""
    matches, start = [], run.start
    while start < run.stop:
        size = 1 << bits
        while start % size or start + size > run.stop:
            size //= 2
        fixed = bits - size.bit_length() + 1          # the slot bits the block fixes
        if not fixed:
            matches.append(None)
        else:
            value = _reverse(start >> (bits - fixed), fixed)
            matches.append((value << (1 + shift), ((1 << fixed) - 1) << (1 + shift)))
        start += size
    return matches


@dataclass(frozen=True)
class EdgeFront:
    """A LoadBalancer Service port's address and port, and the nodes it balances to."""
    sp: object              # the ServicePort (with lb_ip and node_port)
    match: dict             # protocol, load balancer address, port
    targets: tuple          # the nodes whose NodePort takes its connections (none: drop)

    @property
    def owner(self) -> str:
        return f'service {self.sp.key}'

    @property
    def port_field(self) -> str:
        return 'tcp_src' if self.sp.protocol == 'TCP' else 'udp_src'


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
        fronts = []
        for sp in self.balanced:
            match = {'eth_type': ETH_IP, 'ip_proto': sp.proto_number, 'ipv4_dst': sp.lb_ip,
                     ('tcp_dst' if sp.protocol == 'TCP' else 'udp_dst'): sp.port}
            fronts.append(EdgeFront(sp, match, tuple(self.state.lb_targets(sp))))
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
    """ServiceLB: a load balancer's address and port (per allowed source range) and a
    block of source port slots -> DNAT to that block's target node, committed, on to
    L3Forwarding; dropped when no target is healthy."""
    flows = [flow(T['ServiceLB'], PRIORITY_MISS, owner=OWNER)]
    for front in ctx.fronts:
        picks = [({}, ())] if not front.targets else [
            ({} if ports is None else {front.port_field: ports},
             (Ct(zone=EDGE_ZONE, commit=True, table=T['L3Forwarding'],
                 nat=Nat(dst=node.ip, port=front.sp.node_port)),))
            for node, run in zip(front.targets, shares(len(front.targets)))
            for ports in port_matches(run, slot_bits(len(front.targets)),
                                      port_shift(front.sp))]
        for source in front.sp.source_ranges or ('0.0.0.0/0',):
            net = ipaddress.IPv4Network(source)
            sources = {} if net.prefixlen == 0 else {
                'ipv4_src': (str(net.network_address), str(net.netmask))}
            flows += [flow(T['ServiceLB'], PRIORITY_NORMAL,
                           dict(front.match, **sources, **ports), actions,
                           owner=front.owner)
                      for ports, actions in picks]
    return flows


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
    """Every flow of the cloud edge (it has no groups): the stages in pipeline order."""
    ctx = CloudEdge(state)
    return SwitchConfig(flows=[f for stage in STAGES for f in stage(ctx)], groups=[])
