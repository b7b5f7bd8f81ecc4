"""``kubelab flows`` and ``kubelab top`` without a lab: real dumps of a running lab with
examples/demo.yaml applied (tests/data/ovs/, the objects of its API at the same moment),
parsed, joined with the desired configuration, filtered, turned into rates, rendered.
kl-n1.flows also holds, written as OVS prints them (no packets yet), the seven flows for
the load balancer addresses and the seven for the cluster's pods at a Local policy's
addresses (kube-proxy's detect-local ClusterCIDR) that the pipeline added after the dump
was taken; kl-lb.flows's ServiceLB flows are the pipeline's since the edge picks a node
from the client's source port instead of a select group (written as a live dump of the
new edge prints them: ``tp_src=0x4/0x1e``), and kl-lb.groupstats is the edge's empty
reply. kl-n1.flows's two hairpin flows (L3Forwarding, priority 220) and its three
masquerades (SNAT, 250, 200, 100) are the pipeline's since the masquerades stopped
recirculating (written as a live dump prints them)."""

import copy
import itertools
import json
import re
import subprocess
from pathlib import Path

import pytest

from controller import pipeline
from controller.state import ClusterState
from kubelab import cli
from kubelab.cli import observe as cli_observe
from kubelab.inspect import ovsdump
from kubelab.inspect import flows as observe
from kubelab.inspect.flows_render import render_flows
from kubelab.inspect import switches, top
from services.cluster import default_cluster
from services.errors import KubelabError
from services import wiring

DATA = Path(__file__).resolve().parent.parent / 'data' / 'ovs'
EDGE = wiring.EDGE_DPID


def text(name: str) -> str:
    return (DATA / name).read_text()


@pytest.fixture(scope='module')
def objects():
    return json.loads(text('objects.json'))


@pytest.fixture(scope='module')
def cluster():
    return default_cluster()


def n1_dump(flows=None, groups=None, stats=None):
    return observe.bridge_dump('kl-n1', 1, text('kl-n1.flows') if flows is None else flows,
                               text('kl-n1.groups') if groups is None else groups,
                               text('kl-n1.groupstats') if stats is None else stats)


def lb_dump(flows=None, stats=None):
    return observe.bridge_dump('kl-lb', EDGE, text('kl-lb.flows') if flows is None else flows,
                               None, text('kl-lb.groupstats') if stats is None else stats)


@pytest.fixture(scope='module')
def report(cluster, objects):
    return observe.annotate(cluster, objects, [n1_dump(), lb_dump()])


def bridge(report, name):
    [b] = [b for b in report.bridges if b.name == name]
    return b


def row(b, cookie):
    [r] = [r for r in b.flows if r.cookie == cookie]
    return r


def ovs_line(spec, n_packets=0, n_bytes=0, cookie=None) -> str:
    """A desired flow as a line of ``dump-flows`` (in the pipeline's own syntax for the
    match: numbers for ports, dotted masks; the join must not care)."""
    head, _, actions = spec.to_ofctl(pipeline.TABLE_NAMES).partition(' actions=')
    table, priority, *match = head.split(',', 2)
    return (f' cookie={spec.cookie if cookie is None else cookie:#x}, duration=1.000s, '
            f'{table}, n_packets={n_packets}, n_bytes={n_bytes}, {priority}'
            + (f',{match[0]}' if match else '') + f' actions={actions}')


# ---------------------------------------------------------------- parsing
def test_dump_flows_is_parsed_line_by_line():
    flows = ovsdump.parse_flows(text('kl-n1.flows'))
    assert len(flows) == 96
    first = flows[0]
    assert first.cookie == 0x4b7db5b615500c2c
    assert (first.table, first.priority, first.actions) == ('Classifier', 210, 'drop')
    assert first.match == 'arp,in_port="kl-n1-eth2",arp_tpa=10.128.0.11'
    assert first.fields() == {'arp': None, 'in_port': 'kl-n1-eth2', 'arp_tpa': '10.128.0.11'}
    assert first.duration == 3.25
    uplink = flows[3]
    assert (uplink.n_packets, uplink.n_bytes) == (55, 4870)
    assert uplink.actions == 'goto_table:UnSNAT'
    last = flows[-1]
    assert (last.table, last.priority, last.match, last.actions) == ('Output', 0, '', 'drop')
    assert all(f.cookie >> 56 == 0x4B for f in flows)
    ct = [f for f in flows if f.table == 'UnSNAT' and f.priority == 200][0]
    assert ct.actions == 'ct(zone=1001,nat),ct(table=ConntrackState,zone=1,nat)'
    reject = [f for f in flows if 'CONTROLLER' in f.actions][0]
    assert reject.actions == 'meter:1,CONTROLLER:128'


def test_dump_flows_headers_learned_flows_and_other_printings():
    dump = '\n'.join([
        'OFPST_FLOW reply (OF1.3) (xid=0x2):',
        ' cookie=0x4b41ff0000000000, duration=0.814s, table=SessionAffinity, n_packets=2, '
        'n_bytes=148, idle_timeout=60, priority=200,tcp,nw_src=192.168.1.3,'
        'nw_dst=10.110.210.92,tp_dst=80 actions=load:0xc0a80204->NXM_NX_REG3[],'
        'load:0x1f90->NXM_NX_REG4[0..15],load:0x1->NXM_NX_REG5[0]',
        ' cookie=0x0, duration=1s, table=0, n_packets=0, n_bytes=0, send_flow_rem '
        'ip,nw_dst=192.0.2.1 actions=drop',
        '',
    ])
    learned, plain = ovsdump.parse_flows(dump)
    assert (learned.table, learned.priority, learned.idle_timeout) == \
        ('SessionAffinity', 200, 60)
    assert ovsdump.learned_endpoint(learned.actions) == ('192.168.2.4', 8080)
    assert ovsdump.learned_endpoint('set_field:0xc0a80204->reg3,'
                                    'set_field:0x1f90/0xffff->reg4') == ('192.168.2.4', 8080)
    assert (plain.cookie, plain.table, plain.priority) == (0, '0', ovsdump.DEFAULT_PRIORITY)
    assert plain.match == 'ip,nw_dst=192.0.2.1'
    with pytest.raises(ovsdump.DumpError, match=r'line 2: .*what is this'):
        ovsdump.parse_flows(dump.splitlines()[1] + '\nwhat is this\n')


