"""The cluster file: defaults by position and every validation message."""

import pytest

from services.cluster import (ClusterConfig, ClientSpec, NodeSpec,
                              default_cluster, load_cluster,
                              load_cluster_file)
from services.errors import KubelabError, NotFound, ValidationError


def error(text):
    with pytest.raises(ValidationError) as info:
        load_cluster(text, 'lab.yaml')
    assert info.value.ref == 'Cluster lab.yaml'
    return info.value


def test_default_cluster():
    cluster = default_cluster()
    assert cluster.nodes == (
        NodeSpec('control-plane', 'control-plane', '10.128.0.11',
                 '192.168.1.0/24', 1),
        NodeSpec('worker-1', 'worker', '10.128.0.12', '192.168.2.0/24', 2),
        NodeSpec('worker-2', 'worker', '10.128.0.13', '192.168.3.0/24', 3))
    assert cluster.clients == (ClientSpec('client-1', '203.0.113.10'),
                               ClientSpec('client-2', '203.0.113.11'))
    assert cluster == ClusterConfig(nodes=cluster.nodes,
                                    clients=cluster.clients, ingress_node='worker-1')


@pytest.mark.parametrize('text', ['', '# nothing\n', 'kind: Cluster\n',
                                  'apiVersion: kubelab.io/v1alpha1\n'])
def test_an_empty_file_is_the_default_cluster(text):
    assert load_cluster(text, 'lab.yaml') == default_cluster()


def test_full_file():
    cluster = load_cluster('''
apiVersion: kubelab.io/v1alpha1
kind: Cluster
metadata: {name: lab2}
networking: {serviceSubnet: 10.100.0.0/16, podSubnet: 10.244.0.0/16,
             nodeSubnet: 172.18.0.0/24, externalSubnet: 172.19.0.0/24,
             loadBalancerPool: 172.20.0.0/28, nodePortRange: 31000-31999}
nodes:
  - {name: cp}
  - {name: w1, role: worker, ip: 172.18.0.50, podCIDR: 10.244.9.0/24}
  - {name: w2}
clients:
  - {name: laptop}
  - {name: phone, ip: 172.19.0.99}
''', 'lab.yaml')
    assert cluster.name == 'lab2'
    assert cluster.service_cidr == '10.100.0.0/16'
    assert cluster.cluster_cidr == '10.244.0.0/16'
    assert cluster.external_gateway == '172.19.0.1'
    assert cluster.lb_pool == '172.20.0.0/28'
    assert cluster.node_port_range == (31000, 31999)
    assert cluster.nodes == (
        NodeSpec('cp', 'control-plane', '172.18.0.11', '10.244.1.0/24', 1),
        NodeSpec('w1', 'worker', '172.18.0.50', '10.244.9.0/24', 2),
        NodeSpec('w2', 'worker', '172.18.0.13', '10.244.3.0/24', 3))
    assert cluster.clients == (ClientSpec('laptop', '172.19.0.10'),
                               ClientSpec('phone', '172.19.0.99'))


def test_clients_may_be_empty_but_nodes_may_not():
    assert load_cluster('clients: []\n', 'f').clients == ()
    assert 'at least one node' in error('nodes: []\n').message


def test_node_lookup_and_pod_gateway():
    cluster = default_cluster()
    assert cluster.node('worker-1').ip == '10.128.0.12'
    assert cluster.pod_gateway('worker-2') == '192.168.3.1'
    assert cluster.pod_gateway(cluster.nodes[0]) == '192.168.1.1'
    with pytest.raises(NotFound) as info:
        cluster.node('worker-3')
    assert 'control-plane, worker-1, worker-2' in str(info.value)


