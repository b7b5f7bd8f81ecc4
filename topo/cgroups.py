"""The lab's cgroups: one per pod, one per container below it, all under one lab cgroup.

Every process a container starts, daemonised or not, lives in its container's cgroup, so
the kubelet can end all of it (``kill``), apply ``resources.limits`` (memory, cpu) and
weigh ``requests.cpu`` (cpu.shares from the request, 2 without one, as the kubelet
sets them), read what it uses (``usage``, for ``kubelab top pods``) and tell
an out-of-memory kill (``oom_kills``: the container's ``OOMKilled``). The layout is the
kubelet's, renamed: ``kubelab/pod<uid>/<container>``.

Machines mount cgroups two ways, detected from /proc/self/mountinfo, never assumed:

- pure cgroup v2 (Debian 12's default, the Vagrant VM): one hierarchy with every
  controller. The lab cgroup is at its top (``/sys/fs/cgroup/kubelab``), where the
  controllers can be delegated (v2 enables a controller for a child only in a cgroup
  that holds no process itself, which the cgroup the daemon runs in does), as Docker's
  cgroupfs driver does;
- cgroup v1 controllers (memory, cpu, ...), each its own hierarchy, usually with a
  controller-less cgroup2 hierarchy beside them (``/sys/fs/cgroup/unified``). Here the
  lab cgroup is made below the cgroup the daemon runs in, in each hierarchy (v1 allows
  it, and whatever limits the machine puts on the lab's caller keep holding); the
  cgroup2 hierarchy, when there is one, gives ``cgroup.kill`` and ``cpu.stat``.

Where the lab's cgroups are is written to a record in the state directory
(``cgroups.json``), so ``kubelab down`` and the next ``up`` after a crash remove exactly
them (``destroy``), nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

LOG = logging.getLogger('kubelab.cgroups')
LAB = 'kubelab'
#: The roles a hierarchy plays for the lab: membership and kill (cgroup2), limits.
ROLES = ('unified', 'memory', 'cpu', 'cpuacct')
V2_CONTROLLERS = ('cpu', 'memory', 'pids')
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000
MIN_SHARES, MAX_SHARES = 2, 262_144


class CgroupError(Exception):
    """A limit the machine's cgroups cannot apply."""


def _mounts(mountinfo: str) -> list[tuple[str, str, set]]:
    """(mount point, fs type, super options) of the cgroup mounts in ``mountinfo``."""
    out = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(' - ')
        fields, rest = left.split(), right.split()
        if len(fields) >= 5 and len(rest) >= 3 and rest[0] in ('cgroup', 'cgroup2'):
            out.append((fields[4], rest[0], set(rest[2].split(','))))
    return out


def _own(proc_cgroup: str) -> dict[str, str]:
    """Controller (or '' for cgroup2) -> the cgroup path of this process."""
    out = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(':', 2)
        for name in controllers.split(',') if controllers else ['']:
            out[name.replace('name=', '')] = path
    return out


def layout(mountinfo: str, proc_cgroup: str) -> tuple[dict[str, str], bool]:
    """Where the lab's cgroup goes in each hierarchy (role -> directory), and whether
    the controllers live in the cgroup2 hierarchy (pure v2). Pure: the machine's
    /proc/self/mountinfo and /proc/self/cgroup as text."""
    mounts = _mounts(mountinfo)
    own = _own(proc_cgroup)
    unified = next((m for m, kind, _ in mounts if kind == 'cgroup2'), None)
    v1 = {c: m for m, kind, opts in mounts if kind == 'cgroup'
          for c in opts if c in ('memory', 'cpu', 'cpuacct')}
    dirs = {}
    if unified and not v1:
        top = os.path.join(unified, LAB)
        return {role: top for role in ROLES}, True
    if unified:
        dirs['unified'] = os.path.join(unified + own.get('', '/').rstrip('/'), LAB)
    for role in ('memory', 'cpu', 'cpuacct'):
        if role in v1:
            dirs[role] = os.path.join(v1[role] + own.get(role, '/').rstrip('/'), LAB)
    return dirs, False


def _write(path: str, value: str) -> None:
    with open(path, 'w') as f:
        f.write(value)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _keyed(text: str | None, key: str) -> int | None:
    """The value of ``key`` in a ``key value`` per line file (cpu.stat, memory.events)."""
    for line in (text or '').splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return None


def cpu_shares(millicores: int | None) -> int:
    """The kubelet's cpu.shares for a cpu request (2 without one)."""
    if not millicores:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, millicores * 1024 // 1000))


def cpu_weight(shares: int) -> int:
    """cgroup v2's cpu.weight for v1 shares (the conversion runc and the kubelet use)."""
    return 1 + ((shares - MIN_SHARES) * 9999) // (MAX_SHARES - MIN_SHARES)


