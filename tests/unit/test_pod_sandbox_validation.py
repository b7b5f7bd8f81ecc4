"""What a pod asks of its sandbox, as the API server checks it: volumes and mounts,
securityContext, env from ConfigMaps and Secrets, resources, hostname and host aliases;
ConfigMaps themselves. Every refusal names the field and the reason (or the valid
values); what is accepted is kept, with the API server's defaults."""

import pytest

from services.errors import ApplyError
from services.manifests import update_problems, validate
from services.validation.warnings import apply_warnings
from tests.unit.test_manifests import assert_problem, pod

C = 'spec.containers[0]'


def with_container(**fields):
    obj = pod()
    obj['spec']['containers'][0].update(fields)
    return obj


def configmap(**fields):
    return {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'settings'},
            **fields}


# ---------------------------------------------------------------- volumes and mounts
def test_volumes_and_mounts_are_kept():
    obj = pod(volumes=[{'name': 'scratch', 'emptyDir': {'medium': 'Memory',
                                                         'sizeLimit': '64Mi'}},
                       {'name': 'cfg', 'configMap': {'name': 'app', 'defaultMode': 0o440,
                                                     'items': [{'key': 'a', 'path': 'x/a'}]}},
                       {'name': 'tls', 'secret': {'secretName': 'tls', 'optional': True}}])
    obj['spec']['containers'][0]['volumeMounts'] = [
        {'name': 'scratch', 'mountPath': '/scratch'},
        {'name': 'cfg', 'mountPath': '/etc/app.ini', 'subPath': 'x/a', 'readOnly': True},
        {'name': 'tls', 'mountPath': '/tls', 'recursiveReadOnly': 'Enabled',
         'readOnly': True}]
    out = validate(obj)
    assert [v['name'] for v in out['spec']['volumes']] == ['scratch', 'cfg', 'tls']


@pytest.mark.parametrize('volume, path, words', [
    ({'name': 'data', 'hostPath': {'path': '/var'}}, 'spec.volumes[0].hostPath',
     ["is not supported by kubelab: a pod's files never reach the machine",
      'configMap, emptyDir, secret']),
    ({'name': 'data', 'persistentVolumeClaim': {'claimName': 'c'}},
     'spec.volumes[0].persistentVolumeClaim', ['kubelab has no storage']),
    ({'name': 'data'}, 'spec.volumes[0]', ['must specify a volume type',
                                           'configMap, emptyDir, secret']),
    ({'name': 'data', 'emptyDir': {}, 'configMap': {'name': 'c'}}, 'spec.volumes[0]',
     ['may not specify more than 1 volume type']),
    ({'name': 'Data', 'emptyDir': {}}, 'spec.volumes[0].name', ['lowercase']),
    ({'name': 'data', 'emptyDir': {'sizeLimit': '1Gi'}}, 'spec.volumes[0].emptyDir.sizeLimit',
     ["kubelab's does not evict", 'medium: Memory']),
    ({'name': 'data', 'emptyDir': {'medium': 'HugePages'}},
     'spec.volumes[0].emptyDir.medium', ['no huge pages']),
    ({'name': 'data', 'emptyDir': {'medium': 'memory'}},
     'spec.volumes[0].emptyDir.medium', ['did you mean "Memory"']),
    ({'name': 'data', 'configMap': {}}, 'spec.volumes[0].configMap.name',
     ['required value']),
    ({'name': 'data', 'secret': {'secretName': 's', 'defaultMode': 0o1777}},
     'spec.volumes[0].secret.defaultMode', ['between 0 and 0777']),
    ({'name': 'data', 'configMap': {'name': 'c', 'items': [{'key': 'a', 'path': '../a'}]}},
     'spec.volumes[0].configMap.items[0].path', ["must not contain '..'"]),
    ({'name': 'data', 'configMap': {'name': 'c', 'items': [{'key': 'a', 'path': '/a'}]}},
     'spec.volumes[0].configMap.items[0].path', ['must be a relative path']),
])
def test_volume_errors(volume, path, words):
    assert_problem(pod(volumes=[volume]), path, *words)


