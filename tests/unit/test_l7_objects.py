"""The object model of Ingress, IngressClass, Secret and the Gateway API (GatewayClass,
Gateway, HTTPRoute): valid examples normalise with the defaults the API server (or the
CRD) fills; every rule's message names the field path and what would be accepted; the
store keeps the objects (cluster scope, no status for Secrets, immutable fields); and
``kubelab get`` prints kubectl's tables."""

import base64
import copy
import json
from datetime import datetime, timezone

import pytest

from kubelab.daemon.apiserver import APIServer
from kubelab import cli
from kubelab.cli import objects as cli_objects
from kubelab.printers import KIND_ALIASES, kind_alias, render
from services import manifests
from services.cluster import default_cluster
from services.errors import ApplyError, NotFound
from services.manifests import key, object_ref, validate
from services.store import Store
from tests.unit.test_manifests import assert_problem, problems

NOW = datetime(2026, 11, 26, 3, 15, 12, tzinfo=timezone.utc)
CREATED = '2026-11-26T03:10:00Z'  # 5m12s before NOW
GROUP = 'gateway.networking.k8s.io'


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()




def dig(obj, path):
    """The value at a dotted path with [i] indices (``spec.rules[0].host``)."""
    for part in path.replace('[', '.[').split('.'):
        obj = obj[int(part[1:-1])] if part.startswith('[') else obj[part]
    return obj


def put(obj, path, value):
    """A copy of ``obj`` with the field at ``path`` set (``None``: removed)."""
    obj = copy.deepcopy(obj)
    parent, _, last = path.rpartition('.')
    target = dig(obj, parent) if parent else obj
    if last.startswith('['):
        target[int(last[1:-1])] = value
    elif value is None:
        target.pop(last, None)
    else:
        target[last] = value
    return obj


# ================================================================ Ingress

def backend(service='web', **port):
    return {'service': {'name': service, 'port': port or {'number': 80}}}


def ingress(**spec):
    body = {'rules': [{'host': 'web.example.com', 'http': {'paths': [
        {'path': '/', 'pathType': 'Prefix', 'backend': backend()}]}}]}
    body.update(spec)
    return {'apiVersion': 'networking.k8s.io/v1', 'kind': 'Ingress',
            'metadata': {'name': 'web'}, 'spec': body}


PATH = 'spec.rules[0].http.paths[0]'


def test_a_full_ingress_keeps_what_it_says_and_invents_nothing():
    obj = ingress(ingressClassName='nginx',
                  defaultBackend=backend('fallback', name='http'),
                  tls=[{'hosts': ['web.example.com', '*.example.com'],
                        'secretName': 'web-tls'}])
    obj['metadata']['annotations'] = {
        'kubernetes.io/ingress.class': 'nginx',
        'nginx.ingress.kubernetes.io/ssl-redirect': 'false'}
    obj['spec']['rules'] += [
        {'host': '*.example.com', 'http': {'paths': [
            {'path': '/api', 'pathType': 'Exact', 'backend': backend('api')},
            {'pathType': 'ImplementationSpecific', 'backend': backend()}]}},
        {'host': 'bare.example.com'}]                   # a rule may have no http
    out = validate(obj)
    assert out['metadata'] == {'name': 'web', 'namespace': 'default',
                               'annotations': obj['metadata']['annotations']}
    assert out['spec'] == obj['spec']


def test_empty_strings_are_dropped_as_the_api_servers_json_drops_them():
    obj = ingress(tls=[{'hosts': ['web.example.com'], 'secretName': ''}])
    obj['spec']['rules'][0]['host'] = ''
    obj['spec']['rules'][0]['http']['paths'][0].update(
        path='', pathType='ImplementationSpecific')
    out = validate(obj)
    assert 'host' not in out['spec']['rules'][0]
    assert 'path' not in out['spec']['rules'][0]['http']['paths'][0]
    assert out['spec']['tls'] == [{'hosts': ['web.example.com']}]


def test_an_ingress_with_only_a_default_backend_is_valid():
    out = validate(put(ingress(defaultBackend=backend()), 'spec.rules', None))
    assert out['spec'] == {'defaultBackend': backend()}


@pytest.mark.parametrize('spec', [{}, {'rules': []}, {'tls': [{'hosts': ['a.com']}]}])
def test_an_ingress_needs_rules_or_a_default_backend(spec):
    obj = ingress()
    obj['spec'] = spec
    assert_problem(obj, 'spec', 'either `defaultBackend` or `rules` must be specified')


@pytest.mark.parametrize('path_type', ['Regex', 'prefix', ''])
def test_an_unknown_path_type_lists_the_valid_ones(path_type):
    obj = put(ingress(), f'{PATH}.pathType', path_type)
    assert_problem(obj, f'{PATH}.pathType', f'unsupported value "{path_type}"',
                   'supported: Exact, Prefix, ImplementationSpecific')


def test_a_missing_path_type_lists_the_valid_ones():
    obj = put(ingress(), f'{PATH}.pathType', None)
    assert_problem(obj, f'{PATH}.pathType', 'required value', 'pathType must be specified',
                   'Exact, Prefix, ImplementationSpecific')


@pytest.mark.parametrize('path_type', ['Exact', 'Prefix'])
@pytest.mark.parametrize('value', ['api', '', None])
def test_exact_and_prefix_paths_must_be_absolute(path_type, value):
    obj = put(put(ingress(), f'{PATH}.pathType', path_type), f'{PATH}.path', value)
    assert_problem(obj, f'{PATH}.path', 'must be an absolute path')


def test_a_relative_path_suggests_the_absolute_one():
    obj = put(ingress(), f'{PATH}.path', 'api')
    assert_problem(obj, f'{PATH}.path', 'Invalid value: "api"', 'did you mean "/api"?')


@pytest.mark.parametrize('value, words', [
    ('/a//b', "must not contain '//'"),
    ('/a/./b', "must not contain '/./'"),
    ('/a/../b', "must not contain '/../'"),
    ('/a%2fb', "must not contain '%2f'"),
    ('/a%2Fb', "must not contain '%2F'"),
    ('/a/..', "cannot end with '/..'"),
    ('/a/.', "cannot end with '/.'"),
])
@pytest.mark.parametrize('path_type', ['Exact', 'Prefix'])
def test_exact_and_prefix_paths_refuse_what_the_api_server_refuses(value, words, path_type):
    obj = put(put(ingress(), f'{PATH}.pathType', path_type), f'{PATH}.path', value)
    assert_problem(obj, f'{PATH}.path', f'Invalid value: "{value}"', words)


@pytest.mark.parametrize('value', ['/a#b', '/users/{id}', '/a.b/c..d', '/'])
def test_paths_the_ingress_api_accepts(value):
    validate(put(ingress(), f'{PATH}.path', value))


def test_an_implementation_specific_path_is_only_checked_to_be_absolute():
    obj = put(ingress(), f'{PATH}.pathType', 'ImplementationSpecific')
    validate(put(obj, f'{PATH}.path', '/a//b/..'))
    validate(put(obj, f'{PATH}.path', None))
    assert_problem(put(obj, f'{PATH}.path', 'api'), f'{PATH}.path',
                   'must be an absolute path')


def test_an_http_rule_needs_paths():
    for http in ({}, {'paths': []}):
        obj = put(ingress(), 'spec.rules[0].http', http)
        assert_problem(obj, 'spec.rules[0].http.paths', 'required value')


@pytest.mark.parametrize('port, path, words', [
    ({}, 'backend.service.port', ['required value', 'port name or number is required']),
    (None, 'backend.service.port', ['required value', 'port name or number is required']),
    ({'number': 80, 'name': 'http'}, 'backend.service.port',
     ['cannot set both port name & port number']),
    ({'number': 70000}, 'backend.service.port.number', ['must be 1-65535']),
    ({'number': 0}, 'backend.service.port.number', ['must be 1-65535']),
    ({'number': '80'}, 'backend.service.port.number', ['must be an integer',
                                                        'string "80"']),
    ({'name': 'HTTP'}, 'backend.service.port.name', ['port name "HTTP"', 'lower case']),
    ({'name': 'http', 'protocol': 'TCP'}, 'backend.service.port.protocol',
     ['unknown field "protocol"', 'number, name']),
])
def test_a_backend_port_is_one_number_or_one_name(port, path, words):
    obj = put(ingress(), f'{PATH}.backend.service.port', port)
    assert_problem(obj, f'{PATH}.{path}', *words)


def test_a_backend_service_needs_a_valid_service_name():
    obj = put(ingress(), f'{PATH}.backend.service.name', None)
    assert_problem(obj, f'{PATH}.backend.service.name', 'required value')
    obj = put(ingress(), f'{PATH}.backend.service.name', 'Web')
    assert_problem(obj, f'{PATH}.backend.service.name', '"Web"', 'DNS-1035 label')


