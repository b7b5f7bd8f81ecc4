"""A stand-in for Kubernetes' e2e test image agnhost, run inside a pod.

Usage: ``python -m topo.images.agnhost SUBCOMMAND [flags]``, what the image
``registry.k8s.io/e2e-test-images/agnhost`` runs as ``/agnhost SUBCOMMAND``.
Flags follow Go's rules: ``-flag``/``--flag``, ``--flag=value`` or
``--flag value``; booleans only as ``--flag`` or ``--flag=false``. A bad flag
exits 2 with a message, like a Go program.

Subcommands, with the behaviour of the real image:

``netexec [--http-port=8080] [--udp-port=8081] [--delay-shutdown=0]``
    HTTP/1.1 server (keep-alive) with ``/`` (``NOW: <time>``), ``/hostname``
    (also ``/hostName``), ``/clientip`` (``IP:PORT`` of the TCP peer),
    ``/echo?msg=X[&code=N]``, ``/healthz`` (200 while the UDP server runs,
    else 412), ``/exit?code=N[&wait=D][&timeout=D]`` and ``/shutdown``.
    Unlike agnhost, whose ``/`` handler catches every path, other paths are
    404 here. A UDP server (``--udp-port=-1`` disables it) answers
    ``hostname``, ``echo TEXT`` and ``clientip``; like agnhost it trims and
    lower-cases a datagram first (so ``echo Hi`` answers ``hi``) and does not
    answer unknown commands. SIGTERM exits 0 after ``--delay-shutdown``
    seconds, serving all the while.
``serve-hostname [--port=9376] [--http=true] [--tcp] [--udp] [--close]``
    Serve the hostname over HTTP (any path), or over raw TCP (write it,
    close) and/or UDP (one reply per datagram) with ``--http=false``. After
    SIGTERM it keeps serving for 60 s ("Awaiting pod deletion"), as agnhost
    does, so the pod's grace period decides when it stops.
``porter``
    Serve, on every port an environment variable ``SERVE_PORT_<port>=<text>``
    names, ``<text>`` as the HTTP answer to any request (agnhost's porter; its TLS
    and SCTP variables, ``SERVE_TLS_PORT_*`` and ``SERVE_SCTP_PORT_*``, are refused
    with a message: not emulated). One pod so serves hundreds of endpoints, as the
    lab's test of a Service with more endpoints than a group message carries needs.
``pause``
    Block until SIGTERM or SIGINT, then exit 0 (agnhost's own ``pause`` exits
    2 and 1; kubelab follows ``registry.k8s.io/pause``, which also runs this).

The hostname is ``$HOSTNAME`` (the node agent sets it to the pod name), else
the system's. Logs go to stderr in Go's ``log`` format, one line at startup
and none per request: the servers must keep up with benchmarks of thousands
of short connections per second.
"""

import asyncio
import http
import os
import signal
import socket
import sys
import time
from urllib.parse import parse_qsl, unquote

from topo.images import announce_started
from topo.images.goflags import UsageError, go_duration, parse_flags, parse_go_int

BACKLOG = 4096
MAX_HEADER_BYTES = 64 * 1024
CLOSE = b'Connection: close\r\n'
KEEP_ALIVE = b'Connection: keep-alive\r\n'
UDP_BUFFER = 2048  # agnhost reads datagrams into a 2048-byte buffer
SERVE_HOSTNAME_LINGER = 60  # seconds serve-hostname serves after SIGTERM


# --- small helpers -----------------------------------------------------------

def hostname():
    """The pod's hostname: $HOSTNAME, else the system's."""
    return os.environ.get('HOSTNAME') or socket.gethostname()


def host_port(address):
    """``IP:PORT`` (``[IPv6]:PORT``) from a socket address, as Go prints it: an IPv4
    client of a dual-stack socket (``::ffff:a.b.c.d``) is plain IPv4."""
    host, port = address[0], address[1]
    if host.startswith('::ffff:') and '.' in host:
        host = host[len('::ffff:'):]
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


