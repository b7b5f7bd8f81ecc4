"""The lab's API server over real HTTP on its Unix socket: the token, the status codes,
the long-poll the controller relies on, and what a hostile caller tries (fuzz: malformed
HTTP, bad Content-Length, huge and slow bodies, many idle connections), after which the
server still answers and the store is unchanged."""

import json
import os
import socket
import stat
import threading
import time

import pytest

from kubelab.daemon import httpserver
from kubelab.daemon.httpserver import lone_surrogate
from kubelab.daemon.apiserver import APIServer
from services import transport
from services.cluster import default_cluster
from services.store import Store

TOKEN = 'secret-token'
POD = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': 'p'},
       'spec': {'containers': [{'name': 'c', 'image': 'busybox', 'command': ['sleep', '9']}]}}


@pytest.fixture
def api(tmp_path):
    server = APIServer(Store(default_cluster()), TOKEN, lambda: {'nodes': []},
                       on_shutdown=lambda: None, path=str(tmp_path / 'api.sock'))
    server.start()
    yield server
    server.stop()


def call(api, method, path, body=None, token=TOKEN):
    code, raw = transport.request(
        api.path, method, path, json.dumps(body).encode() if body is not None else None,
        {'Authorization': f'Bearer {token}'} if token else {}, timeout=10)
    return code, json.loads(raw)


