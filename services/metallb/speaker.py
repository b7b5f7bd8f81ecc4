"""MetalLB's speakers in layer 2 mode: which node announces each address.

Every speaker decides for itself, from the same inputs, so that all agree without
talking about it (only membership is gossiped, topo/metallb.py): for each address a
Service holds from a pool,

* the pool must be advertised in L2 by some L2Advertisement (``ipAddressPools`` by
  name, ``ipAddressPoolSelectors`` by label, neither: every pool) from a node its
  ``nodeSelectors`` select (none: every node). No L2Advertisement for a pool: its
  addresses are given but nobody answers ARP for them, a classic MetalLB surprise;
* the Service must have a serving endpoint somewhere (else nobody announces);
* the candidates are the speakers alive in the deciding speaker's membership view that
  the advertisement allows, without nodes labelled
  ``node.kubernetes.io/exclude-from-external-load-balancers`` or with a
  NetworkUnavailable condition; with ``externalTrafficPolicy: Local`` only nodes with a
  serving endpoint of the Service;
* the candidates are sorted by the SHA-256 of ``<node name>#<address>`` and the first
  wins. The same order everywhere: a node's failure moves its addresses to each one's
  next candidate, and nothing else moves.

``announcements`` is one speaker's answer (what it answers ARP for), ``owners`` every
node's for a given membership (what ``kubelab trace`` and the tests expect).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.allocation.load_balancer_ips import load_balancer_ip, service_key, \
    wants_cloud
from services.endpoints import by_service
from services.metallb.ipam import NAMESPACE, pools_of
from services.selectors import matches_label_selector

EXCLUDE_LABEL = 'node.kubernetes.io/exclude-from-external-load-balancers'
COMPONENT = 'metallb-speaker'


@dataclass(frozen=True)
class View:
    """What a speaker reads from the API server: Services, EndpointSlices, pools,
    L2Advertisements and Nodes (lists of objects)."""
    services: list
    slices: list
    pools: list
    advertisements: list
    nodes: list

    @classmethod
    def of(cls, objects: dict) -> 'View':
        return cls(objects.get('Service', []), objects.get('EndpointSlice', []),
                   objects.get('IPAddressPool', []), objects.get('L2Advertisement', []),
                   objects.get('Node', []))


def rank(node: str, ip: str) -> bytes:
    """MetalLB's order of the candidates for ``ip``."""
    return hashlib.sha256(f'{node}#{ip}'.encode()).digest()


def advertised_nodes(view: View) -> dict[str, set]:
    """Pool name -> the nodes its L2Advertisements let announce it."""
    out: dict[str, set] = {}
    pools = [p for p in view.pools if p['metadata'].get('namespace') == NAMESPACE]
    for adv in view.advertisements:
        if adv['metadata'].get('namespace') != NAMESPACE:
            continue
        spec = adv.get('spec') or {}
        names, selectors = spec.get('ipAddressPools') or [], \
            spec.get('ipAddressPoolSelectors') or []
        chosen = [p for p in pools
                  if (not names and not selectors) or p['metadata']['name'] in names
                  or any(matches_label_selector(s, p['metadata'].get('labels'))
                         for s in selectors)]
        node_selectors = spec.get('nodeSelectors') or []
        nodes = {n['metadata']['name'] for n in view.nodes
                 if not node_selectors or any(
                     matches_label_selector(s, n['metadata'].get('labels')) if s else True
                     for s in node_selectors)}
        for pool in chosen:
            out.setdefault(pool['metadata']['name'], set()).update(nodes)
    return out


def _serving(endpoint: dict) -> bool:
    conditions = endpoint.get('conditions') or {}
    if conditions.get('serving') is not None:
        return bool(conditions['serving'])
    return conditions.get('ready') is not False


def _usable(node: dict) -> bool:
    if EXCLUDE_LABEL in (node['metadata'].get('labels') or {}):
        return False
    return not any(c.get('type') == 'NetworkUnavailable' and c.get('status') == 'True'
                   for c in (node.get('status') or {}).get('conditions') or ())


def candidates(view: View, svc: dict, ip: str, members: set) -> list[str]:
    """The nodes that may announce ``svc``'s ``ip``, best first."""
    pool = next((p for p in pools_of(view.pools) if ip in p), None)
    if pool is None:
        return []
    allowed = advertised_nodes(view).get(pool.name, set())
    slices = by_service(view.slices).get(service_key(svc), [])
    serving = {ep.get('nodeName') for sl in slices for ep in sl.get('endpoints') or ()
               if _serving(ep)}
    if not serving:
        return []
    usable = {n['metadata']['name'] for n in view.nodes if _usable(n)}
    nodes = allowed & usable & set(members)
    if (svc.get('spec') or {}).get('externalTrafficPolicy') == 'Local':
        nodes &= serving
    return sorted(nodes, key=lambda n: rank(n, ip))


def owners(view: View, members: set) -> dict[str, tuple[str, tuple]]:
    """Address -> (the node that announces it, the Service (namespace, name)), for
    speakers that all see ``members``."""
    out = {}
    for svc in view.services:
        ip = load_balancer_ip(svc)
        if ip and wants_cloud(svc):
            best = candidates(view, svc, ip, members)
            if best:
                out[ip] = (best[0], service_key(svc))
    return out


def announcements(node: str, view: View, members: set) -> dict[str, tuple]:
    """What the speaker of ``node`` announces (address -> Service) when it sees
    ``members`` alive (itself included)."""
    return {ip: key for ip, (owner, key) in owners(view, members | {node}).items()
            if owner == node}
