"""ClusterIP Services through the switches: DNAT to ready endpoints, un-NAT on the way
back, REJECT when nothing is ready, and changes that reach the switches fast."""

import os
import subprocess
import sys
import time
from collections import Counter

import pytest

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: netexec
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=8080, --udp-port=8081]
        ports:
        - {name: http, containerPort: 8080}
        - {name: udp, containerPort: 8081, protocol: UDP}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
      - name: hostname
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [serve-hostname, --port=9376]
        ports:
        - {name: plain, containerPort: 9376}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: udp, port: 53, targetPort: udp, protocol: UDP}
  - {name: plain, port: 9376, targetPort: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {role: client}}
spec:
  nodeName: control-plane
  containers:
  - name: shell
    image: busybox:1.36
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 1; done']
"""


@pytest.fixture(scope='module')
def web(lab):
    lab.apply(APP)
    return lab


def names(results):
    return Counter(r.get('body') for r in results if r['ok'])


def web_pods(lab):
    return {p['metadata']['name']: p for p in lab.pods({'app': 'web'})}


def test_vip_reaches_a_pod_that_sees_the_client_pod_ip(web):
    vip = web.cluster_ip('web')
    client_ip = web.pod_ip('client')
    [r] = web.http('client', vip, 80, '/clientip')
    assert r['ok'], r
    # The server saw the client pod's own address (no SNAT inside the cluster); the
    # handshake completed with the VIP, so the reply was un-NATed back to the VIP.
    assert r['body'].split(':')[0] == client_ip


def test_new_connections_spread_over_all_ready_replicas(web):
    vip = web.cluster_ip('web')
    got = names(web.http('client', vip, 80, '/hostname', count=60))
    assert sum(got.values()) == 60
    assert set(got) == set(web_pods(web)), got


def test_udp_through_the_cluster_ip(web):
    vip = web.cluster_ip('web')
    results = web.probe('client', 'udp', vip, 53, 'hostname', count=20)
    assert all(r['ok'] for r in results), results
    assert set(names(results)) <= set(web_pods(web))


def test_every_port_of_a_multi_port_service_reaches_its_named_target_port(web):
    vip = web.cluster_ip('web')
    [http] = web.http('client', vip, 80, '/hostname')
    [plain] = web.http('client', vip, 9376, '/')
    assert http['ok'] and plain['ok'], (http, plain)
    assert http['body'] in web_pods(web)
    assert plain['body'] in web_pods(web)
    slices = web.client.list('EndpointSlice')
    ports = {(p['name'], p['port']) for s in slices for p in s['ports']
             if s['metadata']['labels']['kubernetes.io/service-name'] == 'web'}
    assert ports == {('http', 8080), ('udp', 8081), ('plain', 9376)}


def test_a_port_the_service_does_not_declare_is_refused(web):
    vip = web.cluster_ip('web')
    [r] = web.probe('client', 'tcp', vip, 8080)
    assert r == {'ok': False, 'error': 'refused', 'ms': r['ms']}
    assert r['ms'] < 500


def test_replaced_pod_gets_a_new_name_and_ip_and_the_service_keeps_answering(web):
    vip = web.cluster_ip('web')
    before = web_pods(web)
    victim = sorted(before)[0]
    old_ip = before[victim]['status']['podIP']
    web.kubelab('delete', 'pod', victim, '--wait')
    web.client.wait_ready()
    after = web_pods(web)
    assert victim not in after and len(after) == 3
    [new] = set(after) - set(before)
    assert after[new]['status']['podIP'] != old_ip
    got = names(web.http('client', vip, 80, '/hostname', count=60))
    assert victim not in got
    assert new in got, got


def test_scale_to_zero_refuses_at_once_and_scale_up_serves_again(web):
    vip = web.cluster_ip('web')
    web.kubelab('scale', 'deployment', 'web', '--replicas', '0')
    # Terminating pods leave the Service at once (their endpoints turn not ready),
    # before their containers have exited.
    web.client.wait_for(lambda: not web_pods(web), 'the web pods to be terminating')
    web.client.wait_dataplane()
    try:
        tcp = web.probe('client', 'tcp', vip, 80, count=3)
        udp = web.probe('client', 'udp', vip, 53, 'hostname', count=3)
        assert [r['error'] for r in tcp] == ['refused'] * 3, tcp
        assert all(r['ms'] < 500 for r in tcp), tcp           # refused, not timed out
        assert [r['error'] for r in udp] == ['refused'] * 3, udp  # ICMP port-unreachable
    finally:
        web.kubelab('scale', 'deployment', 'web', '--replicas', '3')
        web.client.wait_ready()
    got = names(web.http('client', vip, 80, '/hostname', count=30))
    assert sum(got.values()) == 30


def test_a_not_ready_pod_gets_no_traffic(web):
    vip = web.cluster_ip('web')
    web.apply("""
