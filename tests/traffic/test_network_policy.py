"""NetworkPolicy through the switches, as upstream's e2e suite (test/e2e/network/netpol)
tests it: namespaces x, y and z, pods a, b and c in each (a on control-plane, b on
worker-1, c on worker-2), each serving ports 80 and 81 on TCP and UDP. For each set of
policies every pod probes every pod on both ports and protocols at once (one probe
process per source pod, its 36 probes concurrent), and the whole matrix is compared
with a truth table that a model *written here* computes from the policies' YAML (it
shares no code with the product's selection, services/networkpolicy.py). A cell that
disagrees is probed again twice before it counts (a probe on a loaded machine can lose
its first packet), and a blocked probe must time out: a policy drops, it never refuses.

Then what the matrix cannot show: through a ClusterIP (egress judged on the endpoint)
and a NodePort (the source the pod sees), a label change moving a pod and a namespace
in and out of a policy, an established connection outliving a policy that would drop
it, kubelet probes under a default deny, and the commands (get, label, trace).
"""

from __future__ import annotations

import ipaddress
import itertools
import time

import pytest
import yaml

NAMESPACES = ('x', 'y', 'z')
PODS = {'a': 'control-plane', 'b': 'worker-1', 'c': 'worker-2'}
PORTS = (80, 81)
PROTOS = ('tcp', 'udp')
CLIENT = '203.0.113.10'
UDP_PORTS = itertools.cycle(range(20000, 60000))     # a fresh source port per UDP probe


def model_manifests() -> str:
    docs = [f'''apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{ns: {ns}}}}}''' for ns in NAMESPACES]
    for ns in NAMESPACES:
        for name, node in PODS.items():
            containers = ''.join(f'''
  - name: cont-{port}
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, --http-port={port}, --udp-port={port}]
    ports:
    - {{name: serve-{port}-tcp, containerPort: {port}}}
    - {{name: serve-{port}-udp, containerPort: {port}, protocol: UDP}}''' for port in PORTS)
            probe = ('\n    readinessProbe: {httpGet: {path: /healthz, port: 80}, '
                     'periodSeconds: 1, failureThreshold: 1}') if (ns, name) == ('x', 'a') \
                else ''
            docs.append(f'''apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{pod: {name}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  tolerations: [{{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}}]
  containers:{containers}{probe}''')
    for name, policy, port in (('svc', 'Cluster', 30080), ('svc-local', 'Local', 30081)):
        docs.append(f'''apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: x}}
spec:
  type: NodePort
  externalTrafficPolicy: {policy}
  selector: {{pod: b}}
  ports: [{{port: 80, targetPort: 80, nodePort: {port}}}]''')
    return '\n---\n'.join(docs) + '\n'


