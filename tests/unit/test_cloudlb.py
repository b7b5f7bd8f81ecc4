"""The health side of the emulated cloud load balancer (topo/cloudlb.py), without a lab:
kube-proxy's health servers answer on 127.0.0.1 of the test's own network namespace (a
plain thread pool stands in for the node's), and the cloud's health checker probes them
or scripted servers. Each test reads like what a load balancer sees: which status and
body a node answers, which nodes it is told to send to, and how soon."""

import datetime
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from topo.cloudlb import HealthChecker, ProxyHealthServer, health_checks, probe

LOCALHOST = '127.0.0.1'
FAST = {'interval': 0.05, 'timeout': 0.04}    # the checker's pace in these tests


# ---------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.005)


def get(port, path='/healthz', method='GET'):
    """(status, headers, body) of one request to 127.0.0.1:``port``, read off the wire
    to the server's close."""
    with socket.create_connection((LOCALHOST, port), timeout=2) as sock:
        sock.sendall(f'{method} {path} HTTP/1.1\r\nHost: {LOCALHOST}:{port}\r\n\r\n'.encode())
        data = b''
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.decode().partition('\r\n\r\n')
    status_line, *lines = head.split('\r\n')
    assert status_line.startswith('HTTP/1.1 ')
    return int(status_line.split()[1]), dict(line.split(': ', 1) for line in lines), body


def answer(port, path='/healthz'):
    """(status, body) of a GET."""
    status, _, body = get(port, path)
    return status, body


