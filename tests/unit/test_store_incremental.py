"""The store's EndpointSlice controller works incrementally (issue 20): after each change
it recomputes only the Services the change concerns. Random change sequences (Services
created, re-selected, deleted; pods created, relabelled, readied, terminated and gone;
a managed slice deleted by hand; a namespace deleted) must leave exactly the slices a
full recompute from scratch gives, Service by Service; and a change that concerns no
Service leaves every slice untouched."""

import random

import pytest

from services.cluster import default_cluster
from services.controllers.endpointslices import compute_endpoint_slices
from services.store import Store

APPS = ('a', 'b', 'c')
NAMESPACES = ('default', 'team')


def _service(name, ns, app, port=80, target=8080):
    return {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': name, 'namespace': ns},
            'spec': {'selector': {'app': app},
                     'ports': [{'port': port, 'targetPort': target}]}}


def _pod(name, ns, app):
    return {'apiVersion': 'v1', 'kind': 'Pod',
            'metadata': {'name': name, 'namespace': ns, 'labels': {'app': app}},
            'spec': {'containers': [{'name': 'c', 'image': 'registry.k8s.io/pause:3.10',
                                     'ports': [{'containerPort': 8080}]}]}}


def _content(slices):
    """What a Service's managed slices say, names aside."""
    return sorted((repr(s['ports']), repr(s['endpoints'])) for s in slices)


def full_recompute(store):
    """Service -> the content of the slices a controller starting afresh would write."""
    want = {}
    for svc in store.list('Service'):
        ns, name = svc['metadata']['namespace'], svc['metadata']['name']
        want[(ns, name)] = _content(compute_endpoint_slices(
            svc, store.list('Pod', ns), [], rng=random.Random(0)))
    return want


def stored(store):
    got = {}
    for sl in store.list('EndpointSlice'):
        labels = sl['metadata'].get('labels') or {}
        if labels.get('endpointslice.kubernetes.io/managed-by'):
            key = (sl['metadata']['namespace'], labels['kubernetes.io/service-name'])
            got.setdefault(key, []).append(sl)
    services = {(s['metadata']['namespace'], s['metadata']['name'])
                for s in store.list('Service')}
    assert set(got) <= services, 'slices of a Service that is gone'
    return {key: _content(got.get(key, [])) for key in services}


def random_step(store, rng, serial):
    ns = rng.choice(NAMESPACES)
    live = [p for p in store.list('Pod', ns) if not p['metadata'].get('deletionTimestamp')]
    services = store.list('Service', ns)
    op = rng.choice(['service', 'reselect', 'delete-service', 'pod', 'pod', 'ready',
                     'ready', 'unready', 'relabel', 'terminate', 'gone', 'delete-slice',
                     'retarget'])
    if op == 'service':
        store.apply([_service(f's{serial}', ns, rng.choice(APPS))])
    elif op == 'reselect' and services:
        svc = rng.choice(services)
        store.apply([_service(svc['metadata']['name'], ns, rng.choice(APPS))])
    elif op == 'retarget' and services:
        svc = rng.choice(services)
        store.apply([_service(svc['metadata']['name'], ns, svc['spec']['selector']['app'],
                              target=rng.choice([8080, 9090]))])
    elif op == 'delete-service' and services:
        store.delete('Service', ns, rng.choice(services)['metadata']['name'])
    elif op == 'pod':
        store.apply([_pod(f'p{serial}', ns, rng.choice(APPS))])
    elif op in ('ready', 'unready') and live:
        pod = rng.choice(live)
        ip = pod['status'].get('podIP') or f'192.168.2.{serial % 250 + 2}'
        store.update_pod_status(ns, pod['metadata']['name'], pod['metadata']['uid'], {
            'phase': 'Running', 'podIP': ip,
            'conditions': [{'type': 'Ready', 'status': 'True' if op == 'ready' else 'False'}]})
    elif op == 'relabel' and live:
        pod = rng.choice(live)
        store.label('Pod', ns, pod['metadata']['name'], {'app': rng.choice(APPS)}, [], True)
    elif op == 'terminate' and live:
        store.delete('Pod', ns, rng.choice(live)['metadata']['name'])
    elif op == 'gone':
        dying = [p for p in store.list('Pod', ns) if p['metadata'].get('deletionTimestamp')]
        if dying:
            pod = rng.choice(dying)
            store.pod_gone(ns, pod['metadata']['name'], pod['metadata']['uid'])
    elif op == 'delete-slice':
        slices = store.list('EndpointSlice', ns)
        if slices:
            store.delete('EndpointSlice', ns, rng.choice(slices)['metadata']['name'])


