"""Manifest loading and validation: every rule's message names the field
path and what would be accepted; defaults are filled as Kubernetes does."""

import copy

import pytest

from services import images, naming
from services.errors import ApplyError, ValidationError
from services.manifests import key, load_documents, object_ref, validate

AGNHOST = 'registry.k8s.io/e2e-test-images/agnhost:2.39'


def pod(**spec):
    container = {'name': 'web', 'image': AGNHOST,
                 'args': ['netexec', '--http-port=8080'],
                 'ports': [{'containerPort': 8080, 'name': 'http'}]}
    return {'apiVersion': 'v1', 'kind': 'Pod',
            'metadata': {'name': 'web', 'labels': {'app': 'web'}},
            'spec': {'containers': [container], **spec}}


def service(**spec):
    body = {'selector': {'app': 'web'}, 'ports': [{'port': 80}]}
    body.update(spec)
    return {'apiVersion': 'v1', 'kind': 'Service',
            'metadata': {'name': 'web'}, 'spec': body}


def deployment():
    return {'apiVersion': 'apps/v1', 'kind': 'Deployment',
            'metadata': {'name': 'web'},
            'spec': {'selector': {'matchLabels': {'app': 'web'}},
                     'template': {'metadata': {'labels': {'app': 'web'}},
                                  'spec': pod()['spec']}}}


def endpoint_slice():
    return {'apiVersion': 'discovery.k8s.io/v1', 'kind': 'EndpointSlice',
            'metadata': {'name': 'ext-1',
                         'labels': {'kubernetes.io/service-name': 'ext'}},
            'addressType': 'IPv4',
            'endpoints': [{'addresses': ['10.0.0.5']}],
            'ports': [{'port': 80}]}


def problems(obj):
    """The (path, message) of every problem ``validate`` finds."""
    with pytest.raises(ApplyError) as info:
        validate(obj)
    return [(e.path, e.message) for e in info.value.errors]


def assert_problem(obj, path, *words):
    found = problems(obj)
    for where, message in found:
        if where == path and all(word in message for word in words):
            return
    raise AssertionError(f'no problem at {path} with {words}: {found}')


# --------------------------------------------------------------- loading

def test_load_documents_skips_empty_documents_and_expands_lists():
    text = '''
---
apiVersion: v1
kind: Pod
metadata: {name: a}
---
# only a comment
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Service, metadata: {name: b}}
- {apiVersion: v1, kind: Service, metadata: {name: c}}
'''
    names = [doc['metadata']['name'] for doc in load_documents(text, 'f')]
    assert names == ['a', 'b', 'c']


def test_malformed_yaml_is_an_error_with_the_line():
    text = 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n   labels: x: y\n'
    with pytest.raises(ValidationError) as info:
        load_documents(text, 'pod.yaml')
    assert info.value.ref == 'pod.yaml'
    assert info.value.path == 'line 5'
    assert str(info.value).startswith('pod.yaml: line 5: ')


def test_duplicate_keys_are_an_error_naming_both_lines():
    text = 'kind: Pod\nspec: {}\nkind: Service\n'
    with pytest.raises(ValidationError) as info:
        load_documents(text, 'f.yaml')
    assert info.value.path == 'line 3'
    assert 'already defined at line 1' in info.value.message


def test_tabs_get_a_hint():
    with pytest.raises(ValidationError) as info:
        load_documents('kind: Pod\nspec:\n\tcontainers: []\n', 'f.yaml')
    assert 'use spaces' in info.value.message


@pytest.mark.parametrize('text', ['', '# nothing\n', '---\n---\n',
                                  'apiVersion: v1\nkind: List\nitems: []\n'])
def test_no_objects_is_an_error_not_an_empty_list(text):
    with pytest.raises(ValidationError) as info:
        load_documents(text, 'empty.yaml')
    assert str(info.value) == 'empty.yaml: no Kubernetes objects found'


def test_a_document_that_is_not_a_mapping_is_an_error():
    with pytest.raises(ValidationError) as info:
        load_documents('kind: Pod\n---\n- a\n- b\n', 'f.yaml')
    assert info.value.path == 'line 3'
    assert 'got list' in info.value.message


def test_timestamps_stay_strings():
    doc = load_documents('kind: Pod\nmetadata:\n  annotations:\n'
                         '    at: 2024-05-01T12:00:00Z\n', 'f')[0]
    assert doc['metadata']['annotations']['at'] == '2024-05-01T12:00:00Z'


# ------------------------------------------------------------- references

