"""Deployment rollouts (the controller in services/controllers/deployments.py) and ``kubelab rollout``.

The store is driven as the kubelets drive it: a fake kubelet marks pods Ready (or not)
with ``update_pod_status`` and finishes terminations with ``pod_gone``, one pod at a
time, and after every step the Deployment's bounds are checked: never more than
replicas + maxSurge pods that are not terminating, never fewer available than
replicas - maxUnavailable (or than there were, while that is fewer). The numbers
expected of proportional scaling are worked out by hand from Kubernetes' formulas.
The CLI is tested through its parser and commands with a fake client over a real
store; the API route and the client's calls over real HTTP on loopback.
"""

import datetime

import pytest

from kubelab.daemon.apiserver import APIServer
from kubelab import cli, printers
from kubelab.cli import objects as cli_objects
from kubelab.cli.main import build_parser
from kubelab.client import Client
from services import naming
from services.cluster import default_cluster
from services.controllers.deployments import RESTARTED_AT, REVISION
from services.errors import ApplyError, KubelabError, NotFound
from services.store import Store

AGNHOST = 'registry.k8s.io/e2e-test-images/agnhost:2.39'
EPOCH = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc).timestamp()
REAL_NOW = naming.now_rfc3339


# ---------------------------------------------------------------- fixtures
class Clock:
    """The store's clock (``now``, moved by hand) and a timestamp source that is one
    second later at each call, so creationTimestamps tell pods apart."""

    def __init__(self):
        self.now = EPOCH
        self.stamps = EPOCH

    def stamp(self, moment=None):
        if moment is not None:
            return REAL_NOW(moment)
        self.stamps += 1
        return REAL_NOW(self.stamps)


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(naming, 'now_rfc3339', fake.stamp)
    return fake


@pytest.fixture
def store(clock):
    return Store(default_cluster(), clock=lambda: clock.now)


def deployment(replicas=4, port=8080, strategy=None, name='web', **spec):
    """A Deployment; ``port`` changes its template, ``strategy`` is written as given."""
    body = {'replicas': replicas, 'selector': {'matchLabels': {'app': name}},
            'template': {'metadata': {'labels': {'app': name}},
                         'spec': {'containers': [{
                             'name': 'web', 'image': AGNHOST,
                             'args': ['netexec', f'--http-port={port}']}]}},
            **spec}
    if strategy is not None:
        body['strategy'] = strategy
    return {'apiVersion': 'apps/v1', 'kind': 'Deployment',
            'metadata': {'name': name, 'namespace': 'default'}, 'spec': body}


def rolling(surge, unavailable):
    return {'type': 'RollingUpdate',
            'rollingUpdate': {'maxSurge': surge, 'maxUnavailable': unavailable}}


# ---------------------------------------------------------------- the kubelet's side
def terminating(pod):
    return bool(pod['metadata'].get('deletionTimestamp'))


def ready(pod):
    return any(c['type'] == 'Ready' and c['status'] == 'True'
               for c in pod['status'].get('conditions') or [])


def pods(store, live=None, tpl_hash=None):
    """Pods oldest first; ``live``: only those (not) terminating; ``tpl_hash``: of it."""
    out = sorted(store.list('Pod', 'default'),
                 key=lambda p: p['metadata']['creationTimestamp'])
    if live is not None:
        out = [p for p in out if terminating(p) != live]
    if tpl_hash is not None:
        out = [p for p in out if p['metadata']['labels']['pod-template-hash'] == tpl_hash]
    return out


def names(items):
    return [p['metadata']['name'] for p in items]


def set_ready(store, pod, is_ready=True, since=None):
    """The kubelet reports ``pod`` Ready (or not); ``since``: the Ready condition's
    lastTransitionTime (seconds), which kubelab's kubelet leaves out."""
    cond = {'type': 'Ready', 'status': 'True' if is_ready else 'False'}
    if since is not None:
        cond['lastTransitionTime'] = naming.now_rfc3339(since)
    meta = pod['metadata']
    store.update_pod_status('default', meta['name'], meta['uid'], {
        'phase': 'Running', 'podIP': '192.168.2.10',
        'conditions': [{'type': 'PodScheduled', 'status': 'True'}, cond]})


def finish(store, pod):
    """The kubelet finished terminating ``pod``."""
    store.pod_gone('default', pod['metadata']['name'], pod['metadata']['uid'])


