"""A Service's nodePorts and healthCheckNodePort, as the API server assigns them.

A NodePort or LoadBalancer Service holds one port of the NodePort range
(``NodePortAllocator``, in allocators.py) for each of its ports: a requested
``nodePort`` is reserved (refused when taken or outside the range), a missing one
allocated and written into ``spec.ports[i].nodePort``. Ports with the same number and
different protocols (53/TCP and 53/UDP) share one nodePort, as the API server allocates
them. On an update a port without a nodePort keeps the one it had, matched by name,
else by port and protocol (as the API server patches them in). Ports no longer used
are released after the Service's new ones are taken (so it never gets back a port it
gives up) and are free for the next object of the apply at once. Going back to
ClusterIP, and deleting the Service, release them all. A LoadBalancer Service is a
NodePort Service plus a load balancer: it keeps its nodePorts across NodePort <->
LoadBalancer changes.

With ``externalTrafficPolicy: Local`` a LoadBalancer Service also holds a
``spec.healthCheckNodePort`` from the same range: requested or allocated like a
nodePort, then immutable while needed, released when no longer needed.

The store calls ``assign_node_ports`` on a copy of the allocator while it checks an
apply, and keeps the copy only when the whole apply passes.
"""

from __future__ import annotations

from services.allocation.allocators import NodePortAllocator
from services.errors import AllocationError, ValidationError
from services.validation.service import EXTERNAL_SERVICE_TYPES, HEADLESS_EXTERNAL


def _node_ports(spec: dict) -> set[int]:
    """The nodePorts a Service spec holds."""
    return {p['nodePort'] for p in spec.get('ports') or [] if p.get('nodePort')}


def _held_node_ports(spec: dict) -> set[int]:
    """Every port of the NodePort range a Service spec holds: its nodePorts and its
    healthCheckNodePort."""
    health = spec.get('healthCheckNodePort')
    return _node_ports(spec) | ({health} if health else set())


def _kept_node_ports(ports: list[dict], old_ports: list[dict]) -> None:
    """Give each port without a nodePort the one its old self had, as the API server
    patches them in: matched by name, else by port and protocol; never a value that
    another port of the new spec uses for the same protocol."""
    taken = {(p['protocol'], p['nodePort']) for p in ports if p.get('nodePort')}
    matchers = (lambda p, o: p.get('name', '') == o.get('name', ''),
                lambda p, o: (p['port'], p['protocol']) == (o['port'], o['protocol']))
    for same in matchers:
        for port in ports:
            if port.get('nodePort'):
                continue
            for old in old_ports:
                value = old.get('nodePort')
                if value and same(port, old) and (port['protocol'], value) not in taken:
                    port['nodePort'] = value
                    taken.add((port['protocol'], value))
                    break


def assign_node_ports(obj: dict, old: dict | None, allocator: NodePortAllocator,
                      ref: str) -> list[ValidationError]:
    """Reserve, keep or allocate the nodePorts and the healthCheckNodePort of a Service
    being applied (writing them into its spec) and release those its old version no
    longer uses, after the new ones are taken."""
    spec = obj['spec']
    old_spec = old['spec'] if old is not None else {}
    if spec.get('type') not in EXTERNAL_SERVICE_TYPES:
        for port in spec['ports']:
            port.pop('nodePort', None)
        for value in _held_node_ports(old_spec):
            allocator.release(value)
        return []
    errors = []
    if spec.get('clusterIP') == 'None':          # a headless Service turned NodePort
        errors.append(ValidationError(ref, 'spec.clusterIP', 'Invalid value: "None": '
                                      + HEADLESS_EXTERNAL.format(type=spec['type'])))
    ports = spec['ports']
    if old is not None:
        _kept_node_ports(ports, old_spec.get('ports') or [])
    reserved = _node_ports(old_spec)
    for i, port in enumerate(ports):
        value = port.get('nodePort')
        if not value or value in reserved:
            continue
        try:
            allocator.reserve(value)
        except AllocationError as exc:
            errors.append(ValidationError(ref, f'spec.ports[{i}].nodePort',
                                          f'Invalid value: {value}: {exc}'))
            continue
        reserved.add(value)
    for i, port in enumerate(ports):
        if port.get('nodePort'):
            continue
        shared = _shared_node_port(port, ports)
        if shared:
            port['nodePort'] = shared
            continue
        try:
            port['nodePort'] = allocator.allocate()
        except AllocationError as exc:
            errors.append(ValidationError(ref, f'spec.ports[{i}].nodePort',
                                          f'failed to allocate a nodePort: {exc}'))
    errors.extend(_assign_health_check_node_port(spec, old_spec, allocator, ref))
    for value in _held_node_ports(old_spec) - _held_node_ports(spec):
        allocator.release(value)
    return errors


def _shared_node_port(port: dict, ports: list[dict]) -> int | None:
    """The nodePort of another port with the same number and another protocol (53/TCP
    and 53/UDP share one, as the API server allocates them), if this protocol does
    not use it yet."""
    used = {p['nodePort'] for p in ports
            if p.get('nodePort') and p['protocol'] == port['protocol']}
    for other in ports:
        value = other.get('nodePort')
        if value and other['port'] == port['port'] and \
                other['protocol'] != port['protocol'] and value not in used:
            return value
    return None


def _needs_health_check(spec: dict) -> bool:
    """A LoadBalancer Service with ``externalTrafficPolicy: Local``: its load balancer
    sends only to nodes with a local endpoint, found by health checks on a port of its
    own (``healthCheckNodePort``)."""
    return (spec.get('type'), spec.get('externalTrafficPolicy')) == ('LoadBalancer', 'Local')


def _assign_health_check_node_port(spec: dict, old_spec: dict, allocator: NodePortAllocator,
                                   ref: str) -> list[ValidationError]:
    """Keep, reserve or allocate ``spec.healthCheckNodePort``, as the API server does:
    a Service that had one keeps it (another value is refused, the field is immutable
    while needed); one that starts to need it gets the requested port or a free one.
    (Validation has refused the field where it is not needed.)"""
    if not _needs_health_check(spec):
        return []
    want = spec.get('healthCheckNodePort')
    if _needs_health_check(old_spec):
        have = old_spec['healthCheckNodePort']
        if want and want != have:
            return [ValidationError(ref, 'spec.healthCheckNodePort',
                                    f'Invalid value: {want}: field is immutable (it is {have})')]
        spec['healthCheckNodePort'] = have
        return []
    try:
        spec['healthCheckNodePort'] = allocator.reserve(want) if want else allocator.allocate()
    except AllocationError as exc:
        if want:
            return [ValidationError(ref, 'spec.healthCheckNodePort',
                                    f'Invalid value: {want}: {exc}')]
        return [ValidationError(ref, 'spec.healthCheckNodePort',
                                f'failed to allocate a healthCheckNodePort: {exc}')]
    return []


def release_node_ports(svc: dict, allocator: NodePortAllocator) -> None:
    """Give a deleted Service's nodePorts and healthCheckNodePort back to the range."""
    for port in _held_node_ports(svc['spec']):
        allocator.release(port)
