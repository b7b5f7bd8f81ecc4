"""The cluster store: the lab's API server state, and the controllers that keep it whole.

Objects are plain dicts in Kubernetes shape, keyed by (kind, namespace, name). Every
change runs, under one lock, the controllers a real control plane runs after it:
the Deployment controller (pods from templates), the scheduler (a node for each pod) and
the EndpointSlice controller (slices from selectors and readiness). Then the store's
resourceVersion goes up once and watchers wake.

``apply`` is all-or-nothing: every object of the request is validated and checked
against the cluster (names, ClusterIPs, NodePorts, load balancer addresses) before
anything changes; one error rejects all. The checks run on copies of the allocators,
kept only when all passed.

NodePorts follow the API server: a requested ``nodePort`` is reserved, a missing one
allocated and written into ``spec.ports[i].nodePort``. On an update a port without one
keeps the one it had (matched by name, else by port and protocol). Ports no longer used
are released after the Service's new ones are taken (so it never gets back a port it
gives up) and are free for the next object at once; none of it counts until the whole
apply commits. Going back to ClusterIP, and deleting the Service, release them all.
A LoadBalancer Service is a NodePort Service plus a load balancer: it keeps its
ClusterIP and nodePorts across NodePort <-> LoadBalancer changes. With
``externalTrafficPolicy: Local`` it also holds a ``spec.healthCheckNodePort`` (requested
or allocated like a nodePort, then immutable, released when no longer needed).

The store also plays the cloud controller manager's service controller with the lab's
one load balancer: a LoadBalancer Service gets an address of the cluster's
``loadBalancerPool`` (its ``spec.loadBalancerIP`` when it asks for a free one of the
pool), written into ``status.loadBalancer.ingress`` at apply and kept across applies;
it is released when the Service is deleted or stops being a LoadBalancer. A pool with
no address left refuses the apply rather than leave the Service ``<pending>``.

The Deployment controller's records and decisions are services/controllers/deployments.py's; the
store runs it and makes and terminates the pods it asks for. ``tick`` re-runs the
controllers for what time alone changes (minReadySeconds).
"""

from __future__ import annotations

import json
import copy
import random
import threading
import time

from services import manifests, naming, selectors
from services.controllers import endpointslices as endpoints
from services.allocation.allocators import ClusterIPAllocator, LoadBalancerIPAllocator, \
    NodePortAllocator
from services.controllers.deployments import MAX_PASSES, DeploymentController, ReplicaSet, \
    keep_rollout_marks, new_pod, owned_by, stamp_restart
from services.errors import AllocationError, ApplyError, KubelabError, NotFound, \
    ValidationError
from services.validation.deployment import default_strategy
from services.validation.service import EXTERNAL_SERVICE_TYPES, HEADLESS_EXTERNAL

KUBELET_VERSION = 'v1.31.0-kubelab'
CONTROL_PLANE_TAINT = {'key': 'node-role.kubernetes.io/control-plane', 'effect': 'NoSchedule'}


def node_object(node, created: str) -> dict:
    labels = {'kubernetes.io/hostname': node.name, 'kubernetes.io/os': 'linux'}
    spec = {'podCIDR': node.pod_cidr, 'podCIDRs': [node.pod_cidr]}
    if node.role == 'control-plane':
        labels['node-role.kubernetes.io/control-plane'] = ''
        spec['taints'] = [dict(CONTROL_PLANE_TAINT)]
    return {
        'apiVersion': 'v1', 'kind': 'Node',
        'metadata': {'name': node.name, 'uid': naming.new_uid(), 'labels': labels,
                     'creationTimestamp': created},
        'spec': spec,
        'status': {
            'addresses': [{'type': 'InternalIP', 'address': node.ip},
                          {'type': 'Hostname', 'address': node.name}],
            'conditions': [{'type': 'Ready', 'status': 'Unknown',
                            'reason': 'NodeStatusUnknown'}],
            'nodeInfo': {'kubeletVersion': KUBELET_VERSION, 'osImage': 'kubelab',
                         'kernelVersion': _kernel(), 'containerRuntimeVersion': 'kubelab://1',
                         'architecture': 'amd64', 'operatingSystem': 'linux'},
        },
    }


def _kernel() -> str:
    import platform
    return platform.release()


def tolerates(pod: dict, taint: dict) -> bool:
    for tol in pod['spec'].get('tolerations') or []:
        if tol.get('operator') == 'Exists' and not tol.get('key'):
            return True
        if tol.get('key') == taint['key'] and tol.get('effect') in (None, '', taint['effect']):
            return True
    return False