def test_object_ref_and_key():
    assert object_ref(service()) == 'Service default/web'
    assert key(service()) == ('Service', 'default', 'web')
    namespace = {'apiVersion': 'v1', 'kind': 'Namespace',
                 'metadata': {'name': 'dev'}}
    assert object_ref(namespace) == 'Namespace dev'
    assert key(namespace) == ('Namespace', '', 'dev')


def test_errors_name_the_object():
    obj = service(ports=[{'port': 70000}])
    obj['metadata']['namespace'] = 'shop'
    with pytest.raises(ApplyError) as info:
        validate(obj)
    assert str(info.value) == (
        'Service shop/web: spec.ports[0].port: 70000 is not a valid port '
        'number, must be 1-65535')


# --------------------------------------------------------------- defaults

def test_validate_returns_a_normalised_copy():
    original = pod()
    before = copy.deepcopy(original)
    result = validate(original)
    assert original == before
    assert result['metadata']['namespace'] == 'default'
    spec = result['spec']
    assert spec['restartPolicy'] == 'Always'
    assert spec['terminationGracePeriodSeconds'] == 30
    assert spec['containers'][0]['ports'][0]['protocol'] == 'TCP'


def test_readiness_probe_defaults():
    obj = pod()
    obj['spec']['containers'][0]['readinessProbe'] = {
        'httpGet': {'port': 'http'}}
    probe = validate(obj)['spec']['containers'][0]['readinessProbe']
    assert probe == {'httpGet': {'port': 'http', 'path': '/',
                                 'scheme': 'HTTP'},
                     'initialDelaySeconds': 0, 'periodSeconds': 10,
                     'timeoutSeconds': 1, 'successThreshold': 1,
                     'failureThreshold': 3}


def test_service_defaults():
    spec = validate(service())['spec']
    assert spec['type'] == 'ClusterIP'
    assert spec['clusterIP'] == ''
    assert spec['ports'] == [{'port': 80, 'protocol': 'TCP',
                              'targetPort': 80}]
    assert spec['sessionAffinity'] == 'None'
    assert spec['internalTrafficPolicy'] == 'Cluster'
    assert spec['publishNotReadyAddresses'] is False


def test_client_ip_affinity_gets_the_default_timeout():
    spec = validate(service(sessionAffinity='ClientIP'))['spec']
    assert spec['sessionAffinityConfig'] == {
        'clientIP': {'timeoutSeconds': 10800}}


def test_deployment_defaults_replicas_and_template():
    result = validate(deployment())
    assert result['spec']['replicas'] == 1
    assert result['spec']['template']['spec']['restartPolicy'] == 'Always'


def test_endpointslice_condition_defaults():
    result = validate(endpoint_slice())
    assert result['endpoints'][0]['conditions'] == {
        'ready': True, 'serving': True, 'terminating': False}
    assert result['ports'] == [{'port': 80, 'name': '', 'protocol': 'TCP'}]


def test_namespace_is_cluster_scoped():
    result = validate({'apiVersion': 'v1', 'kind': 'Namespace',
                       'metadata': {'name': 'dev', 'namespace': 'x'}})
    assert 'namespace' not in result['metadata']


def test_ignored_fields_are_kept():
    obj = pod(affinity={}, serviceAccountName='sa')
    obj['spec']['containers'][0].update(
        resources={'limits': {'cpu': '1'}}, imagePullPolicy='Always')
    result = validate(obj)
    assert result['spec']['serviceAccountName'] == 'sa'
    assert result['spec']['containers'][0]['imagePullPolicy'] == 'Always'


def test_output_of_kubectl_get_is_accepted():
    obj = service(clusterIPs=['10.96.0.20'], clusterIP='10.96.0.20',
                  ipFamilies=['IPv4'], ipFamilyPolicy='SingleStack')
    obj['metadata'].update(uid='x', resourceVersion='1',
                           creationTimestamp='2024-05-01T12:00:00Z')
    obj['status'] = {'loadBalancer': {}}
    assert validate(obj)['spec']['clusterIP'] == '10.96.0.20'


def test_all_problems_of_an_object_are_reported_together():
    obj = service(ports=[{'port': 0}, {'port': 80, 'protocol': 'SCTP'}])
    paths = [path for path, _ in problems(obj)]
    assert 'spec.ports[0].port' in paths
    assert 'spec.ports[1].protocol' in paths
    assert 'spec.ports[0].name' in paths


# ------------------------------------------------------ kind and metadata

