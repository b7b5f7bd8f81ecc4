"""Bad input against a running lab: every manifest of the invalid corpus (and the fuzzed
ones) gets a clear error and changes nothing, neither the objects nor a single flow; the
API server is a Unix socket only root opens, changes nothing without the lab's token, and
survives a fuzz of malformed, huge, slow and idle connections unchanged."""

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubelab.daemon.statedir import read_text, state_path
from services import transport
from services.errors import KubelabError
from tests.invalid_corpus import corpus, fuzz_cases, lab_state, load_text

DEMO = Path(__file__).resolve().parents[2] / 'examples' / 'demo.yaml'
BRIDGES = ('kl-n1', 'kl-n2', 'kl-n3', 'kl-ul', 'kl-lb', 'kl-ex')


@pytest.fixture(scope='module')
def demo(lab):
    lab.apply(DEMO.read_text())
    lab.client.wait_ready()
    settle(lab)
    return lab


def settle(lab, quiet: float = 3.0, timeout: float = 60) -> None:
    """Until the objects and flows stop changing on their own: the demo's Gateway gets
    its pod, its load balancer address and then its health checks (two good ones a
    second apart) after the pods are ready, and the cloud edge's flows follow."""
    deadline = time.monotonic() + timeout
    before = (lab_state(lab.client), dataplane())
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = (lab_state(lab.client), dataplane())
        if now == before:
            return
        before = now
    raise AssertionError(f'the lab did not settle within {timeout} s')


def dataplane() -> dict:
    """Every flow (cookie, table, match, actions) and group of every lab bridge."""
    out = {}
    for bridge in BRIDGES:
        flows = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', '--no-stats', 'dump-flows',
                                bridge], capture_output=True, text=True, check=True).stdout
        groups = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-groups', bridge],
                                capture_output=True, text=True, check=True).stdout
        out[bridge] = sorted(flows.splitlines()[1:]) + sorted(groups.splitlines()[1:])
    return out


def test_every_invalid_manifest_is_refused_and_changes_nothing(demo):
    cases = [c for c in corpus() if not c.xfail]
    objects, flows = lab_state(demo.client), dataplane()
    unclear = []
    for case in cases:
        try:
            demo.client.apply(load_text(case.path.read_text(), str(case.path)))
        except KubelabError as exc:
            missing = [e for e in case.expect if e not in str(exc)]
            if missing:
                unclear.append(f'{case.name}: {missing} not in {exc}')
        else:
            unclear.append(f'{case.name}: applied')
    demo.client.wait_dataplane()
    print(f'{len(cases)} invalid manifests refused through the API server; objects and '
          f'{sum(map(len, flows.values()))} flows/groups compared')
    assert not unclear, '\n'.join(unclear)
    assert lab_state(demo.client) == objects
    assert dataplane() == flows


def test_the_cli_names_the_file_the_field_and_the_valid_values(demo):
    objects = lab_state(demo.client)
    by_name = {c.name: c for c in corpus()}
    for name in ('service-port-out-of-range', 'service-type-invalid', 'yaml-tab-indentation',
                 'multi-third-document-invalid', 'pod-image-missing'):
        case = by_name[name]
        proc = demo.kubelab('apply', '-f', str(case.path), check=False)
        assert proc.returncode == 1, proc.stdout
        for text in case.expect:
            assert text in proc.stderr, (name, proc.stderr)
        assert 'Traceback' not in proc.stderr
    assert lab_state(demo.client) == objects


def test_fuzzed_manifests_apply_or_fail_cleanly_against_the_running_lab(demo):
    objects = lab_state(demo.client)
    outcomes = {'valid': 0, 'refused': 0}
    for case in fuzz_cases():
        try:
            demo.client.apply(load_text(case.text, case.name), dry_run=True)
            outcomes['valid'] += 1
        except KubelabError as exc:
            assert str(exc).strip(), case.name
            outcomes['refused'] += 1
    print(f'fuzzed manifests (dry run): {outcomes}')
    assert outcomes['refused'] > 0
    assert lab_state(demo.client) == objects


