"""``kubelab bench --policies N``: NetworkPolicy at scale, the rows the benchmark adds.

On the benchmark's lab (its server pod on worker-2, its client pods on worker-1):

* N policies over ``--policy-pods`` pods (pause containers in namespace ``bench-np``,
  spread by the scheduler over the workers): policy i selects the pods ``app: app-<i mod
  10>`` and admits the pods of two ``role`` labels on two ports. The time from the apply
  to every switch carrying the flows (the controller reports the version each switch
  holds: ``Client.wait_dataplane``), split into the API server's part (validation, the
  store) and the switches' part; and the flows a node bridge holds for them.
* the latency of a new TCP connection from a client pod to the server pod, without
  policies and then with the server and the client isolated (one more policy each way,
  judged among the N): ``cold``, the first connection after the datapath's flow cache
  was emptied (``ovs-appctl revalidator/purge``: the SYN and its answer are translated
  through the OpenFlow tables, the policy tables included), and ``warm``, the median and
  99th percentile of back-to-back connections (the datapath's cached flows).
"""

from __future__ import annotations

import statistics
import subprocess
import time

from kubelab.labctl import LabControl

NAMESPACE = 'bench-np'


def pods_manifest(count: int) -> str:
    docs = [f'apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}']
    docs += [f'''apiVersion: v1
kind: Pod
metadata: {{name: p{i}, namespace: {NAMESPACE}, labels: {{app: app-{i % 10}, role: role-{i % 20}}}}}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{{name: pause, image: 'registry.k8s.io/pause:3.10'}}]''' for i in range(count)]
    return '\n---\n'.join(docs) + '\n'


def policies_manifest(count: int) -> str:
    return '\n---\n'.join(f'''apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: np{i}, namespace: {NAMESPACE}}}
spec:
  podSelector: {{matchLabels: {{app: app-{i % 10}}}}}
  ingress:
  - from:
    - podSelector: {{matchLabels: {{role: role-{i % 20}}}}}
    - podSelector: {{matchLabels: {{role: role-{(i + 7) % 20}}}}}
    ports: [{{port: {8000 + i % 50}}}, {{port: 9000}}]''' for i in range(count)) + '\n'


#: The server (app: bench-server) admits the client pod bench-direct, which may only
#: reach the server: both ends of the measured connection are judged.
ISOLATE_BENCH = '''apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bench-server}
spec:
  podSelector: {matchLabels: {app: bench-server}}
  ingress: [{ports: [{port: 8080}, {port: 5201}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bench-direct}
spec:
  podSelector: {matchLabels: {app: bench-direct}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: bench-server}}}]}]
'''


def connect_latency(lab: LabControl, source: str, host: str, port: int,
                    warm: int = 300, cold: int = 15) -> dict:
    """ms of TCP connects from ``source``: cold (each after a purge of the datapath's
    flows), warm (back to back)."""
    cold_ms = []
    for _ in range(cold):
        subprocess.run(['ovs-appctl', 'revalidator/purge'], capture_output=True)
        [r] = lab.probe(source, 'tcp', host, port, timeout=2)
        if r['ok']:
            cold_ms.append(r['ms'])
    runs = [r['ms'] for r in lab.probe(source, 'tcp', host, port, count=warm, timeout=2)
            if r['ok']]
    runs.sort()
    return {'cold': statistics.median(cold_ms) if cold_ms else float('nan'),
            'p50': statistics.median(runs) if runs else float('nan'),
            'p99': runs[int(len(runs) * 0.99) - 1] if runs else float('nan'),
            'failed': warm + cold - len(runs) - len(cold_ms)}


def policy_flows(bridge: str) -> tuple[int, int]:
    """(flows of the bridge, of them in the NetworkPolicy tables 52-56)."""
    out = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-flows', bridge],
                         capture_output=True, text=True).stdout.splitlines()
    flows = [line for line in out if 'cookie=' in line]
    return len(flows), sum(1 for line in flows
                           if any(f'table={t},' in line for t in range(52, 57)))


def measure(lab: LabControl, policies: int, pods: int, server_ip: str) -> dict:
    """Everything the rows show (see the module's docstring)."""
    lab.kubelab('label', 'pod', 'bench-direct', 'app=bench-direct', '--overwrite')
    print('NetworkPolicy: connection latency without policies...', flush=True)
    before = connect_latency(lab, 'bench-direct', server_ip, 8080)
    print(f'NetworkPolicy: {pods} pods in namespace {NAMESPACE}...', flush=True)
    lab.apply(pods_manifest(pods))
    print(f'NetworkPolicy: {policies} policies...', flush=True)
    text = policies_manifest(policies)
    began = time.monotonic()
    lab.apply(text, wait=False)
    applied = time.monotonic()
    lab.client.wait_dataplane(timeout=600)
    done = time.monotonic()
    total, in_tables = policy_flows('kl-n3')
    lab.apply(ISOLATE_BENCH)
    print('NetworkPolicy: connection latency with them...', flush=True)
    after = connect_latency(lab, 'bench-direct', server_ip, 8080)
    lab.delete(ISOLATE_BENCH)
    return {'policies': policies, 'pods': pods, 'api_s': applied - began,
            'switches_s': done - applied, 'flows': total, 'policy_flows': in_tables,
            'before': before, 'after': after}


def print_rows(m: dict):
    print()
    print(f'{"NetworkPolicy at scale":36} {"":>10} {"value":>10}')
    print(f'{m["policies"]} policies over {m["pods"]} pods: apply (API server) '
          f'{m["api_s"]:.1f} s, then in every switch {m["switches_s"]:.1f} s later')
    print(f'  worker-2\'s bridge: {m["flows"]} flows, {m["policy_flows"]} of them in the '
          'policy tables (conjunctive: a sum of pods, peers and ports per rule)')
    print(f'{"new TCP connection, ms":36} {"without":>10} {"with":>10}')
    for key, label in (('cold', 'first after a cache purge (median)'),
                       ('p50', 'back to back, median'), ('p99', 'back to back, p99')):
        print(f'  {label:34} {m["before"][key]:10.2f} {m["after"][key]:10.2f}')
    failed = m['before']['failed'] + m['after']['failed']
    print(f'  (client pod bench-direct on worker-1 -> server pod on worker-2:8080; with: '
          f'both isolated, among the {m["policies"]} policies; {failed} connects failed)')
