"""A Service's ClusterIP, as the API server assigns it.

A new Service gets the ``spec.clusterIP`` it asks for (reserved; refused when taken or
outside the Service range) or a free one of the range (``ClusterIPAllocator``, in
allocators.py), written into ``spec.clusterIP`` and ``spec.clusterIPs``. A headless
Service (``clusterIP: None``) gets none, and so does an ExternalName Service (a DNS
alias). On an update the ClusterIP is immutable: a Service without one keeps the one it
has, another value is refused; except across ExternalName, as the API server does:
becoming ExternalName gives the address back, leaving it allocates one as for a new
Service. Deleting the Service releases it.

The store calls ``assign_cluster_ip`` on a copy of the allocator while it checks an
apply, and keeps the copy only when the whole apply passes.
"""

from __future__ import annotations

from services.allocation.allocators import ClusterIPAllocator
from services.errors import AllocationError, ValidationError


def assign_cluster_ip(obj: dict, old: dict | None, allocator: ClusterIPAllocator,
                      ref: str) -> list[ValidationError]:
    """Keep, reserve or allocate the ClusterIP of a Service being applied, writing it
    into its spec."""
    spec = obj['spec']
    want = spec.get('clusterIP') or ''
    have = old['spec'].get('clusterIP') if old is not None else None
    if spec.get('type') == 'ExternalName':
        spec.pop('clusterIPs', None)
        if have and have != 'None':
            allocator.release(have)
        return []
    if have:
        if want and want != have:
            return [ValidationError(ref, 'spec.clusterIP', f'Invalid value: "{want}": '
                                    f'field is immutable (it is {have})')]
        spec['clusterIP'] = have
        spec['clusterIPs'] = [have]
        return []
    if want == 'None':
        spec['clusterIPs'] = ['None']
        return []
    try:
        if want:
            allocator.reserve(want)
        else:
            want = allocator.allocate()
    except AllocationError as exc:
        return [ValidationError(ref, 'spec.clusterIP',
                                f'Invalid value: "{want}": {exc}')]
    spec['clusterIP'] = want
    spec['clusterIPs'] = [want]
    return []


def release_cluster_ip(svc: dict, allocator: ClusterIPAllocator) -> None:
    """Give a deleted Service's ClusterIP back to the range."""
    ip = svc['spec'].get('clusterIP')
    if ip and ip != 'None':
        allocator.release(ip)
