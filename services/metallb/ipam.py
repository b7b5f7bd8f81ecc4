"""MetalLB's controller: LoadBalancer Services get addresses from IPAddressPools.

As MetalLB's controller does, for every LoadBalancer Service without a
``loadBalancerClass`` (MetalLB, without ``--lb-class``, leaves Services with a class to
whatever implements it):

* a Service may ask for addresses: the ``metallb.io/loadBalancerIPs`` annotation (or the
  older ``metallb.universe.tf/loadBalancerIPs``; comma-separated, the first IPv4 one is
  used) or the deprecated ``spec.loadBalancerIP``; for a pool: the
  ``metallb.io/address-pool`` annotation (or ``metallb.universe.tf/address-pool``);
* otherwise it gets the first free address of the first pool, by name, with
  ``autoAssign`` (an address of the pool's ranges in order; with ``avoidBuggyIPs``
  none ending in .0 or .255);
* an address a Service holds stays its own while it is still in a pool and still what
  the Service asks for; older Services are served first;
* no address to give: the Service stays ``<pending>`` with an ``AllocationFailed`` event
  ("Failed to allocate IP for "ns/name": no available IPs"), and gets one on a later
  pass once one frees (a Service deleted, a pool added or grown);
* the pool an address came from is noted on the Service
  (``metallb.io/ip-allocated-from-pool``).

Only pools in MetalLB's namespace, ``metallb-system``, count. ``assign`` is pure: the
Services and the pools in, every Service's Assignment out (the store writes them:
services/store_lifecycle.py). ``admission_problems`` holds what MetalLB's webhook and
the API server refuse at apply.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from services.allocation.load_balancer_ips import Assignment, by_age, load_balancer_ip, \
    service_key, wants_cloud
from services.errors import ValidationError
from services.validation.metallb import overlap_problems, pool_ranges

NAMESPACE = 'metallb-system'
COMPONENT = 'metallb-controller'
KINDS = ('IPAddressPool', 'L2Advertisement')
API_VERSION = 'metallb.io/v1beta1'
IPS_ANNOTATIONS = ('metallb.io/loadBalancerIPs', 'metallb.universe.tf/loadBalancerIPs')
POOL_ANNOTATIONS = ('metallb.io/address-pool', 'metallb.universe.tf/address-pool')


@dataclass
class Pool:
    name: str
    ranges: list            # [(first, last)] as integers
    auto: bool
    avoid_buggy: bool

    def __contains__(self, ip: str) -> bool:
        value = int(ipaddress.IPv4Address(ip))
        return any(first <= value <= last for first, last in self.ranges) and \
            not (self.avoid_buggy and value % 256 in (0, 255))

    def addresses(self):
        for first, last in self.ranges:
            for value in range(first, last + 1):
                if not (self.avoid_buggy and value % 256 in (0, 255)):
                    yield str(ipaddress.IPv4Address(value))


def pools_of(objects: list[dict]) -> list[Pool]:
    """The IPAddressPools MetalLB reads (its namespace), by name."""
    out = []
    for obj in sorted(objects, key=lambda o: o['metadata']['name']):
        if obj['metadata'].get('namespace') != NAMESPACE:
            continue
        spec = obj['spec']
        out.append(Pool(obj['metadata']['name'], pool_ranges(obj),
                        spec.get('autoAssign', True) is not False,
                        bool(spec.get('avoidBuggyIPs'))))
    return out


def requested(svc: dict) -> tuple[str | None, str | None]:
    """(the address a Service asks for, the pool it asks for)."""
    notes = svc['metadata'].get('annotations') or {}
    ip = None
    for key in IPS_ANNOTATIONS:
        if notes.get(key):
            ip = next((part.strip() for part in notes[key].split(',')
                       if _ipv4(part.strip())), None)
            break
    ip = ip or svc['spec'].get('loadBalancerIP') or None
    pool = next((notes[key] for key in POOL_ANNOTATIONS if notes.get(key)), None)
    return ip, pool


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def _pool_of(ip: str, pools: list[Pool]) -> Pool | None:
    return next((p for p in pools if ip in p), None)


def assign(services: list[dict], pool_objects: list[dict]) -> dict:
    """(namespace, name) -> Assignment for every Service."""
    pools = pools_of(pool_objects)
    taken: dict[str, tuple] = {}
    out: dict = {}
    todo = []
    for svc in by_age(services):
        key = service_key(svc)
        if not wants_cloud(svc):           # not a LoadBalancer, or another class's
            out[key] = Assignment()
            continue
        have = load_balancer_ip(svc)
        want_ip, want_pool = requested(svc)
        pool = _pool_of(have, pools) if have else None
        if pool and have not in taken and want_ip in (None, have) and \
                want_pool in (None, pool.name):
            taken[have] = key
            out[key] = Assignment(have, pool=pool.name)
            continue
        todo.append((svc, key, want_ip, want_pool))
    for svc, key, want_ip, want_pool in todo:
        out[key] = _allocate(key, want_ip, want_pool, pools, taken)
    return out


def _allocate(key, want_ip, want_pool, pools, taken) -> Assignment:
    fail = f'Failed to allocate IP for "{key[0]}/{key[1]}": '
    if want_ip:
        pool = _pool_of(want_ip, pools)
        if pool is None or (want_pool and pool.name != want_pool):
            return Assignment(error=f'{fail}["{want_ip}"] is not allowed in config')
        if want_ip in taken:
            other = taken[want_ip]
            return Assignment(error=f'{fail}"{want_ip}" is already in use by '
                                    f'{other[0]}/{other[1]}')
        taken[want_ip] = key
        return Assignment(want_ip, pool=pool.name)
    if want_pool and not any(p.name == want_pool for p in pools):
        return Assignment(error=f'{fail}unknown pool "{want_pool}"')
    for pool in pools:
        if (want_pool and pool.name != want_pool) or (not want_pool and not pool.auto):
            continue
        for ip in pool.addresses():
            if ip not in taken:
                taken[ip] = key
                return Assignment(ip, pool=pool.name)
    return Assignment(error=f'{fail}no available IPs')


def admission_problems(obj: dict, ref: str, installed: bool, pools: list[dict],
                       applied: list[dict]) -> list[ValidationError]:
    """What the API server (no such kind without MetalLB) and MetalLB's webhook (no two
    pools overlap) refuse: ``pools`` the stored ones, ``applied`` the apply's objects."""
    if obj['kind'] not in KINDS:
        return []
    if not installed:
        return [ValidationError(ref, 'kind', f'no matches for kind "{obj["kind"]}" in '
                                             f'version "{API_VERSION}": MetalLB is not '
                                             f'installed; it comes with a bare-metal lab '
                                             f'(cloud: none in the cluster file, or '
                                             f'kubelab up --cloud none)')]
    if obj['kind'] != 'IPAddressPool':
        return []
    key = service_key(obj)
    mine = [p for p in applied if p['kind'] == 'IPAddressPool']
    names = {service_key(p) for p in mine}
    others = [p for p in pools if service_key(p) not in names
              and p['metadata'].get('namespace') == obj['metadata'].get('namespace')]
    same_ns = [p for p in mine if p['metadata'].get('namespace') ==
               obj['metadata'].get('namespace')]
    problem = overlap_problems(others + same_ns).get(key)
    return [ValidationError(ref, 'spec.addresses', problem)] if problem else []