@pytest.mark.parametrize('obj, path, words', [
    ({'apiVersion': 'apps/v1', 'kind': 'StatefulSet', 'metadata': {'name': 'a'}},
     'kind', ['"StatefulSet" is not supported',
              'ConfigMap, Deployment, EndpointSlice, Gateway, GatewayClass, HTTPRoute, '
              'IPAddressPool, Ingress, IngressClass, L2Advertisement, Namespace, '
              'NetworkPolicy, Pod, Secret, Service']),
    ({'apiVersion': 'v1', 'kind': 'Servce', 'metadata': {'name': 'a'}},
     'kind', ['did you mean "Service"']),
    ({'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'GRPCRoute',
      'metadata': {'name': 'a'}}, 'kind', ['"GRPCRoute" is not supported;',
                                           'HTTPRoute']),
    ({'apiVersion': 'v1', 'metadata': {'name': 'a'}}, 'kind',
     ['required', 'Pod']),
])
def test_kind_errors(obj, path, words):
    assert_problem(obj, path, *words)


def test_wrong_api_version_names_the_right_one():
    obj = deployment()
    obj['apiVersion'] = 'v1'
    assert_problem(obj, 'apiVersion', '"v1"', 'use apps/v1')


def _set(obj, path, value):
    target = obj
    parts = path.split('.')
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) \
            else target[part]
    target[parts[-1]] = value
    return obj


@pytest.mark.parametrize('field, value, path, words', [
    ('metadata.name', 'Web', 'metadata.name', ['RFC 1123', 'example.com']),
    ('metadata.name', 'web_1', 'metadata.name', ['RFC 1123']),
    ('metadata.namespace', 'Dev', 'metadata.namespace', ['RFC 1123']),
    ('metadata.labels', {'app': 1}, 'metadata.labels[app]',
     ['must be a string, got integer 1', 'quote it']),
    ('metadata.labels', {'a b': 'x'}, 'metadata.labels', ['key "a b"']),
    ('metadata.labels', {'app': '-x'}, 'metadata.labels[app]',
     ['value "-x"']),
    ('metadata.annotations', {'note': 3}, 'metadata.annotations[note]',
     ['must be a string']),
    ('metadata.nmae', 'x', 'metadata.nmae', ['did you mean "name"']),
])
def test_metadata_errors(field, value, path, words):
    assert_problem(_set(pod(), field, value), path, *words)


def test_name_is_required():
    obj = pod()
    del obj['metadata']['name']
    assert_problem(obj, 'metadata.name', 'required')


def test_service_names_are_dns1035_labels():
    obj = service()
    obj['metadata']['name'] = '1web'
    assert_problem(obj, 'metadata.name', 'DNS-1035', 'alphabetic')


# ------------------------------------------------------------------- pods

C = 'spec.containers.0'
CP = 'spec.containers[0]'


