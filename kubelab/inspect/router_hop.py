"""``kubelab trace`` through a bare-metal lab's router (``kl-rt``, a Linux namespace).

Open vSwitch can trace its own flows only; the router between the external network and
the nodes' network is a real Linux host, so the trace crosses it here, as the router
does: it routes by destination (the nodes' subnet out of its LAN interface, the external
subnet out of the other), decrements the TTL and sets the MACs: its own interface's as
the source, its neighbour entry of the destination as the destination. The entry is
read from the router itself (``ip neigh``), so the trace shows which node it sends a
MetalLB address to right now; without an entry (nothing sent there lately) the router
would ARP, and the trace shows who answers: the node whose speaker announces the address
(its uplink flows), the node itself for a node address, the client for a client's.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

from services import wiring


def neighbour(pid: int | None, ip: str) -> tuple[str, str] | None:
    """(MAC, state) of the router's neighbour entry for ``ip``, if it has a usable one."""
    if pid is None:
        return None
    proc = subprocess.run(['nsenter', f'--net=/proc/{pid}/ns/net', '--', 'ip', '-j',
                           'neigh', 'show', 'to', ip], capture_output=True, text=True,
                          timeout=10)
    try:
        entries = json.loads(proc.stdout or '[]')
    except ValueError:
        return None
    for entry in entries:
        state = ','.join(entry.get('state') or [])
        if entry.get('lladdr') and 'FAILED' not in state and 'INCOMPLETE' not in state:
            return entry['lladdr'], state
    return None


class RouterHop:
    """The router of a bare-metal lab, for the tracer (kubelab/inspect/trace.py)."""

    def __init__(self, cluster, state, pid: int | None):
        self.cluster, self.state, self.pid = cluster, state, pid

    def owner(self, ip: str) -> tuple[str, str] | None:
        """(MAC, who) that answers the router's ARP for ``ip``."""
        for node in self.cluster.nodes:
            if node.ip == ip:
                return wiring.router_mac(node.ip), f'node {node.name}'
        for name, addresses in sorted(self.state.announced.items()):
            if ip in addresses:
                node = self.cluster.node(name)
                return (wiring.router_mac(node.ip),
                        f'node {name} (MetalLB speaker, service {addresses[ip]})')
        for client in self.cluster.clients:
            if client.ip == ip:
                return wiring.mac_for(client.ip), f'external host {client.name}'
        return None

    def who(self, mac: str) -> str:
        for node in self.cluster.nodes:
            if wiring.router_mac(node.ip) == mac.lower():
                return f'node {node.name}'
        for client in self.cluster.clients:
            if wiring.mac_for(client.ip) == mac.lower():
                return f'external host {client.name}'
        return mac

    def forward(self, bridge: str, fields: dict):
        """The router's handling of a packet ``bridge`` sent it: (next bridge, its
        in_port, the packet's new fields, a line saying what the router did), or None
        when it has no route (it drops the packet)."""
        dst = ipaddress.IPv4Address(fields.get('nw_dst', '0.0.0.0'))
        lan = ipaddress.IPv4Network(self.cluster.node_cidr)
        ext = ipaddress.IPv4Network(self.cluster.external_cidr)
        if dst in lan and bridge == wiring.EXTERNAL_BRIDGE:
            out, port, src_mac = (wiring.UNDERLAY_BRIDGE, wiring.UNDERLAY_EXTERNAL_PORT,
                                  wiring.router_mac(self.cluster.lan_gateway))
        elif dst in ext and bridge == wiring.UNDERLAY_BRIDGE:
            out, port, src_mac = (wiring.EXTERNAL_BRIDGE, wiring.EXTERNAL_UPLINK_PORT,
                                  wiring.router_mac(self.cluster.external_gateway))
        else:
            return None
        entry = neighbour(self.pid, str(dst))
        if entry is not None:
            mac, state = entry
            line = f'ip neigh: {dst} lladdr {mac} {state} ({self.who(mac)})'
        else:
            answer = self.owner(str(dst))
            if answer is None:
                return None
            mac, who = answer
            line = f'no neighbour entry: its ARP for {dst} is answered by {who} ({mac})'
        ttl = int(fields.get('nw_ttl', '64')) - 1
        new = dict(fields, dl_src=src_mac, dl_dst=mac, nw_ttl=str(ttl))
        return out, port, new, f'routed {dst} out of its {"LAN" if dst in lan else "external"} ' \
            f'interface; {line}'
