"""The store's objects: a dict by (kind, namespace, name), indexed by kind, with the
order in which they changed.

Three needs of a store holding 10,000 Services (issue 20) shape it:

* the controllers read one kind (every Pod of a namespace, every Service): ``of_kind``
  answers from its own dict instead of a scan of every object;
* the controllers run after every change but should redo only what the change touched:
  ``take_pending`` hands over, once, the keys put or removed since it was last called
  (the store's EndpointSlice controller recomputes only the Services those keys
  concern);
* kube-proxy (the controller) follows the store by deltas, not whole snapshots:
  ``changed_since(version)`` lists the keys put or removed after ``version``, newest
  last, from a log that keeps one entry per key (its latest change; a removed key stays
  in it as a tombstone so that a follower learns of the removal). Tombstones beyond
  ``MAX_TOMBSTONES`` are dropped oldest first; ``floor`` then says from which version on
  the log is complete (a follower further behind must read everything again).

Keys change only through ``put`` and ``remove``; the plain dict methods read.
"""

from __future__ import annotations

MAX_TOMBSTONES = 10_000


class ObjectIndex(dict):
    def __init__(self):
        super().__init__()
        self._kinds: dict[str, dict[tuple, dict]] = {}
        self._log: dict[tuple, int] = {}       # key -> version of its last change, in order
        self._pending: set[tuple] = set()
        self._kind_version: dict[str, int] = {}     # kind -> version of its last change
        self._kind_count: dict[str, int] = {}       # kind -> changes ever (puts, removals)
        self.floor = 0          # changed_since(v) is complete for v >= floor

    def put(self, key: tuple, obj: dict, version: int) -> None:
        self[key] = obj
        self._kinds.setdefault(key[0], {})[key] = obj
        self._note(key, version)

    def remove(self, key: tuple, version: int):
        obj = self.pop(key, None)
        if obj is not None:
            self._kinds[key[0]].pop(key, None)
            self._note(key, version)
            if len(self._log) - len(self) > MAX_TOMBSTONES:   # every live key is logged
                self._drop_tombstones()
        return obj

    def _drop_tombstones(self) -> None:
        """Forget the older half of the removals (the log is oldest first)."""
        for key in list(self._log):
            if len(self._log) - len(self) <= MAX_TOMBSTONES // 2:
                break
            if key not in self:
                self.floor = max(self.floor, self._log.pop(key))

    def _note(self, key: tuple, version: int) -> None:
        self._log.pop(key, None)          # re-inserted: the log stays in change order
        self._log[key] = version
        self._pending.add(key)
        self._kind_version[key[0]] = version
        self._kind_count[key[0]] = self._kind_count.get(key[0], 0) + 1

    def version_of(self, kinds) -> int:
        """The version of the last change to an object of one of ``kinds`` (0: none):
        a reader of only these kinds may skip a run when it has not moved."""
        return max((self._kind_version.get(kind, 0) for kind in kinds), default=0)

    def count_of(self, kinds) -> tuple:
        """How often objects of each of ``kinds`` changed: unlike ``version_of`` it moves
        with every change, also the second of one version (a controller's own write
        during a reconcile round)."""
        return tuple(self._kind_count.get(kind, 0) for kind in kinds)

    def of_kind(self, kind: str) -> dict[tuple, dict]:
        """key -> object for one kind (the index's own dict: do not change it)."""
        return self._kinds.get(kind, {})

    def kinds(self) -> list[str]:
        return [kind for kind, objs in self._kinds.items() if objs]

    def take_pending(self) -> set[tuple]:
        """The keys put or removed since the last call."""
        pending, self._pending = self._pending, set()
        return pending

    def changed_since(self, version: int) -> list[tuple]:
        """The keys put or removed after ``version``, oldest change first."""
        keys = []
        for key in reversed(self._log):
            if self._log[key] <= version:
                break
            keys.append(key)
        keys.reverse()
        return keys