@pytest.mark.parametrize('field, value, path, words', [
    ('spec.containers', [], 'spec.containers', ['at least one']),
    ('spec.containres', [], 'spec.containres',
     ['did you mean "containers"', 'supported fields here: containers']),
    ('spec.hostNetwork', True, 'spec.hostNetwork',
     ['not supported by kubelab']),
    ('spec.restartPolicy', 'Sometimes', 'spec.restartPolicy',
     ['Always, OnFailure, Never']),
    ('spec.restartPolicy', 'always', 'spec.restartPolicy',
     ['did you mean "Always"']),
    ('spec.terminationGracePeriodSeconds', -1,
     'spec.terminationGracePeriodSeconds', ['greater than or equal to 0']),
    ('spec.terminationGracePeriodSeconds', 'ten',
     'spec.terminationGracePeriodSeconds',
     ['must be an integer, got string "ten"']),
    ('spec.nodeName', 'Worker_1', 'spec.nodeName', ['RFC 1123']),
    (f'{C}.name', 'Web', f'{CP}.name', ['RFC 1123']),
    (f'{C}.image', 'nginx', f'{CP}.image',
     ['"nginx" is not supported', 'agnhost', 'busybox', 'pause']),
    (f'{C}.image', 'agnhost:2.39', f'{CP}.image',
     ['did you mean', 'registry.k8s.io/e2e-test-images/agnhost']),
    (f'{C}.args', ['netexc'], f'{CP}.args[0]',
     ['unknown agnhost subcommand "netexc"', 'did you mean "netexec"',
      'netexec, serve-hostname, porter, pause']),
    (f'{C}.args', ['netexec', 8080], f'{CP}.args[1]',
     ['must be a string, got integer 8080']),
    (f'{C}.ports', [{'containerPort': 70000}],
     f'{CP}.ports[0].containerPort', ['70000', 'must be 1-65535']),
    (f'{C}.ports', [{'containerPort': 80, 'protocol': 'SCTP'}],
     f'{CP}.ports[0].protocol',
     ['SCTP" is not supported by kubelab; supported: TCP, UDP']),
    (f'{C}.ports', [{'containerPort': 80, 'hostPort': 80, 'hostIP': '10.128.0.12'}],
     f'{CP}.ports[0].hostIP', ['not supported by kubelab']),
    (f'{C}.ports', [{'containerPort': 80, 'hostPort': 0}],
     f'{CP}.ports[0].hostPort', ['must be 1-65535']),
    (f'{C}.ports', [{'containerPort': 80, 'hostPort': 80},
                    {'containerPort': 81, 'hostPort': 80}],
     f'{CP}.ports[1].hostPort', ['Duplicate value: "80/TCP"']),
    (f'{C}.ports', [{'containerPort': 80, 'name': 'HTTP'}],
     f'{CP}.ports[0].name', ['lower case']),
    (f'{C}.ports', [{'containerPort': 80, 'name': 'a-very-long-port-name'}],
     f'{CP}.ports[0].name', ['no more than 15']),
    (f'{C}.ports', [{'containerPort': 80, 'name': '8080'}],
     f'{CP}.ports[0].name', ['at least one letter']),
    (f'{C}.ports', [{'containerPort': 80, 'name': 'a--b'}],
     f'{CP}.ports[0].name', ["'--'"]),
    (f'{C}.ports', [{'containerPort': 80, 'name': 'h'},
                    {'containerPort': 81, 'name': 'h'}],
     f'{CP}.ports[1].name', ['Duplicate value: "h"']),
    (f'{C}.env', [{'name': 'A', 'value': 1}], f'{CP}.env[0].value',
     ['must be a string, got integer 1']),
    (f'{C}.env', [{'name': 'A', 'valueFrom': {'resourceFieldRef': {}}}],
     f'{CP}.env[0].valueFrom.resourceFieldRef', ['not supported by kubelab']),
    (f'{C}.env', [{'name': 'A', 'valueFrom': {'secretKeyRef': {'name': 's'}}}],
     f'{CP}.env[0].valueFrom.secretKeyRef.key', ['required value']),
    (f'{C}.env', [{'name': 'A',
                   'valueFrom': {'fieldRef': {'fieldPath': 'status.x'}}}],
     f'{CP}.env[0].valueFrom.fieldRef.fieldPath', ['status.podIP']),
    (f'{C}.readinessProbe', {'exec': {'command': ['true']}},
     f'{CP}.readinessProbe.exec',
     ['not supported', 'supported: httpGet, tcpSocket']),
    (f'{C}.readinessProbe', {'periodSeconds': 5}, f'{CP}.readinessProbe',
     ['must specify a handler', 'httpGet, tcpSocket']),
    (f'{C}.readinessProbe', {'httpGet': {'port': 80}, 'tcpSocket':
                             {'port': 80}},
     f'{CP}.readinessProbe', ['more than 1 handler']),
    (f'{C}.readinessProbe', {'httpGet': {'port': 'metrics'}},
     f'{CP}.readinessProbe.httpGet.port',
     ['"metrics" does not name a containerPort', 'http']),
    (f'{C}.readinessProbe', {'httpGet': {'port': 80, 'scheme': 'HTTPS'}},
     f'{CP}.readinessProbe.httpGet.scheme', ['supported: HTTP']),
    (f'{C}.readinessProbe', {'tcpSocket': {'port': 0}},
     f'{CP}.readinessProbe.tcpSocket.port', ['must be 1-65535']),
    (f'{C}.readinessProbe', {'tcpSocket': {'port': 80},
                             'periodSeconds': 0},
     f'{CP}.readinessProbe.periodSeconds', ['greater than or equal to 1']),
    (f'{C}.readinessProbe', {'tcpSocket': {'port': 80},
                             'initialDelaySeconds': -1},
     f'{CP}.readinessProbe.initialDelaySeconds',
     ['greater than or equal to 0']),
])
def test_pod_errors(field, value, path, words):
    assert_problem(_set(pod(), field, value), path, *words)


def test_container_names_are_unique():
    obj = pod()
    obj['spec']['containers'].append(dict(obj['spec']['containers'][0],
                                          ports=[]))
    assert_problem(obj, 'spec.containers[1].name', 'Duplicate value: "web"')