def template_hash(store, name='web'):
    template = store.get('Deployment', 'default', name)['spec']['template']
    return naming.pod_template_hash(template)


def status(store, name='web'):
    return store.get('Deployment', 'default', name)['status']


def conditions(store, name='web'):
    return {c['type']: (c['status'], c['reason'], c['message'])
            for c in status(store, name)['conditions']}


class Bounds:
    """Checks a RollingUpdate's promises after every step of the kubelet."""

    def __init__(self, store, max_live, min_available):
        self.store = store
        self.max_live = max_live
        self.min_available = min_available
        self.available = self.count()[1]
        self.steps = 0

    def count(self):
        live = pods(self.store, live=True)
        return len(live), sum(ready(p) for p in live)

    def check(self, gained=0):
        """``gained``: pods the step itself made available."""
        live, available = self.count()
        assert live <= self.max_live, f'{live} live pods, at most {self.max_live} allowed'
        floor = min(self.min_available, self.available + gained)
        assert available >= floor, f'{available} available, at least {floor} expected'
        st = status(self.store)
        assert (st['replicas'], st['availableReplicas']) == (live, available)
        self.available = available
        self.steps += 1


def step(store, finish_first=False) -> int | None:
    """One step of the kubelets: make the oldest starting pod Ready or finish the
    oldest terminating one (``finish_first``: terminations before readiness). The
    pods it made available (0 or 1); None when every pod is new and Ready."""
    everything = pods(store)
    starting = [p for p in everything if not terminating(p) and not ready(p)]
    ending = [p for p in everything if terminating(p)]
    if starting and not (finish_first and ending):
        set_ready(store, starting[0])
        return 1
    if ending:
        finish(store, ending[0])
        return 0
    tpl_hash = template_hash(store)
    if any(p['metadata']['labels']['pod-template-hash'] != tpl_hash for p in everything):
        raise AssertionError(f'the rollout is stuck: {names(everything)}')
    return None


def drive(store, bounds=None, finish_first=False, limit=500):
    """Play the kubelets until every pod is new and Ready and no old one is left."""
    for _ in range(limit):
        gained = step(store, finish_first)
        if gained is None:
            return
        if bounds is not None:
            bounds.check(gained)
    raise AssertionError('the rollout did not finish')


def settle(store, replicas=4, strategy=None):
    """A Deployment whose pods are all Ready."""
    store.apply([deployment(replicas, strategy=strategy)])
    drive(store)


# ---------------------------------------------------------------- RollingUpdate
@pytest.mark.parametrize('replicas, strategy, max_live, min_available', [
    (4, rolling(1, 0), 5, 4),
    (4, rolling(0, 1), 4, 3),
    (4, None, 5, 3),                            # the default 25%/25%: 1 up, 1 down
    (10, rolling('25%', '25%'), 13, 8),         # surge rounds up, unavailable down
    (3, rolling('100%', 0), 6, 3),
    (5, rolling(2, '40%'), 7, 3),
    (3, rolling(0, '10%'), 3, 2),               # both round to 0: one may go anyway
])
@pytest.mark.parametrize('finish_first', [False, True], ids=['ready first', 'gone first'])
def test_a_rolling_update_stays_within_its_bounds(store, replicas, strategy, max_live,
                                                   min_available, finish_first):
    settle(store, replicas, strategy)
    old_hash = template_hash(store)
    bounds = Bounds(store, max_live, min_available)
    store.apply([deployment(replicas, port=9090, strategy=strategy)])
    bounds.check()
    drive(store, bounds, finish_first)
    new_hash = template_hash(store)
    assert new_hash != old_hash and bounds.steps > replicas
    assert len(pods(store, tpl_hash=new_hash)) == len(pods(store)) == replicas
    st = status(store)
    assert (st['replicas'], st['updatedReplicas'], st['readyReplicas'],
            st['availableReplicas'], st['unavailableReplicas']) == \
        (replicas, replicas, replicas, replicas, 0)


