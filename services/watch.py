"""Following the store: the loop every consumer of its changes runs.

A controller outside the store (the DNS records writer, the L7 controller, the cloud's
load balancer, each kubelet) works as a Kubernetes controller does on a watch: it waits
for the store's resourceVersion to move (or a time to pass, for what time alone
changes), then resyncs from the whole current state, so a missed or repeated wake-up
costs nothing. A step that raises is logged with its traceback and the loop carries
on: the component keeps what it had, and the next change (or tick) retries.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

LOG = logging.getLogger('kubelab.watch')

#: How long the writers nothing waits for (the saved objects, the DNS records) let a
#: change settle before they follow it (``follow``'s ``settle``).
WRITER_SETTLE = 0.05
#: The saved objects (kubelab/daemon/persist.py) follow the controllers' changes later:
#: what an API request changed is saved before its answer, and what the saver keeps
#: rarely changes otherwise (not a pod's status, not a managed slice).
SAVE_SETTLE = 0.5


def follow(store, stop: threading.Event, step: Callable[[], object], what: str, *,
           interval: float = 1.0, retry_pause: float = 0.0, settle: float = 0.0,
           log: logging.Logger = LOG) -> None:
    """Run ``step`` after every change of ``store`` and at least every ``interval``
    seconds, until ``stop`` is set. A failing step is logged on ``log`` as ``<what>
    failed``; with ``retry_pause`` the loop then waits that long before the next try
    (so a step that keeps failing on a busy store does not spin). With ``settle`` a
    change is followed that long after it came (the changes that come meanwhile in the
    same run): a writer that nothing waits for leaves the interpreter it shares with
    the API server to kube-proxy's change stream first, which at 10,000 Services a
    pod's readiness makes 4 MB long."""
    version = 0
    while not stop.is_set():
        moved = store.wait(version, interval)
        if settle and moved != version and stop.wait(settle):
            break
        version = moved
        try:
            step()
        except Exception:
            log.exception('%s failed', what)
            if retry_pause:
                time.sleep(retry_pause)
