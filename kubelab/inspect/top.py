"""``kubelab top``: rates from two reads of the switches' counters.

``top_view`` turns two polls (the flows report of kubelab/inspect/flows.py, and when it
was read) into rates: new connections per Service port and endpoint from the select
groups' bucket packet counters (each new connection passes its Service's group once, on
the node it entered), plus the EndpointDNAT hits of clients with session affinity (which
skip the group); per endpoint the bytes its pod received and sent (the pod's route and
spoof-guard flows: all of the pod's traffic, not only this Service's); per load balancer
address the edge's ServiceLB flows, summed per node they DNAT to (a node has one flow
for each block of source ports it takes: connections per node); per NetworkPolicy rule the new
connections it allowed, and per policy those dropped at the pods it isolates
(kubelab/inspect/policy_counters.py). ``render_top`` prints one frame, with each pod's
CPU and memory below the Services and policies.

``render_top_pods`` prints ``kubelab top pods`` as ``kubectl top pod`` does, from the
lab's PodMetrics (metrics.k8s.io's shape, from each container's cgroup, sampled every
second by the kubelet): CPU in millicores (rounded up), memory (the working set) in
MiB.
"""

from __future__ import annotations

import ipaddress
import math
import textwrap
from dataclasses import dataclass

from controller import pipeline
from kubelab.inspect import ovsdump, policy_counters
from kubelab.inspect.flows import CURRENT, MISSING, Report
from kubelab.printers import format_table
from services.errors import UsageError
from services.validation.common import parse_quantity


# ---------------------------------------------------------------- polls and views
@dataclass
class Poll:
    time: float                        # monotonic seconds when the counters were read
    report: Report


@dataclass
class EndpointTop:
    endpoint: str                      # 'IP:PORT'
    pod: str | None
    node: str | None
    conns: int
    conns_per_s: float
    pod_in_per_s: float | None         # bytes/s the pod received (all its traffic)
    pod_out_per_s: float | None        # bytes/s the pod sent


@dataclass
class ServiceTop:
    key: str                           # NS/NAME/PROTO/PORT
    address: str                       # ClusterIP:port
    kind: str                          # ClusterIP, NodePort 30080, LoadBalancer ...
    conns: int
    conns_per_s: float
    endpoints: list
    shared_with: int = 0               # other Service ports whose groups are its own:
                                       # the endpoints' counts are theirs too


@dataclass
class LoadBalancerTop:
    address: str                       # LB IP:port
    key: str
    nodes: list                        # [(node, conns, conns/s)]
    note: str | None = None


@dataclass
class TopView:
    elapsed: float
    namespace: str | None
    services: list
    load_balancers: list
    errors: list
    notes: list
    policies: list = ()                # [(policy, rule, packets, packets/s)]


def _service_key(owners) -> list[str]:
    return [o[len('service '):] for o in owners if o.startswith('service ')
            and o.count('/') >= 3]


def _counters(report: Report) -> dict:
    """Every counter ``top`` reads, by a key stable across polls:
    ('conn', svc key, endpoint, where) -> packets;
    ('lb', svc key, LB address, node, where) -> packets;
    ('pod', pod IP, 'in'|'out', where) -> bytes."""
    out = {}
    pods = {p.owner: p for p in report.state.pods}
    for bridge in report.bridges:
        for g in bridge.groups:
            if g.status == MISSING:
                continue
            # A group the Service ports that select alike share counts for all of them.
            keys = [SELECTION + g.selection] if g.selection else _service_key(g.owners)[:1]
            for key in keys:
                for b in g.buckets:
                    if b.n_packets is None or b.endpoint is None:
                        continue
                    if bridge.kind == 'node':
                        out[('conn', key, b.endpoint, (bridge.name, g.group_id))] = \
                            b.n_packets
        if bridge.kind == 'edge':
            out.update(_edge_counters(report, bridge))
        if bridge.kind != 'node':
            continue
        for row in bridge.flows:
            if row.n_packets is None:
                continue
            if row.table_id == pipeline.T['ServiceLB'] and 'group:' in (row.actions or ''):
                # A Service port's own new connections, whichever group they take.
                for key in _service_key(row.owners):
                    out[('front', key, (bridge.name, row.cookie))] = row.n_packets
            if row.table_id == pipeline.T['EndpointDNAT'] and row.priority == 200:
                # A client with session affinity: its new connection skips the group.
                target = ovsdump.nat_target(row.actions)
                if target:
                    endpoint = f'{target[0]}:{target[1]}' if target[1] else target[0]
                    for key in _service_key(row.owners):
                        out[('conn', key, endpoint, (bridge.name, row.cookie))] = \
                            row.n_packets
            spec = row.spec
            if spec is None or row.status != CURRENT or row.owner not in pods:
                continue
            pod = pods[row.owner]
            match = spec.match_dict()
            if spec.table == pipeline.T['L3Forwarding'] and spec.priority == 200 and \
                    match.get('ipv4_dst') == pod.ip:
                out[('pod', pod.ip, 'in', (bridge.name, row.cookie))] = row.n_bytes
            elif spec.table == pipeline.T['Classifier'] and spec.priority == 200 and \
                    match.get('eth_type') == pipeline.ETH_IP and \
                    match.get('ipv4_src') == pod.ip:
                out[('pod', pod.ip, 'out', (bridge.name, row.cookie))] = row.n_bytes
    out.update(policy_counters.counters(report))
    return out


