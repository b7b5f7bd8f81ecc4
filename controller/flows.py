"""Flows, groups and meters as plain values: what the pipeline computes and the shell sends.

A ``FlowSpec`` is one OpenFlow 1.3 flow: table, priority, match, actions and an optional
goto. Matches use Ryu's OXM field names (``ipv4_dst``, ``tcp_dst``, ``ct_state``...) so
the Ryu shell can pass them straight to ``OFPMatch``; ``to_ofctl()`` renders the same flow
in ``ovs-ofctl`` syntax with the table's name, which is what golden tests and the docs use.

Each flow's cookie is a hash of its whole content, so the shell can diff the desired set
against what a switch holds by cookie alone: a flow whose content changes gets a new
cookie, an unchanged flow is never touched. The values are immutable, so a cookie (and a
group's content hash) is computed once per object. No Ryu import here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

COOKIE_MARK = 0x4B << 56     # top byte 'K': a flow of kubelab's controller
LEARNED_PRIORITY = 200       # the priority of the flows a LearnAffinity installs


# ---------------------------------------------------------------- actions
@dataclass(frozen=True)
class Output:
    port: int | str          # a number, or 'in_port'

    def ofctl(self):
        return 'IN_PORT' if self.port == 'in_port' else f'output:{self.port}'


@dataclass(frozen=True)
class ToController:
    max_len: int = 128
    reason: str = 'reject'   # why the packet goes up: the shell dispatches on the cookie

    def ofctl(self):
        return f'controller(max_len={self.max_len})'


@dataclass(frozen=True)
class SetField:
    field: str
    value: object

    def ofctl(self):
        return f'set_field:{self.value}->{OFCTL_FIELD.get(self.field, self.field)}'


@dataclass(frozen=True)
class Move:
    """NXM register move: copy ``n_bits`` of ``src`` into ``dst``."""
    src: str
    dst: str
    n_bits: int

    def ofctl(self):
        src, dst = (NXM_FIELD.get(f, f) for f in (self.src, self.dst))
        return f'move:{src}[0..{self.n_bits - 1}]->{dst}[0..{self.n_bits - 1}]'


@dataclass(frozen=True)
class Nat:
    """``nat`` alone applies an existing translation (and reverses it on replies);
    ``Nat(dst=IP, port=P)`` is DNAT, ``Nat(src=IP)`` SNAT (masquerade)."""
    dst: str | None = None
    port: int | None = None
    src: str | None = None

    def ofctl(self):
        if self.src is not None:
            return f'nat(src={self.src})'
        if self.dst is None:
            return 'nat'
        return f'nat(dst={self.dst}' + (f':{self.port}' if self.port else '') + ')'


@dataclass(frozen=True, repr=False)
class Ct:
    zone: int
    commit: bool = False
    table: int | None = None     # recirculate into this table; None: continue here
    nat: Nat | None = None
    mark: int | None = None      # with commit: set ct_mark to this (exec(set_field))
    mark_mask: int | None = None     # ... only these bits of it (None: all)

    def __repr__(self):
        # The cookie hashes the repr: a flow without a mask keeps the cookie it had
        # before masks existed (the switches' flows stay untouched on an upgrade).
        text = (f'Ct(zone={self.zone!r}, commit={self.commit!r}, table={self.table!r}, '
                f'nat={self.nat!r}, mark={self.mark!r}')
        return text + (f', mark_mask={self.mark_mask!r})' if self.mark_mask is not None
                       else ')')

    def ofctl(self):
        parts = ['commit'] if self.commit else []
        if self.table is not None:
            parts.append(f'table={self.table}')
        parts.append(f'zone={self.zone}')
        if self.nat is not None:
            parts.append(self.nat.ofctl())
        if self.mark is not None:
            mask = '' if self.mark_mask is None else f'/{self.mark_mask:#x}'
            parts.append(f'exec(set_field:{self.mark:#x}{mask}->ct_mark)')
        return f'ct({",".join(parts)})'


@dataclass(frozen=True)
class Conjunction:
    """Dimension ``clause`` (1..``n_clauses``) of conjunctive flow ``conj_id``: the flow
    matches one allowed value of that dimension; a packet that matches a flow of every
    dimension looks up the flow that matches ``conj_id`` (ovs-fields(7))."""
    conj_id: int
    clause: int
    n_clauses: int

    def ofctl(self):
        return f'conjunction({self.conj_id},{self.clause}/{self.n_clauses})'


@dataclass(frozen=True)
class Resubmit:
    """Nicira resubmit: look the packet up in ``table`` and come back."""
    table: int

    def ofctl(self):
        return f'resubmit(,{self.table})'


@dataclass(frozen=True)
class LearnAffinity:
    """Learn, into ``table``, a flow for this client and the Service address and port
    held in reg7 and reg8[0..15] that loads the endpoint this connection was DNATed to
    into reg3 (IP) and reg4[0..15] (port) and sets reg5[0] (affinity hit). It lives
    ``timeout`` seconds after its last use: sessionAffinity ClientIP."""
    table: int
    timeout: int
    proto: int
    cookie: int

    @property
    def l4_field(self) -> str:
        return 'tcp_dst' if self.proto == 6 else 'udp_dst'

    def ofctl(self):
        l4 = 'NXM_OF_TCP_DST' if self.proto == 6 else 'NXM_OF_UDP_DST'
        return (f'learn(table={self.table},idle_timeout={self.timeout},'
                f'priority={LEARNED_PRIORITY},'
                f'cookie={self.cookie:#x},eth_type=0x800,nw_proto={self.proto},'
                f'NXM_OF_IP_SRC[],NXM_OF_IP_DST[]=NXM_NX_REG7[],'
                f'{l4}[]=NXM_NX_REG8[0..15],load:NXM_OF_IP_DST[]->NXM_NX_REG3[],'
                f'load:{l4}[]->NXM_NX_REG4[0..15],load:0x1->NXM_NX_REG5[0])')


@dataclass(frozen=True)
class Group:
    group_id: int

    def ofctl(self):
        return f'group:{self.group_id}'


# Names as ovs-ofctl prints them, for the fields whose Ryu name differs.
OFCTL_FIELD = {
    'eth_src': 'eth_src', 'eth_dst': 'eth_dst', 'ipv4_src': 'nw_src', 'ipv4_dst': 'nw_dst',
    'arp_op': 'arp_op', 'arp_spa': 'arp_spa', 'arp_tpa': 'arp_tpa', 'arp_sha': 'arp_sha',
    'arp_tha': 'arp_tha', 'tcp_dst': 'tp_dst', 'udp_dst': 'tp_dst',
}
NXM_FIELD = {
    'eth_src': 'NXM_OF_ETH_SRC', 'eth_dst': 'NXM_OF_ETH_DST', 'arp_spa': 'NXM_OF_ARP_SPA',
    'arp_tpa': 'NXM_OF_ARP_TPA', 'arp_sha': 'NXM_NX_ARP_SHA', 'arp_tha': 'NXM_NX_ARP_THA',
    'reg2': 'NXM_NX_REG2',
}
CT_STATE_BITS = {'new': 0x01, 'est': 0x02, 'rel': 0x04, 'rpl': 0x08, 'inv': 0x10, 'trk': 0x20,
                 'snat': 0x40, 'dnat': 0x80}
ETH_TYPE_NAMES = {0x0800: 'ip', 0x0806: 'arp'}
IP_PROTO_NAMES = {6: 'tcp', 17: 'udp', 1: 'icmp'}


def ct_state(spec: str) -> tuple[int, int]:
    """``'+trk+new-est'`` -> (value, mask) as OpenFlow wants it."""
    value = mask = 0
    for token in spec.replace('-', ' -').replace('+', ' +').split():
        bit = CT_STATE_BITS[token[1:]]
        mask |= bit
        if token[0] == '+':
            value |= bit
    return value, mask


def ct_state_text(value: int, mask: int) -> str:
    out = ''
    for name, bit in CT_STATE_BITS.items():
        if mask & bit:
            out += ('+' if value & bit else '-') + name
    return out


# ---------------------------------------------------------------- flows
@dataclass(frozen=True)
class FlowSpec:
    table: int
    priority: int
    match: tuple                 # sorted ((field, value), ...); value may be (value, mask)
    actions: tuple = ()          # apply-actions, in order
    goto: int | None = None      # goto_table instruction
    meter: int | None = None     # meter instruction
    owner: str = ''              # the Kubernetes object (or lab part) this flow serves

    @cached_property
    def cookie(self) -> int:
        digest = hashlib.blake2b(repr((self.table, self.priority, self.match, self.actions,
                                       self.goto, self.meter)).encode(), digest_size=7)
        return COOKIE_MARK | int.from_bytes(digest.digest(), 'big')

    @cached_property
    def next_tables(self) -> tuple:
        """(the tables it continues in: its goto and ct recirculations; the groups it
        uses, whose buckets continue further)."""
        tables = tuple(t for t in [self.goto] + [a.table for a in self.actions
                                                 if isinstance(a, Ct)] if t is not None)
        return tables, tuple(a.group_id for a in self.actions if isinstance(a, Group))

    def match_dict(self) -> dict:
        return dict(self.match)

    def to_ofctl(self, table_names: dict[int, str] | None = None) -> str:
        names = table_names or {}
        parts = [f'table={names.get(self.table, self.table)}', f'priority={self.priority}']
        parts += _match_ofctl(dict(self.match))
        acts = []
        if self.meter is not None:
            acts.append(f'meter:{self.meter}')
        acts += [a.ofctl() for a in self.actions]
        if self.goto is not None:
            acts.append(f'goto_table:{names.get(self.goto, self.goto)}')
        return ','.join(parts) + ' actions=' + (','.join(acts) or 'drop')


def _match_ofctl(match: dict) -> list[str]:
    out = []
    eth_type = match.get('eth_type')
    proto = match.get('ip_proto')
    if eth_type == 0x0800 and proto in IP_PROTO_NAMES:
        out.append(IP_PROTO_NAMES[proto])
    elif eth_type in ETH_TYPE_NAMES:
        out.append(ETH_TYPE_NAMES[eth_type])
    for key, value in match.items():
        if key in ('eth_type', 'ip_proto') and eth_type in ETH_TYPE_NAMES and (
                key == 'eth_type' or proto in IP_PROTO_NAMES):
            continue
        if key == 'ct_state':
            out.append(f'ct_state={ct_state_text(*value)}')
        elif key in ('ct_mark', 'tcp_src', 'udp_src') and isinstance(value, tuple):
            out.append(f'{key}={value[0]:#x}/{value[1]:#x}')
        elif isinstance(value, tuple):
            out.append(f'{OFCTL_FIELD.get(key, key)}={value[0]}/{value[1]}')
        else:
            out.append(f'{OFCTL_FIELD.get(key, key)}={value}')
    return out


def flow(table: int, priority: int, match: dict | None = None, actions=(), goto=None,
         meter=None, owner: str = '') -> FlowSpec:
    """Build a FlowSpec with its match in canonical (sorted) order."""
    return FlowSpec(table, priority, tuple(sorted((match or {}).items())), tuple(actions),
                    goto, meter, owner)


@dataclass(frozen=True)
class Bucket:
    actions: tuple
    weight: int = 1

    @cached_property
    def digest(self) -> bytes:
        return hashlib.blake2b(repr(self).encode(), digest_size=8).digest()


@dataclass(frozen=True)
class GroupSpec:
    """A select group: one bucket per endpoint."""
    group_id: int
    buckets: tuple
    owner: str = ''

    @cached_property
    def next_tables(self) -> tuple:
        """The tables its buckets' ct actions recirculate to."""
        return tuple(a.table for bucket in self.buckets for a in bucket.actions
                     if isinstance(a, Ct) and a.table is not None)

    @cached_property
    def content(self) -> int:
        return _content(self.buckets)

    def to_ofctl(self) -> str:
        buckets = ','.join(
            f'bucket=weight:{b.weight},actions=' + ','.join(a.ofctl() for a in b.actions)
            for b in self.buckets)
        return f'group_id={self.group_id},type=select,{buckets}'


