"""The node agent ("kubelet") of one lab node.

It watches the store for pods bound to its node and makes them real: an address from the
node's pod CIDR (host-local IPAM: a replaced pod gets a new address), a pod sandbox and
one sandboxed process tree per container through the node's container runtime
(topo/cri.py: namespaces, cgroups, volumes), restarts per ``restartPolicy`` (a restarted
container keeps the pod's sandbox, so its IP), readiness probes sent from the node's own
address (topo/prober.py), graceful termination (SIGTERM to each container's PID 1, then
SIGKILL to its whole cgroup after the grace period) and the pod's status written back to
the store: a container that could not be given its ConfigMaps or Secrets waits
(``CreateContainerConfigError``, ``ContainerCreating``), one killed for its memory limit
ends ``OOMKilled``, its termination message is read back. Every second it samples each
container's CPU and memory from its cgroup (``pod_metrics``, for ``kubelab top pods``).

A terminating pod is probed on, as the kubelet does (KEP-1669): it stays Ready while its
running containers pass their readiness probes (those without one while they run), so
its endpoint reads ``serving: true, terminating: true`` and kube-proxy can still send it
connections when no ready endpoint is left; a container that exits is no longer ready.

It reads and writes the store only while its node's heartbeats reach the API endpoint
(``api_reachable``, topo/heartbeat.py): cut off, it keeps its containers running,
restarted and probed, but writes no status and acts on no deletion, as a kubelet that
cannot reach the API server; it catches up when they get through again. A stopped
kubelet (``kubelab node stop-kubelet``, ``pause``) does nothing at all, while its
containers run on.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from services.allocation.allocators import PodIPAllocator
from services.container_config import ConfigError, Sources
from services.errors import NotFound
from services.naming import now_rfc3339
from services.watch import follow
from topo.cgroups import CgroupError
from topo.cri import ContainerRuntime
from topo.netns import netns_executor
from topo.prober import check_ready, run_probe

LOG = logging.getLogger('kubelab.kubelet')
TICK = 0.2
BACKOFF, MAX_BACKOFF = 10.0, 300.0    # kubelet's CrashLoopBackOff: 10 s, 20 s, 40 s...
CONFIG_RETRY = 1.0            # a container waiting for a ConfigMap or Secret tries again
SANDBOX_RETRY = 5.0           # a pod whose sandbox could not be made tries again
METRICS_EVERY, METRICS_WINDOW = 1.0, 10.0   # cgroup samples: how often, how far back


def restart_delay(backoff: float, backoff_at: float, now: float) -> tuple[float, float]:
    """How long a container that exited at ``now`` waits before it starts again, and the
    back-off after that, as kubelet's per-container back-off does: the first exit
    restarts at once, each further one waits 10 s, 20 s, 40 s... up to 5 min
    (CrashLoopBackOff meanwhile); a container that ran 10 min (twice the cap) since its
    last restart starts over, its next exit restarting at once again."""
    if not backoff or now - backoff_at > 2 * MAX_BACKOFF:
        return 0.0, BACKOFF
    return backoff, min(MAX_BACKOFF, 2 * backoff)


@dataclass
class Container:
    spec: dict
    proc: subprocess.Popen | None = None     # the sandbox's monitor: exits with it
    pid: int | None = None                   # its PID 1 as the machine sees it
    run: object = None                       # topo.cri.Started: how to exec into it
    waiting: tuple | None = None             # (reason, message) while it cannot start
    samples: collections.deque = field(default_factory=lambda: collections.deque(maxlen=16))
    started: str = ''
    started_mono: float = 0.0
    restarts: int = 0
    last_exit: dict | None = None
    next_start: float = 0.0      # backoff: when it may start again
    backoff: float = 0.0         # the next back-off (0: none yet), as kubelet's
    backoff_at: float = 0.0      # per-container entry, and when it last grew
    ready: bool = False
    probe_ok: int = 0
    probe_fail: int = 0
    next_probe: float = 0.0
    probing: bool = False
    pre_stop: object = None      # a preStop hook under way: a callable, true once done
    hook_proc: subprocess.Popen | None = None    # an exec hook's process


@dataclass
class PodRuntime:
    namespace: str
    name: str
    uid: str
    ip: str
    sandbox: object                   # topo.cri.Sandbox
    log_dir: str
    restart_policy: str
    pod: dict = field(default_factory=dict)     # the pod as the kubelet last read it
    containers: dict = field(default_factory=dict)
    terminating_until: float | None = None
    start_time: str = ''
    transitions: dict = field(default_factory=dict)   # condition type -> (status, since)
    volumes_error: str | None = None  # a configMap/secret volume that cannot be made

    @property
    def host(self):
        return self.sandbox.host


class NodeAgent:
    def __init__(self, node, store, network, registry, state_dir: str, busybox_dir: str,
                 cgroups, api_reachable=lambda: True):
        self.node = node
        self.api_reachable = api_reachable
        self.running = threading.Event()      # cleared by stop-kubelet
        self.running.set()
        self.store = store
        self.network = network
        self.registry = registry
        self.state_dir = state_dir
        self.busybox_dir = busybox_dir
        self.runtime = ContainerRuntime(network, registry, cgroups, state_dir, busybox_dir,
                                        store.cluster.dns_ip)
        self.next_sample = 0.0
        self.sandbox_retry: dict[str, float] = {}   # pod uid -> when to try again
        self.metrics_lock = threading.Lock()
        self.ipam = PodIPAllocator(node.pod_cidr)
        self.pods: dict[str, PodRuntime] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f'kubelet-{node.name}',
                                       daemon=True)
        node_pid = network.node_host(node.name).pid
        self.prober = netns_executor(node_pid, workers=4, name=f'probe-{node.name}')

    # ------------------------------------------------------------ loop
    def start(self):
        self.thread.start()

    def pause(self):
        """``kubelab node stop-kubelet``: no more syncs, probes or restarts; the
        containers keep running."""
        self.running.clear()

    def resume(self):
        self.running.set()

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=10)
        for rt in list(self.pods.values()):
            self._kill(rt)
            self._remove(rt)
        self.prober.shutdown(wait=False, cancel_futures=True)

    def _run(self):
        # A failure keeps the node alive; the next tick retries.
        follow(self.store, self.stopping, self.sync, f'kubelet {self.node.name}: sync',
               interval=TICK, retry_pause=TICK, log=LOG)

    def sync(self):
        if not self.running.is_set():
            return
        if not self.api_reachable():
            self._tend_cut_off()
            return
        wanted = {}
        for pod in self.store.list('Pod'):
            if pod['spec'].get('nodeName') == self.node.name:
                wanted[pod['metadata']['uid']] = pod
        for uid, rt in list(self.pods.items()):
            if uid not in wanted:
                self._kill(rt)
                self._remove(rt)
        for uid in [u for u in self.sandbox_retry if u not in wanted]:
            del self.sandbox_retry[uid]
        for uid, pod in wanted.items():
            rt = self.pods.get(uid)
            if pod['metadata'].get('deletionTimestamp'):
                if rt is None:
                    self.store.pod_gone(pod['metadata']['namespace'],
                                        pod['metadata']['name'], uid)
                else:
                    self._terminate(rt, pod)
                continue
            if rt is None:
                if time.monotonic() < self.sandbox_retry.get(uid, 0.0):
                    continue
                try:
                    rt = self._create(pod)
                except Exception as exc:        # the kubelet's FailedCreatePodSandBox
                    LOG.exception('pod %s/%s: the sandbox could not be made',
                                  pod['metadata']['namespace'], pod['metadata']['name'])
                    self.sandbox_retry[uid] = time.monotonic() + SANDBOX_RETRY
                    self._report_no_sandbox(pod, exc)
                    continue
            rt.pod = pod
            self._tend(rt)
            self._report(rt, pod)
        if time.monotonic() >= self.next_sample:
            self.next_sample = time.monotonic() + METRICS_EVERY
            self._sample()

    def _tend_cut_off(self):
        """Without the API server: the running pods go on (restarts, probes), with
        nothing read from or written to the store."""
        for rt in list(self.pods.values()):
            if rt.terminating_until is None:
                self._tend(rt)

    # ------------------------------------------------------------ pod lifecycle
    def _create(self, pod) -> PodRuntime:
        meta = pod['metadata']
        ip = self.ipam.allocate()
        log_dir = os.path.join(self.state_dir, 'pods',
                               f'{meta["namespace"]}_{meta["name"]}_{meta["uid"]}')
        os.makedirs(log_dir, exist_ok=True)
        try:
            sandbox = self.runtime.run_pod_sandbox(self.node.name, pod, ip, log_dir)
        except Exception:
            self.ipam.release(ip)
            raise
        self.sandbox_retry.pop(meta['uid'], None)
        rt = PodRuntime(meta['namespace'], meta['name'], meta['uid'], ip, sandbox, log_dir,
                        pod['spec'].get('restartPolicy', 'Always'), pod=pod,
                        start_time=now_rfc3339())
        for spec in pod['spec']['containers']:
            rt.containers[spec['name']] = Container(spec)
        self.pods[meta['uid']] = rt
        LOG.info('pod %s/%s on %s: %s', rt.namespace, rt.name, self.node.name, ip)
        return rt

    def _sources(self, namespace: str) -> Sources:
        """The pod's ConfigMaps and Secrets, read from the store when asked."""
        def lookup(kind, name):
            try:
                return self.store.get(kind, namespace, name)
            except NotFound:
                return None
        return Sources(namespace, lookup=lookup)

    def _start_container(self, rt: PodRuntime, c: Container):
        now = time.monotonic()
        sources = self._sources(rt.namespace)
        try:
            self._refresh_volumes(rt, sources)
            if rt.volumes_error:
                raise ConfigError(rt.volumes_error)
            log = open(os.path.join(rt.log_dir, f'{c.spec["name"]}.log'), 'ab')
            try:
                run = self.runtime.start_container(rt.sandbox, rt.pod, c.spec,
                                                   self._fields(rt), sources, log)
            finally:
                log.close()
        except (ConfigError, CgroupError, OSError, ValueError) as exc:
            # ValueError: its spec cannot run (runtime.py says why: an expansion too large)
            reason = ('ContainerCreating' if rt.volumes_error else
                      'CreateContainerConfigError' if isinstance(exc, ConfigError)
                      else 'CreateContainerError')
            c.waiting = (reason, str(exc))
            c.next_start = now + CONFIG_RETRY
            return
        c.waiting = None
        if c.last_exit is not None:
            c.restarts += 1        # counted when it starts again, as kubelet does
        c.proc, c.pid, c.run = run.proc, run.pid, run
        c.started = now_rfc3339()
        c.started_mono = time.monotonic()
        c.ready = False
        c.probe_ok = c.probe_fail = 0
        c.samples.clear()
        probe = c.spec.get('readinessProbe')
        c.next_probe = c.started_mono + (probe or {}).get('initialDelaySeconds', 0)

    def _refresh_volumes(self, rt: PodRuntime, sources: Sources | None = None):
        """Bring the pod's configMap and secret volumes up to date (the kubelet's
        volume manager); a missing source keeps the containers waiting."""
        try:
            rt.sandbox.volumes.refresh(sources or self._sources(rt.namespace))
            rt.volumes_error = None
        except ConfigError as exc:
            rt.volumes_error = f'MountVolume.SetUp failed: {exc}'

    def _fields(self, rt: PodRuntime) -> dict:
        """The downward API's values of a pod (``valueFrom.fieldRef``)."""
        return {'metadata.name': rt.name, 'metadata.namespace': rt.namespace,
                'metadata.uid': rt.uid, 'spec.nodeName': self.node.name,
                'status.podIP': rt.ip, 'status.hostIP': self.node.ip,
                'spec.serviceAccountName': 'default'}

    def _tend(self, rt: PodRuntime):
        """Start what should run, notice what exited, probe what is due."""
        now = time.monotonic()
        if rt.sandbox.volumes.volumes:
            self._refresh_volumes(rt)
        for c in rt.containers.values():
            if c.proc is not None and c.proc.poll() is not None:
                code = self._exited(rt, c)
                again = rt.restart_policy == 'Always' or (
                    rt.restart_policy == 'OnFailure' and code != 0)
                if again:
                    delay, c.backoff = restart_delay(c.backoff, c.backoff_at, now)
                    c.next_start = c.backoff_at = now + delay
                else:
                    c.next_start = float('inf')
            if c.proc is None and now >= c.next_start:
                self._start_container(rt, c)
            if c.proc is not None:
                check_ready(self.prober, rt, c, now)

    def _exited(self, rt: PodRuntime, c: Container) -> int:
        """Record how a container ended: its exit code (128+N for signal N, 128 when
        its sandbox could not start), the reason (OOMKilled when its cgroup had an
        out-of-memory kill), its termination message. What it started is killed with
        it (its PID namespace already took its processes down; the cgroup makes sure)."""
        code = c.proc.returncode
        code = code if code >= 0 else 128 - code
        self.runtime.kill(rt.sandbox, c.spec['name'])
        name = c.spec['name']
        reason = 'Completed' if code == 0 else 'Error'
        if c.pid is None:
            reason, code = 'StartError', 128
        elif self.runtime.oom_kills(rt.sandbox, name):
            reason = 'OOMKilled'
        message = self.runtime.termination_message(rt.sandbox, name)
        fallback = c.spec.get('terminationMessagePolicy') == 'FallbackToLogsOnError'
        if (not message and code and fallback) or reason == 'StartError':
            message = _log_tail(os.path.join(rt.log_dir, f'{name}.log'))
        c.last_exit = {'exitCode': code, 'reason': reason, 'startedAt': c.started,
                       'finishedAt': now_rfc3339(), 'containerID': f'kubelab://{c.pid}'}
        if message:
            c.last_exit['message'] = message
        c.proc = c.pid = c.run = None
        c.ready = False
        return code

    def _terminate(self, rt: PodRuntime, pod):
        if rt.terminating_until is None:
            grace = pod['metadata'].get('deletionGracePeriodSeconds',
                                        pod['spec'].get('terminationGracePeriodSeconds', 30))
            rt.terminating_until = time.monotonic() + grace
            for c in rt.containers.values():
                c.next_start = float('inf')
                hook = (c.spec.get('lifecycle') or {}).get('preStop')
                if hook and c.proc is not None and c.proc.poll() is None:
                    c.pre_stop = self._start_pre_stop(rt, c, hook, grace)
                else:
                    _signal(c, signal.SIGTERM)
            self._report(rt, pod)
        for c in rt.containers.values():
            if c.pre_stop is not None and c.pre_stop():
                c.pre_stop = None      # the hook is over: now the signal, as kubelet does
                _signal(c, signal.SIGTERM)
        running = [c for c in rt.containers.values()
                   if c.proc is not None and c.proc.poll() is None]
        if running and time.monotonic() < rt.terminating_until:
            # Probed on while terminating: readiness follows the probes (KEP-1669).
            now, alive = time.monotonic(), {id(c) for c in running}
            for c in rt.containers.values():
                if id(c) in alive:
                    check_ready(self.prober, rt, c, now)
                else:
                    c.ready = False
            self._report(rt, pod)
            return
        self._kill(rt)
        self._remove(rt)
        self.store.pod_gone(rt.namespace, rt.name, rt.uid)

    def _start_pre_stop(self, rt: PodRuntime, c: Container, hook: dict, grace: float):
        """Start a container's preStop hook; returns a callable that says when it is over.
        The grace period runs meanwhile: a hook still going when it ends is killed with
        the container."""
        if 'sleep' in hook:
            until = time.monotonic() + hook['sleep']['seconds']
            return lambda: time.monotonic() >= until
        if 'httpGet' in hook:
            probe = {'httpGet': hook['httpGet'], 'timeoutSeconds': max(1, grace)}
            return self.prober.submit(run_probe, probe, rt.ip, c.spec).done
        try:
            # Inside the container, as kubelet runs an exec hook: it dies with it.
            c.hook_proc = self.runtime.exec_in(c.run, hook['exec']['command'],
                                               stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
        except OSError as exc:
            LOG.warning('pod %s/%s: preStop hook of %s failed: %s', rt.namespace, rt.name,
                        c.spec['name'], exc)
            return lambda: True
        self.registry.add(c.hook_proc.pid,
                          f'preStop hook {rt.namespace}/{rt.name}/{c.spec["name"]}')
        return lambda proc=c.hook_proc: proc.poll() is not None

    def _kill(self, rt: PodRuntime):
        """SIGKILL everything in the pod's cgroup (containers, what they started,
        daemonised or not, hooks and execs) and reap the containers' monitors."""
        self.runtime.kill(rt.sandbox)
        for c in rt.containers.values():
            for proc in (c.hook_proc, c.proc):
                if proc is not None:
                    try:
                        proc.wait(timeout=2)
                    except subprocess.TimeoutExpired:
                        pass
            c.hook_proc = c.proc = c.pid = c.run = None

    def _remove(self, rt: PodRuntime):
        self.runtime.remove_pod_sandbox(rt.sandbox)
        self.ipam.release(rt.ip)
        self.pods.pop(rt.uid, None)
        LOG.info('pod %s/%s removed from %s', rt.namespace, rt.name, self.node.name)

    # ------------------------------------------------------------ metrics
    def _sample(self):
        """One reading of every running container's cgroup: (time, cpu ns, memory)."""
        now = time.monotonic()
        for rt in list(self.pods.values()):
            for c in rt.containers.values():
                if c.proc is not None:
                    cpu, memory = self.runtime.stats(rt.sandbox, c.spec['name'])
                    with self.metrics_lock:
                        c.samples.append((now, cpu, memory))

    def pod_metrics(self) -> list[dict]:
        """metrics.k8s.io PodMetrics of this node's running pods, as metrics-server
        serves them: each container's CPU over the last samples (up to
        ``METRICS_WINDOW``) and its memory working set now."""
        out = []
        for rt in list(self.pods.values()):
            containers, window = [], 0.0
            for name, c in list(rt.containers.items()):
                with self.metrics_lock:
                    samples = [x for x in c.samples if x[1] is not None]
                if len(samples) < 2:
                    continue
                last = samples[-1]
                first = next(x for x in samples if last[0] - x[0] <= METRICS_WINDOW)
                if last[0] <= first[0]:
                    continue
                nanocores = int((last[1] - first[1]) / (last[0] - first[0]))
                containers.append({'name': name, 'usage': {
                    'cpu': f'{max(0, nanocores)}n', 'memory': f'{(last[2] or 0) // 1024}Ki'}})
                window = max(window, last[0] - first[0])
            if containers:
                out.append({'kind': 'PodMetrics', 'apiVersion': 'metrics.k8s.io/v1beta1',
                            'metadata': {'name': rt.name, 'namespace': rt.namespace},
                            'timestamp': now_rfc3339(), 'window': f'{window:.0f}s',
                            'containers': containers})
        return out

    def containers_info(self) -> dict:
        """uid -> container name -> how to enter it (``kubelab exec``)."""
        out = {}
        for uid, rt in list(self.pods.items()):
            out[uid] = {}
            for name, c in list(rt.containers.items()):
                run = c.run
                if run is not None and run.pid is not None:
                    out[uid][name] = {'pid': run.pid, 'cgroupProcs': run.cgroup_procs,
                                      'user': [run.run_as.uid, run.run_as.gid,
                                               list(run.run_as.groups)],
                                      'capabilities': run.capabilities}
        return out

    # ------------------------------------------------------------ status
    def _report_no_sandbox(self, pod: dict, exc: Exception):
        meta = pod['metadata']
        waiting = {'reason': 'ContainerCreating',
                   'message': f'FailedCreatePodSandBox: {exc}'}
        self.store.update_pod_status(meta['namespace'], meta['name'], meta['uid'], {
            'phase': 'Pending', 'hostIP': self.node.ip, 'hostIPs': [{'ip': self.node.ip}],
            'conditions': [{'type': 'PodScheduled', 'status': 'True'}],
            'containerStatuses': [
                {'name': c['name'], 'image': c['image'], 'ready': False, 'restartCount': 0,
                 'started': False, 'state': {'waiting': waiting}}
                for c in pod['spec']['containers']]})

    def _report(self, rt: PodRuntime, pod):
        statuses = []
        for c in rt.containers.values():
            if c.proc is not None:
                state = {'running': {'startedAt': c.started}}
            elif c.last_exit is not None and c.next_start == float('inf'):
                state = {'terminated': c.last_exit}
            elif c.waiting is not None:
                state = {'waiting': {'reason': c.waiting[0], 'message': c.waiting[1]}}
            elif c.last_exit is not None:
                state = {'waiting': {'reason': 'CrashLoopBackOff', 'message': (
                    f'back-off restarting failed container={c.spec["name"]} '
                    f'pod={rt.name}_{rt.namespace}({rt.uid})')}}
            else:
                state = {'waiting': {'reason': 'ContainerCreating'}}
            st = {'name': c.spec['name'], 'image': c.spec['image'], 'ready': c.ready,
                  'restartCount': c.restarts, 'started': c.proc is not None, 'state': state,
                  'containerID': f'kubelab://{c.pid}' if c.proc is not None else ''}
            if c.last_exit is not None:
                st['lastState'] = {'terminated': c.last_exit}
            statuses.append(st)
        all_ready = all(c.ready for c in rt.containers.values())
        done = [s['state'].get('terminated') for s in statuses]
        if all(done):
            phase = 'Succeeded' if all(d['exitCode'] == 0 for d in done) else 'Failed'
        else:
            phase = 'Running'
        flag = 'True' if all_ready else 'False'
        status = {
            'phase': phase, 'hostIP': self.node.ip, 'hostIPs': [{'ip': self.node.ip}],
            'podIP': rt.ip, 'podIPs': [{'ip': rt.ip}], 'startTime': rt.start_time,
            'conditions': [_condition(rt, 'PodScheduled', 'True'),
                           _condition(rt, 'Initialized', 'True'),
                           _condition(rt, 'ContainersReady', flag),
                           _condition(rt, 'Ready', flag)],
            'containerStatuses': statuses,
        }
        self.store.update_pod_status(rt.namespace, rt.name, rt.uid, status)



def _condition(rt: PodRuntime, kind: str, status: str) -> dict:
    """A pod condition whose lastTransitionTime moves only when its status does (the
    deployment controller counts minReadySeconds from it)."""
    last = rt.transitions.get(kind)
    if last is None or last[0] != status:
        last = rt.transitions[kind] = (status, now_rfc3339())
    return {'type': kind, 'status': status, 'lastTransitionTime': last[1]}


def _signal(c: Container, sig):
    """Signal a running container's PID 1 (kubelet's SIGTERM goes to it alone; as
    PID 1 it ignores a signal it has no handler for)."""
    if c.proc is not None and c.proc.poll() is None and c.pid is not None:
        try:
            os.kill(c.pid, sig)
        except ProcessLookupError:
            pass


def _log_tail(path: str, lines: int = 80, limit: int = 2048) -> str:
    """The end of a container's log (FallbackToLogsOnError): 80 lines, 2 KiB at most."""
    try:
        with open(path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            text = f.read().decode('utf-8', 'replace')
    except OSError:
        return ''
    return '\n'.join(text.splitlines()[-lines:])
