"""One lab at a time: the locks a lab daemon holds for its whole life.

Two locks, both ``flock`` on files only root can create: ``lock`` in the state
directory (one daemon per directory) and the machine-wide ``/run/kubelab.lock`` (one
lab per machine: every lab uses the same bridge names, addresses and Open vSwitch).
The daemon takes both before it touches anything; a second ``kubelab up``, from the
same state directory or another, is refused with the running lab's pid and state
directory, and nothing of the running lab is cleaned or changed. The kernel drops a
lock when its holder dies, also by ``kill -9``, so a crashed lab never blocks the next.
Each lock file holds its holder's ``pid state-dir`` for the message.
"""

from __future__ import annotations

import fcntl
import os
import time

from kubelab.daemon.statedir import STATE_DIR, open_file
from services.errors import KubelabError

MACHINE_LOCK = '/run/kubelab.lock'


class LabRunning(KubelabError):
    """Another lab holds a lock."""


def _take(path: str) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None when another holds it."""
    fd = open_file(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def holder(path: str) -> str | None:
    """Who holds the lock at ``path`` ("pid N, state directory D"), or None if free."""
    try:
        fd = open_file(path)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            pass
        text = os.read(fd, 4096).decode(errors='replace').split(maxsplit=1)
        if len(text) == 2:
            return f'daemon pid {text[0]}, state directory {text[1]}'
        return 'a lab daemon'
    finally:
        os.close(fd)


class InstanceLock:
    def __init__(self, state_dir: str = STATE_DIR, machine_lock: str | None = MACHINE_LOCK):
        """``machine_lock`` None: only the state directory's lock (``down`` cleaning
        its own directory)."""
        self.paths = tuple(p for p in (machine_lock, os.path.join(state_dir, 'lock')) if p)
        self.state_dir = state_dir
        self.fds: list[int] = []

    def acquire(self):
        """Take both locks or none; LabRunning names the lab that holds one."""
        for path in self.paths:
            fd = _take(path)
            for _ in range(10):         # someone only looking (``holder``) lets go at once
                if fd is not None:
                    break
                time.sleep(0.05)
                fd = _take(path)
            if fd is None:
                self.release()
                raise LabRunning(f'a lab is already running ({holder(path) or path}): '
                                 '`kubelab down` stops it (with its KUBELAB_STATE_DIR)')
            os.ftruncate(fd, 0)
            os.pwrite(fd, f'{os.getpid()} {self.state_dir}\n'.encode(), 0)
            self.fds.append(fd)

    def release(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def running(self) -> str | None:
        """Whether a lab holds either lock (without taking them): its description."""
        for path in self.paths:
            who = holder(path)
            if who is not None:
                return who
        return None
