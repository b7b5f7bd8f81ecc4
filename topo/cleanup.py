"""Remove what a lab left behind, and only that.

The lab records every process it starts (its daemon, the controller, each host's shell,
each container's monitor) in a pid file, with the process's start time so that a
recycled pid is never killed, and where its cgroups are (topo/cgroups.py: every process
of every container, daemonised or not, is in one of them). ``clean_leftovers`` kills the
processes of those cgroups and removes them, kills the recorded processes, deletes the
Open vSwitch bridges and root-namespace interfaces whose names carry the lab's ``kl-``
prefix, and that is all: no ``mn -c``, no killing by process name. The mounts the lab
makes live in the private mount namespaces of its pods and containers: they go with
their processes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time

from services.wiring import PREFIX

LOG = logging.getLogger('kubelab.cleanup')


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None if it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(')', 1)[1].split()[19]


def is_alive(pid: int, started: str) -> bool:
    """Is ``pid`` still the process that started at ``started``, and not a zombie?"""
    return start_time(pid) == started and not _zombie(pid)


class PidRegistry:
    """An append-only file of ``pid starttime what`` lines."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()

    def add(self, pid: int, what: str):
        started = start_time(pid)
        if started is None:
            return
        with self.lock, open(self.path, 'a') as f:
            f.write(f'{pid} {started} {what}\n')

    def entries(self) -> list[tuple[int, str, str]]:
        try:
            with open(self.path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            parts = line.split(' ', 2)
            if len(parts) == 3 and parts[0].isdigit():
                out.append((int(parts[0]), parts[1], parts[2]))
        return out

    def kill_all(self, skip: int | None = None, timeout: float = 3.0) -> int:
        """Kill every recorded process that still is the one recorded; returns how many."""
        entries = self.entries()
        alive = [pid for pid, started, _ in entries if pid != skip and is_alive(pid, started)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in alive:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                alive = [p for p in alive if start_time(p) is not None and not _zombie(p)]
                if not alive:
                    break
                time.sleep(0.05)
        return len(alive)


def _zombie(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] == 'Z'
    except OSError:
        return True


def lab_bridges() -> list[str]:
    out = subprocess.run(['ovs-vsctl', '--timeout=10', 'list-br'], capture_output=True,
                         text=True)
    return [b for b in out.stdout.split() if b.startswith(PREFIX)]


def lab_links() -> list[str]:
    """Root-namespace interfaces named like the lab's (``kl-...``)."""
    out = subprocess.run(['ip', '-o', 'link', 'show'], capture_output=True, text=True)
    names = []
    for line in out.stdout.splitlines():
        name = line.split(':', 2)[1].strip().split('@')[0]
        if name.startswith(PREFIX):
            names.append(name)
    return names


def clean_leftovers(state_dir: str, skip_pid: int | None = None) -> list[str]:
    """Remove a previous run's cgroups and their processes, its recorded processes,
    bridges and interfaces; say what was removed."""
    from topo.cgroups import LabCgroups
    removed = []
    cgroups = LabCgroups.from_record(os.path.join(state_dir, 'cgroups.json'))
    if cgroups is not None:
        count = cgroups.destroy()
        if count:
            removed.append(f'{count} cgroups')
    pidfile = os.path.join(state_dir, 'pids')
    registry = PidRegistry(pidfile)
    if registry.entries():
        registry.kill_all(skip=skip_pid)
        removed.append(f'{len(registry.entries())} recorded processes')
        os.unlink(pidfile)
    bridges = lab_bridges()
    if bridges:
        args = []
        for br in bridges:
            args += ['--', '--if-exists', 'del-br', br]
        subprocess.run(['ovs-vsctl', '--timeout=10', *args], capture_output=True)
        removed.append('bridges ' + ' '.join(bridges))
    links = lab_links()
    for name in links:
        subprocess.run(['ip', 'link', 'del', name], capture_output=True)
    if links:
        removed.append(f'{len(links)} interfaces')
    return removed