def _edge_counters(report: Report, bridge) -> dict:
    """('lb', svc key, LB address, node, where) -> packets of the edge's ServiceLB flows
    that DNAT to that node (one a block of source ports: their sum is its connections)."""
    nodes = {n.ip: n.name for n in report.state.cluster.nodes}
    out = {}
    for row in bridge.flows:
        if row.n_packets is None or row.spec is None or \
                row.table_id != pipeline.T['ServiceLB']:
            continue
        target = ovsdump.nat_target(row.actions)
        match = row.spec.match_dict()
        if not target or target[0] not in nodes:
            continue
        address = f"{match.get('ipv4_dst')}:{match.get('tcp_dst', match.get('udp_dst'))}"
        for key in _service_key(row.owners)[:1]:
            out[('lb', key, address, nodes[target[0]], (bridge.name, row.cookie))] = \
                row.n_packets
    return out


SELECTION = 'selection '       # the counters of a group Service ports share are keyed so


def _sharing(state) -> dict:
    """Per selection, how many Service ports share its groups (node_switch.py: those
    that select alike with the same endpoints as the first); a Service port that does
    not share counts 0 (``state.shares``)."""
    return {selects: sum(1 for sp in members if state.shares(sp))
            for selects, (_, members) in state.selections.items()}


def _read_bridges(report: Report) -> set:
    return {b.name for b in report.bridges if not b.error or b.flows or b.groups}


def top_view(prev: Poll, cur: Poll, namespace: str | None = None) -> TopView:
    """Rates between two polls: (counter now - counter then) / seconds between them. A
    counter that went down was reset (its group reprogrammed): it counts from 0. A counter
    new since the last poll counts whole, if its bridge was read then."""
    elapsed = max(cur.time - prev.time, 1e-9)
    before, now = _counters(prev.report), _counters(cur.report)
    seen_before = _read_bridges(prev.report)

    def delta(key) -> int:
        value = now[key]
        if key not in before:
            return value if key[-1][0] in seen_before else 0
        return value if value < before[key] else value - before[key]

    totals: dict[tuple, list] = {}
    for key in now:
        group = key[:-1]
        acc = totals.setdefault(group, [0, 0])
        acc[0] += now[key]
        acc[1] += delta(key)
    state = cur.report.state

    def rate(group) -> float:
        return totals.get(group, [0, 0])[1] / elapsed

    def total(group) -> int:
        return totals.get(group, [0, 0])[0]

    pods_by_ip = {p.ip: p for p in state.pods}
    services, lbs, shared = [], [], _sharing(state)
    for sp in state.service_ports:
        if namespace is not None and sp.namespace != namespace:
            continue
        kind = 'ClusterIP'
        if sp.node_port:
            kind = f'NodePort :{sp.node_port}'
        if sp.lb_ip:
            kind = f'LoadBalancer {sp.lb_ip}'
        endpoints = {f'{ep.ip}:{ep.port}': ep.node for ep in sp.endpoints}
        sharing = shared.get(sp.selects, 0) if state.shares(sp) else 0
        counted = SELECTION + sp.selects if sharing else sp.key
        for key in now:
            if key[0] == 'conn' and key[1] in (sp.key, counted):
                endpoints.setdefault(key[2], None)
        rows = []
        for endpoint in sorted(endpoints, key=_address_order):
            ip = endpoint.split(':')[0]
            pod = pods_by_ip.get(ip)
            has_in = ('pod', ip, 'in') in totals
            has_out = ('pod', ip, 'out') in totals
            conn = [('conn', key, endpoint) for key in {sp.key, counted}]
            rows.append(EndpointTop(
                endpoint, pod.owner if pod else None,
                endpoints[endpoint] or (pod.node if pod else None),
                sum(map(total, conn)), sum(map(rate, conn)),
                rate(('pod', ip, 'in')) if has_in else None,
                rate(('pod', ip, 'out')) if has_out else None))
        if sharing > 1:     # the endpoints' counts are theirs all: its own from its flows
            services.append(ServiceTop(sp.key, f'{sp.vip}:{sp.port}', kind,
                                       total(('front', sp.key)), rate(('front', sp.key)),
                                       rows, sharing - 1))
        else:
            services.append(ServiceTop(sp.key, f'{sp.vip}:{sp.port}', kind,
                                       sum(r.conns for r in rows),
                                       sum(r.conns_per_s for r in rows), rows))
        if sp.lb_ip:
            address = f'{sp.lb_ip}:{sp.port}'
            nodes = sorted({key[3] for key in now if key[0] == 'lb' and key[1] == sp.key})
            note = None
            if not nodes:
                edge_read = any(b.kind == 'edge' and b.name in _read_bridges(cur.report)
                                for b in cur.report.bridges)
                note = ('no healthy node: the edge drops new connections' if edge_read
                        else 'the cloud edge was not read')
            lbs.append(LoadBalancerTop(address, sp.key, [
                (node, total(('lb', sp.key, address, node)),
                 rate(('lb', sp.key, address, node))) for node in nodes], note))
    errors = [f'{b.name}: {b.error}' for b in cur.report.bridges if b.error]
    policies = [(group[1], group[2], total(group), rate(group)) for group in sorted(
        {key[:-1] for key in now if key[0] == 'policy'})
        if namespace is None or group[1].startswith(namespace + '/')]
    return TopView(elapsed, namespace, services, lbs, errors, list(cur.report.notes),
                   policies)


