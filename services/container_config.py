"""What a container is given from the API: its environment and its configuration files.

The kubelet builds a container's environment as Kubernetes does
(``makeEnvironmentVariables``): first every ``envFrom`` source in order (a ConfigMap's or
a Secret's keys, each with the source's ``prefix``; a later source wins), then ``env`` in
order, each ``value`` expanded with ``$(VAR)`` against what is defined so far (``$$`` is a
``$``; an unknown name stays as written; bounded by Linux's limits on what a process
is given, ``MAX_ARG_STRLEN`` per string and ``MAX_EXPANDED_TOTAL`` in all, past which
``ExpansionTooLarge`` names the variable: topo/images/runtime.py tells why), each ``valueFrom`` read from the downward API
(``fieldRef``), a ConfigMap key (``configMapKeyRef``) or a Secret key (``secretKeyRef``).

A ``configMap`` or ``secret`` volume holds one file per key (or per ``items`` entry, at
its ``path``), with ``defaultMode`` (0644) or the item's ``mode``.

Who a container runs as (``run_as``): ``runAsUser``/``runAsGroup`` of the container, else
of the pod, else the image's user (every emulated image runs as root; a user without a
group takes its group from the image's /etc/passwd, here the machine's, else 0); its
groups are the group, ``fsGroup`` and ``supplementalGroups`` (with ``Merge``, the
default, also the groups /etc/group gives the user). ``runAsNonRoot`` is checked here, as
the kubelet checks it before it starts the container. Its capabilities
(``capabilities``): the runtime's default set, minus ``drop`` (``ALL``: all of it), plus
``add``.

What is missing stops the container, with the kubelet's words: a missing ConfigMap,
Secret or key that is not ``optional`` raises ``ConfigError``; the kubelet reports it as
``CreateContainerConfigError`` (environment) or keeps the pod in ``ContainerCreating``
(volumes, the ``FailedMount`` of a real kubelet) and tries again when the objects change.
Pure functions over the objects the kubelet read from the store (``Sources``).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Callable

from services.validation.security import DEFAULT_CAPABILITIES, capability_name

_REFERENCE = re.compile(r'\$\$|\$\(([^()$]*)\)')
DEFAULT_MODE = 0o644
#: Linux's limit on one argument or ``NAME=value`` environment string (32 pages).
MAX_ARG_STRLEN = 131072
#: What all of a container's expanded env values and arguments may add up to (Linux's
#: ARG_MAX is a quarter of the stack limit: 2 MiB with the usual 8 MiB stack).
MAX_EXPANDED_TOTAL = 2 * 1024 * 1024


class ConfigError(Exception):
    """A container cannot be given what its spec asks for (the kubelet's message)."""


class ExpansionTooLarge(ValueError):
    """A ``$(VAR)`` expansion would exceed what Linux lets a process be given."""


def expand(text: str, env: dict, where: str = '', budget: list | None = None) -> str:
    """Kubernetes' ``$(VAR)`` expansion of ``text`` using ``env``, in one pass.

    Raises ExpansionTooLarge, naming ``where``, as soon as the result passes
    MAX_ARG_STRLEN or the shared ``budget`` (a one-item list of bytes left), before
    the rest is built."""
    parts, size, pos = [], 0, 0
    for match in _REFERENCE.finditer(text):
        if match.group(0) == '$$':
            value = '$'
        else:
            value = env.get(match.group(1), match.group(0))
        parts += [text[pos:match.start()], value]
        size += match.start() - pos + len(value)
        pos = match.end()
        if size > MAX_ARG_STRLEN:
            break
    parts.append(text[pos:])
    size += len(text) - pos
    left = budget[0] if budget is not None else MAX_EXPANDED_TOTAL
    if size > min(MAX_ARG_STRLEN, left):
        limit = 'MAX_ARG_STRLEN, 131072 bytes' if size > MAX_ARG_STRLEN else \
            f'with the rest, {MAX_EXPANDED_TOTAL} bytes in all'
        raise ExpansionTooLarge(
            f'{where or "a value"}: $(VAR) references expand to more than Linux passes '
            f'to a process ({limit}): the container cannot start (argument list too '
            'long); Kubernetes expands each reference to an earlier variable, so every '
            'level of $(A)$(A) doubles the size')
    if budget is not None:
        budget[0] -= size
    return ''.join(parts)


@dataclass
class Sources:
    """The ConfigMaps and Secrets of a pod's namespace, by name (what the kubelet read),
    or ``lookup(kind, name)`` (the object or None) that reads them when asked."""
    namespace: str = 'default'
    configmaps: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)
    lookup: Callable | None = None

    def _object(self, kind: str, name: str, optional: bool) -> dict | None:
        if self.lookup is not None:
            obj = self.lookup(kind, name)
        else:
            obj = (self.configmaps if kind == 'ConfigMap' else self.secrets).get(name)
        if obj is None and not optional:
            raise ConfigError(f'{kind.lower()} "{name}" not found')
        return obj

    def entries(self, kind: str, name: str, optional: bool = False) -> dict | None:
        """The keys of a ConfigMap or Secret and their bytes (None: optional and
        missing)."""
        obj = self._object(kind, name, optional)
        if obj is None:
            return None
        if kind == 'Secret':
            return {k: base64.b64decode(v or '') for k, v in (obj.get('data') or {}).items()}
        out = {k: v.encode('utf-8') for k, v in (obj.get('data') or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get('binaryData') or {}).items()})
        return out

    def value(self, kind: str, ref: dict) -> bytes | None:
        """One key (``configMapKeyRef``/``secretKeyRef``): its bytes, or None when the
        reference is optional and missing."""
        optional = bool(ref.get('optional'))
        entries = self.entries(kind, ref.get('name', ''), optional)
        if entries is None:
            return None
        if ref['key'] not in entries:
            if optional:
                return None
            raise ConfigError(f'couldn\'t find key {ref["key"]} in {kind} '
                              f'{self.namespace}/{ref.get("name", "")}')
        return entries[ref['key']]


