"""The cluster store (services/store.py): the lab's API server and the controllers that
run after every change, driven as kubectl and the kubelets drive them.

``apply`` is all-or-nothing; the Deployment controller, the scheduler and the
EndpointSlice controller settle inside each change; ``update_pod_status`` and
``pod_gone`` play the kubelet (a pod's IP, its readiness, the end of its termination).
A fake clock makes every creationTimestamp distinct, so "newest" means something.
"""

import datetime
import re
import threading
import time

import pytest

from services import naming
from services.cluster import default_cluster, load_cluster
from services.errors import ApplyError, KubelabError, NotFound
from services.store import CONTROL_PLANE_TAINT, Store

AGNHOST = 'registry.k8s.io/e2e-test-images/agnhost:2.39'
SAFE = f'[{naming.SAFE_ALPHABET}]'
EPOCH = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc).timestamp()


# ---------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """Every timestamp the store takes is one second after the previous one."""
    real = naming.now_rfc3339
    ticks = [EPOCH]

    def now(moment=None):
        if moment is not None:
            return real(moment)
        ticks[0] += 1
        return real(ticks[0])
    monkeypatch.setattr(naming, 'now_rfc3339', now)


@pytest.fixture
def store():
    return Store(default_cluster())


# ---------------------------------------------------------------- objects
def container(http_port=8080):
    return {'name': 'web', 'image': AGNHOST,
            'args': ['netexec', f'--http-port={http_port}'],
            'ports': [{'containerPort': http_port}]}


def pod(name, namespace='default', labels=None, **spec):
    return {'apiVersion': 'v1', 'kind': 'Pod',
            'metadata': {'name': name, 'namespace': namespace,
                         'labels': labels or {'app': 'web'}},
            'spec': {'containers': [container()], **spec}}


def deployment(name='web', replicas=3, http_port=8080, namespace='default'):
    return {'apiVersion': 'apps/v1', 'kind': 'Deployment',
            'metadata': {'name': name, 'namespace': namespace},
            'spec': {'replicas': replicas, 'selector': {'matchLabels': {'app': name}},
                     'template': {'metadata': {'labels': {'app': name}},
                                  'spec': {'containers': [container(http_port)]}}}}


def service(name='web', cluster_ip=None, namespace='default', app=None):
    spec = {'selector': {'app': app or name}, 'ports': [{'port': 80, 'targetPort': 8080}]}
    if cluster_ip is not None:
        spec['clusterIP'] = cluster_ip
    return {'apiVersion': 'v1', 'kind': 'Service',
            'metadata': {'name': name, 'namespace': namespace}, 'spec': spec}


def namespace(name):
    return {'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': name}}


def names(store, kind, namespace_=None):
    return [o['metadata']['name'] for o in store.list(kind, namespace_)]


def rejected(store, docs):
    """The (path, message) of every problem of an apply that must fail."""
    with pytest.raises(ApplyError) as info:
        store.apply(docs)
    return [(e.path, e.message) for e in info.value.errors]


# ---------------------------------------------------------------- the kubelet's side
def start(store, name, ip, ready=True, namespace_='default'):
    """The kubelet started pod ``name`` with address ``ip`` (Ready or not)."""
    obj = store.get('Pod', namespace_, name)
    conds = [c for c in obj['status'].get('conditions') or [] if c['type'] != 'Ready']
    conds.append({'type': 'Ready', 'status': 'True' if ready else 'False'})
    store.update_pod_status(namespace_, name, obj['metadata']['uid'],
                            {'phase': 'Running', 'podIP': ip, 'conditions': conds})


def gone(store, name, namespace_='default'):
    """The kubelet finished terminating pod ``name``."""
    store.pod_gone(namespace_, name, store.get('Pod', namespace_, name)['metadata']['uid'])


def pods(store, namespace_='default', live=None):
    """Pods oldest first; ``live``: True only those not terminating, False only those."""
    out = sorted(store.list('Pod', namespace_),
                 key=lambda p: p['metadata']['creationTimestamp'])
    if live is not None:
        out = [p for p in out if bool(p['metadata'].get('deletionTimestamp')) != live]
    return out


def endpoints(store, svc='web', namespace_='default'):
    """{pod name: conditions} of every endpoint of the Service's managed slices."""
    out = {}
    for sl in store.list('EndpointSlice', namespace_):
        if sl['metadata']['labels'].get('kubernetes.io/service-name') == svc:
            for ep in sl.get('endpoints') or []:
                out[ep['targetRef']['name']] = ep['conditions']
    return out


# ---------------------------------------------------------------- all or nothing
def test_one_invalid_object_rejects_the_whole_apply(store):
    rv = store.snapshot()[0]
    bad = pod('broken')
    bad['spec']['containers'][0]['image'] = 'nginx'             # not an emulated image
    problems = rejected(store, [service(cluster_ip='10.96.0.50'), deployment(), bad])
    assert [path for path, _ in problems] == ['spec.containers[0].image']
    assert names(store, 'Service', 'default') == names(store, 'Deployment') == []
    assert names(store, 'Pod') == names(store, 'EndpointSlice') == []
    assert store.snapshot()[0] == rv                            # nobody was woken


def test_a_rejected_apply_takes_no_cluster_ip(store):
    before = store.cluster_ips.allocated()
    bad = pod('broken')
    del bad['spec']['containers']
    rejected(store, [service('a', cluster_ip='10.96.0.50'), service('b'), bad])
    assert store.cluster_ips.allocated() == before
    # The address the rejected apply asked for is still free for the next one.
    store.apply([service('a', cluster_ip='10.96.0.50')])
    assert store.get('Service', 'default', 'a')['spec']['clusterIP'] == '10.96.0.50'


def test_every_problem_of_an_apply_is_reported_at_once(store):
    first, second = pod('one'), pod('two')
    first['spec']['containers'][0]['image'] = 'nginx'
    second['spec']['restartPolicy'] = 'Sometimes'
    problems = rejected(store, [first, second])
    assert [path for path, _ in problems] == ['spec.containers[0].image',
                                              'spec.restartPolicy']


