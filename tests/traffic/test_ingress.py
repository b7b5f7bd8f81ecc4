"""Ingress through the lab's ingress-nginx (a real nginx in a pod on worker-1):
External Client -> NodeIP:80/443 (hostPort) or the controller's LoadBalancer address
-> nginx -> ClusterIP Service -> Pod.

The backends are Gateway API conformance's echo server: every answer names the pod that
gave it and echoes the path, Host and headers that arrived. Each test applies its own
Ingresses and deletes them at the end; ``apply --wait`` returns once nginx runs the new
configuration.
"""

import json
import os
import subprocess
import tempfile

import pytest

from tests.traffic.manifests import echo_backend, echo_pod

BACKENDS = ['svc-a', 'svc-b', 'svc-c', 'svc-d']
CONTROLLER = ('ingress-nginx', 'ingress-nginx-controller')


def ingress(name, rules=(), default=None, tls=None, cls=None, annotations=None) -> str:
    """An Ingress as JSON (YAML's subset): ``rules`` is [(host, [(pathType, path,
    service)])], ``default`` a Service for defaultBackend, ``tls`` [(hosts, secret)]."""
    spec = {}
    if cls:
        spec['ingressClassName'] = cls
    if default:
        spec['defaultBackend'] = {'service': {'name': default, 'port': {'number': 80}}}
    if rules:
        spec['rules'] = []
        for host, paths in rules:
            rule = {'http': {'paths': [
                {'pathType': kind, 'path': path,
                 'backend': {'service': {'name': svc, 'port': {'name': 'http'}}}}
                for kind, path, svc in paths]}}
            if host:
                rule['host'] = host
            spec['rules'].append(rule)
    if tls:
        spec['tls'] = [{'hosts': hosts, 'secretName': secret} for hosts, secret in tls]
    meta = {'name': name}
    if annotations:
        meta['annotations'] = annotations
    return json.dumps({'apiVersion': 'networking.k8s.io/v1', 'kind': 'Ingress',
                       'metadata': meta, 'spec': spec}) + '\n---\n'


@pytest.fixture(scope='module')
def ing(lab):
    lab.apply(''.join(echo_backend(name) for name in BACKENDS)
              + '---' + echo_pod('plain', 'worker-2', 'plain')
              + '\napiVersion: v1\nkind: Service\nmetadata: {name: plain}\nspec:\n'
                '  selector: {app: plain}\n  ports: [{name: http, port: 80, '
                'targetPort: 8080}]\n')
    lab.client.wait_ready()
    lab.client.wait_ready(namespace='ingress-nginx')
    return lab


@pytest.fixture(scope='module')
def client(ing):
    host = ing.get_json('hosts')['items'][0]
    return 'host/' + host['metadata']['name'], host['status']['addresses'][0]['address']


@pytest.fixture(scope='module')
def node_ip(ing):
    [pod] = ing.pods(namespace='ingress-nginx')
    node = ing.client.get('Node', None, pod['spec']['nodeName'])
    return [a['address'] for a in node['status']['addresses'] if a['type'] == 'InternalIP'][0]


def answered(ing, client, address, path, host, **kw):
    """Which backend Service answered (or the status code when none did)."""
    [r] = ing.request(client[0], address, kw.pop('port', 80), path, host_header=host, **kw)
    assert 'status' in r, r
    if r['status'] != 200:
        return r['status']
    return json.loads(r['body'])['service']


def test_the_controller_is_installed_and_published(ing, node_ip):
    classes = ing.kubelab('get', 'ingressclass').stdout
    assert 'nginx' in classes and 'k8s.io/ingress-nginx' in classes
    [pod] = ing.pods(namespace='ingress-nginx')
    ports = pod['spec']['containers'][0]['ports']
    assert {(p['containerPort'], p.get('hostPort')) for p in ports} >= {(80, 80), (443, 443)}
    svc = ing.client.get('Service', *CONTROLLER)
    assert svc['spec']['type'] == 'LoadBalancer'
    assert svc['status']['loadBalancer']['ingress'][0]['ip']


