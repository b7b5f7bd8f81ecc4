"""A fake OpenFlow 1.3 switch for unit tests: walk a packet through a ``SwitchConfig``.

``walk(config, packet, in_port, conntrack)`` plays one switch: it looks the packet up
table by table (highest priority wins, masked matches, ``ct_state``, ``ct_mark`` and the
registers as (value, mask)), runs each flow's apply-actions in order (SetField, Move,
Output or ``IN_PORT``, Group, ToController, Ct, Resubmit, LearnAffinity) and follows its
goto. It returns a ``Walk``: the trace of the flows that matched, as (table name, flow
owner, flow in ovs-ofctl syntax), and one outcome:

- ``('output', port, packet)``: the packet left on ``port`` (as it is on the wire);
- ``('drop', table name)``: no flow sent it anywhere (the last table it was looked up
  in, a resubmitted one included);
- ``('controller', packet)``: a packet-in.

Packets are plain dicts keyed by Ryu's OXM field names (``eth_src``, ``ipv4_dst``,
``tcp_dst``, ``arp_spa``...) plus ``tcp_flags``; ``tcp()``, ``udp()``, ``icmp()`` and
``arp_request()`` build them, ``answer()`` turns a received packet into its reply.

Conntrack (tests/unit/flowsim_conntrack.py) is a small model of the one table that the
userspace datapath shares across bridges, separated by zone; one ``Conntrack`` object is meant to be shared by several
walks (a SYN, then its reply) and several switches:

- a lookup sets ``ct_state``: ``+trk`` and ``+new`` (no connection, or one that has not
  seen a reply yet), ``+est`` (a reply was seen), ``+rpl`` (the packet is the reply
  direction) or ``+inv`` (a TCP segment that may not open a connection: SYN+ACK, SYN
  with RST or FIN, no SYN/ACK/RST at all; a lone ACK does open one, as Linux
  conntrack picks up connections mid-stream by default); a packet of a connection
  with a DNAT (the one that commits it included) also gets ``+dnat``;
- ``commit`` records the connection by its original tuple, with the DNAT target when the
  action carries ``nat(dst=...)`` and the SNAT source when it carries ``nat(src=...)``.
  SNAT keeps the source port unless the reply tuple it gives is already taken in the
  zone; then it takes the first free port of the ephemeral range (1024-65535), as
  conntrack does for ``nat(src=IP)`` without a port range;
- a ``ct`` without a table to recirculate to runs in the datapath (a ``nat`` translates
  the packet there, a ``commit`` records the connection) but *hides* conntrack from
  the rest of the pipeline, as OVS does: ``ct_state``, ``ct_zone`` and ``ct_mark`` read
  0 in the tables after it (the packet is untracked, ``-trk``), and its translation too:
  the tables go on matching the addresses and ports the packet had (xlate's flow is not
  updated), while a later ``ct``, a select group's hash and the packet that leaves
  have them translated (the packet that recirculates is parsed anew);
- ``nat`` (with or without arguments) on a packet of a recorded connection applies the
  recorded translation: an original-direction packet gets the DNAT target as
  destination and the SNAT address as source; a reply gets the original destination
  (the VIP:port) back as its source and the original source back as its destination;
- zones are separate tables: one bridge may track a packet in two zones (its own, and
  the zone it masquerades in), each zone keeping its own connection and translation;
- a packet remembers the connection its last ``ct`` found or made (OVS keeps it with
  the packet, across recirculations): a later ``ct`` in the *same zone* uses that
  connection even though NAT changed the packet's addresses since (a second commit of
  a DNATed connection updates its mark instead of tracking the translated packet as a
  new connection); in another zone the packet is looked up afresh;
- ``ct_mark``: a connection's mark is set by ``commit`` with ``Ct(mark=...)``
  (``exec(set_field:M[/MASK]->ct_mark)``, only the mask's bits when it has one; a
  mark without ``commit`` is refused, as OVS does) and
  kept for both directions; every lookup loads the mark of the connection it finds *in
  that zone* into the packet's ``ct_mark``, and 0 when it finds none (a new packet not
  committed, an invalid one). So a packet recirculated by the SNAT zone carries that
  zone's mark, not the one its node zone gave it. A packet never tracked on this switch
  has ``ct_state`` and ``ct_mark`` 0 (a match on them treats a missing field as 0);
- ``ct(table=N)`` forks as OVS does: the packet continues the current actions untracked
  and a tracked copy continues in table ``N`` (with the same ``in_port``). ``N`` may be
  an earlier table than the current one (a recirculation, e.g. SNAT -> L3Forwarding):
  only a ``goto_table`` must go forward; a recirculation loop ends in ``SimError``.

Conjunctive matches (``conjunction(id,k/n)`` actions, ovs-fields(7)): when the
highest-priority flows a packet matches are all conjunction flows, a conjunction whose
every dimension matched there sends the lookup to the flow that matches
``conj_id=id`` (the lowest id when several are complete: OVS leaves that choice open,
and NetworkPolicy's rules only allow); none complete, the lookup goes on below that
priority. A conjunction flow mixed with an ordinary one at the same priority is a
``SimError``.

Nicira extensions: ``resubmit(,N)`` looks the same packet up in table ``N`` (following
its gotos) and comes back to the next action, keeping what that table did to it (the
registers a learned flow loads); a miss there just returns. ``learn`` (``LearnAffinity``)
installs the session-affinity flow it describes into the switch's ``config.flows``
(owner ``LEARNED_OWNER``, actions ``Load``), replacing a learned flow with the same
match; timeouts are not modelled. Registers (reg0-reg15) start at 0 on every switch.

Other OpenFlow rules the model keeps: a table miss drops, ``output`` to the port the
packet came in on is dropped (only ``IN_PORT``, ``Output('in_port')``, sends it back
out that port), a goto must go forward.
A packet that visits too many tables, a goto backwards, a missing group or two different
flows that match at the same priority raise ``SimError``: the pipeline is broken.

``Lab`` puts every switch of a ``ClusterState`` together, cabled as services/wiring.py says,
so a test can send a packet from a pod and follow it to wherever it ends.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, field

from controller.flows import (Conjunction, Ct, Group, LearnAffinity, Move, Output,
                              Resubmit, SetField, ToController, flow)
from controller.pipeline import TABLE_NAMES, desired
from services import wiring
from tests.unit.flowsim_conntrack import (  # noqa: F401 (the tests import them from here)
    TCP_FLAGS, TRANSLATED, Connection, Conntrack, SimError, five_tuple, l4, reply_tuple)

MAX_TABLE_VISITS = 64
#: A select group with at most this many buckets (of equal weight) is chosen by the
#: datapath's hash: ``hash(l4(0)),recirc(...)``, a recirculation (Open vSwitch's dp_hash
#: method, up to 256 hash values: ofproto-dpif.c's group_setup_dp_hash_table; a larger
#: group is hashed in the slow path instead, without one). The bucket is the hash's low
#: bits (``dp_hash_slots``) dealt round robin over the buckets, as that table's Webster
#: method does with equal weights. A packet that already has a hash in this datapath
#: pass (an earlier group's, across a patch port) is not hashed again: the group picks
#: from that hash, without a recirculation (ofproto-dpif-xlate.c,
#: pick_dp_hash_select_group), so two such groups in one pass pick alike.
DP_HASH_MAX_BUCKETS = 256
MAC_FIELDS = ('eth_src', 'eth_dst', 'arp_sha', 'arp_tha')
IP_FIELDS = ('ipv4_src', 'ipv4_dst', 'arp_spa', 'arp_tpa')
REGISTERS = tuple(f'reg{i}' for i in range(16))
METADATA = ('in_port', 'ct_state', 'ct_zone', 'ct_mark', 'ct_conn', 'conj_id',
            'recirc', 'dp_hash', 'datapath_nat') + REGISTERS
# Pipeline fields an OpenFlow match sees as 0 on a packet that never set them.
ZERO_DEFAULT = ('ct_state', 'ct_mark', 'conj_id') + REGISTERS
LEARNED_OWNER = 'learned'    # the owner of the flows a ``learn`` action installs


@dataclass(frozen=True)
class Load:
    """NXM load of a constant into ``n_bits`` of ``dst`` from bit ``offset`` on: the
    actions of a learned flow (``load:0x1->NXM_NX_REG5[0]``)."""
    value: int
    dst: str
    n_bits: int
    offset: int = 0

    def ofctl(self):
        nxm = 'NXM_NX_' + self.dst.upper()
        bits = '' if self.n_bits == 32 else (
            f'{self.offset}' if self.n_bits == 1 else
            f'{self.offset}..{self.offset + self.n_bits - 1}')
        return f'load:{self.value:#x}->{nxm}[{bits}]'




# ---------------------------------------------------------------- packets
def tcp_flags(letters: str) -> int:
    """'SA' -> the SYN and ACK bits of the ``tcp_flags`` field."""
    return sum(TCP_FLAGS[letter] for letter in set(letters))


def tcp(src, dst, sport, dport, eth_src, eth_dst, flags='S') -> dict:
    """A TCP segment; ``flags`` as letters: 'S', 'SA', 'A', 'R', 'FA'..."""
    return {'eth_src': eth_src, 'eth_dst': eth_dst, 'eth_type': 0x0800, 'ipv4_src': src,
            'ipv4_dst': dst, 'ip_proto': 6, 'tcp_src': sport, 'tcp_dst': dport,
            'tcp_flags': tcp_flags(flags)}


def udp(src, dst, sport, dport, eth_src, eth_dst) -> dict:
    return {'eth_src': eth_src, 'eth_dst': eth_dst, 'eth_type': 0x0800, 'ipv4_src': src,
            'ipv4_dst': dst, 'ip_proto': 17, 'udp_src': sport, 'udp_dst': dport}


def icmp(src, dst, eth_src, eth_dst, icmp_type=8) -> dict:
    return {'eth_src': eth_src, 'eth_dst': eth_dst, 'eth_type': 0x0800, 'ipv4_src': src,
            'ipv4_dst': dst, 'ip_proto': 1, 'icmpv4_type': icmp_type, 'icmpv4_code': 0}


def arp_request(sha, spa, tpa, op=1) -> dict:
    """Who has ``tpa``? Tell ``spa`` (broadcast, as a host sends it)."""
    return {'eth_src': sha, 'eth_dst': 'ff:ff:ff:ff:ff:ff', 'eth_type': 0x0806,
            'arp_op': op, 'arp_sha': sha, 'arp_spa': spa, 'arp_tha': '00:00:00:00:00:00',
            'arp_tpa': tpa}


def answer(pkt: dict, flags='SA') -> dict:
    """The reply a host sends to ``pkt``: addresses, ports and MACs swapped."""
    out = dict(pkt)
    for a, b in (('eth_src', 'eth_dst'), ('ipv4_src', 'ipv4_dst'), ('tcp_src', 'tcp_dst'),
                 ('udp_src', 'udp_dst')):
        if a in pkt:
            out[a], out[b] = pkt[b], pkt[a]
    if 'tcp_flags' in pkt:
        out['tcp_flags'] = tcp_flags(flags)
    return out



# ---------------------------------------------------------------- matching
def _number(fieldname: str, value) -> int:
    if fieldname in MAC_FIELDS:
        return int(str(value).replace(':', ''), 16)
    if fieldname in IP_FIELDS:
        return int(ipaddress.IPv4Address(value))
    return int(value)


def _width(fieldname: str) -> int:
    return 48 if fieldname in MAC_FIELDS else 32


def _text(fieldname: str, number: int):
    if fieldname in MAC_FIELDS:
        raw = f'{number:012x}'
        return ':'.join(raw[i:i + 2] for i in range(0, 12, 2))
    if fieldname in IP_FIELDS:
        return str(ipaddress.IPv4Address(number))
    return number


def matches(match: tuple, pkt: dict) -> bool:
    """Does ``pkt`` carry every field of ``match`` (masked where a (value, mask) is given)?"""
    for name, want in match:
        if name not in pkt and name not in ZERO_DEFAULT:
            return False
        have = _number(name, pkt.get(name, 0))
        if isinstance(want, tuple):
            value, mask = (_number(name, w) for w in want)
            if have & mask != value & mask:
                return False
        elif have != _number(name, want):
            return False
    return True


# ---------------------------------------------------------------- the walk
@dataclass
class Walk:
    """What one switch did with one packet."""
    trace: list = field(default_factory=list)    # (table name, owner, ofctl text)
    outcome: tuple = ()
    meters: list = field(default_factory=list)   # meter ids the packet passed
    recirculations: int = 0      # of the packet that left: ct(table=...), dp_hash groups
    dp_hash: int = 0             # the datapath's hash of the packet that left (0: none)

    @property
    def tables(self) -> list[str]:
        return [step[0] for step in self.trace]


def dp_hash_slots(count: int) -> int:
    """The hash values of a dp_hash group of ``count`` equal buckets (16 for 3, 32 for 6)."""
    return max(16, 1 << (max(count, min(count * 4, DP_HASH_MAX_BUCKETS)) - 1).bit_length())


def _hash(pkt: dict) -> int:
    """The datapath's hash of a packet's 5-tuple (never 0: 0 reads as not hashed)."""
    return zlib.crc32(repr(five_tuple(pkt)).encode()) or 1


def _choose(bucket, pkt: dict, count: int) -> int:
    if bucket is None:
        if count <= DP_HASH_MAX_BUCKETS:     # from the packet's dp_hash (see above)
            return (pkt['dp_hash'] & (dp_hash_slots(count) - 1)) % count
        return _hash(_datapath(pkt)) % count
    index = bucket(pkt, count) if callable(bucket) else bucket
    if not 0 <= index < count:
        raise SimError(f'bucket {index} of a group with {count} buckets')
    return index


def walk_all(config, packet: dict, in_port: int) -> list[tuple]:
    """Where a broadcast leaves ``config``'s switch: every ('output', port, packet) of
    it (a frame flooded out of several ports), or the one drop/controller outcome."""
    run = _Run(config, Conntrack(), None, TABLE_NAMES)
    start = {k: v for k, v in packet.items() if k not in METADATA}
    start['in_port'] = in_port
    threads = [(start, 0)]
    end = 0
    while threads:
        pkt, table = threads.pop(0)
        end = run.pipeline(pkt, table, threads)
    return list(run.sent) or [('drop', end)]


def walk(config, packet: dict, in_port: int, conntrack: Conntrack | None = None,
         bucket=None, table_names: dict | None = None, dp_hash: int = 0) -> Walk:
    """Send ``packet`` into the switch holding ``config`` on ``in_port``.

    ``bucket`` picks the bucket of a select group: an index, a function
    ``(packet, bucket count) -> index``, or None for a hash of the 5-tuple. Flows that
    ``learn`` installs are added to ``config.flows`` (the switch keeps them).
    ``dp_hash``: the packet comes with this datapath hash (``DP_HASH_MAX_BUCKETS``)."""
    run = _Run(config, Conntrack() if conntrack is None else conntrack, bucket,
               TABLE_NAMES if table_names is None else table_names)
    start = {k: v for k, v in packet.items() if k not in METADATA}
    start['in_port'] = in_port
    if dp_hash:
        start['dp_hash'] = dp_hash
    threads = [(start, 0)]           # (packet, table): forks of ct(table=...) queue up
    while threads:
        pkt, table = threads.pop(0)
        run.pipeline(pkt, table, threads)
    if len(run.sent) > 1:
        raise SimError(f'packet duplicated: {run.sent}')
    run.result.outcome = run.sent[0] if run.sent else ('drop', run.last)
    return run.result


class _Run:
    """One packet on one switch: its tables, what it sent, what it went through."""

    def __init__(self, config, conntrack: Conntrack, bucket, names: dict):
        self.config, self.conntrack, self.bucket = config, conntrack, bucket
        self.names = names
        self.tables = {}
        for f in config.flows:
            self.tables.setdefault(f.table, []).append(f)
        self.groups = {g.group_id: g for g in config.groups}
        self.result = Walk()
        self.sent = []               # ('output', port, pkt) / ('controller', pkt)
        self.visits = 0
        self.last = names.get(0, 0)  # the last table looked in (a drop ends there)

    def pipeline(self, pkt: dict, table, threads: list):
        """Look ``pkt`` up from ``table`` on, following gotos; return the name of the
        table it ended in. A resubmit's table miss just returns to the resubmitter."""
        end = self.names.get(table, table)
        while table is not None:
            self.visits += 1
            if self.visits > MAX_TABLE_VISITS:
                raise SimError(f'packet loops: {self.visits} table visits: '
                               f'{self.result.trace}')
            end = self.last = self.names.get(table, table)
            hit = _lookup(self.tables.get(table, []), pkt, end)
            if hit is None:
                break                # table miss: drop (a resubmit: back to the caller)
            self.result.trace.append((end, hit.owner, hit.to_ofctl(self.names)))
            if hit.meter is not None:
                self.result.meters.append(hit.meter)
            threads += self.apply(hit.actions, pkt, threads)
            if hit.goto is not None and hit.goto <= table:
                raise SimError(f'goto backwards from table {table}: '
                               f'{hit.to_ofctl(self.names)}')
            table = hit.goto
        return end

    def apply(self, actions, pkt: dict, threads: list) -> list:
        """Run apply-actions on ``pkt`` in place; return the forked (packet, table) pairs."""
        forks = []
        for action in actions:
            if isinstance(action, SetField):
                pkt[action.field] = action.value
                pkt.get('datapath_nat', {}).pop(action.field, None)
            elif isinstance(action, (Move, Load)):
                if isinstance(action, Move):     # bits 0.. of src to bits 0.. of dst
                    value, offset = _number(action.src, pkt.get(action.src, 0)), 0
                else:
                    value, offset = action.value, action.offset
                mask = ((1 << action.n_bits) - 1) << offset
                src = (value << offset) & mask
                dst = _number(action.dst, pkt.get(action.dst, 0)) & ~mask
                pkt[action.dst] = _text(action.dst,
                                        (dst | src) & ((1 << _width(action.dst)) - 1))
            elif isinstance(action, Output):
                port = pkt['in_port'] if action.port == 'in_port' else action.port
                if action.port != 'in_port' and port == pkt['in_port']:
                    continue         # OpenFlow never outputs to the ingress port
                self.sent.append(('output', port, _wire(pkt)))
                self.result.recirculations = pkt.get('recirc', 0)
                self.result.dp_hash = pkt.get('dp_hash', 0)
            elif isinstance(action, ToController):
                self.sent.append(('controller', _wire(pkt)))
            elif isinstance(action, Group):
                group = self.groups.get(action.group_id)
                if group is None:
                    raise SimError(f'group {action.group_id} is not on the switch')
                hashed = dict(pkt)
                if len(group.buckets) <= DP_HASH_MAX_BUCKETS and not pkt.get('dp_hash'):
                    hashed['recirc'] = pkt.get('recirc', 0) + 1
                    hashed['dp_hash'] = _hash(_datapath(pkt))
                chosen = group.buckets[_choose(self.bucket, hashed, len(group.buckets))]
                self.result.trace.append((f'group:{group.group_id}', group.owner,
                                          ','.join(a.ofctl() for a in chosen.actions)))
                forks += self.apply(chosen.actions, hashed, threads)
            elif isinstance(action, Ct):
                tracked = self.conntrack.execute(action, _datapath(pkt))
                tracked.pop('datapath_nat', None)
                pkt['ct_conn'] = tracked['ct_conn']    # the datapath keeps it
                if action.table is not None:         # a recirculation: parsed anew
                    tracked['recirc'] = pkt.get('recirc', 0) + 1
                    forks.append((tracked, action.table))
                    continue
                # The datapath translates the packet; the pipeline sees neither that
                # nor conntrack's results (xlate's flow_clear_conntrack): untracked.
                pkt['datapath_nat'] = {k: tracked[k] for k in TRANSLATED
                                       if k in tracked and tracked[k] != pkt.get(k)}
                for name in ('ct_state', 'ct_zone', 'ct_mark'):
                    pkt.pop(name, None)
            elif isinstance(action, Resubmit):
                # The same packet (not a copy): what the resubmitted table does to it
                # (registers loaded, say) is seen by the rest of these actions.
                self.pipeline(pkt, action.table, threads)
            elif isinstance(action, LearnAffinity):
                self.learn(action, pkt)
            elif isinstance(action, Conjunction):
                raise SimError(f'a conjunction flow was executed: {action.ofctl()}')
            else:
                raise SimError(f'unknown action {action!r}')
        return forks

    def learn(self, action: LearnAffinity, pkt: dict) -> None:
        """Install (or refresh) the learned flow: this client, the Service address and
        port in reg7/reg8 -> load the endpoint (the packet's destination now) into
        reg3/reg4 and set reg5[0]. An existing flow with the same match is replaced,
        as ``learn`` does; timeouts are not modelled (a learned flow never expires)."""
        l4_dst = l4(pkt)[1]
        match = {'eth_type': 0x0800, 'ip_proto': action.proto,
                 'ipv4_src': pkt['ipv4_src'],
                 'ipv4_dst': _text('ipv4_dst', _number('reg7', pkt.get('reg7', 0))),
                 action.l4_field: _number('reg8', pkt.get('reg8', 0)) & 0xFFFF}
        learned = flow(action.table, 200, match, (
            Load(_number('ipv4_dst', pkt['ipv4_dst']), 'reg3', 32),
            Load(l4_dst, 'reg4', 16), Load(1, 'reg5', 1)), owner=LEARNED_OWNER)
        flows = self.config.flows
        flows[:] = [f for f in flows if not (f.owner == LEARNED_OWNER and
                                             (f.table, f.priority, f.match) ==
                                             (learned.table, learned.priority,
                                              learned.match))]
        flows.append(learned)