@dataclass(frozen=True)
class MeterSpec:
    meter_id: int
    rate_pps: int
    burst: int

    def to_ofctl(self) -> str:
        return f'meter={self.meter_id},pktps,burst,band=type=drop,rate={self.rate_pps},' \
               f'burst_size={self.burst}'


@dataclass
class SwitchConfig:
    """Everything one switch should hold."""
    flows: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    meters: list = field(default_factory=list)
    checked: set = field(default_factory=set, compare=False, repr=False)   # ids of flows
    # already checked against the pipeline with their own groups (a node's memoized
    # Service parts): ``check_pipeline`` skips them

    def by_cookie(self) -> dict[int, FlowSpec]:
        return {f.cookie: f for f in self.flows}


_CONTENTS: dict = {}      # id(buckets) -> (buckets, content): held, so an id stays theirs


def _content(buckets: tuple) -> int:
    """A hash of a bucket list, once per tuple (10,000 groups over the same endpoints
    share one: endpoint_moves.py)."""
    hit = _CONTENTS.get(id(buckets))
    if hit is not None and hit[0] is buckets:
        return hit[1]
    digest = hashlib.blake2b(b''.join(b.digest for b in buckets), digest_size=8)
    value = int.from_bytes(digest.digest(), 'big')
    if len(_CONTENTS) >= 65536:
        _CONTENTS.clear()
    _CONTENTS[id(buckets)] = (buckets, value)
    return value
