"""The EndpointSlice controller as the store runs it: incrementally.

The store (services/store.py) runs its controllers after every change. This one
recomputes the slices (services/controllers/endpointslices.py, the pure rules) only of
the Services the keys changed since its last run concern: a Service put or removed, a
pod put or removed (the Services of its namespace that select it by its labels of
before or of now: ``pod_labels`` remembers them), a managed slice a user deleted (it
comes back) or one restored without its Service. A change no Service selects costs no
slice; a pod that backs 10,000 Services costs one endpoint computation shared by every
Service that selects alike (``memo``) and 10,000 comparisons. tests/unit/
test_store_incremental.py checks random change sequences against a full recompute.
"""

from __future__ import annotations

from services import naming
from services.controllers.endpointslices import MAX_NAME_PREFIX, compute_endpoint_slices
from services.selectors import matches


class EndpointSliceController:
    def __init__(self):
        self.pod_labels: dict[tuple, dict] = {}     # (ns, pod) -> the labels last seen

    def reconcile(self, store) -> bool:
        """The EndpointSlice controller, for the Services the changes since its last run
        concern (``_services_touched``): each one's slices recomputed from its
        namespace's pods, written when they differ, the ones it no longer wants removed.
        Slices of Services whose pods select alike are computed once per run (``memo``)
        and share their endpoint lists: the store never changes a slice in place."""
        dirty = self._services_touched(store, store.objects.take_pending())
        if not dirty:
            return False
        services = store.objects.of_kind('Service')
        slices: dict[tuple, list] = {}
        for (_, ns, _), obj in store.objects.of_kind('EndpointSlice').items():
            svc = _managed_slice_service(obj)
            if svc is not None and (ns, svc) in dirty:
                slices.setdefault((ns, svc), []).append(obj)
        pods_of, memo, changed = {}, {}, False
        for ns, name in sorted(dirty):
            svc = services.get(('Service', ns, name))
            existing = slices.get((ns, name), [])
            if ns not in pods_of:
                pods_of[ns] = store._pods(ns)
            new = [] if svc is None else compute_endpoint_slices(
                svc, pods_of[ns], existing, rng=store.rng, memo=memo)
            changed |= self._write_slices(store, ns, existing, new)
        return changed

    @staticmethod
    def _write_slices(store, ns: str, existing: list, new: list) -> bool:
        """Store a Service's wanted slices ``new`` over its ``existing`` ones."""
        changed = False
        by_name = {s['metadata']['name']: s for s in existing}
        for sl in new:
            old = by_name.pop(sl['metadata']['name'], None)
            if old is not None and _same_slice(old, sl):
                continue
            if old is not None:
                sl['metadata']['uid'] = old['metadata']['uid']
                sl['metadata']['creationTimestamp'] = old['metadata']['creationTimestamp']
            else:
                sl['metadata']['uid'] = naming.new_uid()
                sl['metadata']['creationTimestamp'] = naming.now_rfc3339()
            store._put(sl)
            changed = True
        for name in by_name:
            store._remove(('EndpointSlice', ns, name))
            changed = True
        return changed

    def _services_touched(self, store, keys: set) -> set:
        """(namespace, name) of the Services whose slices the changed ``keys`` may
        change: a Service put or removed; a managed slice removed (by a user: it comes
        back); a pod put or removed, for the Services of its namespace that select it
        with its labels of before or of now."""
        dirty, labels_by_ns = set(), {}
        for kind, ns, name in keys:
            obj = store.objects.get((kind, ns, name))
            if kind == 'Service':
                dirty.add((ns, name))
            elif kind == 'EndpointSlice' and obj is None:
                dirty |= {(ns, svc) for svc in self._gone_slice_services(store, ns, name)}
            elif kind == 'EndpointSlice':       # restored, its Service perhaps gone
                svc = _managed_slice_service(obj)
                if svc is not None and ('Service', ns, svc) not in store.objects:
                    dirty.add((ns, svc))
            elif kind == 'Pod':
                old = self.pod_labels.pop((ns, name), None)
                if obj is not None:
                    self.pod_labels[(ns, name)] = obj['metadata'].get('labels') or {}
                for labels in (old, None if obj is None else self.pod_labels[(ns, name)]):
                    if labels is not None:
                        labels_by_ns.setdefault(ns, []).append(labels)
        if labels_by_ns:
            for (_, ns, name), svc in store.objects.of_kind('Service').items():
                selector = (svc.get('spec') or {}).get('selector')
                if selector and any(matches(selector, labels)
                                    for labels in labels_by_ns.get(ns, ())):
                    dirty.add((ns, name))
        return dirty

    @staticmethod
    def _gone_slice_services(store, ns: str, slice_name: str) -> list:
        """The Services a removed slice may have belonged to (its name is the Service's
        and five characters): those whose managed slices no longer cover them."""
        return [name for (_, sns, name) in store.objects.of_kind('Service')
                if sns == ns and slice_name.startswith(
                    (name + '-')[:MAX_NAME_PREFIX])]


def _managed_slice_service(obj: dict) -> str | None:
    labels = obj['metadata'].get('labels') or {}
    if labels.get('endpointslice.kubernetes.io/managed-by', '').startswith(
            'endpointslice-controller'):
        return labels.get('kubernetes.io/service-name')
    return None


def _same_slice(a: dict, b: dict) -> bool:
    return (a.get('endpoints'), a.get('ports'), a['metadata'].get('labels')) == \
        (b.get('endpoints'), b.get('ports'), b['metadata'].get('labels'))