def test_host_and_lb_address_reach_the_service_through_its_cluster_ip(ing, client, applied,
                                                                     node_ip):
    applied(ingress('web', [(None, [('Prefix', '/', 'svc-a')])]))
    lb_ip = ing.client.get('Service', *CONTROLLER)['status']['loadBalancer']['ingress'][0]['ip']
    got = ing.client.get('Ingress', 'default', 'web')
    assert got['status']['loadBalancer']['ingress'] == [{'ip': lb_ip}]
    table = ing.kubelab('get', 'ingress').stdout.splitlines()
    assert table[0].split() == ['NAME', 'CLASS', 'HOSTS', 'ADDRESS', 'PORTS', 'AGE']
    assert table[1].split()[:5] == ['web', '<none>', '*', lb_ip, '80']
    for address in (node_ip, lb_ip):
        [r] = ing.request(client[0], address, 80, '/anything?x=1', host_header='shop.example')
        assert r['status'] == 200, r
        seen = json.loads(r['body'])
        assert (seen['service'], seen['path'], seen['host']) == ('svc-a', '/anything?x=1',
                                                                 'shop.example')
        # The proxy names the client (both paths keep its address: hostPort DNAT, and
        # the LoadBalancer with externalTrafficPolicy Local).
        assert seen['headers']['X-Forwarded-For'] == [client[1]]
        assert seen['headers']['X-Real-Ip'] == [client[1]]


def test_the_proxy_reaches_the_backend_through_the_cluster_ip(ing, client, applied,
                                                              node_ip):
    """The backend's peer is the controller pod (nginx's own connection), and the
    connection went to the ClusterIP: nginx's upstream is the Service's address."""
    applied(ingress('plain', [(None, [('Prefix', '/', 'plain')])]))
    [r] = ing.request(client[0], node_ip, 80, '/clientip')
    [pod] = ing.pods(namespace='ingress-nginx')
    assert r['status'] == 200 and r['body'].split(':')[0] == pod['status']['podIP'], r
    conf = open(os.path.join(ing.client.lab()['stateDir'], 'l7', 'ingress',
                             'k8s.io_ingress-nginx', 'nginx.conf')).read()
    assert f'{ing.cluster_ip("plain")}:80' in conf
    assert ing.pod_ip('plain') not in conf


def test_an_ingress_may_route_to_a_nodeport_or_a_loadbalancer_service(ing, client, applied):
    """A backend Service of type NodePort or LoadBalancer serves an Ingress as a ClusterIP
    one does (each type builds on ClusterIP): nginx proxies to its ClusterIP, and its pods
    answer; the node port and the load balancer address are for clients outside."""
    typed = ''.join(
        f'---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n'
        f'  type: {kind}\n  selector: {{app: {app}}}\n'
        f'  ports: [{{name: http, port: 80, targetPort: 3000}}]\n'
        for name, kind, app in (('np-c', 'NodePort', 'svc-c'), ('lb-d', 'LoadBalancer', 'svc-d')))
    applied(typed)
    applied(ingress('typed', [('np.example', [('Prefix', '/', 'np-c')]),
                              ('lb.example', [('Prefix', '/', 'lb-d')])]))
    lb_ip = ing.client.get('Service', *CONTROLLER)['status']['loadBalancer']['ingress'][0]['ip']
    conf = open(os.path.join(ing.client.lab()['stateDir'], 'l7', 'ingress',
                             'k8s.io_ingress-nginx', 'nginx.conf')).read()
    for host, service, app in (('np.example', 'np-c', 'svc-c'), ('lb.example', 'lb-d', 'svc-d')):
        assert ing.client.get('Service', 'default', service)['spec']['type'] in (
            'NodePort', 'LoadBalancer')
        [r] = ing.request(client[0], lb_ip, 80, '/', host_header=host)
        assert r['status'] == 200, r
        names = {p['metadata']['name'] for p in ing.pods({'app': app})}
        assert json.loads(r['body'])['pod'] in names
        assert f'{ing.cluster_ip(service)}:80' in conf


