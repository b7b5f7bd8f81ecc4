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


@pytest.mark.parametrize('seed', range(5))
def test_a_file_said_unmoved_would_be_written_the_same(seed):
    """The daemon writes the records without the pods' (``dns.records(...,
    pods=False)``) and the pods' (``dns.pod_records``) to two files, each only when
    ``files_moved`` says it may have changed: on random change sequences, a file said
    unmoved is what a fresh computation gives."""
    rng = random.Random(seed)
    store = Store(default_cluster(), rng=random.Random(seed))
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'team'}}]
                + ([_headless('h', 'default', 'a')] if seed % 2 else []))
    inputs = DNSInputs(store)

    def files(objects):
        return (dns.records(objects, networks=NETWORKS, pods=False),
                dns.pod_records(objects['Pod'], networks=NETWORKS))
    written, alone = files(inputs.objects()), 0
    for serial in range(120):
        random_step(store, rng, serial)
        if inputs.unchanged():
            continue
        now = files(inputs.objects())
        moved = inputs.files_moved()
        for i in (0, 1):
            if not moved[i]:
                assert now[i] == written[i], f'after step {serial}'
        alone += moved == (False, True)
        written = now
    assert alone > 3 or seed % 2


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
