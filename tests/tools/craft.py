"""Hand-made packets sent from inside a lab host's network namespace; prints JSON.

A traffic test runs it in a pod's or an external host's namespace to show that the
switches and the controller survive what no well-behaved stack sends, and to see what
comes back: malformed headers, odd TCP flags, a SYN flood, an ARP storm, forged sources.
It runs like ``kubelab.netprobe`` (``nsenter --net=/proc/PID/ns/net python -m
tests.tools.craft ...``, see ``kubelab.labctl.LabControl.run_in``) and needs CAP_NET_RAW.

  malformed DST [--port P]                  a fixed list of broken IPv4/TCP/UDP frames
  flags DST PORT                            TCP segments with odd flags, one each
  synflood DST PORT [--count N] [--rate R] [--spoof-ip IP] [--spoof-mac MAC]
  arpstorm --claim IP [--count N]           ARP for random addresses, IP claimed as ours
  spoof DST PORT --src-ip IP [--src-mac MAC] [--payload TEXT] [--tcp]
  every mode: [--wait S]                    how long to listen after the last frame

Frames leave on the interface that routes DST (or the claimed IP), else on the only
interface besides lo: the host's Mininet veth. They are addressed to the MAC that answers
ARP for the route's next hop (the lab's switch answers every ARP request with its gateway
MAC). Pure functions build them (``malformed_frames``, ``flag_frames``, ``syn_frames``,
``arp_storm_frames``, ``spoof_frame``); only ``exchange`` touches the network: it sends
through one scapy L2 socket while sniffing what arrives for this host's MAC. Every TCP or
UDP probe has its own source port, so each answer is attributed to the probe it answers
(an ICMP error by the port of the datagram it quotes). Each mode prints one JSON object;
whatever scapy prints goes to stderr. Exit status 1 (with the reason on stderr) when it
could not run: no interface, no address, no ARP answer, no permission.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import random
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from typing import NamedTuple

from scapy.config import conf
from scapy.error import Scapy_Exception
from scapy.layers.inet import (ICMP, IP, TCP, UDP, IPerror, IPOption, TCPerror, UDPerror,
                               fragment)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw
from scapy.sendrecv import AsyncSniffer, srp1

conf.verb = 0

BROADCAST = 'ff:ff:ff:ff:ff:ff'
ZERO_MAC = '00:00:00:00:00:00'
SOURCE_PORTS = range(1024, 65536)       # the source ports probes are sent from
WAIT = 0.5                              # seconds to listen after the last frame
ARP_TIMEOUT, ARP_RETRIES = 1.0, 2
SNIFFER_START_SECONDS = 2.0
RECEIVE_BUFFER = 8 << 20                # bytes the sniffing socket may queue
SO_RCVBUFFORCE = 33                     # asm-generic/socket.h; Python does not name it
ROUTE_TABLE = '/proc/net/route'
SIOCGIFADDR, SIOCGIFMTU, SIOCGIFHWADDR = 0x8915, 0x8921, 0x8927    # linux/sockios.h
RTF_UP = 0x1
# XORed into a correct checksum to spoil it: never yields the ones'-complement twin of
# the correct value (0x0000 <-> 0xffff), which a receiver would accept.
CHECKSUM_SPOILER = 0x00ff
# An option of length 0 (lengths start at 2), then a loose source route claiming 255
# bytes in an 8-byte option area.
IP_OPTIONS_GARBAGE = b'\x99\x00\xde\xad\x83\xff\x00\x00'
# After ethertype 0x86dd: 32 bytes, version nibble 13, shorter than an IPv6 header.
IPV6_GARBAGE = b'\xde\xad\xbe\xef' * 8
FRAGMENT_SIZE = 24                      # bytes of the SYN datagram in its first fragment
JUMBO_EXCESS = 1000                     # bytes beyond the MTU of the jumbo frame
# Malformed cases whose frame carries no TCP or UDP header with the probe's port.
PORTLESS_CASES = frozenset({'fragment-overlapping', 'fragment-middle-alone', 'protocol-253',
                            'runt-frame', 'ipv6-ethertype-garbage'})
TCP_FLAG_CASES = {
    'null': '', 'fin': 'F', 'xmas': 'FPU', 'syn-fin': 'SF', 'syn-rst': 'SR',
    'syn-ack': 'SA', 'ack': 'A', 'rst': 'R', 'all': 'FSRPAUECN',
}
# The lab's default ranges (pods, Services, nodes, external hosts), then others; the whole
# IPv4 space brings in 0.0.0.0, multicast, broadcast and loopback addresses too.
ARP_TARGET_RANGES = ('192.168.0.0/16', '10.96.0.0/12', '10.128.0.0/24', '203.0.113.0/24',
                     '172.16.0.0/12', '198.51.100.0/24', '0.0.0.0/0')


class CraftError(Exception):
    """The probe could not run here."""


class Link(NamedTuple):
    """This host's side of the wire: where frames leave and whom they go to first."""
    iface: str
    ip: str
    mac: str
    mtu: int
    next_hop: str       # the address whose MAC frames are sent to


