"""The CLI's kubectl habits on a running lab, as a newcomer meets them.

The module's lab is the one ``kubelab lab start 1`` brings up when none runs (as a
course platform would); it is taken down at the end.
"""

import os
import re
import time

import pytest

from kubelab.labctl import LabControl

PODS = """
apiVersion: v1
kind: Namespace
metadata: {name: cli}
---
apiVersion: v1
kind: Pod
metadata: {name: front, namespace: cli, labels: {app: web, tier: front}}
spec:
  nodeName: worker-1
  containers:
  - {name: pause, image: 'registry.k8s.io/pause:3.10'}
---
apiVersion: v1
kind: Pod
metadata: {name: back, namespace: cli, labels: {app: web, tier: back}}
spec:
  nodeName: worker-2
  containers:
  - {name: pause, image: 'registry.k8s.io/pause:3.10'}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: cli, labels: {app: db}}
spec:
  nodeName: worker-2
  containers:
  - {name: pause, image: 'registry.k8s.io/pause:3.10'}
"""

# Ignores SIGTERM: it goes only when its 3 s grace period is over.
SLOW = """
apiVersion: v1
kind: Pod
metadata: {name: slow, namespace: cli, labels: {app: slow}}
spec:
  nodeName: worker-1
  terminationGracePeriodSeconds: 3
  containers:
  - name: shell
    image: busybox:1.36
    command: [sh, -c, 'trap "" TERM; while true; do sleep 1; done']
"""

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: cli}
spec:
  replicas: 1
  selector: {matchLabels: {app: scaled}}
  template:
    metadata: {labels: {app: scaled}}
    spec:
      containers:
      - name: web
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=8080]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
"""


@pytest.fixture(scope='module')
def started():
    ctl = LabControl()
    proc = ctl.kubelab('lab', 'start', '1', check=False, timeout=400)
    try:
        yield ctl, proc
    finally:
        ctl.down()


@pytest.fixture(scope='module')
def cli(started):
    ctl, proc = started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ctl.apply(PODS)
    return ctl


def test_lab_start_brings_up_the_default_lab_and_names_the_readme(started):
    _, proc = started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith('No lab is running: starting the default lab'), proc.stdout
    [readme] = re.findall(r'Read (\S+README\.md);', proc.stdout)
    assert os.path.isabs(readme) and os.path.exists(readme), readme


def names(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:]]


def test_get_with_label_selectors_and_show_labels(cli):
    def get(*args):
        return cli.kubelab('get', 'pods', '-n', 'cli', *args).stdout
    assert names(get('-l', 'app=web')) == ['back', 'front']
    assert names(get('-l', 'app==web,tier!=back')) == ['front']
    assert names(get('-l', 'tier in (front,back)')) == ['back', 'front']
    assert names(get('-l', 'tier notin (front)')) == ['back', 'other']
    assert names(get('-l', '!tier')) == ['other']
    assert names(get('-l', 'tier')) == ['back', 'front']
    assert get('-l', 'app=nothing').strip() == 'No resources found in cli namespace.'
    table = get('--show-labels').splitlines()
    assert table[0].split()[-1] == 'LABELS'
    assert table[2].split()[-1] == 'app=web,tier=front'
    bad = cli.kubelab('get', 'pods', '-l', 'tier in front', check=False)
    assert bad.returncode == 1 and 'unable to parse requirement "tier in front"' in bad.stderr


def test_delete_waits_until_the_pod_is_gone_so_it_can_be_applied_again(cli):
    cli.apply(SLOW)
    start = time.monotonic()
    out = cli.kubelab('delete', 'pod', 'slow', '-n', 'cli').stdout
    took = time.monotonic() - start
    assert out.strip() == 'pod "slow" deleted'
    assert took >= 2.5, took              # its 3 s grace period, kubectl's --wait=true
    gone = cli.kubelab('get', 'pod', 'slow', '-n', 'cli', check=False)
    assert gone.returncode == 1 and 'NotFound' in gone.stderr
    cli.apply(SLOW)                       # no "pod updates may not change fields"
    start = time.monotonic()
    cli.kubelab('delete', 'pod', 'slow', '-n', 'cli', '--wait=false')
    assert time.monotonic() - start < 2.5
    # Terminating: the list and the pod itself say the same.
    listed = [line for line in cli.kubelab('get', 'pods', '-n', 'cli').stdout.splitlines()
              if line.startswith('slow ')]
    single = cli.kubelab('get', 'pod', 'slow', '-n', 'cli').stdout.splitlines()[1]
    assert 'Terminating' in listed[0] and 'Terminating' in single, (listed, single)
    cli.client.wait_for(lambda: not cli.pods({'app': 'slow'}, 'cli')
                        and cli.kubelab('get', 'pod', 'slow', '-n', 'cli',
                                        check=False).returncode == 1, 'slow to go', 20)


def test_wait_after_scale_waits_for_every_replica_of_every_namespace(cli):
    cli.apply(DEPLOY)
    cli.kubelab('scale', 'deployment', 'web', '-n', 'cli', '--replicas', '3')
    out = cli.kubelab('wait').stdout        # no -n: the scaled deployment's namespace too
    assert out.startswith('All pods are ready'), out
    row = cli.kubelab('get', 'deploy', 'web', '-n', 'cli').stdout.splitlines()[1].split()
    assert row[1] == '3/3', row


def test_a_service_selecting_no_pod_is_applied_without_a_warning(cli):
    proc = cli.apply("""