class Store:
    def __init__(self, cluster, rng: random.Random | None = None, clock=time.time):
        self.cluster = cluster
        self.rng = rng or random.Random()
        self.clock = clock       # seconds since the epoch: when pods become available
        self.deployments = DeploymentController()
        self.cond = threading.Condition()
        self.rv = 1
        self.objects: dict[tuple, dict] = {}
        self.cluster_ips = ClusterIPAllocator(cluster.service_cidr)
        self.node_ports = NodePortAllocator(*cluster.node_port_range)
        self.lb_ips = LoadBalancerIPAllocator(cluster.lb_pool)
        created = naming.now_rfc3339()
        for node in cluster.nodes:
            self._put(node_object(node, created))
        for ns in ('default', 'kube-system'):
            self._put({'apiVersion': 'v1', 'kind': 'Namespace',
                       'metadata': {'name': ns, 'uid': naming.new_uid(),
                                    'creationTimestamp': created},
                       'status': {'phase': 'Active'}})

    @property
    def replica_sets(self) -> dict[str, dict[str, ReplicaSet]]:
        """The deployment controller's records: Deployment uid -> pod-template-hash ->
        its ReplicaSet."""
        return self.deployments.replica_sets

    # ------------------------------------------------------------ reading
    def get(self, kind: str, namespace: str | None, name: str) -> dict:
        with self.cond:
            obj = self.objects.get((kind, namespace or '', name))
            if obj is None:
                raise NotFound(f'{manifests.resource_name(kind)} "{name}" not found'
                               + (f' in namespace "{namespace}"' if namespace else ''))
            return copy.deepcopy(obj)

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        with self.cond:
            return [copy.deepcopy(o) for (k, ns, _), o in sorted(self.objects.items())
                    if k == kind and (namespace is None or ns == namespace)]

    def snapshot(self, since: int = 0, timeout: float = 0) -> tuple[int, dict]:
        """Wait until the resourceVersion passes ``since`` (or ``timeout``), then return
        every object grouped by kind."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.rv <= since and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            out: dict[str, list] = {}
            for (kind, _, _), obj in sorted(self.objects.items()):
                out.setdefault(kind, []).append(copy.deepcopy(obj))
            return self.rv, out

    def wait(self, since: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.rv <= since and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            return self.rv

    # ------------------------------------------------------------ writing
    def apply(self, docs: list[dict], dry_run: bool = False) -> dict:
        """Create or update every object in ``docs``, or none of them."""
        errors: list[ValidationError] = []
        objs = []
        for doc in docs:
            try:
                objs.append(manifests.validate(doc))
            except ApplyError as exc:
                errors.extend(exc.errors)
            except ValidationError as exc:
                errors.append(exc)
        with self.cond:
            seen = set()
            ips = self.cluster_ips.copy()
            ports = self.node_ports.copy()
            lb_ips = self.lb_ips.copy()
            new_namespaces = {o['metadata']['name'] for o in objs if o['kind'] == 'Namespace'}
            for obj in objs:
                errors.extend(self._check(obj, seen, ips, ports, lb_ips, new_namespaces))
            if errors:
                raise ApplyError(errors)
            warnings = self._warnings(objs)
            if dry_run:
                return {'results': [[self._ref(o), 'validated'] for o in objs],
                        'warnings': warnings}
            results = []
            for obj in objs:
                results.append([self._ref(obj), self._upsert(obj)])
            self.cluster_ips = ips
            self.node_ports = ports
            self.lb_ips = lb_ips
            if any(action != 'unchanged' for _, action in results):
                self._changed()
            return {'results': results, 'warnings': warnings}

    @staticmethod
    def _ref(obj):
        """``deployment.apps/web``, as kubectl names what it applied."""
        group = obj['apiVersion'].split('/')[0] if '/' in obj['apiVersion'] else ''
        kind = obj['kind'].lower() + (f'.{group}' if group else '')
        return f'{kind}/{obj["metadata"]["name"]}'

    def _check(self, obj: dict, seen: set, ips: ClusterIPAllocator,
               ports: NodePortAllocator, lb_ips: LoadBalancerIPAllocator,
               new_namespaces: set) -> list:
        key = manifests.key(obj)
        ref = manifests.object_ref(obj)
        if key in seen:
            return [ValidationError(ref, 'metadata.name',
                                    'appears twice in this apply; names must be unique')]
        seen.add(key)
        kind, ns, name = key
        errs = []
        if manifests.namespaced(kind) and ('Namespace', '', ns) not in self.objects \
                and ns not in new_namespaces:
            errs.append(ValidationError(ref, 'metadata.namespace',
                                        f'namespace "{ns}" not found; existing: '
                                        + ', '.join(sorted(n for k, _, n in self.objects
                                                           if k == 'Namespace'))))
        old = self.objects.get(key)
        if kind == 'Service':
            errs.extend(self._check_service(obj, old, ips, ref))
            errs.extend(_assign_node_ports(obj, old, ports, ref))
            errs.extend(_assign_load_balancer_ip(obj, old, lb_ips, ref))
        if kind == 'Deployment' and old is not None and \
                obj['spec'].get('selector') != old['spec'].get('selector'):
            shown = json.dumps(obj['spec'].get('selector'), sort_keys=True)
            errs.append(ValidationError(ref, 'spec.selector', f'Invalid value: {shown}: '
                                        'field is immutable'))
        if kind == 'Pod' and old is not None and old['spec'] != _user_spec(obj, old):
            errs.append(ValidationError(ref, 'spec', 'Forbidden: pod updates may not change '
                                        'fields other than labels and annotations; '
                                        'delete the pod and apply it again'))
        if kind == 'EndpointSlice' and old is not None and old['metadata'].get(
                'labels', {}).get('endpointslice.kubernetes.io/managed-by', '').startswith(
                'endpointslice-controller'):
            errs.append(ValidationError(ref, 'metadata.name', 'this EndpointSlice is managed '
                                        'by the EndpointSlice controller'))
        if old is not None:                 # immutable fields (Secret, IngressClass ...)
            errs.extend(manifests.update_problems(obj, old))
        return errs

    def _check_service(self, obj, old, ips, ref) -> list:
        spec = obj['spec']
        want = spec.get('clusterIP') or ''
        if old is not None:
            have = old['spec'].get('clusterIP')
            if want and want != have:
                return [ValidationError(ref, 'spec.clusterIP', f'Invalid value: "{want}": '
                                        f'field is immutable (it is {have})')]
            spec['clusterIP'] = have
            spec['clusterIPs'] = [have]
            return []
        if want == 'None':
            spec['clusterIPs'] = ['None']
            return []
        try:
            if want:
                ips.reserve(want)
            else:
                want = ips.allocate()
        except AllocationError as exc:
            return [ValidationError(ref, 'spec.clusterIP',
                                    f'Invalid value: "{want}": {exc}')]
        spec['clusterIP'] = want
        spec['clusterIPs'] = [want]
        return []

    def _warnings(self, objs) -> list[str]:
        out = [w for obj in objs for w in _not_emulated(obj)]
        nodes = sorted(n for k, _, n in self.objects if k == 'Node')
        for obj in objs:
            spec = obj.get('spec') or {}
            if obj['kind'] == 'Deployment':
                spec = spec['template']['spec']
            node = spec.get('nodeName') if obj['kind'] in ('Pod', 'Deployment') else None
            if node and node not in nodes:
                out.append(f'{manifests.object_ref(obj)}: spec.nodeName: node "{node}" does '
                           f'not exist, the pod stays Pending; nodes: {", ".join(nodes)}')
        pods = [o for o in self.objects.values() if o['kind'] == 'Pod']
        templates = [o for o in objs if o['kind'] in ('Pod', 'Deployment')]
        for obj in objs:
            sel = obj['kind'] == 'Service' and obj['spec'].get('selector')
            if not sel:
                continue
            ns = obj['metadata']['namespace']
            labels = [p['metadata'].get('labels', {}) for p in pods
                      if p['metadata']['namespace'] == ns]
            labels += [(t['spec']['template']['metadata'].get('labels', {})
                        if t['kind'] == 'Deployment' else t['metadata'].get('labels', {}))
                       for t in templates if t['metadata']['namespace'] == ns]
            if not any(selectors.matches(sel, lab) for lab in labels):
                out.append(f'{manifests.object_ref(obj)}: spec.selector '
                           f'{selectors.format_selector(sel)} matches no pods (yet); the '
                           f'Service rejects connections until a ready pod matches')
        return out

    def _upsert(self, obj: dict) -> str:
        key = manifests.key(obj)
        old = self.objects.get(key)
        if obj['kind'] == 'Deployment':
            default_strategy(obj['spec'])
            if old is not None:
                keep_rollout_marks(obj, old)
        if old is None:
            meta = obj['metadata']
            meta['uid'] = naming.new_uid()
            meta['creationTimestamp'] = naming.now_rfc3339()
            meta.setdefault('generation', 1)
            # As the API server: the status is not the creator's. A Service's (its load
            # balancer) was written by _check.
            if obj['kind'] != 'Service' and manifests.has_status(obj['kind']):
                obj['status'] = _initial_status(obj)
            self._put(obj)
            return 'created'
        new = copy.deepcopy(old)
        for field in ('labels', 'annotations'):
            if field in obj['metadata']:
                new['metadata'][field] = obj['metadata'][field]
            else:
                new['metadata'].pop(field, None)
        if 'spec' in obj:
            # A pod keeps the node the scheduler gave it (its spec cannot change anyway).
            spec = _user_spec(obj, old) if obj['kind'] == 'Pod' else obj['spec']
            if spec != old.get('spec'):
                new['metadata']['generation'] = old['metadata'].get('generation', 1) + 1
            new['spec'] = spec
        for field in ('endpoints', 'ports', 'addressType'):
            if field in obj:
                new[field] = obj[field]
        if obj['kind'] == 'Secret':                 # its content is not under spec
            for field in ('type', 'data', 'immutable'):
                if field in obj:
                    new[field] = obj[field]
                else:
                    new.pop(field, None)
        if obj['kind'] == 'Service':
            new['status'] = obj['status']          # its load balancer, as _check left it
        if _same(new, old):
            return 'unchanged'
        self._put(new)
        return 'configured'

    def _put(self, obj: dict):
        meta = obj['metadata']
        meta['resourceVersion'] = str(self.rv + 1)
        self.objects[(obj['kind'], meta.get('namespace', ''), meta['name'])] = obj

    def _remove(self, key):
        obj = self.objects.pop(key, None)
        if obj is not None and obj['kind'] == 'Service':
            ip = obj['spec'].get('clusterIP')
            if ip and ip != 'None':
                self.cluster_ips.release(ip)
            for port in _held_node_ports(obj['spec']):
                self.node_ports.release(port)
            address = _load_balancer_ip(obj)
            if address:
                self.lb_ips.release(address)
        return obj

    def delete(self, kind: str, namespace: str | None, name: str,
               grace_seconds: int | None = None) -> str:
        with self.cond:
            key = (kind, namespace or '', name)
            obj = self.objects.get(key)
            if obj is None:
                raise NotFound(f'{manifests.resource_name(kind)} "{name}" not found'
                               + (f' in namespace "{namespace}"' if namespace else ''))
            if kind == 'Node':
                raise KubelabError('nodes are part of the cluster file; change it and run '
                                   '`kubelab up` again')
            if kind == 'Namespace':
                if name in ('default', 'kube-system'):
                    raise KubelabError(f'namespace "{name}" cannot be deleted')
                for k in list(self.objects):
                    if k[1] == name:
                        self._delete_one(k, grace_seconds)
            self._delete_one(key, grace_seconds)
            self._changed()
            return f'{kind.lower()} "{name}" deleted'

    def _delete_one(self, key, grace_seconds):
        obj = self.objects.get(key)
        if obj is None:
            return
        if key[0] == 'Pod':
            self._terminate_pod(obj, grace_seconds)
        elif key[0] == 'Deployment':
            self._remove(key)
            self.deployments.forget(obj)
            for pod in self._pods(key[1]):
                if owned_by(pod, obj):
                    self._terminate_pod(pod, None)
        else:
            self._remove(key)

    def _terminate_pod(self, pod, grace_seconds):
        meta = pod['metadata']
        if meta.get('deletionTimestamp'):
            return
        if not pod['spec'].get('nodeName') or pod.get('status', {}).get('phase') in (
                'Succeeded', 'Failed') and not pod['status'].get('podIP'):
            self._remove(manifests.key(pod))
            return
        grace = pod['spec'].get('terminationGracePeriodSeconds', 30)
        meta['deletionTimestamp'] = naming.now_rfc3339()
        meta['deletionGracePeriodSeconds'] = grace if grace_seconds is None else grace_seconds
        self._put(pod)

    def scale(self, namespace: str, name: str, replicas: int) -> str:
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise KubelabError(f'--replicas: must be a whole number >= 0, got {replicas!r}')
        with self.cond:
            key = ('Deployment', namespace, name)
            if key not in self.objects:
                raise NotFound(f'deployments.apps "{name}" not found in namespace '
                               f'"{namespace}"')
            dep = self.objects[key]
            if dep['spec']['replicas'] != replicas:
                dep['spec']['replicas'] = replicas
                dep['metadata']['generation'] = dep['metadata'].get('generation', 1) + 1
            self._put(dep)
            self._changed()
            return f'deployment.apps/{name} scaled'

    def restart_rollout(self, namespace: str, name: str) -> str:
        """``kubectl rollout restart``: stamp the pod template with the time, so the
        template (and its hash) is new and the Deployment rolls out fresh pods."""
        with self.cond:
            dep = self.objects.get(('Deployment', namespace, name))
            if dep is None:
                raise NotFound(f'deployments.apps "{name}" not found in namespace '
                               f'"{namespace}"')
            stamp_restart(dep, naming.now_rfc3339())
            dep['metadata']['generation'] = dep['metadata'].get('generation', 1) + 1
            self._put(dep)
            self._changed()
            return f'deployment.apps/{name} restarted'

    def tick(self):
        """Run the controllers again although nothing changed: time alone makes a pod
        that has been Ready for minReadySeconds available (from its Ready condition's
        lastTransitionTime), which may let a rollout take its next step. The daemon
        calls this about once a second."""
        with self.cond:
            if self._reconcile():
                self._changed()

    # ------------------------------------------------------------ the kubelet's side
    def update_pod_status(self, namespace: str, name: str, uid: str, status: dict):
        with self.cond:
            pod = self.objects.get(('Pod', namespace, name))
            if pod is None or pod['metadata']['uid'] != uid or pod.get('status') == status:
                return
            pod['status'] = status
            self._put(pod)
            self._changed()

    def pod_gone(self, namespace: str, name: str, uid: str):
        """The kubelet finished terminating a pod: remove it for good."""
        with self.cond:
            pod = self.objects.get(('Pod', namespace, name))
            if pod is not None and pod['metadata']['uid'] == uid:
                self._remove(('Pod', namespace, name))
                self._changed()

    # ------------------------------------------------------------ the cloud's side
    def set_lb_health(self, namespace: str, name: str, healthy: list[str] | None):
        """What the cloud load balancer's health checks found for a LoadBalancer
        Service: the nodes that answer (None: the Service has no load balancer any
        more). Kept as a ``LoadBalancerHealth`` object, which the controller reads to
        program the cloud edge; it is not a Kubernetes kind and cannot be applied."""
        with self.cond:
            key = (LB_HEALTH_KIND, namespace, name)
            if healthy is None:
                if self.objects.pop(key, None) is not None:
                    self._changed()
                return
            old = self.objects.get(key)
            if old is not None and old['status']['healthyNodes'] == sorted(healthy):
                return
            self._put({'apiVersion': 'kubelab.io/v1alpha1', 'kind': LB_HEALTH_KIND,
                       'metadata': {'name': name, 'namespace': namespace},
                       'status': {'healthyNodes': sorted(healthy)}})
            self._changed()

    def set_status(self, kind: str, namespace: str, name: str, uid: str, status: dict) -> bool:
        """A controller's status write (Ingress addresses, Gateway API conditions):
        ``status`` replaces the object's when the object is still the one the controller
        read (``uid``) and the status differs. True when it was written."""
        with self.cond:
            obj = self.objects.get((kind, namespace or '', name))
            if obj is None or obj['metadata'].get('uid') != uid \
                    or obj.get('status') == status:
                return False
            obj = copy.deepcopy(obj)
            obj['status'] = copy.deepcopy(status)
            self._put(obj)
            self._changed()
            return True

    def set_node_ready(self, name: str, ready: bool):
        with self.cond:
            node = self.objects[('Node', '', name)]
            cond = {'type': 'Ready', 'status': 'True' if ready else 'False',
                    'reason': 'KubeletReady' if ready else 'KubeletNotReady'}
            if node['status']['conditions'] != [cond]:
                node['status']['conditions'] = [cond]
                self._put(node)
                self._changed()

    # ------------------------------------------------------------ controllers
    def _changed(self):
        for _ in range(5):       # controllers may feed each other; settle in a few rounds
            if not self._reconcile():
                break
        self.rv += 1
        self.cond.notify_all()

    def _pods(self, namespace=None) -> list[dict]:
        return [o for (k, ns, _), o in self.objects.items()
                if k == 'Pod' and (namespace is None or ns == namespace)]

    def _reconcile(self) -> bool:
        before = self.rv, len(self.objects)
        changed = False
        for (kind, _, _), dep in list(self.objects.items()):
            if kind == 'Deployment':
                changed |= self._reconcile_deployment(dep)
        changed |= self._schedule()
        changed |= self._reconcile_endpoints()
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

    def _create_pod(self, dep: dict, rs: ReplicaSet):
        ns = dep['metadata']['namespace']
        while True:
            name = f'{rs.name}-{naming.random_suffix(5, self.rng)}'
            if ('Pod', ns, name) not in self.objects:
                break
        pod = new_pod(dep, rs, name)
        pod['status'] = _initial_status(pod)
        self._put(pod)

    def _schedule(self) -> bool:
        """kube-scheduler's filters that matter here (taints, nodeSelector, free host
        ports), then the least loaded node that fits."""
        nodes = [o for (k, _, _), o in self.objects.items() if k == 'Node']
        load = {n['metadata']['name']: 0 for n in nodes}
        used = {n['metadata']['name']: set() for n in nodes}   # (hostPort, protocol)
        pending = []
        for pod in self._pods():
            node = pod['spec'].get('nodeName')
            if node:
                load[node] = load.get(node, 0) + 1
                used.setdefault(node, set()).update(host_ports(pod))
            else:
                pending.append(pod)
        changed = False
        for pod in sorted(pending, key=lambda p: p['metadata']['creationTimestamp']):
            wanted = host_ports(pod)
            selector = pod['spec'].get('nodeSelector') or {}
            reasons = {}
            fits = []
            for n in nodes:
                name = n['metadata']['name']
                taint = next((t for t in n['spec'].get('taints') or []
                              if not tolerates(pod, t)), None)
                if taint:
                    why = f"had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
                elif any(n['metadata'].get('labels', {}).get(k) != v
                         for k, v in selector.items()):
                    why = "didn't match Pod's node affinity/selector"
                elif wanted & used[name]:
                    why = "didn't have free ports for the requested pod ports"
                else:
                    fits.append(name)
                    continue
                reasons[why] = reasons.get(why, 0) + 1
            conds = [c for c in pod['status'].get('conditions') or []
                     if c['type'] != 'PodScheduled']
            if not fits:
                conds.append({'type': 'PodScheduled', 'status': 'False',
                              'reason': 'Unschedulable',
                              'message': f'0/{len(nodes)} nodes are available: ' + ', '.join(
                                  sorted(f'{count} node(s) {why}'
                                         for why, count in reasons.items())) + '.'})
                if conds != pod['status'].get('conditions'):
                    pod['status']['conditions'] = conds
                    self._put(pod)
                    changed = True
                continue
            target = min(fits, key=lambda n: (load[n], n))
            load[target] += 1
            used[target].update(wanted)
            pod['spec']['nodeName'] = target
            pod['status']['conditions'] = conds + [{'type': 'PodScheduled', 'status': 'True'}]
            self._put(pod)
            changed = True
        return changed

    def _reconcile_endpoints(self) -> bool:
        changed = False
        slices = {}
        for (kind, ns, name), obj in list(self.objects.items()):
            if kind == 'EndpointSlice' and obj['metadata'].get('labels', {}).get(
                    'endpointslice.kubernetes.io/managed-by', '').startswith(
                    'endpointslice-controller'):
                svc = obj['metadata']['labels'].get('kubernetes.io/service-name')
                slices.setdefault((ns, svc), []).append(obj)
        wanted = set()
        for (kind, ns, name), svc in list(self.objects.items()):
            if kind != 'Service':
                continue
            existing = slices.get((ns, name), [])
            new = endpoints.compute_endpoint_slices(svc, self._pods(ns), existing, rng=self.rng)
            by_name = {s['metadata']['name']: s for s in existing}
            for sl in new:
                wanted.add((ns, sl['metadata']['name']))
                old = by_name.get(sl['metadata']['name'])
                if old is not None and _same_slice(old, sl):
                    continue
                if old is not None:
                    sl['metadata']['uid'] = old['metadata']['uid']
                    sl['metadata']['creationTimestamp'] = old['metadata']['creationTimestamp']
                else:
                    sl['metadata']['uid'] = naming.new_uid()
                    sl['metadata']['creationTimestamp'] = naming.now_rfc3339()
                self._put(sl)
                changed = True
        for (ns, _), items in slices.items():
            for sl in items:
                if (ns, sl['metadata']['name']) not in wanted:
                    self._remove(('EndpointSlice', ns, sl['metadata']['name']))
                    changed = True
        return changed


LB_HEALTH_KIND = 'LoadBalancerHealth'
NOT_EMULATED = ('livenessProbe', 'startupProbe', 'lifecycle.postStart')


def host_ports(pod: dict) -> set:
    """The (hostPort, protocol) pairs a pod takes on its node."""
    return {(p['hostPort'], p.get('protocol', 'TCP'))
            for c in pod['spec'].get('containers') or [] for p in c.get('ports') or []
            if p.get('hostPort')}


def _not_emulated(obj: dict) -> list[str]:
    """Warnings for container fields kubelab accepts but does not act on."""
    if obj['kind'] == 'Pod':
        spec, path = obj['spec'], 'spec'
    elif obj['kind'] == 'Deployment':
        spec, path = obj['spec']['template']['spec'], 'spec.template.spec'
    else:
        return []
    return [f'{manifests.object_ref(obj)}: {path}.containers[{i}].{field}: accepted but not '
            f'run by kubelab (it runs readinessProbe and preStop hooks)'
            for i, c in enumerate(spec.get('containers', [])) for field in NOT_EMULATED
            if _has(c, field)]


def _has(obj: dict, dotted: str) -> bool:
    for part in dotted.split('.'):
        if not isinstance(obj, dict) or part not in obj:
            return False
        obj = obj[part]
    return True


def _node_ports(spec: dict) -> set[int]:
    """The nodePorts a Service spec holds."""
    return {p['nodePort'] for p in spec.get('ports') or [] if p.get('nodePort')}


def _held_node_ports(spec: dict) -> set[int]:
    """Every port of the NodePort range a Service spec holds: its nodePorts and its
    healthCheckNodePort."""
    health = spec.get('healthCheckNodePort')
    return _node_ports(spec) | ({health} if health else set())


def _kept_node_ports(ports: list[dict], old_ports: list[dict]) -> None:
    """Give each port without a nodePort the one its old self had, as the API server
    patches them in: matched by name, else by port and protocol; never a value that
    another port of the new spec uses for the same protocol."""
    taken = {(p['protocol'], p['nodePort']) for p in ports if p.get('nodePort')}
    matchers = (lambda p, o: p.get('name', '') == o.get('name', ''),
                lambda p, o: (p['port'], p['protocol']) == (o['port'], o['protocol']))
    for same in matchers:
        for port in ports:
            if port.get('nodePort'):
                continue
            for old in old_ports:
                value = old.get('nodePort')
                if value and same(port, old) and (port['protocol'], value) not in taken:
                    port['nodePort'] = value
                    taken.add((port['protocol'], value))
                    break


def _assign_node_ports(obj: dict, old: dict | None, allocator: NodePortAllocator,
                       ref: str) -> list[ValidationError]:
    """Reserve, keep or allocate the nodePorts and the healthCheckNodePort of a Service
    being applied (writing them into its spec) and release those its old version no
    longer uses, after the new ones are taken."""
    spec = obj['spec']
    old_spec = old['spec'] if old is not None else {}
    if spec.get('type') not in EXTERNAL_SERVICE_TYPES:
        for port in spec['ports']:
            port.pop('nodePort', None)
        for value in _held_node_ports(old_spec):
            allocator.release(value)
        return []
    errors = []
    if spec.get('clusterIP') == 'None':          # a headless Service turned NodePort
        errors.append(ValidationError(ref, 'spec.clusterIP', 'Invalid value: "None": '
                                      + HEADLESS_EXTERNAL.format(type=spec['type'])))
    ports = spec['ports']
    if old is not None:
        _kept_node_ports(ports, old_spec.get('ports') or [])
    reserved = _node_ports(old_spec)
    for i, port in enumerate(ports):
        value = port.get('nodePort')
        if not value or value in reserved:
            continue
        try:
            allocator.reserve(value)
        except AllocationError as exc:
            errors.append(ValidationError(ref, f'spec.ports[{i}].nodePort',
                                          f'Invalid value: {value}: {exc}'))
            continue
        reserved.add(value)
    for i, port in enumerate(ports):
        if port.get('nodePort'):
            continue
        shared = _shared_node_port(port, ports)
        if shared:
            port['nodePort'] = shared
            continue
        try:
            port['nodePort'] = allocator.allocate()
        except AllocationError as exc:
            errors.append(ValidationError(ref, f'spec.ports[{i}].nodePort',
                                          f'failed to allocate a nodePort: {exc}'))
    errors.extend(_assign_health_check_node_port(spec, old_spec, allocator, ref))
    for value in _held_node_ports(old_spec) - _held_node_ports(spec):
        allocator.release(value)
    return errors


def _shared_node_port(port: dict, ports: list[dict]) -> int | None:
    """The nodePort of another port with the same number and another protocol (53/TCP
    and 53/UDP share one, as the API server allocates them), if this protocol does
    not use it yet."""
    used = {p['nodePort'] for p in ports
            if p.get('nodePort') and p['protocol'] == port['protocol']}
    for other in ports:
        value = other.get('nodePort')
        if value and other['port'] == port['port'] and \
                other['protocol'] != port['protocol'] and value not in used:
            return value
    return None


def _needs_health_check(spec: dict) -> bool:
    """A LoadBalancer Service with ``externalTrafficPolicy: Local``: its load balancer
    sends only to nodes with a local endpoint, found by health checks on a port of its
    own (``healthCheckNodePort``)."""
    return (spec.get('type'), spec.get('externalTrafficPolicy')) == ('LoadBalancer', 'Local')


def _assign_health_check_node_port(spec: dict, old_spec: dict, allocator: NodePortAllocator,
                                   ref: str) -> list[ValidationError]:
    """Keep, reserve or allocate ``spec.healthCheckNodePort``, as the API server does:
    a Service that had one keeps it (another value is refused, the field is immutable
    while needed); one that starts to need it gets the requested port or a free one.
    (Validation has refused the field where it is not needed.)"""
    if not _needs_health_check(spec):
        return []
    want = spec.get('healthCheckNodePort')
    if _needs_health_check(old_spec):
        have = old_spec['healthCheckNodePort']
        if want and want != have:
            return [ValidationError(ref, 'spec.healthCheckNodePort',
                                    f'Invalid value: {want}: field is immutable (it is {have})')]
        spec['healthCheckNodePort'] = have
        return []
    try:
        spec['healthCheckNodePort'] = allocator.reserve(want) if want else allocator.allocate()
    except AllocationError as exc:
        if want:
            return [ValidationError(ref, 'spec.healthCheckNodePort',
                                    f'Invalid value: {want}: {exc}')]
        return [ValidationError(ref, 'spec.healthCheckNodePort',
                                f'failed to allocate a healthCheckNodePort: {exc}')]
    return []


def _load_balancer_ip(svc: dict) -> str | None:
    """The load balancer address the store gave a Service (``status.loadBalancer``)."""
    ingress = (svc.get('status') or {}).get('loadBalancer', {}).get('ingress') or []
    return ingress[0]['ip'] if ingress else None


def _assign_load_balancer_ip(obj: dict, old: dict | None, allocator: LoadBalancerIPAllocator,
                             ref: str) -> list[ValidationError]:
    """Give a LoadBalancer Service its address, as a cloud's service controller and LB
    IPAM do, and write the status the store keeps (the user's is ignored): the address
    it has, unless ``spec.loadBalancerIP`` asks for another; else the one it asks for,
    or the lowest free one. An address given up (for another one, or because the
    Service is no LoadBalancer any more) goes back to the pool at once, free for the
    next object of the apply."""
    spec = obj['spec']
    had = _load_balancer_ip(old) if old is not None else None
    obj['status'] = {'loadBalancer': {}}
    address = None
    if spec.get('type') == 'LoadBalancer':
        want = spec.get('loadBalancerIP')
        try:
            if want and want != had:
                address = allocator.reserve(want, ref)
            else:
                address = had or allocator.allocate(ref)
        except AllocationError as exc:
            if want:
                return [ValidationError(ref, 'spec.loadBalancerIP',
                                        f'Invalid value: "{want}": {exc}')]
            return [ValidationError(ref, 'spec.type',
                                    f'Invalid value: "LoadBalancer": {exc}; delete a '
                                    f'LoadBalancer Service or use type NodePort')]
        obj['status']['loadBalancer']['ingress'] = [{'ip': address, 'ipMode': 'VIP'}]
    if had and had != address:
        allocator.release(had)
    return []


def _same(a: dict, b: dict) -> bool:
    strip = ('resourceVersion',)
    ma = {k: v for k, v in a['metadata'].items() if k not in strip}
    mb = {k: v for k, v in b['metadata'].items() if k not in strip}
    return ma == mb and {k: v for k, v in a.items() if k != 'metadata'} == \
        {k: v for k, v in b.items() if k != 'metadata'}


def _same_slice(a: dict, b: dict) -> bool:
    return (a.get('endpoints'), a.get('ports'), a['metadata'].get('labels')) == \
        (b.get('endpoints'), b.get('ports'), b['metadata'].get('labels'))


def _user_spec(new: dict, old: dict) -> dict:
    """A pod's spec as the user sent it, with what the scheduler filled in kept."""
    spec = copy.deepcopy(new['spec'])
    if old['spec'].get('nodeName') and not spec.get('nodeName'):
        spec['nodeName'] = old['spec']['nodeName']
    return spec


def _initial_status(obj: dict) -> dict:
    if obj['kind'] == 'Pod':
        return {'phase': 'Pending', 'conditions': []}
    if obj['kind'] == 'Deployment':
        return {}
    if obj['kind'] == 'Namespace':
        return {'phase': 'Active'}
    return {}