def test_max_surge_one_max_unavailable_zero_goes_one_pod_at_a_time(store):
    settle(store, 4, rolling(1, 0))
    old = names(pods(store))
    store.apply([deployment(4, port=9090, strategy=rolling(1, 0))])
    [first] = [p for p in pods(store) if p['metadata']['name'] not in old]
    assert pods(store, live=False) == []             # nothing old goes before one is new
    set_ready(store, first)
    assert names(pods(store, live=False)) == [old[-1]]          # the newest old pod
    [second] = [p for p in pods(store, live=True)
                if p['metadata']['name'] not in old + [first['metadata']['name']]]
    assert not ready(second)
    # A terminating pod is no replica: its end changes nothing.
    finish(store, pods(store, live=False)[0])
    assert len(pods(store, live=True)) == 5


def test_old_pods_go_not_ready_first_then_the_newest(store):
    settle(store, 3, rolling(0, 1))
    oldest, middle, newest = pods(store)
    set_ready(store, middle, False)                  # its readiness probe fails now
    store.apply([deployment(3, port=9090, strategy=rolling(0, 1))])
    assert names(pods(store, live=False)) == names([middle])
    set_ready(store, pods(store, live=True, tpl_hash=template_hash(store))[0])
    assert names(pods(store, live=False)) == names([middle, newest])


def test_an_unready_new_pod_holds_the_rollout(store):
    settle(store, 4, rolling(1, 0))
    store.apply([deployment(4, port=9090, strategy=rolling(1, 0))])
    [new] = pods(store, tpl_hash=template_hash(store))
    set_ready(store, new, False)
    assert pods(store, live=False) == [] and len(pods(store)) == 5
    assert conditions(store)['Available'][:2] == ('True', 'MinimumReplicasAvailable')


# ---------------------------------------------------------------- several revisions
def test_a_template_changed_mid_rollout_scales_the_older_ones_down_first(store):
    settle(store, 4, rolling(1, 0))
    first = template_hash(store)
    store.apply([deployment(4, port=9090, strategy=rolling(1, 0))])
    second = template_hash(store)
    set_ready(store, pods(store, tpl_hash=second)[0])        # one first pod replaced
    [unready] = [p for p in pods(store, live=True, tpl_hash=second) if not ready(p)]
    bounds = Bounds(store, 5, 4)
    store.apply([deployment(4, port=7070, strategy=rolling(1, 0))])
    bounds.check()
    third = template_hash(store)
    # The second template's pod that is not ready yet goes at once: it would only
    # block the rollout; the ready ones of both old templates stay until they may go.
    assert names(pods(store, live=False, tpl_hash=second)) == names([unready])
    assert len(pods(store, live=True, tpl_hash=third)) == 1
    drive(store, bounds)
    assert {p['metadata']['labels']['pod-template-hash'] for p in pods(store)} == {third}
    assert store.get('Deployment', 'default', 'web')['metadata']['annotations'][REVISION] \
        == '3'
    assert first != second != third


def test_the_oldest_template_goes_first(store):
    settle(store, 4, rolling(1, 0))
    first = template_hash(store)
    store.apply([deployment(4, port=9090, strategy=rolling(1, 0))])
    second = template_hash(store)
    set_ready(store, pods(store, tpl_hash=second)[0])
    set_ready(store, pods(store, live=True, tpl_hash=second)[-1])
    store.apply([deployment(4, port=7070, strategy=rolling(1, 0))])
    gone_before = {p['metadata']['name'] for p in pods(store, live=False)}
    set_ready(store, pods(store, live=True, tpl_hash=template_hash(store))[0])
    [went] = [p for p in pods(store, live=False)
              if p['metadata']['name'] not in gone_before]
    assert went['metadata']['labels']['pod-template-hash'] == first
    assert len(pods(store, live=True, tpl_hash=second)) == 2


def test_the_revision_goes_up_with_each_new_template(store):
    settle(store, 2)

    def revision():
        return store.get('Deployment', 'default', 'web')['metadata']['annotations'][REVISION]
    assert revision() == '1'
    store.apply([deployment(2, port=9090)])
    assert revision() == '2'
    drive(store)
    store.apply([deployment(2, port=8080)])            # back to the first template
    assert revision() == '3'
    # Applying the manifest again keeps the controller's annotation: unchanged.
    assert store.apply([deployment(2, port=8080)])['results'] == [
        ['deployment.apps/web', 'unchanged']]
    assert revision() == '3'


