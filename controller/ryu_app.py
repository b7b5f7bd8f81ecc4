"""The Ryu shell of kube-proxy: the only module of kubelab that imports Ryu.

It watches the lab's API server by deltas (``/lab/v1/changes``: the objects changed since
the version it has), keeps ``ClusterState`` up to date from them (``StateBuilder``), asks the
pure pipeline (controller/pipeline/) what every switch should hold and the pure reconcile
diff (controller/reconcile.py) what to change, and sends each switch only that
difference, one OpenFlow message per change (encoded and batched by
controller/ofp_encode.py, which is handed Ryu's parser and imports nothing from Ryu).
When only a few Service ports changed, the incremental path
(controller/pipeline/incremental.py) computes that difference from their flows and
groups alone; the full pass runs at connection, whenever that path cannot tell, and
after every ``FULL_PASS_EVERY`` incremental syncs. When a switch (re)connects it first reads
the switch's flows, groups and meters and then reconciles: what is right stays
untouched, nothing is flushed.

The one packet that reaches the controller is a new connection to a Service port without
ready endpoints (or to a ClusterIP port no Service declares): the switch cannot build the
TCP RST or ICMP port-unreachable that kube-proxy's REJECT sends, so this app builds it.
That path is rate-limited on the switch by an OpenFlow meter.

The OpenFlow channel is a Unix socket, mode 0600, in Open vSwitch's run directory (the
only place OVS connects to; Ryu's StreamServer listens on a path when its "host" is
one): only root can connect, and each connection's peer uid is checked again. Only the lab's own bridges are taken: a
datapath id the cluster does not have, or one that is already connected, is refused,
logged and disconnected, so a second connection cannot take a switch over.

Run it as ``python -m controller.ryu_app --ofp-socket PATH`` with ``KUBELAB_API_SOCKET``,
``KUBELAB_TOKEN_FILE`` and ``KUBELAB_CLUSTER_FILE`` in the environment.
"""

import eventlet.wsgi

if not hasattr(eventlet.wsgi, 'ALREADY_HANDLED'):   # Ryu 4.34 on today's eventlet
    eventlet.wsgi.ALREADY_HANDLED = object()

import gc                                            # noqa: E402
import json                                          # noqa: E402
import logging                                       # noqa: E402
import os                                            # noqa: E402
import socket                                        # noqa: E402
import struct                                        # noqa: E402
import subprocess                                    # noqa: E402
import sys                                           # noqa: E402
import time                                          # noqa: E402

import msgspec                                       # noqa: E402

from ryu.base import app_manager                     # noqa: E402
from ryu.controller import controller as ofp_controller  # noqa: E402
from ryu.controller import ofp_event                 # noqa: E402
from ryu.controller.handler import (DEAD_DISPATCHER, MAIN_DISPATCHER,  # noqa: E402
                                    set_ev_cls)
from ryu.lib import hub                              # noqa: E402
from ryu.lib.packet import ethernet, icmp, ipv4, packet, tcp, udp  # noqa: E402
from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser  # noqa: E402

from controller import flows as F                    # noqa: E402
from controller import reconcile                     # noqa: E402
from controller.ofp_encode import Batch             # noqa: E402
from controller.pipeline import incremental          # noqa: E402
from controller.pipeline.conntrack_cleanup import stale_udp_flushes  # noqa: E402
from controller.pipeline.network_policy import policy_cookies  # noqa: E402
from controller.state import StateBuilder, as_seen_by, same_dataplane  # noqa: E402
from services import transport, wiring               # noqa: E402

LOG = logging.getLogger('kubelab.controller')


class _GcClock:
    """The garbage collections run and the seconds they took (``gc.callbacks``): the
    log of a slow version says how much of it they were."""

    def __init__(self):
        self.runs, self.seconds, self._began = 0, 0.0, 0.0

    def __call__(self, phase, info):
        if phase == 'start':
            self._began = time.monotonic()
        else:
            self.runs += 1
            self.seconds += time.monotonic() - self._began

    def read(self) -> tuple[int, float]:
        return self.runs, self.seconds


GC_CLOCK = _GcClock()