apiVersion: v1
kind: Pod
metadata: {name: not-ready, labels: {app: web}}
spec:
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      tcpSocket: {port: 9999}
      periodSeconds: 1
""", wait=False)
    try:
        web.client.wait_for(lambda: web.pod_ip('not-ready'), 'the pod to get an IP')
        web.client.wait_for(lambda: 'not-ready' in {
            e['targetRef']['name'] for s in web.client.list('EndpointSlice')
            for e in s['endpoints']}, 'the pod to appear in the EndpointSlice')
        eps = {e['targetRef']['name']: e['conditions']
               for s in web.client.list('EndpointSlice') for e in s['endpoints']}
        assert eps['not-ready']['ready'] is False
        got = names(web.http('client', vip, 80, '/hostname', count=40))
        assert 'not-ready' not in got and sum(got.values()) == 40
    finally:
        web.kubelab('delete', 'pod', 'not-ready', '--grace-period', '0', '--wait')


def test_changes_reach_the_switches_fast_without_breaking_open_connections(web):
    vip = web.cluster_ip('web')
    pid = web.netns_pid('client')
    # A keep-alive connection to the VIP that sends a request every 100 ms for 4 s.
    script = (
        'import socket,time\n'
        f's=socket.create_connection(("{vip}",80),timeout=2)\n'
        'ok=0\n'
        'end=time.time()+4\n'
        'while time.time()<end:\n'
        '  s.sendall(b"GET /hostname HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")\n'
        '  d=s.recv(4096)\n'
        '  ok+=d.startswith(b"HTTP/1.1 200")\n'
        '  time.sleep(0.1)\n'
        'print(ok)\n')
    keep = subprocess.Popen(['nsenter', f'--net=/proc/{pid}/ns/net', '--', 'python3', '-c',
                             script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(0.5)
    start = time.monotonic()
    web.kubelab('scale', 'deployment', 'web', '--replicas', '4')
    web.client.wait_ready()
    scaled = time.monotonic() - start
    start = time.monotonic()
    web.apply("""
apiVersion: v1
kind: Service
metadata: {name: extra}
spec:
  selector: {app: web}
  ports: [{port: 8080, targetPort: 8080}]
""", wait=False)
    web.client.wait_dataplane(timeout=5)
    service_seconds = time.monotonic() - start
    [extra] = web.http('client', web.cluster_ip('extra'), 8080, '/hostname')
    pods_then = set(web_pods(web))
    out, err = keep.communicate(timeout=20)
    web.kubelab('delete', 'service', 'extra')
    web.kubelab('scale', 'deployment', 'web', '--replicas', '3')
    web.client.wait_ready()
    print(f'scale 3->4 ready in {scaled:.2f} s; new Service in the switches in '
          f'{service_seconds:.2f} s (CLI included); open connection served {out.strip()} '
          'requests')
    assert service_seconds < 1.0
    assert keep.returncode == 0, err
    assert int(out) >= 30        # ~38 expected: none failed while the flows changed
    assert extra['ok'] and extra['body'] in pods_then, extra


def test_headless_service_gets_no_virtual_ip_but_endpoints(web, ovs_flows):
    web.apply("""
