"""Flows more than one kind of switch builds the same way: proxy ARP, the spoof guard of
a port, a route, the twin of a flow that leaves by the uplink, and stable group ids.

The node bridges, the external network and the cloud edge (node_switch.py,
external_switch.py, edge_switch.py) call these; each returns flows and keeps no state.
"""

from __future__ import annotations

import ipaddress
import zlib

from controller.flows import Move, Output, SetField, flow
from controller.pipeline.tables import (ETH_ARP, ETH_IP, PRIORITY_HIGH, PRIORITY_MISS,
                                        PRIORITY_NORMAL, REG0_LOCAL_ORIGIN, T)
from services import wiring


def arp_responder(gateway_mac: str, owner: str) -> list:
    """Answer every ARP request with ``gateway_mac``: proxy ARP for all routed addresses."""
    actions = (
        Move('eth_src', 'eth_dst', 48), SetField('eth_src', gateway_mac),
        SetField('arp_op', 2), Move('arp_sha', 'arp_tha', 48),
        SetField('arp_sha', gateway_mac), Move('arp_tpa', 'reg2', 32),
        Move('arp_spa', 'arp_tpa', 32), Move('reg2', 'arp_spa', 32), Output('in_port'),
    )
    return [flow(T['ARPResponder'], PRIORITY_NORMAL, {'eth_type': ETH_ARP, 'arp_op': 1},
                 actions, owner=owner),
            flow(T['ARPResponder'], PRIORITY_MISS, owner=owner)]


def port_guard(port: int, ip: str, mac: str, ip_next: str, owner: str) -> list:
    """Classifier: traffic from ``port`` must carry its own IP and MAC (spoof guard).
    A gratuitous ARP for its own address is not answered (it would look like a clash)."""
    return [
        flow(T['Classifier'], PRIORITY_HIGH,
             {'in_port': port, 'eth_type': ETH_ARP, 'arp_tpa': ip}, owner=owner),
        flow(T['Classifier'], PRIORITY_NORMAL, {'in_port': port, 'eth_type': ETH_IP,
                                                'eth_src': mac, 'ipv4_src': ip},
             (SetField('reg0', REG0_LOCAL_ORIGIN),), goto=T[ip_next], owner=owner),
        flow(T['Classifier'], PRIORITY_NORMAL, {'in_port': port, 'eth_type': ETH_ARP,
                                                'eth_src': mac, 'arp_spa': ip,
                                                'arp_sha': mac},
             goto=T['ARPResponder'], owner=owner),
    ]


def route(dst: str, port: int, src_mac: str, dst_mac: str, owner: str,
          priority: int = PRIORITY_NORMAL) -> object:
    """L3Forwarding: rewrite the MACs for the next hop and send to ``port``."""
    net = ipaddress.IPv4Network(dst)
    match = {'eth_type': ETH_IP,
             'ipv4_dst': str(net.network_address) if net.prefixlen == 32
             else (str(net.network_address), str(net.netmask))}
    return flow(T['L3Forwarding'], priority, match,
                (SetField('eth_src', src_mac), SetField('eth_dst', dst_mac), Output(port)),
                owner=owner)


def also_back_out(f) -> list:
    """``f`` (which ends in output to the uplink) plus its twin for packets that came
    in on the uplink: OpenFlow drops an output to the in_port, so those leave by IN_PORT
    (a NodePort DNATed to another node, the reply of a remote endpoint)."""
    *rest, out = f.actions
    assert isinstance(out, Output) and out.port == wiring.UPLINK_PORT, f
    twin = flow(f.table, f.priority + 1, dict(f.match, in_port=wiring.UPLINK_PORT),
                (*rest, Output('in_port')), owner=f.owner)
    return [f, twin]


def group_id(key: str, taken: set, spans: set | None = None) -> int:
    """A stable group id for a Service port: crc32 of its name, probing past collisions
    (every id a probe passed over or landed on is added to ``spans``, if given: the ids
    whose owner depends on the Services' order, controller/pipeline/incremental.py)."""
    gid = (zlib.crc32(key.encode()) & 0x7FFFFFFF) or 1
    while gid in taken:
        if spans is not None:
            spans.add(gid)
        gid = (gid + 1) & 0x7FFFFFFF or 1
        if spans is not None:
            spans.add(gid)
    taken.add(gid)
    return gid