class Flow(NamedTuple):
    """The addresses a probe frame carries."""
    src_mac: str
    dst_mac: str
    src_ip: str
    dst_ip: str
    dport: int


class Probe(NamedTuple):
    """A frame to send, and how its answers are recognised."""
    name: str
    port: int | None    # this side's port, which answers come back to
    frame: Packet


class Exchange(NamedTuple):
    """What ``exchange`` saw."""
    errors: list        # per frame: None when sent, else why not
    replies: list       # frames that arrived for this host's MAC meanwhile
    seconds: float      # spent sending


# ---------------------------------------------------------------- frames

def malformed_frames(f: Flow, rng: random.Random, mtu: int) -> list[Probe]:
    """The malformed cases in sending order, each from its own random source port (None
    for those in PORTLESS_CASES). The overlapping fragment overlaps the first fragment of
    the SYN (same IP id)."""
    frag_id = rng.getrandbits(16)

    def eth(**fields):
        return Ether(src=f.src_mac, dst=f.dst_mac, **fields)

    def ip(**fields):
        return IP(src=f.src_ip, dst=f.dst_ip, **fields)

    def syn(port, **fields):
        return TCP(sport=port, dport=f.dport, flags='S', seq=rng.getrandbits(32), **fields)

    cases = [
        ('ihl-below-5', lambda p: eth() / ip(ihl=2) / syn(p)),
        ('ihl-beyond-packet', lambda p: eth() / ip(ihl=15) / syn(p)),
        ('total-length-beyond-frame', lambda p: eth() / ip(len=1400) / syn(p)),
        ('total-length-below-frame', lambda p: eth() / ip(len=28) / syn(p)),
        ('total-length-below-header', lambda p: eth() / ip(len=16) / syn(p)),
        ('bad-ip-checksum', lambda p: _spoil_checksum(eth() / ip() / syn(p), IP)),
        ('bad-tcp-checksum', lambda p: _spoil_checksum(eth() / ip() / syn(p), TCP)),
        ('tcp-data-offset-below-5', lambda p: eth() / ip() / syn(p, dataofs=2)),
        ('tcp-data-offset-beyond-segment', lambda p: eth() / ip() / syn(p, dataofs=15)),
        ('tcp-header-truncated',
         lambda p: eth() / ip(proto=socket.IPPROTO_TCP) / Raw(bytes(ip() / syn(p))[20:28])),
        ('udp-length-beyond-datagram',
         lambda p: eth() / ip() / UDP(sport=p, dport=f.dport, len=200) / Raw(b'kubelab')),
        ('udp-length-below-header',
         lambda p: eth() / ip() / UDP(sport=p, dport=f.dport, len=4) / Raw(b'kubelab')),
        ('ttl-zero', lambda p: eth() / ip(ttl=0) / syn(p)),
        ('ip-options-garbage',
         lambda p: eth() / ip(options=[IPOption(IP_OPTIONS_GARBAGE)]) / syn(p)),
        ('fragment-first-of-syn',
         lambda p: eth() / fragment(ip(id=frag_id) / syn(p) / Raw(b'k' * 32),
                                    fragsize=FRAGMENT_SIZE)[0]),
        ('fragment-overlapping',
         lambda p: eth() / ip(id=frag_id, frag=2, proto=socket.IPPROTO_TCP) / Raw(b'o' * 16)),
        ('fragment-middle-alone',
         lambda p: eth() / ip(id=frag_id ^ 1, flags='MF', frag=4, proto=socket.IPPROTO_TCP)
         / Raw(b'm' * 16)),
        ('protocol-253', lambda p: eth() / ip(proto=253) / Raw(b'kubelab experiment')),
        ('version-6-in-ipv4-header', lambda p: eth() / ip(version=6) / syn(p)),
        ('runt-frame', lambda p: eth(type=0x0800) / Raw(bytes(ip() / syn(p))[:10])),
        ('jumbo-frame', lambda p: eth() / ip() / UDP(sport=p, dport=f.dport)
         / Raw(b'j' * (mtu + JUMBO_EXCESS - 28))),
        ('ipv6-ethertype-garbage', lambda p: eth(type=0x86dd) / Raw(IPV6_GARBAGE)),
    ]
    ports = rng.sample(SOURCE_PORTS, len(cases))
    return [Probe(name, None if name in PORTLESS_CASES else port, build(port))
            for (name, build), port in zip(cases, ports)]