def test_duplicate_volume_names():
    assert_problem(pod(volumes=[{'name': 'a', 'emptyDir': {}}, {'name': 'a', 'emptyDir': {}}]),
                   'spec.volumes[1].name', 'Duplicate value: "a"')


@pytest.mark.parametrize('mount, path, words', [
    ({'name': 'other', 'mountPath': '/x'}, f'{C}.volumeMounts[0].name',
     ['Not found: "other"', 'volumes: data']),
    ({'name': 'data', 'mountPath': 'x'}, f'{C}.volumeMounts[0].mountPath',
     ['must be an absolute path']),
    ({'name': 'data', 'mountPath': '/'}, f'{C}.volumeMounts[0].mountPath',
     ["cannot replace the container's root"]),
    ({'name': 'data', 'mountPath': '/x', 'subPath': '../etc'},
     f'{C}.volumeMounts[0].subPath', ["must not contain '..'"]),
    ({'name': 'data', 'mountPath': '/x', 'subPath': 'a', 'subPathExpr': '$(B)'},
     f'{C}.volumeMounts[0].subPathExpr', ['mutually exclusive']),
    ({'name': 'data', 'mountPath': '/x', 'mountPropagation': 'Bidirectional'},
     f'{C}.volumeMounts[0].mountPropagation', ['"Bidirectional" is not supported by '
                                               'kubelab; supported: None']),
    ({'name': 'data', 'mountPath': '/x', 'recursiveReadOnly': 'Enabled'},
     f'{C}.volumeMounts[0].recursiveReadOnly', ['only be specified when readOnly']),
])
def test_mount_errors(mount, path, words):
    obj = pod(volumes=[{'name': 'data', 'emptyDir': {}}])
    obj['spec']['containers'][0]['volumeMounts'] = [mount]
    assert_problem(obj, path, *words)


def test_a_mount_path_is_unique_in_its_container():
    obj = pod(volumes=[{'name': 'a', 'emptyDir': {}}, {'name': 'b', 'emptyDir': {}}])
    obj['spec']['containers'][0]['volumeMounts'] = [{'name': 'a', 'mountPath': '/d'},
                                                    {'name': 'b', 'mountPath': '/d/'}]
    assert_problem(obj, f'{C}.volumeMounts[1].mountPath', 'must be unique')


def test_volume_devices_are_refused_with_the_reason():
    assert_problem(with_container(volumeDevices=[{'name': 'd', 'devicePath': '/dev/x'}]),
                   f'{C}.volumeDevices', 'no block devices')


# ---------------------------------------------------------------- securityContext
def test_security_contexts_are_kept():
    obj = pod(securityContext={'runAsUser': 1000, 'runAsGroup': 3000, 'fsGroup': 2000,
                               'supplementalGroups': [4000], 'runAsNonRoot': True,
                               'sysctls': [{'name': 'net.ipv4.ip_local_port_range',
                                            'value': '40000 50000'}],
                               'seccompProfile': {'type': 'RuntimeDefault'}})
    obj['spec']['containers'][0]['securityContext'] = {
        'capabilities': {'add': ['NET_ADMIN', 'CAP_SYS_PTRACE'], 'drop': ['ALL']},
        'readOnlyRootFilesystem': True, 'allowPrivilegeEscalation': False,
        'privileged': False, 'procMount': 'Default'}
    out = validate(obj)
    assert out['spec']['securityContext']['fsGroup'] == 2000