def test_the_revision_keeps_counting_when_old_templates_are_forgotten(store):
    settle(store, 1)
    for port in range(9000, 9012):
        store.apply([deployment(1, port=port)])
        drive(store)
    dep = store.get('Deployment', 'default', 'web')
    assert dep['metadata']['annotations'][REVISION] == '13'
    assert len(store.replica_sets[dep['metadata']['uid']]) == 11   # 10 old, 1 current


def test_a_new_template_and_more_replicas_in_one_apply(store):
    settle(store, 4, rolling(1, 0))
    bounds = Bounds(store, 7, 6)
    store.apply([deployment(6, port=9090, strategy=rolling(1, 0))])
    bounds.check()
    drive(store, bounds)
    assert len(pods(store, tpl_hash=template_hash(store))) == len(pods(store)) == 6


# ---------------------------------------------------------------- Recreate
def test_recreate_starts_new_pods_only_once_every_old_one_is_gone(store):
    settle(store, 3, {'type': 'Recreate'})
    old = pods(store)
    store.apply([deployment(3, port=9090, strategy={'type': 'Recreate'})])
    assert names(pods(store, live=False)) == names(old) and pods(store, live=True) == []
    dep = store.get('Deployment', 'default', 'web')
    assert dep['metadata']['annotations'][REVISION] == '1'     # no new ReplicaSet yet
    assert (dep['status']['replicas'], dep['status']['updatedReplicas']) == (0, 0)
    assert conditions(store)['Available'][:2] == ('False', 'MinimumReplicasUnavailable')
    finish(store, old[0])
    finish(store, old[1])
    assert pods(store, live=True) == []               # one old pod still terminates
    finish(store, old[2])
    new = pods(store)
    assert len(new) == 3 and not any(terminating(p) for p in new)
    assert {p['metadata']['labels']['pod-template-hash'] for p in new} == \
        {template_hash(store)}
    assert store.get('Deployment', 'default', 'web')['metadata']['annotations'][REVISION] \
        == '2'
    drive(store)
    assert conditions(store)['Available'][:2] == ('True', 'MinimumReplicasAvailable')


def test_recreate_scales_without_a_rollout(store):
    settle(store, 2, {'type': 'Recreate'})
    store.scale('default', 'web', 4)
    assert len(pods(store, live=True)) == 4 and pods(store, live=False) == []


# ---------------------------------------------------------------- scaling mid-rollout
def mid_rollout(store):
    """10 ready pods (25%/25%: 3 more, 2 fewer), then a new template: 8 old, 5 new."""
    settle(store, 10, rolling('25%', '25%'))
    old_hash = template_hash(store)
    store.apply([deployment(10, port=9090, strategy=rolling('25%', '25%'))])
    new_hash = template_hash(store)
    assert len(pods(store, live=True, tpl_hash=old_hash)) == 8
    assert len(pods(store, live=True, tpl_hash=new_hash)) == 5
    return old_hash, new_hash


def test_scaling_up_mid_rollout_shares_the_new_pods_out_in_proportion(store):
    old_hash, new_hash = mid_rollout(store)
    store.scale('default', 'web', 20)
    # 20 + 5 (25% up) = 25 pods: 8 * 25/13 -> 15 old, 5 * 25/13 -> 10 new.
    assert len(pods(store, live=True, tpl_hash=old_hash)) == 15
    assert len(pods(store, live=True, tpl_hash=new_hash)) == 10
    assert status(store)['observedGeneration'] == 3
    bounds = Bounds(store, 25, 15)
    drive(store, bounds)
    assert len(pods(store, tpl_hash=new_hash)) == len(pods(store)) == 20


def test_scaling_down_mid_rollout_shares_the_cut_out_in_proportion(store):
    old_hash, new_hash = mid_rollout(store)
    old_ready = pods(store, live=True, tpl_hash=old_hash)
    store.scale('default', 'web', 5)
    # 5 + 2 (25% up) = 7 pods: 8 * 7/13 -> 4 old, 5 * 7/13 -> 3 new; newest go first.
    assert names(pods(store, live=True, tpl_hash=old_hash)) == names(old_ready[:4])
    assert len(pods(store, live=True, tpl_hash=new_hash)) == 3
    drive(store, Bounds(store, 7, 4))
    assert len(pods(store, tpl_hash=new_hash)) == len(pods(store)) == 5


