"""kubectl-shaped output: each table, wide, name, json/yaml, AGE, aliases."""

import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from kubelab.ages import human_duration
from kubelab.printers import kind_alias, render

NOW = datetime(2026, 11, 26, 3, 15, 12, tzinfo=timezone.utc)
CREATED = '2026-11-26T03:10:00Z'  # 5m12s before NOW


def meta(name, **extra):
    return {'name': name, 'namespace': 'default', 'creationTimestamp': CREATED,
            **extra}


def pod(name, statuses, phase='Running', ip='192.168.1.5', node='node-1',
        **meta_extra):
    return {
        'apiVersion': 'v1', 'kind': 'Pod',
        'metadata': meta(name, **meta_extra),
        'spec': {'nodeName': node,
                 'containers': [{'name': s['name']} for s in statuses]},
        'status': {'phase': phase, 'podIP': ip, 'containerStatuses': statuses},
    }


def running(name, ready=True, restarts=0):
    return {'name': name, 'ready': ready, 'restartCount': restarts,
            'state': {'running': {'startedAt': CREATED}}}


def waiting(name, reason, restarts=0):
    return {'name': name, 'ready': False, 'restartCount': restarts,
            'state': {'waiting': {'reason': reason}}}


def table(*lines):
    return '\n'.join(lines)


# --- pods --------------------------------------------------------------------

PODS = [
    pod('web-7d4b9c-x2k4p', [running('web'), running('side', ready=False)]),
    pod('web-7d4b9c-q9z8m', [waiting('web', 'ContainerCreating')], ip=None,
        phase='Pending'),
    pod('crash', [waiting('app', 'CrashLoopBackOff', restarts=4)]),
]


def test_pods_table():
    assert render('pods', PODS, None, NOW) == table(
        'NAME               READY   STATUS              RESTARTS   AGE',
        'web-7d4b9c-x2k4p   1/2     Running             0          5m12s',
        'web-7d4b9c-q9z8m   0/1     ContainerCreating   0          5m12s',
        'crash              0/1     CrashLoopBackOff    4          5m12s')


def test_pods_wide():
    assert render('pods', PODS[:2], 'wide', NOW) == table(
        'NAME               READY   STATUS              RESTARTS   AGE     '
        'IP            NODE     NOMINATED NODE   READINESS GATES',
        'web-7d4b9c-x2k4p   1/2     Running             0          5m12s   '
        '192.168.1.5   node-1   <none>           <none>',
        'web-7d4b9c-q9z8m   0/1     ContainerCreating   0          5m12s   '
        '<none>        node-1   <none>           <none>')


def test_terminating_pod_and_restarts_with_last_restart_age():
    gone = pod('old', [running('web', restarts=2)],
               deletionTimestamp='2026-11-26T03:15:00Z')
    gone['status']['containerStatuses'][0]['lastState'] = {
        'terminated': {'finishedAt': '2026-11-26T03:14:00Z'}}
    assert render('pods', [gone], None, NOW).splitlines()[1] == \
        'old    1/1     Terminating   2 (72s ago)   5m12s'


def test_finished_pod_is_not_shown_terminating():
    done = pod('job', [{'name': 'c', 'ready': False, 'restartCount': 0,
                        'state': {'terminated': {'reason': 'Completed',
                                                 'exitCode': 0}}}],
               phase='Succeeded', deletionTimestamp=CREATED)
    assert 'Completed' in render('pods', [done], None, NOW)


def test_terminated_without_reason_shows_exit_code():
    failed = pod('f', [{'name': 'c', 'ready': False, 'restartCount': 0,
                        'state': {'terminated': {'exitCode': 3}}}])
    assert 'ExitCode:3' in render('pods', [failed], None, NOW)


# --- deployments -------------------------------------------------------------

DEPLOY = {
    'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': meta('web'),
    'spec': {'replicas': 3,
             'selector': {'matchLabels': {'app': 'web', 'tier': 'fe'}},
             'template': {'spec': {'containers': [
                 {'name': 'agnhost',
                  'image': 'registry.k8s.io/e2e-test-images/agnhost:2.52'}]}}},
    'status': {'readyReplicas': 2, 'updatedReplicas': 3,
               'availableReplicas': 2},
}


def test_deployments_table_and_missing_counts():
    fresh = {'metadata': meta('new'), 'spec': {'replicas': 2}}
    assert render('deployments', [DEPLOY, fresh], None, NOW) == table(
        'NAME   READY   UP-TO-DATE   AVAILABLE   AGE',
        'web    2/3     3            2           5m12s',
        'new    0/2     0            0           5m12s')


