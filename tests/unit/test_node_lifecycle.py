"""The node lifecycle (services/controllers/node_lifecycle.py, services/store_lifecycle.py,
topo/heartbeat.py), driven with a fake clock: heartbeats renew Leases, silence turns a
node NotReady with its taints and its pods not ready, tolerationSeconds evict them, the
zone's disruption modes hold evictions back, and a heartbeat brings a node back."""

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.cluster import load_cluster
from services.controllers.node_lifecycle import (NodeLifecycle, default_tolerations,
                                                 eviction_time, zone_state)
from services.naming import now_rfc3339
from services.store import Store
from topo.heartbeat import LEASE_PATH, Heartbeat, LeaseEndpoint

GRACE, TOLERATION = 4, 10
CLUSTER = load_cluster(f'nodeLifecycle: {{nodeMonitorGracePeriod: {GRACE}s, '
                       f'defaultTolerationSeconds: {TOLERATION}}}\n', 'cluster.yaml')


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(clock):
    s = Store(CLUSTER, clock=clock)
    for node in CLUSTER.nodes:
        s.renew_lease(node.name)
    return s


def pod(name, node, **spec):
    return {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': name, 'labels': {'app': 'web'}},
            'spec': {'nodeName': node, 'containers': [{
                'name': 'c', 'image': 'registry.k8s.io/e2e-test-images/agnhost:2.53',
                'args': ['netexec']}], **spec}}


def running(store, name, ip):
    p = store.get('Pod', 'default', name)
    store.update_pod_status('default', name, p['metadata']['uid'], {
        'phase': 'Running', 'podIP': ip, 'conditions': [
            {'type': 'Ready', 'status': 'True'}], 'containerStatuses': []})


def ready(store, name, kind='Node', namespace=None):
    obj = store.get(kind, namespace, name)
    return next(c['status'] for c in obj['status']['conditions'] if c['type'] == 'Ready')


def silence(store, clock, seconds, *talking):
    """Time passes; only the ``talking`` nodes' kubelets renew their Leases."""
    for _ in range(int(seconds * 2)):
        clock.now += 0.5
        for name in talking:
            store.renew_lease(name)
        store.tick()


def taints(store, name):
    return {(t['key'], t['effect']) for t in
            store.get('Node', None, name)['spec'].get('taints') or []}


def test_a_heartbeat_makes_a_lease_and_a_ready_node(store, clock):
    lease = store.get('Lease', 'kube-node-lease', 'worker-1')
    assert lease['spec']['holderIdentity'] == 'worker-1'
    assert lease['spec']['leaseDurationSeconds'] == 40
    assert ready(store, 'worker-1') == 'True'
    rv = store.rv
    clock.now += 1
    store.renew_lease('worker-1')                 # a renewal wakes no watcher
    assert store.rv == rv
    assert store.get('Lease', 'kube-node-lease', 'worker-1')['spec']['renewTime'] > \
        lease['spec']['renewTime']


def test_the_admission_gives_every_pod_the_default_tolerations(store):
    store.apply([pod('web', 'worker-1'),
                 pod('own', 'worker-1', tolerations=[{
                     'key': 'node.kubernetes.io/unreachable', 'operator': 'Exists',
                     'effect': 'NoExecute'}])])
    tolerations = store.get('Pod', 'default', 'web')['spec']['tolerations']
    assert tolerations == [
        {'key': key, 'operator': 'Exists', 'effect': 'NoExecute',
         'tolerationSeconds': TOLERATION}
        for key in ('node.kubernetes.io/not-ready', 'node.kubernetes.io/unreachable')]
    own = store.get('Pod', 'default', 'own')['spec']['tolerations']
    assert len(own) == 2 and 'tolerationSeconds' not in own[0]
    # Applying the same manifest again changes nothing (the admission's are kept).
    assert store.apply([pod('web', 'worker-1')])['results'] == [['pod/web', 'unchanged']]