def test_the_api_is_a_unix_socket_only_root_opens_and_needs_the_token(demo):
    """No TCP port at all: the API and the OpenFlow channel are sockets in the 0700 state
    directory; another user cannot connect; without the token nothing changes."""
    sockets = (state_path('api.sock'), demo.client.lab()['ofpSocket'])
    for name in sockets:
        st = os.lstat(name)
        assert stat.S_ISSOCK(st.st_mode) and st.st_uid == 0, name
        assert stat.S_IMODE(st.st_mode) & 0o077 == 0, name
    folder = os.stat(state_path())
    assert folder.st_uid == 0 and stat.S_IMODE(folder.st_mode) == 0o700
    token_file = os.stat(state_path('token'))
    assert token_file.st_uid == 0 and stat.S_IMODE(token_file.st_mode) == 0o600
    pids = {int(read_text(state_path('daemon.pid')).split()[0]),
            demo.client.lab()['controllerPid']}
    listening = subprocess.run(['ss', '-Hltunp'], capture_output=True, text=True,
                               check=True).stdout
    assert not [line for line in listening.splitlines()
                if any(f'pid={pid},' in line for pid in pids)], listening
    objects = lab_state(demo.client)
    body = json.dumps({'objects': [{'apiVersion': 'v1', 'kind': 'Namespace',
                                    'metadata': {'name': 'intruder'}}]}).encode()
    for headers in ({}, {'Authorization': 'Bearer not-the-token'}):
        code, _ = transport.request(state_path('api.sock'), 'POST', '/lab/v1/apply', body,
                                    dict(headers, **{'Content-Type': 'application/json'}))
        assert code == 401
    assert lab_state(demo.client) == objects
    # Another user (nobody) cannot even connect, to either socket.
    for name in sockets:
        proc = subprocess.run(
            [sys.executable, '-c', 'import socket, sys; s = socket.socket(socket.AF_UNIX); '
             's.connect(sys.argv[1])', name],
            user=65534, group=65534, capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0 and 'PermissionError' in proc.stderr, proc.stderr


def test_a_fuzzed_api_leaves_the_lab_as_it_was(demo):
    """Malformed HTTP, bad lengths, a huge body, a slow body and many idle connections
    against the live API server: it still answers at once, and neither the objects nor
    a flow changed."""
    import random
    import socket
    before = (lab_state(demo.client), dataplane())
    path, token = state_path('api.sock'), read_text(state_path('token'))
    rng = random.Random(19)
    # A request the API refuses (an unknown field) even where the mutations leave it whole.
    good = json.dumps({'objects': [{'apiVersion': 'v1', 'kind': 'Namespace', 'bogus': 1,
                                    'metadata': {'name': 'fuzzed'}}]}).encode()
    head = f'POST /lab/v1/apply HTTP/1.1\r\nAuthorization: Bearer {token}\r\n'
    cases = [b'GARBAGE\r\n\r\n', (head + 'Content-Length: -1\r\n\r\n').encode(),
             (head + 'Content-Length: 99999999999\r\n\r\n').encode(),
             (head + f'Content-Length: {len(good)}\r\n\r\n').encode() + good[:-1] + b'!']
    whole = cases[-1]
    for _ in range(100):
        data = bytearray(whole)
        for _ in range(rng.randint(1, 5)):
            i = rng.randrange(len(data))
            data[i:i + 2] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        cases.append(bytes(data[:rng.randint(1, len(data))]))
    for data in cases:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(path)
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            except (BrokenPipeError, ConnectionResetError):
                pass
    idle = []
    try:
        for _ in range(200):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            idle.append(sock)
        slow = socket.socket(socket.AF_UNIX)
        slow.connect(path)
        slow.sendall((head + f'Content-Length: {len(good)}\r\n\r\n').encode() + good[:5])
        idle.append(slow)
        start = time.monotonic()
        demo.client.list('Namespace')
        answered = time.monotonic() - start
    finally:
        for sock in idle:
            sock.close()
    print(f'fuzzed API: {len(cases)} malformed requests, 200 idle connections and a slow '
          f'body; the next request answered in {answered * 1000:.0f} ms')
    assert answered < 2
    assert (lab_state(demo.client), dataplane()) == before