def log(message):
    """One line on stderr, prefixed like Go's log package."""
    stamp = time.strftime('%Y/%m/%d %H:%M:%S')
    sys.stderr.write(f'{stamp} {message}\n')
    sys.stderr.flush()


def fatal(message):
    """Go's log.Fatal: log and exit 1."""
    log(message)
    sys.exit(1)


def default_sigint():
    """Let SIGINT kill the process as it kills a Go program."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def _any_address(kind):
    """A socket on every address, IPv4 and IPv6 (``[::]``, not IPv6-only), as Go's
    ``:port`` listens; IPv4 only where the machine has no IPv6."""
    try:
        sock = socket.socket(socket.AF_INET6, kind)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        return sock, '::'
    except OSError:
        return socket.socket(socket.AF_INET, kind), '0.0.0.0'


def tcp_listener(port):
    """A listening TCP socket on every address, ``port`` (SO_REUSEADDR, big backlog)."""
    sock, anywhere = _any_address(socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((anywhere, port))
    except OSError as err:
        sock.close()
        fatal(f'listen tcp :{port}: bind: {err.strerror.lower()}')
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def udp_socket(port):
    """A UDP socket bound to every address, ``port``, with SO_REUSEADDR."""
    sock, anywhere = _any_address(socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((anywhere, port))
    except OSError as err:
        sock.close()
        fatal(f'listen udp :{port}: bind: {err.strerror.lower()}')
    sock.setblocking(False)
    return sock


class Exit:
    """The process's pending exit: set once, awaited by the subcommand."""

    def __init__(self, loop):
        self.loop = loop
        self.future = loop.create_future()

    def now(self, code):
        if not self.future.done():
            self.future.set_result(code)

    def later(self, seconds, code):
        self.loop.call_later(max(seconds, 0), self.now, code)


# --- a minimal, fast HTTP/1.1 server -----------------------------------------

class Reply:
    """What a handler answers; ``after`` runs once the reply is written."""

    __slots__ = ('status', 'body', 'close', 'after')

    def __init__(self, status=200, body=b'', close=False, after=None):
        self.status = status
        self.body = body
        self.close = close
        self.after = after


class Request:
    """One parsed request: method, path, raw query, peer, form body."""

    __slots__ = ('method', 'path', 'query', 'peer', 'body', 'form_body')

    def __init__(self, method, path, query, peer, body, form_body):
        self.method = method
        self.path = path
        self.query = query
        self.peer = peer
        self.body = body
        self.form_body = form_body

    def form_value(self, name):
        """Go's Request.FormValue: urlencoded body first, then the query."""
        sources = (self.body.decode('latin-1') if self.form_body else '',
                   self.query)
        for source in sources:
            for key, value in parse_qsl(source, keep_blank_values=True):
                if key == name:
                    return value
        return ''


def status_line(code):
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = f'status code {code}'
    return f'HTTP/1.1 {code} {phrase}\r\n'.encode()


_date_cache = [0, b'']


