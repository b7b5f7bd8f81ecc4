"""Cluster DNS and namespaces: pods reach Services by name.

kube-dns (kube-system, 10.96.0.10) is served by two coredns pods behind it, through the
lab's own dataplane. Every pod has its own /etc/resolv.conf (search
``<ns>.svc.cluster.local svc.cluster.local cluster.local``, ``ndots:5``), so names are
resolved inside the pods the way a user types them: ``curl http://web``,
``getent hosts web.shop``. The queries run with dnspython inside the pods (through
``kubelab exec``, which gives the pod's resolv.conf), with the search path as glibc uses
it.
"""

import json
import os
import signal
import time

import pytest

from tests.traffic.manifests import echo_backend, shell_pods

#: Runs in a pod: resolve NAME (a search-path name, or absolute with a trailing dot)
#: for TYPE over UDP or TCP with the pod's /etc/resolv.conf; prints JSON.
RESOLVE = r'''
import json, sys, dns.resolver, dns.rdatatype
name, rdtype, tcp = sys.argv[1], sys.argv[2], sys.argv[3] == 'tcp'
r = dns.resolver.Resolver()                      # /etc/resolv.conf: search, ndots
r.lifetime = 3
try:
    answer = r.resolve(name, rdtype, tcp=tcp, search=True)
    out = {'rcode': 'NOERROR', 'name': answer.qname.to_text(),
           'answers': sorted(a.to_text() for a in answer)}
except dns.resolver.NXDOMAIN:
    out = {'rcode': 'NXDOMAIN'}
except dns.resolver.NoAnswer:
    out = {'rcode': 'NODATA'}
except Exception as exc:
    out = {'rcode': 'ERROR', 'error': repr(exc)}
print(json.dumps(out))
'''

SHOP = ('---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n'
        + echo_backend('web').replace('metadata: {name: web}',
                                      'metadata: {name: web, namespace: shop}')
        + """---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: 3000}]
""" + ''.join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: db-{i}, namespace: shop, labels: {{app: db}}}}
spec:
  containers:
  - name: echo
    image: gcr.io/k8s-staging-gateway-api/echo-basic:v1
    readinessProbe: {{httpGet: {{path: /, port: 3000}}, periodSeconds: 1}}
