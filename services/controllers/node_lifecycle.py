"""The node lifecycle controller of kube-controller-manager, and the eviction it drives.

A kubelet says it is alive by renewing its node's Lease (``coordination.k8s.io/v1``,
namespace ``kube-node-lease``) over the network (topo/heartbeat.py), and by posting
its node's Ready condition. This controller reads both with the time and decides, as
kube-controller-manager's node lifecycle controller and its NoExecute taint manager
do:

* **silence**: a node heard from neither way for ``node-monitor-grace-period`` (40 s by
  default) gets every condition set to ``Unknown`` (reason ``NodeStatusUnknown``,
  "Kubelet stopped posting node status."): ``kubectl get nodes`` says NotReady. Its
  pods get ``Ready=False`` at once (MarkPodsNotReady), which takes them out of every
  EndpointSlice's ready set, so kube-proxy stops sending them new connections;
* **taints**: by its Ready condition (False: ``node.kubernetes.io/not-ready``,
  Unknown: ``node.kubernetes.io/unreachable``), a node gets the NoSchedule taint (the
  scheduler sends no new pod there) and the NoExecute one (``timeAdded`` set), both
  removed when Ready turns True again;
* **eviction**: a pod on a node with NoExecute taints is deleted (gracefully, it turns
  Terminating) once it has tolerated them for its ``tolerationSeconds``: at once
  without a matching toleration, never with one that has no seconds. The
  DefaultTolerationSeconds admission (``default_tolerations``) gives every pod that
  has none a toleration of 300 s for both taints. A pod evicted from an unreachable node
  stays Terminating until its kubelet is heard again and kills it; its Deployment
  meanwhile makes a replacement on a node that takes it;
* **disruption**: all the lab's nodes are in one zone (they carry no
  ``topology.kubernetes.io/zone``). Zone states as kube-controller-manager's: Normal,
  PartialDisruption (more than 2 nodes and at least 55% of them not Ready) and
  FullDisruption (none Ready). In Normal, NoExecute taints are added at
  ``--node-eviction-rate`` (0.1 nodes/s: one node every 10 s, the first at once); in
  PartialDisruption a cluster under 50 nodes gets none (the secondary rate is 0 for
  small clusters); in FullDisruption of every zone, as when the control plane lost
  the network, the controller assumes the problem is its own: it adds no NoExecute
  taint and removes those there are, so nothing is evicted.

In the lab the control-plane node's own kubelet reaches the endpoint locally (it runs
on that node), so a failed control-plane node stays Ready while every other node turns
NotReady: one zone with 1 of 3 nodes Ready is Normal, and their pods are evicted after
their tolerationSeconds, as a real single-control-plane cluster would do when its
control plane is cut off (it cannot tell a dead node from a partition).

``NodeLifecycle.reconcile`` is pure but for the zone's rate-limit memory: nodes,
leases, pods and the time in, a ``Decisions`` out; the store writes it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from services.naming import epoch, now_rfc3339

NOT_READY_TAINT = 'node.kubernetes.io/not-ready'
UNREACHABLE_TAINT = 'node.kubernetes.io/unreachable'
LEASE_NAMESPACE = 'kube-node-lease'
#: --node-startup-grace-period: a node whose kubelet never posted gets this long.
STARTUP_GRACE = 60.0
#: 1 / --node-eviction-rate: seconds between two nodes getting NoExecute taints.
EVICTION_INTERVAL = 10.0
#: --unhealthy-zone-threshold and the few nodes below which a zone is never partial.
UNHEALTHY_ZONE_THRESHOLD = 0.55
#: --large-cluster-size-threshold: smaller clusters stop evicting in PartialDisruption.
LARGE_CLUSTER = 50
UNKNOWN_MESSAGE = 'Kubelet stopped posting node status.'
NEVER_MESSAGE = 'Kubelet never posted node status.'


def default_tolerations(spec: dict, seconds: int) -> None:
    """The DefaultTolerationSeconds admission: a pod without a toleration for the
    not-ready or the unreachable NoExecute taint gets one of ``seconds``."""
    tolerations = spec.setdefault('tolerations', [])
    for key in (NOT_READY_TAINT, UNREACHABLE_TAINT):
        if any(_matches(t, {'key': key, 'effect': 'NoExecute'}) for t in tolerations):
            continue
        tolerations.append({'key': key, 'operator': 'Exists', 'effect': 'NoExecute',
                            'tolerationSeconds': seconds})


def _matches(toleration: dict, taint: dict) -> bool:
    """kube-scheduler's ToleratesTaint: effect (empty: all), key (empty with Exists:
    all), value (Equal)."""
    if toleration.get('effect') not in (None, '', taint['effect']):
        return False
    if toleration.get('operator') == 'Exists':
        return not toleration.get('key') or toleration['key'] == taint['key']
    return toleration.get('key') == taint['key'] and \
        (toleration.get('value') or '') == (taint.get('value') or '')


def ready_condition(node: dict) -> dict | None:
    for condition in (node.get('status') or {}).get('conditions') or ():
        if condition.get('type') == 'Ready':
            return condition
    return None


def not_ready(node: dict) -> bool:
    """The node's Ready condition is False, or Unknown since it went silent. A node whose
    kubelet has not posted yet (the lab's nodes at boot, a Store in a unit test) is not
    held against it until the startup grace period has passed."""
    ready = ready_condition(node) or {}
    return ready.get('status') == 'False' or (
        ready.get('status') == 'Unknown' and ready.get('message') != NEVER_MESSAGE)


def zone_state(nodes: list[dict]) -> str:
    """Normal, PartialDisruption or FullDisruption, from the nodes' Ready conditions."""
    ready = sum(1 for n in nodes if (ready_condition(n) or {}).get('status') == 'True')
    not_ready = len(nodes) - ready
    if not_ready and not ready:
        return 'FullDisruption'
    if not_ready > 2 and not_ready / len(nodes) >= UNHEALTHY_ZONE_THRESHOLD:
        return 'PartialDisruption'
    return 'Normal'


@dataclass
class Decisions:
    """What one pass decided: nodes to write (whole, changed copies), pods whose Ready
    turns False (namespace, name, new status), pods to evict, events to record as
    (object, type, reason, message)."""
    nodes: list = field(default_factory=list)
    pod_statuses: list = field(default_factory=list)
    evictions: list = field(default_factory=list)
    events: list = field(default_factory=list)


@dataclass
class NodeLifecycle:
    """kube-controller-manager's node lifecycle controller, with the one memory it
    keeps between passes: when the zone last got a NoExecute taint (rate limit), and
    when it first saw each node (a node that never posted gets the startup grace
    period from then, as the controller counts from its own observations)."""
    grace: float
    eviction_interval: float = EVICTION_INTERVAL
    last_tainted: float | None = None
    first_seen: dict = field(default_factory=dict)

    def reconcile(self, nodes: list[dict], leases: dict, pods: list[dict],
                  now: float) -> Decisions:
        """``leases``: node name -> the renewTime of its Lease (epoch seconds)."""
        out = Decisions()
        observed = []
        for node in nodes:
            new = self._observe(copy.deepcopy(node), leases.get(node['metadata']['name']),
                                now, out)
            observed.append(new)
        state = zone_state(observed)
        for old, new in zip(nodes, observed):
            self._taint(new, state, now)
            if new != old:
                out.nodes.append(new)
        for node in observed:
            if not_ready(node):
                _mark_pods_not_ready(node, pods, out)
            _evictions(node, pods, now, out)
        return out

    def _observe(self, node: dict, renewed: float | None, now: float,
                 out: Decisions) -> dict:
        """The node with its conditions Unknown when it has been silent too long."""
        ready = ready_condition(node)
        if ready is None or ready.get('message') == UNKNOWN_MESSAGE:
            return node                   # no status at all, or already marked
        heard = max(filter(None, (renewed, epoch(ready.get('lastHeartbeatTime')))),
                    default=None)
        if heard is None:
            heard = self.first_seen.setdefault(node['metadata']['name'], now)
            limit = max(self.grace, STARTUP_GRACE)
        else:
            limit = self.grace
        if now - heard <= limit:
            return node
        stamp = now_rfc3339(now)
        for condition in node['status']['conditions']:
            condition.update(status='Unknown', reason='NodeStatusUnknown',
                             message=UNKNOWN_MESSAGE, lastTransitionTime=stamp)
        name = node['metadata']['name']
        out.events.append((node, 'Normal', 'NodeNotReady',
                           f'Node {name} status is now: NodeNotReady'))
        return node

    def _taint(self, node: dict, state: str, now: float) -> None:
        """Set the node's condition taints (in place): NoSchedule always, NoExecute as
        the zone's state allows."""
        status = (ready_condition(node) or {}).get('status')
        key = {'False': NOT_READY_TAINT, 'Unknown': UNREACHABLE_TAINT}.get(status) \
            if not_ready(node) else None
        spec = node.setdefault('spec', {})
        taints = [t for t in spec.get('taints') or ()
                  if t['key'] not in (NOT_READY_TAINT, UNREACHABLE_TAINT) or
                  (t['key'] == key and (t['effect'] == 'NoSchedule' or
                                        state != 'FullDisruption'))]
        if key is not None:
            if not any(t['key'] == key and t['effect'] == 'NoSchedule' for t in taints):
                taints.append({'key': key, 'effect': 'NoSchedule'})
            if not any(t['key'] == key and t['effect'] == 'NoExecute' for t in taints) \
                    and self._may_taint(state, now):
                taints.append({'key': key, 'effect': 'NoExecute',
                               'timeAdded': now_rfc3339(now)})
                self.last_tainted = now
        if taints != (spec.get('taints') or []):
            if taints:
                spec['taints'] = taints
            else:
                spec.pop('taints', None)

    def _may_taint(self, state: str, now: float) -> bool:
        if state != 'Normal':
            return False        # partial (small cluster) or full disruption: none
        return self.last_tainted is None or now - self.last_tainted >= \
            self.eviction_interval


def _on(node: dict, pods: list[dict]) -> list[dict]:
    name = node['metadata']['name']
    return [p for p in pods if p['spec'].get('nodeName') == name]


def _mark_pods_not_ready(node: dict, pods: list[dict], out: Decisions) -> None:
    """MarkPodsNotReady: every pod on the node gets Ready=False, the kubelet being
    unable to say otherwise."""
    stamp = None
    for pod in _on(node, pods):
        status = pod.get('status') or {}
        conditions = status.get('conditions') or []
        ready = next((c for c in conditions if c.get('type') == 'Ready'), None)
        if ready is None or ready.get('status') == 'False':
            continue
        stamp = stamp or now_rfc3339()
        new = copy.deepcopy(status)
        for condition in new['conditions']:
            if condition.get('type') == 'Ready':
                condition.update(status='False', lastTransitionTime=stamp)
        out.pod_statuses.append((pod['metadata']['namespace'], pod['metadata']['name'],
                                 new))
        out.events.append((pod, 'Warning', 'NodeNotReady', 'Node is not ready'))


def eviction_time(pod: dict, taints: list[dict]) -> float | None:
    """When the NoExecute taint manager evicts ``pod`` from a node with ``taints``
    (epoch seconds; None: never): at once for a taint it does not tolerate, else when
    the first of its tolerationSeconds runs out (counted from the taint's
    timeAdded)."""
    due = None
    for taint in taints:
        if taint.get('effect') != 'NoExecute':
            continue
        matching = [t for t in pod['spec'].get('tolerations') or () if _matches(t, taint)]
        if not matching:
            return 0.0
        seconds = [t['tolerationSeconds'] for t in matching
                   if t.get('tolerationSeconds') is not None]
        if not seconds:
            continue
        added = epoch(taint.get('timeAdded')) or 0.0
        at = added + max(0, min(seconds))
        due = at if due is None else min(due, at)
    return due


def _evictions(node: dict, pods: list[dict], now: float, out: Decisions) -> None:
    taints = (node.get('spec') or {}).get('taints') or []
    if not any(t.get('effect') == 'NoExecute' for t in taints):
        return
    for pod in _on(node, pods):
        if pod['metadata'].get('deletionTimestamp'):
            continue
        at = eviction_time(pod, taints)
        if at is not None and at <= now:
            out.evictions.append(pod)
            meta = pod['metadata']
            out.events.append((pod, 'Normal', 'TaintManagerEviction',
                               f'Marking for deletion Pod {meta["namespace"]}/'
                               f'{meta["name"]}'))