def test_a_resource_backend_is_refused_naming_the_service_backend():
    obj = put(ingress(), f'{PATH}.backend',
              {'resource': {'apiGroup': 'k8s.example.com', 'kind': 'Bucket', 'name': 'b'}})
    assert_problem(obj, f'{PATH}.backend.resource', 'not supported by kubelab',
                   'supported: service', '{service: {name: web, port: {number: 80}}}')


def test_a_backend_needs_a_service():
    assert_problem(put(ingress(), f'{PATH}.backend', {}), f'{PATH}.backend',
                   'required value', 'a backend needs a service')
    assert_problem(put(ingress(), f'{PATH}.backend', None), f'{PATH}.backend',
                   'required value')
    assert_problem(ingress(rules=None, defaultBackend={'service': 'web'}),
                   'spec.defaultBackend.service', 'must be a mapping')


@pytest.mark.parametrize('host, words', [
    ('foo.*.com', ["must start with '*.'", 'whole first label']),
    ('*foo.com', ["must start with '*.'"]),
    ('*', ["must start with '*.'"]),
    ('*.*.foo.com', ["must start with '*.'"]),
    ('Web.Example.com', ['lowercase RFC 1123 subdomain', "'*.example.com'"]),
    ('web_1.example.com', ['lowercase RFC 1123 subdomain']),
    ('203.0.113.80', ['must be a DNS name, not an IP address']),
    ('2001:db8::1', ['must be a DNS name, not an IP address']),
    ('a' * 254, ['must be no more than 253 characters']),
])
def test_rule_and_tls_hosts_are_dns_names_with_at_most_a_leading_wildcard(host, words):
    assert_problem(put(ingress(), 'spec.rules[0].host', host), 'spec.rules[0].host',
                   f'"{host}"', *words)
    assert_problem(ingress(tls=[{'hosts': ['ok.example.com', host]}]),
                   'spec.tls[0].hosts[1]', f'"{host}"', *words)


@pytest.mark.parametrize('host', ['*.example.com', 'example.com', 'a-1.b-2.example'])
def test_hosts_the_ingress_api_accepts(host):
    validate(put(ingress(tls=[{'hosts': [host]}]), 'spec.rules[0].host', host))


def test_tls_entries_are_checked():
    assert_problem(ingress(tls=[{'hosts': [80]}]), 'spec.tls[0].hosts[0]',
                   'must be a string, got integer 80')
    assert_problem(ingress(tls=[{'secretName': 'Web_TLS'}]), 'spec.tls[0].secretName',
                   '"Web_TLS"', 'RFC 1123 subdomain')
    assert_problem(ingress(tls=[{'secret': 'x'}]), 'spec.tls[0].secret',
                   'unknown field "secret"', 'hosts, secretName')


def test_the_class_name_and_the_legacy_annotation_must_agree():
    assert_problem(ingress(ingressClassName='Nginx'), 'spec.ingressClassName',
                   '"Nginx"', 'RFC 1123 subdomain')
    obj = ingress(ingressClassName='nginx')
    obj['metadata']['annotations'] = {'kubernetes.io/ingress.class': 'traefik'}
    assert_problem(obj, 'metadata.annotations[kubernetes.io/ingress.class]',
                   'Invalid value: "traefik"', 'must match `ingressClassName` when both '
                   'are specified')
    del obj['spec']['ingressClassName']
    assert validate(obj)['metadata']['annotations'] == {
        'kubernetes.io/ingress.class': 'traefik'}


def test_v1beta1_fields_are_unknown_with_the_valid_ones():
    assert_problem(ingress(backend=backend()), 'spec.backend', 'unknown field "backend"',
                   'ingressClassName, defaultBackend, rules, tls')
    obj = put(ingress(), f'{PATH}.backend', {'serviceName': 'web', 'servicePort': 80})
    assert_problem(obj, f'{PATH}.backend.serviceName', 'unknown field', 'service')


def test_an_ingress_name_is_a_dns_subdomain():
    obj = ingress()
    obj['metadata']['name'] = 'web.v1'
    validate(obj)
    obj['metadata']['name'] = 'Web'
    assert_problem(obj, 'metadata.name', 'RFC 1123 subdomain')


# ================================================================ IngressClass

def ingress_class(**spec):
    return {'apiVersion': 'networking.k8s.io/v1', 'kind': 'IngressClass',
            'metadata': {'name': 'nginx', 'annotations': {
                'ingressclass.kubernetes.io/is-default-class': 'true'}},
            'spec': {'controller': 'k8s.io/ingress-nginx', **spec}}


def test_an_ingress_class_is_cluster_scoped_and_keeps_its_annotation():
    obj = ingress_class()
    obj['metadata']['namespace'] = 'default'
    out = validate(obj)
    assert out['metadata'] == {'name': 'nginx', 'annotations': {
        'ingressclass.kubernetes.io/is-default-class': 'true'}}
    assert key(out) == ('IngressClass', '', 'nginx')
    assert object_ref(out) == 'IngressClass nginx'
    assert not manifests.namespaced('IngressClass')


def test_ingress_class_parameters_default_to_cluster_scope():
    out = validate(ingress_class(parameters={'apiGroup': 'k8s.example.com',
                                             'kind': 'IngressParameters', 'name': 'p'}))
    assert out['spec']['parameters'] == {'apiGroup': 'k8s.example.com',
                                         'kind': 'IngressParameters', 'name': 'p',
                                         'scope': 'Cluster'}
    out = validate(ingress_class(parameters={'kind': 'ConfigMap', 'name': 'p',
                                             'scope': 'Namespace', 'namespace': 'infra'}))
    assert out['spec']['parameters']['namespace'] == 'infra'


@pytest.mark.parametrize('spec, path, words', [
    ({'controller': None}, 'spec.controller', ['required value', 'k8s.io/ingress-nginx']),
    ({'controller': ''}, 'spec.controller', ['required value']),
    ({'controller': 'nginx'}, 'spec.controller',
     ['"nginx" must be a domain-prefixed path', '"acme.io/foo"']),
    ({'controller': 'K8s.io/nginx'}, 'spec.controller', ['the domain "K8s.io"']),
    ({'controller': 'k8s.io/' + 'a' * 244}, 'spec.controller',
     ['Too long', '250 characters']),
    ({'parameters': {'kind': 'X', 'name': 'p', 'scope': 'Namespace'}},
     'spec.parameters.namespace', ['required value', "scope` is set to 'Namespace'"]),
    ({'parameters': {'kind': 'X', 'name': 'p', 'namespace': 'infra'}},
     'spec.parameters.namespace', ['Forbidden', "scope` is set to 'Cluster'"]),
    ({'parameters': {'kind': 'X', 'name': 'p', 'scope': 'Global'}},
     'spec.parameters.scope', ['unsupported value "Global"', 'Cluster, Namespace']),
    ({'parameters': {'name': 'p'}}, 'spec.parameters.kind', ['required value']),
    ({'parameters': {'kind': 'X', 'name': 'a/b'}}, 'spec.parameters.name',
     ["may not contain '/'"]),
    ({'parameters': {'kind': 'X', 'name': 'p', 'apiGroup': 'Bad_Group'}},
     'spec.parameters.apiGroup', ['RFC 1123 subdomain']),
])
def test_ingress_class_rules(spec, path, words):
    obj = ingress_class()
    for field, value in spec.items():
        obj = put(obj, f'spec.{field}', value)
    assert_problem(obj, path, *words)


def test_an_ingress_class_without_spec_asks_for_the_controller():
    obj = ingress_class()
    del obj['spec']
    assert_problem(obj, 'spec.controller', 'required value')


# ================================================================ Secret

def secret(**fields):
    return {'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'web-tls'},
            **fields}


def test_a_secret_defaults_to_opaque_and_keeps_its_base64_data():
    out = validate(secret(data={'user': b64('admin')}))
    assert out['type'] == 'Opaque'
    assert out['data'] == {'user': b64('admin')}
    assert validate(secret(type=''))['type'] == 'Opaque'
    assert 'data' not in validate(secret())


def test_string_data_is_merged_into_data_as_base64_and_dropped():
    out = validate(secret(data={'user': b64('admin'), 'pass': b64('old')},
                          stringData={'pass': 'new', 'note': 'h\u00e9'}))
    assert 'stringData' not in out
    assert out['data'] == {'user': b64('admin'), 'pass': b64('new'), 'note': b64('h\u00e9')}


def test_data_is_written_in_canonical_base64():
    wrapped = b64('x' * 60)
    out = validate(secret(data={'a': wrapped[:40] + '\n' + wrapped[40:] + '\n',
                                'empty': '', 'null': None}))
    assert out['data'] == {'a': wrapped, 'empty': '', 'null': ''}