def test_scaling_to_zero_mid_rollout_and_back(store):
    mid_rollout(store)
    store.scale('default', 'web', 0)
    assert pods(store, live=True) == []
    drive(store)
    store.scale('default', 'web', 3)
    assert len(pods(store, live=True, tpl_hash=template_hash(store))) == 3


# ---------------------------------------------------------------- minReadySeconds
def test_a_pod_is_available_after_min_ready_seconds_and_tick_notices(store, clock):
    store.apply([deployment(2, strategy=rolling(1, 0), minReadySeconds=10)])
    for pod in pods(store):
        set_ready(store, pod, since=clock.now - 60)
    store.apply([deployment(2, port=9090, strategy=rolling(1, 0), minReadySeconds=10)])
    [new] = pods(store, tpl_hash=template_hash(store))
    set_ready(store, new, since=clock.now)
    assert pods(store, live=False) == []             # Ready, not yet available
    st = status(store)
    assert (st['readyReplicas'], st['availableReplicas']) == (3, 2)
    version = store.rv
    clock.now += 5
    store.tick()
    assert store.rv == version and pods(store, live=False) == []    # nothing moved
    clock.now += 6
    store.tick()
    assert len(pods(store, live=False)) == 1 and store.rv > version
    assert status(store)['availableReplicas'] == 2


def test_a_ready_pod_without_a_transition_time_is_available_at_once(store):
    store.apply([deployment(2, strategy=rolling(1, 0), minReadySeconds=30)])
    drive(store)
    assert status(store)['availableReplicas'] == 2


# ---------------------------------------------------------------- status
def test_status_and_conditions_through_a_rollout(store):
    store.apply([deployment(2)])
    first = f'web-{template_hash(store)}'
    st = status(store)
    assert (st['observedGeneration'], st['replicas'], st['updatedReplicas'],
            st['readyReplicas'], st['availableReplicas'], st['unavailableReplicas']) == \
        (1, 2, 2, 0, 0, 2)
    assert conditions(store) == {
        'Available': ('False', 'MinimumReplicasUnavailable',
                      'Deployment does not have minimum availability.'),
        'Progressing': ('True', 'ReplicaSetUpdated', f'ReplicaSet "{first}" is progressing.')}
    since = next(c for c in st['conditions']
                 if c['type'] == 'Progressing')['lastTransitionTime']
    drive(store)
    assert conditions(store) == {
        'Available': ('True', 'MinimumReplicasAvailable',
                      'Deployment has minimum availability.'),
        'Progressing': ('True', 'NewReplicaSetAvailable',
                        f'ReplicaSet "{first}" has successfully progressed.')}
    store.apply([deployment(2, port=9090)])
    second = f'web-{template_hash(store)}'
    assert conditions(store)['Progressing'] == (
        'True', 'NewReplicaSetCreated', f'Created new replica set "{second}"')
    drive(store)
    st = status(store)
    assert [c['type'] for c in st['conditions']] == ['Available', 'Progressing']
    progressing = st['conditions'][1]
    assert (progressing['reason'], progressing['message']) == (
        'NewReplicaSetAvailable', f'ReplicaSet "{second}" has successfully progressed.')
    assert progressing['lastTransitionTime'] == since        # True all along
    assert st['observedGeneration'] == 2


def test_the_stored_strategy_has_the_api_servers_defaults(store):
    store.apply([deployment(2), deployment(2, name='partial',
                                           strategy={'rollingUpdate': {'maxSurge': 1}}),
                 deployment(2, name='again', strategy={'type': 'Recreate'})])
    spec = store.get('Deployment', 'default', 'web')['spec']
    assert spec['strategy'] == rolling('25%', '25%') and 'minReadySeconds' not in spec
    assert store.get('Deployment', 'default', 'partial')['spec']['strategy'] == \
        rolling(1, '25%')
    assert store.get('Deployment', 'default', 'again')['spec']['strategy'] == \
        {'type': 'Recreate'}
    assert store.apply([deployment(2)])['results'] == [['deployment.apps/web', 'unchanged']]