def _address_order(address: str):
    ip, _, port = address.partition(':')
    try:
        return int(ipaddress.IPv4Address(ip)), int(port or 0)
    except ValueError:
        return 0, 0


def human_rate(per_s: float | None, unit: str = 'B') -> str:
    if per_s is None:
        return '-'
    for prefix, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
        if per_s >= scale:
            return f'{per_s / scale:.1f} {prefix}{unit}/s'
    return f'{per_s:.0f} {unit}/s'


TOP_LEGEND = (
    'CONN/S, CONNS: new connections to the Service port (and per endpoint), from the '
    "packets of its select groups' buckets on every node bridge (a connection passes the "
    'group once, on the node it entered) plus the EndpointDNAT hits of clients with '
    'session affinity (they skip the group). CONNS counts since each switch last '
    'programmed the group: it starts again when the endpoints change. Service ports '
    'that select the same pods alike share their groups (kube-proxy gives each its own '
    "chain): their endpoints' counts are theirs together, and each one's own total "
    "comes from its ServiceLB flows. Load balancer: the cloud edge's ServiceLB flows, "
    "summed per node they send to (the edge picks a node from the client's source "
    'port: a few flows a node).',
    "POD IN/S, POD OUT/S: bytes per second the endpoint's pod received and sent (its "
    "route and spoof-guard flows on its node's bridge): all of its traffic, not only "
    "this Service's.",
    'NETWORKPOLICY: new connections a rule allowed (its conj_id flow), and those '
    f'dropped at the pods the policy isolates ({policy_counters.ISOLATION}; a pod '
    'isolated by several policies counts for each), on the node that judged them.',
    "POD CPU(cores), MEMORY(bytes): each pod's containers as their cgroups count them "
    "(CPU over the last seconds in millicores, memory in use now), as kubectl top pod "
    "shows them.")


def millicores(quantity: str) -> int:
    """A CPU quantity (``1234567n``) in millicores, rounded up as kubectl rounds it."""
    return math.ceil(parse_quantity(quantity) * 1000)


def mebibytes(quantity: str) -> int:
    return int(parse_quantity(quantity)) // 2**20


def _usage(item: dict) -> tuple[int, int]:
    """A pod's CPU (millicores) and memory (MiB): its containers' usage summed first,
    then rounded, as kubectl does."""
    cpu = sum(parse_quantity(c['usage']['cpu']) for c in item['containers'])
    memory = sum(parse_quantity(c['usage']['memory']) for c in item['containers'])
    return math.ceil(cpu * 1000), int(memory) // 2**20


