"""The lab as a neighbour of the machine it runs on: each test replays an attack or an
accident on a running lab and shows it no longer works (SECURITY.md lists them).

A switch claiming an existing datapath id, or one the cluster does not have, is refused
and the real switch keeps its flows; a second ``up`` (same or another state directory)
is refused and the running lab is untouched; cleanup leaves a ``kl-`` bridge it did not
make alone; a ``$(VAR)`` bomb does not slow the daemon; ``--replicas 100000`` is
refused; and a daemon killed with ``kill -9`` comes back with every object, Services
keeping their ClusterIPs and nodePorts, until ``kubelab down`` ends them.
"""

import os
import subprocess
import sys
import time

import pytest

from kubelab.daemon.statedir import running_daemon, state_path
from services import wiring
from tests.traffic.manifests import echo_pod, netexec_deployment, shell_pods

APP = echo_pod('web-1', 'worker-1', 'web') + netexec_deployment('web') + """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
""" + shell_pods(('client', 'worker-2'))


def vsctl(*args, check=True):
    return subprocess.run(['ovs-vsctl', '--timeout=10', *args], capture_output=True,
                          text=True, check=check)


def flows(bridge: str) -> list[str]:
    out = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', '--no-stats', 'dump-flows',
                          bridge], capture_output=True, text=True, check=True).stdout
    return sorted(out.splitlines()[1:])


def controller_log() -> str:
    with open(state_path('controller.log'), errors='replace') as f:
        return f.read()


@pytest.fixture(scope='module')
def app(lab):
    lab.apply(APP)
    lab.client.wait_ready()
    return lab


@pytest.fixture
def impostor(app):
    """A bridge of someone else's that points at the lab's OpenFlow socket
    (``impostor(dpid)``); removed afterwards."""
    made = []
    datapath = 'netdev' if app.client.lab()['datapath'] == 'user' else 'system'

    def make(dpid: int) -> str:
        name = f'atk{len(made)}'
        made.append(name)
        vsctl('--', 'add-br', name, '--', 'set', 'Bridge', name,
              f'datapath_type={datapath}', 'fail_mode=secure', 'protocols=OpenFlow13',
              f'other_config:datapath-id={dpid:016x}',
              '--', 'set-controller', name, 'unix:' + app.client.lab()['ofpSocket'])
        return name
    yield make
    for name in made:
        vsctl('--if-exists', 'del-br', name, check=False)


def web_answers(lab, ip: str, port: int, count: int = 4) -> set:
    got = lab.http('client', ip, port, '/hostname', count=count)
    assert all(r['ok'] for r in got), got
    return {r['body'] for r in got}


def test_a_second_switch_with_an_existing_datapath_id_is_refused(app, impostor):
    """The attack: a bridge that claims the underlay's datapath id connects to the
    controller. It is refused and logged, gets no flows, and the real underlay keeps
    every flow and still follows the cluster."""
    before = flows(wiring.UNDERLAY_BRIDGE)
    name = impostor(wiring.UNDERLAY_DPID)
    deadline = time.monotonic() + 15
    while 'already connected' not in controller_log():
        assert time.monotonic() < deadline, controller_log()[-2000:]
        time.sleep(0.2)
    assert f'refused switch {wiring.UNDERLAY_DPID:#x}' in controller_log()
    assert flows(name) == []
    assert flows(wiring.UNDERLAY_BRIDGE) == before
    # The controller still programs the real switches: a new Service works.
    ip = app.cluster_ip('web')
    assert web_answers(app, ip, 80) <= {p['metadata']['name'] for p in app.pods({'app': 'web'})}


def test_a_switch_the_cluster_does_not_have_is_refused(app, impostor):
    name = impostor(0xbad)
    deadline = time.monotonic() + 15
    while 'refused switch 0xbad: not a bridge of this lab' not in controller_log():
        assert time.monotonic() < deadline, controller_log()[-2000:]
        time.sleep(0.2)
    assert flows(name) == []


