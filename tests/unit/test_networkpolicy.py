"""NetworkPolicy on the model side: the API server's validation and defaults
(services/validation/networkpolicy.py), what a policy selects and a rule admits
(services/networkpolicy.py), the namespace name label, ``kubectl label``'s rules
(services/labels.py and the store), the printers, and what the inspection tools read
out of the policy flows (verdict lines of a trace, counters, the diagram)."""

import json

import pytest
import yaml

from controller.flows import flow
from controller.pipeline.tables import T
from kubelab import printers
from kubelab.inspect import policy_counters, trace, trace_render
from kubelab.inspect.diagram import dot_source
from services import manifests, networkpolicy as np
from services.cluster import default_cluster
from services.errors import ApplyError, KubelabError
from services.labels import parse_label_args, relabel
from services.store import Store


def validate(text: str) -> dict:
    return manifests.validate(yaml.safe_load(text))


def problems(spec: str) -> list[str]:
    with pytest.raises(ApplyError) as caught:
        validate('apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n'
                 'metadata: {name: p, namespace: x}\nspec:\n' + spec)
    return [f'{e.path}: {e.message}' for e in caught.value.errors]


# ---------------------------------------------------------------- validation
def test_the_api_servers_defaults():
    policy = validate('''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 80}]}]
  egress: [{}]
''')
    assert policy['spec']['policyTypes'] == ['Ingress', 'Egress']
    assert policy['spec']['ingress'][0]['ports'] == [{'port': 80, 'protocol': 'TCP'}]
    bare = validate('apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n'
                    'metadata: {name: p}\n')
    assert bare['spec'] == {'podSelector': {}, 'policyTypes': ['Ingress']}
    # egress: [] is no egress rule: the default stays Ingress only.
    assert validate('apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n'
                    'metadata: {name: p}\nspec: {egress: []}\n')['spec']['policyTypes'] == \
        ['Ingress']


@pytest.mark.parametrize('spec, want', [
    ('  ingress: [{from: [{}]}]',
     'spec.ingress[0].from[0]: Required value: must specify a peer'),
    ('  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]',
     'spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer'),
    ('  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]}]',
     'spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "10.0.0.0/8": must be a '
     'strict subset of `cidr`'),
    ('  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]',
     'spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "11.0.0.0/16": must be a '
     'strict subset of `cidr`'),
    ('  ingress: [{from: [{ipBlock: {cidr: 10.0.0.1}}]}]',
     'spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.1": must be a valid '
     'CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)'),
    ('  ingress: [{from: [{ipBlock: {}}]}]',
     'spec.ingress[0].from[0].ipBlock.cidr: Required value'),
    ('  ingress: [{ports: [{port: 0}]}]',
     'spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, '
     'inclusive'),
    ('  ingress: [{ports: [{port: 90, endPort: 80}]}]',
     'spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal '
     'to `port`'),
    ('  ingress: [{ports: [{port: http, endPort: 80}]}]',
     'spec.ingress[0].ports[0].endPort: Invalid value: 80: may not be specified when '
     '`port` is non-numeric'),
    ('  ingress: [{ports: [{endPort: 80}]}]',
     'spec.ingress[0].ports[0].endPort: Invalid value: 80: may not be specified when '
     '`port` is not specified'),
    ('  ingress: [{ports: [{protocol: SCTP}]}]',
     'spec.ingress[0].ports[0].protocol: "SCTP" is not supported by kubelab; supported: '
     'TCP, UDP'),
    ('  policyTypes: [Ingress, Sideways]',
     'spec.policyTypes[1]: Unsupported value: "Sideways": supported values: "Ingress", '
     '"Egress"'),
    ('  policyTypes: [Ingress, Egress, Ingress]',
     'spec.policyTypes: Invalid value: ["Ingress", "Egress", "Ingress"]: may not specify '
     'more than two policyTypes'),
    ('  podSelector: {matchExpressions: [{key: app, operator: In}]}',
     'spec.podSelector.matchExpressions[0].values: must be specified when operator is In'),
    ('  ingress: [{from: [{podSelector: {}}], to: []}]',
     'spec.ingress[0].to: unknown field "to"'),
])
def test_the_api_servers_messages(spec, want):
    got = problems(spec)
    assert any(p.startswith(want) for p in got), got


def test_every_namespace_carries_its_name_label():
    ns = validate('apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: '
                  '{kubernetes.io/metadata.name: other, team: a}}\n')
    assert ns['metadata']['labels'] == {'kubernetes.io/metadata.name': 'shop', 'team': 'a'}
    store = Store(default_cluster())
    for name in ('default', 'kube-system'):
        labels = store.get('Namespace', None, name)['metadata']['labels']
        assert labels == {'kubernetes.io/metadata.name': name}


# ---------------------------------------------------------------- selection
def member(ns, name, labels=(), ip='192.168.1.10', ports=()):
    return np.Member(ns, name, ip, tuple(sorted(dict(labels).items())), tuple(ports))


