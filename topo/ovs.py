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
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

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
        try:
            return 8 if int(self.version().split('.')[0]) >= 4 else 6
        except ValueError:
            return 6

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
    return subprocess.run(['ovs-vsctl', '--timeout=5', 'show'],
                          capture_output=True).returncode == 0


def start(ovs: OpenVSwitch | None = None) -> OpenVSwitch:
    """Make sure the chosen Open vSwitch runs (started if ``ovs-vsctl`` gets no answer).
    Raises RuntimeError with what to do when it will not start."""
    ovs = activate(ovs)
    if shutil.which('ovs-vsctl') is None:
        raise RuntimeError('Open vSwitch is not installed: run `sudo ./run.sh install`')
    if answers():
        return ovs
    proc = subprocess.run([ovs.ctl, 'start', '--system-id=random'], capture_output=True,
                          text=True)
    if not answers():
        raise RuntimeError(f'Open vSwitch does not answer and would not start ({ovs.ctl} '
                           f'start: {proc.stdout.strip()} {proc.stderr.strip()})'.strip())
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
