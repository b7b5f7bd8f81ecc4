"""Remove what a lab left behind, and only that.

The lab records every process it starts (its daemon, the controller, each host's shell,
each container's monitor) in a pid file, with the process's start time so that a
recycled pid is never killed, and where its cgroups are (topo/cgroups.py: every process
of every container, daemonised or not, is in one of them). It marks every Open vSwitch
bridge it creates with ``external_ids:kubelab-lab=<mark>`` and every root-namespace
interface with the alias ``kubelab-lab=<mark>`` (the mark is the state directory's path:
topo/network.py sets both). ``clean_leftovers`` kills the processes of those cgroups and
removes them, kills the recorded processes, deletes the bridges and interfaces that carry
this lab's mark, and that is all: a bridge or link that merely has a ``kl-`` name is left
alone (``foreign`` lists them, so ``up`` can refuse to build over them), no ``mn -c``, no
killing by process name. The mounts the lab makes live in the private mount namespaces of
its pods and containers: they go with their processes.
"""

from __future__ import annotations

import json
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
        line = f'{pid} {started} {what}\n'.encode()
        with self.lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def entries(self) -> list[tuple[int, str, str]]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        with os.fdopen(fd) as f:
            lines = f.read().splitlines()
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


MARK_KEY = 'kubelab-lab'


def bridge_marks() -> dict[str, str | None]:
    """Every Open vSwitch bridge named like the lab's (``kl-...``) -> its
    ``kubelab-lab`` mark (None: unmarked)."""
    out = subprocess.run(['ovs-vsctl', '--timeout=10', '--format=json',
                          '--columns=name,external_ids', 'list', 'Bridge'],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    marks = {}
    for name, ids in json.loads(out.stdout)['data']:
        if name.startswith(PREFIX):
            marks[name] = dict(ids[1]).get(MARK_KEY)
    return marks


def link_marks() -> dict[str, str | None]:
    """Root-namespace interfaces named like the lab's -> their mark (the alias
    ``kubelab-lab=<mark>``; None: unmarked)."""
    marks = {}
    for name in os.listdir('/sys/class/net'):
        if not name.startswith(PREFIX):
            continue
        try:
            with open(f'/sys/class/net/{name}/ifalias') as f:
                alias = f.read().strip()
        except OSError:
            alias = ''
        key, _, value = alias.partition('=')
        marks[name] = value if key == MARK_KEY and value else None
    return marks


def lab_bridges() -> list[str]:
    """Bridges named like the lab's, whoever made them."""
    return sorted(bridge_marks())


def lab_links() -> list[str]:
    """Root-namespace interfaces named like the lab's (``kl-...``), whoever made them."""
    return sorted(link_marks())


def foreign(mark: str) -> list[str]:
    """Bridges and interfaces with the lab's names that this lab did not mark."""
    found = [f'bridge {name} ({_whose(m)})' for name, m in sorted(bridge_marks().items())
             if m != mark]
    found += [f'interface {name} ({_whose(m)})' for name, m in sorted(link_marks().items())
              if m != mark]
    return found


def _whose(mark: str | None) -> str:
    return 'not made by kubelab, or by a version without marks' if mark is None \
        else f'of the lab with state directory {mark}'


def clean_leftovers(pidfile: str, mark: str, skip_pid: int | None = None,
                    cgroups_record: str | None = None) -> list[str]:
    """Remove a previous run's cgroups (recorded in ``cgroups_record``) and their
    processes, its recorded processes, and the bridges and interfaces marked ``mark``;
    say what was removed."""
    from topo.cgroups import LabCgroups
    removed = []
    cgroups = LabCgroups.from_record(cgroups_record) if cgroups_record else None
    if cgroups is not None:
        count = cgroups.destroy()
        if count:
            removed.append(f'{count} cgroups')
    registry = PidRegistry(pidfile)
    if registry.entries():
        registry.kill_all(skip=skip_pid)
        removed.append(f'{len(registry.entries())} recorded processes')
        os.unlink(pidfile)
    bridges = [name for name, m in bridge_marks().items() if m == mark]
    if bridges:
        args = []
        for br in sorted(bridges):
            args += ['--', '--if-exists', 'del-br', br]
        subprocess.run(['ovs-vsctl', '--timeout=10', *args], capture_output=True)
        removed.append('bridges ' + ' '.join(sorted(bridges)))
    links = [name for name, m in link_marks().items() if m == mark]
    for name in links:
        subprocess.run(['ip', 'link', 'del', name], capture_output=True)
    if links:
        removed.append(f'{len(links)} interfaces')
    return removed
