"""The lab's API server: HTTP + JSON on a Unix socket, in front of the cluster store.

The CLI applies, deletes, lists, scales and restarts rollouts through it; the controller
(kube-proxy) long-polls ``/lab/v1/changes`` (the objects changed since the version it
has) and reports which resourceVersion every
switch carries (``/lab/v1/dataplane``), so callers can wait for the dataplane instead of
sleeping.
It listens on ``api.sock`` in the state directory (services/transport.py), root only,
with the limits of kubelab/daemon/httpserver.py (connections, deadlines, body size).
Every request but ``/healthz`` also needs the lab's bearer token (a root-only file).
``after_write`` runs after every request that changed objects (the daemon saves them to
disk there, kubelab/daemon/persist.py).

Routes (all under /lab/v1):
  GET  snapshot?since=N&timeout=S   every object, once the version passes N
  GET  changes?since=N&epoch=E&timeout=S   what changed after N (kube-proxy's watch)
  GET  objects?kind=K[&namespace=NS][&name=N]
  POST apply     {"objects": [...], "dryRun": false}  -> 200 results | 422 errors
  POST delete    {"kind", "namespace", "name"}
  POST scale     {"namespace", "name", "replicas"}
  POST label     {"kind", "namespace", "name", "labels", "remove", "overwrite"}
  POST rollout/restart  {"namespace", "name"}   a Deployment's pods replaced anew
  POST node/fail, node/restore  {"name"}        cut a node off the network / reconnect it
  POST node/kubelet  {"name", "running"}        stop or start a node's kubelet
  GET  dataplane[?until=N&switches=K&timeout=S]   (once K switches carry version N)
  POST dataplane {"version": N, "switches": [dpid...]}
  GET  lab       the cluster's nodes, external hosts, sandbox and container pids (exec)
  GET  metrics/pods  every running pod's CPU and memory (metrics.k8s.io PodMetrics)
  POST shutdown
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from urllib.parse import parse_qs, urlparse

from kubelab.daemon.httpserver import GuardedHandler, GuardedUnixHTTPServer, RawJSON, \
    RequestProblem
from services.errors import ApplyError, KubelabError, NotFound

LOG = logging.getLogger('kubelab.api')


class BadRequest(KubelabError):
    """A request the API cannot read: not JSON, a field missing or of the wrong type."""


class Fields(dict):
    """A request's body or query: a missing field is the caller's mistake (400), not
    the server's."""

    def __getitem__(self, key):
        if key not in self:
            raise BadRequest(f'bad request: the field "{key}" is missing')
        return super().__getitem__(key)

    def number(self, key, default=None) -> float:
        value = self.get(key, default)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise BadRequest(f'bad request: "{key}" must be a number, got {value!r}') from None


