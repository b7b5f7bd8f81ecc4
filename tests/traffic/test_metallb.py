"""A bare-metal cluster (``kubelab up --cloud none``) with MetalLB in layer 2 mode.

External hosts reach the nodes' network through a real Linux router (``kl-rt``): a
LoadBalancer address from an IPAddressPool in the nodes' subnet is reached because
exactly one node answers the router's ARP for it, the node MetalLB's speakers elected.
What the tests check is what a user would: the router's neighbour entry and ``arping``
replies (one MAC, the announcing node's), which pod answered and which client address it
saw, ``kubelab get`` (EXTERNAL-IP, ServiceL2Status, events), the trace, and how long a
failover takes when the announcing node is cut off.
"""

import json
import re
import time

import pytest

from kubelab.labctl import LabControl
from services import wiring
from tests.traffic.manifests import echo_pod

POOLS = """
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lan, namespace: metallb-system}
spec:
  addresses: [10.128.0.200-10.128.0.209]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: tiny, namespace: metallb-system}
spec:
  addresses: [10.128.0.250/32]
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: quiet, namespace: metallb-system}
spec:
  addresses: [10.128.0.240/32]
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: workers, namespace: metallb-system}
spec:
  ipAddressPools: [lan, tiny]
  nodeSelectors:
  - matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}]
"""
#: web on both workers; solo on worker-2 only; steady on the control plane (which never
#: announces here), so a worker's failure takes an announcer and no endpoint.
APP = (echo_pod('web-1', 'worker-1', 'web') + echo_pod('web-2', 'worker-2', 'web')
       + echo_pod('solo', 'worker-2', 'solo')
       + echo_pod('steady', 'control-plane', 'steady').replace(
           '  nodeName: control-plane', '  nodeName: control-plane\n  tolerations: [{key: '
           'node-role.kubernetes.io/control-plane, effect: NoSchedule}]'))
#: From the failure of the announcing node to the last failed request: the speakers'
#: membership notices (4 s without news, probes every 1 s), the next speaker answers and
#: sends gratuitous ARP, the router's entry follows; with margin for a loaded machine.
FAILOVER_BOUND = 8.0


def lb_service(name, app, etp=None, annotations=None):
    meta = f'{{name: {name}' + (f', annotations: {json.dumps(annotations)}'
                                 if annotations else '') + '}'
    lines = ['apiVersion: v1', 'kind: Service', f'metadata: {meta}', 'spec:',
             '  type: LoadBalancer', f'  selector: {{app: {app}}}',
             '  ports: [{port: 80, targetPort: 8080}]']
    if etp:
        lines.append(f'  externalTrafficPolicy: {etp}')
    return '\n'.join(lines) + '\n'


@pytest.fixture(scope='module')
def lab():
    ctl = LabControl()
    ctl.up(cloud='none')
    try:
        ctl.apply(APP)
        yield ctl
    finally:
        ctl.down()


@pytest.fixture(scope='module')
def pools(lab):
    lab.apply(POOLS)
    return lab


def address(lab, name):
    ingress = lab.client.get('Service', 'default', name)['status']['loadBalancer'].get(
        'ingress')
    return ingress[0]['ip'] if ingress else None


def announcers(lab, name) -> list[str]:
    """The nodes of the Service's ServiceL2Status objects (MetalLB's own record)."""
    return [s['status']['node'] for s in lab.client.list('ServiceL2Status', 'metallb-system')
            if s['status']['serviceName'] == name]


def announcer(lab, name) -> str | None:
    found = announcers(lab, name)
    assert len(found) <= 1, found
    return found[0] if found else None


def events(lab, name) -> list[str]:
    return [f'{e["reason"]}: {e["message"]}' for e in lab.client.list('Event', 'default')
            if e['involvedObject']['name'] == name]


def router(lab, *argv) -> str:
    return lab.run_in('host/router', list(argv)).stdout


def arp_replies(lab, ip, count=3) -> list[str]:
    """The MACs that answer the router's ARP requests for ``ip`` on the nodes' LAN."""
    out = router(lab, 'arping', '-c', str(count), '-w', str(count + 1), '-I', 'kl-rt-eth1',
                 ip)
    return [m.lower() for m in re.findall(r'\[([0-9A-Fa-f:]{17})\]', out)]


