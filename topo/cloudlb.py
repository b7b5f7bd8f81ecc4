"""The health side of the emulated cloud load balancer: kube-proxy's health servers on
every node, and the cloud's health checks that choose the nodes a load balancer sends to.

A cloud load balancer in front of a cluster sends to nodes (NodeIP:NodePort), not to
pods, and learns which nodes to use by health-checking them, as kube-proxy expects:

* ``externalTrafficPolicy: Cluster``: any node forwards to any endpoint, so the cloud
  checks kube-proxy itself, ``GET /healthz`` on port 10256 (as GCP's load balancers do
  for such Services). A node whose kube-proxy does not answer is left out.
* ``externalTrafficPolicy: Local``: a node sends only to its own endpoints, so kube-proxy
  opens the Service's ``healthCheckNodePort`` on every node and answers 200 there while
  the node holds a ready endpoint of the Service, 503 otherwise; the cloud checks that
  port and sends only to nodes with endpoints, which keeps the client's address without
  dropping at nodes that have none.

``ProxyHealthServer`` is kube-proxy's side on one node (its healthz server and its service
health server, pkg/proxy/healthcheck), with kube-proxy's status codes, bodies and headers.
Its sockets are created inside the node's network namespace, so checks reach it at the
node's address through the lab's switches like real ones; one thread serves all its ports.

``HealthChecker`` is the cloud's side: from a host outside the cluster it probes the
target nodes of every load balancer each ``interval``, with the consecutive-result
thresholds clouds use, and publishes each load balancer's healthy nodes when they change;
the caller turns them into the edge switch's DNAT targets.

Differences from kube-proxy: the emulated proxy is always healthy (``nodeEligible`` and
``serviceProxyHealthy`` are true: the lab's switches forward without their controller),
times are RFC 3339 (kube-proxy prints Go's ``time.String()``), and every connection
carries one request (``Connection: close``).
"""

from __future__ import annotations

import json
import logging
import re
import selectors
import socket
import threading
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Callable

from services.endpoints import ANY_PORT, SERVICE_NAME_LABEL, by_service, endpoint_addresses, \
    kube_proxy_ignores
from services.naming import now_rfc3339

LOG = logging.getLogger('kubelab.cloudlb')
HEALTHZ_PORT = 10256          # kube-proxy's --healthz-bind-address port
MAX_REQUEST = 8192            # bytes of request line and headers a client may send
IDLE_TIMEOUT = 10.0           # seconds a connection may take to send its request
USER_AGENT = 'kubelab-cloud-lb-health-check/1.0'
_END_OF_HEAD = re.compile(rb'\r?\n\r?\n')


# ---------------------------------------------------------------- kube-proxy's side

def health_checks(services: list[dict], slices: list[dict],
                  node_name: str) -> dict[int, tuple[str, str, int]]:
    """What kube-proxy serves on ``node_name``: healthCheckNodePort -> (namespace, name,
    local endpoints) for every LoadBalancer Service with ``externalTrafficPolicy: Local``.
    Local endpoints are kube-proxy's: the distinct addresses of the node's ready
    endpoints (an unset ``ready`` is ready; terminating endpoints are not), taken from
    slices with ports, as kube-proxy reads endpoints through a slice's ports
    (services/endpoints.py). So a node whose only local endpoints are terminating
    answers 503 while its NodePort still serves them (the Local fallback), as
    kube-proxy's does: the load balancer stops sending it new clients. A Service
    kube-proxy does not watch (services/endpoints.kube_proxy_ignores) gets no port."""
    checked = _checked(services)
    # Only the checked Services' slices are read (at 10,000 Services, reading every
    # slice's endpoints after each change cost a quarter of a second).
    keys = set(checked.values())
    mine = by_service([s for s in slices if slice_service(s) in keys]) if keys else {}
    return {port: (*key, len({a.address for a in endpoint_addresses(
        mine.get(key, ()), ANY_PORT, node=node_name)})) for port, key in checked.items()}


