"""The lab's cabling as Mininet builds it (topo/network.py), without root: which cable
between the cloud edge and the underlay is a patch port and which a veth pair."""

import pytest
from mininet.link import OVSLink

from services import wiring
from services.cluster import default_cluster
from topo.network import ClusterTopo, LabNetwork


def edge_cable(topo) -> dict:
    [info] = [info for a, b, info in topo.links(withInfo=True)
              if {a, b} == {wiring.EDGE_BRIDGE, wiring.UNDERLAY_BRIDGE}]
    return info


def test_the_edge_cable_is_a_patch_port_only_when_asked():
    cluster = default_cluster()
    assert edge_cable(ClusterTopo(cluster=cluster, edge_patch=True)).get('cls') is OVSLink
    assert 'cls' not in edge_cable(ClusterTopo(cluster=cluster))        # a veth pair
    nodes = [info for a, b, info in ClusterTopo(cluster=cluster).links(withInfo=True)
             if wiring.UNDERLAY_BRIDGE in (a, b) and wiring.EDGE_BRIDGE not in (a, b)]
    assert nodes and all(info.get('cls') is OVSLink for info in nodes)


@pytest.mark.parametrize('datapath, limit, patch', [
    ('user', 8, True),            # Open vSwitch 4.0: the deepest path fits one pass
    ('user', 6, True),            # Debian 12's 3.1: it fits, at six (services/wiring.py)
    ('user', 5, False),           # one fewer would drop the load balancer's SYN
    ('kernel', 8, False)])        # the kernel datapath keeps the veth pair
def test_the_lab_uses_the_patch_port_where_the_deepest_path_fits(datapath, limit, patch):
    net = LabNetwork(default_cluster(), 'unix:/nonexistent', 'mark', datapath=datapath,
                     recirculation_limit=limit)
    assert net.edge_patch is patch