def test_a_tls_secret_needs_a_certificate_and_a_key():
    out = validate(secret(type='kubernetes.io/tls',
                          stringData={'tls.crt': 'CERT', 'tls.key': 'KEY'}))
    assert out['data'] == {'tls.crt': b64('CERT'), 'tls.key': b64('KEY')}
    obj = secret(type='kubernetes.io/tls', data={'tls.crt': b64('CERT')})
    assert_problem(obj, 'data[tls.key]', 'required value', 'tls.crt', 'tls.key')
    found = problems(secret(type='kubernetes.io/tls'))
    assert [path for path, _ in found] == ['data[tls.crt]', 'data[tls.key]']


@pytest.mark.parametrize('value, words', [
    ('s3cr3t!', 'illegal base64 data at input byte 6'),
    ('aGVsbG8', 'is not a multiple of 4'),
    ('aG=sbG8=', 'illegal base64 data at input byte 2'),
    ('YQ===', 'is not a multiple of 4'),
    ('aGVs bG8=', 'illegal base64 data at input byte 4'),
])
def test_data_must_be_base64_and_the_message_does_not_repeat_the_value(value, words):
    found = problems(secret(data={'password': value}))
    assert found[0][0] == 'data[password]'
    assert words in found[0][1] and 'stringData' in found[0][1]
    assert value not in found[0][1]


def test_data_values_must_be_strings():
    assert_problem(secret(data={'n': 12}), 'data[n]', 'base64-encoded string',
                   'integer 12')
    assert_problem(secret(stringData={'n': 12}), 'stringData[n]', 'must be a string',
                   'quote it')
    assert_problem(secret(data=['a']), 'data', 'must be a mapping')


@pytest.mark.parametrize('name, words', [
    ('my key', 'a valid config key'),
    ('.', "must not be '.'"),
    ('..', "must not be '..'"),
    ('..data', "must not start with '..'"),
    ('k' * 254, 'no more than 253'),
])
def test_secret_keys_follow_the_config_key_rule(name, words):
    assert_problem(secret(data={name: b64('x')}), f'data[{name}]', words)
    assert_problem(secret(stringData={name: 'x'}), f'stringData[{name}]', words)


@pytest.mark.parametrize('name', ['tls.crt', 'KEY_NAME', 'key-name', '.hidden', 'a..b'])
def test_secret_keys_the_api_server_accepts(name):
    validate(secret(data={name: b64('x')}))


def test_secret_types_beyond_opaque_and_tls_are_refused_with_the_valid_ones():
    assert_problem(secret(type='kubernetes.io/dockerconfigjson'), 'type',
                   'not supported by kubelab', 'supported: Opaque, kubernetes.io/tls')
    assert_problem(secret(type='opaque'), 'type', 'unsupported value "opaque"',
                   'did you mean "Opaque"?', 'Opaque, kubernetes.io/tls')
    assert_problem(secret(type='example.com/custom'), 'type', 'unsupported value')


def test_a_secret_holds_at_most_one_mebibyte():
    big = 'x' * (1024 * 1024)
    validate(secret(stringData={'a': big}))
    assert_problem(secret(stringData={'a': big, 'b': 'y'}), 'data', 'Too long',
                   '1048576 bytes')


def test_secret_fields_are_top_level_and_typed():
    assert_problem(secret(spec={}), 'spec', 'unknown field "spec"',
                   'type, data, stringData, immutable')
    assert_problem(secret(immutable='yes'), 'immutable', 'must be a boolean')
    assert validate(secret(immutable=True))['immutable'] is True


# ================================================================ GatewayClass

def gateway_class(**spec):
    return {'apiVersion': f'{GROUP}/v1', 'kind': 'GatewayClass',
            'metadata': {'name': 'kubelab'},
            'spec': {'controllerName': 'kubelab.io/gateway-controller', **spec}}


def test_a_gateway_class_is_cluster_scoped_and_kept_as_written():
    obj = gateway_class(description='the lab', parametersRef={
        'group': '', 'kind': 'ConfigMap', 'name': 'gw-config', 'namespace': 'infra'})
    out = validate(obj)
    assert out['spec'] == obj['spec']
    assert key(out) == ('GatewayClass', '', 'kubelab')
    assert 'namespace' not in out['metadata']


@pytest.mark.parametrize('spec, path, words', [
    ({'controllerName': None}, 'spec.controllerName', ['required value',
                                                       'domain-prefixed path']),
    ({'controllerName': 'gateway'}, 'spec.controllerName',
     ['"gateway" must be a domain-prefixed path']),
    ({'controllerName': 'example.net/' + 'a' * 242}, 'spec.controllerName',
     ['Too long', '253']),
    ({'description': 'd' * 65}, 'spec.description', ['Too long', '64 characters']),
    ({'parametersRef': {'kind': 'ConfigMap', 'name': 'x'}}, 'spec.parametersRef.group',
     ['required value', '"" for the core group']),
    ({'parametersRef': {'group': '', 'name': 'x'}}, 'spec.parametersRef.kind',
     ['required value']),
    ({'parametersRef': {'group': '', 'kind': 'Config Map', 'name': 'x'}},
     'spec.parametersRef.kind', ['Invalid value: "Config Map"', 'e.g. "Service"']),
    ({'parametersRef': {'group': '', 'kind': 'ConfigMap'}}, 'spec.parametersRef.name',
     ['required value']),
    ({'parametersRef': {'group': 'Example', 'kind': 'X', 'name': 'x'}},
     'spec.parametersRef.group', ['RFC 1123 subdomain', 'use "" for the core API group']),
    ({'controller': 'x.io/y'}, 'spec.controller', ['unknown field', 'controllerName']),
])
def test_gateway_class_rules(spec, path, words):
    obj = gateway_class()
    for field, value in spec.items():
        obj = put(obj, f'spec.{field}', value)
    assert_problem(obj, path, *words)


# ================================================================ Gateway

def gateway(*listeners, **spec):
    return {'apiVersion': f'{GROUP}/v1', 'kind': 'Gateway',
            'metadata': {'name': 'gw', 'namespace': 'shop'},
            'spec': {'gatewayClassName': 'kubelab',
                     'listeners': list(listeners) or [HTTP], **spec}}


HTTP = {'name': 'http', 'port': 80, 'protocol': 'HTTP'}
HTTPS = {'name': 'https', 'port': 443, 'protocol': 'HTTPS', 'hostname': '*.example.com',
         'tls': {'certificateRefs': [{'name': 'web-tls'}]}}


def test_a_gateway_gets_the_crd_defaults():
    out = validate(gateway(HTTP, HTTPS))
    assert out['spec']['listeners'] == [
        {'name': 'http', 'port': 80, 'protocol': 'HTTP',
         'allowedRoutes': {'namespaces': {'from': 'Same'}}},
        {'name': 'https', 'port': 443, 'protocol': 'HTTPS', 'hostname': '*.example.com',
         'tls': {'mode': 'Terminate', 'certificateRefs': [
             {'name': 'web-tls', 'group': '', 'kind': 'Secret'}]},
         'allowedRoutes': {'namespaces': {'from': 'Same'}}}]


def test_allowed_routes_defaults_are_filled_inside_a_partial_value():
    listener = dict(HTTP, allowedRoutes={'kinds': [{'kind': 'HTTPRoute'}]})
    out = validate(gateway(listener))['spec']['listeners'][0]['allowedRoutes']
    assert out == {'kinds': [{'kind': 'HTTPRoute', 'group': GROUP}],
                   'namespaces': {'from': 'Same'}}
    listener = dict(HTTP, allowedRoutes={'namespaces': {
        'from': 'Selector', 'selector': {'matchLabels': {'team': 'shop'}}}})
    validate(gateway(listener))
    listener = dict(HTTP, allowedRoutes={'namespaces': {'from': 'All'}})
    assert validate(gateway(listener))['spec']['listeners'][0]['allowedRoutes'] == \
        {'namespaces': {'from': 'All'}}


def test_core_protocols_are_case_insensitive_and_written_in_upper_case():
    out = validate(gateway(dict(HTTP, protocol='http'), dict(HTTPS, protocol='Https')))
    assert [l['protocol'] for l in out['spec']['listeners']] == ['HTTP', 'HTTPS']


@pytest.mark.parametrize('protocol', ['TCP', 'UDP', 'TLS', 'tcp', 'example.com/grpc'])
def test_listener_protocols_beyond_http_and_https_are_not_supported(protocol):
    obj = gateway(dict(HTTP, protocol=protocol))
    assert_problem(obj, 'spec.listeners[0].protocol', 'is not supported by kubelab',
                   'supported: HTTP, HTTPS')


