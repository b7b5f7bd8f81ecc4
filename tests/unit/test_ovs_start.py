"""topo/ovs.py's ``start``: both daemons answering, ovs-vswitchd with the userspace TSO
setting the lab's own build (4.0 and later) runs with, and topo/network.py's reading of
what each port does.

``start`` runs for real against a stand-in installation in a temporary folder: an
``ovs-ctl``, ``ovs-vsctl`` and ``ovs-appctl`` that keep the two daemons' state (running
or not, the setting, the bridges) in files and log every call, so nothing of this
machine's Open vSwitch is touched."""

import json

import pytest

from kubelab.printers import datapath_text
from topo import network, ovs

VSCTL = r'''#!/bin/sh
S="$STATE"; echo "vsctl $*" >> "$S/calls"
case "$1" in --timeout=*) shift ;; esac
case "$1" in
  show) [ -e "$S/db" ] ;;
  get) [ -e "$S/db" ] || exit 1; [ -e "$S/tso" ] && echo '"true"' && exit 0
       echo 'ovs-vsctl: no key "userspace-tso-enable" in Open_vSwitch record' >&2; exit 1 ;;
  --no-wait) [ -e "$S/db" ] && touch "$S/tso" ;;
  --format=json) rows=""; for b in $(cat "$S/bridges" 2>/dev/null); do
         rows="$rows${rows:+,}[\"$b\",[\"map\",[]]]"; done
       echo "{\"headings\":[\"name\",\"external_ids\"],\"data\":[$rows]}" ;;
  *) exit 2 ;;
esac
'''
APPCTL = r'''#!/bin/sh
echo "appctl $*" >> "$STATE/calls"
[ "$4" = "version" ] && [ -e "$STATE/vswitchd" ]
'''
CTL = r'''#!/bin/sh
S="$STATE"; echo "ctl $*" >> "$S/calls"
case "$1 $2" in
  "start --no-ovs-vswitchd") touch "$S/db" ;;
  "start --no-ovsdb-server") [ -e "$S/db" ] || exit 1
     if [ -e "$S/broken" ]; then echo "ovs-vswitchd: no such thing" >&2; exit 1; fi
     if [ -e "$S/tso" ]; then echo tso > "$S/vswitchd"; else echo plain > "$S/vswitchd"; fi ;;
  "stop --no-ovsdb-server") rm -f "$S/vswitchd" ;;
esac
'''


@pytest.fixture
def install(tmp_path, monkeypatch):
    """A stand-in installation: (its OpenVSwitch, the state folder)."""
    def make(version='4.0.0', own=True, db=False, vswitchd=None, tso=False, bridges=()):
        prefix, state = tmp_path / 'ovs', tmp_path / 'state'
        state.mkdir()
        tools = {'sbin/ovs-vswitchd': f'#!/bin/sh\necho "ovs-vswitchd (Open vSwitch) '
                                      f'{version}"\n',
                 'bin/ovs-vsctl': VSCTL, 'bin/ovs-appctl': APPCTL,
                 'share/openvswitch/scripts/ovs-ctl': CTL}
        for name, body in tools.items():
            (prefix / name).parent.mkdir(parents=True, exist_ok=True)
            (prefix / name).write_text(body)
            (prefix / name).chmod(0o755)
        if db:
            (state / 'db').touch()
        if vswitchd:
            (state / 'vswitchd').write_text(vswitchd + '\n')
        if tso:
            (state / 'tso').touch()
        (state / 'bridges').write_text(''.join(f'{b}\n' for b in bridges))
        monkeypatch.setenv('STATE', str(state))
        monkeypatch.setenv('PATH', f'{prefix}/bin:{prefix}/sbin:/usr/bin:/bin')
        monkeypatch.setenv('OVS_RUNDIR', str(tmp_path / 'run'))
        return ovs.OpenVSwitch(str(prefix), own=own), state
    return make


def running(state) -> str:
    """How ovs-vswitchd runs now: 'tso', 'plain', or '' (not at all)."""
    path = state / 'vswitchd'
    return path.read_text().strip() if path.exists() else ''


def calls(state) -> list[str]:
    return (state / 'calls').read_text().splitlines()


SET = 'vsctl --timeout=5 --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true'
START_SWITCH = 'ctl start --no-ovsdb-server --system-id=random'


def in_order(state, *steps: str) -> bool:
    """Whether ``steps`` were all called, in this order."""
    done = calls(state)
    return all(step in done for step in steps) and \
        [done.index(step) for step in steps] == sorted(done.index(step) for step in steps)


