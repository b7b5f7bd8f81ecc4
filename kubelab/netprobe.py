"""A traffic probe run inside a lab host's network namespace; prints JSON.

It tells apart what a user would: which pod answered, what client address the server
saw, whether a connection was refused (RST / ICMP port-unreachable) or timed out.
The tests, the benchmark and the demo run it with ``kubelab exec TARGET -- python -m
kubelab.netprobe ...`` semantics (see ``kubelab.labctl.LabControl.probe``).

  http HOST PORT PATH [--count N] [--timeout S] [--sport P]
                                                  one new connection per request (from
                                                  source port P, if given)
  tcp  HOST PORT [--timeout S]                    connect only
  udp  HOST PORT PAYLOAD [--count N] [--timeout S]
  rate HOST PORT [--count N] [--seconds S]        short connections back to back
  stream HOST PORT [--interval I] [--seconds S] [--until FILE]
                                                  a steady load: a new connection and
                                                  one request every I seconds, each
                                                  outcome with its time (epoch seconds)
  keepalive HOST PORT [--interval I] [--seconds S] [--until FILE]
                                                  one connection, a request every I s
  udpstream HOST PORT [--interval I] [--seconds S] [--until FILE] [--sport P]
                                                  datagrams from one source port
  matrix - 0 TARGETS_JSON [--timeout S]           many probes at once (NetworkPolicy
                                                  tests): [[host, port, "tcp"|"udp",
                                                  source port or 0], ...] -> one
                                                  result each: ok, or the error
  request HOST PORT PATH [--count N] [--method M] [--host-header H] [--header 'K: V']
          [--tls [--sni NAME] [--cacert FILE]]   HTTP(S) as a browser would send it (one
                                                  connection per request): status, body,
                                                  the Location header, the certificate's
                                                  subject
"""

from __future__ import annotations

import argparse
import errno
import json
import os
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


def _connect(host: str, port: int, timeout: float, sport: int = 0) -> socket.socket:
    """A TCP connection to (host, port), from source port ``sport`` if not 0. The
    client's previous connection from that port may hold it a moment more (LAST_ACK,
    until the server acknowledges its FIN): connect waits for it, up to ``timeout``."""
    if not sport:
        return socket.create_connection((host, port), timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('', sport))
            s.connect((host, port))
            return s
        except OSError as exc:
            s.close()
            if exc.errno != errno.EADDRNOTAVAIL or time.monotonic() > deadline:
                raise
        except BaseException:
            s.close()
            raise
        time.sleep(0.005)


def http_get(host: str, port: int, path: str, timeout: float, sport: int = 0) -> dict:
    start = time.monotonic()
    try:
        with _connect(host, port, timeout, sport) as s:
            sport = s.getsockname()[1]            # the client's own source port
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
            'sport': sport, 'ms': _ms(start)}


def request(host: str, port: int, path: str, timeout: float, method: str = 'GET',
            host_header: str | None = None, headers: list[str] = (), tls: bool = False,
            sni: str | None = None, cacert: str | None = None) -> dict:
    """One HTTP or HTTPS request on a new connection (HTTPS: verified against
    ``cacert`` for the name ``sni`` when given, else unverified)."""
    import http.client
    import ssl
    start = time.monotonic()
    try:
        if tls:
            ctx = ssl.create_default_context(cafile=cacert) if cacert else \
                ssl._create_unverified_context()
            if not cacert:
                ctx.check_hostname = False
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
            if sni:                        # connect to the address, name the host
                raw = socket.create_connection((host, port), timeout=timeout)
                conn.sock = ctx.wrap_socket(raw, server_hostname=sni)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.putrequest(method, path, skip_host=True)
        conn.putheader('Host', host_header or sni or host)
        for header in headers:
            name, _, value = header.partition(':')
            conn.putheader(name.strip(), value.strip())
        conn.putheader('Connection', 'close')
        conn.endheaders()
        subject = _subject(conn.sock) if tls else None
        reply = conn.getresponse()
        body = reply.read().decode(errors='replace')
        conn.close()
    except ssl.SSLError as exc:
        return {'ok': False, 'error': f'tls: {exc.reason or exc}', 'ms': _ms(start)}
    except OSError as exc:
        return {'ok': False, 'error': _error(exc), 'ms': _ms(start)}
    except http.client.HTTPException as exc:
        return {'ok': False, 'error': f'http: {exc!r}', 'ms': _ms(start)}
    return {'ok': 200 <= reply.status < 300, 'status': reply.status, 'body': body,
            'location': reply.getheader('Location'), 'subject': subject, 'ms': _ms(start)}


def _subject(sock) -> str | None:
    """The common name of the server's certificate (verified or not)."""
    import ssl
    import tempfile
    der = sock.getpeercert(binary_form=True)
    if not der:
        return None
    with tempfile.NamedTemporaryFile('w', suffix='.pem') as f:
        f.write(ssl.DER_cert_to_PEM_cert(der))
        f.flush()
        cert = ssl._ssl._test_decode_cert(f.name)     # the stdlib's own PEM decoder
    return dict(x[0] for x in cert.get('subject', ())).get('commonName')


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