def test_an_unknown_protocol_lists_the_supported_ones():
    assert_problem(gateway(dict(HTTP, protocol='HTTP2')), 'spec.listeners[0].protocol',
                   'unsupported value "HTTP2"', 'supported: HTTP, HTTPS')
    assert_problem(gateway(put(HTTP, 'protocol', None)), 'spec.listeners[0].protocol',
                   'required value')


def test_listener_names_are_unique_section_names():
    obj = gateway(HTTP, dict(HTTP, port=8080))
    assert_problem(obj, 'spec.listeners[1].name', 'Duplicate value: "http"',
                   'Listener name must be unique within the Gateway', 'spec.listeners[0]')
    assert_problem(gateway(dict(HTTP, name='HTTP')), 'spec.listeners[0].name',
                   'RFC 1123 subdomain')
    assert_problem(gateway(put(HTTP, 'name', None)), 'spec.listeners[0].name',
                   'required value')
    validate(gateway(dict(HTTP, name='web.http')))          # a SectionName may have dots


def test_listeners_must_be_distinct_in_port_protocol_and_hostname():
    obj = gateway(HTTP, dict(HTTP, name='other'))
    assert_problem(obj, 'spec.listeners[1]', 'Duplicate value', 'port 80, protocol HTTP '
                   'and no hostname', 'listener "http"',
                   'Combination of port, protocol and hostname must be unique')
    obj = gateway(dict(HTTP, hostname='a.com'), dict(HTTP, name='b', hostname='a.com'))
    assert_problem(obj, 'spec.listeners[1]', 'hostname "a.com"')
    # Another hostname, port or protocol is distinct.
    validate(gateway(dict(HTTP, hostname='a.com'), dict(HTTP, name='b', hostname='b.com'),
                     dict(HTTP, name='c'), dict(HTTP, name='d', port=8080),
                     dict(HTTPS, name='e', port=80, hostname='a.com')))


def test_a_gateway_needs_a_class_and_listeners():
    obj = gateway()
    del obj['spec']['gatewayClassName']
    assert_problem(obj, 'spec.gatewayClassName', 'required value', 'GatewayClass')
    for listeners in (None, []):
        obj = put(gateway(), 'spec.listeners', listeners)
        assert_problem(obj, 'spec.listeners', 'required value', 'at least one listener')
    many = [dict(HTTP, name=f'l{i}', port=8000 + i) for i in range(65)]
    assert_problem(gateway(*many), 'spec.listeners', 'Too many: 65', 'at most 64')


def test_https_listeners_need_certificates_and_http_listeners_have_no_tls():
    assert_problem(gateway(put(HTTPS, 'tls', None)), 'spec.listeners[0].tls',
                   'required value', 'certificateRefs')
    for tls in ({}, {'mode': 'Terminate', 'certificateRefs': []}):
        assert_problem(gateway(put(HTTPS, 'tls', tls)),
                       'spec.listeners[0].tls.certificateRefs', 'required value',
                       'certificateRefs must be specified when mode is Terminate')
    assert_problem(gateway(dict(HTTP, tls=HTTPS['tls'])), 'spec.listeners[0].tls',
                   "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']")


@pytest.mark.parametrize('tls, path, words', [
    ({'mode': 'Passthrough'}, 'tls.mode', ['"Passthrough" is not supported by kubelab',
                                           'supported: Terminate']),
    ({'options': {'example.com/min-version': '1.3'}}, 'tls.options',
     ['is not supported by kubelab', 'mode, certificateRefs']),
    ({'certificateRefs': [{'name': 'ca', 'kind': 'ConfigMap'}]},
     'tls.certificateRefs[0].kind', ['ConfigMap (group "")', 'not supported by kubelab',
                                     'supported: Secret (group "")']),
    ({'certificateRefs': [{'kind': 'Secret'}]}, 'tls.certificateRefs[0].name',
     ['required value', 'kubernetes.io/tls']),
    ({'certificateRefs': [{'name': 'x', 'namespace': 'Certs'}]},
     'tls.certificateRefs[0].namespace', ['RFC 1123 label']),
])
def test_listener_tls_rules(tls, path, words):
    listener = copy.deepcopy(HTTPS)
    listener['tls'].update(tls)
    assert_problem(gateway(listener), f'spec.listeners[0].{path}', *words)


def test_a_certificate_in_another_namespace_is_kept_for_the_controller():
    listener = copy.deepcopy(HTTPS)
    listener['tls']['certificateRefs'][0]['namespace'] = 'certs'
    out = validate(gateway(listener))
    assert out['spec']['listeners'][0]['tls']['certificateRefs'][0]['namespace'] == 'certs'


@pytest.mark.parametrize('allowed, path, words', [
    ({'namespaces': {'from': 'Everywhere'}}, 'namespaces.from',
     ['unsupported value "Everywhere"', 'Same, All, Selector']),
    ({'namespaces': {'from': 'Selector'}}, 'namespaces.selector',
     ['required value', 'label selector']),
    ({'namespaces': {'from': 'Selector', 'selector': {'matchLabels': {'a': 'b c'}}}},
     'namespaces.selector.matchLabels[a]', ['"b c"']),
    ({'kinds': [{'kind': 'GRPCRoute'}]}, 'kinds[0].kind',
     ['GRPCRoute (group "gateway.networking.k8s.io") is not supported by kubelab',
      'supported: HTTPRoute']),
    ({'kinds': [{'group': 'example.com', 'kind': 'HTTPRoute'}]}, 'kinds[0].kind',
     ['not supported by kubelab']),
    ({'kinds': [{'group': GROUP}]}, 'kinds[0].kind', ['required value']),
    ({'kinds': [{'kind': 'HTTPRoute'}] * 9}, 'kinds', ['Too many: 9', 'at most 8']),
])
def test_allowed_routes_rules(allowed, path, words):
    obj = gateway(dict(HTTP, allowedRoutes=allowed))
    assert_problem(obj, f'spec.listeners[0].allowedRoutes.{path}', *words)


def test_listener_hostnames_follow_the_host_rule():
    for host in ('foo.*.com', '10.0.0.1', 'Foo.com'):
        assert_problem(gateway(dict(HTTP, hostname=host)), 'spec.listeners[0].hostname',
                       f'"{host}"')
    assert_problem(gateway(dict(HTTP, hostname='')), 'spec.listeners[0].hostname',
                   'must not be empty')
    assert_problem(gateway(dict(HTTP, port=0)), 'spec.listeners[0].port', '1-65535')


def test_requested_addresses_are_refused_because_the_lab_assigns_them():
    obj = gateway(addresses=[{'type': 'IPAddress', 'value': '198.51.100.7'}])
    assert_problem(obj, 'spec.addresses', 'not supported by kubelab',
                   'the lab assigns each Gateway its address')
    assert 'addresses' not in validate(gateway(addresses=[]))['spec']


def test_gateway_fields_kubelab_does_not_implement_are_refused():
    assert_problem(gateway(infrastructure={'labels': {'a': 'b'}}), 'spec.infrastructure',
                   'is not supported by kubelab', 'gatewayClassName, listeners')
    assert_problem(gateway(listners=[]), 'spec.listners', 'did you mean "listeners"?')


def test_a_gateway_may_keep_a_status_written_by_its_controller():
    obj = gateway()
    obj['status'] = {'addresses': [{'type': 'IPAddress', 'value': '198.51.100.1'}]}
    assert validate(obj)['status'] == obj['status']


# ================================================================ HTTPRoute

def route(**spec):
    return {'apiVersion': f'{GROUP}/v1', 'kind': 'HTTPRoute',
            'metadata': {'name': 'web', 'namespace': 'shop'},
            'spec': {'parentRefs': [{'name': 'gw'}], **spec}}


def rule(*matches, refs=None, **fields):
    body = {'backendRefs': refs if refs is not None else [{'name': 'web', 'port': 80}],
            **fields}
    if matches:
        body['matches'] = list(matches)
    return body


MATCH = 'spec.rules[0].matches[0]'
DEFAULT_MATCH = {'path': {'type': 'PathPrefix', 'value': '/'}}


def test_an_empty_route_gets_one_rule_that_matches_everything():
    out = validate(route())
    assert out['spec'] == {
        'parentRefs': [{'name': 'gw', 'group': GROUP, 'kind': 'Gateway'}],
        'rules': [{'matches': [DEFAULT_MATCH]}]}