def http_date():
    """The Date header value, computed at most once a second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = time.strftime('%a, %d %b %Y %H:%M:%S GMT',
                                       time.gmtime(now)).encode()
    return _date_cache[1]


class HttpProtocol(asyncio.Protocol):
    """Parse requests off one connection and answer with ``handler(req)``."""

    def __init__(self, handler):
        self.handler = handler
        self.buffer = b''
        self.transport = None
        self.peer = ''

    def connection_made(self, transport):
        self.transport = transport
        self.peer = host_port(transport.get_extra_info('peername'))

    def data_received(self, data):
        buffer = self.buffer + data if self.buffer else data
        while buffer and not self.transport.is_closing():
            buffer = buffer.lstrip(b'\r\n')
            end = buffer.find(b'\r\n\r\n')
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    self.fail(431)
                break
            consumed = self.handle(buffer, end)
            if consumed is None:
                break  # body not complete yet
            buffer = buffer[consumed:]
        self.buffer = buffer

    def handle(self, buffer, end):
        """Answer the request at the start of ``buffer``; bytes consumed."""
        lines = buffer[:end].split(b'\r\n')
        request_line = lines[0].split(b' ')
        if len(request_line) != 3 or not request_line[2].startswith(b'HTTP/'):
            self.fail(400)
            return len(buffer)
        method, target, version = request_line
        length, connection, form_body = 0, b'', False
        for line in lines[1:]:
            name, _, value = line.partition(b':')
            name = name.strip().lower()
            if name == b'content-length':
                length = int(value) if value.strip().isdigit() else -1
                if length < 0:
                    self.fail(400)
                    return len(buffer)
            elif name == b'connection':
                connection = value.strip().lower()
            elif name == b'transfer-encoding':
                self.fail(501)
                return len(buffer)
            elif name == b'content-type':
                form_body = value.strip().lower().startswith(
                    b'application/x-www-form-urlencoded')
        total = end + 4 + length
        if len(buffer) < total:
            return None
        keep_alive = (connection != b'close' if version == b'HTTP/1.1'
                      else connection == b'keep-alive')
        path, _, query = target.decode('latin-1').partition('?')
        if not path.startswith('/'):  # absolute-form, as proxies send
            path = '/' + path.split('://', 1)[-1].partition('/')[2]
        if '%' in path:
            path = unquote(path)
        request = Request(method.decode('latin-1'), path, query, self.peer,
                          buffer[end + 4:total], form_body)
        reply = self.handler(request)
        if not keep_alive or reply.close:
            connection_header = CLOSE
        elif version != b'HTTP/1.1':  # an HTTP/1.0 client asked keep-alive
            connection_header = KEEP_ALIVE
        else:
            connection_header = b''
        self.send(reply, connection_header, method == b'HEAD')
        if reply.after is not None:
            reply.after()
        return total

    def send(self, reply, connection_header, head_only=False):
        """Write ``reply``; close after it if the header says close."""
        body = reply.body
        parts = [status_line(reply.status),
                 b'Content-Type: text/plain; charset=utf-8\r\nDate: ',
                 http_date(),
                 b'\r\nContent-Length: ', str(len(body)).encode(), b'\r\n']
        parts.append(connection_header)
        parts.append(b'\r\n')
        if not head_only:
            parts.append(body)
        self.transport.write(b''.join(parts))
        if connection_header is CLOSE:
            self.transport.close()

    def fail(self, status):
        text = f'{status} {http.HTTPStatus(status).phrase}'.encode()
        self.send(Reply(status, text), CLOSE)


class UdpProtocol(asyncio.DatagramProtocol):
    """Answer each datagram with ``answer(data, addr)`` unless it is None."""

    def __init__(self, answer):
        self.answer = answer
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = self.answer(data[:UDP_BUFFER], addr)
        if reply is not None:
            self.transport.sendto(reply, addr)


class WriteAndClose(asyncio.Protocol):
    """serve-hostname --tcp: write the hostname and close."""

    def __init__(self, payload):
        self.payload = payload

    def connection_made(self, transport):
        transport.write(self.payload)
        transport.close()


# --- netexec ----------------------------------------------------------------

def go_now(started):
    """time.Now() as Go's %v prints it, monotonic reading included."""
    ns = time.time_ns()
    seconds, fraction = divmod(ns, 10**9)
    local = time.localtime(seconds)
    digits = f'.{fraction:09d}'.rstrip('0') if fraction else ''
    return (time.strftime('%Y-%m-%d %H:%M:%S', local) + digits
            + time.strftime(' %z %Z', local)
            + f' m=+{time.monotonic() - started:.9f}')


