"""Validation and defaults of the Gateway API (``gateway.networking.k8s.io/v1``):
GatewayClass and Gateway, and the checks every Gateway API kind shares (``check_*``:
names, namespaces, section names, group/kind references, hostnames, limits). HTTPRoute
is services/validation/httproute.py's.

Gateway API objects are custom resources: the API server checks them with
the CRDs' schemas (patterns, enums, limits, defaults) and CEL rules, and this
module applies the same rules of the standard channel, with their messages
where a learner will meet them again ("Must have port for Service
reference", "must not contain '//' when type one of ['Exact',
'PathPrefix']" ...). What the CRDs leave to the implementation (does the
GatewayClass exist, may the route attach, does the Secret hold a key pair) is
the controllers' business and shows in ``status``, as on a real cluster.

Defaults filled as the CRDs fill them, so consumers can rely on them: each
listener's ``allowedRoutes`` (``{namespaces: {from: Same}}``),
``allowedRoutes.namespaces.from`` (Same), ``allowedRoutes.kinds[].group``
(gateway.networking.k8s.io), ``tls.mode`` (Terminate),
``tls.certificateRefs[].group`` ("") and ``.kind`` (Secret). The core
protocol names are case-insensitive in the spec; kubelab writes them in
upper case (``http`` -> ``HTTP``).

What kubelab refuses although the API accepts it, because the lab's gateway
(one HTTP reverse proxy the controllers configure) could not honour it:

- Listener protocols other than HTTP and HTTPS (TLS, TCP, UDP,
  implementation-specific ones), TLS mode Passthrough, ``tls.options``.
- ``spec.addresses`` of a Gateway: the lab assigns each Gateway its address
  (``status.addresses``); a requested one is refused rather than silently
  ignored. Also ``infrastructure`` and the experimental Gateway fields.
- Route kinds other than HTTPRoute in ``allowedRoutes.kinds``; certificate
  references other than core Secrets.

The listener name is a SectionName (a DNS-1123 subdomain: ``http``,
``web.https``), as the CRD has it. Listeners are checked for distinctness as
the CRD's CEL rules check them (the same name twice; the same port, protocol
and hostname twice); HTTP and HTTPS listeners on one port are distinct to the
CRD, and whether they can be served together is the Gateway controller's
call (a ``Conflicted`` listener condition), as in the spec.
"""

import re