def test_dump_groups_and_their_statistics_are_merged():
    desc = ovsdump.parse_group_desc(text('kl-n1.groups'))
    stats = ovsdump.parse_group_stats(text('kl-n1.groupstats'))
    assert set(desc) == set(stats) and len(desc) == 9
    groups = {g.group_id: g for g in ovsdump.merge_groups(desc, stats)}
    web = groups[211627740]
    assert web.type == 'select' and web.duration == 1.674
    assert [ovsdump.nat_target(b.actions) for b in web.buckets] == [
        ('192.168.2.4', 8080), ('192.168.3.3', 8080), ('192.168.3.4', 8080)]
    assert all((b.n_packets, b.n_bytes) == (0, 0) for b in web.buckets)
    marked = groups[753563630].buckets[0].actions
    assert marked.endswith('exec(set_field:0x1->ct_mark))')
    # The cloud edge has no groups (its ServiceLB flows pick the node): an empty reply.
    assert ovsdump.merge_groups(None, ovsdump.parse_group_stats(text('kl-lb.groupstats'))) \
        == []


def test_group_dumps_with_weights_several_replies_and_counters():
    desc = ovsdump.parse_group_desc(
        'OFPST_GROUP_DESC reply (OF1.3) (xid=0x2):\n'
        ' group_id=7,type=select,bucket=weight:100,actions=ct(commit,table=70,zone=1,'
        'nat(dst=192.168.2.4:8080)),bucket=bucket_id:1,weight:50,actions=drop\n'
        'OFPST_GROUP_DESC reply (OF1.3) (xid=0x2):\n'
        ' group_id=8,type=select\n')
    assert desc[7] == ('select', [('ct(commit,table=70,zone=1,nat(dst=192.168.2.4:8080))',
                                   100), ('drop', 50)])
    assert desc[8] == ('select', [])
    stats = ovsdump.parse_group_stats(
        ' group_id=7,duration=9.5s,ref_count=1,packet_count=12,byte_count=900,'
        'bucket0:packet_count=5,byte_count=370,bucket1:packet_count=7,byte_count=530\n')
    assert stats[7] == {'n_packets': 12, 'n_bytes': 900, 'duration': 9.5,
                        'buckets': [(5, 370), (7, 530)]}
    with pytest.raises(ovsdump.DumpError, match='dump-group-stats line 1'):
        ovsdump.parse_group_stats('group=7\n')


# ---------------------------------------------------------------- the join
@pytest.mark.parametrize('name', ['kl-n1', 'kl-lb'])
def test_every_live_flow_is_attributed(report, name):
    b = bridge(report, name)
    live = ovsdump.parse_flows(text(f'{name}.flows'))
    rows = [r for r in b.flows if r.status != observe.MISSING]
    assert len(rows) == len(live) and b.error is None
    assert [r.cookie for r in rows] == [f.cookie for f in live]
    unattributed = [r for r in rows if not r.owner or observe.UNKNOWN in r.owners]
    assert unattributed == []
    for r in rows:
        if r.status == observe.CURRENT:
            assert r.spec is not None and r.spec.cookie == r.cookie
        else:
            # Only a flow the pipeline has changed since the dump was taken (kubelab's
            # code moves on, the dump stays): the same place (table, priority, match)
            # holds a desired flow with other actions, which is listed as missing.
            assert r.status == observe.STALE, r
            assert r.note.startswith('the pipeline wants other actions here: '), r
            [new] = [m for m in b.flows if m.status == observe.MISSING
                     and (m.table, m.priority, m.owners) == (r.table, r.priority, r.owners)
                     and observe.canonical_spec(m.spec) == observe.canonical_live(
                         ovsdump.match_fields(r.match))]
    stale = [r for r in rows if r.status != observe.CURRENT]
    assert len([m for m in b.flows if m.status == observe.MISSING]) == len(stale)
    assert len(stale) < len(rows) / 10, [r.match for r in stale]
    assert all(g.status == observe.CURRENT for g in b.groups)
    assert all(g.owners[0].startswith(('service ', 'services selecting ')) for g in b.groups)


def test_the_edge_shows_the_cloud_health_the_objects_lack(cluster, objects, report):
    """objects.json has no LoadBalancerHealth (not a Kubernetes kind); the controller
    had one for demo-gw-nginx, whose checks had found no healthy node yet, so the edge
    drops 198.51.100.3:80. Joined with the objects alone, that flow would be unknown."""
    drop = 0x4bf5da5b89892dea
    plain = pipeline.desired(ClusterState.from_objects(cluster, objects), EDGE)
    assert drop not in plain.by_cookie()
    assert 'LoadBalancerHealth' not in objects
    r = row(bridge(report, 'kl-lb'), drop)
    assert (r.owner, r.status, r.actions) == (
        'service default/demo-gw-nginx/tcp/http-80', observe.CURRENT, 'drop')
    assert report.notes == [
        "the objects have no LoadBalancerHealth for default/demo-gw-nginx (the cloud's "
        'health checks); kl-lb shows no healthy node, and the join uses that']
    # The edge's DNAT flows show the others' targets too: the nodes the objects give.
    assert report.state.lb_health == {
        ('default', 'demo-gw-nginx'): frozenset(),
        ('default', 'web-lb'): frozenset({'control-plane', 'worker-1', 'worker-2'}),
        ('ingress-nginx', 'ingress-nginx-controller'): frozenset({'worker-1'})}
    # With the health in the objects (as the API's snapshot has it), nothing is inferred.
    with_health = dict(objects, LoadBalancerHealth=[{
        'metadata': {'name': 'demo-gw-nginx', 'namespace': 'default'},
        'status': {'healthyNodes': []}}])
    again = observe.annotate(cluster, with_health, [lb_dump()])
    assert again.notes == []
    assert {r.status for r in again.bridges[0].flows} == {observe.CURRENT}


