"""The Deployment controller: how a Deployment's pods follow its template.

Deployments roll out as Kubernetes' deployment and ReplicaSet controllers roll them out,
without ReplicaSet objects: a Deployment's pods are grouped by their pod-template-hash,
and a ``ReplicaSet`` record per hash keeps its size and revision. RollingUpdate grows
the new template's pods into the room maxSurge leaves (rounded up) and removes old ones
(not ready first, then the newest) while replicas - maxUnavailable (rounded down) stay
available, i.e. Ready for minReadySeconds; Recreate removes every old pod and starts
the new ones once the last old one is gone. Terminating pods are not replicas. A change
of replicas mid-rollout is shared out in proportion among the templates. The status
carries the counts and the Available and Progressing conditions, the Deployment the
``deployment.kubernetes.io/revision`` annotation.

Who does what: a ``DeploymentController`` keeps the records and decides; the store
(services/store_controllers.py) acts. Each of its calls takes the Deployment, the pods of its
namespace and the time, and counts the records' pods afresh: ``sync`` is one pass of
the deployment controller (it resizes a record), ``pod_changes`` the ReplicaSet
controller's answer (the pods to make and to terminate, which the store makes and
terminates), ``status`` the Deployment's new status. The sizing arithmetic, the
ranking of pods to remove and the status are pure functions of the records.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import math
from dataclasses import dataclass, field

from services import naming
from services.conditions import pod_ready
from services.errors import KubelabError

#: The Deployment annotation with the revision of its current template.
REVISION = 'deployment.kubernetes.io/revision'
#: The pod template annotation ``kubectl rollout restart`` sets.
RESTARTED_AT = 'kubectl.kubernetes.io/restartedAt'
#: Old ReplicaSets without pods that are remembered (revisionHistoryLimit's default).
REVISION_HISTORY = 10
#: Deployment controller passes per change: a scaling event, then a scale-up, a
#: scale-down and a scale-up into the room it left is the most one change asks for.
MAX_PASSES = 8


@dataclass
class ReplicaSet:
    """What the deployment controller keeps of one ReplicaSet of a Deployment.

    kubelab has no ReplicaSet objects; their pods name them (``web-<hash>``, an
    ownerReference of kind ReplicaSet) and this record holds the rest the controller
    reads and writes: the template, the size (``spec.replicas``), the revision, and
    the Deployment's replicas and replicas + maxSurge when it was last sized (the
    desired-replicas and max-replicas annotations, which tell a scaling event from a
    rollout and the proportions of one). ``pods`` and the counts are its status,
    refreshed at every pass.
    """
    name: str
    hash: str
    template: dict
    created: int
    revision: int
    replicas: int = 0
    desired: int = 0
    max_replicas: int = 0
    pods: list = field(default_factory=list)
    active: int = 0
    ready: int = 0
    available: int = 0


class DeploymentController:
    """The ReplicaSet records of every Deployment, and the controllers' decisions."""

    def __init__(self):
        #: Deployment uid -> pod-template-hash -> its ReplicaSet record.
        self.replica_sets: dict[str, dict[str, ReplicaSet]] = {}
        self._serial = itertools.count(1)      # the records' creation order

    def restore(self, records: dict) -> None:
        """Take back the records kept on disk (services/persistence.py: RS_FIELDS)."""
        for uid, sets in records.items():
            self.replica_sets[uid] = {h: ReplicaSet(**fields) for h, fields in sets.items()}
        created = [rs.created for sets in self.replica_sets.values() for rs in sets.values()]
        self._serial = itertools.count(max(created, default=0) + 1)

    def forget(self, dep: dict) -> None:
        """Drop the records of a deleted Deployment."""
        self.replica_sets.pop(dep['metadata']['uid'], None)

    def pod_changes(self, dep: dict, pods: list[dict],
                    now: float) -> list[tuple[ReplicaSet, int, list[dict]]]:
        """The ReplicaSet controller: for every record without ``replicas`` active
        pods, the number of pods to make or the pods to terminate, ranked as
        Kubernetes ranks them."""
        changes = []
        for rs in self._replica_sets(dep, pods, now).values():
            active = [p for p in rs.pods if _active(p)]
            surplus = len(active) - rs.replicas
            if surplus < 0:
                changes.append((rs, -surplus, []))
            elif surplus > 0:
                changes.append((rs, 0, sorted(active, key=_deletion_rank)[:surplus]))
        return changes

    def sync(self, dep: dict, pods: list[dict], now: float) -> bool:
        """One pass of the deployment controller; True when it resized a ReplicaSet.

        A change of ``replicas`` while ReplicaSets of several templates have pods is a
        scaling event, handled before any rollout step (the pods are shared out in
        proportion); then, or when that moved nothing, the strategy's step."""
        sets = self._replica_sets(dep, pods, now)
        new = self._new_replica_set(dep, sets, create=False)
        olds = [rs for rs in sets.values() if rs is not new]
        replicas = dep['spec']['replicas']
        if any(rs.replicas and rs.desired != replicas for rs in sets.values()) \
                and _scale(dep, new, olds):
            return True
        if dep['spec']['strategy']['type'] == 'Recreate':
            return self._rollout_recreate(dep, sets, new, olds)
        return self._rollout_rolling(dep, sets)

    def status(self, dep: dict, pods: list[dict], now: float, before: dict) -> dict:
        """The Deployment's status (``before``: the one it had before this change),
        once the old ReplicaSets past the revision history are forgotten."""
        sets = self._replica_sets(dep, pods, now)
        new = sets.get(naming.pod_template_hash(dep['spec']['template']))
        _prune_history(sets, new)
        return _deployment_status(dep, before, sets, new)

    def _replica_sets(self, dep: dict, pods: list[dict], now: float) -> dict[str, ReplicaSet]:
        """The Deployment's ReplicaSet records by pod-template-hash, with their pods."""
        sets = self.replica_sets.setdefault(dep['metadata']['uid'], {})
        min_ready = dep['spec'].get('minReadySeconds', 0)
        for rs in sets.values():
            rs.pods, rs.active, rs.ready, rs.available = [], 0, 0, 0
        for pod in pods:
            rs = sets.get(pod['metadata'].get('labels', {}).get('pod-template-hash'))
            if rs is None or not owned_by(pod, dep):
                continue              # not made by this Deployment's controller
            rs.pods.append(pod)
            if _active(pod):
                rs.active += 1
                rs.ready += pod_ready(pod)
                rs.available += _available(pod, min_ready, now)
        return sets

    def _new_replica_set(self, dep: dict, sets: dict[str, ReplicaSet],
                         create: bool) -> ReplicaSet | None:
        """The record of the current template (made when ``create``), given the next
        revision when an older one is newer; the Deployment's revision annotation
        follows it."""
        template = dep['spec']['template']
        tpl_hash = naming.pod_template_hash(template)
        rs = sets.get(tpl_hash)
        revision = max((o.revision for h, o in sets.items() if h != tpl_hash), default=0) + 1
        if rs is None:
            if not create:
                return None
            surge, _ = _fenceposts(dep)
            replicas = dep['spec']['replicas']
            rs = ReplicaSet(name=f'{dep["metadata"]["name"]}-{tpl_hash}', hash=tpl_hash,
                            template=copy.deepcopy(template), created=next(self._serial),
                            revision=revision, desired=replicas,
                            max_replicas=replicas + surge)
            sets[tpl_hash] = rs
            _set_condition(dep['status'], 'Progressing', 'True', 'NewReplicaSetCreated',
                           f'Created new replica set "{rs.name}"')
        elif rs.revision < revision:
            rs.revision = revision
        dep['metadata'].setdefault('annotations', {})[REVISION] = str(rs.revision)
        return rs

    def _rollout_rolling(self, dep: dict, sets: dict[str, ReplicaSet]) -> bool:
        """A RollingUpdate step: grow the new ReplicaSet into the room maxSurge leaves,
        else shrink the old ones as far as maxUnavailable allows."""
        new = self._new_replica_set(dep, sets, create=True)
        olds = [rs for rs in sets.values() if rs is not new]
        replicas = dep['spec']['replicas']
        surge, unavailable = _fenceposts(dep)
        if new.replicas > replicas:
            return _resize(dep, new, replicas)
        if new.replicas < replicas:
            room = replicas + surge - sum(rs.replicas for rs in sets.values())
            if room > 0:
                grown = new.replicas + min(room, replicas - new.replicas)
                return _resize(dep, new, grown)
        if not any(rs.replicas for rs in olds):
            return False
        min_available = replicas - unavailable
        budget = sum(rs.replicas for rs in sets.values()) - min_available \
            - (new.replicas - new.available)
        if budget <= 0:
            return False
        olds.sort(key=lambda rs: rs.created)
        resized = False
        # Unhealthy pods first, oldest ReplicaSet first: they would block the rollout.
        for rs in olds:
            unhealthy = min(budget, rs.replicas - rs.available)
            if unhealthy > 0:
                resized |= _resize(dep, rs, rs.replicas - unhealthy)
                budget -= unhealthy
        # Then available ones, as long as min_available stay available.
        spare = sum(rs.available for rs in sets.values()) - min_available
        for rs in olds:
            if spare <= 0:
                break
            down = min(rs.replicas, spare)
            if down:
                resized |= _resize(dep, rs, rs.replicas - down)
                spare -= down
        return resized

    def _rollout_recreate(self, dep: dict, sets: dict[str, ReplicaSet],
                          new: ReplicaSet | None, olds: list[ReplicaSet]) -> bool:
        """A Recreate step: old ReplicaSets to 0; once none of their pods is left (a
        terminating one counts), the new one, made only now, to ``replicas``."""
        if any([_resize(dep, rs, 0) for rs in olds if rs.replicas]):
            return True
        if any(p.get('status', {}).get('phase') not in ('Succeeded', 'Failed')
               for rs in olds for p in rs.pods):
            return False
        new = new or self._new_replica_set(dep, sets, create=True)
        return _resize(dep, new, dep['spec']['replicas'])