@pytest.mark.parametrize('text, path, words', [
    ('nodse: []\n', 'nodse', ['did you mean "nodes"', 'networking']),
    ('apiVersion: v1\n', 'apiVersion', ['kubelab.io/v1alpha1']),
    ('kind: Pod\n', 'kind', ['kind: Cluster']),
    ('metadata: {name: Lab}\n', 'metadata.name', ['RFC 1123']),
    ('networking: {podSubnet: 192.168.0.0/33}\n', 'networking.podSubnet',
     ['not an IPv4 subnet']),
    ('networking: {podSubnet: 192.168.1.0/16}\n', 'networking.podSubnet',
     ['host bits', 'did you mean 192.168.0.0/16']),
    ('networking: {serviceSubnet: 10.0.0.0/8}\n', 'networking.serviceSubnet',
     ['/12 to /28']),
    ('networking: {loadBalancerPool: 10.128.0.128/25}\n',
     'networking.loadBalancerPool', ['overlaps networking.nodeSubnet']),
    ('networking: {nodePortRange: 30000}\n', 'networking.nodePortRange',
     ['FIRST-LAST', '30000-32767']),
    ('networking: {nodePortRange: 32767-30000}\n',
     'networking.nodePortRange', ['FIRST <= LAST']),
    ('networking: {nodePortRange: 1-70000}\n', 'networking.nodePortRange',
     ['65535']),
    ('networking: {podSubnet: 192.168.0.0/16, nodeSubent: x}\n',
     'networking.nodeSubent', ['did you mean "nodeSubnet"']),
    ('nodes: {name: a}\n', 'nodes', ['must be a list']),
    ('nodes: [{role: worker}]\n', 'nodes[0].name', ['required']),
    ('nodes: [{name: Node_1}]\n', 'nodes[0].name', ['RFC 1123']),
    ('nodes: [{name: a}, {name: a}]\n', 'nodes[1].name',
     ['Duplicate value: "a"', 'nodes[0]']),
    ('nodes: [{name: a}]\nclients: [{name: a}]\n', 'clients[0].name',
     ['Duplicate value: "a"', 'unique']),
    ('nodes: [{name: a, role: master}]\n', 'nodes[0].role',
     ['control-plane, worker']),
    ('nodes: [{name: a, ip: 10.128.1.5}]\n', 'nodes[0].ip',
     ['not a host address of nodeSubnet 10.128.0.0/24',
      '10.128.0.2-10.128.0.254']),
    ('nodes: [{name: a, ip: 10.128.0.255}]\n', 'nodes[0].ip',
     ['not a host address']),
    ('nodes: [{name: a, ip: 10.128.0.0}]\n', 'nodes[0].ip',
     ['not a host address']),
    ('nodes: [{name: a, ip: 10.128.0.1}]\n', 'nodes[0].ip', ['gateway']),
    ('nodes: [{name: a, ip: 10.128.0.300}]\n', 'nodes[0].ip',
     ['not an IPv4 address']),
    ('nodes: [{name: a}, {name: b, ip: 10.128.0.11}]\n', 'nodes[1].ip',
     ['Duplicate value: 10.128.0.11', 'nodes[0]']),
    ('nodes: [{name: a, podCIDR: 10.0.0.0/24}]\n', 'nodes[0].podCIDR',
     ['not inside podSubnet 192.168.0.0/16']),
    ('nodes: [{name: a, podCIDR: 192.168.2.0/23}, {name: b}]\n',
     'nodes[1].podCIDR', ['overlaps 192.168.2.0/23 of nodes[0]']),
    ('nodes: [{name: a, podCIDR: 192.168.2.0/31}]\n', 'nodes[0].podCIDR',
     ['too small']),
    ('nodes: [{name: a, bridge: br0}]\n', 'nodes[0].bridge',
     ['name, role, ip, podCIDR']),
    ('networking: {nodeSubnet: 10.128.0.0/29}\n', 'nodes[0].ip',
     ['no default address', 'set ip']),
    ('networking: {podSubnet: 192.168.0.0/24}\n', 'nodes[0].podCIDR',
     ['no default', 'set podCIDR']),
    ('clients: [{name: c, ip: 203.0.113.1}]\n', 'clients[0].ip',
     ['gateway of externalSubnet 203.0.113.0/24']),
    ('clients: [{name: c, ip: 198.51.100.5}]\n', 'clients[0].ip',
     ['not a host address of externalSubnet']),
    ('clients: [{name: c}, {name: d, ip: 203.0.113.10}]\n', 'clients[1].ip',
     ['Duplicate value']),
    ('nodes: x: y\n', 'line 1', ['mapping values']),
])
def test_cluster_errors(text, path, words):
    problem = error(text)
    assert problem.path == path, problem
    for word in words:
        assert word in problem.message, problem


def test_at_most_200_nodes():
    text = 'networking: {nodeSubnet: 10.128.0.0/16}\nnodes:\n' + ''.join(
        f'  - {{name: n{i}}}\n' for i in range(201))
    problem = error(text)
    assert problem.path == 'nodes' and '200' in problem.message


