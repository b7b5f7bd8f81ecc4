"""The underlay switch: the fabric between the nodes' bridges and the external network.

It forwards by destination MAC (each node bridge's router MAC, the external router's) and
nothing else: no conntrack, no NAT, one table.
"""

from __future__ import annotations

from controller.flows import Output, SwitchConfig, flow
from controller.pipeline.tables import PRIORITY_FALLBACK, PRIORITY_MISS
from services import wiring


def underlay(cluster) -> SwitchConfig:
    """The fabric between the nodes: forward by destination MAC, nothing else (at
    FALLBACK, as a node bridge routes to another node)."""
    flows = [flow(0, PRIORITY_FALLBACK, {'eth_dst': wiring.router_mac(n.ip)},
                  (Output(n.index),), owner=f'node {n.name}') for n in cluster.nodes]
    flows.append(flow(0, PRIORITY_FALLBACK,
                      {'eth_dst': wiring.router_mac(cluster.external_gateway)},
                      (Output(wiring.UNDERLAY_EXTERNAL_PORT),), owner='external network'))
    flows.append(flow(0, PRIORITY_MISS, owner='underlay'))
    return SwitchConfig(flows=flows)
