"""Where a lab keeps its state, and whether one is running.

``$KUBELAB_STATE_DIR`` (default /run/kubelab) holds the API address and token, the pid
registry, the controller's and the daemon's logs, the pods' logs. The CLI, the client
and the daemon all find the running lab here.
"""

from __future__ import annotations

import os

STATE_DIR = os.environ.get('KUBELAB_STATE_DIR', '/run/kubelab')


def state_path(*parts: str) -> str:
    return os.path.join(STATE_DIR, *parts)


def running_daemon() -> int | None:
    """The pid of a live lab daemon, if there is one."""
    from topo.cleanup import is_alive      # only when asked: keeps the CLI fast
    try:
        with open(state_path('daemon.pid')) as f:
            pid, started = f.read().split()
    except (OSError, ValueError):
        return None
    return int(pid) if is_alive(int(pid), started) else None
