"""Pod sandboxes and containers as real sandboxes, with bubblewrap.

A pod's sandbox is its Mininet host (topo/network.py ``PodSandbox``): a shell started in
new network, IPC, UTS and mount namespaces, as the pause container holds them. Its
hostname is the pod's; its mount namespace holds the pod's tmpfs mounts (``/dev/shm``,
``medium: Memory`` emptyDirs), made here (``prepare``) and gone with it; its namespaced
sysctls are the pod's ``securityContext.sysctls``.

A container is started (``launch_argv``) as a chain of programs that each exec the next,
so one pid runs through it and the kubelet's child is the container's monitor:

1. ``JOIN`` puts the process in the container's cgroups (everything started from here
   on is in them), then ``nsenter`` joins the sandbox's network, IPC, UTS and mount
   namespaces: the container shares the pod's address, loopback, message queues and
   hostname;
2. ``unshare --mount`` makes a private mount namespace for the launcher, and the
   ``LAUNCH`` script mounts a tmpfs on the container's layer directory and on it an overlay
   whose lower layer is the machine's root file system (read-only, never written) and
   whose upper layer is on that tmpfs, plus a read-only sysfs of the pod's network
   namespace;
3. ``bwrap`` (Debian's bubblewrap) builds the container's own mount namespace on that
   overlay: a new PID namespace where the command is PID 1 (what it starts dies with it),
   fresh /proc and /dev (read-only, /dev/shm the pod's), a tmpfs on /tmp, /var/tmp and
   /run and over the machine's homes and the lab's state directory (the lab's token
   among it), then only what the container is given bound back: the pod's
   /etc/resolv.conf, /etc/hosts and /etc/hostname, its volumes, the busybox applets and
   the lab's Python (read-only); the working directory; the capability bounding set;
   ``--die-with-parent`` so a container never outlives the lab's daemon;
4. ``setpriv`` sets the user, group and supplementary groups and leaves exactly the
   container's capabilities (effective for root, bounding only for another user, as
   runc does), then execs the command.

What a container writes outside its volumes and /dev/shm lands in the overlay's upper
layer, in memory, private to this run of the container and gone when it ends: nothing
reaches the machine. ``readOnlyRootFilesystem`` remounts the root (and /tmp, /run)
read-only. ``exec_argv`` enters a running container the same way for ``kubelab exec``
and ``exec`` hooks: its cgroups, its namespaces (PID and mount included), its user and
capabilities.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from services.container_config import RunAs

#: The launcher: mounts the container's layer, execs the rest. Arguments: the layer
#: directory, the command.
LAUNCH = r'''set -e
layer=$1; shift
mount -t tmpfs -o nodev,nosuid,mode=0755 kubelab-layer "$layer"
mkdir "$layer/upper" "$layer/work" "$layer/root"
mount -t overlay -o "lowerdir=/,upperdir=$layer/upper,workdir=$layer/work" kubelab-rootfs "$layer/root"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$layer/root/sys"
exec "$@"
'''
#: Joins the cgroups named first, then execs the rest. It runs in the machine's mount
#: namespace: a pod sandbox's has its own /sys (Mininet mounts one per host).
JOIN = r'''n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 126; shift; n=$((n-1)); done
exec "$@"
'''
LAUNCHER_PATH = '/usr/sbin:/usr/bin:/sbin:/bin'
#: The machine's programs, by absolute path: an exec runs with the container's PATH,
#: whose busybox applets (``nsenter`` among them) come first.
NSENTER = shutil.which('nsenter', path=LAUNCHER_PATH) or '/usr/bin/nsenter'
SHELL = '/bin/sh'
SETPRIV = '/usr/bin/setpriv'
#: The machine's directories a container never sees: its homes, temporary and runtime
#: directories (the lab's state among them). Each becomes an empty tmpfs.
HIDDEN = ('/home', '/root', '/run', '/tmp', '/var/tmp', '/mnt', '/media', '/srv')
#: /proc paths a container reads but never writes (bubblewrap covers /proc/irq and
#: /proc/bus itself), and paths it does not see (an empty file instead), as Docker's.
READ_ONLY_PROC = ('/proc/sys', '/proc/sysrq-trigger', '/proc/fs')
MASKED = ('/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug')
SHM_OPTIONS = 'mode=1777,size=64m'    # a container runtime's default /dev/shm


@dataclass
class Bind:
    source: str
    target: str
    writable: bool = False


@dataclass
class ContainerSpec:
    """Everything ``launch_argv`` needs for one start of one container."""
    sandbox_pid: int
    layer_dir: str                  # an empty directory of the machine (a mount point)
    cgroup_procs: list
    argv: list
    env: dict
    workdir: str = '/'
    run_as: RunAs = field(default_factory=lambda: RunAs(0, 0, (0,)))
    capabilities: tuple = ()
    read_only_root: bool = False
    binds: list = field(default_factory=list)       # volumes, /etc files, lab files
    hidden: tuple = HIDDEN
    info_fd: int | None = None


def hidden_paths(state_dir: str, *more: str) -> tuple:
    """``HIDDEN``, the lab's state directory wherever ``KUBELAB_STATE_DIR`` puts it, and
    ``more`` (the run directory of the lab's own Open vSwitch: its control sockets)."""
    out = HIDDEN
    for path in (state_dir, *more):
        path = os.path.abspath(path)
        if not any(path == h or path.startswith(h + '/') for h in out):
            out += (path,)
    return out


def runtime_paths(hidden=HIDDEN) -> list[str]:
    """What the lab's own Python needs from the machine (the repository, the virtual
    environment, the interpreter's prefix) and a container would not see through the
    overlay: under a hidden directory, or on another file system than the root (the
    overlay's lower layer is the root file system alone). Bound read-only into every
    container, so the emulated images run wherever the machine keeps them."""
    paths = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
             sys.prefix, sys.base_prefix] + [p for p in sys.path if p]
    paths = sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)}
                   | {os.path.abspath(p) for p in paths if os.path.isdir(p)})
    root = os.stat('/').st_dev

    def unseen(path):
        return (os.stat(path).st_dev != root
                or any(path == h or path.startswith(h + '/') for h in hidden))
    paths = [p for p in paths if p != '/' and unseen(p)]
    return [p for p in paths if not any(
        p != q and p.startswith(q.rstrip('/') + '/') for q in paths)]


