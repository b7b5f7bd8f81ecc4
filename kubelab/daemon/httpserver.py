"""An HTTP server on a Unix socket that no caller can wedge: the API server's floor.

Only root reaches it (the socket is in the 0700 state directory, mode 0600, and every
connection's peer uid is checked with SO_PEERCRED against the server's own); still, a
buggy or hostile local tool must not be able to exhaust the daemon that runs the lab.
So, per connection and per request:

* at most ``MAX_CONNECTIONS`` at once. One more evicts the connection that has waited
  longest for its next request (an idle keep-alive, a slow sender); when every
  connection is busy answering, the newcomer gets ``503`` and is closed at once;
* a request must arrive whole (request line, headers, body) within
  ``REQUEST_DEADLINE`` seconds of the connection's last answer (or of its accept): a
  reaper thread shuts down connections that are slower, so neither idle nor slow
  ("slowloris") connections hold threads;
* a body needs a valid ``Content-Length`` no larger than ``MAX_BODY_BYTES``: a missing
  one is an empty body; a negative, non-numeric or too large one, or a chunked body,
  is answered ``400``/``413``, and the connection is closed cleanly (its unread bytes
  would otherwise be read as the next request).

Every refusal is an answer (JSON ``{"error": ...}``, ``Connection: close``), never a
silent drop. The request handler (kubelab/daemon/apiserver.py) marks a connection busy
once it has read the body (``request_read``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import socketserver
import stat
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler

LOG = logging.getLogger('kubelab.api')

MAX_CONNECTIONS = 64
REQUEST_DEADLINE = 10.0
MAX_BODY_BYTES = 8 * 1024 * 1024
#: How deep a request body's JSON may nest (Kubernetes objects need about 15 levels).
MAX_JSON_DEPTH = 100
#: A JSON escape of a UTF-16 surrogate: the body may hold a string that is not text.
_SURROGATE_ESCAPE = re.compile(rb'\\u[dD][89a-fA-F]')


class RawJSON:
    """A body already encoded as JSON (``send_json`` sends it as it is)."""

    def __init__(self, data: bytes):
        self.data = data


class RequestProblem(Exception):
    """A request that cannot be read: answered with ``code`` and closed."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def peer_uid(sock) -> int:
    """The uid of the process at the other end of a Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
    return struct.unpack('3i', creds)[1]


class _Conn:
    __slots__ = ('sock', 'since', 'busy')

    def __init__(self, sock):
        self.sock = sock
        self.since = time.monotonic()
        self.busy = False


#: A body this long is sent in one go (``_room_for``).
BIG_BODY = 256 * 1024


def _room_for(sock, size: int) -> None:
    """Let ``sock`` take ``size`` bytes at once: a socket's default send buffer holds
    about 200 KB, so 4 MB of changes (a pod behind 10,000 Services) go out in some
    twenty sends, and between two of them the sending thread waits for the
    interpreter, which the daemon's other threads hold for 5 ms each (measured: 50 to
    250 ms for the change stream to reach kube-proxy). As root, past the system's
    limit (SO_SNDBUFFORCE); else as far as it allows."""
    for option in (getattr(socket, 'SO_SNDBUFFORCE', None), socket.SO_SNDBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size + 65536)
            return
        except OSError:
            continue


class GuardedUnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 256         # connections waiting to be accepted (listen backlog)
    max_connections = MAX_CONNECTIONS
    request_deadline = REQUEST_DEADLINE

    def __init__(self, path: str, handler):
        _remove_stale_socket(path)
        self.allowed_uid = os.geteuid()
        self.conns: dict[int, _Conn] = {}
        self.conns_lock = threading.Lock()
        self.refused = {'uid': 0, 'busy': 0, 'evicted': 0, 'slow': 0}
        old = os.umask(0o177)          # the socket is born 0600
        try:
            super().__init__(path, handler)
        finally:
            os.umask(old)
        self._stop = threading.Event()
        threading.Thread(target=self._reap, name='api-reaper', daemon=True).start()

    # ------------------------------------------------------------ admission
    def verify_request(self, request, client_address) -> bool:
        try:
            uid = peer_uid(request)
        except OSError:
            return False
        if uid != self.allowed_uid:
            self.refused['uid'] += 1
            LOG.warning('refused an API connection from uid %s (only uid %s may call)',
                        uid, self.allowed_uid)
            return False
        with self.conns_lock:
            if len(self.conns) >= self.max_connections and not self._evict():
                self.refused['busy'] += 1
                _answer_and_close(request, 503, 'the lab API has '
                                  f'{self.max_connections} requests under way; try again')
                return False
            self.conns[id(request)] = _Conn(request)
        return True

    def _evict(self) -> bool:
        """Shut down the connection that has waited longest for a request (with the
        lock held); False when every connection is busy."""
        waiting = [c for c in self.conns.values() if not c.busy]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.since)
        _shutdown(oldest.sock)
        del self.conns[id(oldest.sock)]
        self.refused['evicted'] += 1
        return True

    def shutdown_request(self, request):
        with self.conns_lock:
            self.conns.pop(id(request), None)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        LOG.exception('the API connection failed')

    # ------------------------------------------------------------ the handler's marks
    def request_read(self, sock):
        """The whole request is in: the connection works, the deadline no longer runs."""
        with self.conns_lock:
            conn = self.conns.get(id(sock))
            if conn is not None:
                conn.busy = True

    def request_done(self, sock):
        """Answered: the deadline for the next request starts now."""
        with self.conns_lock:
            conn = self.conns.get(id(sock))
            if conn is not None:
                conn.busy, conn.since = False, time.monotonic()

    def _reap(self):
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self.conns_lock:
                for key, conn in list(self.conns.items()):
                    if not conn.busy and now - conn.since > self.request_deadline:
                        _shutdown(conn.sock)
                        del self.conns[key]
                        self.refused['slow'] += 1

    def server_close(self):
        self._stop.set()
        super().server_close()
        try:
            os.unlink(self.server_address)
        except OSError:
            pass


class GuardedHandler(BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler with the server's marks, JSON errors and a checked body."""

    protocol_version = 'HTTP/1.1'
    default_request_version = 'HTTP/1.1'    # so even a garbled request gets a status line
    timeout = REQUEST_DEADLINE          # each read; the reaper bounds the whole request

    def address_string(self):
        return 'unix'

    def log_message(self, fmt, *args):      # quiet: the controller polls all the time
        LOG.debug(fmt, *args)

    def handle_one_request(self):
        super().handle_one_request()
        self.server.request_done(self.connection)

    def send_json(self, code: int, body, close: bool = False):
        data = body.data if isinstance(body, RawJSON) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        if close:
            self.send_header('Connection', 'close')
            self.close_connection = True
        self.end_headers()
        if len(data) > BIG_BODY:
            _room_for(self.connection, len(data))
        self.wfile.write(data)

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line, too many headers) as
        JSON, and the connection closed."""
        self.send_json(code, {'error': f'bad HTTP request: {message or explain or code}'},
                       close=True)

    def read_json(self):
        """The request body as JSON ({} when there is none); RequestProblem when it
        cannot be read. Marks the request read."""
        if self.headers.get('Transfer-Encoding'):
            raise RequestProblem(400, 'chunked bodies are not accepted: send '
                                      'Content-Length')
        raw = self.headers.get('Content-Length')
        length = 0
        if raw is not None:
            if not raw.strip().isdigit():
                raise RequestProblem(400, f'Content-Length must be a whole number >= 0, '
                                          f'got {raw[:40]!r}')
            length = int(raw)
        if length > MAX_BODY_BYTES:
            raise RequestProblem(413, f'the body is {length} bytes; the lab API takes at '
                                      f'most {MAX_BODY_BYTES}')
        data = self.rfile.read(length) if length else b''
        if len(data) < length:
            raise RequestProblem(400, 'the body ended before Content-Length bytes')
        self.server.request_read(self.connection)
        if not data:
            return {}
        try:
            body = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise RequestProblem(400, f'the body is not JSON: {exc}'[:300]) from None
        if json_depth(body) > MAX_JSON_DEPTH:
            raise RequestProblem(400, f'the body nests more than {MAX_JSON_DEPTH} levels')
        if _SURROGATE_ESCAPE.search(data):
            where = lone_surrogate(body)
            if where is not None:
                raise RequestProblem(400, (
                    f'{where}: a string holds an unpaired UTF-16 surrogate '
                    f'(\\ud800-\\udfff), which is not text; the lab API takes UTF-8 text '
                    f'only (a real API server would keep U+FFFD in its place)')[:300])
        return body


def lone_surrogate(value) -> str | None:
    """The path (``objects[0].spec.ports[0].name``) of a string, key or value, of a
    decoded JSON value that holds an unpaired surrogate (``json.loads`` takes
    ``"\\ud800"``; it cannot be encoded as UTF-8, so no answer or stream that carries it
    could be written), or None."""
    todo = [(value, '')]
    while todo:
        item, path = todo.pop()
        if isinstance(item, str):
            try:
                item.encode('utf-8')
            except UnicodeEncodeError:
                return path or '(the body)'
        elif isinstance(item, dict):
            for key, sub in item.items():
                where = f'{path}.{key}' if path else str(key)
                try:
                    str(key).encode('utf-8')
                except UnicodeEncodeError:
                    return (path or '(the body)') + ' (a key)'
                todo.append((sub, where))
        elif isinstance(item, list):
            todo.extend((sub, f'{path}[{i}]') for i, sub in enumerate(item))
    return None


def json_depth(value) -> int:
    """How deep a decoded JSON value nests (without recursion)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            todo.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            todo.extend((v, depth + 1) for v in item)
    return deepest


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _answer_and_close(sock, code: int, message: str):
    data = json.dumps({'error': message}).encode()
    head = (f'HTTP/1.1 {code} {"Service Unavailable" if code == 503 else "Error"}\r\n'
            f'Content-Type: application/json\r\nContent-Length: {len(data)}\r\n'
            'Connection: close\r\n\r\n').encode()
    try:
        sock.settimeout(1)
        sock.sendall(head + data)
        # What the caller already sent is read away: closing a socket with unread data
        # resets it, and the caller might lose the answer.
        sock.setblocking(False)
        while sock.recv(65536):
            pass
    except OSError:
        pass


def _remove_stale_socket(path: str):
    """A socket left by a crashed daemon is removed; anything else at the path is not
    ours to remove."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f'{path} exists and is not a socket: not removing it')
    os.unlink(path)
