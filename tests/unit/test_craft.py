"""tests.tools.craft without a network: every frame is malformed exactly as its name says
(checked on its bytes), flags are exact, ARP frames are shaped right; and the modes, run
against a fake wire that answers like a switch would, print the JSON a traffic test reads."""

import errno
import ipaddress
import json
import os
import random
import socket
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, in4_chksum
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import checksum

from tests.tools import craft

POD_IP, POD_MAC = '192.168.1.10', '0a:58:c0:a8:01:0a'
GATEWAY_IP, GATEWAY_MAC = '192.168.1.1', '0a:58:c0:a8:01:01'
VIP = '10.96.0.20'
OTHER_POD_IP = '192.168.2.10'
FLOW = craft.Flow(src_mac=POD_MAC, dst_mac=GATEWAY_MAC, src_ip=POD_IP, dst_ip=VIP, dport=80)
LINK = craft.Link(iface='kl-p1-eth0', ip=POD_IP, mac=POD_MAC, mtu=1500,
                  next_hop=GATEWAY_IP)
MALFORMED_NAMES = [
    'ihl-below-5', 'ihl-beyond-packet', 'total-length-beyond-frame',
    'total-length-below-frame', 'total-length-below-header', 'bad-ip-checksum',
    'bad-tcp-checksum', 'tcp-data-offset-below-5', 'tcp-data-offset-beyond-segment',
    'tcp-header-truncated', 'udp-length-beyond-datagram', 'udp-length-below-header',
    'ttl-zero', 'ip-options-garbage', 'fragment-first-of-syn', 'fragment-overlapping',
    'fragment-middle-alone', 'protocol-253', 'version-6-in-ipv4-header', 'runt-frame',
    'jumbo-frame', 'ipv6-ethertype-garbage',
]


def malformed(mtu=1500, seed=7):
    return {p.name: p for p in craft.malformed_frames(FLOW, random.Random(seed), mtu)}


def ip_bytes(probe):
    """The frame after its Ethernet header."""
    return bytes(probe.frame)[14:]


def total_length(b):
    return struct.unpack('!H', b[2:4])[0]


def ip_checksum_ok(b):
    return checksum(b[:(b[0] & 0xf) * 4]) == 0


def tcp_checksum_ok(b):
    return in4_chksum(socket.IPPROTO_TCP, IP(b), b[20:]) == 0


# ---------------------------------------------------------------- malformed frames

def test_malformed_cases_are_these_in_order_each_from_its_own_port():
    probes = craft.malformed_frames(FLOW, random.Random(1), 1500)
    assert [p.name for p in probes] == MALFORMED_NAMES
    ports = [p.port for p in probes if p.port is not None]
    assert len(set(ports)) == len(ports) == len(MALFORMED_NAMES) - len(craft.PORTLESS_CASES)
    assert {p.name for p in probes if p.port is None} == craft.PORTLESS_CASES
    for p in probes:
        raw = bytes(p.frame)
        assert raw[:12] == bytes.fromhex(GATEWAY_MAC.replace(':', '')
                                         + POD_MAC.replace(':', '')), p.name
        if p.port is not None:
            # The source port follows the IP header that was written (20 bytes, or 28
            # with the garbage options), whatever IHL claims.
            at = 42 if p.name == 'ip-options-garbage' else 34
            assert raw[at:at + 4] == struct.pack('!HH', p.port, 80), p.name


def test_ip_frames_go_from_the_pod_to_the_destination():
    for name, p in malformed().items():
        b = ip_bytes(p)
        if name not in ('runt-frame', 'ipv6-ethertype-garbage'):
            assert bytes(p.frame)[12:14] == b'\x08\x00', name
            assert b[12:20] == socket.inet_aton(POD_IP) + socket.inet_aton(VIP), name


def check_ihl_below_5(b):
    assert b[0] >> 4 == 4 and b[0] & 0xf == 2


def check_ihl_beyond_packet(b):
    assert (b[0] & 0xf) * 4 == 60 > len(b) == total_length(b)


def check_total_length_beyond_frame(b):
    assert total_length(b) > len(b)
    assert ip_checksum_ok(b)


def check_total_length_below_frame(b):
    assert 20 <= total_length(b) < len(b)
    assert ip_checksum_ok(b)


def check_total_length_below_header(b):
    assert total_length(b) < 20 < len(b)
    assert ip_checksum_ok(b)


def check_bad_ip_checksum(b):
    assert not ip_checksum_ok(b)
    assert tcp_checksum_ok(b)


def check_bad_tcp_checksum(b):
    assert ip_checksum_ok(b)
    assert not tcp_checksum_ok(b)