# The table of examples in the Kubernetes Ingress documentation ("Examples" under "Path
# types"), one host per row: (paths, request, expected). Paths name their backends in
# order svc-a, svc-b, svc-c; 404: no match (the host has no default backend).
DOC_TABLE = [
    ([('Prefix', '/')], '/anything/at/all', 'svc-a'),
    ([('Exact', '/foo')], '/foo', 'svc-a'),
    ([('Exact', '/foo')], '/bar', 404),
    ([('Exact', '/foo')], '/foo/', 404),
    ([('Exact', '/foo/')], '/foo', 404),
    ([('Prefix', '/foo')], '/foo', 'svc-a'),
    ([('Prefix', '/foo')], '/foo/', 'svc-a'),
    ([('Prefix', '/foo/')], '/foo', 'svc-a'),
    ([('Prefix', '/foo/')], '/foo/', 'svc-a'),
    ([('Prefix', '/aaa/bb')], '/aaa/bbb', 404),
    ([('Prefix', '/aaa/bbb')], '/aaa/bbb', 'svc-a'),
    ([('Prefix', '/aaa/bbb/')], '/aaa/bbb', 'svc-a'),
    ([('Prefix', '/aaa/bbb')], '/aaa/bbb/', 'svc-a'),
    ([('Prefix', '/aaa/bbb')], '/aaa/bbb/ccc', 'svc-a'),
    ([('Prefix', '/aaa/bbb')], '/aaa/bbbxyz', 404),
    ([('Prefix', '/'), ('Prefix', '/aaa')], '/aaa/ccc', 'svc-b'),
    ([('Prefix', '/'), ('Prefix', '/aaa'), ('Prefix', '/aaa/bbb')], '/aaa/bbb', 'svc-c'),
    ([('Prefix', '/'), ('Prefix', '/aaa'), ('Prefix', '/aaa/bbb')], '/ccc', 'svc-a'),
    ([('Prefix', '/aaa')], '/ccc', 404),
    ([('Prefix', '/foo'), ('Exact', '/foo')], '/foo', 'svc-b'),
]


def test_the_kubernetes_documentation_path_examples(ing, client, applied, node_ip):
    rules = [(f'row{i}.example', [(kind, path, BACKENDS[j])
                                  for j, (kind, path) in enumerate(paths)])
             for i, (paths, _, _) in enumerate(DOC_TABLE)]
    applied(ingress('paths', rules))
    got = [answered(ing, client, node_ip, request, f'row{i}.example')
           for i, (_, request, _) in enumerate(DOC_TABLE)]
    assert got == [want for _, _, want in DOC_TABLE]


def test_default_backend_and_no_match(ing, client, applied, node_ip):
    applied(ingress('hosts', [('shop.example', [('Prefix', '/cart', 'svc-a')])],
                    default='svc-d'))
    assert answered(ing, client, node_ip, '/cart/1', 'shop.example') == 'svc-a'
    # The host's own rules decide; its Ingress's default backend takes the rest.
    assert answered(ing, client, node_ip, '/other', 'shop.example') == 'svc-d'
    assert answered(ing, client, node_ip, '/other', 'unknown.example') == 'svc-d'
    ing.delete(ingress('hosts', [('shop.example', [('Prefix', '/cart', 'svc-a')])],
                       default='svc-d'))
    applied(ingress('nodefault', [('shop.example', [('Prefix', '/cart', 'svc-a')])]))
    assert answered(ing, client, node_ip, '/other', 'shop.example') == 404
    assert answered(ing, client, node_ip, '/cart', 'unknown.example') == 404


def test_host_wildcards_match_exactly_one_label(ing, client, applied, node_ip):
    applied(ingress('wild', [('*.foo.com', [('Prefix', '/', 'svc-a')]),
                             ('bar.foo.com', [('Prefix', '/', 'svc-b')])]))
    assert answered(ing, client, node_ip, '/', 'bar.foo.com') == 'svc-b'   # exact first
    assert answered(ing, client, node_ip, '/', 'baz.foo.com') == 'svc-a'
    assert answered(ing, client, node_ip, '/', 'baz.bar.foo.com') == 404
    assert answered(ing, client, node_ip, '/', 'foo.com') == 404


def test_ingress_class_decides_which_controller_serves(ing, client, applied, node_ip):
    applied(ingress('mine', [('a.example', [('Prefix', '/', 'svc-a')])], cls='nginx')
            + ingress('theirs', [('b.example', [('Prefix', '/', 'svc-b')])], cls='other'))
    assert answered(ing, client, node_ip, '/', 'a.example') == 'svc-a'
    assert answered(ing, client, node_ip, '/', 'b.example') == 404
    theirs = ing.client.get('Ingress', 'default', 'theirs')
    assert not (theirs.get('status') or {}).get('loadBalancer', {}).get('ingress')


