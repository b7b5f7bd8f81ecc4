"""The lab's own defences, without root: the state directory's checks, the instance
locks, the expansion and size limits, the pod capacity, and the objects kept on disk
(a store rebuilt from them keeps every ClusterIP, nodePort and load balancer address).
Each test replays the attack or accident it defends against."""

import json
import os
import time

import pytest

from kubelab.daemon import instance, persist, statedir
from services import manifests
from services.cluster import default_cluster
from services.errors import ApplyError, KubelabError, ValidationError
from services.store import Store
from topo.images import runtime


# ---------------------------------------------------------------- the state directory
def test_a_symlinked_state_dir_is_refused(tmp_path):
    """A local user points KUBELAB_STATE_DIR (or the directory itself) somewhere root
    would then write: refused before anything is written."""
    target = tmp_path / 'elsewhere'
    target.mkdir(mode=0o700)
    link = tmp_path / 'state'
    link.symlink_to(target)
    with pytest.raises(statedir.UnsafeStateDir, match='symbolic link'):
        statedir.check_state_dir(str(link))


def test_a_state_dir_others_may_read_or_write_is_refused(tmp_path):
    loose = tmp_path / 'loose'
    loose.mkdir()
    loose.chmod(0o755)
    with pytest.raises(statedir.UnsafeStateDir, match='mode 0755.*chmod 700'):
        statedir.check_state_dir(str(loose))


def test_a_state_dir_under_a_parent_others_may_change_is_refused(tmp_path):
    parent = tmp_path / 'shared'
    parent.mkdir()
    parent.chmod(0o777)
    with pytest.raises(statedir.UnsafeStateDir, match='its parent'):
        statedir.check_state_dir(str(parent / 'state'))


def test_a_state_dir_of_another_owner_is_refused(tmp_path, monkeypatch):
    state = tmp_path / 'state'
    state.mkdir(mode=0o700)
    monkeypatch.setattr(statedir, '_allowed_owners', lambda: {12345})
    with pytest.raises(statedir.UnsafeStateDir, match='belongs to uid|its parent'):
        statedir.check_state_dir(str(state))


def test_odd_paths_are_refused_and_a_missing_dir_is_made_0700(tmp_path):
    for bad in ('relative/dir', '/tmp/has space', '/tmp/../etc', '/tmp/' + 'x' * 100):
        with pytest.raises(statedir.UnsafeStateDir, match='absolute path'):
            statedir.check_state_dir(bad)
    made = statedir.check_state_dir(str(tmp_path / 'new'))
    assert os.stat(made).st_mode & 0o777 == 0o700


def test_files_are_never_written_through_a_planted_link(tmp_path):
    victim = tmp_path / 'victim'
    victim.write_text('precious')
    (tmp_path / 'token').symlink_to(victim)
    statedir.write_file(str(tmp_path / 'token'), b'secret')      # replaces the link
    assert victim.read_text() == 'precious'
    assert (tmp_path / 'token').read_bytes() == b'secret'
    (tmp_path / 'log').symlink_to(victim)
    with pytest.raises(OSError):
        statedir.append_fd(str(tmp_path / 'log'))
    with pytest.raises(OSError):
        statedir.read_text(str(tmp_path / 'log'))


# ---------------------------------------------------------------- one lab at a time
def test_a_second_lab_is_refused_by_either_lock(tmp_path):
    machine = str(tmp_path / 'machine.lock')
    one, two = tmp_path / 'one', tmp_path / 'two'
    one.mkdir(), two.mkdir()
    first = instance.InstanceLock(str(one), machine)
    first.acquire()
    try:
        for state in (one, two):                 # same directory, or another one
            with pytest.raises(instance.LabRunning,
                               match=f'daemon pid {os.getpid()}, state directory {one}'):
                instance.InstanceLock(str(state), machine).acquire()
        assert instance.InstanceLock(str(two), machine).running().startswith('daemon pid')
    finally:
        first.release()
    second = instance.InstanceLock(str(two), machine)
    second.acquire()                              # free once the first lets go
    second.release()
    assert instance.InstanceLock(str(two), machine).running() is None


# ---------------------------------------------------------------- limits
def bomb(levels: int, refs: int = 8) -> dict:
    env = [{'name': 'A0', 'value': 'x' * 16}]
    env += [{'name': f'A{i}', 'value': f'$(A{i - 1})' * refs} for i in range(1, levels + 1)]
    return {'name': 'c', 'image': 'busybox:1.36', 'command': ['sh', '-c', 'echo $(A9)'],
            'env': env}


def test_an_env_expansion_bomb_stops_at_linuxs_limit_at_once():
    """Under 700 bytes of env that would expand to 2 GB: refused within milliseconds,
    naming the variable that went over."""
    spec = bomb(9)
    assert len(json.dumps(spec['env'])) < 700
    start = time.monotonic()
    with pytest.raises(runtime.ExpansionTooLarge, match=r'env\[5\] \(A5\).*131072'):
        runtime.container_env(spec, 'p', '/bin')
    assert time.monotonic() - start < 0.5


