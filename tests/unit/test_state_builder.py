"""kube-proxy follows the store by deltas (``Store.changes``) into ``StateBuilder``
(controller/state.py), which reads again only the objects whose resourceVersion moved
(issue 20). On random change sequences its state must equal the one a whole snapshot
gives, and an unchanged Service must keep its very ServicePort objects (the pipeline's
per-Service memo counts on it)."""

import random

import pytest

from controller.state import ClusterState, StateBuilder
from services.cluster import default_cluster
from services.store import Store
from tests.unit.test_store_incremental import _pod, _service, random_step


def _same(a: ClusterState, b: ClusterState):
    assert a.pods == b.pods
    assert a.service_ports == b.service_ports
    assert (a.not_ready, a.lb_health, a.namespaces) == (b.not_ready, b.lb_health,
                                                          b.namespaces)
    assert [p.key for p in a.policies] == [p.key for p in b.policies]


@pytest.mark.parametrize('seed', range(4))
def test_the_state_from_deltas_equals_the_state_from_a_snapshot(seed):
    rng = random.Random(seed)
    store = Store(default_cluster(), rng=random.Random(seed))
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'team'}}])
    builder, version = StateBuilder(store.cluster), 0
    for serial in range(120):
        random_step(store, rng, serial)
        if rng.random() < 0.3:          # the controller misses some versions: no matter
            continue
        body = store.changes(version, epoch=store.epoch if version else '')
        assert body['full'] == (version == 0)
        builder.apply(body)
        version = int(body['resourceVersion'])
        _, objects = store.snapshot()
        _same(builder.state(), ClusterState.from_objects(store.cluster, objects))


def test_an_unchanged_service_keeps_its_service_port_objects():
    store = Store(default_cluster(), rng=random.Random(3))
    store.apply([_service('a', 'default', 'a'), _service('b', 'default', 'b'),
                 _pod('p', 'default', 'b')])
    builder = StateBuilder(store.cluster)
    builder.apply(store.changes(0))
    before = {sp.service: sp for sp in builder.state().service_ports}
    version = store.rv
    pod = store.get('Pod', 'default', 'p')
    store.update_pod_status('default', 'p', pod['metadata']['uid'], {
        'phase': 'Running', 'podIP': '192.168.2.7',
        'conditions': [{'type': 'Ready', 'status': 'True'}]})
    body = store.changes(version, epoch=store.epoch)
    assert not body['full'] and set(body['objects']) == {'Pod', 'EndpointSlice'}
    builder.apply(body)
    after = {sp.service: sp for sp in builder.state().service_ports}
    assert after['a'] is before['a']
    assert after['b'] is not before['b'] and [e.ip for e in after['b'].endpoints] == \
        ['192.168.2.7']


def test_a_state_that_failed_midway_is_built_whole_the_next_time(monkeypatch):
    """The controller logs a failed version and goes on: the next state must still
    equal the snapshot's, with no claim of Service ports that moved alone."""
    store = Store(default_cluster(), rng=random.Random(3))
    store.apply([_service('a', 'default', 'a'), _service('b', 'default', 'b'),
                 _pod('p', 'default', 'b')])
    builder = StateBuilder(store.cluster)
    builder.apply(store.changes(0))
    builder.state()
    version = store.rv
    pod = store.get('Pod', 'default', 'p')
    store.update_pod_status('default', 'p', pod['metadata']['uid'], {
        'phase': 'Running', 'podIP': '192.168.2.7',
        'conditions': [{'type': 'Ready', 'status': 'True'}]})
    builder.apply(store.changes(version, epoch=store.epoch))

    def fails(*args):
        raise RuntimeError('a policy the pipeline cannot read')
    with monkeypatch.context() as patched:
        patched.setattr(ClusterState, '_assemble', classmethod(fails))
        with pytest.raises(RuntimeError):
            builder.state()
    again = builder.state()
    _same(again, ClusterState.from_objects(store.cluster, store.snapshot()[1]))
    assert again.moves is None
    assert [e.ip for sp in again.service_ports if sp.service == 'b'
            for e in sp.endpoints] == ['192.168.2.7']


def test_another_store_gives_everything_again():
    store = Store(default_cluster())
    body = store.changes(5, epoch='an-earlier-daemon')
    assert body['full'] and body['objects']['Node']