def neighbour(lab, ip) -> str | None:
    out = router(lab, 'ip', 'neigh', 'show', 'to', ip)
    found = re.search(r'lladdr ([0-9a-f:]{17})', out)
    return found.group(1) if found else None


def uplink_mac(lab, node) -> str:
    ip = next(n['ip'] for n in lab.client.lab()['nodes'] if n['name'] == node)
    return wiring.router_mac(ip)


def test_exercise_12_bare_metal_metallb(lab):
    # First, while MetalLB has no pool of the tests' own.
    from tests.traffic.test_labs import run_exercise
    run_exercise(lab, 12, [
        'web is <pending>: MetalLB has no address to give it (Failed to allocate IP for '
        '"lab-12/web": no available IPs)'],
        ['but no node answers ARP for it: an address is announced only when an '
         'L2Advertisement'])


def test_a_load_balancer_stays_pending_until_metallb_has_a_pool(lab):
    lab.apply(lb_service('web-lb', 'web'))
    assert '<pending>' in lab.kubelab('get', 'svc', 'web-lb').stdout
    assert 'AllocationFailed: Failed to allocate IP for "default/web-lb": no available IPs' \
        in events(lab, 'web-lb')
    lab.apply(POOLS)
    ip = lab.client.wait_for(lambda: address(lab, 'web-lb'), 'an address')
    assert ip.startswith('10.128.0.20') and ip in lab.kubelab('get', 'svc', 'web-lb').stdout
    svc = lab.client.get('Service', 'default', 'web-lb')
    assert svc['metadata']['annotations']['metallb.io/ip-allocated-from-pool'] == 'lan'
    owner = lab.client.wait_for(lambda: announcer(lab, 'web-lb'), 'a ServiceL2Status')
    assert owner in ('worker-1', 'worker-2')        # the advertisement excludes the CP
    assert f'nodeAssigned: announcing from node "{owner}" with protocol "layer2"' in \
        events(lab, 'web-lb')
    answers = lab.http('host/client-1', ip, 80, '/hostname', count=30)
    assert all(r['ok'] for r in answers) and {r['body'] for r in answers} == {'web-1',
                                                                              'web-2'}


def test_exactly_one_node_answers_arp_and_the_router_sees_its_mac(pools):
    lab = pools
    lab.apply(lb_service('web-lb', 'web'))
    ip = lab.client.wait_for(lambda: address(lab, 'web-lb'), 'an address')
    owner = lab.client.wait_for(lambda: announcer(lab, 'web-lb'), 'a ServiceL2Status')
    replies = arp_replies(lab, ip)
    assert replies and set(replies) == {uplink_mac(lab, owner)}, replies
    assert len(replies) == 3                       # one answer per request, not two
    lab.http('host/client-1', ip, 80, '/hostname')
    assert neighbour(lab, ip) == uplink_mac(lab, owner)
    # Cluster policy: the announcing node masquerades as itself.
    node_ip = next(n['ip'] for n in lab.client.lab()['nodes'] if n['name'] == owner)
    seen = lab.http('host/client-1', ip, 80, '/clientip', count=6)
    assert {r['body'].split(':')[0] for r in seen} == {node_ip}


def test_local_policy_announces_from_the_node_with_the_endpoint_and_keeps_the_client(
        pools):
    lab = pools
    lab.apply(lb_service('solo-lb', 'solo', etp='Local'))
    try:
        ip = lab.client.wait_for(lambda: address(lab, 'solo-lb'), 'an address')
        assert lab.client.wait_for(lambda: announcer(lab, 'solo-lb'), 'its announcer') == 'worker-2'
        assert set(arp_replies(lab, ip)) == {uplink_mac(lab, 'worker-2')}
        client_ip = lab.get_json('hosts')['items'][0]['status']['addresses'][0]['address']
        seen = lab.http('host/client-1', ip, 80, '/clientip', count=6)
        assert all(r['ok'] for r in seen)
        assert {r['body'].split(':')[0] for r in seen} == {client_ip}
    finally:
        lab.kubelab('delete', 'service', 'solo-lb')


