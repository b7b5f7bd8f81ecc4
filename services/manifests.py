"""Kubernetes manifests: YAML loading, validation and normalisation.

``load_documents`` turns a (multi-document) YAML file into objects; a YAML
syntax error is a ``ValidationError`` with the line, never an empty result.
The objects must survive the trip to the API server as JSON, so the loader
also refuses, with the line, what JSON cannot carry or what would exhaust the
lab: tags without a JSON type (``!!binary``, ``!!set``), recursive aliases,
alias bombs, nesting deeper than ``MAX_DEPTH``, absurdly long integers, lone
surrogates, control characters, and sizes counted in bytes: a file larger than
``MAX_REQUEST_BYTES`` (the API server's request limit) before it is parsed, a
document larger than ``MAX_OBJECT_BYTES`` (etcd's object limit) once its aliases are
expanded, so that a small file cannot unfold into hundreds of megabytes.

``validate`` checks one object and returns a normalised deep copy with the
defaults Kubernetes would fill (``namespace: default``, ``protocol: TCP``,
``targetPort`` = ``port`` ...) and without the metadata the API server sets
itself (``uid``, ``deletionTimestamp`` ... of ``kubectl get -o yaml``
output); all problems of the object are raised together as an
``ApplyError``. Per-kind rules live in ``validate_<kind>.py``; the shared
checker and name rules in ``validate_common.py``.

Supported objects (``SUPPORTED_KINDS``): ``v1`` Pod, Service, Namespace,
Secret, ConfigMap; ``apps/v1`` Deployment; ``discovery.k8s.io/v1`` EndpointSlice;
``networking.k8s.io/v1`` Ingress, IngressClass, NetworkPolicy;
``gateway.networking.k8s.io/v1`` GatewayClass, Gateway, HTTPRoute;
``metallb.io/v1beta1`` IPAddressPool, L2Advertisement (the store refuses them
when MetalLB is not installed). Namespace, IngressClass and GatewayClass are
cluster-scoped (``namespaced``). A Namespace always carries the label
``kubernetes.io/metadata.name`` with its own name, as the API server sets it
(NetworkPolicy's namespaceSelector relies on it). ``update_problems`` holds the rules the
API server applies only when an object replaces an existing one (immutable
fields).
"""

import copy
import os

import yaml

from services.errors import ApplyError, KubelabError, ValidationError
from services.validation.common import (
    Checker, choices, describe, dns1035_label_problem, dns1123_label_problem,
    dns1123_subdomain_problem, suggestion)
from services.validation.configmap import validate_configmap, validate_configmap_update
from services.validation.deployment import validate_deployment
from services.validation.endpointslice import validate_endpointslice
from services.validation.gateway import (
    validate_gateway, validate_gateway_class, validate_gateway_class_update)
from services.validation.httproute import validate_httproute
from services.validation.ingress import (
    validate_ingress, validate_ingress_class, validate_ingress_class_update)
from services.validation.metallb import validate_ipaddresspool, validate_l2advertisement
from services.validation.networkpolicy import validate_networkpolicy
from services.validation.pod import validate_pod_spec
from services.validation.secret import validate_secret, validate_secret_update
from services.validation.service import validate_service

METADATA_FIELDS = ('name', 'namespace', 'labels', 'annotations')
#: Set by the API server (present in ``kubectl get -o yaml`` output): dropped,
#: the store sets its own.
SERVER_METADATA_FIELDS = ('creationTimestamp', 'deletionGracePeriodSeconds',
                          'deletionTimestamp', 'generation', 'managedFields',
                          'resourceVersion', 'selfLink', 'uid')
#: Written by users but not acted on by kubelab: type-checked and kept.
USER_METADATA_FIELDS = ('finalizers', 'generateName', 'ownerReferences')
IGNORED_METADATA_FIELDS = SERVER_METADATA_FIELDS + USER_METADATA_FIELDS
OWNER_REFERENCE_FIELDS = ('apiVersion', 'kind', 'name', 'uid', 'controller',
                          'blockOwnerDeletion')
POD_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
NAMESPACE_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
DEFAULT_NAMESPACE = 'default'
#: The label the API server gives every Namespace: its name.
NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name'
#: Kinds a later kubelab version will accept (none at the moment).
LATER_KINDS: tuple[str, ...] = ()


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
    meta = obj.get('metadata')
    if isinstance(meta, dict):
        name_label(meta)


def name_label(meta: dict) -> None:
    """Give a Namespace's metadata the label ``kubernetes.io/metadata.name: NAME``,
    whatever it said (the API server's default, set on every write)."""
    labels = meta.get('labels')
    if isinstance(meta.get('name'), str) and (labels is None or isinstance(labels, dict)):
        meta['labels'] = dict(labels or {}, **{NAMESPACE_NAME_LABEL: meta['name']})


