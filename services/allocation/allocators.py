"""Allocators: Service ClusterIPs, per-node pod IPs, NodePorts and load
balancer addresses.

Each allocator is plain state (a set of used integers in an inclusive range)
plus a strategy for picking the next free one, mirroring the component that
does the job in a real cluster:

* ``ClusterIPAllocator``: the API server's Service IP allocator. Random pick,
  preferring the upper ("dynamic") part of the range so that the lower 1/16
  (16 to 256 addresses) stays free for Services that ask for a fixed
  ``clusterIP``. The network and broadcast addresses are never handed out;
  the first host address (``10.96.0.1``, the ``kubernetes`` Service) and the
  tenth (``10.96.0.10``, cluster DNS) are reserved from the start.
* ``PodIPAllocator``: the CNI ``host-local`` IPAM plugin on one node. Skips the
  network address, the pod gateway (``.1``) and broadcast; allocates
  round-robin after the last reserved address, so a replaced pod gets a new
  IP.
* ``NodePortAllocator``: the API server's NodePort allocator over the
  configured range (``30000-32767`` by default). Random pick from the upper
  band; the lower band of ``min(max(16, size // 32), 128)`` ports
  (Kubernetes' ServiceNodePortStaticSubrange) is used only when the upper one
  is full, so Services that ask for a fixed ``nodePort`` find it free.
  ``healthCheckNodePort`` comes from the same allocator, as in Kubernetes.
* ``LoadBalancerIPAllocator``: a cloud's load balancer IPAM (MetalLB's, a
  cloud's address pool) over the cluster file's ``loadBalancerPool``. Lowest
  free host address first, so the addresses a lab hands out are predictable;
  every address remembers the Service holding it, so a refusal can name it.

Errors are ``AllocationError`` and carry the valid range. For all-or-nothing
applies the store works on ``copy()`` and
keeps the copy only when everything succeeded.

The API server's rules that use them for a Service (what is reserved, kept on an
update, shared, released) are next door: ``cluster_ips.py``, ``node_ports.py``
(nodePorts and healthCheckNodePort) and ``load_balancer_ips.py``.
"""

import ipaddress
import os
import random

from services.errors import AllocationError


class _Pool:
    """Used integers of the inclusive range ``first..last``."""

    def __init__(self, first: int, last: int):
        self.first = first
        self.last = last
        self.used: set[int] = set()

    def __contains__(self, value: int) -> bool:
        return value in self.used

    def in_range(self, value: int) -> bool:
        return self.first <= value <= self.last

    def scan(self, low: int, high: int, start: int) -> int | None:
        """First free value of ``low..high`` from ``start`` up, wrapping."""
        count = high - low + 1
        if count <= 0:
            return None
        offset = (start - low) % count
        for step in range(count):
            value = low + (offset + step) % count
            if value not in self.used:
                return value
        return None

    def pick(self, rng: random.Random, split: int) -> int | None:
        """Take a random free value, from ``split..last`` first, then from
        ``first..split - 1``; None when every value is used."""
        for low, high in ((split, self.last), (self.first, split - 1)):
            if high < low:
                continue
            value = self.scan(low, high, low + rng.randrange(high - low + 1))
            if value is not None:
                self.used.add(value)
                return value
        return None

    def take(self, ip: str, valid: str) -> int:
        """Mark a requested address used, or say why it cannot be (the API server's
        words, with the valid range)."""
        value = _parse_ip(ip)
        if value is None or not self.in_range(value):
            raise AllocationError(
                f'failed to allocate IP {ip}: provided IP is not in the valid range. '
                f'The range of valid IPs is {valid}')
        if value in self.used:
            raise AllocationError(
                f'failed to allocate IP {ip}: provided IP is already allocated')
        self.used.add(value)
        return value

    def copy(self) -> '_Pool':
        pool = _Pool(self.first, self.last)
        pool.used = set(self.used)
        return pool


def _default_rng() -> random.Random:
    return random.Random(int.from_bytes(os.urandom(8), 'big'))


def _parse_ip(ip: str) -> int | None:
    try:
        return int(ipaddress.IPv4Address(ip))
    except (ipaddress.AddressValueError, ValueError, TypeError):
        return None