# ------------------------------------------------------------ what the store asks of it
def new_pod(dep: dict, rs: ReplicaSet, name: str) -> dict:
    """A pod of a ReplicaSet record, as the ReplicaSet controller makes it from the
    template (without a status): the pod-template-hash label, ``generateName`` and an
    ownerReference of kind ReplicaSet with the Deployment's uid."""
    template = rs.template
    labels = dict(template['metadata'].get('labels', {}))
    labels['pod-template-hash'] = rs.hash
    return {
        'apiVersion': 'v1', 'kind': 'Pod',
        'metadata': {'name': name, 'namespace': dep['metadata']['namespace'],
                     'labels': labels,
                     'annotations': dict(template['metadata'].get('annotations', {})),
                     'uid': naming.new_uid(), 'creationTimestamp': naming.now_rfc3339(),
                     'generateName': f'{rs.name}-',
                     'ownerReferences': [{
                         'apiVersion': 'apps/v1', 'kind': 'ReplicaSet', 'name': rs.name,
                         'uid': dep['metadata']['uid'], 'controller': True}]},
        'spec': copy.deepcopy(template['spec']),
    }


def keep_rollout_marks(obj: dict, old: dict) -> None:
    """Carry the revision annotation and the template's restartedAt annotation of a
    stored Deployment into an applied one that does not set them: kubectl apply leaves
    what it did not write, so applying the manifest again neither undoes a
    ``rollout restart`` nor forgets the revision."""
    revision = old['metadata'].get('annotations', {}).get(REVISION)
    if revision is not None:
        obj['metadata'].setdefault('annotations', {}).setdefault(REVISION, revision)
    restarted = old['spec']['template']['metadata'].get('annotations', {}).get(RESTARTED_AT)
    if restarted is not None:
        obj['spec']['template']['metadata'].setdefault('annotations', {}).setdefault(
            RESTARTED_AT, restarted)


