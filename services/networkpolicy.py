"""NetworkPolicy as the API defines it: which pods a policy selects, which peers and
ports a rule admits. Pure: objects in, answers out; the network plugin's flows are
compiled from these answers in controller/pipeline/network_policy.py.

The semantics, from the ``networking.k8s.io/v1`` API:

* a policy *selects* the pods of its own namespace that its ``podSelector`` matches
  (``{}``: all of them). A pod selected by some policy whose ``policyTypes`` include
  Ingress is *isolated for ingress*: only what one of those policies' ingress rules
  admits may reach it. The same for Egress. A pod no policy selects for a direction
  is not isolated in it: everything passes. Policies only add: their rules are
  unioned, nothing denies explicitly.
* a rule admits a connection when one of its peers matches the other end and one of
  its ports matches the destination port; a rule without peers (``from``/``to`` empty
  or absent) admits every peer, one without ports every port and protocol.
* a peer: ``podSelector`` alone, pods of the policy's namespace; ``namespaceSelector``
  alone, every pod of the namespaces it matches (namespaces are matched by their labels,
  ``kubernetes.io/metadata.name`` among them); both, pods matching the pod selector in
  the namespaces matching the other; ``ipBlock``, addresses in ``cidr`` and not in any
  ``except`` (for any host, pods included, as the source or destination address the
  policy sees).
* a port: a protocol, and a number, a range (``port``..``endPort``) or a name, which
  means the container port of that name (and protocol) of the destination pod.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from services.selectors import matches_label_selector

INGRESS, EGRESS = 'Ingress', 'Egress'


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    excepts: tuple = ()

    def networks(self) -> list[ipaddress.IPv4Network]:
        """The IPv4 networks of ``cidr`` minus its ``except`` blocks (an IPv6 block,
        which the lab never carries, gives none)."""
        net = ipaddress.ip_network(self.cidr, strict=False)
        if net.version != 4:
            return []
        nets = [net]
        for text in self.excepts:
            hole = ipaddress.ip_network(text, strict=False)
            if hole.version != 4:
                continue
            out = []
            for n in nets:
                if hole.subnet_of(n):
                    out.extend(n.address_exclude(hole) if hole != n else [])
                elif not n.subnet_of(hole):
                    out.append(n)
            nets = out
        return sorted(nets)

    def contains(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self.networks())


@dataclass(frozen=True)
class Peer:
    pod_selector: dict | None = field(default=None, hash=False)
    namespace_selector: dict | None = field(default=None, hash=False)
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PolicyPort:
    protocol: str = 'TCP'
    port: int | str | None = None      # None: every port of the protocol
    end_port: int | None = None        # with a numeric port: the range's last port


@dataclass(frozen=True)
class Rule:
    peers: tuple = ()       # empty: every peer
    ports: tuple = ()       # empty: every port and protocol


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: dict = field(hash=False)
    ingress: tuple = ()
    egress: tuple = ()
    policy_types: tuple = (INGRESS,)

    @property
    def key(self) -> str:
        return f'{self.namespace}/{self.name}'

    def rules(self, direction: str) -> tuple:
        return self.ingress if direction == INGRESS else self.egress

    def affects(self, direction: str) -> bool:
        return direction in self.policy_types


@dataclass(frozen=True)
class Member:
    """A pod as policies see it."""
    namespace: str
    name: str
    ip: str
    labels: tuple = ()          # sorted (key, value) pairs
    ports: tuple = ()           # named container ports: (name, protocol, number)

    def label_map(self) -> dict:
        return dict(self.labels)


# ---------------------------------------------------------------- reading objects
def from_object(obj: dict) -> NetworkPolicy:
    """A validated (defaulted) NetworkPolicy object as a value."""
    meta, spec = obj['metadata'], obj.get('spec') or {}
    ns = meta.get('namespace', 'default')
    directions = {}
    for direction, peers_key in (('ingress', 'from'), ('egress', 'to')):
        directions[direction] = tuple(
            Rule(tuple(_peer(p) for p in rule.get(peers_key) or ()),
                 tuple(PolicyPort(p.get('protocol', 'TCP'), p.get('port'), p.get('endPort'))
                       for p in rule.get('ports') or ()))
            for rule in spec.get(direction) or ())
    types = tuple(spec.get('policyTypes') or
                  [INGRESS] + ([EGRESS] if spec.get('egress') else []))
    return NetworkPolicy(ns, meta['name'], spec.get('podSelector') or {},
                         directions['ingress'], directions['egress'], types)


def _peer(peer: dict) -> Peer:
    block = peer.get('ipBlock')
    return Peer(peer.get('podSelector'), peer.get('namespaceSelector'),
                IPBlock(block['cidr'], tuple(block.get('except') or ()))
                if block else None)


def member(pod: dict) -> Member | None:
    """A Pod object as a ``Member`` (None while it has no address)."""
    ip = (pod.get('status') or {}).get('podIP')
    if not ip:
        return None
    meta = pod['metadata']
    return Member(meta.get('namespace', 'default'), meta['name'], ip,
                  tuple(sorted((meta.get('labels') or {}).items())),
                  named_ports(pod.get('spec') or {}))


def named_ports(spec: dict) -> tuple:
    """(name, protocol, containerPort) of every named container port of a pod spec."""
    return tuple(sorted((port['name'], port.get('protocol', 'TCP'), port['containerPort'])
                        for c in spec.get('containers') or ()
                        for port in c.get('ports') or () if port.get('name')))


# ---------------------------------------------------------------- selection
def selects(policy: NetworkPolicy, pod: Member) -> bool:
    """Does ``policy`` apply to ``pod``?"""
    return pod.namespace == policy.namespace and \
        matches_label_selector(policy.pod_selector, pod.label_map())


def isolating(policies, pod: Member, direction: str) -> list[NetworkPolicy]:
    """The policies that isolate ``pod`` in ``direction`` (empty: it is not isolated)."""
    return [p for p in policies if p.affects(direction) and selects(p, pod)]


def peer_selects(peer: Peer, policy_namespace: str, pod: Member,
                 namespace_labels: dict) -> bool:
    """Does a pod-selecting peer (not an ipBlock) match ``pod``? ``namespace_labels``:
    namespace name -> its labels."""
    if peer.ip_block is not None:
        return False
    if peer.namespace_selector is None:
        in_namespace = pod.namespace == policy_namespace
    else:
        in_namespace = matches_label_selector(peer.namespace_selector,
                                              namespace_labels.get(pod.namespace, {}))
    return in_namespace and (peer.pod_selector is None or
                             matches_label_selector(peer.pod_selector, pod.label_map()))


def peer_pods(rule: Rule, policy_namespace: str, pods, namespace_labels: dict) -> list:
    """The pods a rule's pod-selecting peers match (an ipBlock is not counted here)."""
    return [pod for pod in pods if any(peer_selects(peer, policy_namespace, pod,
                                                    namespace_labels)
                                       for peer in rule.peers)]


def ip_blocks(rule: Rule) -> list[IPBlock]:
    return [peer.ip_block for peer in rule.peers if peer.ip_block is not None]


def resolve_port(port: PolicyPort, pod: Member) -> int | None:
    """The number a named port has in ``pod`` (None: the pod has no such port)."""
    for name, protocol, number in pod.ports:
        if name == port.port and protocol == port.protocol:
            return number
    return None