# ---------------------------------------------------------------- the OpenFlow socket
class _UnixSocket:
    """A Unix socket as Ryu's Datapath wants a TCP one: TCP options are skipped."""

    def __init__(self, sock):
        self._sock = sock

    def setsockopt(self, level, *args):
        if level != socket.IPPROTO_TCP:
            self._sock.setsockopt(level, *args)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _guarded_factory(original):
    """Ryu's per-connection entry, taking only root's connections on a Unix socket."""
    def factory(sock, address):
        if sock.family == socket.AF_UNIX:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize('3i'))
            pid, uid, _ = struct.unpack('3i', creds)
            if uid != os.geteuid():
                LOG.error('refused an OpenFlow connection from uid %s (pid %s)', uid, pid)
                sock.close()
                return None
            sock = _UnixSocket(sock)
        return original(sock, address)
    return factory


ofp_controller.datapath_connection_factory = _guarded_factory(
    ofp_controller.datapath_connection_factory)


def lab_dpids(cluster) -> set:
    """The datapath ids of the lab's bridges: the only switches the controller takes."""
    return {wiring.node_dpid(n) for n in cluster.nodes} | {
        wiring.UNDERLAY_DPID, wiring.EDGE_DPID, wiring.EXTERNAL_DPID}


# ---------------------------------------------------------------- a fix to Ryu's encoding
def _pad_nat_body(original):
    """Ryu 4.34 declares NXActionNAT's length rounded up to 8 but writes the body
    unpadded (OVS then rejects the message with OFPBRC_BAD_LEN): pad it."""
    def serialize_body(self):
        body = original(self)
        header = 10            # experimenter header (8) + subtype (2)
        return body + bytes(-(header + len(body)) % 8)
    return serialize_body


ofproto_v1_3_parser.NXActionNAT.serialize_body = _pad_nat_body(
    ofproto_v1_3_parser.NXActionNAT.serialize_body)


# After this many incremental syncs a switch gets the full pass again (as it does at
# connection and whenever incremental.changes cannot tell): a check that costs one
# pass over every Service port now and then (0.25 s a node bridge at 10,000 Services),
# made RECHECK_AFTER_S later, not on the change that counted to it (a pod's readiness
# would wait for it).
FULL_PASS_EVERY = 50
RECHECK_AFTER_S = 1.0
SLOW_S = 0.05           # a step that took longer is logged with its times
INDEX_AFTER_S = 1.0
# The parts of Service ports whose endpoints alone moved are re-keyed in the plan
# (incremental.Plan.settle) this long after the switch was given their new buckets:
# once every switch has them and the barrier replies are in.
SETTLE_AFTER_S = 0.1


def _index_if_current(sw, plan) -> None:
    """Index ``plan`` unless a later full pass replaced it (a batch of Services), a
    thousand Service ports at a time: the event loop takes barrier replies and
    changes in between (an incremental step that comes first finishes the index).
    Its moved parts are re-keyed first (``Plan.settle``)."""
    while sw.plan is plan and not plan.index(1000):
        hub.sleep(0)


class Switch:
    """What the controller knows one connected switch holds."""

    def __init__(self, dp):
        self.dp = dp
        self.installed = reconcile.Installed()
        self.pending = {'flows', 'groups', 'meters'}
        self.ready = False
        self.version = -1         # the store version this switch is known to carry
        self.state = None         # the ClusterState it was last synced to
        self.barrier = None       # (xid, version) of the barrier in flight
        self.plan = None          # incremental.Plan of what it was given
        self.steps = 0            # incremental syncs since the last full pass
        self.recheck = False      # its periodic full pass is due (RECHECK_AFTER_S)