@pytest.mark.parametrize('seed', range(6))
def test_incremental_slices_equal_a_full_recompute(seed):
    rng = random.Random(seed)
    store = Store(default_cluster(), rng=random.Random(seed))
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'team'}}])
    for serial in range(150):
        random_step(store, rng, serial)
        assert stored(store) == full_recompute(store), f'after step {serial}'


def test_a_change_no_service_selects_touches_no_slice():
    store = Store(default_cluster(), rng=random.Random(1))
    store.apply([_service(f's{i}', 'default', 'a') for i in range(20)]
                + [_pod('p1', 'default', 'a'), _pod('other', 'default', 'z')])
    before = {s['metadata']['name']: s['metadata']['resourceVersion']
              for s in store.list('EndpointSlice')}
    other = store.get('Pod', 'default', 'other')
    store.update_pod_status('default', 'other', other['metadata']['uid'], {
        'phase': 'Running', 'podIP': '192.168.2.9',
        'conditions': [{'type': 'Ready', 'status': 'True'}]})
    after = {s['metadata']['name']: s['metadata']['resourceVersion']
             for s in store.list('EndpointSlice')}
    assert after == before


def test_changed_since_lists_puts_and_removals_once_each():
    store = Store(default_cluster(), rng=random.Random(2))
    version = store.rv
    store.apply([_service('web', 'default', 'a'), _pod('p1', 'default', 'a')])
    store.delete('Pod', 'default', 'p1', 0)
    store.pod_gone('default', 'p1', store.get('Pod', 'default', 'p1')['metadata']['uid'])
    keys = store.objects.changed_since(version)
    assert len(keys) == len(set(keys))
    assert ('Service', 'default', 'web') in keys and ('Pod', 'default', 'p1') in keys
    assert ('Pod', 'default', 'p1') not in store.objects      # a tombstone
    assert store.objects.changed_since(store.rv) == []


@pytest.mark.parametrize('seed', range(3))
def test_the_changes_with_a_label_are_the_changes_and_their_labels(seed):
    """``changed_with_label``, which the DNS writer, the L7 controller and the cloud's
    health checks share: each changed key with its object's label (None once gone),
    one answer for every reader of the same changes."""
    rng = random.Random(seed)
    store = Store(default_cluster(), rng=random.Random(seed))
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'team'}}])
    label = 'kubernetes.io/service-name'
    version, labelled = store.rv, 0
    for serial in range(30):
        random_step(store, rng, serial)
        answer = store.changed_with_label(version, label)
        labelled += sum(1 for _, value in answer if value)
        assert answer == [(key, store.label_of(key, label))
                          for key in store.changed_since(version)]
        assert store.changed_with_label(version, label) is answer
        if serial % 7 == 6:
            version = store.rv
    assert labelled, 'no slice changed'
    assert store.changed_with_label(store.rv + 1, label) is None


