"""Validation and defaults of the Gateway API (``gateway.networking.k8s.io/v1``):
GatewayClass, Gateway and HTTPRoute.

Gateway API objects are custom resources: the API server checks them with
the CRDs' schemas (patterns, enums, limits, defaults) and CEL rules, and this
module applies the same rules of the standard channel, with their messages
where a learner will meet them again ("Must have port for Service
reference", "must not contain '//' when type one of ['Exact',
'PathPrefix']" ...). What the CRDs leave to the implementation (does the
GatewayClass exist, may the route attach, does the Secret hold a key pair) is
the controllers' business and shows in ``status``, as on a real cluster.

Defaults filled as the CRDs fill them, so consumers can rely on them:

- Gateway: each listener's ``allowedRoutes`` (``{namespaces: {from: Same}}``),
  ``allowedRoutes.namespaces.from`` (Same), ``allowedRoutes.kinds[].group``
  (gateway.networking.k8s.io), ``tls.mode`` (Terminate),
  ``tls.certificateRefs[].group`` ("") and ``.kind`` (Secret). The core
  protocol names are case-insensitive in the spec; kubelab writes them in
  upper case (``http`` -> ``HTTP``).
- HTTPRoute: ``rules`` (one rule), each rule's ``matches``
  (``[{path: {type: PathPrefix, value: /}}]``, also for an empty list, which
  the spec defines to mean the same), each match's ``path`` (the same), a
  path's ``type`` (PathPrefix) and ``value`` (/), ``headers[].type`` and
  ``queryParams[].type`` (Exact), ``parentRefs[].group``
  (gateway.networking.k8s.io) and ``.kind`` (Gateway),
  ``backendRefs[].group`` (""), ``.kind`` (Service) and ``.weight`` (1).

What kubelab refuses although the API accepts it, because the lab's gateway
(one HTTP reverse proxy the controllers configure) could not honour it:

- Listener protocols other than HTTP and HTTPS (TLS, TCP, UDP,
  implementation-specific ones), TLS mode Passthrough, ``tls.options``.
- ``spec.addresses`` of a Gateway: the lab assigns each Gateway its address
  (``status.addresses``); a requested one is refused rather than silently
  ignored. Also ``infrastructure`` and the experimental Gateway fields.
- Route kinds other than HTTPRoute in ``allowedRoutes.kinds``; parents other
  than Gateways (kubelab has no service mesh); backends other than core
  Services; certificate references other than core Secrets.
- HTTPRoute ``filters`` (on rules and on backendRefs) and ``timeouts``: the
  data plane does not apply them, and a route that relies on a redirect or
  a header rewrite would silently behave differently; likewise the
  experimental ``retry`` and ``sessionPersistence``.

Regular expressions (path, header and query parameter matches of type
RegularExpression) must compile with Python's ``re``; the data plane's
dialect (PCRE) is close to it for the expressions a route uses.

The listener name is a SectionName (a DNS-1123 subdomain: ``http``,
``web.https``), as the CRD has it. Listeners are checked for distinctness as
the CRD's CEL rules check them (the same name twice; the same port, protocol
and hostname twice); HTTP and HTTPS listeners on one port are distinct to the
CRD, and whether they can be served together is the Gateway controller's
call (a ``Conflicted`` listener condition), as in the spec.
"""

import re

from services.validation.common import (
    MISSING, Checker, choices, controller_name, describe, dns1123_label_problem,
    dns1123_subdomain_problem, host_problem, join)
from services.validation.deployment import validate_label_selector

GROUP = 'gateway.networking.k8s.io'

GATEWAY_CLASS_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
GATEWAY_CLASS_SPEC_FIELDS = ('controllerName', 'description', 'parametersRef')
PARAMETERS_REF_FIELDS = ('group', 'kind', 'name', 'namespace')
MAX_CONTROLLER_NAME = 253
MAX_DESCRIPTION = 64