class KubeProxy(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from services.cluster import load_cluster_file
        self.api = os.environ['KUBELAB_API_SOCKET']
        with open(os.environ['KUBELAB_TOKEN_FILE']) as f:
            self.token = f.read().strip()
        self.cluster = load_cluster_file(os.environ['KUBELAB_CLUSTER_FILE'])
        self.dpids = lab_dpids(self.cluster)
        self.state = None
        self.version = 0
        self.switches = {}
        self.flushes = []          # conntrack entries to delete once the flows are in
        self.policy_cookies = set()   # every NetworkPolicy flow cookie ever wanted
        self.purge = False         # a policy flow changed: purge the datapath's cache
        self.received = 0.0        # when the newest version's changes arrived
        self.report_due = hub.Event()     # a report to send (_reporter)
        hub.spawn(self._watch)
        hub.spawn(self._reporter)

    # ------------------------------------------------------------ API watch
    def _watch(self):
        version, epoch = '0', ''
        builder = StateBuilder(self.cluster)
        while True:
            gc_before = GC_CLOCK.read()
            try:
                code, raw = transport.request(
                    self.api, 'GET', f'/lab/v1/changes?since={version}&epoch={epoch}'
                    '&timeout=20', headers={'Authorization': f'Bearer {self.token}'},
                    timeout=30)
                received = time.monotonic()
                if code != 200:
                    raise RuntimeError(f'HTTP {code}: {raw[:200]!r}')
                body = msgspec.json.decode(raw)
            except Exception as exc:       # the API may be starting or gone: retry
                LOG.warning('watching the API server: %s', exc)
                hub.sleep(0.5)
                continue
            if body['resourceVersion'] == version and not body['full']:
                continue
            version, epoch = body['resourceVersion'], body['epoch']
            try:
                self.received = began = time.monotonic()
                builder.apply(body)
                old, self.state = self.state, builder.state()
                self.version = int(version)
                # After the switches hold the new flows (see _barrier): flushed any
                # earlier, a datagram could re-create an entry to the gone endpoint.
                self.flushes.extend(stale_udp_flushes(old, self.state))
                built = time.monotonic()
                for sw in list(self.switches.values()):
                    if sw.ready:
                        self._sync(sw)
                done = time.monotonic()
                if done - began > SLOW_S:
                    runs, seconds = (now - then for now, then in
                                     zip(GC_CLOCK.read(), gc_before))
                    LOG.info('version %s: %d bytes of changes read in %.3f s, state '
                             'built in %.3f s, switches given it in %.3f s (garbage '
                             'collections since the request: %d, %.3f s)', version, len(raw),
                             began - received, built - began, done - built, runs, seconds)
            except Exception:      # a bad object must not stop every later update
                LOG.exception('computing the flows of version %s failed', version)

    def _reporter(self):
        """Send the reports asked for, one at a time, each with the newest state (so
        the API server never sees a version go back), off the event loop that takes
        the barrier replies (a report per reply, each an HTTP round trip, delayed the
        next switch's reply by as much)."""
        while True:
            self.report_due.wait()
            self.report_due.clear()
            self._report()

    def _report(self):
        """Tell the API server which switches carry the newest version (once each
        switch has answered the barrier sent after that version's changes)."""
        current = sorted(dpid for dpid, sw in self.switches.items()
                         if sw.ready and sw.version == self.version)
        body = json.dumps({'version': self.version, 'switches': current}).encode()
        try:
            transport.request(self.api, 'POST', '/lab/v1/dataplane', body, {
                'Authorization': f'Bearer {self.token}',
                'Content-Type': 'application/json'}, timeout=5)
        except Exception as exc:
            LOG.warning('reporting to the API server: %s', exc)

    # ------------------------------------------------------------ switch lifecycle
    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev):
        dp = ev.datapath
        if ev.state == DEAD_DISPATCHER:
            if dp.id is not None and self.switches.get(dp.id, None) is not None \
                    and self.switches[dp.id].dp is dp:
                LOG.info('switch %#x disconnected', dp.id)
                del self.switches[dp.id]
            return
        refusal = self._refusal(dp)
        if refusal:
            LOG.error('refused switch %#x: %s; disconnecting it', dp.id, refusal)
            dp.close()
            return
        LOG.info('switch %#x connected: reading what it holds', dp.id)
        self.switches[dp.id] = Switch(dp)
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPFlowStatsRequest(dp, table_id=ofp.OFPTT_ALL))
        dp.send_msg(parser.OFPGroupDescStatsRequest(dp))
        dp.send_msg(parser.OFPMeterConfigStatsRequest(dp, meter_id=ofp.OFPM_ALL))

    def _refusal(self, dp) -> str | None:
        """Why a new connection may not be taken as a switch (None: it may)."""
        if dp.id not in self.dpids:
            return 'not a bridge of this lab (its datapath ids: ' + ', '.join(
                f'{d:#x}' for d in sorted(self.dpids)) + ')'
        current = self.switches.get(dp.id)
        if current is not None and current.dp is not dp and current.dp.is_active:
            return ('a switch with this datapath id is already connected; the second '
                    'connection would take it over')
        return None

    def _switch(self, ev):
        sw = self.switches.get(ev.msg.datapath.id)
        return sw if sw is not None and sw.dp is ev.msg.datapath else None

    def _stats_part_done(self, sw, ev, what):
        if not ev.msg.flags & sw.dp.ofproto.OFPMPF_REPLY_MORE:
            sw.pending.discard(what)
            if not sw.pending:
                sw.ready = True
                self._sync(sw)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev):
        sw = self._switch(ev)
        if sw is not None:
            sw.installed.flows.update(s.cookie for s in ev.msg.body)
            self._stats_part_done(sw, ev, 'flows')

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    def _group_stats(self, ev):
        sw = self._switch(ev)
        if sw is not None:
            sw.installed.groups.update((g.group_id, None) for g in ev.msg.body)
            self._stats_part_done(sw, ev, 'groups')

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, MAIN_DISPATCHER)
    def _meter_stats(self, ev):
        sw = self._switch(ev)
        if sw is not None:
            sw.installed.meters.update((m.meter_id, None) for m in ev.msg.body)
            self._stats_part_done(sw, ev, 'meters')

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _error(self, ev):
        msg = ev.msg
        LOG.error('switch %#x refused a message: type=%s code=%s data=%s',
                  msg.datapath.id, msg.type, msg.code, bytes(msg.data[:64]).hex())

    # ------------------------------------------------------------ reconcile
    def _recheck(self, sw):
        """The periodic full pass of ``sw`` (FULL_PASS_EVERY)."""
        sw.recheck = False
        if sw.ready and self.switches.get(sw.dp.id) is sw and sw.steps >= FULL_PASS_EVERY:
            self._sync(sw, full=True)

    def _sync(self, sw, full: bool = False):
        if self.state is None:
            return
        dp = sw.dp
        parser = dp.ofproto_parser
        # A node cut off from the API server keeps its kube-proxy rules (state.py).
        role = wiring.switch_role(self.cluster, dp.id)
        node = role.node.name if role is not None and role.kind == 'node' else None
        seen = as_seen_by(node, self.state, sw.state)
        began = time.monotonic()
        if full or not same_dataplane(sw.state, seen):    # else: nothing to send
            todo = None
            if sw.steps >= FULL_PASS_EVERY and not sw.recheck:
                sw.recheck = True
                hub.spawn_after(RECHECK_AFTER_S, self._recheck, sw)
            if not full:
                try:
                    todo = incremental.changes(sw.plan, sw.state, seen, sw.installed)
                except Exception:      # never half an incremental step: the full pass
                    LOG.exception('the incremental diff of switch %#x failed', dp.id)
                    todo = None
            if todo is None:
                want, sw.plan = incremental.full(seen, dp.id, sw.plan)
                todo = reconcile.changes(sw.installed, want)
                sw.steps = 0
                # The plan's index (0.08 s a node bridge at 10,000 Services) once the
                # switch is likely quiet, not while a batch of changes streams in.
                hub.spawn_after(INDEX_AFTER_S, _index_if_current, sw, sw.plan)
            else:
                sw.steps += 1
                want = F.SwitchConfig(flows=list(todo.flows_to_add))
                if sw.plan is not None and sw.plan.moved:
                    hub.spawn_after(SETTLE_AFTER_S, _index_if_current, sw, sw.plan)
            wanted_policy = policy_cookies(want)
            self.policy_cookies |= wanted_policy
            if any(f.cookie in wanted_policy for f in todo.flows_to_add) or \
                    self.policy_cookies & set(todo.flows_to_delete):
                self.purge = True
            computed = time.monotonic()
            batch = Batch(dp)
            steps = todo.steps()
            for op, kind, item in steps:
                batch.add(op, kind, item)
            batch.flush()
            sw.installed.apply(todo)
            if time.monotonic() - began > SLOW_S:
                LOG.info('switch %#x: %s pass in %.3f s, %d messages encoded and sent in '
                         '%.3f s', dp.id, 'incremental' if sw.steps else 'full',
                         computed - began, len(steps), time.monotonic() - computed)
        sw.state = seen
        barrier = parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        sw.barrier = (barrier.xid, self.version)
        dp.send_msg(barrier)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier(self, ev):
        sw = self._switch(ev)
        if sw is not None and sw.barrier and sw.barrier[0] == ev.msg.xid:
            sw.version = sw.barrier[1]
            sw.barrier = None
            if sw.version == self.version and time.monotonic() - self.received > SLOW_S:
                LOG.info('switch %#x carries version %s %.3f s after it arrived',
                         sw.dp.id, sw.version, time.monotonic() - self.received)
            if (self.flushes or self.purge) and all(
                    s.version == self.version for s in self.switches.values() if s.ready):
                flushes, self.flushes = self.flushes, []
                for flush in flushes:
                    flush_conntrack(flush)
                if self.purge:
                    self.purge = False
                    purge_datapath_flows()
            if all(s.version == self.version for s in self.switches.values() if s.ready):
                self.report_due.set()       # every switch carries it: say so once

    # ------------------------------------------------------------ REJECT
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        reply = reject_packet(msg.data)
        if reply is None:
            return
        dp = msg.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPPacketOut(
            dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
            actions=[parser.OFPActionOutput(msg.match['in_port'])], data=reply))


