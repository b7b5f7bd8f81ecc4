"""Validation of ``securityContext``, the pod's and each container's.

What kubelab's sandbox acts on (topo/sandbox.py; services/container_config.run_as says
who a container runs as):

- ``runAsUser``, ``runAsGroup``, ``supplementalGroups``, ``fsGroup`` (the group that
  owns the pod's volumes), ``runAsNonRoot`` (checked by the kubelet when the container
  starts), ``supplementalGroupsPolicy``;
- ``capabilities`` ``add``/``drop`` over the default set a container runtime gives
  (containerd's: no NET_ADMIN, no SYS_ADMIN); ``readOnlyRootFilesystem``;
  ``allowPrivilegeEscalation: false`` (always so in kubelab: warned when set true);
- ``sysctls``: Kubernetes' safe set, written in the pod's own namespaces.

Refused, with the reason: ``privileged: true`` and the capabilities whose power is not
confined to the pod's namespaces (SYS_ADMIN, SYS_TIME, ...: on this machine they would
reach the machine itself); SELinux, Windows options, ``procMount: Unmasked``, unsafe
sysctls, Localhost seccomp and AppArmor profiles (files of a node kubelab does not
have). ``seccompProfile``/``appArmorProfile`` ``RuntimeDefault`` are accepted with a
warning (services/validation/warnings.py): kubelab loads no such profile.
"""

from services.validation.common import (INT32_MAX, Checker, choices, describe, join,
                                        suggestion)

