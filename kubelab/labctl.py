"""Drive a running lab from Python: what the tests, the demo and the benchmark share.

``LabControl`` runs the real ``kubelab`` command for everything a user would type, and
runs ``kubelab.netprobe`` inside a pod's, node's or external host's network namespace to
send traffic and read back what happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid

from kubelab.client import Client, exec_target


class CommandError(Exception):
    def __init__(self, argv, proc):
        super().__init__(f'`{" ".join(argv)}` exited {proc.returncode}:\n'
                         f'{proc.stdout}{proc.stderr}')
        self.proc = proc


class LabControl:
    def __init__(self):
        self.python = sys.executable
        self._client = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client()
        return self._client

    # ------------------------------------------------------------ the CLI
    def kubelab(self, *args: str, check: bool = True, timeout: float = 240,
                input_text: str | None = None) -> subprocess.CompletedProcess:
        argv = [self.python, '-m', 'kubelab.cli', *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              input=input_text, cwd='/',
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                  p for p in sys.path if p)))
        if check and proc.returncode != 0:
            raise CommandError(['kubelab', *args], proc)
        return proc

    def up(self, *files: str, cloud: str | None = None):
        args = ['up', '--detach'] + (['--cloud', cloud] if cloud else [])
        for f in files:
            args += ['-f', f]
        self._client = None
        return self.kubelab(*args)

    def down(self):
        self._client = None
        return self.kubelab('down')

    def apply(self, text: str, wait: bool = True, check: bool = True):
        with tempfile.NamedTemporaryFile('w', suffix='.yaml', delete=False) as f:
            f.write(text)
        try:
            args = ['apply', '-f', f.name] + (['--wait'] if wait else [])
            return self.kubelab(*args, check=check)
        finally:
            os.unlink(f.name)

    def delete(self, text: str, wait: bool = True):
        with tempfile.NamedTemporaryFile('w', suffix='.yaml', delete=False) as f:
            f.write(text)
        try:
            return self.kubelab('delete', '-f', f.name, *(['--wait'] if wait else []),
                                check=False)
        finally:
            os.unlink(f.name)

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubelab('get', *args, '-o', 'json').stdout)

    # ------------------------------------------------------------ objects
    def pods(self, selector: dict | None = None, namespace: str = 'default') -> list[dict]:
        items = self.client.list('Pod', namespace)
        if selector:
            items = [p for p in items if all(p['metadata'].get('labels', {}).get(k) == v
                                              for k, v in selector.items())]
        return [p for p in items if not p['metadata'].get('deletionTimestamp')]

    def cluster_ip(self, service: str, namespace: str = 'default') -> str:
        return self.client.get('Service', namespace, service)['spec']['clusterIP']

    def pod_ip(self, pod: str, namespace: str = 'default') -> str:
        return self.client.get('Pod', namespace, pod).get('status', {}).get('podIP')

    # ------------------------------------------------------------ traffic
    def netns_pid(self, target: str, namespace: str = 'default') -> int:
        return exec_target(self.client, target, namespace, None)[0]

    def paws_refusals(self, target: str, namespace: str = 'default') -> int:
        """The SYNs ``target``'s network namespace refused at a TIME_WAIT socket by PAWS
        (TcpExt PAWSTimewait): a connection from an address and port it still held in
        TIME_WAIT, with timestamps that went backwards. The client's RST clears that
        socket and its retried SYN gets through, milliseconds later."""
        pid = self.netns_pid(target, namespace)
        with open(f'/proc/{pid}/net/netstat', encoding='ascii') as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            if names.startswith('TcpExt:'):
                return int(dict(zip(names.split(), values.split()))['PAWSTimewait'])
        return 0

    def run_in(self, target: str, argv: list[str], timeout: float = 120,
               namespace: str = 'default') -> subprocess.CompletedProcess:
        pid = self.netns_pid(target, namespace)
        return subprocess.run(['nsenter', f'--net=/proc/{pid}/ns/net', '--', *argv],
                              capture_output=True, text=True, timeout=timeout)

    def probe(self, target: str, mode: str, host: str, port: int, extra: str | None = None,
              count: int = 1, timeout: float = 2, seconds: float = 30,
              namespace: str = 'default', reset: bool = False, sport: int = 0):
        argv = [self.python, '-m', 'kubelab.netprobe', mode, host, str(port)]
        if extra is not None:
            argv.append(extra)
        argv += ['--count', str(count), '--timeout', str(timeout), '--seconds', str(seconds)]
        if reset:
            argv.append('--reset')
        if sport:
            argv += ['--sport', str(sport)]
        env_path = os.pathsep.join(p for p in sys.path if p)
        proc = self.run_in(target, ['env', f'PYTHONPATH={env_path}', *argv],
                           timeout=(seconds if mode == 'rate' else count * timeout) + 30,
                           namespace=namespace)
        if proc.returncode != 0:
            raise RuntimeError(f'netprobe in {target} failed: {proc.stderr}')
        return json.loads(proc.stdout)

    def matrix(self, jobs: list, timeout: float = 1.0) -> list[list[dict]]:
        """Many probes from many hosts at once: ``jobs`` is [(target, namespace,
        [(host, port, 'tcp'|'udp', source port or 0), ...])]; one netprobe per target,
        all running together, each probing its targets concurrently. The results in
        the same order (netprobe's ``matrix`` mode)."""
        env_path = os.pathsep.join(p for p in sys.path if p)
        procs = []
        for target, namespace, targets in jobs:
            pid = self.netns_pid(target, namespace)
            procs.append(subprocess.Popen(
                ['nsenter', f'--net=/proc/{pid}/ns/net', '--', 'env',
                 f'PYTHONPATH={env_path}', self.python, '-m', 'kubelab.netprobe', 'matrix',
                 '-', '0', json.dumps([list(t) for t in targets]),
                 '--timeout', str(timeout)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        out = []
        for (target, _, _), proc in zip(jobs, procs):
            stdout, stderr = proc.communicate(timeout=timeout * 4 + 60)
            if proc.returncode != 0:
                raise RuntimeError(f'netprobe matrix in {target} failed: {stderr}')
            out.append(json.loads(stdout))
        return out

    def background(self, target: str, mode: str, host: str, port: int, *, path: str = '/',
                   interval: float = 0.02, timeout: float = 1, seconds: float = 300,
                   sport: int | None = None, namespace: str = 'default') -> 'Background':
        """Start a steady netprobe (stream, keepalive, udpstream) in ``target``; its
        ``stop()`` ends it and returns what it measured."""
        until = os.path.join(tempfile.gettempdir(), f'kubelab-stop-{uuid.uuid4().hex}')
        argv = [self.python, '-m', 'kubelab.netprobe', mode, host, str(port), path,
                '--interval', str(interval), '--timeout', str(timeout),
                '--seconds', str(seconds), '--until', until]
        if sport is not None:
            argv += ['--sport', str(sport)]
        pid = self.netns_pid(target, namespace)
        env_path = os.pathsep.join(p for p in sys.path if p)
        proc = subprocess.Popen(['nsenter', f'--net=/proc/{pid}/ns/net', '--', 'env',
                                 f'PYTHONPATH={env_path}', *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return Background(proc, until)

    def http(self, target: str, host: str, port: int, path: str, count: int = 1,
             timeout: float = 2, sport: int = 0) -> list[dict]:
        return self.probe(target, 'http', host, port, path, count=count, timeout=timeout,
                          sport=sport)

    def request(self, target: str, host: str, port: int, path: str = '/', *,
                count: int = 1, host_header: str | None = None, method: str = 'GET',
                headers: dict | None = None, tls: bool = False, sni: str | None = None,
                cacert: str | None = None, timeout: float = 3,
                namespace: str = 'default') -> list[dict]:
        """HTTP(S) requests from ``target`` (netprobe's ``request`` mode), each on a new
        connection: their status, body, Location and (HTTPS) certificate subject."""
        extra = ['--method', method]
        if host_header:
            extra += ['--host-header', host_header]
        for name, value in (headers or {}).items():
            extra += ['--header', f'{name}: {value}']
        if tls:
            extra.append('--tls')
        if sni:
            extra += ['--sni', sni]
        if cacert:
            extra += ['--cacert', cacert]
        argv = [self.python, '-m', 'kubelab.netprobe', 'request', host, str(port), path,
                '--count', str(count), '--timeout', str(timeout), *extra]
        env_path = os.pathsep.join(p for p in sys.path if p)
        proc = self.run_in(target, ['env', f'PYTHONPATH={env_path}', *argv],
                           timeout=count * timeout + 30, namespace=namespace)
        if proc.returncode != 0:
            raise RuntimeError(f'netprobe request in {target} failed: {proc.stderr}')
        return json.loads(proc.stdout)


class Background:
    """A netprobe running in a lab host until ``stop()``."""

    def __init__(self, proc: subprocess.Popen, until: str):
        self.proc, self.until = proc, until

    def stop(self, timeout: float = 30) -> dict:
        open(self.until, 'w').close()
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            os.unlink(self.until)
        if self.proc.returncode != 0:
            raise RuntimeError(f'netprobe failed: {err}')
        return json.loads(out)
