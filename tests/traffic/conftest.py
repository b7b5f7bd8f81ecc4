"""Traffic tests: a real lab (Mininet + Open vSwitch + the Ryu controller) per module.

They need root; elsewhere they are skipped with the reason shown (``pytest -ra``).
Each module shares one running lab across its tests and resets only what a test changed.
"""

import os
import subprocess

import pytest

from kubelab.api import Lab
from topo import ovs

# The Open vSwitch the lab runs on (the lab's own build on a userspace-datapath machine):
# its ovs-ofctl and ovs-appctl first on the PATH of the tests' own commands.
ovs.activate()

NEEDS_ROOT = 'traffic tests need root (network namespaces, Open vSwitch): run `sudo make test`'


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=NEEDS_ROOT)
    for item in items:
        if 'tests/traffic/' in str(item.fspath):
            item.add_marker(skip)


def lab_leftovers() -> dict:
    """What of a lab is on this machine: bridges, interfaces, recorded live processes."""
    from topo.cleanup import PidRegistry, is_alive, lab_bridges, lab_links
    from kubelab.daemon.statedir import state_path
    live = [pid for pid, started, _ in PidRegistry(state_path('pids')).entries()
            if is_alive(pid, started)]
    return {'bridges': lab_bridges(), 'links': lab_links(), 'processes': live}


@pytest.fixture(scope='module')
def lab():
    """The default lab for one module: kubelab's own Python API (kubelab/api.py), as
    its pytest plugin's ``kubelab`` fixture gives it to users."""
    ctl = Lab.start()
    try:
        yield ctl
    finally:
        ctl.down()


@pytest.fixture(scope='module')
def ovs_flows():
    def dump(bridge):
        out = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-flows', bridge],
                             capture_output=True, text=True, check=True)
        return out.stdout
    return dump


@pytest.fixture
def applied(lab):
    """Apply manifest text for one test (``applied(text)``, with --wait); what it
    applied is deleted again afterwards, last first."""
    texts = []

    def apply(text):
        texts.append(text)
        lab.apply(text)
    yield apply
    for text in reversed(texts):
        lab.delete(text)
