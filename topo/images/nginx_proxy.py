"""The lab's nginx images: ingress-nginx's controller and a Gateway's data plane.

Run in a pod as ``python -m topo.images.nginx_proxy /nginx-ingress-controller
--controller-class=k8s.io/ingress-nginx [other ingress-nginx flags]`` or ``...
/nginx-gateway --gateway=NAMESPACE/NAME``. The configuration is rendered by the lab (the
control-plane half of the controller, ``services.l7.controller``) into
``$KUBELAB_L7_DIR/ingress/<controller class>/`` or ``$KUBELAB_L7_DIR/gateway/<ns>/<name>/``;
this program is the pod's half: it runs a real nginx (Debian's) on that
``nginx.conf`` in the pod's network namespace, and when the file changes it checks the
new one with ``nginx -t`` and reloads (SIGHUP: new workers, open connections finish on
the old ones), as ingress-nginx does. A configuration that fails the check is logged
and not loaded; the running one stays.

SIGTERM: nginx's graceful shutdown (SIGQUIT), then exit. Each pod keeps its pid file
and temporary files under ``pods/<pod name>/`` of the configuration directory.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time

from topo.images import announce_started

NGINX = '/usr/sbin/nginx'
POLL_SECONDS = 0.2


def log(message: str) -> None:
    print(time.strftime('%Y-%m-%dT%H:%M:%S') + ' ' + message, flush=True)


def config_dir(argv: list[str], l7_dir: str) -> str:
    """The directory of this proxy's nginx.conf, from its entrypoint and flags."""
    binary, flags = argv[0], dict(a[2:].split('=', 1) for a in argv[1:]
                                  if a.startswith('--') and '=' in a)
    if binary == '/nginx-gateway':
        if '/' not in flags.get('gateway', ''):
            raise SystemExit('nginx-gateway: --gateway=NAMESPACE/NAME is required')
        return os.path.join(l7_dir, 'gateway', *flags['gateway'].split('/', 1))
    controller = flags.get('controller-class', 'k8s.io/ingress-nginx')
    return os.path.join(l7_dir, 'ingress', controller.replace('/', '_'))


def digest(path: str) -> str | None:
    try:
        with open(path, 'rb') as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


class Proxy:
    def __init__(self, conf_dir: str, pod: str):
        self.conf = os.path.join(conf_dir, 'nginx.conf')
        self.prefix = os.path.join(conf_dir, 'pods', pod) + '/'
        os.makedirs(self.prefix, exist_ok=True)
        self.pidfile = os.path.join(self.prefix, 'nginx.pid')
        self.proc = None
        self.loaded = None
        self.stopping = False

    def argv(self, *extra: str) -> list[str]:
        return [NGINX, '-p', self.prefix, '-c', self.conf, '-e', 'stderr',
                '-g', f'daemon off; pid {self.pidfile};', *extra]

    def check(self) -> bool:
        test = subprocess.run(self.argv('-t', '-q'), capture_output=True, text=True)
        if test.returncode:
            log(f'the new configuration was not loaded: {test.stderr.strip()}')
        return test.returncode == 0

    def workers(self) -> set[int]:
        try:
            with open(f'/proc/{self.proc.pid}/task/{self.proc.pid}/children') as f:
                return {int(pid) for pid in f.read().split()}
        except OSError:
            return set()

    @staticmethod
    def accepting(pid: int) -> bool:
        """An old worker still takes new connections until it starts its graceful
        shutdown (its title changes just before it closes the listening sockets)."""
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                return b'shutting down' not in f.read()
        except OSError:
            return False                       # exited

    def announce(self, version: str, old_workers: set[int]) -> None:
        """Once nginx runs new workers and the old ones no longer accept (the
        configuration is in force for every new connection), say which version it runs
        in ``loaded``: the lab waits for it (``kubelab wait``)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None and (
                not (self.workers() - old_workers)
                or any(self.accepting(pid) for pid in old_workers)):
            time.sleep(0.005)
        time.sleep(0.01)               # the listening sockets' close, after the title
        tmp = os.path.join(self.prefix, 'loaded.tmp')
        with open(tmp, 'w') as f:
            f.write(version)
        os.replace(tmp, os.path.join(self.prefix, 'loaded'))
        self.loaded = version

    def start(self, version: str) -> None:
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL)
        self.announce(version, set())
        log(f'nginx started (pid {self.proc.pid}) with configuration {version[:12]}')

    def reload(self, version: str) -> None:
        old = self.workers()
        self.proc.send_signal(signal.SIGHUP)
        self.announce(version, old)
        log(f'nginx reloaded with configuration {version[:12]}')

    def stop(self, *_):
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)     # graceful: finish open requests

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        announce_started()        # the controller runs; nginx starts with a configuration
        waited = False
        while not self.stopping:
            version = digest(self.conf)
            if version is None:
                if not waited:
                    log(f'waiting for {self.conf}')
                    waited = True
            elif self.proc is None:
                if self.check():
                    self.start(version)
                else:
                    self.loaded = version       # wait for the next version
            elif version != self.loaded:
                if self.check():
                    self.reload(version)
                else:
                    self.loaded = version
            if self.proc is not None and self.proc.poll() is not None:
                log(f'nginx exited with {self.proc.returncode}')
                return self.proc.returncode or 1
            time.sleep(POLL_SECONDS)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit('usage: nginx_proxy /nginx-ingress-controller|/nginx-gateway FLAGS')
    l7_dir = os.environ.get('KUBELAB_L7_DIR', '/run/kubelab/l7')
    pod = os.environ.get('HOSTNAME', 'pod')
    return Proxy(config_dir(argv, l7_dir), pod).run()


if __name__ == '__main__':
    sys.exit(main())
