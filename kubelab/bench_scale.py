"""``kubelab bench --scale N``: Services at scale, the rows the benchmark adds (issue 20).

On the benchmark's lab: ten agnhost pods (``app: scale``, spread by the scheduler over
the workers) and N ClusterIP Services that all select them (10 endpoints each), applied
in batches of 1,000 as a user would. Measured side by side in one run:

* connect latency (a client pod to the ClusterIP of the first and of the last Service:
  ``cold``, the first connection after the datapath's flow cache was emptied, and the
  p50/p99 of back-to-back connections) with 100 Services, then with N;
* N Services applied: the API server's part (every batch accepted), then until every
  switch carries them (the controller reports the version each switch holds, after an
  OpenFlow barrier: ``Client.wait_dataplane``), and until ``kubelab wait`` returns;
* one Service added among N, from the moment the API server accepted it until every
  switch carries it (the median of five);
* a pod that backs all N Services becoming Ready (the kubelet's status write, seen by
  polling) until every switch carries that version, i.e. the pod is in every group (the
  median of three pods, one after the other: one sample moved 217-472 ms with whatever
  else the two cores were doing);
* the resident memory of the lab daemon (API server, store, controllers, kubelets) and of
  the controller (kube-proxy), with 100 and with N Services.
"""

from __future__ import annotations

import statistics
import time

import yaml

from kubelab.bench_policy import connect_latency
from kubelab.daemon.statedir import running_daemon
from kubelab.labctl import LabControl
from services.conditions import pod_ready

BATCH = 1000
PODS = 10
BASE = 100            # the "few Services" side of the latency rows


def pods_manifest(count: int = PODS, first: int = 0) -> str:
    return '\n---\n'.join(f'''apiVersion: v1
kind: Pod
metadata: {{name: scale-{i}, labels: {{app: scale}}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080, --udp-port=-1]
    ports: [{{containerPort: 8080}}]''' for i in range(first, first + count)) + '\n'


def services_manifest(first: int, last: int) -> str:
    return '\n---\n'.join(f'''apiVersion: v1
kind: Service
metadata: {{name: s{i:05d}}}
spec:
  selector: {{app: scale}}
  ports: [{{port: 80, targetPort: 8080}}]''' for i in range(first, last)) + '\n'


def rss_mb(pid: int | None) -> float:
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024
    except (OSError, TypeError):
        pass
    return float('nan')


def memory(lab: LabControl) -> dict:
    daemon = running_daemon()
    return {'daemon': rss_mb(daemon), 'controller': rss_mb(lab.client.lab()['controllerPid'])}


def apply_services(lab: LabControl, first: int, last: int) -> float:
    """Apply Services [first, last) in batches; seconds until the API accepted all."""
    began = time.monotonic()
    for start in range(first, last, BATCH):
        lab.apply(services_manifest(start, min(last, start + BATCH)), wait=False)
    return time.monotonic() - began


def latencies(lab: LabControl, last: int) -> dict:
    return {which: connect_latency(lab, 'bench-direct', lab.cluster_ip(f's{index:05d}'), 80,
                                   warm=200, cold=10)
            for which, index in (('first', 0), ('last', last - 1))}


def one_more(lab: LabControl, index: int) -> float:
    """Apply Service ``index``; seconds from the API's answer to every switch. Through
    the API client itself: after ``kubelab apply`` the answer is a process exit old,
    and the controller may have carried the Service meanwhile."""
    lab.client.apply([yaml.safe_load(services_manifest(index, index + 1))])
    accepted = time.monotonic()
    lab.client.wait_dataplane(timeout=120)
    return time.monotonic() - accepted


def pod_ready_to_groups(lab: LabControl, first: int) -> float:
    """Create a pod that all Services select (``scale-FIRST``); seconds from its Ready
    status to every switch carrying the version that has it."""
    name = f'scale-{first}'
    lab.apply(pods_manifest(1, first), wait=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pod = lab.client.get('Pod', 'default', name)
        if pod_ready(pod):
            break
        time.sleep(0.005)
    seen = time.monotonic()
    lab.client.wait_dataplane(timeout=120)
    return time.monotonic() - seen


def measure(lab: LabControl, count: int) -> dict:
    out = {'count': count}
    print(f'Scale: {PODS} pods, {BASE} Services...', flush=True)
    lab.apply(pods_manifest())
    apply_services(lab, 0, BASE)
    lab.client.wait_dataplane(timeout=120)
    out['mem_base'] = memory(lab)
    out['lat_base'] = latencies(lab, BASE)
    print(f'Scale: {count} Services in batches of {BATCH}...', flush=True)
    began = time.monotonic()
    out['api_s'] = apply_services(lab, BASE, count) + 0.0
    out['switches_s'] = out['api_s'] + lab.client.wait_dataplane(timeout=900)
    lab.kubelab('wait', '--timeout', '900', timeout=960)
    out['wait_s'] = time.monotonic() - began
    out['mem'] = memory(lab)
    print('Scale: one Service more, five times...', flush=True)
    out['one_s'] = statistics.median(one_more(lab, count + i) for i in range(5))
    print('Scale: a pod that backs every Service, three times...', flush=True)
    out['pods_s'] = [pod_ready_to_groups(lab, PODS + i) for i in range(3)]
    out['pod_s'] = statistics.median(out['pods_s'])
    out['lat'] = latencies(lab, count)
    return out


def print_rows(m: dict):
    n = m['count']
    print()
    print(f'{"Services at scale (x10 endpoints)":44} {BASE:>10,} {n:>10,} {"target":>8}')
    print(f'{"  applied (API server, batches of 1,000)":44} {"":>10} '
          f'{m["api_s"]:9.1f}s')
    print(f'{"  ... and carried by every switch":44} {"":>10} {m["switches_s"]:9.1f}s '
          f'{"<=10s":>8}')
    print(f'{"  kubelab wait returned":44} {"":>10} {m["wait_s"]:9.1f}s {"<=15s":>8}')
    print(f'{"  one Service more: API -> every switch":44} {"":>10} '
          f'{m["one_s"] * 1000:8.0f}ms {"<=100ms":>8}')
    print(f'{"  a pod backing all: Ready -> every group":44} {"":>10} '
          f'{m["pod_s"] * 1000:8.0f}ms {"<=300ms":>8}')
    print('    (median of three pods: ' + ', '.join(f'{s * 1000:.0f}' for s in m['pods_s']) +
          ' ms)')
    for which in ('first', 'last'):
        for key, label in (('cold', 'cold'), ('p50', 'p50'), ('p99', 'p99')):
            print(f'{f"  connect to the {which} Service, {label} ms":44} '
                  f'{m["lat_base"][which][key]:10.2f} {m["lat"][which][key]:10.2f} '
                  f'{"flat":>8}')
    for part in ('daemon', 'controller'):
        print(f'{f"  memory (RSS) of the {part}, MB":44} {m["mem_base"][part]:10.0f} '
              f'{m["mem"][part]:10.0f}')
    failed = sum(m[side][w]['failed'] for side in ('lat_base', 'lat')
                 for w in ('first', 'last'))
    print(f'  (client pod bench-direct on worker-1; cold: the first connection after '
          f'ovs-appctl revalidator/purge, median of 10; p50/p99 of 200 back to back; '
          f'{failed} connects failed)')