def test_owners_are_the_pipelines(report):
    n1 = bridge(report, 'kl-n1')
    owner = {r.match + ' ' + r.actions: r.owner for r in n1.flows}
    assert owner['tcp,nw_dst=10.110.210.92,tp_dst=80 group:211627740'] == \
        'service default/web/tcp/http'
    assert owner['ip,nw_dst=10.110.210.92 meter:1,CONTROLLER:128'] == 'service default/web'
    assert owner['tcp,nw_dst=10.128.0.11,tp_dst=30080 group:753563630'] == \
        'service default/web-nodeport/tcp/http'
    assert owner['ip,in_port="kl-n1-eth1003",dl_src=0a:58:c0:a8:01:03,nw_src=192.168.1.3 '
                 'set_field:0x1->reg0,goto_table:UnSNAT'] == 'pod default/client'
    assert owner['ip,nw_dst=192.168.2.0/24 set_field:0a:5a:0a:80:00:0b->eth_src,'
                 'set_field:0a:5a:0a:80:00:0c->eth_dst,output:"kl-n1-eth1"'] == 'node worker-1'
    assert owner['ct_state=+inv+trk,ip drop'] == 'conntrack'
    tables = [(tid, name) for tid, name, _, _ in n1.tables()]
    assert tables == [(t.id, t.name) for t in pipeline.TABLES
                      if t.name not in ('SessionAffinity', 'AffinityLearn', 'EgressRule',
                                        'EgressDefaultRule', 'IngressRule',
                                        'IngressDefaultRule', 'PolicyVerdict')]
    stages = {name: stage for _, name, stage, _ in n1.tables()}
    assert stages['ServiceLB'].startswith('nat PREROUTING: KUBE-SERVICES')


def test_live_matches_and_desired_matches_read_alike(cluster, report):
    """The canonical form the place-join uses: every live flow's match equals its
    desired flow's (ovs-ofctl prints port names, /24, dl_src, fields in its order)."""
    for name in ('kl-n1', 'kl-lb'):
        for r in bridge(report, name).flows:
            if r.status != observe.CURRENT:
                continue
            live = observe.canonical_live(ovsdump.match_fields(r.match))
            assert live == observe.canonical_spec(r.spec), (r.match, r.spec.to_ofctl())


def test_groups_buckets_are_endpoints(report):
    groups = {g.group_id: g for g in bridge(report, 'kl-n1').groups}
    # The four Services that select app=web on port http share one group for their
    # ClusterIPs (and the Local NodePort's own node and pods), one for their NodePorts.
    web = groups[211627740]
    assert web.owners == ('services selecting default/app=web -> http/TCP',
                          'service default/web-lb/tcp/http',
                          'service default/web-local/tcp/http',
                          'service default/web-nodeport/tcp/http',
                          'service default/web/tcp/http')
    assert web.owner == 'services selecting default/app=web -> http/TCP (4 Service ports)'
    assert (web.entry_kind, web.entry) == ('ClusterIP/NodePort',
                                           '10.101.227.177:80 (+5 more)')
    assert len(web.used_by) == 6 and 'tcp,nw_dst=10.110.210.92,tp_dst=80' in web.used_by
    assert 'tcp,reg0=0x1/0x1,nw_dst=10.128.0.11,tp_dst=30081' in web.used_by
    assert [(b.endpoint, b.target, b.node) for b in web.buckets] == [
        ('192.168.2.4:8080', 'pod default/web-74f5d576b4-5lll7', 'worker-1'),
        ('192.168.3.3:8080', 'pod default/web-74f5d576b4-hln5x', 'worker-2'),
        ('192.168.3.4:8080', 'pod default/web-74f5d576b4-jf67h', 'worker-2')]
    assert (groups[753563630].entry_kind, groups[753563630].entry) == (
        'LoadBalancer/NodePort', '10.128.0.11:30212 (+2 more)')
    assert groups[1990381825].owners == ('service default/web-v2/tcp/http',)
    assert [b.target for b in groups[2049250242].buckets] == [
        'pod kube-system/coredns-c9d7fdf6d-2rl9t', 'pod kube-system/coredns-c9d7fdf6d-b29jb']
    # The cloud edge has none: its ServiceLB flows DNAT to a node, a few flows a node
    # (blocks of the client's source port: 3, 5 and 3 of the 64 slots' flows).
    edge = bridge(report, 'kl-lb')
    assert edge.groups == []
    lb = [r for r in edge.flows if r.table == 'ServiceLB' and '198.51.100.2' in r.match]
    per_node = {}
    for r in lb:
        assert r.status == observe.CURRENT and r.owner == 'service default/web-lb/tcp/http'
        node = ovsdump.nat_target(r.actions)
        per_node[node] = per_node.get(node, 0) + 1
    assert per_node == {('10.128.0.11', 30212): 3, ('10.128.0.12', 30212): 5,
                        ('10.128.0.13', 30212): 3}