def test_a_dry_run_changes_nothing(store):
    out = store.apply([deployment(), service()], dry_run=True)
    assert out['results'] == [['deployment.apps/web', 'validated'],
                              ['service/web', 'validated']]
    assert names(store, 'Deployment') == names(store, 'Pod') == []
    assert store.cluster_ips.allocated() == []


def test_the_same_name_twice_in_one_apply_is_rejected(store):
    problems = rejected(store, [pod('a'), pod('a', labels={'app': 'other'})])
    assert len(problems) == 1
    path, message = problems[0]
    assert path == 'metadata.name' and 'appears twice' in message
    assert names(store, 'Pod') == []


def test_the_same_name_for_two_kinds_is_fine(store):
    out = store.apply([deployment('web'), service('web')])
    assert out['results'] == [['deployment.apps/web', 'created'],
                              ['service/web', 'created']]


# ---------------------------------------------------------------- ClusterIPs
def cluster_ip_error(store, docs):
    with pytest.raises(ApplyError) as info:
        store.apply(docs)
    [error] = info.value.errors
    assert error.path == 'spec.clusterIP'
    assert str(error).startswith(f'{error.ref}: spec.clusterIP: ')   # names the field
    return error


def test_a_cluster_ip_outside_the_service_range_is_rejected(store):
    error = cluster_ip_error(store, [service(cluster_ip='10.200.0.5')])
    assert 'not in the valid range' in error.message and '10.96.0.0/12' in error.message
    assert error.ref == 'Service default/web'


def test_the_kubernetes_cluster_ip_is_taken(store):
    error = cluster_ip_error(store, [service(cluster_ip='10.96.0.1')])
    assert 'already allocated' in error.message


def test_the_cluster_dns_address_goes_to_the_first_service_that_asks(store):
    store.apply([service('dns', cluster_ip='10.96.0.10')])
    assert store.get('Service', 'default', 'dns')['spec']['clusterIP'] == '10.96.0.10'
    error = cluster_ip_error(store, [service('other', cluster_ip='10.96.0.10')])
    assert 'already allocated' in error.message
    store.delete('Service', 'default', 'dns')
    assert store.apply([service('web')])['results']
    assert store.get('Service', 'default', 'web')['spec']['clusterIP'] != '10.96.0.10'


def test_a_cluster_ip_another_service_has_is_rejected(store):
    store.apply([service('a', cluster_ip='10.96.0.50')])
    error = cluster_ip_error(store, [service('b', cluster_ip='10.96.0.50')])
    assert 'already allocated' in error.message and error.ref == 'Service default/b'


def test_two_services_of_one_apply_cannot_share_a_cluster_ip(store):
    error = cluster_ip_error(store, [service('a', cluster_ip='10.96.0.50'),
                                     service('b', cluster_ip='10.96.0.50')])
    assert error.ref == 'Service default/b'
    assert names(store, 'Service', 'default') == []


def test_a_cluster_ip_cannot_change(store):
    store.apply([service(cluster_ip='10.96.0.50')])
    error = cluster_ip_error(store, [service(cluster_ip='10.96.0.51')])
    assert 'field is immutable' in error.message and '10.96.0.50' in error.message
    # Left out, it keeps the one it has.
    store.apply([service()])
    assert store.get('Service', 'default', 'web')['spec']['clusterIP'] == '10.96.0.50'
    assert store.get('Service', 'default', 'web')['metadata']['generation'] == 1


@pytest.mark.parametrize('obj', [service(), pod('a'), deployment()],
                         ids=['Service', 'Pod', 'Deployment'])
def test_applying_the_same_manifest_again_is_unchanged(store, obj):
    store.apply([obj])
    rv = store.snapshot()[0]
    assert store.apply([obj])['results'][0][1] == 'unchanged'
    assert store.snapshot()[0] == rv


def test_an_allocated_cluster_ip_is_in_range_and_kept(store):
    store.apply([service()])
    ip = store.get('Service', 'default', 'web')['spec']['clusterIP']
    assert ip.startswith('10.') and store.cluster_ips.is_allocated(ip)
    assert store.get('Service', 'default', 'web')['spec']['clusterIPs'] == [ip]
    store.apply([service()])
    assert store.get('Service', 'default', 'web')['spec']['clusterIP'] == ip


def test_deleting_a_service_frees_its_cluster_ip(store):
    store.apply([service('a', cluster_ip='10.96.0.50')])
    store.delete('Service', 'default', 'a')
    store.apply([service('b', cluster_ip='10.96.0.50')])
    assert store.get('Service', 'default', 'b')['spec']['clusterIP'] == '10.96.0.50'


# ---------------------------------------------------------------- status
def test_the_status_of_a_created_object_is_the_servers_not_the_creators(store):
    fake = pod('a')
    fake['status'] = {'phase': 'Running', 'podIP': '192.168.2.50',
                      'conditions': [{'type': 'Ready', 'status': 'True'}]}
    svc = service()
    svc['status'] = {'loadBalancer': {'ingress': [{'ip': '198.51.100.7'}]}}
    store.apply([fake, svc])
    got = store.get('Pod', 'default', 'a')['status']
    assert got['phase'] == 'Pending' and 'podIP' not in got
    assert [c['type'] for c in got['conditions']] == ['PodScheduled']
    assert store.get('Service', 'default', 'web')['status'] == {'loadBalancer': {}}
    assert endpoints(store) == {}                  # no IP, not ready: no endpoint


def test_the_status_of_an_applied_update_is_ignored_too(store):
    store.apply([pod('a')])
    start(store, 'a', '192.168.2.10')
    again = pod('a')
    again['status'] = {'phase': 'Failed'}
    store.apply([again])
    assert store.get('Pod', 'default', 'a')['status']['phase'] == 'Running'


