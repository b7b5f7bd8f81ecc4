"""The node agent ("kubelet") of one lab node.

It watches the store for pods bound to its node and makes them real: an address from the
node's pod CIDR (host-local IPAM: a replaced pod gets a new address), a Mininet host on
the node's bridge (the pod sandbox: one network namespace for all its containers), one
process per container, restarts per ``restartPolicy``, readiness probes sent from the
node's own address, graceful termination (SIGTERM, then SIGKILL after the grace period)
and the pod's status written back to the store.

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

import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from services.allocation.allocators import PodIPAllocator
from services.naming import now_rfc3339
from services.watch import follow
from topo.images.runtime import (container_argv, container_env, pod_resolv_conf,
                                 with_resolv_conf)
from topo.netns import netns_executor

LOG = logging.getLogger('kubelab.kubelet')
TICK = 0.2
BACKOFF, MAX_BACKOFF = 10.0, 300.0    # kubelet's CrashLoopBackOff: 10 s, 20 s, 40 s...
UNPROBED_READY_AFTER = 2.0    # a container without a readiness probe whose declared
                              # ports never open is called ready after this long


@dataclass
class Container:
    spec: dict
    proc: subprocess.Popen | None = None
    started: str = ''
    started_mono: float = 0.0
    restarts: int = 0
    last_exit: dict | None = None
    next_start: float = 0.0      # backoff: when it may start again
    ready: bool = False
    probe_ok: int = 0
    probe_fail: int = 0
    next_probe: float = 0.0
    probing: bool = False
    pre_stop: object = None      # a preStop hook under way: a callable, true once done
    hook_proc: subprocess.Popen | None = None    # an exec hook's process
    error: str | None = None     # why it could not be started (CreateContainerError)


@dataclass
class PodRuntime:
    namespace: str
    name: str
    uid: str
    ip: str
    host: object
    log_dir: str
    restart_policy: str
    containers: dict = field(default_factory=dict)
    terminating_until: float | None = None
    start_time: str = ''
    transitions: dict = field(default_factory=dict)   # condition type -> (status, since)
    resolv_conf: str | None = None    # the pod's /etc/resolv.conf (None: the node's)


class NodeAgent:
    def __init__(self, node, store, network, registry, state_dir: str, busybox_dir: str,
                 api_reachable=lambda: True):
        self.node = node
        self.api_reachable = api_reachable
        self.running = threading.Event()      # cleared by stop-kubelet
        self.running.set()
        self.store = store
        self.network = network
        self.registry = registry
        self.state_dir = state_dir
        self.busybox_dir = busybox_dir
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
                rt = self._create(pod)
            self._tend(rt)
            self._report(rt, pod)

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
        host = self.network.add_pod(self.node.name, ip)
        self.registry.add(host.pid, f'pod sandbox {meta["namespace"]}/{meta["name"]}')
        log_dir = os.path.join(self.state_dir, 'pods',
                               f'{meta["namespace"]}_{meta["name"]}_{meta["uid"]}')
        os.makedirs(log_dir, exist_ok=True)
        rt = PodRuntime(meta['namespace'], meta['name'], meta['uid'], ip, host, log_dir,
                        pod['spec'].get('restartPolicy', 'Always'), start_time=now_rfc3339())
        for spec in pod['spec']['containers']:
            rt.containers[spec['name']] = Container(spec)
        text = pod_resolv_conf(pod['spec'], rt.namespace, self.store.cluster.dns_ip)
        if text is not None:
            rt.resolv_conf = os.path.join(log_dir, 'resolv.conf')
            with open(rt.resolv_conf, 'w') as f:
                f.write(text)
        self.pods[meta['uid']] = rt
        LOG.info('pod %s/%s on %s: %s', rt.namespace, rt.name, self.node.name, ip)
        return rt

    def _start_container(self, rt: PodRuntime, c: Container):
        if c.last_exit is not None:
            c.restarts += 1        # counted when it starts again, as kubelet does
        argv = with_resolv_conf(container_argv(c.spec, sys.executable), rt.resolv_conf)
        env = container_env(c.spec, rt.name, self.busybox_dir, self._fields(rt))
        env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
        env['KUBELAB_L7_DIR'] = os.path.join(self.state_dir, 'l7')   # the proxies' configs
        log = open(os.path.join(rt.log_dir, f'{c.spec["name"]}.log'), 'ab')
        try:
            c.proc = rt.host.popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=env, cwd='/')
        finally:
            log.close()
        self.registry.add(c.proc.pid, f'container {rt.namespace}/{rt.name}/{c.spec["name"]}')
        c.started = now_rfc3339()
        c.started_mono = time.monotonic()
        c.ready = False
        c.probe_ok = c.probe_fail = 0
        probe = c.spec.get('readinessProbe')
        c.next_probe = c.started_mono + (probe or {}).get('initialDelaySeconds', 0)

    def _fields(self, rt: PodRuntime) -> dict:
        """The downward API's values of a pod (``valueFrom.fieldRef``)."""
        return {'metadata.name': rt.name, 'metadata.namespace': rt.namespace,
                'metadata.uid': rt.uid, 'spec.nodeName': self.node.name,
                'status.podIP': rt.ip, 'status.hostIP': self.node.ip,
                'spec.serviceAccountName': 'default'}

    def _tend(self, rt: PodRuntime):
        """Start what should run, notice what exited, probe what is due."""
        now = time.monotonic()
        for c in rt.containers.values():
            if c.proc is not None and c.proc.poll() is not None:
                code = c.proc.returncode
                # What the container started dies with it, as a runtime kills the rest
                # of a container's cgroup when its main process ends (nginx's workers).
                _signal_group(c.proc, signal.SIGKILL)
                c.last_exit = {'exitCode': code if code >= 0 else 128 - code,
                               'reason': 'Completed' if code == 0 else 'Error',
                               'startedAt': c.started, 'finishedAt': now_rfc3339()}
                c.proc = None
                c.ready = False
                again = rt.restart_policy == 'Always' or (
                    rt.restart_policy == 'OnFailure' and code != 0)
                if again:
                    c.next_start = now + min(MAX_BACKOFF, BACKOFF * 2 ** c.restarts)
                else:
                    c.next_start = float('inf')
            if c.proc is None and now >= c.next_start:
                try:
                    self._start_container(rt, c)
                    c.error = None
                except ValueError as exc:    # its spec cannot run (runtime.py says why)
                    c.error = str(exc)
                    c.next_start = now + BACKOFF
            if c.proc is not None:
                self._check_ready(rt, c, now)

    def _check_ready(self, rt: PodRuntime, c: Container, now: float):
        probe = c.spec.get('readinessProbe')
        if probe is None:
            if not c.ready:
                c.ready = (now - c.started_mono > UNPROBED_READY_AFTER
                           or _ports_bound(c.proc.pid, c.spec.get('ports') or []))
            return
        if c.probing or now < c.next_probe:
            return
        c.probing = True
        c.next_probe = now + probe.get('periodSeconds', 10)
        future = self.prober.submit(run_probe, probe, rt.ip, c.spec)

        def done(fut, c=c, probe=probe):
            ok = False
            try:
                ok = fut.result()
            except Exception:
                ok = False
            if ok:
                c.probe_ok, c.probe_fail = c.probe_ok + 1, 0
                if c.probe_ok >= probe.get('successThreshold', 1):
                    c.ready = True
            else:
                c.probe_fail, c.probe_ok = c.probe_fail + 1, 0
                if c.probe_fail >= probe.get('failureThreshold', 3) or not c.ready:
                    c.ready = False
            c.probing = False
        future.add_done_callback(done)

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
                    _signal(c.proc, signal.SIGTERM)
            self._report(rt, pod)
        for c in rt.containers.values():
            if c.pre_stop is not None and c.pre_stop():
                c.pre_stop = None      # the hook is over: now the signal, as kubelet does
                _signal(c.proc, signal.SIGTERM)
        running = [c for c in rt.containers.values()
                   if c.proc is not None and c.proc.poll() is None]
        if running and time.monotonic() < rt.terminating_until:
            # Probed on while terminating: readiness follows the probes (KEP-1669).
            now, alive = time.monotonic(), {id(c) for c in running}
            for c in rt.containers.values():
                if id(c) in alive:
                    self._check_ready(rt, c, now)
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
        env = container_env(c.spec, rt.name, self.busybox_dir, self._fields(rt))
        try:
            c.hook_proc = rt.host.popen(with_resolv_conf(hook['exec']['command'],
                                                         rt.resolv_conf),
                                        stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, env=env, cwd='/')
        except OSError as exc:
            LOG.warning('pod %s/%s: preStop hook of %s failed: %s', rt.namespace, rt.name,
                        c.spec['name'], exc)
            return lambda: True
        self.registry.add(c.hook_proc.pid,
                          f'preStop hook {rt.namespace}/{rt.name}/{c.spec["name"]}')
        return lambda proc=c.hook_proc: proc.poll() is not None

    def _kill(self, rt: PodRuntime):
        """SIGKILL every container of the pod (and any preStop hook) and reap it."""
        for c in rt.containers.values():
            _signal_group(c.hook_proc, signal.SIGKILL)
            c.hook_proc = None
            _signal_group(c.proc, signal.SIGKILL)
            if c.proc is not None:
                try:
                    c.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            c.proc = None

    def _remove(self, rt: PodRuntime):
        self.network.remove_pod(rt.host)
        self.ipam.release(rt.ip)
        self.pods.pop(rt.uid, None)
        LOG.info('pod %s/%s removed from %s', rt.namespace, rt.name, self.node.name)

    # ------------------------------------------------------------ status
    def _report(self, rt: PodRuntime, pod):
        statuses = []
        for c in rt.containers.values():
            if c.proc is not None:
                state = {'running': {'startedAt': c.started}}
            elif c.error is not None:
                state = {'waiting': {'reason': 'CreateContainerError', 'message': c.error}}
            elif c.last_exit is not None and c.next_start == float('inf'):
                state = {'terminated': c.last_exit}
            elif c.last_exit is not None:
                state = {'waiting': {'reason': 'CrashLoopBackOff'}}
            else:
                state = {'waiting': {'reason': 'ContainerCreating'}}
            st = {'name': c.spec['name'], 'image': c.spec['image'], 'ready': c.ready,
                  'restartCount': c.restarts, 'started': c.proc is not None, 'state': state,
                  'containerID': f'kubelab://{c.proc.pid}' if c.proc is not None else ''}
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


