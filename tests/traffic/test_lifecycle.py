"""The lab cleans up after itself, and after a crashed run, and only after itself."""

import os
import signal
import subprocess
import time

from kubelab.daemon import running_daemon
from kubelab.labctl import LabControl
from tests.traffic.conftest import lab_leftovers

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53,
         args: [netexec, --http-port=8080]}
"""


def test_down_leaves_no_bridge_interface_or_process_and_spares_others():
    # A bridge that is not the lab's must survive the lab's cleanup.
    subprocess.run(['ovs-vsctl', '--may-exist', 'add-br', 'keep-me0', '--', 'set', 'bridge',
                    'keep-me0', 'datapath_type=netdev'], check=True)
    try:
        lab = LabControl()
        lab.up()
        lab.apply(DEPLOY)
        during = lab_leftovers()
        assert len(during['bridges']) == 5 and during['processes']
        lab.down()
        assert lab_leftovers() == {'bridges': [], 'links': [], 'processes': []}
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
        # Only the new run's processes are alive.
        assert not set(before['processes']) & set(lab_leftovers()['processes'])
    finally:
        lab.down()
    assert lab_leftovers() == {'bridges': [], 'links': [], 'processes': []}


def test_down_without_a_lab_says_so():
    out = LabControl().kubelab('down').stdout
    assert 'No lab is running' in out