def test_port_names_are_unique_across_containers():
    obj = pod()
    obj['spec']['containers'].append(
        {'name': 'side', 'image': 'busybox', 'ports': [
            {'containerPort': 9090, 'name': 'http'}]})
    assert_problem(obj, 'spec.containers[1].ports[0].name',
                   'Duplicate value: "http"')


def test_image_is_required():
    obj = pod()
    del obj['spec']['containers'][0]['image']
    assert_problem(obj, 'spec.containers[0].image', 'required')


@pytest.mark.parametrize('command, args', [
    (None, None),                              # image CMD: pause
    (None, ['serve-hostname']),
    (['/agnhost', 'netexec'], None),
    (['/agnhost'], ['pause']),
    (['sh', '-c', 'sleep 1'], None),           # not agnhost: not checked
])
def test_agnhost_commands_that_are_accepted(command, args):
    container = {'name': 'a', 'image': AGNHOST}
    if command is not None:
        container['command'] = command
    if args is not None:
        container['args'] = args
    validate(pod(containers=[container]))


def test_agnhost_without_subcommand_after_command_is_an_error():
    container = {'name': 'a', 'image': AGNHOST, 'command': ['/agnhost']}
    assert_problem(pod(containers=[container]), 'spec.containers[0].args',
                   'needs a subcommand', 'netexec, serve-hostname, porter, pause')


def test_env_field_ref_is_accepted():
    obj = pod()
    obj['spec']['containers'][0]['env'] = [
        {'name': 'POD_IP',
         'valueFrom': {'fieldRef': {'fieldPath': 'status.podIP'}}},
        {'name': 'MODE', 'value': 'x'}]
    validate(obj)


# ------------------------------------------------------------- deployments

def test_selector_must_match_template_labels_like_kubernetes():
    obj = deployment()
    obj['spec']['template']['metadata']['labels'] = {'app': 'api'}
    assert problems(obj) == [(
        'spec.template.metadata.labels',
        'Invalid value: {"app": "api"}: selector does not match template '
        'labels')]


@pytest.mark.parametrize('field, value, path, words', [
    ('spec.replicas', 'three', 'spec.replicas',
     ['must be an integer, got string "three"']),
    ('spec.replicas', -1, 'spec.replicas', ['greater than or equal to 0']),
    ('spec.replicas', True, 'spec.replicas', ['got boolean true']),
    ('spec.selector', {}, 'spec.selector', ['empty selector']),
    ('spec.selector', {'matchLabels': {'app': 'web'},
                       'matchExpressions': [{'key': 'app',
                                             'operator': 'Has'}]},
     'spec.selector.matchExpressions[0].operator',
     ['In, NotIn, Exists, DoesNotExist']),
    ('spec.selector', {'matchExpressions': [{'key': 'app',
                                             'operator': 'In'}]},
     'spec.selector.matchExpressions[0].values', ['must be specified']),
    ('spec.template.spec.restartPolicy', 'Never',
     'spec.template.spec.restartPolicy', ['supported: Always']),
    ('spec.template.spec.containers', [{'name': 'a', 'image': 'nginx'}],
     'spec.template.spec.containers[0].image', ['not supported']),
    ('spec.strategi', {}, 'spec.strategi', ['did you mean "strategy"']),
])
def test_deployment_errors(field, value, path, words):
    assert_problem(_set(deployment(), field, value), path, *words)


def test_match_expressions_selector_is_accepted():
    obj = deployment()
    obj['spec']['selector'] = {'matchExpressions': [
        {'key': 'app', 'operator': 'In', 'values': ['web', 'api']}]}
    validate(obj)


def test_deployment_ignored_fields():
    obj = deployment()
    obj['spec'].update(strategy={'type': 'RollingUpdate'},
                       revisionHistoryLimit=3, minReadySeconds=1)
    assert validate(obj)['spec']['strategy'] == {'type': 'RollingUpdate'}


# ---------------------------------------------------------------- services