#: kind -> (apiVersion, name rule, namespaced, validator)
SUPPORTED_KINDS = {
    'Pod': ('v1', dns1123_subdomain_problem, True, _validate_pod),
    'Service': ('v1', dns1035_label_problem, True, validate_service),
    'Namespace': ('v1', dns1123_label_problem, False, _validate_namespace),
    'Deployment': ('apps/v1', dns1123_subdomain_problem, True,
                   validate_deployment),
    'EndpointSlice': ('discovery.k8s.io/v1', dns1123_subdomain_problem, True,
                      validate_endpointslice),
    'Secret': ('v1', dns1123_subdomain_problem, True, validate_secret),
    'ConfigMap': ('v1', dns1123_subdomain_problem, True, validate_configmap),
    'Ingress': ('networking.k8s.io/v1', dns1123_subdomain_problem, True,
                validate_ingress),
    'NetworkPolicy': ('networking.k8s.io/v1', dns1123_subdomain_problem, True,
                      validate_networkpolicy),
    'IngressClass': ('networking.k8s.io/v1', dns1123_subdomain_problem, False,
                     validate_ingress_class),
    'GatewayClass': ('gateway.networking.k8s.io/v1', dns1123_subdomain_problem,
                     False, validate_gateway_class),
    'Gateway': ('gateway.networking.k8s.io/v1', dns1123_subdomain_problem,
                True, validate_gateway),
    'HTTPRoute': ('gateway.networking.k8s.io/v1', dns1123_subdomain_problem,
                  True, validate_httproute),
    'IPAddressPool': ('metallb.io/v1beta1', dns1123_subdomain_problem, True,
                      validate_ipaddresspool),
    'L2Advertisement': ('metallb.io/v1beta1', dns1123_subdomain_problem, True,
                        validate_l2advertisement),
}
#: kind -> the check of an update against the stored object (``update_problems``).
UPDATE_VALIDATORS = {
    'Secret': validate_secret_update,
    'ConfigMap': validate_configmap_update,
    'IngressClass': validate_ingress_class_update,
    'GatewayClass': validate_gateway_class_update,
}
#: Kinds whose objects have no ``status`` (the store writes none for them).
STATUSLESS_KINDS = ('IngressClass', 'Secret', 'ConfigMap', 'NetworkPolicy')
#: kind -> kubectl's resource name, for messages (``ingresses.networking.k8s.io
#: "web" not found``); other kinds: the kind in lower case plus ``s``.
RESOURCE_NAMES = {
    'Deployment': 'deployments.apps',
    'EndpointSlice': 'endpointslices.discovery.k8s.io',
    'Ingress': 'ingresses.networking.k8s.io',
    'NetworkPolicy': 'networkpolicies.networking.k8s.io',
    'IngressClass': 'ingressclasses.networking.k8s.io',
    'GatewayClass': 'gatewayclasses.gateway.networking.k8s.io',
    'Gateway': 'gateways.gateway.networking.k8s.io',
    'HTTPRoute': 'httproutes.gateway.networking.k8s.io',
    'IPAddressPool': 'ipaddresspools.metallb.io',
    'L2Advertisement': 'l2advertisements.metallb.io',
    'ServiceL2Status': 'servicel2statuses.metallb.io',
}


def namespaced(kind: str) -> bool:
    """Whether objects of ``kind`` live in a namespace (Namespace, Node,
    IngressClass and GatewayClass do not)."""
    entry = SUPPORTED_KINDS.get(kind)
    return entry[2] if entry else kind != 'Node'


def has_status(kind: str) -> bool:
    """Whether objects of ``kind`` carry a ``status`` (a Secret, a ConfigMap do not)."""
    return kind not in STATUSLESS_KINDS


def resource_name(kind: str) -> str:
    """kubectl's name of the resource (``deployments.apps``, ``secrets``)."""
    return RESOURCE_NAMES.get(kind, f'{kind.lower()}s')


def update_problems(obj: dict, old: dict) -> list[ValidationError]:
    """What the API server refuses when ``obj`` (validated) replaces ``old``:
    changes to immutable fields."""
    check = UPDATE_VALIDATORS.get(obj.get('kind'))
    if check is None:
        return []
    chk = Checker(object_ref(obj))
    check(chk, obj, old)
    return chk.errors


