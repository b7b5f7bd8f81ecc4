"""kube-proxy's conntrack cleanup: which conntrack entries to delete when a UDP Service
port loses an endpoint.

Flows cannot end a UDP "connection"; deleting its conntrack entry can. This module only
says which entries (``ConntrackFlush``, in ``ovs-appctl dpctl/flush-conntrack`` terms);
the Ryu shell runs the flushes once every switch holds the new flows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConntrackFlush:
    """Delete the conntrack entries of ``zone`` whose original direction matches
    ``orig`` and whose reply direction matches ``reply`` (``ovs-appctl
    dpctl/flush-conntrack`` tuple syntax; unnamed fields match anything)."""
    zone: int
    orig: str
    reply: str


def stale_udp_flushes(old, new) -> list[ConntrackFlush]:
    """What kube-proxy's conntrack cleanup deletes when a UDP Service port loses an
    endpoint: the entries DNATed to it through the ClusterIP, the NodePort, the load
    balancer address and the external IPs (every node catches those). UDP has
    no connection to end: without this, a client that keeps sending from one port keeps
    reaching the gone endpoint until the entry idles out. TCP needs nothing: the client
    sees its connection reset and opens a new one, which the groups balance afresh.

    The entries live in the zone of the node the client's packets entered, so every
    node's zone is flushed."""
    if old is None:
        return []
    now = {sp.key: sp for sp in new.service_ports if sp.protocol == 'UDP'}
    flushes = []
    for sp in old.service_ports:
        if sp.protocol != 'UDP' or now.get(sp.key) is sp:     # the same: unchanged
            continue
        gone = set(sp.endpoints) - set(now[sp.key].endpoints if sp.key in now else ())
        fronts = [f'ct_nw_dst={addr},ct_nw_proto=17,ct_tp_dst={sp.port}'
                  for addr in (sp.vip, *sp.external_addresses)]
        if sp.node_port:
            fronts.append(f'ct_nw_proto=17,ct_tp_dst={sp.node_port}')
        for ep in sorted(gone, key=lambda e: (e.ip, e.port)):
            reply = f'ct_nw_src={ep.ip},ct_nw_proto=17,ct_tp_src={ep.port}'
            flushes.extend(ConntrackFlush(node.index, orig, reply)
                           for node in old.cluster.nodes for orig in fronts)
    return flushes