def test_listens_on_a_unix_socket_only_its_owner_may_open(api):
    mode = os.stat(api.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert api.httpd.socket.family == socket.AF_UNIX


def test_nothing_changes_without_the_token(api):
    code, body = call(api, 'POST', '/lab/v1/apply', {'objects': [POD]}, token='wrong')
    assert code == 401 and 'token' in body['error']
    code, _ = call(api, 'GET', '/lab/v1/objects?kind=Pod', token=None)
    assert code == 401
    assert api.store.list('Pod') == []
    assert call(api, 'GET', '/healthz', token=None)[0] == 200


def test_apply_get_delete(api):
    code, body = call(api, 'POST', '/lab/v1/apply', {'objects': [POD]})
    assert code == 200 and body['results'] == [['pod/p', 'created']]
    code, body = call(api, 'GET', '/lab/v1/objects?kind=Pod&namespace=default&name=p')
    assert code == 200 and body['metadata']['name'] == 'p'
    code, body = call(api, 'POST', '/lab/v1/delete', {'kind': 'Pod', 'namespace': 'default',
                                                      'name': 'nope'})
    assert code == 404 and 'not found' in body['error']


def test_a_rejected_apply_is_422_with_every_error(api):
    bad = dict(POD, spec={'containers': [{'name': 'c', 'image': 'nginx'}]})
    code, body = call(api, 'POST', '/lab/v1/apply', {'objects': [POD, bad]})
    assert code == 422
    assert any('spec.containers[0].image' in e for e in body['errors'])
    assert api.store.list('Pod') == []


def test_snapshot_long_poll_returns_on_change(api):
    _, first = call(api, 'GET', '/lab/v1/snapshot?since=0')
    version = int(first['resourceVersion'])
    threading.Timer(0.3, lambda: api.store.apply([POD])).start()
    start = time.monotonic()
    _, second = call(api, 'GET', f'/lab/v1/snapshot?since={version}&timeout=10')
    assert 0.2 < time.monotonic() - start < 5
    assert int(second['resourceVersion']) > version
    assert [p['metadata']['name'] for p in second['objects']['Pod']] == ['p']


# ---------------------------------------------------------------- a hostile caller
def raw(api, data: bytes, timeout: float = 5, end: bool = False) -> bytes:
    """Send bytes on a new connection (``end``: then say there is no more); everything
    the server answers until it closes."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(api.path)
        try:
            sock.sendall(data)
        except BrokenPipeError:
            pass                    # answered and closed before it read: read the answer
        if end:
            sock.shutdown(socket.SHUT_WR)
        out = b''
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk


def post(body: bytes, length: str | None = None, extra: str = '') -> bytes:
    head = f'POST /lab/v1/apply HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n'
    if length is not None:
        head += f'Content-Length: {length}\r\n'
    return (head + extra + '\r\n').encode() + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b' ', 2)[1])


def unchanged(api, before):
    """The server still answers, and holds what it held."""
    code, body = call(api, 'GET', '/lab/v1/objects?kind=Pod')
    assert code == 200 and body['items'] == before


#: A Service whose port's appProtocol holds a lone surrogate (``json.loads`` takes it;
#: no answer or change stream carrying it could be encoded as UTF-8).
SURROGATE = (b'{"objects": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": '
             b'"s"}, "spec": {"ports": [{"port": 80, "appProtocol": "x\\ud800"}]}}]}')


@pytest.mark.parametrize('request_bytes, code, says', [
    (post(b'{"objects": [', '13'), 400, b'not JSON'),
    (post(b'\xff\xfe', '2'), 400, b'not JSON'),
    (post(b'[' * 5000 + b']' * 5000, '10000'), 400, b'not JSON'),
    (post(b'{"objects": ' + b'[' * 150 + b']' * 150 + b'}', str(12 + 300 + 1)), 400,
     b'nests more than'),
    (post(SURROGATE, str(len(SURROGATE))), 400,
     b'objects[0].spec.ports[0].appProtocol: a string holds an unpaired UTF-16 surrogate'),
    (post(b'{}', '-1'), 400, b'Content-Length must be a whole number'),
    (post(b'{}', 'abc'), 400, b'Content-Length must be a whole number'),
    (post(b'{}', str(10 ** 12)), 413, b'at most'),
    (post(b'2\r\n{}\r\n0\r\n\r\n', None, 'Transfer-Encoding: chunked\r\n'), 400,
     b'chunked'),
    (b'GARBAGE\r\n\r\n', 400, b'bad HTTP request'),
    (b'GET /' + b'a' * 70000 + b' HTTP/1.1\r\n\r\n', 414, b'bad HTTP request'),
    (b'GET / HTTP/1.1\r\n' + b'X: y\r\n' * 200 + b'\r\n', 431, b'bad HTTP request'),
])
def test_a_request_it_cannot_read_is_answered_and_closed(api, request_bytes, code, says):
    """Each malformed request gets an answer (JSON, ``Connection: close``) and the
    connection ends: none is dropped silently, none holds a thread."""
    start = time.monotonic()
    answer = raw(api, request_bytes)
    assert status_of(answer) == code, answer[:300]
    assert says in answer and b'Connection: close' in answer
    assert time.monotonic() - start < 3
    unchanged(api, [])


def test_a_body_shorter_than_its_length_is_cut_off_at_the_deadline(api, monkeypatch):
    """Content-Length promises 100 bytes, 10 come, then nothing: the connection is
    closed when the request deadline passes, and the apply never happens."""
    monkeypatch.setattr(api.httpd, 'request_deadline', 1.0)
    start = time.monotonic()
    answer = raw(api, post(b'{"objects":', '100'), timeout=10)
    assert 0.9 < time.monotonic() - start < 5
    assert answer == b'' or status_of(answer) == 400
    unchanged(api, [])


def test_a_slow_sender_is_cut_off_at_the_deadline(api, monkeypatch):
    """One byte of headers every 0.3 s ("slowloris") does not keep the connection: the
    whole request must arrive within the deadline."""
    monkeypatch.setattr(api.httpd, 'request_deadline', 1.0)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(api.path)
        start = time.monotonic()
        with pytest.raises(OSError):
            for byte in b'GET /lab/v1/objects?kind=Pod HTTP/1.1\r\nX-Slow: ' + b'a' * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.3)
                if time.monotonic() - start > 8:
                    break
        assert time.monotonic() - start < 5
    unchanged(api, [])


def test_many_idle_connections_do_not_lock_the_caller_out(api):
    """300 connections that send nothing (more than the limit): the oldest idle ones
    are evicted for newcomers, a real request still gets through at once, and the
    server's threads stay bounded."""
    socks = []
    try:
        for _ in range(300):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(api.path)
            socks.append(sock)
        time.sleep(0.2)
        threads = threading.active_count()
        start = time.monotonic()
        code, _ = call(api, 'GET', '/lab/v1/objects?kind=Pod')
        assert code == 200 and time.monotonic() - start < 2
        assert len(api.httpd.conns) <= httpserver.MAX_CONNECTIONS
        assert threads < httpserver.MAX_CONNECTIONS + 20
        assert api.httpd.refused['evicted'] >= 300 - httpserver.MAX_CONNECTIONS
    finally:
        for sock in socks:
            sock.close()
    unchanged(api, [])


def test_when_every_connection_is_busy_a_newcomer_gets_503(api, monkeypatch):
    monkeypatch.setattr(api.httpd, 'max_connections', 2)
    polls = [threading.Thread(target=call, args=(api, 'GET',
                                                  '/lab/v1/snapshot?since=999&timeout=2'))
             for _ in range(2)]
    for thread in polls:
        thread.start()
    time.sleep(0.3)
    answer = raw(api, b'GET /healthz HTTP/1.1\r\n\r\n')
    assert status_of(answer) == 503 and b'try again' in answer
    for thread in polls:
        thread.join()
    assert call(api, 'GET', '/healthz')[0] == 200


def test_another_user_is_refused_by_peer_uid(api, monkeypatch):
    """SO_PEERCRED: a connection from a uid other than the server's is closed unread
    (here the server pretends to be another uid, so the test needs no second user)."""
    monkeypatch.setattr(api.httpd, 'allowed_uid', os.geteuid() + 1)
    try:
        assert raw(api, b'GET /healthz HTTP/1.1\r\n\r\n') == b''
    except ConnectionResetError:
        pass                                 # closed unread: the request was not taken
    assert api.httpd.refused['uid'] == 1


def test_the_client_tells_a_refusal_from_a_lab_that_is_down(api, tmp_path):
    """The CLI says "does not answer" only when nothing listens; an error the server
    answered is that error."""
    from kubelab.client import Client, NoLab
    from services.errors import KubelabError
    client = object.__new__(Client)
    client.socket_path, client.token, client.state_dir = api.path, 'wrong', str(tmp_path)
    with pytest.raises(KubelabError, match='unauthorized') as exc:
        client.list('Pod')
    assert not isinstance(exc.value, NoLab)
    client.socket_path = str(tmp_path / 'nothing.sock')
    with pytest.raises(NoLab, match='does not answer'):
        client.list('Pod')


def test_fuzz_leaves_the_store_as_it_was(api):
    """Random bytes, truncated and mangled requests, in any order: afterwards the
    server answers and the store holds exactly what it held."""
    import random
    rng = random.Random(19)
    call(api, 'POST', '/lab/v1/apply', {'objects': [POD]})
    before = call(api, 'GET', '/lab/v1/objects?kind=Pod')[1]['items']
    good = post(json.dumps({'objects': [POD]}).encode(),
                str(len(json.dumps({'objects': [POD]}))))
    for _ in range(150):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(data))
            data[i:i + rng.randint(1, 4)] = bytes(rng.randrange(256)
                                                  for _ in range(rng.randint(0, 4)))
        data = bytes(data[:rng.randint(1, len(data))])
        try:
            raw(api, data, timeout=3, end=True)
        except ConnectionResetError:
            pass
    unchanged(api, before)


