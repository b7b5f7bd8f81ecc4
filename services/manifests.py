"""Kubernetes manifests: YAML loading, validation and normalisation.

``load_documents`` turns a (multi-document) YAML file into objects; a YAML
syntax error is a ``ValidationError`` with the line, never an empty result.
``validate`` checks one object and returns a normalised deep copy with the
defaults Kubernetes would fill (``namespace: default``, ``protocol: TCP``,
``targetPort`` = ``port`` ...); all problems of the object are raised together
as an ``ApplyError``. Per-kind rules live in ``validate_<kind>.py``; the
shared checker and name rules in ``validate_common.py``.

Supported objects (``SUPPORTED_KINDS``): ``v1`` Pod, Service, Namespace;
``apps/v1`` Deployment; ``discovery.k8s.io/v1`` EndpointSlice.
"""

import copy

import yaml

from services.errors import ApplyError, ValidationError
from services.validate_common import (
    Checker, choices, describe, dns1035_label_problem, dns1123_label_problem,
    dns1123_subdomain_problem, suggestion)
from services.validate_deployment import validate_deployment
from services.validate_endpointslice import validate_endpointslice
from services.validate_pod import validate_pod_spec
from services.validate_service import validate_service

METADATA_FIELDS = ('name', 'namespace', 'labels', 'annotations')
#: Set by the API server (present in ``kubectl get -o yaml`` output): ignored.
IGNORED_METADATA_FIELDS = ('creationTimestamp', 'deletionGracePeriodSeconds',
                           'deletionTimestamp', 'finalizers', 'generateName',
                           'generation', 'managedFields', 'ownerReferences',
                           'resourceVersion', 'selfLink', 'uid')
POD_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
NAMESPACE_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
DEFAULT_NAMESPACE = 'default'
#: Kinds a later kubelab version will accept.
LATER_KINDS = ('Gateway', 'HTTPRoute', 'Ingress')


def _validate_pod(chk: Checker, obj: dict) -> None:
    chk.known_fields(obj, '', POD_FIELDS)
    spec = chk.mapping(obj, 'spec', '', required=True)
    if spec is not None:
        validate_pod_spec(chk, spec, 'spec')


def _validate_namespace(chk: Checker, obj: dict) -> None:
    chk.known_fields(obj, '', NAMESPACE_FIELDS)
    spec = chk.mapping(obj, 'spec', '')
    if spec is not None:
        chk.known_fields(spec, 'spec', ('finalizers',))


#: kind -> (apiVersion, name rule, namespaced, validator)
SUPPORTED_KINDS = {
    'Pod': ('v1', dns1123_subdomain_problem, True, _validate_pod),
    'Service': ('v1', dns1035_label_problem, True, validate_service),
    'Namespace': ('v1', dns1123_label_problem, False, _validate_namespace),
    'Deployment': ('apps/v1', dns1123_subdomain_problem, True,
                   validate_deployment),
    'EndpointSlice': ('discovery.k8s.io/v1', dns1123_subdomain_problem, True,
                      validate_endpointslice),
}


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (as kubectl does) and keeps
    timestamps as strings (as JSON would)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == 'tag:yaml.org,2002:merge' or \
                        not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f'mapping key "{key}" already defined at line '
                        f'{seen[key] + 1}', key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_Loader.add_constructor('tag:yaml.org,2002:timestamp',
                        yaml.SafeLoader.construct_yaml_str)


def yaml_problem(exc: yaml.YAMLError, source: str) -> ValidationError:
    """A YAML syntax error as a ValidationError naming the line."""
    mark = getattr(exc, 'problem_mark', None) or \
        getattr(exc, 'context_mark', None)
    problem = getattr(exc, 'problem', None) or str(exc)
    context = getattr(exc, 'context', None)
    if context:
        context_mark = getattr(exc, 'context_mark', None)
        if context_mark is not None and mark is not None and \
                context_mark.line != mark.line:
            context += f' at line {context_mark.line + 1}'
        problem = f'{problem} ({context})'
    hint = ''
    if "'\\t'" in problem:
        hint = '; YAML does not allow tabs for indentation, use spaces'
    if mark is None:
        return ValidationError(source, '', f'invalid YAML: {problem}{hint}')
    return ValidationError(source, f'line {mark.line + 1}',
                           f'{problem} (column {mark.column + 1}){hint}')