#: Linux capabilities, as Kubernetes writes them (without ``CAP_``).
CAPABILITIES = (
    'AUDIT_CONTROL', 'AUDIT_READ', 'AUDIT_WRITE', 'BLOCK_SUSPEND', 'BPF',
    'CHECKPOINT_RESTORE', 'CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID',
    'IPC_LOCK', 'IPC_OWNER', 'KILL', 'LEASE', 'LINUX_IMMUTABLE', 'MAC_ADMIN',
    'MAC_OVERRIDE', 'MKNOD', 'NET_ADMIN', 'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_RAW',
    'PERFMON', 'SETFCAP', 'SETGID', 'SETPCAP', 'SETUID', 'SYSLOG', 'SYS_ADMIN',
    'SYS_BOOT', 'SYS_CHROOT', 'SYS_MODULE', 'SYS_NICE', 'SYS_PACCT', 'SYS_PTRACE',
    'SYS_RAWIO', 'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'WAKE_ALARM')
#: containerd's (and Docker's) default set for a container.
DEFAULT_CAPABILITIES = (
    'AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'MKNOD',
    'NET_BIND_SERVICE', 'NET_RAW', 'SETFCAP', 'SETGID', 'SETPCAP', 'SETUID', 'SYS_CHROOT')
#: Capabilities whose power reaches beyond the pod's namespaces: on this machine they
#: would act on the machine itself (its clock, kernel, disks, other namespaces).
MACHINE_CAPABILITIES = (
    'AUDIT_CONTROL', 'AUDIT_READ', 'BLOCK_SUSPEND', 'BPF', 'CHECKPOINT_RESTORE',
    'DAC_READ_SEARCH', 'LINUX_IMMUTABLE', 'MAC_ADMIN', 'MAC_OVERRIDE', 'PERFMON',
    'SYSLOG', 'SYS_ADMIN', 'SYS_BOOT', 'SYS_MODULE', 'SYS_PACCT', 'SYS_RAWIO',
    'SYS_TIME', 'SYS_TTY_CONFIG', 'WAKE_ALARM')
#: The sysctls Kubernetes calls safe (allowed without kubelet flags); all namespaced.
SAFE_SYSCTLS = (
    'kernel.shm_rmid_forced', 'net.ipv4.ip_local_port_range',
    'net.ipv4.ip_unprivileged_port_start', 'net.ipv4.tcp_syncookies',
    'net.ipv4.ping_group_range', 'net.ipv4.ip_local_reserved_ports',
    'net.ipv4.tcp_keepalive_time', 'net.ipv4.tcp_fin_timeout',
    'net.ipv4.tcp_keepalive_intvl', 'net.ipv4.tcp_keepalive_probes')
PROFILE_TYPES = ('RuntimeDefault', 'Unconfined', 'Localhost')
NO_NODE_FILES = 'a Localhost profile is a file on the node, and kubelab nodes have none'
USER_FIELDS = ('runAsUser', 'runAsGroup', 'runAsNonRoot', 'seccompProfile',
               'appArmorProfile')
POD_FIELDS = USER_FIELDS + ('supplementalGroups', 'supplementalGroupsPolicy', 'fsGroup',
                            'fsGroupChangePolicy', 'sysctls')
CONTAINER_FIELDS = USER_FIELDS + ('capabilities', 'privileged', 'readOnlyRootFilesystem',
                                  'allowPrivilegeEscalation', 'procMount')
UNSUPPORTED = {
    'seLinuxOptions': 'the machine runs no SELinux policy for kubelab',
    'seLinuxChangePolicy': 'the machine runs no SELinux policy for kubelab',
    'windowsOptions': 'kubelab nodes are Linux',
}


def validate_pod_security(chk: Checker, spec: dict, path: str) -> None:
    """``spec.securityContext``."""
    ctx = chk.mapping(spec, 'securityContext', path)
    if ctx is None:
        return
    path = join(path, 'securityContext')
    chk.known_fields(ctx, path, POD_FIELDS, (), UNSUPPORTED)
    _user(chk, ctx, path)
    groups = chk.sequence(ctx, 'supplementalGroups', path)
    for index, group in enumerate(groups or ()):
        if type(group) is not int or not 0 <= group <= INT32_MAX:
            chk.error(join(join(path, 'supplementalGroups'), index),
                      f'Invalid value: {describe(group)}: must be between 0 and '
                      f'{INT32_MAX}, inclusive')
    _id(chk, ctx, 'fsGroup', path)
    chk.one_of(ctx, 'fsGroupChangePolicy', path, ('OnRootMismatch', 'Always'))
    chk.one_of(ctx, 'supplementalGroupsPolicy', path, ('Merge', 'Strict'))
    names = set()
    for spath, sysctl in chk.items(ctx, 'sysctls', path):
        chk.known_fields(sysctl, spath, ('name', 'value'))
        name = chk.string(sysctl, 'name', spath, required=True)
        chk.string(sysctl, 'value', spath, required=True)
        if name is None:
            continue
        if name in names:
            chk.error(join(spath, 'name'), f'Duplicate value: "{name}"')
        names.add(name)
        if name.replace('/', '.') not in SAFE_SYSCTLS:
            chk.error(join(spath, 'name'),
                      f'"{name}" is not a safe sysctl{suggestion(name, SAFE_SYSCTLS) or ";"}'
                      f' kubelab\'s kubelet allows the safe set only (a real kubelet '
                      f'needs --allowed-unsafe-sysctls for others): '
                      f'{choices(SAFE_SYSCTLS)}')


def validate_container_security(chk: Checker, container: dict, path: str) -> None:
    """``containers[i].securityContext``."""
    ctx = chk.mapping(container, 'securityContext', path)
    if ctx is None:
        return
    path = join(path, 'securityContext')
    chk.known_fields(ctx, path, CONTAINER_FIELDS, (), UNSUPPORTED)
    _user(chk, ctx, path)
    privileged = chk.boolean(ctx, 'privileged', path)
    if privileged:
        chk.error(join(path, 'privileged'),
                  'true is not supported by kubelab: a privileged container would hold '
                  'the whole machine (every pod shares its kernel and devices); add the '
                  'capabilities it needs instead')
    chk.boolean(ctx, 'readOnlyRootFilesystem', path)
    chk.boolean(ctx, 'allowPrivilegeEscalation', path)
    chk.one_of(ctx, 'procMount', path, ('Default',), unsupported=('Unmasked',))
    caps = chk.mapping(ctx, 'capabilities', path)
    if caps is not None:
        cpath = join(path, 'capabilities')
        chk.known_fields(caps, cpath, ('add', 'drop'))
        _capabilities(chk, caps, 'add', cpath)
        _capabilities(chk, caps, 'drop', cpath)


def capability_name(name: str) -> str:
    """``CAP_NET_ADMIN`` and ``net_admin`` -> ``NET_ADMIN`` (containerd accepts both)."""
    name = name.upper()
    return name[4:] if name.startswith('CAP_') else name


def _capabilities(chk, caps, key, path) -> list[str]:
    values = chk.sequence(caps, key, path)
    out = []
    for index, value in enumerate(values or ()):
        where = join(join(path, key), index)
        if not isinstance(value, str):
            chk.error(where, f'must be a string, got {describe(value)}')
            continue
        name = capability_name(value)
        if name != 'ALL' and name not in CAPABILITIES:
            chk.error(where, f'unknown capability "{value}"'
                             f'{suggestion(name, CAPABILITIES) or ";"} capabilities are '
                             f'written without CAP_, e.g. NET_ADMIN, or ALL')
            continue
        if key == 'add' and (name == 'ALL' or name in MACHINE_CAPABILITIES):
            chk.error(where, f'{name} is not supported by kubelab: its power is not '
                             f'confined to the pod\'s namespaces, so here it would reach '
                             f'the machine every pod shares; kubelab refuses '
                             f'{choices(MACHINE_CAPABILITIES)} and ALL')
            continue
        out.append(name)
    return out


def _id(chk, ctx, key, path) -> None:
    value = chk.integer(ctx, key, path, bits=64)
    if value is not None and not 0 <= value <= INT32_MAX:
        chk.error(join(path, key), f'Invalid value: {value}: must be between 0 and '
                                   f'{INT32_MAX}, inclusive')


def _user(chk, ctx, path) -> None:
    """The fields pod and container share: who runs, and the profiles."""
    _id(chk, ctx, 'runAsUser', path)
    _id(chk, ctx, 'runAsGroup', path)
    chk.boolean(ctx, 'runAsNonRoot', path)     # the kubelet checks it at start
    for key in ('seccompProfile', 'appArmorProfile'):
        profile = chk.mapping(ctx, key, path)
        if profile is None:
            continue
        ppath = join(path, key)
        chk.known_fields(profile, ppath, ('type', 'localhostProfile'))
        kind = chk.one_of(profile, 'type', ppath, PROFILE_TYPES, required=True)
        if kind == 'Localhost':
            chk.error(join(ppath, 'type'), f'"Localhost" is not supported by kubelab: '
                                           f'{NO_NODE_FILES}; use RuntimeDefault or '
                                           f'Unconfined')
        if profile.get('localhostProfile') is not None and kind != 'Localhost':
            chk.error(join(ppath, 'localhostProfile'), 'can only be set for type '
                                                       'Localhost')
