"""Shared pieces of manifest validation: name rules and a problem collector.

``Checker`` walks one object, reads typed fields (``string``, ``integer``,
``boolean``, ``mapping``, ``sequence``), fills defaults into the (copied)
object and collects every problem as a ``ValidationError`` with the path of
the field, so ``validate`` can report all problems of an object at once.

The name rules are Kubernetes' (``k8s.io/apimachinery/pkg/util/validation``):
DNS-1123 labels and subdomains, DNS-1035 labels, label keys and values,
IANA service names (named ports), virtual host names with an optional
wildcard first label (``host_problem``: Ingress rules, Gateway listeners,
HTTPRoute hostnames) and domain-prefixed paths (``k8s.io/ingress-nginx``,
the controller names of IngressClass and GatewayClass). Integer fields have the width of their Go
type (int32 unless told otherwise), as the API server's decoder enforces;
``parse_quantity`` reads resource quantities (``250m``, ``64Mi``).
"""

import difflib
import ipaddress
import math
import re
from fractions import Fraction

from services.errors import ValidationError

MISSING = object()

_DNS1123_LABEL = re.compile(r'[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z')
_DNS1035_LABEL = re.compile(r'[a-z]([-a-z0-9]*[a-z0-9])?\Z')
_QUALIFIED_NAME = re.compile(r'[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z')
_IANA_SVC_NAME = re.compile(r'[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z')


def dns1123_label_problem(name: str) -> str | None:
    """None when ``name`` is a DNS-1123 label (``my-name``), else why not."""
    if len(name) > 63:
        return f'"{name}" must be no more than 63 characters'
    if not _DNS1123_LABEL.match(name):
        return (f'"{name}" is not a valid name: a lowercase RFC 1123 label '
                f"must consist of lower case alphanumeric characters or '-', "
                f'and must start and end with an alphanumeric character '
                f"(e.g. 'my-name' or '123-abc')")
    return None


def dns1123_subdomain_problem(name: str) -> str | None:
    """None when ``name`` is a DNS-1123 subdomain (``web.v1``), else why."""
    if len(name) > 253:
        return f'"{name}" must be no more than 253 characters'
    if not all(_DNS1123_LABEL.match(part) for part in name.split('.')):
        return (f'"{name}" is not a valid name: a lowercase RFC 1123 '
                f'subdomain must consist of lower case alphanumeric '
                f"characters, '-' or '.', and must start and end with an "
                f"alphanumeric character (e.g. 'example.com')")
    return None


def dns1035_label_problem(name: str) -> str | None:
    """None when ``name`` is a DNS-1035 label (Service names), else why not."""
    if len(name) > 63:
        return f'"{name}" must be no more than 63 characters'
    if not _DNS1035_LABEL.match(name):
        return (f'"{name}" is not a valid name: a DNS-1035 label must consist '
                f"of lower case alphanumeric characters or '-', start with an "
                f'alphabetic character, and end with an alphanumeric '
                f"character (e.g. 'my-name' or 'abc-123')")
    return None


def iana_svc_name_problem(name: str) -> str | None:
    """None when ``name`` may name a port (IANA service name), else why not."""
    if len(name) > 15:
        return f'port name "{name}" must be no more than 15 characters'
    if not _IANA_SVC_NAME.match(name) or '--' in name:
        return (f'port name "{name}" must contain only lower case '
                f"alphanumeric characters and '-', must start and end with "
                f"an alphanumeric character and must not contain '--'")
    if not re.search('[a-z]', name):
        return f'port name "{name}" must contain at least one letter'
    return None


def label_key_problem(key: str) -> str | None:
    """None when ``key`` is a valid label or annotation key, else why."""
    prefix, _, name = key.rpartition('/')
    if '/' in key and not prefix:
        return f'key "{key}": prefix part must be non-empty'
    if prefix and dns1123_subdomain_problem(prefix):
        return (f'key "{key}": prefix part must be a DNS subdomain '
                f"(e.g. 'example.com')")
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (f'key "{key}": name part must be 1-63 characters, '
                f"alphanumeric, '-', '_' or '.', and must start and end with "
                f"an alphanumeric character (e.g. 'app' or "
                f"'example.com/tier')")
    return None


def label_value_problem(value: str) -> str | None:
    """None when ``value`` is a valid label value (may be empty)."""
    if value and (len(value) > 63 or not _QUALIFIED_NAME.match(value)):
        return (f'value "{value}" must be no more than 63 characters, '
                f"alphanumeric, '-', '_' or '.', and must start and end with "
                f'an alphanumeric character')
    return None


#: A wildcard host: ``*.`` and a DNS-1123 subdomain (``*.example.com``).
_WILDCARD_SUBDOMAIN = re.compile(
    r'\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z')
