"""Pods on nodes: pod-to-pod on one node and across nodes, a multi-container pod whose
containers share one network namespace, exec into pods, nodes and external hosts, and
the kubectl shapes a user's scripts read."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.traffic.manifests import echo_pod


PODS = echo_pod('a1', 'worker-1') + echo_pod('a2', 'worker-1') + echo_pod('b1', 'worker-2') + """
# The seed's multi-container pod: an app and a logger sidecar that talks to it over
# localhost, both in the pod's one network namespace.
apiVersion: v1
kind: Pod
metadata: {name: app-with-sidecar}
spec:
  containers:
  - name: app
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080]
    ports: [{name: http, containerPort: 8080}]
  - name: logger
    image: busybox:1.36
    command: [sh, -c, 'while true; do echo "app says $(wget -qO- http://localhost:8080/hostname)"; sleep 1; done']
"""


@pytest.fixture(scope='module')
def pods(lab):
    lab.apply(PODS)
    return lab


def test_pod_to_pod_on_one_node_keeps_addresses(pods):
    [r] = pods.http('a1', pods.pod_ip('a2'), 8080, '/clientip')
    assert r['ok'], r
    assert r['body'].split(':')[0] == pods.pod_ip('a1')


def test_pod_to_pod_across_nodes_keeps_addresses(pods):
    [r] = pods.http('a1', pods.pod_ip('b1'), 8080, '/clientip')
    assert r['ok'], r
    assert r['body'].split(':')[0] == pods.pod_ip('a1')
    [back] = pods.probe('b1', 'udp', pods.pod_ip('a2'), 8081, 'hostname')
    assert back == {'ok': True, 'body': 'a2', 'ms': back['ms']}


def test_pods_are_placed_where_asked_with_addresses_from_their_node_cidr(pods):
    listing = pods.get_json('pods')
    assert listing['kind'] == 'List'
    by_name = {p['metadata']['name']: p for p in listing['items']}
    nodes = {n['metadata']['name']: n for n in pods.get_json('nodes')['items']}
    for name, node in (('a1', 'worker-1'), ('a2', 'worker-1'), ('b1', 'worker-2')):
        pod = by_name[name]
        assert pod['spec']['nodeName'] == node
        cidr = nodes[node]['spec']['podCIDR']            # 192.168.N.0/24
        assert pod['status']['podIP'].rsplit('.', 1)[0] == cidr.rsplit('.', 1)[0]
        internal = [a['address'] for a in nodes[node]['status']['addresses']
                    if a['type'] == 'InternalIP']
        assert pod['status']['hostIP'] == internal[0]


def test_sidecar_reaches_the_app_over_localhost(pods):
    pods.client.wait_for(lambda: 'app says app-with-sidecar' in pods.kubelab(
        'logs', 'app-with-sidecar', '-c', 'logger').stdout, 'the sidecar to log', timeout=15)
    out = pods.kubelab('exec', 'app-with-sidecar', '-c', 'logger', '--',
                       'wget', '-qO-', 'http://127.0.0.1:8080/hostname').stdout
    assert out == 'app-with-sidecar'


def test_all_containers_of_a_pod_share_its_one_ip(pods):
    ip = pods.pod_ip('app-with-sidecar')
    for container in ('app', 'logger'):
        out = pods.kubelab('exec', 'app-with-sidecar', '-c', container, '--',
                           'ip', '-4', '-o', 'addr', 'show').stdout
        addrs = {(line.split()[1], line.split()[3].split('/')[0])
                 for line in out.splitlines() if ' lo ' not in line}
        assert addrs == {('eth0', ip)}, out      # named eth0, as a CNI plugin names it


def test_exec_reaches_nodes_and_external_hosts(pods):
    nodes = pods.get_json('nodes')['items']
    ips = {n['metadata']['name']: [a['address'] for a in n['status']['addresses']
                                   if a['type'] == 'InternalIP'][0] for n in nodes}
    hosts = pods.get_json('hosts')['items']
    client = hosts[0]['status']['addresses'][0]['address']
    out = pods.kubelab('exec', 'node/worker-1', '--', 'ip', '-4', '-o', 'addr').stdout
    assert ips['worker-1'] in out
    # Node to node over the underlay, and an external host to a node.
    ping = pods.kubelab('exec', 'node/worker-1', '--', 'ping', '-c1', '-W2',
                        ips['control-plane'], check=False)
    assert ping.returncode == 0, ping.stdout
    ping = pods.kubelab('exec', f'host/{hosts[0]["metadata"]["name"]}', '--', 'ping',
                        '-c1', '-W2', ips['worker-2'], check=False)
    assert ping.returncode == 0, ping.stdout
    assert client.startswith('203.0.113.')


def test_external_hosts_cannot_reach_pod_ips(pods):
    hosts = pods.get_json('hosts')['items']
    [r] = pods.probe(f'host/{hosts[0]["metadata"]["name"]}', 'tcp', pods.pod_ip('a1'), 8080,
                     timeout=1)
    assert r['ok'] is False and r['error'] == 'timeout', r


def test_unknown_image_is_refused_with_the_supported_ones_and_nothing_applied(pods):
    proc = pods.apply("""
