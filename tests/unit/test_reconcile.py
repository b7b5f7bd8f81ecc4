"""The reconcile diff the Ryu shell sends: ``controller.reconcile.changes``.

What a switch gets told when the controller first meets it, when nothing changed, when a
Service's endpoints or flows change and when a Service goes; that learned session-affinity
flows survive every resync; that what the switch reported at (re)connection, whose
content the controller cannot know, is rewritten; and the order of the messages (what a
flow uses is there before the flow, and goes after it). The first tests use the real
pipeline's configs for a node bridge, the others small hand-made ones.
"""

import dataclasses

from controller.flows import (Bucket, Ct, Group, GroupSpec, MeterSpec, Nat, Output,
                              SwitchConfig, flow)
from controller.pipeline import desired
from controller.pipeline.tables import AFFINITY_COOKIE, T
from controller.reconcile import Changes, Installed, changes
from controller.state import ClusterState
from services.cluster import default_cluster

CLUSTER = default_cluster()
CONTROL_PLANE = 1                       # the datapath id of control-plane's bridge
WEB_1, WEB_2 = '192.168.1.10', '192.168.2.10'


def state(*endpoints, service=True):
    """Pods web-1 and web-2; the Service web (10.96.0.20:80 -> 8080) with the ready
    ``endpoints`` behind it, when ``service``."""
    pods = [{'metadata': {'name': name, 'namespace': 'default'}, 'spec': {'nodeName': node},
             'status': {'podIP': ip}}
            for name, node, ip in (('web-1', 'control-plane', WEB_1),
                                   ('web-2', 'worker-1', WEB_2))]
    objects = {'Pod': pods}
    if service:
        objects['Service'] = [{'metadata': {'name': 'web', 'namespace': 'default'},
                               'spec': {'clusterIP': '10.96.0.20', 'ports': [
                                   {'name': 'http', 'port': 80, 'targetPort': 8080}]}}]
        objects['EndpointSlice'] = [{
            'metadata': {'name': 'web-abcde', 'namespace': 'default',
                         'labels': {'kubernetes.io/service-name': 'web'}},
            'ports': [{'name': 'http', 'port': 8080, 'protocol': 'TCP'}],
            'endpoints': [{'addresses': [ip], 'conditions': {'ready': True}}
                          for ip in endpoints]}]
    return ClusterState.from_objects(CLUSTER, objects)


def node_bridge(*endpoints, service=True) -> SwitchConfig:
    return desired(state(*endpoints, service=service), CONTROL_PLANE)


def holding(config: SwitchConfig) -> Installed:
    """A switch the controller has sent ``config`` to."""
    installed = Installed()
    installed.apply(changes(installed, config))
    return installed


# ---------------------------------------------------------------- the pipeline's configs
def test_a_fresh_switch_gets_every_meter_group_and_flow_and_loses_nothing():
    want = node_bridge(WEB_1, WEB_2)
    todo = changes(Installed(), want)
    assert todo.meters_to_add == tuple(want.meters)
    assert todo.groups_to_add == tuple(want.groups)
    assert todo.flows_to_add == tuple(want.flows)
    assert (todo.meters_to_modify, todo.groups_to_modify, todo.flows_to_delete,
            todo.groups_to_delete) == ((), (), (), ())


def test_a_switch_that_holds_what_is_wanted_is_sent_nothing():
    want = node_bridge(WEB_1, WEB_2)
    todo = changes(holding(want), want)
    assert todo == Changes()
    assert not todo and todo.steps() == []


def test_an_endpoint_that_goes_changes_only_the_services_group():
    before, after = node_bridge(WEB_1, WEB_2), node_bridge(WEB_1)
    todo = changes(holding(before), after)
    [group] = after.groups
    assert todo == Changes(groups_to_modify=(group,))


def test_a_service_that_goes_deletes_its_flows_then_its_group():
    before, after = node_bridge(WEB_1, WEB_2), node_bridge(service=False)
    todo = changes(holding(before), after)
    gone = {f.cookie for f in before.flows} - {f.cookie for f in after.flows}
    assert gone and set(todo.flows_to_delete) == gone
    assert todo.groups_to_delete == tuple(g.group_id for g in before.groups)
    assert [kind for op, kind, _ in todo.steps() if op == 'delete'] == \
        ['flow'] * len(gone) + ['group']


def test_a_switch_that_reconnects_keeps_its_flows_and_has_its_groups_and_meters_rewritten():
    """At (re)connection the switch reports its flows' cookies, but its groups and meters
    only by id: their content is unknown, so they are sent again (modified)."""
    want = node_bridge(WEB_1, WEB_2)
    reported = Installed(flows={f.cookie for f in want.flows},
                         groups={g.group_id: None for g in want.groups},
                         meters={m.meter_id: None for m in want.meters})
    todo = changes(reported, want)
    assert todo == Changes(meters_to_modify=tuple(want.meters),
                           groups_to_modify=tuple(want.groups))