#: A dotted quad as Go's ``net.ParseIP`` reads one (leading zeros allowed).
_SLOPPY_IPV4 = re.compile(r'\d{1,3}(\.\d{1,3}){3}\Z')
#: The path of a domain-prefixed path (``IsDomainPrefixedPath``).
_HTTP_PATH = re.compile(r"[A-Za-z0-9/\-._~%!$&'()*+,;=:]+\Z")


def _is_ip(text: str) -> bool:
    if _SLOPPY_IPV4.match(text):
        return all(int(part) <= 255 for part in text.split('.'))
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def host_problem(host: str) -> str | None:
    """None when ``host`` may name a virtual host (an Ingress rule's or TLS
    entry's host, a Gateway listener's hostname, an HTTPRoute hostname), else
    why not: a lowercase DNS-1123 subdomain (``foo.example.com``), or one
    behind a wildcard that is the whole first label (``*.example.com``; not
    ``foo.*.com``, ``*foo.com`` or ``*``); never an IP address."""
    if _is_ip(host):
        return f'"{host}" must be a DNS name, not an IP address'
    if len(host) > 253:
        return f'"{host}" must be no more than 253 characters'
    if '*' in host:
        if _WILDCARD_SUBDOMAIN.match(host):
            return None
        return (f'"{host}": a wildcard DNS-1123 subdomain must start with '
                f"'*.', followed by a valid DNS subdomain, which must consist "
                f"of lower case alphanumeric characters, '-' or '.' and end "
                f"with an alphanumeric character (e.g. '*.example.com'); the "
                f'wildcard may only be the whole first label')
    if not all(_DNS1123_LABEL.match(part) for part in host.split('.')):
        return (f'"{host}" is not a valid host name: a lowercase RFC 1123 '
                f'subdomain must consist of lower case alphanumeric '
                f"characters, '-' or '.', and must start and end with an "
                f"alphanumeric character (e.g. 'example.com' or "
                f"'*.example.com')")
    return None


def controller_name(chk, spec: dict, key: str, what: str, example: str,
                    max_length: int) -> None:
    """``spec[key]``: the required controller of an IngressClass or GatewayClass, a
    domain-prefixed path of at most ``max_length`` characters."""
    where = f'spec.{key}'
    if spec.get(key) in (None, ''):
        spec.pop(key, None)
        chk.error(where, f'required value: the controller that {what}, a '
                         f'domain-prefixed path such as "{example}"')
    name = chk.string(spec, key, 'spec')
    if not name:
        return
    if len(name) > max_length:
        chk.error(where, f'Too long: may not be more than {max_length} characters')
    else:
        chk.name(name, where, domain_prefixed_path_problem)


def domain_prefixed_path_problem(value: str) -> str | None:
    """None when ``value`` is a domain-prefixed path (``k8s.io/ingress-nginx``,
    ``example.net/gateway-controller``), as IngressClass and GatewayClass name
    their controllers; else why not."""
    domain, slash, path = value.partition('/')
    if not slash or not domain or not path:
        return (f'"{value}" must be a domain-prefixed path (such as '
                f'"acme.io/foo")')
    if dns1123_subdomain_problem(domain):
        return (f'"{value}": the domain "{domain}" must be a lowercase RFC '
                f"1123 subdomain (e.g. 'example.com'); a domain-prefixed path "
                f'looks like "acme.io/foo"')
    if not _HTTP_PATH.match(path):
        return (f'"{value}": the path "{path}" may only contain letters, '
                f"digits and -._~%!$&'()*+,;=:/ (a domain-prefixed path looks "
                f'like "acme.io/foo")')
    return None