def cpu_quota(millicores: int) -> int:
    """CFS quota (µs per 100 ms period) for a cpu limit."""
    return max(MIN_CPU_QUOTA_US, millicores * CPU_PERIOD_US // 1000)


class LabCgroups:
    """The lab's cgroups on this machine: ``dirs`` is role -> the lab's directory."""

    def __init__(self, dirs: dict[str, str], v2: bool, record: str | None = None):
        self.dirs, self.v2, self.record = dirs, v2, record

    # ------------------------------------------------------------ the lab
    @classmethod
    def create(cls, record: str) -> 'LabCgroups':
        """Detect the machine's cgroups, make the lab's cgroup, write the record."""
        with open('/proc/self/mountinfo') as f, open('/proc/self/cgroup') as g:
            dirs, v2 = layout(f.read(), g.read())
        if not dirs:
            raise CgroupError('no cgroup hierarchy is mounted (/sys/fs/cgroup): the lab '
                              'needs cgroups to contain and limit its pods')
        labs = cls(dirs, v2, record)
        with open(record, 'w') as f:
            json.dump({'dirs': dirs, 'v2': v2}, f)
        for path in labs._paths():
            os.makedirs(path, exist_ok=True)
        if v2:
            parent = os.path.dirname(dirs['unified'])
            labs._delegate(parent)
            labs._delegate(dirs['unified'])
        return labs

    @classmethod
    def from_record(cls, record: str) -> 'LabCgroups | None':
        try:
            with open(record) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return cls(data['dirs'], data['v2'], record)

    def destroy(self) -> int:
        """Kill every process of the lab's cgroups and remove them; how many cgroups
        were removed. The record goes too."""
        for path in self._paths():
            if os.path.isdir(path):
                for name in os.listdir(path):
                    if os.path.isdir(os.path.join(path, name)):
                        self._kill_dir(name)
        removed = sum(self._rmtree(path, strict=False) for path in self._paths())
        if self.record and not any(os.path.isdir(path) for path in self._paths()):
            try:
                os.unlink(self.record)
            except FileNotFoundError:
                pass
        return removed

    def _paths(self, *parts: str) -> list[str]:
        return sorted({os.path.join(d, *parts) for d in self.dirs.values()})

    def _delegate(self, path: str) -> None:
        """Enable the v2 controllers the lab uses for the children of ``path``."""
        have = (_read(os.path.join(path, 'cgroup.controllers')) or '').split()
        wanted = ' '.join(f'+{c}' for c in V2_CONTROLLERS if c in have)
        if wanted:
            _write(os.path.join(path, 'cgroup.subtree_control'), wanted)

    # ------------------------------------------------------------ pods and containers
    @staticmethod
    def pod_name(uid: str) -> str:
        return f'pod{uid}'

    def add_pod(self, uid: str, memory: int | None = None, cpu: int | None = None,
                cpu_request: int = 0) -> None:
        """The pod's cgroup; ``memory`` (bytes) and ``cpu`` (millicores) limit the whole
        pod (the kubelet sets the sum of its containers' limits when all have one),
        ``cpu_request`` (the sum of their requests) weighs it against other pods."""
        name = self.pod_name(uid)
        for path in self._paths(name):
            os.makedirs(path, exist_ok=True)
        if self.v2:
            self._delegate(self._paths(name)[0])
        self._limit(name, memory, cpu, cpu_request)

    def add_container(self, uid: str, container: str, memory: int | None = None,
                      cpu: int | None = None, cpu_request: int = 0) -> None:
        """The container's cgroup with its limits, made afresh for each start (its
        counters, the OOM kills among them, start at zero)."""
        name = os.path.join(self.pod_name(uid), container)
        self._kill_dir(name)
        for path in self._paths(name):
            self._rmtree(path)
            os.makedirs(path)
        self._limit(name, memory, cpu, cpu_request)

    def procs_files(self, uid: str, container: str) -> list[str]:
        """The ``cgroup.procs`` files a process writes its pid to, to join the
        container's cgroups (every hierarchy)."""
        return self._paths(self.pod_name(uid), container, 'cgroup.procs')

    def _limit(self, name, memory, cpu, cpu_request) -> None:
        def put(role, filename, value):
            if role not in self.dirs:
                raise CgroupError(f'this machine has no {role} cgroup controller to apply '
                                  f'a {role} limit')
            try:
                _write(os.path.join(self.dirs[role], name, filename), str(value))
            except FileNotFoundError:
                raise CgroupError(f'{filename}: this machine\'s {role} cgroup controller '
                                  f'is not enabled for the lab') from None
        if self.v2:
            if memory:
                put('memory', 'memory.max', memory)
                for filename, value in (('memory.swap.max', 0), ('memory.oom.group', 1)):
                    try:
                        put('memory', filename, value)
                    except CgroupError:
                        pass                        # no swap accounting: nothing to turn off
            if cpu:
                put('cpu', 'cpu.max', f'{cpu_quota(cpu)} {CPU_PERIOD_US}')
            if cpu_request is not None:
                put('cpu', 'cpu.weight', cpu_weight(cpu_shares(cpu_request)))
            return
        if memory:
            put('memory', 'memory.limit_in_bytes', memory)
        if cpu:
            put('cpu', 'cpu.cfs_period_us', CPU_PERIOD_US)
            put('cpu', 'cpu.cfs_quota_us', cpu_quota(cpu))
        if cpu_request is not None:
            put('cpu', 'cpu.shares', cpu_shares(cpu_request))

    # ------------------------------------------------------------ reading
    def usage(self, uid: str, container: str) -> tuple[int | None, int | None]:
        """(cpu time in ns, memory working set in bytes) of a container, as cAdvisor
        reads them (usage minus inactive file pages); None where unknown."""
        name = os.path.join(self.pod_name(uid), container)
        cpu = memory = None
        if 'unified' in self.dirs:
            usec = _keyed(_read(os.path.join(self.dirs['unified'], name, 'cpu.stat')),
                          'usage_usec')
            cpu = usec * 1000 if usec is not None else None
        if cpu is None and 'cpuacct' in self.dirs:
            text = _read(os.path.join(self.dirs['cpuacct'], name, 'cpuacct.usage'))
            cpu = int(text) if text and text.strip().isdigit() else None
        if 'memory' in self.dirs:
            base = os.path.join(self.dirs['memory'], name)
            current, inactive = (('memory.current', 'inactive_file') if self.v2 else
                                 ('memory.usage_in_bytes', 'total_inactive_file'))
            text = _read(os.path.join(base, current))
            if text and text.strip().isdigit():
                stat = _read(os.path.join(base, 'memory.stat'))
                memory = max(0, int(text) - (_keyed(stat, inactive) or 0))
        return cpu, memory

    def oom_kills(self, uid: str, container: str) -> int:
        """How many processes the kernel killed for the container's memory limit."""
        if 'memory' not in self.dirs:
            return 0
        base = os.path.join(self.dirs['memory'], self.pod_name(uid), container)
        text = _read(os.path.join(base, 'memory.events' if self.v2 else 'memory.oom_control'))
        return _keyed(text, 'oom_kill') or 0

    # ------------------------------------------------------------ ending
    def kill(self, uid: str, container: str | None = None) -> None:
        """SIGKILL every process of the pod (or of one of its containers) and wait
        until they are gone."""
        name = self.pod_name(uid)
        self._kill_dir(os.path.join(name, container) if container else name)

    def remove_pod(self, uid: str) -> None:
        """Kill what is left of the pod and remove its cgroups (one still busy stays
        for ``destroy``, at the lab's end, to remove)."""
        self.kill(uid)
        for path in self._paths(self.pod_name(uid)):
            self._rmtree(path, strict=False)

    def _procs(self, name: str) -> set[int]:
        pids = set()
        for path in self._paths(name):
            for root, _, files in os.walk(path):
                if 'cgroup.procs' in files:
                    text = _read(os.path.join(root, 'cgroup.procs')) or ''
                    pids.update(int(p) for p in text.split())
        return pids

    def _kill_dir(self, name: str, timeout: float = 5.0) -> None:
        kill_file = (os.path.join(self.dirs['unified'], name, 'cgroup.kill')
                     if 'unified' in self.dirs else None)
        deadline = time.monotonic() + timeout
        while True:
            pids = self._procs(name)
            if not pids or time.monotonic() > deadline:
                return
            if kill_file and os.path.exists(kill_file):
                _write(kill_file, '1')
            else:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.02)

    @staticmethod
    def _rmtree(path: str, timeout: float = 3.0, strict: bool = True) -> int:
        """rmdir a cgroup and its children, deepest first (a cgroup whose last process
        is still exiting is busy for a moment); ``strict``: raise if one stays busy."""
        removed = 0
        if not os.path.isdir(path):
            return 0
        for root, dirs, _ in os.walk(path, topdown=False):
            deadline = time.monotonic() + timeout
            while True:
                try:
                    os.rmdir(root)
                    removed += 1
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        if strict:
                            raise
                        LOG.warning('cgroup %s is still busy; left for later', root)
                        break
                    time.sleep(0.02)
        return removed