def _conjunctive(f) -> bool:
    return bool(f.actions) and all(isinstance(a, Conjunction) for a in f.actions)


def _lookup(flows: list, pkt: dict, table_name):
    hits = [f for f in flows if matches(f.match, pkt)]
    while hits:
        top = max(f.priority for f in hits)
        best = {f.cookie: f for f in hits if f.priority == top}
        soft = [f for f in best.values() if _conjunctive(f)]
        if not soft:
            if len(best) > 1:
                raise SimError(f'{table_name}: flows overlap at priority {top}: '
                               f'{[f.to_ofctl() for f in best.values()]}')
            return next(iter(best.values()))
        if len(soft) < len(best):
            raise SimError(f'{table_name}: a conjunction flow and another flow match at '
                           f'priority {top}: {[f.to_ofctl() for f in best.values()]}')
        done = _complete(soft)
        for conj_id in sorted(done):
            found = _lookup([f for f in flows if not _conjunctive(f)],
                            dict(pkt, conj_id=conj_id), table_name)
            if found is not None:
                return found
        hits = [f for f in hits if f.priority < top]
    return None


def _complete(soft: list) -> set:
    """The conjunctions every dimension of which a flow of ``soft`` matched."""
    seen: dict[int, set] = {}
    sizes = {}
    for f in soft:
        for a in f.actions:
            seen.setdefault(a.conj_id, set()).add(a.clause)
            if sizes.setdefault(a.conj_id, a.n_clauses) != a.n_clauses:
                raise SimError(f'conjunction {a.conj_id} has {sizes[a.conj_id]} and '
                               f'{a.n_clauses} dimensions')
    return {cid for cid, clauses in seen.items() if len(clauses) == sizes[cid]}


