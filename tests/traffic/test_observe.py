"""Seeing the traffic: `kubelab trace` (ofproto/trace on the live switches), `kubelab
flows`, `kubelab top` and `kubelab diagram` on a lab running examples/demo.yaml.

Each trace is checked against what real traffic shows: the address the server saw, the
address the answer came from.
"""

import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET

import pytest

DEMO = os.path.join(os.path.dirname(__file__), '..', '..', 'examples', 'demo.yaml')


@pytest.fixture(scope='module')
def obs(lab):
    lab.kubelab('apply', '-f', DEMO, '--wait')
    lab.client.wait_ready()
    return lab


@pytest.fixture(scope='module')
def nodes(obs):
    return {n['metadata']['name']: [a['address'] for a in n['status']['addresses']
                                    if a['type'] == 'InternalIP'][0]
            for n in obs.client.list('Node')}


def trace(lab, *args) -> str:
    return lab.kubelab('trace', *args, timeout=60).stdout


def test_trace_of_a_cluster_ip_names_the_hops_and_the_dnat(obs):
    web = {p['status']['podIP']: p for p in obs.pods({'app': 'web'})}
    target = sorted(web)[-1]
    vip = obs.cluster_ip('web')
    out = trace(obs, 'client', 'svc/web', '--endpoint', target)
    assert (f'Pod -> ClusterIP {vip}:80 -> EndpointSlice of default/web (3 ready) -> '
            f'Pod IP {target}:8080 -> Container netexec') in out
    assert f'DNAT on kl-n1 (conntrack zone 1): {vip}:80 -> {target}:8080' in out
    assert 'SNAT (masquerade)' not in out
    name = web[target]['metadata']['name']
    assert f'=> delivered to pod default/{name} ({target})' in out
    assert f'the answer comes from {vip}:80: the address the client called' in out
    for table in ('Classifier', 'ConntrackZone', 'ServiceLB', 'L3Forwarding'):
        assert table in out
    assert 'service default/web/tcp/http' in out          # the owner of the flow
    # Real traffic agrees: the pod saw the client's own address.
    [seen] = obs.http('client', vip, 80, '/clientip')
    assert seen['body'].split(':')[0] == obs.pod_ip('client')


def test_trace_of_a_node_port_shows_the_masquerade_the_server_sees(obs, nodes):
    cp = nodes['control-plane']
    out = trace(obs, 'host/client-1', f'{cp}:30080')
    assert 'External Client -> NodeIP:NodePort' in out
    assert f'SNAT (masquerade) on kl-n1 (conntrack zone 1001): 203.0.113.10:40000 -> {cp}' \
        in out
    assert f'the answer comes from {cp}:30080' in out
    [seen] = obs.http('host/client-1', cp, 30080, '/clientip')
    assert seen['body'].split(':')[0] == cp
    # externalTrafficPolicy Local keeps the client's address, in the trace and for real.
    out = trace(obs, 'host/client-1', f'{nodes["worker-1"]}:30081')
    assert 'SNAT (masquerade)' not in out
    [seen] = obs.http('host/client-1', nodes['worker-1'], 30081, '/clientip')
    assert seen['body'].split(':')[0] == '203.0.113.10'


def test_trace_of_a_load_balancer_starts_at_the_cloud_edge(obs):
    lb = obs.client.get('Service', 'default', 'web-lb')['status']['loadBalancer'][
        'ingress'][0]['ip']
    out = trace(obs, 'host/client-1', f'{lb}:80')
    assert f'External Client -> Cloud LB {lb}:80 -> NodeIP:NodePort' in out
    assert 'DNAT on kl-lb (conntrack zone 2000)' in out
    assert f'the answer comes from {lb}:80: the address the client called' in out
    # One note for the Service: the cloud's DNAT to a NodePort and the node's from it.
    assert out.count('belongs to Service default/web-lb') == 1, out
    assert f'The load balancer address {lb}:80 belongs to Service default/web-lb' in out
    assert 'the cloud sends it on to a NodeIP:NodePort' in out
    # The edge's pick: the node its DNAT went to, said from the source port; another
    # port (--sport) may go to another node (test_loadbalancer checks real connections).
    names = {n['ip']: n['name'] for n in obs.client.lab()['nodes']}
    picked = {}
    for sport in (40000, 40002, 40004, 40006):
        out = trace(obs, 'host/client-1', f'{lb}:80', '--sport', str(sport))
        node_ip = re.search(r'DNAT on kl-lb \(conntrack zone 2000\): \S+ -> ([0-9.]+):',
                            out).group(1)
        assert (f"The cloud's load balancer picked node {names[node_ip]} from the client's "
                f'source port {sport}:') in out, out
        picked[sport] = node_ip
    assert len(set(picked.values())) >= 2, picked      # consecutive ports rotate


