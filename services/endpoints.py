"""Which endpoints serve a Service port: the one reader of EndpointSlices.

Every consumer of EndpointSlices in the lab (kube-proxy's dataplane in
controller/state.py, kube-proxy's health server in topo/cloudlb.py, the cluster DNS in
services/dns.py, the Ingress and Gateway backends in services/l7/backends.py) reads
them here, as kube-proxy reads them in one place. The slices of a Service are those
labelled ``kubernetes.io/service-name`` with its name, in its namespace
(``by_service``). An endpoint is *ready* when its ``conditions.ready`` is not false:
an unset value reads as ready, as the EndpointSlice API asks consumers to read it.

The consumers differ on purpose, and each difference is a parameter of
``endpoint_addresses``:

* ``port``: a Service port, ``(name, protocol)``, reads the slices' ports of that
  name (``''`` for an unnamed one) and protocol, each address with the slice port's
  number, as kube-proxy matches them; ``ANY_PORT`` reads every endpoint of a slice that
  has ports, without a number (kube-proxy reads endpoints through a slice's ports, so a
  slice without ports serves nothing); ``None`` reads every endpoint of every slice
  (the DNS publishes a headless Service's addresses even without ports).
* ``terminating_fallback``: kube-proxy's rule that when a port has no ready endpoint,
  the endpoints that are terminating but still serving take the traffic (a rollout
  never black-holes a Service).
* ``publish_not_ready``: every endpoint, ready or not, as the DNS publishes them for a
  Service with ``publishNotReadyAddresses``.
* ``node``: only the endpoints on that node (``nodeName``), the fallback included:
  the local endpoints of ``externalTrafficPolicy: Local``.

The Local traffic policies apply the terminating fallback node by node
(``local_endpoint_addresses``): a node with no ready endpoint of its own uses its own
serving terminating ones, even while other nodes have ready ones (kube-proxy's
CategorizeEndpoints looks for them among the node's own endpoints, not the
cluster's). The cluster-wide fallback applies only when no node has a ready one.

kube-proxy reads Services and EndpointSlices through one label selector: an object
labelled ``service.kubernetes.io/service-proxy-name`` (another proxy implements the
Service) or ``service.kubernetes.io/headless`` is not seen at all, whatever the label's
value (``kube_proxy_ignores``). Its dataplane and its health server ask it.

The result lists one ``EndpointAddress`` per (slice, slice port, endpoint, address), in
the slices' order; each keeps its endpoint and slice for readers that want more
(the DNS takes hostnames and named ports from them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.controllers.endpointslices import SERVICE_NAME_LABEL

#: ``port`` value of ``endpoint_addresses``: every endpoint of a slice that has ports.
ANY_PORT = 'any-port'
#: The labels with which kube-proxy leaves a Service alone (its informers select
#: ``!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless``).
SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name'
HEADLESS_LABEL = 'service.kubernetes.io/headless'


@dataclass(frozen=True)
class EndpointAddress:
    """One address that serves: ``port`` is the slice port's number (None when the read
    was not for one port), ``node`` the endpoint's ``nodeName`` ('' when unset)."""
    address: str
    port: int | None
    node: str
    endpoint: dict = field(compare=False, repr=False)
    endpoint_slice: dict = field(compare=False, repr=False)


def by_service(slices) -> dict[tuple[str, str], list[dict]]:
    """EndpointSlices by the (namespace, name) of the Service their
    ``kubernetes.io/service-name`` label names; unlabelled slices are left out."""
    out: dict[tuple[str, str], list[dict]] = {}
    for endpoint_slice in slices:
        meta = endpoint_slice.get('metadata') or {}
        service = (meta.get('labels') or {}).get(SERVICE_NAME_LABEL)
        if service:
            out.setdefault((meta.get('namespace') or 'default', service), []).append(
                endpoint_slice)
    return out