# ---------------------------------------------------------------- the truth model
def selector_holds(selector: dict, labels: dict) -> bool:
    """A LabelSelector against labels (an empty selector holds for everything)."""
    for key, value in (selector.get('matchLabels') or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get('matchExpressions') or ():
        present, values = expr['key'] in labels, expr.get('values') or ()
        if expr['operator'] == 'In' and not (present and labels[expr['key']] in values):
            return False
        if expr['operator'] == 'NotIn' and present and labels[expr['key']] in values:
            return False
        if expr['operator'] == 'Exists' and not present:
            return False
        if expr['operator'] == 'DoesNotExist' and present:
            return False
    return True


class Truth:
    """Who may reach whom, from the policies as written (the API's semantics)."""

    def __init__(self, policies: list[dict], pods: dict, namespace_labels: dict):
        self.policies, self.pods, self.ns_labels = policies, pods, namespace_labels

    @staticmethod
    def types(policy: dict) -> list:
        spec = policy.get('spec') or {}
        return spec.get('policyTypes') or (['Ingress'] + (['Egress'] if spec.get('egress')
                                                          else []))

    def peer_holds(self, peer: dict, policy_ns: str, other) -> bool:
        if 'ipBlock' in peer:
            addr = ipaddress.ip_address(other['ip'] if isinstance(other, dict) else other)
            block = peer['ipBlock']
            return addr in ipaddress.ip_network(block['cidr'], strict=False) and not any(
                addr in ipaddress.ip_network(e, strict=False) for e in block.get('except', ()))
        if not isinstance(other, dict):          # an address that is no pod
            return False
        if 'namespaceSelector' in peer:
            in_ns = selector_holds(peer['namespaceSelector'], self.ns_labels[other['ns']])
        else:
            in_ns = other['ns'] == policy_ns
        return in_ns and selector_holds(peer.get('podSelector') or {}, other['labels'])

    @staticmethod
    def port_holds(ports: list, dst, port: int, proto: str) -> bool:
        if not ports:
            return True
        for entry in ports:
            if entry.get('protocol', 'TCP').lower() != proto:
                continue
            value = entry.get('port')
            if value is None:
                return True
            if isinstance(value, str):
                if isinstance(dst, dict) and dst['ports'].get((value, proto)) == port:
                    return True
            elif value <= port <= entry.get('endPort', value):
                return True
        return False

    def side(self, direction: str, subject, other, dst, port, proto) -> bool:
        if not isinstance(subject, dict):
            return True
        applying = [p for p in self.policies if direction in self.types(p)
                    and p['metadata']['namespace'] == subject['ns']
                    and selector_holds(p['spec'].get('podSelector') or {}, subject['labels'])]
        if not applying:
            return True
        rules_key, peers_key = (('ingress', 'from') if direction == 'Ingress'
                                else ('egress', 'to'))
        for policy in applying:
            for rule in policy['spec'].get(rules_key) or ():
                peers = rule.get(peers_key) or []
                if peers and not any(self.peer_holds(peer, policy['metadata']['namespace'],
                                                     other) for peer in peers):
                    continue
                if self.port_holds(rule.get('ports') or [], dst, port, proto):
                    return True
        return False

    def allowed(self, src, dst, port: int, proto: str) -> bool:
        if src is dst:
            return True                  # a pod's traffic to itself never leaves it
        return self.side('Egress', src, dst, dst, port, proto) and \
            self.side('Ingress', dst, src, dst, port, proto)


# ---------------------------------------------------------------- probing
class Model:
    def __init__(self, lab):
        self.lab = lab
        self.pods = {}
        for ns in NAMESPACES:
            for name in PODS:
                pod = lab.client.get('Pod', ns, name)
                self.pods[f'{ns}/{name}'] = {
                    'ns': ns, 'name': name, 'ip': pod['status']['podIP'],
                    'labels': dict(pod['metadata'].get('labels') or {}),
                    'ports': {(p['name'], p.get('protocol', 'TCP').lower()): p['containerPort']
                              for c in pod['spec']['containers'] for p in c['ports']}}
        self.ns_labels = {ns: dict(lab.client.get('Namespace', None, ns)['metadata']['labels'])
                          for ns in NAMESPACES}

    def refresh_labels(self):
        for key, pod in self.pods.items():
            ns, name = key.split('/')
            pod['labels'] = dict(self.lab.client.get('Pod', ns, name)['metadata'].get(
                'labels') or {})
        for ns in NAMESPACES:
            self.ns_labels[ns] = dict(self.lab.client.get('Namespace', None, ns)[
                'metadata']['labels'])

    def probe(self, cells: list, timeout: float) -> dict:
        """cells: (src, dst, port, proto) keys -> the probe's result."""
        by_source = {}
        for cell in cells:
            by_source.setdefault(cell[0], []).append(cell)
        jobs = [(src.split('/')[1], src.split('/')[0],
                 [(self.pods[c[1]]['ip'], c[2], c[3], next(UDP_PORTS) if c[3] == 'udp'
                   else 0) for c in group]) for src, group in by_source.items()]
        results = self.lab.matrix(jobs, timeout)
        return {cell: r for group, res in zip(by_source.values(), results)
                for cell, r in zip(group, res)}

    def check(self, policies: list[dict]) -> float:
        """Probe the whole matrix and compare it with the truth; seconds taken."""
        began = time.monotonic()
        truth = Truth(policies, self.pods, self.ns_labels)
        cells = [(s, d, port, proto) for s in self.pods for d in self.pods
                 for port in PORTS for proto in PROTOS]
        want = {c: truth.allowed(self.pods[c[0]], self.pods[c[1]], c[2], c[3])
                for c in cells}
        got = self.probe(cells, 1.0)
        for _ in range(2):
            wrong = [c for c in cells if got[c]['ok'] != want[c]]
            if not wrong:
                break
            got.update(self.probe(wrong, 2.0))
        wrong = [c for c in cells if got[c]['ok'] != want[c]]
        if wrong:
            self.debug_dump(wrong[0])
        assert not wrong, 'reachability differs from the truth table:\n' + '\n'.join(
            f'  {s} -> {d}:{port}/{proto}: expected '
            f'{"allowed" if want[(s, d, port, proto)] else "blocked"}, got '
            f'{got[(s, d, port, proto)]}' for s, d, port, proto in wrong[:40])
        refused = [c for c in cells if not want[c] and got[c].get('error') != 'timeout']
        assert not refused, f'a policy must drop, not refuse: {[(c, got[c]) for c in refused]}'
        return time.monotonic() - began


    def debug_dump(self, cell):
        """What the switches did with a cell that disagrees (for whoever reads the
        failure): /tmp/kubelab-netpol-failure-TIME.txt."""
        import subprocess
        src, dst, port, proto = cell
        parts = [repr(cell), self.lab.kubelab('get', 'netpol', '-A', check=False).stdout]
        for argv in (['ovs-appctl', 'dpctl/dump-flows'],
                     ['ovs-appctl', 'dpctl/dump-conntrack'],
                     ['ovs-ofctl', '-O', 'OpenFlow13', '--names', 'dump-flows', 'kl-n1'],
                     ['ovs-ofctl', '-O', 'OpenFlow13', '--names', 'dump-flows', 'kl-n2'],
                     ['ovs-ofctl', '-O', 'OpenFlow13', '--names', 'dump-flows', 'kl-n3']):
            out = subprocess.run(argv, capture_output=True, text=True)
            parts.append(' '.join(argv) + '\n' + out.stdout + out.stderr)
        ns, name = src.split('/')
        parts.append(self.lab.kubelab('trace', name, '-n', ns,
                                      f'{self.pods[dst]["ip"]}:{port}', '--proto', proto,
                                      check=False).stdout)
        with open(f'/tmp/kubelab-netpol-failure-{time.time():.0f}.txt', 'w') as f:
            f.write('\n\n'.join(parts))


@pytest.fixture(scope='module')
def model(lab):
    lab.apply(model_manifests())
    return Model(lab)


@pytest.fixture
def policies(lab):
    """Apply NetworkPolicies (YAML) for one test; deleted again afterwards."""
    applied = []

    def apply(*texts):
        docs = [yaml.safe_load(t) for t in texts]
        for doc in docs:
            doc['metadata'].setdefault('namespace', 'default')
        text = '\n---\n'.join(yaml.safe_dump(d) for d in docs)
        applied.append(text)
        lab.apply(text)
        return docs
    yield apply
    for text in reversed(applied):
        lab.delete(text)


def netpol(name: str, ns: str, spec: str) -> str:
    return (f'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n'
            f'metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}')


DENY_ALL_X = netpol('deny-all', 'x', '  podSelector: {}\n')

# name -> the policies of one matrix check (upstream's cases, every field of the API).
CASES = {
    'no policy': [],
    'default deny ingress': [DENY_ALL_X],
    'allow all ingress beside a default deny': [DENY_ALL_X, netpol('allow-all', 'x', '''
  podSelector: {}
  ingress: [{}]
''')],
    'pod and namespace selector in one peer (AND), on port 80': [DENY_ALL_X, netpol(
        'and', 'x', '''
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80, protocol: TCP}]
''')],
    'two peers (OR), matchExpressions, UDP 81': [netpol('or', 'x', '''
  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x, y]}]}
    - podSelector: {matchExpressions: [{key: pod, operator: Exists}]}
    ports: [{port: 81, protocol: UDP}]
''')],
    'namespace by kubernetes.io/metadata.name, a port range': [netpol('range', 'y', '''
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]
    ports: [{port: 80, endPort: 81, protocol: UDP}, {port: 81}]
''')],
    'named ports, ingress and egress': [netpol('named-in', 'x', '''
  podSelector: {matchLabels: {pod: c}}
  ingress:
  - ports: [{port: serve-81-udp, protocol: UDP}, {port: serve-80-tcp}]
'''), netpol('named-out', 'z', '''
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {}}]
    ports: [{port: serve-81-tcp}]
''')],
    'default deny egress, allowed to one namespace': [netpol('deny-egress', 'x', '''
  podSelector: {}
  policyTypes: [Egress]
'''), netpol('to-y', 'x', '''
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchExpressions:
          [{key: pod, operator: DoesNotExist}]}}, {namespaceSelector: {matchLabels: {ns: y}}}]
''')],
    'ipBlock with except, both directions': [netpol('blocks', 'y', '''
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{ipBlock: {cidr: 192.168.2.0/24, except: [X_B/32]}}]
  egress:
  - to: [{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.3.0/24]}}]
    ports: [{port: 80}]
''')],
    'policies add up; policyTypes Egress ignores ingress rules': [netpol('one', 'z', '''
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: a}}}]
'''), netpol('two', 'z', '''
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: c}}}]
    ports: [{port: 80}]
'''), netpol('egress-only', 'z', '''
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Egress]
  ingress: [{}]
  egress: [{ports: [{port: 81, protocol: UDP}]}]
''')],
}


@pytest.mark.parametrize('case', CASES)
def test_the_reachability_matrix_matches_the_truth_table(model, policies, case):
    texts = [t.replace('X_B', model.pods['x/b']['ip']) for t in CASES[case]]
    docs = policies(*texts) if texts else []
    took = model.check(docs)
    print(f'{case}: {len(model.pods) ** 2 * 4} probes checked in {took:.1f} s')


# ---------------------------------------------------------------- beyond the matrix
def reach(lab, source: str, namespace: str, host: str, port: int, proto='tcp',
          timeout=1.5) -> dict:
    [[result]] = lab.matrix([(source, namespace, [(host, port, proto,
                                                    next(UDP_PORTS) if proto == 'udp'
                                                    else 0)])], timeout)
    return result


#: z/a may call x/b on port 80, nothing else.
TO_B = netpol('to-b', 'z', """
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80}]
""")


def test_egress_is_judged_on_the_service_endpoint_after_the_dnat(lab, model, policies):
    vip = lab.cluster_ip('svc', 'x')             # in front of x/b
    policies(TO_B)
    assert reach(lab, 'a', 'z', vip, 80)['ok']
    assert reach(lab, 'a', 'z', model.pods['x/b']['ip'], 80)['ok']
    assert reach(lab, 'a', 'z', model.pods['x/c']['ip'], 80)['error'] == 'timeout'
    assert reach(lab, 'a', 'z', model.pods['x/b']['ip'], 81)['error'] == 'timeout'


def test_the_trace_of_a_service_connection_shows_the_egress_verdict(lab, model, policies):
    """kubelab trace agrees with the switches on a Service connection's egress policy,
    which is judged after the group's DNAT (conntrack then says +dnat): allowed by the
    rule that admits the endpoint, and dropped on the client's own node when none does."""
    vip = lab.cluster_ip('svc', 'x')             # in front of x/b
    policies(TO_B, netpol('no-out', 'y', """
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
"""))
    allowed = lab.kubelab('trace', 'a', '-n', 'z', f'{vip}:80').stdout
    assert 'egress allowed by rule z/to-b egress[0]' in allowed, allowed
    assert '=> delivered to pod x/b' in allowed, allowed
    assert reach(lab, 'a', 'z', vip, 80)['ok']
    denied = lab.kubelab('trace', 'a', '-n', 'y', f'{vip}:80').stdout
    assert 'egress DENIED: pod y/a is isolated by y/no-out' in denied, denied
    assert '=> DROPPED at kl-n1 table PolicyVerdict' in denied, denied    # y/a's own node
    assert reach(lab, 'a', 'y', vip, 80)['error'] == 'timeout'


def test_ingress_through_a_cluster_ip_sees_the_client_pod(lab, model, policies):
    vip = lab.cluster_ip('svc', 'x')
    policies(netpol('from-y-b', 'x', """
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]
"""))
    assert reach(lab, 'b', 'y', vip, 80)['ok']
    assert reach(lab, 'c', 'y', vip, 80)['error'] == 'timeout'


NODES_ONLY = netpol('from-nodes', 'x', """
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{ipBlock: {cidr: 10.128.0.0/24}}]
""")
CLIENTS_ONLY = netpol('from-clients', 'x', """
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{ipBlock: {cidr: 203.0.113.0/24}}]
""")


@pytest.mark.parametrize('node', ['worker-1', 'worker-2'])
def test_a_cluster_node_port_reaches_the_pod_as_the_node(lab, model, policies, node):
    """externalTrafficPolicy Cluster: the node masquerades the client, so the pod (and
    its policy) sees the node's address, whether it runs on that node (worker-1) or
    another (worker-2): an ipBlock of the nodes admits it, one of the clients does not."""
    node_ip = {'worker-1': '10.128.0.12', 'worker-2': '10.128.0.13'}[node]
    policies(NODES_ONLY)
    [got] = lab.http('host/client-1', node_ip, 30080, '/clientip', timeout=1.5)
    assert got['ok'], got
    assert got['body'].split(':')[0] == node_ip
    lab.delete(NODES_ONLY)
    policies(CLIENTS_ONLY)
    [got] = lab.probe('host/client-1', 'tcp', node_ip, 30080, timeout=1.5)
    assert got['error'] == 'timeout', got


def test_a_local_node_port_reaches_the_pod_as_the_client(lab, model, policies):
    policies(CLIENTS_ONLY)
    [got] = lab.http('host/client-1', '10.128.0.12', 30081, '/clientip', timeout=1.5)
    assert got['ok'] and got['body'].split(':')[0] == CLIENT, got


def test_a_label_change_moves_a_pod_in_and_out_of_a_policy(lab, model, policies):
    policies(DENY_ALL_X, netpol('from-clients', 'x', """
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: client}}}]
"""))
    target = model.pods['x/a']['ip']
    assert reach(lab, 'a', 'y', target, 80)['error'] == 'timeout'
    try:
        out = lab.kubelab('label', 'pod', 'a', '-n', 'y', 'role=client').stdout
        assert out.strip() == 'pod/a labeled'
        began = time.monotonic()
        lab.client.wait_dataplane()
        print(f'label change in the switches {time.monotonic() - began:.2f} s after '
              f'the command returned')
        assert reach(lab, 'a', 'y', target, 80)['ok']
        assert reach(lab, 'b', 'y', target, 80)['error'] == 'timeout'
        out = lab.kubelab('label', 'pod/a', 'role-', '-n', 'y').stdout
        assert out.strip() == 'pod/a unlabeled'
        lab.client.wait_dataplane()
        assert reach(lab, 'a', 'y', target, 80)['error'] == 'timeout'
    finally:
        lab.kubelab('label', 'pod', 'a', '-n', 'y', 'role-', check=False)


def test_a_namespace_label_change_moves_its_pods(lab, model, policies):
    policies(DENY_ALL_X, netpol('from-team', 'x', """
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: blue}}}]
"""))
    target = model.pods['x/c']['ip']
    assert reach(lab, 'b', 'z', target, 81, 'udp')['error'] == 'timeout'
    try:
        assert lab.kubelab('label', 'namespace', 'z', 'team=blue').stdout.strip() == \
            'namespace/z labeled'
        lab.client.wait_dataplane()
        assert reach(lab, 'b', 'z', target, 81, 'udp')['ok']
        assert reach(lab, 'b', 'y', target, 81, 'udp')['error'] == 'timeout'
    finally:
        lab.kubelab('label', 'namespace', 'z', 'team-', check=False)


def test_an_established_connection_outlives_a_policy_that_would_drop_it(lab, model,
                                                                         policies):
    target = model.pods['x/a']['ip']
    steady = lab.background('a', 'keepalive', target, 80, path='/hostname',
                            interval=0.05, namespace='y')
    try:
        time.sleep(0.5)
        policies(DENY_ALL_X)
        assert reach(lab, 'a', 'y', target, 80)['error'] == 'timeout'   # a new one
        time.sleep(0.5)
    finally:
        result = steady.stop()
    assert result['sent'] > 10 and result['failed'] == 0, result


def test_the_node_still_reaches_its_pods_under_a_default_deny(lab, model, policies):
    """kubelet's readiness probes come from the node itself: x/a (probed every second,
    one failure makes it unready) stays ready; another node is denied like anyone."""
    policies(DENY_ALL_X)
    time.sleep(3)
    pod = lab.client.get('Pod', 'x', 'a')
    ready = [c for c in pod['status']['conditions'] if c['type'] == 'Ready'][0]
    assert ready['status'] == 'True', pod['status']
    target = model.pods['x/a']['ip']
    assert lab.probe('node/control-plane', 'tcp', target, 80, timeout=1.5)[0]['ok']
    assert lab.probe('node/worker-1', 'tcp', target, 80, timeout=1.5)[0]['error'] == \
        'timeout'


def test_get_and_label_speak_kubectl(lab, model, policies):
    policies(DENY_ALL_X, netpol('web', 'x', """
  podSelector: {matchLabels: {pod: a}, matchExpressions: [{key: tier, operator: Exists}]}
  ingress: [{}]
"""))
    out = lab.kubelab('get', 'netpol', '-n', 'x').stdout.splitlines()
    assert out[0].split() == ['NAME', 'POD-SELECTOR', 'AGE']
    assert out[1].split()[:2] == ['deny-all', '<none>']
    assert out[2].split()[:2] == ['web', 'pod=a,tier']
    policy = lab.get_json('networkpolicy', 'web', '-n', 'x')
    assert policy['spec']['policyTypes'] == ['Ingress']
    assert 'status' not in policy
    ns = lab.get_json('namespace', 'x')
    assert ns['metadata']['labels']['kubernetes.io/metadata.name'] == 'x'
    try:
        lab.kubelab('label', 'pod', 'b', '-n', 'x', 'tier=web')
        again = lab.kubelab('label', 'pod', 'b', '-n', 'x', 'tier=db', check=False)
        assert again.returncode == 1
        assert again.stderr.strip() == \
            "error: 'tier' already has a value (web), and --overwrite is false"
        assert lab.kubelab('label', 'pod', 'b', '-n', 'x', 'tier=db',
                           '--overwrite').stdout.strip() == 'pod/b labeled'
        out = lab.kubelab('label', 'pod', 'b', '-n', 'x', 'nope-').stdout
        assert out.splitlines() == ['label "nope" not found.', 'pod/b not labeled']
        bad = lab.kubelab('label', 'pod', 'b', '-n', 'x', 'tier=a b', check=False)
        assert bad.returncode == 1 and 'invalid label value' in bad.stderr
    finally:
        lab.kubelab('label', 'pod', 'b', '-n', 'x', 'tier-', check=False)


def test_trace_flows_top_and_diagram_name_the_policy(lab, model, policies, tmp_path):
    policies(DENY_ALL_X, netpol('from-y', 'x', """
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: 80}]
"""))
    target = model.pods['x/a']['ip']
    allowed = lab.kubelab('trace', 'b', '-n', 'y', f'{target}:80').stdout
    assert 'NetworkPolicy on kl-n1: ingress allowed by rule x/from-y ingress[0]' in allowed
    assert '=> delivered to pod x/a' in allowed
    denied = lab.kubelab('trace', 'b', '-n', 'z', f'{target}:80').stdout
    assert ('NetworkPolicy on kl-n1: ingress DENIED: pod x/a is isolated by x/deny-all, '
            'x/from-y') in denied
    assert '=> DROPPED at kl-n1 table PolicyVerdict' in denied
    # Two connections allowed, three refused (the first SYN and two retransmissions).
    assert reach(lab, 'b', 'y', target, 80)['ok'] and reach(lab, 'c', 'y', target, 80)['ok']
    assert reach(lab, 'b', 'z', target, 80, timeout=3.5)['error'] == 'timeout'
    out = lab.kubelab('flows', '--node', 'control-plane').stdout
    rows = {tuple(line.split()[:2]): line.split()[-1] for line in
            out.split('NetworkPolicy verdicts')[1].splitlines()[2:]}
    assert int(rows[('x/from-y', 'ingress[0]')]) >= 2
    assert int(rows[('x/deny-all', '(no')]) >= 3
    frame = lab.kubelab('top', '--once', '-n', 'x').stdout
    assert 'NETWORKPOLICY' in frame and 'x/from-y' in frame
    picture = tmp_path / 'lab.svg'
    lab.kubelab('diagram', '-o', str(picture), '-n', 'x')
    text = picture.read_text().replace('&#45;', '-')               # SVG's escape
    assert text.count('ingress isolated by x/deny-all') == 3     # x/a, x/b, x/c


def test_the_longest_path_judged_at_both_ends(lab, model, policies):
    """A pod's connection to a NodePort of another node whose endpoint is on a third
    (five recirculations in the userspace datapath, which drops a packet at its seventh on
    Debian 12's Open vSwitch):
    z/a (control-plane) isolated for egress, x/b (worker-1) for ingress, through
    worker-2's NodePort; the policy tables add no recirculation."""
    policies(netpol('out', 'z', """
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.128.0.0/24}}], ports: [{port: 30080}]}]
"""), NODES_ONLY)
    [got] = lab.probe('a', 'http', '10.128.0.13', 30080, '/clientip', timeout=2,
                      namespace='z')
    assert got['ok'], got
    assert got['body'].split(':')[0] == '10.128.0.13'
