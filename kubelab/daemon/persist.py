"""The lab's objects on disk: written after every change, read back by the next ``up``.

``Saver`` writes services/persistence.py's document to ``objects.json`` in the state
directory: at once after every API request that changed objects (before its answer, so
what a caller was told "created" is on disk) and after any other change (the
controllers', followed like any watcher, SAVE_SETTLE after it). A change of nothing it
keeps (a pod's status, the managed slices) writes nothing and costs a look at the
changed keys (``Store.saved_since``). Each write replaces the file atomically
(statedir.write_file); an unchanged document is not written again. ``load`` reads it
back for the next daemon, checked against the cluster it belongs to; ``kubelab down``
removes it (``discard``), which is what ends the objects.
"""

from __future__ import annotations

import json
import logging
import os
import threading

from kubelab.daemon.statedir import read_text, write_file
from services.errors import KubelabError
from services.persistence import check_cluster
from services.watch import SAVE_SETTLE, follow

LOG = logging.getLogger('kubelab.persist')

SAVED_NAME = 'objects.json'


class Saver:
    def __init__(self, store, cluster_doc: dict, path: str):
        self.store = store
        self.cluster_doc = cluster_doc
        self.path = path
        self.lock = threading.Lock()
        self.last = None
        self.version = None    # the store version last saved (an unchanged store: no work)

    def save(self):
        version = self.store.rv
        if version == self.version:      # nothing changed since the last save
            return
        if self.version is not None and \
                self.store.saved_since(self.version, self.cluster_doc) is False:
            self.version = version       # nothing it keeps changed (a pod's readiness)
            return
        data = self.store.saved_json(self.cluster_doc).encode()
        with self.lock:
            if data != self.last:
                write_file(self.path, data)
                self.last = data
            self.version = max(self.version or 0, version)

    def follow(self, stop: threading.Event):
        threading.Thread(target=follow, args=(self.store, stop, self.save,
                                              'saving the objects'),
                         kwargs={'log': LOG, 'settle': SAVE_SETTLE}, name='persist',
                         daemon=True).start()


def load(path: str, cluster_doc: dict) -> dict | None:
    """The saved document, or None when there is none."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        return None
    try:
        document = json.loads(text)
        if not isinstance(document, dict) or not isinstance(document.get('objects'), list):
            raise ValueError('not a saved lab')
    except ValueError as exc:
        raise KubelabError(f'{path}: cannot be read back ({exc}); `kubelab down` '
                           'discards it') from None
    check_cluster(document, cluster_doc, path)
    return document


def discard(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