def test_a_silent_node_turns_not_ready_after_the_grace_period(store, clock):
    store.apply([pod('web-1', 'worker-1'), pod('web-2', 'worker-2')])
    running(store, 'web-1', '192.168.2.5')
    running(store, 'web-2', '192.168.3.5')
    talking = ('control-plane', 'worker-1')
    silence(store, clock, GRACE - 0.5, *talking)
    assert ready(store, 'worker-2') == 'True' and taints(store, 'worker-2') == set()
    silence(store, clock, 1.0, *talking)
    node = store.get('Node', None, 'worker-2')
    [condition] = node['status']['conditions']
    assert (condition['status'], condition['reason'], condition['message']) == (
        'Unknown', 'NodeStatusUnknown', 'Kubelet stopped posting node status.')
    assert taints(store, 'worker-2') == {('node.kubernetes.io/unreachable', 'NoSchedule'),
                                         ('node.kubernetes.io/unreachable', 'NoExecute')}
    assert ready(store, 'web-2', 'Pod', 'default') == 'False'
    assert ready(store, 'web-1', 'Pod', 'default') == 'True'
    reasons = {(e['involvedObject']['name'], e['reason']) for e in store.list('Event')}
    assert {('worker-2', 'NodeNotReady'), ('web-2', 'NodeNotReady')} <= reasons


def test_pods_are_evicted_after_their_toleration_and_the_node_comes_back(store, clock):
    store.apply([pod('web-2', 'worker-2'), pod('forever', 'worker-2', tolerations=[
        {'key': 'node.kubernetes.io/unreachable', 'operator': 'Exists',
         'effect': 'NoExecute'}])])
    running(store, 'web-2', '192.168.3.5')
    talking = ('control-plane', 'worker-1')
    silence(store, clock, GRACE + 1, *talking)
    silence(store, clock, TOLERATION - 2, *talking)
    assert not store.get('Pod', 'default', 'web-2')['metadata'].get('deletionTimestamp')
    silence(store, clock, 2.5, *talking)
    assert store.get('Pod', 'default', 'web-2')['metadata'].get('deletionTimestamp')
    assert not store.get('Pod', 'default', 'forever')['metadata'].get('deletionTimestamp')
    assert ('web-2', 'TaintManagerEviction') in {
        (e['involvedObject']['name'], e['reason']) for e in store.list('Event')}
    # The kubelet is heard again: Ready, no taints.
    store.renew_lease('worker-2')
    store.tick()
    assert ready(store, 'worker-2') == 'True' and taints(store, 'worker-2') == set()


def test_the_scheduler_keeps_new_pods_off_an_unreachable_node(store, clock):
    silence(store, clock, GRACE + 1, 'control-plane', 'worker-1')
    for name in ('a', 'b', 'c'):
        fresh = pod(name, None)
        del fresh['spec']['nodeName']
        store.apply([fresh])
        assert store.get('Pod', 'default', name)['spec']['nodeName'] == 'worker-1'


def node(name, status='True', message='kubelet is posting ready status'):
    return {'metadata': {'name': name}, 'spec': {},
            'status': {'conditions': [{'type': 'Ready', 'status': status,
                                       'message': message}]}}


@pytest.mark.parametrize('statuses, state', [
    (['True', 'True', 'Unknown'], 'Normal'),
    (['True', 'Unknown', 'Unknown'], 'Normal'),            # 2 are not "more than 2"
    (['True', 'Unknown', 'Unknown', 'Unknown'], 'PartialDisruption'),
    (['True'] * 3 + ['Unknown'] * 3, 'Normal'),            # 50% < 55%
    (['Unknown'] * 3, 'FullDisruption'),
])
def test_zone_states_are_kube_controller_managers(statuses, state):
    assert zone_state([node(f'n{i}', s) for i, s in enumerate(statuses)]) == state


def test_a_fully_disrupted_zone_evicts_nothing_and_loses_its_noexecute_taints():
    lifecycle = NodeLifecycle(grace=GRACE)
    nodes = [node(f'n{i}') for i in range(3)]
    now = 1000.0
    leases = {f'n{i}': now for i in range(3)}
    out = lifecycle.reconcile(nodes, leases, [], now)
    assert out.nodes == []
    leases['n0'] = leases['n1'] = leases['n2'] = now - GRACE - 1     # all silent
    out = lifecycle.reconcile(nodes, leases, [], now)
    for new in out.nodes:
        assert {(t['key'], t['effect']) for t in new['spec']['taints']} == {
            ('node.kubernetes.io/unreachable', 'NoSchedule')}