GATEWAY_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
GATEWAY_SPEC_FIELDS = ('gatewayClassName', 'listeners')
UNSUPPORTED_GATEWAY_SPEC_FIELDS = ('infrastructure', 'backendTLS', 'tls',
                                   'allowedListeners', 'defaultScope')
LISTENER_FIELDS = ('name', 'hostname', 'port', 'protocol', 'tls',
                   'allowedRoutes')
LISTENER_PROTOCOLS = ('HTTP', 'HTTPS')
UNSUPPORTED_LISTENER_PROTOCOLS = ('TLS', 'TCP', 'UDP')
MAX_LISTENERS = 64
LISTENER_TLS_FIELDS = ('mode', 'certificateRefs')
UNSUPPORTED_LISTENER_TLS_FIELDS = ('options', 'frontendValidation')
TLS_MODES = ('Terminate',)
UNSUPPORTED_TLS_MODES = ('Passthrough',)
CERTIFICATE_REF_FIELDS = ('group', 'kind', 'name', 'namespace')
MAX_CERTIFICATE_REFS = 64
ALLOWED_ROUTES_FIELDS = ('namespaces', 'kinds')
ROUTE_NAMESPACES_FIELDS = ('from', 'selector')
FROM_NAMESPACES = ('Same', 'All', 'Selector')
ROUTE_GROUP_KIND_FIELDS = ('group', 'kind')
MAX_ROUTE_KINDS = 8

HTTPROUTE_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
HTTPROUTE_SPEC_FIELDS = ('parentRefs', 'hostnames', 'rules')
PARENT_REF_FIELDS = ('group', 'kind', 'namespace', 'name', 'sectionName',
                     'port')
MAX_PARENT_REFS = 32
MAX_HOSTNAMES = 16
MAX_RULES = 16
MAX_MATCHES = 64
MAX_TOTAL_MATCHES = 128
RULE_FIELDS = ('name', 'matches', 'backendRefs', 'filters', 'timeouts')
UNSUPPORTED_RULE_FIELDS = ('retry', 'sessionPersistence')
MATCH_FIELDS = ('path', 'headers', 'queryParams', 'method')
PATH_MATCH_FIELDS = ('type', 'value')
PATH_MATCH_TYPES = ('Exact', 'PathPrefix', 'RegularExpression')
VALUE_MATCH_TYPES = ('Exact', 'RegularExpression')
VALUE_MATCH_FIELDS = ('type', 'name', 'value')
MAX_HEADER_MATCHES = 16
MAX_QUERY_PARAM_MATCHES = 16
METHODS = ('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS',
           'TRACE', 'PATCH')
BACKEND_REF_FIELDS = ('group', 'kind', 'name', 'namespace', 'port', 'weight',
                      'filters')
MAX_BACKEND_REFS = 16
MAX_WEIGHT = 1_000_000
#: The filter types of the standard channel (none is implemented by kubelab).
FILTER_TYPES = ('RequestHeaderModifier', 'ResponseHeaderModifier',
                'RequestMirror', 'RequestRedirect', 'URLRewrite',
                'ExtensionRef')
MAX_PATH_LENGTH = 1024
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 4096
MAX_QUERY_PARAM_VALUE = 1024
MAX_OBJECT_NAME = 253
#: What the CRD refuses in an Exact or PathPrefix path.
INVALID_PATH_SEQUENCES = ('//', '/./', '/../', '%2f', '%2F', '#')
INVALID_PATH_SUFFIXES = ('/..', '/.')
PATH_CHARACTERS = r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$"
_PATH_CHARACTERS = re.compile(PATH_CHARACTERS)
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+\Z")
_KIND = re.compile(r'[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?\Z')

#: The one kind of parent, backend, certificate and route kubelab serves:
#: (group, kind).
GATEWAY_PARENT = (GROUP, 'Gateway')
SERVICE_BACKEND = ('', 'Service')
SECRET_CERTIFICATE = ('', 'Secret')
HTTP_ROUTE_KIND = (GROUP, 'HTTPRoute')

DEFAULT_PATH_MATCH = {'type': 'PathPrefix', 'value': '/'}


