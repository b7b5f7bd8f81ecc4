"""The node bridge: kube-proxy, the node's routing and its masquerade as OpenFlow tables.

``node_bridge(state, node)`` runs ``STAGES``, one function per table in pipeline order,
each named as its section of docs/pipeline.md and returning that table's flows only;
tables.py has the stage list with the iptables place each table plays. What several
stages read (the node's zones and MACs, its pods, its Service fronts) is worked out
once, in ``NodeBridge``.

NetworkPolicy adds five tables before ConntrackCommit (EgressRule, EgressDefaultRule,
IngressRule, IngressDefaultRule, PolicyVerdict) and a few flows in ConntrackState,
ServiceLB and L3Forwarding; network_policy.py compiles them, from ``NodeBridge.policy``.

A Service port is reached at one or more *fronts* on a node (service_fronts.py says
where, over which endpoints and groups). ServiceLB sends a front's new connections to
its group; with session affinity SessionAffinity, EndpointDNAT and AffinityLearn add
their flows for the same front. These per-front flows and the groups are computed per
Service port (``service_part``) and memoized while it does not change (memo.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property

from controller.flows import (Ct, Group, LearnAffinity, MeterSpec, Nat,
                              Output, Resubmit, SetField, SwitchConfig, ToController,
                              ct_state, flow)
from controller.pipeline import endpoint_moves, l2_announce, memo, network_policy, shared
from controller.pipeline.service_fronts import (Front, bind_fronts, front_templates,
                                                group_ids, source_port_bits)
from controller.pipeline.tables import (
    AFFINITY_COOKIE, CT_MARK_NODE_MASQ, ETH_IP, PRIORITY_AFFINITY_PER_SOURCE_PORT,
    PRIORITY_FALLBACK, PRIORITY_HAIRPIN, PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_MISS,
    PRIORITY_NODEPORT_MASQ_ROUTE, PRIORITY_NODEPORT_MASQ_SNAT, PRIORITY_NORMAL,
    PRIORITY_REPLY_UNMASQUERADED, REG1_MASQUERADED, REJECT_METER, REJECT_RATE_PPS,
    SNAT_ZONE_BASE, T, check_pipeline)
from controller.state import PROTOCOL_NUMBERS
from services import wiring


@dataclass(frozen=True)
class NodeBridge:
    """What the stages of one node's bridge read."""
    state: object
    node: object

    @property
    def zone(self) -> int:
        """The node's conntrack zone (its index)."""
        return self.node.index

    @property
    def snat_zone(self) -> int:
        """The zone the node masquerades in."""
        return SNAT_ZONE_BASE + self.node.index

    @property
    def gateway(self) -> str:
        return wiring.pod_gateway(self.node)

    @property
    def gw_mac(self) -> str:
        return wiring.mac_for(self.gateway)

    @property
    def uplink_mac(self) -> str:
        return wiring.router_mac(self.node.ip)

    @property
    def node_owner(self) -> str:
        return f'node {self.node.name}'

    @cached_property
    def local_pods(self) -> list:
        return self.state.pods_on(self.node.name)

    @cached_property
    def service_parts(self) -> list[dict]:
        """Per Service port, in order, its flows in the stages that serve its fronts
        (stage name -> flows, 'groups' -> its groups, 'vip' -> its ClusterIP's REJECT
        of other ports): memoized (memo.py), as are its fronts before group ids."""
        ports = self.state.proxied_ports
        pods = self.state.cluster.cluster_cidr
        same = memo.same_ports(('parts', self.node.name), (self.node, pods), ports)
        if same is not None:     # the very Service ports of the last build: its parts
            parts, taken, spans, given = same
            self.groups_taken.update(taken)
            self.group_spans.update(spans)
            self.groups_given.update(given)
            return parts
        shares = self.state.shares
        templates = memo.per_service(
            ('fronts', self.node.name),
            [(sp, (self.node, pods, shares(sp)), sp) for sp in ports],
            lambda sp: front_templates(sp, self.node, pods, shares(sp)),
            endpoint_moves.moved_templates)
        taken, given, items = self.groups_taken, self.groups_given, []
        for sp, mine in zip(ports, templates):
            gids = group_ids(sp, mine, taken, self.group_spans, given)
            items.append((sp, (self.node, gids), (sp, mine, gids)))
        parts = memo.per_service(('node', self.node.name), items, lambda arg: service_part(
            self, bind_fronts(*arg)), endpoint_moves.regrouped)
        memo.remember_ports(('parts', self.node.name), (self.node, pods), ports,
                            (parts, frozenset(taken), frozenset(self.group_spans),
                             dict(given)))
        return parts

    def remember(self, sp, templates: list, gids: tuple, part: dict) -> None:
        """Keep what the incremental path computed for ``sp`` in the memo, as
        ``service_parts`` would have."""
        memo.put(('fronts', self.node.name), sp,
                 (self.node, self.state.cluster.cluster_cidr, self.state.shares(sp)),
                 templates)
        memo.put(('node', self.node.name), sp, (self.node, gids), part)

    def remember_all(self, parts, taken, spans, given: dict) -> None:
        """Keep ``parts`` (the incremental path's, one per proxied Service port of the
        state, in order; or a function that gives them, None when it cannot any more)
        as ``service_parts`` would have: a full pass over the same Service ports (a
        pod's address next) takes them as they are."""
        kept = (frozenset(taken), frozenset(spans), dict(given))

        def built():
            mine = parts() if callable(parts) else parts
            return None if mine is None else (mine, *kept)
        memo.remember_ports(('parts', self.node.name),
                            (self.node, self.state.cluster.cluster_cidr),
                            self.state.proxied_ports, built)

    @cached_property
    def groups_taken(self) -> set:
        """Every group id ``service_parts`` gave (filled as it gives them)."""
        return set()

    @cached_property
    def groups_given(self) -> dict:
        """The ids of the shared group keys (service_fronts.py's ``SHARED``) given."""
        return {}

    @cached_property
    def group_spans(self) -> set:
        """The group ids a probe past a collision passed over or landed on."""
        return set()

    def part_flows(self, stage: str) -> list:
        return [f for part in self.service_parts for f in part[stage]]

    def checked_parts(self) -> set:
        """The ids of the flows of the memoized parts, each checked against the
        pipeline when its part was computed (``service_part``)."""
        return {id(f) for part in self.service_parts for stage in PART_STAGES
                for f in part[stage]} | {id(part['vip'][1]) for part in self.service_parts}

    @cached_property
    def policy(self) -> network_policy.NodePolicy:
        return network_policy.node_policy(self.state, self.node)

    @property
    def external_match(self) -> dict:
        ext = ipaddress.IPv4Network(self.state.cluster.external_cidr)
        return {'eth_type': ETH_IP,
                'ipv4_dst': (str(ext.network_address), str(ext.netmask))}