def render_top_pods(items: list[dict], *, all_namespaces: bool = False,
                    containers: bool = False) -> str:
    """``kubectl top pod`` (``--containers``: a row per container; ``-A``: with the
    NAMESPACE column), sorted by namespace and name."""
    if not items:
        raise UsageError('metrics not available yet: the kubelet samples every second; '
                         'try again in a moment')
    header = (['NAMESPACE'] if all_namespaces else []) + (
        ['POD', 'NAME'] if containers else ['NAME']) + ['CPU(cores)', 'MEMORY(bytes)']
    rows = []
    for item in sorted(items, key=lambda i: (i['metadata']['namespace'],
                                             i['metadata']['name'])):
        lead = [item['metadata']['namespace']] if all_namespaces else []
        if containers:
            for c in item['containers']:
                rows.append(lead + [item['metadata']['name'], c['name'],
                                    f'{millicores(c["usage"]["cpu"])}m',
                                    f'{mebibytes(c["usage"]["memory"])}Mi'])
        else:
            cpu, memory = _usage(item)
            rows.append(lead + [item['metadata']['name'], f'{cpu}m', f'{memory}Mi'])
    return format_table(header, rows)


def render_top(view: TopView, now: str = '', pods: list | None = None) -> str:
    """One frame of ``kubelab top``; ``pods``: the PodMetrics of the lab."""
    scope = f'namespace {view.namespace}' if view.namespace else 'all namespaces'
    out = ['  '.join(part for part in ('kubelab top', scope, now, f'(rates over the '
                                       f'last {view.elapsed:.1f} s)') if part)]
    out += [f'note: {n}' for n in view.notes]
    out += [f'error: {e}' for e in view.errors]
    out.append('')
    rows = []
    for svc in view.services:
        namespace = svc.key.split('/')[0]
        rows.append([svc.key, svc.kind, svc.address, f'{svc.conns_per_s:.1f}',
                     str(svc.conns), '', ''])
        if svc.shared_with:
            rows.append([f'  (its endpoints\' counts include {svc.shared_with} more Service '
                         f'port{"s" if svc.shared_with > 1 else ""} selecting the same pods: '
                         'one group)', '', '', '', '', '', ''])
        for ep in svc.endpoints:
            pod = ep.pod[len('pod '):] if ep.pod else '(no pod)'
            if pod.startswith(namespace + '/'):
                pod = pod[len(namespace) + 1:]
            rows.append([f'  {pod}', ep.node or '-', ep.endpoint, f'{ep.conns_per_s:.1f}',
                         str(ep.conns), human_rate(ep.pod_in_per_s),
                         human_rate(ep.pod_out_per_s)])
        if not svc.endpoints:
            rows.append(['  (no endpoints)', '', '', '', '', '', ''])
    if rows:
        out.append(format_table(['SERVICE PORT / ENDPOINT POD', 'TYPE / NODE', 'ADDRESS',
                                 'CONN/S', 'CONNS', 'POD IN/S', 'POD OUT/S'], rows))
    else:
        out.append('No Service ports' + (f' in namespace {view.namespace}.'
                                         if view.namespace else '.'))
    if view.load_balancers:
        out.append('')
        lb_rows = []
        for lb in view.load_balancers:
            if not lb.nodes:
                lb_rows.append([lb.address, lb.key, f'({lb.note})', '', ''])
            for i, (node, conns, per_s) in enumerate(lb.nodes):
                lb_rows.append([lb.address if i == 0 else '', lb.key if i == 0 else '',
                                node, f'{per_s:.1f}', str(conns)])
        out.append(format_table(['LOAD BALANCER', 'SERVICE PORT', 'NODE', 'CONN/S',
                                 'CONNS'], lb_rows))
    if view.policies:
        out.append('')
        out.append(format_table(['NETWORKPOLICY', 'RULE', 'CONN/S', 'CONNS'], [
            [key, rule, f'{per_s:.1f}', str(n)] for key, rule, n, per_s in view.policies]))
    shown = [p for p in pods or () if view.namespace in (None, p['metadata']['namespace'])]
    if shown:
        out.append('')
        out.append(format_table(['POD', 'CPU(cores)', 'MEMORY(bytes)'], [
            [f'{p["metadata"]["namespace"]}/{p["metadata"]["name"]}',
             f'{_usage(p)[0]}m', f'{_usage(p)[1]}Mi']
            for p in sorted(shown, key=lambda p: (p['metadata']['namespace'],
                                                  p['metadata']['name']))]))
    out.append('')
    out += [textwrap.fill(paragraph, 100) for paragraph in TOP_LEGEND]
    return '\n'.join(line.rstrip() for line in '\n'.join(out).split('\n'))
