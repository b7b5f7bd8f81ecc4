"""What of the store is kept on disk, and how a store is rebuilt from it (pure).

The lab daemon writes ``saved(store)`` to ``objects.json`` in the state directory after
every change (kubelab/daemon/persist.py writes it atomically); a daemon killed with
``kill -9`` is brought back by the next ``kubelab up``, which hands the file to
``Store.restore``. ``kubelab down`` is what removes it.

Kept: every object the user applied or the controllers made from them (Namespaces,
Services with their ClusterIPs, nodePorts, healthCheckNodePort and load balancer
address, Deployments with their ReplicaSet records (revisions, templates), Pods,
Secrets, user-written EndpointSlices, Ingress and Gateway API objects, MetalLB's pools
and advertisements). Not kept: the Nodes (the cluster file makes them), what the
EndpointSlice controller and the cloud's health checks compute again, what the kubelets
and MetalLB's speakers write again once they run (Leases, ServiceL2Statuses, the lab's
L2Announcements) and what only described the stopped run (Events, the lab's
LabNetwork), pods that were terminating (their end came with the daemon's), and every
pod's status.

What happens to pods: a restart of the daemon is a restart of every node, so each pod
keeps its object (name, uid, node, owner) and starts again from ``Pending``, in a new
sandbox with a new IP, as a pod whose node rebooted does; a Deployment's pods are not
replaced but restarted. The allocators are rebuilt from the Services, so every Service
keeps its ClusterIP and nodePorts; its load balancer address is in its status, which
the controller that gives addresses reads (a Service keeps its address).
"""

from __future__ import annotations

import copy

from services.errors import AllocationError, KubelabError

FORMAT = 1
#: Kinds the store computes again, never restored.
DERIVED_KINDS = {'Node', 'LoadBalancerHealth', 'Lease', 'Event', 'ServiceL2Status',
                 'L2Announcement', 'LabNetwork'}
#: The ReplicaSet record's fields that are its spec (the rest is status, recomputed).
RS_FIELDS = ('name', 'hash', 'template', 'created', 'revision', 'replicas', 'desired',
             'max_replicas')


class SavedStateMismatch(KubelabError):
    """The saved objects belong to another cluster."""


def _managed_slice(obj: dict) -> bool:
    return obj['kind'] == 'EndpointSlice' and obj['metadata'].get('labels', {}).get(
        'endpointslice.kubernetes.io/managed-by', '').startswith('endpointslice-controller')


def kept(obj: dict) -> bool:
    """Whether the saved document keeps ``obj`` (the store asks before copying it)."""
    return obj['kind'] not in DERIVED_KINDS and not _managed_slice(obj) \
        and not (obj['kind'] == 'Pod' and obj['metadata'].get('deletionTimestamp'))


def saved(objects: list[dict], replica_sets: dict, cluster_doc: dict) -> dict:
    """The document kept on disk: ``objects`` (every object of the store), the
    Deployment controller's ReplicaSet records, the cluster they ran on."""
    keep = [without_runtime(o) for o in objects if kept(o)]
    records = {uid: {h: {f: getattr(rs, f) for f in RS_FIELDS} for h, rs in sets.items()}
               for uid, sets in replica_sets.items()}
    return {'format': FORMAT, 'cluster': cluster_doc, 'objects': keep,
            'replicaSets': records}


def without_runtime(obj: dict) -> dict:
    """The object without what changes all the time and is not restored (a pod's
    status, every resourceVersion), so the file changes only when objects do."""
    obj = dict(obj, metadata={k: v for k, v in obj['metadata'].items()
                              if k != 'resourceVersion'})
    if obj['kind'] == 'Pod':
        obj.pop('status', None)
    return obj


def check_cluster(document: dict, cluster_doc: dict, source: str):
    """The saved objects fit only the cluster they were made on (its ranges, nodes)."""
    if document.get('format') != FORMAT:
        raise SavedStateMismatch(f'{source}: format {document.get("format")!r} is not '
                                 f'{FORMAT}; `kubelab down` discards it')
    if document.get('cluster') != cluster_doc:
        raise SavedStateMismatch(
            f'{source}: the objects saved by the lab that stopped without `kubelab down` '
            'belong to another cluster file; bring it up with that cluster file, or '
            '`kubelab down` to discard them')


def restored_objects(document: dict) -> list[dict]:
    """The saved objects as the restarted store holds them: pods back to Pending."""
    out = []
    for obj in document['objects']:
        obj = copy.deepcopy(obj)
        if obj['kind'] == 'Pod':
            obj['status'] = {'phase': 'Pending', 'conditions': []}
        out.append(obj)
    return out


def reserve_addresses(svc: dict, cluster_ips, node_ports, lb_ips) -> list[str]:
    """Take back what a restored Service held; the problems (there should be none)."""
    spec, ref = svc['spec'], f'Service {svc["metadata"].get("namespace")}/' \
                             f'{svc["metadata"]["name"]}'
    problems = []
    ip = spec.get('clusterIP')
    steps = []
    if ip and ip != 'None':
        steps.append(('clusterIP', lambda: cluster_ips.reserve(ip)))
    held = {p['nodePort'] for p in spec.get('ports') or [] if p.get('nodePort')}
    if spec.get('healthCheckNodePort'):
        held.add(spec['healthCheckNodePort'])
    for port in sorted(held):
        steps.append((f'nodePort {port}', lambda port=port: node_ports.reserve(port)))
    ingress = (svc.get('status') or {}).get('loadBalancer', {}).get('ingress') or []
    if lb_ips is not None and ingress and ingress[0].get('ip'):
        steps.append(('load balancer address',
                      lambda: lb_ips.reserve(ingress[0]['ip'], ref)))
    for what, step in steps:
        try:
            step()
        except AllocationError as exc:
            problems.append(f'{ref}: {what}: {exc}')
    return problems
