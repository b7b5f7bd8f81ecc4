"""A LoadBalancer Service's address, as a cloud's service controller gives it.

The store plays the cloud controller manager's service controller with the lab's one
load balancer: a LoadBalancer Service gets an address of the cluster's
``loadBalancerPool`` (``LoadBalancerIPAllocator``, in allocators.py; its
``spec.loadBalancerIP`` when it asks for a free one of the pool), written into
``status.loadBalancer.ingress`` at apply and kept across applies (the user's status is
ignored). It is released when the Service is deleted or stops being a LoadBalancer. A
pool with no address left refuses the apply rather than leave the Service
``<pending>``. A Service with a ``spec.loadBalancerClass`` is not the lab cloud's (a
class hands it to another implementation, and the lab has none): it gets no address
and stays ``<pending>``, as on a cluster without that implementation; its class may
not change while it is a LoadBalancer (the API server's rule).

The store calls ``assign_load_balancer_ip`` on a copy of the allocator while it checks
an apply, and keeps the copy only when the whole apply passes.
"""

from __future__ import annotations

from services.allocation.allocators import LoadBalancerIPAllocator
from services.errors import AllocationError, ValidationError


def load_balancer_ip(svc: dict) -> str | None:
    """The load balancer address the store gave a Service (``status.loadBalancer``)."""
    ingress = (svc.get('status') or {}).get('loadBalancer', {}).get('ingress') or []
    return ingress[0]['ip'] if ingress else None


def assign_load_balancer_ip(obj: dict, old: dict | None, allocator: LoadBalancerIPAllocator,
                            ref: str) -> list[ValidationError]:
    """Give a LoadBalancer Service its address, as a cloud's service controller and LB
    IPAM do, and write the status the store keeps (the user's is ignored): the address
    it has, unless ``spec.loadBalancerIP`` asks for another; else the one it asks for,
    or the lowest free one. An address given up (for another one, or because the
    Service is no LoadBalancer any more) goes back to the pool at once, free for the
    next object of the apply."""
    spec = obj['spec']
    had = load_balancer_ip(old) if old is not None else None
    obj['status'] = {'loadBalancer': {}}
    address = None
    if old is not None and spec.get('type') == old['spec'].get('type') == 'LoadBalancer' \
            and spec.get('loadBalancerClass') != old['spec'].get('loadBalancerClass'):
        shown = spec.get('loadBalancerClass')
        shown = f'"{shown}"' if shown else 'null'
        return [ValidationError(ref, 'spec.loadBalancerClass',
                                f'Invalid value: {shown}: may '
                                f'not change once set (delete the Service and create it '
                                f'again)')]
    if spec.get('type') == 'LoadBalancer' and not spec.get('loadBalancerClass'):
        want = spec.get('loadBalancerIP')
        try:
            if want and want != had:
                address = allocator.reserve(want, ref)
            else:
                address = had or allocator.allocate(ref)
        except AllocationError as exc:
            if want:
                return [ValidationError(ref, 'spec.loadBalancerIP',
                                        f'Invalid value: "{want}": {exc}')]
            return [ValidationError(ref, 'spec.type',
                                    f'Invalid value: "LoadBalancer": {exc}; delete a '
                                    f'LoadBalancer Service or use type NodePort')]
        obj['status']['loadBalancer']['ingress'] = [{'ip': address, 'ipMode': 'VIP'}]
    if had and had != address:
        allocator.release(had)
    return []


def release_load_balancer_ip(svc: dict, allocator: LoadBalancerIPAllocator) -> None:
    """Give a deleted Service's load balancer address back to the pool."""
    address = load_balancer_ip(svc)
    if address:
        allocator.release(address)