def _text(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


class ClusterIPAllocator:
    """Service ClusterIPs from one CIDR (``10.96.0.0/12`` by default)."""

    #: Host offsets reserved from the start: 1 = ``kubernetes`` Service,
    #: 10 = cluster DNS.
    SYSTEM_OFFSETS = (1, 10)
    #: Reserved offsets a Service may still ask for by ``spec.clusterIP`` (once): the
    #: cluster DNS Service does (kube-dns, 10.96.0.10), as kubeadm's manifest does.
    REQUESTABLE_OFFSETS = (10,)

    def __init__(self, cidr: str, rng: random.Random | None = None):
        self.network = ipaddress.IPv4Network(cidr)
        self.cidr = str(self.network)
        self._rng = rng or _default_rng()
        base = int(self.network.network_address)
        self._pool = _Pool(base + 1, int(self.network.broadcast_address) - 1)
        self._system = frozenset(
            base + offset for offset in self.SYSTEM_OFFSETS
            if self._pool.in_range(base + offset))
        self._pool.used |= self._system
        self._requestable = frozenset(base + offset for offset in self.REQUESTABLE_OFFSETS
                                      ) & self._system
        self._requested: set[int] = set()      # requestable addresses a Service holds
        size = self._pool.last - self._pool.first + 1
        static = 0 if size < 16 else min(max(16, size // 16), 256)
        self._static_last = self._pool.first + static - 1

    @property
    def kubernetes_ip(self) -> str:
        """The first host address, reserved for the ``kubernetes`` Service."""
        return _text(int(self.network.network_address) + 1)

    @property
    def dns_ip(self) -> str:
        """The tenth host address, reserved for cluster DNS."""
        return _text(int(self.network.network_address) + 10)

    def allocate(self) -> str:
        """A random free ClusterIP (dynamic band first, then static band)."""
        value = self._pool.pick(self._rng, self._static_last + 1)
        if value is not None:
            return _text(value)
        raise AllocationError(
            f'range is full: every address of the Service range {self.cidr} '
            f'is allocated')

    def reserve(self, ip: str) -> str:
        """Take the address a Service asked for (``spec.clusterIP``)."""
        value = _parse_ip(ip)
        if value in self._requestable and value not in self._requested:
            self._requested.add(value)
            return _text(value)
        return _text(self._pool.take(ip, self.cidr))

    def release(self, ip: str) -> None:
        """Give an address back (unknown, free or system ones: no-op; the cluster DNS
        address goes back to being reserved)."""
        value = _parse_ip(ip)
        if value in self._requestable:
            self._requested.discard(value)
        elif value is not None and value not in self._system:
            self._pool.used.discard(value)

    def is_allocated(self, ip: str) -> bool:
        value = _parse_ip(ip)
        return value is not None and value in self._pool

    def allocated(self) -> list[str]:
        """Addresses handed out to Services (not the system reservations)."""
        return [_text(v) for v in sorted((self._pool.used - self._system) | self._requested)]

    def copy(self) -> 'ClusterIPAllocator':
        """An independent copy (sharing the random generator)."""
        clone = ClusterIPAllocator(self.cidr, self._rng)
        clone._pool = self._pool.copy()
        clone._requested = set(self._requested)
        return clone


class PodIPAllocator:
    """Pod IPs of one node's pod CIDR, handed out as host-local IPAM does."""

    def __init__(self, cidr: str):
        self.network = ipaddress.IPv4Network(cidr)
        self.cidr = str(self.network)
        base = int(self.network.network_address)
        self._pool = _Pool(base + 2, int(self.network.broadcast_address) - 1)
        self._last_reserved: int | None = None

    @property
    def gateway(self) -> str:
        """The node's pod gateway, the first address of the CIDR."""
        return _text(int(self.network.network_address) + 1)

    @property
    def valid_range(self) -> str:
        return f'{_text(self._pool.first)}-{_text(self._pool.last)}'

    def allocate(self) -> str:
        """The next free address after the last one reserved (wrapping)."""
        pool = self._pool
        start = pool.first if self._last_reserved is None \
            else self._last_reserved + 1
        value = pool.scan(pool.first, pool.last, start)
        if value is None:
            raise AllocationError(
                f'no IP addresses available in range {self.cidr} '
                f'(valid: {self.valid_range})')
        pool.used.add(value)
        self._last_reserved = value
        return _text(value)

    def reserve(self, ip: str) -> str:
        """Take a given address (e.g. when the store reloads running pods)."""
        value = self._pool.take(ip, f'{self.valid_range} ({self.cidr})')
        self._last_reserved = value
        return _text(value)

    def release(self, ip: str) -> None:
        """Give an address back; the round-robin position is kept."""
        value = _parse_ip(ip)
        if value is not None:
            self._pool.used.discard(value)

    def is_allocated(self, ip: str) -> bool:
        value = _parse_ip(ip)
        return value is not None and value in self._pool

    def allocated(self) -> list[str]:
        return [_text(v) for v in sorted(self._pool.used)]

    def copy(self) -> 'PodIPAllocator':
        clone = PodIPAllocator(self.cidr)
        clone._pool = self._pool.copy()
        clone._last_reserved = self._last_reserved
        return clone


class NodePortAllocator:
    """NodePorts of the inclusive range ``first..last``, as the API server
    hands them out."""

    def __init__(self, first: int = 30000, last: int = 32767,
                 rng: random.Random | None = None):
        self._pool = _Pool(first, last)
        self._rng = rng or _default_rng()
        size = last - first + 1
        static = min(max(16, size // 32), 128)
        # A range no larger than the static band is all dynamic.
        self.static_size = static if static < size else 0

    @property
    def first(self) -> int:
        return self._pool.first

    @property
    def last(self) -> int:
        return self._pool.last

    @property
    def valid_range(self) -> str:
        """``30000-32767``, as the error messages write it."""
        return f'{self.first}-{self.last}'

    def allocate(self) -> int:
        """A random free port (upper band first, then the static band)."""
        value = self._pool.pick(self._rng, self.first + self.static_size)
        if value is None:
            raise AllocationError(
                f'range is full: every port of the NodePort range '
                f'{self.valid_range} is allocated')
        return value

    def reserve(self, port: int) -> int:
        """Take the port a Service asked for (``spec.ports[].nodePort``)."""
        if not isinstance(port, int) or isinstance(port, bool) or \
                not self._pool.in_range(port):
            raise AllocationError(
                f'provided port is not in the valid range. '
                f'The range of valid ports is {self.valid_range}')
        if port in self._pool:
            raise AllocationError('provided port is already allocated')
        self._pool.used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a port back (free or unknown ports: no-op)."""
        self._pool.used.discard(port)

    def is_allocated(self, port: int) -> bool:
        return port in self._pool

    def allocated(self) -> list[int]:
        return sorted(self._pool.used)

    def copy(self) -> 'NodePortAllocator':
        """An independent copy (sharing the random generator)."""
        clone = NodePortAllocator(self.first, self.last, self._rng)
        clone._pool = self._pool.copy()
        return clone


class LoadBalancerIPAllocator:
    """Addresses of the load balancer pool (``198.51.100.0/24`` by default),
    each held by one Service (``owner``, e.g. ``Service default/web``).

    The network and broadcast addresses are never handed out (a /31 or /32
    pool has none, as ``ipaddress`` counts hosts). The first host address is
    handed out like the others: the pool is the load balancer's alone (the
    cluster file refuses a pool that overlaps another subnet, and no router or
    host of the lab has an address in it).
    """

    def __init__(self, cidr: str):
        self.network = ipaddress.IPv4Network(cidr)
        self.cidr = str(self.network)
        self.first = int(self.network.network_address)
        self.last = int(self.network.broadcast_address)
        if self.network.prefixlen < 31:
            self.first, self.last = self.first + 1, self.last - 1
        self._owners: dict[int, str] = {}

    @property
    def valid_range(self) -> str:
        """``198.51.100.1-198.51.100.254``, as the error messages write it."""
        return f'{_text(self.first)}-{_text(self.last)}'

    def allocate(self, owner: str) -> str:
        """The lowest free address, now held by ``owner``."""
        for value in range(self.first, self.last + 1):
            if value not in self._owners:
                self._owners[value] = owner
                return _text(value)
        raise AllocationError(
            f'no addresses left in the load balancer pool {self.cidr}')

    def reserve(self, ip: str, owner: str) -> str:
        """Take the address a Service asked for (``spec.loadBalancerIP``)."""
        value = _parse_ip(ip)
        if value is None or not self.first <= value <= self.last:
            raise AllocationError(
                f'provided IP is not in the load balancer pool {self.cidr} '
                f'(valid: {self.valid_range})')
        if value in self._owners:
            raise AllocationError(f'provided IP is already allocated to '
                                  f'{self._owners[value]}')
        self._owners[value] = owner
        return _text(value)

    def release(self, ip: str) -> None:
        """Give an address back (free or unknown ones: no-op)."""
        self._owners.pop(_parse_ip(ip), None)

    def owner(self, ip: str) -> str | None:
        """Who holds ``ip``, or None when it is free."""
        return self._owners.get(_parse_ip(ip))

    def allocated(self) -> list[str]:
        return [_text(v) for v in sorted(self._owners)]

    def copy(self) -> 'LoadBalancerIPAllocator':
        clone = LoadBalancerIPAllocator(self.cidr)
        clone._owners = dict(self._owners)
        return clone