@pytest.mark.parametrize('spec, path, words', [
    ({'type': 'Loadbalancer'}, 'spec.type', ['did you mean "LoadBalancer"']),
    ({'type': 'ExternalName'}, 'spec.externalName', ['required value']),
    ({'type': 'ExternalName', 'externalName': 'db.example.com', 'clusterIP': 'None'},
     'spec.clusterIP', ['Forbidden: may not be set for ExternalName services']),
    ({'type': 'Nodeport'}, 'spec.type', ['did you mean "NodePort"']),
    ({'type': 'clusterip'}, 'spec.type', ['did you mean "ClusterIP"']),
    ({'ports': []}, 'spec.ports', ['at least one']),
    ({'ports': [{'port': 70000}]}, 'spec.ports[0].port',
     ['70000 is not a valid port number, must be 1-65535']),
    ({'ports': [{'port': '80'}]}, 'spec.ports[0].port',
     ['must be an integer, got string "80"']),
    ({'ports': [{'port': 80, 'protocol': 'SCTP'}]}, 'spec.ports[0].protocol',
     ['supported: TCP, UDP']),
    ({'ports': [{'port': 80, 'name': 'a'}, {'port': 81}]},
     'spec.ports[1].name', ['more than one port']),
    ({'ports': [{'port': 80, 'name': 'a'}, {'port': 81, 'name': 'a'}]},
     'spec.ports[1].name', ['Duplicate value: "a"']),
    ({'ports': [{'port': 80, 'name': 'Web'}]}, 'spec.ports[0].name',
     ['RFC 1123']),
    ({'ports': [{'port': 80, 'name': 'a'}, {'port': 80, 'name': 'b'}]},
     'spec.ports[1]', ['Duplicate value', '80/TCP']),
    ({'ports': [{'port': 80, 'targetPort': 0}]}, 'spec.ports[0].targetPort',
     ['must be 1-65535']),
    ({'ports': [{'port': 80, 'targetPort': '8080'}]},
     'spec.ports[0].targetPort', ['without quotes']),
    ({'ports': [{'port': 80, 'targetPort': 'Http'}]},
     'spec.ports[0].targetPort', ['lower case']),
    ({'ports': [{'port': 80, 'nodePort': 30080}]}, 'spec.ports[0].nodePort',
     ['may not be used when type is ClusterIP']),
    ({'ports': [{'port': 80, 'prot': 'TCP'}]}, 'spec.ports[0].prot',
     ['did you mean "port"']),
    ({'clusterIP': '10.96.0.300'}, 'spec.clusterIP',
     ['not a valid IPv4 address', '"None"']),
    ({'selector': {'app': 1}}, 'spec.selector[app]', ['must be a string']),
    ({'sessionAffinity': 'Sticky'}, 'spec.sessionAffinity',
     ['None, ClientIP']),
    ({'sessionAffinity': 'ClientIP',
      'sessionAffinityConfig': {'clientIP': {'timeoutSeconds': 90000}}},
     'spec.sessionAffinityConfig.clientIP.timeoutSeconds', ['1-86400']),
    ({'sessionAffinityConfig': {'clientIP': {'timeoutSeconds': 10}}},
     'spec.sessionAffinityConfig', ['must not be set']),
    ({'internalTrafficPolicy': 'Node'}, 'spec.internalTrafficPolicy',
     ['Cluster, Local']),
    ({'externalTrafficPolicy': 'Local'}, 'spec.externalTrafficPolicy',
     ['externally-accessible']),
    ({'publishNotReadyAddresses': 'yes'}, 'spec.publishNotReadyAddresses',
     ['must be a boolean']),
    ({'externalIPs': '1.2.3.4'}, 'spec.externalIPs', ['must be a list']),
    ({'externalIPs': ['0.0.0.0']}, 'spec.externalIPs[0]',
     ['may not be unspecified (0.0.0.0)']),
    ({'externalIPs': ['224.0.0.5']}, 'spec.externalIPs[0]',
     ['may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)']),
    ({'ipFamilyPolicy': 'RequireDualStack'}, 'spec.ipFamilyPolicy',
     ['this cluster is not configured for dual-stack services']),
])
def test_service_errors(spec, path, words):
    assert_problem(service(**spec), path, *words)


@pytest.mark.parametrize('cluster_ip', ['None', '', '10.96.5.5'])
def test_service_cluster_ip_forms(cluster_ip):
    assert validate(service(clusterIP=cluster_ip))['spec']['clusterIP'] \
        == cluster_ip


def test_service_named_target_port_and_udp():
    spec = validate(service(ports=[
        {'name': 'http', 'port': 80, 'targetPort': 'http'},
        {'name': 'dns', 'port': 53, 'protocol': 'UDP'},
        {'name': 'dns-tcp', 'port': 53}]))['spec']
    assert spec['ports'][0]['targetPort'] == 'http'
    assert spec['ports'][1]['targetPort'] == 53