def env_vars(container: dict, fields: dict | None = None,
             sources: Sources | None = None) -> dict[str, str]:
    """The container's own variables (``envFrom`` then ``env``), in Kubernetes' order
    and expansion; ``fields`` are the downward API's values (``metadata.name``...)."""
    fields = fields or {}
    sources = sources or Sources()
    env: dict[str, str] = {}
    budget = [MAX_EXPANDED_TOTAL]
    for source in container.get('envFrom') or []:
        kind, ref = (('ConfigMap', source['configMapRef']) if 'configMapRef' in source
                     else ('Secret', source.get('secretRef') or {}))
        entries = sources.entries(kind, ref.get('name', ''), bool(ref.get('optional')))
        for key, data in sorted((entries or {}).items()):
            name = source.get('prefix', '') + key
            if '=' not in name:              # the kubelet skips what cannot be a name
                env[name] = data.decode('utf-8', 'replace')
    for i, var in enumerate(container.get('env') or []):
        if 'name' not in var:
            continue
        source = var.get('valueFrom')
        if source is None:
            where = f'container "{container.get("name") or "<unnamed>"}": env[{i}] ' \
                f'({var["name"]})'
            env[var['name']] = expand(str(var.get('value', '')), env, where, budget)
        elif 'fieldRef' in source:
            path = source['fieldRef'].get('fieldPath')
            if path in fields:
                env[var['name']] = fields[path]
        else:
            for kind, key in (('ConfigMap', 'configMapKeyRef'), ('Secret', 'secretKeyRef')):
                data = sources.value(kind, source[key]) if key in source else None
                if data is not None:
                    env[var['name']] = data.decode('utf-8', 'replace')
    return env


def volume_files(volume: dict, sources: Sources) -> dict[str, tuple[bytes, int]] | None:
    """The files of a ``configMap`` or ``secret`` volume: relative path -> (bytes, mode).
    None for other volume kinds; {} for an optional source that does not exist."""
    if 'configMap' in volume:
        kind, spec = 'ConfigMap', volume['configMap']
        name = spec.get('name', '')
    elif 'secret' in volume:
        kind, spec = 'Secret', volume['secret']
        name = spec.get('secretName', '')
    else:
        return None
    optional = bool(spec.get('optional'))
    entries = sources.entries(kind, name, optional)
    if entries is None:
        return {}
    mode = spec.get('defaultMode', DEFAULT_MODE)
    items = spec.get('items')
    if not items:
        return {key: (data, mode) for key, data in entries.items()}
    files = {}
    for item in items:
        if item['key'] not in entries:
            if optional:
                continue
            raise ConfigError(f'{kind.lower()} references non-existent '
                              f'{"config" if kind == "ConfigMap" else "secret"} key: '
                              f'{item["key"]}')
        files[item['path']] = (entries[item['key']], item.get('mode', mode))
    return files


@dataclass
class RunAs:
    uid: int
    gid: int
    groups: tuple


def run_as(pod: dict, container: dict, passwd=None) -> RunAs:
    """Who the container runs as; ``passwd(uid)`` gives (user name, gid, [groups the
    image's /etc/group lists the user in]) or None. Raises ``ConfigError`` when
    ``runAsNonRoot`` would run root."""
    pod_ctx = pod['spec'].get('securityContext') or {}
    ctx = container.get('securityContext') or {}

    def pick(key):
        return ctx[key] if ctx.get(key) is not None else pod_ctx.get(key)
    uid = pick('runAsUser')
    entry = passwd(uid or 0) if passwd else None
    gid = pick('runAsGroup')
    if gid is None:
        gid = entry[1] if entry else 0
    if pick('runAsNonRoot') and not uid:
        meta = pod['metadata']
        who = (f'(pod: "{meta["name"]}_{meta["namespace"]}({meta.get("uid", "")})", '
               f'container: {container["name"]})')
        raise ConfigError(f'container\'s runAsUser breaks non-root policy {who}'
                          if uid == 0 else
                          f'container has runAsNonRoot and image will run as root {who}')
    groups = {gid, *(pod_ctx.get('supplementalGroups') or [])}
    if pod_ctx.get('fsGroup') is not None:
        groups.add(pod_ctx['fsGroup'])
    if pod_ctx.get('supplementalGroupsPolicy', 'Merge') == 'Merge' and entry:
        groups.update(entry[2])
    return RunAs(uid or 0, gid, tuple(sorted(groups)))


def capabilities(container: dict) -> list[str]:
    """The container's capabilities: the runtime's defaults, ``drop``, then ``add``."""
    caps = (container.get('securityContext') or {}).get('capabilities') or {}
    drop = {capability_name(c) for c in caps.get('drop') or []}
    add = {capability_name(c) for c in caps.get('add') or []}
    base = set() if 'ALL' in drop else set(DEFAULT_CAPABILITIES)
    return sorted((base - drop) | add)