#: How deep a document may nest (Kubernetes objects need about 15 levels);
#: deeper input is rejected before it can exhaust Python's recursion limit.
MAX_DEPTH = 64
#: How many values aliases (``*name``) may add to a document: a few copies of
#: a container are fine, a "billion laughs" bomb is not.
MAX_ALIAS_VALUES = 100_000
#: What one object may weigh once aliases are expanded, counted as the UTF-8 bytes of
#: its scalars plus a few for the punctuation of its collections (about its JSON size):
#: etcd's default request limit, beyond which the API server answers "request is too
#: large".
MAX_OBJECT_BYTES = 1_572_864
#: The largest manifest file (and request) taken: the API server's 3 MiB request limit.
MAX_REQUEST_BYTES = 3 * 1024 * 1024
#: Integers longer than this cannot be a Kubernetes field (int64 has 19).
MAX_INTEGER_DIGITS = 100
#: YAML types that have no JSON equivalent (the CLI sends objects as JSON).
NON_JSON_TAGS = {'tag:yaml.org,2002:binary': '!!binary (bytes)',
                 'tag:yaml.org,2002:set': '!!set',
                 'tag:yaml.org,2002:omap': '!!omap',
                 'tag:yaml.org,2002:pairs': '!!pairs'}


class _Constructing:
    """Duplicate keys rejected (as kubectl does), timestamps kept as strings (as JSON
    would): the construction both loaders share."""

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


class _Loader(_Constructing, yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (as kubectl does), keeps
    timestamps as strings (as JSON would) and refuses input that is not a
    JSON document in YAML's clothes: nesting deeper than ``MAX_DEPTH``,
    recursive or exploding aliases, tags without a JSON type."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f'the document nests more than {MAX_DEPTH} '
                                f'levels deep', self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _FastLoader(_Constructing, getattr(yaml, 'CSafeLoader', yaml.SafeLoader)):
    """The same documents through libyaml's parser (ten times as fast: 1,000 Services
    in 0.04 s instead of 0.4 s). Used for input that loads cleanly; anything it
    refuses, or that fails a check, is read again by ``_Loader``, whose messages
    (and nesting check while composing) are the ones a user sees."""


for _loader in (_Loader, _FastLoader):
    _loader.add_constructor('tag:yaml.org,2002:timestamp',
                            yaml.SafeLoader.construct_yaml_str)


def _node_problem(node, message: str) -> yaml.MarkedYAMLError:
    return yaml.composer.ComposerError(None, None, message, node.start_mark)


def _check_node(node, depth: int, memo: dict, active: set) -> tuple[int, int, int]:
    """``(values, height, bytes)`` of a composed node, aliases expanded; raises a
    YAML error (with the node's line) for what JSON cannot carry."""
    if id(node) in active:
        raise _node_problem(node, 'an alias refers to the collection that '
                                  'contains it (a recursive structure)')
    if id(node) in memo:
        size, height, nbytes = memo[id(node)]
    else:
        size, height, nbytes = 1, 0, 2
        if node.tag in NON_JSON_TAGS:
            raise _node_problem(node, f'{NON_JSON_TAGS[node.tag]} values '
                                      f'cannot be sent to the API server; '
                                      f'use a string, a list or a mapping')
        if isinstance(node, yaml.ScalarNode):
            _check_scalar(node)
            nbytes += len(node.value.encode('utf-8', 'surrogatepass'))
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) \
                else [part for pair in node.value for part in pair]
            active.add(id(node))
            for child in children:
                child_size, child_height, child_bytes = _check_node(
                    child, depth + 1, memo, active)
                size += child_size
                nbytes += child_bytes + 1
                height = max(height, child_height + 1)
            active.discard(id(node))
        memo[id(node)] = size, height, nbytes
    if depth + height > MAX_DEPTH:
        raise _node_problem(node, f'the document nests more than {MAX_DEPTH} '
                                  f'levels deep (through aliases)')
    return size, height, nbytes


def _check_scalar(node) -> None:
    if node.tag == 'tag:yaml.org,2002:int' and \
            len(node.value.lstrip('+-')) > MAX_INTEGER_DIGITS:
        raise _node_problem(node, f'an integer of {len(node.value)} digits '
                                  f'is out of range (at most 64 bits)')
    if any(0xD800 <= ord(char) <= 0xDFFF for char in node.value):
        raise _node_problem(node, 'a string holds a lone UTF-16 surrogate '
                                  '(\\uD800-\\uDFFF), which is not valid '
                                  'Unicode')


