"""Validation of ``networking.k8s.io/v1`` Ingress and IngressClass.

The rules are the API server's (``pkg/apis/networking/validation``), with its
words where a learner will meet them again on a real cluster:

- An Ingress needs ``spec.defaultBackend`` or at least one rule ("either
  `defaultBackend` or `rules` must be specified"). A rule's ``host`` is a
  lowercase DNS name, not an IP address, with a wildcard only as the whole
  first label (``*.example.com``); a rule may have no ``http`` (it then routes
  nothing), but an ``http`` needs ``paths``. Each path needs a ``pathType``
  (Exact, Prefix or ImplementationSpecific) and a backend. Exact and Prefix
  paths are absolute and may not contain ``//``, ``/./``, ``/../``, ``%2f`` or
  ``%2F`` nor end in ``/..`` or ``/.``; an ImplementationSpecific path, when
  given, is absolute. (``#`` is refused by the Gateway API's HTTPRoute, not by
  Ingress validation, so it is accepted here.)
- A backend is a Service: ``service.name`` (a Service name) and
  ``service.port`` with exactly one of ``number`` (1-65535) or ``name`` (a
  port name). ``resource`` backends are refused: nothing in the lab serves a
  custom resource.
- ``tls[].hosts`` follow the host rule (an IP address is refused here too,
  although the API server lets one through: no client sends an IP address as
  SNI); ``tls[].secretName`` is a Secret name. The Secret itself is looked up
  by the Ingress controller, as in Kubernetes: its absence is not a
  validation error.
- ``ingressClassName`` is an IngressClass name; the legacy annotation
  ``kubernetes.io/ingress.class`` must match it when both are set. The API
  server checks that only when the Ingress is created; kubelab checks it on
  every apply, so an update cannot introduce the disagreement either.

Annotations are kept as they are (``nginx.ingress.kubernetes.io/...``): what
they mean is the Ingress controller's business. Empty ``host``, ``path`` and
``secretName`` strings are dropped, as the API server's JSON (``omitempty``)
drops them. Nothing else is defaulted: Ingress v1 has no defaults.

An IngressClass (cluster-scoped) names its ``spec.controller`` with a
domain-prefixed path (``k8s.io/ingress-nginx``, at most 250 characters,
immutable); ``spec.parameters`` is checked and kept, its ``scope`` defaulted
to Cluster as the API server does. The annotation
``ingressclass.kubernetes.io/is-default-class: "true"`` marks the default
class and is kept.
"""

from services.validation.common import (
    Checker, controller_name, describe, dns1035_label_problem, dns1123_label_problem,
    dns1123_subdomain_problem, host_problem, iana_svc_name_problem, join, map_key)

INGRESS_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
INGRESS_SPEC_FIELDS = ('ingressClassName', 'defaultBackend', 'rules', 'tls')
RULE_FIELDS = ('host', 'http')
HTTP_RULE_FIELDS = ('paths',)
PATH_FIELDS = ('path', 'pathType', 'backend')
PATH_TYPES = ('Exact', 'Prefix', 'ImplementationSpecific')
BACKEND_FIELDS = ('service',)
SERVICE_BACKEND_FIELDS = ('name', 'port')
SERVICE_PORT_FIELDS = ('number', 'name')
TLS_FIELDS = ('hosts', 'secretName')
#: What the API server refuses in an Exact or Prefix path.
INVALID_PATH_SEQUENCES = ('//', '/./', '/../', '%2f', '%2F')
INVALID_PATH_SUFFIXES = ('/..', '/.')
#: The legacy way to pick a class; must agree with ``spec.ingressClassName``.
CLASS_ANNOTATION = 'kubernetes.io/ingress.class'
#: On an IngressClass: ``"true"`` makes it the default class.
DEFAULT_CLASS_ANNOTATION = 'ingressclass.kubernetes.io/is-default-class'

INGRESS_CLASS_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec')
INGRESS_CLASS_SPEC_FIELDS = ('controller', 'parameters')
PARAMETERS_FIELDS = ('apiGroup', 'kind', 'name', 'scope', 'namespace')
PARAMETERS_SCOPES = ('Cluster', 'Namespace')
MAX_CONTROLLER_LENGTH = 250


