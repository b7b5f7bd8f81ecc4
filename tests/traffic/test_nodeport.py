"""NodePort Services from outside the cluster: External Client -> NodeIP:NodePort ->
ClusterIP -> Pod, with kube-proxy's traffic policies, allocation rules and type changes.

Two web pods run on worker-1 and worker-2; the control-plane node runs none of them.
"""

import time

import pytest

from tests.traffic.manifests import echo_pod

APP = echo_pod('web-1', 'worker-1', 'web') + echo_pod('web-2', 'worker-2', 'web') + """
apiVersion: v1
kind: Pod
metadata: {name: probe-cp}
spec:
  nodeName: control-plane
  containers:
  - {name: pause, image: 'registry.k8s.io/pause:3.10'}
---
apiVersion: v1
kind: Pod
metadata: {name: probe-w1}
spec:
  nodeName: worker-1
  containers:
  - {name: pause, image: 'registry.k8s.io/pause:3.10'}
"""


def service(name, node_port=None, svc_type='NodePort', etp=None, itp=None):
    lines = ['apiVersion: v1', 'kind: Service', f'metadata: {{name: {name}}}', 'spec:',
             f'  type: {svc_type}', '  selector: {app: web}']
    if etp:
        lines.append(f'  externalTrafficPolicy: {etp}')
    if itp:
        lines.append(f'  internalTrafficPolicy: {itp}')
    port = '{name: http, port: 80, targetPort: 8080'
    port += f', nodePort: {node_port}}}' if node_port else '}'
    lines += ['  ports:', f'  - {port}',
              '  - {name: udp, port: 81, targetPort: 8081, protocol: UDP}']
    return '\n'.join(lines) + '\n'


@pytest.fixture(scope='module')
def np_lab(lab):
    lab.apply(APP)
    return lab


@pytest.fixture(scope='module')
def nodes(np_lab):
    out = {}
    for n in np_lab.get_json('nodes')['items']:
        out[n['metadata']['name']] = [a['address'] for a in n['status']['addresses']
                                      if a['type'] == 'InternalIP'][0]
    return out


@pytest.fixture(scope='module')
def client(np_lab):
    host = np_lab.get_json('hosts')['items'][0]
    return f'host/{host["metadata"]["name"]}', host['status']['addresses'][0]['address']


def node_port(lab, name, index=0):
    return lab.client.get('Service', 'default', name)['spec']['ports'][index]['nodePort']


def test_every_node_answers_the_node_port_even_without_a_local_pod(np_lab, nodes, client):
    np_lab.apply(service('web'))
    try:
        port = node_port(np_lab, 'web')
        assert 30000 <= port <= 32767
        table = np_lab.kubelab('get', 'svc', 'web').stdout
        assert f'80:{port}/TCP' in table and 'NodePort' in table
        host, _ = client
        for name, ip in nodes.items():
            got = np_lab.http(host, ip, port, '/clientip', count=6)
            assert all(r['ok'] for r in got), (name, got)
            # externalTrafficPolicy Cluster: the backend sees the node that received it.
            assert {r['body'].split(':')[0] for r in got} == {ip}, name
        udp = np_lab.probe(host, 'udp', nodes['control-plane'], node_port(np_lab, 'web', 1),
                           'hostname', count=4)
        assert all(r['ok'] and r['body'] in ('web-1', 'web-2') for r in udp), udp
    finally:
        np_lab.kubelab('delete', 'service', 'web')


def test_connections_the_server_closes_pass_the_masquerade_without_a_syn_timeout(
        np_lab, nodes, client):
    """New connections back to back from one external host through a NodePort that
    masquerades (control-plane runs no endpoint), each closed by the server, which keeps
    it in TIME_WAIT: none fails, none waits for a SYN retransmitted after its 1 s timeout.
    A SYN the server refuses by PAWS, when a masqueraded connection meets one of its
    TIME_WAIT sockets, is retried within milliseconds, which this allows (docs/pipeline.md,
    SNAT); with Open vSwitch's TCP sequence checks on, a random masquerade port failed it."""
    np_lab.apply(service('web'))
    try:
        host, _ = client
        got = np_lab.probe(host, 'rate', nodes['control-plane'], node_port(np_lab, 'web'),
                           count=10 ** 9, seconds=4, timeout=3)
        assert got['failed'] == 0 and got['ok'] >= 1000, got
        assert got['stalled'] == 0, got
    finally:
        np_lab.kubelab('delete', 'service', 'web')


