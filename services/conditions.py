"""Reading status conditions: is a pod Ready, is a node Ready.

The one reader of each, as Kubernetes' helpers (``podutil.IsPodReady``,
``nodeutil.IsNodeReady``) read them: the object's first condition of type ``Ready``
decides, and only its status ``"True"`` is ready (``"False"``, ``"Unknown"``, no
condition at all: not ready). A missing or empty ``status`` reads as not ready.
"""

from __future__ import annotations


def _ready(obj: dict) -> bool:
    for condition in (obj.get('status') or {}).get('conditions') or ():
        if condition.get('type') == 'Ready':
            return condition.get('status') == 'True'
    return False


def pod_ready(pod: dict) -> bool:
    """The pod's Ready condition is True: all its containers are ready (the kubelet's
    answer; the EndpointSlice controller calls it ``serving``). A terminating pod stays
    Ready while its containers pass their readiness probes: whoever must not count it
    (a Deployment's ready replicas) leaves out pods with a deletionTimestamp."""
    return _ready(pod)


def node_ready(node: dict) -> bool:
    """The node's Ready condition is True: its kubelet reports it healthy."""
    return _ready(node)