def _checked(services: list[dict]) -> dict[int, tuple[str, str]]:
    """healthCheckNodePort -> (namespace, name) of the Services kube-proxy serves a
    health check for."""
    checked = {}
    for svc in services:
        spec = svc.get('spec') or {}
        port = spec.get('healthCheckNodePort')
        if port and spec.get('type') == 'LoadBalancer' and not kube_proxy_ignores(svc) \
                and spec.get('externalTrafficPolicy') == 'Local':
            checked[port] = (svc['metadata'].get('namespace', 'default'),
                             svc['metadata']['name'])
    return checked


def health_checked(services: list[dict]) -> set[tuple[str, str]]:
    """(namespace, name) of the Services whose slices ``health_checks`` reads."""
    return set(_checked(services).values())


def slice_service(endpoint_slice: dict) -> tuple[str, str | None]:
    """(namespace, Service name) of an EndpointSlice, as ``by_service`` reads it."""
    meta = endpoint_slice.get('metadata') or {}
    return (meta.get('namespace') or 'default',
            (meta.get('labels') or {}).get(SERVICE_NAME_LABEL))


def _listening_socket(port: int) -> socket.socket:
    """A non-blocking TCP listener on 0.0.0.0:``port``, in the calling thread's network
    namespace."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as Go's listeners
        sock.bind(('0.0.0.0', port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _response(status: int, headers: list[tuple[str, str]], body: bytes,
              with_body: bool = True) -> bytes:
    head = [f'HTTP/1.1 {status} {HTTPStatus(status).phrase}',
            *(f'{name}: {value}' for name, value in headers),
            f'Date: {formatdate(usegmt=True)}', f'Content-Length: {len(body)}',
            'Connection: close', '', '']
    return '\r\n'.join(head).encode() + (body if with_body else b'')


JSON_HEADERS = [('Content-Type', 'application/json'), ('X-Content-Type-Options', 'nosniff')]
TEXT_HEADERS = [('Content-Type', 'text/plain; charset=utf-8'),
                ('X-Content-Type-Options', 'nosniff')]
BAD_REQUEST = _response(400, TEXT_HEADERS[:1], b'400 Bad Request')


@dataclass
class _Connection:
    port: int                  # the port it came in on
    deadline: float
    data: bytearray = field(default_factory=bytearray)


class ProxyHealthServer:
    """kube-proxy's health servers on one node.

    * port 10256 (``healthz_port``): ``/healthz`` answers 200 and
      ``{"lastUpdated": ...,"currentTime": ..., "nodeEligible": true}``, ``/livez`` the
      same without ``nodeEligible``, any other path 404;
    * the ``healthCheckNodePort`` of every LoadBalancer Service with
      ``externalTrafficPolicy: Local``, any path: 200 while the node holds at least one
      ready endpoint of the Service, else 503, with ``{"service": {"namespace": ...,
      "name": ...}, "localEndpoints": N, "serviceProxyHealthy": true}`` and the header
      ``X-Load-Balancing-Endpoint-Weight: N``.

    Every listening socket is created by a worker of ``executor``, whose threads are in
    the node's network namespace (topo/netns.py): a socket, and every connection it
    accepts, stays in the namespace it was created in. One thread of this object serves
    them all with a selector, without blocking: an idle or slow client holds no thread
    and delays no other answer. The executor stays the caller's.
    """

    def __init__(self, node_name: str, executor: Executor, healthz_port: int = HEALTHZ_PORT):
        self.node_name = node_name
        self._executor = executor
        self.healthz_port = healthz_port
        try:
            healthz = self._listen(healthz_port)
        except OSError as exc:
            raise OSError(exc.errno, f"node {node_name}: cannot open kube-proxy's healthz "
                                     f"port {healthz_port}: {exc.strerror}") from exc
        self._services: dict[int, tuple[str, str, int]] = {}   # replaced whole by sync
        self._listeners: dict[int, socket.socket] = {}         # healthCheckNodePort -> socket
        self._connections: dict[socket.socket, _Connection] = {}   # the serving thread's
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()         # the selector's registrations
        self._sync_lock = threading.Lock()    # one sync (or close) at a time
        self._closed = False
        self._wake, self._waker = socket.socketpair()
        self._wake.setblocking(False)
        self._selector.register(self._wake, selectors.EVENT_READ, None)
        self._selector.register(healthz, selectors.EVENT_READ, healthz_port)
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f'kube-proxy-health-{node_name}')
        self._thread.start()

    def sync(self, services: list[dict], slices: list[dict]) -> None:
        """Serve the health check ports of ``services`` (every Service) with the node's
        endpoints in ``slices`` (every EndpointSlice): open the ports that appeared, close
        those that went, update the counts. A port that cannot be bound is logged and
        tried again at the next sync, as kube-proxy does."""
        wanted = health_checks(services, slices, self.node_name)
        with self._sync_lock:
            if self._closed:
                raise RuntimeError(f'the health server of node {self.node_name} is closed')
            gone = self._listeners.keys() - wanted.keys()
            if gone:
                with self._lock:
                    for port in gone:
                        sock = self._listeners.pop(port)
                        self._selector.unregister(sock)
                        sock.close()
            for port in wanted.keys() - self._listeners.keys():
                try:
                    sock = self._listen(port)
                except OSError as exc:
                    namespace, name, _ = wanted[port]
                    LOG.warning('node %s: cannot open the health check port %d of Service '
                                '%s/%s: %s', self.node_name, port, namespace, name, exc)
                    continue
                with self._lock:
                    self._selector.register(sock, selectors.EVENT_READ, port)
                self._listeners[port] = sock
            self._services = {port: health for port, health in wanted.items()
                              if port in self._listeners}

    def close(self) -> None:
        """Stop serving and close every socket."""
        with self._sync_lock:
            if self._closed:
                return
            self._closed = True
        self._waker.send(b'.')
        self._thread.join()
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()
        self._waker.close()

    def _listen(self, port: int) -> socket.socket:
        return self._executor.submit(_listening_socket, port).result()

    # ------------------------------------------------------------ the serving thread
    def _serve(self):
        while not self._closed:
            try:
                self._serve_once()
            except Exception:      # keep the node's health answering
                LOG.exception('node %s: the health server failed', self.node_name)
                time.sleep(0.1)

    def _serve_once(self):
        """Wait for sockets to be ready (or the oldest connection's deadline), serve them."""
        timeout = None
        if self._connections:
            first = min(c.deadline for c in self._connections.values())
            timeout = max(0.0, first - time.monotonic())
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                self._wake.recv(64)
            elif isinstance(key.data, _Connection):
                self._read(key.fileobj, key.data)
            else:
                self._accept(key.fileobj, key.data)
        now = time.monotonic()
        for conn in [c for c, state in self._connections.items() if state.deadline <= now]:
            self._drop(conn)

    def _accept(self, listener: socket.socket, port: int):
        try:
            conn, _ = listener.accept()
        except OSError:      # nothing pending after all, or sync has just closed it
            return
        conn.setblocking(False)
        state = self._connections[conn] = _Connection(port, time.monotonic() + IDLE_TIMEOUT)
        with self._lock:
            self._selector.register(conn, selectors.EVENT_READ, state)

    def _read(self, conn: socket.socket, state: _Connection):
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        state.data += data
        end = _END_OF_HEAD.search(state.data)
        if data and end is None and len(state.data) <= MAX_REQUEST:
            return
        if data:
            try:      # a few hundred bytes: they fit the empty send buffer of a new socket
                conn.sendall(self._answer(state.port, bytes(state.data[:end.start()]))
                             if end else BAD_REQUEST)
            except OSError:
                pass
        self._drop(conn)

    def _drop(self, conn: socket.socket):
        del self._connections[conn]
        with self._lock:
            self._selector.unregister(conn)
        conn.close()

    def _answer(self, port: int, head: bytes) -> bytes:
        """The response to a request (its request line and headers) on ``port``."""
        parts = head.split(b'\n', 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b'HTTP/'):
            return BAD_REQUEST
        with_body = parts[0] != b'HEAD'
        path = parts[1].split(b'?', 1)[0]
        if port == self.healthz_port:
            now = json.dumps(now_rfc3339())
            if path == b'/healthz':      # kube-proxy's spacing
                body = f'{{"lastUpdated": {now},"currentTime": {now}, "nodeEligible": true}}'
            elif path == b'/livez':
                body = f'{{"lastUpdated": {now},"currentTime": {now}}}'
            else:
                return _response(404, TEXT_HEADERS, b'404 page not found\n', with_body)
            return _response(200, JSON_HEADERS, body.encode(), with_body)
        service = self._services.get(port)
        if service is None:              # closed by a sync meanwhile
            return b''
        namespace, name, count = service
        body = json.dumps({'service': {'namespace': namespace, 'name': name},
                           'localEndpoints': count, 'serviceProxyHealthy': True},
                          indent='\t')
        return _response(200 if count else 503,
                         [*JSON_HEADERS, ('X-Load-Balancing-Endpoint-Weight', str(count))],
                         body.encode(), with_body)


# ---------------------------------------------------------------- the cloud's side

Target = tuple[str, str, int]      # (node name, node IP, port)


def probe(ip: str, port: int, timeout: float) -> bool:
    """One health check: ``GET /healthz``; healthy iff the status is 200 and its line
    arrives within ``timeout`` of the start (connect, send and receive together)."""
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining
    request = (f'GET /healthz HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: {USER_AGENT}\r\n'
               f'Connection: close\r\n\r\n').encode()
    head = b''
    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            sock.settimeout(left())
            sock.sendall(request)
            while b'\n' not in head and len(head) < MAX_REQUEST:
                sock.settimeout(left())
                chunk = sock.recv(1024)
                if not chunk:
                    break
                head += chunk
    except OSError:          # refused, unreachable, reset, or out of time
        return False
    parts = head.split(b'\n', 1)[0].split()
    return len(parts) >= 2 and parts[0].startswith(b'HTTP/') and parts[1] == b'200'


def health_check_targets(cluster, services: list[dict]) -> dict:
    """What the cloud checks for each LoadBalancer Service ("namespace/name"): every
    node's kube-proxy healthz (externalTrafficPolicy Cluster: a live node can forward
    anywhere) or the Service's healthCheckNodePort (Local: 200 only on a node with an
    endpoint of its own)."""
    out = {}
    for svc in services:
        spec, meta = svc['spec'], svc['metadata']
        if spec.get('type') != 'LoadBalancer' or spec.get('loadBalancerClass'):
            continue          # a class: another implementation's, not this cloud's
        port = spec.get('healthCheckNodePort') if spec.get(
            'externalTrafficPolicy') == 'Local' else HEALTHZ_PORT
        out[f'{meta["namespace"]}/{meta["name"]}'] = [(n.name, n.ip, port)
                                                      for n in cluster.nodes]
    return out


@dataclass
class _Health:
    healthy: bool
    streak: int = 0        # consecutive results that disagree with ``healthy``


class HealthChecker:
    """A cloud load balancer's health checks, from a host outside the cluster.

    ``set_targets`` gives, per load balancer key, the nodes to check as (node name, node
    IP, port). Rounds start every ``interval``, on a fixed cadence; each probes every
    distinct target once (``probe``: ``GET /healthz``, healthy iff 200 within
    ``timeout``), all in parallel on ``executor`` (its threads are in the checking host's
    network namespace). A healthy target turns unhealthy after ``unhealthy_threshold``
    consecutive failures, an unhealthy one healthy after ``healthy_threshold``
    consecutive successes. A new target's first probe starts at once, between rounds,
    and its result is the target's initial state; a new key is published only when all
    its targets have one, so a fresh load balancer starts with real results: it neither
    sends to a node without endpoints nor waits for thresholds.

    ``publish(key, healthy_nodes)`` is called from the checker's thread, with the healthy
    nodes in the order of the key's targets, once for each new key and then as soon as
    a probe's result changes the list. It is called with the checker's lock held: once
    ``set_targets`` has returned, a key it removed is never published again (``publish``
    may call ``set_targets`` itself, but must not wait for a thread that does). An empty
    list means no healthy node; whether the load balancer then fails open, as clouds do,
    is the caller's choice.

    Detection bound: rounds start on a fixed cadence and a probe ends within
    ``timeout`` (at most ``interval``). A node that stops answering at time t fails the
    probe of every round that starts after t; the first such round starts before
    t + interval, so the ``unhealthy_threshold``-th failed probe ends, and publish drops
    the node, at most ``unhealthy_threshold * interval + timeout`` after t (defaults:
    2.4 s; the timeout is 0.4 s so that the bound plus the dataplane's update, about
    20 ms from publish to the edge's new flows, stays under the 2.5 s a design of checks
    every second and two failures in a row promises). A node that answers again is
    published back within ``healthy_threshold * interval + timeout``. Both hold while
    ``executor`` has a free worker for every target of a round.
    """

    def __init__(self, executor: Executor, publish: Callable[[str, list[str]], None],
                 interval: float = 1.0, timeout: float = 0.4, unhealthy_threshold: int = 2,
                 healthy_threshold: int = 2):
        if not interval > 0:
            raise ValueError(f'interval: {interval!r} must be more than 0 seconds')
        if not 0 < timeout <= interval:
            raise ValueError(f'timeout: {timeout!r} must be more than 0 and at most the '
                             f'interval ({interval!r})')
        for name, value in (('unhealthy_threshold', unhealthy_threshold),
                            ('healthy_threshold', healthy_threshold)):
            if value < 1:
                raise ValueError(f'{name}: {value!r} must be at least 1')
        self.interval, self.timeout = interval, timeout
        self.unhealthy_threshold, self.healthy_threshold = unhealthy_threshold, healthy_threshold
        self._executor = executor
        self._publish = publish
        self._lock = threading.RLock()       # _targets and _published; held while publishing
        self._targets: dict[str, tuple[Target, ...]] = {}
        self._published: dict[str, list[str]] = {}
        self._health: dict[Target, _Health] = {}     # the checker thread's
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name='cloud-lb-health-checks',
                                        daemon=True)

    def set_targets(self, targets: dict[str, list[Target]]) -> None:
        """Check these targets from now on: key -> [(node name, node IP, port)]. Keys not
        in ``targets`` are forgotten; new targets are probed at once."""
        with self._lock:
            self._targets = {key: tuple((node, ip, int(port)) for node, ip, port in nodes)
                             for key, nodes in targets.items()}
            for key in self._published.keys() - self._targets.keys():
                del self._published[key]
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self):
        next_round = time.monotonic()
        in_flight: list[tuple[Target, Future]] = []
        while True:
            self._wake.clear()
            if self._stopping:
                return
            now = time.monotonic()
            due = now >= next_round
            if due:
                next_round += self.interval
                if next_round <= now:        # a round came late: keep the cadence from now
                    next_round = now + self.interval
            try:
                in_flight = self._step(due, in_flight)
            except Exception:        # keep checking; the next round retries
                LOG.exception('cloud load balancer health checks failed')
            self._wake.wait(max(0.0, next_round - time.monotonic()))

    def _step(self, due: bool, in_flight: list) -> list:
        """Record the probes that have ended, publish what changed, then start the probes
        of a round (``due``) or the first probes of new targets; returns the probes under
        way. Probes do not hold the thread: each wakes it when it ends."""
        with self._lock:
            targets = {t for nodes in self._targets.values() for t in nodes}
        pending = []
        for target, future in in_flight:
            if not future.done():
                pending.append((target, future))
            elif target in targets:
                self._record(target, future.exception() is None and future.result())
        for target in self._health.keys() - targets:
            del self._health[target]
        with self._lock:
            for key in list(self._targets):
                nodes = self._targets.get(key)      # publish may call set_targets
                if nodes is None or not all(t in self._health for t in nodes):
                    continue         # removed, or a first probe still under way
                healthy = [t[0] for t in nodes if self._health[t].healthy]
                if self._published.get(key) != healthy:
                    self._published[key] = healthy
                    self._publish(key, healthy)
        todo = targets if due else targets - self._health.keys() - {t for t, _ in pending}
        for target in todo:
            future = self._executor.submit(probe, target[1], target[2], self.timeout)
            future.add_done_callback(lambda _: self._wake.set())
            pending.append((target, future))
        return pending

    def _record(self, target: Target, ok: bool):
        health = self._health.get(target)
        if health is None:
            self._health[target] = _Health(ok)
        elif ok == health.healthy:
            health.streak = 0
        else:
            health.streak += 1
            if health.streak >= (self.healthy_threshold if ok else self.unhealthy_threshold):
                health.healthy, health.streak = ok, 0