# ---------------------------------------------------------------- Deployments
def test_a_deployment_gets_its_replicas_as_pods(store):
    store.apply([deployment(replicas=3)])
    dep = store.get('Deployment', 'default', 'web')
    tpl_hash = naming.pod_template_hash(dep['spec']['template'])
    got = pods(store)
    assert len(got) == 3
    for p in got:
        meta = p['metadata']
        assert re.fullmatch(f'web-{tpl_hash}-{SAFE}{{5}}', meta['name'])
        assert meta['labels'] == {'app': 'web', 'pod-template-hash': tpl_hash}
        [ref] = meta['ownerReferences']
        assert ref == {'apiVersion': 'apps/v1', 'kind': 'ReplicaSet',
                       'name': f'web-{tpl_hash}', 'uid': dep['metadata']['uid'],
                       'controller': True}
        assert p['spec']['containers'] == dep['spec']['template']['spec']['containers']
    assert len({p['metadata']['name'] for p in got}) == 3
    assert dep['status']['replicas'] == dep['status']['updatedReplicas'] == 3
    assert dep['status']['readyReplicas'] == 0


def test_ready_pods_count_in_the_deployment_status(store):
    store.apply([deployment(replicas=2)])
    first, second = (p['metadata']['name'] for p in pods(store))
    start(store, first, '192.168.2.10')
    start(store, second, '192.168.3.10', ready=False)
    status = store.get('Deployment', 'default', 'web')['status']
    assert (status['readyReplicas'], status['availableReplicas']) == (1, 1)


def test_scaling_down_removes_not_ready_pods_first_then_the_newest(store):
    store.apply([deployment(replicas=4)])
    oldest, second, third, newest = (p['metadata']['name'] for p in pods(store))
    start(store, oldest, '192.168.2.10', ready=False)
    for name, ip in ((second, '192.168.3.10'), (third, '192.168.2.11'),
                     (newest, '192.168.3.11')):
        start(store, name, ip)
    store.scale('default', 'web', 2)
    assert [p['metadata']['name'] for p in pods(store, live=False)] == [oldest, newest]
    assert [p['metadata']['name'] for p in pods(store, live=True)] == [second, third]
    # A pod that is terminating is the kubelet's until it is gone; no replacement.
    gone(store, oldest)
    assert len(pods(store, live=True)) == 2


def test_scaling_up_adds_pods(store):
    store.apply([deployment(replicas=1)])
    store.scale('default', 'web', 3)
    assert len(pods(store, live=True)) == 3
    with pytest.raises(KubelabError, match='replicas'):
        store.scale('default', 'web', -1)
    with pytest.raises(NotFound):
        store.scale('default', 'nope', 1)


def test_a_new_template_replaces_the_pods_as_the_new_ones_become_ready(store):
    store.apply([deployment(replicas=2)])
    old = [p['metadata']['name'] for p in pods(store)]
    for name, ip in zip(old, ('192.168.2.10', '192.168.3.10')):
        start(store, name, ip)
    store.apply([deployment(replicas=2, http_port=9090)])       # a template change
    tpl = store.get('Deployment', 'default', 'web')['spec']['template']
    # The default strategy (25%/25% of 2: one pod more, none fewer) adds one new pod.
    [first] = [p['metadata']['name'] for p in pods(store)
               if p['metadata']['name'] not in old]
    assert first.startswith(f'web-{naming.pod_template_hash(tpl)}-')
    assert not first.startswith(old[0].rsplit('-', 1)[0])
    # Nothing old goes before something new is ready.
    assert [p['metadata']['name'] for p in pods(store, live=False)] == []
    start(store, first, '192.168.2.11')
    assert len([p for p in pods(store, live=False)
                if p['metadata']['name'] in old]) == 1
    [second] = [p['metadata']['name'] for p in pods(store, live=True)
                if p['metadata']['name'] not in old + [first]]
    assert second.startswith(f'web-{naming.pod_template_hash(tpl)}-')
    start(store, second, '192.168.3.11')
    assert sorted(p['metadata']['name'] for p in pods(store, live=False)) == sorted(old)
    status = store.get('Deployment', 'default', 'web')['status']
    assert (status['replicas'], status['updatedReplicas'], status['readyReplicas']) == \
        (2, 2, 2)
    assert status['observedGeneration'] == 2


def test_deleting_a_deployment_terminates_its_pods(store):
    store.apply([deployment(replicas=2)])
    store.delete('Deployment', 'default', 'web')
    assert names(store, 'Deployment') == []
    assert len(pods(store, live=True)) == 0 and len(pods(store, live=False)) == 2


# ---------------------------------------------------------------- the scheduler
def test_pods_avoid_the_tainted_control_plane(store):
    store.apply([pod(f'p{i}') for i in range(6)])
    nodes = [p['spec']['nodeName'] for p in pods(store)]
    assert sorted(nodes) == ['worker-1'] * 3 + ['worker-2'] * 3
    for p in pods(store):
        assert {'type': 'PodScheduled', 'status': 'True'} in p['status']['conditions']


def test_a_deployment_spreads_over_the_nodes_whatever_else_runs_there(store):
    """kube-scheduler's default topology spreading: three replicas on two workers go
    2 + 1 even when one worker already runs many other pods."""
    store.apply([pod(f'other{i}', nodeName='worker-1') for i in range(5)])
    store.apply([deployment('web', replicas=3)])
    on = sorted(p['spec']['nodeName'] for p in pods(store)
                if p['metadata']['name'].startswith('web-'))
    assert on == ['worker-1', 'worker-2', 'worker-2']


@pytest.mark.parametrize('toleration', [
    dict(CONTROL_PLANE_TAINT),
    {'key': CONTROL_PLANE_TAINT['key'], 'operator': 'Exists'},
    {'operator': 'Exists'},
], ids=['the taint', 'its key', 'everything'])
def test_a_pod_that_tolerates_the_taint_may_go_to_the_control_plane(store, toleration):
    store.apply([pod(f'p{i}', tolerations=[toleration]) for i in range(3)])
    assert sorted(p['spec']['nodeName'] for p in pods(store)) == [
        'control-plane', 'worker-1', 'worker-2']