def check_tcp_data_offset_below_5(b):
    assert b[32] >> 4 == 2
    assert ip_checksum_ok(b) and tcp_checksum_ok(b)


def check_tcp_data_offset_beyond_segment(b):
    assert (b[32] >> 4) * 4 == 60 > len(b) - 20
    assert ip_checksum_ok(b) and tcp_checksum_ok(b)


def check_tcp_header_truncated(b):
    assert b[9] == socket.IPPROTO_TCP
    assert total_length(b) == len(b) == 28
    assert struct.unpack('!H', b[22:24])[0] == 80
    assert ip_checksum_ok(b)


def check_udp_length_beyond_datagram(b):
    assert b[9] == socket.IPPROTO_UDP
    assert struct.unpack('!H', b[24:26])[0] > len(b) - 20


def check_udp_length_below_header(b):
    assert b[9] == socket.IPPROTO_UDP
    assert struct.unpack('!H', b[24:26])[0] < 8 < len(b) - 20


def check_ttl_zero(b):
    assert b[8] == 0
    assert ip_checksum_ok(b) and tcp_checksum_ok(b)


def check_ip_options_garbage(b):
    assert b[0] & 0xf == 7
    assert b[20:28] == craft.IP_OPTIONS_GARBAGE
    assert b[21] < 2                    # an option length below 2 is never valid
    assert ip_checksum_ok(b)


def frag(b):
    """(IP id, more fragments, offset in bytes, payload length)"""
    flags_offset = struct.unpack('!H', b[6:8])[0]
    return (struct.unpack('!H', b[4:6])[0], bool(flags_offset & 0x2000),
            (flags_offset & 0x1fff) * 8, total_length(b) - 20)


def check_fragment_first_of_syn(b):
    _, more, offset, length = frag(b)
    assert more and offset == 0 and length == craft.FRAGMENT_SIZE
    assert b[9] == socket.IPPROTO_TCP and b[33] == 0x02     # the start of a SYN
    assert ip_checksum_ok(b)


def check_fragment_middle_alone(b):
    _, more, offset, length = frag(b)
    assert more and offset > 0 and length > 0
    assert ip_checksum_ok(b)


def check_protocol_253(b):
    assert b[9] == 253
    assert ip_checksum_ok(b)


def check_version_6_in_ipv4_header(b):
    assert b[0] >> 4 == 6


def check_runt_frame(b):
    assert len(b) + 14 < 60             # the Ethernet minimum without FCS
    assert len(b) < 20 and b[0] == 0x45  # the start of an IPv4 header, cut short


def check_jumbo_frame(b):
    assert len(b) == total_length(b) > 1500
    assert ip_checksum_ok(b)


def check_ipv6_ethertype_garbage(b):
    assert len(b) < 40 and b[0] >> 4 != 6


@pytest.mark.parametrize('name', [n for n in MALFORMED_NAMES if n != 'fragment-overlapping'])
def test_malformed_case_is_broken_as_named(name):
    globals()['check_' + name.replace('-', '_')](ip_bytes(malformed()[name]))


def test_the_overlapping_fragment_overlaps_the_first_fragment_of_the_syn():
    cases = malformed()
    first_id, _, first_offset, first_length = frag(ip_bytes(cases['fragment-first-of-syn']))
    ident, more, offset, length = frag(ip_bytes(cases['fragment-overlapping']))
    assert ident == first_id
    assert first_offset < offset < first_offset + first_length < offset + length
    assert not more
    lone_id = frag(ip_bytes(cases['fragment-middle-alone']))[0]
    assert lone_id != first_id


def test_ethertypes_of_the_odd_frames():
    cases = malformed()
    assert bytes(cases['runt-frame'].frame)[12:14] == b'\x08\x00'
    assert bytes(cases['ipv6-ethertype-garbage'].frame)[12:14] == b'\x86\xdd'
    assert bytes(cases['version-6-in-ipv4-header'].frame)[12:14] == b'\x08\x00'


def test_the_jumbo_frame_exceeds_the_interfaces_mtu():
    b = ip_bytes(malformed(mtu=1400)['jumbo-frame'])
    assert len(b) == 1400 + craft.JUMBO_EXCESS


def test_a_valid_syn_passes_the_checks_the_broken_ones_fail():
    b = bytes(IP(src=POD_IP, dst=VIP) / TCP(sport=1234, dport=80, flags='S'))
    assert ip_checksum_ok(b) and tcp_checksum_ok(b)


def test_malformed_frames_are_reproducible_from_the_seed():
    assert ([bytes(p.frame) for p in malformed(seed=3).values()]
            == [bytes(p.frame) for p in malformed(seed=3).values()])


