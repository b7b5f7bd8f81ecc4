"""Validation of a pod's ``volumes`` and of its containers' ``volumeMounts``.

kubelab's kubelet makes three kinds of volume (topo/volumes.py), checked here with the
API server's rules (``ValidateVolumes``, ``ValidateVolumeMounts``):

- ``emptyDir``: a directory shared by the pod's containers, gone with the pod;
  ``medium: Memory`` is a tmpfs (its ``sizeLimit`` is the tmpfs's size). A disk-backed
  emptyDir's ``sizeLimit`` is enforced by a real kubelet's eviction, which kubelab does
  not do: refused with that reason.
- ``configMap`` and ``secret``: one file per key, or per ``items`` entry (``key``,
  relative ``path``, ``mode``), with ``defaultMode``; ``optional``.

Every other volume source is refused with the reason (kubelab has no storage, and a
pod's files never reach the machine, so no ``hostPath``). A mount names a volume of the
pod, an absolute ``mountPath`` unique in its container, ``readOnly``, and ``subPath`` or
``subPathExpr`` (a relative path below the volume; ``$(VAR)`` from the container's env).
Mount propagation from the machine does not exist in kubelab: only ``None``.
"""

from services.validation.common import (Checker, choices, dns1123_label_problem,
                                        dns1123_subdomain_problem, join, parse_quantity,
                                        suggestion)
from services.validation.secret import key_problem

SUPPORTED_SOURCES = ('configMap', 'emptyDir', 'secret')
NO_STORAGE = 'kubelab has no storage (no PersistentVolumes, no volume plugins)'
#: Kubernetes' other volume sources and why kubelab has none of them.
UNSUPPORTED_SOURCES = {
    'hostPath': "a pod's files never reach the machine in kubelab (use emptyDir)",
    'persistentVolumeClaim': NO_STORAGE, 'ephemeral': NO_STORAGE, 'csi': NO_STORAGE,
    'projected': 'use configMap and secret volumes',
    'downwardAPI': 'use env with valueFrom.fieldRef',
    'image': 'kubelab has no image store: images are emulated',
    'gitRepo': 'deprecated in Kubernetes; clone in an init step instead',
    **{source: NO_STORAGE for source in (
        'awsElasticBlockStore', 'azureDisk', 'azureFile', 'cephfs', 'cinder', 'fc',
        'flexVolume', 'flocker', 'gcePersistentDisk', 'glusterfs', 'iscsi', 'nfs',
        'photonPersistentDisk', 'portworxVolume', 'quobyte', 'rbd', 'scaleIO',
        'storageos', 'vsphereVolume')},
}
EMPTY_DIR_MEDIA = ('', 'Memory')
MOUNT_FIELDS = ('name', 'mountPath', 'readOnly', 'subPath', 'subPathExpr',
                'mountPropagation', 'recursiveReadOnly')
PROPAGATIONS = ('None',)
UNSUPPORTED_PROPAGATIONS = ('HostToContainer', 'Bidirectional')
RECURSIVE_READ_ONLY = ('Disabled', 'IfPossible', 'Enabled')
MAX_MODE = 0o777


def validate_volumes(chk: Checker, spec: dict, path: str) -> dict:
    """Check ``spec.volumes``; returns name -> volume for the mounts to refer to."""
    volumes = {}
    for vpath, volume in chk.items(spec, 'volumes', path):
        name = chk.string(volume, 'name', vpath, required=True)
        if name is not None:
            chk.name(name, join(vpath, 'name'), dns1123_label_problem)
            if name in volumes:
                chk.error(join(vpath, 'name'), f'Duplicate value: "{name}"')
            volumes[name] = volume
        sources = [k for k in volume if k != 'name']
        chk.known_fields(volume, vpath, ('name',) + SUPPORTED_SOURCES, (),
                         UNSUPPORTED_SOURCES)
        known = [s for s in sources if s in SUPPORTED_SOURCES or s in UNSUPPORTED_SOURCES]
        if not sources:
            chk.error(vpath, f'must specify a volume type; supported: '
                             f'{choices(SUPPORTED_SOURCES)}')
        elif len(known) > 1:
            chk.error(vpath, f'may not specify more than 1 volume type, got '
                             f'{choices(known)}')
        if isinstance(volume.get('emptyDir'), dict):
            _empty_dir(chk, volume['emptyDir'], join(vpath, 'emptyDir'))
        elif 'emptyDir' in volume:
            chk.mapping(volume, 'emptyDir', vpath, default=dict)
        for source, name_field in (('configMap', 'name'), ('secret', 'secretName')):
            data = chk.mapping(volume, source, vpath)
            if data is not None:
                _key_files(chk, data, join(vpath, source), name_field)
    return volumes


