"""kube-scheduler: a node for each pod that has none.

A pure function over the Node and Pod objects, with the filters of kube-scheduler that
matter in the lab: a node's taints the pod does not tolerate (the control plane's
``NoSchedule`` taint), the pod's ``nodeSelector``, and the host ports already taken on
the node (``hostPort`` with its protocol). Of the nodes that pass, the pod goes to the
one with the fewest running pods of its own controller (a ReplicaSet's replicas spread
over the nodes, as kube-scheduler's default topology spreading by hostname does; a
terminating pod does not count, as it does not there), then the least loaded one (fewest
pods), then by name. Pending pods are placed oldest first, each placement counting for
the next.

A pod that fits no node stays Pending with the condition kube-scheduler writes:
``PodScheduled`` False, reason ``Unschedulable``, and a message that counts the nodes
by why they were filtered out (``0/3 nodes are available: 1 node(s) had untolerated
taint {...}, 2 node(s) didn't match Pod's node affinity/selector.``).

``schedule`` decides; the store (services/store_controllers.py) writes the bindings into
the pods.
"""

from __future__ import annotations


def tolerates(pod: dict, taint: dict) -> bool:
    """The pod has a toleration for ``taint``."""
    for tol in pod['spec'].get('tolerations') or []:
        if tol.get('operator') == 'Exists' and not tol.get('key'):
            return True
        if tol.get('key') == taint['key'] and tol.get('effect') in (None, '', taint['effect']):
            return True
    return False


def host_ports(pod: dict) -> set:
    """The (hostPort, protocol) pairs a pod takes on its node."""
    return {(p['hostPort'], p.get('protocol', 'TCP'))
            for c in pod['spec'].get('containers') or [] for p in c.get('ports') or []
            if p.get('hostPort')}


def _why_not(pod: dict, node: dict, wanted: set, used: set) -> str | None:
    """Why ``node`` is filtered out for ``pod`` (kube-scheduler's words), None when it
    fits."""
    taint = next((t for t in node['spec'].get('taints') or []
                  if not tolerates(pod, t)), None)
    if taint:
        return f"had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
    selector = pod['spec'].get('nodeSelector') or {}
    if any(node['metadata'].get('labels', {}).get(k) != v for k, v in selector.items()):
        return "didn't match Pod's node affinity/selector"
    if wanted & used:
        return "didn't have free ports for the requested pod ports"
    return None


def controller_of(pod: dict) -> tuple | None:
    """The pod's controlling owner (namespace, name, uid), None for a bare pod."""
    meta = pod['metadata']
    ref = next((r for r in meta.get('ownerReferences') or [] if r.get('controller')), None)
    return (meta.get('namespace'), ref['name'], ref['uid']) if ref else None


def schedule(nodes: list[dict], pods: list[dict]) -> list[tuple[dict, str | None, list]]:
    """The pending pods of ``pods`` whose scheduling changes, each as (pod, the node it
    is bound to or None when it fits none, its new ``status.conditions``). A pod that
    fits no node is listed only when its conditions change."""
    load = {n['metadata']['name']: 0 for n in nodes}
    used = {n['metadata']['name']: set() for n in nodes}   # (hostPort, protocol)
    siblings: dict[tuple, int] = {}                       # (controller, node) -> pods
    pending = []
    for pod in pods:
        node = pod['spec'].get('nodeName')
        if node:
            load[node] = load.get(node, 0) + 1
            used.setdefault(node, set()).update(host_ports(pod))
            owner = controller_of(pod)
            if owner and not pod['metadata'].get('deletionTimestamp'):
                siblings[owner, node] = siblings.get((owner, node), 0) + 1
        else:
            pending.append(pod)
    decisions = []
    for pod in sorted(pending, key=lambda p: p['metadata']['creationTimestamp']):
        wanted = host_ports(pod)
        reasons: dict[str, int] = {}
        fits = []
        for n in nodes:
            name = n['metadata']['name']
            why = _why_not(pod, n, wanted, used[name])
            if why is None:
                fits.append(name)
            else:
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
                decisions.append((pod, None, conds))
            continue
        owner = controller_of(pod)
        target = min(fits, key=lambda n: (siblings.get((owner, n), 0), load[n], n))
        load[target] += 1
        if owner:
            siblings[owner, target] = siblings.get((owner, target), 0) + 1
        used[target].update(wanted)
        decisions.append((pod, target, conds + [{'type': 'PodScheduled', 'status': 'True'}]))
    return decisions