def parse_ipv4(text) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``text`` spells, or None."""
    try:
        return ipaddress.IPv4Address(text)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        return None


def describe(value) -> str:
    """A value and its type for messages: ``string "three"``."""
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return f'boolean {str(value).lower()}'
    if isinstance(value, int):
        return f'integer {value}'
    if isinstance(value, float):
        return f'number {value}'
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return 'list'
    if isinstance(value, dict):
        return 'mapping'
    return type(value).__name__


def join(path: str, key) -> str:
    """``join('spec', 'ports')`` -> ``spec.ports``; ints become ``[i]``."""
    if isinstance(key, int):
        return f'{path}[{key}]'
    return f'{path}.{key}' if path else str(key)


#: Protocols of ports that kubelab forwards (SCTP is Kubernetes' third).
PROTOCOLS = ('TCP', 'UDP')
UNSUPPORTED_PROTOCOLS = ('SCTP',)


def map_key(path: str, key: str) -> str:
    """The path of a map entry, as Kubernetes writes it: ``labels[app]``."""
    return f'{path}[{key}]'


def choices(values) -> str:
    return ', '.join(values)


def suggestion(word, candidates) -> str:
    """``'; did you mean "x"?'`` for a close candidate, else ``''``."""
    if not isinstance(word, str):
        return ''
    folded = {c.lower(): c for c in candidates}
    if word.lower() in folded:
        return f'; did you mean "{folded[word.lower()]}"?'
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.7)
    return f'; did you mean "{close[0]}"?' if close else ''


#: The largest values of Kubernetes' integer fields (Go int32 and int64).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

#: A resource quantity (``100m``, ``64Mi``, ``1.5``, ``2e3``), as
#: ``k8s.io/apimachinery/pkg/api/resource`` parses it.
_QUANTITY = re.compile(r'([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))'
                       r'(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?\Z')
_QUANTITY_SUFFIXES = {
    '': 1, 'n': Fraction(1, 10**9), 'u': Fraction(1, 10**6),
    'm': Fraction(1, 1000), 'k': 10**3, 'M': 10**6, 'G': 10**9,
    'T': 10**12, 'P': 10**15, 'E': 10**18, 'Ki': 2**10, 'Mi': 2**20,
    'Gi': 2**30, 'Ti': 2**40, 'Pi': 2**50, 'Ei': 2**60}


def parse_quantity(value) -> Fraction | None:
    """The amount a resource quantity (``"250m"``, ``"1Gi"``, ``2``) stands
    for, or None when it is not one."""
    if _is_integer(value):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value)
    if not match:
        return None
    number, suffix = match.group(1), match.group(2) or ''
    if suffix[:1] in ('e', 'E'):
        exponent = int(suffix[1:])
        if abs(exponent) > 100:
            return None
        return Fraction(number) * Fraction(10) ** exponent
    return Fraction(number) * _QUANTITY_SUFFIXES[suffix]


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TYPES = {
    'string': (lambda v: isinstance(v, str), 'a string'),
    'integer': (_is_integer, 'an integer'),
    'boolean': (lambda v: isinstance(v, bool), 'a boolean (true or false)'),
    'mapping': (lambda v: isinstance(v, dict), 'a mapping'),
    'list': (lambda v: isinstance(v, list), 'a list'),
}


class Checker:
    """Collects the problems of one object (``ref``: ``Pod default/web``)."""

    def __init__(self, ref: str):
        self.ref = ref
        self.errors: list[ValidationError] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(ValidationError(self.ref, path, message))

    def field(self, obj: dict, key: str, path: str, kind: str, *,
              required: bool = False, default=MISSING):
        """``obj[key]`` if it has type ``kind``; fills ``default`` if absent.

        A null value counts as absent (as in Kubernetes). Returns None when the
        field is absent without default or has the wrong type (reported).
        """
        where = join(path, key)
        if obj.get(key) is None:
            obj.pop(key, None)
            if required:
                self.error(where, 'required value')
            elif default is not MISSING:
                obj[key] = default() if callable(default) else default
                return obj[key]
            return None
        value = obj[key]
        check, expected = _TYPES[kind]
        if not check(value):
            hint = ''
            if kind == 'string' and (_is_integer(value)
                                     or isinstance(value, (bool, float))):
                hint = ' (quote it)'
            self.error(where,
                       f'must be {expected}, got {describe(value)}{hint}')
            return None
        return value

    def string(self, obj, key, path, **kw) -> str | None:
        return self.field(obj, key, path, 'string', **kw)

    def integer(self, obj, key, path, *, minimum=None, maximum=None,
                bits=32, **kw) -> int | None:
        """An integer field; Kubernetes' are int32 unless ``bits=64``, and
        a larger value is refused as the API server's JSON decoder does."""
        value = self.field(obj, key, path, 'integer', **kw)
        if value is None:
            return None
        largest = INT32_MAX if bits == 32 else INT64_MAX
        if (minimum is not None and value < minimum) or \
                (maximum is not None and value > maximum):
            if maximum is None:
                bound = f'must be greater than or equal to {minimum}'
            else:
                bound = f'must be {minimum}-{maximum}'
            self.error(join(path, key), f'{value} is out of range, {bound}')
            return None
        if not -largest - 1 <= value <= largest:
            self.error(join(path, key), f'{value} is out of range, must be '
                                        f'at most {largest} (a {bits}-bit '
                                        f'integer)')
            return None
        return value

    def boolean(self, obj, key, path, **kw) -> bool | None:
        return self.field(obj, key, path, 'boolean', **kw)

    def mapping(self, obj, key, path, **kw) -> dict | None:
        return self.field(obj, key, path, 'mapping', **kw)

    def sequence(self, obj, key, path, **kw) -> list | None:
        return self.field(obj, key, path, 'list', **kw)

    def items(self, obj, key, path, *, required=False, non_empty=False,
              default=MISSING):
        """``(path[i], item)`` for each mapping in the list ``obj[key]``."""
        values = self.sequence(obj, key, path, required=required,
                               default=default)
        where = join(path, key)
        if values is None:
            return []
        if non_empty and not values:
            self.error(where, 'must have at least one item')
        result = []
        for index, item in enumerate(values):
            if isinstance(item, dict):
                result.append((join(where, index), item))
            else:
                self.error(join(where, index),
                           f'must be a mapping, got {describe(item)}')
        return result

    def one_of(self, obj, key, path, allowed, *, default=MISSING,
               required=False, unsupported=()) -> str | None:
        """A string field with a closed set of values (``restartPolicy``).

        ``unsupported``: real Kubernetes values kubelab does not emulate.
        """
        value = self.string(obj, key, path, default=default, required=required)
        if value is None or value in allowed:
            return value
        where = join(path, key)
        if value in unsupported:
            self.error(where, f'"{value}" is not supported by kubelab; '
                              f'supported: {choices(allowed)}')
        else:
            hint = suggestion(value, list(allowed) + list(unsupported))
            self.error(where, f'unsupported value "{value}"{hint or ";"} '
                              f'supported: {choices(allowed)}')
        return None

    def known_fields(self, obj: dict, path: str, supported, ignored=(),
                     unsupported=()) -> None:
        """Report keys of ``obj`` that are neither supported nor ignored.
        ``unsupported``: real fields kubelab does not emulate (a mapping gives each
        one's reason)."""
        for key in obj:
            where = join(path, key) if isinstance(key, str) else path
            if not isinstance(key, str):
                self.error(where, f'field names must be strings, '
                                  f'got {describe(key)}')
            elif key in supported or key in ignored:
                continue
            elif key in unsupported:
                reason = unsupported[key] if isinstance(unsupported, dict) else ''
                self.error(where, f'is not supported by kubelab'
                                  f'{": " + reason if reason else ""}; supported '
                                  f'fields here: {choices(supported)}')
            else:
                hint = suggestion(key, list(supported) + list(ignored))
                self.error(where, f'unknown field "{key}"{hint or ";"} '
                                  f'supported fields here: '
                                  f'{choices(supported)}')

    def typed(self, obj: dict, path: str, types: dict) -> None:
        """Check the type of each field of ``types`` (name -> ``'string'``,
        ``'integer'``, ``'boolean'``, ``'mapping'`` or ``'list'``) that
        ``obj`` has: fields kubelab keeps without acting on them still have
        the type the API server would decode them into."""
        for key, kind in types.items():
            if key in obj:
                self.field(obj, key, path, kind)

    def string_map(self, obj, key, path, *, labels: bool) -> dict | None:
        """A ``{str: str}`` map: labels (keys, values checked), annotations."""
        values = self.mapping(obj, key, path)
        if values is None:
            return None
        where = join(path, key)
        for name, value in values.items():
            if not isinstance(name, str):
                self.error(where,
                           f'keys must be strings, got {describe(name)}')
                continue
            problem = label_key_problem(name)
            if problem:
                self.error(where, problem)
            if not isinstance(value, str):
                self.error(map_key(where, name),
                           f'must be a string, got {describe(value)} '
                           f'(quote it)')
            elif labels and label_value_problem(value):
                self.error(map_key(where, name), label_value_problem(value))
        return values

    def name(self, value, path, problem_of) -> None:
        """Check a name with one of the ``*_problem`` rules above."""
        problem = problem_of(value)
        if problem:
            self.error(path, problem)

    def port_number(self, value, path) -> bool:
        """True when ``value`` is a port number 1-65535 (else reported)."""
        if not _is_integer(value):
            self.error(path, f'must be an integer, got {describe(value)}')
            return False
        if not 1 <= value <= 65535:
            self.error(path, f'{value} is not a valid port number, '
                             f'must be 1-65535')
            return False
        return True

    def port(self, obj, key, path, *, required=False) -> int | None:
        """An integer port field (``port``, ``containerPort``)."""
        value = self.field(obj, key, path, 'integer', required=required)
        if value is not None and not self.port_number(value, join(path, key)):
            return None
        return value

    def int_or_name(self, obj, key, path, *, required=False):
        """A port number 1-65535 or an IANA service name (``targetPort``)."""
        where = join(path, key)
        if obj.get(key) is None:
            return self.field(obj, key, path, 'integer', required=required)
        value = obj[key]
        if isinstance(value, str):
            if value.isdigit():
                self.error(where, f'"{value}" is a string: write the port '
                                  f'number without quotes, or a port name')
                return None
            problem = iana_svc_name_problem(value)
            if problem:
                self.error(where, problem)
                return None
            return value
        if not self.port_number(value, where):
            return None
        return value
