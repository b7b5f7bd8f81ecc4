"""A small client of the lab's API server, for the CLI, the tests and the benchmark."""

from __future__ import annotations

import json
import os
import sys
import time

from kubelab.daemon.statedir import check_state_dir, running_daemon
from services import transport
from services.conditions import pod_ready
from services.errors import ApplyError, KubelabError, NotFound, ValidationError

STATE_DIR = os.environ.get('KUBELAB_STATE_DIR', '/run/kubelab')


class NoLab(KubelabError):
    pass


class Client:
    def __init__(self, state_dir: str = STATE_DIR):
        check_state_dir(state_dir, create=False)    # never send the token to a stranger
        if running_daemon() is None:
            raise NoLab('no lab is running: start one with `kubelab up`')
        try:
            with open(os.path.join(state_dir, 'token')) as f:
                self.token = f.read().strip()
        except FileNotFoundError:
            raise NoLab('no lab is running: start one with `kubelab up`') from None
        except PermissionError:
            raise KubelabError('the lab belongs to root: run kubelab with sudo') from None
        self.state_dir = state_dir
        self.socket_path = os.path.join(state_dir, transport.SOCKET_NAME)

    def _call(self, method: str, path: str, body=None, timeout: float = 30):
        data = json.dumps(body).encode() if body is not None else None
        headers = {'Authorization': f'Bearer {self.token}',
                   'Content-Type': 'application/json'}
        try:
            code, raw = transport.request(self.socket_path, method, path, data, headers,
                                          timeout)
        except transport.NotConnected as exc:
            raise NoLab(f'the lab does not answer ({exc}): is it up? `kubelab up` '
                        'starts one') from None
        except transport.NoAnswer as exc:
            raise KubelabError(f'the lab daemon took the request {method} {path} but '
                               f'gave no answer ({exc}); the lab is still up: see '
                               f'{os.path.join(self.state_dir, "daemon.log")}') from None
        try:
            payload = json.loads(raw or b'{}')
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            payload = {'error': f'the lab answered HTTP {code}: {raw[:200]!r}'}
        if code == 200:
            return payload
        if code == 422 and isinstance(payload.get('errors'), list):
            raise ApplyError([ValidationError('', '', e) for e in payload['errors']])
        if code == 404:
            raise NotFound(payload.get('error', 'not found'))
        raise KubelabError(payload.get('error', f'HTTP {code}'))

    # ------------------------------------------------------------ API
    def apply(self, objects: list[dict], dry_run: bool = False) -> dict:
        return self._call('POST', '/lab/v1/apply', {'objects': objects, 'dryRun': dry_run})

    def delete(self, kind: str, namespace: str | None, name: str, grace=None) -> dict:
        return self._call('POST', '/lab/v1/delete', {
            'kind': kind, 'namespace': namespace, 'name': name, 'gracePeriodSeconds': grace})

    def scale(self, namespace: str, name: str, replicas: int) -> dict:
        return self._call('POST', '/lab/v1/scale', {'namespace': namespace, 'name': name,
                                                     'replicas': replicas})

    def label(self, kind: str, namespace: str | None, name: str, labels: dict,
              remove: list, overwrite: bool = False) -> dict:
        return self._call('POST', '/lab/v1/label', {
            'kind': kind, 'namespace': namespace, 'name': name, 'labels': labels,
            'remove': remove, 'overwrite': overwrite})

    def restart_rollout(self, namespace: str, name: str) -> dict:
        return self._call('POST', '/lab/v1/rollout/restart', {'namespace': namespace,
                                                              'name': name})

    def node_network(self, name: str, up: bool) -> dict:
        return self._call('POST', '/lab/v1/node/' + ('restore' if up else 'fail'),
                          {'name': name})

    def node_kubelet(self, name: str, running: bool) -> dict:
        return self._call('POST', '/lab/v1/node/kubelet', {'name': name, 'running': running})

    def snapshot(self, since: int = 0, timeout: float = 0) -> tuple[int, dict]:
        """Every object by kind, once the store's version passes ``since`` (the server
        waits at most ``timeout`` seconds, and never more than 60)."""
        body = self._call('GET', f'/lab/v1/snapshot?since={since}&timeout={timeout}',
                          timeout=min(timeout, 60) + 30)
        return int(body['resourceVersion']), body['objects']

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        q = f'?kind={kind}' + (f'&namespace={namespace}' if namespace else '')
        return self._call('GET', '/lab/v1/objects' + q)['items']

    def get(self, kind: str, namespace: str | None, name: str) -> dict:
        q = f'?kind={kind}&name={name}' + (f'&namespace={namespace}' if namespace else '')
        return self._call('GET', '/lab/v1/objects' + q)

    def lab(self) -> dict:
        return self._call('GET', '/lab/v1/lab')

    def dataplane(self, until: int | None = None, switches: int = 0,
                  timeout: float = 0) -> dict:
        """Which version the switches and the proxies carry; with ``until``, once
        ``switches`` switches report version ``until`` or later (the server waits at
        most ``timeout`` seconds, and never more than 30)."""
        if until is None:
            return self._call('GET', '/lab/v1/dataplane')
        return self._call('GET', f'/lab/v1/dataplane?until={until}&switches={switches}'
                                 f'&timeout={timeout:.3f}', timeout=min(timeout, 30) + 30)

    def pod_metrics(self) -> list[dict]:
        """Every running pod's PodMetrics (metrics.k8s.io's shape)."""
        return self._call('GET', '/lab/v1/metrics/pods')['items']

    def shutdown(self) -> dict:
        return self._call('POST', '/lab/v1/shutdown', {})

    # ------------------------------------------------------------ waiting
    def wait_dataplane(self, timeout: float = 10) -> float:
        """Wait until every switch carries the store's current version, and every ready
        Ingress/Gateway proxy runs the configuration of that version; seconds taken."""
        start = time.monotonic()
        info = self.lab()
        switches = info.get('switches') or len(info['nodes']) + 3   # + underlay, edge, ext.
        dp = self.dataplane()
        while True:
            proxies = dp.get('proxies') or {'version': dp['storeVersion'], 'pending': []}
            carried = dp['version'] >= dp['storeVersion'] and len(dp['switches']) >= switches
            if carried and proxies['version'] >= dp['storeVersion'] and not proxies['pending']:
                return time.monotonic() - start
            left = timeout - (time.monotonic() - start)
            if left < 0:
                raise KubelabError(
                    f'the dataplane is at version {dp["version"]}, the proxies at '
                    f'{proxies["version"]} ({"; ".join(proxies["pending"]) or "loaded"}), '
                    f'the store at {dp["storeVersion"]}, after {timeout} s')
            if carried:              # only the proxies are behind: they load by themselves
                time.sleep(0.02)
                dp = self.dataplane()
                continue
            # The server answers as soon as the switches report the version (no poll).
            until = dp['storeVersion']
            dp = self.dataplane(until, switches, min(left, 20))
            if dp['version'] < until and time.monotonic() - start < timeout:
                time.sleep(0.02)     # not there yet (the server's wait ended): again

    def wait_for(self, predicate, what: str, timeout: float = 30, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise KubelabError(f'timed out after {timeout} s waiting for {what}')
            time.sleep(interval)

    def wait_applied(self, objects: list[dict], timeout: float = 60):
        """Wait until the Pods and Deployments among ``objects`` are ready (not the
        rest of the cluster), then until the dataplane carries them."""
        def settled():
            for obj in objects:
                kind = obj.get('kind')
                meta = obj.get('metadata') or {}
                ns = meta.get('namespace', 'default')
                if kind == 'Pod':
                    pod = self.get('Pod', ns, meta['name'])
                    if not pod_ready(pod):
                        return False
                elif kind == 'Deployment':
                    dep = self.get('Deployment', ns, meta['name'])
                    st, want = dep.get('status', {}), dep['spec'].get('replicas', 1)
                    if (st.get('readyReplicas', 0), st.get('replicas', 0),
                            st.get('updatedReplicas', 0)) != (want, want, want):
                        return False
            return True
        deadline = time.monotonic() + timeout
        self.wait_for(settled, 'the applied pods to be ready', timeout)
        self.wait_dataplane(timeout=_left(deadline))

    def wait_ready(self, namespace: str | None = 'default', timeout: float = 60):
        """Wait until every pod of the namespace (None: of every namespace) is Ready and
        every Deployment complete (the controller has seen its last change and its pods
        are all new and ready), and the dataplane carries it."""
        def settled():
            pods = self.list('Pod', namespace)
            deps = self.list('Deployment', namespace)
            pods_ok = all(p['metadata'].get('deletionTimestamp') is None and pod_ready(p)
                          for p in pods)
            return pods_ok and all(deployment_complete(d) for d in deps)
        where = f'namespace {namespace}' if namespace else 'every namespace'
        deadline = time.monotonic() + timeout
        self.wait_for(settled, f'the pods in {where} to be ready', timeout)
        self.wait_dataplane(timeout=_left(deadline))


def _left(deadline: float) -> float:
    """What is left of a caller's timeout for the dataplane's part of a wait (the
    dataplane always gets a last look, even when the pods took all of it)."""
    return max(deadline - time.monotonic(), 0.0)


def deployment_complete(dep: dict) -> bool:
    """kubectl rollout status's "successfully rolled out": the status is of the current
    generation and every wanted replica is updated, available and ready, none left over."""
    st, want = dep.get('status') or {}, dep['spec'].get('replicas', 1)
    return (st.get('observedGeneration', 0) >= dep['metadata'].get('generation', 1)
            and st.get('updatedReplicas', 0) == want and st.get('replicas', 0) == want
            and st.get('readyReplicas', 0) == want)


# ---------------------------------------------------------------- exec targets
def exec_target(client: Client, target: str, namespace: str, container: str | None):
    """(pid whose network namespace to enter, environment) for an exec target: a node's
    or external host's shell, or a pod's sandbox (the network namespace its containers
    share; ``container_exec`` enters a container itself)."""
    info = client.lab()
    if target in ('host/router', 'router') and info.get('router'):
        return info['router']['pid'], dict(os.environ)
    if target.startswith(('node/', 'host/')):
        kind, name = target.split('/', 1)
        items = info['nodes'] if kind == 'node' else info['hosts']
        for item in items:
            if item['name'] == name:
                return item['pid'], dict(os.environ)
        raise KubelabError(f'{kind} "{name}" not found; valid: '
                           + ', '.join(f'{kind}/{i["name"]}' for i in items))
    pod = client.get('Pod', namespace, _pod_name(target))
    pid = info['sandboxes'].get(pod['metadata']['uid'])
    if pid is None:
        raise KubelabError(f'pod {pod["metadata"]["name"]} has no running sandbox (phase '
                           f'{pod["status"].get("phase")})')
    return pid, dict(os.environ)


def _pod_name(target: str) -> str:
    return target.split('/', 1)[1] if target.startswith(('pod/', 'po/')) else target


def container_exec(client: Client, target: str, namespace: str, container: str | None,
                   command: list[str]) -> tuple[list[str], dict]:
    """(argv, environment) that run ``command`` inside a pod's container, as ``kubectl
    exec`` does: in its cgroups, its mount, PID, IPC, UTS and network namespaces, as its
    user with its capabilities, in its working directory, with its environment."""
    from services.container_config import RunAs
    from topo.sandbox import exec_argv        # here: keeps other commands fast
    pod = client.get('Pod', namespace, _pod_name(target))
    spec = container_of(pod, container)
    running = client.lab().get('containers', {}).get(pod['metadata']['uid'], {})
    info = running.get(spec['name'])
    if info is None:
        raise KubelabError(f'container {spec["name"]} in pod {pod["metadata"]["name"]} is '
                           f'not running (phase {pod.get("status", {}).get("phase")})')
    try:
        with open(f'/proc/{info["pid"]}/environ', 'rb') as f:
            env = dict(item.split('=', 1) for item in f.read().decode(
                'utf-8', 'replace').split('\0') if '=' in item)
    except OSError:
        raise KubelabError(f'container {spec["name"]} in pod {pod["metadata"]["name"]} '
                           f'has just stopped') from None
    uid, gid, groups = info['user']
    return exec_argv(info['pid'], info['cgroupProcs'], RunAs(uid, gid, tuple(groups)),
                     info['capabilities'], command), env


def container_of(pod: dict, name: str | None) -> dict:
    containers = pod['spec']['containers']
    if name is None:
        if len(containers) > 1:
            print(f'Defaulted container "{containers[0]["name"]}" out of: '
                  + ', '.join(c['name'] for c in containers), file=sys.stderr)
        return containers[0]
    for c in containers:
        if c['name'] == name:
            return c
    raise KubelabError(f'container {name} is not valid for pod {pod["metadata"]["name"]}; '
                       'valid: ' + ', '.join(c['name'] for c in containers))
