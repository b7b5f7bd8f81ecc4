"""The node bridge and the cloud edge are built one function per table: the stage lists
name the pipeline's tables in order (as docs/pipeline.md's sections do), and each stage
returns flows of its own table only, so a table's flows are found in the function named
after it."""

import re

import pytest

from controller.pipeline import edge_switch, node_switch
from controller.pipeline.tables import TABLE_NAMES, TABLES
from controller.state import ClusterState
from services.cluster import default_cluster

CLUSTER = default_cluster()


def snake(name: str) -> str:
    """A table's name as its stage function is named: ServiceLB -> service_lb."""
    return re.sub(r'(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])', '_', name).lower()


def test_stage_names():
    assert [snake(t.name) for t in TABLES] == [
        'classifier', 'arp_responder', 'un_snat', 'conntrack_zone', 'conntrack_state',
        'session_affinity', 'service_lb', 'endpoint_dnat', 'affinity_learn',
        'egress_rule', 'egress_default_rule', 'ingress_rule', 'ingress_default_rule',
        'policy_verdict', 'conntrack_commit', 'l3_forwarding', 'snat', 'output']


def test_the_node_bridge_has_a_stage_per_table_in_pipeline_order():
    assert [s.__name__ for s in node_switch.STAGES] == [snake(t.name) for t in TABLES]


def test_the_cloud_edge_stages_are_tables_of_the_pipeline_in_its_order():
    order = [snake(t.name) for t in TABLES]
    names = [s.__name__ for s in edge_switch.STAGES]
    assert [n for n in order if n in names] == names


@pytest.fixture(scope='module')
def state():
    """Every kind of front: a sticky NodePort with externalTrafficPolicy Local, a plain
    ClusterIP, a LoadBalancer, and a pod with a hostPort; a NetworkPolicy that isolates
    every pod both ways and admits some."""
    pods = [{'metadata': {'name': f'web-{i}', 'namespace': 'default'},
             'spec': {'nodeName': node, 'containers': [{'name': 'c', 'ports': [
                 {'containerPort': 8080, 'hostPort': 8080 + i, 'protocol': 'TCP'}]}]},
             'status': {'podIP': ip}}
            for i, (node, ip) in enumerate((('control-plane', '192.168.1.10'),
                                            ('worker-1', '192.168.2.10'),
                                            ('worker-2', '192.168.3.10')), start=1)]
    ports = [{'name': 'http', 'port': 80, 'targetPort': 8080}]
    services = [
        {'metadata': {'name': 'sticky', 'namespace': 'default'},
         'spec': {'type': 'NodePort', 'clusterIP': '10.96.0.21', 'externalTrafficPolicy':
                  'Local', 'sessionAffinity': 'ClientIP',
                  'ports': [dict(ports[0], nodePort=30081)]}},
        {'metadata': {'name': 'plain', 'namespace': 'default'},
         'spec': {'clusterIP': '10.96.0.22', 'ports': ports}},
        {'metadata': {'name': 'lb', 'namespace': 'default'},
         'spec': {'type': 'LoadBalancer', 'clusterIP': '10.96.0.23',
                  'ports': [dict(ports[0], nodePort=30083)]},
         'status': {'loadBalancer': {'ingress': [{'ip': '203.0.113.100'}]}}}]
    slices = [{'metadata': {'name': f'{svc["metadata"]["name"]}-x', 'namespace': 'default',
                            'labels': {'kubernetes.io/service-name': svc['metadata']['name']}},
               'ports': [{'name': 'http', 'port': 8080, 'protocol': 'TCP'}],
               'endpoints': [{'addresses': [p['status']['podIP']],
                              'nodeName': p['spec']['nodeName'],
                              'conditions': {'ready': True}} for p in pods]}
              for svc in services]
    policy = {'metadata': {'name': 'some', 'namespace': 'default'},
              'spec': {'podSelector': {}, 'policyTypes': ['Ingress', 'Egress'],
                       'ingress': [{'ports': [{'port': 80, 'protocol': 'TCP'}]}],
                       'egress': [{'to': [{'ipBlock': {'cidr': '10.0.0.0/8'}}]}]}}
    return ClusterState.from_objects(CLUSTER, {'Pod': pods, 'Service': services,
                                               'EndpointSlice': slices,
                                               'NetworkPolicy': [policy]})


@pytest.mark.parametrize('node', CLUSTER.nodes, ids=[n.name for n in CLUSTER.nodes])
def test_each_node_bridge_stage_returns_only_its_own_tables_flows(state, node):
    ctx = node_switch.NodeBridge(state, node)
    for stage in node_switch.STAGES:
        tables = {snake(TABLE_NAMES[f.table]) for f in stage(ctx)}
        assert tables <= {stage.__name__}, stage.__name__
    used = {f.table for f in node_switch.node_bridge(state, node).flows}
    assert {TABLE_NAMES[t] for t in used} == {t.name for t in TABLES}      # every stage


def test_each_cloud_edge_stage_returns_only_its_own_tables_flows(state):
    ctx = edge_switch.CloudEdge(state)
    for stage in edge_switch.STAGES:
        flows = stage(ctx)
        assert flows
        assert {snake(TABLE_NAMES[f.table]) for f in flows} == {stage.__name__}
    assert not edge_switch.cloud_edge(state).groups     # ServiceLB's flows pick the node