apiVersion: v1
kind: Service
metadata: {name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
""")
    try:
        svc = web.client.get('Service', 'default', 'web-headless')
        assert svc['spec']['clusterIP'] == 'None'
        table = web.kubelab('get', 'svc', 'web-headless').stdout
        assert 'None' in table.splitlines()[1].split()
        slices = [s for s in web.client.list('EndpointSlice')
                  if s['metadata']['labels']['kubernetes.io/service-name'] == 'web-headless']
        assert len([e for s in slices for e in s['endpoints']]) == 3
    finally:
        web.kubelab('delete', 'service', 'web-headless')


def test_a_pod_reaches_itself_through_its_own_service(web):
    """Hairpin: with one replica, every request of the pod to its own Service comes back
    to it; the server sees the node's pod gateway (kube-proxy masquerades hairpin)."""
    web.kubelab('scale', 'deployment', 'web', '--replicas', '1')
    try:
        web.client.wait_ready()
        [pod] = web_pods(web).values()
        name, vip = pod['metadata']['name'], web.cluster_ip('web')
        tcp = web.http(f'pod/{name}', vip, 80, '/clientip', count=10)
        udp = web.probe(f'pod/{name}', 'udp', vip, 53, 'clientip', count=5)
        gateway = pod['status']['podIP'].rsplit('.', 1)[0] + '.1'
        assert all(r['ok'] for r in tcp + udp), tcp + udp
        assert {r['body'].split(':')[0] for r in tcp + udp} == {gateway}
    finally:
        web.kubelab('scale', 'deployment', 'web', '--replicas', '3')
        web.client.wait_ready()


def test_a_pod_reaches_an_external_host_as_its_node(web):
    """Egress: the external network routes only the nodes' addresses, so a pod's
    connection to an external host leaves masqueraded as its node (SNAT, without a
    recirculation), and the answers come back to the pod, over TCP and UDP."""
    [host] = [h for h in web.client.lab()['hosts'] if h['name'] == 'client-1']
    pid = web.netns_pid('host/client-1')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    server = subprocess.Popen(['nsenter', f'--net=/proc/{pid}/ns/net', '--', web.python,
                               '-m', 'topo.images.agnhost', 'netexec', '--http-port=8090',
                               '--udp-port=8091'], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        pods = web_pods(web)
        seen = {}
        for name, pod in pods.items():
            deadline = time.monotonic() + 15
            while not web.http(f'pod/{name}', host['ip'], 8090, '/clientip')[0]['ok'] \
                    and time.monotonic() < deadline:
                time.sleep(0.3)       # the server's first seconds
            tcp = web.http(f'pod/{name}', host['ip'], 8090, '/clientip', count=3)
            udp = web.probe(f'pod/{name}', 'udp', host['ip'], 8091, 'clientip', count=3)
            assert all(r['ok'] for r in tcp + udp), tcp + udp
            seen[name] = ({r['body'].split(':')[0] for r in tcp + udp},
                          pod['status']['hostIP'])
        assert all(got == {node} for got, node in seen.values()), seen
        assert len({node for _, node in seen.values()}) > 1, seen   # pods on two nodes
    finally:
        server.terminate()
        server.wait()


def test_a_rejected_apply_changes_nothing_in_the_running_lab(web):
    vip = web.cluster_ip('web')
    before = {k: web.get_json(k)['items'] for k in ('pods', 'services', 'endpointslices')}
    proc = web.apply(f"""
apiVersion: v1
kind: Service
metadata: {{name: fresh}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: thief}}
spec:
  clusterIP: {vip}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: outside}}
spec:
  clusterIP: 172.16.0.10
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: bad-port}}
spec:
  ports: [{{port: 70000}}]
""", check=False)
    assert proc.returncode == 1
    assert 'Service default/thief: spec.clusterIP' in proc.stderr
    assert 'already allocated' in proc.stderr
    assert 'Service default/outside: spec.clusterIP' in proc.stderr
    assert '10.96.0.0/12' in proc.stderr
    assert 'Service default/bad-port: spec.ports[0].port' in proc.stderr
    assert '65535' in proc.stderr
    assert 'Nothing was applied.' in proc.stderr
    after = {k: web.get_json(k)['items'] for k in ('pods', 'services', 'endpointslices')}
    assert after == before
    [r] = web.http('client', vip, 80, '/hostname')
    assert r['ok']
