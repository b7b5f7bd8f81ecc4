"""A pod's volumes on its node, laid out as the kubelet lays them out.

Each volume is a directory under the pod's directory in the lab's state directory
(``pods/<ns>_<name>_<uid>/volumes/kubernetes.io~<kind>/<name>``, the kubelet's
``/var/lib/kubelet/pods/<uid>/volumes/...``), bound into the containers that mount it:

- ``emptyDir``: an empty directory (mode 0777), shared by the pod's containers, removed
  with the pod. ``medium: Memory`` mounts a tmpfs on it inside the pod sandbox's mount
  namespace (``tmpfs``; made by topo/sandbox.prepare), so its pages are memory and the
  machine's view of the directory stays empty;
- ``configMap`` and ``secret``: the object's keys as files, written with the kubelet's
  atomic writer: the files in a timestamped directory ``..<time>``, a ``..data`` symlink
  to it swapped by rename, and one symlink per key to ``..data/<key>``. A change of the
  ConfigMap or Secret shows in a running container at once (``refresh``), all files at
  the same moment; a ``subPath`` mount binds the file itself and keeps what it had, as
  in Kubernetes.

``fsGroup`` owns the files and directories (group readable, emptyDir group writable and
setgid), as the kubelet's volume ownership does.
"""

from __future__ import annotations

import os
import shutil
import time

from services.container_config import ConfigError, Sources, expand, volume_files
from services.validation.common import parse_quantity
from topo.sandbox import Bind

KINDS = {'emptyDir': 'kubernetes.io~empty-dir', 'configMap': 'kubernetes.io~configmap',
         'secret': 'kubernetes.io~secret'}
DATA = '..data'


def _kind(volume: dict) -> str:
    return next(k for k in KINDS if k in volume)


class PodVolumes:
    """The volumes of one pod (``spec``) under ``pod_dir``."""

    def __init__(self, pod_dir: str, spec: dict):
        self.root = os.path.join(pod_dir, 'volumes')
        self.volumes = {v['name']: v for v in spec.get('volumes') or []}
        self.fs_group = (spec.get('securityContext') or {}).get('fsGroup')
        self.written: dict[str, dict] = {}       # volume -> the files it holds now
        for name, volume in self.volumes.items():
            path = self.path(name)
            os.makedirs(path, exist_ok=True)
            if _kind(volume) == 'emptyDir':
                os.chmod(path, 0o777)
                self._own(path, 0o2070 if self.fs_group is not None else 0)

    def path(self, name: str) -> str:
        return os.path.join(self.root, KINDS[_kind(self.volumes[name])], name)

    def tmpfs(self) -> list[tuple[str, str]]:
        """(directory, tmpfs options) of each ``medium: Memory`` emptyDir: a tmpfs in the
        sandbox (without ``sizeLimit``, half the machine's memory, tmpfs's default),
        owned as a disk-backed one is."""
        out = []
        for name, volume in sorted(self.volumes.items()):
            empty = volume.get('emptyDir')
            if empty is not None and empty.get('medium') == 'Memory':
                size = _bytes(empty.get('sizeLimit')) or '50%'
                owner = ('mode=0777' if self.fs_group is None else
                         f'mode=2777,gid={self.fs_group}')
                out.append((self.path(name), f'{owner},size={size}'))
        return out

    def refresh(self, sources: Sources) -> bool:
        """Write or update every configMap and secret volume; True when any changed.
        Raises ``ConfigError`` (the kubelet's FailedMount) for a missing source."""
        changed = False
        for name, volume in sorted(self.volumes.items()):
            files = volume_files(volume, sources)
            if files is None or self.written.get(name) == files:
                continue
            self._write(self.path(name), files,
                        0o040 if self.fs_group is not None else 0)
            self.written[name] = files
            changed = True
        return changed

    def binds(self, container: dict, env: dict) -> list[Bind]:
        """The container's ``volumeMounts`` as binds (``subPathExpr`` expanded with its
        environment); a missing subPath of an emptyDir is made, as the kubelet makes it."""
        out = []
        for mount in container.get('volumeMounts') or []:
            source = self.path(mount['name'])
            sub = mount.get('subPath') or expand(mount.get('subPathExpr') or '', env)
            if sub:
                source = os.path.join(source, sub)
                if _kind(self.volumes[mount['name']]) == 'emptyDir':
                    os.makedirs(source, mode=0o777, exist_ok=True)
                else:
                    source = os.path.realpath(source)     # the file, not ..data's link
                if not os.path.exists(source):
                    raise ConfigError(f'failed to prepare subPath for volumeMount '
                                      f'"{mount["name"]}" of container '
                                      f'"{container["name"]}": {sub} does not exist')
            out.append(Bind(source, mount['mountPath'], writable=not mount.get('readOnly')
                            and _kind(self.volumes[mount['name']]) == 'emptyDir'))
        return out

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------ the atomic writer
    def _write(self, path: str, files: dict, group_bits: int) -> None:
        stamp = time.strftime('..%Y_%m_%d_%H_%M_%S.') + f'{time.time_ns() % 10**9:09d}'
        new = os.path.join(path, stamp)
        os.makedirs(new)
        for rel, (data, mode) in files.items():
            target = os.path.join(new, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, 'wb') as f:
                f.write(data)
            os.chmod(target, mode)
            self._own(target, group_bits)
        self._own(new, 0o050 if group_bits else 0)
        link = os.path.join(path, DATA + '_tmp')
        os.symlink(stamp, link)
        old = os.readlink(os.path.join(path, DATA)) if os.path.islink(
            os.path.join(path, DATA)) else None
        os.replace(link, os.path.join(path, DATA))
        tops = {rel.split('/')[0] for rel in files}
        for entry in os.listdir(path):
            if entry.startswith('..'):
                continue
            if entry not in tops:
                os.unlink(os.path.join(path, entry))
        for top in tops:
            if not os.path.islink(os.path.join(path, top)):
                os.symlink(os.path.join(DATA, top), os.path.join(path, top))
        if old:
            shutil.rmtree(os.path.join(path, old), ignore_errors=True)

    def _own(self, path: str, bits: int) -> None:
        if self.fs_group is None:
            return
        os.chown(path, -1, self.fs_group, follow_symlinks=False)
        if bits and not os.path.islink(path):
            os.chmod(path, os.stat(path).st_mode | bits)


def _bytes(quantity) -> int | None:
    """A validated quantity (``64Mi``) in bytes."""
    if quantity is None:
        return None
    return int(parse_quantity(quantity))