from services.validation.common import (
    MISSING, Checker, controller_name, describe, dns1123_label_problem,
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

MAX_OBJECT_NAME = 253
_KIND = re.compile(r'[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?\Z')

#: The one kind of certificate and route kubelab serves: (group, kind).
SECRET_CERTIFICATE = ('', 'Secret')
HTTP_ROUTE_KIND = (GROUP, 'HTTPRoute')


def _default_allowed_routes() -> dict:
    return {'namespaces': {'from': 'Same'}}


# ------------------------------------------------------------ shared pieces

def _group_kind_text(group: str, kind: str) -> str:
    return f'{kind} (group "{group}")'


def check_limit(chk, items: list, path: str, most: int, what: str) -> None:
    if len(items) > most:
        chk.error(path, f'Too many: {len(items)}: must have at most {most} '
                        f'{what}')


def check_object_name(chk, obj, key, path, *, required=True, what='') -> None:
    """An ObjectName: 1-253 characters."""
    if obj.get(key) == '' or (required and obj.get(key) is None):
        obj.pop(key, None)
        chk.error(join(path, key), f'required value{what}')
        return
    value = chk.string(obj, key, path)
    if value is not None and len(value) > MAX_OBJECT_NAME:
        chk.error(join(path, key), f'must be no more than {MAX_OBJECT_NAME} '
                                   f'characters')


def check_namespace(chk, obj, key, path) -> None:
    value = chk.string(obj, key, path)
    if value is not None:
        chk.name(value, join(path, key), dns1123_label_problem)


def check_section_name(chk, obj, key, path, *, required=False) -> str | None:
    """A SectionName (a listener's or a rule's name): a DNS-1123
    subdomain."""
    value = chk.string(obj, key, path, required=required)
    if value is not None:
        chk.name(value, join(path, key), dns1123_subdomain_problem)
        if dns1123_subdomain_problem(value):
            return None
    return value


def check_group(chk, obj, key, path, *, default) -> str | None:
    """A Group: "" (the core group) or a DNS-1123 subdomain."""
    value = chk.string(obj, key, path, default=default)
    if value:
        problem = dns1123_subdomain_problem(value)
        if problem:
            chk.error(join(path, key), f'{problem}; use "" for the core API '
                                       f'group')
            return None
    return value


def check_kind(chk, obj, key, path, *, default=MISSING) -> str | None:
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


def check_reference(chk, ref, path, *, group_default, kind_default, supported,
                    what) -> None:
    """The group and kind of a reference, defaulted, and refused unless
    they are ``supported`` (group, kind)."""
    group = check_group(chk, ref, 'group', path, default=group_default)
    kind = check_kind(chk, ref, 'kind', path, default=kind_default)
    if group is None or kind is None or (group, kind) == supported:
        return
    chk.error(join(path, 'kind'),
              f'{_group_kind_text(group, kind)} is not supported by kubelab '
              f'as {what}; supported: {_group_kind_text(*supported)}')


def check_hostname(chk, value, path) -> None:
    if not isinstance(value, str):
        chk.error(path, f'must be a string, got {describe(value)}')
    elif value == '':
        chk.error(path, 'must not be empty (leave it out to match every '
                        'host)')
    else:
        chk.name(value, path, host_problem)


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
            check_group(chk, ref, 'group', path, default=MISSING)
        check_kind(chk, ref, 'kind', path)
        check_object_name(chk, ref, 'name', path)
        check_namespace(chk, ref, 'namespace', path)


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
        check_object_name(chk, spec, 'gatewayClassName', 'spec')
    if spec.get('listeners') in (None, []):
        spec.pop('listeners', None)
        chk.error('spec.listeners', 'required value: a Gateway needs at least '
                                    'one listener, e.g. [{name: http, port: '
                                    '80, protocol: HTTP}]')
        return
    listeners = chk.items(spec, 'listeners', 'spec')
    check_limit(chk, listeners, 'spec.listeners', MAX_LISTENERS, 'listeners')
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
    name = check_section_name(chk, listener, 'name', path, required=True)
    hostname = None
    if 'hostname' in listener and listener['hostname'] is not None:
        check_hostname(chk, listener['hostname'], join(path, 'hostname'))
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
    check_limit(chk, refs, join(path, 'certificateRefs'), MAX_CERTIFICATE_REFS,
                'certificateRefs')
    for rpath, ref in refs:
        chk.known_fields(ref, rpath, CERTIFICATE_REF_FIELDS)
        check_reference(chk, ref, rpath, group_default='', kind_default='Secret',
                        supported=SECRET_CERTIFICATE, what='a certificate')
        check_object_name(chk, ref, 'name', rpath,
                          what=': the name of the Secret (type kubernetes.io/tls)')
        check_namespace(chk, ref, 'namespace', rpath)
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
    check_limit(chk, kinds, join(apath, 'kinds'), MAX_ROUTE_KINDS, 'kinds')
    for kpath, kind in kinds:
        chk.known_fields(kind, kpath, ROUTE_GROUP_KIND_FIELDS)
        if kind.get('kind') in (None, ''):
            kind.pop('kind', None)
            chk.error(join(kpath, 'kind'), 'required value: the kind of '
                                           'route, e.g. "HTTPRoute"')
            check_group(chk, kind, 'group', kpath, default=GROUP)
            continue
        check_reference(chk, kind, kpath, group_default=GROUP, kind_default=MISSING,
                        supported=HTTP_ROUTE_KIND, what='a route kind')
