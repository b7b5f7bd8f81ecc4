"""Validation and normalisation of ``v1`` ConfigMaps.

A ConfigMap holds configuration a pod reads: as environment variables (``env[].valueFrom.
configMapKeyRef``, ``envFrom[].configMapRef``) or as files (a ``configMap`` volume, see
services/validation/volumes.py). The rules are the API server's (``ValidateConfigMap``):

- ``data`` maps keys (the same rule as a Secret's: ``[-._a-zA-Z0-9]+``, at most 253
  characters, not ``.``/``..`` nor starting with ``..``) to strings; ``binaryData`` maps
  keys to base64 (bytes in JSON). A key may not be in both.
- All values together may hold at most 1 MiB.
- ``immutable`` is a boolean. On update (``validate_configmap_update``) an immutable
  ConfigMap's ``data``, ``binaryData`` and ``immutable`` cannot change.

A ConfigMap has no ``spec`` and no ``status``: its content is its top-level fields, as
the API server keeps it.
"""

import base64

from services.validation.common import Checker, map_key
from services.validation.secret import (IMMUTABLE, MAX_SECRET_SIZE, base64_problem,
                                        string_map)

CONFIGMAP_FIELDS = ('apiVersion', 'kind', 'metadata', 'data', 'binaryData', 'immutable')
#: The API server's limit on the data of one ConfigMap (the same as a Secret's).
MAX_CONFIGMAP_SIZE = MAX_SECRET_SIZE


def validate_configmap(chk: Checker, obj: dict) -> None:
    """Check a ConfigMap (metadata is checked by the caller); ``binaryData`` is written
    back in canonical base64."""
    chk.known_fields(obj, '', CONFIGMAP_FIELDS)
    chk.boolean(obj, 'immutable', '')
    data = _entries(chk, obj, 'data')
    binary = _entries(chk, obj, 'binaryData')
    size = 0
    for key, value in (data or {}).items():
        if isinstance(key, str) and isinstance(value, str):
            size += len(value.encode('utf-8'))
            if key in (binary or {}):
                chk.error(map_key('data', key), f'Invalid value: "{key}": duplicate of '
                                                f'key present in binaryData')
    decoded = {}
    for key, value in (binary or {}).items():
        if not (isinstance(key, str) and isinstance(value, str)):
            continue
        problem = base64_problem(value)
        if problem:
            chk.error(map_key('binaryData', key),
                      f'{problem}; binaryData values must be base64-encoded (put text '
                      f'in data instead)')
            continue
        decoded[key] = base64.b64decode(value.replace('\r', '').replace('\n', ''))
        size += len(decoded[key])
    if decoded:
        obj['binaryData'] = {key: base64.b64encode(value).decode('ascii')
                             for key, value in decoded.items()}
    if size > MAX_CONFIGMAP_SIZE:
        chk.error('data', f'Too long: must have at most {MAX_CONFIGMAP_SIZE} bytes, '
                          f'got {size}')


def _entries(chk, obj, field) -> dict | None:
    """``data`` (strings) or ``binaryData`` (base64 strings), checked; None when absent
    or no map."""
    return string_map(chk, obj, field, encoded=field == 'binaryData')


def validate_configmap_update(chk: Checker, obj: dict, old: dict) -> None:
    """What an update may not change (``ValidateConfigMapUpdate``): the content of an
    immutable ConfigMap, which stays immutable."""
    if old.get('immutable') is not True:
        return
    if obj.get('immutable') is not True:
        chk.error('immutable', f'Forbidden: {IMMUTABLE}')
    for field in ('data', 'binaryData'):
        if (obj.get(field) or {}) != (old.get(field) or {}):
            chk.error(field, f'Forbidden: {IMMUTABLE}; delete the ConfigMap and create '
                             f'it again to change its {field}')

