"""Where a lab keeps its state, whether one is running, and how its files are touched.

``$KUBELAB_STATE_DIR`` (default /run/kubelab) holds the API socket and token, the pid
registry, the saved objects, the controller's and the daemon's logs, the pods' logs.
The CLI, the client and the daemon all find the running lab here.

Root writes there, so the directory is checked before anything is read or written
(``check_state_dir``): an absolute path of plain characters, not a symbolic link, a
directory owned by root with mode 0700, under parents that only root can change (or
sticky, as /tmp). A directory that fails is refused with what is wrong and how to fix
it; a missing one is created 0700. Files in it are opened without following symbolic
links (``O_NOFOLLOW``) and written by an exclusively created temporary file renamed
into place (``write_file``), so even a link planted by whoever managed to write there
cannot make root write elsewhere.

The saved objects survive a crashed daemon, not a reboot where /run is a tmpfs (as on
most machines): choose another ``KUBELAB_STATE_DIR`` (e.g. /var/lib/kubelab) to keep
them across reboots.
"""

from __future__ import annotations

import os
import re
import stat

from services.errors import KubelabError

STATE_DIR = os.environ.get('KUBELAB_STATE_DIR', '/run/kubelab')

#: Characters a state directory's path may hold (it is written into OVSDB marks and
#: shell command lines).
_PLAIN_PATH = re.compile(r'^/[A-Za-z0-9._/-]*$')
#: Room left in a Unix socket's 108-byte path for the socket names in the directory.
_MAX_PATH = 90


class UnsafeStateDir(KubelabError):
    """The state directory could let another user steer what root reads or writes."""


def state_path(*parts: str) -> str:
    return os.path.join(STATE_DIR, *parts)


def lab_mark(state_dir: str = STATE_DIR) -> str:
    """The value of the ``kubelab-lab`` mark on what this lab creates (its bridges
    and interfaces): the state directory's real path, one lab per directory."""
    return os.path.realpath(state_dir)


def check_state_dir(path: str = STATE_DIR, create: bool = True) -> str:
    """Refuse a state directory another user could steer; create a missing one 0700.
    Returns the path."""
    if not _PLAIN_PATH.match(path) or '/../' in path + '/' or len(path) > _MAX_PATH:
        raise UnsafeStateDir(
            f'KUBELAB_STATE_DIR={path!r}: must be an absolute path of at most {_MAX_PATH} '
            'characters, letters, digits and / . _ - only, without ".."')
    parent = os.path.realpath(os.path.dirname(path.rstrip('/')) or '/')
    _check_parents(path, parent)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return path
        try:
            os.mkdir(path, 0o700)       # never follows a link at ``path``
        except FileExistsError:
            pass
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            os.chmod(path, 0o700)
            st = os.lstat(path)
    _check_dir(path, st)
    return path


def _allowed_owners() -> set[int]:
    return {0, os.geteuid()}


def _check_parents(path: str, parent: str):
    here = parent
    while True:
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            raise UnsafeStateDir(f'KUBELAB_STATE_DIR={path}: {here} does not exist; '
                                 'create the parent directories first') from None
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if st.st_uid not in _allowed_owners() or (writable and not
                                                  st.st_mode & stat.S_ISVTX):
            raise UnsafeStateDir(
                f'KUBELAB_STATE_DIR={path}: its parent {here} is owned by uid '
                f'{st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}: another user '
                'could replace the state directory; choose a directory under one only '
                'root can change (the default is /run/kubelab)')
        if here == '/':
            return
        here = os.path.dirname(here)


def _check_dir(path: str, st: os.stat_result):
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeStateDir(f'KUBELAB_STATE_DIR={path} is a symbolic link: give the '
                             'real directory (root would follow the link)')
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateDir(f'KUBELAB_STATE_DIR={path} is not a directory')
    if st.st_uid not in _allowed_owners():
        raise UnsafeStateDir(f'KUBELAB_STATE_DIR={path} belongs to uid {st.st_uid}, not '
                             'root: remove it (the lab creates it, 0700) or choose '
                             'another directory')
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise UnsafeStateDir(f'KUBELAB_STATE_DIR={path} has mode '
                             f'{stat.S_IMODE(st.st_mode):04o}: others could read the '
                             f'lab token or plant files; `chmod 700 {path}`')


def open_file(path: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symbolic link at ``path``."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def read_text(path: str) -> str:
    with os.fdopen(open_file(path), 'r') as f:
        return f.read()


def append_fd(path: str) -> int:
    """A log file opened for appending (created 0600), never through a link."""
    return open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def write_file(path: str, data: bytes, mode: int = 0o600):
    """Replace ``path`` atomically: an exclusively created temporary file beside it,
    renamed over it (a reader sees the old or the new content, never half)."""
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def running_daemon() -> int | None:
    """The pid of a live lab daemon, if there is one."""
    from topo.cleanup import is_alive      # only when asked: keeps the CLI fast
    try:
        pid, started = read_text(state_path('daemon.pid')).split()
    except (OSError, ValueError):
        return None
    return int(pid) if is_alive(int(pid), started) else None
