"""The pipeline's vocabulary: its tables, marks, registers, zones, cookies, meters and
flow priorities, and the check that every flow keeps to the declared tables.

The node-bridge pipeline, with the stage of kube-proxy's iptables rules each table plays
(docs/pipeline.md has one section per table with a dumped flow; node_switch.py has one
function per table, under the same names):

  Classifier      (raw PREROUTING)  which port a packet came in on; a pod may only send
                                    from its own IP and MAC (spoof guard), else drop
  ARPResponder    (the node's ARP)  answers every ARP request with the gateway's MAC:
                                    all traffic is routed, never bridged or flooded
  UnSNAT          (conntrack)       replies to the node's masquerade (hairpin, egress)
                                    get their destination back (SNAT zone)
  ConntrackZone   (conntrack)       ct(nat) in the node's zone: replies are un-NATed
  ConntrackState  (conntrack)       invalid -> drop; established -> L3Forwarding;
                                    new -> ServiceLB
  ServiceLB       (KUBE-SERVICES)   ClusterIP:port (and NodeIP:nodePort, load balancer
                                    address, external IPs: KUBE-EXT) -> the Service's
                                    select group, whose buckets DNAT to one endpoint each
                                    (KUBE-SVC/KUBE-SEP); no ready endpoint -> the
                                    controller REJECTs
  EgressRule      (filter FORWARD)  NetworkPolicy: a new connection from a pod that a
                                    policy isolates for egress, judged by its rules
                                    (conjunctive matches), after any DNAT
  EgressDefaultRule                 ... denied when no rule admits it
  IngressRule     (filter FORWARD)  the same for a new connection to a pod isolated for
  IngressDefaultRule                ingress
  PolicyVerdict   (ACCEPT / DROP)   drops what was denied; an allowed connection goes on
                                    to be committed (or routed, when a Service's group
                                    committed it already)
  ConntrackCommit (conntrack)       commits every other new connection
  L3Forwarding    (routing)         local pod or node -> its port; other node's pods ->
                                    the underlay; external network -> SNAT
  SNAT            (KUBE-POSTROUTING) masquerade: a pod that reached itself through a
                                    Service (hairpin) is seen as the pod gateway; a pod
                                    talking to the external network as its node
  Output          (output)          delivers what SNAT translated (hairpin: back out the
                                    pod's own port)

(SessionAffinity, EndpointDNAT and AffinityLearn serve Services with
``sessionAffinity: ClientIP``: see ``TABLES`` for the iptables place each plays.)

The new connections of the pods NetworkPolicies isolate go through the policy tables:
from ServiceLB when no Service balanced them (before they are committed), from
L3Forwarding when a Service's group DNATed and committed them; network_policy.py
compiles them. Only a connection's first packets are judged. A Service connection the
policies drop was committed already: it keeps the PolicyDenied ct_mark, so that what
would answer it is dropped in ConntrackState.

Conntrack zones: all userspace bridges share one conntrack table, so each node bridge
tracks in its own zone (the node's index) and masquerades in another (1000 + index). A
connection is committed once on every node bridge it crosses.

Flow priorities are named, as the marks are: most flows sit at a few general levels (as
Antrea's priorityHigh/Normal/Low/Miss), and the few whose value is chosen to win or lose
against one particular neighbour are named for what they do.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.flows import SwitchConfig

ETH_IP = 0x0800
ETH_ARP = 0x0806
AFFINITY_COOKIE = 0x4B41FF0000000000    # the cookie of learned affinity flows (kept on resync)
REJECT_METER = 1
#: The most buckets one select group gets. An OpenFlow message carries at most 64 KiB, a
#: group_mod about 700 of ServiceLB's buckets (DNAT and commit: ~90 bytes each); a front
#: with more endpoints is split by bits 1..k of the client's source port over 2^k
#: groups of at most this many (service_fronts.py: ``split_endpoints``).
MAX_GROUP_BUCKETS = 512
REJECT_RATE_PPS = 200
SNAT_ZONE_BASE = 1000
EDGE_ZONE = 2000             # the cloud load balancer's conntrack zone


def conntrack_zones(cluster) -> list[int]:
    """Every conntrack zone the pipeline uses in ``cluster``: each node's tracking zone
    (its index) and masquerade zone, and the cloud edge's."""
    nodes = [node.index for node in cluster.nodes]
    return nodes + [SNAT_ZONE_BASE + i for i in nodes] + [EDGE_ZONE]
# ct_mark bits (the connection remembers them, both directions):
CT_MARK_NODE_MASQ = 0x1      # [0]: reached through a NodePort with externalTrafficPolicy
                             #      Cluster: masquerade as the node (KUBE-MARK-MASQ)
CT_MARK_POLICY_DENIED = 0x2  # [1]: a NetworkPolicy dropped the connection: its
                             #      answers are dropped too (ConntrackState)
# reg0 bits (one bridge's pipeline; registers start at 0 on every bridge):
REG0_LOCAL_ORIGIN = 0x1      # [0]: sent by this node or one of its pods (Classifier)
# reg1 bits:
REG1_POLICY_JUDGED = 0x1     # [0]: NetworkPolicy allowed the packet (PolicyVerdict): it
                             #      is not sent to the policy tables again
REG1_POLICY_DENIED = 0x2     # [1]: a *DefaultRule table denied it: PolicyVerdict drops
REG1_MASQUERADED = 0x4       # [2]: SNAT masqueraded it in this pass and sent it back to
                             #      L3Forwarding, where its source still reads as before
                             #      (a ct without a table changes the packet, not the
                             #      fields the tables match): no hairpin flow takes it