apiVersion: v1
kind: Service
metadata: {name: lonely, namespace: cli}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
""")
    assert proc.stdout.strip() == 'service/lonely created' and proc.stderr == '', proc


def test_v1_endpoints_mirror_the_endpointslices(cli):
    cli.apply("""
apiVersion: v1
kind: Service
metadata: {name: web, namespace: cli}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
""")
    ips = sorted(cli.pod_ip(p, 'cli') for p in ('front', 'back'))
    proc = cli.kubelab('get', 'endpoints', 'web', '-n', 'cli')
    assert 'EndpointSlice' in proc.stderr               # says what replaced it
    row = proc.stdout.splitlines()[1].split()
    assert row[0] == 'web' and sorted(row[1].split(',')) == sorted(f'{ip}:8080' for ip in ips)
    ep = cli.get_json('ep', 'web', '-n', 'cli')
    assert ep['kind'] == 'Endpoints'
    [subset] = ep['subsets']
    assert sorted(a['ip'] for a in subset['addresses']) == ips
    assert {a['targetRef']['name'] for a in subset['addresses']} == {'front', 'back'}
    assert cli.kubelab('get', 'ep', 'lonely', '-n', 'cli').stdout.splitlines()[1].split()[
        1] == '<none>'
    refused = cli.apply("""
apiVersion: v1
kind: Endpoints
metadata: {name: web, namespace: cli}
""", check=False)
    assert refused.returncode == 1 and 'read-only' in refused.stderr


def test_capture_prints_the_packets_and_writes_a_pcap(cli, tmp_path):
    import subprocess
    node_ip = [a['address'] for n in cli.get_json('nodes')['items']
               if n['metadata']['name'] == 'worker-1'
               for a in n['status']['addresses'] if a['type'] == 'InternalIP'][0]
    pcap = tmp_path / 'ping.pcap'
    argv = [cli.python, '-m', 'kubelab.cli', 'capture', 'host/client-1', '-c', '4',
            '--seconds', '20']
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in __import__('sys').path if p))
    text = subprocess.Popen(argv + ['icmp'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    written = subprocess.Popen(argv + ['-w', str(pcap), 'icmp'], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(2)                                # tcpdump is listening
    cli.run_in('host/client-1', ['ping', '-c', '3', '-i', '0.3', node_ip])
    out, err = text.communicate(timeout=30)
    assert text.returncode == 0, err
    lines = [line for line in out.splitlines() if 'ICMP' in line]
    assert len(lines) == 4, out
    assert f'203.0.113.10 > {node_ip}: ICMP echo request' in lines[0], lines
    assert f'{node_ip} > 203.0.113.10: ICMP echo reply' in lines[1], lines
    written.communicate(timeout=30)
    data = pcap.read_bytes()
    assert data[:4] in (b'\xd4\xc3\xb2\xa1', b'\xa1\xb2\xc3\xd4'), data[:4]   # pcap magic
    assert len(data) > 24 + 4 * 98                       # the header and four packets