def refused(port) -> bool:
    try:
        socket.create_connection((LOCALHOST, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def lb(name='web', health_port=None, policy='Local', namespace='default'):
    """A LoadBalancer Service as the store holds it."""
    spec = {'type': 'LoadBalancer', 'externalTrafficPolicy': policy, 'clusterIP': '10.96.0.20',
            'ports': [{'port': 80, 'targetPort': 8080, 'protocol': 'TCP', 'nodePort': 30080}]}
    if health_port:
        spec['healthCheckNodePort'] = health_port
    return {'apiVersion': 'v1', 'kind': 'Service',
            'metadata': {'name': name, 'namespace': namespace}, 'spec': spec,
            'status': {'loadBalancer': {'ingress': [{'ip': '198.51.100.1'}]}}}


def eps(service, *endpoints, namespace='default', ports=True, name=None):
    """An EndpointSlice of ``service``; endpoints: (address, node[, ready[, terminating]])."""
    items = []
    for address, node, *conditions in endpoints:
        ready, terminating = (conditions + [True, False][len(conditions):])[:2]
        items.append({'addresses': [address], 'nodeName': node,
                      'conditions': {'ready': ready, 'serving': True,
                                     'terminating': terminating}})
    return {'apiVersion': 'discovery.k8s.io/v1', 'kind': 'EndpointSlice',
            'metadata': {'name': name or f'{service}-x7k2p', 'namespace': namespace,
                         'labels': {'kubernetes.io/service-name': service}},
            'addressType': 'IPv4', 'endpoints': items,
            'ports': [{'name': '', 'port': 8080, 'protocol': 'TCP'}] if ports else []}


def service_body(count, name='web', namespace='default'):
    """kube-proxy's service health body, byte for byte."""
    return ('{\n\t"service": {\n\t\t"namespace": "%s",\n\t\t"name": "%s"\n\t},\n'
            '\t"localEndpoints": %d,\n\t"serviceProxyHealthy": true\n}'
            % (namespace, name, count))


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(max_workers=8)
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def servers(executor):
    """Start ProxyHealthServers (node, healthz port); all closed at the end."""
    started = []

    def start(node='worker-1', healthz_port=None):
        server = ProxyHealthServer(node, executor, healthz_port=healthz_port or free_port())
        started.append(server)
        return server
    yield start
    for server in started:
        server.close()


# ---------------------------------------------------------------- kube-proxy's side
def test_healthz_answers_like_kube_proxy(servers):
    port = servers().healthz_port
    status, headers, body = get(port)
    assert status == 200
    assert headers['Content-Type'] == 'application/json'
    assert headers['X-Content-Type-Options'] == 'nosniff'
    assert body.startswith('{"lastUpdated": "') and '","currentTime": "' in body
    answer = json.loads(body)
    assert list(answer) == ['lastUpdated', 'currentTime', 'nodeEligible']
    assert answer['nodeEligible'] is True
    stamp = datetime.datetime.strptime(answer['currentTime'], '%Y-%m-%dT%H:%M:%SZ')
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((now - stamp).total_seconds()) < 5
    assert answer['lastUpdated'] == answer['currentTime']      # healthy: "recent"

    status, _, body = get(port, '/livez')
    assert status == 200 and list(json.loads(body)) == ['lastUpdated', 'currentTime']
    status, headers, body = get(port, '/metrics')
    assert (status, body) == (404, '404 page not found\n')
    assert headers['Content-Type'] == 'text/plain; charset=utf-8'


def test_health_check_port_answers_by_local_ready_endpoints(servers):
    server, port = servers('worker-1'), free_port()
    server.sync([lb(health_port=port)], [eps('web')])
    status, headers, body = get(port)
    assert (status, body) == (503, service_body(0))
    assert headers['Content-Type'] == 'application/json'
    assert headers['X-Content-Type-Options'] == 'nosniff'
    assert headers['X-Load-Balancing-Endpoint-Weight'] == '0'

    server.sync([lb(health_port=port)], [eps('web', ('192.168.2.10', 'worker-1'))])
    status, headers, body = get(port)
    assert (status, body) == (200, service_body(1))
    assert headers['X-Load-Balancing-Endpoint-Weight'] == '1'

    server.sync([lb(health_port=port)], [eps(
        'web', ('192.168.2.10', 'worker-1'), ('192.168.2.11', 'worker-1'),
        ('192.168.3.10', 'worker-2'),                  # another node's
        ('192.168.2.12', 'worker-1', False),           # not ready
        ('192.168.2.13', 'worker-1', False, True))])   # terminating
    status, headers, body = get(port)
    assert (status, body) == (200, service_body(2))
    assert headers['X-Load-Balancing-Endpoint-Weight'] == '2'

    server.sync([lb(health_port=port)], [eps('web', ('192.168.2.10', 'worker-1', False))])
    assert get(port)[0] == 503


def test_health_check_port_answers_any_path_and_head(servers):
    server, port = servers(), free_port()
    server.sync([lb(health_port=port)], [eps('web', ('192.168.2.10', 'worker-1'))])
    assert get(port, '/') == get(port, '/healthz') == get(port, '/anything?x=1')
    status, headers, body = get(port, '/healthz', 'HEAD')
    assert (status, body) == (200, '')
    assert headers['Content-Length'] == str(len(service_body(1)))


def test_endpoint_moving_to_another_node(servers):
    port = free_port()
    services = [lb(health_port=port)]
    worker1 = servers('worker-1')
    worker1.sync(services, [eps('web', ('192.168.2.10', 'worker-1'))])
    assert get(port)[0] == 200
    moved = [eps('web', ('192.168.3.10', 'worker-2'))]
    worker1.sync(services, moved)
    assert answer(port) == (503, service_body(0))
    worker1.close()       # one network namespace here: the nodes take turns on the port
    worker2 = servers('worker-2')
    worker2.sync(services, moved)
    assert answer(port) == (200, service_body(1))


def test_ports_open_and_close_with_sync(servers):
    server, web_port, api_port = servers(), free_port(), free_port()
    assert refused(web_port)
    server.sync([lb('web', web_port), lb('api', api_port, namespace='prod')],
                [eps('api', ('192.168.2.20', 'worker-1'), namespace='prod')])
    assert answer(web_port) == (503, service_body(0))
    assert answer(api_port) == (200, service_body(1, 'api', 'prod'))

    server.sync([lb('web', policy='Cluster'), lb('api', api_port, namespace='prod')], [])
    assert refused(web_port)
    assert answer(api_port) == (503, service_body(0, 'api', 'prod'))

    server.sync([lb('web', web_port)], [])
    assert get(web_port)[0] == 503
    assert refused(api_port)
    server.sync([], [])
    assert refused(web_port) and refused(api_port)
    assert get(server.healthz_port)[0] == 200      # kube-proxy's own stays


def test_an_address_counts_once_and_slices_without_ports_not_at_all(servers):
    server, port = servers(), free_port()
    unset = eps('web', ('192.168.2.11', 'worker-1'), name='web-unset')
    del unset['endpoints'][0]['conditions']['ready']       # unknown: ready, for kube-proxy
    slices = [eps('web', ('192.168.2.10', 'worker-1'), name='web-a'),
              eps('web', ('192.168.2.10', 'worker-1'), name='web-b'),
              eps('web', ('192.168.2.12', 'worker-1'), name='web-c', ports=False),
              eps('web', ('192.168.2.13', 'worker-1'), name='web-d', namespace='other'),
              unset]
    server.sync([lb(health_port=port)], slices)
    assert answer(port) == (200, service_body(2))
    assert health_checks([lb(health_port=port)], slices, 'worker-2') == {
        port: ('default', 'web', 0)}


def test_idle_or_malformed_clients_delay_nobody(servers):
    port = servers().healthz_port
    with socket.create_connection((LOCALHOST, port)) as idle:
        idle.sendall(b'GET /heal')                 # and nothing more
        started = time.monotonic()
        assert get(port)[0] == 200
        assert time.monotonic() - started < 1
    with socket.create_connection((LOCALHOST, port), timeout=2) as bad:
        bad.sendall(b'nonsense\r\n\r\n')
        assert bad.recv(1024).startswith(b'HTTP/1.1 400 Bad Request\r\n')


def test_sync_is_idempotent_and_thread_safe(servers):
    server, port = servers(), free_port()
    one = ([lb(health_port=port)], [eps('web', ('192.168.2.10', 'worker-1'))])
    other = ([lb(health_port=port)], [eps('web')])
    errors = []

    def churn(states):
        try:
            for _ in range(30):
                for services, slices in states:
                    server.sync(services, slices)
        except Exception as exc:       # reported by the assertion below
            errors.append(exc)
    threads = [threading.Thread(target=churn, args=((one, other, ([], [])),))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    server.sync(*one)
    server.sync(*one)
    assert answer(port) == (200, service_body(1))


def test_a_port_that_cannot_be_bound_is_tried_again(servers):
    server, port = servers(), free_port()
    blocker = socket.socket()
    blocker.bind((LOCALHOST, port))
    blocker.listen()
    server.sync([lb(health_port=port)], [])        # logged, not raised
    blocker.close()
    assert refused(port)
    server.sync([lb(health_port=port)], [])
    assert get(port)[0] == 503


def test_close_closes_every_socket(servers):
    server, port = servers(), free_port()
    server.sync([lb(health_port=port)], [])
    server.close()
    assert refused(port) and refused(server.healthz_port)
    with pytest.raises(RuntimeError, match='worker-1 is closed'):
        server.sync([lb(health_port=port)], [])
    server.close()                                 # twice is fine


# ---------------------------------------------------------------- the cloud's side
class Backend:
    """A health check target on 127.0.0.1 whose answers a test scripts: the statuses in
    ``script`` first, then 200. ``statuses`` is every status it has answered."""

    def __init__(self):
        self.script, self.statuses = [], []
        self.listener = socket.create_server((LOCALHOST, 0))
        self.listener.settimeout(0.01)
        self.port = self.listener.getsockname()[1]
        self.closing = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.closing:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            with conn:
                try:
                    conn.settimeout(2)
                    conn.recv(4096)        # the probe's request: one segment on loopback
                    status = self.script.pop(0) if self.script else 200
                    self.statuses.append(status)
                    conn.sendall(f'HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\n\r\n'
                                 .encode())
                except OSError:            # the prober gave up: its probe has failed
                    pass

    def close(self):
        self.closing = True
        self.thread.join()
        self.listener.close()


class Published:
    """The checker's publish callback: records (time, key, nodes, what each backend had
    answered by then)."""

    def __init__(self, *backends):
        self.backends = backends
        self.calls = []

    def __call__(self, key, nodes):
        self.calls.append((time.monotonic(), key, nodes,
                           [list(b.statuses) for b in self.backends]))

    def of(self, key):
        return [nodes for _, k, nodes, _ in self.calls if k == key]


@pytest.fixture
def backends():
    started = []

    def start():
        started.append(Backend())
        return started[-1]
    yield start
    for backend in started:
        backend.close()


@pytest.fixture
def checkers(executor):
    started = []

    def start(publish, **options):
        checker = HealthChecker(executor, publish, **{**FAST, **options})
        checker.start()
        started.append(checker)
        return checker
    yield start
    for checker in started:
        checker.stop()


def test_probe_wants_200_in_time(backends):
    up = backends()
    assert probe(LOCALHOST, up.port, 0.5)
    up.script.append(503)
    assert not probe(LOCALHOST, up.port, 0.5)
    assert not probe(LOCALHOST, free_port(), 0.5)             # refused
    with socket.socket() as silent:                             # accepts, never answers
        silent.bind((LOCALHOST, 0))
        silent.listen()
        started = time.monotonic()
        assert not probe(LOCALHOST, silent.getsockname()[1], 0.1)
        assert time.monotonic() - started < 0.5


def test_a_new_key_is_published_at_once_with_real_results(backends, checkers):
    up, publish = backends(), Published()
    checker = checkers(publish, interval=5.0, timeout=0.2)     # no regular round in time
    with socket.socket() as silent:
        silent.bind((LOCALHOST, 0))
        silent.listen()
        started = time.monotonic()
        checker.set_targets({'default/web': [('worker-1', LOCALHOST, up.port),
                                             ('worker-2', LOCALHOST, free_port()),
                                             ('worker-3', LOCALHOST, silent.getsockname()[1])]})
        wait_for(lambda: publish.calls)
    assert publish.of('default/web') == [['worker-1']]
    assert publish.calls[0][0] - started < 1


def test_a_node_that_stops_answering_is_dropped_within_the_bound(servers, checkers):
    bound = 2 * FAST['interval'] + FAST['timeout']            # unhealthy_threshold 2
    worker1, worker2 = servers('worker-1'), servers('worker-2')
    port1, port2 = worker1.healthz_port, worker2.healthz_port
    publish = Published()
    checker = checkers(publish)
    checker.set_targets({'default/web': [('worker-1', LOCALHOST, port1),
                                         ('worker-2', LOCALHOST, port2)]})
    wait_for(lambda: publish.calls)
    assert publish.of('default/web') == [['worker-1', 'worker-2']]

    stopped = time.monotonic()
    worker2.close()
    wait_for(lambda: len(publish.calls) == 2)
    assert publish.of('default/web')[1] == ['worker-1']
    assert publish.calls[1][0] - stopped <= bound + 0.25      # scheduling slack

    restarted = time.monotonic()
    servers('worker-2', healthz_port=port2)
    wait_for(lambda: len(publish.calls) == 3)
    assert publish.of('default/web')[2] == ['worker-1', 'worker-2']
    assert publish.calls[2][0] - restarted <= bound + 0.25


def test_thresholds_count_consecutive_results(backends, checkers):
    steady, flaky = backends(), backends()
    publish = Published(flaky)
    checker = checkers(publish, unhealthy_threshold=2, healthy_threshold=3)
    checker.set_targets({'default/web': [('worker-1', LOCALHOST, steady.port),
                                         ('worker-2', LOCALHOST, flaky.port)]})
    wait_for(lambda: publish.calls)

    flaky.script.extend([503, 200, 503])                       # never twice in a row
    seen = len(flaky.statuses)
    wait_for(lambda: len(flaky.statuses) >= seen + 6)
    assert publish.of('default/web') == [['worker-1', 'worker-2']]

    flaky.script.extend([503, 503, 503, 503, 200, 200, 503])  # down; then 2 successes
    wait_for(lambda: len(publish.calls) == 3)                  # ... are not 3
    _, _, dropped, answered = publish.calls[1]
    assert dropped == ['worker-1'] and answered[0][-2:] == [503, 503]
    assert answered[0][:-2].count(503) == 2                    # the lone ones before
    _, _, back, answered = publish.calls[2]
    assert back == ['worker-1', 'worker-2'] and answered[0][-4:] == [503, 200, 200, 200]


def test_removed_keys_are_forgotten(backends, checkers):
    web, api = backends(), backends()
    publish = Published()
    checker = checkers(publish)
    targets = {'default/web': [('worker-1', LOCALHOST, web.port)],
               'prod/api': [('worker-1', LOCALHOST, api.port)]}
    checker.set_targets(targets)
    wait_for(lambda: len(publish.calls) == 2)

    checker.set_targets({'default/web': targets['default/web']})
    api.script.extend([503] * 1000)                            # api's node goes down
    time.sleep(10 * FAST['interval'])
    assert publish.of('prod/api') == [['worker-1']]            # no news of a removed key

    checker.set_targets(targets)                               # back: a new key again
    wait_for(lambda: len(publish.of('prod/api')) == 2)
    assert publish.of('prod/api')[1] == []
    assert publish.of('default/web') == [['worker-1']]         # unchanged: not republished

    checker.set_targets({'default/web': [*targets['default/web'],
                                         ('worker-2', LOCALHOST, web.port)]})
    wait_for(lambda: len(publish.of('default/web')) == 2)      # a changed set: at once
    assert publish.of('default/web')[1] == ['worker-1', 'worker-2']


@pytest.mark.parametrize('options, message', [
    ({'interval': 0}, 'interval: 0 must be more than 0'),
    ({'interval': 1.0, 'timeout': 2.0}, 'timeout: 2.0 must be more than 0 and at most'),
    ({'unhealthy_threshold': 0}, 'unhealthy_threshold: 0 must be at least 1'),
])
def test_checker_settings_are_checked(executor, options, message):
    with pytest.raises(ValueError, match=message):
        HealthChecker(executor, print, **options)


def test_the_cloud_checks_kube_proxy_for_cluster_and_the_service_port_for_local():
    from services.cluster import default_cluster
    from topo.cloudlb import HEALTHZ_PORT, health_check_targets
    cluster = default_cluster()

    def svc(name, kind, **spec):
        return {'metadata': {'namespace': 'default', 'name': name},
                'spec': dict(type=kind, **spec)}
    targets = health_check_targets(cluster, [
        svc('plain', 'NodePort'), svc('cluster', 'LoadBalancer'),
        svc('local', 'LoadBalancer', externalTrafficPolicy='Local', healthCheckNodePort=32100)])
    assert set(targets) == {'default/cluster', 'default/local'}
    assert targets['default/cluster'] == [(n.name, n.ip, HEALTHZ_PORT) for n in cluster.nodes]
    assert targets['default/local'] == [(n.name, n.ip, 32100) for n in cluster.nodes]


def test_only_terminating_local_endpoints_answer_503_and_a_labelled_service_gets_no_port():
    from topo.cloudlb import health_checks
    terminating = eps('web', ('192.168.2.13', 'worker-1', False, True))
    assert health_checks([lb(health_port=32100)], [terminating], 'worker-1') == {
        32100: ('default', 'web', 0)}
    labelled = lb(health_port=32100)
    labelled['metadata']['labels'] = {'service.kubernetes.io/service-proxy-name': 'x'}
    assert health_checks([labelled], [terminating], 'worker-1') == {}


def test_the_cloud_does_not_check_for_a_service_of_another_load_balancer_class():
    from services.cluster import default_cluster
    from topo.cloudlb import health_check_targets
    svc = {'metadata': {'namespace': 'default', 'name': 'classy'},
           'spec': {'type': 'LoadBalancer', 'loadBalancerClass': 'example.com/vip'}}
    assert health_check_targets(default_cluster(), [svc]) == {}