def test_the_dataplane_wait_answers_when_the_switches_report_not_before(api):
    """``kubelab wait``'s long poll (issue 20: no polling sleep between the switches'
    report and the answer)."""
    def report():
        time.sleep(0.3)
        call(api, 'POST', '/lab/v1/dataplane', {'version': 7, 'switches': [1, 2]})
    threading.Thread(target=report).start()
    began = time.monotonic()
    code, body = call(api, 'GET', '/lab/v1/dataplane?until=7&switches=2&timeout=5')
    assert code == 200 and body['version'] == 7 and body['switches'] == [1, 2]
    assert 0.25 < time.monotonic() - began < 2
    began = time.monotonic()          # already there: at once
    assert call(api, 'GET', '/lab/v1/dataplane?until=5&switches=2&timeout=5')[1][
        'version'] == 7
    assert time.monotonic() - began < 0.5
    code, body = call(api, 'GET', '/lab/v1/dataplane?until=9&switches=2&timeout=0.2')
    assert code == 200 and body['version'] == 7          # the wait ran out: as it is


def test_a_surrogate_pair_is_text_and_a_lone_one_is_found_by_its_path():
    """``json.loads`` turns an escaped pair into one character (text) and keeps a lone
    surrogate as it is (not text): only the second is named, key or value."""
    assert lone_surrogate(json.loads('{"a": ["\\ud83d\\ude00"], "b": "ok"}')) is None
    assert lone_surrogate(json.loads('{"a": [{"b": "x"}, {"c": "\\udc00"}]}')) == 'a[1].c'
    assert lone_surrogate(json.loads('{"a": {"\\ud800": 1}}')) == 'a (a key)'
    assert lone_surrogate(json.loads('"\\ud800"')) == '(the body)'