def test_deleting_a_deployment_forgets_its_replica_sets(store):
    settle(store, 2)
    store.apply([deployment(2, port=9090)])
    store.delete('Deployment', 'default', 'web')
    assert store.replica_sets == {}
    assert pods(store, live=True) == []


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize('spec, path, words', [
    ({'strategy': {'type': 'Rolling'}}, 'spec.strategy.type',
     ['unsupported value "Rolling"; did you mean "RollingUpdate"?',
      'supported: RollingUpdate, Recreate']),
    ({'strategy': 'RollingUpdate'}, 'spec.strategy', ['must be a mapping']),
    ({'strategy': {'type': 'Recreate', 'rollingUpdate': {'maxSurge': 1}}},
     'spec.strategy.rollingUpdate',
     ["Forbidden: may not be specified when strategy `type` is 'Recreate'"]),
    ({'strategy': rolling(0, 0)}, 'spec.strategy.rollingUpdate.maxUnavailable',
     ['Invalid value: 0: may not be 0 when `maxSurge` is 0']),
    ({'strategy': rolling('0%', '0%')}, 'spec.strategy.rollingUpdate.maxUnavailable',
     ['Invalid value: "0%": may not be 0 when `maxSurge` is 0']),
    ({'strategy': rolling('20Percent', 1)}, 'spec.strategy.rollingUpdate.maxSurge',
     ['a valid percent string', 'valid: an integer >= 0 or a percentage', '"25%"']),
    ({'strategy': rolling('1', 1)}, 'spec.strategy.rollingUpdate.maxSurge',
     ['write the number without quotes']),
    ({'strategy': rolling(1, -1)}, 'spec.strategy.rollingUpdate.maxUnavailable',
     ['Invalid value: -1: must be greater than or equal to 0']),
    ({'strategy': rolling(1, '110%')}, 'spec.strategy.rollingUpdate.maxUnavailable',
     ['Invalid value: "110%": must not be greater than 100%']),
    ({'strategy': rolling(1.5, 1)}, 'spec.strategy.rollingUpdate.maxSurge',
     ['must be an integer >= 0 or a percentage', 'got number 1.5']),
    ({'strategy': {'rollingUpdate': {'maxSurg': 1}}}, 'spec.strategy.rollingUpdate.maxSurg',
     ['did you mean "maxSurge"?', 'maxSurge, maxUnavailable']),
    ({'minReadySeconds': -1}, 'spec.minReadySeconds',
     ['must be greater than or equal to 0']),
    ({'minReadySeconds': '5'}, 'spec.minReadySeconds', ['must be an integer']),
])
def test_a_bad_rollout_field_is_rejected_with_its_path_and_nothing_is_applied(
        store, spec, path, words):
    bad = deployment(2)
    bad['spec'].update(spec)
    with pytest.raises(ApplyError) as info:
        store.apply([deployment(2, name='fine'), bad])
    [error] = info.value.errors
    assert (error.ref, error.path) == ('Deployment default/web', path)
    for word in words:
        assert word in error.message
    assert store.list('Deployment') == [] and store.list('Pod') == []


@pytest.mark.parametrize('strategy', [
    rolling(0, '10%'),                  # 0 of 3 when resolved, but not 0 as written
    {'rollingUpdate': {'maxUnavailable': 0}},          # maxSurge: the default 25%
    rolling('200%', 3), {'type': 'Recreate'},
])
def test_valid_strategies_are_accepted(store, strategy):
    store.apply([deployment(3, strategy=strategy)])
    assert len(pods(store)) == 3


# ---------------------------------------------------------------- rollout restart
def test_rollout_restart_stamps_the_template_and_rolls_out(store, clock):
    settle(store, 3)
    old_hash = template_hash(store)
    stamp = naming.now_rfc3339(clock.stamps + 1)            # the time it is restarted
    assert store.restart_rollout('default', 'web') == 'deployment.apps/web restarted'
    dep = store.get('Deployment', 'default', 'web')
    assert dep['spec']['template']['metadata']['annotations'][RESTARTED_AT] == stamp
    assert dep['metadata']['generation'] == 2
    assert dep['metadata']['annotations'][REVISION] == '2'
    assert template_hash(store) != old_hash
    drive(store, Bounds(store, 4, 3))
    assert all(p['metadata']['annotations'][RESTARTED_AT] == stamp for p in pods(store))
    # Applying the manifest again (without the annotation) does not undo the restart.
    assert store.apply([deployment(3)])['results'] == [['deployment.apps/web', 'unchanged']]
    assert template_hash(store) != old_hash


def test_rollout_restart_of_a_missing_deployment(store):
    with pytest.raises(NotFound, match='deployments.apps "nope" not found in namespace'):
        store.restart_rollout('default', 'nope')


