"""MetalLB's speakers on the lab's nodes: membership through the network, the election,
gratuitous ARP.

One ``Speaker`` per node stands for the speaker pod of MetalLB's DaemonSet (the lab
runs it as a thread of the daemon, not as a pod). Each:

* keeps a membership, as MetalLB's memberlist does, by UDP on port 7946 of the node's
  address, sent from the node's network namespace through the lab's switches: every
  ``PROBE_INTERVAL`` (1 s) it tells every other speaker it is alive; a speaker not heard
  for ``DEAD_AFTER`` (4 s, memberlist's suspicion timeout for a few nodes) has left. A
  cut cable leaves the node alone on its side, and its peers without it on theirs;
* decides what its node announces from its membership and what it reads from the API
  server (services/metallb/speaker.py: every speaker sorts the candidates the same way,
  so they agree without talking). While its node's heartbeats fail (topo/heartbeat.py)
  it decides from what it read last;
* publishes the decision as its node's ``L2Announcement`` (the lab's own kind): the
  controller turns it into the ARP answers of the node's uplink
  (controller/pipeline/l2_announce.py), which, as MetalLB's ARP responder, need no API
  server;
* for an address it starts announcing, sends gratuitous ARP (a request and a reply, as
  MetalLB does) out of its node's uplink every 1.1 s for 5 s, so that the hosts on the
  LAN (the router) move their neighbour entry to it at once;
* when the API server is reachable, keeps MetalLB's ``ServiceL2Status`` objects (one per
  Service it announces, in ``metallb-system``) and records a ``nodeAssigned`` event on
  the Service.
"""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import threading
import time

from services import wiring
from services.metallb import speaker as election
from topo.netns import enter_netns

LOG = logging.getLogger('kubelab.metallb')
MEMBER_PORT = 7946
PROBE_INTERVAL = 1.0
DEAD_AFTER = 4.0
GARP_EVERY, GARP_FOR = 1.1, 5.0
VIEW_KINDS = ('Service', 'EndpointSlice', 'IPAddressPool', 'L2Advertisement', 'Node')


def gratuitous_arp(mac: str, ip: str, op: int) -> bytes:
    """A gratuitous ARP frame for ``ip`` at ``mac`` (``op`` 1 request, 2 reply)."""
    hw = bytes.fromhex(mac.replace(':', ''))
    addr = socket.inet_aton(ip)
    broadcast = b'\xff' * 6
    return broadcast + hw + struct.pack('!H', 0x0806) + struct.pack(
        '!HHBBH', 1, 0x0800, 6, 4, op) + hw + addr + broadcast + addr


def send_out_of_uplink(node, frame: bytes) -> None:
    """Send ``frame`` out of ``node``'s uplink, as from its network card."""
    subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'packet-out', wiring.node_bridge(node),
                    'CONTROLLER', f'output:{wiring.UPLINK_PORT}', frame.hex()],
                   capture_output=True, timeout=5)


class Speaker:
    """MetalLB's speaker on ``node`` (``pid``: its network namespace)."""

    def __init__(self, node, cluster, pid: int, store, api_reachable, send=send_out_of_uplink):
        self.node = node
        self.peers = [n for n in cluster.nodes if n.name != node.name]
        self.pid = pid
        self.store = store
        self.api_reachable = api_reachable
        self.send = send
        self.members = {node.name}
        self.announcing: dict = {}          # address -> (namespace, service)
        self._heard: dict[str, float] = {}
        self._view = None
        self._view_rv = -1
        self._status_dirty = True
        self._spam: dict[str, float] = {}   # address -> until when
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f'metallb-speaker-{node.name}')

    def start(self):
        self._thread.start()

    def stop(self):
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self):
        enter_netns(self.pid)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.node.ip, MEMBER_PORT))
        sock.settimeout(0.1)
        next_probe = next_garp = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_probe:
                next_probe = now + PROBE_INTERVAL
                for peer in self.peers:
                    try:
                        sock.sendto(f'alive {self.node.name}'.encode(),
                                    (peer.ip, MEMBER_PORT))
                    except OSError:
                        pass
            self._receive(sock)
            try:
                self._decide(time.monotonic())
            except Exception:          # keep the speaker alive; the next round retries
                LOG.exception('speaker on %s', self.node.name)
            if now >= next_garp:
                next_garp = now + GARP_EVERY
                self._gratuitous(now)
        sock.close()

    def _receive(self, sock):
        try:
            data, _ = sock.recvfrom(512)
        except OSError:
            return
        words = data.decode(errors='replace').split()
        if len(words) == 2 and words[0] == 'alive':
            self._heard[words[1]] = time.monotonic()

    def _decide(self, now: float):
        members = {self.node.name} | {n for n, t in self._heard.items()
                                       if now - t <= DEAD_AFTER}
        if members != self.members:
            LOG.info('memberlist on %s: %s', self.node.name, ', '.join(
                [f'{n} joined' for n in sorted(members - self.members)]
                + [f'{n} left' for n in sorted(self.members - members)]))
            self.members = members
        reachable = self.api_reachable()
        if reachable and self.store.rv != self._view_rv:
            self._view_rv = self.store.rv
            self._view = election.View(*(self.store.list(k) for k in VIEW_KINDS))
        if self._view is None:
            return
        mine = election.announcements(self.node.name, self._view, members)
        if mine != self.announcing:
            for ip in set(mine) - set(self.announcing):
                LOG.info('%s announces %s (service %s/%s)', self.node.name, ip, *mine[ip])
                self._spam[ip] = now + GARP_FOR
                self._gratuitous_one(ip)
            self.announcing = mine
            self.store.set_l2_announcements(self.node.name, mine)
            self._status_dirty = True
        if self._status_dirty and reachable:
            self.store.set_service_l2_statuses(self.node.name, set(mine.values()),
                                               f'{wiring.node_host_name(self.node)}-eth0')
            self._status_dirty = False

    def _gratuitous(self, now: float):
        for ip, until in list(self._spam.items()):
            if now > until or ip not in self.announcing:
                del self._spam[ip]
            else:
                self._gratuitous_one(ip)

    def _gratuitous_one(self, ip: str):
        mac = wiring.router_mac(self.node.ip)
        for op in (1, 2):
            self.send(self.node, gratuitous_arp(mac, ip, op))
