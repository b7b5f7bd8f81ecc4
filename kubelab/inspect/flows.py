"""Live flows and groups, annotated with the Kubernetes objects that own them.

Pure: the switches' dumps (``kubelab.inspect.ovsdump``) and the API's objects in,
annotated rows out. ``kubelab flows`` (kubelab/cli/observe.py) reads the switches
(kubelab/inspect/switches.py) and prints the rows (``render_flows``, in
kubelab/inspect/flows_render.py); ``kubelab top`` turns two such
reports into rates (kubelab/inspect/top.py). Live and desired matches are compared in
the canonical form of kubelab/inspect/matching.py.

How a live flow gets its owner (``annotate``): the controller installs every flow with a
cookie that hashes its content (controller/flows.py), and the pipeline names the owner
of every flow it computes. So the desired configuration is recomputed from the same
objects the controller reads (``pipeline.desired(ClusterState.from_objects(...),
dpid)``) and joined with the dump on the cookie:

- the cookie is a desired flow's: that flow's owner(s), status ``current``;
- the cookie is ``AFFINITY_COOKIE`` (learned by a session-affinity ``learn``): the
  Service whose AffinityLearn flow learns into that table for that address and port
  (reg7/reg8 = the learned flow's nw_dst/tp_dst), status ``learned``;
- any other cookie: status ``stale (being replaced)`` (the controller deletes every
  flow it does not want, but the switch may not have caught up), or ``not kubelab's``
  for a cookie without kubelab's 0x4B mark; its owner is that of the desired flow in
  the same place (table, priority, match) when there is one, else ``unknown``.

Desired flows the switch lacks are listed as ``missing (being added)``. Groups are
joined on their id (a Service port's group id is a hash of its name), their buckets on
the ``nat(dst=...)`` target: a pod endpoint (the cloud edge has no groups).

One input the controller reads is not a Kubernetes object: ``LoadBalancerHealth`` (what
the cloud's health checks found), which decides the edge's flows for a load balancer
address (a DNAT to each healthy node for its blocks of source ports, or a drop with
none). When the objects lack it for a LoadBalancer Service (a snapshot taken without
that kind, or before the first checks), the edge's own dump says what the checks found:
a drop means no healthy node, DNAT flows the nodes they DNAT to; the join uses that and
says so in ``Report.notes``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field

from controller import pipeline
from controller.flows import Ct, Group, LearnAffinity
from controller.pipeline.service_fronts import SHARED_OWNER
from controller.state import ClusterState
from kubelab.inspect import ovsdump
from kubelab.inspect.matching import canonical_live, canonical_spec, table_id
from services import wiring

CURRENT = 'current'
LEARNED = 'learned'
STALE = 'stale (being replaced)'
MISSING = 'missing (being added)'
FOREIGN = "not kubelab's"
UNKNOWN = 'unknown'

KUBELAB_MARK = 0x4B                  # a kubelab flow's cookie starts with this byte
AFFINITY_PREFIX = pipeline.AFFINITY_COOKIE >> 40      # 0x4B41FF: learned flows

TABLE_STAGES = {t.id: t.stage for t in pipeline.TABLES}
TABLE_ORDER = {t.id: i for i, t in enumerate(pipeline.TABLES)}
BRIDGE_ORDER = {'node': 0, 'underlay': 1, 'edge': 2, 'external': 3}


# ---------------------------------------------------------------- inputs
@dataclass
class BridgeDump:
    """What ovs-ofctl told about one bridge (None: that dump failed or was not taken)."""
    name: str
    dpid: int
    flows: list | None = None          # [ovsdump.LiveFlow]
    groups: list | None = None         # [ovsdump.LiveGroup]
    error: str | None = None


def bridge_dump(name: str, dpid: int, flows_text: str | None = None,
                groups_text: str | None = None, stats_text: str | None = None,
                error: str | None = None) -> BridgeDump:
    """Parse the three dumps of a bridge; a dump that does not parse becomes an error
    of the bridge (named) instead of an exception."""
    errors = [error] if error else []
    flows = groups = None
    if flows_text is not None:
        try:
            flows = ovsdump.parse_flows(flows_text)
        except ovsdump.DumpError as exc:
            errors.append(f'cannot read its flows: {exc}')
    if groups_text is not None or stats_text is not None:
        try:
            groups = ovsdump.merge_groups(
                ovsdump.parse_group_desc(groups_text) if groups_text is not None else None,
                ovsdump.parse_group_stats(stats_text) if stats_text is not None else None)
        except ovsdump.DumpError as exc:
            errors.append(f'cannot read its groups: {exc}')
    return BridgeDump(name, dpid, flows, groups, '; '.join(errors) or None)


# ---------------------------------------------------------------- outputs
@dataclass
class FlowRow:
    bridge: str
    table_id: int | None
    table: str
    priority: int
    match: str
    actions: str
    n_packets: int | None              # None: not on the switch (missing)
    n_bytes: int | None
    cookie: int
    owners: tuple
    status: str
    note: str | None = None
    spec: object = None                # the desired FlowSpec, when there is one

    @property
    def owner(self) -> str:
        return ', '.join(self.owners)

    def to_json(self) -> dict:
        return {'table': self.table, 'tableId': self.table_id, 'priority': self.priority,
                'match': self.match, 'actions': self.actions, 'n_packets': self.n_packets,
                'n_bytes': self.n_bytes, 'cookie': f'{self.cookie:#018x}',
                'owner': self.owner, 'owners': list(self.owners), 'status': self.status,
                'note': self.note}


@dataclass
class BucketRow:
    index: int
    endpoint: str | None               # 'IP:PORT' of its nat(dst=...)
    target: str | None                 # 'pod NS/NAME' or 'node NAME'
    node: str | None
    n_packets: int | None
    n_bytes: int | None
    actions: str | None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class GroupRow:
    bridge: str
    group_id: int
    owners: tuple
    status: str
    entry_kind: str                    # ClusterIP | NodePort | LoadBalancer | External IP
    entry: str                         # 'IP:PORT' that leads to it, '' when unknown
    used_by: tuple                     # the matches of the live flows that send to it
    n_packets: int | None
    n_bytes: int | None
    buckets: list = field(default_factory=list)
    note: str | None = None
    selection: str | None = None       # shared by the Service ports that select so

    @property
    def owner(self) -> str:
        if len(self.owners) > 1 and self.owners[0].startswith(SHARED_OWNER):
            return f'{self.owners[0]} ({len(self.owners) - 1} Service ports)'
        return ', '.join(self.owners)

    def to_json(self) -> dict:
        return {'group_id': self.group_id, 'owner': self.owner, 'owners': list(self.owners),
                'status': self.status, 'entry': f'{self.entry_kind} {self.entry}'.strip(),
                'used_by': list(self.used_by), 'n_packets': self.n_packets,
                'n_bytes': self.n_bytes, 'buckets': [b.to_json() for b in self.buckets],
                'note': self.note, 'selection': self.selection}


@dataclass
class BridgeReport:
    name: str
    dpid: int
    role: str
    kind: str
    error: str | None = None
    flows: list = field(default_factory=list)       # [FlowRow]
    groups: list = field(default_factory=list)      # [GroupRow]

    def tables(self) -> list[tuple]:
        """(table id, name, stage, rows by priority) in pipeline order."""
        tables = {}
        for row in self.flows:
            tables.setdefault((row.table_id, row.table), []).append(row)
        keys = sorted(tables, key=lambda k: (TABLE_ORDER.get(k[0], len(TABLE_ORDER)),
                                             k[0] if k[0] is not None else 1 << 16, k[1]))
        return [(tid, name, TABLE_STAGES.get(tid, ''),
                 sorted(tables[(tid, name)], key=lambda r: -r.priority))
                for tid, name in keys]

    def to_json(self) -> dict:
        return {'bridge': self.name, 'dpid': self.dpid, 'role': self.role,
                'error': self.error,
                'tables': [{'id': tid, 'name': name, 'stage': stage,
                            'flows': [r.to_json() for r in rows]}
                           for tid, name, stage, rows in self.tables()],
                'groups': [g.to_json() for g in self.groups]}


@dataclass
class Report:
    bridges: list                      # [BridgeReport]
    notes: list
    state: ClusterState
    service: str | None = None         # 'NS/NAME' when filtered to one Service

    def to_json(self) -> dict:
        return {'service': self.service, 'notes': list(self.notes),
                'bridges': [b.to_json() for b in self.bridges]}


# ---------------------------------------------------------------- the desired side
def _role(cluster, dpid: int):
    role = wiring.switch_role(cluster, dpid)
    if role is None:
        return None, 'not a bridge of this lab'
    text = {'node': f'node {role.node.name}' if role.node else 'node',
            'underlay': 'underlay', 'edge': 'cloud load balancer',
            'external': 'external network'}[role.kind]
    return role, text


def _desired(state: ClusterState, dpid: int):
    """The switch's desired config and, per cookie, every owner the pipeline gave a
    flow with that content (``desired`` keeps one flow per cookie: an EndpointDNAT flow
    can serve two sticky Service ports)."""
    config = pipeline.desired(state, dpid)
    owners: dict[int, list] = {}
    for spec in pipeline.build(state, dpid).flows:
        names = owners.setdefault(spec.cookie, [])
        if spec.owner not in names:
            names.append(spec.owner)
    for spec in config.flows:
        owners.setdefault(spec.cookie, [spec.owner])
    return config, {cookie: tuple(names) for cookie, names in owners.items()}


def _lb_health_from_edge(state: ClusterState, edge: BridgeDump) -> tuple:
    """(state with the health the edge shows for LoadBalancer Services the objects say
    nothing about, notes)."""
    node_by_ip = {n.ip: n.name for n in state.cluster.nodes}
    lb_flows = [(f, canonical_live(f.fields())) for f in edge.flows or []
                if table_id(f.table) == pipeline.T['ServiceLB'] and f.priority == 200]
    found: dict[tuple, set] = {}
    for sp in state.service_ports:
        key = (sp.namespace, sp.service)
        if not sp.lb_ip or not sp.node_port or key in state.lb_health:
            continue
        for flow, canon in lb_flows:
            if (canon.get('ipv4_dst'), canon.get('l4_dst'), canon.get('ip_proto')) != \
                    (sp.lb_ip, sp.port, sp.proto_number):
                continue
            target = ovsdump.nat_target(flow.actions)     # one flow a block of ports
            if flow.actions == 'drop':
                found.setdefault(key, set())
            elif target and target[0] in node_by_ip:
                found.setdefault(key, set()).add(node_by_ip[target[0]])
    if not found:
        return state, []
    notes = []
    for (ns, name), nodes in sorted(found.items()):
        default = {n.name for sp in state.service_ports
                   if (sp.namespace, sp.service) == (ns, name) and sp.lb_ip
                   for n in state.lb_targets(sp)}
        if nodes != default:
            shows = ('no healthy node' if not nodes
                     else 'healthy nodes ' + ', '.join(sorted(nodes)))
            notes.append(f'the objects have no LoadBalancerHealth for {ns}/{name} (the '
                         f"cloud's health checks); {edge.name} shows {shows}, and the "
                         f'join uses that')
    health = dict(state.lb_health)
    health.update({key: frozenset(nodes) for key, nodes in found.items()})
    return dataclasses.replace(state, lb_health=health), notes


# ---------------------------------------------------------------- the join
def annotate(cluster, objects: dict, dumps: list) -> Report:
    """Join every bridge's dump with the configuration the pipeline wants for it."""
    state = ClusterState.from_objects(cluster, objects)
    notes = []
    edge = next((d for d in dumps if d.dpid == wiring.EDGE_DPID and d.flows is not None),
                None)
    if edge is not None:
        state, notes = _lb_health_from_edge(state, edge)
    bridges = [_annotate_bridge(state, dump) for dump in dumps]
    return Report(bridges, notes, state)


