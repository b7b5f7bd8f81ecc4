"""The DNS records writer skips a run only when the records would be the same
(services/dns_inputs.py, issue 20): on random change sequences (Services created,
re-selected and deleted, headless ones among them; pods created, readied, relabelled,
terminated, gone), whenever ``unchanged`` says so, the records computed afresh equal
the ones last written; and a pod's readiness or a ClusterIP Service's slices alone
are skipped."""

import random

import pytest

from services import dns
from services.cluster import default_cluster
from services.dns_inputs import DNSInputs
from services.errors import KubelabError
from services.store import Store
from tests.unit.test_store_incremental import _pod, _service, random_step

NETWORKS = ('10.96.0.0/12', '192.168.0.0/16')


def _records(inputs):
    return dns.records(inputs.objects(), networks=NETWORKS)


def _fresh(store):
    return dns.records(DNSInputs(store).objects(), networks=NETWORKS)


def _headless(name, ns, app):
    svc = _service(name, ns, app)
    svc['spec']['clusterIP'] = 'None'
    return svc


@pytest.mark.parametrize('seed', range(5))
def test_a_skipped_run_would_have_written_the_same_records(seed):
    rng = random.Random(seed)
    store = Store(default_cluster(), rng=random.Random(seed))
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'team'}},
                 _headless('h', 'default', 'a'), _headless('h', 'team', 'b')])
    inputs = DNSInputs(store)
    written, skipped = _records(inputs), 0
    for serial in range(150):
        random_step(store, rng, serial)
        if inputs.unchanged():
            skipped += 1
            assert _fresh(store) == written, f'after step {serial}'
        else:
            written = _records(inputs)
    assert skipped > 10


@pytest.mark.parametrize('seed', range(5))
def test_what_objects_reads_again_gives_the_records_of_everything_read_afresh(seed):
    """``objects`` views again only the kinds that changed as the records read them;
    after each random step (a check of ``unchanged`` between some of them, as the
    writer does) its records equal those of a fresh read of the store."""
    rng = random.Random(seed)
    store = Store(default_cluster(), rng=random.Random(seed))
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'team'}},
                 _headless('h', 'default', 'a'), _headless('h', 'team', 'b')])
    inputs, reused = DNSInputs(store), 0
    _records(inputs)
    for serial in range(150):
        random_step(store, rng, serial)
        if rng.random() < 0.3 and inputs.unchanged():
            continue
        before = dict(inputs.read)
        assert _records(inputs) == _fresh(store), f'after step {serial}'
        reused += sum(1 for kind, items in inputs.read.items() if before[kind] is items)
    assert reused > 50, 'objects viewed every kind again after every change'


@pytest.mark.parametrize('seed', range(3))
def test_the_records_from_the_memo_are_the_records_afresh(seed):
    """The writer's ``records`` keeps each Service's own records by its object
    (``memo``): through random changes (Services of every kind changed and deleted, an
    ExternalName among them) they equal the records computed without it."""
    rng = random.Random(seed)
    store = Store(default_cluster(), rng=random.Random(seed))
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'team'}},
                 _headless('h', 'default', 'a'),
                 {'apiVersion': 'v1', 'kind': 'Service',
                  'metadata': {'name': 'ext', 'namespace': 'kube-system'},
                  'spec': {'type': 'ExternalName', 'externalName': 'db.example.com'}}])
    inputs, kept, finished = DNSInputs(store), 0, 0
    for serial in range(60):
        random_step(store, rng, serial)
        objects = inputs.objects()
        before = dict(inputs.memo)
        got = dns.records(objects, networks=NETWORKS, memo=inputs.memo)
        assert got == dns.records(objects, networks=NETWORKS), f'after step {serial}'
        kept += sum(1 for key, hit in inputs.memo.items() if before.get(key) is hit)
        was = before.get(dns._FINISHED, {})
        finished += sum(1 for key, hit in inputs.memo[dns._FINISHED].items()
                        if was.get(key) is hit)
    assert kept > 100, 'the memo kept no Service records from one run to the next'
    assert finished > 100, 'no sorted record of a Service was kept from one run to the next'