def test_pods_reach_a_node_port_on_any_node_even_when_the_endpoint_is_on_a_third(
        np_lab, nodes):
    # probe-w1 on worker-1 -> control-plane's IP (no endpoint there) -> web-2 on worker-2:
    # the longest path (DNAT and masquerade on control-plane, three node bridges).
    np_lab.apply(service('web'))
    try:
        port = node_port(np_lab, 'web')
        for name, ip in nodes.items():
            got = np_lab.http('probe-w1', ip, port, '/clientip', count=6, timeout=1)
            assert all(r['ok'] and r['ms'] < 900 for r in got), (name, got)
            assert {r['body'].split(':')[0] for r in got} == {ip}, name
        udp = np_lab.probe('probe-w1', 'udp', nodes['control-plane'],
                           node_port(np_lab, 'web', 1), 'hostname', count=4)
        assert all(r['ok'] and r['body'] in ('web-1', 'web-2') for r in udp), udp
    finally:
        np_lab.kubelab('delete', 'service', 'web')


def test_local_policy_keeps_the_client_ip_and_drops_on_nodes_without_endpoints(
        np_lab, nodes, client):
    np_lab.apply(service('local', etp='Local'))
    try:
        port = node_port(np_lab, 'local')
        host, client_ip = client
        [w1] = np_lab.http(host, nodes['worker-1'], port, '/clientip')
        [w1_name] = np_lab.http(host, nodes['worker-1'], port, '/hostname')
        assert w1['ok'] and w1['body'].split(':')[0] == client_ip
        assert w1_name['body'] == 'web-1'              # only its own node's endpoint
        [cp] = np_lab.probe(host, 'tcp', nodes['control-plane'], port, timeout=1)
        assert cp['ok'] is False and cp['error'] == 'timeout', cp      # dropped
        # The node's own pods are not external clients: every endpoint, own IP kept.
        got = np_lab.http('probe-cp', nodes['control-plane'], port, '/clientip', count=6)
        assert all(r['ok'] for r in got), got
        assert {r['body'].split(':')[0] for r in got} == {np_lab.pod_ip('probe-cp')}
    finally:
        np_lab.kubelab('delete', 'service', 'local')


def test_internal_local_policy_keeps_pods_on_their_node(np_lab):
    np_lab.apply(service('near', svc_type='ClusterIP', itp='Local'))
    try:
        vip = np_lab.cluster_ip('near')
        got = np_lab.http('probe-w1', vip, 80, '/hostname', count=12)
        assert {r['body'] for r in got} == {'web-1'}, got
        [none] = np_lab.probe('probe-cp', 'tcp', vip, 80, timeout=1)
        assert none['ok'] is False and none['error'] == 'timeout', none
    finally:
        np_lab.kubelab('delete', 'service', 'near')


def test_cluster_ips_stay_internal(np_lab, client):
    np_lab.apply(service('inside', svc_type='ClusterIP'))
    try:
        host, _ = client
        [r] = np_lab.probe(host, 'tcp', np_lab.cluster_ip('inside'), 80, timeout=1)
        assert r['ok'] is False and r['error'] == 'timeout'
        [r] = np_lab.probe(host, 'tcp', np_lab.pod_ip('web-1'), 8080, timeout=1)
        assert r['ok'] is False and r['error'] == 'timeout'
    finally:
        np_lab.kubelab('delete', 'service', 'inside')