def _annotate_bridge(state: ClusterState, dump: BridgeDump) -> BridgeReport:
    role, role_text = _role(state.cluster, dump.dpid)
    report = BridgeReport(dump.name, dump.dpid, role_text,
                          role.kind if role else 'unknown', dump.error)
    config, owners = _desired(state, dump.dpid)
    if dump.flows is not None:
        report.flows = _flow_rows(state, dump, config, owners)
    if dump.groups is not None:
        report.groups = _group_rows(state, dump, config, owners)
    return report


def _slot(table_id, priority: int, canon: dict) -> tuple:
    return table_id, priority, frozenset(canon.items())


def _flow_rows(state, dump, config, owners) -> list[FlowRow]:
    by_cookie = config.by_cookie()
    slots = {}
    for spec in config.flows:
        slots.setdefault(_slot(spec.table, spec.priority, canonical_spec(spec)), spec)
    rows = []
    for live in dump.flows:
        tid = table_id(live.table)
        name = pipeline.TABLE_NAMES.get(tid, live.table)
        canon = canonical_live(live.fields())
        spec = by_cookie.get(live.cookie)
        note = None
        if spec is not None:
            who, status = owners[live.cookie], CURRENT
        elif live.cookie >> 40 == AFFINITY_PREFIX:
            who, note = _learned_owner(state, config, owners, tid, canon, live)
            status = LEARNED
        else:
            spec = slots.get(_slot(tid, live.priority, canon))
            status = STALE if live.cookie >> 56 == KUBELAB_MARK else FOREIGN
            if spec is not None:
                who = owners[spec.cookie]
                note = 'the pipeline wants other actions here: ' + _actions_text(spec)
            else:
                who = (UNKNOWN,)
                note = 'no flow of the current state has this match'
            spec = None
        rows.append(FlowRow(dump.name, tid, name, live.priority, live.match, live.actions,
                            live.n_packets, live.n_bytes, live.cookie, who, status, note,
                            spec))
    present = {live.cookie for live in dump.flows}
    for spec in config.flows:
        if spec.cookie not in present:
            match, actions = _split_ofctl(spec)
            rows.append(FlowRow(dump.name, spec.table,
                                pipeline.TABLE_NAMES.get(spec.table, str(spec.table)),
                                spec.priority, match, actions, None, None, spec.cookie,
                                owners[spec.cookie], MISSING, None, spec))
    return rows