def test_deployments_wide():
    assert render('deploy', [DEPLOY], 'wide', NOW) == table(
        'NAME   READY   UP-TO-DATE   AVAILABLE   AGE     CONTAINERS   '
        'IMAGES                                         SELECTOR',
        'web    2/3     3            2           5m12s   agnhost      '
        'registry.k8s.io/e2e-test-images/agnhost:2.52   app=web,tier=fe')


# --- services ----------------------------------------------------------------

def service(name, svc_type, cluster_ip, ports, selector=None, status=None):
    return {'apiVersion': 'v1', 'kind': 'Service', 'metadata': meta(name),
            'spec': {'type': svc_type, 'clusterIP': cluster_ip,
                     'clusterIPs': [cluster_ip], 'ports': ports,
                     'selector': selector},
            'status': status or {}}


SERVICES = [
    service('web', 'ClusterIP', '10.96.0.10',
            [{'port': 80, 'protocol': 'TCP'}, {'port': 8081,
                                               'protocol': 'UDP'}],
            {'app': 'web'}),
    service('web-np', 'NodePort', '10.96.0.11',
            [{'port': 80, 'nodePort': 30754, 'protocol': 'TCP'}]),
    service('web-lb', 'LoadBalancer', '10.96.0.12',
            [{'port': 80, 'nodePort': 31000, 'protocol': 'TCP'}],
            status={'loadBalancer': {'ingress': [{'ip': '203.0.113.10'},
                                                 {'ip': '203.0.113.11'}]}}),
    service('pending-lb', 'LoadBalancer', '10.96.0.13',
            [{'port': 443, 'nodePort': 31001, 'protocol': 'TCP'}]),
    service('headless', 'ClusterIP', 'None', []),
]


def test_services_table():
    assert render('services', SERVICES, None, NOW) == table(
        'NAME         TYPE           CLUSTER-IP   EXTERNAL-IP                 '
        'PORT(S)           AGE',
        'web          ClusterIP      10.96.0.10   <none>                      '
        '80/TCP,8081/UDP   5m12s',
        'web-np       NodePort       10.96.0.11   <none>                      '
        '80:30754/TCP      5m12s',
        'web-lb       LoadBalancer   10.96.0.12   203.0.113.10,203.0.113.11   '
        '80:31000/TCP      5m12s',
        'pending-lb   LoadBalancer   10.96.0.13   <pending>                   '
        '443:31001/TCP     5m12s',
        'headless     ClusterIP      None         <none>                      '
        '<none>            5m12s')


def test_services_wide_adds_selector():
    lines = render('svc', SERVICES[:2], 'wide', NOW).splitlines()
    assert lines[0].split() == ['NAME', 'TYPE', 'CLUSTER-IP', 'EXTERNAL-IP',
                                'PORT(S)', 'AGE', 'SELECTOR']
    assert lines[1].endswith('5m12s   app=web')
    assert lines[2].endswith('5m12s   <none>')


# --- endpointslices ----------------------------------------------------------

def slice_(name, ports, addresses):
    return {'apiVersion': 'discovery.k8s.io/v1', 'kind': 'EndpointSlice',
            'metadata': meta(name), 'addressType': 'IPv4',
            'ports': [{'name': '', 'port': p, 'protocol': 'TCP'}
                      for p in ports],
            'endpoints': [{'addresses': [a], 'conditions': {'ready': True}}
                          for a in addresses]}


def test_endpointslices_table():
    slices = [
        slice_('web-abc12', [8080, 8081],
               [f'192.168.1.{i}' for i in range(1, 6)]),
        slice_('empty-x1', [], []),
        slice_('two-y2', [80], ['192.168.2.1', '192.168.2.2']),
    ]
    assert render('endpointslices', slices, None, NOW) == table(
        'NAME        ADDRESSTYPE   PORTS       ENDPOINTS                      '
        '                   AGE',
        'web-abc12   IPv4          8080,8081   192.168.1.1,192.168.1.2,'
        '192.168.1.3 + 2 more...   5m12s',
        'empty-x1    IPv4          <unset>     <unset>                        '
        '                   5m12s',
        'two-y2      IPv4          80          192.168.2.1,192.168.2.2        '
        '                   5m12s')


# --- nodes and hosts ---------------------------------------------------------

