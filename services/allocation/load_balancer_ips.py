"""A LoadBalancer Service's address, as a cloud's service controller gives it.

The lab's cloud (``cloud: kubelab`` in the cluster file) plays the cloud controller
manager's service controller with one load balancer: a LoadBalancer Service without a
``loadBalancerClass`` gets an address of the cluster's ``loadBalancerPool`` (its
``spec.loadBalancerIP`` when it asks for one), written into
``status.loadBalancer.ingress``. A Service with a class belongs to another
implementation and is left alone (``<pending>`` unless that implementation exists);
its class may not change while it is a LoadBalancer (the API server's rule, checked at
apply: ``class_change_problems``).

It is a controller, not an admission check: an apply is never refused for want of an
address. When the pool has none left, or the address asked for is taken or outside the
pool, the Service stays ``<pending>`` (or keeps the address it had) with a
``SyncLoadBalancerFailed`` event saying why, and gets its address on a later pass, once
one frees (a Service deleted or no
longer a LoadBalancer). Older Services are served first; an address a Service holds
stays its own across applies.

``assign`` decides for every Service at once from the addresses the Services hold, so
nothing but the Services' statuses is remembered; the store runs it after every change
(services/store.py) and the MetalLB controller does the same from its pools
(services/metallb/ipam.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.allocation.allocators import LoadBalancerIPAllocator
from services.errors import AllocationError, ValidationError


@dataclass(frozen=True)
class Assignment:
    """A Service's load balancer address (None: none), and why it has none when it
    should (``error``), or which pool gave it (``pool``, MetalLB)."""
    ip: str | None = None
    error: str | None = None
    pool: str | None = None


def load_balancer_ip(svc: dict) -> str | None:
    """The load balancer address a Service holds (``status.loadBalancer``)."""
    ingress = (svc.get('status') or {}).get('loadBalancer', {}).get('ingress') or []
    return ingress[0].get('ip') if ingress else None


def service_key(svc: dict) -> tuple[str, str]:
    return svc['metadata'].get('namespace', 'default'), svc['metadata']['name']


def by_age(services: list[dict]) -> list[dict]:
    """Oldest first, as controllers that serve in creation order see them."""
    return sorted(services, key=lambda s: (s['metadata'].get('creationTimestamp') or '',
                                           *service_key(s)))


def is_load_balancer(svc: dict) -> bool:
    """A Service of type LoadBalancer (of any class)."""
    return (svc.get('spec') or {}).get('type') == 'LoadBalancer'


def wants_cloud(svc: dict) -> bool:
    """A LoadBalancer Service without a class: the cloud's service controller's."""
    return is_load_balancer(svc) and not svc['spec'].get('loadBalancerClass')


def assign(services: list[dict], pool: str) -> dict[tuple[str, str], Assignment]:
    """Every Service's address from the cloud's ``pool``: (namespace, name) ->
    Assignment. Services that keep their address go first, then the others, oldest
    first."""
    allocator = LoadBalancerIPAllocator(pool)
    out: dict[tuple[str, str], Assignment] = {}
    todo = []
    for svc in by_age(services):
        key = service_key(svc)
        if not wants_cloud(svc):
            out[key] = Assignment()
            continue
        have, want = load_balancer_ip(svc), svc['spec'].get('loadBalancerIP')
        if have and want in (None, '', have):
            try:
                out[key] = Assignment(allocator.reserve(have, _owner(key)))
                continue
            except AllocationError:
                pass                          # outside a changed pool, or a clash
        todo.append((key, want, have))
    for key, want, have in todo:
        try:
            ip = allocator.reserve(want, _owner(key)) if want else \
                allocator.allocate(_owner(key))
            out[key] = Assignment(ip)
        except AllocationError as exc:
            asked = f'requested IP "{want}": ' if want else ''
            out[key] = Assignment(_keep(allocator, have, key),
                                  error=f'Error syncing load balancer: failed to ensure '
                                        f'load balancer: {asked}{exc}')
    return out


def _keep(allocator: LoadBalancerIPAllocator, have: str | None, key) -> str | None:
    """The address a Service keeps when its new one cannot be had (a failed sync
    leaves the status as it was), if nobody took it meanwhile."""
    if not have:
        return None
    try:
        return allocator.reserve(have, _owner(key))
    except AllocationError:
        return None


def allocated(services: list[dict], pool: str) -> LoadBalancerIPAllocator:
    """The pool with the addresses the Services hold (what ``assign`` starts from)."""
    allocator = LoadBalancerIPAllocator(pool)
    for svc in services:
        ip = load_balancer_ip(svc)
        if ip:
            try:
                allocator.reserve(ip, _owner(service_key(svc)))
            except AllocationError:
                pass
    return allocator


def _owner(key: tuple[str, str]) -> str:
    return f'Service {key[0]}/{key[1]}'


def class_change_problems(obj: dict, old: dict | None, ref: str) -> list[ValidationError]:
    """The API server's rule: a LoadBalancer Service's ``loadBalancerClass`` may not
    change while it stays a LoadBalancer."""
    spec = obj.get('spec') or {}
    if old is None or not spec.get('type') == old['spec'].get('type') == 'LoadBalancer' \
            or spec.get('loadBalancerClass') == old['spec'].get('loadBalancerClass'):
        return []
    shown = spec.get('loadBalancerClass')
    shown = f'"{shown}"' if shown else 'null'
    return [ValidationError(ref, 'spec.loadBalancerClass', f'Invalid value: {shown}: may '
                                 f'not change once set (delete the Service and create it '
                                 f'again)')]