def _wire(pkt: dict) -> dict:
    """The packet as it leaves the switch: no pipeline metadata, the datapath's
    translations made."""
    return {k: v for k, v in _datapath(pkt).items() if k not in METADATA}


def _datapath(pkt: dict) -> dict:
    """The packet as the datapath has it: with the translations of the ``ct`` actions
    without a table that the tables do not see."""
    return dict(pkt, **pkt['datapath_nat']) if pkt.get('datapath_nat') else pkt


# ---------------------------------------------------------------- the lab
@dataclass(frozen=True)
class Attachment:
    """Where a host plugs in: switch, port, its MAC and its gateway's MAC."""
    dpid: int
    port: int
    mac: str
    gateway_mac: str


@dataclass
class Trip:
    """A packet's way through several switches: one (dpid, Walk) per switch."""
    hops: list
    passes: tuple = (0,)         # the hops where a datapath pass starts (after a veth)

    @property
    def outcome(self) -> tuple:
        return self.hops[-1][1].outcome

    @property
    def dpids(self) -> list[int]:
        return [dpid for dpid, _ in self.hops]

    @property
    def recirculations(self) -> int:
        """The most recirculations of one datapath pass: a packet crosses patch ports
        within one pass, its count going on from switch to switch; a veth pair starts a
        new pass, and a new count."""
        ends = list(self.passes[1:]) + [len(self.hops)]
        return max(sum(walk.recirculations for _, walk in self.hops[start:end])
                   for start, end in zip(self.passes, ends))