def test_requested_ports_collisions_range_release_and_reuse(np_lab, nodes, client):
    np_lab.apply(service('fixed', node_port=30080))
    try:
        host, _ = client
        [r] = np_lab.http(host, nodes['worker-2'], 30080, '/hostname')
        assert r['ok']
        taken = np_lab.apply(service('thief', node_port=30080), check=False)
        assert taken.returncode == 1
        assert 'Service default/thief: spec.ports[0].nodePort' in taken.stderr
        assert 'provided port is already allocated' in taken.stderr
        outside = np_lab.apply(service('far', node_port=40000), check=False)
        assert outside.returncode == 1
        assert ('provided port is not in the valid range. The range of valid ports is '
                '30000-32767') in outside.stderr
        names = {s['metadata']['name'] for s in np_lab.get_json('services')['items']}
        assert not names & {'thief', 'far'}
    finally:
        np_lab.kubelab('delete', 'service', 'fixed')
    np_lab.apply(service('again', node_port=30080))      # released, so free again
    np_lab.kubelab('delete', 'service', 'again')


def test_type_changes_live_keep_the_cluster_ip(np_lab, nodes, client):
    host, _ = client
    np_lab.apply(service('morph', svc_type='ClusterIP'))
    try:
        vip = np_lab.cluster_ip('morph')
        np_lab.apply(service('morph'))
        port = node_port(np_lab, 'morph')
        assert np_lab.cluster_ip('morph') == vip
        [r] = np_lab.http(host, nodes['worker-1'], port, '/hostname')
        assert r['ok']
        [r] = np_lab.http('probe-cp', vip, 80, '/hostname')
        assert r['ok']
        np_lab.apply(service('morph', svc_type='ClusterIP'))
        svc = np_lab.client.get('Service', 'default', 'morph')
        assert svc['spec']['clusterIP'] == vip
        assert all('nodePort' not in p for p in svc['spec']['ports'])
        [gone] = np_lab.probe(host, 'tcp', nodes['worker-1'], port, timeout=1)
        assert gone['ok'] is False
        np_lab.apply(service('taker', node_port=port))   # the released port is free
        np_lab.kubelab('delete', 'service', 'taker')
    finally:
        np_lab.kubelab('delete', 'service', 'morph')


def affinity_flows(lab, bridge):
    import subprocess
    out = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-flows', bridge, 'table=30'],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if 'cookie=0x4b41ff' in line]


def test_client_ip_session_affinity_sticks_then_spreads_when_switched_off(np_lab, nodes,
                                                                         client):
    sticky = service('sticky').replace('  selector: {app: web}\n',
                                       '  selector: {app: web}\n'
                                       '  sessionAffinity: ClientIP\n'
                                       '  sessionAffinityConfig: {clientIP: '
                                       '{timeoutSeconds: 5}}\n')
    np_lab.apply(sticky)
    try:
        vip, port = np_lab.cluster_ip('sticky'), node_port(np_lab, 'sticky')
        host, _ = client
        for target, ip, to in (('probe-cp', vip, 80), ('probe-w1', vip, 80),
                               (host, nodes['control-plane'], port)):
            # The switch installs a learned flow just after the packet that learns it
            # (docs/pipeline.md, AffinityLearn): the first connection, a pause, the rest.
            [first] = np_lab.http(target, ip, to, '/hostname')
            assert first['ok'], first
            time.sleep(0.2)
            got = np_lab.http(target, ip, to, '/hostname', count=14)
            assert {r['body'] for r in got} == {first['body']}, (target, first, got)
        # The switch forgets a client after timeoutSeconds without a new connection.
        assert affinity_flows(np_lab, 'kl-n1')
        np_lab.client.wait_for(lambda: not affinity_flows(np_lab, 'kl-n1'),
                               'the affinity to expire', timeout=20)
        np_lab.apply(service('sticky'))                   # sessionAffinity back to None
        got = np_lab.http('probe-cp', vip, 80, '/hostname', count=30)
        assert {r['body'] for r in got} == {'web-1', 'web-2'}, got
    finally:
        np_lab.kubelab('delete', 'service', 'sticky')
