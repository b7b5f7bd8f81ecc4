"""The cluster store: the lab's API server state, and the controllers that keep it whole.

Objects are plain dicts in Kubernetes shape, keyed by (kind, namespace, name). Every
change runs, under one lock, the controllers a real control plane runs after it:
the Deployment controller (pods from templates), the scheduler (a node for each pod) and
the EndpointSlice controller (slices from selectors and readiness), as
services/store_controllers.py runs them. Then the store's resourceVersion goes up once
and watchers wake (``wait``, ``snapshot``; the loop that follows them is
services/watch.py).

``apply`` is all-or-nothing: every object of the request is validated and checked
against the cluster (names, ClusterIPs, NodePorts, load balancer addresses) before
anything changes; one error rejects all. The checks run on copies of the allocators,
kept only when all passed.

The store keeps the objects and runs the rules; the rules live by subject:

* a Service's addresses, as the API server assigns them, in services/allocation/:
  the ClusterIP (reserved, allocated, immutable) in ``cluster_ips.py``; the nodePorts
  (reserved, kept on update by name then port and protocol, shared across protocols,
  released after the new ones are taken) and the ``healthCheckNodePort`` in
  ``node_ports.py``; the allocators themselves in ``allocators.py``;
* what the API server hears from kubelets (Lease renewals), the node lifecycle
  controller's pass, the controllers that give LoadBalancer Services their addresses
  (the cloud's, in services/allocation/load_balancer_ips.py, or MetalLB's) and the
  events, in services/store_lifecycle.py (a part of the Store);
* kube-scheduler's filters and choice in services/controllers/scheduler.py;
* the warnings an apply prints (fields not run, unknown nodes, selectors matching
  nothing) in services/validation/warnings.py;
* the Deployment controller's records and decisions in
  services/controllers/deployments.py (the store makes and terminates the pods it asks
  for); the EndpointSlice computation in services/controllers/endpointslices.py, run
  incrementally (only the Services a change concerns) by
  services/controllers/endpointslice_sync.py;
* the objects themselves, indexed by kind and logged in the order they changed (so the
  controllers and kube-proxy follow changes, not whole states), in services/objectindex.py;
  the reading side (copies, views, snapshots, changes) in services/store_reads.py.

``saved`` and ``restore`` keep the store on disk across a daemon that died
(services/store_disk.py; services/persistence.py says what is kept and what becomes of
pods); ``apply``
refuses more pods than the cluster can run (``pod_capacity``).

``tick`` re-runs the controllers for what time alone changes (minReadySeconds, a
node's silence, tolerationSeconds; services/store_controllers.py). The kubelet, the cloud's health checks and the L7
controller write back through ``update_pod_status``, ``pod_gone``, ``renew_lease``,
``set_lb_health`` and ``set_status``. Pods get the DefaultTolerationSeconds admission's
tolerations when they are created.
"""

from __future__ import annotations

import json
import copy
import random
import threading
import time

from services import manifests, naming
from services.allocation.allocators import ClusterIPAllocator, NodePortAllocator
from services.allocation.cluster_ips import assign_cluster_ip, release_cluster_ip
from services.allocation.load_balancer_ips import class_change_problems
from services.allocation.node_ports import assign_node_ports, release_node_ports
from services.controllers.endpointslice_sync import EndpointSliceController
from services.controllers.node_lifecycle import NEVER_MESSAGE, NodeLifecycle, \
    default_tolerations
from services.controllers.deployments import DeploymentController, ReplicaSet, \
    keep_rollout_marks, new_pod, owned_by, stamp_restart
from services.errors import ApplyError, KubelabError, NotFound, ValidationError
from services.labels import relabel
from services.metallb.ipam import admission_problems as metallb_admission
from services.objectindex import ObjectIndex
from services.store_controllers import ControllerLoop
from services.store_disk import StoreDisk
from services.store_lifecycle import POOL_ANNOTATION, LifecycleWrites
from services.store_reads import StoreReads
from services.validation.common import Checker
from services.validation.deployment import default_strategy
from services.validation.warnings import apply_warnings

KUBELET_VERSION = 'v1.31.0-kubelab'
#: Kinds whose content is top-level fields, not ``spec``: kind -> those fields.
CONTENT_FIELDS = {'Secret': ('type', 'data', 'immutable'),
                  'ConfigMap': ('data', 'binaryData', 'immutable')}
