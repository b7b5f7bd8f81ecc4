"""The store's side of persistence: its objects taken, under its lock, for the disk, and
put back from it.

``StoreDisk`` is a part of the Store (services/store.py inherits it). What is kept and
what becomes of it on the way back (pods start again from ``Pending``, the allocators
are rebuilt from the Services) is services/persistence.py's (pure); the daemon writes
the document after every change (kubelab/daemon/persist.py). Here:

* ``saved``: the document now, safe to write out (the kept objects from ``view``);
* ``saved_json``: the same document as JSON, each object's text kept while the object
  stays (by identity and resourceVersion), since encoding the whole store after every
  change cost 0.1 s at 10,000 Services;
* ``restore``: a saved document loaded into a store that holds only its own start-up
  objects, with the addresses its Services hold reserved again.
"""

from __future__ import annotations

import copy
import json

from services import persistence


class StoreDisk:
    """Persistence of a ``Store``, which sets ``objects``, ``cond``, ``cluster_ips``,
    ``node_ports``, ``replica_sets``, ``_saved_texts`` and ``_saved_rest``."""

    def saved(self, cluster_doc: dict) -> dict:
        """What persistence keeps of the store now, safe to write out: the objects from
        ``view`` (copies no one changes), the rest deep-copied."""
        with self.cond:
            # Only what is kept is copied: not the 10,000 managed slices a pod behind
            # 10,000 Services changes.
            objects = [o for kind in sorted(self.objects.kinds()) if kind not in
                       persistence.DERIVED_KINDS for o in self.view(kind, where=persistence.kept)]
            document = persistence.saved(objects, copy.deepcopy(self.replica_sets),
                                         cluster_doc)
            document['cluster'] = copy.deepcopy(document['cluster'])
            return document

    def saved_json(self, cluster_doc: dict) -> str:
        """``json.dumps(self.saved(cluster_doc), sort_keys=True)``, with each object's
        text kept while the object stays (by identity and resourceVersion): at 10,000
        Services the whole document took 0.1 s to encode after every change; now only
        what changed is encoded again."""
        with self.cond:
            texts, fresh = [], {}
            for kind in sorted(self.objects.kinds()):
                if kind in persistence.DERIVED_KINDS:
                    continue
                for key, obj in sorted(self.objects.of_kind(kind).items()):
                    if not persistence.kept(obj):
                        continue
                    hit = fresh[key] = self._saved_text(key, obj)
                    texts.append(hit[2])
            self._saved_texts = fresh
            rest = persistence.saved([], copy.deepcopy(self.replica_sets), cluster_doc)
            self._saved_rest = rest
        # As json.dumps(document, sort_keys=True) writes it, the objects from their texts.
        return '{' + ', '.join(
            json.dumps(field) + ': ' + ('[' + ', '.join(texts) + ']' if field == 'objects'
                                        else json.dumps(rest[field], sort_keys=True))
            for field in sorted(rest)) + '}'

    def saved_since(self, since: int, cluster_doc: dict) -> bool | None:
        """False when ``saved_json`` would give the text it gave at store version
        ``since`` (what it keeps did not change: a pod's status, the managed slices a
        pod behind 10,000 Services changes, a Lease, an Event); None when that cannot
        tell (the change log no longer reaches back). A pod becoming Ready then costs
        the saver a look at the keys changed, not a walk of the store under its lock."""
        with self.cond:
            keys = None if since < self.objects.floor or since > self.rv else \
                self.objects.changed_since(since)
            if keys is None or self._saved_rest is None:
                return None
            for key in keys:
                if key[0] in persistence.DERIVED_KINDS:
                    continue
                obj, hit = self.objects.get(key), self._saved_texts.get(key)
                if obj is None or not persistence.kept(obj):
                    if hit is not None:
                        return True           # a kept object gone
                    continue
                if hit is None:
                    return True
                now = self._saved_texts[key] = self._saved_text(key, obj)
                if now[2] != hit[2]:
                    return True
            return persistence.saved([], copy.deepcopy(self.replica_sets),
                                     cluster_doc) != self._saved_rest

    def _saved_text(self, key: tuple, obj: dict) -> tuple:
        """(``obj``, its resourceVersion, its saved JSON): the one kept while the object
        and its version stay, else encoded again."""
        version = obj['metadata'].get('resourceVersion')
        hit = self._saved_texts.get(key)
        if hit is None or hit[0] is not obj or hit[1] != version:
            hit = (obj, version, json.dumps(persistence.without_runtime(obj),
                                            sort_keys=True))
        return hit

    def restore(self, document: dict) -> list[str]:
        """Load what ``saved`` kept (into a store that holds only its own start-up
        objects); the allocators are rebuilt from the Services. Returns problems
        (addresses two saved Services claim: there should be none)."""
        with self.cond:
            problems = []
            for obj in persistence.restored_objects(document):
                self._put(obj)
                if obj['kind'] == 'Service':
                    problems += persistence.reserve_addresses(
                        obj, self.cluster_ips, self.node_ports, None)
            self.deployments.restore(document.get('replicaSets') or {})
            self._changed()
            return problems
