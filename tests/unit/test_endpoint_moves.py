"""A Service port whose endpoints alone changed (controller/pipeline/endpoint_moves.py):
its part derived from the old one equals the part computed afresh, in the memo (a full
pass) and on the incremental path, which answers a pod behind many Services becoming
ready with their groups' new buckets only (issue 20)."""

import dataclasses
import random

from controller import pipeline
from controller.pipeline import endpoint_moves, incremental, memo
from controller.state import Endpoint, ServicePort, StateBuilder
from services.cluster import default_cluster
from services.store import Store
from tests.unit.test_pipeline_incremental import Switch, _dpids, _holds
from tests.unit.test_store_incremental import _pod


def _kind(i):
    """Service ``i``: now and then with Local policies or two ports or a NodePort.
    (A sticky one sends every change to the full pass: ConntrackState reads them.)"""
    spec = {'selector': {'app': 'a'}, 'ports': [{'name': 'a', 'port': 80,
                                                 'targetPort': 8080}]}
    if i % 25 == 12:
        spec.update(type='NodePort', externalTrafficPolicy='Local',
                    internalTrafficPolicy='Local')
    elif i % 3 == 1:
        spec['type'] = 'NodePort'
    elif i % 3 == 2:
        spec['ports'].append({'name': 'b', 'port': 81, 'targetPort': 8080})
    return {'apiVersion': 'v1', 'kind': 'Service',
            'metadata': {'name': f's{i}', 'namespace': 'default'}, 'spec': spec}


def _status(store, name, ip, ready):
    pod = store.get('Pod', 'default', name)
    store.update_pod_status('default', name, pod['metadata']['uid'], {
        'phase': 'Running', 'podIP': ip,
        'conditions': [{'type': 'Ready', 'status': 'True' if ready else 'False'}]})


class Lab:
    """A store, kube-proxy's state builder and every switch, kept in step."""

    def __init__(self, seed, services):
        self.store = Store(default_cluster(), rng=random.Random(seed))
        self.store.apply([_kind(i) for i in range(services)]
                         + [_pod(f'p{i}', 'default', 'a') for i in range(3)])
        for i in range(3):
            _status(self.store, f'p{i}', f'192.168.{2 + i % 2}.{10 + i}', True)
        self.builder, self.version = StateBuilder(self.store.cluster), 0
        self.switches = [Switch(d) for d in _dpids(self.store.cluster)]
        self.sync()

    def sync(self):
        self.builder.apply(self.store.changes(self.version, epoch=self.store.epoch
                                              if self.version else ''))
        self.version = self.store.rv
        state = self.builder.state()
        todos = [sw.sync(state) for sw in self.switches]
        for sw in self.switches:
            _holds(sw, state)
        return state, todos


def test_a_pod_behind_every_service_becoming_ready_sends_only_new_buckets(monkeypatch):
    monkeypatch.setattr(incremental, 'MAX_CHANGED', 16)     # far fewer than the moves
    lab = Lab(1, 150)
    lab.store.apply([_pod('new', 'default', 'a')])
    _status(lab.store, 'new', '192.168.2.40', False)     # an address, not ready
    lab.sync()
    before = [sw.incremental for sw in lab.switches]
    _status(lab.store, 'new', '192.168.2.40', True)
    after, todos = lab.sync()
    nodes = [sw for sw in lab.switches if sw.plan.kind == 'node']
    for sw, todo in zip(lab.switches, todos):
        assert sw.incremental == before[lab.switches.index(sw)] + 1, f'{sw.dpid:#x}'
        if sw not in nodes:
            assert not todo
            continue
        assert not todo.flows_to_add and not todo.flows_to_delete
        assert not todo.groups_to_add and not todo.groups_to_delete
        assert all('192.168.2.40' in g.to_ofctl() for g in todo.groups_to_modify)
        # The Services over the same pods share a group for their ClusterIPs and one
        # for their NodePorts; only the Local ones have groups of their own (their
        # ClusterIP's and their NodePort's, over the node's own endpoints).
        shared = [g for g in todo.groups_to_modify if g.owner.startswith('services ')]
        assert [g.owner for g in shared] == [
            'services selecting default/app=a -> 8080/TCP'] * 2
        assert len(todo.groups_to_modify) - 2 <= 2 * sum(
            sp.internal_local for sp in after.service_ports)
    # Far more Service ports than the incremental path takes otherwise; the Local
    # ones among them went its usual way.
    assert sum(not sp.internal_local for sp in after.service_ports) \
        > 2 * incremental.MAX_CHANGED
    assert any(sp.internal_local for sp in after.service_ports)


def test_a_new_pod_changes_only_the_flows_outside_the_service_parts():
    """A pod's address changes no Service port (it is not ready): each node bridge
    gets the flows that changed outside the Service parts (the pod's port guard and
    route on its node), from a pass over those flows alone."""
    lab = Lab(3, 60)
    lab.store.apply([_pod('new', 'default', 'a')])
    lab.sync()
    node = lab.store.get('Pod', 'default', 'new')['spec']['nodeName']
    cidr = next(n.pod_cidr for n in lab.store.cluster.nodes if n.name == node)
    before = [sw.incremental for sw in lab.switches]
    _status(lab.store, 'new', cidr.rsplit('.', 1)[0] + '.77', False)
    _, todos = lab.sync()           # every switch holds what the full pass computes
    for sw, todo, n in zip(lab.switches, todos, before):
        if sw.plan.kind != 'node':
            assert sw.incremental == n          # the full pass: not a node bridge
            continue
        assert sw.incremental == n + 1
        assert not (todo.groups_to_add or todo.groups_to_modify or todo.groups_to_delete)
        owners = {f.owner for f in todo.flows_to_add}
        assert owners == ({'pod default/new'} if sw.plan.node.name == node else set())


