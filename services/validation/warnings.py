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
* (not: a Service whose selector matches no pod. A real API server says nothing there,
  and finding it is an exercise's first task: `kubelab get endpointslices` shows it);
* a Service that asks for something nothing in the lab provides, or that kube-proxy
  leaves alone (``service_warnings``): a ``loadBalancerClass`` (no address, EXTERNAL-IP
  ``<pending>``), ``trafficDistribution`` (the lab's nodes have no zones), an external
  IP in one of the lab's own networks (the lab's router does not route it to a node),
  the labels ``service.kubernetes.io/service-proxy-name`` and
  ``service.kubernetes.io/headless`` (no flows at all), an ``externalName`` on a type
  that ignores it.
"""

from __future__ import annotations

from services import wiring
from services.endpoints import HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL
from services.manifests import object_ref

#: Container fields that are accepted and not run.
NOT_EMULATED = ('livenessProbe', 'startupProbe', 'lifecycle.postStart')


def apply_warnings(objs: list[dict], stored, cluster=None) -> list[str]:
    """The warnings for applying ``objs`` (validated) over the ``stored`` objects, in
    ``cluster`` (the cluster file; None: leave out what depends on it)."""
    stored = list(stored)
    out = [w for obj in objs for w in _not_emulated(obj) + _sandbox(obj)]
    out += [w for obj in objs if obj['kind'] == 'Service'
            for w in service_warnings(obj, cluster)]
    nodes = sorted(o['metadata']['name'] for o in stored if o['kind'] == 'Node')
    for obj in objs:
        spec = obj.get('spec') or {}
        if obj['kind'] == 'Deployment':
            spec = spec['template']['spec']
        node = spec.get('nodeName') if obj['kind'] in ('Pod', 'Deployment') else None
        if node and node not in nodes:
            out.append(f'{object_ref(obj)}: spec.nodeName: node "{node}" does '
                       f'not exist, the pod stays Pending; nodes: {", ".join(nodes)}')
    return out


def service_warnings(svc: dict, cluster=None) -> list[str]:
    """What a Service asks for that nothing in the lab does (see the module)."""
    ref, spec = object_ref(svc), svc['spec']
    labels = svc['metadata'].get('labels') or {}
    out = [f'{ref}: metadata.labels["{label}"]: kube-proxy does not handle this '
           f'Service (it watches only Services without this label): no flows for its '
           f'ClusterIP, NodePorts or external addresses until the label is removed'
           for label in (SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL) if label in labels]
    if spec.get('loadBalancerClass') and spec.get('type') == 'LoadBalancer':
        serves = 'its MetalLB serves' if getattr(cluster, 'metallb', False) else \
            'its cloud serves'
        out.append(f'{ref}: spec.loadBalancerClass: no load balancer of this lab '
                   f'implements class "{spec["loadBalancerClass"]}" ({serves} '
                   f'Services without a class): no address, EXTERNAL-IP stays <pending>')
    if spec.get('trafficDistribution'):
        out.append(f'{ref}: spec.trafficDistribution: accepted; the lab\'s nodes have no '
                   f'topology.kubernetes.io/zone label, so the endpoints get no zone '
                   f'hints and every node uses every endpoint, as in a cluster without '
                   f'zones')
    if spec.get('externalName') and spec.get('type') != 'ExternalName':
        out.append(f'{ref}: spec.externalName: only a Service of type ExternalName '
                   f'uses it; ignored')
    for index, ip in enumerate(spec.get('externalIPs') or ()):
        network = wiring.lab_network_of(cluster, ip) if cluster is not None else None
        if network:
            out.append(f'{ref}: spec.externalIPs[{index}]: {ip} is in {network}: the '
                       f'lab\'s router does not route it to a node, so only pods and '
                       f'nodes reach it (every node catches it); use an address outside '
                       f'the lab\'s networks (e.g. 192.0.2.10) to reach it from outside')
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