def test_a_change_the_dataplane_does_not_read_leaves_the_same_dataplane():
    from controller.state import same_dataplane
    store = Store(default_cluster(), rng=random.Random(7))
    store.apply([_service('a', 'default', 'a'), _pod('p', 'default', 'a')])
    builder = StateBuilder(store.cluster)
    builder.apply(store.changes(0))
    first = builder.state()
    version = store.rv
    pod = store.get('Pod', 'default', 'p')          # scheduled, no address yet
    store.update_pod_status('default', 'p', pod['metadata']['uid'], {
        'phase': 'Pending', 'conditions': [{'type': 'PodScheduled', 'status': 'True'}]})
    builder.apply(store.changes(version, epoch=store.epoch))
    second = builder.state()
    assert same_dataplane(first, second)
    version = store.rv
    store.update_pod_status('default', 'p', pod['metadata']['uid'], {
        'phase': 'Running', 'podIP': '192.168.2.8',
        'conditions': [{'type': 'Ready', 'status': 'True'}]})
    builder.apply(store.changes(version, epoch=store.epoch))
    assert not same_dataplane(second, builder.state())
    assert not same_dataplane(None, second)


def test_the_changes_the_api_sends_are_the_changes_encoded():
    import json
    store = Store(default_cluster(), rng=random.Random(8))
    store.apply([_service('a', 'default', 'a'), _pod('p', 'default', 'a')])
    version = store.rv
    store.apply([_service('b', 'default', 'a')])
    assert json.loads(store.changes_json(version, store.epoch)) == store.changes(
        version, store.epoch)
    assert json.loads(store.changes_json(0)) == store.changes(0)


def test_the_change_stream_sends_the_endpoints_and_ports_of_services_alike_once():
    """A pod behind many Services changes a slice of each: the change stream sends its
    endpoints and their list of ports once (``for_proxy``), and ``with_endpoints``
    gives the slices back as the store holds them, sharing one list of each."""
    import json
    from services.store_reads import with_endpoints
    store = Store(default_cluster(), rng=random.Random(3))
    store.apply([_pod(f'p{i}', 'default', 'a') for i in range(3)] +
                [_service(f's{i}', 'default', 'a') for i in range(40)])
    version = store.rv
    pod = store.get('Pod', 'default', 'p0')
    store.update_pod_status('default', 'p0', pod['metadata']['uid'], {
        'phase': 'Running', 'podIP': '10.244.1.7',
        'conditions': [{'type': 'Ready', 'status': 'True'}]})
    body = json.loads(store.changes_json(version, store.epoch))
    sent = body['objects']['EndpointSlice']
    assert len(sent) == 40 and len(body['portLists']) == 1 and len(body['endpoints']) == 1
    assert {json.dumps(s['ports']) for s in sent} == {'0'}
    slices = with_endpoints(body)['objects']['EndpointSlice']
    assert len({id(s['ports']) for s in slices}) == 1
    assert len({id(s['endpoints']) for s in slices}) == 1
    for got in slices:
        held = store.get('EndpointSlice', 'default', got['metadata']['name'])
        assert got['ports'] == held['ports']
        assert got['endpoints'] == [{k: v for k, v in e.items() if k != 'targetRef'}
                                    for e in held['endpoints']]


def test_the_lab_network_and_the_speakers_announcements_follow_by_deltas():
    """A cut cable (who is cut off) and a MetalLB speaker's announcements reach the
    controller's state by deltas; a new announcement alone changes the dataplane (the
    node's ARP answers), a cut alone does not (the node keeps its flows)."""
    from controller.state import same_dataplane
    store = Store(default_cluster(), rng=random.Random(9))
    builder = StateBuilder(store.cluster)
    builder.apply(store.changes(0))
    first, version = builder.state(), store.rv
    store.set_lab_network(['worker-2'], ['worker-2'])
    builder.apply(store.changes(version, epoch=store.epoch))
    cut, version = builder.state(), store.rv
    assert cut.cut_off == {'worker-2'} and same_dataplane(first, cut)
    store.set_l2_announcements('worker-1', {'10.128.0.200': ('default', 'web')})
    builder.apply(store.changes(version, epoch=store.epoch))
    announced = builder.state()
    assert announced.announced == {'worker-1': {'10.128.0.200': 'default/web'}}
    assert not same_dataplane(cut, announced)
    _, objects = store.snapshot()
    full = ClusterState.from_objects(store.cluster, objects)
    assert (full.cut_off, full.announced) == (announced.cut_off, announced.announced)
