"""Validation and normalisation of ``v1`` Secrets.

kubelab keeps Secrets for the Ingress and Gateway controllers (the TLS
certificates of ``Ingress.spec.tls[].secretName`` and of a Gateway listener's
``tls.certificateRefs``); nothing mounts them into pods. The rules are the
API server's (``ValidateSecret``, the v1 conversion and defaulting):

- ``type`` defaults to ``Opaque``; kubelab accepts ``Opaque`` and
  ``kubernetes.io/tls`` and refuses Kubernetes' other built-in types (and
  custom ones) with the valid values, since nothing in the lab would use
  them. A ``kubernetes.io/tls`` Secret must have the keys ``tls.crt`` and
  ``tls.key``; their content is not checked (the API server does not either:
  whoever loads the pair reports a bad one).
- ``data`` maps keys (``[-._a-zA-Z0-9]+``, at most 253 characters, not ``.``
  or ``..`` nor starting with ``..``) to base64 (standard alphabet, with
  padding; line breaks are ignored, as Go's decoder ignores them). The
  values are rewritten in canonical base64, as the API server shows them.
  A null value is an empty one.
- ``stringData`` (the same keys, plain strings) is merged into ``data`` as
  base64, overriding a ``data`` entry of the same key, and then dropped: the
  API server never stores or shows ``stringData``.
- All values together may hold at most 1 MiB (decoded).
- ``immutable`` is a boolean. On update (``validate_secret_update``, run by the
  store) the type cannot change, and an immutable Secret's ``data`` and
  ``immutable`` cannot change either.

Messages never repeat a value of the Secret: a bad base64 value is located
by its byte offset, as Go's decoder does.
"""

import base64
import binascii
import re

from services.validation.common import (
    Checker, choices, describe, map_key, suggestion)

SECRET_FIELDS = ('apiVersion', 'kind', 'metadata', 'type', 'data',
                 'stringData', 'immutable')
SECRET_TYPES = ('Opaque', 'kubernetes.io/tls')
#: Kubernetes' other built-in types: real, but nothing in the lab uses them.
UNSUPPORTED_SECRET_TYPES = (
    'kubernetes.io/service-account-token', 'kubernetes.io/dockercfg',
    'kubernetes.io/dockerconfigjson', 'kubernetes.io/basic-auth',
    'kubernetes.io/ssh-auth', 'bootstrap.kubernetes.io/token')
DEFAULT_SECRET_TYPE = 'Opaque'
TLS_SECRET_TYPE = 'kubernetes.io/tls'
TLS_CERT_KEY = 'tls.crt'
TLS_PRIVATE_KEY_KEY = 'tls.key'
#: The API server's limit on the (decoded) data of one Secret.
MAX_SECRET_SIZE = 1024 * 1024
MAX_KEY_LENGTH = 253
_KEY = re.compile(r'[-._a-zA-Z0-9]+\Z')
_BASE64_ALPHABET = frozenset('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
                             '0123456789+/')
IMMUTABLE = 'field is immutable when `immutable` is set'


def key_problem(key: str) -> str | None:
    """None when ``key`` may name an entry of a Secret (``IsConfigMapKey``)."""
    if len(key) > MAX_KEY_LENGTH:
        return f'"{key}": must be no more than {MAX_KEY_LENGTH} characters'
    if not _KEY.match(key):
        return (f'"{key}": a valid config key must consist of alphanumeric '
                f"characters, '-', '_' or '.' (e.g. 'key.name', 'KEY_NAME' "
                f"or 'key-name')")
    if key in ('.', '..'):
        return f'"{key}": must not be \'{key}\''
    if key.startswith('..'):
        return f'"{key}": must not start with \'..\''
    return None


def base64_problem(text: str) -> str | None:
    """None when ``text`` is standard base64 with padding (line breaks
    ignored), else where it goes wrong; the value itself is never shown."""
    for index, char in enumerate(text):
        if char in '\r\n' or char in _BASE64_ALPHABET:
            continue
        if char == '=' and not text[index:].rstrip('\r\n').strip('='):
            break
        return f'illegal base64 data at input byte {index}'
    compact = text.replace('\r', '').replace('\n', '')
    if len(compact) % 4:
        return (f'illegal base64 data: {len(compact)} characters is not a '
                f'multiple of 4 (is the "=" padding missing?)')
    try:
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return 'illegal base64 data: misplaced "=" padding'
    return None