def test_stale_foreign_and_missing_flows_are_shown_never_silently(cluster, objects):
    lines = text('kl-n1.flows').splitlines()
    gone = [ln for ln in lines if 'nw_dst=192.168.1.3 actions=set_field' in ln
            and 'L3Forwarding' in ln]
    assert len(gone) == 1
    lines.remove(gone[0])
    lines += [
        # The web ClusterIP flow as a previous state had it (no endpoint: drop).
        ' cookie=0x4b00000000000abc, duration=9.0s, table=ServiceLB, n_packets=4, '
        'n_bytes=296, priority=200,tcp,nw_dst=10.110.210.92,tp_dst=80 actions=drop',
        # A flow no state has (test_reliability puts one there).
        ' cookie=0x4b00c0ffee000001, duration=9.0s, table=Output, n_packets=0, n_bytes=0, '
        'priority=7,ip,nw_dst=192.0.2.7 actions=drop',
        # Someone's own flow.
        ' cookie=0x0, duration=9.0s, table=Classifier, n_packets=0, n_bytes=0, '
        'priority=300,ip,nw_src=192.0.2.9 actions=drop']
    rep = observe.annotate(cluster, objects, [n1_dump(flows='\n'.join(lines))])
    b = rep.bridges[0]
    stale = row(b, 0x4b00000000000abc)
    assert (stale.owner, stale.status) == ('service default/web/tcp/http', observe.STALE)
    assert 'group:211627740' in stale.note
    other = row(b, 0x4b00c0ffee000001)
    assert (other.owner, other.status) == (observe.UNKNOWN, observe.STALE)
    foreign = row(b, 0)
    assert foreign.status == observe.FOREIGN
    [missing] = [r for r in b.flows if r.status == observe.MISSING
                 and r.owner == 'pod default/client']
    assert (missing.table, missing.priority) == ('L3Forwarding', 200)
    assert missing.n_packets is None
    out = render_flows(rep)
    assert 'service default/web/tcp/http [stale (being replaced)]' in out
    assert "unknown [stale (being replaced)]" in out
    assert "[not kubelab's]" in out
    assert 'pod default/client [missing (being added)]' in out
    header = re.search(r'kl-n1  node control-plane \(datapath 0x1\): 98 flows, 9 groups'
                       r'(, .*)\n', out).group(1)
    assert ", 1 not kubelab's" in header
    assert re.search(r', [12] missing \(being added\)', header)  # + SNAT p250, changed since
    assert re.search(r', [23] stale \(being replaced\)', header)  # (same)


def test_a_group_with_other_buckets_is_stale(cluster, objects):
    groups = text('kl-n1.groups').replace(
        'group_id=211627740,type=select,bucket=actions=ct(commit,table=70,zone=1,'
        'nat(dst=192.168.2.4:8080)),',
        'group_id=211627740,type=select,')
    assert groups != text('kl-n1.groups')
    groups += ' group_id=99,type=select,bucket=actions=ct(commit,table=70,zone=1,' \
              'nat(dst=192.168.9.9:80))\n'
    flows = text('kl-n1.flows') + (
        ' cookie=0x4b0000000000beef, duration=1.0s, table=ServiceLB, n_packets=0, '
        'n_bytes=0, priority=200,tcp,nw_dst=10.98.229.171,tp_dst=80 actions=group:99\n')
    rep = observe.annotate(cluster, objects, [n1_dump(flows=flows, groups=groups)])
    by_id = {g.group_id: g for g in rep.bridges[0].groups}
    web = by_id[211627740]
    assert web.status == observe.STALE and '192.168.2.4:8080' in web.note
    orphan = by_id[99]
    # The flow that sends to it is stale too, but it sits where web-v2's flow does.
    assert (orphan.owner, orphan.status) == (observe.UNKNOWN, observe.STALE)
    assert orphan.used_by == ('tcp,nw_dst=10.98.229.171,tp_dst=80',)
    assert orphan.buckets[0].endpoint == '192.168.9.9:80'


# ---------------------------------------------------------------- session affinity
def sticky(objects, *names, timeout=60):
    objs = copy.deepcopy(objects)
    for svc in objs['Service']:
        if svc['metadata']['name'] in names:
            svc['spec']['sessionAffinity'] = 'ClientIP'
            svc['spec']['sessionAffinityConfig'] = {'clientIP': {'timeoutSeconds': timeout}}
    return objs


def desired_dump(state, dpid, counters=None, extra=()):
    config = pipeline.desired(state, dpid)
    counters = counters or {}
    flows = [ovs_line(f, *counters.get(f.cookie, (0, 0))) for f in config.flows]
    groups = '\n'.join(' ' + g.to_ofctl() for g in config.groups)
    return config, '\n'.join(flows + list(extra)), groups


LEARNED = (' cookie=0x4b41ff0000000000, duration=0.500s, table=SessionAffinity, '
           'n_packets=3, n_bytes=222, idle_timeout=60, priority=200,tcp,'
           'nw_src=192.168.1.3,nw_dst={dst},tp_dst={port} actions='
           'load:0xc0a80204->NXM_NX_REG3[],load:0x1f90->NXM_NX_REG4[0..15],'
           'load:0x1->NXM_NX_REG5[0]')