def _split_ofctl(spec) -> tuple[str, str]:
    """A FlowSpec as (match, actions) text, the way the pipeline renders it."""
    head, _, actions = spec.to_ofctl(pipeline.TABLE_NAMES).partition(' actions=')
    parts = head.split(',', 2)                 # table=..., priority=..., match
    return (parts[2] if len(parts) > 2 else ''), actions


def _actions_text(spec) -> str:
    return _split_ofctl(spec)[1]


def _learned_owner(state, config, owners, tid, canon, live) -> tuple:
    """The Service whose AffinityLearn flow learns a flow like ``live``: one that learns
    into its table, for its protocol, with reg7/reg8 = its nw_dst/tp_dst."""
    client, dst, port = canon.get('ipv4_src'), canon.get('ipv4_dst'), canon.get('l4_dst')
    endpoint = ovsdump.learned_endpoint(live.actions)
    note = f'client {client} -> endpoint ' + (f'{endpoint[0]}:{endpoint[1]}' if endpoint
                                              else '?')
    if live.idle_timeout is not None:
        note += f', forgotten {live.idle_timeout} s after its last use'
    try:
        dst_int = int(ipaddress.IPv4Address(dst))
    except (ValueError, TypeError):
        dst_int = None
    for spec in config.flows:
        match = spec.match_dict()
        for action in spec.actions:
            if isinstance(action, LearnAffinity) and action.table == tid and \
                    action.proto == canon.get('ip_proto') and \
                    match.get('reg7') == dst_int and match.get('reg8') == port:
                return owners[spec.cookie], note
    # No Service learns this any more (affinity switched off, Service gone): it stays
    # until its idle timeout. Name the Service port it was for, when one still exists.
    node_ips = {n.ip for n in state.cluster.nodes}
    for sp in state.service_ports:
        if (dst, port) == (sp.vip, sp.port) or (dst in node_ips and port == sp.node_port):
            return (f'service {sp.key}',), note + '; no Service learns it now (it idles out)'
    return (UNKNOWN,), note + '; no Service learns it now (it idles out)'