# ---------------------------------------------------------------- the stages
def classifier(ctx: NodeBridge) -> list:
    """Classifier: the underlay, the node itself, each pod (spoof guard); else drop."""
    node = ctx.node
    flows = [flow(T['Classifier'], PRIORITY_NORMAL,
                  {'in_port': wiring.UPLINK_PORT, 'eth_type': ETH_IP},
                  goto=T['UnSNAT'], owner='underlay'),
             flow(T['Classifier'], PRIORITY_MISS, owner='spoof guard')]
    flows += shared.port_guard(wiring.NODE_HOST_PORT, node.ip, wiring.mac_for(node.ip),
                               'UnSNAT', ctx.node_owner)
    for pod in ctx.local_pods:
        flows += shared.port_guard(wiring.pod_port(node, pod.ip), pod.ip,
                                   wiring.mac_for(pod.ip), 'UnSNAT', pod.owner)
    return flows + l2_announce.uplink_arp_classifier(ctx)


def arp_responder(ctx: NodeBridge) -> list:
    """ARPResponder: every ARP request is answered with the pod gateway's MAC."""
    return shared.arp_responder(ctx.gw_mac, ctx.node_owner) + \
        l2_announce.uplink_arp_responder(ctx)


def un_snat(ctx: NodeBridge) -> list:
    """UnSNAT: replies to the addresses this node masquerades as."""
    # Both lookups in one flow, the first without recirculation: every bridge is a port
    # set of one userspace datapath, a packet keeps its recirculation count from bridge
    # to bridge, and Debian 12's datapath drops it at the seventh. A load balancer's SYN
    # to a node that sends it to an endpoint on another node takes six this way (seven
    # with a recirculation here; services/wiring.py, DEEPEST_PASS).
    flows = [flow(T['UnSNAT'], PRIORITY_NORMAL, {'eth_type': ETH_IP, 'ipv4_dst': addr},
                  (Ct(zone=ctx.snat_zone, nat=Nat()),
                   Ct(zone=ctx.zone, table=T['ConntrackState'], nat=Nat())), owner=why)
             for addr, why in ((ctx.gateway, 'hairpin masquerade'),
                               (ctx.node.ip, 'egress masquerade'))]
    return flows + [flow(T['UnSNAT'], PRIORITY_MISS, goto=T['ConntrackZone'],
                         owner='conntrack')]