def stamp_restart(dep: dict, now: str) -> None:
    """``kubectl rollout restart``'s patch: the time ``now`` in the pod template's
    restartedAt annotation, so the template (and its hash) is new. A second restart
    within the same second would change nothing, and is refused as kubectl refuses it."""
    meta = dep['spec']['template']['metadata']
    if meta.get('annotations', {}).get(RESTARTED_AT) == now:
        raise KubelabError(f'failed to create patch for {dep["metadata"]["name"]}: if '
                           'restart has already been triggered within the past second, '
                           'please wait before attempting to trigger another')
    meta.setdefault('annotations', {})[RESTARTED_AT] = now


def owned_by(obj: dict, owner: dict) -> bool:
    """``owner`` (by uid) is among ``obj``'s ownerReferences."""
    return any(ref.get('uid') == owner['metadata']['uid']
               for ref in obj['metadata'].get('ownerReferences') or [])


# ------------------------------------------------------------ pods
def _active(pod: dict) -> bool:
    """Neither terminating nor finished: a pod that counts as a replica."""
    return not pod['metadata'].get('deletionTimestamp') and \
        pod.get('status', {}).get('phase') not in ('Succeeded', 'Failed')


def _seconds(timestamp: str) -> float:
    """An RFC 3339 time as seconds since the epoch."""
    return datetime.datetime.fromisoformat(timestamp.replace('Z', '+00:00')).timestamp()