# ---------------------------------------------------------------- TCP flags, SYNs, spoof

FLAG_BITS = {'null': 0x000, 'fin': 0x001, 'xmas': 0x029, 'syn-fin': 0x003, 'syn-rst': 0x006,
             'syn-ack': 0x012, 'ack': 0x010, 'rst': 0x004, 'all': 0x1ff}


def tcp_flag_bits(raw):
    """The 9 flag bits of the TCP header after a 14 + 20 byte Ethernet and IP header."""
    return ((raw[46] & 0x01) << 8) | raw[47]


def test_flag_frames_carry_exactly_their_flags():
    probes = craft.flag_frames(FLOW, random.Random(1))
    assert {p.name: tcp_flag_bits(bytes(p.frame)) for p in probes} == FLAG_BITS
    assert len({p.port for p in probes}) == len(probes)
    for p in probes:
        raw = bytes(p.frame)
        assert struct.unpack('!HH', raw[34:38]) == (p.port, 80)
        assert tcp_checksum_ok(raw[14:]) and ip_checksum_ok(raw[14:])
        ack = struct.unpack('!I', raw[42:46])[0]
        assert (ack != 0) == bool(FLAG_BITS[p.name] & 0x10), p.name


def test_syn_frames_come_from_distinct_ports_with_the_flows_source():
    spoofed = FLOW._replace(src_ip='192.168.1.99', src_mac='0a:58:c0:a8:01:63')
    probes = craft.syn_frames(spoofed, random.Random(1), 2000)
    assert len({p.port for p in probes}) == 2000
    for p in probes[:50]:
        raw = bytes(p.frame)
        assert tcp_flag_bits(raw) == 0x002
        assert raw[6:12] == bytes.fromhex('0a58c0a80163')
        assert raw[26:30] == socket.inet_aton('192.168.1.99')
        assert tcp_checksum_ok(raw[14:])


def test_spoof_frame_udp_and_tcp():
    forged = FLOW._replace(src_ip=OTHER_POD_IP)
    udp = craft.spoof_frame(forged, 4000, 'hello', tcp=False, rng=random.Random(1))
    assert udp[IP].src == OTHER_POD_IP and udp[UDP].sport == 4000 and udp[UDP].dport == 80
    assert bytes(udp[UDP].payload) == b'hello'
    syn = craft.spoof_frame(forged, 4000, 'hello', tcp=True, rng=random.Random(1))
    assert syn[IP].src == OTHER_POD_IP and syn[TCP].flags == 'S' and Raw not in syn


# ---------------------------------------------------------------- ARP

def test_arp_targets_take_each_range_in_turn_and_skip_excluded():
    targets = craft.arp_targets(random.Random(1), 70, {POD_IP})
    assert len(targets) == 70 and POD_IP not in targets
    nets = [ipaddress.IPv4Network(n) for n in craft.ARP_TARGET_RANGES]
    for i, target in enumerate(targets):
        assert ipaddress.IPv4Address(target) in nets[i % len(nets)]
    tiny = craft.arp_targets(random.Random(1), 7, {str(ip) for ip in nets[2]} - {'10.128.0.5'})
    assert tiny[2] == '10.128.0.5'


def test_arp_storm_frames_are_shaped_right():
    frames = craft.arp_storm_frames(LINK, GATEWAY_MAC, OTHER_POD_IP, ['10.96.0.1', '1.2.3.4'])
    assert [name for name, _ in frames] == [
        'request', 'request', 'gratuitous-request', 'gratuitous-reply',
        'unsolicited-reply-claim', 'unsolicited-reply-own']
    shape = [(f[Ether].src, f[Ether].dst, f[ARP].op, f[ARP].hwsrc, f[ARP].psrc, f[ARP].hwdst,
              f[ARP].pdst) for f in (Ether(bytes(frame)) for _, frame in frames)]
    bcast, zero = craft.BROADCAST, craft.ZERO_MAC
    assert shape == [
        (POD_MAC, bcast, 1, POD_MAC, POD_IP, zero, '10.96.0.1'),
        (POD_MAC, bcast, 1, POD_MAC, POD_IP, zero, '1.2.3.4'),
        (POD_MAC, bcast, 1, POD_MAC, OTHER_POD_IP, zero, OTHER_POD_IP),
        (POD_MAC, bcast, 2, POD_MAC, OTHER_POD_IP, bcast, OTHER_POD_IP),
        (POD_MAC, GATEWAY_MAC, 2, POD_MAC, OTHER_POD_IP, GATEWAY_MAC, GATEWAY_IP),
        (POD_MAC, GATEWAY_MAC, 2, POD_MAC, POD_IP, GATEWAY_MAC, GATEWAY_IP),
    ]
    assert all(bytes(frame)[12:14] == b'\x08\x06' for _, frame in frames)