def test_service_without_selector_is_valid():
    obj = service()
    del obj['spec']['selector']
    assert 'selector' not in validate(obj)['spec']


# ---------------------------------------------------------------- NodePort

def test_node_port_service_defaults():
    spec = validate(service(type='NodePort'))['spec']
    assert spec['type'] == 'NodePort'
    assert spec['externalTrafficPolicy'] == 'Cluster'
    assert spec['internalTrafficPolicy'] == 'Cluster'
    assert spec['ports'] == [{'port': 80, 'protocol': 'TCP',
                              'targetPort': 80}]     # the store allocates one


def test_cluster_ip_service_gets_no_external_traffic_policy():
    assert 'externalTrafficPolicy' not in validate(service())['spec']


@pytest.mark.parametrize('external, internal', [
    ('Local', 'Cluster'), ('Cluster', 'Local'), ('Local', 'Local')])
def test_node_port_traffic_policies(external, internal):
    spec = validate(service(type='NodePort', externalTrafficPolicy=external,
                            internalTrafficPolicy=internal))['spec']
    assert (spec['externalTrafficPolicy'],
            spec['internalTrafficPolicy']) == (external, internal)


@pytest.mark.parametrize('node_port', [1, 30080, 40000, 65535])
def test_a_requested_node_port_is_kept(node_port):
    """Any port number passes here: the store checks the cluster's range."""
    spec = validate(service(type='NodePort', ports=[
        {'port': 80, 'nodePort': node_port}]))['spec']
    assert spec['ports'][0]['nodePort'] == node_port


def test_a_null_node_port_means_allocate_one():
    spec = validate(service(type='NodePort', ports=[
        {'port': 80, 'nodePort': None}]))['spec']
    assert 'nodePort' not in spec['ports'][0]


def test_tcp_and_udp_may_share_a_node_port():
    spec = validate(service(type='NodePort', ports=[
        {'name': 'dns', 'port': 53, 'protocol': 'UDP', 'nodePort': 30053},
        {'name': 'dns-tcp', 'port': 53, 'nodePort': 30053}]))['spec']
    assert [p['nodePort'] for p in spec['ports']] == [30053, 30053]


HEADLESS_NODE_PORT = ('Invalid value: "None": may not be set to \'None\' '
                      'for NodePort services')


@pytest.mark.parametrize('spec, path, words', [
    ({'ports': [{'port': 80, 'nodePort': 70000}]}, 'spec.ports[0].nodePort',
     ['70000 is not a valid port number, must be 1-65535']),
    ({'ports': [{'port': 80, 'nodePort': 0}]}, 'spec.ports[0].nodePort',
     ['0 is not a valid port number']),
    ({'ports': [{'port': 80, 'nodePort': '30080'}]}, 'spec.ports[0].nodePort',
     ['must be an integer, got string "30080"']),
    ({'ports': [{'port': 80, 'nodePort': True}]}, 'spec.ports[0].nodePort',
     ['got boolean true']),
    ({'ports': [{'name': 'a', 'port': 80, 'nodePort': 30080},
                {'name': 'b', 'port': 81, 'nodePort': 30080}]},
     'spec.ports[1].nodePort', ['Duplicate value: 30080']),
    ({'ports': [{'name': 'a', 'port': 80, 'protocol': 'UDP',
                 'nodePort': 30080},
                {'name': 'b', 'port': 81, 'protocol': 'UDP',
                 'nodePort': 30080}]},
     'spec.ports[1].nodePort', ['Duplicate value: 30080']),
    ({'clusterIP': 'None'}, 'spec.clusterIP', [HEADLESS_NODE_PORT]),
    ({'externalTrafficPolicy': 'Node'}, 'spec.externalTrafficPolicy',
     ['Cluster, Local']),
    ({'internalTrafficPolicy': 'local'}, 'spec.internalTrafficPolicy',
     ['did you mean "Local"']),
])
def test_node_port_service_errors(spec, path, words):
    assert_problem(service(type='NodePort', **spec), path, *words)


def test_a_duplicate_node_port_is_reported_once_on_the_later_port():
    found = problems(service(type='NodePort', ports=[
        {'name': 'a', 'port': 80, 'nodePort': 30080},
        {'name': 'b', 'port': 81, 'nodePort': 30081},
        {'name': 'c', 'port': 82, 'nodePort': 30080}]))
    assert found == [('spec.ports[2].nodePort', 'Duplicate value: 30080')]


def test_a_headless_node_port_service_gets_kubernetes_words():
    found = problems(service(type='NodePort', clusterIP='None'))
    assert found == [('spec.clusterIP', HEADLESS_NODE_PORT)]