def _ready_since(pod: dict) -> str:
    """The Ready condition's lastTransitionTime ('' when there is none)."""
    for cond in pod.get('status', {}).get('conditions') or []:
        if cond.get('type') == 'Ready':
            return cond.get('lastTransitionTime') or ''
    return ''


def _available(pod: dict, min_ready: int, now: float) -> bool:
    """Ready for at least ``min_ready`` seconds (minReadySeconds). The time is the
    Ready condition's lastTransitionTime; a Ready pod without one counts as available
    at once (kubelab's kubelet does not write it)."""
    if not pod_ready(pod):
        return False
    since = _ready_since(pod)
    return not min_ready or not since or _seconds(since) + min_ready < now


#: Pods in these phases go first when a ReplicaSet shrinks.
_PHASE_RANK = {'Pending': 0, 'Unknown': 1, 'Running': 2}


def _deletion_rank(pod: dict) -> tuple:
    """Sort key of the ReplicaSet controller's choice of pods to remove, first first:
    unscheduled, then pending, then not ready, then ready for the shortest time, then
    restarted most, then newest."""
    status = pod.get('status', {})
    since = _ready_since(pod)
    restarts = sum(c.get('restartCount', 0) for c in status.get('containerStatuses') or [])
    return (bool(pod['spec'].get('nodeName')), _PHASE_RANK.get(status.get('phase'), 2),
            pod_ready(pod), -_seconds(since) if since else -math.inf, -restarts,
            -_seconds(pod['metadata']['creationTimestamp']))