def test_readiness_and_clusterip_slices_alone_are_skipped():
    store = Store(default_cluster(), rng=random.Random(1))
    store.apply([_service(f's{i}', 'default', 'a') for i in range(5)] + [_pod('p', 'default', 'a')])
    pod = store.get('Pod', 'default', 'p')
    status = {'phase': 'Running', 'podIP': '192.168.2.9',
              'conditions': [{'type': 'Ready', 'status': 'False'}]}
    store.update_pod_status('default', 'p', pod['metadata']['uid'], status)
    inputs = DNSInputs(store)
    _records(inputs)
    store.update_pod_status('default', 'p', pod['metadata']['uid'], dict(
        status, conditions=[{'type': 'Ready', 'status': 'True'}]))     # 5 slices change
    assert inputs.unchanged()
    store.update_pod_status('default', 'p', pod['metadata']['uid'], dict(
        status, podIP='192.168.2.10'))
    assert not inputs.unchanged()
    _records(inputs)
    store.apply([_service('more', 'default', 'a')])
    assert not inputs.unchanged()
    _records(inputs)
    store.apply([_pod('new', 'default', 'a')])      # no address yet: no record
    assert inputs.unchanged()
    new = store.get('Pod', 'default', 'new')
    store.update_pod_status('default', 'new', new['metadata']['uid'], dict(
        status, podIP='192.168.2.11'))
    assert not inputs.unchanged()


def test_a_new_pod_with_a_hostname_is_read_again():
    """A headless Service's endpoint takes its hostname from the pod its targetRef
    names: a new pod of that name with a hostname may change the records before it has
    an address of its own."""
    store = Store(default_cluster(), rng=random.Random(1))
    inputs = DNSInputs(store)
    _records(inputs)
    pod = _pod('web-0', 'default', 'a')
    pod['spec'].update(hostname='web-0', subdomain='h')
    store.apply([pod])
    assert not inputs.unchanged()


def _files(objects):
    """The daemon's two files: the records but the pods', and the pods'."""
    return (dns.records(objects, networks=NETWORKS, pods=False),
            dns.pod_records(objects['Pod'], networks=NETWORKS))


def risky_step(store, rng, serial):
    """A change of what the two files divide: a headless Service coming or going, a
    pod with a hostname and subdomain, a pod's address (in the pod network or the
    host's), a Namespace, a pod gone, an ExternalName Service naming a pod."""
    namespace = rng.choice(('default', 'team'))
    op = rng.choice(['headless', 'unheadless', 'named-pod', 'ip', 'hostip', 'namespace',
                     'delete-pod', 'externalname'])
    try:
        if op == 'headless':
            store.apply([_headless(rng.choice(['h', 'g']), namespace, rng.choice('abc'))])
        elif op == 'unheadless':
            store.delete('Service', namespace, rng.choice(['h', 'g']))
        elif op == 'named-pod':
            pod = _pod(f'n{serial}', namespace, rng.choice('abc'))
            pod['spec'].update(hostname=f'host{serial}', subdomain=rng.choice(['h', 'g']))
            store.apply([pod])
        elif op in ('ip', 'hostip'):
            pods = [p for p in store.list('Pod', namespace)
                    if not p['metadata'].get('deletionTimestamp')]
            if pods:
                pod = rng.choice(pods)
                ip = f'10.0.0.{rng.randint(2, 4)}' if op == 'hostip' else \
                    f'192.168.{rng.randint(1, 3)}.{rng.randint(2, 30)}'
                store.update_pod_status(namespace, pod['metadata']['name'],
                                        pod['metadata']['uid'], {
                    'phase': 'Running', 'podIP': ip,
                    'conditions': [{'type': 'Ready', 'status': rng.choice(['True', 'False'])}]})
        elif op == 'namespace':
            store.apply([{'apiVersion': 'v1', 'kind': 'Namespace',
                          'metadata': {'name': rng.choice(['x', 'y'])}}])
        elif op == 'delete-pod':
            pods = store.list('Pod', namespace)
            if pods:
                pod = rng.choice(pods)
                store.delete('Pod', namespace, pod['metadata']['name'], 0)
                store.pod_gone(namespace, pod['metadata']['name'], pod['metadata']['uid'])
        else:
            store.apply([{'apiVersion': 'v1', 'kind': 'Service',
                          'metadata': {'name': 'ext', 'namespace': 'kube-system'},
                          'spec': {'type': 'ExternalName', 'externalName':
                                   f'192-168-1-{serial % 9 + 2}.default.pod.cluster.local'}}])
    except KubelabError:              # refused (nothing to delete): no change
        pass