def test_applying_a_running_pod_again_keeps_it_on_its_node(store):
    store.apply([pod('a'), pod('b'), pod('c')])       # a, c: worker-1; b: worker-2
    assert store.get('Pod', 'default', 'a')['spec']['nodeName'] == 'worker-1'
    start(store, 'a', '192.168.2.10')
    store.delete('Pod', 'default', 'b')
    gone(store, 'b')                                            # worker-2 is empty now
    store.apply([pod('a')])
    got = store.get('Pod', 'default', 'a')
    assert (got['spec']['nodeName'], got['metadata']['generation']) == ('worker-1', 1)


def test_a_pod_with_a_node_name_stays_on_that_node(store):
    store.apply([pod('pinned', nodeName='control-plane')])
    assert store.get('Pod', 'default', 'pinned')['spec']['nodeName'] == 'control-plane'


def test_a_pod_no_node_accepts_is_unschedulable():
    alone = Store(load_cluster('nodes: [{name: control-plane, role: control-plane}]\n',
                               'cluster.yaml'))
    alone.apply([pod('a')])
    got = alone.get('Pod', 'default', 'a')
    assert 'nodeName' not in got['spec']
    [cond] = got['status']['conditions']
    assert (cond['type'], cond['status'], cond['reason']) == ('PodScheduled', 'False',
                                                              'Unschedulable')
    assert cond['message'] == ('0/1 nodes are available: 1 node(s) had untolerated taint '
                               '{node-role.kubernetes.io/control-plane: }.')


def host_port_pod(name, port=80, **spec):
    p = pod(name, **spec)
    p['spec']['containers'][0]['ports'] = [{'containerPort': 8080, 'hostPort': port}]
    return p


def test_pods_with_one_host_port_go_to_different_nodes_and_the_third_waits(store):
    store.apply([host_port_pod('a'), host_port_pod('b'), host_port_pod('c'),
                 host_port_pod('d', port=81)])
    nodes = {n: store.get('Pod', 'default', n)['spec'].get('nodeName') for n in 'abcd'}
    assert {nodes['a'], nodes['b']} == {'worker-1', 'worker-2'}
    assert nodes['c'] is None and nodes['d'] is not None
    [cond] = store.get('Pod', 'default', 'c')['status']['conditions']
    assert cond['message'] == (
        '0/3 nodes are available: 1 node(s) had untolerated taint '
        "{node-role.kubernetes.io/control-plane: }, 2 node(s) didn't have free ports for "
        'the requested pod ports.')
    uid = store.get('Pod', 'default', 'a')['metadata']['uid']
    store.delete('Pod', 'default', 'a')
    store.pod_gone('default', 'a', uid)          # the kubelet saw it stop
    store.tick()
    assert store.get('Pod', 'default', 'c')['spec'].get('nodeName') == nodes['a']


def test_node_selector_picks_the_labelled_node(store):
    store.apply([pod('sel', nodeSelector={'kubernetes.io/hostname': 'worker-2'}),
                 pod('none', nodeSelector={'disk': 'ssd'})])
    assert store.get('Pod', 'default', 'sel')['spec']['nodeName'] == 'worker-2'
    [cond] = store.get('Pod', 'default', 'none')['status']['conditions']
    assert "2 node(s) didn't match Pod's node affinity/selector" in cond['message']


# ---------------------------------------------------------------- EndpointSlices
def test_endpoint_slices_follow_readiness_and_deletion(store):
    store.apply([deployment(replicas=2), service()])
    a, b = (p['metadata']['name'] for p in pods(store))
    assert endpoints(store) == {}                    # no IPs yet: an empty slice
    assert len(store.list('EndpointSlice', 'default')) == 1
    start(store, a, '192.168.2.10', ready=False)
    start(store, b, '192.168.3.10')
    assert endpoints(store) == {
        a: {'ready': False, 'serving': False, 'terminating': False},
        b: {'ready': True, 'serving': True, 'terminating': False}}
    start(store, a, '192.168.2.10')
    assert endpoints(store)[a] == {'ready': True, 'serving': True, 'terminating': False}
    # Deleted: terminating, no longer ready, still serving as before.
    store.delete('Pod', 'default', a)
    assert endpoints(store)[a] == {'ready': False, 'serving': True, 'terminating': True}
    start(store, a, '192.168.2.10', ready=False)     # its readiness probe fails now
    assert endpoints(store)[a] == {'ready': False, 'serving': False, 'terminating': True}
    gone(store, a)
    assert set(endpoints(store)) == {b}              # its replacement has no IP yet
    assert len(pods(store, live=True)) == 2


def test_an_endpoint_carries_its_address_port_and_node(store):
    store.apply([pod('a'), service()])
    start(store, 'a', '192.168.2.10')
    [sl] = store.list('EndpointSlice', 'default')
    assert sl['metadata']['labels']['kubernetes.io/service-name'] == 'web'
    assert sl['ports'] == [{'name': '', 'port': 8080, 'protocol': 'TCP'}]
    [ep] = sl['endpoints']
    assert ep['addresses'] == ['192.168.2.10']
    assert ep['nodeName'] == store.get('Pod', 'default', 'a')['spec']['nodeName']
    assert ep['targetRef']['name'] == 'a'


def test_deleting_the_service_deletes_its_slices(store):
    store.apply([pod('a'), service()])
    store.delete('Service', 'default', 'web')
    assert store.list('EndpointSlice', 'default') == []


# ---------------------------------------------------------------- namespaces
def test_deleting_a_namespace_deletes_what_is_in_it(store):
    store.apply([namespace('dev')])
    store.apply([deployment(namespace='dev', replicas=2),
                 service(namespace='dev', cluster_ip='10.96.0.50'),
                 pod('lonely', namespace='dev', labels={'app': 'lonely'})])
    store.apply([deployment(replicas=1)])                       # in default: untouched
    for p in pods(store, 'dev'):
        start(store, p['metadata']['name'], '192.168.2.20', namespace_='dev')
    assert store.list('EndpointSlice', 'dev')
    store.delete('Namespace', None, 'dev')
    assert 'dev' not in names(store, 'Namespace')
    for kind in ('Deployment', 'Service', 'EndpointSlice'):
        assert store.list(kind, 'dev') == []
    assert not store.cluster_ips.is_allocated('10.96.0.50')
    # Its pods terminate, then the kubelets finish them.
    assert pods(store, 'dev', live=True) == []
    for p in pods(store, 'dev'):
        gone(store, p['metadata']['name'], namespace_='dev')
    assert store.list('Pod', 'dev') == []
    assert len(pods(store, 'default', live=True)) == 1
    assert names(store, 'Deployment', 'default') == ['web']