def test_the_not_ready_address_keeps_every_service_port_object():
    lab = Lab(2, 40)
    old = lab.builder.state().service_ports
    lab.store.apply([_pod('new', 'default', 'a')])
    _status(lab.store, 'new', '192.168.2.41', False)
    lab.builder.apply(lab.store.changes(lab.version, epoch=lab.store.epoch))
    assert all(a is b for a, b in zip(old, lab.builder.state().service_ports))


def _sp(endpoints, **kw):
    return ServicePort('default', 'web', '', 'TCP', '10.96.0.20', 80, tuple(
        Endpoint(f'192.168.{2 + i // 250}.{i % 250 + 2}', 8080, 'worker-1')
        for i in range(endpoints)), **kw)


def test_moved_only_where_the_flows_stay():
    assert endpoint_moves.moved(_sp(3), _sp(4))
    assert endpoint_moves.moved(_sp(600), _sp(700))          # two groups both times
    assert not endpoint_moves.moved(_sp(400), _sp(600))      # one group, then two
    assert not endpoint_moves.moved(_sp(0), _sp(1))          # REJECT, then a group
    assert not endpoint_moves.moved(_sp(1), _sp(0))
    assert not endpoint_moves.moved(_sp(3, affinity_timeout=60), _sp(4, affinity_timeout=60))
    assert not endpoint_moves.moved(_sp(3, external_local=True),
                                    _sp(4, external_local=True))
    assert not endpoint_moves.moved(_sp(3), dataclasses.replace(_sp(4), port=81))
    assert not endpoint_moves.moved(_sp(3, node_port=30080), _sp(4))


def _state_with(sp):
    from controller.state import ClusterState
    return ClusterState(default_cluster(), service_ports=[sp])


def test_derived_parts_equal_parts_computed_afresh():
    cluster = default_cluster()
    node = [n for n in cluster.nodes if n.name == 'worker-1'][0]
    from services import wiring
    dpid = wiring.node_dpid(node)
    for old, new in ((_sp(3), _sp(5)), (_sp(600), _sp(900)), (_sp(2, node_port=30080),
                                                             _sp(7, node_port=30080))):
        first = _state_with(old)
        first.cluster = cluster
        second = _state_with(new)
        second.cluster = cluster
        pipeline.desired(first, dpid)                  # remembered
        derived = pipeline.desired(second, dpid)       # derived from it
        with memo.bypassed():
            fresh = pipeline.desired(second, dpid)
        assert [f.to_ofctl() for f in derived.flows] == [f.to_ofctl() for f in fresh.flows]
        assert [g.to_ofctl() for g in derived.groups] == [g.to_ofctl() for g in fresh.groups]
        assert len(fresh.groups) >= (2 if len(new.endpoints) > 512 else 1)


def _selecting(name, endpoints, port=80):
    return ServicePort('default', name, '', 'TCP', f'10.96.1.{port - 70}', port, endpoints,
                       selects='default/app=a -> 8080/TCP')


def test_services_that_select_alike_share_a_group_while_their_endpoints_agree():
    """The EndpointSlice controller writes each Service's slices in turn: Services that
    select alike can differ for a moment. Those whose endpoints are not the first one's
    get groups of their own, and share again once they agree; the incremental path
    holds what the full pass computes at every step."""
    from controller.state import ClusterState
    cluster = default_cluster()

    def eps(*last):
        return tuple(Endpoint(f'192.168.2.{i}', 8080, 'worker-1') for i in last)

    e1, e2, e3 = eps(5, 6), eps(5, 6, 7), eps(5, 7)
    a, b, c = _selecting('a', e1, 80), _selecting('b', e1, 81), _selecting('c', e1, 82)
    steps = [[a, b, c],
             [a, _selecting('b', e2, 81), c],                    # b ahead of the first
             [_selecting('a', e2, 80), _selecting('b', e2, 81), _selecting('c', e2, 82)],
             [_selecting('a', e3, 80), _selecting('b', e2, 81), _selecting('c', e2, 82)],
             [_selecting('a', e3, 80), _selecting('b', e3, 81), _selecting('c', e3, 82)]]
    switches = [Switch(d) for d in _dpids(cluster)]
    owned = []
    for ports in steps:
        state = ClusterState(cluster, service_ports=ports)
        for sw in switches:
            sw.sync(state)
            _holds(sw, state)
        node = next(sw for sw in switches if sw.plan.kind == 'node')
        with memo.bypassed():
            groups = pipeline.desired(state, node.dpid).groups
        owned.append(sorted(g.owner.split()[-1] for g in groups
                            if g.owner.startswith('service ')))
        assert sum(g.owner.startswith('services selecting') for g in groups) == 1
    assert owned == [[], ['default/b/tcp/p81'], [],
                     ['default/b/tcp/p81', 'default/c/tcp/p82'], []]
    # Steps 2 and 4 reached every node bridge by the incremental path, or by the full
    # pass when sharing changed for a Service port that did not: both hold the same.