def node(name, ready, labels=None):
    return {'apiVersion': 'v1', 'kind': 'Node',
            'metadata': {'name': name,
                         'creationTimestamp': '2026-11-24T00:00:00Z',
                         'labels': labels or {}},
            'status': {'conditions': [{'type': 'Ready', 'status': ready}],
                       'addresses': [{'type': 'InternalIP',
                                      'address': '10.128.0.1'}],
                       'nodeInfo': {'kubeletVersion': 'v1.31.0-kubelab',
                                    'osImage': 'kubelab'}}}


NODES = [node('node-1', 'True', {'node-role.kubernetes.io/control-plane': '',
                                 'node-role.kubernetes.io/worker': ''}),
         node('node-2', 'False')]


def test_nodes_table():
    assert render('nodes', NODES, None, NOW) == table(
        'NAME     STATUS     ROLES                  AGE    VERSION',
        'node-1   Ready      control-plane,worker   2d3h   v1.31.0-kubelab',
        'node-2   NotReady   <none>                 2d3h   v1.31.0-kubelab')


def test_nodes_wide():
    assert render('no', NODES[1:], 'wide', NOW) == table(
        'NAME     STATUS     ROLES    AGE    VERSION           INTERNAL-IP   '
        'EXTERNAL-IP   OS-IMAGE   KERNEL-VERSION   CONTAINER-RUNTIME',
        'node-2   NotReady   <none>   2d3h   v1.31.0-kubelab   10.128.0.1    '
        '<none>        kubelab    <unknown>        <unknown>')


def test_hosts_table_and_cluster_scoped_empty_message():
    hosts = [{'kind': 'Host', 'metadata': {'name': 'client1'},
              'status': {'addresses': [{'type': 'ExternalIP',
                                        'address': '198.51.100.10'}]}}]
    assert render('hosts', hosts, None, NOW) == table(
        'NAME      IP', 'client1   198.51.100.10')
    assert render('nodes', [], None, NOW) == 'No resources found'


# --- name, json, yaml, empty -------------------------------------------------

def test_name_output_uses_kubectl_resource_names():
    assert render('pods', PODS[:1], 'name', NOW) == 'pod/web-7d4b9c-x2k4p'
    assert render('deployments', [DEPLOY], 'name', NOW) == \
        'deployment.apps/web'
    assert render('services', SERVICES[:1], 'name', NOW) == 'service/web'


def test_json_list_and_single_object():
    text = render('pods', PODS[:2], 'json', NOW)
    doc = json.loads(text)
    assert doc['apiVersion'] == 'v1' and doc['kind'] == 'List'
    assert doc['metadata'] == {'resourceVersion': ''}
    assert [p['metadata']['name'] for p in doc['items']] == [
        'web-7d4b9c-x2k4p', 'web-7d4b9c-q9z8m']
    assert text.splitlines()[1] == '    "apiVersion": "v1",'  # indent 4
    assert json.loads(render('pods', PODS[:1], 'json', NOW,
                             single=True)) == PODS[0]


def test_yaml_list_and_single_object_keep_field_order():
    doc = yaml.safe_load(render('deployments', [DEPLOY], 'yaml', NOW))
    assert doc['kind'] == 'List' and doc['items'] == [DEPLOY]
    text = render('deployments', [DEPLOY], 'yaml', NOW, single=True)
    assert text.splitlines()[:3] == ['apiVersion: apps/v1', 'kind: Deployment',
                                     'metadata:']


def test_empty_table_names_the_namespace():
    assert render('pods', [], None, NOW) == \
        'No resources found in default namespace.'
    assert render('svc', [], 'wide', NOW, namespace='lab') == \
        'No resources found in lab namespace.'


def test_unknown_output_format():
    with pytest.raises(ValueError, match='allowed formats'):
        render('pods', PODS, 'xml', NOW)


# --- AGE ---------------------------------------------------------------------

@pytest.mark.parametrize('delta,want', [
    (timedelta(seconds=-5), '<invalid>'),
    (timedelta(seconds=-1), '0s'),
    (timedelta(seconds=0), '0s'),
    (timedelta(seconds=45), '45s'),
    (timedelta(seconds=119), '119s'),
    (timedelta(minutes=2), '2m'),
    (timedelta(minutes=5, seconds=12), '5m12s'),
    (timedelta(minutes=12, seconds=30), '12m'),
    (timedelta(minutes=179), '179m'),
    (timedelta(hours=3), '3h'),
    (timedelta(hours=3, minutes=4), '3h4m'),
    (timedelta(hours=8, minutes=30), '8h'),
    (timedelta(hours=47), '47h'),
    (timedelta(days=2, hours=3), '2d3h'),
    (timedelta(days=7), '7d'),
    (timedelta(days=8, hours=5), '8d'),
    (timedelta(days=729), '729d'),
    (timedelta(days=730), '2y'),
    (timedelta(days=800), '2y70d'),
    (timedelta(days=365 * 9), '9y'),
])
def test_human_duration(delta, want):
    assert human_duration(delta.total_seconds()) == want