def _steady(one, interval: float, seconds: float, until: str | None) -> dict:
    """Call ``one()`` every ``interval`` s until ``seconds`` pass or the file ``until``
    exists; record each outcome as [epoch time, 'ok' or the error, body]."""
    events = []
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < end and not (until and os.path.exists(until)):
        began = time.time()
        result = one()
        events.append([round(began, 3), 'ok' if result['ok'] else
                       result.get('error') or f'status {result.get("status")}',
                       result.get('body', '')])
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    failed = [e for e in events if e[1] != 'ok']
    return {'sent': len(events), 'failed': len(failed), 'events': events}


def keepalive(host: str, port: int, interval: float, seconds: float, until, timeout):
    """One HTTP/1.1 connection kept open, a request on it every ``interval`` s."""
    request = f'GET /hostname HTTP/1.1\r\nHost: {host}\r\n\r\n'.encode()
    sock = socket.create_connection((host, port), timeout=timeout)

    def one():
        try:
            sock.sendall(request)
            data = sock.recv(65536)
        except OSError as exc:
            return {'ok': False, 'error': _error(exc)}
        head, _, body = data.partition(b'\r\n\r\n')
        return {'ok': head.startswith(b'HTTP/1.1 200'), 'body': body.decode(errors='replace'),
                'error': 'closed' if not data else None}
    try:
        return _steady(one, interval, seconds, until)
    finally:
        sock.close()


def udp_stream(host: str, port: int, interval: float, seconds: float, until, timeout,
               sport: int = 0) -> dict:
    """Datagrams ('hostname', agnhost netexec's UDP command) from one source port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(('', sport))
        s.settimeout(timeout)

        def one():
            try:
                s.sendto(b'hostname', (host, port))
                reply, _ = s.recvfrom(65536)
            except OSError as exc:
                return {'ok': False, 'error': _error(exc)}
            return {'ok': True, 'body': reply.decode(errors='replace')}
        return _steady(one, interval, seconds, until)


def matrix(targets: list, timeout: float) -> list[dict]:
    """Probe every (host, port, proto, sport) target concurrently: a TCP connect or a
    UDP 'hostname' datagram from ``sport`` (0: any), each with its own ``timeout``."""
    from concurrent.futures import ThreadPoolExecutor

    def one(target):
        host, port, proto, sport = target
        if proto == 'tcp':
            return tcp_connect(host, port, timeout)
        start = time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            try:
                s.bind(('', sport))
                s.connect((host, port))
                s.send(b'hostname')
                reply = s.recv(2048)
            except OSError as exc:
                return {'ok': False, 'error': _error(exc), 'ms': _ms(start)}
        return {'ok': True, 'body': reply.decode(errors='replace'), 'ms': _ms(start)}
    with ThreadPoolExecutor(max_workers=max(1, min(64, len(targets)))) as pool:
        return list(pool.map(one, targets))


LINGER_RESET = struct.pack('ii', 1, 0)
STALL_SECONDS = 0.9


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='netprobe')
    p.add_argument('mode', choices=['http', 'tcp', 'udp', 'rate', 'stream', 'keepalive',
                                    'udpstream', 'request', 'matrix'])
    p.add_argument('host')
    p.add_argument('port', type=int)
    p.add_argument('extra', nargs='?', default='/')
    p.add_argument('--count', type=int, default=1)
    p.add_argument('--seconds', type=float, default=30)
    p.add_argument('--timeout', type=float, default=2)
    p.add_argument('--reset', action='store_true', help='rate: end connections with RST')
    p.add_argument('--interval', type=float, default=0.02)
    p.add_argument('--until', help='stream modes: stop once this file exists')
    p.add_argument('--sport', type=int, default=0,
                   help='http, udpstream: the source port (0: any)')
    p.add_argument('--method', default='GET', help='request: the HTTP method')
    p.add_argument('--host-header', help='request: the Host header (default: the host)')
    p.add_argument('--header', action='append', default=[], help="request: 'Name: value'")
    p.add_argument('--tls', action='store_true', help='request: HTTPS')
    p.add_argument('--sni', help='request: the TLS server name (and Host)')
    p.add_argument('--cacert', help='request: verify the server against this CA')
    a = p.parse_args(argv)
    if a.mode == 'matrix':
        out = matrix(json.loads(a.extra), a.timeout)
    elif a.mode == 'stream':
        out = _steady(lambda: http_get(a.host, a.port, a.extra, a.timeout), a.interval,
                      a.seconds, a.until)
    elif a.mode == 'keepalive':
        out = keepalive(a.host, a.port, a.interval, a.seconds, a.until, a.timeout)
    elif a.mode == 'udpstream':
        out = udp_stream(a.host, a.port, a.interval, a.seconds, a.until, a.timeout, a.sport)
    elif a.mode == 'rate':
        out = connection_rate(a.host, a.port, a.count, a.seconds, a.timeout, a.reset)
    elif a.mode == 'tcp':
        out = [tcp_connect(a.host, a.port, a.timeout) for _ in range(a.count)]
    elif a.mode == 'request':
        out = [request(a.host, a.port, a.extra, a.timeout, a.method, a.host_header,
                       a.header, a.tls, a.sni, a.cacert) for _ in range(a.count)]
    elif a.mode == 'udp':
        out = [udp_request(a.host, a.port, a.extra, a.timeout) for _ in range(a.count)]
    else:
        out = [http_get(a.host, a.port, a.extra, a.timeout, a.sport) for _ in range(a.count)]
    json.dump(out, sys.stdout)
    return 0


if __name__ == '__main__':
    sys.exit(main())