def test_an_exhausted_pool_leaves_a_service_pending_until_its_address_frees(pools):
    lab = pools
    pick = {'metallb.io/address-pool': 'tiny'}
    lab.apply(lb_service('tiny-a', 'web', annotations=pick))
    lab.apply(lb_service('tiny-b', 'web', annotations=pick))
    try:
        assert address(lab, 'tiny-a') == '10.128.0.250' and address(lab, 'tiny-b') is None
        assert 'AllocationFailed: Failed to allocate IP for "default/tiny-b": no available ' \
               'IPs' in events(lab, 'tiny-b')
        lab.kubelab('delete', 'service', 'tiny-a')
        assert lab.client.wait_for(lambda: address(lab, 'tiny-b'), 'the freed address') == \
            '10.128.0.250'
        lab.client.wait_for(lambda: announcer(lab, 'tiny-b'), 'its announcer')
        assert all(r['ok'] for r in lab.http('host/client-1', '10.128.0.250', 80,
                                             '/hostname', count=3))
    finally:
        lab.kubelab('delete', 'service', 'tiny-a', check=False)
        lab.kubelab('delete', 'service', 'tiny-b')


def test_an_address_without_an_l2advertisement_is_given_but_nobody_answers(pools):
    lab = pools
    lab.apply(lb_service('quiet-lb', 'web', annotations={'metallb.io/address-pool': 'quiet'}))
    try:
        assert address(lab, 'quiet-lb') == '10.128.0.240'
        time.sleep(2)
        assert announcer(lab, 'quiet-lb') is None and arp_replies(lab, '10.128.0.240') == []
        [r] = lab.probe('host/client-1', 'tcp', '10.128.0.240', 80, timeout=2)
        assert not r['ok'], r
    finally:
        lab.kubelab('delete', 'service', 'quiet-lb')


def test_trace_shows_the_router_the_announcing_node_and_the_service_path(pools):
    lab = pools
    lab.apply(lb_service('web-lb', 'web'))
    ip = lab.client.wait_for(lambda: address(lab, 'web-lb'), 'an address')
    owner = lab.client.wait_for(lambda: announcer(lab, 'web-lb'), 'its announcer')
    out = lab.kubelab('trace', 'host/client-1', f'{ip}:80').stdout
    assert f'announced by {owner} (MetalLB, layer 2)' in out
    assert f'LoadBalancer IP {ip}:80 on {owner} (MetalLB L2) -> EndpointSlice of ' \
           f'default/web-lb' in out
    assert 'kl-rt' in out and f'node {owner}' in out
    assert '=> delivered to pod default/web-' in out
    assert f'the answer comes from {ip}:80' in out


def test_the_announcing_node_fails_and_another_takes_over(pools):
    lab = pools
    lab.apply(lb_service('steady-lb', 'steady'))
    ip = lab.client.wait_for(lambda: address(lab, 'steady-lb'), 'an address')
    owner = lab.client.wait_for(lambda: announcer(lab, 'steady-lb'), 'its announcer')
    other = {'worker-1': 'worker-2', 'worker-2': 'worker-1'}[owner]
    lab.http('host/client-1', ip, 80, '/hostname')
    assert neighbour(lab, ip) == uplink_mac(lab, owner)
    stream = lab.background('host/client-1', 'stream', ip, 80, path='/hostname',
                            interval=0.05, timeout=1)
    time.sleep(1.5)
    cut = lab.client.node_network(owner, False)['time']
    try:
        lab.client.wait_for(lambda: neighbour(lab, ip) == uplink_mac(lab, other),
                   "the router's entry to move", 20)
        moved = time.time() - cut
        time.sleep(2)
        result = stream.stop()
        # The new speaker records itself; the cut-off one cannot remove its record (it
        # cannot reach the API server), as a dead speaker's stays in MetalLB.
        lab.client.wait_for(lambda: other in announcers(lab, 'steady-lb'), 'the status', 10)
    finally:
        lab.client.node_network(owner, True)
    failures = [t - cut for t, outcome, _ in result['events'] if outcome != 'ok' and t > cut]
    last = max(failures, default=0.0)
    print(f'announcing node {owner} failed: {len(failures)} of {result["sent"]} requests '
          f'failed, the last {last:.1f} s after the cut; the router\'s entry moved to '
          f'{other} after {moved:.1f} s')
    assert failures and last <= FAILOVER_BOUND
    after = [o for t, o, _ in result['events'] if t - cut > last]
    assert after and all(o == 'ok' for o in after)
    # Back on the LAN, the two speakers hear each other again and one of them withdraws.
    lab.client.wait_for(lambda: len(set(arp_replies(lab, ip, 2))) == 1, 'a single owner again', 20)
    assert all(r['ok'] for r in lab.http('host/client-1', ip, 80, '/hostname', count=3))