def test_a_route_gets_every_documented_default():
    out = validate(route(hostnames=['shop.example.com', '*.shop.example.com'], rules=[
        rule(),
        rule({'path': {'value': '/api'}, 'method': 'POST'},
             {'headers': [{'name': 'X-Version', 'value': '2'}],
              'queryParams': [{'name': 'debug', 'value': '1'}]},
             refs=[{'name': 'api', 'port': 8080, 'weight': 9},
                   {'name': 'api-canary', 'port': 8080, 'namespace': 'canary'}]),
        rule(matches=[], refs=[])]))
    assert out['spec']['hostnames'] == ['shop.example.com', '*.shop.example.com']
    first, second, third = out['spec']['rules']
    assert first == {'matches': [DEFAULT_MATCH], 'backendRefs': [
        {'name': 'web', 'port': 80, 'group': '', 'kind': 'Service', 'weight': 1}]}
    assert second['matches'] == [
        {'path': {'value': '/api', 'type': 'PathPrefix'}, 'method': 'POST'},
        {'headers': [{'name': 'X-Version', 'value': '2', 'type': 'Exact'}],
         'queryParams': [{'name': 'debug', 'value': '1', 'type': 'Exact'}],
         'path': {'type': 'PathPrefix', 'value': '/'}}]
    assert [(r['weight'], r.get('namespace')) for r in second['backendRefs']] == [
        (9, None), (1, 'canary')]
    assert third == {'matches': [DEFAULT_MATCH], 'backendRefs': []}


def test_parent_refs_get_group_and_kind_and_keep_section_and_port():
    refs = [{'name': 'gw', 'sectionName': 'http'}, {'name': 'gw', 'sectionName': 'https',
                                                    'port': 443, 'namespace': 'infra'}]
    out = validate(route(parentRefs=refs))
    assert out['spec']['parentRefs'] == [
        {'name': 'gw', 'sectionName': 'http', 'group': GROUP, 'kind': 'Gateway'},
        {'name': 'gw', 'sectionName': 'https', 'port': 443, 'namespace': 'infra',
         'group': GROUP, 'kind': 'Gateway'}]
    assert 'parentRefs' not in validate(put(route(), 'spec.parentRefs', None))['spec']


@pytest.mark.parametrize('path_type', ['Prefix', 'regex', 'exact'])
def test_an_unknown_path_match_type_lists_the_valid_ones(path_type):
    obj = route(rules=[rule({'path': {'type': path_type, 'value': '/'}})])
    assert_problem(obj, f'{MATCH}.path.type', f'unsupported value "{path_type}"',
                   'supported: Exact, PathPrefix, RegularExpression')


@pytest.mark.parametrize('value, words', [
    ('api', "value must be an absolute path and start with '/'"),
    ('', "value must be an absolute path and start with '/'"),
    ('/a//b', "must not contain '//'"),
    ('/a/./b', "must not contain '/./'"),
    ('/a/../b', "must not contain '/../'"),
    ('/a%2fb', "must not contain '%2f'"),
    ('/a%2Fb', "must not contain '%2F'"),
    ('/a#b', "must not contain '#'"),
    ('/a/..', "must not end with '/..'"),
    ('/a/.', "must not end with '/.'"),
    ('/a b', 'must only contain valid characters'),
    ('/caf\u00e9', 'must only contain valid characters'),
    ('/a%zz', 'must only contain valid characters'),
])
@pytest.mark.parametrize('path_type', ['Exact', 'PathPrefix'])
def test_exact_and_prefix_path_values_follow_the_crd(value, words, path_type):
    obj = route(rules=[rule({'path': {'type': path_type, 'value': value}})])
    assert_problem(obj, f'{MATCH}.path.value', f'Invalid value: "{value}"', words,
                   "['Exact', 'PathPrefix']")


@pytest.mark.parametrize('value', ['/', '/api/v1', '/a%20b', "/~user/@me/a:b;c=d,e+f!$&'()*"])
def test_path_values_the_crd_accepts(value):
    validate(route(rules=[rule({'path': {'type': 'Exact', 'value': value}})]))


def test_a_path_value_is_at_most_1024_characters():
    obj = route(rules=[rule({'path': {'value': '/' + 'a' * 1024}})])
    assert_problem(obj, f'{MATCH}.path.value', 'Too long', '1024')


def test_regular_expressions_must_compile_and_are_otherwise_free():
    validate(route(rules=[rule({'path': {'type': 'RegularExpression',
                                         'value': '/u/[0-9]+//(a|b)#?'}})]))
    obj = route(rules=[rule({'path': {'type': 'RegularExpression', 'value': '/u/([0-9]+'}})])
    assert_problem(obj, f'{MATCH}.path.value', 'Invalid value: "/u/([0-9]+"',
                   'not a valid regular expression', 'missing )')
    obj = route(rules=[rule({'headers': [{'type': 'RegularExpression', 'name': 'X-V',
                                          'value': '[a-'}]})])
    assert_problem(obj, f'{MATCH}.headers[0].value', 'not a valid regular expression')
    obj = route(rules=[rule({'queryParams': [{'type': 'RegularExpression', 'name': 'q',
                                              'value': '*x'}]})])
    assert_problem(obj, f'{MATCH}.queryParams[0].value', 'not a valid regular expression')


def test_header_matches():
    def headers(*entries):
        return route(rules=[rule({'headers': list(entries)})])
    assert_problem(headers({'name': 'X-Version', 'value': '1'},
                           {'name': 'x-version', 'value': '2'}),
                   f'{MATCH}.headers[1].name', 'Duplicate value: "x-version"',
                   'case-insensitive', f'{MATCH}.headers[0]')
    assert_problem(headers({'name': 'X Version', 'value': '1'}), f'{MATCH}.headers[0].name',
                   'Invalid value: "X Version"', 'HTTP token')
    assert_problem(headers({'name': ':authority', 'value': '1'}),
                   f'{MATCH}.headers[0].name', 'HTTP token')
    assert_problem(headers({'name': 'X-V', 'value': ''}), f'{MATCH}.headers[0].value',
                   'must not be empty')
    assert_problem(headers({'value': '1'}), f'{MATCH}.headers[0].name', 'required value')
    assert_problem(headers({'name': 'X-V'}), f'{MATCH}.headers[0].value', 'required value')
    assert_problem(headers({'name': 'X-V', 'value': 'a', 'type': 'Prefix'}),
                   f'{MATCH}.headers[0].type', 'unsupported value "Prefix"',
                   'Exact, RegularExpression')
    assert_problem(headers({'name': 'X-V', 'value': 'v' * 4097}),
                   f'{MATCH}.headers[0].value', 'Too long', '4096')
    assert_problem(headers(*[{'name': f'X-{i}', 'value': 'v'} for i in range(17)]),
                   f'{MATCH}.headers', 'Too many: 17', 'at most 16')


def test_query_param_matches():
    def params(*entries):
        return route(rules=[rule({'queryParams': list(entries)})])
    assert_problem(params({'name': 'q', 'value': '1'}, {'name': 'q', 'value': '2'}),
                   f'{MATCH}.queryParams[1].name', 'Duplicate value: "q"')
    validate(params({'name': 'q', 'value': '1'}, {'name': 'Q', 'value': '2'}))
    assert_problem(params({'name': 'q', 'value': 'v' * 1025}),
                   f'{MATCH}.queryParams[0].value', 'Too long', '1024')


def test_methods_are_the_http_methods_in_upper_case():
    for method in ('GET', 'PATCH', 'CONNECT'):
        validate(route(rules=[rule({'method': method})]))
    assert_problem(route(rules=[rule({'method': 'get'})]), f'{MATCH}.method',
                   'did you mean "GET"?',
                   'GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH')
    assert_problem(route(rules=[rule({'method': 'PURGE'})]), f'{MATCH}.method',
                   'unsupported value "PURGE"')


@pytest.mark.parametrize('ref, path, words', [
    ({'name': 'web', 'port': 80, 'weight': -1}, 'weight',
     ['-1 is out of range, must be 0-1000000']),
    ({'name': 'web', 'port': 80, 'weight': 1000001}, 'weight', ['must be 0-1000000']),
    ({'name': 'web', 'port': 80, 'weight': '50'}, 'weight', ['must be an integer']),
    ({'name': 'web'}, 'port', ['required value', 'Must have port for Service reference']),
    ({'name': 'web', 'port': 0}, 'port', ['1-65535']),
    ({'port': 80}, 'name', ['required value', 'Service']),
    ({'name': '', 'port': 80}, 'name', ['required value']),
    ({'name': 'web', 'port': 80, 'namespace': 'Shop'}, 'namespace', ['RFC 1123 label']),
    ({'name': 'web', 'port': 80, 'kind': 'ServiceImport',
      'group': 'multicluster.x-k8s.io'}, 'kind',
     ['ServiceImport (group "multicluster.x-k8s.io") is not supported by kubelab',
      'supported: Service (group "")']),
    ({'name': 'web', 'port': 80, 'group': 'core'}, 'kind', ['Service (group "core")',
                                                            'not supported']),
    ({'name': 'web', 'port': 80, 'filters': [{'type': 'RequestHeaderModifier'}]},
     'filters', ['filters (RequestHeaderModifier) are not supported by kubelab yet']),
    ({'name': 'web', 'port': 80, 'weigth': 5}, 'weigth', ['did you mean "weight"?']),
])
def test_backend_ref_rules(ref, path, words):
    obj = route(rules=[rule(refs=[ref])])
    assert_problem(obj, f'spec.rules[0].backendRefs[0].{path}', *words)


