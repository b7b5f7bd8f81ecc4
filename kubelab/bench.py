"""``kubelab bench``: the dataplane measured side by side, printed as a table.

One lab, a server pod on worker-2 and client pods on worker-1 (so every packet
crosses two node bridges and the underlay), one Service in front of the server. Each
measurement runs direct (pod IP) and through each path in turn, several rounds
(``--rounds``, 4 by default; every other round in reverse order), so that a noisy
machine slows every side alike; the table shows the ratio via/direct of the rounds'
means, and a note each round's connections/s. ``--paths-only``: only these rows.

  throughput      iperf3 TCP, client pod -> server pod:5201 vs -> ClusterIP:5201
  connections/s   new TCP connections (connect, GET, close) back to back
  failed          short connections through the ClusterIP that failed, out of N
  NodePort        an external host through a NodePort of the control-plane node, which
                  runs no endpoint (two hops: DNAT and SNAT there, then the underlay),
                  against pod -> pod direct
  LoadBalancer    an external host of its own through the cloud load balancer (kl-lb:
                  DNAT to a NodeIP:NodePort, then the NodePort path), against pod -> pod
                  direct (and, in a note, against the NodePort path); and the time from
                  a node's failure until the cloud sends it no new connection
                  (kubelab/bench_failover.py)
  node failure    a second server pod, then one node cut off under streams through the
                  ClusterIP, a NodePort and the load balancer: the last failure of each,
                  the node monitor's grace period plus a little (the lab runs with a
                  10 s grace period, 40 s by default)
  MetalLB         on a second, bare-metal lab: the node announcing a MetalLB address is
                  cut off; the time until the router's entry follows the new announcer
                  and the last failed request (kubelab/bench_metallb.py)
  Ingress         HTTP requests/s and p50/p99 latency (wrk, 8 keep-alive connections)
                  from the external host through the ingress controller (worker-1:80,
                  nginx, then the Service's ClusterIP) against straight to the Service's
                  NodePort on the same node
  NetworkPolicy   with ``--policies N`` (and ``--policies-only`` to skip the rows
                  above): N policies over ``--policy-pods`` pods, the time until every
                  switch carries them, the flows a node holds, and a new connection's
                  latency without and with them (kubelab/bench_policy.py)
  Scale           with ``--scale N`` (``--scale-only``: only these rows): N Services
                  x 10 endpoints applied, in every switch, ``kubelab wait``; one more
                  Service and a pod backing all of them, to every switch; connect
                  latency and memory at 100 and at N Services (kubelab/bench_scale.py)

Each path has a client of its own: a pod on worker-1 for the paths from inside, an
external host for each path from outside (the benchmark's cluster has six), as separate
clients would be: a
server keeps a closed connection in TIME_WAIT for 60 s, keyed by the client's address
and port, and a Linux client's TCP timestamps start at an offset drawn from the
connection's source and destination addresses (a secret hash, fixed per boot). One
client that went to the pod IP and then to the ClusterIP with the same source port would
meet its own TIME_WAIT socket with a timestamp that jumped, backwards for about half of
such address pairs, and Linux refuses that SYN (PAWS) whatever the dataplane does.

Short connections end with an RST from the client once it has read the whole answer
(``--fin-close``: an ordinary close). Each round opens more connections than a client
has source ports for one destination (about 14,000), so ports are reused; with an
ordinary close, a reused port whose previous connection through the ClusterIP is still
in the userspace conntrack's TIME_WAIT (30 s) loses some SYNs on Open vSwitch 3.1 (the
README's benchmark section has the figures). The server closes first, so with an
ordinary close it keeps each connection in TIME_WAIT for 60 s, keyed by the address and
port it saw: for the NodePort and the load balancer, a node's address and the client's
port, which two clients masqueraded by one node can share. Such a SYN meets the other
client's TIME_WAIT with timestamps that jump, and the server refuses about half of them
(PAWS) until the client's RST clears the socket and its SYN, retried a few ms later,
gets through, as on a real node: the note under the table counts those refusals per
path and round when there are any.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from kubelab import bench_failover, bench_metallb
from kubelab.daemon.statedir import running_daemon
from kubelab.labctl import LabControl
from kubelab.printers import datapath_text
from services.errors import KubelabError

#: The benchmark's cluster: the default one with an external host per path from
#: outside (NodePort, load balancer, wrk to the NodePort, wrk with a connection per
#: request, wrk through the Ingress, the load balancer's failover stream, the node
#: failure's streams through a NodePort and the load balancer), and the node monitor's
#: grace period short (40 s by default).
OUTSIDE_PATHS = ('nodeport', 'lb', 'wrk-nodeport', 'wrk-close', 'wrk-ingress', 'failover',
                 'down-nodeport', 'down-lb')
GRACE = 10
CLUSTER = f"""apiVersion: kubelab.io/v1alpha1
kind: Cluster
metadata: {{name: kubelab-bench}}
nodeLifecycle: {{nodeMonitorGracePeriod: {GRACE}s}}
clients:
""" + ''.join(f'  - {{name: client-{i}}}\n' for i in range(1, len(OUTSIDE_PATHS) + 1))

def _client_pod(name: str) -> str:
    return f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: worker-1
  containers:
  - {{name: pause, image: 'registry.k8s.io/pause:3.10'}}
"""


