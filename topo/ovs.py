"""Which Open vSwitch the lab runs on, and starting it.

Two kinds of machine:

- With the Open vSwitch kernel module (an ordinary VM, the Vagrant box): the machine's
  own Open vSwitch (Debian's package) with its kernel datapath.
- Without it (the userspace datapath): Debian 12's Open vSwitch 3.1.0 lacks upstream's
  userspace-conntrack fixes (it loses short connections under port reuse, "Unable to NAT
  due to tuple space exhaustion"), so the install builds a newer one from Debian's source
  into /opt/kubelab/ovs (scripts/build-ovs.sh) and the lab runs on that: its own
  ovsdb-server and ovs-vswitchd, with its own run directory, database and logs under
  its prefix, so the machine's Open vSwitch, if it runs, keeps running untouched.
  ``KUBELAB_OVS=system`` forces the machine's.

``activate()`` puts the chosen installation's programs first on this process's PATH
(and, for the lab's own build, its run directory in ``OVS_RUNDIR``, where the lab's
controller socket goes),
so every ``ovs-vsctl``, ``ovs-ofctl`` and ``ovs-appctl`` the lab runs (Mininet's, the
controller's, the CLI's, the tests') talks to the instance the lab runs on: each
installation's tools find their own daemons through their compiled-in run directory.
``python -m topo.ovs start`` starts it (the install does, and the daemon when it does not
answer); ``python -m topo.ovs`` says which one the lab uses.

The lab's own build (4.0 and later) runs with ``other_config:userspace-tso-enable``: its
userspace datapath then reads and writes the kernel's offload metadata on the veths
(AF_PACKET's virtio-net header), so a TCP sender hands it 64 KB segments with the
checksum left to the receiver, as on a real node where the veths keep their offloads.
4.0 dropped the feature's experimental tag; without it (Debian 12's 3.1) TCP through the
userspace datapath only works with TX checksum offload off on every veth, and every
1500-byte packet is a trip through ovs-vswitchd. A running ovs-vswitchd takes the setting
as it reads it, but only for the ports it adds from then on, and never drops it: so
``start`` sets it with ovs-vswitchd stopped (stopping one that runs without it), and
never under a running lab's bridges, which keep what they have. topo/network.py reads
what each port does from its status, not from here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from topo.cleanup import lab_bridges

LAB_PREFIX = '/opt/kubelab/ovs'          # scripts/build-ovs.sh's symlink
SYSTEM_PREFIX = '/usr'


@dataclass(frozen=True)
class OpenVSwitch:
    prefix: str
    own: bool          # the lab's own build (else the machine's package)

    @property
    def bin_dirs(self) -> list[str]:
        return [os.path.join(self.prefix, 'bin'), os.path.join(self.prefix, 'sbin')]

    @property
    def ctl(self) -> str:
        return os.path.join(self.prefix, 'share', 'openvswitch', 'scripts', 'ovs-ctl')

    @property
    def rundir(self) -> str:
        """Where its daemons keep their pid files and control sockets."""
        if self.own:      # its compiled-in path, the symlink resolved: Open vSwitch
            # accepts a controller socket only inside that very directory
            return os.path.join(os.path.realpath(self.prefix), 'var', 'run', 'openvswitch')
        return '/var/run/openvswitch'

    def version(self) -> str:
        proc = subprocess.run([os.path.join(self.prefix, 'sbin', 'ovs-vswitchd'),
                               '--version'], capture_output=True, text=True)
        first = proc.stdout.splitlines()[0] if proc.stdout else ''
        return first.split()[-1] if first else 'unknown'

    def recirculation_limit(self) -> int:
        """How many recirculations its userspace datapath allows a packet in one pass
        (dpif-netdev's MAX_RECIRC_DEPTH): 8 in 4.0; 6 in Debian 12's 3.1, which drops
        the seventh ("Max recirculation depth exceeded")."""
        return 8 if self.major() >= 4 else 6

    @property
    def offloads(self) -> bool:
        """Whether the lab runs its userspace datapath with the kernel's TCP segmentation
        and checksum offloads (the module docstring): its own build, 4.0 or later."""
        return self.own and self.major() >= 4

    def major(self) -> int:
        try:
            return int(self.version().split('.')[0])
        except ValueError:
            return 0

    def recipe(self) -> str:
        """How the lab's own build was made (scripts/build-ovs.sh's RECIPE: jemalloc,
        which patches, then any patch it had to leave out); '' for the machine's package
        or an older build."""
        try:
            with open(os.path.join(self.prefix, 'share', 'kubelab-build')) as f:
                return '; '.join(line.strip() for line in f if line.strip())
        except OSError:
            return ''

    def describe(self) -> str:
        where = (f'the lab\'s own build in {os.path.realpath(self.prefix)}' if self.own
                 else "the machine's package")
        recipe = self.recipe() if self.own else ''
        return f'Open vSwitch {self.version()}, {where}' + (f' ({recipe})' if recipe else '')


def kernel_module() -> bool:
    """True where the Open vSwitch kernel module is loaded or loadable."""
    if os.path.exists('/sys/module/openvswitch'):
        return True
    probe = subprocess.run(['modprobe', '-q', 'openvswitch'], capture_output=True)
    return probe.returncode == 0


def choose() -> OpenVSwitch:
    """The Open vSwitch the lab runs on (see the module docstring)."""
    if os.environ.get('KUBELAB_OVS') != 'system' \
            and os.access(os.path.join(LAB_PREFIX, 'sbin', 'ovs-vswitchd'), os.X_OK) \
            and (os.environ.get('KUBELAB_DATAPATH') == 'user'
                 or (os.environ.get('KUBELAB_DATAPATH') != 'kernel' and not kernel_module())):
        return OpenVSwitch(LAB_PREFIX, own=True)
    return OpenVSwitch(SYSTEM_PREFIX, own=False)


def activate(ovs: OpenVSwitch | None = None) -> OpenVSwitch:
    """Put ``ovs``'s programs first on this process's PATH (inherited by every command
    it runs); returns it."""
    ovs = ovs or choose()
    if ovs.own:
        path = [p for p in os.environ.get('PATH', '').split(os.pathsep)
                if p and p not in ovs.bin_dirs]
        os.environ['PATH'] = os.pathsep.join(ovs.bin_dirs + path)
        os.environ['OVS_RUNDIR'] = ovs.rundir     # what the lab's own code reads too
    return ovs


def answers() -> bool:
    """Whether its database answers (``ovs-vsctl``)."""
    return subprocess.run(['ovs-vsctl', '--timeout=5', 'show'],
                          capture_output=True).returncode == 0


def switch_answers() -> bool:
    """Whether ovs-vswitchd answers: the database alone answers ``ovs-vsctl``, but
    adding a bridge then waits for ever."""
    return subprocess.run(['ovs-appctl', '--timeout=5', '-t', 'ovs-vswitchd', 'version'],
                          capture_output=True).returncode == 0


TSO_KEY = 'other_config:userspace-tso-enable'


def _vsctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(['ovs-vsctl', '--timeout=5', *args], capture_output=True,
                          text=True)


def start(ovs: OpenVSwitch | None = None) -> OpenVSwitch:
    """Make sure the chosen Open vSwitch runs, its database and ovs-vswitchd (each started
    if it does not answer), ovs-vswitchd with the offloads setting ``ovs`` wants (the
    module docstring). Raises RuntimeError with what to do when it will not start."""
    ovs = activate(ovs)
    if shutil.which('ovs-vsctl') is None:
        raise RuntimeError('Open vSwitch is not installed: run `sudo ./run.sh install`')
    steps = []
    if not answers():
        steps.append(subprocess.run([ovs.ctl, 'start', '--no-ovs-vswitchd',
                                     '--system-id=random'], capture_output=True, text=True))
    if ovs.offloads and answers() and not lab_bridges() \
            and _vsctl('get', 'Open_vSwitch', '.', TSO_KEY).stdout.strip() != '"true"':
        # A running ovs-vswitchd turns the setting on as it reads it, for the ports it
        # adds from then on only: stop it first, so that all of them have it.
        if switch_answers():
            subprocess.run([ovs.ctl, 'stop', '--no-ovsdb-server'], capture_output=True)
        _vsctl('--no-wait', 'set', 'Open_vSwitch', '.', f'{TSO_KEY}=true')
    if answers() and not switch_answers():
        steps.append(subprocess.run([ovs.ctl, 'start', '--no-ovsdb-server',
                                     '--system-id=random'], capture_output=True, text=True))
    if not (answers() and switch_answers()):
        said = ' '.join(f'{p.stdout.strip()} {p.stderr.strip()}'.strip() for p in steps)
        raise RuntimeError(f'Open vSwitch does not answer and would not start ({ovs.ctl} '
                           f'start: {said})')
    return ovs


def main(argv: list[str]) -> int:
    if argv[:1] == ['start']:
        try:
            ovs = start()
        except RuntimeError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 1
        print(f'running: {ovs.describe()}')
        return 0
    print(choose().describe())
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