def test_a_headless_cluster_ip_service_is_still_fine():
    assert validate(service(clusterIP='None'))['spec']['clusterIP'] == 'None'


def test_a_node_port_on_an_unknown_type_reports_only_the_type():
    found = problems(service(type='Nodeport', ports=[
        {'port': 80, 'nodePort': 30080}]))
    assert [path for path, _ in found] == ['spec.type']


def test_an_external_name_service_is_an_alias_without_address_or_ports():
    obj = validate(service(type='ExternalName', externalName='web.default.svc.cluster.local.',
                           ports=None))
    assert obj['spec']['externalName'] == 'web.default.svc.cluster.local.'
    assert obj['spec']['ports'] == [] and 'clusterIP' not in obj['spec']
    assert 'externalTrafficPolicy' not in obj['spec']


def test_external_ips_make_a_cluster_ip_service_externally_accessible():
    obj = validate(service(externalIPs=['192.0.2.10']))
    assert obj['spec']['externalTrafficPolicy'] == 'Cluster'      # defaulted
    assert validate(service(externalIPs=['192.0.2.10'], externalTrafficPolicy='Local'))[
        'spec']['externalTrafficPolicy'] == 'Local'


def test_a_headless_service_may_leave_its_ports_out():
    assert validate(service(clusterIP='None', ports=None))['spec']['ports'] == []
    assert_problem(service(ports=None), 'spec.ports', 'required value')


# ----------------------------------------------------------- endpointslices

@pytest.mark.parametrize('field, value, path, words', [
    ('addressType', 'IPv6', 'addressType',
     ['not supported by kubelab; supported: IPv4']),
    ('metadata.labels', {}, 'metadata.labels',
     ['kubernetes.io/service-name']),
    ('endpoints', [{'addresses': ['10.0.0.5', '10.0.0.6']}],
     'endpoints[0].addresses', ['exactly one address']),
    ('endpoints', [{'addresses': ['10.0.0.500']}],
     'endpoints[0].addresses[0]', ['not a valid IPv4']),
    ('endpoints', [{'addresses': ['10.0.0.5'],
                    'conditions': {'ready': 'yes'}}],
     'endpoints[0].conditions.ready', ['must be a boolean']),
    ('ports', [{'port': 80, 'protocol': 'SCTP'}], 'ports[0].protocol',
     ['TCP, UDP']),
    ('ports', [{'name': 'a', 'port': 80}, {'name': 'a', 'port': 81}],
     'ports[1].name', ['Duplicate']),
])
def test_endpointslice_errors(field, value, path, words):
    assert_problem(_set(endpoint_slice(), field, value), path, *words)


def test_endpointslice_serving_defaults_to_ready():
    obj = endpoint_slice()
    obj['endpoints'][0]['conditions'] = {'ready': False}
    conditions = validate(obj)['endpoints'][0]['conditions']
    assert conditions == {'ready': False, 'serving': False,
                          'terminating': False}


# ------------------------------------------------------- images and naming

@pytest.mark.parametrize('image, kind', [
    ('registry.k8s.io/e2e-test-images/agnhost:2.39', 'agnhost'),
    ('k8s.gcr.io/e2e-test-images/agnhost:2.32', 'agnhost'),
    ('gcr.io/kubernetes-e2e-test-images/agnhost:2.2', 'agnhost'),
    ('registry.k8s.io/pause:3.9', 'pause'),
    ('k8s.gcr.io/pause', 'pause'),
    ('busybox', 'busybox'),
    ('busybox:1.36', 'busybox'),
    ('docker.io/library/busybox:1.36@sha256:' + 'a' * 64, 'busybox'),
    ('docker.io/busybox', 'busybox'),
    ('nginx', None),
    ('registry.k8s.io/e2e-test-images/agnhostx:2.39', None),
    ('', None),
])
def test_image_kind(image, kind):
    assert images.image_kind(image) == kind


def test_pod_template_hash_is_stable_and_safe():
    template = pod()['spec']
    reordered = dict(reversed(list(template.items())))
    value = naming.pod_template_hash(template)
    assert value == naming.pod_template_hash(reordered)
    assert 8 <= len(value) <= 10
    assert set(value) <= set(naming.SAFE_ALPHABET)
    assert value != naming.pod_template_hash(service()['spec'])


def test_now_rfc3339():
    assert naming.now_rfc3339(0) == '1970-01-01T00:00:00Z'
