"""The Service API beyond ClusterIP and NodePort, with real traffic: load balancer
addresses and external IPs reached from pods, nodes and external hosts; pods that
terminate behind a preStop hook while they still serve (KEP-1669), the Local policies'
per-node fallback and the health check that says 503 meanwhile; the labels with which
kube-proxy leaves a Service alone, added and removed live; an ExternalName looked up by
name from a pod. Each path's `kubelab trace` is checked against what the traffic shows.

web-1 runs on worker-1 and web-2 on worker-2; shell pods on control-plane and worker-2
send the traffic.
"""

import json
import time

import pytest

from tests.traffic.manifests import echo_pod, shell_pods

APP = (echo_pod('web-1', 'worker-1', 'web') + echo_pod('web-2', 'worker-2', 'web')
       + '\n' + shell_pods(('probe-cp', 'control-plane'), ('probe-w2', 'worker-2')))
#: An address outside every lab network (TEST-NET-1), for external IPs.
EXTERNAL_IP = '192.0.2.10'
#: How long the terminating pods keep serving (their preStop hook).
PRESTOP = 6


def service(name, *, svc_type='ClusterIP', app='web', labels=None, extra=''):
    label_line = f'  labels: {json.dumps(labels)}\n' if labels else ''
    return (f'apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n{label_line}'
            f'spec:\n  type: {svc_type}\n  selector: {{app: {app}}}\n{extra}'
            f'  ports: [{{name: http, port: 80, targetPort: 8080}}]\n')


