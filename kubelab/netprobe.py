"""A traffic probe run inside a lab host's network namespace; prints JSON.

It tells apart what a user would: which pod answered, what client address the server
saw, whether a connection was refused (RST / ICMP port-unreachable) or timed out.
The tests, the benchmark and the demo run it with ``kubelab exec TARGET -- python -m
kubelab.netprobe ...`` semantics (see ``kubelab.labctl.LabControl.probe``).

  http HOST PORT PATH [--count N] [--timeout S]   one new connection per request
  tcp  HOST PORT [--timeout S]                    connect only
  udp  HOST PORT PAYLOAD [--count N] [--timeout S]
  rate HOST PORT [--count N] [--seconds S]        short connections back to back
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import struct
import sys
import time


def _error(exc: OSError | socket.timeout) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return 'timeout'
    return {errno.ECONNREFUSED: 'refused', errno.EHOSTUNREACH: 'unreachable',
            errno.ENETUNREACH: 'unreachable', errno.ECONNRESET: 'reset'}.get(
        exc.errno, errno.errorcode.get(exc.errno, str(exc)))


def http_get(host: str, port: int, path: str, timeout: float) -> dict:
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(f'GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n'
                      .encode())
            data = b''
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        return {'ok': False, 'error': _error(exc), 'ms': _ms(start)}
    head, _, body = data.partition(b'\r\n\r\n')
    status = int(head.split(b' ', 2)[1]) if head.startswith(b'HTTP/') else 0
    return {'ok': 200 <= status < 300, 'status': status, 'body': body.decode(errors='replace'),
            'ms': _ms(start)}


def tcp_connect(host: str, port: int, timeout: float) -> dict:
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return {'ok': True, 'ms': _ms(start)}
    except OSError as exc:
        return {'ok': False, 'error': _error(exc), 'ms': _ms(start)}


def udp_request(host: str, port: int, payload: str, timeout: float) -> dict:
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            s.send(payload.encode())
            reply = s.recv(65536)
        except OSError as exc:
            return {'ok': False, 'error': _error(exc), 'ms': _ms(start)}
    return {'ok': True, 'body': reply.decode(errors='replace'), 'ms': _ms(start)}


def connection_rate(host: str, port: int, count: int, seconds: float,
                    timeout: float, reset: bool = False) -> dict:
    """Open TCP connections back to back, one request each (the server answers and
    closes); count failures. With ``reset`` the client ends each connection with an RST
    once it has read the whole answer, so the server keeps no TIME_WAIT socket."""
    ok = failed = stalled = 0
    errors: dict[str, int] = {}
    start = time.monotonic()
    request = f'GET /hostname HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n'.encode()
    while ok + failed < count and time.monotonic() - start < seconds:
        began = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                # A connect that took ~1 s needed a SYN retransmit: its first SYN was lost.
                stalled += time.monotonic() - began > STALL_SECONDS
                s.sendall(request)
                while s.recv(4096):
                    pass
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            ok += 1
        except OSError as exc:
            failed += 1
            kind = _error(exc)
            errors[kind] = errors.get(kind, 0) + 1
    elapsed = time.monotonic() - start
    return {'ok': ok, 'failed': failed, 'stalled': stalled, 'errors': errors,
            'seconds': round(elapsed, 3),
            'per_second': round(ok / elapsed, 1) if elapsed else 0.0}


LINGER_RESET = struct.pack('ii', 1, 0)
STALL_SECONDS = 0.9


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='netprobe')
    p.add_argument('mode', choices=['http', 'tcp', 'udp', 'rate'])
    p.add_argument('host')
    p.add_argument('port', type=int)
    p.add_argument('extra', nargs='?', default='/')
    p.add_argument('--count', type=int, default=1)
    p.add_argument('--seconds', type=float, default=30)
    p.add_argument('--timeout', type=float, default=2)
    p.add_argument('--reset', action='store_true', help='rate: end connections with RST')
    a = p.parse_args(argv)
    if a.mode == 'rate':
        out = connection_rate(a.host, a.port, a.count, a.seconds, a.timeout, a.reset)
    elif a.mode == 'tcp':
        out = [tcp_connect(a.host, a.port, a.timeout) for _ in range(a.count)]
    elif a.mode == 'udp':
        out = [udp_request(a.host, a.port, a.extra, a.timeout) for _ in range(a.count)]
    else:
        out = [http_get(a.host, a.port, a.extra, a.timeout) for _ in range(a.count)]
    json.dump(out, sys.stdout)
    return 0


if __name__ == '__main__':
    sys.exit(main())