def test_a_policy_selects_pods_of_its_namespace_only():
    policy = np.from_object(validate('''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec: {podSelector: {matchLabels: {app: web}}}
'''))
    assert np.selects(policy, member('x', 'a', {'app': 'web'}))
    assert not np.selects(policy, member('y', 'a', {'app': 'web'}))
    assert not np.selects(policy, member('x', 'b', {'app': 'db'}))
    assert np.isolating([policy], member('x', 'a', {'app': 'web'}), np.INGRESS) == [policy]
    assert np.isolating([policy], member('x', 'a', {'app': 'web'}), np.EGRESS) == []


def test_peers_pod_and_namespace_selectors_and_ip_blocks():
    ns_labels = {'x': {'kubernetes.io/metadata.name': 'x'},
                 'y': {'kubernetes.io/metadata.name': 'y', 'team': 'blue'}}
    peer = np.Peer(pod_selector={'matchLabels': {'app': 'db'}})
    assert np.peer_selects(peer, 'x', member('x', 'd', {'app': 'db'}), ns_labels)
    assert not np.peer_selects(peer, 'x', member('y', 'd', {'app': 'db'}), ns_labels)
    both = np.Peer({'matchLabels': {'app': 'db'}}, {'matchLabels': {'team': 'blue'}})
    assert np.peer_selects(both, 'x', member('y', 'd', {'app': 'db'}), ns_labels)
    assert not np.peer_selects(both, 'x', member('y', 'e', {'app': 'web'}), ns_labels)
    every = np.Peer(namespace_selector={})
    assert np.peer_selects(every, 'x', member('y', 'e'), ns_labels)
    block = np.IPBlock('10.0.0.0/8', ('10.1.0.0/16', '10.2.3.0/24'))
    assert block.contains('10.3.0.1') and not block.contains('10.1.2.3')
    assert not block.contains('10.2.3.4') and block.contains('10.2.4.4')
    assert sum(n.num_addresses for n in block.networks()) == 2**24 - 2**16 - 2**8
    assert np.IPBlock('2001:db8::/64').networks() == []


def test_a_named_port_resolves_per_pod():
    pod = member('x', 'a', ports=[('http', 'TCP', 8080), ('dns', 'UDP', 53)])
    assert np.resolve_port(np.PolicyPort('TCP', 'http'), pod) == 8080
    assert np.resolve_port(np.PolicyPort('UDP', 'http'), pod) is None
    assert np.resolve_port(np.PolicyPort('UDP', 'dns'), pod) == 53


# ---------------------------------------------------------------- kubectl label
def test_label_arguments_as_kubectl_reads_them():
    assert parse_label_args(['app=web', 'tier-']) == ({'app': 'web'}, ['tier'])
    for args, message in ((['a=b=c'], 'invalid label spec: a=b=c'),
                          (['app'], 'unknown label spec: app'),
                          (['app=x', 'app-'], 'can not both modify and remove a label '
                                              'in the same command'),
                          ([], 'at least one label update is required')):
        with pytest.raises(KubelabError, match=message):
            parse_label_args(args)
    with pytest.raises(KubelabError, match='invalid label value: "app=a b"'):
        parse_label_args(['app=a b'])


def test_relabel_with_kubectls_rules_and_words():
    assert relabel({'a': '1'}, {'b': '2'}, [], False) == ({'a': '1', 'b': '2'}, 'labeled',
                                                          [])
    with pytest.raises(KubelabError, match=r"^'a' already has a value \(1\), and "
                                           r"--overwrite is false$"):
        relabel({'a': '1'}, {'a': '1'}, [], False)
    assert relabel({'a': '1'}, {'a': '2'}, [], True)[:2] == ({'a': '2'}, 'labeled')
    assert relabel({'a': '1'}, {}, ['a'], False)[:2] == ({}, 'unlabeled')
    assert relabel({'a': '1'}, {}, ['a'], True)[:2] == ({}, 'labeled')
    assert relabel({'a': '1'}, {}, ['z'], False) == ({'a': '1'}, 'not labeled', ['z'])


def test_the_store_labels_a_pod_and_keeps_a_namespaces_name_label():
    store = Store(default_cluster())
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'x'}},
                 {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': 'a',
                                                                  'namespace': 'x'},
                  'spec': {'containers': [{'name': 'c', 'image': 'registry.k8s.io/pause'}]}}])
    before = store.rv
    assert store.label('Pod', 'x', 'a', {'role': 'client'}, [], False) == {
        'message': 'pod/a labeled', 'notFound': []}
    assert store.get('Pod', 'x', 'a')['metadata']['labels'] == {'role': 'client'}
    assert store.rv > before
    # kubectl words it from what it asked for; the API server puts the label back.
    assert store.label('Namespace', None, 'x', {}, ['kubernetes.io/metadata.name'],
                       False)['message'] == 'namespace/x unlabeled'
    assert store.get('Namespace', None, 'x')['metadata']['labels'] == {
        'kubernetes.io/metadata.name': 'x'}
    with pytest.raises(ApplyError, match='metadata.labels'):
        store.label('Pod', 'x', 'a', {'bad key!': 'v'}, [], False)


