"""``kubelab bench``'s failure measurements: how long a failed node keeps getting
connections, per path, and where that time goes.

* ``lb_failover``: the cloud load balancer's own failover. A steady stream of new
  connections (one every 50 ms, 1 s timeout) from an external host to a LoadBalancer
  address; a node is cut off (through the API, so the clock starts at the cut itself,
  not at a command's Python start-up), and the bench watches, every 50 ms, when the
  cloud's health checks drop the node (the LoadBalancerHealth the checker publishes)
  and when the edge switch's ServiceLB flows stop sending to it (``ovs-ofctl
  dump-flows``; the edge picks a node with a few flows a node, from the client's
  source port): after that no new connection can be sent to it. A failed request of the stream is not
  necessarily one sent to the failed node (a lost SYN looks the same), so the last
  failure is shown beside the switch's figure, not instead of it.
* ``node_failover``: the node lifecycle. Endpoints on two nodes; one node is cut off
  under three streams (a pod to the ClusterIP, an external host to a NodePort of a node
  without endpoints, an external host to the load balancer); each stream's last
  failure comes after the node monitor's grace period, when the node turns NotReady,
  its pods leave the EndpointSlices and every node's flows stop using them.
* ``metallb_failover`` (kubelab/bench_metallb.py): the announcing node of a MetalLB
  address fails; the speakers' membership notices, another node takes over and sends
  gratuitous ARP, and the router's neighbour entry follows.
"""

from __future__ import annotations

import subprocess
import threading
import time

from controller.pipeline.tables import T
from services import wiring


class Poll:
    """Calls ``probe()`` every ``interval`` s in a thread until ``stop()``; remembers the
    first time it returned true."""

    def __init__(self, probe, interval: float = 0.05):
        self.probe, self.interval = probe, interval
        self.at: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._done.is_set() and self.at is None:
            try:
                if self.probe():
                    self.at = time.time()
            except Exception:          # a busy API or switch: try again
                pass
            self._done.wait(self.interval)

    def stop(self) -> float | None:
        self._done.set()
        self._thread.join()
        return self.at


def edge_holds(node_ip: str, node_port: int) -> bool:
    """The cloud edge's ServiceLB flows still DNAT to ``node_ip:node_port``."""
    out = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-flows',
                          wiring.EDGE_BRIDGE, f'table={T["ServiceLB"]}'],
                         capture_output=True, text=True, timeout=5, check=True).stdout
    return f'nat(dst={node_ip}:{node_port})' in out


def _failures(events: list, since: float) -> list[float]:
    return [t for t, outcome, _ in events if outcome != 'ok' and t >= since]


def lb_failover(lab, source: str, lb_ip: str, service: str, node: str,
                watch: float = 6.0) -> dict:
    """Fail ``node`` under a stream through the load balancer of ``service`` (in
    ``default``): seconds from the cut to the health checks' verdict (``published``),
    to the edge's flows without the node (``switched``) and to the stream's last
    failure (``last``), with the counts."""
    svc = lab.client.get('Service', 'default', service)
    node_port = svc['spec']['ports'][0]['nodePort']
    node_ip = next(n['ip'] for n in lab.client.lab()['nodes'] if n['name'] == node)
    stream = lab.background(source, 'stream', lb_ip, svc['spec']['ports'][0]['port'],
                            path='/hostname', interval=0.05, timeout=1)
    time.sleep(2)

    def published():
        health = lab.client.get('LoadBalancerHealth', 'default', service)
        return node not in health['status']['healthyNodes']
    polls = [Poll(published), Poll(lambda: not edge_holds(node_ip, node_port))]
    cut = lab.client.node_network(node, False)['time']
    try:
        time.sleep(watch)
    finally:
        lab.client.node_network(node, True)
    at = [p.stop() for p in polls]
    result = stream.stop()
    failures = _failures(result['events'], cut)
    return {'published': at[0] - cut if at[0] else None,
            'switched': at[1] - cut if at[1] else None,
            'last': max(failures, default=cut) - cut, 'failed': len(failures),
            'sent': result['sent'],
            'when': [f'{t - cut:.1f}s {o}' for t, o, _ in result['events']
                     if o != 'ok' and t >= cut]}


def node_failover(lab, streams: dict, node: str, grace: float) -> dict:
    """Fail ``node`` under several streams ({name: (source, host, port)}); seconds from
    the cut to each stream's last failure, and to the node's NotReady."""
    running = {name: lab.background(source, 'stream', host, port, path='/hostname',
                                    interval=0.05, timeout=1)
               for name, (source, host, port) in streams.items()}
    time.sleep(2)

    def not_ready():
        conditions = lab.client.get('Node', None, node)['status']['conditions']
        return any(c['type'] == 'Ready' and c['status'] != 'True' for c in conditions)
    poll = Poll(not_ready, interval=0.1)
    cut = lab.client.node_network(node, False)['time']
    try:
        time.sleep(grace + 5)
    finally:
        lab.client.node_network(node, True)
    at = poll.stop()
    out = {'not_ready': at - cut if at else None}
    for name, stream in running.items():
        result = stream.stop()
        failures = _failures(result['events'], cut)
        out[name] = {'last': max(failures, default=cut) - cut, 'failed': len(failures),
                     'sent': result['sent']}
    return out


def print_lb_failover(failover: dict):
    def fmt(value):
        return f'{value:.2f}s' if value is not None else 'never'
    print(f'{"LoadBalancer: node failure -> dropped":36} {"":10} '
          f'{fmt(failover["switched"]):>10} {"":7} {"<=2.5s":>7}')
    print(f'  from the cloud LB (no new connection can reach it after that): health checks '
          f'every 1 s, two failures in a row, 0.4 s timeout; the checks\' verdict after '
          f'{fmt(failover["published"])}, the edge switch\'s flows after '
          f'{fmt(failover["switched"])}; the stream (one new connection every 50 ms from an '
          f'external host) failed {failover["failed"]} of {failover["sent"]}, the last '
          f'sent {fmt(failover["last"])} after the failure ('
          + ', '.join(failover['when']) + ')')


def print_node_failover(result: dict, grace: float):
    def fmt(value):
        return f'{value:.1f}s' if value is not None else 'never'
    for name, label in (('clusterip', 'ClusterIP'), ('nodeport', 'NodePort'),
                        ('loadbalancer', 'LoadBalancer')):
        row = result[name]
        print(f'{f"{label}: node failure -> last failed":36} {"":10} '
              f'{fmt(row["last"]):>10} {"":7} {f"<={grace:g}s":>7}')
    print(f'  request: until the node is NotReady, which it was {fmt(result["not_ready"])} '
          f'after the cut (the node monitor\'s grace period is {grace:g}s, set short in '
          f'the bench\'s cluster file, 40s by default, counted from the last Lease '
          f'renewal, up to {min(10, grace / 4):g}s before the cut); each failed request '
          f'waits its 1 s timeout. Failed: '
          + ', '.join(f'{n} {result[n]["failed"]} of {result[n]["sent"]}'
                      for n in ('clusterip', 'nodeport', 'loadbalancer')))
