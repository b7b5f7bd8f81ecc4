"""Validation and defaults of the Gateway API's HTTPRoute
(``gateway.networking.k8s.io/v1``).

The CRD's schema and CEL rules, with their messages, as services/validation/gateway.py
applies them to GatewayClass and Gateway (which also holds the checks the kinds share:
names, references, hostnames, limits). Defaults filled as the CRD fills them, so
consumers can rely on them: ``rules`` (one rule), each rule's ``matches``
(``[{path: {type: PathPrefix, value: /}}]``, also for an empty list, which the spec
defines to mean the same), each match's ``path`` (the same), a path's ``type``
(PathPrefix) and ``value`` (/), ``headers[].type`` and ``queryParams[].type`` (Exact),
``parentRefs[].group`` (gateway.networking.k8s.io) and ``.kind`` (Gateway),
``backendRefs[].group`` (""), ``.kind`` (Service) and ``.weight`` (1).

What kubelab refuses although the API accepts it, because the lab's gateway could not
honour it: parents other than Gateways (kubelab has no service mesh); backends other
than core Services; ``filters`` (on rules and on backendRefs) and ``timeouts``: the
data plane does not apply them, and a route that relies on a redirect or a header
rewrite would silently behave differently; likewise the experimental ``retry`` and
``sessionPersistence``.

Regular expressions (path, header and query parameter matches of type
RegularExpression) must compile with Python's ``re``; the data plane's dialect (PCRE)
is close to it for the expressions a route uses.
"""

import re

from services.validation.common import Checker, choices, join
from services.validation.gateway import (
    GROUP, check_hostname, check_limit, check_namespace, check_object_name,
    check_reference, check_section_name)

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
#: What the CRD refuses in an Exact or PathPrefix path.
INVALID_PATH_SEQUENCES = ('//', '/./', '/../', '%2f', '%2F', '#')
INVALID_PATH_SUFFIXES = ('/..', '/.')
PATH_CHARACTERS = r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$"
_PATH_CHARACTERS = re.compile(PATH_CHARACTERS)
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+\Z")

#: The one kind of parent and backend kubelab serves: (group, kind).
GATEWAY_PARENT = (GROUP, 'Gateway')
SERVICE_BACKEND = ('', 'Service')

DEFAULT_PATH_MATCH = {'type': 'PathPrefix', 'value': '/'}


def _default_path_match() -> dict:
    return dict(DEFAULT_PATH_MATCH)


def _regex(chk, value: str, path: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        chk.error(path, f'Invalid value: "{value}": not a valid regular '
                        f'expression: {exc}')


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
        check_limit(chk, hostnames, 'spec.hostnames', MAX_HOSTNAMES, 'hostnames')
        for index, host in enumerate(hostnames):
            check_hostname(chk, host, f'spec.hostnames[{index}]')
    rules = chk.items(spec, 'rules', 'spec', default=lambda: [{}])
    check_limit(chk, rules, 'spec.rules', MAX_RULES, 'rules')
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
    check_limit(chk, refs, 'spec.parentRefs', MAX_PARENT_REFS, 'parentRefs')
    sections: dict[tuple, list] = {}
    for path, ref in refs:
        chk.known_fields(ref, path, PARENT_REF_FIELDS)
        check_reference(chk, ref, path, group_default=GROUP, kind_default='Gateway',
                        supported=GATEWAY_PARENT,
                        what='a parent (kubelab has no service mesh)')
        check_object_name(chk, ref, 'name', path,
                          what=': the name of the Gateway to attach to')
        check_namespace(chk, ref, 'namespace', path)
        check_section_name(chk, ref, 'sectionName', path)
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
    name = check_section_name(chk, rule, 'name', path)
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
    check_limit(chk, matches, join(path, 'matches'), MAX_MATCHES, 'matches')
    for mpath, match in matches:
        _match(chk, match, mpath)
    _filters(chk, rule, path)
    timeouts = chk.mapping(rule, 'timeouts', path)
    if timeouts:
        chk.error(join(path, 'timeouts'),
                  'is not supported by kubelab yet: the data plane does not '
                  'apply request timeouts; leave timeouts out')
    refs = chk.items(rule, 'backendRefs', path)
    check_limit(chk, refs, join(path, 'backendRefs'), MAX_BACKEND_REFS,
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
    check_limit(chk, headers, join(path, 'headers'), MAX_HEADER_MATCHES,
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
    check_limit(chk, params, join(path, 'queryParams'), MAX_QUERY_PARAM_MATCHES,
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
    check_reference(chk, ref, path, group_default='', kind_default='Service',
                    supported=SERVICE_BACKEND, what='a backend')
    check_object_name(chk, ref, 'name', path,
                      what=': the name of the Service to send to')
    check_namespace(chk, ref, 'namespace', path)
    port = chk.port(ref, 'port', path)
    if port is None and 'port' not in ref and \
            (ref.get('group'), ref.get('kind')) == SERVICE_BACKEND:
        chk.error(join(path, 'port'), 'required value: Must have port for '
                                      'Service reference (the Service port '
                                      'to send to, e.g. port: 80)')
    chk.integer(ref, 'weight', path, minimum=0, maximum=MAX_WEIGHT, default=1)
    _filters(chk, ref, path)
