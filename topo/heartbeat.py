"""Node heartbeats that cross the lab's network: each kubelet renews its Lease over TCP.

A real kubelet renews its node's Lease (``coordination.k8s.io/v1``, namespace
``kube-node-lease``) on the API server every 10 s; when that stops, the node lifecycle
controller turns the node NotReady after its grace period
(services/controllers/node_lifecycle.py). The lab's API server listens on the machine's
loopback, outside the lab's network, so this module gives it an endpoint inside:

* ``LeaseEndpoint``: an HTTP server on the control-plane node's InternalIP, port 6443
  (the API server's port), created inside that node's network namespace. It answers
  ``PUT /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/NAME`` by
  renewing the Lease in the store (``Store.renew_lease``) and returning it, as the API
  server would. Only node NAME itself may renew NAME's Lease (the request must come
  from its address: the NodeRestriction admission's rule, with the address standing
  for the kubelet's credentials); anyone else gets 403, a body over 64 KiB 413;
* ``Heartbeat``: one per node, a thread in the node's network namespace that sends that
  request every ``interval`` (a quarter of the grace period, at most 10 s; every second
  while it fails) from the node's own address. It gets there through the node's bridge, the underlay and the
  control-plane node's bridge: a cut cable (``kubelab node fail``) or a stopped kubelet
  (``kubelab node stop-kubelet``) silences it. ``connected`` says whether a renewal got
  through lately (within two intervals, at least 3 s: a request slowed down by a busy
  datapath is not a partition): the kubelet (topo/kubelet.py) and the MetalLB speaker
  act on the store only while one did, as a kubelet that cannot reach the API server can
  neither read nor write.

The control-plane node's own heartbeat reaches the endpoint locally, within its own
namespace, as a kubelet on the control-plane node reaches its local API server: when
the control-plane node is cut off, it stays Ready and every other node goes silent.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from topo.netns import enter_netns

LOG = logging.getLogger('kubelab.heartbeat')
API_PORT = 6443
LEASE_PATH = '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/'


MAX_BODY = 64 * 1024


class _LeaseHandler(BaseHTTPRequestHandler):
    store = None                  # set on the subclass the endpoint makes
    node_ips: dict = {}           # node name -> its address (who may renew what)
    protocol_version = 'HTTP/1.1'
    timeout = 10                  # seconds a client may take to send its request

    def log_message(self, fmt, *args):
        LOG.debug(fmt, *args)

    def _send(self, code: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        try:
            length = int(self.headers.get('Content-Length') or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            return self._send(413, _status(413, 'RequestEntityTooLarge',
                                           f'a Lease is at most {MAX_BODY} bytes'))
        self.rfile.read(length)             # the kubelet's Lease: renewTime is ours
        if not self.path.startswith(LEASE_PATH):
            return self._send(404, _status(404, 'NotFound', f'no route {self.path}'))
        name = self.path[len(LEASE_PATH):]
        if name in self.node_ips and self.client_address[0] != self.node_ips[name]:
            return self._send(403, _status(403, 'Forbidden', f'leases "{name}" is '
                                           f'forbidden: only node {name} may renew its '
                                           f'Lease'))
        try:
            lease = self.store.renew_lease(name)
        except KeyError:
            return self._send(404, _status(404, 'NotFound',
                                           f'nodes "{name}" not found'))
        self._send(200, lease)


def _status(code: int, reason: str, message: str) -> dict:
    return {'kind': 'Status', 'apiVersion': 'v1', 'status': 'Failure', 'code': code,
            'reason': reason, 'message': message}


class LeaseEndpoint:
    """The API server's address inside the lab: ``address``:6443 in the network
    namespace of ``executor``'s threads (the control-plane node's)."""

    def __init__(self, store, address: str, executor, port: int = API_PORT):
        handler = type('Handler', (_LeaseHandler,), {
            'store': store, 'node_ips': {n.name: n.ip for n in store.cluster.nodes}})
        self.address = address
        self.port = port
        self.server = executor.submit(ThreadingHTTPServer, (address, port), handler).result()
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name='lease-endpoint')
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Heartbeat:
    """A kubelet's Lease renewals, sent from its node's network namespace (``pid``'s)."""

    def __init__(self, node_name: str, pid: int, endpoint: str, interval: float,
                 port: int = API_PORT):
        self.node_name = node_name
        self.pid = pid
        self.endpoint = endpoint
        self.port = port
        self.interval = interval
        self.timeout = min(5.0, max(1.0, interval))
        self.cutoff = max(2 * interval, 3.0)   # no renewal for this long: cut off
        self._last_ok: float | None = None
        self._running = threading.Event()  # the kubelet runs (stop-kubelet clears it)
        self._running.set()
        self._wake = threading.Event()
        self._first = threading.Event()
        self._last_result: bool | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f'heartbeat-{node_name}')

    def start(self, wait: float = 5.0) -> bool:
        """Start renewing; True once the first renewal got through (within ``wait``)."""
        self._thread.start()
        self._first.wait(wait)
        return self.connected

    def stop(self):
        self._stopping = True
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._running.is_set()

    @property
    def connected(self) -> bool:
        """The kubelet runs and a renewal got through within ``cutoff`` seconds."""
        last = self._last_ok
        return self._running.is_set() and last is not None and \
            time.monotonic() - last <= self.cutoff

    def pause(self):
        """The kubelet stopped: no more renewals (and no API access)."""
        self._running.clear()

    def resume(self):
        self._running.set()
        self._wake.set()

    def poke(self):
        """Renew now (the network changed)."""
        self._wake.set()

    def _run(self):
        try:
            enter_netns(self.pid)
        except OSError as exc:
            LOG.error('node %s: no heartbeats: %s', self.node_name, exc)
            self._first.set()
            return
        while not self._stopping:
            ok = False
            if self._running.is_set():
                ok = self._renew()
                if ok:
                    self._last_ok = time.monotonic()
                self._first.set()
            # Failing, retry every second (the kubelet's lease controller retries fast).
            self._wake.wait(self.interval if ok else min(1.0, self.interval))
            self._wake.clear()

    def _renew(self) -> bool:
        body = json.dumps({'apiVersion': 'coordination.k8s.io/v1', 'kind': 'Lease',
                           'metadata': {'name': self.node_name,
                                        'namespace': 'kube-node-lease'},
                           'spec': {'holderIdentity': self.node_name}}).encode()
        conn = http.client.HTTPConnection(self.endpoint, self.port, timeout=self.timeout)
        try:
            conn.request('PUT', LEASE_PATH + self.node_name, body=body, headers={
                'Content-Type': 'application/json', 'User-Agent': 'kubelet/v1.31.0'})
            ok = conn.getresponse().status == 200
        except OSError:
            ok = False
        finally:
            conn.close()
        if ok != self._last_result:
            self._last_result = ok
            LOG.info('node %s: heartbeats %s', self.node_name,
                     'get through' if ok else 'fail: the API server is unreachable')
        return ok
