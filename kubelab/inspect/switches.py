"""Reading the running lab's switches: which bridges it has and what ``ovs-ofctl`` says
about each (flows, groups, group counters).

The cluster comes from the file the daemon gave the controller, so the bridges named
are the ones the controller programs. A bridge that cannot be read (missing,
``ovs-ofctl`` failing or hanging) carries its error in its dump; the others are read
all the same. ``kubelab flows`` and ``kubelab top`` (kubelab/cli/observe.py) use these.
"""

from __future__ import annotations

import json
import os
import subprocess

from kubelab.client import Client
from kubelab.inspect.flows import BRIDGE_ORDER, bridge_dump
from services import wiring
from services.cluster import load_cluster_file
from services.errors import KubelabError
from topo import ovs

#: Seconds one ``ovs-ofctl`` may take.
OFCTL_TIMEOUT = 10


class OfctlFailed(KubelabError):
    """``ovs-ofctl`` failed or did not answer on one bridge."""


def lab_cluster(client: Client):
    """The running lab's cluster: the file the daemon gave the controller."""
    return load_cluster_file(os.environ.get('KUBELAB_CLUSTER_FILE')
                             or os.path.join(client.state_dir, 'cluster.json'))


def lab_bridges(cluster, only: str | None = None) -> list[tuple[str, int]]:
    """(name, dpid) of the lab's bridges: the nodes', the underlay, the cloud edge, the
    external network; ``only``: one node (by node or bridge name)."""
    bridges = sorted(wiring.all_bridges(cluster), key=lambda b: (
        BRIDGE_ORDER[wiring.switch_role(cluster, b[1]).kind], b[1]))
    if only is None:
        return bridges
    for node in cluster.nodes:
        if only in (node.name, wiring.node_bridge(node)):
            return [(wiring.node_bridge(node), wiring.node_dpid(node))]
    if only in {name for name, _ in bridges}:
        return [b for b in bridges if b[0] == only]
    raise KubelabError(f'no node "{only}"; nodes: '
                       + ', '.join(n.name for n in cluster.nodes)
                       + '; bridges: ' + ', '.join(name for name, _ in bridges))


def use_lab_openvswitch(state_dir: str) -> None:
    """Talk to the Open vSwitch the running lab runs on: its own build's programs first
    on the PATH when it runs on one (topo/ovs.py; the daemon names it in the state
    directory's openvswitch.json)."""
    try:
        with open(os.path.join(state_dir, 'openvswitch.json')) as f:
            prefix = json.load(f).get('prefix')
    except (OSError, ValueError):
        return
    if prefix:
        ovs.activate(ovs.OpenVSwitch(prefix, own=True))


def ovs_ofctl(bridge: str, *args: str) -> str:
    argv = ['ovs-ofctl', '-O', 'OpenFlow13', *args, bridge]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=OFCTL_TIMEOUT)
    except FileNotFoundError:
        raise KubelabError('ovs-ofctl not found: Open vSwitch is not installed '
                           '(`sudo ./run.sh install`)') from None
    except subprocess.TimeoutExpired:
        raise OfctlFailed(f'`{" ".join(argv)}` did not answer within {OFCTL_TIMEOUT} s') \
            from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f'exit status {proc.returncode}']
        hint = ' (run kubelab with sudo)' if 'Permission denied' in lines[-1] else ''
        raise OfctlFailed(f'`{" ".join(argv)}` failed: {lines[-1]}{hint}')
    return proc.stdout


def dump_bridges(bridges: list[tuple[str, int]]) -> list:
    """Each bridge's flows, groups and group counters; a bridge that cannot be read
    (missing, ovs-ofctl failing) carries the error, the others are read all the same."""
    dumps = []
    for name, dpid in bridges:
        texts, errors = {}, []
        for what, args in (('flows', ('--names', 'dump-flows')),
                           ('groups', ('dump-groups',)),
                           ('stats', ('dump-group-stats',))):
            try:
                texts[what] = ovs_ofctl(name, *args)
            except OfctlFailed as exc:
                errors.append(str(exc))
                if what == 'flows':       # no such bridge: the other dumps fail alike
                    break
        dumps.append(bridge_dump(name, dpid, texts.get('flows'), texts.get('groups'),
                                 texts.get('stats'), error='; '.join(errors) or None))
    return dumps