def conntrack_zone(ctx: NodeBridge) -> list:
    """ConntrackZone: look the packet up in the node's zone; replies are un-NATed."""
    return [flow(T['ConntrackZone'], PRIORITY_NORMAL, {'eth_type': ETH_IP},
                 (Ct(zone=ctx.zone, table=T['ConntrackState'], nat=Nat()),),
                 owner='conntrack')]


def conntrack_state(ctx: NodeBridge) -> list:
    """ConntrackState: drop invalid, route established, send new connections to
    ServiceLB (past SessionAffinity when a Service port is sticky)."""
    sticky = any(sp.affinity_timeout for sp in ctx.state.proxied_ports)
    return [
        flow(T['ConntrackState'], PRIORITY_HIGH,
             {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+inv')}, owner='conntrack'),
        flow(T['ConntrackState'], PRIORITY_NORMAL,
             {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+new')},
             (Resubmit(T['SessionAffinity']),) if sticky else (),
             goto=T['ServiceLB'], owner='conntrack'),
        flow(T['ConntrackState'], PRIORITY_LOW,
             {'eth_type': ETH_IP, 'ct_state': ct_state('+trk-new')},
             goto=T['L3Forwarding'], owner='conntrack'),
        flow(T['ConntrackState'], PRIORITY_MISS, owner='conntrack'),
        *network_policy.conntrack_state_flows(ctx.policy)]


def session_affinity(ctx: NodeBridge) -> list:
    """SessionAffinity: its flows are learned by the switch (see affinity_learn); the
    controller adds one per sticky front, which never matches."""
    # A flow that looks at the source port (0: never used): the userspace datapath
    # then caches this Service's new connections per source port, so each one is
    # looked up afresh and finds what the previous one learned (else a cached miss
    # would send the client's next connections to the group for a few hundred ms).
    return ctx.part_flows('session_affinity')


def _session_affinity(front: Front) -> list:
    if not front.sticky:
        return []
    return [flow(T['SessionAffinity'], PRIORITY_AFFINITY_PER_SOURCE_PORT,
                 dict(front.match, **{front.l4_dst.replace('dst', 'src'): 0}),
                 owner=front.owner)]


def service_lb(ctx: NodeBridge) -> list:
    """ServiceLB: per Service port a flow for its ClusterIP and, for a NodePort, one for
    this node's IP; each goes to a select group whose buckets DNAT to one endpoint
    (``service_lb_groups``). Then hostPorts, and the ClusterIPs' other ports."""
    node = ctx.node
    flows = [flow(T['ServiceLB'], PRIORITY_MISS, goto=T['ConntrackCommit'],
                  owner='conntrack'), *network_policy.service_lb_flows(ctx.policy)]
    flows += ctx.part_flows('service_lb')
    # hostPort (the CNI portmap plugin's DNAT): this node's address and the port ->
    # the pod, the client's address kept, whether the pod is ready or not.
    for pod in ctx.local_pods:
        for protocol, host_port, container_port in pod.host_ports:
            number = PROTOCOL_NUMBERS[protocol]
            flows.append(flow(T['ServiceLB'], PRIORITY_LOW, {
                'eth_type': ETH_IP, 'ip_proto': number, 'ipv4_dst': node.ip,
                ('tcp_dst' if number == 6 else 'udp_dst'): host_port},
                (Ct(zone=ctx.zone, commit=True, table=T['L3Forwarding'],
                    nat=Nat(dst=pod.ip, port=container_port)),),
                owner=f'{pod.owner} hostPort'))
    flows += lb_firewall(ctx)
    vips = {}
    for part in ctx.service_parts:
        vips.setdefault(part['vip'][0], part['vip'][1])
    return flows + [vips[vip] for vip in sorted(vips)]


def _vip_reject(sp) -> tuple:
    """(ClusterIP, the flow that rejects its ports no Service port declares)."""
    # A ClusterIP answers only on its ports: anything else is rejected, as nftables'
    # kube-proxy does (the controller drops what it cannot answer, e.g. ICMP).
    return sp.vip, flow(T['ServiceLB'], PRIORITY_FALLBACK,
                        {'eth_type': ETH_IP, 'ipv4_dst': sp.vip}, (ToController(),),
                        meter=REJECT_METER, owner=f'service {sp.namespace}/{sp.service}')


def lb_firewall(ctx: NodeBridge) -> list:
    """ServiceLB: a load balancer address with ``loadBalancerSourceRanges`` drops its
    port's connections from any other source, pods and nodes included (kube-proxy's
    KUBE-FW / KUBE-PROXY-FIREWALL); the allowed ones have their fronts above."""
    return [flow(T['ServiceLB'], PRIORITY_LOW, {
                'eth_type': ETH_IP, 'ip_proto': sp.proto_number, 'ipv4_dst': sp.lb_ip,
                ('tcp_dst' if sp.protocol == 'TCP' else 'udp_dst'): sp.port},
                owner=f'service {sp.key}')
            for sp in ctx.state.proxied_ports if sp.lb_ip and sp.source_ranges]


def _balance(front: Front) -> list:
    """ServiceLB's flows for one front: to its group; REJECT when the Service has no
    endpoint at all; drop when it has some but a traffic policy leaves none here.

    With session affinity the group's buckets also learn the client's choice into
    SessionAffinity; a later connection of that client finds it there (reg5[0] set),
    and goes to EndpointDNAT, which DNATs to the endpoint in reg3/reg4."""
    match, owner = front.match, front.owner
    if not front.sp.endpoints:
        return [flow(T['ServiceLB'], front.priority, match, (ToController(),),
                     meter=REJECT_METER, owner=owner)]
    if front.group is None:
        return [flow(T['ServiceLB'], front.priority, match, owner=owner)]
    # Session affinity: remember which Service address and port this is (reg7, reg8)
    # so that AffinityLearn, after the DNAT, can learn the client's endpoint.
    remember = (SetField('reg7', int(ipaddress.IPv4Address(match['ipv4_dst']))),
                SetField('reg8', match[front.l4_dst])) if front.affinity else ()
    # A front split over 2^k groups: bits 1..k of the source port choose one.
    l4_src = front.l4_dst.replace('dst', 'src')
    flows = [flow(T['ServiceLB'], front.priority, dict(match, **{l4_src: source_port_bits(
                 i, len(front.split))}) if front.split else match,
                 (*remember, Group(gid)), owner=owner)
             for i, gid in enumerate(front.split or (front.group,))]
    if front.affinity:
        flows.append(flow(T['ServiceLB'], PRIORITY_HIGH, dict(match, reg5=(1, 1)),
                          (SetField('reg6', front.mark or 0),), goto=T['EndpointDNAT'],
                          owner=owner))
    return flows


def service_lb_groups(ctx: NodeBridge) -> list:
    """ServiceLB's select groups: per front with endpoints, a bucket per endpoint that
    DNATs to it and commits the connection (with the front's mark)."""
    # Service ports that select alike share a group (service_fronts.py): once each.
    return list({g.group_id: g for part in ctx.service_parts for g in part['groups']}
                .values())


def _groups(ctx: NodeBridge, fronts: list) -> tuple:
    groups, done = [], set()
    for front in fronts:
        if front.group is None or front.group in done:
            continue            # a group several fronts share is built once
        done.add(front.group)
        after = T['AffinityLearn'] if front.affinity else T['L3Forwarding']
        for i, gid in enumerate(front.split or (front.group,)):
            groups.append(endpoint_moves.group(gid, ctx.zone, after, front.mark,
                                               front.endpoints, i, front.group_owner))
    return endpoint_moves.interned(groups)


def endpoint_dnat(ctx: NodeBridge) -> list:
    """EndpointDNAT: a sticky client DNATed to the endpoint it had (reg3, reg4)."""
    # A client remembered for an endpoint that is gone: forget it, choose again.
    return [flow(T['EndpointDNAT'], PRIORITY_MISS, None,
                 (SetField('reg5', 0), Resubmit(T['ServiceLB'])), owner='session affinity'),
            *ctx.part_flows('endpoint_dnat')]


def _endpoint_dnat(ctx: NodeBridge, front: Front) -> list:
    if not front.sticky:
        return []
    flows = []
    for ep in front.endpoints:
        hit = {'eth_type': ETH_IP, 'reg3': int(ipaddress.IPv4Address(ep.ip)),
               'reg4': ep.port, 'reg6': front.mark or 0}
        flows.append(flow(T['EndpointDNAT'], PRIORITY_NORMAL, hit, (
            Ct(zone=ctx.zone, commit=True, table=T['L3Forwarding'],
               nat=Nat(dst=ep.ip, port=ep.port), mark=front.mark),), owner=front.owner))
    return flows


def affinity_learn(ctx: NodeBridge) -> list:
    """AffinityLearn: after the group's DNAT, learn the client's endpoint into
    SessionAffinity for the Service address and port ServiceLB put in reg7/reg8."""
    return ctx.part_flows('affinity_learn')


def _affinity_learn(front: Front) -> list:
    if not front.sticky:
        return []
    proto = front.match['ip_proto']
    return [flow(
        T['AffinityLearn'], PRIORITY_NORMAL,
        {'eth_type': ETH_IP, 'ip_proto': proto,
         'reg7': int(ipaddress.IPv4Address(front.match['ipv4_dst'])),
         'reg8': front.match[front.l4_dst]},
        (LearnAffinity(T['SessionAffinity'], front.affinity, proto, AFFINITY_COOKIE),),
        goto=T['L3Forwarding'], owner=front.owner)]


def service_part(ctx: NodeBridge, fronts: list) -> dict:
    """One Service port's flows in each stage that serves its ``fronts``, and its groups
    (``NodeBridge.service_parts`` remembers them while the Service port is unchanged)."""
    part = {'session_affinity': [f for front in fronts for f in _session_affinity(front)],
            'service_lb': [f for front in fronts for f in _balance(front)],
            'endpoint_dnat': [f for front in fronts for f in _endpoint_dnat(ctx, front)],
            'affinity_learn': [f for front in fronts for f in _affinity_learn(front)],
            'groups': _groups(ctx, fronts), 'vip': _vip_reject(fronts[0].sp)}
    check_pipeline(SwitchConfig(flows=[f for stage in PART_STAGES for f in part[stage]]
                                + [part['vip'][1]], groups=part['groups']))
    return part


PART_STAGES = ('session_affinity', 'service_lb', 'endpoint_dnat', 'affinity_learn')


def egress_rule(ctx: NodeBridge) -> list:
    """EgressRule: a new connection from an isolated pod, judged by its egress rules."""
    return network_policy.egress_rule(ctx.policy)


def egress_default_rule(ctx: NodeBridge) -> list:
    """EgressDefaultRule: ... denied when none admits it."""
    return network_policy.egress_default_rule(ctx.policy)


def ingress_rule(ctx: NodeBridge) -> list:
    """IngressRule: a new connection to an isolated pod, judged by its ingress rules."""
    return network_policy.ingress_rule(ctx.policy, ctx.node)


def ingress_default_rule(ctx: NodeBridge) -> list:
    """IngressDefaultRule: ... denied when none admits it."""
    return network_policy.ingress_default_rule(ctx.policy)


def policy_verdict(ctx: NodeBridge) -> list:
    """PolicyVerdict: drop what was denied; commit or route what was allowed."""
    return network_policy.policy_verdict(ctx.policy, ctx.zone)


def conntrack_commit(ctx: NodeBridge) -> list:
    """ConntrackCommit: commit every new connection ServiceLB did not DNAT."""
    return [flow(T['ConntrackCommit'], PRIORITY_NORMAL,
                 {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+new')},
                 (Ct(zone=ctx.zone, commit=True),), goto=T['L3Forwarding'],
                 owner='conntrack'),
            flow(T['ConntrackCommit'], PRIORITY_MISS, goto=T['L3Forwarding'],
                 owner='conntrack')]


def l3_forwarding(ctx: NodeBridge) -> list:
    """L3Forwarding: the DNATed new connections of isolated pods to the NetworkPolicy
    tables first; local pods and the node, then the other nodes, then the outside."""
    node, gw_mac = ctx.node, ctx.gw_mac
    flows = network_policy.l3_forwarding_flows(ctx.policy)
    for pod in ctx.local_pods:
        port = wiring.pod_port(node, pod.ip)
        flows.append(shared.route(pod.ip + '/32', port, gw_mac, wiring.mac_for(pod.ip),
                                  pod.owner))
        # Hairpin: the pod reached itself through a Service. OpenFlow never outputs to
        # the in_port, and the pod would drop a packet from its own address: masquerade
        # it as the gateway and send it back out the pod's own port (IN_PORT, Output).
        # Not once the NodePort masquerade has made its source the node's (reg1).
        flows += [flow(T['L3Forwarding'], PRIORITY_HAIRPIN,
                       {'eth_type': ETH_IP, 'in_port': port, 'ipv4_src': pod.ip,
                        'ipv4_dst': pod.ip, 'reg1': (0, REG1_MASQUERADED)},
                       goto=T['SNAT'], owner=pod.owner),
                  flow(T['L3Forwarding'], PRIORITY_HIGH,
                       {'eth_type': ETH_IP, 'in_port': port, 'ipv4_dst': pod.ip},
                       goto=T['Output'], owner=pod.owner)]
    # NodePort with externalTrafficPolicy Cluster: the connection carries the mark; its
    # packets (not its replies) are masqueraded as this node (SNAT), then routed.
    flows.append(flow(T['L3Forwarding'], PRIORITY_NODEPORT_MASQ_ROUTE,
                      {'eth_type': ETH_IP, 'ct_state': ct_state('+trk-rpl'),
                       'ct_mark': (CT_MARK_NODE_MASQ, CT_MARK_NODE_MASQ)},
                      goto=T['SNAT'], owner='nodeport masquerade'))
    flows.append(shared.route(node.ip + '/32', wiring.NODE_HOST_PORT, gw_mac,
                              wiring.mac_for(node.ip), ctx.node_owner))
    for other in ctx.state.cluster.nodes:
        if other.name == node.name:
            continue
        for dst in (other.pod_cidr, other.ip + '/32'):
            flows += shared.also_back_out(shared.route(
                dst, wiring.UPLINK_PORT, ctx.uplink_mac, wiring.router_mac(other.ip),
                f'node {other.name}', PRIORITY_FALLBACK))
    # The outside: every new connection leaves masqueraded as the node (SNAT).
    flows += [flow(T['L3Forwarding'], PRIORITY_FALLBACK, ctx.external_match,
                   goto=T['SNAT'], owner='external network'),
              flow(T['L3Forwarding'], PRIORITY_MISS, owner='no route')]
    return flows


def snat(ctx: NodeBridge) -> list:
    """SNAT: masquerade a NodePort connection (then route it), a hairpin (as the
    gateway) and what leaves for the outside (as the node), keeping the client's source
    port when no other connection of the zone holds it (``nat(src=IP)``). kube-proxy
    masquerades with ``--random-fully`` (a random port per connection); the lab does
    not, on purpose (docs/pipeline.md, SNAT): a masqueraded connection that meets the
    server's TIME_WAIT socket of another client's connection has its SYN refused about
    half the time and goes through when the client retries it, a few ms later (as on a
    real node, once the lab has turned off Open vSwitch's TCP sequence checks:
    topo/network.py); a port that follows the client's meets that least often.

    No masquerade recirculates: its ``ct`` has no table, so the datapath translates the
    packet and the same pass goes on, to Output (hairpin, egress: routed already) or,
    for a NodePort, to L3Forwarding to be routed (where the tables still read the
    client's source and no conntrack state: reg1 keeps the hairpin flows off it). Every
    masqueraded packet, a SYN included, takes one datapath pass less (docs/pipeline.md,
    SNAT)."""
    node = ctx.node
    pod_net = ipaddress.IPv4Network(node.pod_cidr)
    return [
        flow(T['SNAT'], PRIORITY_NODEPORT_MASQ_SNAT,
             {'eth_type': ETH_IP, 'ct_state': ct_state('+trk-rpl'),
              'ct_mark': (CT_MARK_NODE_MASQ, CT_MARK_NODE_MASQ)},
             (Ct(zone=ctx.snat_zone, commit=True, nat=Nat(src=node.ip)),
              SetField('reg1', REG1_MASQUERADED), Resubmit(T['L3Forwarding'])),
             owner='nodeport masquerade'),
        flow(T['SNAT'], PRIORITY_NORMAL, {'eth_type': ETH_IP, 'ipv4_dst': (
             node.pod_cidr.split('/')[0], str(pod_net.netmask))},
             (Ct(zone=ctx.snat_zone, commit=True, nat=Nat(src=ctx.gateway)),),
             goto=T['Output'], owner='hairpin masquerade'),
        # The pods' and the node's own connections share one SNAT zone, so their ports
        # never clash. Replies (to connections that came in from outside) leave as they
        # are.
        flow(T['SNAT'], PRIORITY_REPLY_UNMASQUERADED,
             {'eth_type': ETH_IP, 'ct_state': ct_state('+trk+rpl')},
             goto=T['Output'], owner='egress masquerade'),
        flow(T['SNAT'], PRIORITY_FALLBACK, {'eth_type': ETH_IP},
             (Ct(zone=ctx.snat_zone, commit=True, nat=Nat(src=node.ip)),),
             goto=T['Output'], owner='egress masquerade'),
        flow(T['SNAT'], PRIORITY_MISS, owner='egress masquerade')]


def output(ctx: NodeBridge) -> list:
    """Output: what SNAT translated, back out a hairpin pod's own port or to the
    external router."""
    cluster = ctx.state.cluster
    flows = [flow(T['Output'], PRIORITY_NORMAL, {'eth_type': ETH_IP, 'ipv4_dst': pod.ip},
                  (SetField('eth_src', ctx.gw_mac), SetField('eth_dst', wiring.mac_for(pod.ip)),
                   Output('in_port')), owner=pod.owner)
             for pod in ctx.local_pods]
    flows += shared.also_back_out(flow(
        T['Output'], PRIORITY_FALLBACK, ctx.external_match,
        (SetField('eth_src', ctx.uplink_mac),
         SetField('eth_dst', wiring.outside_mac(cluster)),
         Output(wiring.UPLINK_PORT)), owner='external network'))
    return flows + [flow(T['Output'], PRIORITY_MISS, owner='output')]


STAGES = (classifier, arp_responder, un_snat, conntrack_zone, conntrack_state,
          session_affinity, service_lb, endpoint_dnat, affinity_learn, egress_rule,
          egress_default_rule, ingress_rule, ingress_default_rule, policy_verdict,
          conntrack_commit, l3_forwarding, snat, output)


def node_bridge(state, node) -> SwitchConfig:
    """Every flow, group and meter of ``node``'s bridge: the stages in pipeline order,
    ServiceLB's groups, and the meter that rate-limits REJECTs."""
    return node_bridge_context(NodeBridge(state, node))


def node_bridge_context(ctx: NodeBridge) -> SwitchConfig:
    """``node_bridge`` of ``ctx``, which keeps its Service parts (``service_parts``) and
    group ids for the incremental path (incremental.py)."""
    return SwitchConfig(flows=[f for stage in STAGES for f in stage(ctx)],
                        groups=service_lb_groups(ctx),
                        meters=[MeterSpec(REJECT_METER, REJECT_RATE_PPS, REJECT_RATE_PPS)],
                        checked=ctx.checked_parts())