@pytest.mark.parametrize('name', ['default', 'kube-system'])
def test_the_builtin_namespaces_cannot_be_deleted(store, name):
    with pytest.raises(KubelabError, match='cannot be deleted'):
        store.delete('Namespace', None, name)


def test_an_object_in_a_missing_namespace_is_rejected(store):
    [(path, message)] = rejected(store, [pod('a', namespace='dev')])
    assert path == 'metadata.namespace'
    assert 'namespace "dev" not found' in message and 'default' in message


def test_a_namespace_and_its_objects_in_one_apply(store):
    out = store.apply([namespace('dev'), pod('a', namespace='dev')])
    assert out['results'] == [['namespace/dev', 'created'], ['pod/a', 'created']]


# ---------------------------------------------------------------- watching
def test_a_snapshot_of_a_newer_version_returns_at_once(store):
    rv, objs = store.snapshot()
    store.apply([pod('a')])
    begun = time.monotonic()
    newer, objs = store.snapshot(rv, timeout=5)
    assert time.monotonic() - begun < 1
    assert newer > rv
    assert [o['metadata']['name'] for o in objs['Pod']] == ['a']
    assert {'Node', 'Namespace', 'Pod'} <= objs.keys()


def test_a_snapshot_waits_for_a_change(store):
    rv, _ = store.snapshot()
    later = threading.Timer(0.05, store.apply, args=([pod('a')],))
    later.start()
    begun = time.monotonic()
    newer, objs = store.snapshot(rv, timeout=5)
    later.join()
    assert 0.03 < time.monotonic() - begun < 1
    assert newer == rv + 1 and [o['metadata']['name'] for o in objs['Pod']] == ['a']


def test_a_new_version_goes_to_a_waiting_change_stream_before_the_followers(store):
    """The daemon's followers (DNS, L7, kubelets, cloud) share the interpreter with
    kube-proxy's change stream: a follower woken by a version returns from ``wait``
    only once the stream waiting for it has its answer."""
    rv = store.rv
    order = []

    def stream():
        store._changes(rv, store.epoch, 5, lambda doc: order.append(
            ('stream', doc['resourceVersion'])))

    def follower():
        order.append(('follower', store.wait(rv, 5)))
    threads = [threading.Thread(target=follower), threading.Thread(target=stream)]
    threads[0].start()                # the follower waits first: woken first
    time.sleep(0.05)
    threads[1].start()
    while not store.streams:
        time.sleep(0.001)
    store.apply([pod('a')])
    for t in threads:
        t.join(5)
    assert order == [('stream', str(rv + 1)), ('follower', rv + 1)]
    begun = time.monotonic()         # no stream waiting: no wait
    assert store.wait(rv, 5) == rv + 1 and time.monotonic() - begun < 0.1


def test_a_stream_that_comes_while_a_write_holds_the_lock_goes_before_the_followers(store):
    """kube-proxy often asks again while a write holds the store's lock (a pod's
    readiness: its EndpointSlice controller writes 10,000 slices under it). Counted from
    its arrival, it still has the new version before the followers that write woke."""
    rv = store.rv
    order = []
    follower = threading.Thread(
        target=lambda: order.append(('follower', store.wait(rv, 5))))
    follower.start()
    time.sleep(0.05)
    stream = threading.Thread(target=store._changes, args=(
        rv, store.epoch, 5, lambda doc: order.append(('stream', doc['resourceVersion']))))
    with store.cond:                   # the write, begun before the stream came
        stream.start()
        deadline = time.monotonic() + 2
        while not store.streams and time.monotonic() < deadline:
            time.sleep(0.001)
        assert store.streams == 1      # counted before it takes the lock
        store.apply([pod('a')])
    for t in (follower, stream):
        t.join(5)
    assert order == [('stream', str(rv + 1)), ('follower', rv + 1)]
    assert store.streams == 0 and store.streamed == rv + 1


def test_a_stream_counts_out_under_the_store_lock_whatever_its_end(store):
    """A stream counts out of ``streams`` while it holds the store's lock, answered,
    timed out or failed: a write right after its answer never finds it counted (its
    followers would wait ``STREAM_FIRST_S`` for nothing); one behind the store is
    answered at once and moves ``streamed`` too."""
    held = []
    real = store.stream_arrivals

    class Watched:
        def __enter__(self):
            held.append(store.cond._is_owned())
            return real.__enter__()

        def __exit__(self, *exc):
            return real.__exit__(*exc)
    store.stream_arrivals = Watched()
    rv = store.rv
    store.apply([pod('a')])
    assert store._changes(rv, store.epoch, 5, lambda doc: doc)['resourceVersion'] == \
        str(rv + 1)                                  # behind: at once
    assert store.streamed == rv + 1
    assert store._changes(rv + 1, store.epoch, 0.05, lambda doc: doc)['objects'] == {}

    def fails(doc):
        raise RuntimeError('the encoder failed')
    store.apply([pod('b')])
    with pytest.raises(RuntimeError):
        store._changes(rv + 1, store.epoch, 5, fails)
    assert store.streams == 0 and store.streamed == rv + 2
    assert held == [False, True] * 3             # in before the lock, out under it


def test_a_stream_of_another_store_is_answered_at_once_and_holds_no_follower(store):
    """A kube-proxy still holding an earlier daemon's version (its epoch), or one ahead
    of the store, gets everything at once, and the followers never wait for it."""
    for since, epoch in ((store.rv, 'an-earlier-daemon'), (store.rv + 5, store.epoch)):
        begun = time.monotonic()
        assert store.changes(since, epoch, timeout=5)['full']
        assert time.monotonic() - begun < 1
        assert store.streamed == store.rv      # (a follower behind need not wait for it)
    rv = store.rv
    stream = threading.Thread(target=store.changes, args=(rv, store.epoch, 5))
    stream.start()                   # waits for the next version: held for
    while not store.streams:
        time.sleep(0.001)
    store.apply([pod('a')])
    stream.join(5)
    later = store.rv
    begun = time.monotonic()
    store.apply([pod('b')])          # no stream waits: the follower goes on at once
    assert store.wait(later, 5) == later + 1 and time.monotonic() - begun < 0.2


