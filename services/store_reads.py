"""The store's reading side: what the API server, the daemon's controllers and kube-proxy
read (services/store.py's ``Store`` inherits it; every method takes the store's lock).

* ``get`` and ``list`` give deep copies, for callers that may change them (the API
  server encodes them straight away);
* ``view`` gives the daemon's own readers (DNS records, the L7 controller, the cloud's
  health checks, the saved objects) copies made once per object version, and
  ``version_of`` lets a reader of a few kinds skip a run when none of them changed: at
  10,000 Services every deep copy of every object after every change cost seconds;
* ``snapshot`` waits for a new version and gives every object; ``changes`` (and
  ``changes_json``, encoded for the wire) only what changed since a version: kube-proxy's
  watch (controller/state.py's ``StateBuilder`` applies it), with EndpointSlices
  without what kube-proxy does not read and their endpoints sent once each
  (``for_proxy``, ``with_endpoints``).
"""

from __future__ import annotations

import copy
import time

import msgspec

from services import manifests
from services.endpoints import HEADLESS_LABEL, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL
from services.errors import NotFound


class StoreReads:
    """Reads of a ``Store``, which sets ``objects`` (an ObjectIndex), ``cond``, ``rv``,
    ``epoch`` and ``_copies``."""

    def get(self, kind: str, namespace: str | None, name: str) -> dict:
        with self.cond:
            obj = self.objects.get((kind, namespace or '', name))
            if obj is None:
                raise NotFound(f'{manifests.resource_name(kind)} "{name}" not found'
                               + (f' in namespace "{namespace}"' if namespace else ''))
            return clone(obj)

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        with self.cond:
            return [clone(o) for (_, ns, _), o in sorted(self.objects.of_kind(
                kind).items()) if namespace is None or ns == namespace]

    def version_of(self, kinds) -> int:
        """The version of the last change to an object of ``kinds``."""
        with self.cond:
            return self.objects.version_of(kinds)

    def view(self, kind: str, namespace: str | None = None, where=None) -> list[dict]:
        """``list`` for the daemon's own readers (the DNS records, the L7 controller,
        the cloud's health checks), which run after every change and only read: the
        same copies again while an object's resourceVersion stays, a new copy of what
        changed. Never change what it returns. At 10,000 Services a ``list`` of every
        EndpointSlice deep-copies them all (1.4 s); a view copies what changed.
        ``where(obj)``, given the store's own object (read it, never keep it), leaves
        out what a reader does not need before it is copied."""
        with self.cond:
            out = []
            for key, obj in sorted(self.objects.of_kind(kind).items()):
                if namespace is not None and key[1] != namespace:
                    continue
                if where is not None and not where(obj):
                    continue
                cached = self._copies.get(key)
                version = obj['metadata'].get('resourceVersion')
                if cached is None or cached[0] is not obj or cached[1] != version:
                    cached = self._copies[key] = (obj, version, clone(obj))
                out.append(cached[2])
            return out

    def changed_since(self, since: int) -> list[tuple] | None:
        """The keys put or removed after version ``since`` of this store, oldest change
        first; None when the log of removals no longer reaches back that far (a reader
        must then read everything)."""
        with self.cond:
            if since < self.objects.floor or since > self.rv:
                return None
            return self.objects.changed_since(since)

    def changed_with_label(self, since: int, label: str) -> list[tuple] | None:
        """``changed_since`` with each key's value of ``label`` (None: no such label, or
        the object is gone): [(key, value)], read under one hold of the lock, and kept
        for the next reader asking the same (the DNS writer, the L7 controller and the
        cloud's health checks follow the same changes, and at 10,000 Services a pod's
        readiness changes 10,000 slices: a ``label_of`` for each took the lock 10,000
        times in each of them)."""
        with self.cond:
            asked = (since, self.rv, label)
            memo = self._labelled
            if memo is not None and memo[0] == asked:
                return memo[1]
            if since < self.objects.floor or since > self.rv:
                return None
            get, out = self.objects.get, []
            for key in self.objects.changed_since(since):
                obj = get(key)
                out.append((key, None if obj is None else
                            (obj['metadata'].get('labels') or {}).get(label)))
            self._labelled = (asked, out)
            return out

    def read(self, key: tuple, fn):
        """``fn(the object key names, or None)``, under the store's lock: ``fn`` reads
        the store's own object and returns what it needs of it (never the object)."""
        with self.cond:
            return fn(self.objects.get(key))

    def label_of(self, key: tuple, label: str) -> str | None:
        """The value of one label of the object ``key`` (None: no such label or object)."""
        with self.cond:
            obj = self.objects.get(key)
            return None if obj is None else (obj['metadata'].get('labels') or {}).get(label)

    def snapshot(self, since: int = 0, timeout: float = 0) -> tuple[int, dict]:
        """Wait until the resourceVersion passes ``since`` (or ``timeout``), then return
        every object grouped by kind."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.rv <= since and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            out: dict[str, list] = {}
            for (kind, _, _), obj in sorted(self.objects.items()):
                out.setdefault(kind, []).append(clone(obj))
            return self.rv, out

    def changes(self, since: int = 0, epoch: str = '', timeout: float = 0) -> dict:
        """Wait while ``since`` is this store's version (up to ``timeout``), then return
        what changed after it (``epoch``: another store, as after a daemon restart, or 0
        gives everything at once, ``full``): the objects put, grouped by kind, and the
        keys removed.
        kube-proxy follows the store this way: a change among 10,000 Services sends one
        Service, not all of them."""
        return self._changes(since, epoch, timeout, clone)

    def changes_json(self, since: int = 0, epoch: str = '', timeout: float = 0) -> bytes:
        """``changes`` as the API server sends it: JSON, encoded under the store's lock
        from the objects themselves (no deep copy first: a pod that backs 10,000
        Services changes 10,000 slices, 33 MB of JSON in full, 3 MB in the form
        ``for_proxy`` gives; msgspec encodes it in a quarter of the json module's time)."""
        return self._changes(since, epoch, timeout, msgspec.json.encode)

    def _changes(self, since: int, epoch: str, timeout: float, finish):
        """Wait while the caller has this store's version ``since``, then answer. A
        stream of this store counts in ``streams`` from its arrival, before it takes
        the store's lock (the followers let it go first, ``wait``): it often comes while
        a write holds the lock (a pod's readiness, its EndpointSlice controller writing
        10,000 slices), and would else meet every follower that write woke. One of
        another store (an earlier daemon's epoch) or ahead of this one is answered at
        once, with everything, and holds no follower."""
        deadline = time.monotonic() + timeout
        if epoch != self.epoch or since > self.rv:       # (``rv`` only grows)
            with self.cond:
                try:
                    return self._changes_answer(since, epoch, finish)
                finally:
                    self._streamed()
        with self.stream_arrivals:
            self.streams += 1
        counted = True
        try:
            with self.cond:
                try:
                    while self.rv <= since and time.monotonic() < deadline:
                        self.cond.wait(deadline - time.monotonic())
                    return self._changes_answer(since, epoch, finish)
                finally:            # (answered or failed: the followers go on)
                    with self.stream_arrivals:      # (under the store's lock: a write
                        self.streams -= 1           # after it finds it counted out)
                    counted = False
                    self._streamed()
        finally:
            if counted:
                with self.stream_arrivals:
                    self.streams -= 1

    def _streamed(self):
        """A change stream has the store's version now (under the store's lock): the
        followers that let it go first go on."""
        if self.rv > self.streamed:
            self.streamed = self.rv
            self.cond.notify_all()

    def _changes_answer(self, since: int, epoch: str, finish):
        """What ``_changes`` answers (under the store's lock)."""
        full = since <= 0 or epoch != self.epoch or since > self.rv \
            or since < self.objects.floor     # removals that old were forgotten
        keys = sorted(self.objects) if full else self.objects.changed_since(since)
        objects: dict[str, list] = {}
        deleted = []
        endpoints = EndpointTable()
        for key in keys:
            obj = self.objects.get(key)
            if obj is None:
                deleted.append(list(key))
            else:
                objects.setdefault(key[0], []).append(for_proxy(obj, endpoints))
        return finish({'resourceVersion': str(self.rv), 'epoch': self.epoch,
                       'full': full, 'objects': objects, 'deleted': deleted,
                       'endpoints': endpoints.items, 'portLists': endpoints.port_lists})

    def wait(self, since: int, timeout: float) -> int:
        """The store's version once it passes ``since`` (or ``timeout`` passed). The
        daemon's followers wait here; a new version goes to kube-proxy's change
        stream first when one is waiting for it (for at most ``STREAM_FIRST_S``):
        they share the interpreter, and at 10,000 Services a pod's readiness is 10,000
        slices that the L7 controller, the kubelets and the cloud would each look
        through before kube-proxy got them (in a cluster, other processes)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.rv <= since and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            if self.rv > since:
                first = time.monotonic() + STREAM_FIRST_S
                while self.streams and self.streamed < self.rv and \
                        time.monotonic() < first:
                    self.cond.wait(first - time.monotonic())
            return self.rv


_ATOMS = (str, int, float, bool, type(None))
#: How long a follower of the store lets a waiting change stream have a new version
#: first (``StoreReads.wait``).
STREAM_FIRST_S = 0.25
_SLICE_META = ('name', 'namespace', 'labels', 'resourceVersion')
#: The labels of a slice kube-proxy reads: its Service's, and the two with which it
#: leaves the slice alone (``kube_proxy_ignores``); not the EndpointSlice controller's.
_SLICE_LABELS = (SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL)


class EndpointTable:
    """The endpoints of the slices one answer of the change stream sends, each once:
    the store's EndpointSlice controller gives every slice of Services that select
    alike the very same endpoint objects (and never changes a slice in place), so a pod
    behind 10,000 Services is 110,000 endpoints in 10,000 slices but 11 entries here.
    The same for the slices' lists of ports (``port_lists``): one list per ports."""

    def __init__(self):
        self.items: list = []
        self._index: dict[int, int] = {}      # id(endpoint) -> its index in items
        self._held: list = []                 # the endpoints indexed (ids stay theirs)
        self._lists: dict[int, tuple] = {}    # id(a slice's endpoints) -> (it, refs)
        self.port_lists: list = []
        self._ports: dict[int, tuple] = {}    # id(a slice's ports) -> (it, its index)

    def ports_ref(self, ports: list) -> int:
        """The index of a slice's list of ports in ``port_lists``."""
        hit = self._ports.get(id(ports))
        if hit is None or hit[0] is not ports:
            hit = self._ports[id(ports)] = (ports, len(self.port_lists))
            self.port_lists.append(ports)
        return hit[1]

    def refs(self, endpoints: list) -> list:
        """``ref`` of each of a slice's ``endpoints``: once per list (the controller
        gives the slices of Services that select alike the very same list)."""
        hit = self._lists.get(id(endpoints))
        if hit is None or hit[0] is not endpoints:
            hit = self._lists[id(endpoints)] = (endpoints, [self.ref(e) for e in endpoints])
        return hit[1]

    def ref(self, endpoint) -> int:
        index = self._index.get(id(endpoint))
        if index is None:
            index = self._index[id(endpoint)] = len(self.items)
            self._held.append(endpoint)
            self.items.append({k: v for k, v in endpoint.items() if k != 'targetRef'}
                              if isinstance(endpoint, dict) else endpoint)
        return index


def for_proxy(obj: dict, endpoints: EndpointTable) -> dict:
    """``obj`` as the change stream sends it: an EndpointSlice without what kube-proxy
    does not read (its endpoints' ``targetRef``, its owner references, uid, creation
    time, apiVersion, and the labels but ``_SLICE_LABELS``), its endpoints as indexes
    into ``endpoints`` (``with_endpoints`` puts them back): a pod behind 10,000 Services changes 10,000 slices, 33 MB of JSON in full.
    The result shares the rest with ``obj``: encode or copy it at once, under the
    store's lock."""
    if obj.get('kind') != 'EndpointSlice':
        return obj
    meta = obj['metadata']
    out = {k: v for k, v in obj.items() if k != 'apiVersion'}
    out['metadata'] = slim = {k: meta[k] for k in _SLICE_META if k in meta}
    labels = meta.get('labels')
    if isinstance(labels, dict):
        slim['labels'] = {k: labels[k] for k in _SLICE_LABELS if k in labels}
    if isinstance(obj.get('endpoints'), list):
        out['endpoints'] = endpoints.refs(obj['endpoints'])
    if isinstance(obj.get('ports'), list):
        out['ports'] = endpoints.ports_ref(obj['ports'])
    return out


def with_endpoints(body: dict) -> dict:
    """An answer of the change stream with each slice's endpoints and ports put back
    from the answer's tables (the slices then share those objects, and slices with the
    same endpoints one list, with the same ports one list: read them, never change
    them)."""
    table, port_lists = body.get('endpoints'), body.get('portLists')
    if port_lists is not None:
        for endpoint_slice in body.get('objects', {}).get('EndpointSlice', ()):
            index = endpoint_slice.get('ports')
            if type(index) is int:
                endpoint_slice['ports'] = port_lists[index]
    if table is not None:
        lists: dict = {}        # the same references: one list (Services that select alike)
        for endpoint_slice in body.get('objects', {}).get('EndpointSlice', ()):
            refs = endpoint_slice.get('endpoints')
            if isinstance(refs, list):
                key = tuple(refs)
                found = lists.get(key)
                if found is None:
                    found = lists[key] = [table[i] for i in refs]
                endpoint_slice['endpoints'] = found
    return body


def clone(obj):
    """A deep copy of a JSON-like object (dicts, lists, strings, numbers; the store holds
    nothing else), about four times as fast as ``copy.deepcopy``, which remembers every
    object it met; anything else goes to ``copy.deepcopy``."""
    kind = type(obj)
    if kind is dict:
        return {key: value if type(value) in _ATOMS else clone(value)
                for key, value in obj.items()}
    if kind is list:
        return [value if type(value) in _ATOMS else clone(value) for value in obj]
    if kind in _ATOMS:
        return obj
    return copy.deepcopy(obj)