class Lab:
    """Every switch of one cluster state, cabled as services/wiring.py builds them, sharing
    one conntrack table (as the userspace datapath does)."""

    def __init__(self, state, conntrack: Conntrack | None = None, edge_patch: bool = True):
        self.state = state
        self.edge_patch = edge_patch      # else the cloud edge's cable is a veth pair
        self.cluster = state.cluster
        self.conntrack = Conntrack() if conntrack is None else conntrack
        self.configs = {dpid: desired(state, dpid)
                        for _, dpid in wiring.all_bridges(self.cluster)}

    def cable(self, dpid: int, port: int) -> tuple[int, int] | None:
        """The (switch, port) at the other end of a switch-to-switch cable."""
        if self.cluster.bare_metal and (dpid, port) in (
                (wiring.UNDERLAY_DPID, wiring.UNDERLAY_EXTERNAL_PORT),
                (wiring.EXTERNAL_DPID, wiring.EXTERNAL_UPLINK_PORT)):
            return None                  # the router host (a Linux namespace, not a switch)
        if dpid == wiring.UNDERLAY_DPID:
            if port == wiring.UNDERLAY_EXTERNAL_PORT:
                return wiring.EDGE_DPID, wiring.EDGE_UNDERLAY_PORT
            for node in self.cluster.nodes:
                if node.index == port:
                    return wiring.node_dpid(node), wiring.UPLINK_PORT
            return None
        if dpid == wiring.EDGE_DPID:
            return {wiring.EDGE_UNDERLAY_PORT: (wiring.UNDERLAY_DPID,
                                                wiring.UNDERLAY_EXTERNAL_PORT),
                    wiring.EDGE_EXTERNAL_PORT: (wiring.EXTERNAL_DPID,
                                                wiring.EXTERNAL_UPLINK_PORT)}.get(port)
        if dpid == wiring.EXTERNAL_DPID:
            if port == wiring.EXTERNAL_UPLINK_PORT:
                return wiring.EDGE_DPID, wiring.EDGE_EXTERNAL_PORT
            return None
        if port == wiring.UPLINK_PORT:
            return wiring.UNDERLAY_DPID, dpid
        return None

    def attachment(self, ip: str) -> Attachment:
        """Where the pod, node or external client with address ``ip`` is plugged in."""
        for node in self.cluster.nodes:
            gateway = wiring.mac_for(wiring.pod_gateway(node))
            if ip == node.ip:
                return Attachment(wiring.node_dpid(node), wiring.NODE_HOST_PORT,
                                  wiring.mac_for(ip), gateway)
            for pod in self.state.pods_on(node.name):
                if pod.ip == ip:
                    return Attachment(wiring.node_dpid(node), wiring.pod_port(node, ip),
                                      wiring.mac_for(ip), gateway)
        for j, client in enumerate(self.cluster.clients, start=1):
            if client.ip == ip:
                return Attachment(wiring.EXTERNAL_DPID, wiring.client_port(j),
                                  wiring.mac_for(ip),
                                  wiring.router_mac(self.cluster.external_gateway))
        raise KeyError(f'no host has address {ip}')

    def owner_of(self, dpid: int, port: int) -> str | None:
        """The address of the host on (dpid, port), None for a cable or an empty port."""
        ips = [n.ip for n in self.cluster.nodes] + [p.ip for p in self.state.pods]
        ips += [c.ip for c in self.cluster.clients]
        for ip in ips:
            where = self.attachment(ip)
            if (where.dpid, where.port) == (dpid, port):
                return ip
        return None

    def walk(self, dpid: int, pkt: dict, in_port: int, bucket=None,
             dp_hash: int = 0) -> Walk:
        return walk(self.configs[dpid], pkt, in_port, self.conntrack, bucket,
                    dp_hash=dp_hash)

    def travel(self, dpid: int, pkt: dict, in_port: int, bucket=None) -> Trip:
        """Follow ``pkt`` over the cables until it leaves on a host port or stops."""
        hops, passes, hashed = [], [0], 0
        veth = {(wiring.EDGE_DPID, wiring.EDGE_UNDERLAY_PORT),
                (wiring.UNDERLAY_DPID, wiring.UNDERLAY_EXTERNAL_PORT)}
        while True:
            step = self.walk(dpid, pkt, in_port, bucket, dp_hash=hashed)
            hashed = step.dp_hash       # across a patch port the pass goes on
            hops.append((dpid, step))
            if step.outcome[0] != 'output':
                return Trip(hops, tuple(passes))
            far = self.cable(dpid, step.outcome[1])
            if far is None:
                return Trip(hops, tuple(passes))
            if len(hops) > 8:
                raise SimError(f'packet bounces between switches: {[d for d, _ in hops]}')
            if not self.edge_patch and (dpid, step.outcome[1]) in veth:
                passes.append(len(hops))
                hashed = 0              # a new pass: the datapath hashes again
            (dpid, in_port), pkt = far, step.outcome[2]

    def send(self, pkt: dict, sender: str | None = None, bucket=None) -> Trip:
        """``sender`` (default: the packet's source address) sends ``pkt``."""
        where = self.attachment(sender or pkt.get('ipv4_src') or pkt['arp_spa'])
        return self.travel(where.dpid, pkt, where.port, bucket)

    def packet(self, src: str, dst: str, dport: int, proto='tcp', sport=40000,
               flags='S') -> dict:
        """A packet as host ``src`` puts it on its wire: to its gateway's MAC."""
        where = self.attachment(src)
        if proto == 'tcp':
            return tcp(src, dst, sport, dport, where.mac, where.gateway_mac, flags)
        if proto == 'udp':
            return udp(src, dst, sport, dport, where.mac, where.gateway_mac)
        return icmp(src, dst, where.mac, where.gateway_mac)