#: How many pods one node runs: kubelet's default ``maxPods``. The lab refuses an apply
#: or a scale that would need more pods than its nodes run together (a real cluster
#: would keep them Pending; a lab that holds 100,000 pending pods is wedged).
MAX_PODS_PER_NODE = 110
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
                            'reason': 'NodeStatusUnknown', 'message': NEVER_MESSAGE,
                            'lastTransitionTime': created}],
            'nodeInfo': {'kubeletVersion': KUBELET_VERSION, 'osImage': 'kubelab',
                         'kernelVersion': _kernel(), 'containerRuntimeVersion': 'kubelab://1',
                         'architecture': 'amd64', 'operatingSystem': 'linux'},
        },
    }


def _kernel() -> str:
    import platform
    return platform.release()


#: Namespaces every cluster has (kubeadm's), and MetalLB's when it is installed.
SYSTEM_NAMESPACES = ('default', 'kube-system', 'kube-node-lease')
METALLB_NAMESPACE = 'metallb-system'


class Store(StoreReads, LifecycleWrites, ControllerLoop, StoreDisk):
    def __init__(self, cluster, rng: random.Random | None = None, clock=time.time):
        self.cluster = cluster
        self.rng = rng or random.Random()
        self.clock = clock       # seconds since the epoch: when pods become available
        self.deployments = DeploymentController()
        self.cond = threading.Condition()
        self.rv = 1
        self.epoch = naming.new_uid()     # tells a follower this store from an earlier one
        self.objects = ObjectIndex()     # (kind, namespace, name) -> object
        self._copies: dict[tuple, tuple] = {}   # key -> (object, its version, copy): view
        self.endpoint_slices = EndpointSliceController()
        self.cluster_ips = ClusterIPAllocator(cluster.service_cidr)
        self.node_ports = NodePortAllocator(*cluster.node_port_range)
        self.lifecycle = NodeLifecycle(cluster.node_monitor_grace_period)
        self._lb_notes: dict[str, tuple] = {}     # Service uid -> the last address event
        self._lb_seen = None      # the Service and pool changes the addresses were decided at
        self._saved_texts: dict = {}      # key -> (object, version, its saved JSON)
        self._saved_rest: dict | None = None   # the rest of the document last saved
        self._labelled: tuple | None = None    # changed_with_label's last answer
        self.streams = 0         # kube-proxy's change streams asking for a new version
        self.stream_arrivals = threading.Lock()   # (they count in before the store's lock)
        self.streamed = 0        # the newest version one of them was answered at
        created = naming.now_rfc3339()
        for node in cluster.nodes:
            self._put(node_object(node, created))
        for ns in SYSTEM_NAMESPACES + ((METALLB_NAMESPACE,) if cluster.metallb else ()):
            self._put({'apiVersion': 'v1', 'kind': 'Namespace',
                       'metadata': {'name': ns, 'uid': naming.new_uid(),
                                    'labels': {manifests.NAMESPACE_NAME_LABEL: ns},
                                    'creationTimestamp': created},
                       'status': {'phase': 'Active'}})

    @property
    def replica_sets(self) -> dict[str, dict[str, ReplicaSet]]:
        """The deployment controller's records: Deployment uid -> pod-template-hash ->
        its ReplicaSet."""
        return self.deployments.replica_sets

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
            new_namespaces = {o['metadata']['name'] for o in objs if o['kind'] == 'Namespace'}
            for obj in objs:
                errors.extend(self._check(obj, seen, ips, ports, new_namespaces))
                errors.extend(metallb_admission(obj, manifests.object_ref(obj),
                                                self.cluster.metallb,
                                                self.list_unlocked('IPAddressPool'), objs))
            if not errors:
                errors.extend(self._capacity_problems(objs))
            if errors:
                raise ApplyError(errors)
            warnings = apply_warnings(objs, self.objects.values(), self.cluster)
            if dry_run:
                return {'results': [[self._ref(o), 'validated'] for o in objs],
                        'warnings': warnings}
            results = []
            for obj in objs:
                results.append([self._ref(obj), self._upsert(obj)])
            self.cluster_ips = ips
            self.node_ports = ports
            if any(action != 'unchanged' for _, action in results):
                self._changed()
            return {'results': results, 'warnings': warnings}

    def pod_capacity(self) -> int:
        return MAX_PODS_PER_NODE * len(self.cluster.nodes)

    def _pods_wanted(self, replacing: dict) -> int:
        """Pods the cluster is asked to run: every Deployment's replicas and every pod
        no Deployment owns, with ``replacing`` ((kind, ns, name) -> object) in place of
        what the store holds."""
        current = {k: o for k, o in self.objects.items() if k[0] in ('Deployment', 'Pod')}
        current.update(replacing)
        total = 0
        for (kind, _, _), obj in current.items():
            if kind == 'Deployment':
                total += obj['spec'].get('replicas', 1)
            elif not obj['metadata'].get('ownerReferences') and \
                    not obj['metadata'].get('deletionTimestamp'):
                total += 1
        return total

    def _capacity_problems(self, objs: list[dict]) -> list[ValidationError]:
        replacing = {manifests.key(o): o for o in objs if o['kind'] in ('Deployment', 'Pod')}
        if not replacing:
            return []
        total = self._pods_wanted(replacing)
        if total <= self.pod_capacity():
            return []
        biggest = max(objs, key=lambda o: o['spec'].get('replicas', 1)
                      if o['kind'] == 'Deployment' else 0)
        field = 'spec.replicas' if biggest['kind'] == 'Deployment' else 'metadata.name'
        return [ValidationError(manifests.object_ref(biggest), field,
                                self._capacity_message(total))]

    def _capacity_message(self, total: int) -> str:
        nodes = len(self.cluster.nodes)
        return (f'the cluster would need {total} pods; kubelab runs at most '
                f'{self.pod_capacity()} ({MAX_PODS_PER_NODE} per node, kubelet\'s default '
                f'maxPods, x {nodes} nodes)')

    @staticmethod
    def _ref(obj):
        """``deployment.apps/web``, as kubectl names what it applied."""
        group = obj['apiVersion'].split('/')[0] if '/' in obj['apiVersion'] else ''
        kind = obj['kind'].lower() + (f'.{group}' if group else '')
        return f'{kind}/{obj["metadata"]["name"]}'

    def _check(self, obj: dict, seen: set, ips: ClusterIPAllocator,
               ports: NodePortAllocator, new_namespaces: set) -> list:
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
            errs.extend(assign_cluster_ip(obj, old, ips, ref))
            errs.extend(assign_node_ports(obj, old, ports, ref))
            errs.extend(class_change_problems(obj, old, ref))
        if kind == 'Deployment' and old is not None and \
                obj['spec'].get('selector') != old['spec'].get('selector'):
            shown = json.dumps(obj['spec'].get('selector'), sort_keys=True)
            errs.append(ValidationError(ref, 'spec.selector', f'Invalid value: {shown}: '
                                        'field is immutable'))
        if kind == 'Pod' and old is not None and \
                old['spec'] != _user_spec(obj, old, self.cluster.default_toleration_seconds):
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
            # As the API server: the status is not the creator's.
            if manifests.has_status(obj['kind']):
                obj['status'] = _initial_status(obj)
            if obj['kind'] == 'Pod':          # the DefaultTolerationSeconds admission
                default_tolerations(obj['spec'], self.cluster.default_toleration_seconds)
            self._put(obj)
            return 'created'
        new = copy.deepcopy(old)
        for field in ('labels', 'annotations'):
            if field in obj['metadata']:
                new['metadata'][field] = obj['metadata'][field]
            else:
                new['metadata'].pop(field, None)
        _keep_server_annotations(new, old)
        if 'spec' in obj:
            # A pod keeps the node the scheduler gave it (its spec cannot change anyway).
            spec = _user_spec(obj, old, self.cluster.default_toleration_seconds) \
                if obj['kind'] == 'Pod' else obj['spec']
            if spec != old.get('spec'):
                new['metadata']['generation'] = old['metadata'].get('generation', 1) + 1
            new['spec'] = spec
        for field in ('endpoints', 'ports', 'addressType'):
            if field in obj:
                new[field] = obj[field]
        if obj['kind'] in CONTENT_FIELDS:            # its content is not under spec
            for field in CONTENT_FIELDS[obj['kind']]:
                if field in obj:
                    new[field] = obj[field]
                else:
                    new.pop(field, None)
        if _same(new, old):
            return 'unchanged'
        self._put(new)
        return 'configured'

    def _put(self, obj: dict):
        meta = obj['metadata']
        meta['resourceVersion'] = str(self.rv + 1)
        self.objects.put((obj['kind'], meta.get('namespace', ''), meta['name']), obj,
                         self.rv + 1)

    def _remove(self, key):
        obj = self.objects.remove(key, self.rv + 1)
        self._copies.pop(key, None)
        if obj is not None and obj['kind'] == 'Service':
            release_cluster_ip(obj, self.cluster_ips)
            release_node_ports(obj, self.node_ports)
        return obj

    def _pods(self, namespace=None) -> list[dict]:
        return [o for (_, ns, _), o in self.objects.of_kind('Pod').items()
                if namespace is None or ns == namespace]

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

    def _create_pod(self, dep: dict, rs: ReplicaSet):
        ns = dep['metadata']['namespace']
        while True:
            name = f'{rs.name}-{naming.random_suffix(5, self.rng)}'
            if ('Pod', ns, name) not in self.objects:
                break
        pod = new_pod(dep, rs, name)
        default_tolerations(pod['spec'], self.cluster.default_toleration_seconds)
        pod['status'] = _initial_status(pod)
        self._put(pod)

    def label(self, kind: str, namespace: str | None, name: str, labels: dict,
              remove: list, overwrite: bool) -> dict:
        """``kubectl label``: set and remove labels of one object (services/labels.py
        has kubectl's rules); a Namespace keeps its ``kubernetes.io/metadata.name``."""
        with self.cond:
            key = (kind, namespace or '', name)
            obj = self.objects.get(key)
            if obj is None:
                raise NotFound(f'{manifests.resource_name(kind)} "{name}" not found'
                               + (f' in namespace "{namespace}"' if namespace else ''))
            meta = copy.deepcopy(obj['metadata'])
            meta['labels'], word, missing = relabel(meta.get('labels'), labels, remove,
                                                    overwrite)
            chk = Checker(manifests.object_ref(obj))
            chk.string_map(meta, 'labels', 'metadata', labels=True)
            if chk.errors:
                raise ApplyError(chk.errors)
            if kind == 'Namespace':
                manifests.name_label(meta)
            if meta['labels'] != (obj['metadata'].get('labels') or {}):
                obj['metadata'] = meta
                self._put(obj)
                self._changed()
            return {'message': f'{self._ref(obj)} {word}', 'notFound': missing}

    def scale(self, namespace: str, name: str, replicas: int) -> str:
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise KubelabError(f'--replicas: must be a whole number >= 0, got {replicas!r}')
        with self.cond:
            key = ('Deployment', namespace, name)
            if key not in self.objects:
                raise NotFound(f'deployments.apps "{name}" not found in namespace '
                               f'"{namespace}"')
            dep = self.objects[key]
            wanted = self._pods_wanted({key: {'metadata': {}, 'spec': {'replicas': replicas}}})
            if replicas > dep['spec']['replicas'] and wanted > self.pod_capacity():
                raise KubelabError(f'--replicas {replicas}: ' + self._capacity_message(wanted))
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
                if self._remove(key) is not None:
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

    def set_node_ready(self, name: str, ready: bool = True):
        """The kubelet's first status post (``renew_lease`` does it with its Lease)."""
        self.renew_lease(name)

