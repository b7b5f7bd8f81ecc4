"""``kubelab bench``'s MetalLB failover, on a bare-metal lab of its own.

A server pod on the control-plane node behind a LoadBalancer Service with a MetalLB
address that only the workers may announce (an L2Advertisement's nodeSelectors), so the
announcing node's failure takes an announcer and no endpoint. Under a stream of new
connections from an external host (one every 50 ms, 1 s timeout) the announcing worker
is cut off; the bench watches, every 50 ms, the router's neighbour entry for the
address (``ip neigh`` in its namespace) and reports when it moved to the other worker
(the speakers' membership noticed, the new owner sent gratuitous ARP) and the stream's
last failure.
"""

from __future__ import annotations

import re
import time

from kubelab.bench_failover import Poll
from services import wiring

MANIFESTS = """
apiVersion: v1
kind: Pod
metadata: {name: steady, labels: {app: steady}}
spec:
  nodeName: control-plane
  tolerations: [{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port=8080]
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: steady}
spec:
  type: LoadBalancer
  selector: {app: steady}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: bench, namespace: metallb-system}
spec:
  addresses: [10.128.0.200-10.128.0.209]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: workers, namespace: metallb-system}
spec:
  ipAddressPools: [bench]
  nodeSelectors:
  - matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}]
"""


def _neighbour(lab, ip: str) -> str | None:
    out = lab.run_in('host/router', ['ip', 'neigh', 'show', 'to', ip]).stdout
    found = re.search(r'lladdr ([0-9a-f:]{17})', out)
    return found.group(1) if found else None


def metallb_failover(lab, watch: float = 10.0) -> dict:
    """In a running bare-metal lab: fail the node announcing Service steady's address;
    seconds from the cut to the router's entry moving (``moved``) and to the stream's
    last failure (``last``), with the counts and the nodes."""
    lab.apply(MANIFESTS)
    client = lab.client
    ip = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ip:
        ingress = client.get('Service', 'default', 'steady')['status']['loadBalancer']
        ip = (ingress.get('ingress') or [{}])[0].get('ip')
        owners = [s['status']['node'] for s in client.list('ServiceL2Status',
                                                           'metallb-system')]
        if not owners:
            ip = None
        time.sleep(0.2)
    owner = owners[0]
    other = 'worker-2' if owner == 'worker-1' else 'worker-1'
    nodes = {n['name']: n['ip'] for n in client.lab()['nodes']}
    source = 'host/' + client.lab()['hosts'][0]['name']
    lab.http(source, ip, 80, '/hostname')                  # the router learns the owner
    stream = lab.background(source, 'stream', ip, 80, path='/hostname', interval=0.05,
                            timeout=1)
    time.sleep(2)
    moved = Poll(lambda: _neighbour(lab, ip) == wiring.router_mac(nodes[other]))
    cut = client.node_network(owner, False)['time']
    try:
        time.sleep(watch)
    finally:
        client.node_network(owner, True)
    at = moved.stop()
    result = stream.stop()
    failures = [t for t, outcome, _ in result['events'] if outcome != 'ok' and t >= cut]
    return {'owner': owner, 'other': other, 'moved': at - cut if at else None,
            'last': max(failures, default=cut) - cut, 'failed': len(failures),
            'sent': result['sent']}


def print_metallb_failover(result: dict):
    def fmt(value):
        return f'{value:.1f}s' if value is not None else 'never'
    print(f'{"MetalLB L2: node failure -> last":36} {"":10} {fmt(result["last"]):>10} '
          f'{"":7} {"~5s":>7}')
    print(f'  failed request (the announcing node {result["owner"]} cut off; the speakers '
          f'drop a member after 4 s without news; the router\'s entry moved to '
          f'{result["other"]} after {fmt(result["moved"])}; {result["failed"]} of '
          f'{result["sent"]} new connections failed)')