def _spoil_checksum(frame: Packet, layer) -> Packet:
    frame[layer].chksum = Ether(bytes(frame))[layer].chksum ^ CHECKSUM_SPOILER
    return frame


def flag_frames(f: Flow, rng: random.Random) -> list[Probe]:
    """One TCP segment per TCP_FLAG_CASES entry, each from its own random source port."""
    ports = rng.sample(SOURCE_PORTS, len(TCP_FLAG_CASES))
    return [Probe(name, port, _tcp(f, port, flags, rng))
            for (name, flags), port in zip(TCP_FLAG_CASES.items(), ports)]


def syn_frames(f: Flow, rng: random.Random, count: int) -> list[Probe]:
    """count SYNs from distinct random source ports."""
    return [Probe('syn', port, _tcp(f, port, 'S', rng))
            for port in rng.sample(SOURCE_PORTS, count)]


def _tcp(f: Flow, port: int, flags: str, rng: random.Random) -> Packet:
    return (Ether(src=f.src_mac, dst=f.dst_mac) / IP(src=f.src_ip, dst=f.dst_ip)
            / TCP(sport=port, dport=f.dport, flags=flags, seq=rng.getrandbits(32),
                  ack=rng.getrandbits(32) if 'A' in flags else 0))


def spoof_frame(f: Flow, port: int, payload: str, tcp: bool,
                rng: random.Random) -> Packet:
    """One UDP datagram carrying payload, or a TCP SYN, with f's (forged) source."""
    if tcp:
        return _tcp(f, port, 'S', rng)
    return (Ether(src=f.src_mac, dst=f.dst_mac) / IP(src=f.src_ip, dst=f.dst_ip)
            / UDP(sport=port, dport=f.dport) / Raw(payload.encode()))


def arp_targets(rng: random.Random, count: int, exclude: set[str]) -> list[str]:
    """count addresses to ask for, from each of ARP_TARGET_RANGES in turn, none in exclude."""
    nets = [ipaddress.IPv4Network(n) for n in ARP_TARGET_RANGES]
    targets: list[str] = []
    while len(targets) < count:
        net = nets[len(targets) % len(nets)]
        ip = str(net[rng.randrange(net.num_addresses)])
        if ip not in exclude:
            targets.append(ip)
    return targets


def arp_request(mac: str, ip: str, target: str) -> Packet:
    return Ether(src=mac, dst=BROADCAST) / ARP(op=1, hwsrc=mac, psrc=ip,
                                                hwdst=ZERO_MAC, pdst=target)


