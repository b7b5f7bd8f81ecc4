"""``kubelab trace`` against real traffic: for every kind of path, the trace's verdict is
what a real connection meets.

One echo pod (web-1) runs on worker-1 behind four Services: ``cl`` (NodePort, Cluster),
``loc`` (NodePort, Local), ``lb`` (LoadBalancer, Local) and ``none`` (NodePort, no
endpoint); a pod ``hp`` on worker-2 has hostPort 8090. Idle pods on each node send.
For each case the trace runs (kubelab.api.trace, what ``kubelab trace`` prints) and a
real connection is made from the same place to the same address:

* delivered: the connection answers, from the pod the trace delivered to, and the server
  saw the client address the trace ended with;
* dropped: the connection times out, and the flow the trace names as the dropper counted
  the real packets (its n_packets grew), the flow ofproto/trace took is the datapath's;
* rejected: the connection is refused (RST), as fast as the controller answers;
* answered from elsewhere: the trace delivers the packet but its answer comes back from
  an address the client never called (a pod of another node calling a Local NodePort,
  kubernetes#74383): the real connection never opens.
"""

import subprocess
import time

import pytest

from kubelab import api
from tests.traffic.manifests import echo_pod

PODS = echo_pod('web-1', 'worker-1', 'web') + """
apiVersion: v1
kind: Pod
metadata: {name: hp}
spec:
  nodeName: worker-2
  containers:
  - {name: netexec, image: registry.k8s.io/e2e-test-images/agnhost:2.53,
     args: [netexec, --http-port=8080], ports: [{containerPort: 8080, hostPort: 8090}]}
---"""
for probe, node in (('probe-cp', 'control-plane'), ('probe-w1', 'worker-1'),
                    ('probe-w2', 'worker-2')):
    PODS += f"""
apiVersion: v1
kind: Pod
metadata: {{name: {probe}}}
spec:
  nodeName: {node}
  containers:
  - {{name: pause, image: 'registry.k8s.io/pause:3.10'}}
---"""


def service(name, svc_type='NodePort', etp='Cluster', app='web'):
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: {svc_type}
  externalTrafficPolicy: {etp}
  selector: {{app: {app}}}
  ports: [{{port: 80, targetPort: 8080}}]
---"""


SERVICES = (service('cl') + service('loc', etp='Local')
            + service('lb', 'LoadBalancer', 'Local') + service('none', app='nothing'))


@pytest.fixture(scope='module')
def tl(lab):
    lab.apply(PODS + SERVICES)
    return lab


@pytest.fixture(scope='module')
def where(tl):
    """Names -> addresses: nodes, pods, the Services' NodePorts, ClusterIPs, LB IP."""
    out = {n['metadata']['name']: [a['address'] for a in n['status']['addresses']
                                   if a['type'] == 'InternalIP'][0]
           for n in tl.get_json('nodes')['items']}
    for host in tl.get_json('hosts')['items']:
        out[host['metadata']['name']] = host['status']['addresses'][0]['address']
    for pod in ('web-1', 'hp', 'probe-cp', 'probe-w1', 'probe-w2'):
        out[pod] = tl.pod_ip(pod)
    for name in ('cl', 'loc', 'lb', 'none'):
        svc = tl.client.get('Service', 'default', name)
        out[f'{name}.np'] = svc['spec']['ports'][0]['nodePort']
        out[f'{name}.vip'] = svc['spec']['clusterIP']
    tl.client.wait_for(lambda: tl.client.get('Service', 'default', 'lb').get(
        'status', {}).get('loadBalancer', {}).get('ingress'), 'the LB address', timeout=30)
    out['lb.ip'] = tl.client.get('Service', 'default', 'lb')['status'][
        'loadBalancer']['ingress'][0]['ip']
    return out


# (case, source, destination as (host key, port key or number), expected verdict, the
# server's name and the client address it sees when delivered)
CASES = [
    ('pod to ClusterIP, endpoint on its node', 'probe-w1', ('cl.vip', 80), 'delivered',
     'web-1', 'probe-w1'),
    ('pod to ClusterIP, endpoint on another node', 'probe-w2', ('cl.vip', 80), 'delivered',
     'web-1', 'probe-w2'),
    ('outside to Cluster NodePort, node without endpoint', 'host/client-1',
     ('control-plane', 'cl.np'), 'delivered', 'web-1', 'control-plane'),
    ('pod to Cluster NodePort of another node', 'probe-w2', ('control-plane', 'cl.np'),
     'delivered', 'web-1', 'control-plane'),
    ('outside to Local NodePort, node with endpoint', 'host/client-1',
     ('worker-1', 'loc.np'), 'delivered', 'web-1', 'client-1'),
    ('outside to Local NodePort, node without endpoint', 'host/client-1',
     ('control-plane', 'loc.np'), 'dropped', None, None),
    ('pod to Local NodePort of its own node without endpoint', 'probe-cp',
     ('control-plane', 'loc.np'), 'delivered', 'web-1', 'probe-cp'),
    ('pod to Local NodePort of another node with the endpoint', 'probe-w2',
     ('worker-1', 'loc.np'), 'delivered', 'web-1', 'probe-w2'),
    ('pod to Local NodePort of another node, endpoint on a third', 'probe-w2',
     ('control-plane', 'loc.np'), 'answered from elsewhere', None, None),
    ('pod to Local NodePort of another node, endpoint on its own', 'probe-w1',
     ('control-plane', 'loc.np'), 'answered from elsewhere', None, None),
    ('outside to LoadBalancer address', 'host/client-1', ('lb.ip', 80), 'delivered',
     'web-1', 'client-1'),
    ('pod to LoadBalancer address', 'probe-w2', ('lb.ip', 80), 'delivered', 'web-1',
     'probe-w2'),
    ('outside to hostPort', 'host/client-1', ('worker-2', 8090), 'delivered', 'hp',
     'client-1'),
    ('pod to ClusterIP without endpoints', 'probe-w1', ('none.vip', 80), 'rejected', None,
     None),
    ('outside to NodePort without endpoints', 'host/client-1', ('worker-2', 'none.np'),
     'rejected', None, None),
]


