"""``kubelab trace``: the path of a new connection through the live switches.

Computed by Open vSwitch itself: ``ovs-appctl ofproto/trace`` runs a packet through the
flows each switch holds right now (not a model of them), including conntrack's NAT,
which it simulates. This module drives it hop by hop and records what each switch did
(kubelab/inspect/trace_render.py tells it in the seed's words):

* one ofproto/trace per bridge: a packet that leaves through a patch port continues
  as a fresh trace on the peer bridge (its registers and conntrack state start anew,
  as in the datapath), one that leaves through the cloud edge's veth (where the lab
  uses one: services/wiring.py) continues on the underlay; one delivered to a pod, node
  or external host ends there;
* a Service's select group is chosen by the datapath's hash (``hash(...),recirc``),
  which ofproto/trace cannot know: the trace resumes from that recirculation with a
  ``dp_hash`` that picks the bucket of the endpoint asked for (``--endpoint``), else
  the first bucket, and names the others. The cloud edge has no group: its flows pick
  the node from the source port, which the trace sets (``--sport``, 40000 by default);
* every flow that matched is shown with its table's name and the Kubernetes object
  that owns it (the cookie joined with the pipeline's own owners); every address
  translation (DNAT to an endpoint, the NodePort's masquerade, the cloud's DNAT to a
  NodePort) is listed with the conntrack zone that made it;
* the answer's way back is traced the same way from the receiver, with conntrack's
  reply state, and its un-NAT applied from the translations of the way in.

A packet that is dropped says in which table and by which flow; one that the
controller answers (no ready endpoint) says it is rejected with a TCP RST / ICMP.
Where NetworkPolicy judged the connection, a line per verdict says which policy and
rule allowed it (the ``conj_id`` flow it matched, as Antrea's Traceflow names the
rule), or which policies isolate the pod that no rule let it reach. On a bare-metal
lab the trace crosses the router host as it routes (its neighbour entry decides
which node gets a MetalLB address: kubelab/inspect/router_hop.py).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

from controller.pipeline import TABLE_NAMES, desired
from controller.state import ClusterState
from services import wiring
from services.errors import KubelabError

#: ofproto/trace's --ct-next states, one per ct recirculation (more than any path takes).
MAX_RECIRCULATIONS = 12
TABLE_LINE = re.compile(r'^\s*(\d+)\. (.*?),? ?priority (\d+)(?:, cookie (0x[0-9a-f]+))?$')
BRIDGE_LINE = re.compile(r'^bridge\("([^"]+)"\)$')
NAT_LINE = re.compile(r'nat\((dst|src)=([0-9.]+)(?::(\d+))?\)')
ZONE = re.compile(r'zone=(\d+)')
OUTPUT = re.compile(r'^\s*output:"?([^"\s]+)"?$')
HASH_RECIRC = re.compile(r'hash\(.*\),recirc\((0x[0-9a-f]+)\)')
BUCKET_USED = re.compile(r'-> using bucket (\d+)')
GROUP_ACTION = re.compile(r'group:(\d+)')
DATAPATH = re.compile(r'^Datapath actions: (.*)$', re.M)
CT_NAT_ZONES = re.compile(r'ct\(zone=(\d+),nat')
RECIRC_END = re.compile(r'recirc\((0x[0-9a-f]+)\)\s*$')
#: Registers (reg0-15, xreg, xxreg): cleared when a packet crosses into another bridge,
#: as a patch port clears them, so the next bridge's trace must not start with them.
REGISTER = re.compile(r'^x*reg\d+$')
#: Fields of a flow that do not cross a bridge (each bridge's pipeline starts with them
#: cleared) or that the next trace sets itself.
LOCAL_FIELDS = ('recirc_id', 'dp_hash', 'ct_state', 'ct_zone', 'ct_mark', 'ct_label',
                'ct_nw_src', 'ct_nw_dst', 'ct_nw_proto', 'ct_tp_src', 'ct_tp_dst',
                'in_port', 'metadata', 'skb_priority', 'pkt_mark')


@dataclass
class Step:
    bridge: str
    table: int
    match: str
    priority: int
    cookie: str
    actions: list = field(default_factory=list)
    owner: str = ''

    @property
    def table_name(self) -> str:
        return TABLE_NAMES.get(self.table, 'routing' if self.table < 0 else str(self.table))


@dataclass
class Translation:
    bridge: str
    zone: int | None
    kind: str                # 'DNAT' or 'SNAT'
    before: str              # address:port
    after: str


@dataclass
class Leg:
    """One direction of the connection: steps, translations and how it ended."""
    steps: list = field(default_factory=list)
    translations: list = field(default_factory=list)
    bridges: list = field(default_factory=list)
    outcome: str = ''        # 'delivered', 'dropped', 'rejected', 'loop'
    where: str = ''          # who received it / where it stopped
    final: dict = field(default_factory=dict)
    choices: list = field(default_factory=list)   # (bridge, group, [endpoints], chosen)


# ---------------------------------------------------------------- flows as dicts
def parse_fields(text: str) -> dict:
    """``tcp,in_port=1,nw_src=...`` -> ordered dict; bare words map to None."""
    out = {}
    for part in text.split(','):
        key, eq, value = part.partition('=')
        out[key.strip()] = value.strip().strip('"') if eq else None
    return out


def format_fields(fields: dict) -> str:
    """OpenFlow flow syntax (datapath-only words such as ``eth`` left out; the ports
    named for their protocol, as ofproto/trace wants them for UDP)."""
    proto = 'udp' if 'udp' in fields else 'tcp' if 'tcp' in fields else None
    names = {'tp_src': f'{proto}_src', 'tp_dst': f'{proto}_dst'} if proto else {}
    return ','.join(names.get(k, k) if v is None else f'{names.get(k, k)}={v}'
                    for k, v in fields.items() if k not in ('eth',))


def endpoint_of(fields: dict, side: str) -> str:
    ip = fields.get(f'nw_{side}', '?')
    port = fields.get(f'tp_{side}')
    return f'{ip}:{port}' if port not in (None, '0') else ip


# ---------------------------------------------------------------- running OVS
def ofproto_trace(bridge: str, flow: str, ct_states: list[str]) -> str:
    argv = ['ovs-appctl', 'ofproto/trace', bridge, flow]
    for state in ct_states:
        argv += ['--ct-next', state]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise KubelabError(f'ofproto/trace on {bridge} failed: {proc.stderr.strip()}')
    return proc.stdout


def _ovs_get(table: str, record: str, column: str) -> str:
    proc = subprocess.run(['ovs-vsctl', '--timeout=5', 'get', table, record, column],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise KubelabError(f'ovs-vsctl get {table} {record} {column}: '
                           f'{proc.stderr.strip()}')
    return proc.stdout.strip().strip('"')


def port_name(bridge: str, number: int) -> str:
    proc = subprocess.run(['ovs-vsctl', '--timeout=5', '--bare', '--columns=name',
                           'find', 'Interface', f'ofport={number}'],
                          capture_output=True, text=True)
    names = [n for n in proc.stdout.split() if n.startswith(bridge + '-')]
    if not names:
        raise KubelabError(f'bridge {bridge} has no port {number}')
    return names[0]


# ---------------------------------------------------------------- the tracer
class Tracer:
    def __init__(self, cluster, objects: dict, run=ofproto_trace, router_pid=None):
        from kubelab.inspect.router_hop import RouterHop
        self.cluster = cluster
        self.state = ClusterState.from_objects(cluster, objects)
        self.run = run
        self.router = RouterHop(cluster, self.state, router_pid) if cluster.bare_metal \
            else None
        self.owners: dict[str, dict[str, str]] = {}
        self.bridge_dpid = dict(wiring.all_bridges(cluster))
        self.groups: dict[str, dict[int, list[str]]] = {}   # bridge -> group -> targets
        for name, dpid in self.bridge_dpid.items():
            config = desired(self.state, dpid)
            self.owners[name] = {f'0x{f.cookie:x}': f.owner for f in config.flows}
            self.groups[name] = {
                g.group_id: [f'{a.nat.dst}:{a.nat.port}' for b in g.buckets for a in b.actions
                             if getattr(a, 'nat', None) is not None and a.nat.dst]
                for g in config.groups}
        self.pods = {p.ip: p for p in self.state.pods}
        self.pod_objects = {(p.get('status') or {}).get('podIP'): p
                            for p in objects.get('Pod', [])}

    # ------------------------------------------------------------ who is where
    def receiver(self, ip: str) -> str:
        pod = self.pods.get(ip)
        if pod:
            return f'pod {pod.namespace}/{pod.name} ({ip}) on {pod.node}'
        for node in self.cluster.nodes:
            if node.ip == ip:
                return f'node {node.name} ({ip})'
        for client in self.cluster.clients:
            if client.ip == ip:
                return f'external host {client.name} ({ip})'
        return ip

    def attachment(self, ip: str) -> tuple[str, int, str, str]:
        """(bridge, port, own MAC, next hop MAC) of the host with address ``ip``."""
        pod = self.pods.get(ip)
        if pod:
            node = self.cluster.node(pod.node)
            return (wiring.node_bridge(node), wiring.pod_port(node, ip), wiring.mac_for(ip),
                    wiring.mac_for(wiring.pod_gateway(node)))
        for node in self.cluster.nodes:
            if node.ip == ip:
                return (wiring.node_bridge(node), wiring.NODE_HOST_PORT, wiring.mac_for(ip),
                        wiring.mac_for(wiring.pod_gateway(node)))
        for j, client in enumerate(self.cluster.clients, start=1):
            if client.ip == ip:
                return (wiring.EXTERNAL_BRIDGE, wiring.client_port(j), wiring.mac_for(ip),
                        wiring.router_mac(self.cluster.external_gateway))
        raise KubelabError(f'{ip} is not a pod, node or external host of this lab')

    def next_hop(self, bridge: str, port: str) -> tuple[str, int] | None:
        """Where a packet output to ``port`` of ``bridge`` enters next (a patch port's
        peer, or the cloud edge's veth to the underlay); None: it is delivered."""
        if port.isdigit():
            port = port_name(bridge, int(port))
        kind = _ovs_get('Interface', port, 'type')
        if kind == 'patch':
            peer = _ovs_get('Interface', port, 'options:peer')
            return peer.rsplit('-eth', 1)[0], int(_ovs_get('Interface', peer, 'ofport'))
        number = int(_ovs_get('Interface', port, 'ofport'))
        if self.cluster.bare_metal:
            return None                 # the router's ports: through_router
        if bridge == wiring.EDGE_BRIDGE and number == wiring.EDGE_UNDERLAY_PORT:
            return wiring.UNDERLAY_BRIDGE, wiring.UNDERLAY_EXTERNAL_PORT
        if bridge == wiring.UNDERLAY_BRIDGE and number == wiring.UNDERLAY_EXTERNAL_PORT:
            return wiring.EDGE_BRIDGE, wiring.EDGE_UNDERLAY_PORT
        return None

    def describe(self, ip: str, port: int, proto: str) -> str:
        """What DST is, in Kubernetes words: a Service's ClusterIP, NodePort or LB address."""
        for sp in self.state.service_ports:
            if sp.protocol.lower() != proto:
                continue
            name = f'Service {sp.namespace}/{sp.service} port {sp.port_name or sp.port}'
            if sp.vip == ip and sp.port == port:
                return f'ClusterIP of {name}'
            if sp.node_port == port and any(n.ip == ip for n in self.cluster.nodes):
                return f'NodePort {port} of {name}'
            if sp.lb_ip == ip and sp.port == port:
                owner = self.announcer(ip)
                return f'LoadBalancer address of {name}' + (
                    f', announced by {owner} (MetalLB, layer 2)' if owner else '')
            if ip in sp.external_ips and sp.port == port:
                return f'external IP of {name}'
        return self.receiver(ip)

    def announcer(self, ip: str) -> str | None:
        """The node whose MetalLB speaker announces ``ip`` (bare metal)."""
        return next((node for node, addresses in sorted(self.state.announced.items())
                     if ip in addresses), None)

    # ------------------------------------------------------------ one direction
    def leg(self, bridge: str, in_port: int, fields: dict, *, reply: bool = False,
            unnat: dict | None = None, endpoint: str | None = None) -> Leg:
        leg = Leg()
        seen = set()
        while True:
            if (bridge, fields.get('nw_dst'), len(leg.bridges)) in seen or \
                    len(leg.bridges) > 12:
                leg.outcome, leg.where = 'loop', bridge
                return leg
            seen.add((bridge, fields.get('nw_dst'), len(leg.bridges)))
            leg.bridges.append(bridge)
            flow = {k: v for k, v in fields.items()
                    if k not in LOCAL_FIELDS and not REGISTER.match(k)}
            flow = {'in_port': str(in_port), **flow}
            nxt = self.one_bridge(leg, bridge, flow, reply, unnat or {}, endpoint)
            if nxt is None:
                return leg
            bridge, in_port, fields = nxt

    def states(self, reply: bool, dnat: bool = False) -> list[str]:
        """The conntrack states ofproto/trace gives each recirculation: a reply is
        established; a new connection is new, and once a Service's group has DNATed it
        (``dnat``), conntrack says so too (``+dnat``), as the datapath does: the flows
        that judge a Service connection's NetworkPolicy after its DNAT match on it."""
        if reply:
            return ['trk,est,rpl'] * MAX_RECIRCULATIONS
        return ['trk,new,dnat' if dnat else 'trk,new'] * MAX_RECIRCULATIONS

    def one_bridge(self, leg: Leg, bridge: str, flow: dict, reply: bool, unnat: dict,
                   endpoint: str | None):
        """Trace ``flow`` through ``bridge``; record its steps in ``leg``; the next
        (bridge, in_port, fields), or None when the packet ended here."""
        text = self.run(bridge, format_fields(flow), self.states(reply))
        return self.consume(leg, bridge, text, flow, reply, unnat, endpoint)

    def consume(self, leg, bridge, text, flow, reply, unnat, endpoint):
        """Read ofproto/trace's answer for ``flow`` on ``bridge``, pass by pass (a pass
        ends at a recirculation): its steps, translations and outcome into ``leg``; the
        next (bridge, in_port, fields), or None when the packet ended here."""
        current = dict(flow)
        last_output = None
        for chunk in text.split('=' * 79):
            lines = chunk.splitlines()
            for line in lines:
                if line.startswith('Flow: '):
                    current = parse_fields(line[len('Flow: '):])
            last_output, rejected = self.read_pass(leg, bridge, lines, flow, current,
                                                   last_output)
            if rejected:
                return None
            self.unnat_in_place(leg, bridge, chunk, current, reply, unnat)
            if header_crossed(lines, bridge) and last_output is not None:
                break
            recirc = HASH_RECIRC.search(chunk)
            if recirc:
                return self.choose_bucket(leg, bridge, recirc.group(1), current, reply,
                                          unnat, endpoint)
            resumed = self.unnat_reply(leg, bridge, chunk, current, reply, unnat, endpoint)
            if resumed is not False:
                return resumed
        return self.leave(leg, bridge, current, last_output)

    def read_pass(self, leg, bridge, lines, flow, current, last_output):
        """One pass on ``bridge``: each flow that matched a step of ``leg``, its
        actions, the fields they set (into ``current``), the NATs it committed; the
        port the packet last went out of, and whether the controller took it (a
        reject, recorded as the leg's outcome)."""
        in_bridge = bridge
        for line in lines:
            header = BRIDGE_LINE.match(line.strip())
            if header:
                in_bridge = header.group(1)
                if in_bridge != bridge and last_output is not None:
                    break         # crossed a patch port: the peer is traced anew
                continue
            table = TABLE_LINE.match(line)
            if table and in_bridge == bridge and not line.startswith(' ' * 8):
                number, match, priority, cookie = table.groups()
                leg.steps.append(Step(bridge, int(number), match, int(priority),
                                      cookie or '', owner=self.owners.get(
                                          bridge, {}).get(cookie or '', '')))
                continue
            stripped = line.strip()
            self.read_action(leg, bridge, stripped, current)
            out = OUTPUT.match(line)
            if out and in_bridge == bridge:
                last_output = out.group(1)
            elif stripped == 'IN_PORT' and in_bridge == bridge:
                last_output = str(flow.get('in_port'))   # back out where it came in
            if stripped.startswith(('controller(', 'CONTROLLER:')):
                leg.outcome = 'rejected'
                leg.where = (f'{bridge} table {leg.steps[-1].table_name}: no ready '
                             'endpoint; the controller answers TCP RST / ICMP '
                             'port-unreachable')
                leg.final = current
                return last_output, True
        return last_output, False

    @staticmethod
    def read_action(leg, bridge, stripped, current):
        """One line of actions: shown under the last step on ``bridge``; a set_field
        changes ``current``; a committing ct() with a NAT is a translation (applied to
        ``current`` at once when the ct has no table to recirculate to)."""
        if leg.steps and leg.steps[-1].bridge == bridge and stripped and \
                not stripped.startswith(('->', 'thaw', 'Resuming', 'Restoring',
                                         'unroll_xlate', 'restored state',
                                         'Final flow:', 'Megaflow:', 'Flow:',
                                         'Datapath actions:', 'recirc(',
                                         'Replacing', 'Initial flow',
                                         'Modified flow', '---')):
            leg.steps[-1].actions.append(stripped)
        if stripped.startswith('set_field:'):
            value, _, name = stripped[len('set_field:'):].partition('->')
            current[{'eth_src': 'dl_src', 'eth_dst': 'dl_dst'}.get(name, name)] = value
        nat = NAT_LINE.search(stripped)
        if stripped.startswith('ct(') and 'commit' in stripped and nat:
            kind, ip, port = nat.groups()
            side = 'dst' if kind == 'dst' else 'src'
            before = endpoint_of(current, side)
            zone = ZONE.search(stripped)
            leg.translations.append(Translation(
                bridge, int(zone.group(1)) if zone else None,
                'DNAT' if kind == 'dst' else 'SNAT', before,
                f'{ip}:{port}' if port else ip))
            if 'table=' not in stripped:
                # No recirculation (the NodePort masquerade): the datapath translates
                # the packet and it goes on in this pass, where ofproto/trace's fields
                # keep the old address; the next bridge gets the translated packet.
                current[f'nw_{side}'] = ip
                if port:
                    current[f'tp_{side}'] = port

    def leave(self, leg, bridge, current, last_output):
        """Where the packet goes after ``bridge``: dropped there (no output), delivered
        (out of a port to a pod, node or host), or the next (bridge, in_port, fields)."""
        if last_output is None:
            leg.outcome = 'dropped'
            step = leg.steps[-1] if leg.steps else None
            leg.where = (f'{bridge} table {step.table_name} by '
                         f'"{step.match or "the table-miss flow"}" ({step.owner or "?"})'
                         if step else bridge)
            leg.final = current
            return None
        nxt = self.next_hop(bridge, last_output)
        if nxt is None and self.router is not None and \
                self._to_router(bridge, last_output):
            return self.through_router(leg, bridge, current)
        if nxt is None:
            leg.outcome = 'delivered'
            leg.where = self.receiver(current.get('nw_dst', '?'))
            leg.final = current
            return None
        return nxt[0], nxt[1], current

    @staticmethod
    def _to_router(bridge: str, port: str) -> bool:
        number = int(port) if port.isdigit() else int(_ovs_get('Interface', port, 'ofport'))
        return (bridge, number) in ((wiring.EXTERNAL_BRIDGE, wiring.EXTERNAL_UPLINK_PORT),
                                    (wiring.UNDERLAY_BRIDGE, wiring.UNDERLAY_EXTERNAL_PORT))

    def through_router(self, leg, bridge, current):
        """The router host forwards the packet (router_hop.py): its step in ``leg``,
        and where the packet goes on."""
        hop = self.router.forward(bridge, current)
        leg.bridges.append(wiring.ROUTER_HOST)
        if hop is None:
            leg.steps.append(Step(wiring.ROUTER_HOST, -1, f'nw_dst={current.get("nw_dst")}',
                                  0, '', ['no route: dropped'], 'router'))
            leg.outcome, leg.where, leg.final = 'dropped', f'{wiring.ROUTER_HOST}: no route', \
                current
            return None
        out, port, fields, line = hop
        leg.steps.append(Step(wiring.ROUTER_HOST, -1, f'nw_dst={current.get("nw_dst")}', 0,
                              '', [line], 'router'))
        return out, port, fields

    def unnat_reply(self, leg, bridge, chunk, current, reply, unnat, endpoint):
        """ofproto/trace cannot un-NAT a reply (it has no conntrack entry): where the
        reply's pass ends in ``ct(zone=Z,nat)`` and a recirculation, the translations the
        way in made in those zones are reversed and the trace resumes from there.
        False: nothing to do."""
        if not reply:
            return False
        dp = DATAPATH.search(chunk)
        if not dp:
            return False
        zones = [int(z) for z in CT_NAT_ZONES.findall(dp.group(1))]
        recirc = RECIRC_END.search(dp.group(1))
        todo = [t for z in zones for t in unnat.get(z, ())]
        if not recirc or not todo:
            return False
        fields = dict(current)
        reverse(leg, bridge, fields, todo)
        rest = {z: v for z, v in unnat.items() if z not in zones}
        flow = dict(fields, recirc_id=recirc.group(1), ct_state='est|rpl|trk',
                    ct_zone=str(zones[-1]))
        text = self.run(bridge, format_fields(flow), self.states(reply))
        return self.consume(leg, bridge, text, flow, reply, rest, endpoint)

    @staticmethod
    def unnat_in_place(leg, bridge, chunk, current, reply, unnat):
        """A reply's ``ct(zone=Z,nat)`` in a pass that ends without a recirculation (the
        cloud edge's): the datapath translates the packet in place and it goes on; so
        the translations the way in made in zone Z are reversed on ``current``."""
        dp = DATAPATH.search(chunk) if reply else None
        if dp and not RECIRC_END.search(dp.group(1)):
            reverse(leg, bridge, current, [t for z in CT_NAT_ZONES.findall(dp.group(1))
                                           for t in unnat.get(int(z), ())])

    def choose_bucket(self, leg, bridge, recirc_id, fields, reply, unnat, endpoint):
        """Resume after a select group's hash: try dp_hash values until the bucket of
        ``endpoint`` (else the first) is taken; record the choice."""
        seen: dict[int, tuple[str, str]] = {}
        pick = None
        for dp_hash in range(1, 65):          # 0 reads as "not hashed yet"
            flow = dict(fields, recirc_id=recirc_id, dp_hash=hex(dp_hash))
            # A select group's bucket is a Service's endpoint: it DNATs and commits.
            text = self.run(bridge, format_fields(flow), self.states(reply, dnat=True))
            used = BUCKET_USED.search(text)
            nat = NAT_LINE.search(text)
            if not used:
                break
            bucket = int(used.group(1))
            target = f'{nat.group(2)}:{nat.group(3)}' if nat and nat.group(3) else \
                (nat.group(2) if nat else '?')
            seen.setdefault(bucket, (target, text))
            if endpoint is None and bucket == 0 or endpoint and target.startswith(endpoint):
                pick = bucket
                break
        if not seen:
            raise KubelabError(f'ofproto/trace could not resume the select group on {bridge}')
        if pick is None:
            if endpoint:
                raise KubelabError(f'{endpoint} is not an endpoint of this Service here; '
                                   f'endpoints: ' + ', '.join(t for t, _ in seen.values()))
            pick = min(seen)
        target, text = seen[pick]
        group = GROUP_ACTION.search(text)
        targets = self.groups.get(bridge, {}).get(int(group.group(1)), []) if group else []
        leg.choices.append((bridge, sorted(targets or {t for t, _ in seen.values()}), target))
        return self.consume(leg, bridge, text, fields, reply, unnat, endpoint)


def reverse(leg, bridge, fields: dict, todo: list):
    """Give a reply the addresses the way in translated (``todo``, in their zones): a
    DNAT's reply comes from its new destination, an SNAT's goes to its new source."""
    for t in todo:
        ip, _, port = t.before.partition(':')
        side = 'src' if t.kind == 'DNAT' else 'dst'
        if fields.get(f'nw_{side}') == t.after.partition(':')[0]:
            fields[f'nw_{side}'] = ip
            if port:
                fields[f'tp_{side}'] = port
            leg.translations.append(Translation(bridge, t.zone, f'un-{t.kind}',
                                                t.after, t.before))


def header_crossed(lines, bridge) -> bool:
    return any((m := BRIDGE_LINE.match(line.strip())) and m.group(1) != bridge
               for line in lines)


# ---------------------------------------------------------------- the whole connection
@dataclass
class Trace:
    proto: str
    src: str
    dst: str
    described: str
    forward: Leg
    reply: Leg | None
    proxy: object = None           # an L7 proxy's second leg (trace_legs.ProxyLeg)
    backend: 'Trace | None' = None     # and its connection to the backend, traced


def trace_connection(tracer: Tracer, src_ip: str, dst_ip: str, port: int, proto: str,
                     endpoint: str | None = None, sport: int = 40000) -> Trace:
    bridge, in_port, mac, next_mac = tracer.attachment(src_ip)
    fields = {proto: None, 'dl_src': mac, 'dl_dst': next_mac, 'nw_src': src_ip,
              'nw_dst': dst_ip, 'nw_ttl': '64', 'tp_src': str(sport), 'tp_dst': str(port)}
    if proto == 'tcp':
        fields['tcp_flags'] = 'syn'
    forward = tracer.leg(bridge, in_port, fields, endpoint=endpoint)
    reply = None
    if forward.outcome == 'delivered':
        got = forward.final
        back_bridge, back_port, back_mac, back_next = tracer.attachment(got['nw_dst'])
        back = {proto: None, 'dl_src': back_mac, 'dl_dst': back_next,
                'nw_src': got['nw_dst'], 'nw_dst': got['nw_src'], 'nw_ttl': '64',
                'tp_src': got.get('tp_dst', '0'), 'tp_dst': got.get('tp_src', '0')}
        if proto == 'tcp':
            back['tcp_flags'] = 'syn|ack'
        unnat: dict = {}
        for t in forward.translations:
            unnat.setdefault(t.zone, []).append(t)
        reply = tracer.leg(back_bridge, back_port, back, reply=True, unnat=unnat)
    return Trace(proto, f'{src_ip}:{sport}', f'{dst_ip}:{port}',
                 tracer.describe(dst_ip, port, proto), forward, reply)