def arp_storm_frames(link: Link, gateway_mac: str, claim: str,
                     targets: list[str]) -> list[tuple[str, Packet]]:
    """A request for each target; gratuitous ARP (request and reply) claiming the address
    claim for this host's MAC; and replies nobody asked for, sent to the next hop: claim
    is at this MAC, and (true) this host's IP is at this MAC."""
    def reply(psrc):
        return Ether(src=link.mac, dst=gateway_mac) / ARP(
            op=2, hwsrc=link.mac, psrc=psrc, hwdst=gateway_mac, pdst=link.next_hop)

    return [('request', arp_request(link.mac, link.ip, t)) for t in targets] + [
        ('gratuitous-request', Ether(src=link.mac, dst=BROADCAST) / ARP(
            op=1, hwsrc=link.mac, psrc=claim, hwdst=ZERO_MAC, pdst=claim)),
        ('gratuitous-reply', Ether(src=link.mac, dst=BROADCAST) / ARP(
            op=2, hwsrc=link.mac, psrc=claim, hwdst=BROADCAST, pdst=claim)),
        ('unsolicited-reply-claim', reply(claim)),
        ('unsolicited-reply-own', reply(link.ip)),
    ]


def describe(frame: Packet) -> dict:
    """A received frame as JSON; ``to_port`` is this side's port it answers (for an ICMP
    error, the source port of the datagram it quotes)."""
    if ARP in frame:
        a = frame[ARP]
        return {'proto': 'arp', 'op': a.op, 'ip': a.psrc, 'mac': a.hwsrc}
    if IP not in frame:
        return {'ethertype': f'0x{frame[Ether].type:04x}'}
    src = frame[IP].src
    if ICMP in frame:
        quoted = frame.getlayer(IPerror)
        ports = frame.getlayer(TCPerror) or frame.getlayer(UDPerror)
        return {'proto': 'icmp', 'from': src, 'type': frame[ICMP].type,
                'code': frame[ICMP].code, 'quoted_proto': quoted.proto if quoted else None,
                'to_port': ports.sport if ports else None}
    if TCP in frame:
        t = frame[TCP]
        return {'proto': 'tcp', 'from': f'{src}:{t.sport}', 'to_port': t.dport,
                'flags': str(t.flags)}
    if UDP in frame:
        u = frame[UDP]
        return {'proto': 'udp', 'from': f'{src}:{u.sport}', 'to_port': u.dport,
                'payload': bytes(u.payload).decode(errors='replace')}
    return {'proto': frame[IP].proto, 'from': src}


# ---------------------------------------------------------------- the wire

def route_for(dst: str, table: str) -> tuple[str, str] | None:
    """The interface and next hop for dst in a /proc/net/route table (longest prefix,
    then lowest metric): the route's gateway, or dst itself on a directly connected one."""
    addr = int(ipaddress.IPv4Address(dst))
    best = None
    for line in table.splitlines()[1:]:
        f = line.split()
        iface, net, gateway, flags, metric, mask = (
            f[0], _route_ip(f[1]), _route_ip(f[2]), int(f[3], 16), int(f[6]), _route_ip(f[7]))
        if flags & RTF_UP and addr & int(mask) == int(net):
            key = (bin(int(mask)).count('1'), -metric)
            if best is None or key > best[0]:
                best = key, (iface, str(gateway) if int(gateway) else dst)
    return best[1] if best else None


def _route_ip(field: str) -> ipaddress.IPv4Address:
    # /proc/net/route prints each address as a number in host byte order.
    return ipaddress.IPv4Address(struct.pack('=I', int(field, 16)))


def local_link(dst: str) -> Link:
    """The interface frames to dst leave on (the one its route names, else the only one
    besides lo), this host's addresses on it, and the next hop to ARP for."""
    with open(ROUTE_TABLE) as f:
        hop = route_for(dst, f.read())
    if hop is None:
        others = [name for _, name in socket.if_nameindex() if name != 'lo']
        if len(others) != 1:
            raise CraftError(f'no route to {dst} and {len(others)} interfaces besides lo '
                             f'({", ".join(others) or "none"}): run this inside a lab '
                             "host's network namespace")
        hop = others[0], dst
    iface, next_hop = hop
    return Link(iface, *interface_addresses(iface), next_hop)