def test_learned_affinity_flows_belong_to_the_service_that_learns_them(cluster, objects):
    objs = sticky(objects, 'web', 'web-nodeport')
    state = ClusterState.from_objects(cluster, objs)
    _, flows, groups = desired_dump(state, 1, extra=[
        LEARNED.format(dst='10.110.210.92', port=80),       # web's ClusterIP
        LEARNED.format(dst='10.128.0.11', port=30080),      # web-nodeport's NodePort
        LEARNED.format(dst='10.98.229.171', port=80)])      # web-v2: not sticky (any more)
    rep = observe.annotate(cluster, objs, [observe.bridge_dump('kl-n1', 1, flows, groups)])
    b = rep.bridges[0]
    learned = [r for r in b.flows if r.status == observe.LEARNED]
    assert [r.owner for r in learned] == ['service default/web/tcp/http',
                                          'service default/web-nodeport/tcp/http',
                                          'service default/web-v2/tcp/http']
    assert learned[0].note == ('client 192.168.1.3 -> endpoint 192.168.2.4:8080, '
                               'forgotten 60 s after its last use')
    assert 'no Service learns it now' in learned[2].note
    assert {r.status for r in b.flows} == {observe.CURRENT, observe.LEARNED}
    # An endpoint of two sticky Service ports: one EndpointDNAT flow, both owners.
    shared = [r for r in b.flows if r.table == 'EndpointDNAT' and len(r.owners) == 2]
    assert shared and all(set(r.owners) == {'service default/web/tcp/http',
                                            'service default/web-nodeport/tcp/http'}
                          for r in shared)
    only = observe.only_service(rep, 'default', 'web-nodeport').bridges[0]
    assert {r.status for r in only.flows} == {observe.CURRENT, observe.LEARNED}
    assert len([r for r in only.flows if r.status == observe.LEARNED]) == 1
    assert {r.cookie for r in shared} <= {r.cookie for r in only.flows}
    assert {r.table for r in only.flows} == {'SessionAffinity', 'ServiceLB',
                                             'EndpointDNAT', 'AffinityLearn'}
    assert 'service default/web/tcp/http [learned]' in render_flows(rep)


# ---------------------------------------------------------------- --service
def test_service_filter_keeps_what_the_service_owns(report):
    web = observe.only_service(report, 'default', 'web')
    n1, lb = web.bridges
    assert sorted(r.match for r in n1.flows) == [
        'ip,nw_dst=10.110.210.92', 'tcp,nw_dst=10.110.210.92,tp_dst=80',
        'udp,nw_dst=10.110.210.92,tp_dst=53']
    assert sorted(g.group_id for g in n1.groups) == [211627740, 1133057947]
    assert lb.flows == [] and lb.groups == []
    assert web.service == 'default/web'

    web_lb = observe.only_service(report, 'default', 'web-lb')
    n1, lb = web_lb.bridges
    assert sorted(r.match for r in n1.flows) == [
        'ip,nw_dst=10.101.227.177', 'tcp,nw_dst=10.101.227.177,tp_dst=80',
        'tcp,nw_dst=10.128.0.11,tp_dst=30212', 'tcp,nw_dst=198.51.100.2,tp_dst=80']
    assert {g.entry_kind for g in n1.groups} == {'ClusterIP/NodePort', 'LoadBalancer/NodePort'}
    assert len(lb.flows) == 14 and {r.table for r in lb.flows} == {'Classifier', 'ServiceLB'}
    assert lb.groups == []
    out = render_flows(web_lb)
    assert 'kl-lb  cloud load balancer (datapath 0x102): 14 flows, 0 groups of service ' \
           'default/web-lb' in out

    ingress = observe.only_service(report, 'ingress-nginx', 'ingress-nginx-controller')
    assert len(ingress.bridges[1].flows) == 8      # 6 from the NodePorts, 2 LB addresses
    assert observe.only_service(report, 'default', 'ingress-nginx-controller').bridges[0] \
        .flows == []


# ---------------------------------------------------------------- rendering
def test_text_rendering(report):
    out = render_flows(report)
    assert out.startswith('note: the objects have no LoadBalancerHealth')
    assert '\nkl-n1  node control-plane (datapath 0x1): 96 flows, 9 groups' in out
    assert '\nkl-lb  cloud load balancer (datapath 0x102): 44 flows, 0 groups\n' in out
    assert '  table 40 ServiceLB  [nat PREROUTING: KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP ' \
           '(DNAT)]' in out
    assert re.search(r'\n    PRIORITY +PACKETS +BYTES +OWNER +FLOW\n', out)
    assert re.search(r'\n    200 +55 +4870 +underlay +ip,in_port="kl-n1-eth1" '
                     r'actions=goto_table:UnSNAT\n', out)
    assert re.search(r'\n    211627740 +0 +services selecting default/app=web -> http/TCP '
                     r'\(4 Service ports\) +ClusterIP/NodePort 10.101.227.177:80 \(\+5 more\)'
                     r'\n +0 +bucket 0 +-> 192.168.2.4:8080  pod '
                     r'default/web-74f5d576b4-5lll7 \(worker-1\)\n', out)
    assert re.search(r'\n    1990381825 +0 +service default/web-v2/tcp/http +ClusterIP '
                     r'10.98.229.171:80\n', out)
    assert re.search(r'\n    200 +0 +0 +service default/web-lb/tcp/http +tcp,nw_dst=198.51.100.2,'
                     r'tp_src=0x4/0x1e,tp_dst=80 actions=ct\(commit,table=L3Forwarding,'
                     r'zone=2000,nat\(dst=10.128.0.11:30212\)\)\n', out)
    # A NodePort's buckets set the masquerade mark, a ClusterIP's do not.
    def buckets(entry):
        lines = out.split(entry + '\n')[1].splitlines()
        return [line for line in itertools.takewhile(lambda x: 'bucket ' in x, lines)]
    nodeport, cluster_ip = buckets('NodePort 10.128.0.11:30212 (+2 more)'), buckets(
        'ClusterIP/NodePort 10.101.227.177:80 (+5 more)')
    assert nodeport and all(line.endswith('  + ct_mark masquerade (SNAT to the node)')
                            for line in nodeport), nodeport
    assert cluster_ip and not any('masquerade' in line for line in cluster_ip), cluster_ip
    # Tables in pipeline order on every bridge.
    n1 = out.split('\nkl-n1')[1].split('\nkl-lb')[0]
    names = re.findall(r'\n  table \d+ (\w+)', n1)
    assert names == [t.name for t in pipeline.TABLES
                     if t.name not in ('SessionAffinity', 'AffinityLearn', 'EgressRule',
                                       'EgressDefaultRule', 'IngressRule',
                                       'IngressDefaultRule', 'PolicyVerdict')]