def validate_secret(chk: Checker, obj: dict) -> None:
    """Check a Secret (metadata is checked by the caller); default its type,
    merge ``stringData`` into ``data``, write ``data`` in canonical base64."""
    chk.known_fields(obj, '', SECRET_FIELDS)
    if obj.get('type') == '':
        del obj['type']                  # the API server defaults it, too
    secret_type = chk.string(obj, 'type', '', default=DEFAULT_SECRET_TYPE)
    if secret_type is not None and secret_type not in SECRET_TYPES:
        if secret_type in UNSUPPORTED_SECRET_TYPES:
            chk.error('type', f'"{secret_type}" is not supported by kubelab '
                              f'(nothing in the lab uses it); supported: '
                              f'{choices(SECRET_TYPES)}')
        else:
            hint = suggestion(secret_type, SECRET_TYPES) or ';'
            chk.error('type', f'unsupported value "{secret_type}"{hint} '
                              f'supported: {choices(SECRET_TYPES)}')
    chk.boolean(obj, 'immutable', '')
    data = _entries(chk, obj, 'data')
    plain = _entries(chk, obj, 'stringData')
    if data is None or plain is None:
        return
    decoded = {}
    for key, value in data.items():
        value = '' if value is None else value
        if not isinstance(key, str) or not isinstance(value, str):
            continue                                    # reported
        problem = base64_problem(value)
        if problem:
            chk.error(map_key('data', key),
                      f'{problem}; data values must be base64-encoded (put '
                      f'plain text in stringData instead)')
            continue
        decoded[key] = base64.b64decode(
            value.replace('\r', '').replace('\n', ''))
    for key, value in plain.items():
        if isinstance(key, str) and isinstance(value, str):
            decoded[key] = value.encode('utf-8')
    obj.pop('stringData', None)
    if data or plain:
        obj['data'] = {key: base64.b64encode(value).decode('ascii')
                       for key, value in decoded.items()}
    size = sum(len(value) for value in decoded.values())
    if size > MAX_SECRET_SIZE:
        chk.error('data', f'Too long: must have at most {MAX_SECRET_SIZE} '
                          f'bytes, got {size}')
    if secret_type == TLS_SECRET_TYPE:
        for key in (TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY):
            if key not in data and key not in plain:
                chk.error(map_key('data', key),
                          f'required value: a {TLS_SECRET_TYPE} Secret holds '
                          f'the certificate (PEM) in {TLS_CERT_KEY} and its '
                          f'private key in {TLS_PRIVATE_KEY_KEY}')


def string_map(chk, obj, field, encoded: bool, nullable: bool = False) -> dict | None:
    """The map ``obj[field]`` of a Secret or ConfigMap, its keys checked as the API
    server checks them (``key_problem``) and its values strings (``encoded``: base64
    ones; ``nullable``: or null); None when absent or no map."""
    values = chk.mapping(obj, field, '')
    if values is None:
        return None
    for key, value in values.items():
        if not isinstance(key, str):
            chk.error(field, f'keys must be strings, got {describe(key)}')
            continue
        problem = key_problem(key)
        if problem:
            chk.error(map_key(field, key), problem)
        if isinstance(value, str) or (value is None and nullable):
            continue
        what = 'a base64-encoded string' if encoded else 'a string'
        chk.error(map_key(field, key),
                  f'must be {what}, got {describe(value)}'
                  + (' (quote it)' if not isinstance(value, (dict, list)) else ''))
    return values


def _entries(chk, obj, field) -> dict | None:
    """``data`` (base64 strings or null) or ``stringData`` (strings), checked: {} when
    absent, None when it is no map."""
    values = string_map(chk, obj, field, encoded=field == 'data', nullable=field == 'data')
    return {} if values is None and field not in obj else values


def validate_secret_update(chk: Checker, obj: dict, old: dict) -> None:
    """What an update may not change (``ValidateSecretUpdate``): the type,
    and the data of an immutable Secret (which stays immutable)."""
    new_type, old_type = obj.get('type'), old.get('type')
    if new_type != old_type:
        chk.error('type', f'Invalid value: "{new_type}": field is immutable '
                          f'(it is "{old_type}"); delete the Secret and '
                          f'create it again to change its type')
    if old.get('immutable') is True:
        if obj.get('immutable') is not True:
            chk.error('immutable', f'Forbidden: {IMMUTABLE}')
        if (obj.get('data') or {}) != (old.get('data') or {}):
            chk.error('data', f'Forbidden: {IMMUTABLE}; delete the Secret '
                              f'and create it again to change its data')