def interface_addresses(iface: str) -> tuple[str, str, int]:
    """iface's IPv4 address, MAC and MTU, asked of the kernel (not read from /sys: after
    ``nsenter --net`` sysfs still shows the namespace it was mounted in)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        def ask(request: int) -> bytes:
            return fcntl.ioctl(s, request, struct.pack('16s24x', iface.encode()))
        mac = ask(SIOCGIFHWADDR)[18:24].hex(':')
        mtu = struct.unpack('i', ask(SIOCGIFMTU)[16:20])[0]
        try:
            ip = socket.inet_ntoa(ask(SIOCGIFADDR)[20:24])
        except OSError as exc:
            raise CraftError(f'{iface} has no IPv4 address ({exc.strerror})') from None
    return ip, mac, mtu


def resolve_mac(link: Link) -> str:
    """The MAC that answers ARP for link's next hop."""
    answer = srp1(arp_request(link.mac, link.ip, link.next_hop), iface=link.iface,
                  timeout=ARP_TIMEOUT, retry=ARP_RETRIES, verbose=0)
    if answer is None or ARP not in answer:
        raise CraftError(f'no ARP answer for {link.next_hop} on {link.iface}')
    return answer[ARP].hwsrc


def exchange(link: Link, frames: list[Packet], wait: float,
             rate: float | None = None) -> Exchange:
    """Send frames on link's interface through one L2 socket, back to back or rate per
    second, while sniffing what arrives for link's MAC, until wait seconds after the last."""
    listener = _listener(link.iface)
    try:
        started = threading.Event()
        sniffer = AsyncSniffer(opened_socket=listener, started_callback=started.set,
                               lfilter=lambda p: Ether in p and p[Ether].dst == link.mac)
        sniffer.start()
        if not started.wait(SNIFFER_START_SECONDS):
            sniffer.join(0)     # raises what stopped it
            raise CraftError(f'could not start listening on {link.iface}')
        try:
            errors, seconds = _send(link.iface, frames, rate)
            time.sleep(wait)
        finally:
            replies = sniffer.stop()
    finally:
        listener.close()
    return Exchange(errors, list(replies), seconds)


def _listener(iface: str):
    """An L2 socket to sniff with: it skips the frames this host sends, and queues up to
    RECEIVE_BUFFER bytes (a flood's answers arrive faster than scapy dissects them; the
    socket is open before the first frame leaves, so none is missed)."""
    sock = conf.L2socket(iface=iface)
    try:
        sock.ins.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except PermissionError:     # without CAP_NET_ADMIN: up to net.core.rmem_max
        sock.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    return sock


def _send(iface: str, frames: list[Packet], rate: float | None) -> tuple[list, float]:
    sock = conf.L2socket(iface=iface)
    errors: list[str | None] = []
    begin = time.monotonic()
    try:
        for i, frame in enumerate(frames):
            if rate:
                time.sleep(max(0.0, begin + i / rate - time.monotonic()))
            try:
                sock.send(frame)
                errors.append(None)
            except (OSError, ValueError, struct.error, Scapy_Exception) as exc:
                errors.append(str(exc) or type(exc).__name__)
    finally:
        sock.close()
    return errors, time.monotonic() - begin


# ---------------------------------------------------------------- modes

def _start(dst: str, port: int, src_ip: str | None = None,
           src_mac: str | None = None) -> tuple[Link, Flow]:
    link = local_link(dst)
    flow = Flow(src_mac or link.mac, resolve_mac(link), src_ip or link.ip, dst, port)
    return link, flow


def _header(mode: str, link: Link, f: Flow) -> dict:
    return {'mode': mode, 'iface': link.iface, 'src_ip': f.src_ip, 'src_mac': f.src_mac,
            'dst': f.dst_ip, 'port': f.dport, 'gateway_mac': f.dst_mac}


