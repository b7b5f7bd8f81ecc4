"""scripts/build-ovs.sh's cache and topo/ovs.py's account of the build it made.

The script runs for real on a stand-in installation in a temporary root
(``KUBELAB_OVS_ROOT``): an ``ovs-vswitchd`` that prints a version and an ``ovs-vsctl``
that lists bridges. Every case here ends before the script would fetch or build
anything, so nothing of this machine changes and no network is needed."""

import hashlib
import subprocess
from pathlib import Path

from topo.ovs import OpenVSwitch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'scripts' / 'build-ovs.sh'


def recipe() -> str:
    """The RECIPE the script computes from the patches it applies."""
    patches = b''.join(p.read_bytes() for p in sorted((REPO / 'scripts' / 'ovs-patches')
                                                      .glob('*.patch')))
    return f'jemalloc, patches {hashlib.sha256(patches).hexdigest()[:12]}'


def stand_in(root: Path, version='4.0.0', made_with=None, bridges=()) -> Path:
    """An installed build at root/ovs -> root/ovs-VERSION, as the script leaves one."""
    prefix = root / f'ovs-{version}'
    for folder in ('sbin', 'bin', 'share'):
        (prefix / folder).mkdir(parents=True)
    tools = {'sbin/ovs-vswitchd': f'echo "ovs-vswitchd (Open vSwitch) {version}"',
             'bin/ovs-vsctl': 'printf "%s\\n" ' + ' '.join(bridges) if bridges else 'true'}
    for name, body in tools.items():
        (prefix / name).write_text(f'#!/bin/sh\n{body}\n')
        (prefix / name).chmod(0o755)
    if made_with is not None:
        (prefix / 'share' / 'kubelab-build').write_text(made_with + '\n')
    (root / 'ovs').symlink_to(prefix)
    return prefix


def build(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', str(SCRIPT)], capture_output=True, text=True, timeout=30,
                          env={'PATH': '/usr/bin:/bin', 'KUBELAB_OVS_ROOT': str(root)})


def test_a_build_made_with_this_recipe_is_kept_as_it_is(tmp_path):
    prefix = stand_in(tmp_path, made_with=recipe())
    done = build(tmp_path)
    assert done.returncode == 0, done.stderr
    assert f'cached: Open vSwitch 4.0.0 in {prefix} ({recipe()})' in done.stdout
    assert 'fetching' not in done.stdout


def test_a_running_labs_build_of_another_recipe_is_kept_and_the_user_told_how(tmp_path):
    prefix = stand_in(tmp_path, made_with='jemalloc, patches 000000000000',
                      bridges=('kl-ex', 'kl-n1'))
    done = build(tmp_path)
    assert done.returncode == 0, done.stderr
    assert f'a lab runs on the build in {prefix}: keeping it' in done.stdout
    assert '`kubelab down`, then install again' in done.stdout
    assert 'fetching' not in done.stdout
    assert (prefix / 'share' / 'kubelab-build').read_text().strip() == \
        'jemalloc, patches 000000000000'


def test_the_description_says_how_the_labs_own_build_was_made(tmp_path):
    prefix = stand_in(tmp_path, made_with=recipe())
    own = OpenVSwitch(str(tmp_path / 'ovs'), own=True)
    assert own.recipe() == recipe()
    assert own.describe() == (f"Open vSwitch 4.0.0, the lab's own build in {prefix} "
                              f'({recipe()})')
    # A patch the newer source would not take is said, and the cache still holds.
    (prefix / 'share' / 'kubelab-build').write_text(
        f'{recipe()}\nleft out: accept-when-ready.patch\n')
    assert own.describe().endswith(f'({recipe()}; left out: accept-when-ready.patch)')
    done = build(tmp_path)
    assert done.returncode == 0 and 'cached:' in done.stdout, done.stdout + done.stderr
    (prefix / 'share' / 'kubelab-build').unlink()          # a build from before recipes
    assert own.describe() == f"Open vSwitch 4.0.0, the lab's own build in {prefix}"