# ---------------------------------------------------------------- groups
def _bucket_signature(actions: str | None):
    """What a bucket does, comparable between a dump and a GroupSpec: (recirculation
    table, zone, DNAT target, ct_mark)."""
    if actions is None:
        return None
    text = actions
    for name, tid in pipeline.T.items():
        text = text.replace(f'table={name}', f'table={tid}')
    fields = ovsdump.match_fields(text.replace('(', ',').replace(')', ','))
    mark = None
    if '->ct_mark' in text:
        mark = int(text.split('set_field:')[-1].split('->ct_mark')[0], 0)
    return (fields.get('table'), fields.get('zone'), ovsdump.nat_target(text), mark)


def _spec_bucket_signature(bucket):
    ct = next((a for a in bucket.actions if isinstance(a, Ct)), None)
    if ct is None:
        return None
    nat = (ct.nat.dst, ct.nat.port) if ct.nat is not None and ct.nat.dst else None
    return (None if ct.table is None else str(ct.table), str(ct.zone), nat, ct.mark)


def _spec_bucket_text(bucket) -> str:
    return ','.join(a.ofctl() for a in bucket.actions)


def _endpoint_target(state, ip: str | None) -> tuple:
    """(target, node) of a DNAT address: a pod, or a node (the cloud edge's buckets)."""
    for pod in state.pods:
        if pod.ip == ip:
            return pod.owner, pod.node
    for node in state.cluster.nodes:
        if node.ip == ip:
            return f'node {node.name}', node.name
    return None, None