# ---------------------------------------------------------------- replies

def from_vip(layer):
    return Ether(bytes(Ether(src=GATEWAY_MAC, dst=POD_MAC) / IP(src=VIP, dst=POD_IP) / layer))


def test_describe_replies():
    assert craft.describe(from_vip(TCP(sport=80, dport=4000, flags='RA'))) == {
        'proto': 'tcp', 'from': f'{VIP}:80', 'to_port': 4000, 'flags': 'RA'}
    unreachable = from_vip(ICMP(type=3, code=3) / IP(src=POD_IP, dst=VIP)
                           / UDP(sport=4001, dport=53))
    assert craft.describe(unreachable) == {
        'proto': 'icmp', 'from': VIP, 'type': 3, 'code': 3, 'quoted_proto': 17,
        'to_port': 4001}
    no_protocol = from_vip(ICMP(type=3, code=2) / IP(src=POD_IP, dst=VIP, proto=253))
    assert craft.describe(no_protocol) == {
        'proto': 'icmp', 'from': VIP, 'type': 3, 'code': 2, 'quoted_proto': 253,
        'to_port': None}
    assert craft.describe(from_vip(ICMP(type=0)))['quoted_proto'] is None
    assert craft.describe(from_vip(UDP(sport=53, dport=4002) / Raw(b'web-1'))) == {
        'proto': 'udp', 'from': f'{VIP}:53', 'to_port': 4002, 'payload': 'web-1'}
    assert craft.describe(from_vip(Raw(b'x'))) == {'proto': 0, 'from': VIP}
    arp = Ether(src=GATEWAY_MAC, dst=POD_MAC) / ARP(op=2, hwsrc=GATEWAY_MAC, psrc='1.2.3.4')
    assert craft.describe(arp) == {'proto': 'arp', 'op': 2, 'ip': '1.2.3.4',
                                   'mac': GATEWAY_MAC}
    assert craft.describe(Ether(type=0x86dd) / Raw(b'x')) == {'ethertype': '0x86dd'}


# ---------------------------------------------------------------- routes, the link

def route_line(iface, dst, gateway, mask, flags=0x1, metric=0):
    def hexed(ip):
        return '%08X' % struct.unpack('=I', socket.inet_aton(ip))[0]
    return (f'{iface}\t{hexed(dst)}\t{hexed(gateway)}\t{flags:04X}\t0\t0\t{metric}\t'
            f'{hexed(mask)}\t0\t0\t0')


ROUTE_HEADER = ('Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\t'
                'Window\tIRTT')
POD_ROUTES = '\n'.join([
    ROUTE_HEADER,
    route_line('kl-p1-eth0', '0.0.0.0', GATEWAY_IP, '0.0.0.0', flags=0x3),
    route_line('kl-p1-eth0', '192.168.1.0', '0.0.0.0', '255.255.255.0'),
]) + '\n'


def test_route_for_prefers_the_longest_prefix():
    assert craft.route_for(VIP, POD_ROUTES) == ('kl-p1-eth0', GATEWAY_IP)
    assert craft.route_for('192.168.1.11', POD_ROUTES) == ('kl-p1-eth0', '192.168.1.11')


def test_route_for_a_node_without_default_route_and_down_routes():
    table = '\n'.join([
        ROUTE_HEADER,
        route_line('n1-eth0', '10.96.0.0', '0.0.0.0', '255.240.0.0'),
        route_line('n1-eth0', '10.128.0.0', '0.0.0.0', '255.255.255.0'),
        route_line('other', '10.96.0.0', '0.0.0.0', '255.255.255.0', metric=5),
        route_line('down', '10.96.0.0', '0.0.0.0', '255.255.255.255', flags=0x0),
    ])
    assert craft.route_for('10.96.0.20', table) == ('other', '10.96.0.20')
    assert craft.route_for('10.100.0.1', table) == ('n1-eth0', '10.100.0.1')
    assert craft.route_for('8.8.8.8', table) is None


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A namespace's route table and interfaces, faked."""
    def fake(routes, interfaces):
        (tmp_path / 'route').write_text(routes)
        monkeypatch.setattr(craft, 'ROUTE_TABLE', str(tmp_path / 'route'))
        monkeypatch.setattr(craft.socket, 'if_nameindex',
                            lambda: [(1, 'lo')] + list(enumerate(interfaces, start=2)))
        monkeypatch.setattr(craft, 'interface_addresses', lambda iface: (POD_IP, POD_MAC, 1450))
    return fake


