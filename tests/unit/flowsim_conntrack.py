"""The connection tracker of tests/unit/flowsim.py: a small model of the one table that
the userspace datapath shares across bridges, separated by zone (flowsim's docstring
says what it does and does not model). ``SimError`` lives here too: a pipeline that makes
conntrack do what it never does is broken.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from controller.flows import CT_STATE_BITS, Ct

SNAT_PORT_MIN, SNAT_PORT_MAX = 1024, 65535
TCP_FLAGS = {'F': 0x01, 'S': 0x02, 'R': 0x04, 'P': 0x08, 'A': 0x10}


class SimError(AssertionError):
    """The pipeline did something a sane pipeline never does (loop, backward goto...)."""


def l4(pkt: dict) -> tuple:
    """(source port, destination port) of a TCP/UDP packet, (0, 0) otherwise."""
    for proto in ('tcp', 'udp'):
        if f'{proto}_src' in pkt:
            return pkt[f'{proto}_src'], pkt[f'{proto}_dst']
    return 0, 0


def _set_l4(pkt: dict, which: str, port: int) -> None:
    for proto in ('tcp', 'udp'):
        if f'{proto}_{which}' in pkt:
            pkt[f'{proto}_{which}'] = port


# ---------------------------------------------------------------- conntrack
@dataclass
class Connection:
    zone: int
    orig: tuple                  # (proto, src, sport, dst, dport) as first seen
    dnat: tuple | None           # (ip, port) the original destination is translated to
    snat: tuple | None = None    # (ip, port) the original source is translated to
    seen_reply: bool = False
    mark: int = 0                # ct_mark: set at commit, seen by both directions

    @property
    def reply(self) -> tuple:
        return reply_tuple(self.orig, self.dnat, self.snat)

    @property
    def translated(self) -> bool:
        return self.dnat is not None or self.snat is not None


def reply_tuple(orig: tuple, dnat: tuple | None, snat: tuple | None) -> tuple:
    """The 5-tuple a reply carries, for a connection first seen as ``orig``."""
    proto, src, sport, dst, dport = orig
    if dnat is not None:
        dst, dport = dnat[0], dnat[1] or dport
    if snat is not None:
        src, sport = snat[0], snat[1] or sport
    return proto, dst, dport, src, sport


class Conntrack:
    """The shared connection table: entries keyed by zone and direction."""

    def __init__(self):
        self.connections: list[Connection] = []

    def __len__(self):
        return len(self.connections)

    def in_zone(self, zone: int) -> list[Connection]:
        return [c for c in self.connections if c.zone == zone]

    def find(self, zone: int, pkt: dict) -> tuple[Connection | None, bool]:
        """The connection ``pkt`` belongs to in ``zone``, and whether it is the reply."""
        key = five_tuple(pkt)
        for conn in self.connections:
            if conn.zone != zone:
                continue
            if conn.orig == key:
                return conn, False
            if conn.reply == key:
                return conn, True
        return None, False

    def execute(self, action: Ct, pkt: dict) -> dict:
        """Run one ``ct`` action: the tracked copy of ``pkt`` (NATed, ct_state set)."""
        if action.nat is None and action.commit is False and action.table is None:
            raise SimError(f'{action.ofctl()} does nothing')
        if action.mark is not None and not action.commit:
            raise SimError(f'{action.ofctl()}: ct_mark is set only with commit')
        out = dict(pkt)
        cached = pkt.get('ct_conn')
        if cached is not None and cached[0].zone == action.zone:
            conn, is_reply = cached
        else:
            conn, is_reply = self.find(action.zone, pkt)
        if conn is not None:
            state = {'trk', 'est', 'rpl'} if is_reply else (
                {'trk', 'est'} if conn.seen_reply else {'trk', 'new'})
            if is_reply:
                conn.seen_reply = True
            if conn.dnat is not None:
                state.add('dnat')
            if action.nat is not None and conn.translated:
                _translate(out, conn, is_reply)
            if action.commit and action.mark is not None:
                conn.mark = _with_mark(conn.mark, action)
        elif _cannot_open(pkt):
            state = {'trk', 'inv'}
        else:
            state = {'trk', 'new'}
            nat = action.nat
            dnat = (nat.dst, nat.port) if nat is not None and nat.dst is not None else None
            snat_ip = nat.src if nat is not None else None
            if action.commit:
                orig = five_tuple(pkt)
                snat = None if snat_ip is None else self._snat(action.zone, orig, dnat,
                                                               snat_ip)
                conn = Connection(action.zone, orig, dnat, snat,
                                  mark=_with_mark(0, action))
                self.connections.append(conn)
                if conn.translated:
                    _translate(out, conn, False)
                if conn.dnat is not None:
                    state.add('dnat')
            elif dnat is not None or snat_ip is not None:
                raise SimError(f'{action.ofctl()}: NAT without commit is not modelled')
        out['ct_state'] = sum(CT_STATE_BITS[s] for s in state)
        out['ct_zone'] = action.zone
        out['ct_mark'] = conn.mark if conn is not None else 0
        out['ct_conn'] = (conn, is_reply) if conn is not None else None
        return out

    def _snat(self, zone: int, orig: tuple, dnat, ip: str) -> tuple:
        """The (address, port) a new connection is masqueraded as: its own source port
        when the reply tuple is free in the zone, else the first free ephemeral port."""
        taken = {t for c in self.in_zone(zone) for t in (c.orig, c.reply)}
        sport = orig[2]
        if not sport:                     # no ports (ICMP): the address alone
            return ip, 0
        for port in itertools.chain((sport,), range(SNAT_PORT_MIN, SNAT_PORT_MAX + 1)):
            if reply_tuple(orig, dnat, (ip, port)) not in taken:
                return ip, port
        raise SimError(f'zone {zone}: no port left to masquerade {orig} as {ip}')


def _with_mark(mark: int, action: Ct) -> int:
    """``mark`` after the action's ``exec(set_field:M[/MASK]->ct_mark)``."""
    if action.mark is None:
        return mark
    mask = 0xFFFFFFFF if action.mark_mask is None else action.mark_mask
    return (mark & ~mask) | (action.mark & mask)