def test_age_column_without_creation_timestamp():
    bare = {'metadata': {'name': 'x'}, 'spec': {}, 'status': {}}
    assert render('deployments', [bare], None, NOW).splitlines()[1].endswith(
        '<unknown>')


# --- kind aliases ------------------------------------------------------------

@pytest.mark.parametrize('word,kind', [
    ('po', 'pods'), ('pod', 'pods'), ('PODS', 'pods'),
    ('deploy', 'deployments'), ('deployment', 'deployments'),
    ('svc', 'services'), ('service', 'services'),
    ('endpointslice', 'endpointslices'), ('endpointslices', 'endpointslices'),
    ('no', 'nodes'), ('node', 'nodes'), ('host', 'hosts'), ('hosts', 'hosts'),
])
def test_kind_alias(word, kind):
    assert kind_alias(word) == kind


def test_unknown_kind_suggests_and_lists():
    with pytest.raises(ValueError) as err:
        kind_alias('servise')
    message = str(err.value)
    assert '"servise"' in message and 'did you mean "service"' in message
    assert 'pods (po, pod)' in message and 'hosts (host)' in message


def test_all_namespaces_adds_a_namespace_column():
    from datetime import datetime, timezone
    from kubelab.printers import render
    pods = [{'metadata': {'name': 'a', 'namespace': 'shop',
                          'creationTimestamp': '2026-11-26T03:00:00Z'},
             'spec': {'containers': [{'name': 'c'}]}, 'status': {'phase': 'Running'}}]
    out = render('pods', pods, None, datetime(2026, 11, 26, 3, 1, tzinfo=timezone.utc),
                 all_namespaces=True).splitlines()
    assert out[0].split()[:2] == ['NAMESPACE', 'NAME']
    assert out[1].split()[:2] == ['shop', 'a']


def test_namespaces_print_name_status_age():
    from datetime import datetime, timezone
    from kubelab.printers import kind_alias, render
    assert kind_alias('ns') == 'namespaces'
    out = render('namespaces', [{'metadata': {'name': 'default',
                                              'creationTimestamp': '2026-11-26T03:00:00Z'},
                                 'status': {'phase': 'Active'}}], None,
                 datetime(2026, 11, 26, 3, 0, 30, tzinfo=timezone.utc)).splitlines()
    assert out[0].split() == ['NAME', 'STATUS', 'AGE']
    assert out[1].split() == ['default', 'Active', '30s']


# ---------------------------------------------------------------- node lifecycle, MetalLB
def test_events_print_as_kubectl_get_events_oldest_first():
    def event(name, seconds, reason, kind='Node', obj='worker-2', rv='5'):
        return {'kind': 'Event', 'metadata': {'name': name, 'resourceVersion': rv},
                'involvedObject': {'kind': kind, 'name': obj}, 'type': 'Warning',
                'reason': reason, 'message': f'{reason} happened',
                'lastTimestamp': (NOW - timedelta(seconds=seconds)).strftime(
                    '%Y-%m-%dT%H:%M:%SZ')}
    out = render('ev', [event('b', 5, 'TaintManagerEviction', 'Pod', 'web-x'),
                        event('a', 60, 'NodeNotReady')], None, NOW)
    assert out.splitlines() == [
        'LAST SEEN   TYPE      REASON                 OBJECT          MESSAGE',
        '60s         Warning   NodeNotReady           node/worker-2   NodeNotReady happened',
        '5s          Warning   TaintManagerEviction   pod/web-x       TaintManagerEviction '
        'happened']


def test_metallb_kinds_print_their_crds_columns():
    pool = {'metadata': {'name': 'lan'}, 'spec': {'addresses': ['10.128.0.200/29'],
                                                  'autoAssign': False}}
    status = {'metadata': {'name': 'l2-abcde'}, 'status': {
        'node': 'worker-1', 'serviceName': 'web', 'serviceNamespace': 'default'}}
    assert render('ipaddresspools', [pool], None, NOW).splitlines()[1].split() == [
        'lan', 'false', 'false', '["10.128.0.200/29"]']
    assert render('servicel2status', [status], None, NOW).splitlines() == [
        'NAME       ALLOCATED NODE   SERVICE NAME   SERVICE NAMESPACE',
        'l2-abcde   worker-1         web            default']