# ---------------------------------------------------------------- printers
def test_get_networkpolicies_prints_kubectls_columns():
    from datetime import datetime, timezone
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    items = [{'metadata': {'name': name, 'namespace': 'x',
                           'creationTimestamp': '2024-05-01T11:58:00Z'},
              'spec': {'podSelector': selector}}
             for name, selector in (('deny-all', {}), ('web', {
                 'matchLabels': {'app': 'web'},
                 'matchExpressions': [{'key': 'tier', 'operator': 'In',
                                       'values': ['b', 'a']}]}))]
    out = printers.render('netpol', items, None, now).splitlines()
    assert out[0].split() == ['NAME', 'POD-SELECTOR', 'AGE']
    assert out[1].split() == ['deny-all', '<none>', '2m']
    assert out[2].split() == ['web', 'app=web,tier', 'in', '(a,b)', '2m']
    assert printers.render('networkpolicy', items[:1], 'name', now) == \
        'networkpolicy.networking.k8s.io/deny-all'


# ---------------------------------------------------------------- inspection
def test_a_trace_names_the_rule_that_allowed_and_the_isolation_that_dropped():
    leg = trace.Leg(steps=[
        trace.Step('kl-n2', T['EgressRule'], 'conj_id=7,ip', 200, '0x1',
                   owner='networkpolicy z/to-b egress[0]'),
        trace.Step('kl-n1', T['IngressRule'], 'ip,in_port=2', 220, '0x2',
                   owner='node control-plane (reaches its own pods)'),
        trace.Step('kl-n3', T['IngressDefaultRule'], 'ip,nw_dst=192.168.3.4', 200, '0x3',
                   owner='networkpolicy x/deny,x/web isolates pod x/c for ingress')])
    assert trace_render.policy_verdicts(leg) == [
        'NetworkPolicy on kl-n2: egress allowed by rule z/to-b egress[0]',
        'NetworkPolicy on kl-n1: ingress allowed by node control-plane (reaches its own '
        'pods)',
        'NetworkPolicy on kl-n3: ingress DENIED: pod x/c is isolated by x/deny, x/web and '
        'no rule of theirs admits this connection']


def test_policy_counters_count_allowed_per_rule_and_drops_per_isolating_policy():
    class Row:
        def __init__(self, spec, n):
            self.spec, self.n_packets, self.cookie = spec, n, spec.cookie
            self.table_id, self.owners = spec.table, (spec.owner,)

    class Bridge:
        kind, name = 'node', 'kl-n1'
        flows = [Row(flow(T['IngressRule'], 200, {'conj_id': 7, 'eth_type': 0x800},
                          owner='networkpolicy x/web ingress[0]'), 5),
                 Row(flow(T['IngressRule'], 200, {'eth_type': 0x800, 'tcp_dst': 80},
                          owner='networkpolicy x/web ingress[0]'), 0),
                 Row(flow(T['IngressDefaultRule'], 200,
                          {'eth_type': 0x800, 'ipv4_dst': '192.168.1.3'},
                          owner='networkpolicy x/deny,x/web isolates pod x/a for ingress'),
                     3)]

    class Report:
        bridges = [Bridge()]
    totals = policy_counters.summed(policy_counters.counters(Report()))
    assert totals == {('x/web', 'ingress[0]'): 5, ('x/deny', policy_counters.ISOLATION): 3,
                      ('x/web', policy_counters.ISOLATION): 3}
    rows = [line.split() for line in policy_counters.table(Report(), 'x').splitlines()[2:]]
    assert rows == [['x/deny', '(no', 'rule:', 'dropped)', '3'],
                    ['x/web', '(no', 'rule:', 'dropped)', '3'], ['x/web', 'ingress[0]', '5']]


def test_the_diagram_marks_isolated_pods():
    objects = {'Pod': [{'metadata': {'name': name, 'namespace': 'x',
                                     'labels': {'pod': name}},
                        'spec': {'nodeName': 'worker-1', 'containers': []},
                        'status': {'podIP': ip, 'phase': 'Running',
                                   'conditions': [{'type': 'Ready', 'status': 'True'}]}}
                       for name, ip in (('a', '192.168.2.5'), ('b', '192.168.2.6'))],
               'NetworkPolicy': [json.loads(json.dumps(validate('''
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-a, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress, Egress]}
''')))]}
    info = {'nodes': [{'name': 'worker-1', 'ip': '10.128.0.12', 'bridge': 'kl-n2',
                       'podCIDR': '192.168.2.0/24', 'role': 'worker'}], 'hosts': []}
    dot = dot_source(objects, info)
    assert dot.count('ingress isolated by x/deny-a') == 1
    assert dot.count('egress isolated by x/deny-a') == 1