def test_a_view_equals_a_list_and_copies_only_what_changed():
    store = Store(default_cluster(), rng=random.Random(4))
    store.apply([_service('web', 'default', 'a'), _service('db', 'default', 'b'),
                 _pod('p1', 'default', 'a')])
    for kind in ('Service', 'EndpointSlice', 'Pod'):
        assert store.view(kind) == store.list(kind)
    before = {s['metadata']['name']: s for s in store.view('Service')}
    store.apply([_service('web', 'default', 'b')])
    after = {s['metadata']['name']: s for s in store.view('Service')}
    assert after['db'] is before['db']                       # unchanged: the same copy
    assert after['web'] is not before['web']
    assert after['web']['spec']['selector'] == {'app': 'b'}
    store.delete('Service', 'default', 'db')
    assert [s['metadata']['name'] for s in store.view('Service')] == ['web']
    assert store.view('Service', 'other') == []


def test_the_version_of_a_kind_moves_only_when_one_of_its_objects_changes():
    store = Store(default_cluster(), rng=random.Random(6))
    store.apply([_service('web', 'default', 'a')])
    services = store.version_of(['Service'])
    store.apply([_pod('p1', 'default', 'z')])          # no Service selects it
    assert store.version_of(['Service', 'EndpointSlice']) == services
    assert store.version_of(['Pod']) == store.rv
    store.apply([_service('web', 'default', 'z')])
    assert store.version_of(['Service']) == store.rv > services


def test_forgotten_removals_make_a_follower_that_far_behind_read_everything(monkeypatch):
    from services import objectindex
    monkeypatch.setattr(objectindex, 'MAX_TOMBSTONES', 4)
    store = Store(default_cluster(), rng=random.Random(9))
    store.apply([_service('keep', 'default', 'a')])
    behind = store.rv
    for i in range(6):
        store.apply([_service(f'gone{i}', 'default', 'a')])
        store.delete('Service', 'default', f'gone{i}')
    assert store.objects.floor > behind
    assert store.changes(behind, epoch=store.epoch)['full']
    recent = store.rv
    store.apply([_service('new', 'default', 'a')])
    store.delete('Service', 'default', 'new')
    body = store.changes(recent, epoch=store.epoch)
    assert not body['full'] and ['Service', 'default', 'new'] in body['deleted']


@pytest.mark.parametrize('seed', range(3))
def test_the_saved_text_is_the_saved_document_encoded(seed):
    """The daemon writes ``saved_json`` (each object's text kept while it stays): always
    ``json.dumps`` of ``saved``, through random changes (issue 20)."""
    import json
    rng = random.Random(seed)
    store = Store(default_cluster(), rng=random.Random(seed))
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'team'}}])
    cluster_doc = {'kind': 'Cluster', 'metadata': {'name': 'x'}, 'objects': ['not these']}
    for serial in range(60):
        random_step(store, rng, serial)
        assert store.saved_json(cluster_doc) == json.dumps(store.saved(cluster_doc),
                                                           sort_keys=True)


@pytest.mark.parametrize('seed', range(3))
def test_the_saver_skips_a_change_only_when_the_saved_text_stays(seed):
    """``saved_since`` says False (the daemon's saver then writes nothing) exactly when
    the saved text is the one of the last save: a pod's status and managed slices are
    not kept, a Service's change is."""
    rng = random.Random(seed)
    store = Store(default_cluster(), rng=random.Random(seed))
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'team'}}])
    cluster_doc = {'kind': 'Cluster', 'metadata': {'name': 'x'}}
    text, version, skipped = store.saved_json(cluster_doc), store.rv, 0
    for serial in range(80):
        random_step(store, rng, serial)
        if serial % 3 == 0:     # a pod's status alone: nothing kept changes
            pods = store.list('Pod')
            if pods:
                pod = rng.choice(pods)
                store.update_pod_status(pod['metadata'].get('namespace', 'default'),
                                        pod['metadata']['name'], pod['metadata']['uid'],
                                        {'phase': 'Running', 'podIP': f'10.244.1.{serial + 2}'})
        changed = store.saved_since(version, cluster_doc)
        now = store.saved_json(cluster_doc)
        if changed is not None:
            assert changed == (now != text), serial
            skipped += not changed
        text, version = now, store.rv
    assert skipped, 'no step left the saved text as it was'