def test_local_link_follows_the_route(host):
    host(POD_ROUTES, ['kl-p1-eth0'])
    assert craft.local_link(VIP) == craft.Link('kl-p1-eth0', POD_IP, POD_MAC, 1450, GATEWAY_IP)


def test_local_link_without_a_route_takes_the_only_interface(host):
    host(ROUTE_HEADER + '\n', ['n1-eth0'])
    assert craft.local_link(VIP) == craft.Link('n1-eth0', POD_IP, POD_MAC, 1450, VIP)


def test_local_link_refuses_to_guess_between_interfaces(host):
    host(ROUTE_HEADER + '\n', ['eth0', 'eth1'])
    with pytest.raises(craft.CraftError, match='2 interfaces besides lo'):
        craft.local_link(VIP)


def test_interface_addresses_are_asked_of_the_kernel():
    # Only reads lo of the namespace the tests run in.
    ip, mac, mtu = craft.interface_addresses('lo')
    assert (ip, mac) == ('127.0.0.1', '00:00:00:00:00:00') and mtu > 1500
    with pytest.raises(OSError):
        craft.interface_addresses('kl-no-such-if')


# ---------------------------------------------------------------- modes on a fake wire

class Wire:
    """The lab's side of the veth, faked. Frames sent go to ``answer`` (a function from a
    frame to the frames the lab sends back); every sniffer sees the frames sent (as a real
    packet socket does) and the answers, after its lfilter. Frames too big for the MTU are
    refused as the kernel refuses them."""

    def __init__(self, monkeypatch, answer=lambda frame: ()):
        self.answer, self.sent, self.sniffers, self.arp_asked = answer, [], [], []
        self.noisy = False
        monkeypatch.setattr(craft, 'local_link', lambda dst: LINK)
        monkeypatch.setattr(craft, 'srp1', self.srp1)
        monkeypatch.setattr(craft, 'AsyncSniffer', lambda **kw: FakeSniffer(self, **kw))
        monkeypatch.setattr(craft.conf, 'L2socket', lambda iface: FakeSocket(self, iface))
        self.sockets = []

    def srp1(self, query, iface, **_):
        assert iface == LINK.iface
        self.arp_asked.append(query)
        q = query[ARP]
        return Ether(src=GATEWAY_MAC, dst=q.hwsrc) / ARP(op=2, hwsrc=GATEWAY_MAC, psrc=q.pdst,
                                                         hwdst=q.hwsrc, pdst=q.psrc)

    def deliver(self, frame):
        for sniffer in self.sniffers:
            parsed = Ether(bytes(frame))
            if sniffer.lfilter(parsed):
                sniffer.results.append(parsed)


class FakeSocket:
    def __init__(self, wire, iface):
        assert iface == LINK.iface
        self.wire, self.options, self.closed = wire, {}, False
        self.ins = self            # scapy's L2Socket: the socket.socket it receives on
        wire.sockets.append(self)

    def setsockopt(self, level, option, value):
        self.options[level, option] = value

    def send(self, frame):
        if self.wire.noisy:
            print('WARNING: something scapy says')
        if len(bytes(frame)) > LINK.mtu + 14:
            raise OSError(errno.EMSGSIZE, os.strerror(errno.EMSGSIZE))
        self.wire.sent.append(frame)
        self.wire.deliver(frame)
        for reply in self.wire.answer(frame):
            self.wire.deliver(reply)

    def close(self):
        self.closed = True


class FakeSniffer:
    def __init__(self, wire, opened_socket, started_callback, lfilter):
        assert opened_socket in wire.sockets and not opened_socket.closed
        self.wire, self.started_callback, self.lfilter = wire, started_callback, lfilter
        self.results = []

    def start(self):
        self.wire.sniffers.append(self)
        self.started_callback()

    def stop(self):
        self.wire.sniffers.remove(self)
        return self.results


def tcp_reply(frame, flags):
    """What the lab sends back to a TCP frame: a segment to its source."""
    return (Ether(src=GATEWAY_MAC, dst=frame[Ether].src)
            / IP(src=frame[IP].dst, dst=frame[IP].src)
            / TCP(sport=frame[TCP].dport, dport=frame[TCP].sport, flags=flags))


def linux_behind_conntrack(frame):
    """A listening server behind the lab's switch: conntrack drops invalid segments, the
    server answers a SYN with a SYN-ACK and a stray ACK with an RST."""
    if TCP not in frame:
        return []
    flags = frame[TCP].flags
    if flags == 'S':
        return [tcp_reply(frame, 'SA')]
    if flags == 'A':
        return [tcp_reply(frame, 'R')]
    return []