def _entry(state, spec) -> tuple[str, str]:
    """(kind, 'IP:PORT') of the ServiceLB flow ``spec`` that sends to a group."""
    match = spec.match_dict()
    dst = match.get('ipv4_dst')
    port = match.get('tcp_dst', match.get('udp_dst'))
    if not isinstance(dst, str):
        return '', ''
    address = f'{dst}:{port}' if port else dst
    inside = ' (from the node)' if 'reg0' in match else ''
    if any(dst == sp.lb_ip for sp in state.service_ports):
        return 'LoadBalancer' + inside, address
    if any(dst == sp.vip for sp in state.service_ports):
        return 'ClusterIP', address
    if any(dst == n.ip for n in state.cluster.nodes):
        return 'NodePort' + inside, address
    if any(dst in sp.external_ips for sp in state.service_ports):
        return 'External IP' + inside, address
    return '', address


def _entries(found: list) -> tuple[str, str]:
    """(kind, 'IP:PORT') of a group from the ServiceLB flows that lead to it: the
    first, and how many more (Services that select alike share a group)."""
    kind, entry = found[0]
    kinds = sorted({k.replace(' (from the node)', '') for k, _ in found if k})
    if len(found) > 1:
        return '/'.join(kinds) or kind, f'{entry} (+{len(found) - 1} more)'
    return kind, entry


def _selection(spec) -> str | None:
    """What the Service ports sharing group ``spec`` select (None: not shared)."""
    if spec is None or not spec.owner.startswith(SHARED_OWNER):
        return None
    return spec.owner[len(SHARED_OWNER):]


def _group_owners(spec, sharers: dict) -> tuple:
    """A group's owner: the Service port whose flows use it, or for one that Service
    ports that select alike share (node_switch's ``services selecting ...``) that, and
    each of them (``--service`` keeps it for any)."""
    users = tuple(sharers.get(spec.group_id, ()))
    if not spec.owner.startswith(SHARED_OWNER) or len(users) < 2:
        return users if len(users) == 1 else (spec.owner,)
    return (spec.owner, *users)