@pytest.mark.parametrize('ctx, path, words', [
    ({'privileged': True}, f'{C}.securityContext.privileged',
     ['true is not supported by kubelab', 'add the capabilities it needs']),
    ({'capabilities': {'add': ['SYS_ADMIN']}}, f'{C}.securityContext.capabilities.add[0]',
     ['SYS_ADMIN is not supported by kubelab', "not confined to the pod's namespaces"]),
    ({'capabilities': {'add': ['CAP_SYS_TIME']}},
     f'{C}.securityContext.capabilities.add[0]', ['SYS_TIME is not supported']),
    ({'capabilities': {'add': ['ALL']}}, f'{C}.securityContext.capabilities.add[0]',
     ['ALL is not supported']),
    ({'capabilities': {'add': ['NET_ADMN']}}, f'{C}.securityContext.capabilities.add[0]',
     ['unknown capability "NET_ADMN"', 'did you mean "NET_ADMIN"']),
    ({'capabilities': {'drop': [7]}}, f'{C}.securityContext.capabilities.drop[0]',
     ['must be a string']),
    ({'procMount': 'Unmasked'}, f'{C}.securityContext.procMount',
     ['"Unmasked" is not supported by kubelab']),
    ({'seLinuxOptions': {'level': 's0'}}, f'{C}.securityContext.seLinuxOptions',
     ['no SELinux policy']),
    ({'seccompProfile': {'type': 'Localhost', 'localhostProfile': 'p.json'}},
     f'{C}.securityContext.seccompProfile.type', ['a Localhost profile is a file on the '
                                                  'node']),
    ({'runAsUser': -1}, f'{C}.securityContext.runAsUser', ['between 0 and 2147483647']),
])
def test_container_security_errors(ctx, path, words):
    assert_problem(with_container(securityContext=ctx), path, *words)


@pytest.mark.parametrize('ctx, path, words', [
    ({'sysctls': [{'name': 'kernel.panic', 'value': '1'}]},
     'spec.securityContext.sysctls[0].name', ['"kernel.panic" is not a safe sysctl',
                                              'net.ipv4.ip_local_port_range']),
    ({'supplementalGroups': ['x']}, 'spec.securityContext.supplementalGroups[0]',
     ['must be between 0 and']),
    ({'fsGroupChangePolicy': 'Sometimes'}, 'spec.securityContext.fsGroupChangePolicy',
     ['OnRootMismatch, Always']),
    ({'windowsOptions': {}}, 'spec.securityContext.windowsOptions', ['are Linux']),
])
def test_pod_security_errors(ctx, path, words):
    assert_problem(pod(securityContext=ctx), path, *words)


def test_shared_process_namespace_is_refused_with_the_reason():
    assert_problem(pod(shareProcessNamespace=True), 'spec.shareProcessNamespace',
                   'each container has its own PID namespace')
    validate(pod(shareProcessNamespace=False))


def test_warnings_for_what_the_sandbox_cannot_honour_as_written():
    obj = validate(with_container(securityContext={
        'allowPrivilegeEscalation': True, 'seccompProfile': {'type': 'RuntimeDefault'}}))
    warnings = apply_warnings([obj], [])
    assert any('seccompProfile.type: RuntimeDefault: kubelab loads no seccomp profile' in w
               for w in warnings), warnings
    assert any('allowPrivilegeEscalation: true: kubelab always sets no_new_privs' in w
               for w in warnings), warnings


# ---------------------------------------------------------------- env, resources, identity
@pytest.mark.parametrize('env, path, words', [
    ([{'name': 'A', 'valueFrom': {'configMapKeyRef': {'name': 'c'}}}],
     f'{C}.env[0].valueFrom.configMapKeyRef.key', ['required value']),
    ([{'name': 'A', 'valueFrom': {'configMapKeyRef': {'name': 'c', 'key': 'a/b'}}}],
     f'{C}.env[0].valueFrom.configMapKeyRef.key', ['a valid config key']),
    ([{'name': 'A', 'valueFrom': {'configMapKeyRef': {'name': 'c', 'key': 'k'},
                                  'secretKeyRef': {'name': 's', 'key': 'k'}}}],
     f'{C}.env[0].valueFrom', ['may not have more than one field']),
    ([{'name': 'A', 'valueFrom': {}}], f'{C}.env[0].valueFrom', ['must specify one of']),
])
def test_env_errors(env, path, words):
    assert_problem(with_container(env=env), path, *words)