def _default_path_match() -> dict:
    return dict(DEFAULT_PATH_MATCH)


def _default_allowed_routes() -> dict:
    return {'namespaces': {'from': 'Same'}}


# ------------------------------------------------------------ shared pieces

def _group_kind_text(group: str, kind: str) -> str:
    return f'{kind} (group "{group}")'


def _limit(chk, items: list, path: str, most: int, what: str) -> None:
    if len(items) > most:
        chk.error(path, f'Too many: {len(items)}: must have at most {most} '
                        f'{what}')


def _object_name(chk, obj, key, path, *, required=True, what='') -> None:
    """An ObjectName: 1-253 characters."""
    if obj.get(key) == '' or (required and obj.get(key) is None):
        obj.pop(key, None)
        chk.error(join(path, key), f'required value{what}')
        return
    value = chk.string(obj, key, path)
    if value is not None and len(value) > MAX_OBJECT_NAME:
        chk.error(join(path, key), f'must be no more than {MAX_OBJECT_NAME} '
                                   f'characters')


def _namespace(chk, obj, key, path) -> None:
    value = chk.string(obj, key, path)
    if value is not None:
        chk.name(value, join(path, key), dns1123_label_problem)


def _section_name(chk, obj, key, path, *, required=False) -> str | None:
    """A SectionName (a listener's or a rule's name): a DNS-1123
    subdomain."""
    value = chk.string(obj, key, path, required=required)
    if value is not None:
        chk.name(value, join(path, key), dns1123_subdomain_problem)
        if dns1123_subdomain_problem(value):
            return None
    return value


def _group(chk, obj, key, path, *, default) -> str | None:
    """A Group: "" (the core group) or a DNS-1123 subdomain."""
    value = chk.string(obj, key, path, default=default)
    if value:
        problem = dns1123_subdomain_problem(value)
        if problem:
            chk.error(join(path, key), f'{problem}; use "" for the core API '
                                       f'group')
            return None
    return value


def _kind(chk, obj, key, path, *, default=MISSING) -> str | None:
    """A Kind: 1-63 characters, a letter first (``Service``); required
    without a default."""
    if default is MISSING and obj.get(key) in (None, ''):
        obj.pop(key, None)
        chk.error(join(path, key), 'required value: the kind of the '
                                   'referent, e.g. "HTTPRoute"')
        return None
    value = chk.string(obj, key, path, default=default)
    if value is not None and (len(value) > 63 or not _KIND.match(value)):
        chk.error(join(path, key), f'Invalid value: "{value}": a kind must '
                                   f'be 1-63 letters, digits or \'-\', '
                                   f'starting with a letter (e.g. '
                                   f'"Service")')
        return None
    return value


def _reference(chk, ref, path, *, group_default, kind_default, supported,
               what) -> None:
    """The group and kind of a reference, defaulted, and refused unless
    they are ``supported`` (group, kind)."""
    group = _group(chk, ref, 'group', path, default=group_default)
    kind = _kind(chk, ref, 'kind', path, default=kind_default)
    if group is None or kind is None or (group, kind) == supported:
        return
    chk.error(join(path, 'kind'),
              f'{_group_kind_text(group, kind)} is not supported by kubelab '
              f'as {what}; supported: {_group_kind_text(*supported)}')


def _hostname(chk, value, path) -> None:
    if not isinstance(value, str):
        chk.error(path, f'must be a string, got {describe(value)}')
    elif value == '':
        chk.error(path, 'must not be empty (leave it out to match every '
                        'host)')
    else:
        chk.name(value, path, host_problem)