def test_expansion_follows_kubernetes_rules():
    """Only variables defined earlier expand; a result is never expanded again; ``$$``
    escapes; an undefined reference stays as written."""
    spec = {'name': 'c', 'image': 'busybox:1.36', 'command': ['sh'], 'env': [
        {'name': 'LATER_REF', 'value': '$(B)'},
        {'name': 'B', 'value': 'b'},
        {'name': 'ESCAPED', 'value': '$$(B)'},
        {'name': 'ONCE', 'value': '$(ESCAPED)'},
        {'name': 'BOTH', 'value': '$(B)$(B)-$(NOPE)'}]}
    env = runtime.container_env(spec, 'p', '/bin')
    assert env['LATER_REF'] == '$(B)' and env['ESCAPED'] == '$(B)'
    assert env['ONCE'] == '$(B)' and env['BOTH'] == 'bb-$(NOPE)'


def test_a_small_manifest_that_unfolds_to_megabytes_is_refused_by_bytes():
    big = 'x' * 2000
    text = f"kind: Namespace\na: &a ['{big}', '{big}', '{big}', '{big}', '{big}']\n"
    for i in range(1, 8):
        prev = 'a' if i == 1 else f'l{i - 1}'
        text += f"l{i}: &l{i} [*{prev}, *{prev}, *{prev}]\n"
    assert len(text) < 11_000
    start = time.monotonic()
    with pytest.raises(ValidationError, match='bytes once its aliases are expanded'):
        manifests.load_documents(text, 'bomb.yaml')
    assert time.monotonic() - start < 0.5


def test_a_file_larger_than_a_request_is_refused_before_parsing():
    text = 'kind: Namespace\n#' + 'x' * manifests.MAX_REQUEST_BYTES
    with pytest.raises(ValidationError, match='split it'):
        manifests.load_documents(text, 'huge.yaml')


def deployment(replicas: int, name: str = 'web') -> dict:
    return {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': name},
            'spec': {'replicas': replicas, 'selector': {'matchLabels': {'app': name}},
                     'template': {'metadata': {'labels': {'app': name}}, 'spec': {
                         'containers': [{'name': 'c', 'image': 'registry.k8s.io/pause:3.10'}]}}}}


def test_more_pods_than_the_nodes_run_is_refused_with_the_bound():
    store = Store(default_cluster())
    start = time.monotonic()
    with pytest.raises(ApplyError, match=r'spec.replicas: the cluster would need 100000 '
                                         r'pods; kubelab runs at most 330 \(110 per node'):
        store.apply([deployment(100000)])
    assert store.list('Pod') == [] and time.monotonic() - start < 1
    store.apply([deployment(200), deployment(100, 'other')])
    with pytest.raises(ApplyError, match='would need 331 pods'):
        store.apply([deployment(31, 'third')])
    with pytest.raises(KubelabError, match='--replicas 100000: the cluster would need'):
        store.scale('default', 'web', 100000)
    assert store.scale('default', 'web', 10)          # scaling down is always allowed


# ---------------------------------------------------------------- kept on disk
SERVICES = [
    {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': f'svc-{i}'},
     'spec': {'type': 'LoadBalancer', 'selector': {'app': 'web'},
              'ports': [{'port': 80, 'targetPort': 8080}]}} for i in range(3)]


def test_a_store_rebuilt_from_disk_keeps_every_address_and_pod(tmp_path):
    cluster = default_cluster()
    doc = {'cluster': 'the same'}
    store = Store(cluster)
    store.apply(SERVICES + [deployment(2)])
    store.delete('Service', 'default', 'svc-0')      # a hole in the ranges
    saver = persist.Saver(store, doc, str(tmp_path / 'objects.json'))
    saver.save()
    before = {s['metadata']['name']: s for s in store.list('Service')}
    pods = sorted((p['metadata']['name'], p['metadata']['uid']) for p in store.list('Pod'))

    again = Store(cluster)
    problems = again.restore(persist.load(saver.path, doc))
    assert problems == []
    for name, svc in before.items():
        now = again.get('Service', 'default', name)
        assert now['metadata']['uid'] == svc['metadata']['uid']
        assert now['spec']['clusterIP'] == svc['spec']['clusterIP']
        assert now['spec']['ports'] == svc['spec']['ports']
        assert now['status'] == svc['status']
    assert sorted((p['metadata']['name'], p['metadata']['uid'])
                  for p in again.list('Pod')) == pods
    assert {p['status']['phase'] for p in again.list('Pod')} == {'Pending'}
    # The allocators know what is taken: a new Service gets none of the old addresses.
    again.apply([dict(SERVICES[0], metadata={'name': 'new'})])
    new = again.get('Service', 'default', 'new')
    assert new['spec']['clusterIP'] not in {s['spec']['clusterIP'] for s in before.values()}
    taken = {p['nodePort'] for s in before.values() for p in s['spec']['ports']}
    assert new['spec']['ports'][0]['nodePort'] not in taken
    # The Deployment is not rolled anew: same pods, no surge.
    again.tick()
    assert sorted(p['metadata']['name'] for p in again.list('Pod')) == [n for n, _ in pods]


def test_saved_objects_of_another_cluster_are_refused(tmp_path):
    store = Store(default_cluster())
    saver = persist.Saver(store, {'cluster': 'A'}, str(tmp_path / 'objects.json'))
    saver.save()
    with pytest.raises(KubelabError, match='another cluster file.*kubelab down'):
        persist.load(saver.path, {'cluster': 'B'})
    (tmp_path / 'objects.json').write_text('{not json')
    with pytest.raises(KubelabError, match='cannot be read back'):
        persist.load(saver.path, {'cluster': 'A'})
