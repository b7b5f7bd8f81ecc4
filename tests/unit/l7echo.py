"""Echo backends for the nginx tests, in a process of their own.

``python l7echo.py NAME...`` serves one threaded HTTP server per NAME on 127.0.0.1
(any free port), prints ``{"NAME": port, ...}`` on one line, and serves until its
standard input closes. Each server answers every request with JSON: its NAME, the
method, the path (with query) and the Host, X-Forwarded-For, X-Real-IP and
X-Forwarded-Proto it received.

A separate process because the unit suite's process may be monkey-patched by
eventlet (Ryu's hub, imported by the pipeline tests), where threaded servers stall.
Standard library only; run by path, not imported.
"""

import http.server
import json
import sys
import threading


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'

    def answer(self):
        length = int(self.headers.get('Content-Length') or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({
            'backend': self.server.name, 'method': self.command, 'path': self.path,
            'host': self.headers.get('Host'),
            'xff': self.headers.get('X-Forwarded-For'),
            'xri': self.headers.get('X-Real-IP'),
            'xfp': self.headers.get('X-Forwarded-Proto')}).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = answer

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main(names):
    ports = {}
    for name in names:
        server = Server(('127.0.0.1', 0), Echo)
        server.name = name
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ports[name] = server.server_address[1]
    print(json.dumps(ports), flush=True)
    sys.stdin.read()


if __name__ == '__main__':
    main(sys.argv[1:])
