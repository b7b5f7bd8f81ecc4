"""The node's container runtime, as the kubelet sees it through the CRI.

``ContainerRuntime`` does for topo/kubelet.py what containerd does for a real kubelet:

- ``run_pod_sandbox``: the pod's sandbox (a ``PodSandbox`` host on the node's bridge:
  the pod's network, IPC, UTS and mount namespaces), its hostname, its /etc/hosts,
  /etc/hostname and /etc/resolv.conf, its /dev/shm, its volumes (topo/volumes.py), its
  namespaced sysctls and its cgroup (topo/cgroups.py);
- ``start_container``: one container from the kubelet's config: its environment
  (``ConfigError`` when a ConfigMap, Secret or key is missing: the kubelet's
  ``CreateContainerConfigError``), its user (``runAsNonRoot`` checked), capabilities,
  mounts and cgroup limits, started in its own sandbox (topo/sandbox.py); the host pid
  of its PID 1 comes back;
- ``exec_in``: a command inside a running container (exec hooks; ``kubelab exec``
  builds the same command line from ``lab_info``);
- ``stats``, ``oom_kills``, ``kill`` and ``remove_pod_sandbox``.

The pod's files live in its directory of the state directory
(``pods/<ns>_<name>_<uid>/``): the containers' logs, ``etc-hosts``, ``etc-hostname``,
``resolv.conf``, ``shm/`` (a tmpfs in the sandbox), ``volumes/`` and, per container,
``containers/<name>/layer`` (the mount point of its private writable layer) and
``termination-log`` (bound at its ``terminationMessagePath``).
"""

from __future__ import annotations

import os
import pwd
import grp
import subprocess
import sys
from dataclasses import dataclass, field

from services.container_config import RunAs, Sources, capabilities, run_as
from services.validation.common import parse_quantity
from topo import sandbox
from topo.images import STARTED_FILE
from topo.images.runtime import (container_argv, container_env, is_emulated, lab_files,
                                 pod_resolv_conf)
from topo.volumes import PodVolumes

TERMINATION_LOG = '/dev/termination-log'


@dataclass
class Sandbox:
    """One pod's sandbox on this node."""
    uid: str
    namespace: str
    name: str
    ip: str
    host: object
    pod_dir: str
    hostname: str
    volumes: PodVolumes
    files: list = field(default_factory=list)       # Bind: /etc files, /dev/shm

    @property
    def pid(self) -> int:
        return self.host.pid


@dataclass
class Started:
    """A container the runtime started."""
    proc: subprocess.Popen          # its monitor (bubblewrap): exits with the container
    pid: int | None                 # its PID 1, as the machine sees it
    run_as: RunAs
    capabilities: list
    env: dict
    cgroup_procs: list
    started_file: str | None = None   # an emulated image writes it once it serves


def limits(container: dict) -> tuple[int | None, int | None, int]:
    """(memory limit in bytes, cpu limit in millicores, cpu request in millicores)."""
    res = container.get('resources') or {}
    lim, req = res.get('limits') or {}, res.get('requests') or {}
    memory = int(parse_quantity(lim['memory'])) if 'memory' in lim else None
    cpu = int(parse_quantity(lim['cpu']) * 1000) if 'cpu' in lim else None
    request = int(parse_quantity(req['cpu']) * 1000) if 'cpu' in req else 0
    return memory, cpu, request


