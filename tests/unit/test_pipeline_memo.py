"""The node bridges' per-Service memo (controller/pipeline/memo.py) changes how fast the
flows are computed, never which (issue 20): on random change sequences followed by
deltas (``StateBuilder``), every switch's desired flows, groups and meters equal the
ones computed afresh; and a change of one Service among many recomputes only its part."""

import random

import pytest

from controller import pipeline
from controller.pipeline import memo, node_switch
from controller.state import StateBuilder
from services import wiring
from services.cluster import default_cluster
from services.store import Store
from tests.unit.test_store_incremental import _pod, _service, random_step

STICKY_AND_LOCAL = [
    {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': 'sticky', 'namespace': ns},
     'spec': {'selector': {'app': 'a'}, 'sessionAffinity': 'ClientIP', 'type': 'NodePort',
              'externalTrafficPolicy': 'Local',
              'ports': [{'port': 81, 'targetPort': 8080}]}} for ns in ('default', 'team')]


def _dpids(cluster):
    return [wiring.node_dpid(n) for n in cluster.nodes] + [
        wiring.EDGE_DPID, wiring.UNDERLAY_DPID, wiring.EXTERNAL_DPID]


def _config(config):
    return ([f.to_ofctl() for f in config.flows], [g.to_ofctl() for g in config.groups],
            config.meters)


@pytest.mark.parametrize('seed', range(4))
def test_memoized_flows_equal_flows_computed_afresh(seed):
    rng = random.Random(seed)
    store = Store(default_cluster(), rng=random.Random(seed))
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'team'}}]
                + STICKY_AND_LOCAL)
    builder, version = StateBuilder(store.cluster), 0
    for serial in range(80):
        random_step(store, rng, serial)
        # The kubelet: any pod the step left without an address gets one.
        for pod in store.list('Pod'):
            if not pod['status'].get('podIP') and not pod['metadata'].get(
                    'deletionTimestamp'):
                store.update_pod_status(
                    pod['metadata']['namespace'], pod['metadata']['name'],
                    pod['metadata']['uid'], {'phase': 'Running',
                                             'podIP': f'192.168.2.{serial % 200 + 20}',
                                             'conditions': [{'type': 'Ready',
                                                             'status': 'True'}]})
        builder.apply(store.changes(version, epoch=store.epoch if version else ''))
        version = store.rv
        state = builder.state()
        for dpid in _dpids(store.cluster):
            got = _config(pipeline.desired(state, dpid))
            with memo.bypassed():
                want = _config(pipeline.desired(state, dpid))
            assert got == want, f'switch {dpid:#x} after step {serial}'


def test_one_service_changed_among_many_recomputes_only_its_part(monkeypatch):
    store = Store(default_cluster(), rng=random.Random(5))
    store.apply([_service(f's{i}', 'default', 'a') for i in range(50)]
                + [_pod('p', 'default', 'a')])
    pod = store.get('Pod', 'default', 'p')
    store.update_pod_status('default', 'p', pod['metadata']['uid'], {
        'phase': 'Running', 'podIP': '192.168.2.5',
        'conditions': [{'type': 'Ready', 'status': 'True'}]})
    builder = StateBuilder(store.cluster)
    builder.apply(store.changes(0))
    node = wiring.node_dpid(store.cluster.nodes[1])
    pipeline.desired(builder.state(), node)
    version = store.rv
    store.apply([_service('s7', 'default', 'a', port=81)])      # its flows change
    builder.apply(store.changes(version, epoch=store.epoch))
    computed = []
    real = node_switch.service_part
    monkeypatch.setattr(node_switch, 'service_part',
                        lambda ctx, fronts: computed.append(fronts[0].sp.service)
                        or real(ctx, fronts))
    config = pipeline.desired(builder.state(), node)
    assert computed == ['s7']
    with memo.bypassed():
        assert _config(config) == _config(pipeline.desired(builder.state(), node))
