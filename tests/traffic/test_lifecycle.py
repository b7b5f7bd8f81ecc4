"""The lab cleans up after itself, and after a crashed run, and only after itself."""

import os
import signal
import subprocess
import time

from kubelab.daemon.statedir import running_daemon
from kubelab.labctl import LabControl
from tests.traffic.conftest import lab_leftovers
from tests.traffic.manifests import echo_pod, netexec_deployment

DEPLOY = netexec_deployment('web', udp=False)


def alive(pid: int) -> bool:
    """A process that runs (a zombie waiting for this sandbox's PID 1 is dead)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def proxy_processes() -> list[int]:
    """The pids of the nginx processes of the lab's proxies (by their config path)."""
    from kubelab.daemon.statedir import state_path
    out = []
    for entry in os.listdir('/proc'):
        try:
            with open(f'/proc/{entry}/cmdline', 'rb') as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.startswith(b'nginx') and state_path('l7').encode() in cmd:
            out.append(int(entry))
    return out


def test_down_leaves_no_bridge_interface_or_process_and_spares_others():
    # A bridge that is not the lab's must survive the lab's cleanup.
    subprocess.run(['ovs-vsctl', '--may-exist', 'add-br', 'keep-me0', '--', 'set', 'bridge',
                    'keep-me0', 'datapath_type=netdev'], check=True)
    machine_resolv = open('/etc/resolv.conf', 'rb').read()
    try:
        lab = LabControl()
        lab.up()
        lab.apply(DEPLOY)
        during = lab_leftovers()
        assert len(during['bridges']) == 6 and during['processes']
        # Each pod has its own resolv.conf (the cluster DNS); the machine's is untouched.
        pod = lab.pods({'app': 'web'})[0]['metadata']['name']
        assert 'nameserver 10.96.0.10' in lab.kubelab('exec', pod, '--', 'cat',
                                                      '/etc/resolv.conf').stdout
        assert open('/etc/resolv.conf', 'rb').read() == machine_resolv
        proxies = proxy_processes()
        assert proxies, 'the ingress controller runs nginx'
        lab.down()
        assert lab_leftovers() == {'bridges': [], 'links': [], 'processes': []}
        # What containers started (nginx and its workers) went with them.
        assert [pid for pid in proxies if alive(pid)] == []
        assert open('/etc/resolv.conf', 'rb').read() == machine_resolv
        assert 'keep-me0' in subprocess.run(['ovs-vsctl', 'list-br'], capture_output=True,
                                            text=True).stdout.split()
    finally:
        subprocess.run(['ovs-vsctl', '--if-exists', 'del-br', 'keep-me0'])


def test_up_after_a_crash_cleans_the_crashed_run_and_comes_up():
    lab = LabControl()
    lab.up()
    lab.apply(DEPLOY)
    before = lab_leftovers()
    daemon = running_daemon()
    assert daemon
    lab.client.wait_ready(namespace='ingress-nginx')
    crashed_proxies = proxy_processes()
    assert crashed_proxies
    # kill -9 everything of the lab: daemon first, so nothing tidies up.
    for pid in [daemon] + before['processes']:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    assert lab_leftovers()['bridges'], 'a crashed run leaves bridges behind'
    try:
        lab.up()
        lab.apply(DEPLOY)
        pods = lab.pods({'app': 'web'})
        assert len(pods) == 2
        [r] = lab.http(f'pod/{pods[0]["metadata"]["name"]}', pods[1]['status']['podIP'], 8080,
                       '/hostname')
        assert r['ok'] and r['body'] == pods[1]['metadata']['name']
        # Only the new run's processes are alive; the crashed run's nginx (not registered,
        # started by its container) went with the crashed run's cleanup.
        assert not set(before['processes']) & set(lab_leftovers()['processes'])
        assert not set(crashed_proxies) & set(p for p in proxy_processes() if alive(p))
    finally:
        lab.down()
    assert lab_leftovers() == {'bridges': [], 'links': [], 'processes': []}


def test_down_without_a_lab_says_so():
    out = LabControl().kubelab('down').stdout
    assert 'No lab is running' in out


def test_a_cluster_file_shapes_the_lab(tmp_path):
    cluster = tmp_path / 'cluster.yaml'
    cluster.write_text("""
apiVersion: kubelab.io/v1alpha1
kind: Cluster
metadata: {name: small}
networking: {podSubnet: 172.20.0.0/16}
nodes:
  - {name: cp, role: control-plane, podCIDR: 172.20.7.0/24}
  - {name: w1, role: worker, ip: 10.128.0.50, podCIDR: 172.20.9.0/24}
clients:
  - {name: outside, ip: 203.0.113.99}
""")
    lab = LabControl()
    lab.up(str(cluster))
    try:
        nodes = {n['metadata']['name']: n for n in lab.get_json('nodes')['items']}
        assert set(nodes) == {'cp', 'w1'}
        assert [a['address'] for a in nodes['w1']['status']['addresses']
                if a['type'] == 'InternalIP'] == ['10.128.0.50']
        hosts = lab.get_json('hosts')['items']
        assert [(h['metadata']['name'], h['status']['addresses'][0]['address'])
                for h in hosts] == [('outside', '203.0.113.99')]
        lab.apply(echo_pod('a', 'cp') + echo_pod('b', 'w1'))
        assert lab.pod_ip('a').startswith('172.20.7.')
        assert lab.pod_ip('b').startswith('172.20.9.')
        [r] = lab.http('a', lab.pod_ip('b'), 8080, '/clientip')
        assert r['ok'] and r['body'].split(':')[0] == lab.pod_ip('a')
        ping = lab.run_in('host/outside', ['ping', '-c1', '-W2', '10.128.0.50'])
        assert ping.returncode == 0
    finally:
        lab.down()