def _passwd(uid: int):
    """The image's /etc/passwd and /etc/group for ``uid`` (the machine's, which every
    emulated image shows): (name, gid, [its other groups]) or None."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return None
    return (entry.pw_name, entry.pw_gid,
            [g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem])


class ContainerRuntime:
    def __init__(self, network, registry, cgroups, state_dir: str, busybox_dir: str,
                 dns_ip: str):
        self.network, self.registry, self.cgroups = network, registry, cgroups
        self.state_dir, self.busybox_dir, self.dns_ip = state_dir, busybox_dir, dns_ip
        # The lab's own Open vSwitch keeps its control sockets under /opt (topo/ovs.py):
        # a container never sees them, as it never sees /run's.
        self.hidden = sandbox.hidden_paths(state_dir, *filter(None, [
            os.environ.get('OVS_RUNDIR')]))
        self.runtime_paths = sandbox.runtime_paths(self.hidden)

    # ------------------------------------------------------------ sandboxes
    def run_pod_sandbox(self, node_name: str, pod: dict, ip: str, pod_dir: str) -> Sandbox:
        meta, spec = pod['metadata'], pod['spec']
        host = self.network.add_pod(node_name, ip)
        self.registry.add(host.pid, f'pod sandbox {meta["namespace"]}/{meta["name"]}')
        hostname, subdomain = sandbox.pod_hostname(meta['name'], spec, meta['namespace'])
        sb = Sandbox(meta['uid'], meta['namespace'], meta['name'], ip, host, pod_dir,
                     hostname, PodVolumes(pod_dir, spec))
        try:
            self._set_up(sb, spec, subdomain)
        except Exception:
            self.remove_pod_sandbox(sb)       # nothing half-made stays behind
            raise
        return sb

    def _set_up(self, sb: Sandbox, spec: dict, subdomain: str | None) -> None:
        """The sandbox's files, tmpfs mounts, sysctls and cgroup."""
        short = sb.hostname.split('.')[0]
        files = {'etc-hosts': ('/etc/hosts', sandbox.etc_hosts(
                     sb.ip, short, subdomain, sb.namespace, spec.get('hostAliases') or [])),
                 'etc-hostname': ('/etc/hostname', sb.hostname + '\n')}
        resolv = pod_resolv_conf(spec, sb.namespace, self.dns_ip)
        if resolv is not None:
            files['resolv.conf'] = ('/etc/resolv.conf', resolv)
        for filename, (target, text) in files.items():
            with open(os.path.join(sb.pod_dir, filename), 'w') as f:
                f.write(text)
            sb.files.append(sandbox.Bind(os.path.join(sb.pod_dir, filename), target))
        shm = os.path.join(sb.pod_dir, 'shm')
        os.makedirs(shm, exist_ok=True)
        sb.files.append(sandbox.Bind(shm, '/dev/shm', writable=True))
        sysctls = [(s['name'], s['value'])
                   for s in (spec.get('securityContext') or {}).get('sysctls') or []]
        sandbox.prepare(sb.pid, sb.hostname,
                        [(shm, sandbox.SHM_OPTIONS)] + sb.volumes.tmpfs(), sysctls)
        amounts = [limits(c) for c in spec['containers']]
        memory = sum(a[0] for a in amounts) if all(a[0] for a in amounts) else None
        cpu = sum(a[1] for a in amounts) if all(a[1] for a in amounts) else None
        self.cgroups.add_pod(sb.uid, memory, cpu, sum(a[2] for a in amounts))

    def remove_pod_sandbox(self, sb: Sandbox) -> None:
        """Kill what is left of the pod, remove its sandbox, cgroup and volumes."""
        self.cgroups.kill(sb.uid)
        self.network.remove_pod(sb.host)
        self.cgroups.remove_pod(sb.uid)
        sb.volumes.remove()

    # ------------------------------------------------------------ containers
    def start_container(self, sb: Sandbox, pod: dict, container: dict, fields: dict,
                        sources: Sources, log) -> Started:
        """Start ``container`` of ``pod`` in ``sb``; raises ``ConfigError`` (what the
        kubelet reports as CreateContainerConfigError) or ``CgroupError``."""
        name = container['name']
        emulated = {'PYTHONPATH': os.pathsep.join(p for p in sys.path if p),
                    'KUBELAB_L7_DIR': os.path.join(self.state_dir, 'l7'),
                    'KUBELAB_STARTED': STARTED_FILE}
        env = container_env(container, sb.hostname, self.busybox_dir, fields, sources,
                            emulated)
        user = run_as(pod, container, _passwd)
        caps = capabilities(container)
        binds = self._binds(sb, container, env)
        cdir = os.path.join(sb.pod_dir, 'containers', name)
        started_file = None
        if is_emulated(container):       # it says when it serves (topo/images/__init__)
            started_file = os.path.join(cdir, 'started')
            with open(started_file, 'w'):
                pass
            os.chmod(started_file, 0o666)
            binds.append(sandbox.Bind(started_file, STARTED_FILE, writable=True))
        layer = os.path.join(cdir, 'layer')
        os.makedirs(layer, exist_ok=True)
        self.cgroups.add_container(sb.uid, name, *limits(container))
        procs = self.cgroups.procs_files(sb.uid, name)
        spec = sandbox.ContainerSpec(
            sandbox_pid=sb.pid, layer_dir=layer, cgroup_procs=procs,
            argv=container_argv(container, sys.executable, env), env=env,
            workdir=container.get('workingDir') or '/', run_as=user, capabilities=caps,
            read_only_root=bool((container.get('securityContext') or {}).get(
                'readOnlyRootFilesystem')), binds=binds, hidden=self.hidden)
        proc, pid = sandbox.start(spec, log)
        self.registry.add(proc.pid, f'container {sb.namespace}/{sb.name}/{name}')
        return Started(proc, pid, user, caps, env, procs, started_file)

    def _binds(self, sb: Sandbox, container: dict, env: dict) -> list:
        binds = [sandbox.Bind(path, path) for path in self.runtime_paths]
        binds.append(sandbox.Bind(self.busybox_dir, self.busybox_dir))
        binds += sb.files
        for path, writable in lab_files(container, sb.name, self.state_dir):
            os.makedirs(path, exist_ok=True)
            binds.append(sandbox.Bind(path, path, writable))
        log = os.path.join(sb.pod_dir, 'containers', container['name'], 'termination-log')
        os.makedirs(os.path.dirname(log), exist_ok=True)
        open(log, 'w').close()
        os.chmod(log, 0o666)
        binds.append(sandbox.Bind(log, container.get('terminationMessagePath')
                                  or TERMINATION_LOG, writable=True))
        return binds + sb.volumes.binds(container, env)

    def termination_message(self, sb: Sandbox, name: str) -> str:
        """What the container wrote to its termination message file (4 KiB at most)."""
        path = os.path.join(sb.pod_dir, 'containers', name, 'termination-log')
        try:
            with open(path, 'rb') as f:
                return f.read(4096).decode('utf-8', 'replace')
        except OSError:
            return ''

    def exec_in(self, started: Started, argv: list, env: dict | None = None,
                **popen) -> subprocess.Popen:
        """Run ``argv`` inside a running container (its cgroups, namespaces, user,
        capabilities), as ``kubectl exec`` and exec hooks do."""
        return subprocess.Popen(
            sandbox.exec_argv(started.pid, started.cgroup_procs, started.run_as,
                              started.capabilities, argv),
            env=env if env is not None else started.env, start_new_session=True, **popen)

    def kill(self, sb: Sandbox, name: str | None = None) -> None:
        """SIGKILL a container (or the whole pod) and everything it started."""
        self.cgroups.kill(sb.uid, name)

    def stats(self, sb: Sandbox, name: str):
        return self.cgroups.usage(sb.uid, name)

    def oom_kills(self, sb: Sandbox, name: str) -> int:
        return self.cgroups.oom_kills(sb.uid, name)