def test_a_snapshot_without_a_change_returns_after_the_timeout(store):
    rv, _ = store.snapshot()
    begun = time.monotonic()
    same, _ = store.snapshot(rv, timeout=0.1)
    assert same == rv
    assert 0.09 < time.monotonic() - begun < 1


def test_a_snapshot_is_a_copy(store):
    store.apply([pod('a')])
    _, objs = store.snapshot()
    objs['Pod'][0]['metadata']['name'] = 'changed'
    assert names(store, 'Pod') == ['a']


# ---------------------------------------------------------------- NodePorts
def node_port_service(name='web', ports=None, namespace='default', **spec):
    """A NodePort Service; ``ports``: (name, port, nodePort or None[, protocol])."""
    ports = ports or [('', 80, None)]
    body = []
    for port_name, number, node_port, *protocol in ports:
        item = {'port': number, 'targetPort': 8080}
        if port_name:
            item['name'] = port_name
        if node_port is not None:
            item['nodePort'] = node_port
        if protocol:
            item['protocol'] = protocol[0]
        body.append(item)
    return {'apiVersion': 'v1', 'kind': 'Service',
            'metadata': {'name': name, 'namespace': namespace},
            'spec': {'type': 'NodePort', 'selector': {'app': name}, 'ports': body,
                     **spec}}


def node_ports_of(store, name='web', namespace_='default'):
    """{port name or number: nodePort} of a stored Service."""
    spec = store.get('Service', namespace_, name)['spec']
    return {p.get('name') or p['port']: p.get('nodePort') for p in spec['ports']}


def node_port_errors(store, docs):
    """The full text of every problem of an apply that must fail."""
    with pytest.raises(ApplyError) as info:
        store.apply(docs)
    return [str(e) for e in info.value.errors]


def test_a_node_port_is_allocated_from_the_upper_band_and_written_back(store):
    store.apply([node_port_service()])
    got = store.get('Service', 'default', 'web')['spec']
    [port] = got['ports']
    assert 30086 <= port['nodePort'] <= 32767
    assert store.node_ports.allocated() == [port['nodePort']]
    assert got['externalTrafficPolicy'] == got['internalTrafficPolicy'] == 'Cluster'
    assert store.cluster_ips.is_allocated(got['clusterIP'])


def test_a_requested_node_port_is_reserved(store):
    store.apply([node_port_service(ports=[('', 80, 30080)])])
    assert node_ports_of(store) == {80: 30080}
    assert store.node_ports.allocated() == [30080]


def test_a_node_port_outside_the_range_is_refused_with_the_range(store):
    assert node_port_errors(store, [node_port_service(ports=[('', 80, 40000)])]) == [
        'Service default/web: spec.ports[0].nodePort: Invalid value: 40000: provided '
        'port is not in the valid range. The range of valid ports is 30000-32767']
    assert names(store, 'Service', 'default') == []
    assert store.node_ports.allocated() == []


def test_the_node_port_range_comes_from_the_cluster_file():
    small = Store(load_cluster('nodes: [{name: worker-1}]\n'
                               'networking: {nodePortRange: 31000-31099}\n',
                               'cluster.yaml'))
    assert node_port_errors(small, [node_port_service(ports=[('', 80, 30080)])]) == [
        'Service default/web: spec.ports[0].nodePort: Invalid value: 30080: provided '
        'port is not in the valid range. The range of valid ports is 31000-31099']
    small.apply([node_port_service(ports=[('a', 80, None), ('b', 81, 31000)])])
    allocated = node_ports_of(small)['a']
    assert 31016 <= allocated <= 31099                  # 16 static ports below


def test_a_node_port_another_service_has_is_refused(store):
    store.apply([node_port_service('a', ports=[('', 80, 30080)])])
    assert node_port_errors(store, [node_port_service('b', ports=[('', 80, 30080)])]) \
        == ['Service default/b: spec.ports[0].nodePort: Invalid value: 30080: '
            'provided port is already allocated']
    assert names(store, 'Service', 'default') == ['a']


def test_two_services_of_one_apply_cannot_share_a_node_port(store):
    assert node_port_errors(store, [node_port_service('a', ports=[('', 80, 30080)]),
                                    node_port_service('b', ports=[('', 80, 30080)])]) \
        == ['Service default/b: spec.ports[0].nodePort: Invalid value: 30080: '
            'provided port is already allocated']
    assert names(store, 'Service', 'default') == []
    assert store.node_ports.allocated() == [] and store.cluster_ips.allocated() == []


def test_every_refused_port_of_a_service_is_reported(store):
    store.apply([node_port_service('a', ports=[('', 80, 30080)])])
    errors = node_port_errors(store, [node_port_service(
        'b', ports=[('x', 80, 30080), ('y', 81, 30081), ('z', 82, 29000)])])
    assert [e.split(': ')[1] for e in errors] == ['spec.ports[0].nodePort',
                                                 'spec.ports[2].nodePort']


def test_a_rejected_apply_takes_no_node_port_and_releases_none(store):
    store.apply([node_port_service('a', ports=[('', 80, 30080)])])
    before = store.node_ports.allocated()
    broken = pod('broken')
    del broken['spec']['containers']
    rv = store.snapshot()[0]
    rejected(store, [node_port_service('a', ports=[('', 80, 30081)]),   # moves 30080
                     node_port_service('b'),                           # allocates one
                     node_port_service('c', ports=[('', 80, 30090)]),
                     service('d'), broken])
    assert store.node_ports.allocated() == before == [30080]
    assert node_ports_of(store, 'a') == {80: 30080}
    assert names(store, 'Service', 'default') == ['a']
    assert store.snapshot()[0] == rv
    # What the rejected apply asked for is free for the next one.
    store.apply([node_port_service('c', ports=[('', 80, 30081)])])
    assert node_ports_of(store, 'c') == {80: 30081}