LB_HEALTH_KIND = 'LoadBalancerHealth'
def _same(a: dict, b: dict) -> bool:
    strip = ('resourceVersion',)
    ma = {k: v for k, v in a['metadata'].items() if k not in strip}
    mb = {k: v for k, v in b['metadata'].items() if k not in strip}
    return ma == mb and {k: v for k, v in a.items() if k != 'metadata'} == \
        {k: v for k, v in b.items() if k != 'metadata'}


def _user_spec(new: dict, old: dict, toleration_seconds: int) -> dict:
    """A pod's spec as the user sent it, with what the scheduler filled in and the
    tolerations the admission added kept."""
    spec = copy.deepcopy(new['spec'])
    if old['spec'].get('nodeName') and not spec.get('nodeName'):
        spec['nodeName'] = old['spec']['nodeName']
    default_tolerations(spec, toleration_seconds)
    return spec


def _keep_server_annotations(new: dict, old: dict):
    """Annotations a controller writes (MetalLB's pool) survive an apply that does not
    mention them, as kubectl's three-way merge keeps them."""
    kept = (old['metadata'].get('annotations') or {}).get(POOL_ANNOTATION)
    if kept is not None and POOL_ANNOTATION not in (new['metadata'].get('annotations')
                                                    or {}):
        new['metadata'].setdefault('annotations', {})[POOL_ANNOTATION] = kept


def _initial_status(obj: dict) -> dict:
    if obj['kind'] == 'Pod':
        return {'phase': 'Pending', 'conditions': []}
    if obj['kind'] == 'Deployment':
        return {}
    if obj['kind'] == 'Namespace':
        return {'phase': 'Active'}
    if obj['kind'] == 'Service':
        return {'loadBalancer': {}}
    return {}