def _service(name: str, kind: str) -> str:
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: {kind}
  selector: {{app: bench-server}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: iperf, port: 5201, targetPort: 5201}}
"""


#: The server on worker-2, a client pod per path on worker-1, the Service as a NodePort
#: and as a LoadBalancer.
MANIFESTS = """
apiVersion: v1
kind: Pod
metadata: {name: bench-server, labels: {app: bench-server}}
spec:
  nodeName: worker-2
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080, --udp-port=-1]
    ports: [{containerPort: 8080}]
""" + ''.join(map(_client_pod, ('bench-direct', 'bench-vip', 'bench-burst'))) + \
    _service('bench', 'NodePort') + _service('bench-lb', 'LoadBalancer') + '''---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench}
spec:
  rules:
  - host: bench.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: bench, port: {name: http}}}}
'''


#: A second server, on worker-1, for the node failure: worker-2's pod fails with its node.
SECOND_SERVER = MANIFESTS.split('---')[0].replace('bench-server, labels',
                                                  'bench-server-2, labels').replace(
    'nodeName: worker-2', 'nodeName: worker-1')


def iperf(lab: LabControl, host: str, seconds: float, port: int, source: str) -> float:
    proc = lab.run_in(source, ['iperf3', '-c', host, '-p', str(port), '-t', str(seconds),
                               '-J'], timeout=seconds + 30)
    if proc.returncode != 0:
        raise KubelabError(f'iperf3 to {host} failed: {proc.stdout[-500:]}{proc.stderr}')
    report = json.loads(proc.stdout)
    if 'error' in report:
        raise KubelabError(f'iperf3 from {source} to {host}:{port}: {report["error"]}')
    return report['end']['sum_received']['bits_per_second'] / 1e9


def rate(lab: LabControl, host: str, port: int, count: int, seconds: float,
         reset: bool, source: str) -> dict:
    return lab.probe(source, 'rate', host, port, count=count, seconds=seconds,
                     timeout=2, reset=reset)


_UNITS = {'us': 1e-3, 'ms': 1.0, 's': 1000.0}


def wrk(lab: LabControl, source: str, url: str, host: str, seconds: float,
        close: bool = False) -> dict:
    """HTTP load with wrk from ``source``: requests/s and the p50/p99 latency (ms);
    ``close``: a new connection for every request."""
    extra = ['-H', 'Connection: close'] if close else []
    argv = ['wrk', '-t', '2', '-c', '8', '-d', f'{seconds:g}s', '--timeout', '2s',
            '--latency', '-H', f'Host: {host}', *extra, url]
    for attempt in (1, 2):
        try:
            proc = lab.run_in(source, argv, timeout=seconds + 15)
            break
        except subprocess.TimeoutExpired:
            # Seen once in many runs: wrk never returned. One more try, then give up.
            if attempt == 2:
                raise KubelabError(f'wrk {url} did not finish within {seconds + 15:g} s '
                                   'twice') from None
    if proc.returncode != 0:
        raise KubelabError(f'wrk {url} failed: {proc.stdout[-500:]}{proc.stderr}')
    out = {}
    for line in proc.stdout.splitlines():
        words = line.split()
        if line.startswith('Requests/sec:'):
            out['rps'] = float(words[1])
        elif len(words) == 2 and words[0] in ('50%', '99%'):
            number = words[1].rstrip('usm')
            out[words[0]] = float(number) * _UNITS[words[1][len(number):]]
        elif 'Socket errors' in line:       # e.g. a server closing a keep-alive
            out['socket_errors'] = sum(int(w.strip(',')) for w in words if w.strip(',')
                                       .isdigit())
        elif 'Non-2xx or 3xx responses' in line:
            raise KubelabError(f'wrk {url}: {line.strip()}')
    out.setdefault('socket_errors', 0)
    return out


def run_bench(args) -> int:
    if getattr(args, 'rounds', 4) < 1:
        raise KubelabError(f'--rounds: must be at least 1, got {args.rounds}')
    if running_daemon():
        raise KubelabError('the benchmark brings up its own lab: `kubelab down` first')
    lab = LabControl()
    print('Bringing up a lab for the benchmark...', flush=True)
    with tempfile.NamedTemporaryFile('w', suffix='.yaml', prefix='bench-cluster-') as f:
        f.write(CLUSTER)
        f.flush()
        lab.up(f.name)
    try:
        info = lab.client.lab()
        print(f'Datapath: {datapath_text(info)}', flush=True)
        code = _measure(lab, args)
    finally:
        lab.down()
    if any(getattr(args, only, False) for only in ('policies_only', 'scale_only',
                                                    'paths_only')):
        return code
    print('Bringing up a bare-metal lab for MetalLB\'s failover...', flush=True)
    lab.up(cloud='none')
    try:
        bench_metallb.print_metallb_failover(bench_metallb.metallb_failover(lab))
    finally:
        lab.down()
    return code


@dataclass
class Targets:
    """Where the benchmark sends its traffic."""
    server_ip: str                     # the server pod
    vip: str                           # the ClusterIP of Service bench
    node_ports: dict                   # port name -> NodePort of Service bench
    cp_ip: str                         # the control-plane node (runs no endpoint)
    outside: dict                      # path -> host/NAME: its own external host
    lb_ip: str                         # the load balancer address of Service bench-lb
    ingress_ip: str                    # the node of the ingress controller


def _measure(lab: LabControl, args) -> int:
    lab.apply(MANIFESTS)
    to = _targets(lab)
    if getattr(args, 'policies', 0) and getattr(args, 'policies_only', False):
        return _measure_policies(lab, args, to)
    if getattr(args, 'scale', 0) and getattr(args, 'scale_only', False):
        return _measure_scale(lab, args)
    pid = lab.netns_pid('bench-server')
    iperf_server = subprocess.Popen(['nsenter', f'--net=/proc/{pid}/ns/net', '--',
                                     'iperf3', '-s', '-p', '5201'],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        tput, conns, paws = _measure_paths(lab, args, to, getattr(args, 'rounds', 4))
        if getattr(args, 'paths_only', False):
            _print_ratios(tput, conns, None, paws)
            return 0
        http = _measure_http(lab, args, to, 2)
        runs = getattr(args, 'runs', 1)
        print(f'Opening {runs} x {args.connections} short connections through the '
              'ClusterIP from one client, back to back...', flush=True)
        long_runs = [rate(lab, to.vip, 80, args.connections, 600, not args.fin_close,
                          'bench-burst') for _ in range(runs)]
        print('Failing the control-plane node under load through the load balancer...',
              flush=True)
        failover = bench_failover.lb_failover(lab, to.outside['failover'], to.lb_ip,
                                              'bench-lb', 'control-plane')
        time.sleep(3)                  # the cloud takes the node back
        print(f'Failing worker-2 under load through the ClusterIP, a NodePort and the '
              f'load balancer ({GRACE} s grace period)...', flush=True)
        lab.apply(SECOND_SERVER)
        lifecycle = bench_failover.node_failover(lab, {
            'clusterip': ('bench-vip', to.vip, 80),
            'nodeport': (to.outside['down-nodeport'], to.cp_ip, to.node_ports['http']),
            'loadbalancer': (to.outside['down-lb'], to.lb_ip, 80)}, 'worker-2', GRACE)
    finally:
        iperf_server.terminate()
        iperf_server.wait()
    _print_ratios(tput, conns, http, paws)
    _print_failures(args, long_runs)
    bench_failover.print_lb_failover(failover)
    bench_failover.print_node_failover(lifecycle, GRACE)
    if getattr(args, 'policies', 0):
        _measure_policies(lab, args, to)
    if getattr(args, 'scale', 0):
        _measure_scale(lab, args)
    return 0


def _measure_scale(lab: LabControl, args) -> int:
    from kubelab import bench_scale
    bench_scale.print_rows(bench_scale.measure(lab, args.scale))
    return 0


def _measure_policies(lab: LabControl, args, to: Targets) -> int:
    from kubelab import bench_policy
    bench_policy.print_rows(bench_policy.measure(lab, args.policies, args.policy_pods,
                                                 to.server_ip))
    return 0


def _targets(lab: LabControl) -> Targets:
    server_ip, vip = lab.pod_ip('bench-server'), lab.cluster_ip('bench')
    svc = lab.client.get('Service', 'default', 'bench')
    node_ports = {p['name']: p['nodePort'] for p in svc['spec']['ports']}
    nodes = {n['metadata']['name']: n for n in lab.client.list('Node')}
    cp_ip = [a['address'] for a in nodes['control-plane']['status']['addresses']
             if a['type'] == 'InternalIP'][0]
    hosts = [h['name'] for h in lab.client.lab()['hosts']]
    outside = {path: f'host/{name}' for path, name in zip(OUTSIDE_PATHS, hosts)}
    lb_ip = lab.client.get('Service', 'default', 'bench-lb')['status']['loadBalancer'][
        'ingress'][0]['ip']
    ingress_node = lab.client.list('Pod', 'ingress-nginx')[0]['spec']['nodeName']
    ingress_ip = [a['address'] for a in nodes[ingress_node]['status']['addresses']
                  if a['type'] == 'InternalIP'][0]
    return Targets(server_ip, vip, node_ports, cp_ip, outside, lb_ip, ingress_ip)


def _measure_paths(lab: LabControl, args, to: Targets,
                   rounds: int) -> tuple[dict, dict, dict]:
    """iperf3 Gbit/s and new connections/s per path (direct, vip, nodeport, lb), the
    paths taken in turn, ``rounds`` times, every other round in reverse order: a path
    measured last in one round is first in the next, so that what a path leaves behind
    (its connections' conntrack entries expiring, say) and a machine's load rising or
    falling through the run weigh on every path alike. Also, per path and round, the
    SYNs the server refused by PAWS (``LabControl.paws_refusals``)."""
    tput = {'direct': [], 'vip': [], 'nodeport': [], 'lb': []}
    conns = {'direct': [], 'vip': [], 'nodeport': [], 'lb': []}
    paws = {'direct': [], 'vip': [], 'nodeport': [], 'lb': []}
    print(f'Measuring: {rounds} rounds, direct, through the ClusterIP, a NodePort and the '
          'load balancer in turn (every other round in reverse order)', flush=True)
    paths = (('direct', 'bench-direct', to.server_ip, 5201, 8080),
             ('vip', 'bench-vip', to.vip, 5201, 80),
             ('nodeport', to.outside['nodeport'], to.cp_ip, to.node_ports['iperf'],
              to.node_ports['http']),
             ('lb', to.outside['lb'], to.lb_ip, 5201, 80))
    for i in range(rounds):
        for side, source, host, iperf_port, http_port in paths[::-1] if i % 2 else paths:
            tput[side].append(iperf(lab, host, args.seconds, iperf_port, source))
            before = lab.paws_refusals('bench-server')
            r = rate(lab, host, http_port, 10 ** 9, args.seconds, not args.fin_close,
                     source)
            conns[side].append(r['per_second'])
            paws[side].append(lab.paws_refusals('bench-server') - before)
    return tput, conns, paws


def _measure_http(lab: LabControl, args, to: Targets, rounds: int) -> dict:
    """wrk from the external host: straight to the NodePort (keep-alive, and a new
    connection per request) and through the Ingress, in turn, ``rounds`` times."""
    print('HTTP through the Ingress and straight to the NodePort alternately...',
          flush=True)
    http = {'ingress': [], 'nodeport': [], 'close': []}
    for _ in range(rounds):
        for side, close, source in (('nodeport', False, 'wrk-nodeport'),
                                    ('close', True, 'wrk-close')):
            http[side].append(wrk(lab, to.outside[source], f'http://{to.ingress_ip}:'
                                  f'{to.node_ports["http"]}/hostname', 'bench.example',
                                  args.seconds, close))
        http['ingress'].append(wrk(lab, to.outside['wrk-ingress'],
                                   f'http://{to.ingress_ip}/hostname', 'bench.example',
                                   args.seconds))
    return http


def _print_ratios(tput: dict, conns: dict, http: dict, paws: dict):
    """The table: each measure direct and via, their ratio, the target ratio."""
    mean = statistics.mean
    rows = [
        ('ClusterIP: TCP Gbit/s (iperf3)', mean(tput['direct']), mean(tput['vip']), 0.95),
        ('ClusterIP: new connections/s', mean(conns['direct']), mean(conns['vip']), 0.95),
        ('NodePort, other node: TCP Gbit/s', mean(tput['direct']), mean(tput['nodeport']),
         0.9),
        ('NodePort, other node: connections/s', mean(conns['direct']),
         mean(conns['nodeport']), 0.9),
        ('LoadBalancer: TCP Gbit/s', mean(tput['direct']), mean(tput['lb']), 0.9),
        ('LoadBalancer: connections/s', mean(conns['direct']), mean(conns['lb']), 0.9),
    ]
    print()
    print(f'{"measure":36} {"direct":>10} {"via":>10} {"ratio":>7} {"target":>7}')
    for name, direct, vip_value, target in rows:
        ratio = vip_value / direct if direct else 0.0
        print(f'{name:36} {direct:10.2f} {vip_value:10.2f} {ratio:7.2f} {">=" + str(target):>7}')
    print('  (connections/s round by round: ' + '; '.join(
        f'{side} ' + ' '.join(f'{r:.0f}' for r in runs) for side, runs in conns.items()) +
        f'; the load balancer against the NodePort: {_ratio(tput, "nodeport", "lb"):.2f} '
        f'(Gbit/s), {_ratio(conns, "nodeport", "lb"):.2f} (connections/s))')
    if any(any(runs) for runs in paws.values()):
        print('  (SYNs the server refused by PAWS, round by round: ' + '; '.join(
            f'{side} ' + ' '.join(str(n) for n in runs) for side, runs in paws.items()) +
            ': connections masqueraded as a node and its port, which the server still '
            'held in TIME_WAIT for another client; each retried within ms, as on a '
            'real node)')
    if http is None:
        return
    ingress_rows = [(f'Ingress vs NodePort{suffix}: {label}',
                     mean(r[key] for r in http[side]),
                     mean(r[key] for r in http['ingress']))
                    for suffix, side in (('', 'nodeport'), (' (close)', 'close'))
                    for label, key in (('requests/s', 'rps'), ('p50 ms', '50%'),
                                       ('p99 ms', '99%'))]
    for name, direct, via in ingress_rows:
        print(f'{name:36} {direct:10.2f} {via:10.2f} {via / direct if direct else 0:7.2f} '
              f'{"-":>7}')
    errors = {side: sum(r['socket_errors'] for r in runs) for side, runs in http.items()}
    print('  (wrk -c 8 from an external host with keep-alive, or (close) a new connection '
          'per request;\n   nginx opens a new connection to the ClusterIP per request; '
          f'socket errors: {errors})')


def _ratio(measures: dict, base: str, via: str) -> float:
    base_mean = statistics.mean(measures[base])
    return statistics.mean(measures[via]) / base_mean if base_mean else 0.0


def _print_failures(args, long_runs: list[dict]):
    """The short connections that failed (or needed a SYN retransmit) through the
    ClusterIP, run by run."""
    failed = sum(r['failed'] for r in long_runs)
    total = sum(r['ok'] + r['failed'] for r in long_runs)
    stalled = sum(r['stalled'] for r in long_runs)
    out_of, stalled_of = f'{failed}/{total}', f'{stalled}/{total}'
    print(f'{"failed short connections via VIP":36} {"":10} {out_of:>10} {"":7} {"0":>7}')
    print(f'{"  ...that needed a SYN retransmit":36} {"":10} {stalled_of:>10} {"":7} '
          f'{"0":>7}')
    errors = {}
    for r in long_runs:
        for kind, count in r['errors'].items():
            errors[kind] = errors.get(kind, 0) + count
    if errors:
        print(f'  failures by kind: {errors}')
    per_run = ', '.join(f'{r["per_second"]:.0f}/s ({r["failed"]} failed, {r["stalled"]} '
                        f'retransmitted)' for r in long_runs)
    print(f'  ({len(long_runs)} runs of {args.connections} from one client pod on worker-1 '
          f'to the server pod on worker-2, back to back: {per_run}; '
          f'rounds of {args.seconds:.0f} s; connections closed with '
          f'{"FIN" if args.fin_close else "RST"})')


if __name__ == '__main__':
    sys.exit(run_bench(type('A', (), {'seconds': 5, 'connections': 10000, 'runs': 4,
                                      'rounds': 4, 'fin_close': False})()))