def _regex(chk, value: str, path: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        chk.error(path, f'Invalid value: "{value}": not a valid regular '
                        f'expression: {exc}')


# ------------------------------------------------------------ GatewayClass

def validate_gateway_class(chk: Checker, obj: dict) -> None:
    """Check a GatewayClass (metadata is checked by the caller)."""
    chk.known_fields(obj, '', GATEWAY_CLASS_FIELDS)
    chk.mapping(obj, 'status', '')        # the controller's, not the user's
    spec = chk.mapping(obj, 'spec', '', default=dict)
    if spec is None:
        return
    chk.known_fields(spec, 'spec', GATEWAY_CLASS_SPEC_FIELDS)
    controller_name(chk, spec, 'controllerName', 'manages Gateways of this class',
                    'example.net/gateway-controller', MAX_CONTROLLER_NAME)
    description = chk.string(spec, 'description', 'spec')
    if description is not None and len(description) > MAX_DESCRIPTION:
        chk.error('spec.description', f'Too long: may not be more than '
                                      f'{MAX_DESCRIPTION} characters, got '
                                      f'{len(description)}')
    ref = chk.mapping(spec, 'parametersRef', 'spec')
    if ref is not None:
        path = 'spec.parametersRef'
        chk.known_fields(ref, path, PARAMETERS_REF_FIELDS)
        if ref.get('group') is None:
            ref.pop('group', None)
            chk.error(join(path, 'group'), 'required value: the API group '
                                           'of the referent ("" for the '
                                           'core group)')
        else:
            _group(chk, ref, 'group', path, default=MISSING)
        _kind(chk, ref, 'kind', path)
        _object_name(chk, ref, 'name', path)
        _namespace(chk, ref, 'namespace', path)


def validate_gateway_class_update(chk: Checker, obj: dict, old: dict) -> None:
    """A GatewayClass's controllerName cannot change (CEL ``self ==
    oldSelf``)."""
    new_name = (obj.get('spec') or {}).get('controllerName')
    old_name = (old.get('spec') or {}).get('controllerName')
    if new_name != old_name:
        chk.error('spec.controllerName', f'Invalid value: "{new_name}": Value '
                                         f'is immutable (it is "{old_name}")')


# ------------------------------------------------------------ Gateway

def validate_gateway(chk: Checker, obj: dict) -> None:
    """Check a Gateway (metadata is checked by the caller); fill the
    listeners' defaults."""
    chk.known_fields(obj, '', GATEWAY_FIELDS)
    chk.mapping(obj, 'status', '')        # the controller's, not the user's
    spec = chk.mapping(obj, 'spec', '', required=True)
    if spec is None:
        return
    chk.known_fields(spec, 'spec', GATEWAY_SPEC_FIELDS, ignored=('addresses',),
                     unsupported=UNSUPPORTED_GATEWAY_SPEC_FIELDS)
    if spec.get('addresses') in (None, []):
        spec.pop('addresses', None)
    else:
        chk.error('spec.addresses', 'is not supported by kubelab: the lab '
                                    'assigns each Gateway its address (see '
                                    'status.addresses); leave addresses out')
    if spec.get('gatewayClassName') in (None, ''):
        spec.pop('gatewayClassName', None)
        chk.error('spec.gatewayClassName', 'required value: the name of the '
                                           'GatewayClass this Gateway belongs '
                                           'to')
    else:
        _object_name(chk, spec, 'gatewayClassName', 'spec')
    if spec.get('listeners') in (None, []):
        spec.pop('listeners', None)
        chk.error('spec.listeners', 'required value: a Gateway needs at least '
                                    'one listener, e.g. [{name: http, port: '
                                    '80, protocol: HTTP}]')
        return
    listeners = chk.items(spec, 'listeners', 'spec')
    _limit(chk, listeners, 'spec.listeners', MAX_LISTENERS, 'listeners')
    names: dict[str, int] = {}
    combos: dict[tuple, str] = {}
    for index, (path, listener) in enumerate(listeners):
        name, combo = _listener(chk, listener, path)
        if name is not None:
            if name in names:
                chk.error(join(path, 'name'),
                          f'Duplicate value: "{name}": Listener name must be '
                          f'unique within the Gateway (spec.listeners'
                          f'[{names[name]}] has it)')
            else:
                names[name] = index
        if combo is None:
            continue
        if combo in combos:
            port, protocol, host = combo
            host_text = f'hostname "{host}"' if host is not None \
                else 'no hostname'
            chk.error(path, f'Duplicate value: port {port}, protocol '
                            f'{protocol} and {host_text} are those of '
                            f'listener "{combos[combo]}" too: Combination of '
                            f'port, protocol and hostname must be unique for '
                            f'each listener')
        else:
            combos[combo] = name or f'#{index}'


def _listener(chk, listener, path) -> tuple:
    """Check one listener; its name and its (port, protocol, hostname), each
    None when not valid."""
    chk.known_fields(listener, path, LISTENER_FIELDS)
    name = _section_name(chk, listener, 'name', path, required=True)
    hostname = None
    if 'hostname' in listener and listener['hostname'] is not None:
        _hostname(chk, listener['hostname'], join(path, 'hostname'))
        hostname = listener['hostname']
    else:
        listener.pop('hostname', None)
    port = chk.port(listener, 'port', path, required=True)
    protocol = _protocol(chk, listener, path)
    tls = chk.mapping(listener, 'tls', path)
    tpath = join(path, 'tls')
    if protocol == 'HTTP' and tls is not None:
        chk.error(tpath, 'Forbidden: tls must not be specified for protocols '
                         "['HTTP', 'TCP', 'UDP']; use protocol HTTPS to "
                         'terminate TLS')
    elif protocol == 'HTTPS' and tls is None and 'tls' not in listener:
        chk.error(tpath, 'required value: an HTTPS listener needs tls with '
                         'certificateRefs naming the Secret (type '
                         'kubernetes.io/tls) that holds its certificate, '
                         'e.g. {certificateRefs: [{name: web-tls}]}')
    elif tls is not None:
        _listener_tls(chk, tls, tpath)
    _allowed_routes(chk, listener, path)
    if port is None or protocol is None or \
            (hostname is not None and host_problem(hostname)):
        return name, None
    return name, (port, protocol, hostname)


def _protocol(chk, listener, path) -> str | None:
    value = listener.get('protocol')
    if isinstance(value, str):
        upper = value.upper()
        if upper in LISTENER_PROTOCOLS + UNSUPPORTED_LISTENER_PROTOCOLS:
            listener['protocol'] = value = upper     # case-insensitive
    custom = (value,) if isinstance(value, str) and '/' in value else ()
    return chk.one_of(listener, 'protocol', path, LISTENER_PROTOCOLS,
                      required=True,
                      unsupported=UNSUPPORTED_LISTENER_PROTOCOLS + custom)


def _listener_tls(chk, tls, path) -> None:
    chk.known_fields(tls, path, LISTENER_TLS_FIELDS,
                     unsupported=UNSUPPORTED_LISTENER_TLS_FIELDS)
    mode = chk.one_of(tls, 'mode', path, TLS_MODES, default='Terminate',
                      unsupported=UNSUPPORTED_TLS_MODES)
    refs = chk.items(tls, 'certificateRefs', path)
    _limit(chk, refs, join(path, 'certificateRefs'), MAX_CERTIFICATE_REFS,
           'certificateRefs')
    for rpath, ref in refs:
        chk.known_fields(ref, rpath, CERTIFICATE_REF_FIELDS)
        _reference(chk, ref, rpath, group_default='', kind_default='Secret',
                   supported=SECRET_CERTIFICATE, what='a certificate')
        _object_name(chk, ref, 'name', rpath,
                     what=': the name of the Secret (type kubernetes.io/tls)')
        _namespace(chk, ref, 'namespace', rpath)
    if mode == 'Terminate' and tls.get('certificateRefs') in (None, []):
        tls.pop('certificateRefs', None)
        chk.error(join(path, 'certificateRefs'),
                  'required value: certificateRefs must be specified when '
                  'mode is Terminate: name the Secret (type kubernetes.io/tls) '
                  'that holds the certificate, e.g. [{name: web-tls}]')


def _allowed_routes(chk, listener, path) -> None:
    allowed = chk.mapping(listener, 'allowedRoutes', path,
                          default=_default_allowed_routes)
    if allowed is None:
        return
    apath = join(path, 'allowedRoutes')
    chk.known_fields(allowed, apath, ALLOWED_ROUTES_FIELDS)
    namespaces = chk.mapping(allowed, 'namespaces', apath,
                             default=lambda: {'from': 'Same'})
    if namespaces is not None:
        npath = join(apath, 'namespaces')
        chk.known_fields(namespaces, npath, ROUTE_NAMESPACES_FIELDS)
        source = chk.one_of(namespaces, 'from', npath, FROM_NAMESPACES,
                            default='Same')
        selector = chk.mapping(namespaces, 'selector', npath)
        if selector:
            validate_label_selector(chk, selector, join(npath, 'selector'))
        if source == 'Selector' and 'selector' not in namespaces:
            chk.error(join(npath, 'selector'),
                      'required value: from: Selector needs a label selector '
                      'on namespaces, e.g. {matchLabels: {shared-gateway: '
                      '"true"}}')
    kinds = chk.items(allowed, 'kinds', apath)
    _limit(chk, kinds, join(apath, 'kinds'), MAX_ROUTE_KINDS, 'kinds')
    for kpath, kind in kinds:
        chk.known_fields(kind, kpath, ROUTE_GROUP_KIND_FIELDS)
        if kind.get('kind') in (None, ''):
            kind.pop('kind', None)
            chk.error(join(kpath, 'kind'), 'required value: the kind of '
                                           'route, e.g. "HTTPRoute"')
            _group(chk, kind, 'group', kpath, default=GROUP)
            continue
        _reference(chk, kind, kpath, group_default=GROUP, kind_default=MISSING,
                   supported=HTTP_ROUTE_KIND, what='a route kind')


# ------------------------------------------------------------ HTTPRoute

def validate_httproute(chk: Checker, obj: dict) -> None:
    """Check an HTTPRoute (metadata is checked by the caller); fill the
    defaults of its rules, matches and references."""
    chk.known_fields(obj, '', HTTPROUTE_FIELDS)
    chk.mapping(obj, 'status', '')        # the controllers', not the user's
    spec = chk.mapping(obj, 'spec', '', required=True)
    if spec is None:
        return
    chk.known_fields(spec, 'spec', HTTPROUTE_SPEC_FIELDS)
    _parent_refs(chk, spec)
    hostnames = chk.sequence(spec, 'hostnames', 'spec')
    if hostnames is not None:
        _limit(chk, hostnames, 'spec.hostnames', MAX_HOSTNAMES, 'hostnames')
        for index, host in enumerate(hostnames):
            _hostname(chk, host, f'spec.hostnames[{index}]')
    rules = chk.items(spec, 'rules', 'spec', default=lambda: [{}])
    _limit(chk, rules, 'spec.rules', MAX_RULES, 'rules')
    names: set[str] = set()
    total = 0
    for path, rule in rules:
        total += _rule(chk, rule, path, names)
    if total > MAX_TOTAL_MATCHES:
        chk.error('spec.rules', f'Too many: {total} matches: While 16 rules '
                                f'and 64 matches per rule are allowed, the '
                                f'total number of matches across all rules '
                                f'in a route must be less than '
                                f'{MAX_TOTAL_MATCHES}')


def _parent_refs(chk, spec) -> None:
    refs = chk.items(spec, 'parentRefs', 'spec')
    _limit(chk, refs, 'spec.parentRefs', MAX_PARENT_REFS, 'parentRefs')
    sections: dict[tuple, list] = {}
    for path, ref in refs:
        chk.known_fields(ref, path, PARENT_REF_FIELDS)
        _reference(chk, ref, path, group_default=GROUP, kind_default='Gateway',
                   supported=GATEWAY_PARENT,
                   what='a parent (kubelab has no service mesh)')
        _object_name(chk, ref, 'name', path,
                     what=': the name of the Gateway to attach to')
        _namespace(chk, ref, 'namespace', path)
        _section_name(chk, ref, 'sectionName', path)
        chk.port(ref, 'port', path)
        name = ref.get('name')
        if not isinstance(name, str) or not name:
            continue
        parent = (ref.get('group'), ref.get('kind'),
                  ref.get('namespace') or '', name)
        section = ref.get('sectionName') or ''
        earlier = sections.setdefault(parent, [])
        if earlier and (section == '') != (earlier[0][1] == ''):
            chk.error(join(path, 'sectionName'),
                      f'sectionName must be specified when parentRefs '
                      f'includes 2 or more references to the same parent '
                      f'({earlier[0][0]} refers to it too)')
        elif any(section == other for _, other in earlier):
            first = next(p for p, other in earlier if other == section)
            chk.error(join(path, 'sectionName') if section else path,
                      f'sectionName must be unique when parentRefs includes '
                      f'2 or more references to the same parent ({first} '
                      f'refers to it with the same sectionName)')
        earlier.append((path, section))


def _rule(chk, rule, path, names) -> int:
    """Check a rule; the number of its matches."""
    chk.known_fields(rule, path, RULE_FIELDS,
                     unsupported=UNSUPPORTED_RULE_FIELDS)
    name = _section_name(chk, rule, 'name', path)
    if name is not None:
        if name in names:
            chk.error(join(path, 'name'), f'Duplicate value: "{name}": Rule '
                                          f'name must be unique within the '
                                          f'route')
        names.add(name)
    if rule.get('matches') == []:
        del rule['matches']            # no matches: the spec's match-all
    matches = chk.items(rule, 'matches', path,
                        default=lambda: [{'path': _default_path_match()}])
    _limit(chk, matches, join(path, 'matches'), MAX_MATCHES, 'matches')
    for mpath, match in matches:
        _match(chk, match, mpath)
    _filters(chk, rule, path)
    timeouts = chk.mapping(rule, 'timeouts', path)
    if timeouts:
        chk.error(join(path, 'timeouts'),
                  'is not supported by kubelab yet: the data plane does not '
                  'apply request timeouts; leave timeouts out')
    refs = chk.items(rule, 'backendRefs', path)
    _limit(chk, refs, join(path, 'backendRefs'), MAX_BACKEND_REFS,
           'backendRefs')
    for rpath, ref in refs:
        _backend_ref(chk, ref, rpath)
    return len(matches)


def _filters(chk, obj, path) -> None:
    """Filters are refused: the data plane would not apply them."""
    filters = chk.sequence(obj, 'filters', path)
    if not filters:
        return
    named = [f.get('type') for f in filters
             if isinstance(f, dict) and isinstance(f.get('type'), str)]
    given = f' ({", ".join(named)})' if named else ''
    chk.error(join(path, 'filters'),
              f'filters{given} are not supported by kubelab yet: the lab\'s '
              f'data plane does not apply {choices(FILTER_TYPES)} filters, so '
              f'the route would behave differently than on a real Gateway; '
              f'leave filters out')


def _match(chk, match, path) -> None:
    chk.known_fields(match, path, MATCH_FIELDS)
    path_match = chk.mapping(match, 'path', path, default=_default_path_match)
    if path_match is not None:
        _path_match(chk, path_match, join(path, 'path'))
    headers = chk.items(match, 'headers', path)
    _limit(chk, headers, join(path, 'headers'), MAX_HEADER_MATCHES,
           'headers')
    seen: dict[str, str] = {}
    for hpath, header in headers:
        name = _value_match(chk, header, hpath, MAX_HEADER_VALUE)
        if name is None:
            continue
        if name.lower() in seen:
            chk.error(join(hpath, 'name'),
                      f'Duplicate value: "{name}": header names are '
                      f'case-insensitive and {seen[name.lower()]} matches '
                      f'this header already')
        else:
            seen[name.lower()] = hpath
    params = chk.items(match, 'queryParams', path)
    _limit(chk, params, join(path, 'queryParams'), MAX_QUERY_PARAM_MATCHES,
           'queryParams')
    seen = {}
    for qpath, param in params:
        name = _value_match(chk, param, qpath, MAX_QUERY_PARAM_VALUE)
        if name is None:
            continue
        if name in seen:
            chk.error(join(qpath, 'name'),
                      f'Duplicate value: "{name}": {seen[name]} matches '
                      f'this query parameter already')
        else:
            seen[name] = qpath
    chk.one_of(match, 'method', path, METHODS)


def _path_match(chk, match, path) -> None:
    chk.known_fields(match, path, PATH_MATCH_FIELDS)
    match_type = chk.one_of(match, 'type', path, PATH_MATCH_TYPES,
                            default='PathPrefix')
    value = chk.string(match, 'value', path, default='/')
    if value is None:
        return
    where = join(path, 'value')
    if len(value) > MAX_PATH_LENGTH:
        chk.error(where, f'Too long: may not be more than {MAX_PATH_LENGTH} '
                         f'characters')
    elif match_type in ('Exact', 'PathPrefix'):
        for problem in path_problems(value):
            chk.error(where, problem)
    elif match_type == 'RegularExpression':
        _regex(chk, value, where)


def path_problems(value: str) -> list[str]:
    """What the HTTPRoute CRD says about an Exact or PathPrefix path."""
    shown = f'Invalid value: "{value}": '
    when = "when type one of ['Exact', 'PathPrefix']"
    if not value.startswith('/'):
        return [f"{shown}value must be an absolute path and start with '/' "
                f"{when}"]
    problems = [f"{shown}must not contain '{sequence}' {when}"
                for sequence in INVALID_PATH_SEQUENCES if sequence in value]
    problems += [f"{shown}must not end with '{suffix}' {when}"
                 for suffix in INVALID_PATH_SUFFIXES if value.endswith(suffix)]
    if not problems and not _PATH_CHARACTERS.match(value):
        problems.append(f'{shown}must only contain valid characters '
                        f'(matching {PATH_CHARACTERS}) for types '
                        f"['Exact', 'PathPrefix']")
    return problems


def _value_match(chk, match, path, most) -> str | None:
    """A header or query parameter match; its name when valid."""
    chk.known_fields(match, path, VALUE_MATCH_FIELDS)
    match_type = chk.one_of(match, 'type', path, VALUE_MATCH_TYPES,
                            default='Exact')
    name = chk.string(match, 'name', path, required=True)
    if name is not None and (not name or len(name) > MAX_HEADER_NAME
                             or not _HEADER_NAME.match(name)):
        chk.error(join(path, 'name'),
                  f'Invalid value: "{name}": must be 1-{MAX_HEADER_NAME} '
                  f'letters, digits or any of !#$%&\'*+-.^_`|~ (an HTTP '
                  f'token, e.g. "X-Version")')
        name = None
    if match.get('value') == '':
        chk.error(join(path, 'value'), 'must not be empty')
        return name
    value = chk.string(match, 'value', path, required=True)
    if value is None:
        return name
    if len(value) > most:
        chk.error(join(path, 'value'), f'Too long: may not be more than '
                                       f'{most} characters')
    elif match_type == 'RegularExpression':
        _regex(chk, value, join(path, 'value'))
    return name


def _backend_ref(chk, ref, path) -> None:
    chk.known_fields(ref, path, BACKEND_REF_FIELDS)
    _reference(chk, ref, path, group_default='', kind_default='Service',
               supported=SERVICE_BACKEND, what='a backend')
    _object_name(chk, ref, 'name', path,
                 what=': the name of the Service to send to')
    _namespace(chk, ref, 'namespace', path)
    port = chk.port(ref, 'port', path)
    if port is None and 'port' not in ref and \
            (ref.get('group'), ref.get('kind')) == SERVICE_BACKEND:
        chk.error(join(path, 'port'), 'required value: Must have port for '
                                      'Service reference (the Service port '
                                      'to send to, e.g. port: 80)')
    chk.integer(ref, 'weight', path, minimum=0, maximum=MAX_WEIGHT, default=1)
    _filters(chk, ref, path)