def test_trace_says_where_a_packet_is_dropped_or_rejected(obs):
    pod_ip = obs.pods({'app': 'web'})[0]['status']['podIP']
    out = trace(obs, 'host/client-1', f'{pod_ip}:8080')
    assert 'DROPPED at kl-ex table L3Forwarding' in out and '(no route)' in out
    [real] = obs.probe('host/client-1', 'tcp', pod_ip, 8080, timeout=1)
    assert real['ok'] is False
    obs.kubelab('scale', 'deployment', 'web-v2', '--replicas', '0')
    try:
        obs.client.wait_for(lambda: not obs.pods({'app': 'web-v2'}), 'web-v2 to go')
        obs.client.wait_dataplane()
        out = trace(obs, 'client', 'svc/web-v2')
        assert 'REJECTED at kl-n1 table ServiceLB: no ready endpoint' in out
        [real] = obs.probe('client', 'tcp', obs.cluster_ip('web-v2'), 80)
        assert real['error'] == 'refused'
    finally:
        obs.kubelab('scale', 'deployment', 'web-v2', '--replicas', '1')
        obs.client.wait_ready()


def test_diagram_of_the_live_lab(obs):
    with tempfile.TemporaryDirectory() as tmp:
        svg = os.path.join(tmp, 'lab.svg')
        out = obs.kubelab('diagram', '-o', svg).stdout
        assert out.startswith(f'wrote {svg}')
        text = ''.join(ET.parse(svg).getroot().itertext())
        for pod in obs.client.list('Pod'):
            assert pod['metadata']['name'] in text
        for svc in obs.client.list('Service'):
            assert svc['metadata']['name'] in text
        for node in ('control-plane', 'worker-1', 'worker-2', 'client-1'):
            assert node in text


def test_flows_attributes_every_installed_flow_to_its_owner(obs):
    obs.client.wait_dataplane()
    report = json.loads(obs.kubelab('flows', '-o', 'json').stdout)
    flows = [f for b in report['bridges'] for t in b['tables'] for f in t['flows']]
    assert len(report['bridges']) == 6 and len(flows) > 200
    assert all(b['error'] is None for b in report['bridges'])
    unattributed = [f for f in flows if not f['owner'] or f['owner'] == 'unknown'
                    or f['status'] not in ('current', 'learned')]
    assert unattributed == []
    web = json.loads(obs.kubelab('flows', '--service', 'web', '-o', 'json').stdout)
    owners = {f['owner'] for b in web['bridges'] for t in b['tables'] for f in t['flows']}
    assert owners and all('default/web' in o for o in owners), owners
    vip = obs.cluster_ip('web')
    assert vip in obs.kubelab('flows', '--service', 'web').stdout


def test_top_counts_new_connections_per_service_and_endpoint(obs):
    vip = obs.cluster_ip('web')
    results = obs.http('client', vip, 80, '/hostname', count=30)
    assert all(r['ok'] for r in results)
    frame = obs.kubelab('top', '--once').stdout
    [row] = [line for line in frame.splitlines() if line.startswith('default/web/tcp/http')]
    total = int(row.split()[-1])
    assert total >= 30, row
    for pod in obs.pods({'app': 'web'}):
        assert pod['metadata']['name'] in frame