def test_rollout_restart_twice_in_one_second_is_refused(store, monkeypatch):
    store.apply([deployment(2)])
    monkeypatch.setattr(naming, 'now_rfc3339', lambda moment=None: '2024-05-01T12:00:00Z')
    store.restart_rollout('default', 'web')
    with pytest.raises(KubelabError, match='within the past second'):
        store.restart_rollout('default', 'web')


def test_rollout_restart_and_snapshot_over_http(store, tmp_path):
    """The client's calls against the real API server on its Unix socket (the client
    is built by hand: its constructor looks for a running lab)."""
    store.apply([deployment(2)])
    api = APIServer(store, 'token', lambda: {}, on_shutdown=lambda: None,
                    path=str(tmp_path / 'api.sock'))
    api.start()
    try:
        client = object.__new__(Client)
        client.socket_path, client.token = api.path, 'token'
        client.state_dir = str(tmp_path)
        version, _ = client.snapshot()
        assert client.restart_rollout('default', 'web')['message'] == \
            'deployment.apps/web restarted'
        newer, objects = client.snapshot(version, timeout=5)
        [dep] = objects['Deployment']
        assert newer > version and RESTARTED_AT in \
            dep['spec']['template']['metadata']['annotations']
        with pytest.raises(NotFound, match='deployments.apps "nope" not found'):
            client.restart_rollout('default', 'nope')
    finally:
        api.stop()


# ---------------------------------------------------------------- printers
def test_rollout_status_lines_are_kubectls():
    def line(generation=1, **status):
        return printers.rollout_status({
            'metadata': {'name': 'web', 'generation': generation}, 'spec': {'replicas': 3},
            'status': {'observedGeneration': 1, **status}})
    waiting = 'Waiting for deployment "web" rollout to finish: '
    assert line(generation=2) == ('Waiting for deployment spec update to be observed...',
                                  False)
    assert line(replicas=4, updatedReplicas=1) == (
        f'{waiting}1 out of 3 new replicas have been updated...', False)
    assert line(replicas=4, updatedReplicas=3, availableReplicas=3) == (
        f'{waiting}1 old replicas are pending termination...', False)
    assert line(replicas=3, updatedReplicas=3, availableReplicas=2) == (
        f'{waiting}2 of 3 updated replicas are available...', False)
    assert line(replicas=3, updatedReplicas=3, availableReplicas=3) == (
        'deployment "web" successfully rolled out', True)


def test_get_deployments_mid_rollout_shows_kubectls_columns(store):
    settle(store, 4, rolling(1, 0))
    store.apply([deployment(4, port=9090, strategy=rolling(1, 0))])
    now = datetime.datetime.fromtimestamp(EPOCH + 100, datetime.timezone.utc)
    out = printers.render('deploy', store.list('Deployment'), None, now)
    header, row = out.splitlines()
    assert header.split() == ['NAME', 'READY', 'UP-TO-DATE', 'AVAILABLE', 'AGE']
    assert row.split()[:4] == ['web', '4/4', '1', '4']


# ---------------------------------------------------------------- the CLI
class FakeClient:
    """The CLI's view of a lab: a real store, whose kubelets take one ``step`` each
    time the CLI polls again, as time passes between polls."""

    def __init__(self, store, steps=True):
        self.store = store
        self.steps = steps
        self.restarted = []

    def restart_rollout(self, namespace, name):
        self.restarted.append((namespace, name))
        return {'message': self.store.restart_rollout(namespace, name)}

    def snapshot(self, since=0, timeout=0):
        if since and self.steps:
            step(self.store)
        return self.store.snapshot()


@pytest.fixture
def lab(store, monkeypatch):
    client = FakeClient(store)
    monkeypatch.setattr(cli_objects, 'Client', lambda: client)
    return client


@pytest.mark.parametrize('argv, command, namespace', [
    ('rollout restart deployment web', cli_objects.cmd_rollout_restart, 'default'),
    ('rollout restart deploy web -n dev', cli_objects.cmd_rollout_restart, 'dev'),
    ('rollout restart deployment/web', cli_objects.cmd_rollout_restart, 'default'),
    ('rollout -n dev restart deployments/web', cli_objects.cmd_rollout_restart, 'dev'),
    ('rollout -n dev status deploy web', cli_objects.cmd_rollout_status, 'dev'),
    ('rollout status deployment/web --namespace dev', cli_objects.cmd_rollout_status, 'dev'),
])
def test_rollout_arguments(argv, command, namespace):
    args = build_parser().parse_args(argv.split())
    assert (args.fn, args.namespace, cli_objects.deployment_name(args)) == (command, namespace, 'web')