class Netexec:
    """The HTTP routes and UDP commands of ``agnhost netexec``."""

    def __init__(self, exit_, udp_enabled):
        self.exit = exit_
        self.udp_ready = udp_enabled
        self.name = hostname().encode()
        self.started = time.monotonic()
        self.routes = {
            '/': self.root, '/hostname': self.hostname,
            '/hostName': self.hostname, '/clientip': self.clientip,
            '/echo': self.echo, '/healthz': self.healthz,
            '/exit': self.exit_route, '/shutdown': self.shutdown,
        }

    def http(self, request):
        route = self.routes.get(request.path)
        if route is None:
            return Reply(404, b'404 page not found\n')
        return route(request)

    def root(self, request):
        return Reply(body=f'NOW: {go_now(self.started)}'.encode())

    def hostname(self, request):
        return Reply(body=self.name)

    def clientip(self, request):
        return Reply(body=request.peer.encode())

    def echo(self, request):
        msg, code = request.form_value('msg'), request.form_value('code')
        if not code:
            return Reply(body=msg.encode())
        try:
            status = int(code)
        except ValueError:
            return Reply(body=f'argument \'code\' must be an integer or '
                              f'empty, got "{code}"\n'.encode())
        return Reply(status, msg.encode())

    def healthz(self, request):
        return Reply(200 if self.udp_ready else 412)

    def exit_route(self, request):
        """Exit with ``code`` after ``wait``; ``timeout`` is only checked."""
        durations = {}
        for name in ('timeout', 'wait'):
            text = request.form_value(name)
            try:
                durations[name] = go_duration(text) if text else 0.0
            except ValueError:
                return Reply(body=f'argument \'{name}\' must be a valid '
                                  f'golang duration or empty, got "{text}"\n'
                                  .encode())
        text = request.form_value('code')
        try:
            code = int(text) if text else 0
        except ValueError:
            return Reply(body=f'argument \'code\' must be an integer [0-127]'
                              f' or empty, got "{text}"\n'.encode())
        wait = durations['wait']
        log(f'Will begin shutdown in {wait}s, then will exit with {code}')
        return Reply(close=True, after=lambda: self.exit.later(wait, code))

    def shutdown(self, request):
        return Reply(close=True, after=lambda: self.exit.now(0))

    def udp(self, data, addr):
        text = data.decode('utf-8', 'surrogateescape').strip().lower()
        if text == 'hostname':
            return self.name
        if text.startswith('echo '):
            return text[5:].encode('utf-8', 'surrogateescape')
        if text == 'clientip':
            return host_port(addr).encode()
        return None


async def netexec(flags):
    loop = asyncio.get_running_loop()
    exit_ = Exit(loop)
    if flags['sctp-port'] != -1:
        fatal('SCTP is not emulated by kubelab; leave --sctp-port at -1')
    app = Netexec(exit_, flags['udp-port'] > 0)

    def on_sigterm():
        delay = flags['delay-shutdown']
        if delay > 0:
            log(f'Sleeping {delay} seconds before terminating...')
        exit_.later(delay, 0)

    # Before the port opens: a SIGTERM that comes as soon as it answers is handled.
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    udp = None
    if flags['udp-port'] > 0:
        sock = udp_socket(flags['udp-port'])
        udp, _ = await loop.create_datagram_endpoint(
            lambda: UdpProtocol(app.udp), sock=sock)
        log(f'Started UDP server on port {flags["udp-port"]}')
    server = await loop.create_server(
        lambda: HttpProtocol(app.http), sock=tcp_listener(flags['http-port']),
        backlog=BACKLOG)
    log(f'Started HTTP server on port {flags["http-port"]}')
    announce_started()

    code = await exit_.future
    server.close()
    if udp is not None:
        udp.close()
    return code


# --- serve-hostname ----------------------------------------------------------