def kube_proxy_ignores(obj: dict) -> bool:
    """The object (a Service or an EndpointSlice) carries one of the labels for which
    kube-proxy does not watch it; the label's presence counts, not its value."""
    labels = (obj.get('metadata') or {}).get('labels') or {}
    return SERVICE_PROXY_NAME_LABEL in labels or HEADLESS_LABEL in labels


def endpoint_ready(endpoint: dict) -> bool:
    """``conditions.ready`` is not false (unset is ready)."""
    return (endpoint.get('conditions') or {}).get('ready') is not False


def endpoint_serving_terminating(endpoint: dict) -> bool:
    """Terminating but still serving: kube-proxy's fallback when none is ready."""
    conditions = endpoint.get('conditions') or {}
    return bool(conditions.get('serving') and conditions.get('terminating'))


def _port_numbers(endpoint_slice: dict, port) -> list:
    """The numbers under which ``endpoint_slice`` serves ``port`` ([]: it does not)."""
    if port is None:
        return [None]
    if port == ANY_PORT:
        return [None] if endpoint_slice.get('ports') else []
    name, protocol = port
    return [p.get('port') for p in endpoint_slice.get('ports') or ()
            if (p.get('name') or '') == name and p.get('protocol', 'TCP') == protocol]


def endpoint_addresses(slices, port=None, *, terminating_fallback: bool = False,
                       publish_not_ready: bool = False,
                       node: str | None = None) -> list[EndpointAddress]:
    """The addresses of ``slices`` (one Service's) that serve ``port``: the ready ones;
    with ``terminating_fallback``, when there is none, the serving terminating ones;
    with ``publish_not_ready``, all. ``node`` keeps only that node's. See the module's
    docstring for ``port``."""
    return _read(slices, port, terminating_fallback, publish_not_ready, node,
                 lambda address, number, endpoint, endpoint_slice: EndpointAddress(
                     address, number, endpoint.get('nodeName') or '', endpoint,
                     endpoint_slice))


def endpoint_keys(slices, port, *, terminating_fallback: bool = False) -> list[tuple]:
    """``endpoint_addresses`` as (address, port, node) tuples: kube-proxy's read of a
    Service port, without an object per address (a pod behind 10,000 Services is
    110,000 addresses to read again)."""
    return _read(slices, port, terminating_fallback, False, None,
                 lambda address, number, endpoint, _: (address, number,
                                                       endpoint.get('nodeName') or ''))


def _read(slices, port, terminating_fallback: bool, publish_not_ready: bool,
          node: str | None, make) -> list:
    ready: list = []
    fallback: list = []
    for endpoint_slice in slices:
        for number in _port_numbers(endpoint_slice, port):
            for endpoint in endpoint_slice.get('endpoints') or ():
                if node is not None and endpoint.get('nodeName') != node:
                    continue
                if publish_not_ready or endpoint_ready(endpoint):
                    chosen = ready
                elif terminating_fallback and endpoint_serving_terminating(endpoint):
                    chosen = fallback
                else:
                    continue
                for address in endpoint.get('addresses') or ():
                    chosen.append(make(address, number, endpoint, endpoint_slice))
    return ready or fallback


def local_endpoint_addresses(slices, port, *, terminating_fallback: bool = True
                             ) -> dict[str, list[EndpointAddress]]:
    """Node name -> the addresses that serve ``port`` for a Local traffic policy on
    that node: the node's ready endpoints; with ``terminating_fallback`` (kube-proxy),
    when it has none, its own serving terminating ones, whatever other nodes have.
    Nodes with neither are left out; an endpoint without ``nodeName`` is no node's."""
    nodes = {(endpoint.get('nodeName') or '')
             for endpoint_slice in slices for endpoint in endpoint_slice.get('endpoints') or ()}
    out = {}
    for node in sorted(nodes - {''}):
        served = endpoint_addresses(slices, port, terminating_fallback=terminating_fallback,
                                    node=node)
        if served:
            out[node] = served
    return out