def _setpriv(run_as: RunAs, capabilities) -> list[str]:
    caps = ','.join(['-all'] + [f'+{c.lower()}' for c in sorted(capabilities)])
    groups = (['--groups', ','.join(str(g) for g in run_as.groups)] if run_as.groups
              else ['--clear-groups'])
    return [SETPRIV, '--reuid', str(run_as.uid), '--regid', str(run_as.gid), *groups,
            '--bounding-set', caps, '--inh-caps', '-all', '--no-new-privs', '--']


def bwrap_args(spec: ContainerSpec) -> list[str]:
    """bubblewrap's arguments for ``spec``: the mounts in order, then the process."""
    root = os.path.join(spec.layer_dir, 'root')
    args = ['bwrap', '--bind', root, '/', '--proc', '/proc']
    for path in READ_ONLY_PROC:
        if os.path.exists(path):
            args += ['--ro-bind', path, path]
    for path in MASKED:
        if os.path.exists(path):           # the same kernel's /proc, seen from here
            args += ['--ro-bind', '/dev/null', path]
    args += ['--dev', '/dev', '--mqueue', '/dev/mqueue',
             '--tmpfs', '/sys/firmware', '--remount-ro', '/sys/firmware']
    for path in spec.hidden:
        if path in ('/tmp', '/var/tmp'):
            args += ['--perms', '1777']
        args += ['--tmpfs', path]
    first_bind = len(args)
    made = set()
    for bind in sorted(spec.binds, key=lambda b: b.target.count('/')):
        # The directories leading to a mount point in a hidden (tmpfs) directory are
        # made here, open to every user (bubblewrap would copy the machine's modes:
        # the state directory's 0700 would lock a non-root container out of it).
        parent = os.path.dirname(bind.target)
        while any(parent.startswith(h + '/') for h in spec.hidden) and parent not in made:
            made.add(parent)
            parent = os.path.dirname(parent)
        args += ['--bind' if bind.writable else '--ro-bind', bind.source, bind.target]
    dirs = []
    for path in sorted(made, key=lambda p: p.count('/')):
        dirs += ['--perms', '0755', '--dir', path]
    args[first_bind:first_bind] = dirs
    if spec.workdir != '/':
        args += ['--dir', spec.workdir]
    args += ['--chdir', spec.workdir]
    if spec.read_only_root:
        args += ['--remount-ro', '/']
        args += [x for path in ('/tmp', '/var/tmp', '/run') for x in ('--remount-ro', path)]
    args += ['--remount-ro', '/dev',
             '--unshare-pid', '--as-pid-1', '--die-with-parent', '--cap-drop', 'ALL']
    for cap in sorted(set(spec.capabilities) | {'SETUID', 'SETGID', 'SETPCAP'}):
        args += ['--cap-add', f'CAP_{cap}']
    if spec.info_fd is not None:
        args += ['--info-fd', str(spec.info_fd)]
    args.append('--clearenv')
    for name, value in spec.env.items():
        args += ['--setenv', name, value]
    return args + ['--', *_setpriv(spec.run_as, spec.capabilities), *spec.argv]