def test_noexecute_taints_come_one_node_at_a_time_in_a_normal_zone():
    lifecycle = NodeLifecycle(grace=GRACE)
    nodes = [node(f'n{i}') for i in range(5)]
    now = 1000.0
    leases = {f'n{i}': now for i in range(5)}
    leases['n3'] = leases['n4'] = now - GRACE - 1
    out = lifecycle.reconcile(nodes, leases, [], now)
    noexec = [n['metadata']['name'] for n in out.nodes
              if any(t['effect'] == 'NoExecute' for t in n['spec'].get('taints') or [])]
    assert len(noexec) == 1
    leases.update({f'n{i}': now + 5 for i in range(3)})
    assert lifecycle.reconcile(out.nodes + nodes[:3], leases, [], now + 5).nodes == []
    leases.update({f'n{i}': now + 10 for i in range(3)})
    later = lifecycle.reconcile(out.nodes + nodes[:3], leases, [], now + 10)
    assert [n['metadata']['name'] for n in later.nodes] == [
        name for name in ('n3', 'n4') if name not in noexec]
    assert any(t['effect'] == 'NoExecute' for t in later.nodes[0]['spec']['taints'])


def test_eviction_time_follows_the_tolerations():
    stamp = now_rfc3339(1000.0)
    taint = {'key': 'node.kubernetes.io/unreachable', 'effect': 'NoExecute',
             'timeAdded': stamp}
    spec = {}
    default_tolerations(spec, 300)
    assert eviction_time({'spec': spec}, [taint]) == 1300.0
    assert eviction_time({'spec': {}}, [taint]) == 0.0              # not tolerated: now
    forever = {'tolerations': [{'operator': 'Exists'}]}
    assert eviction_time({'spec': forever}, [taint]) is None


def test_the_lease_endpoint_renews_a_lease_over_http(store):
    endpoint = LeaseEndpoint(store, '127.0.0.1', ThreadPoolExecutor(1), port=0)
    endpoint.server.RequestHandlerClass.node_ips['worker-1'] = '127.0.0.1'
    try:
        port = endpoint.server.server_address[1]
        beat = Heartbeat('worker-1', 0, '127.0.0.1', 1.0, port=port)
        assert beat._renew() is True
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=2)
        conn.request('PUT', LEASE_PATH + 'nobody', body=b'{}')
        reply = conn.getresponse()
        assert reply.status == 404 and json.loads(reply.read())['reason'] == 'NotFound'
        conn.close()
        # Only the node itself (from its own address) renews its Lease.
        other = Heartbeat('worker-2', 0, '127.0.0.1', 1.0, port=port)
        assert other._renew() is False
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=2)
        conn.request('PUT', LEASE_PATH + 'worker-2', body=b'{}')
        assert conn.getresponse().status == 403
        conn.close()
    finally:
        endpoint.close()
    beat = Heartbeat('worker-1', 0, '127.0.0.1', 0.2, port=port)
    assert beat._renew() is False                 # nobody listens: the node is silent


def test_a_node_cut_off_from_the_api_server_keeps_its_kube_proxy_rules():
    from controller.pipeline import desired
    from controller.state import ClusterState, as_seen_by
    from services import wiring
    before = {'Service': [{'metadata': {'name': 'web', 'namespace': 'default'},
                           'spec': {'clusterIP': '10.96.0.20', 'ports': [
                               {'name': 'http', 'port': 80, 'protocol': 'TCP'}]}}],
              'EndpointSlice': [{'metadata': {'name': 'web-x', 'namespace': 'default',
                                              'labels': {'kubernetes.io/service-name': 'web'}},
                                 'ports': [{'name': 'http', 'port': 8080, 'protocol': 'TCP'}],
                                 'endpoints': [{'addresses': ['192.168.3.10'],
                                                'nodeName': 'worker-2',
                                                'conditions': {'ready': True}}]}]}
    after = dict(before, EndpointSlice=[], LabNetwork=[
        {'metadata': {'name': 'nodes'}, 'status': {'failedNodes': ['control-plane'],
                                                   'cutOff': ['worker-1', 'worker-2']}}])
    old = ClusterState.from_objects(CLUSTER, before)
    new = ClusterState.from_objects(CLUSTER, after)
    assert new.cut_off == {'worker-1', 'worker-2'}
    seen = as_seen_by('worker-1', new, old)
    assert seen.service_ports == old.service_ports                  # the rules it had
    assert as_seen_by('control-plane', new, old) is new              # reaches the API
    w1 = wiring.node_dpid(CLUSTER.node('worker-1'))
    assert desired(seen, w1).groups and not desired(new, w1).groups