def verdict(result) -> str:
    fwd = result.forward
    if fwd.outcome == 'delivered' and result.reply is not None and \
            result.reply.outcome == 'delivered':
        got = result.reply.final
        if f'{got.get("nw_src")}:{got.get("tp_src")}' != result.dst:
            return 'answered from elsewhere'
    return fwd.outcome


def flow_packets(bridge: str, step) -> int:
    """n_packets of the flow a trace step names (its table, priority and cookie)."""
    out = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-flows', bridge,
                          f'cookie={step.cookie}/-1'], capture_output=True, text=True,
                         check=True).stdout
    total = 0
    for line in out.splitlines():
        if f'priority={step.priority},' in line or f'priority={step.priority} ' in line:
            total += int(line.split('n_packets=')[1].split(',')[0])
    return total


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_the_trace_says_what_the_traffic_meets(tl, where, case):
    name, source, (host_key, port_key), want, server, seen = case
    dst_ip = where[host_key]
    port = where[port_key] if isinstance(port_key, str) else port_key
    _, result = api.trace(source, f'{dst_ip}:{port}', client=tl.client)
    assert verdict(result) == want, (name, result.forward.where)
    if want == 'dropped':
        step = result.forward.steps[-1]
        before = flow_packets(step.bridge, step)
        [got] = tl.http(source, dst_ip, port, '/hostname', timeout=1)
        assert got['ok'] is False and got['error'] == 'timeout', got
        time.sleep(0.5)                   # the datapath's counters reach OpenFlow
        assert flow_packets(step.bridge, step) > before, (name, step)
        return
    [got] = tl.http(source, dst_ip, port, '/hostname', timeout=2)
    if want == 'rejected':
        assert got['ok'] is False and got['error'] == 'refused', got
        return
    if want == 'answered from elsewhere':
        # The endpoint the trace reached answers from its own address: no connection.
        assert result.forward.final['nw_dst'] == where['web-1']
        assert got['ok'] is False and got['error'] == 'timeout', got
        return
    assert got['ok'] and got['body'] == server, got
    assert result.forward.final['nw_dst'] == where[server]
    [ip] = tl.http(source, dst_ip, port, '/clientip', timeout=2)
    assert ip['ok'] and ip['body'].split(':')[0] == where[seen], ip
    assert result.forward.final['nw_src'] == where[seen]


def test_a_node_port_trace_names_the_services_cluster_ip(tl, where):
    tracer, result = api.trace('host/client-1', f'{where["control-plane"]}:{where["cl.np"]}',
                               client=tl.client)
    text = trace_text(result, tracer)
    assert (f'The NodePort {where["cl.np"]} belongs to Service default/cl, whose ClusterIP '
            f'is {where["cl.vip"]}:80 with the same endpoints') in text
    assert 'no packet is ever addressed to the ClusterIP' in text
    # ...and the trace is right: no translation ever names the ClusterIP.
    assert all(where['cl.vip'] not in t.before + t.after for t in result.forward.translations)


INGRESS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop}
spec:
  ingressClassName: nginx
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: cl, port: {number: 80}}}}
"""


def test_an_ingress_trace_shows_both_legs_as_the_traffic_goes(tl, where, applied):
    applied(INGRESS)
    controller = tl.pods(namespace='ingress-nginx')[0]
    controller_ip = controller['status']['podIP']
    node_ip = where[controller['spec']['nodeName']]
    tracer, result = api.trace('host/client-1', f'{node_ip}:80', host='shop.example',
                               client=tl.client)
    assert result.forward.outcome == 'delivered'
    assert result.forward.final['nw_dst'] == controller_ip          # leg 1: the proxy
    assert result.proxy.backend == 'default/cl:80'
    assert result.proxy.address == f'{where["cl.vip"]}:80'          # via the ClusterIP
    leg2 = result.backend
    assert leg2.forward.outcome == 'delivered'
    assert (leg2.forward.final['nw_src'], leg2.forward.final['nw_dst']) == (
        controller_ip, where['web-1'])
    text = trace_text(result, tracer)
    assert 'Second leg: the Ingress controller' in text and 'Ingress default/shop' in text
    # The traffic: the backend answers, and sees the proxy's address.
    [got] = tl.request('host/client-1', node_ip, 80, '/hostname', host_header='shop.example')
    assert got['status'] == 200 and got['body'] == 'web-1', got
    [ip] = tl.request('host/client-1', node_ip, 80, '/clientip', host_header='shop.example')
    assert ip['body'].split(':')[0] == controller_ip, ip
    # Another host: no rule, nginx answers 404 itself and the trace says so.
    _, none = api.trace('host/client-1', f'{node_ip}:80', host='other.example',
                        client=tl.client)
    assert none.backend is None and none.proxy.route.startswith('no rule matches (404)')
    [miss] = tl.request('host/client-1', node_ip, 80, '/', host_header='other.example')
    assert miss['status'] == 404, miss


def trace_text(result, tracer) -> str:
    from kubelab.inspect.trace_render import render
    return render(result, tracer)
