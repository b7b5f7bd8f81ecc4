"""The endpoint controller: a Service and pods -> its EndpointSlices.

A pure function with the rules of Kubernetes' EndpointSlice controller:

* only a Service with a selector gets managed slices, and never an ExternalName
  Service (a DNS alias has no endpoints); a pod is an endpoint
  when it is in the Service's namespace, its labels match, it has an IP and it
  has not finished (phase Succeeded/Failed);
* conditions: ``serving`` = the pod's Ready condition, ``terminating`` = the
  pod has a deletionTimestamp, ``ready`` = serving and not terminating (or
  always, with ``publishNotReadyAddresses``). The kubelet keeps probing a
  terminating pod, so its endpoint stays serving while its containers pass
  their readiness probes (KEP-1669), and kube-proxy may still use it;
* each Service port is resolved per pod (a named ``targetPort`` is looked up
  in the pod's container ports, same protocol); a pod that cannot resolve a
  port is left out of that port. Endpoints with the same resolved port list
  share slices, at most 100 endpoints each;
* a selector Service with no endpoints still gets one empty slice;
* slices keep their names across recomputes: an existing slice with the same
  ports is reused first, then any unused one; new names are
  ``<service>-<5 random characters>``.

Output is sorted (slices by port list, endpoints by IP); only newly generated
names depend on ``rng``. The consumers of the slices (kube-proxy's dataplane, the
DNS, the L7 backends, the health server) read them through services/endpoints.py.
"""

import functools
import ipaddress
import random

import msgspec

from services.conditions import pod_ready
from services.naming import random_suffix
from services.selectors import matches

SERVICE_NAME_LABEL = 'kubernetes.io/service-name'
MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by'
CONTROLLER_NAME = 'endpointslice-controller.k8s.io'
MAX_ENDPOINTS_PER_SLICE = 100
#: Longest generated-name prefix, so that prefix + 5 characters fit in 63.
MAX_NAME_PREFIX = _MAX_PREFIX = 58


def _ip_order(endpoint: dict):
    address = endpoint['addresses'][0]
    try:
        return 0, int(ipaddress.IPv4Address(address)), address
    except ValueError:
        return 1, 0, address


def _is_candidate(pod: dict, namespace: str, selector: dict) -> bool:
    meta = pod.get('metadata') or {}
    status = pod.get('status') or {}
    return (meta.get('namespace', 'default') == namespace
            and matches(selector, meta.get('labels'))
            and bool(status.get('podIP'))
            and status.get('phase') not in ('Succeeded', 'Failed'))


def find_port(pod: dict, target, protocol: str) -> int | None:
    """The pod's port for a Service ``targetPort`` (number or port name)."""
    if not isinstance(target, str):
        return target
    for container in (pod.get('spec') or {}).get('containers') or ():
        for port in container.get('ports') or ():
            if port.get('name') == target and \
                    port.get('protocol', 'TCP') == protocol:
                return port.get('containerPort')
    return None


def _pod_ports(service_ports: list, pod: dict) -> tuple:
    """The pod's resolved port list as a hashable, sortable key."""
    resolved = []
    for port in service_ports:
        protocol = port.get('protocol', 'TCP')
        number = find_port(pod, port.get('targetPort', port.get('port')),
                           protocol)
        if number is not None:
            resolved.append((port.get('name') or '', number, protocol,
                             port.get('appProtocol') or ''))
    return tuple(resolved)


def _slice_ports(endpoint_slice: dict) -> tuple:
    return tuple((port.get('name') or '', port.get('port'),
                  port.get('protocol', 'TCP'), port.get('appProtocol') or '')
                 for port in endpoint_slice.get('ports') or ())


@functools.lru_cache(maxsize=4096)
def _render_ports(key: tuple) -> list[dict]:
    """A slice's ports: one list for every slice with these ports (the slices of
    Services that select alike: the change stream then sends it once), which nothing
    changes in place, as their endpoints."""
    ports = []
    for name, number, protocol, app_protocol in key:
        port = {'name': name, 'port': number, 'protocol': protocol}
        if app_protocol:
            port['appProtocol'] = app_protocol
        ports.append(port)
    return ports


def _endpoint(pod: dict, publish_not_ready: bool) -> dict:
    meta = pod['metadata']
    serving = pod_ready(pod)
    terminating = bool(meta.get('deletionTimestamp'))
    endpoint = {
        'addresses': [pod['status']['podIP']],
        'conditions': {
            'ready': publish_not_ready or (serving and not terminating),
            'serving': serving,
            'terminating': terminating,
        },
    }
    node = (pod.get('spec') or {}).get('nodeName')
    if node:
        endpoint['nodeName'] = node
    endpoint['targetRef'] = {'kind': 'Pod',
                             'namespace': meta.get('namespace', 'default'),
                             'name': meta.get('name'),
                             'uid': meta.get('uid', '')}
    return endpoint


