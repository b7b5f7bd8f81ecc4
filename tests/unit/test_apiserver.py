"""The lab's API server over real HTTP on loopback: the token, the status codes, the
long-poll the controller relies on."""

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from kubelab.daemon.apiserver import APIServer
from services.cluster import default_cluster
from services.store import Store

TOKEN = 'secret-token'
POD = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': 'p'},
       'spec': {'containers': [{'name': 'c', 'image': 'busybox', 'command': ['sleep', '9']}]}}


@pytest.fixture
def api():
    server = APIServer(Store(default_cluster()), TOKEN, lambda: {'nodes': []},
                       on_shutdown=lambda: None)
    server.start()
    yield server
    server.stop()


def call(api, method, path, body=None, token=TOKEN):
    req = urllib.request.Request(
        f'http://127.0.0.1:{api.port}{path}', method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={'Authorization': f'Bearer {token}'} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_listens_on_loopback_only(api):
    assert api.httpd.server_address[0] == '127.0.0.1'


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
