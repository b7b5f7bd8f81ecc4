"""``kubelab demo``: the main job. Bring up the default lab, send real traffic through
it, print what every server saw, take the lab down.

Each step prints the command a user would type and what came back, so the output reads
as a walk through the seed: Pod -> Pod, Pod -> ClusterIP -> EndpointSlice -> Pod IP ->
Container, readiness and REJECT, what an external client can (not) reach, NodePorts,
the cloud load balancer, Ingress and the Gateway API.
"""

from __future__ import annotations

import os
import time
from collections import Counter

from kubelab.daemon.statedir import running_daemon
from kubelab.labctl import LabControl
from services.errors import KubelabError

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'examples')


def step(title: str):
    print(f'\n=== {title}')


def show(lab: LabControl, *args: str):
    print(f'$ kubelab {" ".join(args)}')
    print(lab.kubelab(*args).stdout.rstrip())


def verdict(results: list[dict]) -> str:
    bad = Counter(r.get('error') for r in results if not r['ok'])
    return 'all answered' if not bad else ', '.join(f'{n} {e}' for e, n in bad.items())


def run_demo() -> int:
    if running_daemon():
        raise KubelabError('a lab is already running: the demo brings up its own '
                           '(`kubelab down` first)')
    lab = LabControl()
    step('Bring up the default lab: 3 nodes (1 control-plane, 2 workers), 2 external hosts')
    print(lab.up().stdout.rstrip())
    try:
        walk(lab)
    finally:
        step('Take the lab down')
        print(lab.down().stdout.rstrip())
    return 0


def walk(lab: LabControl):
    show(lab, 'get', 'nodes', '-o', 'wide')
    show(lab, 'apply', '-f', os.path.join(EXAMPLES, 'demo.yaml'), '--wait')
    show(lab, 'get', 'pods', '-o', 'wide')
    show(lab, 'get', 'services')
    show(lab, 'get', 'endpointslices')
    pods = {p['metadata']['name']: p for p in lab.pods({'app': 'web'})}
    vip = lab.cluster_ip('web')
    client_ip = lab.pod_ip('client')
    name, pod = pod_to_pod(lab, pods, client_ip)
    cluster_ip(lab, pods, vip)
    hairpin(lab, name, pod, vip)
    sidecar(lab)
    scale_to_zero(lab, vip)
    host, nodes = from_outside(lab, vip)
    node_ports(lab, host, nodes)
    load_balancer(lab, host, nodes)
    ingress(lab, host, nodes)
    gateway(lab, host)


def pod_to_pod(lab: LabControl, pods: dict, client_ip: str) -> tuple[str, dict]:
    """The client pod calls the first web pod by its IP: (that pod's name, the pod)."""
    step('Pod -> Pod across nodes (client on control-plane, web pods on the workers)')
    name, pod = sorted(pods.items())[0]
    [r] = lab.http('client', pod['status']['podIP'], 8080, '/clientip')
    print(f'client ({client_ip}) -> {name} ({pod["status"]["podIP"]}:8080)/clientip: '
          f'the server saw {r.get("body", r.get("error"))}')
    return name, pod


def cluster_ip(lab: LabControl, pods: dict, vip: str):
    step(f'Pod -> ClusterIP {vip}:80 -> EndpointSlice -> one of 3 pods (60 new connections)')
    results = lab.http('client', vip, 80, '/hostname', count=60)
    for host, n in sorted(Counter(r['body'] for r in results if r['ok']).items()):
        print(f'  {host} ({pods[host]["status"]["podIP"]}, {pods[host]["spec"]["nodeName"]})'
              f' answered {n}')
    print(f'  {verdict(results)}')
    [r] = lab.http('client', vip, 80, '/clientip')
    print(f'  the server saw the client as {r["body"]} (no SNAT inside the cluster); the '
          'answer came back from the VIP (un-DNAT by conntrack)')
    udp = lab.probe('client', 'udp', vip, 53, 'hostname', count=10)
    print(f'  UDP {vip}:53 -> targetPort dns-ish (8081): answered by '
          f'{sorted({r["body"] for r in udp if r["ok"]})}; {verdict(udp)}')


def hairpin(lab: LabControl, name: str, pod: dict, vip: str):
    step('Hairpin: a web pod calls its own Service')
    r = lab.http(name, vip, 80, '/clientip', count=9)
    seen = Counter(x['body'].split(':')[0] for x in r if x['ok'])
    print(f'  {name} ({pod["status"]["podIP"]}) -> {vip}:80, 9 times: {verdict(r)}; the '
          f'servers saw the caller as {dict(seen)}')
    print('  the other replicas see the pod\'s own IP; when the pod answers itself, it sees '
          'its node\'s pod gateway (.1): hairpin traffic is masqueraded, as kube-proxy does')


def sidecar(lab: LabControl):
    step('The multi-container pod: app + logger sidecar over localhost, one IP')
    time.sleep(2.5)
    logs = lab.kubelab('logs', 'app-with-sidecar', '-c', 'logger').stdout.strip()
    print(f'$ kubelab logs app-with-sidecar -c logger\n  {logs.splitlines()[-1]}')
    print(f'  pod IP {lab.pod_ip("app-with-sidecar")}, shared by both containers')