def _owned(existing: list[dict], namespace: str, name: str) -> list[dict]:
    owned = []
    for endpoint_slice in existing:
        meta = endpoint_slice.get('metadata') or {}
        labels = meta.get('labels') or {}
        if meta.get('namespace', 'default') == namespace and \
                labels.get(SERVICE_NAME_LABEL) == name and \
                labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME:
            owned.append(endpoint_slice)
    return sorted(owned, key=lambda s: s['metadata']['name'])


def _assign_names(keys: list[tuple], service_name: str, owned: list[dict],
                  taken: set[str], rng) -> list[str]:
    """A name per slice: reuse same-ports slices, then any unused, then new."""
    names: list[str | None] = [None] * len(keys)
    unused = list(owned)
    for index, key in enumerate(keys):
        for endpoint_slice in unused:
            if _slice_ports(endpoint_slice) == key:
                names[index] = endpoint_slice['metadata']['name']
                unused.remove(endpoint_slice)
                break
    for index in range(len(keys)):
        if names[index] is None and unused:
            names[index] = unused.pop(0)['metadata']['name']
    prefix = f'{service_name}-'[:_MAX_PREFIX]
    for index in range(len(keys)):
        while names[index] is None:
            candidate = prefix + random_suffix(5, rng)
            if candidate not in taken:
                names[index] = candidate
        taken.add(names[index])
    return names


def _chunks(pods: list[dict], namespace: str, selector: dict, ports: list,
            publish: bool) -> list[tuple]:
    """(ports key, endpoints) per slice: endpoints grouped by their resolved ports,
    sorted by IP, at most MAX_ENDPOINTS_PER_SLICE each."""
    groups: dict[tuple, list[dict]] = {}
    for pod in pods:
        if _is_candidate(pod, namespace, selector):
            key = _pod_ports(ports, pod)
            groups.setdefault(key, []).append(_endpoint(pod, publish))
    if not groups:
        groups[()] = []
    chunks = []
    for key in sorted(groups):
        endpoints = sorted(groups[key], key=_ip_order)
        for start in range(0, max(len(endpoints), 1),
                           MAX_ENDPOINTS_PER_SLICE):
            chunks.append(
                (key, endpoints[start:start + MAX_ENDPOINTS_PER_SLICE]))
    return chunks


def compute_endpoint_slices(service: dict, pods: list[dict],
                            existing: list[dict],
                            rng: random.Random | None = None,
                            memo: dict | None = None) -> list[dict]:
    """The EndpointSlices the controller wants for ``service``.

    ``existing`` are the slices stored now (any; only the ones this controller
    manages for this Service are reused). ``memo``, a dict the caller keeps while
    ``pods`` stay the same, holds the endpoints per (namespace, selector, ports,
    publishNotReadyAddresses): Services that select alike share them (the lists are
    the same objects: never change a slice in place).
    """
    spec = service.get('spec') or {}
    selector = spec.get('selector')
    if not selector or spec.get('type') == 'ExternalName':
        return []
    meta = service['metadata']
    name = meta['name']
    namespace = meta.get('namespace', 'default')
    publish = bool(spec.get('publishNotReadyAddresses'))
    ports = spec.get('ports') or []
    if memo is None:
        chunks = _chunks(pods, namespace, selector, ports, publish)
    else:
        signature = (namespace, msgspec.json.encode([selector, ports, publish],
                                                    order='sorted'))
        if signature not in memo:
            memo[signature] = _chunks(pods, namespace, selector, ports, publish)
        chunks = memo[signature]
    taken = {(s.get('metadata') or {}).get('name') for s in existing}
    names = _assign_names([key for key, _ in chunks], name,
                          _owned(existing, namespace, name), taken, rng)
    owner = {'apiVersion': 'v1', 'kind': 'Service', 'name': name,
             'uid': meta.get('uid', ''), 'controller': True}
    return [{
        'apiVersion': 'discovery.k8s.io/v1',
        'kind': 'EndpointSlice',
        'metadata': {
            'name': slice_name,
            'namespace': namespace,
            'labels': {SERVICE_NAME_LABEL: name,
                       MANAGED_BY_LABEL: CONTROLLER_NAME},
            'ownerReferences': [dict(owner)],
        },
        'addressType': 'IPv4',
        'endpoints': endpoints,
        'ports': _render_ports(key),
    } for slice_name, (key, endpoints) in zip(names, chunks)]