def flush_conntrack(flush):
    """Delete conntrack entries (all bridges share the userspace datapath's table)."""
    argv = ['ovs-appctl', 'dpctl/flush-conntrack', f'zone={flush.zone}', flush.orig,
            flush.reply]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        LOG.warning('%s: %s', ' '.join(argv), proc.stderr.strip())


def purge_datapath_flows():
    """Drop every flow the datapath has cached (packets upcall and are translated with
    the switches' current flows): after a NetworkPolicy change (policy_cookies says
    why)."""
    proc = subprocess.run(['ovs-appctl', 'revalidator/purge'], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        LOG.warning('ovs-appctl revalidator/purge: %s', proc.stderr.strip())


def reject_packet(data: bytes):
    """The answer kube-proxy's REJECT gives: TCP RST for a SYN, ICMP port-unreachable for
    UDP; None for anything else (dropped)."""
    pkt = packet.Packet(data)
    eth = pkt.get_protocol(ethernet.ethernet)
    ip = pkt.get_protocol(ipv4.ipv4)
    if eth is None or ip is None:
        return None
    out = packet.Packet()
    out.add_protocol(ethernet.ethernet(dst=eth.src, src=eth.dst, ethertype=eth.ethertype))
    seg = pkt.get_protocol(tcp.tcp)
    if seg is not None:
        if not seg.has_flags(tcp.TCP_SYN) or seg.has_flags(tcp.TCP_RST):
            return None
        out.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=ip.proto, ttl=64))
        out.add_protocol(tcp.tcp(src_port=seg.dst_port, dst_port=seg.src_port, seq=0,
                                 ack=(seg.seq + 1) & 0xFFFFFFFF,
                                 bits=tcp.TCP_RST | tcp.TCP_ACK, window_size=0))
    elif pkt.get_protocol(udp.udp) is not None:
        quoted = data[14:14 + ip.header_length * 4 + 8]
        out.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=1, ttl=64))
        out.add_protocol(icmp.icmp(type_=icmp.ICMP_DEST_UNREACH,
                                   code=icmp.ICMP_PORT_UNREACH_CODE,
                                   data=icmp.dest_unreach(data=quoted)))
    else:
        return None
    out.serialize()
    return bytes(out.data)


def main(argv=None):
    from ryu.cmd import manager
    import services
    gc.set_threshold(*services.GC_THRESHOLDS)     # as the daemon: a large, acyclic heap
    gc.callbacks.append(GC_CLOCK)
    args = list(sys.argv[1:] if argv is None else argv)
    i = args.index('--ofp-socket')
    path = args[i + 1]
    del args[i:i + 2]
    if os.path.exists(path):              # a crashed controller's socket
        os.unlink(path)
    os.umask(0o077)                       # the socket is born 0600: root's only
    # Ryu's StreamServer listens on a Unix socket when the "host" is a path in an
    # existing directory; the port is then unused (but must not be 0: Ryu would also
    # listen a second time for the old port 6633).
    manager.main(args=['--ofp-listen-host', path, '--ofp-tcp-listen-port', '6653',
                       *args, 'controller.ryu_app'])


if __name__ == '__main__':
    main()