def validate_ingress(chk: Checker, obj: dict) -> None:
    """Check an Ingress (metadata is checked by the caller)."""
    chk.known_fields(obj, '', INGRESS_FIELDS)
    chk.mapping(obj, 'status', '')          # the controller's, not the user's
    spec = chk.mapping(obj, 'spec', '', required=True)
    if spec is None:
        return
    chk.known_fields(spec, 'spec', INGRESS_SPEC_FIELDS)
    class_name = chk.string(spec, 'ingressClassName', 'spec')
    if class_name is not None:
        chk.name(class_name, 'spec.ingressClassName',
                 dns1123_subdomain_problem)
        _class_annotation(chk, obj, class_name)
    backend = chk.mapping(spec, 'defaultBackend', 'spec')
    if backend is not None:
        _backend(chk, backend, 'spec.defaultBackend')
    rules = chk.items(spec, 'rules', 'spec')
    for path, rule in rules:
        _rule(chk, rule, path)
    if not spec.get('rules') and spec.get('defaultBackend') is None:
        chk.error('spec', 'either `defaultBackend` or `rules` must be '
                          'specified')
    for path, tls in chk.items(spec, 'tls', 'spec'):
        _tls(chk, tls, path)


def _class_annotation(chk, obj, class_name) -> None:
    meta = obj.get('metadata')
    annotations = meta.get('annotations') if isinstance(meta, dict) else None
    if not isinstance(annotations, dict):
        return
    value = annotations.get(CLASS_ANNOTATION)
    if isinstance(value, str) and value != class_name:
        chk.error(map_key('metadata.annotations', CLASS_ANNOTATION),
                  f'Invalid value: "{value}": must match `ingressClassName` '
                  f'when both are specified (ingressClassName is '
                  f'"{class_name}"); drop the annotation or make them agree')


def _drop_empty(obj: dict, key: str) -> None:
    """An empty string the API server's JSON would leave out (omitempty)."""
    if obj.get(key) == '':
        del obj[key]


def _rule(chk, rule, path) -> None:
    chk.known_fields(rule, path, RULE_FIELDS)
    _drop_empty(rule, 'host')
    host = chk.string(rule, 'host', path)
    if host is not None:
        chk.name(host, join(path, 'host'), host_problem)
    http = chk.mapping(rule, 'http', path)
    if http is None:
        return
    hpath = join(path, 'http')
    chk.known_fields(http, hpath, HTTP_RULE_FIELDS)
    if http.get('paths') in (None, []):
        chk.error(join(hpath, 'paths'),
                  'required value: an http rule needs at least one path, '
                  'e.g. {path: /, pathType: Prefix, backend: {service: '
                  '{name: web, port: {number: 80}}}}')
    for ppath, entry in chk.items(http, 'paths', hpath):
        _path(chk, entry, ppath)


def _path(chk, entry, path) -> None:
    chk.known_fields(entry, path, PATH_FIELDS)
    _drop_empty(entry, 'path')
    value = chk.string(entry, 'path', path)
    mistyped = value is None and 'path' in entry       # already reported
    if entry.get('pathType') is None:
        entry.pop('pathType', None)
        chk.error(join(path, 'pathType'),
                  f'required value: pathType must be specified; supported: '
                  f'{", ".join(PATH_TYPES)}')
        path_type = None
    else:
        path_type = chk.one_of(entry, 'pathType', path, PATH_TYPES)
    if path_type in ('Exact', 'Prefix') and not mistyped:
        for problem in path_problems(value or ''):
            chk.error(join(path, 'path'), problem)
    elif path_type == 'ImplementationSpecific' and value and \
            not value.startswith('/'):
        chk.error(join(path, 'path'),
                  f'Invalid value: "{value}": must be an absolute path '
                  f'(start with "/")')
    backend = chk.mapping(entry, 'backend', path, required=True)
    if backend is not None:
        _backend(chk, backend, join(path, 'backend'))


def path_problems(value: str) -> list[str]:
    """What the API server says about an Exact or Prefix Ingress path."""
    shown = f'Invalid value: "{value}": '
    if not value.startswith('/'):
        hint = f' (did you mean "/{value}"?)' if value else \
            ' (use "/" to match every path)'
        return [f'{shown}must be an absolute path{hint}']
    problems = [f"{shown}must not contain '{sequence}'"
                for sequence in INVALID_PATH_SEQUENCES if sequence in value]
    problems += [f"{shown}cannot end with '{suffix}'"
                 for suffix in INVALID_PATH_SUFFIXES if value.endswith(suffix)]
    return problems