@pytest.mark.parametrize('seed', range(8))
def test_a_file_said_unmoved_is_what_a_fresh_read_writes(seed):
    """The daemon writes each of its two files only when ``files_moved`` says it may
    have changed: on random changes (half of them to what the two files divide), a
    file said unmoved is what a fresh read of the store computes."""
    rng = random.Random(seed)
    store = Store(default_cluster(), rng=random.Random(seed))
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'team'}}])
    inputs = DNSInputs(store)
    written, seen = list(_files(inputs.objects())), set()
    for serial in range(160):
        (risky_step if rng.random() < 0.6 else random_step)(store, rng, serial)
        fresh = _files(DNSInputs(store).objects())
        if inputs.unchanged():
            assert fresh == tuple(written), f'after step {serial}'
            continue
        inputs.objects()
        moved = inputs.files_moved()
        seen.add(moved)
        for i in (0, 1):
            if moved[i]:
                written[i] = fresh[i]
            else:
                assert fresh[i] == written[i], f'file {i} after step {serial}'
    assert {(False, True), (True, False)} <= seen


def test_a_pods_new_address_moves_the_pods_file_alone():
    store = Store(default_cluster(), rng=random.Random(1))
    store.apply([_service(f's{i}', 'default', 'a') for i in range(5)] + [_pod('p', 'default', 'a')])
    inputs = DNSInputs(store)
    inputs.objects()
    assert inputs.files_moved() == (True, True)              # the first run: both
    pod = store.get('Pod', 'default', 'p')
    store.update_pod_status('default', 'p', pod['metadata']['uid'], {
        'phase': 'Running', 'podIP': '192.168.2.9'})
    inputs.objects()
    assert inputs.files_moved() == (False, True)
    store.apply([_service('more', 'default', 'a')])
    inputs.objects()
    assert inputs.files_moved() == (True, False)
    store.apply([_headless('h', 'default', 'a')])          # now a pod may name an endpoint
    inputs.objects()
    store.update_pod_status('default', 'p', pod['metadata']['uid'], {
        'phase': 'Running', 'podIP': '192.168.2.10'})
    inputs.objects()
    assert inputs.files_moved() == (True, True)


def test_a_file_whose_write_failed_is_written_with_the_next_run(tmp_path, monkeypatch):
    """The daemon's writer (``Lab._write_dns``): a run that failed to write the records
    file (a full disk) leaves it to the next run, which writes it even when what moved
    since is a pod's address alone (the pods' file's)."""
    import json
    import types

    import topo.l7files
    from kubelab.daemon.lab import Lab
    store = Store(default_cluster(), rng=random.Random(1))
    store.apply([_pod('p', 'default', 'a')])
    lab = types.SimpleNamespace(store=store, cluster=store.cluster, _dns_version=None,
                                _dns_pending=(False, False), _dns_inputs=DNSInputs(store),
                                dns_records=str(tmp_path / 'records.json'))
    Lab._write_dns(lab)
    store.apply([_service('web', 'default', 'a')])
    real = topo.l7files.write_if_changed

    def full_disk(path, data):
        if path == lab.dns_records:
            raise OSError(28, 'No space left on device')
        return real(path, data)
    monkeypatch.setattr(topo.l7files, 'write_if_changed', full_disk)
    with pytest.raises(OSError):
        Lab._write_dns(lab)
    monkeypatch.setattr(topo.l7files, 'write_if_changed', real)
    pod = store.get('Pod', 'default', 'p')
    store.update_pod_status('default', 'p', pod['metadata']['uid'],
                            {'phase': 'Running', 'podIP': '192.168.2.9'})
    assert Lab._write_dns(lab)
    with open(lab.dns_records) as f:
        assert 'web.default.svc.cluster.local.' in json.load(f)['records']
    with open(dns.pod_records_path(lab.dns_records)) as f:
        assert '192-168-2-9.default.pod.cluster.local.' in json.load(f)['records']
    assert lab._dns_pending == (False, False)
