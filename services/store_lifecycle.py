"""The store's side of node lifecycle, load balancer addresses and events.

``LifecycleWrites`` is a part of the Store (services/store.py inherits it): what the
API server receives and the controllers it runs for nodes and load balancers, kept
apart from the objects' own verbs:

* ``renew_lease``: a kubelet's heartbeat, received by the lab's API endpoint in the
  control-plane node (topo/heartbeat.py). It renews the node's Lease in
  ``kube-node-lease`` (in place: a renewal wakes no watcher, as watchers of other kinds
  are not woken in Kubernetes) and, when the node is not Ready, posts the Ready
  condition the kubelet would post (``KubeletReady``);
* ``_node_lifecycle``: the node lifecycle controller's pass
  (services/controllers/node_lifecycle.py), with the time; the store's ``tick`` runs it
  about twice a second, so a silent node turns NotReady within half a second of its
  grace period;
* ``_assign_load_balancers``: the controller that gives LoadBalancer Services their
  addresses: the cloud's service controller (services/allocation/load_balancer_ips.py)
  or, on bare metal, MetalLB's controller from its IPAddressPools
  (services/metallb/ipam.py); none without either (the Services stay ``<pending>``);
* ``set_l2_announcements`` and ``set_service_l2_statuses``: a MetalLB speaker's
  decisions (topo/metallb.py): the addresses its node answers ARP for (the lab's own
  ``L2Announcement``, one per node, which the controller turns into flows) and
  MetalLB's ``ServiceL2Status`` objects with a ``nodeAssigned`` event;
* ``record_event``: an Event, counted up when it repeats (services/events.py).

Everything here runs under the store's lock, as the store's own controllers do.
"""

from __future__ import annotations

import copy

from services import events as ev
from services.allocation import load_balancer_ips as cloud_lb
from services.controllers.node_lifecycle import LEASE_NAMESPACE, ready_condition
from services.naming import epoch, new_uid, now_micro, now_rfc3339, random_suffix

#: The Node's Ready condition as the kubelet posts it.
KUBELET_READY = {'type': 'Ready', 'status': 'True', 'reason': 'KubeletReady',
                 'message': 'kubelet is posting ready status'}
LEASE_DURATION = 40           # the kubelet's --node-lease-duration-seconds (default)


