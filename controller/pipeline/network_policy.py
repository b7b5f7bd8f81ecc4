"""NetworkPolicy as flows: the network plugin's firewall in a node bridge's pipeline.

What a policy selects and admits is services/networkpolicy.py's answer; this module
turns it into five tables (tables.py has them with their iptables place) and a few
flows around them, on the model of Antrea's K8s NetworkPolicy tables:

* Only the *new* connections of the pods some policy isolates are judged, where they
  have their final destination (any Service DNAT done) and before they are routed.
  Those no Service balanced come from ServiceLB (its flows for a source isolated for
  egress, a destination isolated for ingress, under every Service's flow) before they
  are committed; those a Service's group (or a hostPort, or session affinity) DNATed
  and committed come from L3Forwarding (``ct_state=+dnat+new+trk``), which resubmits
  them to the policy tables. Established connections and replies never come here:
  what was allowed stays allowed, until the connection ends.
* EgressRule and IngressRule hold each rule as one *conjunctive* flow (``conj_id``)
  whose dimensions are the rule's pods on this node (the source for egress, the
  destination for ingress), its peers (addresses: pods' /32s and ipBlocks with their
  ``except`` cut out) and its ports (a protocol, a port or a range as bit masks). Each
  value of a dimension is one flow with a ``conjunction(id,k/n)`` action, shared by
  every rule that has it, so the flows grow as the sum of a rule's pods, peers and
  ports, not as their product. A dimension a rule leaves open (no peers, no ports) is
  left out; a rule with only its pods left is one plain flow per pod. A named port is
  resolved per destination pod: the rule becomes one conjunction per number the name
  has. A rule that matches goes on: egress to IngressRule, ingress to PolicyVerdict.
* EgressDefaultRule and IngressDefaultRule deny (reg1) what no rule admitted, one
  flow per isolated pod (their counters are the drops of the policies that isolate
  it); PolicyVerdict then drops it. An allowed connection goes on to ConntrackCommit
  or, when it is committed already, to L3Forwarding (marked judged in reg1).
* A committed (DNATed) connection that is denied keeps that verdict: it gets the
  PolicyDenied ct_mark bit, and ConntrackState drops what would answer it. If a later
  retransmission is allowed (the policies changed), PolicyVerdict clears the bit.

No flow here recirculates on the way of an allowed or denied first packet (the
userspace datapath of Debian 12's Open vSwitch drops a packet at its seventh
recirculation; the longest path through the lab takes six); only a retransmission of a
denied Service connection that is now allowed recirculates, to clear its mark.

The source an ingress rule judges is the one the pod will see. A connection through a
NodePort with ``externalTrafficPolicy: Cluster`` is masqueraded as this node after
routing (SNAT), so its ``ct_mark`` NodeMasq bit stands for the node's address: the
peers' address flows match only unmarked connections, and a rule whose ipBlocks
contain this node's IP also has a flow for marked ones. What no policy may stop, as
Kubernetes documents (a pod cannot block its own node; Antrea lets its gateway and
hairpin connections through likewise): the node's own traffic to its pods (kubelet
probes) and a pod reaching itself through a Service.

Flow owners name the rule (``networkpolicy x/allow-a ingress[0]``) or, for the
isolation flows, the policies that isolate the pod, so that ``kubelab trace`` and
``kubelab flows`` can say which policy and rule allowed or dropped a packet.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from controller.flows import (Conjunction, Ct, Resubmit, SetField, ct_state, flow)
from controller.pipeline import shared
from controller.pipeline.tables import (
    CT_MARK_NODE_MASQ, CT_MARK_POLICY_DENIED, ETH_IP, PRIORITY_FALLBACK, PRIORITY_HIGH,
    PRIORITY_LOW, PRIORITY_MISS, PRIORITY_NORMAL, PRIORITY_POLICY_DNATED_FROM_ISOLATED,
    PRIORITY_POLICY_DNATED_TO_ISOLATED, PRIORITY_POLICY_EXEMPT,
    PRIORITY_POLICY_FROM_ISOLATED, PRIORITY_POLICY_TO_ISOLATED, REG1_POLICY_DENIED,
    REG1_POLICY_JUDGED, T)
from controller.state import PROTOCOL_NUMBERS
from services import networkpolicy as np
from services import wiring
from services.manifests import NAMESPACE_NAME_LABEL

#: How many rules a shared flow's owner names before it says "+N more".
OWNERS_SHOWN = 3


@dataclass(frozen=True)
class Conj:
    """One conjunctive flow: a rule (or the part of it one number of a named port
    gives), each dimension as the matches that satisfy it."""
    key: str                 # stable name, hashed into the conj_id
    owner: str               # 'networkpolicy x/allow-a ingress[0]'
    dims: tuple              # (matches, ...) per dimension, the rule's pods first


@dataclass
class NodePolicy:
    """What the policy tables of one node hold, worked out once per bridge."""
    isolated: dict = field(default_factory=dict)   # direction -> {pod: [policy keys]}
    conjs: dict = field(default_factory=dict)      # direction -> [Conj]
    ids: dict = field(default_factory=dict)        # Conj.key -> conj_id

    @property
    def active(self) -> bool:
        return any(self.isolated.values())


def rule_owner(policy, direction: str, index: int) -> str:
    return f'networkpolicy {policy.key} {direction.lower()}[{index}]'


def isolation_owner(keys, pod, direction: str) -> str:
    return f'networkpolicy {",".join(keys)} isolates {pod.owner} for {direction.lower()}'


def policy_keys(owner: str) -> list[str]:
    """The policies a policy flow's owner names (``kubelab flows``/``top`` count their
    drops and allows by these); [] for any other owner."""
    if not owner.startswith('networkpolicy '):
        return []
    text = owner[len('networkpolicy '):].split(' isolates ')[0].split(' (+')[0]
    keys = re.findall(r'[a-z0-9][a-z0-9.-]*/[a-z0-9][a-z0-9.-]*', text)
    return list(dict.fromkeys(keys))


def policy_cookies(config) -> set:
    """The cookies of a switch's NetworkPolicy flows (their tables', and theirs in the
    tables around them). When the switches change any of these, the Ryu shell purges
    the datapath's flow cache once they all carry the change: Open vSwitch 3.1's
    userspace datapath was seen keeping a megaflow cached before a policy change
    (a connection still let in, or still dropped, for as long as packets kept it
    alive) although its revalidators had run."""
    policy_tables = {T[name] for name in ('EgressRule', 'EgressDefaultRule', 'IngressRule',
                                          'IngressDefaultRule', 'PolicyVerdict')}
    return {f.cookie for f in config.flows
            if f.table in policy_tables or f.owner.startswith('networkpolicy')}


# ---------------------------------------------------------------- what a node holds
def node_policy(state, node) -> NodePolicy:
    out = NodePolicy()
    local = state.pods_on(node.name)
    for direction in (np.INGRESS, np.EGRESS):
        out.isolated[direction] = {}
        for pod in local:
            keys = [p.key for p in np.isolating(state.policies, pod, direction)]
            if keys:
                out.isolated[direction][pod] = keys
        out.conjs[direction] = []
        for policy in state.policies:
            if not policy.affects(direction):
                continue
            applied = [pod for pod in local if np.selects(policy, pod)]
            if not applied:
                continue
            for index, rule in enumerate(policy.rules(direction)):
                out.conjs[direction] += _rule_conjs(state, node, policy, direction, index,
                                                    rule, applied)
    taken = set()
    for conj in sorted((c for cs in out.conjs.values() for c in cs), key=lambda c: c.key):
        out.ids[conj.key] = shared.group_id(conj.key, taken)
    return out


def _rule_conjs(state, node, policy, direction, index, rule, applied) -> list[Conj]:
    """The conjunctions of one rule for the pods it applies to on this node."""
    ingress = direction == np.INGRESS
    own = 'ipv4_dst' if ingress else 'ipv4_src'
    other = 'ipv4_src' if ingress else 'ipv4_dst'
    key, owner = f'{policy.key}/{direction}/{index}', rule_owner(policy, direction, index)
    pods = _peer_pods(state, policy, rule)
    peers = _peer_matches(state, node, rule, pods, other, ingress)
    if peers is not None and not peers:
        return []                           # peers that match nothing admit nothing
    numeric = [p for p in rule.ports if not isinstance(p.port, str)]
    named = [p for p in rule.ports if isinstance(p.port, str)]
    out = []

    def conj(suffix, pods_here, peer_matches, port_matches):
        dims = tuple(d for d in (tuple({own: p.ip} for p in pods_here), peer_matches,
                                 port_matches) if d is not None)
        if all(dims):
            out.append(Conj(key + suffix, owner, dims))

    if not rule.ports or numeric:
        conj('', applied, peers, None if not rule.ports else
             tuple(m for p in numeric for m in port_matches(p.protocol, p.port,
                                                           p.end_port)))
    for entry in named:
        # A port name is the destination pod's: for ingress the rule's own pods, for
        # egress its peer pods (every pod when it admits every address; an ipBlock
        # names no pod).
        if ingress:
            for number, group in _by_number(entry, applied).items():
                conj(f'/{entry.port}/{number}', group, peers,
                     tuple(port_matches(entry.protocol, number, None)))
        else:
            targets = pods if peers is not None else state.pods
            for number, group in _by_number(entry, targets).items():
                conj(f'/{entry.port}/{number}', applied,
                     tuple({other: p.ip} for p in group),
                     tuple(port_matches(entry.protocol, number, None)))
    return out


def _peer_pods(state, policy, rule) -> list:
    cache = state.__dict__.setdefault('_policy_peers', {})
    key = (policy.key, id(rule))
    if key not in cache:
        labels = {pod.namespace: {NAMESPACE_NAME_LABEL: pod.namespace}
                  for pod in state.pods}
        labels.update(state.namespaces)
        cache[key] = np.peer_pods(rule, policy.namespace, state.pods, labels)
    return cache[key]


def _peer_matches(state, node, rule, pods, field_name: str, ingress: bool):
    """The peers dimension: None when the rule admits every peer, else its matches
    ([] when it admits none)."""
    if not rule.peers:
        return None
    nets = [net for block in np.ip_blocks(rule) for net in block.networks()]
    if any(net.prefixlen == 0 for net in nets):
        return None
    matches = [{field_name: pod.ip} for pod in pods]
    matches += [{field_name: _masked(net)} for net in nets]
    if ingress:
        # A NodePort connection masqueraded as this node (ct_mark NodeMasq) reaches
        # the pod from the node's address, whatever its source now says.
        matches = [dict(m, ct_mark=(0, CT_MARK_NODE_MASQ)) for m in matches]
        node_ip = ipaddress.ip_address(node.ip)
        if any(node_ip in net for net in nets):
            matches.append({'ct_mark': (CT_MARK_NODE_MASQ, CT_MARK_NODE_MASQ)})
    unique = {tuple(sorted(m.items())): m for m in matches}
    return tuple(unique[k] for k in sorted(unique, key=repr))


def _masked(net) -> str | tuple:
    if net.prefixlen == 32:
        return str(net.network_address)
    return str(net.network_address), str(net.netmask)


def _by_number(entry, pods) -> dict:
    groups = {}
    for pod in pods:
        number = np.resolve_port(entry, pod)
        if number is not None:
            groups.setdefault(number, []).append(pod)
    return dict(sorted(groups.items()))


def port_matches(protocol: str, port, end_port) -> list[dict]:
    """The matches of one policy port: the protocol, and its port or range (as the
    fewest value/mask pairs that cover it)."""
    number = PROTOCOL_NUMBERS[protocol]
    l4 = 'tcp_dst' if number == 6 else 'udp_dst'
    base = {'ip_proto': number}
    if port is None:
        return [base]
    return [dict(base, **{l4: value if mask == 0xFFFF else (value, mask)})
            for value, mask in port_masks(port, end_port or port)]


def port_masks(low: int, high: int) -> list[tuple[int, int]]:
    """[low, high] as 16-bit value/mask pairs: 80-80 -> [(80, 0xffff)],
    1024-2047 -> [(1024, 0xfc00)]."""
    out = []
    while low <= high:
        size = low & -low if low else 0x10000
        while size > high - low + 1:
            size >>= 1
        out.append((low, 0xFFFF & ~(size - 1)))
        low += size
    return out


# ---------------------------------------------------------------- the flows
def _denied() -> tuple:
    return (SetField('reg1', REG1_POLICY_DENIED),)


def service_lb_flows(policy: NodePolicy) -> list:
    """ServiceLB: a new connection no Service balanced, from or to an isolated pod,
    is judged before it is committed."""
    return _entries(policy, 'ServiceLB', {}, (PRIORITY_POLICY_FROM_ISOLATED,
                                              PRIORITY_POLICY_TO_ISOLATED), None)


def l3_forwarding_flows(policy: NodePolicy) -> list:
    """L3Forwarding: a new connection a Service's group DNATed (and committed), from
    or to an isolated pod, is judged before it is routed (the policy tables come back
    here when it is allowed)."""
    return _entries(policy, 'L3Forwarding',
                    {'ct_state': ct_state('+dnat+new+trk'), 'reg1': (0, REG1_POLICY_JUDGED)},
                    (PRIORITY_POLICY_DNATED_FROM_ISOLATED,
                     PRIORITY_POLICY_DNATED_TO_ISOLATED), 'resubmit')


def _entries(policy: NodePolicy, table: str, extra: dict, priorities: tuple, how) -> list:
    flows = []
    for direction, priority, field_name, target in (
            (np.EGRESS, priorities[0], 'ipv4_src', 'EgressRule'),
            (np.INGRESS, priorities[1], 'ipv4_dst', 'IngressRule')):
        for pod, keys in policy.isolated[direction].items():
            flows.append(flow(T[table], priority,
                              dict(extra, eth_type=ETH_IP, **{field_name: pod.ip}),
                              (Resubmit(T[target]),) if how == 'resubmit' else (),
                              goto=None if how == 'resubmit' else T[target],
                              owner=isolation_owner(keys, pod, direction)))
    return flows


def conntrack_state_flows(policy: NodePolicy) -> list:
    """ConntrackState: what answers a connection a policy dropped is dropped too."""
    if not policy.active:
        return []
    return [flow(T['ConntrackState'], PRIORITY_NORMAL,
                 {'eth_type': ETH_IP, 'ct_state': ct_state('-new+trk'),
                  'ct_mark': (CT_MARK_POLICY_DENIED, CT_MARK_POLICY_DENIED)},
                 owner='networkpolicy: answers of a dropped connection')]


def rule_flows(policy: NodePolicy, direction: str, table: str, goto: str) -> list:
    """A table's rules: the shared clause flows of the conjunctions, a conj_id flow per
    conjunction, a plain flow per pod for a rule with only its pods left; each that
    matches goes to ``goto``."""
    clauses, flows = {}, []
    for conj in policy.conjs[direction]:
        cid = policy.ids[conj.key]
        if len(conj.dims) == 1:
            flows += [flow(T[table], PRIORITY_HIGH, dict(m, eth_type=ETH_IP), goto=T[goto],
                           owner=conj.owner) for m in conj.dims[0]]
            continue
        for k, dim in enumerate(conj.dims, start=1):
            for m in dim:
                slot = clauses.setdefault(tuple(sorted(dict(m, eth_type=ETH_IP).items())),
                                          ([], []))
                slot[0].append(Conjunction(cid, k, len(conj.dims)))
                slot[1].append(conj.owner)
        flows.append(flow(T[table], PRIORITY_NORMAL, {'conj_id': cid, 'eth_type': ETH_IP},
                          goto=T[goto], owner=conj.owner))
    for match, (actions, owners) in sorted(clauses.items(), key=lambda kv: repr(kv[0])):
        flows.append(flow(T[table], PRIORITY_NORMAL, dict(match),
                          sorted(set(actions), key=lambda a: (a.conj_id, a.clause)),
                          owner=_owners(owners)))
    return flows


def _owners(owners: list[str]) -> str:
    rules = sorted(set(o.split(' ', 1)[1] for o in owners))
    more = f' (+{len(rules) - OWNERS_SHOWN} more)' if len(rules) > OWNERS_SHOWN else ''
    return 'networkpolicy ' + ', '.join(rules[:OWNERS_SHOWN]) + more


def egress_rule(policy: NodePolicy) -> list:
    """EgressRule: the egress rules of this node's pods; admitted -> IngressRule."""
    if not policy.active:
        return []
    return rule_flows(policy, np.EGRESS, 'EgressRule', 'IngressRule') + [
        flow(T['EgressRule'], PRIORITY_MISS, goto=T['EgressDefaultRule'],
             owner='networkpolicy')]