@pytest.mark.parametrize('env_from, path, words', [
    ([{'configMapRef': {'name': 'c'}, 'secretRef': {'name': 's'}}], f'{C}.envFrom[0]',
     ['may not have more than one field']),
    ([{'prefix': 'A_'}], f'{C}.envFrom[0]', ['must specify one of']),
    ([{'configMapRef': {}}], f'{C}.envFrom[0].configMapRef.name', ['required value']),
])
def test_env_from_errors(env_from, path, words):
    assert_problem(with_container(envFrom=env_from), path, *words)


def test_a_limit_without_request_sets_the_request():
    out = validate(with_container(resources={'limits': {'cpu': '500m', 'memory': '64Mi'}}))
    assert out['spec']['containers'][0]['resources']['requests'] == {
        'cpu': '500m', 'memory': '64Mi'}


@pytest.mark.parametrize('resources, path', [
    ({'limits': {'ephemeral-storage': '1Gi'}}, f'{C}.resources.limits[ephemeral-storage]'),
    ({'requests': {'example.com/gpu': 1}}, f'{C}.resources.requests[example.com/gpu]'),
])
def test_resources_other_than_cpu_and_memory_are_refused(resources, path):
    assert_problem(with_container(resources=resources), path,
                   'is not supported by kubelab', 'cpu, memory only')


@pytest.mark.parametrize('obj, path, words', [
    (with_container(workingDir='app'), f'{C}.workingDir', ['must be an absolute path']),
    (pod(hostAliases=[{'ip': '300.1.1.1', 'hostnames': ['a']}]), 'spec.hostAliases[0].ip',
     ['valid IPv4 address']),
    (pod(hostAliases=[{'ip': '10.0.0.1', 'hostnames': ['A_B']}]),
     'spec.hostAliases[0].hostnames[0]', ['lowercase']),
    (pod(hostname='Web'), 'spec.hostname', ['lowercase']),
    (with_container(terminationMessagePolicy='Always'), f'{C}.terminationMessagePolicy',
     ['File, FallbackToLogsOnError']),
])
def test_identity_and_working_directory_errors(obj, path, words):
    assert_problem(obj, path, *words)


# ---------------------------------------------------------------- ConfigMap
def test_a_configmap_keeps_data_and_writes_binary_data_canonically():
    out = validate(configmap(data={'a.ini': 'x=1'}, binaryData={'blob': 'AAE\nC'}))
    assert out['data'] == {'a.ini': 'x=1'} and out['binaryData'] == {'blob': 'AAEC'}
    assert out['metadata']['namespace'] == 'default'


@pytest.mark.parametrize('fields, path, words', [
    ({'data': {'a': 'x'}, 'binaryData': {'a': 'eA=='}}, 'data[a]',
     ['duplicate of key present in binaryData']),
    ({'binaryData': {'a': 'not base64!'}}, 'binaryData[a]', ['illegal base64 data']),
    ({'data': {'a': 1}}, 'data[a]', ['must be a string, got integer 1 (quote it)']),
    ({'data': {'..a': 'x'}}, 'data[..a]', ["must not start with '..'"]),
    ({'data': {'a': 'x' * (1024 * 1024 + 1)}}, 'data', ['must have at most 1048576 bytes']),
    ({'spec': {}}, 'spec', ['unknown field "spec"']),
])
def test_configmap_errors(fields, path, words):
    assert_problem(configmap(**fields), path, *words)


def test_an_immutable_configmap_cannot_change():
    old = validate(configmap(data={'a': 'x'}, immutable=True))
    new = validate(configmap(data={'a': 'y'}, immutable=True))
    assert [e.path for e in update_problems(new, old)] == ['data']
    assert update_problems(validate(configmap(data={'a': 'y'})),
                           validate(configmap(data={'a': 'x'}))) == []


def test_a_configmap_refusal_lists_every_problem():
    with pytest.raises(ApplyError) as info:
        validate(configmap(data={'a': 1, 'b/c': 'x'}))
    assert sorted(e.path for e in info.value.errors) == ['data[a]', 'data[b/c]']