def run(capsys, *argv):
    rc = craft.main([*argv, '--wait', '0'])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.out.endswith('\n')
    return json.loads(out.out)


def test_flags_reports_each_case_and_what_answered_it(monkeypatch, capsys):
    wire = Wire(monkeypatch, linux_behind_conntrack)
    out = run(capsys, 'flags', VIP, '80')
    assert {k: out[k] for k in ('mode', 'iface', 'src_ip', 'src_mac', 'dst', 'port',
                                'gateway_mac', 'sent', 'failed', 'unmatched')} == {
        'mode': 'flags', 'iface': LINK.iface, 'src_ip': POD_IP, 'src_mac': POD_MAC,
        'dst': VIP, 'port': 80, 'gateway_mac': GATEWAY_MAC, 'sent': 9, 'failed': 0,
        'unmatched': []}
    assert list(out['cases']) == list(craft.TCP_FLAG_CASES)
    assert out['cases']['xmas']['flags'] == 'FPU'
    assert out['cases']['syn-fin'] == {'sent': True, 'port': out['cases']['syn-fin']['port'],
                                       'replies': [], 'flags': 'FS'}
    ack = out['cases']['ack']
    assert ack['replies'] == [{'proto': 'tcp', 'from': f'{VIP}:80', 'to_port': ack['port'],
                               'flags': 'R'}]
    assert all(not c['replies'] for n, c in out['cases'].items() if n != 'ack')
    assert len(wire.sent) == 9
    asked = wire.arp_asked[0][ARP]
    assert (asked.op, asked.psrc, asked.hwsrc, asked.pdst) == (1, POD_IP, POD_MAC, GATEWAY_IP)


def test_malformed_reports_every_case_and_the_refused_jumbo(monkeypatch, capsys):
    def unreachable(frame):
        if UDP in frame:
            return [Ether(src=GATEWAY_MAC, dst=POD_MAC) / IP(src=VIP, dst=POD_IP)
                    / ICMP(type=3, code=3) / bytes(frame[IP])[:28]]
        if frame[Ether].type == 0x86dd:
            return [Ether(src=GATEWAY_MAC, dst=POD_MAC) / IP(src=VIP, dst=POD_IP)
                    / ICMP(type=12)]
        return []
    wire = Wire(monkeypatch, unreachable)
    out = run(capsys, 'malformed', VIP, '--port', '8080')
    assert out['mode'] == 'malformed' and out['port'] == 8080
    assert list(out['cases']) == MALFORMED_NAMES
    assert (out['sent'], out['failed']) == (len(MALFORMED_NAMES) - 1, 1)
    assert out['cases']['jumbo-frame']['sent'] is False
    assert out['cases']['jumbo-frame']['error'] == f'[Errno {errno.EMSGSIZE}] Message too long'
    assert all(c['sent'] for n, c in out['cases'].items() if n != 'jumbo-frame')
    for name in ('udp-length-beyond-datagram', 'udp-length-below-header'):
        case = out['cases'][name]
        assert case['replies'] == [{'proto': 'icmp', 'from': VIP, 'type': 3, 'code': 3,
                                    'quoted_proto': 17, 'to_port': case['port']}]
    assert out['unmatched'] == [{'proto': 'icmp', 'from': VIP, 'type': 12, 'code': 0,
                                 'quoted_proto': None, 'to_port': None}]
    assert out['cases']['protocol-253']['port'] is None
    assert all(TCP not in f or f[TCP].dport == 8080 for f in wire.sent)


def test_synflood_counts_answers_by_kind(monkeypatch, capsys):
    def answer(frame):
        port = frame[TCP].sport
        noise = tcp_reply(frame, 'SA')
        noise[TCP].dport = 1        # no SYN came from port 1: not an answer to the flood
        return [tcp_reply(frame, 'SA' if port % 2 else 'R')] + ([noise] if port % 5 == 0
                                                                 else [])
    wire = Wire(monkeypatch, answer)
    out = run(capsys, 'synflood', VIP, '80', '--count', '300')
    odd = sum(f[TCP].sport % 2 for f in wire.sent)
    assert out['sent'] == 300 and out['errors'] == {}
    assert out['replies'] == {'syn_ack': odd, 'rst': 300 - odd, 'icmp': 0, 'other': 0}
    assert out['answered'] == 300
    assert out['unmatched'] == sum(f[TCP].sport % 5 == 0 for f in wire.sent)
    assert out['seconds'] >= 0 and out['per_second'] > 0
    assert (out['src_ip'], out['src_mac']) == (POD_IP, POD_MAC)