def _by_probe(probes: list[Probe], ex: Exchange) -> dict:
    """Each probe's outcome and the answers to it; answers to no probe in ``unmatched``."""
    cases = {}
    for probe, error in zip(probes, ex.errors):
        cases[probe.name] = {'sent': error is None, 'port': probe.port, 'replies': []}
        if error is not None:
            cases[probe.name]['error'] = error
    owner = {probe.port: probe.name for probe in probes if probe.port is not None}
    unmatched = []
    for reply in map(describe, ex.replies):
        name = owner.get(reply.get('to_port'))
        (cases[name]['replies'] if name else unmatched).append(reply)
    return {'sent': sum(e is None for e in ex.errors),
            'failed': sum(e is not None for e in ex.errors),
            'cases': cases, 'unmatched': unmatched}


def run_malformed(a, rng: random.Random) -> dict:
    link, f = _start(a.dst, a.port)
    probes = malformed_frames(f, rng, link.mtu)
    ex = exchange(link, [p.frame for p in probes], a.wait)
    return {**_header('malformed', link, f), **_by_probe(probes, ex)}


def run_flags(a, rng: random.Random) -> dict:
    link, f = _start(a.dst, a.port)
    probes = flag_frames(f, rng)
    ex = exchange(link, [p.frame for p in probes], a.wait)
    out = {**_header('flags', link, f), **_by_probe(probes, ex)}
    for probe in probes:
        out['cases'][probe.name]['flags'] = str(probe.frame[TCP].flags)
    return out


def run_synflood(a, rng: random.Random) -> dict:
    link, f = _start(a.dst, a.port, a.spoof_ip, a.spoof_mac)
    probes = syn_frames(f, rng, a.count)
    ex = exchange(link, [p.frame for p in probes], a.wait, a.rate)
    ports = {p.port for p in probes}
    replies: Counter = Counter(syn_ack=0, rst=0, icmp=0, other=0)
    answered = set()
    unmatched = 0
    for reply in map(describe, ex.replies):
        if reply.get('to_port') not in ports:
            unmatched += 1
            continue
        answered.add(reply['to_port'])
        replies[_syn_answer(reply)] += 1
    sent = sum(e is None for e in ex.errors)
    return {**_header('synflood', link, f), 'sent': sent,
            'errors': dict(Counter(e for e in ex.errors if e is not None)),
            'seconds': round(ex.seconds, 3),
            'per_second': round(sent / ex.seconds, 1) if ex.seconds else 0.0,
            'replies': dict(replies), 'answered': len(answered), 'unmatched': unmatched}


def _syn_answer(reply: dict) -> str:
    flags = reply.get('flags', '')
    if reply['proto'] == 'icmp':
        return 'icmp'
    if 'S' in flags and 'A' in flags:
        return 'syn_ack'
    return 'rst' if 'R' in flags else 'other'


def run_arpstorm(a, rng: random.Random) -> dict:
    link = local_link(a.claim)
    gateway_mac = resolve_mac(link)
    targets = arp_targets(rng, a.count, {link.ip, a.claim})
    frames = arp_storm_frames(link, gateway_mac, a.claim, targets)
    ex = exchange(link, [frame for _, frame in frames], a.wait)
    asked = set(targets)
    answered, macs = set(), Counter()
    claim_replies, unmatched = [], []
    for reply in map(describe, ex.replies):
        if reply.get('proto') == 'arp' and reply['op'] == 2 and reply['ip'] in asked:
            answered.add(reply['ip'])
            macs[reply['mac']] += 1
        elif reply.get('proto') == 'arp' and reply['ip'] == a.claim:
            claim_replies.append(reply)
        else:
            unmatched.append(reply)
    return {'mode': 'arpstorm', 'iface': link.iface, 'src_ip': link.ip,
            'src_mac': link.mac, 'claim': a.claim, 'gateway_ip': link.next_hop,
            'gateway_mac': gateway_mac,
            'sent': dict(Counter(name for (name, _), e in zip(frames, ex.errors)
                                 if e is None)),
            'errors': dict(Counter(e for e in ex.errors if e is not None)),
            'targets': len(asked), 'answered': len(answered), 'macs': dict(macs),
            'claim_replies': claim_replies, 'unmatched': unmatched}