class APIServer:
    def __init__(self, store, token: str, lab_info, on_shutdown, path: str,
                 on_node_network=None, proxies=None, after_write=None, on_node_kubelet=None,
                 pod_metrics=None):
        self.store = store
        self.after_write = after_write    # callable, after a request that changed objects
        self.token = token
        self.lab_info = lab_info          # callable -> dict
        self.on_shutdown = on_shutdown
        self.on_node_network = on_node_network    # callable(name, up) -> message
        self.on_node_kubelet = on_node_kubelet    # callable(name, running) -> message
        self.proxies = proxies    # callable -> {'version': rv, 'pending': [...]} (nginx)
        self.pod_metrics = pod_metrics    # callable -> [PodMetrics]
        self.dataplane = {'version': 0, 'switches': []}
        self.dp_cond = threading.Condition()
        handler = type('Handler', (_Handler,), {'api': self})
        self.httpd = GuardedUnixHTTPServer(path, handler)
        self.path = path
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,),
                                       name='apiserver',
                                       daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def report_dataplane(self, body: dict):
        with self.dp_cond:
            self.dataplane = {'version': int(body.number('version')),
                              'switches': sorted(body.get('switches', [])),
                              'time': time.time()}
            self.dp_cond.notify_all()

    def wait_dataplane(self, version: int, switches: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.dp_cond:
            while not (self.dataplane['version'] >= version
                       and len(self.dataplane['switches']) >= switches):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.dp_cond.wait(left)
            return True


class _Handler(GuardedHandler):
    api: APIServer

    def _send(self, code: int, body):
        self.send_json(code, body)

    def _authorized(self) -> bool:
        got = self.headers.get('Authorization', '')
        if hmac.compare_digest(got.encode(), f'Bearer {self.api.token}'.encode()):
            return True
        self._send(401, {'error': 'unauthorized: send the lab token (root-only file '
                                  '/run/kubelab/token) as "Authorization: Bearer ..."'})
        return False

    def do_GET(self):
        url = urlparse(self.path)
        q = Fields({k: v[-1] for k, v in parse_qs(url.query).items()})
        if self._read_body() is None:
            return
        if url.path == '/healthz':
            return self._send(200, {'ok': True})
        if not self._authorized():
            return
        self._dispatch(lambda: self._get(url.path, q))

    def do_POST(self):
        url = urlparse(self.path)
        body = self._read_body()
        if body is None or not self._authorized():
            return
        if not isinstance(body, dict):
            return self.send_json(400, {'error': 'the body must be a JSON object'})
        after = self.api.after_write if url.path in WRITES else None
        self._dispatch(lambda: self._post(url.path, Fields(body)), after)

    def _read_body(self):
        """The body (read whole before anything else, so the connection stays in step
        with its requests), or None once a refusal was sent and the connection closed."""
        try:
            return self.read_json()
        except RequestProblem as exc:
            self.send_json(exc.code, {'error': f'bad request: {exc}'}, close=True)
            return None

    def _dispatch(self, fn, after=None):
        """Run a route and answer; ``after`` runs before the answer of a change that
        succeeded (saving it: a caller told "created" may rely on it)."""
        try:
            code, body = fn()
            if code == 200 and after is not None:
                after()
        except ApplyError as exc:
            code, body = 422, {'error': str(exc), 'errors': [str(e) for e in exc.errors]}
        except NotFound as exc:
            code, body = 404, {'error': str(exc)}
        except KubelabError as exc:
            code, body = 400, {'error': str(exc)}
        except Exception:              # a bug of the lab's, not the caller's: say so
            LOG.exception('%s %s failed', self.command, self.path)
            code, body = 500, {'error': 'internal error of the lab daemon: see its log, '
                                        'daemon.log in the state directory'}
        self._send(code, body)

    def _get(self, path, q):
        store = self.api.store
        if path == '/lab/v1/snapshot':
            since = int(q.number('since', 0))
            rv, objects = store.snapshot(since, min(q.number('timeout', 0), 60))
            return 200, {'resourceVersion': str(rv), 'objects': objects}
        if path == '/lab/v1/changes':
            return 200, RawJSON(store.changes_json(
                int(q.number('since', 0)), q.get('epoch', ''),
                min(q.number('timeout', 0), 60)))
        if path == '/lab/v1/objects':
            kind, ns, name = q['kind'], q.get('namespace'), q.get('name')
            if name:
                return 200, store.get(kind, ns, name)
            return 200, {'items': store.list(kind, ns), 'resourceVersion': str(store.rv)}
        if path == '/lab/v1/dataplane':
            if 'until' in q:        # a long poll: once the switches carry that version
                self.api.wait_dataplane(int(q.number('until')), int(q.number('switches', 0)),
                                        min(q.number('timeout', 0), 30))
            proxies = self.api.proxies() if self.api.proxies else None
            return 200, dict(self.api.dataplane, storeVersion=store.rv, proxies=proxies)
        if path == '/lab/v1/lab':
            return 200, self.api.lab_info()
        if path == '/lab/v1/metrics/pods':
            items = self.api.pod_metrics() if self.api.pod_metrics else []
            return 200, {'kind': 'PodMetricsList', 'apiVersion': 'metrics.k8s.io/v1beta1',
                         'items': items}
        return 404, {'error': f'no route {path}'}

    def _post(self, path, body):
        store = self.api.store
        if path == '/lab/v1/apply':
            objects = body['objects']
            if not isinstance(objects, list):
                raise BadRequest('bad request: "objects" must be a list of objects')
            return 200, store.apply(objects, dry_run=bool(body.get('dryRun')))
        if path == '/lab/v1/delete':
            msg = store.delete(body['kind'], body.get('namespace'), body['name'],
                               body.get('gracePeriodSeconds'))
            return 200, {'message': msg, 'resourceVersion': str(store.rv)}
        if path == '/lab/v1/scale':
            msg = store.scale(body['namespace'], body['name'], body['replicas'])
            return 200, {'message': msg, 'resourceVersion': str(store.rv)}
        if path == '/lab/v1/label':
            labels, remove = body.get('labels') or {}, body.get('remove') or []
            if not isinstance(labels, dict) or not isinstance(remove, list):
                raise BadRequest('bad request: "labels" must be an object, "remove" a list')
            return 200, store.label(body['kind'], body.get('namespace'), body['name'],
                                    labels, remove, bool(body.get('overwrite')))
        if path == '/lab/v1/rollout/restart':
            msg = store.restart_rollout(body['namespace'], body['name'])
            return 200, {'message': msg, 'resourceVersion': str(store.rv)}
        if path in ('/lab/v1/node/fail', '/lab/v1/node/restore') and \
                self.api.on_node_network is not None:
            msg = self.api.on_node_network(body['name'], path.endswith('restore'))
            return 200, {'message': msg, 'time': time.time()}
        if path == '/lab/v1/node/kubelet' and self.api.on_node_kubelet is not None:
            msg = self.api.on_node_kubelet(body['name'], bool(body['running']))
            return 200, {'message': msg, 'time': time.time()}
        if path == '/lab/v1/dataplane':
            self.api.report_dataplane(body)
            return 200, {'ok': True}
        if path == '/lab/v1/shutdown':
            threading.Thread(target=self.api.on_shutdown, daemon=True).start()
            return 200, {'message': 'lab shutting down'}
        return 404, {'error': f'no route {path}'}


#: The routes that change objects (saved to disk after each).
WRITES = frozenset('/lab/v1/' + route for route in (
    'apply', 'delete', 'scale', 'rollout/restart'))