def test_a_dry_run_takes_no_node_port(store):
    out = store.apply([node_port_service(ports=[('', 80, 30080)])], dry_run=True)
    assert out['results'] == [['service/web', 'validated']]
    assert store.node_ports.allocated() == []


def test_applying_a_node_port_service_again_keeps_its_ports_unchanged(store):
    store.apply([node_port_service(ports=[('http', 80, None), ('admin', 81, 30081)])])
    first = node_ports_of(store)
    rv = store.snapshot()[0]
    again = store.apply([node_port_service(ports=[('http', 80, None),
                                                  ('admin', 81, None)])])
    assert again['results'] == [['service/web', 'unchanged']]
    assert node_ports_of(store) == first and first['admin'] == 30081
    assert store.get('Service', 'default', 'web')['metadata']['generation'] == 1
    assert store.snapshot()[0] == rv
    assert store.node_ports.allocated() == sorted(first.values())


def test_a_port_keeps_its_node_port_by_name_when_its_number_changes(store):
    store.apply([node_port_service(ports=[('http', 80, None), ('https', 443, None)])])
    first = node_ports_of(store)
    store.apply([node_port_service(ports=[('https', 8443, None), ('http', 8080, None)])])
    assert node_ports_of(store) == first
    assert store.node_ports.allocated() == sorted(first.values())


def test_a_renamed_port_keeps_its_node_port_by_port_and_protocol(store):
    store.apply([node_port_service(ports=[('', 80, None)])])
    [first] = node_ports_of(store).values()
    store.apply([node_port_service(ports=[('http', 80, None)])])
    assert node_ports_of(store) == {'http': first}
    # Another protocol is another port: a new nodePort, and the old one goes back.
    store.apply([node_port_service(ports=[('dns', 80, None, 'UDP')])])
    [second] = node_ports_of(store).values()
    assert second != first and store.node_ports.allocated() == [second]


def test_an_added_port_gets_a_node_port_and_a_removed_one_gives_it_back(store):
    store.apply([node_port_service(ports=[('http', 80, 30080), ('metrics', 9090, 30090)])])
    store.apply([node_port_service(ports=[('http', 80, None), ('dns', 53, None, 'UDP')])])
    got = node_ports_of(store)
    assert got['http'] == 30080 and got['dns'] not in (30080, 30090)
    assert store.node_ports.allocated() == sorted([30080, got['dns']])


def test_a_changed_node_port_moves_and_the_old_one_is_free_at_once(store):
    store.apply([node_port_service('a', ports=[('', 80, 30080)])])
    store.apply([node_port_service('a', ports=[('', 80, 30081)]),
                 node_port_service('b', ports=[('', 80, 30080)])])
    assert node_ports_of(store, 'a') == {80: 30081}
    assert node_ports_of(store, 'b') == {80: 30080}
    assert store.node_ports.allocated() == [30080, 30081]


def test_a_change_to_a_taken_node_port_is_refused_and_keeps_the_old_one(store):
    store.apply([node_port_service('a', ports=[('', 80, 30080)]),
                 node_port_service('b', ports=[('', 80, 30081)])])
    assert node_port_errors(store, [node_port_service('a', ports=[('', 80, 30081)])]) \
        == ['Service default/a: spec.ports[0].nodePort: Invalid value: 30081: '
            'provided port is already allocated']
    assert node_ports_of(store, 'a') == {80: 30080}
    assert store.node_ports.allocated() == [30080, 30081]


def test_two_ports_may_swap_their_node_ports(store):
    store.apply([node_port_service(ports=[('a', 80, 30080), ('b', 81, 30081)])])
    store.apply([node_port_service(ports=[('a', 80, 30081), ('b', 81, 30080)])])
    assert node_ports_of(store) == {'a': 30081, 'b': 30080}
    assert store.node_ports.allocated() == [30080, 30081]


def test_a_node_port_given_to_another_port_is_not_kept_twice(store):
    store.apply([node_port_service(ports=[('a', 80, 30080), ('b', 81, 30081)])])
    store.apply([node_port_service(ports=[('a', 80, None), ('b', 81, 30080)])])
    got = node_ports_of(store)
    assert got['b'] == 30080 and got['a'] not in (30080, 30081)
    assert store.node_ports.allocated() == sorted([30080, got['a']])


def test_tcp_and_udp_of_one_port_number_share_an_allocated_node_port(store):
    store.apply([node_port_service('dns', ports=[('dns', 53, None, 'UDP'),
                                                 ('dns-tcp', 53, None, 'TCP')])])
    got = node_ports_of(store, 'dns')
    assert got['dns'] == got['dns-tcp']
    assert store.node_ports.allocated() == [got['dns']]
    store.delete('Service', 'default', 'dns')
    assert store.node_ports.allocated() == []


def test_node_port_to_cluster_ip_and_back_keeps_the_cluster_ip(store):
    store.apply([node_port_service(ports=[('', 80, 30080)],
                                   externalTrafficPolicy='Local')])
    ip = store.get('Service', 'default', 'web')['spec']['clusterIP']
    assert store.apply([service()])['results'] == [['service/web', 'configured']]
    spec = store.get('Service', 'default', 'web')['spec']
    assert (spec['type'], spec['clusterIP']) == ('ClusterIP', ip)
    assert 'nodePort' not in spec['ports'][0]
    assert 'externalTrafficPolicy' not in spec
    assert store.node_ports.allocated() == []
    # Taken again at once by another Service; back to NodePort: a new one.
    store.apply([node_port_service('other', ports=[('', 80, 30080)])])
    store.apply([node_port_service()])
    spec = store.get('Service', 'default', 'web')['spec']
    assert (spec['type'], spec['clusterIP']) == ('NodePort', ip)
    assert spec['externalTrafficPolicy'] == 'Cluster'
    assert spec['ports'][0]['nodePort'] not in (None, 30080)
    assert store.node_ports.allocated() == sorted([30080, spec['ports'][0]['nodePort']])