def parse_yaml(text: str, source: str) -> list[tuple[int, object]]:
    """Every YAML document of ``text`` as ``(first line, data)``."""
    loader = _Loader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            documents.append((node.start_mark.line + 1,
                              loader.construct_document(node)))
    except yaml.YAMLError as exc:
        raise yaml_problem(exc, source) from None
    finally:
        loader.dispose()
    return documents


def load_documents(text: str, source: str) -> list[dict]:
    """The Kubernetes objects of a YAML file (``kind: List`` is expanded)."""
    objects: list[dict] = []
    for line, data in parse_yaml(text, source):
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ValidationError(source, f'line {line}',
                                  f'a document must be a Kubernetes object '
                                  f'(a mapping), got {describe(data)}')
        if data.get('kind') == 'List' and 'items' in data:
            items = data.get('items') or []
            if not isinstance(items, list):
                raise ValidationError(source, f'line {line}',
                                      f'items: must be a list, got '
                                      f'{describe(items)}')
            for index, item in enumerate(items):
                if not isinstance(item, dict):
                    raise ValidationError(
                        source, f'line {line}',
                        f'items[{index}]: must be a Kubernetes object '
                        f'(a mapping), got {describe(item)}')
                objects.append(item)
        else:
            objects.append(data)
    if not objects:
        raise ValidationError(source, '', 'no Kubernetes objects found')
    return objects


def _text(value, fallback: str) -> str:
    return value if isinstance(value, str) and value else fallback


def key(obj: dict) -> tuple[str, str, str]:
    """``(kind, namespace, name)``; namespace is '' for Namespaces."""
    kind = _text(obj.get('kind'), '<no kind>')
    meta = obj.get('metadata')
    meta = meta if isinstance(meta, dict) else {}
    name = _text(meta.get('name'), '<no name>')
    if kind == 'Namespace':
        return kind, '', name
    return kind, _text(meta.get('namespace'), DEFAULT_NAMESPACE), name


def object_ref(obj: dict) -> str:
    """``Service default/web`` (``Namespace dev`` when cluster-scoped)."""
    kind, namespace, name = key(obj)
    return f'{kind} {namespace}/{name}' if namespace else f'{kind} {name}'


def _metadata(chk: Checker, meta: dict, name_rule, namespaced: bool) -> None:
    chk.known_fields(meta, 'metadata', METADATA_FIELDS,
                     IGNORED_METADATA_FIELDS)
    name = chk.string(meta, 'name', 'metadata', required=True)
    if name is not None:
        chk.name(name, 'metadata.name', name_rule)
    if namespaced:
        namespace = chk.string(meta, 'namespace', 'metadata',
                               default=DEFAULT_NAMESPACE)
        if namespace is not None:
            chk.name(namespace, 'metadata.namespace', dns1123_label_problem)
    else:
        meta.pop('namespace', None)
    chk.string_map(meta, 'labels', 'metadata', labels=True)
    chk.string_map(meta, 'annotations', 'metadata', labels=False)


def validate(obj: dict) -> dict:
    """A normalised deep copy of ``obj``; ``ApplyError`` with all problems."""
    if not isinstance(obj, dict):
        raise ApplyError([ValidationError(
            '<object>', '', f'must be a Kubernetes object (a mapping), got '
                            f'{describe(obj)}')])
    obj = copy.deepcopy(obj)
    chk = Checker(object_ref(obj))
    kind = obj.get('kind')
    supported = choices(sorted(SUPPORTED_KINDS))
    if not isinstance(kind, str) or not kind:
        chk.error('kind', f'required value (a string); supported kinds: '
                          f'{supported}')
        raise ApplyError(chk.errors)
    if kind not in SUPPORTED_KINDS:
        later = ' yet' if kind in LATER_KINDS else ''
        hint = suggestion(kind, SUPPORTED_KINDS) or ';'
        chk.error('kind', f'"{kind}" is not supported{later}{hint} '
                          f'supported kinds: {supported}')
        raise ApplyError(chk.errors)
    api_version, name_rule, namespaced, validator = SUPPORTED_KINDS[kind]
    given = obj.get('apiVersion')
    if given is None:
        chk.error('apiVersion', f'required value; {kind} is {api_version}')
    elif given != api_version:
        chk.error('apiVersion', f'"{given}" is not the API version of {kind}; '
                                f'use {api_version}')
    meta = chk.mapping(obj, 'metadata', '', required=True)
    if meta is not None:
        _metadata(chk, meta, name_rule, namespaced)
    validator(chk, obj)
    if chk.errors:
        raise ApplyError(chk.errors)
    return obj
