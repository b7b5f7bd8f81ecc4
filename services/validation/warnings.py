"""The API server's warnings on an apply: what is accepted but will not do what it says.

``kubectl apply`` prints them as ``Warning:`` lines; they never refuse an object.
``apply_warnings`` gives, for the objects of one apply and the objects already stored:

* container fields kubelab accepts but does not act on (``livenessProbe``,
  ``startupProbe``, ``lifecycle.postStart``; readiness probes and preStop hooks run);
* security settings the sandbox cannot honour as written: a ``RuntimeDefault`` seccomp
  or AppArmor profile (kubelab loads none), ``allowPrivilegeEscalation: true`` (kubelab
  always sets no_new_privs);
* a Pod or Deployment template naming a ``spec.nodeName`` that is no node: the pod
  stays Pending;
* a Service whose selector matches no pod, stored or in the same apply (a
  Deployment's template counts): it rejects connections until a ready pod matches.
"""

from __future__ import annotations

from services import selectors
from services.manifests import object_ref

#: Container fields that are accepted and not run.
NOT_EMULATED = ('livenessProbe', 'startupProbe', 'lifecycle.postStart')


def apply_warnings(objs: list[dict], stored) -> list[str]:
    """The warnings for applying ``objs`` (validated) over the ``stored`` objects."""
    stored = list(stored)
    out = [w for obj in objs for w in _not_emulated(obj) + _sandbox(obj)]
    nodes = sorted(o['metadata']['name'] for o in stored if o['kind'] == 'Node')
    for obj in objs:
        spec = obj.get('spec') or {}
        if obj['kind'] == 'Deployment':
            spec = spec['template']['spec']
        node = spec.get('nodeName') if obj['kind'] in ('Pod', 'Deployment') else None
        if node and node not in nodes:
            out.append(f'{object_ref(obj)}: spec.nodeName: node "{node}" does '
                       f'not exist, the pod stays Pending; nodes: {", ".join(nodes)}')
    pods = [o for o in stored if o['kind'] == 'Pod']
    templates = [o for o in objs if o['kind'] in ('Pod', 'Deployment')]
    for obj in objs:
        sel = obj['kind'] == 'Service' and obj['spec'].get('selector')
        if not sel:
            continue
        ns = obj['metadata']['namespace']
        labels = [p['metadata'].get('labels', {}) for p in pods
                  if p['metadata']['namespace'] == ns]
        labels += [(t['spec']['template']['metadata'].get('labels', {})
                    if t['kind'] == 'Deployment' else t['metadata'].get('labels', {}))
                   for t in templates if t['metadata']['namespace'] == ns]
        if not any(selectors.matches(sel, lab) for lab in labels):
            out.append(f'{object_ref(obj)}: spec.selector '
                       f'{selectors.format_selector(sel)} matches no pods (yet); the '
                       f'Service rejects connections until a ready pod matches')
    return out


def _not_emulated(obj: dict) -> list[str]:
    """Warnings for container fields kubelab accepts but does not act on."""
    if obj['kind'] == 'Pod':
        spec, path = obj['spec'], 'spec'
    elif obj['kind'] == 'Deployment':
        spec, path = obj['spec']['template']['spec'], 'spec.template.spec'
    else:
        return []
    return [f'{object_ref(obj)}: {path}.containers[{i}].{field}: accepted but not '
            f'run by kubelab (it runs readinessProbe and preStop hooks)'
            for i, c in enumerate(spec.get('containers', [])) for field in NOT_EMULATED
            if _has(c, field)]


def _pod_spec(obj: dict) -> tuple[dict | None, str]:
    if obj['kind'] == 'Pod':
        return obj['spec'], 'spec'
    if obj['kind'] == 'Deployment':
        return obj['spec']['template']['spec'], 'spec.template.spec'
    return None, ''


def _sandbox(obj: dict) -> list[str]:
    """Warnings for security settings the sandbox cannot honour as written."""
    spec, path = _pod_spec(obj)
    if spec is None:
        return []
    contexts = [(f'{path}.securityContext', spec.get('securityContext') or {})]
    contexts += [(f'{path}.containers[{i}].securityContext', c.get('securityContext') or {})
                 for i, c in enumerate(spec.get('containers', []))]
    out = []
    for where, ctx in contexts:
        for key, what in (('seccompProfile', 'seccomp'), ('appArmorProfile', 'AppArmor')):
            if (ctx.get(key) or {}).get('type') == 'RuntimeDefault':
                out.append(f'{object_ref(obj)}: {where}.{key}.type: RuntimeDefault: '
                           f'kubelab loads no {what} profile; the container runs without '
                           f'one (Unconfined)')
        if ctx.get('allowPrivilegeEscalation') is True:
            out.append(f'{object_ref(obj)}: {where}.allowPrivilegeEscalation: true: '
                       f'kubelab always sets no_new_privs, so setuid programs gain no '
                       f'privileges (as with false)')
    return out


def _has(obj: dict, dotted: str) -> bool:
    for part in dotted.split('.'):
        if not isinstance(obj, dict) or part not in obj:
            return False
        obj = obj[part]
    return True