def launch_argv(spec: ContainerSpec) -> list[str]:
    """The command line that starts a container (see the module's docstring)."""
    return [SHELL, '-c', JOIN, 'kubelab-join', str(len(spec.cgroup_procs)),
            *spec.cgroup_procs, NSENTER, '--target', str(spec.sandbox_pid), '--net',
            '--ipc', '--uts', '--mount', '--', 'unshare', '--mount', '--propagation',
            'private', '--', SHELL, '-c', LAUNCH, 'kubelab-launch', spec.layer_dir,
            *bwrap_args(spec)]


def exec_argv(pid: int, cgroup_procs: list, run_as: RunAs, capabilities,
              argv: list) -> list[str]:
    """The command line that runs ``argv`` inside the running container whose PID 1 is
    ``pid`` (its host pid): in its cgroups, namespaces, user and capabilities, in its
    working directory."""
    return [SHELL, '-c', JOIN, 'kubelab-exec', str(len(cgroup_procs)), *cgroup_procs,
            NSENTER, '--target', str(pid), '--mount', '--uts', '--ipc', '--net', '--pid',
            '--wd', '--', *_setpriv(run_as, capabilities), *argv]


def start(spec: ContainerSpec, stdout, timeout: float = 10.0):
    """Start a container: (the monitor's Popen, the command's host pid). The pid is
    None when the sandbox could not be made (the monitor exits with bwrap's error)."""
    read_fd, write_fd = os.pipe()
    spec.info_fd = write_fd
    try:
        proc = subprocess.Popen(launch_argv(spec), stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                                env={'PATH': LAUNCHER_PATH}, cwd='/',
                                start_new_session=True)
    finally:
        os.close(write_fd)
    try:
        return proc, _child_pid(read_fd, timeout)
    finally:
        os.close(read_fd)


def _child_pid(fd: int, timeout: float) -> int | None:
    """bubblewrap's ``--info-fd`` report: ``{"child-pid": N, ...}``."""
    data = b''
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        chunk = os.read(fd, 4096) if ready else b''
        if not chunk:
            return None
        data += chunk
        try:
            return json.loads(data)['child-pid']
        except (ValueError, KeyError):
            continue


def etc_hosts(ip: str, hostname: str, subdomain: str | None, namespace: str,
              aliases: list, domain: str = 'cluster.local') -> str:
    """The pod's /etc/hosts as the kubelet writes it."""
    lines = ['# Kubernetes-managed hosts file.', '127.0.0.1\tlocalhost',
             '::1\tlocalhost ip6-localhost ip6-loopback', 'fe00::0\tip6-localnet',
             'fe00::0\tip6-mcastprefix', 'fe00::1\tip6-allnodes', 'fe00::2\tip6-allrouters']
    if subdomain:
        lines.append(f'{ip}\t{hostname}.{subdomain}.{namespace}.svc.{domain}\t{hostname}')
    else:
        lines.append(f'{ip}\t{hostname}')
    if aliases:
        lines.append('\n# Entries added by HostAliases.')
        lines += [f'{a["ip"]}\t' + '\t'.join(a.get('hostnames') or []) for a in aliases]
    return '\n'.join(lines) + '\n'


def pod_hostname(name: str, spec: dict, namespace: str, domain: str = 'cluster.local'):
    """(hostname, subdomain) of a pod: ``spec.hostname`` or the pod's name (cut to 63
    characters, as the kubelet does), the FQDN with ``setHostnameAsFQDN``."""
    hostname = spec.get('hostname') or name[:63].rstrip('-.')
    subdomain = spec.get('subdomain') or None
    if spec.get('setHostnameAsFQDN') and subdomain:
        return f'{hostname}.{subdomain}.{namespace}.svc.{domain}', subdomain
    return hostname, subdomain


def prepare(sandbox_pid: int, hostname: str, tmpfs: list, sysctls: list) -> None:
    """Set up a new pod sandbox from inside its namespaces: its hostname, its tmpfs
    mounts (``(directory, options)``: /dev/shm, Memory emptyDirs) and its sysctls
    (``(name, value)``, names checked by validation)."""
    script = ['set -e', 'echo "$1" > /proc/sys/kernel/hostname']
    args = [hostname]
    for directory, options in tmpfs:
        args += [directory, options]
        n = len(args)
        script.append(f'mount -t tmpfs -o nosuid,nodev,"${{{n}}}" kubelab-pod '
                      f'"${{{n - 1}}}"')
    for name, value in sysctls:
        args += ['/proc/sys/' + name.replace('.', '/'), value]
        n = len(args)
        script.append(f'echo "${{{n}}}" > "${{{n - 1}}}"')
    subprocess.run(['nsenter', '--target', str(sandbox_pid), '--uts', '--mount', '--net',
                    '--ipc', '--', 'sh', '-c', '\n'.join(script), 'kubelab-sandbox',
                    *args], check=True, capture_output=True, env={'PATH': LAUNCHER_PATH})