async def serve_hostname(flags):
    if flags['http'] and (flags['tcp'] or flags['udp']):
        fatal("Can't server TCP/UDP mode and HTTP mode at the same time "
              '(add --http=false to --tcp or --udp)')
    loop = asyncio.get_running_loop()
    exit_ = Exit(loop)
    name = hostname().encode()
    port = flags['port']
    if flags['tcp']:
        await loop.create_server(lambda: WriteAndClose(name),
                                 sock=tcp_listener(port), backlog=BACKLOG)
    if flags['udp']:
        await loop.create_datagram_endpoint(
            lambda: UdpProtocol(lambda data, addr: name),
            sock=udp_socket(port))
    if flags['http']:
        reply = Reply(body=name, close=flags['close'])
        await loop.create_server(lambda: HttpProtocol(lambda request: reply),
                                 sock=tcp_listener(port), backlog=BACKLOG)
    log(f'Serving on port {port}.')
    announce_started()

    def on_sigterm():
        log('Shutting down after receiving signal: terminated.')
        log('Awaiting pod deletion.')
        exit_.later(SERVE_HOSTNAME_LINGER, 0)

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    return await exit_.future


# --- porter ------------------------------------------------------------------

async def porter(flags):
    loop = asyncio.get_running_loop()
    exit_ = Exit(loop)
    served = 0
    for name, text in sorted(os.environ.items()):
        if name.startswith(('SERVE_TLS_PORT_', 'SERVE_SCTP_PORT_')):
            fatal(f'{name}: TLS and SCTP ports of porter are not emulated by kubelab')
        if not name.startswith('SERVE_PORT_'):
            continue
        try:
            port = parse_go_int(name[len('SERVE_PORT_'):])
        except ValueError:
            fatal(f'{name}: not a port number')
        reply = Reply(body=text.encode())
        await loop.create_server(lambda reply=reply: HttpProtocol(lambda request: reply),
                                 sock=tcp_listener(port), backlog=128)
        log(f'Serving on port {port}.')
        served += 1
    if not served:
        fatal('porter: no SERVE_PORT_<port> environment variable: nothing to serve')
    announce_started()
    loop.add_signal_handler(signal.SIGTERM, lambda: exit_.now(0))
    return await exit_.future


# --- pause -------------------------------------------------------------------

def pause(flags):
    """Block until SIGTERM or SIGINT; exit 0."""
    wanted = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    print('Paused', flush=True)
    announce_started()
    got = signal.sigwait(wanted)
    print(f'Shutting down, got signal: {signal.Signals(got).name}', flush=True)
    return 0


# --- entry point -------------------------------------------------------------

SUBCOMMANDS = {
    'netexec': ({'http-port': 8080, 'udp-port': 8081, 'sctp-port': -1,
                 'delay-shutdown': 0}, netexec),
    'serve-hostname': ({'port': 9376, 'tcp': False, 'udp': False,
                        'http': True, 'close': False}, serve_hostname),
    'porter': ({}, porter),
    'pause': ({}, pause),
}


def usage(subcommand=None):
    if subcommand is None:
        return ('Usage: agnhost SUBCOMMAND [flags]\n'
                f'Subcommands emulated by kubelab: {", ".join(SUBCOMMANDS)}')
    defaults = SUBCOMMANDS[subcommand][0]
    flags = ' '.join(f'[--{name}={str(value).lower()}]'
                     for name, value in defaults.items())
    return f'Usage: agnhost {subcommand} {flags}'.rstrip()


def main(argv=None):
    """Run a subcommand; returns the process's exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(usage())
        return 0
    if argv[0] not in SUBCOMMANDS:
        print(f'Error: unknown command "{argv[0]}" for "agnhost"\n{usage()}',
              file=sys.stderr)
        return 2
    defaults, run = SUBCOMMANDS[argv[0]]
    try:
        flags = parse_flags(argv[1:], defaults)
    except UsageError as err:
        if not str(err):
            print(usage(argv[0]))
            return 0
        print(f'{err}\n{usage(argv[0])}', file=sys.stderr)
        return 2
    if run is pause:
        return pause(flags)
    default_sigint()
    return asyncio.run(run(flags))


if __name__ == '__main__':
    sys.exit(main())