def make_certificate(directory, host):
    """A CA and a certificate for ``host`` signed by it (PEM files), with openssl."""
    def run(*args):
        subprocess.run(['openssl', *args], check=True, capture_output=True, cwd=directory)
    run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj',
        '/CN=kubelab test CA', '-keyout', 'ca.key', '-out', 'ca.crt')
    run('req', '-newkey', 'rsa:2048', '-nodes', '-subj', f'/CN={host}', '-keyout',
        'tls.key', '-out', 'tls.csr')
    with open(os.path.join(directory, 'ext.cnf'), 'w') as f:
        f.write(f'subjectAltName=DNS:{host}\n')
    run('x509', '-req', '-in', 'tls.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key',
        '-CAcreateserial', '-days', '2', '-extfile', 'ext.cnf', '-out', 'tls.crt')
    return os.path.join(directory, 'ca.crt')


def test_tls_from_a_secret_with_sni_and_the_http_redirect(ing, client, applied, node_ip):
    import base64
    tmp = tempfile.mkdtemp()
    cacert = make_certificate(tmp, 'secure.example')
    data = {k: base64.b64encode(open(os.path.join(tmp, k), 'rb').read()).decode()
            for k in ('tls.crt', 'tls.key')}
    secret = json.dumps({'apiVersion': 'v1', 'kind': 'Secret', 'type': 'kubernetes.io/tls',
                         'metadata': {'name': 'secure-tls'}, 'data': data}) + '\n---\n'
    applied(secret + ingress('secure', [('secure.example', [('Prefix', '/', 'svc-a')])],
                             tls=[(['secure.example'], 'secure-tls')]))
    [ok] = ing.request(client[0], node_ip, 443, '/pay', tls=True, sni='secure.example',
                       cacert=cacert)
    assert ok['status'] == 200, ok
    assert json.loads(ok['body'])['service'] == 'svc-a'
    assert ok['subject'] == 'secure.example'
    [plain] = ing.request(client[0], node_ip, 80, '/pay?x=1', host_header='secure.example')
    assert (plain['status'], plain['location']) == (308, 'https://secure.example/pay?x=1')
    # Another name gets ingress-nginx's own certificate, which the test CA did not sign.
    [other] = ing.request(client[0], node_ip, 443, '/', tls=True, sni='other.example',
                          cacert=cacert)
    assert other['ok'] is False and other['error'].startswith('tls'), other
    [unverified] = ing.request(client[0], node_ip, 443, '/', tls=True, sni='other.example')
    assert unverified['subject'] == 'Kubernetes Ingress Controller Fake Certificate'
    assert ing.kubelab('get', 'ingress', 'secure').stdout.split('\n')[1].split()[4] == '80,'


def test_no_ready_endpoint_is_503_and_nginx_follows_endpoint_changes(ing, client, applied,
                                                                     node_ip):
    applied(ingress('scaled', [('scale.example', [('Prefix', '/', 'svc-c')])]))
    assert answered(ing, client, node_ip, '/', 'scale.example') == 'svc-c'
    ing.kubelab('scale', 'deployment', 'svc-c', '--replicas', '0')
    try:
        ing.client.wait_for(lambda: not ing.pods({'app': 'svc-c'}), 'svc-c to scale down')
        ing.client.wait_dataplane()
        assert answered(ing, client, node_ip, '/', 'scale.example') == 503
    finally:
        ing.kubelab('scale', 'deployment', 'svc-c', '--replicas', '1')
        ing.client.wait_ready()
    assert answered(ing, client, node_ip, '/', 'scale.example') == 'svc-c'


def test_invalid_ingresses_are_refused_and_change_nothing(ing, node_ip):
    conf = os.path.join(ing.client.lab()['stateDir'], 'l7', 'ingress',
                        'k8s.io_ingress-nginx', 'nginx.conf')
    before = open(conf).read()
    bad = [
        (ingress('bad', [(None, [('Regex', '/', 'svc-a')])]), 'pathType'),
        (ingress('bad', [(None, [('Prefix', 'foo', 'svc-a')])]), 'path'),
        (ingress('bad', [(None, [('Prefix', '/', 'svc-a')])]).replace(
            '"port": {"name": "http"}', '"port": {}'), 'port'),
    ]
    for text, field in bad:
        proc = ing.apply(text, check=False)
        assert proc.returncode != 0
        assert field in proc.stderr and 'Nothing was applied' in proc.stderr, proc.stderr
    ing.client.wait_dataplane()
    assert open(conf).read() == before
    with pytest.raises(Exception):
        ing.client.get('Ingress', 'default', 'bad')
