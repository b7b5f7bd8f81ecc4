"""The store's control loop: the controllers a real control plane runs after a change,
run by the store under its lock after every change it makes.

``ControllerLoop`` is a part of the Store (services/store.py inherits it), kept apart
from the objects' verbs (apply, delete, label, scale) so that what runs after them
reads in one place, in the order it runs:

* ``_changed``: after every write, the controllers run until they settle (they may feed
  each other: a new pod is scheduled, then becomes an endpoint; a few rounds at most),
  then the store's resourceVersion goes up once and its watchers wake;
* ``_reconcile``: one round: the Deployment controller (with the ReplicaSet
  controller's pod changes, services/controllers/deployments.py), the node lifecycle
  controller (services/store_lifecycle.py), kube-scheduler
  (services/controllers/scheduler.py), the EndpointSlice controller
  (services/controllers/endpointslice_sync.py) and the load balancer addresses;
* ``tick``: the same round for what time alone changes (minReadySeconds, a node's
  silence, tolerationSeconds), called by the daemon about once a second.

The decisions are the controllers' own modules'; here they are only run and their
results written (``_put``). The store makes and terminates the pods they ask for
(``_create_pod``, ``_terminate_pod`` in services/store.py).
"""

from __future__ import annotations

import copy

from services.controllers import scheduler
from services.controllers.deployments import MAX_PASSES


class ControllerLoop:
    """The controllers' runs of a ``Store``, which sets ``objects``, ``cond``, ``rv``,
    ``clock``, ``deployments``, ``endpoint_slices`` and the writes they use."""

    def tick(self):
        """Run the controllers again although nothing changed: time alone makes a pod
        that has been Ready for minReadySeconds available (from its Ready condition's
        lastTransitionTime), which may let a rollout take its next step. The daemon
        calls this about once a second."""
        with self.cond:
            if self._reconcile():
                self._changed()

    def _changed(self):
        for _ in range(5):       # controllers may feed each other; settle in a few rounds
            if not self._reconcile():
                break
        self.rv += 1
        self.cond.notify_all()

    def _reconcile(self) -> bool:
        before = self.rv, len(self.objects)
        changed = False
        for dep in list(self.objects.of_kind('Deployment').values()):
            changed |= self._reconcile_deployment(dep)
        changed |= self._node_lifecycle()
        changed |= self._schedule()
        changed |= self.endpoint_slices.reconcile(self)
        changed |= self._assign_load_balancers()
        return changed or before != (self.rv, len(self.objects))

    # ------------------------------------------------------------ the deployment controller
    def _reconcile_deployment(self, dep: dict) -> bool:
        """Bring a Deployment's pods one rollout step closer to its template, then write
        its status. Each pass of the deployment controller scales one ReplicaSet record
        and the ReplicaSet controller makes the pods match at once; passes repeat (a
        scale-up, a scale-down, a scale-up into the room it left) until nothing more may
        move without a pod becoming ready, as the real controllers do between events."""
        before = copy.deepcopy((dep['metadata'].get('annotations'), dep.get('status')))
        dep.setdefault('status', {})
        ns, now = dep['metadata']['namespace'], self.clock()
        changed = self._manage_pods(dep, now)
        for _ in range(MAX_PASSES):
            if not self.deployments.sync(dep, self._pods(ns), now):
                break
            self._manage_pods(dep, now)
            changed = True
        dep['status'] = self.deployments.status(dep, self._pods(ns), now, before[1] or {})
        if (dep['metadata'].get('annotations'), dep['status']) != before:
            self._put(dep)
            changed = True
        return changed

    def _manage_pods(self, dep: dict, now: float) -> bool:
        """Make and terminate the pods the ReplicaSet controller asks for; True when it
        asked for any."""
        pods = self._pods(dep['metadata']['namespace'])
        changes = self.deployments.pod_changes(dep, pods, now)
        for rs, missing, surplus in changes:
            for _ in range(missing):
                self._create_pod(dep, rs)
            for pod in surplus:
                self._terminate_pod(pod, None)
        return bool(changes)

    def _schedule(self) -> bool:
        """Bind the pending pods to the nodes kube-scheduler chooses
        (services/controllers/scheduler.py)."""
        nodes = list(self.objects.of_kind('Node').values())
        decisions = scheduler.schedule(nodes, self._pods())
        for pod, node, conditions in decisions:
            if node is not None:
                pod['spec']['nodeName'] = node
            pod['status']['conditions'] = conditions
            self._put(pod)
        return bool(decisions)