def test_rollout_status_waits_60_seconds_unless_told():
    parse = build_parser().parse_args
    assert parse(['rollout', 'status', 'deploy/web']).timeout == 60
    assert parse(['rollout', 'status', 'deploy/web', '--timeout', '1m30s']).timeout == 90


@pytest.mark.parametrize('text, seconds', [('60s', 60), ('2m', 120), ('1m30s', 90),
                                           ('500ms', 0.5), ('1h', 3600), ('45', 45),
                                           ('0', 0), ('1.5s', 1.5)])
def test_rollout_status_timeouts_are_kubectl_durations(text, seconds):
    assert cli_objects.parse_duration(text) == seconds


@pytest.mark.parametrize('text', ['soon', '5x', '-5s', '1m 30s', ''])
def test_a_bad_duration_is_refused(text):
    with pytest.raises(Exception, match='invalid duration'):
        cli_objects.parse_duration(text)


def test_rollout_restart_command(lab, capsys):
    lab.store.apply([deployment(2)])
    assert cli.main(['rollout', 'restart', 'deploy/web']) == 0
    assert capsys.readouterr().out == 'deployment.apps/web restarted\n'
    assert lab.restarted == [('default', 'web')]


@pytest.mark.parametrize('argv, message', [
    (['rollout', 'restart', 'pod', 'web'], 'rollout works on deployments, not "pod"'),
    (['rollout', 'restart', 'deployment'], 'rollout restart needs the name of a deployment'),
    (['rollout', 'status', 'deployment/web', 'web'], 'no need to specify a resource type'),
    (['rollout', 'restart', 'deployment', 'nope'],
     'Error from server (NotFound): deployments.apps "nope" not found'),
    (['rollout', 'status', 'deployment', 'nope'],
     'Error from server (NotFound): deployments.apps "nope" not found'),
    (['rollout', 'restart', 'deploymnt', 'web'], 'did you mean "deployment"?'),
])
def test_rollout_errors(lab, capsys, argv, message):
    assert cli.main(argv) == 1
    assert message in capsys.readouterr().err


def test_rollout_status_follows_the_rollout_to_its_end(lab, capsys):
    settle(lab.store, 3)
    lab.store.apply([deployment(3, port=9090)])
    assert cli.main(['rollout', 'status', 'deployment', 'web']) == 0
    lines = capsys.readouterr().out.splitlines()
    waiting = 'Waiting for deployment "web" rollout to finish: '
    assert lines[0] == f'{waiting}1 out of 3 new replicas have been updated...'
    assert f'{waiting}1 old replicas are pending termination...' in lines
    assert lines[-1] == 'deployment "web" successfully rolled out'
    assert len(lines) == len(set(lines))                     # each line once in a row


def test_rollout_status_times_out(store, monkeypatch, capsys):
    store.apply([deployment(2)])                      # its pods never become ready
    monkeypatch.setattr(cli_objects, 'Client', lambda: FakeClient(store, steps=False))
    assert cli.main(['rollout', 'status', 'deploy', 'web', '--timeout', '50ms']) == 1
    out, err = capsys.readouterr()
    assert out == 'Waiting for deployment "web" rollout to finish: 0 of 2 updated ' \
                  'replicas are available...\n'
    assert 'timed out after 0.05s waiting for deployment "web" rollout to finish' in err


def test_wait_and_apply_take_kubectl_durations():
    """kubectl's --timeout is a duration (5s, 2m, 1m30s); a plain number is seconds."""
    parse = build_parser().parse_args
    assert parse(['wait']).timeout == 60
    assert parse(['wait', '--timeout', '5s']).timeout == 5
    assert parse(['wait', '--timeout', '90']).timeout == 90
    assert parse(['apply', '-f', 'x.yaml', '--wait', '--timeout', '2m']).timeout == 120
    with pytest.raises(SystemExit):
        parse(['wait', '--timeout', '5 parsecs'])