def test_a_stopped_labs_build_starts_with_the_setting_before_ovs_vswitchd(install):
    switch, state = install()
    ovs.start(switch)
    assert running(state) == 'tso'
    assert in_order(state, 'ctl start --no-ovs-vswitchd --system-id=random', SET, START_SWITCH)


def test_a_running_build_without_the_setting_is_restarted_with_it(install):
    switch, state = install(db=True, vswitchd='plain')
    ovs.start(switch)
    assert running(state) == 'tso'
    assert in_order(state, 'ctl stop --no-ovsdb-server', SET, START_SWITCH)


def test_a_running_labs_ovs_vswitchd_is_left_as_it_runs(install):
    switch, state = install(db=True, vswitchd='plain', bridges=('kl-ex', 'kl-n1'))
    ovs.start(switch)
    assert running(state) == 'plain'          # the lab's bridges stay up
    assert not any(c.startswith('ctl stop') for c in calls(state))
    # nor set under it: its new ports would take the offloads, the others not
    assert not (state / 'tso').exists()


def test_a_build_running_as_it_should_is_left_alone(install):
    switch, state = install(db=True, vswitchd='tso', tso=True)
    ovs.start(switch)
    assert running(state) == 'tso'
    assert not any(c.startswith('ctl') or 'set Open_vSwitch' in c for c in calls(state))


@pytest.mark.parametrize('version, own', [('3.1.0', True), ('4.0.0', False)])
def test_older_builds_and_the_machines_package_run_without_the_setting(install, version,
                                                                     own):
    switch, state = install(version=version, own=own)
    assert not switch.offloads
    ovs.start(switch)
    assert running(state) == 'plain'
    assert not (state / 'tso').exists()


def test_an_ovs_vswitchd_that_will_not_start_is_an_error_saying_what_it_said(install):
    switch, state = install(db=True)
    (state / 'broken').touch()
    with pytest.raises(RuntimeError, match='does not answer and would not start.*no such '
                                           'thing'):
        ovs.start(switch)


def interfaces(monkeypatch, tmp_path, statuses: dict):
    """An ovs-vsctl answering ``list Interface`` with ``statuses`` (name -> status)."""
    rows = [[name, ['map', sorted(status.items())]] for name, status in statuses.items()]
    answer = tmp_path / 'answer.json'
    answer.write_text(json.dumps({'headings': ['name', 'status'], 'data': rows}))
    (tmp_path / 'ovs-vsctl').write_text(f'#!/bin/sh\ncat {answer}\n')
    (tmp_path / 'ovs-vsctl').chmod(0o755)
    monkeypatch.setenv('PATH', f'{tmp_path}:/usr/bin:/bin')


OFFLOADING = {'driver_name': 'veth', 'tx_tcp_csum_offload': 'true',
              'tx_tcp_seg_offload': 'true'}


def test_ports_whose_status_says_they_take_the_offloads_keep_them(monkeypatch, tmp_path):
    interfaces(monkeypatch, tmp_path, {'kl-n1-eth2': OFFLOADING, 'kl-ex-eth101': OFFLOADING})
    assert network.ports_offload(['kl-n1-eth2', 'kl-ex-eth101'])


@pytest.mark.parametrize('statuses', [
    {'kl-n1-eth2': OFFLOADING, 'kl-ex-eth101': {'driver_name': 'veth'}},   # 3.1: no key
    {'kl-n1-eth2': OFFLOADING, 'kl-ex-eth101': dict(OFFLOADING, tx_tcp_csum_offload='false')},
    {'kl-n1-eth2': OFFLOADING},                                            # one missing
])
def test_one_port_without_them_turns_them_off(monkeypatch, tmp_path, statuses):
    interfaces(monkeypatch, tmp_path, statuses)
    assert not network.ports_offload(['kl-n1-eth2', 'kl-ex-eth101'])


@pytest.mark.parametrize('info, says', [
    ({'datapath': 'user', 'openvswitch': 'Open vSwitch 4.0.0', 'offloads': True},
     'user (Open vSwitch 4.0.0); the veths keep their TCP offloads (userspace TSO)'),
    ({'datapath': 'user', 'openvswitch': 'Open vSwitch 3.1.0', 'offloads': False},
     'user (Open vSwitch 3.1.0); TX checksum offload off on the veths'),
    ({'datapath': 'kernel', 'openvswitch': 'Open vSwitch 3.1.0', 'offloads': False},
     'kernel (Open vSwitch 3.1.0)'),
])
def test_kubelab_up_says_whether_the_veths_keep_their_offloads(info, says):
    assert datapath_text(info) == says