def test_json_output(report):
    data = json.loads(json.dumps(report.to_json()))
    [n1, lb] = data['bridges']
    assert (n1['bridge'], n1['dpid'], n1['role']) == ('kl-n1', 1, 'node control-plane')
    service_lb = [t for t in n1['tables'] if t['name'] == 'ServiceLB'][0]
    assert service_lb['id'] == 40 and service_lb['stage'].startswith('nat PREROUTING')
    flow = [f for f in service_lb['flows'] if f['actions'] == 'group:211627740'
            and f['priority'] == 200 and '10.110.210.92' in f['match']][0]
    assert flow == {'table': 'ServiceLB', 'tableId': 40, 'priority': 200,
                    'match': 'tcp,nw_dst=10.110.210.92,tp_dst=80',
                    'actions': 'group:211627740', 'n_packets': 0, 'n_bytes': 0,
                    'cookie': '0x4b70563fe0f5f885', 'owner': 'service default/web/tcp/http',
                    'owners': ['service default/web/tcp/http'], 'status': 'current',
                    'note': None}
    assert lb['groups'] == []
    edge_lb = [f for t in lb['tables'] if t['name'] == 'ServiceLB' for f in t['flows']
               if 'tp_src=0x4/0x1e' in f['match']]
    assert [(f['owner'], f['actions']) for f in edge_lb] == [(
        'service default/web-lb/tcp/http',
        'ct(commit,table=L3Forwarding,zone=2000,nat(dst=10.128.0.11:30212))')]
    assert sum(len(t['flows']) for t in lb['tables']) == 44


# ---------------------------------------------------------------- top
def stats_with(stats: str, gid: int, buckets: list[int]) -> str:
    """The group-stats text with group ``gid``'s bucket packet counters replaced."""
    def swap(m):
        line = m.group(0)
        for i, n in enumerate(buckets):
            line = re.sub(rf'bucket{i}:packet_count=\d+', f'bucket{i}:packet_count={n}', line)
        return re.sub(r'(ref_count=\d+,)packet_count=\d+', rf'\g<1>packet_count={sum(buckets)}',
                      line)
    out = re.sub(rf'group_id={gid},[^\n]*', swap, stats)
    assert out != stats
    return out


def flow_counters(flows: str, needle: str, packets: int, nbytes: int) -> str:
    [line] = [ln for ln in flows.splitlines() if needle in ln]
    new = re.sub(r'n_packets=\d+, n_bytes=\d+', f'n_packets={packets}, n_bytes={nbytes}',
                 line)
    return flows.replace(line, new)


def edge_counters(counts: dict) -> str:
    """kl-lb.flows with the packets of web-lb's ServiceLB flows (by their source port
    match) set: a node's connections are the sum of its flows'."""
    flows = text('kl-lb.flows')
    for block, packets in counts.items():
        flows = flow_counters(flows, f'nw_dst=198.51.100.2,tp_src={block},', packets, 0)
    return flows


def test_top_rates_are_counter_deltas_over_the_time_between_polls(cluster, objects):
    # web-lb's edge flows: 0x0/0x6 and 0x4/0x1e DNAT to control-plane, 0x54/0x7e to
    # worker-1, 0x6/0x6 and 0x1a/0x1e to worker-2.
    first = top.Poll(100.0, observe.annotate(cluster, objects, [
        n1_dump(stats=stats_with(text('kl-n1.groupstats'), 211627740, [4, 0, 1])),
        lb_dump(flows=edge_counters({'0x0/0x6': 1, '0x54/0x7e': 1}))]))
    coredns_in = 'nw_dst=192.168.1.2 actions=set_field:0a:58:c0:a8:01:01->eth_src,' \
                 'set_field:0a:58:c0:a8:01:02->eth_dst,output'
    coredns_out = 'in_port="kl-n1-eth1002",dl_src=0a:58:c0:a8:01:02,nw_src=192.168.1.2 ' \
                  'actions=set_field'
    flows = flow_counters(text('kl-n1.flows'), coredns_in, 30, 10882)
    flows = flow_counters(flows, coredns_out, 30, 2984)
    # web shares its group with the three other Services that select app=web: its own
    # new connections are its ServiceLB flow's; the endpoints' are the group's, theirs all.
    flows = flow_counters(flows, 'priority=200,tcp,nw_dst=10.110.210.92,tp_dst=80 ', 9, 666)
    stats = stats_with(text('kl-n1.groupstats'), 211627740, [10, 4, 0])   # bucket 2 reset
    stats = stats_with(stats, 2049250242, [6, 2])
    second = top.Poll(102.0, observe.annotate(cluster, objects, [
        n1_dump(flows=flows, stats=stats),
        lb_dump(flows=edge_counters({'0x0/0x6': 2, '0x4/0x1e': 1, '0x54/0x7e': 1,
                                     '0x6/0x6': 5, '0x1a/0x1e': 3}))]))
    view = top.top_view(first, second, namespace=None)
    assert view.elapsed == 2.0
    services = {s.key: s for s in view.services}
    web = services['default/web/tcp/http']
    assert (web.address, web.kind) == ('10.110.210.92:80', 'ClusterIP')
    got = [(e.endpoint, e.pod, e.node, e.conns, e.conns_per_s) for e in web.endpoints]
    assert got == [
        ('192.168.2.4:8080', 'pod default/web-74f5d576b4-5lll7', 'worker-1', 10, 3.0),
        ('192.168.3.3:8080', 'pod default/web-74f5d576b4-hln5x', 'worker-2', 4, 2.0),
        ('192.168.3.4:8080', 'pod default/web-74f5d576b4-jf67h', 'worker-2', 0, 0.0)]
    assert (web.conns, web.conns_per_s, web.shared_with) == (9, 4.5, 3)
    assert services['default/web-v2/tcp/http'].shared_with == 0
    dns = services['kube-system/kube-dns/udp/dns']
    assert [(e.conns, e.conns_per_s) for e in dns.endpoints] == [(6, 3.0), (2, 1.0)]
    coredns = dns.endpoints[0]
    assert (coredns.pod_in_per_s, coredns.pod_out_per_s) == ((10882 - 882) / 2,
                                                            (2984 - 984) / 2)
    assert dns.endpoints[1].pod_in_per_s is None     # worker-1's bridge was not read
    lbs = {lb.address: lb for lb in view.load_balancers}
    assert lbs['198.51.100.2:80'].nodes == [('control-plane', 3, 1.0), ('worker-1', 1, 0.0),
                                            ('worker-2', 8, 4.0)]
    assert lbs['198.51.100.3:80'].nodes == []
    assert 'no healthy node' in lbs['198.51.100.3:80'].note
    assert services['default/web-lb/tcp/http'].kind == 'LoadBalancer 198.51.100.2'
    assert services['default/web-nodeport/tcp/http'].kind == 'NodePort :30080'

    only = top.top_view(first, second, namespace='kube-system')
    assert [s.key for s in only.services] == ['kube-system/kube-dns/tcp/dns-tcp',
                                              'kube-system/kube-dns/udp/dns']
    assert only.load_balancers == []

    frame = top.render_top(view, '08:21:05')
    assert frame.startswith('kubelab top  all namespaces  08:21:05  (rates over the last '
                            '2.0 s)\n')
    assert re.search(r'\ndefault/web/tcp/http +ClusterIP +10.110.210.92:80 +4.5 +9\s*\n'
                     r" +\(its endpoints' counts include 3 more Service ports selecting the "
                     r'same pods: one group\)\s*\n'
                     r' +web-74f5d576b4-5lll7 +worker-1 +192.168.2.4:8080 +3.0 +10 +- +-\n',
                     frame)
    assert re.search(r'\n +coredns-c9d7fdf6d-2rl9t +control-plane +192.168.1.2:53 +3.0 +6 '
                     r'+5.0 kB/s +1.0 kB/s\n', frame)
    assert re.search(r'\n198.51.100.2:80 +default/web-lb/tcp/http +control-plane +1.0 +3\n'
                     r' +worker-1 +0.0 +1\n +worker-2 +4.0 +8\n', frame)
    assert '(no healthy node: the edge drops new connections)' in frame
    assert 'POD IN/S, POD OUT/S: bytes per second' in frame