def run_spoof(a, rng: random.Random) -> dict:
    link, f = _start(a.dst, a.port, a.src_ip, a.src_mac)
    frame = spoof_frame(f, rng.choice(SOURCE_PORTS), a.payload, a.tcp, rng)
    ex = exchange(link, [frame], a.wait)
    out = {**_header('spoof', link, f), 'proto': 'tcp' if a.tcp else 'udp',
           'sent': ex.errors[0] is None, 'replies': [describe(r) for r in ex.replies]}
    if ex.errors[0] is not None:
        out['error'] = ex.errors[0]
    return out


MODES = {'malformed': run_malformed, 'flags': run_flags, 'synflood': run_synflood,
         'arpstorm': run_arpstorm, 'spoof': run_spoof}


# ---------------------------------------------------------------- command line

def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an IPv4 address') from None


def _mac(text: str) -> str:
    if not re.fullmatch(r'[0-9a-f]{2}(:[0-9a-f]{2}){5}', text.lower()):
        raise argparse.ArgumentTypeError(f'{text!r} is not a MAC address (aa:bb:cc:dd:ee:ff)')
    return text.lower()


def _ranged(kind, low, high):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f'{text} is not in {low}..{high}')
        return value
    return parse


_port = _ranged(int, 1, 65535)


def parse_args(argv=None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--wait', type=_ranged(float, 0, 60), default=WAIT,
                        help='seconds to listen for answers after the last frame')
    p = argparse.ArgumentParser(prog='craft', description='Send hand-made packets from '
                                "inside a lab host's network namespace; print JSON.")
    sub = p.add_subparsers(dest='mode', required=True)
    m = sub.add_parser('malformed', parents=[common], help='broken IPv4/TCP/UDP frames')
    m.add_argument('dst', type=_ipv4)
    m.add_argument('--port', type=_port, default=80)
    m = sub.add_parser('flags', parents=[common], help='TCP segments with odd flags')
    m.add_argument('dst', type=_ipv4)
    m.add_argument('port', type=_port)
    m = sub.add_parser('synflood', parents=[common], help='SYNs from random source ports')
    m.add_argument('dst', type=_ipv4)
    m.add_argument('port', type=_port)
    m.add_argument('--count', type=_ranged(int, 1, len(SOURCE_PORTS)), default=1000,
                   help=f'SYNs to send, one per source port (at most {len(SOURCE_PORTS)})')
    m.add_argument('--rate', type=_ranged(float, 0.001, 1e9),
                   help='SYNs per second (default: as fast as possible)')
    m.add_argument('--spoof-ip', type=_ipv4, help='source address (default: this host)')
    m.add_argument('--spoof-mac', type=_mac, help='source MAC (default: this host)')
    m = sub.add_parser('arpstorm', parents=[common],
                       help='ARP requests for random addresses, gratuitous and '
                            'unsolicited ARP claiming an address')
    m.add_argument('--claim', type=_ipv4, required=True,
                   help="the address to claim as this host's (another pod's)")
    m.add_argument('--count', type=_ranged(int, 1, 1_000_000), default=200,
                   help='ARP requests for random addresses')
    m = sub.add_parser('spoof', parents=[common], help='one datagram from a forged source')
    m.add_argument('dst', type=_ipv4)
    m.add_argument('port', type=_port)
    m.add_argument('--src-ip', type=_ipv4, required=True)
    m.add_argument('--src-mac', type=_mac, help='source MAC (default: this host)')
    m.add_argument('--payload', default='kubelab spoof')
    m.add_argument('--tcp', action='store_true', help='send a TCP SYN instead of UDP')
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    out = sys.stdout
    try:
        # scapy prints some of its complaints: keep them out of the JSON.
        with contextlib.redirect_stdout(sys.stderr):
            report = MODES[a.mode](a, random.Random())
    except (CraftError, OSError) as exc:
        print(f'craft {a.mode}: {exc}', file=sys.stderr)
        return 1
    json.dump(report, out)
    out.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