def test_synflood_from_a_spoofed_source_sees_no_answers(monkeypatch, capsys):
    wire = Wire(monkeypatch, linux_behind_conntrack)
    out = run(capsys, 'synflood', VIP, '80', '--count', '20', '--spoof-ip', OTHER_POD_IP,
              '--spoof-mac', '0A:58:C0:A8:02:0A')
    assert (out['src_ip'], out['src_mac']) == (OTHER_POD_IP, '0a:58:c0:a8:02:0a')
    assert all(f[IP].src == OTHER_POD_IP and f[Ether].src == '0a:58:c0:a8:02:0a'
               for f in wire.sent)
    assert out['sent'] == 20
    assert out['replies'] == {'syn_ack': 0, 'rst': 0, 'icmp': 0, 'other': 0}


def test_synflood_rate_paces_the_frames(monkeypatch, capsys):
    Wire(monkeypatch)
    out = run(capsys, 'synflood', VIP, '80', '--count', '11', '--rate', '200')
    assert out['seconds'] >= 10 / 200


def arp_responder(frame):
    """The lab's switch: the spoof guard drops ARP whose sender is not the pod, the
    responder answers every request with the gateway MAC, replies end at a drop."""
    a = frame[ARP]
    if a.psrc != POD_IP or a.hwsrc != POD_MAC or a.op != 1:
        return []
    return [Ether(src=GATEWAY_MAC, dst=a.hwsrc) / ARP(op=2, hwsrc=GATEWAY_MAC, psrc=a.pdst,
                                                      hwdst=a.hwsrc, pdst=a.psrc)]


def test_arpstorm_counts_answers_and_claims(monkeypatch, capsys):
    wire = Wire(monkeypatch, arp_responder)
    out = run(capsys, 'arpstorm', '--claim', OTHER_POD_IP, '--count', '50')
    assert {k: v for k, v in out.items() if k not in ('targets', 'answered')} == {
        'mode': 'arpstorm', 'iface': LINK.iface, 'src_ip': POD_IP, 'src_mac': POD_MAC,
        'claim': OTHER_POD_IP, 'gateway_ip': GATEWAY_IP, 'gateway_mac': GATEWAY_MAC,
        'sent': {'request': 50, 'gratuitous-request': 1, 'gratuitous-reply': 1,
                 'unsolicited-reply-claim': 1, 'unsolicited-reply-own': 1},
        'errors': {}, 'macs': {GATEWAY_MAC: 50}, 'claim_replies': [], 'unmatched': []}
    assert out['answered'] == out['targets'] == len({f[ARP].pdst for f in wire.sent[:50]})


def test_arpstorm_reports_a_lab_that_answers_a_claim(monkeypatch, capsys):
    def naive(frame):
        a = frame[ARP]
        return [Ether(src=GATEWAY_MAC, dst=POD_MAC) / ARP(
            op=2, hwsrc=GATEWAY_MAC, psrc=a.pdst, hwdst=POD_MAC, pdst=a.psrc)]
    Wire(monkeypatch, naive)
    out = run(capsys, 'arpstorm', '--claim', OTHER_POD_IP, '--count', '5')
    # Both gratuitous frames were answered.
    assert out['claim_replies'] == 2 * [{'proto': 'arp', 'op': 2, 'ip': OTHER_POD_IP,
                                         'mac': GATEWAY_MAC}]
    # The unsolicited replies were answered from the gateway's address: unmatched.
    assert [r['ip'] for r in out['unmatched']] == [GATEWAY_IP, GATEWAY_IP]


def test_spoof_sends_one_forged_datagram(monkeypatch, capsys):
    wire = Wire(monkeypatch)
    out = run(capsys, 'spoof', VIP, '53', '--src-ip', OTHER_POD_IP, '--payload', 'hi')
    assert out == {'mode': 'spoof', 'iface': LINK.iface, 'src_ip': OTHER_POD_IP,
                   'src_mac': POD_MAC, 'dst': VIP, 'port': 53, 'gateway_mac': GATEWAY_MAC,
                   'proto': 'udp', 'sent': True, 'replies': []}
    [frame] = wire.sent
    assert frame[IP].src == OTHER_POD_IP and bytes(frame[UDP].payload) == b'hi'


def test_spoof_tcp_syn_and_its_answer(monkeypatch, capsys):
    wire = Wire(monkeypatch, linux_behind_conntrack)
    out = run(capsys, 'spoof', VIP, '80', '--src-ip', OTHER_POD_IP, '--tcp',
              '--src-mac', '0a:58:c0:a8:02:0a')
    [frame] = wire.sent
    assert frame[TCP].flags == 'S' and frame[Ether].src == '0a:58:c0:a8:02:0a'
    assert out['proto'] == 'tcp' and out['sent'] is True
    assert out['replies'] == []     # the SYN-ACK went to the forged MAC


