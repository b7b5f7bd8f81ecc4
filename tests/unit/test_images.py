"""The emulated images: agnhost over real loopback sockets, and runtime.

Each server runs as ``python -m topo.images.agnhost`` in a subprocess, as
the node agent runs it in a pod, and is only ever spoken to on 127.0.0.1.
Every subprocess is killed by the ``run`` fixture, whatever the test did.
"""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from topo.images import goflags
from topo.images.runtime import container_argv, container_env

REPO = Path(__file__).resolve().parents[2]
PY = '/usr/bin/python-for-pods'
AGNHOST = [PY, '-m', 'topo.images.agnhost']
AGNHOST_IMAGE = 'registry.k8s.io/e2e-test-images/agnhost:2.52'


def free_port():
    """A port that is free for both TCP and UDP on this machine."""
    while True:
        with socket.socket() as tcp, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(('127.0.0.1', 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(('127.0.0.1', port))
            except OSError:
                continue
            return port


def wait_for_tcp(port, proc, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f'exited {proc.returncode}: '
                                 f'{proc.stderr.read().decode()}')
        try:
            socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f'nothing listens on 127.0.0.1:{port}')


@pytest.fixture
def run():
    """Start agnhost subcommands; all of them are killed at teardown."""
    procs = []

    def start(*args, hostname='pod-x', wait_port=None):
        env = dict(os.environ, PYTHONPATH=str(REPO), HOSTNAME=hostname)
        proc = subprocess.Popen(
            [sys.executable, '-m', 'topo.images.agnhost', *args], cwd=REPO,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        if wait_port is not None:
            wait_for_tcp(wait_port, proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()


@pytest.fixture
def netexec(run):
    """A netexec server: (http_port, udp_port, process)."""
    http_port, udp_port = free_port(), free_port()
    proc = run('netexec', f'--http-port={http_port}', '--udp-port',
               str(udp_port), wait_port=http_port)
    return http_port, udp_port, proc


def get(port, path):
    """(status, body, client port) of one GET on a fresh connection."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=3)
    try:
        conn.connect()
        client_port = conn.sock.getsockname()[1]
        conn.request('GET', path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), client_port
    finally:
        conn.close()


def udp_ask(port, text, timeout=2.0):
    """Send one datagram; (reply or None, our source port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind(('127.0.0.1', 0))
        sock.sendto(text.encode(), ('127.0.0.1', port))
        try:
            return sock.recv(4096).decode(), sock.getsockname()[1]
        except socket.timeout:
            return None, sock.getsockname()[1]


def wait_exit(proc, timeout=3.0):
    return proc.wait(timeout=timeout)


# --- netexec over HTTP -------------------------------------------------------

def test_hostname_is_the_pod_name(netexec):
    assert get(netexec[0], '/hostname')[:2] == (200, 'pod-x')
    assert get(netexec[0], '/hostName')[:2] == (200, 'pod-x')


def test_clientip_is_the_tcp_peer_with_its_port(netexec):
    status, body, client_port = get(netexec[0], '/clientip')
    assert (status, body) == (200, f'127.0.0.1:{client_port}')


def test_echo_returns_msg_and_optional_status(netexec):
    assert get(netexec[0], '/echo?msg=hi%20there')[:2] == (200, 'hi there')
    assert get(netexec[0], '/echo?msg=busy&code=503')[:2] == (503, 'busy')


def test_root_healthz_and_unknown_path(netexec):
    status, body, _ = get(netexec[0], '/')
    assert status == 200 and body.startswith('NOW: ')
    assert get(netexec[0], '/healthz')[0] == 200
    assert get(netexec[0], '/nope')[:2] == (404, '404 page not found\n')


def test_keep_alive_serves_several_requests_on_one_connection(netexec):
    conn = http.client.HTTPConnection('127.0.0.1', netexec[0], timeout=3)
    try:
        for msg in ('one', 'two', 'three'):
            conn.request('GET', f'/echo?msg={msg}')
            resp = conn.getresponse()
            assert resp.getheader('Content-Length') == str(len(msg))
            assert resp.read().decode() == msg
    finally:
        conn.close()


def test_pipelined_http10_keep_alive_and_close(netexec):
    with socket.create_connection(('127.0.0.1', netexec[0]), timeout=3) as s:
        s.sendall(b'GET /echo?msg=a HTTP/1.0\r\nConnection: keep-alive\r\n'
                  b'\r\nGET /echo?msg=b HTTP/1.0\r\n\r\n')
        data = b''
        while chunk := s.recv(4096):
            data += chunk
    first, second = data.split(b'HTTP/1.1 ')[1:]
    assert b'Connection: keep-alive' in first and first.endswith(b'\r\n\r\na')
    assert b'Connection: close' in second and second.endswith(b'\r\n\r\nb')


def test_post_form_is_read_like_go_form_value(netexec):
    conn = http.client.HTTPConnection('127.0.0.1', netexec[0], timeout=3)
    try:
        conn.request('POST', '/echo?msg=query', body='msg=body',
                     headers={'Content-Type':
                              'application/x-www-form-urlencoded'})
        assert conn.getresponse().read() == b'body'
    finally:
        conn.close()


# --- netexec over UDP --------------------------------------------------------

def test_udp_commands(netexec):
    udp_port = netexec[1]
    assert udp_ask(udp_port, 'hostname')[0] == 'pod-x'
    assert udp_ask(udp_port, 'echo hello\n')[0] == 'hello'
    reply, source_port = udp_ask(udp_port, 'clientip')
    assert reply == f'127.0.0.1:{source_port}'


def test_udp_is_lower_cased_and_unknown_commands_get_no_reply(netexec):
    assert udp_ask(netexec[1], 'ECHO Mixed Case')[0] == 'mixed case'
    assert udp_ask(netexec[1], 'what', timeout=0.3)[0] is None


# --- netexec lifecycle -------------------------------------------------------

def test_sigterm_exits_zero_quickly(netexec):
    proc = netexec[2]
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc) == 0
    assert time.monotonic() - started < 2
    assert b'Started HTTP server on port' in proc.stderr.read()


def test_delay_shutdown_keeps_serving_then_exits_zero(run):
    port = free_port()
    proc = run('netexec', f'--http-port={port}', '--udp-port=-1',
               '--delay-shutdown=1', wait_port=port)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert get(port, '/hostname')[:2] == (200, 'pod-x')
    assert wait_exit(proc) == 0


def test_without_udp_healthz_fails_and_exit_sets_the_code(run):
    port = free_port()
    proc = run('netexec', f'--http-port={port}', '--udp-port=-1',
               wait_port=port)
    assert get(port, '/healthz')[0] == 412
    assert get(port, '/exit?code=3')[0] == 200
    assert wait_exit(proc) == 3


def test_bad_flags_exit_2(run):
    for args in (['--bogus=1'], ['--http-port'], ['--http-port=x'], ['extra']):
        proc = run('netexec', *args)
        assert wait_exit(proc) == 2, args
        assert proc.stderr.read()
    assert wait_exit(run('no-such-subcommand')) == 2


# --- porter ------------------------------------------------------------------

def test_porter_serves_each_port_its_environment_names(run, monkeypatch):
    first, second = free_port(), free_port()
    monkeypatch.setenv(f'SERVE_PORT_{first}', 'porter-a:1')
    monkeypatch.setenv(f'SERVE_PORT_{second}', 'porter-a:2')
    wait_for_tcp(second, run('porter', wait_port=first))
    assert get(first, '/')[:2] == (200, 'porter-a:1')
    assert get(second, '/any')[:2] == (200, 'porter-a:2')


def test_porter_without_ports_exits_with_a_message(run, monkeypatch):
    for name in [n for n in os.environ if n.startswith('SERVE_PORT_')]:
        monkeypatch.delenv(name)
    proc = run('porter')
    assert wait_exit(proc) == 1
    assert b'SERVE_PORT_' in proc.stderr.read()


# --- serve-hostname and pause ------------------------------------------------

def test_serve_hostname_http_answers_any_path(run):
    port = free_port()
    run('serve-hostname', f'--port={port}', hostname='sh-1', wait_port=port)
    assert get(port, '/any/path')[:2] == (200, 'sh-1')


def test_serve_hostname_tcp_and_udp(run):
    port = free_port()
    proc = run('serve-hostname', '--tcp', '--udp', '--http=false', '--port',
               str(port), hostname='sh-2', wait_port=port)
    with socket.create_connection(('127.0.0.1', port), timeout=3) as sock:
        data = b''
        while chunk := sock.recv(100):
            data += chunk
    assert data == b'sh-2'
    assert udp_ask(port, 'anything')[0] == 'sh-2'
    proc.send_signal(signal.SIGTERM)  # agnhost keeps serving after SIGTERM
    time.sleep(0.2)
    assert udp_ask(port, 'still there?')[0] == 'sh-2'
    assert proc.poll() is None


def test_serve_hostname_refuses_tcp_with_http(run):
    proc = run('serve-hostname', '--tcp')
    assert wait_exit(proc) == 1
    assert b'--http=false' in proc.stderr.read()


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_pause_exits_zero_on_signal(run, sig):
    proc = run('pause')
    assert proc.stdout.readline() == b'Paused\n'
    proc.send_signal(sig)
    assert wait_exit(proc) == 0


# --- flags and durations, in process -----------------------------------------

def test_flags_follow_go_flag_rules():
    defaults = {'port': 9376, 'tcp': False, 'http': True}
    parse = goflags.parse_flags
    assert parse(['--port', '80'], defaults)['port'] == 80
    assert parse(['-port=0x50'], defaults)['port'] == 80
    assert parse(['--tcp', '--http=false'], defaults) == {
        'port': 9376, 'tcp': True, 'http': False}
    with pytest.raises(goflags.UsageError, match='received 1'):
        parse(['--tcp', 'false'], defaults)  # a bool takes no separate value
    with pytest.raises(goflags.UsageError, match='not defined: -nope'):
        parse(['--nope'], defaults)
    with pytest.raises(goflags.UsageError, match='invalid boolean'):
        parse(['--tcp=maybe'], defaults)


def test_go_durations():
    assert goflags.go_duration('1.5s') == 1.5
    assert goflags.go_duration('1m30s') == 90
    assert goflags.go_duration('0') == 0
    assert goflags.go_duration('250ms') == pytest.approx(0.25)
    for bad in ('5', 's', '1x', ''):
        with pytest.raises(ValueError):
            goflags.go_duration(bad)


# --- runtime: container spec -> argv and env ---------------------------------

ARGV_CASES = [
    ('agnhost args only', {'image': AGNHOST_IMAGE,
                           'args': ['netexec', '--http-port=8080']},
     AGNHOST + ['netexec', '--http-port=8080']),
    ('agnhost command', {'image': AGNHOST_IMAGE,
                         'command': ['/agnhost', 'netexec']},
     AGNHOST + ['netexec']),
    ('agnhost command and args', {'image': AGNHOST_IMAGE,
                                  'command': ['/agnhost'],
                                  'args': ['serve-hostname', '--port=80']},
     AGNHOST + ['serve-hostname', '--port=80']),
    ('agnhost defaults to CMD pause', {'image': AGNHOST_IMAGE},
     AGNHOST + ['pause']),
    ('command drops the image CMD', {'image': AGNHOST_IMAGE,
                                     'command': ['/agnhost']},
     AGNHOST),
    ('shell in the agnhost image', {'image': AGNHOST_IMAGE,
                                    'command': ['sh', '-c', 'echo hi']},
     ['sh', '-c', 'echo hi']),
    ('pause image', {'image': 'registry.k8s.io/pause:3.9'},
     AGNHOST + ['pause']),
    ('busybox command', {'image': 'busybox:1.36',
                         'command': ['sh', '-c',
                                     'while true; do echo hi; sleep 1; done']},
     ['sh', '-c', 'while true; do echo hi; sleep 1; done']),
    ('busybox args replace CMD', {'image': 'busybox',
                                  'args': ['sleep', '3600']},
     ['sleep', '3600']),
    ('busybox default CMD', {'image': 'busybox'}, ['sh']),
    ('$(VAR) expansion', {'image': AGNHOST_IMAGE,
                          'env': [{'name': 'PORT', 'value': '9000'}],
                          'args': ['netexec', '--http-port=$(PORT)',
                                   '--udp-port=$(MISSING)', '$$(PORT)']},
     AGNHOST + ['netexec', '--http-port=9000', '--udp-port=$(MISSING)',
                '$(PORT)']),
]


@pytest.mark.parametrize('name,container,want', ARGV_CASES,
                         ids=[case[0] for case in ARGV_CASES])
def test_container_argv(name, container, want):
    assert container_argv({'name': 'c', **container}, PY) == want


def test_env_of_an_emulated_image():
    env = container_env({'name': 'web', 'image': AGNHOST_IMAGE,
                         'env': [{'name': 'A', 'value': 'x'},
                                 {'name': 'B', 'value': '$(A)y'},
                                 {'name': 'POD_IP', 'valueFrom': {}}]},
                        'web-abc', '/lab/busybox')
    assert env == {'PATH': '/lab/busybox:/usr/local/sbin:/usr/local/bin:'
                           '/usr/sbin:/usr/bin:/sbin:/bin',
                   'HOSTNAME': 'web-abc', 'PYTHONUNBUFFERED': '1',
                   'A': 'x', 'B': 'xy'}


def test_env_of_busybox_puts_its_applets_first():
    env = container_env({'name': 'c', 'image': 'busybox',
                         'command': ['sh']}, 'client', '/lab/bb')
    assert env['PATH'].split(':')[0] == '/lab/bb'
    assert env['HOSTNAME'] == 'client'
    assert 'PYTHONUNBUFFERED' not in env


def test_container_env_overrides_defaults():
    env = container_env({'name': 'c', 'image': 'busybox',
                         'env': [{'name': 'HOSTNAME', 'value': 'custom'}]},
                        'pod', '/bb')
    assert env['HOSTNAME'] == 'custom'


@pytest.mark.parametrize('image', ['nginx:1.25', 'registry.k8s.io/agnhost',
                                   None])
def test_unknown_image_lists_the_supported_ones(image):
    container = {'name': 'c', 'image': image}
    for call in (lambda: container_argv(container, PY),
                 lambda: container_env(container, 'p', '/bb')):
        with pytest.raises(ValueError) as err:
            call()
        assert 'agnhost' in str(err.value) and 'busybox' in str(err.value)
        assert 'container "c"' in str(err.value)


# ---------------------------------------------------------------- the pod's resolv.conf
from topo.images.runtime import pod_resolv_conf  # noqa: E402


def test_a_cluster_first_pod_gets_the_cluster_dns_and_its_namespace_search_path():
    assert pod_resolv_conf({}, 'shop', '10.96.0.10') == (
        'search shop.svc.cluster.local svc.cluster.local cluster.local\n'
        'nameserver 10.96.0.10\noptions ndots:5\n')
    assert pod_resolv_conf({'dnsPolicy': 'ClusterFirstWithHostNet'}, 'a', '10.96.0.10') \
        == pod_resolv_conf({}, 'a', '10.96.0.10')


def test_dns_policy_default_keeps_the_nodes_file_and_none_takes_dns_config():
    assert pod_resolv_conf({'dnsPolicy': 'Default'}, 'a', '10.96.0.10') is None
    spec = {'dnsPolicy': 'None', 'dnsConfig': {
        'nameservers': ['1.2.3.4'], 'searches': ['corp.example'],
        'options': [{'name': 'ndots', 'value': '2'}, {'name': 'edns0'}]}}
    assert pod_resolv_conf(spec, 'a', '10.96.0.10') == (
        'search corp.example\nnameserver 1.2.3.4\noptions ndots:2 edns0\n')
    spec['dnsPolicy'] = 'ClusterFirst'
    assert pod_resolv_conf(spec, 'a', '10.96.0.10') == (
        'search a.svc.cluster.local svc.cluster.local cluster.local corp.example\n'
        'nameserver 10.96.0.10\nnameserver 1.2.3.4\noptions ndots:2 edns0\n')


@pytest.mark.parametrize('module, args, env', [
    ('topo.images.agnhost', ['netexec', '--http-port={port}', '--udp-port=-1'], {}),
    ('topo.images.agnhost', ['serve-hostname', '--port={port}'], {}),
    ('topo.images.agnhost', ['porter'], {'SERVE_PORT_{port}': 'porter'}),
    ('topo.images.agnhost', ['pause'], {}),
    ('topo.images.echo_basic', [], {'HTTP_PORT': '{port}'}),
    ('topo.images.coredns', ['--port={port}', '--bind=127.0.0.1', '--health-port=0',
                             '--ready-port=0', '--records=/nonexistent'], {}),
])
def test_every_emulated_program_says_when_it_serves(tmp_path, module, args, env):
    """The kubelet counts an emulated container started when it says it serves
    (topo/images/__init__.py): each program writes $KUBELAB_STARTED, and only once its
    port answers."""
    port = free_port()
    started = tmp_path / 'started'
    started.write_text('')
    env = dict(os.environ, PYTHONPATH=str(REPO), HOSTNAME='pod-x',
               KUBELAB_STARTED=str(started),
               **{k.format(port=port): v.format(port=port) for k, v in env.items()})
    proc = subprocess.Popen([sys.executable, '-m', module,
                             *[a.format(port=port) for a in args]], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not started.read_text():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, 'never said it serves'
            time.sleep(0.02)
        if args[:1] != ['pause'] and module != 'topo.images.coredns':
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
