"""Validation of a container's ``env`` and ``envFrom``.

``env`` entries have a ``name`` and either a ``value`` (``$(VAR)`` expands to what is
defined before it) or a ``valueFrom``: ``fieldRef`` (the downward API),
``configMapKeyRef`` or ``secretKeyRef`` (``name``, ``key``, ``optional``). ``envFrom``
entries take every key of a ConfigMap (``configMapRef``) or a Secret (``secretRef``),
with an optional ``prefix``. The rules and messages are the API server's; what the
kubelet does with them is services/container_config.py.
"""

from services.validation.common import (Checker, dns1123_subdomain_problem, join)
from services.validation.secret import key_problem

ENV_FIELDS = ('name', 'value', 'valueFrom')
#: Downward-API fields an env var may take with ``valueFrom.fieldRef``.
ENV_FIELD_PATHS = ('metadata.name', 'metadata.namespace', 'metadata.uid',
                   'spec.nodeName', 'spec.serviceAccountName',
                   'status.hostIP', 'status.podIP')
VALUE_SOURCES = ('fieldRef', 'configMapKeyRef', 'secretKeyRef')
UNSUPPORTED_VALUE_SOURCES = {
    'resourceFieldRef': "read the container's limits from the manifest instead"}
ENV_FROM_SOURCES = ('configMapRef', 'secretRef')


def validate_env(chk: Checker, container: dict, path: str) -> None:
    for epath, env in chk.items(container, 'env', path):
        _env(chk, env, epath)
    for epath, source in chk.items(container, 'envFrom', path):
        _env_from(chk, source, epath)


def _name_problem(name: str) -> str | None:
    if not name or '=' in name:
        return (f'"{name}" is not a valid environment variable name: it must be '
                f"non-empty and must not contain '='")
    return None


def _env(chk, env, path) -> None:
    chk.known_fields(env, path, ENV_FIELDS)
    name = chk.string(env, 'name', path, required=True)
    if name is not None and _name_problem(name):
        chk.error(join(path, 'name'), _name_problem(name))
    value = chk.string(env, 'value', path)
    source = chk.mapping(env, 'valueFrom', path)
    if source is None:
        return
    spath = join(path, 'valueFrom')
    if value:
        chk.error(spath, 'may not be specified when `value` is not empty')
    chk.known_fields(source, spath, VALUE_SOURCES, (), UNSUPPORTED_VALUE_SOURCES)
    given = [k for k in VALUE_SOURCES + tuple(UNSUPPORTED_VALUE_SOURCES) if k in source]
    if not given:
        chk.error(spath, 'must specify one of: `fieldRef`, `configMapKeyRef` or '
                         '`secretKeyRef`')
    elif len(given) > 1:
        chk.error(spath, 'may not have more than one field specified at a time')
    ref = chk.mapping(source, 'fieldRef', spath)
    if ref is not None:
        rpath = join(spath, 'fieldRef')
        chk.known_fields(ref, rpath, ('fieldPath', 'apiVersion'))
        chk.one_of(ref, 'fieldPath', rpath, ENV_FIELD_PATHS, required=True)
    for kind in ('configMapKeyRef', 'secretKeyRef'):
        ref = chk.mapping(source, kind, spath)
        if ref is None:
            continue
        rpath = join(spath, kind)
        chk.known_fields(ref, rpath, ('name', 'key', 'optional'))
        _object_name(chk, ref, rpath)
        key = chk.string(ref, 'key', rpath, required=True)
        if key is not None and key_problem(key):
            chk.error(join(rpath, 'key'), key_problem(key))
        chk.boolean(ref, 'optional', rpath)


def _object_name(chk, ref, path) -> None:
    name = chk.string(ref, 'name', path, required=True)
    if name is not None:
        chk.name(name, join(path, 'name'), dns1123_subdomain_problem)


def _env_from(chk, source, path) -> None:
    chk.known_fields(source, path, ENV_FROM_SOURCES + ('prefix',))
    prefix = chk.string(source, 'prefix', path)
    if prefix and '=' in prefix:
        chk.error(join(path, 'prefix'), f'"{prefix}" must not contain \'=\'')
    given = [k for k in ENV_FROM_SOURCES if k in source]
    if not given:
        chk.error(path, 'must specify one of: `configMapRef` or `secretRef`')
    elif len(given) > 1:
        chk.error(path, 'may not have more than one field specified at a time')
    for kind in ENV_FROM_SOURCES:
        ref = chk.mapping(source, kind, path)
        if ref is not None:
            rpath = join(path, kind)
            chk.known_fields(ref, rpath, ('name', 'optional'))
            _object_name(chk, ref, rpath)
            chk.boolean(ref, 'optional', rpath)