def test_a_second_up_is_refused_and_the_lab_is_untouched(app, tmp_path):
    """The accident: `kubelab up` while a lab runs, from the same state directory or
    another. Both are refused naming the running lab; its bridges, pods and traffic
    carry on."""
    pid = running_daemon()
    bridges = vsctl('list-br').stdout.split()
    ip = app.cluster_ip('web')
    second = app.kubelab('up', '--detach', check=False)
    assert second.returncode != 0 and 'a lab is already running' in second.stderr
    other = tmp_path / 'state'
    third = subprocess.run(
        [app.python, '-m', 'kubelab.cli', 'up', '--detach'], capture_output=True, text=True,
        cwd='/', timeout=120, env=dict(os.environ, KUBELAB_STATE_DIR=str(other),
                                       PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    assert third.returncode != 0, third.stdout
    assert 'a lab is already running' in third.stderr and state_path() in third.stderr
    # The daemon itself refuses too, should two `up`s race past the CLI's check.
    raced = subprocess.run([app.python, '-m', 'kubelab.daemon'], capture_output=True,
                           text=True, cwd='/', timeout=60, stdin=subprocess.DEVNULL,
                           env=dict(os.environ, KUBELAB_STATE_DIR=str(other), PYTHONPATH=
                                    os.pathsep.join(p for p in sys.path if p)))
    assert raced.returncode == 1 and 'a lab is already running' in raced.stderr
    assert running_daemon() == pid
    assert vsctl('list-br').stdout.split() == bridges
    assert web_answers(app, ip, 80)


def test_cleanup_leaves_a_bridge_it_did_not_make(app):
    """A `kl-` bridge made by someone else is neither removed by `down`'s cleanup nor
    built over: cleanup removes only what carries this lab's mark."""
    from topo.cleanup import bridge_marks, clean_leftovers, foreign
    from topo.network import detect_datapath
    kind = 'netdev' if detect_datapath() == 'user' else 'system'
    try:
        vsctl('add-br', 'kl-theirs', '--', 'set', 'bridge', 'kl-theirs',
              f'datapath_type={kind}')
        assert 'bridge kl-theirs (not made by kubelab' in '; '.join(
            foreign(os.path.realpath(state_path())))
        marks = bridge_marks()
        assert marks['kl-theirs'] is None
        assert marks[wiring.UNDERLAY_BRIDGE] == os.path.realpath(state_path())
        clean_leftovers(os.devnull + '-no-pids', mark='/nonexistent-lab')
        assert 'kl-theirs' in vsctl('list-br').stdout.split()
        assert wiring.UNDERLAY_BRIDGE in vsctl('list-br').stdout.split()
    finally:
        vsctl('--if-exists', 'del-br', 'kl-theirs')


def test_an_env_expansion_bomb_does_not_slow_the_daemon(app):
    """Nine levels of eight `$(VAR)` references each (310 bytes of spec, 9 GB if
    expanded): the container fails with CreateContainerError naming the variable, and
    the daemon keeps answering at once."""
    env = [{'name': 'A0', 'value': 'x' * 16}]
    for level in range(1, 10):
        env.append({'name': f'A{level}', 'value': f'$(A{level - 1})' * 8})
    pod = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': 'bomb'},
           'spec': {'nodeName': 'worker-1', 'containers': [
               {'name': 'c', 'image': 'busybox:1.36', 'command': ['sleep', '999'],
                'env': env}]}}
    app.client.apply([pod])
    try:
        state = app.client.wait_for(
            lambda: (app.client.get('Pod', 'default', 'bomb')['status']
                     .get('containerStatuses') or [{}])[0].get('state', {}).get('waiting'),
            'the bomb pod to report its container', timeout=30)
        state = app.client.get('Pod', 'default', 'bomb')['status']['containerStatuses'][0]
        waiting = state['state']['waiting']
        assert waiting['reason'] == 'CreateContainerError', state
        assert 'env[' in waiting['message'] and '131072' in waiting['message']
        start = time.monotonic()
        for _ in range(5):
            app.kubelab('get', 'nodes')
        assert (time.monotonic() - start) / 5 < 3
    finally:
        app.client.delete('Pod', 'default', 'bomb', 0)


def test_a_huge_replica_count_is_refused_with_the_bound(app):
    proc = app.kubelab('scale', 'deployment', 'web', '--replicas', '100000', check=False)
    assert proc.returncode != 0
    assert 'kubelab runs at most 330' in proc.stderr, proc.stderr
    assert app.client.get('Deployment', 'default', 'web')['spec']['replicas'] == 2


def test_a_daemon_killed_with_kill_9_comes_back_with_every_object(app):
    """Last in this module: it replaces the lab. The objects come back with the same
    uids, ClusterIP and nodePort; the pods start again (new IPs allowed) and traffic
    flows; `kubelab down` then removes what was saved."""
    svc = app.client.get('Service', 'default', 'web')
    pods = {p['metadata']['name']: p['metadata']['uid'] for p in app.pods()}
    pid = running_daemon()
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while running_daemon() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert os.path.exists(state_path('objects.json'))
    started = time.monotonic()
    out = app.up().stdout
    print(f'lab back after kill -9 in {time.monotonic() - started:.1f} s')
    assert 'stopped without `kubelab down`' in out
    app.client.wait_ready()
    after = app.client.get('Service', 'default', 'web')
    assert after['metadata']['uid'] == svc['metadata']['uid']
    assert after['spec']['clusterIP'] == svc['spec']['clusterIP']
    assert after['spec']['ports'][0]['nodePort'] == svc['spec']['ports'][0]['nodePort']
    assert {p['metadata']['name']: p['metadata']['uid'] for p in app.pods()} == pods
    names = {p['metadata']['name'] for p in app.pods({'app': 'web'})}
    assert web_answers(app, svc['spec']['clusterIP'], 80, count=8) <= names
    node_ip = app.client.lab()['nodes'][0]['ip']
    assert web_answers(app, node_ip, svc['spec']['ports'][0]['nodePort']) <= names
    app.down()
    assert not os.path.exists(state_path('objects.json'))
