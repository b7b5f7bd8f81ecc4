"""How the lab's parts reach its API server: HTTP/1.1 over a Unix socket.

The API server listens on ``api.sock`` in the lab's state directory (mode 0700, owned
by root; the server also checks each caller's uid with SO_PEERCRED), so only root on
this machine can speak to it: no TCP port, nothing another user can connect to or
race for. The CLI (kubelab/client.py) and kube-proxy (controller/ryu_app.py) both call
it through ``request``; it lives here, at the bottom floor, because both floors above
need it and may not import each other.

``request`` tells apart a lab that does not answer at all (``NotConnected``: no
socket, nobody listening) from one that took the request and then closed the
connection without an answer (``NoAnswer``), so a caller never says "the lab is down"
about a lab that is up and refused a request.
"""

from __future__ import annotations

import errno
import http.client
import socket
import time

#: The API server's socket, in the state directory.
SOCKET_NAME = 'api.sock'


class NotConnected(Exception):
    """Nothing listens on the socket (or it does not exist)."""


class NoAnswer(Exception):
    """The server took the connection but closed it (or timed out) without an answer."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client's connection, to a Unix socket instead of host:port."""

    def __init__(self, socket_path: str, timeout: float):
        super().__init__('localhost', timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def request(socket_path: str, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    """(status, body) of one HTTP request to the server on ``socket_path``."""
    conn = UnixHTTPConnection(socket_path, timeout)
    try:
        deadline = time.monotonic() + min(timeout, 5)
        while True:
            try:
                conn.connect()
                break
            except OSError as exc:
                # A full listen backlog (a burst of connections) answers EAGAIN: the
                # server is there, wait for its turn.
                if exc.errno == errno.EAGAIN and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                raise NotConnected(f'{socket_path}: {exc.strerror or exc}') from None
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise NoAnswer(f'{type(exc).__name__}: {exc}') from None
    finally:
        conn.close()