def _group_rows(state, dump, config, owners) -> list[GroupRow]:
    wanted = {g.group_id: g for g in config.groups}
    ways: dict[int, dict] = {}          # a group -> the (kind, address) that lead to it
    sharers: dict[int, dict] = {}       # a group -> the owners of the flows that use it
    for spec in config.flows:
        for action in spec.actions:
            if isinstance(action, Group):
                ways.setdefault(action.group_id, {})[_entry(state, spec)] = None
                sharers.setdefault(action.group_id, {})[spec.owner] = None
    entries = {gid: _entries(list(found)) for gid, found in ways.items()}
    users: dict[int, list] = {}
    user_owners: dict[int, list] = {}
    for live in dump.flows or []:
        for gid in ovsdump.group_refs(live.actions):
            users.setdefault(gid, []).append(live.match)
            for row_owner in owners.get(live.cookie, ()):
                user_owners.setdefault(gid, []).append(row_owner)
    rows = []
    for live in dump.groups:
        spec = wanted.get(live.group_id)
        spec_buckets = list(spec.buckets) if spec is not None else []
        described = [b for b in live.buckets if b.actions is not None]
        stats_only = not described and len(spec_buckets) == len(live.buckets)
        buckets = []
        for bucket in live.buckets:
            actions = bucket.actions
            if stats_only:
                actions = _spec_bucket_text(spec_buckets[bucket.index])
            target = ovsdump.nat_target(actions)
            who, node = _endpoint_target(state, target[0] if target else None)
            buckets.append(BucketRow(
                bucket.index, (f'{target[0]}:{target[1]}' if target and target[1]
                               else target[0] if target else None),
                who, node, bucket.n_packets, bucket.n_bytes, actions))
        note = None
        if spec is None:
            status = STALE
            who = tuple(dict.fromkeys(user_owners.get(live.group_id, ()))) or (UNKNOWN,)
            kind, entry = '', ''
            note = 'no group of the current state has this id'
        else:
            who = _group_owners(spec, sharers)
            kind, entry = entries.get(live.group_id, ('', ''))
            if described:
                same = len(described) == len(spec_buckets) and all(
                    _bucket_signature(b.actions) == _spec_bucket_signature(s)
                    for b, s in zip(described, spec_buckets))
            else:
                same = len(live.buckets) == len(spec_buckets)
            status = CURRENT if same else STALE
            if not same:
                note = 'the pipeline wants the buckets ' + ' | '.join(
                    _spec_bucket_text(b) for b in spec_buckets)
            elif stats_only:
                note = 'bucket endpoints from the desired group (only statistics dumped)'
            counted = [b for b in live.buckets if b.n_packets is not None]
            if described and live.n_packets is not None and len(described) != len(counted):
                note = (note + '; ' if note else '') + \
                    'the group changed between the dumps of its buckets and their counters'
        rows.append(GroupRow(dump.name, live.group_id, who, status, kind, entry,
                             tuple(users.get(live.group_id, ())), live.n_packets,
                             live.n_bytes, buckets, note, _selection(spec)))
    present = {g.group_id for g in dump.groups}
    for gid, spec in wanted.items():
        if gid in present:
            continue
        kind, entry = entries.get(gid, ('', ''))
        buckets = []
        for i, bucket in enumerate(spec.buckets):
            text = _spec_bucket_text(bucket)
            target = ovsdump.nat_target(text)
            who, node = _endpoint_target(state, target[0] if target else None)
            buckets.append(BucketRow(i, f'{target[0]}:{target[1]}' if target else None,
                                     who, node, None, None, text))
        rows.append(GroupRow(dump.name, gid, _group_owners(spec, sharers), MISSING, kind,
                             entry, (), None, None, buckets, None, _selection(spec)))
    rows.sort(key=lambda g: (g.owner, g.entry_kind, g.entry, g.group_id))
    return rows


# ---------------------------------------------------------------- --service
def owner_service(owner: str) -> tuple[str, str] | None:
    """('NS', 'NAME') of an owner ``service NS/NAME[/proto/port...]``."""
    if not owner.startswith('service '):
        return None
    parts = owner[len('service '):].split('/')
    return (parts[0], parts[1]) if len(parts) >= 2 else None


def only_service(report: Report, namespace: str, name: str) -> Report:
    """What one Service owns: the flows and groups of all its ports (ClusterIP,
    NodePort, the cloud edge's), its REJECT flow, the flows it learned."""
    def ours(owners) -> bool:
        return any(owner_service(o) == (namespace, name) for o in owners)
    bridges = [dataclasses.replace(b, flows=[r for r in b.flows if ours(r.owners)],
                                   groups=[g for g in b.groups if ours(g.owners)])
               for b in report.bridges]
    return dataclasses.replace(report, bridges=bridges, service=f'{namespace}/{name}')
