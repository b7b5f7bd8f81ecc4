"""Run Python code inside another process's network namespace, without a subprocess.

A network namespace is a per-thread attribute on Linux: ``setns`` in a worker thread
moves only that thread. ``netns_executor(pid)`` gives a thread pool whose workers all
live in ``pid``'s network namespace, so the kubelet can probe pods from its node's
address the way a real kubelet does, at the cost of a socket, not a process.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(pid: int) -> None:
    """Move the calling thread into the network namespace of ``pid``."""
    fd = os.open(f'/proc/{pid}/ns/net', os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f'setns into the network namespace of pid {pid}: '
                               f'{os.strerror(err)}')
    finally:
        os.close(fd)


def netns_executor(pid: int, workers: int = 4, name: str = 'netns') -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name,
                              initializer=enter_netns, initargs=(pid,))
