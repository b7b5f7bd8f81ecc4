"""A Service port's fronts on a node bridge: where it is reached, over which endpoints,
through which select groups.

A Service port is reached at one or more *fronts* on a node (its ClusterIP:port, this
node's NodeIP:NodePort, its load balancer address and external IPs, which every node
catches as kube-proxy does). ``front_templates`` decides, once per front, which
endpoints the traffic policies leave it (node_switch.py memoizes them per Service port);
``group_ids`` gives the select groups their ids in Service order, probing past
collisions (fronts with the same group key share one). A front with more endpoints than
one group message carries is split over 2^k groups (``split_endpoints``), chosen by bits
of the client's source port (``source_port_bits``).

Service ports that select the same pods alike (``ServicePort.selects``: namespace,
selector, target port) share their groups on a bridge when their endpoints are the same
(``ClusterState.shares``): one group for the ClusterIP fronts of all of them (and the
Local policies' fronts for the node and pods, which balance over the same endpoints
unmasqueraded), one for their masquerading external fronts. The group's id comes from
the selection, not the Service, so a pod that backs 10,000 such Services becoming ready
is one new bucket list per bridge, every ServiceLB flow as it was. kube-proxy has a
chain per Service; the difference shows only in the number of groups a bridge holds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from controller.pipeline import shared
from controller.pipeline.tables import (CT_MARK_NODE_MASQ, ETH_IP, MAX_GROUP_BUCKETS,
                                        PRIORITY_NODEPORT_FROM_NODE,
                                        PRIORITY_NODEPORT_FROM_POD, PRIORITY_NORMAL,
                                        REG0_LOCAL_ORIGIN)


@dataclass(frozen=True)
class Front:
    """One address and port at which a Service port is reached on this bridge, with the
    endpoints ServiceLB balances its new connections over."""
    sp: object                  # the ServicePort
    match: dict                 # ServiceLB's match: protocol, address, port (and more)
    endpoints: tuple            # what the traffic policies leave this front
    group: int | None           # the select group over them; None: none to balance over
    mark: int | None = None     # the ct_mark its connections get (CT_MARK_NODE_MASQ)
    affinity: int | None = None     # sessionAffinity ClientIP: its timeout (seconds)
    priority: int = PRIORITY_NORMAL     # NODEPORT_FROM_NODE: a Local policy's own node
    split: tuple = ()           # more endpoints than a group holds: the 2^k groups
    shared: bool = False        # its groups are its selection's (``SHARED``)

    @property
    def owner(self) -> str:
        return f'service {self.sp.key}'

    @property
    def group_owner(self) -> str:
        """Who its groups belong to: the Service port, or every one that selects alike."""
        return SHARED_OWNER + self.sp.selects if self.shared else self.owner

    @property
    def l4_dst(self) -> str:
        return 'tcp_dst' if self.match['ip_proto'] == 6 else 'udp_dst'

    @property
    def sticky(self) -> bool:
        """Balanced with session affinity (a front without endpoints has no group)."""
        return bool(self.affinity) and self.group is not None


SHARED = '~'        # the group key of a selection's shared groups starts so
SHARED_OWNER = 'services selecting '    # and their owner (kubelab flows, top read it)


def service_fronts(state, node) -> list[Front]:
    """Per Service port kube-proxy implements, in order: its ClusterIP, then its
    external fronts (``external_fronts``). Group ids are given in this order, probing
    past collisions; fronts with the same group key share one group."""
    taken, fronts, given = set(), [], {}
    for sp in state.proxied_ports:
        templates = front_templates(sp, node, state.cluster.cluster_cidr, state.shares(sp))
        fronts += bind_fronts(sp, templates, group_ids(sp, templates, taken, None, given))
    return fronts


def group_ids(sp, templates: list, taken: set, spans: set | None = None,
              given: dict | None = None) -> tuple:
    """The group id of each front template of ``sp`` (None: no group), fronts with the
    same group key sharing one; ``taken`` holds the ids given to earlier ones (``spans``:
    see ``shared.group_id``); ``given``: the ids of the shared keys (``SHARED``) given
    so far, which Service ports of the same selection take again."""
    own, gids = {}, []
    for _, endpoints, key, _ in templates:
        ids = ()
        if sp.endpoints and endpoints:
            groups = given if given is not None and key.startswith(SHARED) else own
            ids = groups.get(key)
            if ids is None:
                parts = split_count(len(endpoints))
                ids = groups[key] = tuple(shared.group_id(key + (f'/{i}' if i else ''),
                                                          taken, spans)
                                          for i in range(parts))
        gids.append(ids)
    return tuple(gids)


def bind_fronts(sp, templates: list, gids: tuple) -> list[Front]:
    return [Front(sp, match, tuple(endpoints), ids[0] if ids else None,
                  split=ids if len(ids) > 1 else (), shared=key.startswith(SHARED), **kw)
            for (match, endpoints, key, kw), ids in zip(templates, gids)]


def source_port_bits(index: int, parts: int) -> tuple[int, int]:
    """(value, mask) of the source ports whose connections go to group ``index`` of
    ``parts``: bits 1..k, not bit 0, because Linux gives connect() even ephemeral ports
    (odd ones are left to bind()), so bit 0 is the same for nearly every client
    connection (seen: every connection of a test went to the first of two groups)."""
    return index << 1, (parts - 1) << 1


def split_endpoints(endpoints) -> list[tuple]:
    """``endpoints`` dealt round-robin over the fewest 2^k groups of at most
    MAX_GROUP_BUCKETS each (one group when they fit): group i is chosen by bits 1..k of
    the connection's source port (``source_port_bits``), then its buckets by the
    datapath's hash; the groups' sizes differ by one at most, so every endpoint keeps an
    equal share."""
    parts = split_count(len(endpoints))
    return [tuple(endpoints[i::parts]) for i in range(parts)]


def split_count(endpoints: int) -> int:
    """How many groups ``endpoints`` endpoints take: the fewest 2^k."""
    parts = 1
    while endpoints > parts * MAX_GROUP_BUCKETS:
        parts *= 2
    return parts


def front_templates(sp, node, cluster_cidr: str, share: bool = False) -> list[tuple]:
    """``sp``'s fronts on ``node`` before group ids: (match, endpoints, group key,
    Front's other fields); ``cluster_cidr``: the pods' addresses (detect-local);
    ``share``: its fronts that balance over all its endpoints take its selection's
    shared groups (``ClusterState.shares``)."""
    templates = []
    common = SHARED + sp.selects if share else None

    def front(match, sp, endpoints, key, **kw):
        templates.append((match, endpoints, key, kw))

    l4_dst = 'tcp_dst' if sp.protocol == 'TCP' else 'udp_dst'
    base = {'eth_type': ETH_IP, 'ip_proto': sp.proto_number}
    # internalTrafficPolicy Local: a node's pods reach only the node's endpoints.
    eps = sp.local_endpoints(node.name) if sp.internal_local else sp.endpoints
    front(dict(base, ipv4_dst=sp.vip, **{l4_dst: sp.port}), sp, eps,
          sp.key + '@' + node.name if sp.internal_local else common or sp.key,
          affinity=sp.affinity_timeout)
    external_fronts(front, sp, node, base, l4_dst, cluster_cidr, common)
    return templates


def external_fronts(front, sp, node, base: dict, l4_dst: str, cluster_cidr: str,
                    common: str | None = None) -> None:
    """kube-proxy's KUBE-EXT chain of a Service port, once per address it catches on
    this node: this node's IP at the nodePort, the load balancer address and every
    external IP at the Service port (on every node: a pod's connection to them never
    leaves its node). All share one group (KUBE-EXT jumps to one chain).

    externalTrafficPolicy Cluster: any endpoint, masqueraded as this node (so replies
    come back here). Local: this node's endpoints, client IP kept; the node itself and
    every pod of the cluster are not external clients (KUBE-EXT's ``--src-type LOCAL``
    and ``-s <cluster CIDR>`` rules, kube-proxy's default ``--detect-local-mode
    ClusterCIDR``) and reach every endpoint unmasqueraded, at a higher priority. A pod
    of another node whose connection lands on an endpoint of a third node (or of its
    own) then gets the answer straight from that endpoint and refuses it, as in a
    cluster (kubernetes#74383). A load balancer
    address with ``loadBalancerSourceRanges`` is caught only from those ranges
    (kube-proxy's KUBE-FW; ``lb_firewall`` drops the rest)."""
    suffix = '/nodeport' if sp.node_port else '/external'
    key = sp.key + suffix + '@' + node.name if sp.external_local else \
        common + '/masquerade' if common else sp.key + suffix
    eps = sp.local_endpoints(node.name) if sp.external_local else sp.endpoints
    addresses = [(node.ip, sp.node_port, ())] if sp.node_port else []
    addresses += [(ip, sp.port, sp.source_ranges if ip == sp.lb_ip else ())
                  for ip in sp.external_addresses]
    for address, port, ranges in addresses:
        match = dict(base, ipv4_dst=address, **{l4_dst: port})
        for source in ranges or (None,):
            allowed = match
            if source is not None:
                net = ipaddress.IPv4Network(source)
                allowed = dict(match, ipv4_src=(str(net.network_address), str(net.netmask)))
            front(allowed, sp, eps, key,
                  mark=None if sp.external_local else CT_MARK_NODE_MASQ,
                  affinity=sp.affinity_timeout)
            if sp.external_local:
                inside = common or sp.key + suffix + '-from-node'
                front(dict(allowed, reg0=(REG0_LOCAL_ORIGIN, REG0_LOCAL_ORIGIN)), sp,
                      sp.endpoints, inside, priority=PRIORITY_NODEPORT_FROM_NODE)
                if source is None:
                    # kube-proxy's default --detect-local-mode ClusterCIDR: any pod of
                    # the cluster, whatever its node, is "local" traffic.
                    pods = ipaddress.IPv4Network(cluster_cidr)
                    front(dict(allowed, ipv4_src=(str(pods.network_address),
                                                  str(pods.netmask))), sp, sp.endpoints,
                          inside, priority=PRIORITY_NODEPORT_FROM_POD)