def test_top_counts_sticky_clients_and_new_groups(cluster, objects):
    objs = sticky(objects, 'web')
    state = ClusterState.from_objects(cluster, objs)
    config, flows, groups = desired_dump(state, 1)
    hits = [f for f in config.flows if f.table == pipeline.T['EndpointDNAT']
            and f.priority == 200 and f.match_dict()['reg3'] == 0xC0A80204
            and f.match_dict()['reg4'] == 8080]
    assert len(hits) == 1
    first = top.Poll(0.0, observe.annotate(cluster, objs, [
        observe.bridge_dump('kl-n1', 1, flows, groups, None)]))
    _, flows, _ = desired_dump(state, 1, counters={hits[0].cookie: (7, 518)})
    stats = ' group_id=1983331031,duration=1s,ref_count=1,packet_count=2,byte_count=148,' \
            'bucket0:packet_count=1,byte_count=74,bucket1:packet_count=1,byte_count=74,' \
            'bucket2:packet_count=0,byte_count=0\n'
    second = top.Poll(0.5, observe.annotate(cluster, objs, [
        observe.bridge_dump('kl-n1', 1, flows, groups, stats)]))
    view = top.top_view(first, second, 'default')
    web = {s.key: s for s in view.services}['default/web/tcp/http']
    # 7 sticky connections to 192.168.2.4 (EndpointDNAT) + 1 through the group; the
    # group's counters appear only now (the first poll had no statistics): counted whole.
    assert [(e.endpoint, e.conns, e.conns_per_s) for e in web.endpoints] == [
        ('192.168.2.4:8080', 8, 16.0), ('192.168.3.3:8080', 1, 2.0),
        ('192.168.3.4:8080', 0, 0.0)]


def test_a_counter_that_went_down_counts_from_zero(cluster, objects):
    before = top.Poll(0.0, observe.annotate(cluster, objects, [n1_dump(
        stats=stats_with(text('kl-n1.groupstats'), 211627740, [50, 50, 50]))]))
    after = top.Poll(1.0, observe.annotate(cluster, objects, [n1_dump(
        stats=stats_with(text('kl-n1.groupstats'), 211627740, [2, 50, 51]))]))
    web = {s.key: s for s in top.top_view(before, after).services}[
        'default/web/tcp/http']
    assert [e.conns_per_s for e in web.endpoints] == [2.0, 0.0, 1.0]


# ---------------------------------------------------------------- errors, the CLI
def test_a_bridge_that_cannot_be_read_is_named(cluster, objects):
    broken = observe.bridge_dump('kl-n4', 4, error='`ovs-ofctl -O OpenFlow13 --names '
                                 'dump-flows kl-n4` failed: ovs-ofctl: kl-n4 is not a '
                                 'bridge or a socket')
    garbled = observe.bridge_dump('kl-n2', 2, 'cookie=0x4b, nonsense', None, None)
    assert garbled.flows is None and 'cannot read its flows: dump-flows line 1' in \
        garbled.error
    rep = observe.annotate(cluster, objects, [n1_dump(), broken, garbled])
    out = render_flows(rep)
    assert 'kl-n4  not a bridge of this lab (datapath 0x4): error: `ovs-ofctl -O ' \
           'OpenFlow13 --names dump-flows kl-n4` failed: ovs-ofctl: kl-n4 is not a ' \
           'bridge or a socket' in out
    assert 'kl-n2  node worker-1 (datapath 0x2): error: cannot read its flows' in out
    assert '96 flows, 9 groups' in out