def scale_to_zero(lab: LabControl, vip: str):
    step('Scale to zero: the Service rejects at once (TCP RST / ICMP port-unreachable)')
    show(lab, 'scale', 'deployment', 'web', '--replicas', '0')
    lab.client.wait_for(lambda: not lab.pods({'app': 'web'}), 'the pods to terminate')
    lab.client.wait_dataplane()
    [tcp] = lab.probe('client', 'tcp', vip, 80)
    [udp1] = lab.probe('client', 'udp', vip, 53, 'hostname')
    print(f'  TCP {vip}:80 -> {tcp["error"]} after {tcp["ms"]} ms; '
          f'UDP {vip}:53 -> {udp1["error"]} after {udp1["ms"]} ms')
    show(lab, 'scale', 'deployment', 'web', '--replicas', '3')
    lab.client.wait_ready()
    new = {p['metadata']['name']: p['status']['podIP'] for p in lab.pods({'app': 'web'})}
    results = lab.http('client', vip, 80, '/hostname', count=30)
    print(f'  new pods, new names and IPs: {new}\n  the same ClusterIP serves them: '
          f'{verdict(results)}')


def from_outside(lab: LabControl, vip: str) -> tuple[str, dict]:
    """An external host cannot reach a ClusterIP: (that host's name, node -> its IP)."""
    step('From outside the cluster: ClusterIPs and pod IPs are internal-only')
    hosts = lab.get_json('hosts')['items']
    host = hosts[0]['metadata']['name']
    host_ip = hosts[0]['status']['addresses'][0]['address']
    nodes = {n['metadata']['name']: [a['address'] for a in n['status']['addresses']
                                     if a['type'] == 'InternalIP'][0]
             for n in lab.get_json('nodes')['items']}
    [r] = lab.probe(f'host/{host}', 'tcp', vip, 80, timeout=1)
    print(f'  {host} ({host_ip}) -> ClusterIP {vip}:80: {r["error"]} (not routed outside '
          'the cluster)')
    return host, nodes


def node_ports(lab: LabControl, host: str, nodes: dict):
    step('External client -> NodeIP:NodePort -> ClusterIP -> Pod')
    show(lab, 'get', 'services')
    for name, ip in nodes.items():
        got = lab.http(f'host/{host}', ip, 30080, '/clientip', count=4)
        seen = sorted({x['body'].split(':')[0] for x in got if x['ok']})
        print(f'  {host} -> {name} {ip}:30080 (externalTrafficPolicy Cluster): '
              f'{verdict(got)}; the pods saw the client as {seen} (masqueraded as the node)')
    for name, ip in nodes.items():
        got = lab.http(f'host/{host}', ip, 30081, '/clientip', count=2, timeout=1)
        seen = sorted({x['body'].split(':')[0] for x in got if x['ok']})
        print(f'  {host} -> {name} {ip}:30081 (Local): {verdict(got)}'
              + (f'; the pods saw {seen}, the real client' if seen else
                 ' (no web pod on this node: dropped)'))


def load_balancer(lab: LabControl, host: str, nodes: dict):
    step('External client -> cloud load balancer -> NodeIP:NodePort -> ClusterIP -> Pod')
    lb = lab.client.get('Service', 'default', 'web-lb')
    lb_ip = lb['status']['loadBalancer']['ingress'][0]['ip']
    node_port = lb['spec']['ports'][0]['nodePort']
    got = lab.http(f'host/{host}', lb_ip, 80, '/clientip', count=30)
    via = Counter(x['body'].split(':')[0] for x in got if x['ok'])
    names = {ip: name for name, ip in nodes.items()}
    print(f'  {host} -> {lb_ip}:80 (type LoadBalancer, nodePort {node_port}), 30 new '
          f'connections: {verdict(got)}')
    print('  the cloud spread them over the nodes: '
          + ', '.join(f'{names.get(ip, ip)} {n}' for ip, n in sorted(via.items())))


def ingress(lab: LabControl, host: str, nodes: dict):
    step('External client -> Ingress (nginx, worker-1:80) -> ClusterIP -> Pod')
    show(lab, 'get', 'ingress')
    ingress_ip = lab.client.get('Ingress', 'default', 'web')['status']['loadBalancer'][
        'ingress'][0]['ip']
    for where, address in (('worker-1:80 (hostPort)', nodes['worker-1']),
                           (f'{ingress_ip}:80 (its load balancer)', ingress_ip)):
        got = lab.request(f'host/{host}', address, 80, '/hostname', count=12,
                          host_header='shop.example')
        answered = Counter(x['body'] for x in got if x.get('status') == 200)
        print(f'  {host} -> {where}, Host shop.example, 12 requests: answered by '
              + ', '.join(f'{n} {k}' for k, n in sorted(answered.items())))
    [other] = lab.request(f'host/{host}', nodes['worker-1'], 80, '/hostname',
                          host_header='unknown.example')
    print(f'  Host unknown.example: HTTP {other.get("status")} (no rule, no default backend)')
    [seen] = lab.request(f'host/{host}', nodes['worker-1'], 80, '/clientip',
                         host_header='shop.example')
    print(f'  the pod saw the connection come from {seen["body"].split(":")[0]}: the '
          'ingress controller pod (nginx proxies, through the ClusterIP)')


def gateway(lab: LabControl, host: str):
    step('External client -> Gateway (its own nginx and address) -> HTTPRoute 80/20 -> Pods')
    lab.client.wait_ready()                # the Gateway's own nginx pod included
    show(lab, 'get', 'gateways')
    show(lab, 'get', 'httproutes')
    gw_ip = lab.client.get('Gateway', 'default', 'demo-gw')['status']['addresses'][0][
        'value']
    got = lab.request(f'host/{host}', gw_ip, 80, '/hostname', count=50)
    split = Counter('web-v2' if x['body'].startswith('web-v2') else 'web'
                    for x in got if x.get('status') == 200)
    print(f'  {host} -> {gw_ip}:80, 50 requests: web {split["web"]}, web-v2 '
          f'{split["web-v2"]} (weights 80/20)')