def test_exchange_listens_with_a_big_buffer_and_closes_its_sockets(monkeypatch):
    wire = Wire(monkeypatch, linux_behind_conntrack)
    frames = [p.frame for p in craft.syn_frames(FLOW, random.Random(1), 3)]
    ex = craft.exchange(LINK, frames, wait=0)
    assert ex.errors == [None] * 3 and [r[TCP].flags for r in ex.replies] == ['SA'] * 3
    listener, sender = wire.sockets
    assert listener.options == {(socket.SOL_SOCKET, craft.SO_RCVBUFFORCE): craft.RECEIVE_BUFFER}
    assert listener.closed and sender.closed and wire.sniffers == []


def test_without_cap_net_admin_the_buffer_is_what_rmem_max_allows(monkeypatch):
    def refuse_force(self, level, option, value):
        if option == craft.SO_RCVBUFFORCE:
            raise PermissionError(errno.EPERM, 'Operation not permitted')
        self.options[level, option] = value
    monkeypatch.setattr(FakeSocket, 'setsockopt', refuse_force)
    wire = Wire(monkeypatch)
    craft.exchange(LINK, [], wait=0)
    assert wire.sockets[0].options == {(socket.SOL_SOCKET, socket.SO_RCVBUF):
                                       craft.RECEIVE_BUFFER}


def test_what_scapy_prints_goes_to_stderr_not_into_the_json(monkeypatch, capsys):
    wire = Wire(monkeypatch)
    wire.noisy = True
    rc = craft.main(['spoof', VIP, '53', '--src-ip', OTHER_POD_IP, '--wait', '0'])
    out = capsys.readouterr()
    assert rc == 0
    assert json.loads(out.out)['sent'] is True
    assert 'WARNING: something scapy says' in out.err


def test_no_arp_answer_is_an_error_on_stderr(monkeypatch, capsys):
    Wire(monkeypatch)
    monkeypatch.setattr(craft, 'srp1', lambda *a, **kw: None)
    assert craft.main(['flags', VIP, '80']) == 1
    out = capsys.readouterr()
    assert out.out == ''
    assert out.err == f'craft flags: no ARP answer for {GATEWAY_IP} on {LINK.iface}\n'


def test_a_sniffer_that_cannot_start_is_an_error(monkeypatch, capsys):
    class Denied(FakeSniffer):
        def start(self):
            pass

        def join(self, timeout=None):
            raise PermissionError(errno.EPERM, 'Operation not permitted')
    wire = Wire(monkeypatch)
    monkeypatch.setattr(craft, 'AsyncSniffer', lambda **kw: Denied(wire, **kw))
    monkeypatch.setattr(craft, 'SNIFFER_START_SECONDS', 0.01)
    assert craft.main(['malformed', VIP]) == 1
    out = capsys.readouterr()
    assert out.out == '' and 'Operation not permitted' in out.err
    assert wire.sent == []


@pytest.mark.parametrize('argv, words', [
    (['flags', '10.96.0', '80'], "'10.96.0' is not an IPv4 address"),
    (['flags', VIP, '0'], '0 is not in 1..65535'),
    (['flags', VIP], 'required: port'),
    (['synflood', VIP, '80', '--count', '70000'], '70000 is not in 1..64512'),
    (['synflood', VIP, '80', '--rate', 'fast'], "'fast' is not a number"),
    (['synflood', VIP, '80', '--spoof-mac', '0a:58'], "'0a:58' is not a MAC address"),
    (['arpstorm'], 'required: --claim'),
    (['spoof', VIP, '53'], 'required: --src-ip'),
    (['malformed', VIP, '--wait', '-1'], '-1 is not in 0..60'),
    (['ping', VIP], "invalid choice: 'ping'"),
])
def test_bad_arguments_are_refused_with_the_reason(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        craft.parse_args(argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_defaults():
    a = craft.parse_args(['synflood', VIP, '80'])
    assert (a.count, a.rate, a.spoof_ip, a.spoof_mac, a.wait) == (1000, None, None, None,
                                                                 craft.WAIT)
    assert craft.parse_args(['malformed', VIP]).port == 80
    assert craft.parse_args(['arpstorm', '--claim', VIP]).count == 200
    spoof = craft.parse_args(['spoof', VIP, '53', '--src-ip', POD_IP])
    assert (spoof.payload, spoof.tcp, spoof.src_mac) == ('kubelab spoof', False, None)