def egress_default_rule(policy: NodePolicy) -> list:
    """EgressDefaultRule: a pod isolated for egress may open nothing else."""
    if not policy.active:
        return []
    return [flow(T['EgressDefaultRule'], PRIORITY_NORMAL,
                 {'eth_type': ETH_IP, 'ipv4_src': pod.ip}, _denied(),
                 goto=T['PolicyVerdict'], owner=isolation_owner(keys, pod, np.EGRESS))
            for pod, keys in policy.isolated[np.EGRESS].items()] + [
        flow(T['EgressDefaultRule'], PRIORITY_MISS, goto=T['IngressRule'],
             owner='networkpolicy')]


def ingress_rule(policy: NodePolicy, node) -> list:
    """IngressRule: what always reaches a pod, then the ingress rules of this node's
    pods; admitted -> PolicyVerdict."""
    if not policy.active:
        return []
    flows = []
    if policy.isolated[np.INGRESS]:
        flows.append(flow(T['IngressRule'], PRIORITY_POLICY_EXEMPT,
                          {'eth_type': ETH_IP, 'in_port': wiring.NODE_HOST_PORT},
                          goto=T['PolicyVerdict'],
                          owner=f'node {node.name} (reaches its own pods)'))
    flows += [flow(T['IngressRule'], PRIORITY_POLICY_EXEMPT,
                   {'eth_type': ETH_IP, 'ipv4_src': pod.ip, 'ipv4_dst': pod.ip},
                   goto=T['PolicyVerdict'], owner=f'{pod.owner} (hairpin: reaches itself)')
              for pod in policy.isolated[np.INGRESS]]
    flows += rule_flows(policy, np.INGRESS, 'IngressRule', 'PolicyVerdict')
    return flows + [flow(T['IngressRule'], PRIORITY_MISS, goto=T['IngressDefaultRule'],
                         owner='networkpolicy')]