class LifecycleWrites:
    """Leases, the node lifecycle pass, load balancer addresses and events (a part of
    the Store: it uses the store's ``objects``, ``_put``, ``_changed``, ``clock``)."""

    # ------------------------------------------------------------ the kubelet's heartbeat
    def renew_lease(self, name: str) -> dict:
        """A kubelet's Lease renewal (and, when its node is not Ready, its Ready
        condition): the Lease as the API server answers it. KeyError: no such node."""
        with self.cond:
            node = self.objects[('Node', '', name)]
            now = self.clock()
            key = ('Lease', LEASE_NAMESPACE, name)
            lease = self.objects.get(key)
            created = lease is None
            if created:
                lease = {'apiVersion': 'coordination.k8s.io/v1', 'kind': 'Lease',
                         'metadata': {'name': name, 'namespace': LEASE_NAMESPACE,
                                      'uid': new_uid(), 'creationTimestamp': now_rfc3339(now),
                                      'ownerReferences': [{
                                          'apiVersion': 'v1', 'kind': 'Node', 'name': name,
                                          'uid': node['metadata']['uid']}]},
                         'spec': {'holderIdentity': name,
                                  'leaseDurationSeconds': LEASE_DURATION}}
                self._put(lease)
            lease['spec']['renewTime'] = now_micro(now)
            lease['metadata']['resourceVersion'] = str(self.rv)
            ready = ready_condition(node) or {}
            if ready.get('status') != 'True':
                self._post_ready(node, now)
            elif created:
                self._changed()
            return copy.deepcopy(lease)

    def _post_ready(self, node: dict, now: float):
        stamp = now_rfc3339(now)
        node['status']['conditions'] = [dict(KUBELET_READY, lastHeartbeatTime=stamp,
                                             lastTransitionTime=stamp)]
        self._put(node)
        name = node['metadata']['name']
        self._event(node, 'Normal', 'NodeReady', f'Node {name} status is now: NodeReady',
                    'kubelet')
        self._changed()

    def lease_renewals(self) -> dict[str, float]:
        """Node name -> the time its Lease was last renewed (epoch seconds)."""
        return {name: epoch(lease['spec'].get('renewTime')) or 0.0
                for (kind, ns, name), lease in self.objects.of_kind('Lease').items()
                if ns == LEASE_NAMESPACE}

    # ------------------------------------------------------------ the node controller
    def _node_lifecycle(self) -> bool:
        nodes = [o for _, o in sorted(self.objects.of_kind('Node').items())]
        decisions = self.lifecycle.reconcile(nodes, self.lease_renewals(), self._pods(),
                                             self.clock())
        for node in decisions.nodes:
            self._put(node)
        for namespace, name, status in decisions.pod_statuses:
            pod = self.objects.get(('Pod', namespace, name))
            if pod is not None:
                pod['status'] = status
                self._put(pod)
        for pod in decisions.evictions:
            self._terminate_pod(pod, None)
        for obj, kind, reason, message in decisions.events:
            self._event(obj, kind, reason, message, 'node-controller')
        return bool(decisions.nodes or decisions.pod_statuses or decisions.evictions)

    # ------------------------------------------------------------ load balancer addresses
    def _assign_load_balancers(self) -> bool:
        """Give every LoadBalancer Service the address its controller decides, clear
        the address of what is no longer one; an event when a Service gets one or
        cannot (once per reason). Skipped while no Service and no address pool changed
        (it runs after every change of the store: at 10,000 Services, a pod's status
        or a node's Lease cost a pass over every Service)."""
        seen = self.objects.count_of(('Service', 'IPAddressPool'))
        if seen == self._lb_seen:
            return False
        # Only a LoadBalancer, or what was one, may change: the others take no address
        # (their Assignment is empty) and hold none (10,000 ClusterIPs: 50 ms a pass).
        services = [svc for svc in self.objects.of_kind('Service').values()
                    if self._lb_may_change(svc)]
        if self.cluster.metallb:
            from services.metallb import ipam
            decided = ipam.assign(services, self.list_unlocked('IPAddressPool',
                                                              ipam.NAMESPACE))
            component = ipam.COMPONENT
        elif not self.cluster.bare_metal:
            decided = cloud_lb.assign(services, self.cluster.lb_pool)
            component = 'service-controller'
        else:
            decided, component = {}, ''      # bare metal without MetalLB: nobody does
        changed = False
        for svc in services:
            key = cloud_lb.service_key(svc)
            got = decided.get(key, cloud_lb.Assignment())
            changed |= self._set_load_balancer(svc, got, component)
        self._lb_seen = self.objects.count_of(('Service', 'IPAddressPool'))
        return changed

    def _lb_may_change(self, svc: dict) -> bool:
        """False when ``_set_load_balancer`` would leave ``svc`` as it is whatever the
        pools hold: not a LoadBalancer, its status already empty, no pool noted, no
        event remembered."""
        return cloud_lb.is_load_balancer(svc) or \
            svc.get('status') != _NO_LOAD_BALANCER or \
            POOL_ANNOTATION in (svc['metadata'].get('annotations') or ()) or \
            svc['metadata'].get('uid') in self._lb_notes

    def _set_load_balancer(self, svc: dict, got, component: str) -> bool:
        status = {'loadBalancer': {'ingress': [{'ip': got.ip, 'ipMode': 'VIP'}]}} \
            if got.ip else {'loadBalancer': {}}
        uid = svc['metadata']['uid']
        note = ('error', got.error) if got.error else ('ip', got.ip)
        if got.ip is None and got.error is None:
            self._lb_notes.pop(uid, None)
        elif self._lb_notes.get(uid) != note:
            self._lb_notes[uid] = note
            if got.error:
                reason = 'AllocationFailed' if self.cluster.metallb else \
                    'SyncLoadBalancerFailed'
                self._event(svc, 'Warning', reason, got.error, component)
            elif self.cluster.metallb:
                self._event(svc, 'Normal', 'IPAllocated', f'Assigned IP ["{got.ip}"]',
                            component)
            else:
                self._event(svc, 'Normal', 'EnsuredLoadBalancer', 'Ensured load balancer',
                            component)
        annotations = svc['metadata'].get('annotations') or {}
        pool_note = annotations.get(POOL_ANNOTATION)
        if svc.get('status') == status and pool_note == got.pool:
            return False
        svc['status'] = status
        if got.pool:
            svc['metadata'].setdefault('annotations', {})[POOL_ANNOTATION] = got.pool
        elif pool_note is not None:
            del svc['metadata']['annotations'][POOL_ANNOTATION]
            if not svc['metadata']['annotations']:
                del svc['metadata']['annotations']
        self._put(svc)
        return True

    @property
    def lb_ips(self):
        """The cloud pool's addresses as the Services hold them (for inspection)."""
        with self.cond:
            services = list(self.objects.of_kind('Service').values())
            return cloud_lb.allocated(services, self.cluster.lb_pool)

    # ------------------------------------------------------------ the lab's network
    def set_lab_network(self, failed: list, cut_off: list):
        """Which nodes are cut off the network (``kubelab node fail``), and whose agents
        therefore cannot reach the API server (all but the control-plane node's when the
        control-plane node is cut off): the controller keeps those nodes' kube-proxy
        flows as they were (controller/state.py)."""
        with self.cond:
            self._put({'apiVersion': 'kubelab.io/v1alpha1', 'kind': LAB_NETWORK,
                       'metadata': {'name': 'nodes'},
                       'status': {'failedNodes': list(failed), 'cutOff': list(cut_off)}})
            self._changed()

    # ------------------------------------------------------------ MetalLB's speakers
    def set_l2_announcements(self, node: str, announced: dict):
        """What the speaker on ``node`` answers ARP for: address -> (namespace,
        service)."""
        addresses = [{'ip': ip, 'service': f'{ns}/{name}'}
                     for ip, (ns, name) in sorted(announced.items())]
        with self.cond:
            key = (L2_ANNOUNCEMENT, '', node)
            old = self.objects.get(key)
            if old is not None and old['status']['addresses'] == addresses:
                return
            self._put({'apiVersion': 'kubelab.io/v1alpha1', 'kind': L2_ANNOUNCEMENT,
                       'metadata': {'name': node},
                       'status': {'node': node, 'addresses': addresses}})
            self._changed()

    def set_service_l2_statuses(self, node: str, services: set, interface: str):
        """MetalLB's ServiceL2Status objects of ``node``'s speaker: one per Service it
        announces (created with a ``nodeAssigned`` event), the others deleted."""
        from services.metallb.ipam import NAMESPACE
        with self.cond:
            mine = {(o['status']['serviceNamespace'], o['status']['serviceName']): k
                    for k, o in self.objects.of_kind('ServiceL2Status').items()
                    if o['status']['node'] == node}
            changed = False
            for key in set(mine) - services:
                self._remove(mine[key])
                changed = True
            for ns, name in sorted(services - set(mine)):
                svc = self.objects.get(('Service', ns, name))
                if svc is None:
                    continue
                self._put(_l2_status(NAMESPACE, node, ns, name, interface,
                                     self._fresh_name(NAMESPACE)))
                self._event(svc, 'Normal', 'nodeAssigned', f'announcing from node '
                            f'"{node}" with protocol "layer2"', 'metallb-speaker')
                changed = True
            if changed:
                self._changed()

    def _fresh_name(self, namespace: str) -> str:
        while True:
            name = f'l2-{random_suffix(5, self.rng)}'
            if ('ServiceL2Status', namespace, name) not in self.objects:
                return name

    # ------------------------------------------------------------ events
    def record_event(self, obj: dict, event_type: str, reason: str, message: str,
                     component: str):
        """An Event about ``obj`` from a component outside the store (a speaker)."""
        with self.cond:
            self._event(obj, event_type, reason, message, component)
            self._changed()

    def _event(self, obj: dict, event_type: str, reason: str, message: str,
               component: str):
        new = ev.event_for(None, obj, event_type, reason, message, component, self.clock())
        key = ('Event', new['metadata']['namespace'], new['metadata']['name'])
        old = self.objects.get(key)
        if old is not None:
            new = ev.event_for(old, obj, event_type, reason, message, component,
                               self.clock())
        else:
            new['metadata']['uid'] = new_uid()
            new['metadata']['creationTimestamp'] = new['firstTimestamp']
        self._put(new)
        events = list(self.objects.of_kind('Event'))
        if len(events) > ev.MAX_EVENTS:
            oldest = min(events, key=lambda k: self.objects[k].get('lastTimestamp') or '')
            self._remove(oldest)

    def list_unlocked(self, kind: str, namespace: str | None = None) -> list[dict]:
        """The objects of ``kind`` (not copies): for the controllers, under the lock."""
        return [o for (_, ns, _), o in sorted(self.objects.of_kind(kind).items())
                if namespace is None or ns == namespace]


#: MetalLB's note of the pool a Service's address came from.
POOL_ANNOTATION = 'metallb.io/ip-allocated-from-pool'
#: The status of a Service without a load balancer's address.
_NO_LOAD_BALANCER = {'loadBalancer': {}}
#: The lab's kind for a speaker's ARP answers (not a Kubernetes kind: never applied).
L2_ANNOUNCEMENT = 'L2Announcement'
#: The lab's kind for the nodes cut off the network.
LAB_NETWORK = 'LabNetwork'


def _l2_status(namespace: str, node: str, svc_ns: str, svc: str, interface: str,
               name: str) -> dict:
    return {'apiVersion': 'metallb.io/v1beta1', 'kind': 'ServiceL2Status',
            'metadata': {'name': name, 'namespace': namespace, 'uid': new_uid(),
                         'creationTimestamp': now_rfc3339(),
                         'labels': {'metallb.io/node': node,
                                    'metallb.io/service-name': svc,
                                    'metallb.io/service-namespace': svc_ns}},
            'spec': {},
            'status': {'node': node, 'serviceName': svc, 'serviceNamespace': svc_ns,
                       'interfaces': [{'name': interface}]}}