def test_a_zero_weight_is_valid():
    out = validate(route(rules=[rule(refs=[{'name': 'web', 'port': 80, 'weight': 0}])]))
    assert out['spec']['rules'][0]['backendRefs'][0]['weight'] == 0


def test_filters_and_timeouts_are_refused_because_the_data_plane_would_ignore_them():
    obj = route(rules=[rule(filters=[{'type': 'RequestRedirect',
                                      'requestRedirect': {'scheme': 'https'}},
                                     {'type': 'URLRewrite'}])])
    assert_problem(obj, 'spec.rules[0].filters',
                   'filters (RequestRedirect, URLRewrite) are not supported by kubelab yet',
                   'leave filters out')
    obj = route(rules=[rule(timeouts={'request': '10s'})])
    assert_problem(obj, 'spec.rules[0].timeouts', 'not supported by kubelab yet')
    obj = route(rules=[rule(retry={'attempts': 2})])
    assert_problem(obj, 'spec.rules[0].retry', 'is not supported by kubelab')
    validate(route(rules=[rule(filters=[], timeouts={})]))


@pytest.mark.parametrize('ref, path, words', [
    ({'name': 'mesh', 'kind': 'Service', 'group': ''}, 'kind',
     ['Service (group "") is not supported by kubelab as a parent', 'no service mesh',
      'supported: Gateway (group "gateway.networking.k8s.io")']),
    ({'kind': 'Gateway'}, 'name', ['required value', 'Gateway']),
    ({'name': 'gw', 'sectionName': 'HTTP'}, 'sectionName', ['RFC 1123 subdomain']),
    ({'name': 'gw', 'port': 70000}, 'port', ['1-65535']),
    ({'name': 'gw', 'namespace': 'in_fra'}, 'namespace', ['RFC 1123 label']),
])
def test_parent_ref_rules(ref, path, words):
    assert_problem(route(parentRefs=[ref]), f'spec.parentRefs[0].{path}', *words)


def test_two_references_to_one_parent_need_distinct_section_names():
    obj = route(parentRefs=[{'name': 'gw'}, {'name': 'gw'}])
    assert_problem(obj, 'spec.parentRefs[1]', 'sectionName must be unique when parentRefs '
                   'includes 2 or more references to the same parent')
    obj = route(parentRefs=[{'name': 'gw', 'sectionName': 'a'},
                            {'name': 'gw', 'sectionName': 'a'}])
    assert_problem(obj, 'spec.parentRefs[1].sectionName', 'sectionName must be unique')
    obj = route(parentRefs=[{'name': 'gw'}, {'name': 'gw', 'sectionName': 'a'}])
    assert_problem(obj, 'spec.parentRefs[1].sectionName', 'sectionName must be specified '
                   'when parentRefs includes 2 or more references to the same parent')
    # Another namespace (as the CRD compares it) is another parent.
    validate(route(parentRefs=[{'name': 'gw'}, {'name': 'gw', 'namespace': 'infra'}]))


@pytest.mark.parametrize('host, words', [
    ('*', ["must start with '*.'"]),
    ('foo.*.com', ['whole first label']),
    ('192.0.2.1', ['not an IP address']),
    ('', ['must not be empty']),
    ('Shop.example.com', ['lowercase RFC 1123']),
])
def test_route_hostnames_follow_the_host_rule(host, words):
    assert_problem(route(hostnames=['ok.example.com', host]), 'spec.hostnames[1]', *words)


def test_route_limits():
    assert_problem(route(hostnames=[f'h{i}.example.com' for i in range(17)]),
                   'spec.hostnames', 'Too many: 17', 'at most 16')
    assert_problem(route(rules=[rule()] * 17), 'spec.rules', 'Too many: 17',
                   'at most 16')
    assert_problem(route(rules=[rule(*[{'method': 'GET'}] * 65)]),
                   'spec.rules[0].matches', 'Too many: 65', 'at most 64')
    assert_problem(route(rules=[rule(*[{'method': 'GET'}] * 60)] * 3), 'spec.rules',
                   '180 matches', 'must be less than 128')
    assert_problem(route(rules=[rule(refs=[{'name': 'w', 'port': 80}] * 17)]),
                   'spec.rules[0].backendRefs', 'Too many: 17')
    assert_problem(route(parentRefs=[{'name': f'gw{i}'} for i in range(33)]),
                   'spec.parentRefs', 'Too many: 33', 'at most 32')


def test_rule_names_are_unique_section_names():
    obj = route(rules=[rule(name='main'), rule(name='main')])
    assert_problem(obj, 'spec.rules[1].name', 'Duplicate value: "main"',
                   'Rule name must be unique within the route')
    assert_problem(route(rules=[rule(name='Main')]), 'spec.rules[0].name',
                   'RFC 1123 subdomain')


def test_a_route_needs_a_spec():
    obj = route()
    del obj['spec']
    assert_problem(obj, 'spec', 'required value')


# ================================================================ the store