def ingress_default_rule(policy: NodePolicy) -> list:
    """IngressDefaultRule: a pod isolated for ingress receives nothing else."""
    if not policy.active:
        return []
    return [flow(T['IngressDefaultRule'], PRIORITY_NORMAL,
                 {'eth_type': ETH_IP, 'ipv4_dst': pod.ip}, _denied(),
                 goto=T['PolicyVerdict'], owner=isolation_owner(keys, pod, np.INGRESS))
            for pod, keys in policy.isolated[np.INGRESS].items()] + [
        flow(T['IngressDefaultRule'], PRIORITY_MISS, goto=T['PolicyVerdict'],
             owner='networkpolicy')]


def policy_verdict(policy: NodePolicy, zone: int) -> list:
    """PolicyVerdict: drop what was denied (a committed connection keeps the verdict
    in its mark); an allowed connection is committed (ConntrackCommit) or, committed
    already by a Service's group, routed (L3Forwarding)."""
    if not policy.active:
        return []
    denied = {'eth_type': ETH_IP, 'reg1': (REG1_POLICY_DENIED, REG1_POLICY_DENIED)}
    dnat = ct_state('+dnat+trk')
    mark = (CT_MARK_POLICY_DENIED, CT_MARK_POLICY_DENIED)
    judged = SetField('reg1', REG1_POLICY_JUDGED)
    owner = 'networkpolicy verdict'
    return [
        flow(T['PolicyVerdict'], PRIORITY_HIGH, dict(denied, ct_state=dnat),
             (Ct(zone=zone, commit=True, mark=CT_MARK_POLICY_DENIED,
                 mark_mask=CT_MARK_POLICY_DENIED),), owner=owner),
        flow(T['PolicyVerdict'], PRIORITY_NORMAL, denied, owner=owner),
        flow(T['PolicyVerdict'], PRIORITY_LOW,
             {'eth_type': ETH_IP, 'ct_state': dnat, 'ct_mark': mark},
             (judged, Ct(zone=zone, commit=True, table=T['L3Forwarding'], mark=0,
                         mark_mask=CT_MARK_POLICY_DENIED)), owner=owner),
        flow(T['PolicyVerdict'], PRIORITY_FALLBACK, {'eth_type': ETH_IP, 'ct_state': dnat},
             (judged,), goto=T['L3Forwarding'], owner=owner),
        flow(T['PolicyVerdict'], PRIORITY_MISS, None, (judged,),
             goto=T['ConntrackCommit'], owner=owner)]