apiVersion: v1
kind: Pod
metadata: {name: good}
spec:
  containers: [{name: c, image: busybox, command: [sleep, '100']}]
---
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers: [{name: c, image: 'nginx:1.27'}]
""", check=False)
    assert proc.returncode == 1
    assert 'Pod default/bad: spec.containers[0].image' in proc.stderr
    assert 'agnhost' in proc.stderr and 'busybox' in proc.stderr
    names = {p['metadata']['name'] for p in pods.get_json('pods')['items']}
    assert 'good' not in names and 'bad' not in names


def test_a_pod_that_exits_is_restarted_and_its_logs_kept(pods):
    pods.apply("""
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  nodeName: worker-2
  containers:
  - {name: c, image: busybox, command: [sh, -c, 'echo started; sleep 0.3; exit 3']}
""", wait=False)
    try:
        def status():
            return pods.client.get('Pod', 'default', 'crasher')['status'].get(
                'containerStatuses', [{}])[0]
        # kubelet restarts a container the first time at once, then backs off 10 s,
        # 20 s...: CrashLoopBackOff after the second exit, still one restart.
        pods.client.wait_for(lambda: status().get('restartCount', 0) >= 1, 'a restart',
                             timeout=8)
        pods.client.wait_for(lambda: status().get('state', {}).get('waiting', {}).get(
            'reason') == 'CrashLoopBackOff', 'the back-off', timeout=8)
        assert status()['restartCount'] == 1
        assert status()['lastState']['terminated']['exitCode'] == 3
        pods.client.wait_for(lambda: pods.kubelab('logs', 'crasher').stdout.count(
            'started') >= 2, 'the restarted container to log', timeout=5)
    finally:
        pods.kubelab('delete', 'pod', 'crasher', '--grace-period', '0', '--wait')


def test_get_output_shapes(pods):
    table = pods.kubelab('get', 'pods', '-o', 'wide').stdout.splitlines()
    assert table[0].split()[:5] == ['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE']
    row = next(line for line in table if line.startswith('a1 '))
    assert row.split()[1:3] == ['1/1', 'Running']
    assert pods.pod_ip('a1') in row and 'worker-1' in row
    one = json.loads(pods.kubelab('get', 'pod', 'a1', '-o', 'json').stdout)
    assert one['kind'] == 'Pod' and one['metadata']['name'] == 'a1'
    assert pods.kubelab('get', 'pod', 'a1', '-o', 'name').stdout.strip() == 'pod/a1'
    missing = pods.kubelab('get', 'pod', 'nope', check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith('Error from server (NotFound): pods "nope" not found')
    assert missing.stderr.count('NotFound') == 1
    gone = pods.kubelab('delete', 'pod/nope', check=False)
    assert gone.returncode == 1 and gone.stderr.count('NotFound') == 1
    every = pods.kubelab('get', 'pods', '-A').stdout.splitlines()
    assert every[0].split()[:2] == ['NAMESPACE', 'NAME']
    assert any(line.split()[:2] == ['default', 'a1'] for line in every)
    spaces = pods.kubelab('get', 'ns').stdout
    assert 'default' in spaces and 'kube-system' in spaces


def test_pods_reach_external_hosts_masqueraded_as_their_node(pods):
    host = pods.get_json('hosts')['items'][0]
    name = host['metadata']['name']
    address = host['status']['addresses'][0]['address']
    pid = pods.netns_pid(f'host/{name}')
    server = subprocess.Popen(['nsenter', f'--net=/proc/{pid}/ns/net', '--', sys.executable,
                               '-m', 'topo.images.agnhost', 'netexec', '--http-port=8080',
                               '--udp-port=-1'], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=dict(
                                  os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        time.sleep(0.5)
        [r] = pods.http('b1', address, 8080, '/clientip')
        assert r['ok'], r
        node = pods.client.get('Node', None, 'worker-2')
        node_ip = [a['address'] for a in node['status']['addresses']
                   if a['type'] == 'InternalIP'][0]
        assert r['body'].split(':')[0] == node_ip
    finally:
        server.terminate()
        server.wait()