# ------------------------------------------------------------ sizes
def _scaled(value, total: int, round_up: bool) -> int:
    """An IntOrString (``1``, ``"25%"``) as a number of pods out of ``total``."""
    if isinstance(value, int):
        return value
    share = int(value[:-1]) * total
    return -(-share // 100) if round_up else share // 100


def _fenceposts(dep: dict) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as numbers of pods: surge rounds up, unavailable
    down; when both come to 0 (a small percentage), unavailable is 1 so the rollout
    can move; never more unavailable than replicas. Recreate: (0, 0)."""
    strategy = dep['spec']['strategy']
    if strategy['type'] != 'RollingUpdate':
        return 0, 0
    replicas = dep['spec']['replicas']
    surge = _scaled(strategy['rollingUpdate']['maxSurge'], replicas, True)
    unavailable = _scaled(strategy['rollingUpdate']['maxUnavailable'], replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def _resize(dep: dict, rs: ReplicaSet, size: int) -> bool:
    """Set a record's size and note the Deployment's replicas and maximum it was
    sized for (the desired-replicas and max-replicas annotations); True when its size
    changed."""
    surge, _ = _fenceposts(dep)
    rs.desired = dep['spec']['replicas']
    rs.max_replicas = rs.desired + surge
    resized = rs.replicas != size
    rs.replicas = size
    return resized


def _scale(dep: dict, new: ReplicaSet | None, olds: list[ReplicaSet]) -> bool:
    """A scaling event. One ReplicaSet with pods takes all the replicas; with a
    complete new one the old ones go; otherwise, rolling, the pods that may be added
    or must go are shared out in proportion to the sizes of the ReplicaSets with
    pods, largest first, what rounding leaves to the first."""
    replicas = dep['spec']['replicas']
    active = [rs for rs in olds + [new] if rs is not None and rs.replicas]
    if len(active) == 1:
        return _resize(dep, active[0], replicas)
    if new is not None and new.replicas == new.desired == new.available == replicas:
        return any([_resize(dep, rs, 0) for rs in active if rs is not new])
    if dep['spec']['strategy']['type'] != 'RollingUpdate':
        return False
    surge, _ = _fenceposts(dep)
    allowed = replicas + surge if replicas else 0
    to_add = allowed - sum(rs.replicas for rs in active)
    newer_first = to_add > 0         # a tie: scale up the newer, down the older
    active.sort(key=lambda rs: (-rs.replicas, -rs.created if newer_first else rs.created))
    sizes, added = [], 0
    for rs in active:
        share = _proportion(rs, dep, to_add, added)
        sizes.append(rs.replicas + share)
        added += share
    sizes[0] = max(0, sizes[0] + to_add - added)
    return any([_resize(dep, rs, size) for rs, size in zip(active, sizes)])


def _proportion(rs: ReplicaSet, dep: dict, to_add: int, added: int) -> int:
    """The pods a ReplicaSet gains (or loses) in a scaling event: its size scaled
    from the old maximum (replicas + maxSurge when it was last sized) to the new one,
    rounded half up, within what is still to be added (or removed)."""
    if to_add == added:
        return 0
    replicas = dep['spec']['replicas']
    if replicas == 0:
        share = -rs.replicas
    else:
        before = rs.max_replicas or dep['status'].get('replicas', 0)
        if not before:
            return 0
        share = math.floor(rs.replicas * (replicas + _fenceposts(dep)[0]) / before + 0.5) \
            - rs.replicas
    left = to_add - added
    return min(share, left) if to_add > 0 else max(share, left)


def _prune_history(sets: dict[str, ReplicaSet], new: ReplicaSet | None) -> None:
    """Forget all but the newest REVISION_HISTORY old ReplicaSets without pods."""
    idle = sorted((rs for rs in sets.values()
                   if rs is not new and not rs.replicas and not rs.pods),
                  key=lambda rs: rs.created)
    for rs in idle[:max(0, len(idle) - REVISION_HISTORY)]:
        del sets[rs.hash]


# ------------------------------------------------------------ status
def _condition(status: dict, kind: str) -> dict | None:
    return next((c for c in status.get('conditions') or [] if c['type'] == kind), None)


def _set_condition(status: dict, kind: str, value: str, reason: str, message: str,
                   touch: bool = False) -> None:
    """Set a Deployment condition as the controller does: the same status and reason
    change nothing (unless ``touch``: a new lastUpdateTime); the same status keeps
    its lastTransitionTime; the condition set goes last."""
    current = _condition(status, kind)
    if current and (current['status'], current['reason']) == (value, reason) and not touch:
        return
    now = naming.now_rfc3339()
    cond = {'type': kind, 'status': value, 'lastUpdateTime': now,
            'lastTransitionTime': current['lastTransitionTime']
            if current and current['status'] == value else now,
            'reason': reason, 'message': message}
    status['conditions'] = [c for c in status.get('conditions') or []
                            if c['type'] != kind] + [cond]


def _deployment_status(dep: dict, before: dict, sets: dict[str, ReplicaSet],
                       new: ReplicaSet | None) -> dict:
    """The Deployment's status from its ReplicaSets (terminating pods are not
    replicas), with the Available and Progressing conditions: Available while at least
    replicas - maxUnavailable pods are available; Progressing NewReplicaSetAvailable
    once the new ReplicaSet has every replica available, ReplicaSetUpdated whenever a
    count moved forward since ``before``."""
    spec, meta = dep['spec'], dep['metadata']
    available = sum(rs.available for rs in sets.values())
    status = {
        'observedGeneration': meta.get('generation', 1),
        'replicas': sum(rs.active for rs in sets.values()),
        'updatedReplicas': new.active if new else 0,
        'readyReplicas': sum(rs.ready for rs in sets.values()),
        'availableReplicas': available,
        'unavailableReplicas': max(0, sum(rs.replicas for rs in sets.values()) - available),
        'conditions': dep['status'].get('conditions') or [],
    }
    replicas = spec['replicas']
    if available >= replicas - _fenceposts(dep)[1]:
        _set_condition(status, 'Available', 'True', 'MinimumReplicasAvailable',
                       'Deployment has minimum availability.')
    else:
        _set_condition(status, 'Available', 'False', 'MinimumReplicasUnavailable',
                       'Deployment does not have minimum availability.')
    progressing = _condition(status, 'Progressing')
    if status['replicas'] == status['updatedReplicas'] and progressing \
            and progressing['reason'] == 'NewReplicaSetAvailable':
        return status               # a finished rollout: no progress to estimate
    subject = f'ReplicaSet "{new.name}"' if new else f'Deployment "{meta["name"]}"'
    if status['updatedReplicas'] == status['replicas'] == available == replicas:
        _set_condition(status, 'Progressing', 'True', 'NewReplicaSetAvailable',
                       f'{subject} has successfully progressed.')
    elif _moved_forward(before, status):
        _set_condition(status, 'Progressing', 'True', 'ReplicaSetUpdated',
                       f'{subject} is progressing.', touch=True)
    return status


def _moved_forward(before: dict, after: dict) -> bool:
    """More updated, ready or available pods, or fewer old ones, than ``before``."""
    return after['updatedReplicas'] > before.get('updatedReplicas', 0) \
        or after['readyReplicas'] > before.get('readyReplicas', 0) \
        or after['availableReplicas'] > before.get('availableReplicas', 0) \
        or after['replicas'] - after['updatedReplicas'] < \
        before.get('replicas', 0) - before.get('updatedReplicas', 0)