@pytest.fixture
def store():
    store = Store(default_cluster())
    store.apply([{'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'shop'}}])
    return store


def l7_objects():
    tls = secret(type='kubernetes.io/tls', stringData={'tls.crt': 'C', 'tls.key': 'K'})
    tls['metadata']['namespace'] = 'shop'
    ing = ingress(ingressClassName='nginx')
    ing['metadata']['namespace'] = 'shop'
    return [ingress_class(), gateway_class(), tls, ing, gateway(HTTP, HTTPS), route()]


def test_the_store_keeps_every_kind_with_kubectls_references(store):
    out = store.apply(l7_objects())
    assert out['results'] == [
        ['ingressclass.networking.k8s.io/nginx', 'created'],
        ['gatewayclass.gateway.networking.k8s.io/kubelab', 'created'],
        ['secret/web-tls', 'created'],
        ['ingress.networking.k8s.io/web', 'created'],
        ['gateway.gateway.networking.k8s.io/gw', 'created'],
        ['httproute.gateway.networking.k8s.io/web', 'created']]
    assert out['warnings'] == []
    assert store.get('IngressClass', None, 'nginx')['spec']['controller'] == \
        'k8s.io/ingress-nginx'
    assert [o['metadata']['name'] for o in store.list('GatewayClass')] == ['kubelab']
    assert store.get('HTTPRoute', 'shop', 'web')['spec']['rules'] == \
        [{'matches': [DEFAULT_MATCH]}]
    # Statuses start empty for the controllers to fill; Secrets and IngressClasses have none.
    assert store.get('Ingress', 'shop', 'web')['status'] == {}
    assert store.get('Gateway', 'shop', 'gw')['status'] == {}
    assert 'status' not in store.get('Secret', 'shop', 'web-tls')
    assert 'status' not in store.get('IngressClass', None, 'nginx')
    # Applying the same again changes nothing.
    assert {action for _, action in store.apply(l7_objects())['results']} == {'unchanged'}


def test_what_the_store_holds_validates_again_as_kubectl_get_o_yaml_would(store):
    store.apply(l7_objects())
    for kind in ('IngressClass', 'GatewayClass', 'Secret', 'Ingress', 'Gateway',
                 'HTTPRoute'):
        for obj in store.list(kind):
            again = validate(obj)
            assert {k: v for k, v in again.items() if k != 'metadata'} == \
                {k: v for k, v in obj.items() if k != 'metadata'}


def test_cluster_scoped_kinds_need_no_namespace_and_namespaced_ones_need_theirs(store):
    cls = ingress_class()
    cls['metadata']['namespace'] = 'nowhere'
    store.apply([cls])
    assert store.get('IngressClass', None, 'nginx')['metadata'].get('namespace') is None
    ing = ingress()
    ing['metadata']['namespace'] = 'nowhere'
    with pytest.raises(ApplyError, match='namespace "nowhere" not found'):
        store.apply([ing])


def test_not_found_names_the_resource_as_kubectl_does(store):
    with pytest.raises(NotFound, match='ingresses.networking.k8s.io "web" not found in '
                                       'namespace "shop"'):
        store.get('Ingress', 'shop', 'web')
    with pytest.raises(NotFound, match='^gatewayclasses.gateway.networking.k8s.io "x" '
                                       'not found$'):
        store.delete('GatewayClass', None, 'x')
    with pytest.raises(NotFound, match='^secrets "x"'):
        store.get('Secret', 'default', 'x')


def test_deleting_a_namespace_deletes_its_l7_objects_but_not_the_classes(store):
    store.apply(l7_objects())
    store.delete('Namespace', None, 'shop')
    for kind in ('Secret', 'Ingress', 'Gateway', 'HTTPRoute'):
        assert store.list(kind) == []
    assert len(store.list('IngressClass')) == len(store.list('GatewayClass')) == 1


def test_a_secret_update_replaces_its_data(store):
    store.apply([secret(stringData={'a': '1', 'b': '2'})])
    out = store.apply([secret(stringData={'a': '3'})])
    assert out['results'] == [['secret/web-tls', 'configured']]
    assert store.get('Secret', 'default', 'web-tls')['data'] == {'a': b64('3')}
    store.apply([secret()])
    assert 'data' not in store.get('Secret', 'default', 'web-tls')


def test_a_secrets_type_cannot_change(store):
    store.apply([secret(stringData={'tls.crt': 'C', 'tls.key': 'K'})])
    with pytest.raises(ApplyError) as info:
        store.apply([secret(type='kubernetes.io/tls',
                            stringData={'tls.crt': 'C', 'tls.key': 'K'})])
    assert [(e.path, e.message.split(':')[0]) for e in info.value.errors] == [
        ('type', 'Invalid value')]
    assert 'field is immutable' in str(info.value)


def test_an_immutable_secret_keeps_its_data_and_stays_immutable(store):
    store.apply([secret(stringData={'a': '1'}, immutable=True)])
    before = store.snapshot()
    with pytest.raises(ApplyError, match=r'data: Forbidden: field is immutable when '
                                         r'`immutable` is set'):
        store.apply([secret(stringData={'a': '2'}, immutable=True)])
    with pytest.raises(ApplyError, match=r'immutable: Forbidden'):
        store.apply([secret(stringData={'a': '1'}, immutable=False)])
    assert store.snapshot() == before
    labelled = secret(stringData={'a': '1'}, immutable=True)
    labelled['metadata']['labels'] = {'team': 'shop'}
    assert store.apply([labelled])['results'] == [['secret/web-tls', 'configured']]
    store.delete('Secret', 'default', 'web-tls')              # deleting is allowed


def test_class_controllers_are_immutable(store):
    store.apply([ingress_class(), gateway_class()])
    with pytest.raises(ApplyError, match=r'spec.controller: Invalid value: "example.com/x": '
                                         r'field is immutable'):
        store.apply([put(ingress_class(), 'spec.controller', 'example.com/x')])
    with pytest.raises(ApplyError, match=r'spec.controllerName: .*Value is immutable'):
        store.apply([put(gateway_class(), 'spec.controllerName', 'example.com/x')])
    store.apply([put(gateway_class(), 'spec.description', 'now described')])


def test_an_update_keeps_the_status_the_controllers_wrote(store):
    store.apply(l7_objects())
    gw = store.objects[('Gateway', 'shop', 'gw')]
    gw['status'] = {'addresses': [{'type': 'IPAddress', 'value': '198.51.100.9'}]}
    changed = gateway(HTTP)
    changed['status'] = {'conditions': [{'type': 'Programmed', 'status': 'True'}]}
    assert store.apply([changed])['results'] == [
        ['gateway.gateway.networking.k8s.io/gw', 'configured']]
    stored = store.get('Gateway', 'shop', 'gw')
    assert stored['status'] == gw['status']
    assert len(stored['spec']['listeners']) == 1


def test_a_bad_object_rejects_the_whole_apply(store):
    before = store.snapshot()
    bad = route(rules=[rule(filters=[{'type': 'RequestRedirect'}])])
    with pytest.raises(ApplyError) as info:
        store.apply(l7_objects()[:-1] + [bad])
    assert [e.path for e in info.value.errors] == ['spec.rules[0].filters']
    assert store.snapshot() == before


# ================================================================ the API server, the CLI

def test_the_api_server_serves_the_new_kinds_unchanged(store, tmp_path):
    from services import transport
    server = APIServer(store, 't', lambda: {}, on_shutdown=lambda: None,
                       path=str(tmp_path / 'api.sock'))
    server.start()
    try:
        def get(query):
            code, raw = transport.request(server.path, 'GET', f'/lab/v1/objects?{query}',
                                          headers={'Authorization': 'Bearer t'})
            assert code == 200
            return json.loads(raw)
        store.apply(l7_objects())
        assert get('kind=IngressClass&name=nginx')['metadata']['name'] == 'nginx'
        assert [o['metadata']['name'] for o in get('kind=HTTPRoute&namespace=shop')
                ['items']] == ['web']
    finally:
        server.stop()


class FakeClient:
    """The CLI's view of a lab: a store behind the API the CLI calls."""

    def __init__(self, store):
        self.store = store

    def list(self, kind, namespace=None):
        return self.store.list(kind, namespace)

    def get(self, kind, namespace, name):
        return self.store.get(kind, namespace, name)

    def delete(self, kind, namespace, name, grace=None):
        return {'message': self.store.delete(kind, namespace, name, grace)}

    def wait_for(self, predicate, what, timeout=30, interval=0.1):
        assert predicate(), what          # kubelab delete waits: these go at once

    def wait_dataplane(self, timeout=10):
        return 0.0


@pytest.fixture
def lab(store, monkeypatch):
    store.apply(l7_objects())
    monkeypatch.setattr(cli_objects, 'Client', lambda: FakeClient(store))
    return store


@pytest.mark.parametrize('argv, first_column', [
    ('get ing -n shop', ['NAME', 'web']),
    ('get ingressclass', ['NAME', 'nginx']),
    ('get secrets -n shop', ['NAME', 'web-tls']),
    ('get gc', ['NAME', 'kubelab']),
    ('get gtw -n shop', ['NAME', 'gw']),
    ('get httproutes -n shop', ['NAME', 'web']),
    ('get ingressclasses -n shop', ['NAME', 'nginx']),      # cluster-scoped: -n ignored
    ('get httproute -A', ['NAMESPACE', 'shop']),
])
def test_kubelab_get_lists_the_new_kinds(lab, capsys, argv, first_column):
    assert cli.main(argv.split()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == first_column


def test_kubelab_get_by_name_and_as_names(lab, capsys):
    assert cli.main(['get', 'secret', 'web-tls', '-n', 'shop', '-o', 'json']) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc['kind'] == 'Secret' and doc['data']['tls.key'] == b64('K')
    assert cli.main(['get', 'gatewayclass', '-o', 'name']) == 0
    assert capsys.readouterr().out == 'gatewayclass.gateway.networking.k8s.io/kubelab\n'


def test_kubelab_delete_finds_cluster_scoped_and_namespaced_objects(lab, capsys):
    assert cli.main(['delete', 'ingressclass', 'nginx', '-n', 'shop']) == 0
    assert cli.main(['delete', 'httproute/web', '-n', 'shop']) == 0
    assert cli.main(['delete', 'gc', 'kubelab']) == 0
    assert capsys.readouterr().out.splitlines() == [
        'ingressclass "nginx" deleted', 'httproute "web" deleted',
        'gatewayclass "kubelab" deleted']
    assert lab.list('IngressClass') == lab.list('HTTPRoute') == lab.list('GatewayClass') \
        == []
    assert cli.main(['delete', 'ing', 'nope', '-n', 'shop']) == 1
    assert 'ingresses.networking.k8s.io "nope" not found' in capsys.readouterr().err


def test_every_printable_kind_can_be_listed_and_deleted():
    # hosts: the cluster file's; endpoints: derived from the EndpointSlices.
    assert set(cli_objects.STORE_KIND) == set(KIND_ALIASES) - {'hosts', 'endpoints'}
    assert set(cli_objects.DELETE_KINDS) == set(cli_objects.STORE_KIND) - {'nodes'}


# ================================================================ printers

def meta(name, namespace='default', **extra):
    return {'name': name, 'namespace': namespace, 'creationTimestamp': CREATED, **extra}


def table(*lines):
    return '\n'.join(lines)


@pytest.mark.parametrize('word, kind', [
    ('ing', 'ingresses'), ('ingress', 'ingresses'), ('Ingresses', 'ingresses'),
    ('ingressclass', 'ingressclasses'), ('ingressclasses', 'ingressclasses'),
    ('secret', 'secrets'), ('secrets', 'secrets'),
    ('gc', 'gatewayclasses'), ('gatewayclass', 'gatewayclasses'),
    ('gtw', 'gateways'), ('gateway', 'gateways'), ('gateways', 'gateways'),
    ('httproute', 'httproutes'), ('httproutes', 'httproutes'),
])
def test_kind_aliases(word, kind):
    assert kind_alias(word) == kind


def ing(name, rules=(), tls=None, class_name=None, addresses=()):
    spec = {'rules': [dict(r) for r in rules]}
    if class_name is not None:
        spec['ingressClassName'] = class_name
    if tls:
        spec['tls'] = tls
    status = {'loadBalancer': {'ingress': [dict(a) for a in addresses]}}
    return {'apiVersion': 'networking.k8s.io/v1', 'kind': 'Ingress',
            'metadata': meta(name), 'spec': spec, 'status': status}


INGRESSES = [
    ing('web', [{'host': 'web.example.com'}, {'host': 'api.example.com'}],
        tls=[{'hosts': ['web.example.com']}], class_name='nginx',
        addresses=[{'ip': '198.51.100.1'}]),
    ing('catch-all', [{}]),
    ing('many', [{'host': f'h{i}.com'} for i in range(5)],
        addresses=[{'ip': '198.51.100.21'}, {'hostname': 'lb.example.com'},
                   {'ip': '198.51.100.20'}, {'ip': '198.51.100.20'}]),
]


def test_ingresses_table():
    assert render('ingresses', INGRESSES, None, NOW) == table(
        'NAME        CLASS    HOSTS                              ADDRESS            '
        'PORTS     AGE',
        'web         nginx    web.example.com,api.example.com    198.51.100.1       '
        '80, 443   5m12s',
        'catch-all   <none>   *                                                     '
        '80        5m12s',
        'many        <none>   h0.com,h1.com,h2.com + 2 more...   198.51.100.20...   '
        '80        5m12s')


def test_ingress_address_is_whole_when_wide():
    out = render('ing', INGRESSES[2:], 'wide', NOW).splitlines()[1]
    assert '198.51.100.20,198.51.100.21,lb.example.com' in out


def test_ingress_hosts_count_every_further_rule_as_kubectl_does():
    rules = [{'host': 'a.com'}, {}, {'host': 'b.com'}, {'host': 'c.com'}, {}]
    out = render('ing', [ing('x', rules)], None, NOW).splitlines()[1]
    assert 'a.com,b.com,c.com + 2 more...' in out
    exactly_three = [{'host': 'a.com'}, {'host': 'b.com'}, {'host': 'c.com'}]
    out = render('ing', [ing('x', exactly_three)], None, NOW).splitlines()[1]
    assert 'a.com,b.com,c.com ' in out and 'more' not in out


def test_ingressclasses_table():
    classes = [
        {'metadata': meta('nginx', None), 'spec': {'controller': 'k8s.io/ingress-nginx'}},
        {'metadata': meta('custom', None), 'spec': {
            'controller': 'example.com/ingress',
            'parameters': {'apiGroup': 'k8s.example.com', 'kind': 'IngressParameters',
                           'name': 'external-lb', 'scope': 'Cluster'}}},
        {'metadata': meta('core', None), 'spec': {
            'controller': 'example.com/ingress',
            'parameters': {'kind': 'ConfigMap', 'name': 'cfg'}}},
    ]
    assert render('ingressclass', classes, None, NOW) == table(
        'NAME     CONTROLLER             PARAMETERS                                      AGE',
        'nginx    k8s.io/ingress-nginx   <none>                                          5m12s',
        'custom   example.com/ingress    IngressParameters.k8s.example.com/external-lb   5m12s',
        'core     example.com/ingress    ConfigMap/cfg                                   5m12s')


def test_secrets_table_shows_counts_never_values():
    secrets = [
        {'metadata': meta('web-tls'), 'type': 'kubernetes.io/tls',
         'data': {'tls.crt': b64('CERTIFICATE'), 'tls.key': b64('PRIVATE-KEY')}},
        {'metadata': meta('empty'), 'type': 'Opaque'},
    ]
    out = render('secrets', secrets, None, NOW)
    assert out == table(
        'NAME      TYPE                DATA   AGE',
        'web-tls   kubernetes.io/tls   2      5m12s',
        'empty     Opaque              0      5m12s')
    for text in ('CERTIFICATE', 'PRIVATE-KEY', b64('CERTIFICATE'), b64('PRIVATE-KEY')):
        assert text not in out
        assert text not in render('secrets', secrets, 'wide', NOW)
    # -o json/yaml print the object, base64 data included, as kubectl does.
    assert json.loads(render('secret', secrets[:1], 'json', NOW, single=True)) == secrets[0]


def test_gatewayclasses_table_and_wide_description():
    classes = [
        {'metadata': meta('nginx', None),
         'spec': {'controllerName': 'kubelab.io/gateway-controller',
                  'description': 'one nginx per Gateway'},
         'status': {'conditions': [{'type': 'Accepted', 'status': 'True'}]}},
        {'metadata': meta('other', None),
         'spec': {'controllerName': 'example.net/gateway-controller'}},
    ]
    assert render('gc', classes, None, NOW) == table(
        'NAME    CONTROLLER                       ACCEPTED   AGE',
        'nginx   kubelab.io/gateway-controller    True       5m12s',
        'other   example.net/gateway-controller   Unknown    5m12s')
    wide = render('gc', classes, 'wide', NOW).splitlines()
    assert wide[0].split() == ['NAME', 'CONTROLLER', 'ACCEPTED', 'AGE', 'DESCRIPTION']
    assert wide[1].endswith('5m12s   one nginx per Gateway')
    assert render('gc', [], None, NOW) == 'No resources found'


def test_gateways_table():
    gateways = [
        {'metadata': meta('gw'), 'spec': {'gatewayClassName': 'nginx'},
         'status': {'addresses': [{'type': 'IPAddress', 'value': '198.51.100.3'},
                                  {'type': 'IPAddress', 'value': '198.51.100.4'}],
                    'conditions': [{'type': 'Accepted', 'status': 'True'},
                                   {'type': 'Programmed', 'status': 'True'}]}},
        {'metadata': meta('pending'), 'spec': {'gatewayClassName': 'nginx'},
         'status': {}},
        {'metadata': meta('broken'), 'spec': {'gatewayClassName': 'none'},
         'status': {'conditions': [{'type': 'Programmed', 'status': 'False'}]}},
    ]
    assert render('gtw', gateways, None, NOW) == table(
        'NAME      CLASS   ADDRESS        PROGRAMMED   AGE',
        'gw        nginx   198.51.100.3   True         5m12s',
        'pending   nginx                  Unknown      5m12s',
        'broken    none                   False        5m12s')


def test_httproutes_table_prints_hostnames_as_a_json_list():
    routes = [
        {'metadata': meta('web'), 'spec': {'hostnames': ['foo.com', 'bar.com']}},
        {'metadata': meta('any'), 'spec': {}},
        {'metadata': meta('wild'), 'spec': {'hostnames': ['*.example.com']}},
    ]
    assert render('httproute', routes, None, NOW) == table(
        'NAME   HOSTNAMES               AGE',
        'web    ["foo.com","bar.com"]   5m12s',
        'any                            5m12s',
        'wild   ["*.example.com"]       5m12s')


@pytest.mark.parametrize('kind, obj, name', [
    ('ingresses', {'metadata': {'name': 'web'}}, 'ingress.networking.k8s.io/web'),
    ('ingressclasses', {'metadata': {'name': 'nginx'}},
     'ingressclass.networking.k8s.io/nginx'),
    ('secrets', {'metadata': {'name': 's'}}, 'secret/s'),
    ('gatewayclasses', {'metadata': {'name': 'gc'}},
     'gatewayclass.gateway.networking.k8s.io/gc'),
    ('gateways', {'metadata': {'name': 'gw'}}, 'gateway.gateway.networking.k8s.io/gw'),
    ('httproutes', {'metadata': {'name': 'r'}}, 'httproute.gateway.networking.k8s.io/r'),
])
def test_name_output_uses_the_api_group(kind, obj, name):
    assert render(kind, [obj], 'name', NOW) == name


@pytest.mark.parametrize('kind, message', [
    ('ingresses', 'No resources found in shop namespace.'),
    ('secrets', 'No resources found in shop namespace.'),
    ('gateways', 'No resources found in shop namespace.'),
    ('httproutes', 'No resources found in shop namespace.'),
    ('ingressclasses', 'No resources found'),
    ('gatewayclasses', 'No resources found'),
])
def test_empty_lists_name_the_namespace_unless_cluster_scoped(kind, message):
    assert render(kind, [], None, NOW, namespace='shop') == message


def test_cluster_scoped_tables_get_no_namespace_column():
    out = render('ingressclasses', [{'metadata': meta('nginx', None), 'spec': {
        'controller': 'k8s.io/ingress-nginx'}}], None, NOW, all_namespaces=True)
    assert out.splitlines()[0].split()[0] == 'NAME'
    out = render('secrets', [{'metadata': meta('s', 'shop'), 'type': 'Opaque'}], None, NOW,
                 all_namespaces=True)
    assert out.splitlines()[1].split()[:2] == ['shop', 's']