""" for i in (0, 1))
        + shell_pods(('client', 'worker-1')).replace('metadata: {name: client}',
                                                     'metadata: {name: client, '
                                                     'namespace: shop}')
        + shell_pods(('outsider', 'worker-2')))


@pytest.fixture(scope='module')
def dns_lab(lab):
    lab.apply(SHOP)
    for ns in ('shop', 'default', 'kube-system'):
        lab.client.wait_ready(namespace=ns)
    return lab


def resolve(lab, pod, name, rdtype='A', namespace='default', tcp=False) -> dict:
    proc = lab.kubelab('exec', '-n', namespace, pod, '--', lab.python, '-c', RESOLVE, name,
                       rdtype, 'tcp' if tcp else 'udp')
    return json.loads(proc.stdout)


def test_kube_dns_is_at_the_tenth_address_and_served_by_two_pods(dns_lab):
    svc = dns_lab.client.get('Service', 'kube-system', 'kube-dns')
    assert svc['spec']['clusterIP'] == '10.96.0.10'
    assert {(p['port'], p['protocol']) for p in svc['spec']['ports']} == {(53, 'UDP'),
                                                                            (53, 'TCP')}
    pods = dns_lab.pods({'k8s-app': 'kube-dns'}, namespace='kube-system')
    assert len(pods) == 2
    table = dns_lab.kubelab('get', 'pods', '-n', 'kube-system').stdout
    assert table.count('coredns-') == 2


def test_a_service_by_short_name_in_its_namespace_and_qualified_from_another(dns_lab):
    vip = dns_lab.cluster_ip('web', 'shop')
    got = resolve(dns_lab, 'client', 'web', namespace='shop')
    assert (got['name'], got['answers']) == ('web.shop.svc.cluster.local.', [vip])
    assert resolve(dns_lab, 'outsider', 'web')['rcode'] == 'NXDOMAIN'
    for name in ('web.shop', 'web.shop.svc', 'web.shop.svc.cluster.local.'):
        assert resolve(dns_lab, 'outsider', name)['answers'] == [vip], name
    # Over TCP too (the kube-dns Service's TCP port, the same pods).
    assert resolve(dns_lab, 'outsider', 'web.shop', tcp=True)['answers'] == [vip]


def test_curl_and_getent_use_the_pods_resolver(dns_lab):
    proc = dns_lab.kubelab('exec', '-n', 'shop', 'client', '--', 'curl', '-s', '-m', '5',
                           'http://web/hello')
    assert json.loads(proc.stdout)['path'] == '/hello'
    hosts = dns_lab.kubelab('exec', 'outsider', '--', 'getent', 'hosts', 'web.shop')
    assert hosts.stdout.split()[:2] == [dns_lab.cluster_ip('web', 'shop'),
                                        'web.shop.svc.cluster.local']


def test_srv_for_named_ports_pod_records_and_nxdomain(dns_lab):
    got = resolve(dns_lab, 'outsider', '_http._tcp.web.shop.svc.cluster.local.', 'SRV')
    assert got['answers'] == ['0 100 80 web.shop.svc.cluster.local.']
    ip = dns_lab.pod_ip('client', 'shop')
    dashed = ip.replace('.', '-')
    assert resolve(dns_lab, 'outsider', f'{dashed}.shop.pod.cluster.local.')['answers'] \
        == [ip]
    assert resolve(dns_lab, 'outsider', 'nope.shop.svc.cluster.local.')['rcode'] \
        == 'NXDOMAIN'
    assert resolve(dns_lab, 'outsider', 'web.shop.svc.cluster.local.', 'AAAA')['rcode'] \
        == 'NODATA'


def container_pid(lab, what: str) -> int:
    """The host pid of a running container's PID 1 (``ns/pod/container``), as the lab's
    kubelet reports it for ``kubelab exec``."""
    namespace, pod, container = what.split('/')
    uid = lab.client.get('Pod', namespace, pod)['metadata']['uid']
    return lab.client.lab()['containers'][uid][container]['pid']


def test_a_headless_service_answers_its_ready_pods(dns_lab):
    ips = sorted(dns_lab.pod_ip(f'db-{i}', 'shop') for i in (0, 1))
    assert resolve(dns_lab, 'client', 'db', namespace='shop')['answers'] == ips
    srv = resolve(dns_lab, 'client', '_pg._tcp.db.shop.svc.cluster.local.', 'SRV',
                  namespace='shop')
    # A headless Service's SRV records name each endpoint and its port (no proxy between).
    assert sorted(a.split()[2:] for a in srv['answers']) == sorted(
        ['3000', f'{ip.replace(".", "-")}.db.shop.svc.cluster.local.'] for ip in ips)
    # db-1's server stops answering (SIGSTOP): its readiness probe fails, the name
    # answers db-0 only; SIGCONT, and it is back.
    server = container_pid(dns_lab, 'shop/db-1/echo')
    os.kill(server, signal.SIGSTOP)
    try:
        ready = dns_lab.pod_ip('db-0', 'shop')
        dns_lab.client.wait_for(
            lambda: resolve(dns_lab, 'client', 'db', namespace='shop').get('answers')
            == [ready], 'db-1 to leave the headless answer', timeout=15)
    finally:
        os.kill(server, signal.SIGCONT)
    dns_lab.client.wait_for(
        lambda: resolve(dns_lab, 'client', 'db', namespace='shop').get('answers') == ips,
        'db-1 to come back', timeout=15)


def test_a_new_service_resolves_and_a_deleted_one_is_gone_within_a_second(dns_lab):
    svc = ('apiVersion: v1\nkind: Service\nmetadata: {name: fresh, namespace: shop}\n'
           'spec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 3000}]\n')

    def until(want, what):
        start = time.monotonic()
        while time.monotonic() - start < 5:
            got = resolve(dns_lab, 'outsider', 'fresh.shop.svc.cluster.local.')
            if want(got):
                return time.monotonic() - start
        pytest.fail(f'{what}: {got}')

    dns_lab.apply(svc, wait=False)
    vip = dns_lab.cluster_ip('fresh', 'shop')
    took = until(lambda g: g.get('answers') == [vip], 'fresh never resolved')
    dns_lab.kubelab('delete', 'service', 'fresh', '-n', 'shop')
    gone = until(lambda g: g['rcode'] == 'NXDOMAIN', 'fresh never went away')
    print(f'\nnew Service resolvable after {took:.2f} s, NXDOMAIN after {gone:.2f} s')
    # Each check costs a `kubelab exec` of the lookup (~0.3 s): the first one that ran
    # after the change already saw it.
    assert took < 1.5 and gone < 1.5


def test_dns_keeps_answering_when_a_dns_pod_is_deleted(dns_lab):
    vip = dns_lab.cluster_ip('web', 'shop')
    [victim, _] = dns_lab.pods({'k8s-app': 'kube-dns'}, namespace='kube-system')
    dns_lab.kubelab('delete', 'pod', victim['metadata']['name'], '-n', 'kube-system',
                    '--wait=false')
    for _ in range(10):
        assert resolve(dns_lab, 'outsider', 'web.shop')['answers'] == [vip]
    dns_lab.client.wait_ready(namespace='kube-system')
    assert len(dns_lab.pods({'k8s-app': 'kube-dns'}, namespace='kube-system')) == 2


def test_same_name_in_two_namespaces_are_two_services_and_namespaces_delete_their_objects(
        dns_lab):
    dns_lab.kubelab('create', 'namespace', 'other')
    dns_lab.apply('apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: other}\n'
                  'spec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 3000}]\n')
    other = dns_lab.cluster_ip('web', 'other')
    assert other != dns_lab.cluster_ip('web', 'shop')
    assert resolve(dns_lab, 'outsider', 'web.other')['answers'] == [other]
    listing = dns_lab.kubelab('get', 'svc', '-A').stdout
    assert any(line.split()[:2] == ['other', 'web'] for line in listing.splitlines())
    dns_lab.kubelab('delete', 'namespace', 'other')
    dns_lab.client.wait_dataplane()
    assert resolve(dns_lab, 'outsider', 'web.other')['rcode'] == 'NXDOMAIN'
    with pytest.raises(Exception):
        dns_lab.client.get('Service', 'other', 'web')


def test_a_new_pods_name_is_served_from_the_pods_file_alone(dns_lab):
    """Without a headless Service (which may name a pod), a pod's new address rewrites
    the pods' records file alone (the records file holds every Service's names: at
    10,000 Services, 24,000 of them): the pod's name and its address's PTR answer
    within a second of its address, the records file untouched. (The module's last
    test: it deletes the headless Service db.)"""
    from kubelab.daemon.statedir import state_path
    from services.dns import pod_records_path
    records = state_path('dns', 'records.json')
    dns_lab.kubelab('delete', 'service', 'db', '-n', 'shop')
    dns_lab.client.wait_for(
        lambda: resolve(dns_lab, 'outsider', 'db.shop.svc.cluster.local.')['rcode']
        == 'NXDOMAIN', 'the headless Service to go', timeout=10)
    written = os.stat(records).st_mtime_ns
    dns_lab.apply(shell_pods(('late', 'worker-2')), wait=False)
    ip = dns_lab.client.wait_for(lambda: dns_lab.pod_ip('late'), 'the pod\'s address',
                                 interval=0.02)
    addressed = time.monotonic()
    dashed = ip.replace('.', '-')
    dns_lab.client.wait_for(
        lambda: resolve(dns_lab, 'outsider', f'{dashed}.default.pod.cluster.local.').get(
            'answers') == [ip], 'the pod\'s name to resolve', timeout=5, interval=0)
    took = time.monotonic() - addressed
    reverse = '.'.join(reversed(ip.split('.'))) + '.in-addr.arpa.'
    assert resolve(dns_lab, 'outsider', reverse, 'PTR')['answers'] == [
        f'{dashed}.default.pod.cluster.local.']
    print(f'\nthe pod\'s name resolvable {took:.2f} s after its address')
    assert took < 1.5        # (each look is a `kubelab exec` of ~0.3 s)
    assert os.stat(records).st_mtime_ns == written
    assert os.stat(pod_records_path(records)).st_mtime_ns > written