# ---------------------------------------------------------------- small configs
METER = MeterSpec(1, 200, 200)


def dnat_group(*endpoints):
    """Group 7: a bucket per endpoint that DNATs to it (port 8080)."""
    return GroupSpec(7, tuple(Bucket((Ct(zone=1, commit=True, table=T['L3Forwarding'],
                                         nat=Nat(dst=ip, port=8080)),))
                              for ip in endpoints))


GROUP = dnat_group(WEB_1)
TO_GROUP = flow(T['ServiceLB'], 200, {'eth_type': 0x0800, 'ipv4_dst': '10.96.0.20'},
                (Group(7),))
ROUTE = flow(T['L3Forwarding'], 200, {'eth_type': 0x0800, 'ipv4_dst': WEB_1},
             (Output(1010),))
MISS = flow(T['L3Forwarding'], 0)


def config(*flows, groups=(GROUP,), meters=(METER,)):
    return SwitchConfig(flows=list(flows), groups=list(groups), meters=list(meters))


def test_a_changed_flow_is_one_add_and_one_delete():
    installed = holding(config(TO_GROUP, ROUTE, MISS))
    moved = dataclasses.replace(ROUTE, actions=(Output(1011),))
    todo = changes(installed, config(TO_GROUP, moved, MISS))
    assert todo == Changes(flows_to_add=(moved,), flows_to_delete=(ROUTE.cookie,))
    assert [op for op, _, _ in todo.steps()] == ['add', 'delete']   # the new one first


def test_a_flow_the_pipeline_no_longer_wants_is_deleted_whoever_installed_it():
    installed = holding(config(ROUTE, MISS))
    installed.flows.add(0x4B00000000000001)            # e.g. left by an earlier controller
    assert changes(installed, config(ROUTE, MISS)) == Changes(
        flows_to_delete=(0x4B00000000000001,))


def test_learned_session_affinity_flows_are_never_deleted():
    installed = holding(config(ROUTE))
    installed.flows.add(AFFINITY_COOKIE)               # what a learn action installed
    assert changes(installed, config(ROUTE)) == Changes()
    assert changes(installed, config()).flows_to_delete == (ROUTE.cookie,)


def test_a_group_whose_buckets_changed_is_modified_and_a_gone_one_deleted():
    installed = holding(config(TO_GROUP))
    other = dnat_group(WEB_1, WEB_2)
    assert changes(installed, config(TO_GROUP, groups=(other,))) == Changes(
        groups_to_modify=(other,))
    assert changes(installed, config(groups=())) == Changes(
        flows_to_delete=(TO_GROUP.cookie,), groups_to_delete=(7,))


def test_a_group_or_meter_of_unknown_content_is_modified_not_added():
    installed = Installed(flows={TO_GROUP.cookie}, groups={7: None}, meters={1: None})
    assert changes(installed, config(TO_GROUP)) == Changes(
        meters_to_modify=(METER,), groups_to_modify=(GROUP,))


def test_a_meter_whose_rate_changed_is_modified_and_one_no_longer_wanted_stays():
    installed = holding(config())
    faster = MeterSpec(1, 400, 400)
    assert changes(installed, config(meters=(faster,))) == Changes(meters_to_modify=(faster,))
    assert changes(installed, config(meters=())) == Changes()


def test_meters_and_groups_are_sent_before_the_flows_that_use_them():
    todo = changes(Installed(), config(TO_GROUP, ROUTE))
    assert [(op, kind) for op, kind, _ in todo.steps()] == [
        ('add', 'meter'), ('add', 'group'), ('add', 'flow'), ('add', 'flow')]


def test_flows_are_deleted_before_the_groups_they_used_and_in_a_stable_order():
    installed = holding(config(TO_GROUP, ROUTE, MISS))
    installed.groups[3] = None
    todo = changes(installed, config(groups=(), meters=()))
    assert todo.steps() == (
        [('delete', 'flow', c) for c in sorted([TO_GROUP.cookie, ROUTE.cookie, MISS.cookie])]
        + [('delete', 'group', 3), ('delete', 'group', 7)])


def test_what_was_sent_is_recorded():
    installed = holding(config(TO_GROUP, ROUTE))
    assert installed == Installed(flows={TO_GROUP.cookie, ROUTE.cookie},
                                  groups={7: GROUP.content}, meters={1: METER})
    installed.apply(changes(installed, config(groups=())))
    assert installed == Installed(meters={1: METER})