class FakeClient:
    state_dir = '/nonexistent'

    def __init__(self, objects):
        self.objects = objects

    def snapshot(self, since=0, timeout=0):
        return 7, self.objects

    def dataplane(self):
        return {'version': 7, 'storeVersion': 7, 'switches': [1, 2, 3, 256, 257, 258]}

    def pod_metrics(self):
        return [{'metadata': {'name': 'web-1', 'namespace': 'default'}, 'containers': [
            {'name': 'app', 'usage': {'cpu': '2500000n', 'memory': '20480Ki'}}]}]


@pytest.fixture
def fake_lab(monkeypatch, objects, cluster):
    files = {('kl-n1', 'dump-flows'): 'kl-n1.flows', ('kl-n1', 'dump-groups'): 'kl-n1.groups',
             ('kl-n1', 'dump-group-stats'): 'kl-n1.groupstats',
             ('kl-lb', 'dump-flows'): 'kl-lb.flows',
             ('kl-lb', 'dump-group-stats'): 'kl-lb.groupstats'}
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        assert argv[:3] == ['ovs-ofctl', '-O', 'OpenFlow13'] and kwargs['timeout']
        bridge, verb = argv[-1], argv[-2]
        name = files.get((bridge, verb))
        if name is None and bridge == 'kl-lb':
            return subprocess.CompletedProcess(argv, 0, '', '')      # no group desc
        if name is None:
            return subprocess.CompletedProcess(
                argv, 1, '', f'ovs-ofctl: {bridge} is not a bridge or a socket\n')
        return subprocess.CompletedProcess(argv, 0, text(name), '')

    monkeypatch.setattr(cli_observe, 'Client', lambda: FakeClient(objects))
    monkeypatch.setattr(switches, 'lab_cluster', lambda client: cluster)
    monkeypatch.setattr(switches.subprocess, 'run', run)
    monkeypatch.setattr(cli_observe.time, 'sleep', lambda seconds: None)
    return calls


def test_flows_command(fake_lab, capsys):
    assert cli.main(['flows', '--node', 'control-plane']) == 0
    out = capsys.readouterr().out
    assert out.startswith('kl-n1  node control-plane (datapath 0x1): 96 flows, 9 groups')
    assert ['ovs-ofctl', '-O', 'OpenFlow13', '--names', 'dump-flows', 'kl-n1'] in fake_lab
    assert cli.main(['flows', '--service', 'web-lb', '-o', 'json']) == 1   # n2, n3... fail
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data['service'] == 'default/web-lb'
    assert [b['bridge'] for b in data['bridges']] == ['kl-n1', 'kl-n2', 'kl-n3', 'kl-ul',
                                                     'kl-lb', 'kl-ex']
    lb = data['bridges'][4]
    assert lb['error'] is None and lb['groups'] == []
    assert {f['owner'] for t in lb['tables'] for f in t['flows']} == {
        'service default/web-lb/tcp/http'}
    assert 'error: kl-n2: `ovs-ofctl -O OpenFlow13 --names dump-flows kl-n2` failed: ' \
           'ovs-ofctl: kl-n2 is not a bridge or a socket' in captured.err
    assert cli.main(['flows', '--service', 'nope']) == 1
    assert 'Error from server (NotFound): services "nope" not found in namespace ' \
           '"default"' in capsys.readouterr().err
    assert cli.main(['flows', '--node', 'worker-9']) == 1
    assert 'error: no node "worker-9"; nodes: control-plane, worker-1, worker-2; bridges: ' \
           'kl-n1, kl-n2, kl-n3, kl-ul, kl-lb, kl-ex' in capsys.readouterr().err


def test_top_command_once(fake_lab, capsys):
    assert cli.main(['top', '--once', '-A']) == 1           # kl-n2, kl-n3 cannot be read
    out = capsys.readouterr().out
    assert out.startswith('kubelab top  all namespaces  ')
    assert 'error: kl-n2: `ovs-ofctl' in out
    assert re.search(r'\ndefault/web/tcp/http +ClusterIP +10.110.210.92:80 +0.0 +0', out)
    assert re.search(r'\nPOD +CPU\(cores\) +MEMORY\(bytes\)\ndefault/web-1 +3m +20Mi\n', out)
    assert '\x1b[' not in out
    bridges = {argv[-1] for argv in fake_lab}
    assert bridges == {'kl-n1', 'kl-n2', 'kl-n3', 'kl-lb'}  # no underlay, no external
    assert cli.main(['top', '--once', '--interval', '0']) == 1
    assert '--interval must be more than 0 seconds' in capsys.readouterr().err


def test_ovs_ofctl_missing_or_refusing(monkeypatch):
    def missing(argv, **kwargs):
        raise FileNotFoundError(argv[0])
    monkeypatch.setattr(switches.subprocess, 'run', missing)
    with pytest.raises(KubelabError, match='ovs-ofctl not found'):
        switches.dump_bridges([('kl-n1', 1)])

    def denied(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 1, '', 'ovs-ofctl: /var/run/openvswitch/'
                                           'kl-n1.mgmt: failed to open socket (Permission '
                                           'denied)\n')
    monkeypatch.setattr(switches.subprocess, 'run', denied)
    [dump] = switches.dump_bridges([('kl-n1', 1)])
    assert dump.flows is None and dump.error.endswith('(Permission denied) (run kubelab '
                                                      'with sudo)')

    def slow(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs['timeout'])
    monkeypatch.setattr(switches.subprocess, 'run', slow)
    [dump] = switches.dump_bridges([('kl-lb', EDGE)])
    assert 'did not answer within 10 s' in dump.error and 'kl-lb' in dump.error