def _check_document(node) -> None:
    memo: dict = {}
    _check_node(node, 1, memo, set())
    values, _, nbytes = memo[id(node)]
    if values - len(memo) > MAX_ALIAS_VALUES:
        raise _node_problem(node, f'aliases expand the document to {values} '
                                  f'values (at most {MAX_ALIAS_VALUES} may '
                                  f'come from aliases); write it out or use '
                                  f'fewer aliases')
    if nbytes > MAX_OBJECT_BYTES:
        expanded = ' once its aliases are expanded' if values > len(memo) else ''
        raise _node_problem(node, f'the document is {nbytes} bytes{expanded}; the '
                                  f'API server takes at most {MAX_OBJECT_BYTES} bytes '
                                  'per object (etcd\'s limit: "request is too large")')


def yaml_problem(exc: yaml.YAMLError, source: str,
                 text: str = '') -> ValidationError:
    """A YAML syntax error as a ValidationError naming the line."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count('\n', 0, exc.position) + 1
        column = exc.position - (text.rfind('\n', 0, exc.position) + 1) + 1
        return ValidationError(source, f'line {line}',
                               f'unacceptable character '
                               f'#x{exc.character:04x}: {exc.reason} '
                               f'(column {column})')
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
    size = len(text.encode('utf-8', 'surrogatepass'))
    if size > MAX_REQUEST_BYTES:
        raise ValidationError(source, '', f'the file is {size} bytes; the API server '
                                          f'takes at most {MAX_REQUEST_BYTES} bytes in '
                                          f'one request: split it')
    if not yaml.reader.Reader.NON_PRINTABLE.search(text):
        try:
            return _parse(_FastLoader, text)
        except Exception:       # noqa: BLE001 - read again below, for the message
            pass                # the user sees (and what _Loader alone refuses)
    try:
        return _parse(_Loader, text)
    except yaml.YAMLError as exc:
        raise yaml_problem(exc, source, text) from None
    except RecursionError:
        raise ValidationError(source, '', 'invalid YAML: the document nests '
                                          'too deeply') from None


def _parse(loader_class, text: str) -> list[tuple[int, object]]:
    documents = []
    loader = None
    try:
        loader = loader_class(text)
        while loader.check_node():
            node = loader.get_node()
            _check_document(node)
            documents.append((node.start_mark.line + 1,
                              loader.construct_document(node)))
    finally:
        if loader is not None:
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
    """``(kind, namespace, name)``; namespace is '' for cluster-scoped
    kinds (Namespace, IngressClass, GatewayClass)."""
    kind = _text(obj.get('kind'), '<no kind>')
    meta = obj.get('metadata')
    meta = meta if isinstance(meta, dict) else {}
    name = _text(meta.get('name'), '<no name>')
    if not namespaced(kind):
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
    for field in SERVER_METADATA_FIELDS:
        meta.pop(field, None)
    chk.string(meta, 'generateName', 'metadata')
    finalizers = chk.sequence(meta, 'finalizers', 'metadata')
    for index, value in enumerate(finalizers or ()):
        if not isinstance(value, str):
            chk.error(f'metadata.finalizers[{index}]',
                      f'must be a string, got {describe(value)}')
    for path, ref in chk.items(meta, 'ownerReferences', 'metadata'):
        chk.known_fields(ref, path, OWNER_REFERENCE_FIELDS)
        for field in ('apiVersion', 'kind', 'name', 'uid'):
            chk.string(ref, field, path, required=True)
        chk.boolean(ref, 'controller', path)
        chk.boolean(ref, 'blockOwnerDeletion', path)


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
    if kind is None or kind == '':
        chk.error('kind', f'required value; supported kinds: {supported}')
        raise ApplyError(chk.errors)
    if not isinstance(kind, str):
        chk.error('kind', f'must be a string, got {describe(kind)}; '
                          f'supported kinds: {supported}')
        raise ApplyError(chk.errors)
    if kind == 'Endpoints':
        chk.error('kind', 'v1 Endpoints are read-only in kubelab (`kubelab get endpoints` '
                          'derives them from the EndpointSlices); for a Service without a '
                          'selector write a discovery.k8s.io/v1 EndpointSlice labelled '
                          'kubernetes.io/service-name: <service>')
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
    elif not isinstance(given, str):
        chk.error('apiVersion', f'must be a string, got {describe(given)}; '
                                f'{kind} is {api_version}')
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


def read_paths(paths: list[str]) -> list[dict]:
    """Every object in the files (or the *.yaml/*.yml/*.json files of the directories)."""
    docs = []
    for path in paths:
        if os.path.isdir(path):
            files = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.endswith(('.yaml', '.yml', '.json')))
            if not files:
                raise KubelabError(f'{path}: no .yaml, .yml or .json files in this directory')
        elif os.path.exists(path):
            files = [path]
        else:
            raise KubelabError(f'the path "{path}" does not exist')
        for name in files:
            with open(name) as f:
                docs.extend(load_documents(f.read(), name))
    return docs
