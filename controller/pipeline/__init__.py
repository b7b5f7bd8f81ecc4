"""kube-proxy as OpenFlow: the pipeline of every lab switch, computed from cluster state.

``desired(state, dpid)`` is a pure function: it returns every flow, group and meter that
switch ``dpid`` should hold. controller/reconcile.py diffs that against what the switch
holds and the Ryu shell sends the difference; nothing here sends anything.

The wing, by file: tables.py (the tables and what iptables place each plays, marks,
zones, priorities, the check of every goto); one file per kind of switch, each with its
builder: node_switch.py (``node_bridge``, one function per table; a Service port's
fronts and groups in service_fronts.py, its flows memoized while it does not change by
memo.py), edge_switch.py (``cloud_edge``), underlay_switch.py (``underlay``),
external_switch.py (``external``); shared.py (flows several switches build alike);
conntrack_cleanup.py (what to flush when a UDP endpoint goes); lan_switch.py (a
bare-metal cluster's two LANs) and l2_announce.py (a bare-metal node's ARP answers on
its LAN, MetalLB's addresses).
"""

from __future__ import annotations

from controller.flows import SwitchConfig
from controller.pipeline.edge_switch import cloud_edge
from controller.pipeline.external_switch import external
from controller.pipeline.lan_switch import lan_external, lan_underlay
from controller.pipeline.node_switch import node_bridge
from controller.pipeline.tables import (AFFINITY_COOKIE, ETH_IP, T, TABLE_NAMES, TABLES,
                                        check_pipeline)
from controller.pipeline.underlay_switch import underlay
from services import wiring

__all__ = ['AFFINITY_COOKIE', 'ETH_IP', 'T', 'TABLES', 'TABLE_NAMES', 'build', 'desired']


def build(state, dpid: int) -> SwitchConfig:
    """What the builder of switch ``dpid`` makes, before flows of equal content are
    merged (``kubelab flows`` reads every owner of a flow from it)."""
    role = wiring.switch_role(state.cluster, dpid)
    if role is None:
        return SwitchConfig()
    if role.kind == 'node':
        return node_bridge(state, role.node)
    if state.cluster.bare_metal:        # two LANs and a router host (lan_switch.py)
        if role.kind == 'underlay':
            return lan_underlay(state.cluster)
        return lan_external(state.cluster) if role.kind == 'external' else SwitchConfig()
    if role.kind == 'underlay':
        return underlay(state.cluster)
    if role.kind == 'edge':
        return cloud_edge(state)
    return external(state.cluster, [ip for sp in state.service_ports
                                    for ip in sp.external_ips])


def desired(state, dpid: int) -> SwitchConfig:
    """Everything switch ``dpid`` should hold for ``state`` (empty for an unknown switch)."""
    config = build(state, dpid)
    # One flow may serve two owners (an endpoint of two sticky Service ports): keep one.
    config.flows = list({f.cookie: f for f in config.flows}.values())
    check_pipeline(config)
    return config