def serving_pod(name, node, app, grace=15):
    """An agnhost netexec pod with a readiness probe and a preStop hook: once deleted it
    keeps serving for PRESTOP seconds, then exits on SIGTERM."""
    return f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: {grace}
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080]
    ports: [{{containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
    lifecycle: {{preStop: {{sleep: {{seconds: {PRESTOP}}}}}}}
"""


@pytest.fixture(scope='module')
def svc_lab(lab):
    lab.apply(APP)
    lab.client.wait_ready()
    return lab


@pytest.fixture(scope='module')
def nodes(svc_lab):
    return {n['metadata']['name']: [a['address'] for a in n['status']['addresses']
                                    if a['type'] == 'InternalIP'][0]
            for n in svc_lab.client.list('Node')}


def trace(lab, *args) -> str:
    return lab.kubelab('trace', *args, timeout=90).stdout


def lb_address(lab, name):
    return lab.client.get('Service', 'default', name)['status']['loadBalancer'][
        'ingress'][0]['ip']


def seen(results):
    """The client addresses the server saw."""
    return {r['body'].split(':')[0] for r in results}


# ---------------------------------------------------------------- load balancer addresses
def test_pods_and_nodes_reach_a_load_balancer_address_on_their_own_node(svc_lab, nodes,
                                                                          applied):
    applied(service('lb', svc_type='LoadBalancer')
            + '---\n' + service('lbl', svc_type='LoadBalancer',
                                extra='  externalTrafficPolicy: Local\n'))
    lb, lbl = lb_address(svc_lab, 'lb'), lb_address(svc_lab, 'lbl')
    # Cluster: any endpoint, masqueraded as the caller's node (KUBE-EXT's KUBE-MARK-MASQ).
    got = svc_lab.http('probe-cp', lb, 80, '/clientip', count=8)
    assert all(r['ok'] for r in got), got
    assert seen(got) == {nodes['control-plane']}
    names = svc_lab.http('probe-cp', lb, 80, '/hostname', count=30)
    assert {r['body'] for r in names} == {'web-1', 'web-2'}
    # Local: a pod is no external client: any endpoint, its own address kept.
    got = svc_lab.http('probe-cp', lbl, 80, '/clientip', count=8)
    assert all(r['ok'] for r in got) and seen(got) == {svc_lab.pod_ip('probe-cp')}, got
    got = svc_lab.http('node/control-plane', lbl, 80, '/clientip', count=4)
    assert all(r['ok'] for r in got) and seen(got) == {nodes['control-plane']}, got
    # The trace shows the same path: caught on control-plane, masqueraded as it.
    out = trace(svc_lab, 'probe-cp', f'{lb}:80', '--endpoint', svc_lab.pod_ip('web-2'))
    assert f'LoadBalancer IP {lb}:80 (caught on the node)' in out
    assert (f'SNAT (masquerade) on kl-n1 (conntrack zone 1001): '
            f'{svc_lab.pod_ip("probe-cp")}:40000 -> {nodes["control-plane"]}') in out
    assert '=> delivered to pod default/web-2' in out
    assert f'the answer comes from {lb}:80: the address the client called' in out
    out = trace(svc_lab, 'probe-cp', f'{lbl}:80')
    assert 'SNAT (masquerade)' not in out and '=> delivered to pod default/web-' in out


def test_source_ranges_apply_to_pods_too(svc_lab, applied):
    applied(service('ranged', svc_type='LoadBalancer',
                    extra='  loadBalancerSourceRanges: [203.0.113.0/24]\n'))
    ip = lb_address(svc_lab, 'ranged')
    assert all(r['ok'] for r in svc_lab.http('host/client-1', ip, 80, '/hostname',
                                             count=3))
    [blocked] = svc_lab.probe('probe-cp', 'tcp', ip, 80, timeout=1)
    assert blocked['ok'] is False and blocked['error'] == 'timeout', blocked
    out = trace(svc_lab, 'probe-cp', f'{ip}:80')
    assert '=> DROPPED at kl-n1 table ServiceLB' in out


def test_an_external_ip_from_a_pod_and_from_an_external_host(svc_lab, nodes, applied):
    applied(service('ext', extra=f'  externalIPs: [{EXTERNAL_IP}]\n'
                                 '  sessionAffinity: ClientIP\n'))
    table = svc_lab.kubelab('get', 'svc', 'ext').stdout
    assert EXTERNAL_IP in table and 'ClusterIP' in table
    # From a pod: caught on its own node (worker-2), masqueraded as it.
    got = svc_lab.http('probe-w2', EXTERNAL_IP, 80, '/clientip', count=6)
    assert all(r['ok'] for r in got) and seen(got) == {nodes['worker-2']}, got
    # From outside: the lab's router sends it to worker-1, which masquerades as itself.
    got = svc_lab.http('host/client-1', EXTERNAL_IP, 80, '/clientip', count=6)
    assert all(r['ok'] for r in got) and seen(got) == {nodes['worker-1']}, got
    # sessionAffinity ClientIP holds at the external IP as at the ClusterIP.
    [first] = svc_lab.http('host/client-1', EXTERNAL_IP, 80, '/hostname')
    time.sleep(0.3)
    rest = svc_lab.http('host/client-1', EXTERNAL_IP, 80, '/hostname', count=10)
    assert {r['body'] for r in rest} == {first['body']}, (first, rest)
    out = trace(svc_lab, 'host/client-1', f'{EXTERNAL_IP}:80')
    assert f'External Client -> External IP {EXTERNAL_IP}:80' in out
    assert 'external IP, static route to worker-1' in out
    assert f'SNAT (masquerade) on kl-n2 (conntrack zone 1002): 203.0.113.10:40000 -> ' \
           f'{nodes["worker-1"]}' in out
    assert f'the answer comes from {EXTERNAL_IP}:80' in out


# ---------------------------------------------------------------- labels, ExternalName
@pytest.mark.parametrize('label', ['service.kubernetes.io/service-proxy-name',
                                   'service.kubernetes.io/headless'])
def test_a_label_kube_proxy_obeys_takes_effect_live(svc_lab, applied, label):
    plain = service('owned')
    applied(plain)
    vip = svc_lab.cluster_ip('owned')
    assert all(r['ok'] for r in svc_lab.http('probe-cp', vip, 80, '/hostname', count=3))
    result = svc_lab.apply(service('owned', labels={label: 'other-proxy'}))
    assert f'metadata.labels["{label}"]: kube-proxy does not handle this Service' \
        in result.stderr
    # No flows at all: neither balanced nor rejected, the connection times out.
    [r] = svc_lab.probe('probe-cp', 'tcp', vip, 80, timeout=1)
    assert r['ok'] is False and r['error'] == 'timeout', r
    report = json.loads(svc_lab.kubelab('flows', '--service', 'owned', '-o', 'json').stdout)
    assert [f for b in report['bridges'] if b['role'].startswith('node')
            for t in b['tables'] for f in t['flows']] == []
    out = trace(svc_lab, 'probe-cp', f'{vip}:80')
    assert '=> DROPPED at kl-n1 table L3Forwarding' in out
    svc_lab.apply(plain)                                      # the label removed
    assert all(r['ok'] for r in svc_lab.http('probe-cp', vip, 80, '/hostname', count=3))


def test_an_external_name_is_looked_up_by_name_from_a_pod(svc_lab, applied):
    applied(service('target') + '---\napiVersion: v1\nkind: Service\n'
            'metadata: {name: alias}\nspec: {type: ExternalName, '
            'externalName: target.default.svc.cluster.local}\n')
    table = svc_lab.kubelab('get', 'svc', 'alias').stdout
    assert 'ExternalName' in table and 'target.default.svc.cluster.local' in table
    assert '<none>' in table                                   # no ClusterIP
    out = svc_lab.kubelab('exec', 'probe-cp', '--', 'nslookup',
                          'alias.default.svc.cluster.local').stdout
    assert 'canonical name = target.default.svc.cluster.local' in out
    assert svc_lab.cluster_ip('target') in out
    body = svc_lab.kubelab('exec', 'probe-cp', '--', 'wget', '-qO-',
                           'http://alias/hostname').stdout
    assert body in ('web-1', 'web-2')


# ---------------------------------------------------------------- terminating endpoints
def endpoint_conditions(lab, service_name, pod_name):
    for s in lab.client.list('EndpointSlice', 'default'):
        if s['metadata']['labels'].get('kubernetes.io/service-name') == service_name:
            for ep in s.get('endpoints') or ():
                if ep['targetRef']['name'] == pod_name:
                    return ep['conditions']
    return None


def test_a_terminating_pod_serves_until_its_end_under_load(svc_lab, applied):
    applied(serving_pod('term-1', 'worker-1', 'term') + serving_pod('term-2', 'worker-2', 'term')
            + '---\n' + service('term', app='term'))
    vip = svc_lab.cluster_ip('term')
    stream = svc_lab.background('probe-cp', 'stream', vip, 80, path='/hostname',
                                interval=0.05, timeout=1)
    time.sleep(1)
    first_at = time.time()
    svc_lab.kubelab('delete', 'pod', 'term-1', '--wait=false')
    svc_lab.client.wait_for(lambda: endpoint_conditions(svc_lab, 'term', 'term-1') == {
        'ready': False, 'serving': True, 'terminating': True},
        'term-1 to be serving and terminating', timeout=5)
    svc_lab.client.wait_for(lambda: endpoint_conditions(svc_lab, 'term', 'term-1') is None,
                            'term-1 to be gone', timeout=PRESTOP + 10)
    # Now term-2 is the only pod: deleted, it still serves (no ready endpoint is left).
    second_at = time.time()
    svc_lab.kubelab('delete', 'pod', 'term-2', '--wait=false')
    svc_lab.client.wait_for(lambda: endpoint_conditions(svc_lab, 'term', 'term-2') is None,
                            'term-2 to be gone', timeout=PRESTOP + 10)
    gone_at = time.time()
    time.sleep(1.5)
    result = stream.stop()
    events = result['events']
    phase1 = [e for e in events if first_at <= e[0] < second_at]
    phase2 = [e for e in events if second_at <= e[0] < second_at + PRESTOP - 1]
    after = [e for e in events if e[0] > gone_at + 0.5]
    print(f'term-1 deleted under load: {len(phase1)} requests, '
          f'{sum(e[1] != "ok" for e in phase1)} failed; the last pod terminating: '
          f'{len(phase2)} requests, {sum(e[1] != "ok" for e in phase2)} failed')
    assert phase1 and all(e[1] == 'ok' for e in phase1), phase1
    assert {e[2] for e in phase1[len(phase1) // 2:]} == {'term-2'}
    assert phase2 and all(e[1] == 'ok' and e[2] == 'term-2' for e in phase2), phase2
    assert after and all(e[1] == 'refused' for e in after), after[:5]


def test_the_local_fallback_is_per_node_and_its_health_check_says_503(svc_lab, nodes,
                                                                       applied):
    applied(serving_pod('loc-1', 'worker-1', 'loc') + serving_pod('loc-2', 'worker-2', 'loc')
            + '---\n' + service('loc', app='loc', svc_type='LoadBalancer',
                                extra='  externalTrafficPolicy: Local\n'))
    svc = svc_lab.client.get('Service', 'default', 'loc')
    node_port, health = svc['spec']['ports'][0]['nodePort'], svc['spec']['healthCheckNodePort']
    [ok] = svc_lab.http('host/client-1', nodes['worker-1'], health, '/healthz')
    assert ok['status'] == 200, ok
    svc_lab.kubelab('delete', 'pod', 'loc-1', '--wait=false')
    svc_lab.client.wait_for(lambda: (endpoint_conditions(svc_lab, 'loc', 'loc-1') or {}).get(
        'terminating'), 'loc-1 to be terminating', timeout=5)
    deleted = time.time()
    # worker-1 still has a ready endpoint elsewhere in the cluster (loc-2), yet its own,
    # terminating one takes its NodePort's clients: the fallback is per node.
    got = svc_lab.http('host/client-1', nodes['worker-1'], node_port, '/hostname', count=4)
    assert [r['body'] for r in got] == ['loc-1'] * 4, got
    [client] = svc_lab.http('host/client-1', nodes['worker-1'], node_port, '/clientip')
    assert client['body'].split(':')[0] == '203.0.113.10'
    # ... while kube-proxy's health check tells the load balancer to go elsewhere.
    [sick] = svc_lab.http('host/client-1', nodes['worker-1'], health, '/healthz')
    assert sick['status'] == 503 and json.loads(sick['body'])['localEndpoints'] == 0, sick
    [well] = svc_lab.http('host/client-1', nodes['worker-2'], health, '/healthz')
    assert well['status'] == 200, well
    got = svc_lab.http('host/client-1', nodes['worker-2'], node_port, '/hostname', count=3)
    assert [r['body'] for r in got] == ['loc-2'] * 3, got
    # The trace of worker-1's NodePort agrees: DNAT to loc-1, the client's address kept.
    out = trace(svc_lab, 'host/client-1', f'{nodes["worker-1"]}:{node_port}')
    assert time.time() - deleted < PRESTOP, 'the checks took longer than the preStop hook'
    loc_1 = svc_lab.pod_ip('loc-1')
    assert f'DNAT on kl-n2 (conntrack zone 2): {nodes["worker-1"]}:{node_port} -> ' \
           f'{loc_1}:8080' in out
    assert 'SNAT (masquerade)' not in out and f'=> delivered to pod default/loc-1 ({loc_1})' in out