def test_200_nodes_fit_the_defaults():
    text = 'nodes:\n' + ''.join(f'  - {{name: n{i}}}\n' for i in range(200))
    cluster = load_cluster(text, 'f')
    assert cluster.nodes[-1].ip == '10.128.0.210'
    assert cluster.nodes[-1].pod_cidr == '192.168.200.0/24'


def test_one_document_only():
    assert 'one document' in error('kind: Cluster\n---\nkind: Cluster\n'
                                   ).message


def test_load_cluster_file(tmp_path):
    path = tmp_path / 'lab.yaml'
    path.write_text('nodes: [{name: solo}]\n')
    assert [n.name for n in load_cluster_file(path).nodes] == ['solo']
    with pytest.raises(KubelabError) as info:
        load_cluster_file(tmp_path / 'missing.yaml')
    assert 'missing.yaml' in str(info.value)


def test_the_ingress_add_on_is_on_by_default_on_the_first_worker():
    assert load_cluster('addons: {ingressNginx: {enabled: false}}', 'c.yaml').ingress_node \
        is None
    assert load_cluster('addons: {ingressNginx: {node: worker-2}}', 'c.yaml').ingress_node \
        == 'worker-2'
    assert load_cluster('nodes: [{name: solo}]', 'c.yaml').ingress_node == 'solo'
    for text, where in (('addons: {ingressNginx: {node: nope}}', 'addons.ingressNginx.node'),
                        ('addons: {ingressNginx: {enabled: yes please}}',
                         'addons.ingressNginx.enabled'),
                        ('addons: {dns: {}}', 'addons.dns')):
        with pytest.raises(ValidationError) as err:
            load_cluster(text, 'c.yaml')
        assert where in str(err.value)


# ---------------------------------------------------------------- cloud, node lifecycle, MetalLB
def test_the_defaults_are_the_cloud_and_kube_controller_managers_timers():
    cluster = default_cluster()
    assert (cluster.cloud, cluster.bare_metal, cluster.metallb) == ('kubelab', False, False)
    assert (cluster.node_monitor_grace_period, cluster.default_toleration_seconds) == (40, 300)
    assert cluster.heartbeat_interval == 10


def test_a_bare_metal_cluster_gets_metallb_and_a_router_address():
    cluster = load_cluster('cloud: none\n', 'lab.yaml')
    assert (cluster.bare_metal, cluster.metallb, cluster.lan_gateway) == (
        True, True, '10.128.0.1')
    off = load_cluster('cloud: none\naddons: {metallb: {enabled: false}}\n', 'lab.yaml')
    assert off.metallb is False


@pytest.mark.parametrize('text, seconds', [('4s', 4), ('1m30s', 90), ('1500ms', 1.5),
                                           (20, 20)])
def test_the_grace_period_takes_durations(text, seconds):
    cluster = load_cluster(f'nodeLifecycle: {{nodeMonitorGracePeriod: {text}}}\n', 'lab.yaml')
    assert cluster.node_monitor_grace_period == seconds
    assert cluster.heartbeat_interval == min(10, seconds / 4)


@pytest.mark.parametrize('text, path, words', [
    ('cloud: aws', 'cloud', 'unsupported value "aws"; supported: kubelab, none'),
    ('nodeLifecycle: {nodeMonitorGracePeriod: soon}', 'nodeLifecycle.nodeMonitorGracePeriod',
     "'soon' is not a duration"),
    ('nodeLifecycle: {nodeMonitorGracePeriod: 0.5s}', 'nodeLifecycle.nodeMonitorGracePeriod',
     '0.5s is out of range: 1s to 3600s'),
    ('nodeLifecycle: {defaultTolerationSeconds: 1.5}',
     'nodeLifecycle.defaultTolerationSeconds', 'must be a whole number of seconds >= 0'),
    ('nodeLifecycle: {grace: 4s}', 'nodeLifecycle.grace', 'unknown field "grace"'),
    ('addons: {metallb: {enabled: true}}', 'addons.metallb.enabled',
     'MetalLB is for a bare-metal cluster: set cloud: none'),
])
def test_a_bad_cloud_or_lifecycle_setting_names_its_field(text, path, words):
    with pytest.raises(ValidationError) as info:
        load_cluster(text + '\n', 'lab.yaml')
    assert info.value.path == path and words in info.value.message, info.value
