"""kubelab's pytest plugin (kubelab/pytest_plugin.py) and Python API (kubelab/api.py), as
a user runs them: a test file of their own, with their own manifest, in a pytest run of
its own (``-p kubelab.pytest_plugin``). It must pass, and leave nothing of the lab."""

import os
import subprocess
import sys
import textwrap

from tests.traffic.conftest import lab_leftovers

APP = """
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
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=8080]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - {name: pause, image: 'registry.k8s.io/pause:3.10'}
"""

USER_TEST = '''
KUBELAB_MANIFESTS = ['app.yaml']


def test_the_service_spreads_and_keeps_the_client_address(kubelab):
    web = {p['metadata']['name'] for p in kubelab.get('pods')['items']
           if p['metadata']['name'].startswith('web-')}
    answers = [kubelab.probe_url('client', 'http://web/') for _ in range(12)]
    assert all(a.ok and a.status == 200 for a in answers), answers
    assert {a.pod for a in answers} == web                     # both pods answered
    assert {a.client for a in answers} == {kubelab.pod_ip('client')}


def test_refused_exec_and_trace(kubelab):
    kubelab.kubelab('scale', 'deployment', 'web', '--replicas', '0')
    kubelab.wait()
    assert kubelab.probe_url('client', 'http://web/').error == 'refused'
    assert kubelab.trace('client', 'svc/web').forward.outcome == 'rejected'
    out = kubelab.exec('host/client-1', 'ip', '-4', '-o', 'addr')
    assert out.returncode == 0 and '203.0.113.10' in out.stdout
'''


def test_a_users_own_traffic_test_runs_on_the_plugins_lab(tmp_path):
    (tmp_path / 'app.yaml').write_text(APP)
    (tmp_path / 'test_web.py').write_text(textwrap.dedent(USER_TEST))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'kubelab.pytest_plugin',
         '-p', 'no:cacheprovider', str(tmp_path)], cwd=tmp_path, capture_output=True,
        text=True, timeout=600, env=dict(os.environ, PYTHONPATH=root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '2 passed' in proc.stdout, proc.stdout
    assert lab_leftovers() == {'bridges': [], 'links': [], 'processes': []}