def _signal(proc, sig):
    if proc is not None and proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


def _signal_group(proc, sig):
    """Signal a container's whole process group: mnexec -d makes every container (and
    exec hook) a session leader, so its pid is the group of everything it started."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _ports_bound(pid: int, ports: list) -> bool:
    """Are all the container's declared ports bound inside its network namespace?"""
    want = {(p.get('protocol', 'TCP'), p['containerPort']) for p in ports}
    if not want:
        return True
    have = set()
    for proto, path, listen_state in (('TCP', 'tcp', '0A'), ('UDP', 'udp', '07')):
        try:
            with open(f'/proc/{pid}/net/{path}') as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == listen_state:
                        have.add((proto, int(cols[1].rsplit(':', 1)[1], 16)))
        except OSError:
            return False
    return want <= have


def _resolve_port(port, spec: dict) -> int:
    if isinstance(port, int):
        return port
    for p in spec.get('ports') or []:
        if p.get('name') == port:
            return p['containerPort']
    raise ValueError(f'no container port named {port!r}')


def run_probe(probe: dict, ip: str, spec: dict) -> bool:
    """One readiness probe, from the node's network namespace, as kubelet sends it."""
    timeout = probe.get('timeoutSeconds', 1)
    if 'httpGet' in probe:
        get = probe['httpGet']
        conn = http.client.HTTPConnection(ip, _resolve_port(get['port'], spec),
                                          timeout=timeout)
        try:
            conn.request('GET', get.get('path', '/'),
                         headers={'User-Agent': 'kube-probe/1.31'})
            return 200 <= conn.getresponse().status < 400
        except OSError:
            return False
        finally:
            conn.close()
    if 'tcpSocket' in probe:
        try:
            with socket.create_connection((ip, _resolve_port(probe['tcpSocket']['port'], spec)),
                                          timeout=timeout):
                return True
        except OSError:
            return False
    return False