def test_a_headless_service_cannot_become_node_port(store):
    store.apply([service(cluster_ip='None')])
    assert node_port_errors(store, [node_port_service()]) == [
        'Service default/web: spec.clusterIP: Invalid value: "None": may not be set '
        "to 'None' for NodePort services"]
    assert store.get('Service', 'default', 'web')['spec']['type'] == 'ClusterIP'
    assert store.node_ports.allocated() == []


def test_deleting_a_service_frees_its_node_ports(store):
    store.apply([node_port_service('a', ports=[('x', 80, 30080), ('y', 81, None)])])
    store.delete('Service', 'default', 'a')
    assert store.node_ports.allocated() == []
    store.apply([node_port_service('b', ports=[('', 80, 30080)])])
    assert node_ports_of(store, 'b') == {80: 30080}


def test_deleting_a_namespace_frees_the_node_ports_in_it(store):
    store.apply([namespace('dev')])
    store.apply([node_port_service(namespace='dev', ports=[('', 80, 30080)]),
                 node_port_service('kept', ports=[('', 80, 30081)])])
    store.delete('Namespace', None, 'dev')
    assert store.node_ports.allocated() == [30081]
    store.apply([node_port_service(ports=[('', 80, 30080)])])
    assert node_ports_of(store) == {80: 30080}


def test_a_cluster_ip_service_with_a_node_port_is_still_refused(store):
    svc = service()
    svc['spec']['ports'][0]['nodePort'] = 30080
    [(path, message)] = rejected(store, [svc])
    assert (path, message) == ('spec.ports[0].nodePort',
                               'may not be used when type is ClusterIP')
    assert store.node_ports.allocated() == []


def test_a_pod_pinned_to_a_node_that_does_not_exist_gets_a_warning():
    from services.cluster import default_cluster
    from services.store import Store
    pod = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': 'p'},
           'spec': {'nodeName': 'nowhere', 'containers': [
               {'name': 'c', 'image': 'busybox', 'command': ['sleep', '9']}]}}
    warnings = Store(default_cluster()).apply([pod])['warnings']
    assert any('spec.nodeName: node "nowhere" does not exist' in w and 'worker-1' in w
               for w in warnings), warnings


def test_the_cloud_health_of_a_load_balancer_is_kept_and_forgotten():
    store = Store(default_cluster())
    version = store.rv
    store.set_lb_health('default', 'web', ['worker-2', 'worker-1'])
    [health] = store.snapshot()[1]['LoadBalancerHealth']
    assert health['status']['healthyNodes'] == ['worker-1', 'worker-2']
    assert store.rv > version
    version = store.rv
    store.set_lb_health('default', 'web', ['worker-1', 'worker-2'])       # no change
    assert store.rv == version
    store.set_lb_health('default', 'web', None)
    assert 'LoadBalancerHealth' not in store.snapshot()[1]


# ---------------------------------------------------------------- the Service API
def external_name(name='alias', target='web.default.svc.cluster.local'):
    return {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': name},
            'spec': {'type': 'ExternalName', 'externalName': target,
                     'selector': {'app': 'web'}}}


def test_an_external_name_service_gets_no_cluster_ip_and_no_endpoints(store):
    store.apply([deployment(replicas=1), external_name()])
    spec = store.get('Service', 'default', 'alias')['spec']
    assert 'clusterIP' not in spec and 'clusterIPs' not in spec
    assert [s for s in store.list('EndpointSlice')
            if s['metadata']['labels']['kubernetes.io/service-name'] == 'alias'] == []


def test_a_service_turned_external_name_gives_its_cluster_ip_back_and_back_gets_one(store):
    store.apply([service(name='alias', cluster_ip='10.96.0.77')])
    store.apply([external_name()])
    assert 'clusterIP' not in store.get('Service', 'default', 'alias')['spec']
    store.apply([service(name='other', cluster_ip='10.96.0.77')])     # free again
    store.apply([service(name='alias', app='web')])                 # a new one
    ip = store.get('Service', 'default', 'alias')['spec']['clusterIP']
    assert ip not in ('10.96.0.77', None, 'None')
    assert store.get('Service', 'default', 'alias')['spec']['clusterIPs'] == [ip]


def test_a_terminating_pod_that_still_passes_its_probe_is_a_serving_endpoint(store):
    store.apply([deployment(replicas=2), service()])
    first, second = pods(store)
    start(store, first['metadata']['name'], '192.168.2.10')
    start(store, second['metadata']['name'], '192.168.3.10')
    store.delete('Pod', 'default', first['metadata']['name'])
    # The kubelet probes it on and reports it Ready while its probe passes (KEP-1669).
    start(store, first['metadata']['name'], '192.168.2.10', ready=True)
    assert endpoints(store)[first['metadata']['name']] == {
        'ready': False, 'serving': True, 'terminating': True}
    start(store, first['metadata']['name'], '192.168.2.10', ready=False)
    assert endpoints(store)[first['metadata']['name']] == {
        'ready': False, 'serving': False, 'terminating': True}
    # It is not one of the Deployment's ready replicas meanwhile.
    dep = store.get('Deployment', 'default', 'web')
    assert dep['status'].get('readyReplicas', 0) == 1


def test_labels_kube_proxy_obeys_are_named_at_apply(store):
    svc = service()
    svc['metadata']['labels'] = {'service.kubernetes.io/service-proxy-name': 'other'}
    svc['spec']['trafficDistribution'] = 'PreferClose'
    svc['spec']['externalIPs'] = ['203.0.113.50', '192.0.2.10']
    warnings = store.apply([svc])['warnings']
    assert any('metadata.labels["service.kubernetes.io/service-proxy-name"]: kube-proxy '
               'does not handle this Service' in w for w in warnings), warnings
    assert any('spec.trafficDistribution: accepted; the lab\'s nodes have no '
               'topology.kubernetes.io/zone label' in w for w in warnings), warnings
    external = [w for w in warnings if 'externalIPs' in w]
    assert len(external) == 1 and 'spec.externalIPs[0]: 203.0.113.50 is in the external ' \
        'subnet' in external[0]