# ---------------------------------------------------------------- flow priorities
# The general levels.
PRIORITY_MISS = 0            # a table's last flow: drop, or go on to the next stage
PRIORITY_FALLBACK = 100      # a broad match under the specific NORMAL ones: any other
                             # port of a ClusterIP, another node's routes, masquerade
                             # of whatever else leaves, the external network
PRIORITY_LOW = 190           # under NORMAL: established traffic, a hostPort, the drop of
                             # a load balancer address's other sources (its source ranges)
PRIORITY_NORMAL = 200        # most flows: one port, one address, one Service port
PRIORITY_HIGH = 210          # an exception over a NORMAL flow: a gratuitous ARP, an
                             # INVALID connection, a sticky client, a hairpin reply,
                             # what the cloud edge tracks
# The special ones, each named for the flow it is.
PRIORITY_AFFINITY_PER_SOURCE_PORT = 1
                             # SessionAffinity: splits the datapath's cache per source
                             # port (session_affinity in node_switch.py says why), under
                             # the flows learned there (flows.LEARNED_PRIORITY, NORMAL)
PRIORITY_REPLY_UNMASQUERADED = 110
                             # SNAT: replies leave as they are, over the egress
                             # masquerade (FALLBACK)
PRIORITY_EDGE_DNATED = 195   # the cloud edge's ConntrackState: a DNATed connection from
                             # outside, between its new (NORMAL) and other (LOW) flows
PRIORITY_NODEPORT_FROM_NODE = 205
                             # ServiceLB: a NodePort, load balancer address or external IP
                             # with externalTrafficPolicy Local reached from the node itself
                             # or its pods, over the address's NORMAL flow
PRIORITY_NODEPORT_FROM_POD = 206
                             # ServiceLB: the same reached from any pod of the cluster
                             # (source in the cluster CIDR, kube-proxy's detect-local
                             # mode ClusterCIDR), over FROM_NODE, which it overlaps
PRIORITY_HAIRPIN = 220       # L3Forwarding: a pod that reached itself through a Service,
                             # over its route (NORMAL) and its own port's HIGH flow
PRIORITY_NODEPORT_MASQ_ROUTE = 230
                             # L3Forwarding: a NodePort connection marked for masquerade
                             # goes to SNAT first, over the hairpin
PRIORITY_NODEPORT_MASQ_SNAT = 250
                             # SNAT: that masquerade (then routed), over the hairpin's
                             # (NORMAL)
PRIORITY_POLICY_FROM_ISOLATED = 11
                             # ServiceLB: a new connection no Service balanced, from a
                             # pod isolated for egress, goes to EgressRule (over the
                             # miss, under every Service's flow)
PRIORITY_POLICY_TO_ISOLATED = 10
                             # ServiceLB: one to a pod isolated for ingress, to
                             # IngressRule (under the egress one: both, egress first)
PRIORITY_POLICY_DNATED_FROM_ISOLATED = 241
                             # L3Forwarding: a new connection a Service's group DNATed,
                             # from a pod isolated for egress: judged before it is
                             # routed (over the NodePort masquerade's 230)
PRIORITY_POLICY_DNATED_TO_ISOLATED = 240
                             # L3Forwarding: the same to a pod isolated for ingress
PRIORITY_POLICY_EXEMPT = 220  # IngressRule: what no policy may stop (the pod's own
                             # node, a pod reaching itself), over the rules (NORMAL, HIGH)


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
          ('EndpointDNAT', 'AffinityLearn', 'EgressRule', 'IngressRule', 'ConntrackCommit',
           'L3Forwarding')),
    Table(45, 'EndpointDNAT', 'KUBE-SEP DNAT for a client with session affinity',
          ('L3Forwarding',)),   # its miss resubmits to ServiceLB (an endpoint that went)
    Table(50, 'AffinityLearn', 'KUBE-SEP -m recent --set (remember the client)',
          ('L3Forwarding',)),
    Table(52, 'EgressRule', "NetworkPolicy egress rules (the plugin's filter FORWARD chain)",
          ('EgressDefaultRule', 'IngressRule')),
    Table(53, 'EgressDefaultRule', 'NetworkPolicy: egress isolation (default deny)',
          ('IngressRule', 'PolicyVerdict')),
    Table(54, 'IngressRule', "NetworkPolicy ingress rules (the plugin's filter FORWARD "
          'chain)', ('IngressDefaultRule', 'PolicyVerdict')),
    Table(55, 'IngressDefaultRule', 'NetworkPolicy: ingress isolation (default deny)',
          ('PolicyVerdict',)),
    Table(56, 'PolicyVerdict', 'NetworkPolicy: the verdict (-j DROP, or on to ACCEPT)',
          ('ConntrackCommit', 'L3Forwarding')),
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


_ALLOWED = {t.id: frozenset(T[n] for n in t.gotos) for t in TABLES}


def check_pipeline(config: SwitchConfig) -> None:
    """Refuse a goto (or a ct recirculation) that the source table does not declare."""
    allowed = _ALLOWED
    groups = {g.group_id: g for g in config.groups}
    for f in config.flows:
        if id(f) in config.checked:
            continue
        tables, group_ids = f.next_tables       # computed once per flow object
        targets = list(tables)
        for gid in group_ids:               # a group's buckets continue where its flow is
            if gid in groups:
                targets += groups[gid].next_tables
        for target in targets:
            if target not in allowed.get(f.table, ()):
                raise PipelineError(f'{TABLE_NAMES.get(f.table, f.table)} may not go to '
                                    f'{TABLE_NAMES.get(target, target)}: {f.to_ofctl()}')
