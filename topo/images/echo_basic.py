"""The Gateway API conformance suite's echo server (``echo-basic``), emulated.

Every request, whatever its path, is answered 200 with a JSON description of what
arrived and who answered, the fields the conformance tests read: ``path`` (the request
URI, query included), ``host``, ``method``, ``proto``, ``headers`` (name -> list of
values, names canonicalised as Go does), ``namespace``, ``ingress``, ``service``,
``pod`` (from the environment variables NAMESPACE, INGRESS_NAME, SERVICE_NAME,
POD_NAME, which its manifests set with the downward API). It listens on ``HTTP_PORT``
(default 3000), IPv4 and IPv6 as a Go server's ``:port`` does (a pod's /etc/hosts
names ``::1 localhost`` too). The answer also carries ``X-Content-Type-Options:
nosniff`` as the original does.
"""

import json
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from topo.images import announce_started

DEFAULT_PORT = 3000


def canonical(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey: ``x-forwarded-for`` -> ``X-Forwarded-For``."""
    return '-'.join(part[:1].upper() + part[1:].lower() for part in name.split('-'))


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'echo-basic'

    def answer(self):
        length = int(self.headers.get('Content-Length') or 0)
        if length:
            self.rfile.read(length)
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(canonical(name), []).append(value)
        body = json.dumps({
            'path': self.path, 'host': self.headers.get('Host', ''),
            'method': self.command, 'proto': self.request_version,
            'headers': headers,
            'namespace': os.environ.get('NAMESPACE', ''),
            'ingress': os.environ.get('INGRESS_NAME', ''),
            'service': os.environ.get('SERVICE_NAME', ''),
            'pod': os.environ.get('POD_NAME', ''),
        }, indent=1).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = answer

    def log_message(self, fmt, *args):
        client = self.client_address[0]
        if client.startswith('::ffff:') and '.' in client:
            client = client[len('::ffff:'):]          # an IPv4 client, as Go prints it
        print(f'{client} {fmt % args}', flush=True)


class DualStackServer(ThreadingHTTPServer):
    """Every address, IPv4 and IPv6; IPv4 only where the machine has no IPv6."""
    address_family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main(argv=None) -> int:
    port = int(os.environ.get('HTTP_PORT') or DEFAULT_PORT)
    anywhere = '::' if DualStackServer.address_family == socket.AF_INET6 else '0.0.0.0'
    server = DualStackServer((anywhere, port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f'Starting server, listening on port {port} (HTTP)', flush=True)
    announce_started()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
