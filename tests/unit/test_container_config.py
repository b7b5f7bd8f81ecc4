"""What the kubelet gives a container from the API: its environment in Kubernetes' order
and expansion, its ConfigMap and Secret files, the kubelet's errors when they are
missing, who it runs as and its capabilities."""

import base64

import pytest

from services.container_config import (ConfigError, Sources, capabilities, env_vars,
                                       run_as, volume_files)

SOURCES = Sources('shop', configmaps={
    'app': {'data': {'level': 'debug', 'name': 'shop', 'bad=key': 'x'},
            'binaryData': {'blob': base64.b64encode(b'\x00\x01').decode()}}},
    secrets={'db': {'data': {'password': base64.b64encode(b's3cret').decode()}}})


def test_env_from_then_env_each_expanded_with_what_came_before():
    container = {'envFrom': [{'configMapRef': {'name': 'app'}, 'prefix': 'APP_'},
                             {'secretRef': {'name': 'db'}}],
                 'env': [{'name': 'URL', 'value': 'db://$(APP_name):$(password)@$(HOST)'},
                         {'name': 'HOST', 'value': 'db'},
                         {'name': 'LEVEL', 'valueFrom': {
                             'configMapKeyRef': {'name': 'app', 'key': 'level'}}},
                         {'name': 'POD', 'valueFrom': {'fieldRef': {
                             'fieldPath': 'metadata.name'}}},
                         {'name': 'ESCAPED', 'value': '$$(HOST)'}]}
    env = env_vars(container, {'metadata.name': 'web-1'}, SOURCES)
    assert env['URL'] == 'db://shop:s3cret@$(HOST)'      # HOST is defined after it
    assert (env['LEVEL'], env['POD'], env['ESCAPED']) == ('debug', 'web-1', '$(HOST)')
    assert env['APP_level'] == 'debug' and env['password'] == 's3cret'
    assert 'APP_bad=key' not in env                     # cannot be a variable name


@pytest.mark.parametrize('ref, message', [
    ({'configMapKeyRef': {'name': 'nope', 'key': 'a'}}, 'configmap "nope" not found'),
    ({'configMapKeyRef': {'name': 'app', 'key': 'nope'}},
     "couldn't find key nope in ConfigMap shop/app"),
    ({'secretKeyRef': {'name': 'db', 'key': 'user'}}, "couldn't find key user in Secret "
                                                      "shop/db"),
    ({'secretKeyRef': {'name': 'nope', 'key': 'a'}}, 'secret "nope" not found'),
])
def test_a_missing_source_is_the_kubelets_error(ref, message):
    with pytest.raises(ConfigError, match=message):
        env_vars({'env': [{'name': 'A', 'valueFrom': ref}]}, {}, SOURCES)


def test_an_optional_missing_source_leaves_the_variable_out():
    env = env_vars({'env': [{'name': 'A', 'valueFrom': {'configMapKeyRef': {
        'name': 'nope', 'key': 'a', 'optional': True}}}],
        'envFrom': [{'secretRef': {'name': 'nope', 'optional': True}}]}, {}, SOURCES)
    assert env == {}


def test_sources_can_be_read_when_asked():
    asked = []

    def lookup(kind, name):
        asked.append((kind, name))
        return SOURCES.configmaps.get(name) if kind == 'ConfigMap' else None
    env = env_vars({'env': [{'name': 'A', 'valueFrom': {'configMapKeyRef': {
        'name': 'app', 'key': 'name'}}}]}, {}, Sources('shop', lookup=lookup))
    assert env == {'A': 'shop'} and asked == [('ConfigMap', 'app')]


def test_volume_files_every_key_or_the_items_with_their_modes():
    files = volume_files({'configMap': {'name': 'app', 'defaultMode': 0o440}}, SOURCES)
    assert files['level'] == (b'debug', 0o440) and files['blob'] == (b'\x00\x01', 0o440)
    files = volume_files({'secret': {'secretName': 'db', 'items': [
        {'key': 'password', 'path': 'conf/pw', 'mode': 0o400}]}}, SOURCES)
    assert files == {'conf/pw': (b's3cret', 0o400)}
    assert volume_files({'emptyDir': {}}, SOURCES) is None
    assert volume_files({'configMap': {'name': 'nope', 'optional': True}}, SOURCES) == {}
    with pytest.raises(ConfigError, match='configmap references non-existent config key: x'):
        volume_files({'configMap': {'name': 'app', 'items': [{'key': 'x', 'path': 'x'}]}},
                     SOURCES)


def pod(spec_ctx=None, container_ctx=None):
    return ({'metadata': {'name': 'web', 'namespace': 'shop', 'uid': 'u-1'},
             'spec': {'securityContext': spec_ctx or {}}},
            {'name': 'app', 'securityContext': container_ctx or {}})


def passwd(uid):
    return {1000: ('alice', 1000, [27, 100])}.get(uid)


def test_run_as_the_container_first_then_the_pod_then_the_image():
    assert run_as(*pod()) == run_as(*pod(), passwd=passwd)
    who = run_as(*pod(), passwd=passwd)
    assert (who.uid, who.gid, who.groups) == (0, 0, (0,))
    who = run_as(*pod({'runAsUser': 1000, 'fsGroup': 2000, 'supplementalGroups': [5]},
                      {'runAsGroup': 3000}), passwd=passwd)
    assert (who.uid, who.gid, who.groups) == (1000, 3000, (5, 27, 100, 2000, 3000))
    who = run_as(*pod({'runAsUser': 1000, 'supplementalGroupsPolicy': 'Strict'}),
                 passwd=passwd)
    assert (who.gid, who.groups) == (1000, (1000,))    # the image's group for the user


def test_run_as_non_root_is_checked_as_the_kubelet_checks_it():
    with pytest.raises(ConfigError, match='container has runAsNonRoot and image will run '
                                          r'as root \(pod: "web_shop\(u-1\)", container: '
                                          r'app\)'):
        run_as(*pod({'runAsNonRoot': True}))
    with pytest.raises(ConfigError, match="container's runAsUser breaks non-root policy"):
        run_as(*pod({'runAsNonRoot': True}, {'runAsUser': 0}))
    assert run_as(*pod({'runAsNonRoot': True, 'runAsUser': 7})).uid == 7


@pytest.mark.parametrize('caps, want', [
    ({}, ['AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'MKNOD',
          'NET_BIND_SERVICE', 'NET_RAW', 'SETFCAP', 'SETGID', 'SETPCAP', 'SETUID',
          'SYS_CHROOT']),
    ({'drop': ['ALL'], 'add': ['NET_BIND_SERVICE']}, ['NET_BIND_SERVICE']),
    ({'drop': ['NET_RAW', 'cap_mknod'], 'add': ['CAP_NET_ADMIN']},
     ['AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL',
      'NET_ADMIN', 'NET_BIND_SERVICE', 'SETFCAP', 'SETGID', 'SETPCAP', 'SETUID',
      'SYS_CHROOT']),
    ({'drop': ['KILL'], 'add': ['KILL']}, None),           # add wins over drop
])
def test_capabilities_are_the_runtimes_defaults_minus_drop_plus_add(caps, want):
    got = capabilities({'securityContext': {'capabilities': caps}})
    if want is None:
        assert 'KILL' in got
    else:
        assert got == want