def five_tuple(pkt: dict) -> tuple:
    sport, dport = l4(pkt)
    return pkt.get('ip_proto'), pkt.get('ipv4_src'), sport, pkt.get('ipv4_dst'), dport


def _cannot_open(pkt: dict) -> bool:
    """A TCP segment that conntrack refuses as the first of a connection."""
    if pkt.get('ip_proto') != 6:
        return False
    flags = pkt.get('tcp_flags', 0)
    syn, ack, rst, fin = (flags & TCP_FLAGS[f] for f in 'SARF')
    if syn:
        return bool(ack or rst or fin)
    return not (ack or rst)


#: The header fields a NAT may rewrite.
TRANSLATED = ('ipv4_src', 'ipv4_dst', 'tcp_src', 'tcp_dst', 'udp_src', 'udp_dst')


def _translate(pkt: dict, conn: Connection, is_reply: bool) -> None:
    _, orig_src, orig_sport, orig_dst, orig_dport = conn.orig
    if is_reply:
        if conn.dnat is not None:             # the reply comes from the VIP:port again
            pkt['ipv4_src'] = orig_dst
            _set_l4(pkt, 'src', orig_dport)
        if conn.snat is not None:             # ... and goes to the real client
            pkt['ipv4_dst'] = orig_src
            _set_l4(pkt, 'dst', orig_sport)
        return
    if conn.dnat is not None:
        pkt['ipv4_dst'] = conn.dnat[0]
        if conn.dnat[1]:
            _set_l4(pkt, 'dst', conn.dnat[1])
    if conn.snat is not None:
        pkt['ipv4_src'] = conn.snat[0]
        if conn.snat[1]:
            _set_l4(pkt, 'src', conn.snat[1])