def _empty_dir(chk, empty_dir, path) -> None:
    chk.known_fields(empty_dir, path, ('medium', 'sizeLimit'))
    medium = chk.string(empty_dir, 'medium', path)
    if medium is not None and medium not in EMPTY_DIR_MEDIA:
        reason = ('kubelab nodes have no huge pages' if medium.startswith('HugePages')
                  else f'unsupported value "{medium}"{suggestion(medium, ["Memory"])}')
        chk.error(join(path, 'medium'), f'{reason}; supported: "" (the node\'s disk), '
                                        f'Memory (a tmpfs)')
    if empty_dir.get('sizeLimit') is None:
        return
    size = parse_quantity(empty_dir['sizeLimit'])
    where = join(path, 'sizeLimit')
    if size is None:
        chk.error(where, f'"{empty_dir["sizeLimit"]}" is not a quantity; write one like '
                         f'"64Mi" or "1Gi"')
    elif size <= 0:
        chk.error(where, f'Invalid value: "{empty_dir["sizeLimit"]}": must be greater '
                         f'than 0')
    elif medium != 'Memory':
        chk.error(where, 'is not supported by kubelab for a disk-backed emptyDir (a '
                         "real kubelet evicts the pod when it is exceeded; kubelab's "
                         'does not evict): use medium: Memory for a tmpfs of this size')


def _key_files(chk, source, path, name_field) -> None:
    """A configMap or secret volume: the object's name, its items and modes."""
    chk.known_fields(source, path, (name_field, 'items', 'defaultMode', 'optional'))
    name = chk.string(source, name_field, path, required=True)
    if name is not None:
        chk.name(name, join(path, name_field), dns1123_subdomain_problem)
    _mode(chk, source, 'defaultMode', path)
    chk.boolean(source, 'optional', path)
    paths = set()
    for ipath, item in chk.items(source, 'items', path):
        chk.known_fields(item, ipath, ('key', 'path', 'mode'))
        key = chk.string(item, 'key', ipath, required=True)
        if key is not None and key_problem(key):
            chk.error(join(ipath, 'key'), key_problem(key))
        target = chk.string(item, 'path', ipath, required=True)
        if target is not None:
            problem = relative_path_problem(target)
            if problem:
                chk.error(join(ipath, 'path'), problem)
            elif target in paths:
                chk.error(join(ipath, 'path'), f'Duplicate value: "{target}"')
            paths.add(target)
        _mode(chk, item, 'mode', ipath)


def _mode(chk, obj, key, path) -> None:
    mode = chk.integer(obj, key, path)
    if mode is not None and not 0 <= mode <= MAX_MODE:
        chk.error(join(path, key), f'Invalid value: {mode}: must be a number between 0 '
                                   f'and 0777 (octal), both inclusive')


def relative_path_problem(text: str) -> str | None:
    """The API server's rule for a path inside a volume (``items[].path``,
    ``subPath``): relative, without a ``..`` element."""
    if not text:
        return 'must not be empty'
    if text.startswith('/'):
        return f'Invalid value: "{text}": must be a relative path'
    if '..' in text.split('/'):
        return f"Invalid value: \"{text}\": must not contain '..'"
    return None


def validate_mounts(chk: Checker, container: dict, path: str, volumes: dict) -> None:
    """A container's ``volumeMounts`` against the pod's ``volumes``."""
    mount_paths = set()
    for mpath, mount in chk.items(container, 'volumeMounts', path):
        chk.known_fields(mount, mpath, MOUNT_FIELDS)
        name = chk.string(mount, 'name', mpath, required=True)
        if name is not None and name not in volumes:
            known = choices(sorted(volumes)) if volumes else 'none'
            chk.error(join(mpath, 'name'), f'Not found: "{name}": no volume of the pod has '
                                           f'this name; volumes: {known}')
        target = chk.string(mount, 'mountPath', mpath, required=True)
        if target is not None:
            where = join(mpath, 'mountPath')
            if not target.startswith('/'):
                chk.error(where, f'Invalid value: "{target}": must be an absolute path')
            elif target.rstrip('/') == '':
                chk.error(where, 'Invalid value: "/": a volume cannot replace the '
                                 "container's root")
            elif target.rstrip('/') in mount_paths:
                chk.error(where, f'Invalid value: "{target}": must be unique')
            mount_paths.add(target.rstrip('/'))
        read_only = chk.boolean(mount, 'readOnly', mpath)
        for key in ('subPath', 'subPathExpr'):
            sub = chk.string(mount, key, mpath)
            if sub:
                problem = relative_path_problem(sub)
                if problem:
                    chk.error(join(mpath, key), problem)
        if mount.get('subPath') and mount.get('subPathExpr'):
            chk.error(join(mpath, 'subPathExpr'), 'subPathExpr and subPath are mutually '
                                                  'exclusive')
        chk.one_of(mount, 'mountPropagation', mpath, PROPAGATIONS,
                   unsupported=UNSUPPORTED_PROPAGATIONS)
        rro = chk.one_of(mount, 'recursiveReadOnly', mpath, RECURSIVE_READ_ONLY)
        if rro == 'Enabled' and not read_only:
            chk.error(join(mpath, 'recursiveReadOnly'), 'may only be specified when '
                                                        'readOnly is true')
