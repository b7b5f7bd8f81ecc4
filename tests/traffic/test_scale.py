"""Services at scale, with real traffic (issue 20).

* A Service with 5,000 endpoints, far more than one OpenFlow group message carries
  (~700 buckets): 4 agnhost ``porter`` pods each serving 1,250 ports are the endpoints
  of a selectorless Service (1,250 EndpointSlices, one per port number). The switches
  hold it as 16 select groups of 312 or 313 chosen by the client's source port, and
  connections are answered by endpoints of every group, far beyond bucket 700 of the
  Service's sorted endpoints.
* 1,000 Services over the same pods: every switch carries them, ``kubelab wait``
  returns, and one more Service among them answers as soon as the switches carry it.
"""

import ipaddress
import subprocess
import time

import pytest

PORTS = 1250                      # x 4 pods: 5,000 endpoints
GROUPS = 16
PODS = [('porter-0', 'worker-1'), ('porter-1', 'worker-2'), ('porter-2', 'worker-1'),
        ('porter-3', 'worker-2')]


def porter_pod(name: str, node: str) -> str:
    env = ''.join(f"\n    - {{name: SERVE_PORT_{20000 + i}, value: '{name}:{20000 + i}'}}"
                  for i in range(PORTS))
    return f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: porter}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: porter
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [porter]
    env:{env}
"""


CLIENT = """---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: control-plane
  terminationGracePeriodSeconds: 0
  containers:
  - {name: pause, image: 'registry.k8s.io/pause:3.10'}
"""

BIG = """---
apiVersion: v1
kind: Service
metadata: {name: big}
spec:
  ports: [{name: http, port: 80}]
"""


def slices(ips: list[str]) -> str:
    endpoints = ', '.join(f"{{addresses: ['{ip}']}}" for ip in ips)
    return ''.join(f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: big-p{i}, labels: {{kubernetes.io/service-name: big}}}}
addressType: IPv4
ports: [{{name: http, port: {20000 + i}, protocol: TCP}}]
endpoints: [{endpoints}]
""" for i in range(PORTS))


def services(first: int, last: int) -> str:
    return ''.join(f"""---
apiVersion: v1
kind: Service
metadata: {{name: s{i:04d}}}
spec:
  selector: {{app: porter}}
  ports: [{{port: 80, targetPort: 20000}}]
""" for i in range(first, last))


@pytest.fixture(scope='module')
def big(lab):
    lab.apply(CLIENT + ''.join(porter_pod(name, node) for name, node in PODS))
    ips = [lab.pod_ip(name) for name, _ in PODS]
    lab.apply(BIG + slices(ips))
    return lab


def sorted_endpoints(lab) -> list[str]:
    """The Service's endpoints as kube-proxy orders them (by IP, then port): the order
    of the buckets before they are dealt over the groups."""
    ips = {name: ipaddress.IPv4Address(lab.pod_ip(name)) for name, _ in PODS}
    eps = [(ips[name], 20000 + i, name) for name, _ in PODS for i in range(PORTS)]
    return [f'{name}:{port}' for _, port, name in sorted(eps)]


def test_a_service_with_5000_endpoints_is_answered_by_every_group(big):
    order = sorted_endpoints(big)
    results = big.probe('client', 'http', big.cluster_ip('big'), 80, '/', count=300)
    answers = [r['body'] for r in results if r['ok']]
    assert len(answers) == 300, [r for r in results if not r['ok']][:3]
    assert set(answers) <= set(order)
    positions = [order.index(a) for a in answers]
    assert max(positions) >= 4000
    # Dealt round-robin: endpoint i is in group i mod 16; 300 connections from
    # ephemeral source ports reach every group (all but one: p < 1e-7).
    assert {p % GROUPS for p in positions} == set(range(GROUPS))


def test_the_switch_holds_it_as_16_groups_of_312_or_313(big):
    bridge = next(n['bridge'] for n in big.client.lab()['nodes']
                  if n['name'] == 'control-plane')
    out = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-groups', bridge],
                         capture_output=True, text=True, check=True).stdout
    ips = {big.pod_ip(name) for name, _ in PODS}
    mine = [line for line in out.splitlines()
            if any(f'nat(dst={ip}:' in line for ip in ips)]
    assert sorted(line.count('bucket=') for line in mine) == [312] * 8 + [313] * 8
    flows = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-flows', bridge],
                           capture_output=True, text=True, check=True).stdout
    vip = big.cluster_ip('big')
    split = [line for line in flows.splitlines()
             if f'nw_dst={vip},' in line and 'tp_dst=80' in line and 'group:' in line]
    assert len(split) == GROUPS and all('tp_src=' in line for line in split), split


def test_1000_services_reach_the_switches_and_one_more_answers_at_once(big):
    began = time.monotonic()
    big.apply(services(0, 1000), wait=False)
    big.client.wait_dataplane(timeout=120)
    programmed = time.monotonic() - began
    big.kubelab('wait', '--timeout', '120', timeout=180)
    assert programmed < 60, f'1,000 Services took {programmed:.1f} s to every switch'
    big.apply(services(1000, 1001), wait=False)
    accepted = time.monotonic()
    big.client.wait_dataplane(timeout=30)
    took = time.monotonic() - accepted
    [result] = big.probe('client', 'http', big.cluster_ip('s1000'), 80, '/')
    assert result['ok'] and result['body'].endswith(':20000'), result
    assert took < 5, f'one Service among 1,000 took {took:.2f} s to every switch'