def _backend(chk, backend, path) -> None:
    """An IngressBackend: a Service and one of its ports."""
    chk.known_fields(backend, path, BACKEND_FIELDS, ignored=('resource',))
    if backend.get('resource') is not None:
        chk.error(join(path, 'resource'),
                  'resource backends are not supported by kubelab (nothing '
                  'in the lab serves a custom resource); supported: service, '
                  'e.g. {service: {name: web, port: {number: 80}}}')
        return
    backend.pop('resource', None)
    service = chk.mapping(backend, 'service', path)
    if service is None:
        if 'service' not in backend:
            chk.error(path, 'required value: a backend needs a service, e.g. '
                            '{service: {name: web, port: {number: 80}}}')
        return
    spath = join(path, 'service')
    chk.known_fields(service, spath, SERVICE_BACKEND_FIELDS)
    name = chk.string(service, 'name', spath, required=True)
    if name is not None:
        chk.name(name, join(spath, 'name'), dns1035_label_problem)
    if service.get('port') is None:
        service.pop('port', None)
        chk.error(join(spath, 'port'),
                  'required value: port name or number is required, e.g. '
                  '{number: 80} or {name: http}')
        return
    port = chk.mapping(service, 'port', spath)
    if port is None:
        return
    ppath = join(spath, 'port')
    chk.known_fields(port, ppath, SERVICE_PORT_FIELDS)
    has_number = port.get('number') is not None
    has_name = port.get('name') not in (None, '')
    if has_number and has_name:
        chk.error(ppath, 'cannot set both port name & port number; keep '
                         'one of them')
    elif has_number:
        port.pop('name', None)
        chk.port(port, 'number', ppath)
    elif has_name:
        port.pop('number', None)
        port_name = chk.string(port, 'name', ppath)
        if port_name is not None:
            chk.name(port_name, join(ppath, 'name'), iana_svc_name_problem)
    else:
        port.pop('number', None)
        port.pop('name', None)
        chk.error(ppath, 'required value: port name or number is required, '
                         'e.g. {number: 80} or {name: http}')


def _tls(chk, tls, path) -> None:
    chk.known_fields(tls, path, TLS_FIELDS)
    hosts = chk.sequence(tls, 'hosts', path)
    for index, host in enumerate(hosts or ()):
        where = join(join(path, 'hosts'), index)
        if isinstance(host, str):
            chk.name(host, where, host_problem)
        else:
            chk.error(where, f'must be a string, got {describe(host)}')
    _drop_empty(tls, 'secretName')
    secret = chk.string(tls, 'secretName', path)
    if secret is not None:
        chk.name(secret, join(path, 'secretName'), dns1123_subdomain_problem)


# ------------------------------------------------------------ IngressClass

def validate_ingress_class(chk: Checker, obj: dict) -> None:
    """Check an IngressClass (metadata is checked by the caller); default
    ``spec.parameters.scope``."""
    chk.known_fields(obj, '', INGRESS_CLASS_FIELDS)
    spec = chk.mapping(obj, 'spec', '', default=dict)
    if spec is None:
        return
    chk.known_fields(spec, 'spec', INGRESS_CLASS_SPEC_FIELDS)
    controller_name(chk, spec, 'controller', 'implements this class',
                    'k8s.io/ingress-nginx', MAX_CONTROLLER_LENGTH)
    params = chk.mapping(spec, 'parameters', 'spec')
    if params is not None:
        _parameters(chk, params, 'spec.parameters')


def _path_segment_problem(value: str) -> str | None:
    """``IsValidPathSegmentName``: a name that can be one URL path segment."""
    if value in ('.', '..'):
        return f'"{value}": may not be \'{value}\''
    for char in ('/', '%'):
        if char in value:
            return f'"{value}": may not contain \'{char}\''
    return None


def _parameters(chk, params, path) -> None:
    chk.known_fields(params, path, PARAMETERS_FIELDS)
    group = chk.string(params, 'apiGroup', path)
    if group:
        chk.name(group, join(path, 'apiGroup'), dns1123_subdomain_problem)
    for field in ('kind', 'name'):
        if params.get(field) in (None, ''):
            params.pop(field, None)
            chk.error(join(path, field), f'required value: {field} is '
                                         f'required')
            continue
        value = chk.string(params, field, path)
        if value is not None:
            chk.name(value, join(path, field), _path_segment_problem)
    scope = chk.one_of(params, 'scope', path, PARAMETERS_SCOPES,
                       default='Cluster')
    namespace = chk.string(params, 'namespace', path)
    if scope == 'Namespace':
        if namespace is None and 'namespace' not in params:
            chk.error(join(path, 'namespace'),
                      "required value: `parameters.scope` is set to "
                      "'Namespace'")
        elif namespace is not None:
            chk.name(namespace, join(path, 'namespace'),
                     dns1123_label_problem)
    elif scope == 'Cluster' and namespace is not None:
        chk.error(join(path, 'namespace'),
                  "Forbidden: `parameters.scope` is set to 'Cluster'; drop "
                  "namespace or set scope: Namespace")


def validate_ingress_class_update(chk: Checker, obj: dict, old: dict) -> None:
    """An IngressClass's controller cannot change (the API server's
    ``ValidateImmutableField``)."""
    new_controller = (obj.get('spec') or {}).get('controller')
    old_controller = (old.get('spec') or {}).get('controller')
    if new_controller != old_controller:
        chk.error('spec.controller', f'Invalid value: "{new_controller}": '
                                     f'field is immutable (it is '
                                     f'"{old_controller}")')
