"""Pods as sandboxes: what a pod's containers share, and what they cannot touch.

One lab for the module. Each test asserts what a user would check from inside a
container (``kubelab exec``) and from the machine: a write outside the writable paths
never reaches the machine; the lab's token and the machine's processes are out of
reach; the default capabilities are a container runtime's; hostname, /etc/hosts, IPC and
/dev/shm are shared inside a pod and not across pods; emptyDir is shared and goes with
the pod; ConfigMaps and Secrets arrive as env and files, and a ConfigMap's change
reaches the files; who a container runs as; a memory limit OOM-kills and a CPU limit
holds; a container restart keeps the pod's IP and loses its writable layer; what a
container daemonised is gone after the pod's deletion, after ``kubelab down`` and when the
lab's daemon is killed, whose cgroups the next ``up`` removes.
"""

import json
import os
import re
import time
import uuid

import pytest

from kubelab.daemon.statedir import state_path
from services import transport
from topo.cleanup import is_alive, start_time

PROBE = f'/etc/kubelab-probe-{uuid.uuid4().hex[:8]}'
SLEEP = 'trap "exit 0" TERM; while true; do sleep 1; done'
BUSYBOX = 'busybox:1.36'

CONFIG = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {greeting: hello, app.ini: "mode=fast\\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
stringData: {password: s3cret}
"""

PODS = CONFIG + f"""---
# Two containers sharing a pod: an emptyDir, the pod's IPC, hostname and /dev/shm.
apiVersion: v1
kind: Pod
metadata: {{name: pair}}
spec:
  nodeName: worker-1
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: shared, emptyDir: {{}}}}
  - {{name: config, configMap: {{name: app-config}}}}
  - {{name: secret, secret: {{secretName: app-secret, defaultMode: 0400}}}}
  containers:
  - name: app
    image: {BUSYBOX}
    command: [sh, -c, '{SLEEP}']
    workingDir: /srv/app
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: app-config, key: greeting}}}}}}
    - {{name: MESSAGE, value: "$(GREETING), world"}}
    envFrom: [{{secretRef: {{name: app-secret}}, prefix: APP_}}]
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
    - {{name: config, mountPath: /etc/app}}
    - {{name: config, mountPath: /etc/app.ini, subPath: app.ini}}
    - {{name: secret, mountPath: /etc/secret, readOnly: true}}
  - name: helper
    image: {BUSYBOX}
    command: [sh, -c, '{SLEEP}']
    volumeMounts: [{{name: shared, mountPath: /data}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: other}}
spec:
  nodeName: worker-1
  terminationGracePeriodSeconds: 1
  containers: [{{name: shell, image: {BUSYBOX}, command: [sh, -c, '{SLEEP}']}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: named}}
spec:
  hostname: db-0
  subdomain: db
  hostAliases: [{{ip: 10.1.2.3, hostnames: [legacy.example]}}]
  terminationGracePeriodSeconds: 1
  containers: [{{name: shell, image: {BUSYBOX}, command: [sh, -c, '{SLEEP}']}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: nonroot}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000}}
  volumes: [{{name: data, emptyDir: {{}}}}, {{name: scratch, emptyDir: {{medium: Memory}}}}]
  containers:
  - name: shell
    image: {BUSYBOX}
    command: [sh, -c, '{SLEEP}']
    securityContext: {{readOnlyRootFilesystem: true}}
    volumeMounts: [{{name: data, mountPath: /data}}, {{name: scratch, mountPath: /scratch}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: caps}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: bare
    image: {BUSYBOX}
    command: [sh, -c, '{SLEEP}']
    securityContext: {{capabilities: {{drop: [ALL], add: [NET_BIND_SERVICE]}}}}
  - name: netadmin
    image: {BUSYBOX}
    command: [sh, -c, '{SLEEP}']
    securityContext: {{capabilities: {{add: [NET_ADMIN]}}}}
"""

MEMORY_HOG = f"""
apiVersion: v1
kind: Pod
metadata: {{name: memory-hog}}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: {BUSYBOX}
    command: [sh, -c, 'echo filling; exec tail /dev/zero']
    resources: {{limits: {{memory: 32Mi}}}}
"""

CPU_HOG = f"""
apiVersion: v1
kind: Pod
metadata: {{name: cpu-hog}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: hog
    image: {BUSYBOX}
    command: [sh, -c, 'while :; do :; done']
    resources: {{limits: {{cpu: 100m, memory: 32Mi}}}}
"""


def scratch(name: str, node: str = 'worker-2') -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: disk, emptyDir: {{}}}}, {{name: mem, emptyDir: {{medium: Memory}}}}]
  containers:
  - name: shell
    image: {BUSYBOX}
    command: [sh, -c, '{SLEEP}']
    volumeMounts: [{{name: disk, mountPath: /disk}}, {{name: mem, mountPath: /mem}}]
"""


#: A System V message queue, from Python's ctypes (busybox has no ipcmk).
MSGQ = r'''
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
class Msg(ctypes.Structure):
    _fields_ = [('mtype', ctypes.c_long), ('mtext', ctypes.c_char * 64)]
key, op = 0x6b6c6162, sys.argv[1]
if op == 'send':
    q = libc.msgget(key, 0o1000 | 0o600)
    assert libc.msgsnd(q, ctypes.byref(Msg(1, sys.argv[2].encode())), len(sys.argv[2]), 0) == 0
    print('sent')
else:
    q = libc.msgget(key, 0o600)
    if q < 0:
        print('no queue, errno', ctypes.get_errno())
        sys.exit(1)
    m = Msg()
    n = libc.msgrcv(q, ctypes.byref(m), 64, 0, 0o4000)
    print(m.mtext[:n].decode())
'''


@pytest.fixture(scope='module')
def box(lab):
    with open(PROBE, 'w') as f:
        f.write('machine\n')
    try:
        lab.apply(PODS)
        yield lab
    finally:
        os.unlink(PROBE)


def sh(lab, pod: str, script: str, container: str | None = None, check: bool = True):
    """``kubelab exec POD [-c C] -- sh -c SCRIPT``: (exit status, output)."""
    args = ['exec', pod] + (['-c', container] if container else []) + ['--', 'sh', '-c',
                                                                       script]
    proc = lab.kubelab(*args, check=check)
    return proc.returncode, proc.stdout + proc.stderr


def pod_dir(lab, pod: str) -> str:
    meta = lab.client.get('Pod', 'default', pod)['metadata']
    return state_path('pods', f'default_{pod}_{meta["uid"]}')


def daemonise(lab, pod: str, seconds: int) -> tuple[int, str]:
    """Start ``sleep SECONDS`` detached from the container's shell (setsid and a double
    fork), then find it from the machine: (host pid, its start time)."""
    sh(lab, pod, f'(setsid sleep {seconds} </dev/null >/dev/null 2>&1 &) &')
    uid = lab.client.get('Pod', 'default', pod)['metadata']['uid']
    for _ in range(50):
        for pid in os.listdir('/proc'):
            try:
                with open(f'/proc/{pid}/cmdline', 'rb') as f:
                    if f.read() != f'sleep\0{seconds}\0'.encode():
                        continue
                with open(f'/proc/{pid}/cgroup') as f:
                    if f'pod{uid}' in f.read():
                        return int(pid), start_time(int(pid))
            except OSError:
                continue
        time.sleep(0.1)
    pytest.fail(f'the daemonised sleep {seconds} of {pod} was not found')


def test_a_write_outside_the_writable_paths_never_reaches_the_machine(box):
    code, out = sh(box, 'pair', f'cat {PROBE}; echo container > {PROBE}; cat {PROBE}; '
                                f'touch /etc/kubelab-written; ls /etc/kubelab-written; '
                                f'rm {PROBE}; ls {PROBE}', container='app', check=False)
    assert out.split()[:3] == ['machine', 'container', '/etc/kubelab-written'], out
    assert 'No such file' in out, out          # the machine's file is gone, in here
    with open(PROBE) as f:                      # the machine's files are untouched
        assert f.read() == 'machine\n'
    assert not os.path.exists('/etc/kubelab-written')
    # Each container has its own layer: the pod's other container saw nothing of it.
    code, out = sh(box, 'pair', f'cat {PROBE}; ls /etc/kubelab-written', container='helper',
                   check=False)
    assert 'machine' in out and 'No such file' in out, out


#: Connect to a Unix socket from inside a container: what happened.
CONNECT = r'''
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    print('connected')
except OSError as exc:
    print(type(exc).__name__)
'''


def test_the_lab_token_the_api_and_the_machines_processes_are_out_of_reach(box):
    assert os.path.exists(state_path('token'))
    code, out = sh(box, 'pair', f'cat {state_path("token")}', container='app', check=False)
    assert code != 0 and 'No such file' in out, out
    code, out = sh(box, 'pair', f'ls -a {state_path()}', container='app', check=False)
    assert 'token' not in out.split() and 'pids' not in out.split(), out
    # The lab's API and its Open vSwitch's control sockets (the switches' database, the
    # controller's OpenFlow socket) are there on the machine and out of a container's
    # reach: a pod cannot ask the API for anything nor reconfigure the lab's switches.
    ovs_run = os.environ.get('OVS_RUNDIR', '/run/openvswitch')
    sockets = [state_path(transport.SOCKET_NAME), os.path.join(ovs_run, 'db.sock')]
    assert all(os.path.exists(path) for path in sockets), sockets
    for path in sockets:
        out = box.kubelab('exec', 'pair', '-c', 'app', '--', 'python3', '-c', CONNECT,
                          path).stdout.strip()
        assert out == 'FileNotFoundError', (path, out)
    code, out = sh(box, 'pair', f'ls -a {ovs_run}', container='app', check=False)
    assert 'db.sock' not in out.split(), out
    daemon = open(state_path('daemon.pid')).read().split()[0]
    code, out = sh(box, 'pair', f'kill -0 {daemon}; ps -o pid,args', container='app',
                   check=False)
    assert 'No such process' in out, out           # its own PID namespace only
    assert out.count('sleep') <= 2 and 'kubelab' not in out, out


def test_default_capabilities_are_a_container_runtimes(box):
    code, out = sh(box, 'pair', 'grep CapEff /proc/self/status', container='app')
    assert out.split() == ['CapEff:', '00000000a80425fb']    # containerd's default set
    code, out = sh(box, 'pair', 'ip link set eth0 down; ip addr add 10.9.9.9/32 dev lo; '
                                'unshare -n true; echo done', container='app', check=False)
    assert out.count('Operation not permitted') >= 2 and 'done' in out, out
    [r] = box.http('other', box.pod_ip('pair'), 8080, '/')    # eth0 stayed up: refused,
    assert r['error'] == 'refused', r                         # not unreachable
    code, out = sh(box, 'caps', 'grep CapEff /proc/self/status; ping -c 1 -W 1 '
                   f'{box.pod_ip("other")}', container='bare', check=False)
    assert '0000000000000400' in out and 'permission denied' in out.lower(), out
    code, out = sh(box, 'caps', 'ip addr add 10.9.9.9/32 dev lo && ip -o addr show lo',
                   container='netadmin')
    assert '10.9.9.9' in out, out                  # NET_ADMIN: its own pod's network only


def test_hostname_hosts_ipc_and_shm_are_the_pods(box):
    ip = box.pod_ip('pair')
    for container in ('app', 'helper'):
        code, out = sh(box, 'pair', 'hostname; cat /etc/hostname; grep -v "^#" /etc/hosts',
                       container=container)
        assert out.split()[:2] == ['pair', 'pair'] and f'{ip}\tpair' in out, out
    code, out = sh(box, 'named', 'hostname; cat /etc/hosts')
    assert out.split()[0] == 'db-0', out
    assert f'{box.pod_ip("named")}\tdb-0.db.default.svc.cluster.local\tdb-0' in out, out
    assert '10.1.2.3\tlegacy.example' in out, out
    # System V message queue and POSIX shared memory and message queues: one IPC
    # namespace and one /dev/shm per pod.
    def msgq(pod, *args, container=None):
        return box.kubelab('exec', pod, *(['-c', container] if container else []), '--',
                           'python3', '-c', MSGQ, *args, check=False).stdout.strip()
    assert msgq('pair', 'send', 'hello-from-app', container='app') == 'sent'
    sh(box, 'pair', 'echo shm > /dev/shm/note; touch /dev/mqueue/jobs', container='app')
    assert msgq('pair', 'recv', container='helper') == 'hello-from-app'
    code, out = sh(box, 'pair', 'cat /dev/shm/note; ls /dev/mqueue', container='helper')
    assert out.split() == ['shm', 'jobs'], out
    assert msgq('other', 'recv') == 'no queue, errno 2'
    code, out = sh(box, 'other', 'ls /dev/shm /dev/mqueue', check=False)
    assert 'note' not in out and 'jobs' not in out, out


def test_configmaps_and_secrets_arrive_as_env_and_files(box):
    code, out = sh(box, 'pair', 'pwd; echo "$GREETING|$MESSAGE|$APP_password"; '
                   'for f in /etc/app/greeting /etc/app.ini /etc/secret/password; do '
                   'echo $(cat $f); done; stat -L -c %a /etc/secret/password; '
                   'touch /etc/app/x', container='app', check=False)
    lines = out.splitlines()
    assert lines[:6] == ['/srv/app', 'hello|hello, world|s3cret', 'hello', 'mode=fast',
                         's3cret', '400'], out
    assert 'Read-only file system' in out, out
    rows = [line.split() for line in box.kubelab('get', 'configmaps').stdout.splitlines()]
    assert rows[0] == ['NAME', 'DATA', 'AGE'] and ['app-config', '2'] in [r[:2] for r in rows]
    box.apply(CONFIG.replace('greeting: hello', 'greeting: bonjour')
              .replace('mode=fast', 'mode=slow'), wait=False)
    box.client.wait_for(lambda: sh(box, 'pair', 'cat /etc/app/greeting',
                                   container='app')[1].strip() == 'bonjour',
                        'the ConfigMap change to reach the volume', timeout=10)
    # A subPath mount and the environment keep what the container started with.
    code, out = sh(box, 'pair', 'cat /etc/app.ini /etc/app/app.ini; echo "$GREETING"',
                   container='app')
    assert out.split() == ['mode=fast', 'mode=slow', 'hello'], out


def test_a_missing_configmap_keeps_the_container_waiting_until_it_exists(box):
    box.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: needs-config}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: {BUSYBOX}
    command: [sh, -c, '{SLEEP}']
    env: [{{name: LEVEL, valueFrom: {{configMapKeyRef: {{name: later, key: level}}}}}}]
""", wait=False)
    try:
        def waiting():
            st = box.client.get('Pod', 'default', 'needs-config').get('status', {})
            states = [c['state'] for c in st.get('containerStatuses', [])]
            return states and states[0].get('waiting', {})
        state = box.client.wait_for(
            lambda: (waiting() or {}).get('reason') == 'CreateContainerConfigError'
            and waiting(), 'CreateContainerConfigError', timeout=10)
        assert state['message'] == 'configmap "later" not found', state
        box.apply('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\n'
                  'data: {level: debug}\n', wait=False)
        box.client.wait_ready('default', timeout=20)
        assert sh(box, 'needs-config', 'echo $LEVEL')[1].strip() == 'debug'
    finally:
        box.kubelab('delete', 'pod', 'needs-config', '--wait', check=False)
        box.kubelab('delete', 'configmap', 'later', check=False)


def test_who_a_container_runs_as_and_a_read_only_root(box):
    code, out = sh(box, 'nonroot', 'id -u; id -g; id -G; touch /data/f /scratch/f && '
                   'stat -c %u:%g /data/f /scratch/f; touch /x /tmp/x /etc/x', check=False)
    lines = out.splitlines()
    assert lines[:2] == ['1000', '3000'] and sorted(lines[2].split()) == ['2000', '3000'], out
    assert lines[3:5] == ['1000:2000', '1000:2000'], out      # fsGroup owns the volumes
    assert out.count('Read-only file system') == 3, out
    box.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: wants-nonroot}}
spec:
  securityContext: {{runAsNonRoot: true}}
  containers: [{{name: shell, image: {BUSYBOX}, command: [sh, -c, '{SLEEP}']}}]
""", wait=False)
    try:
        def reason():
            st = box.client.get('Pod', 'default', 'wants-nonroot').get('status', {})
            for c in st.get('containerStatuses', []):
                return c['state'].get('waiting', {})
            return {}
        state = box.client.wait_for(lambda: reason().get('message') and reason(),
                                    'the runAsNonRoot check', timeout=10)
        assert state['reason'] == 'CreateContainerConfigError'
        assert state['message'].startswith('container has runAsNonRoot and image will '
                                           'run as root'), state
    finally:
        box.kubelab('delete', 'pod', 'wants-nonroot', '--wait', check=False)


def test_a_memory_limit_oom_kills_and_a_cpu_limit_holds(box):
    box.apply(MEMORY_HOG + '---\n' + CPU_HOG, wait=False)
    try:
        def terminated():
            st = box.client.get('Pod', 'default', 'memory-hog').get('status', {})
            for c in st.get('containerStatuses', []):
                return c['state'].get('terminated')
        state = box.client.wait_for(terminated, 'the memory hog to end', timeout=30)
        assert (state['reason'], state['exitCode']) == ('OOMKilled', 137), state
        pod = box.get_json('pods', 'memory-hog')
        assert pod['status']['phase'] == 'Failed'

        def cpu():
            out = box.kubelab('top', 'pods', 'cpu-hog', check=False).stdout
            found = re.search(r'cpu-hog\s+(\d+)m\s+(\d+)Mi', out)
            return found and int(found.group(1))
        box.client.wait_for(lambda: box.get_json('pods', 'cpu-hog')['status'].get(
            'phase') == 'Running', 'the cpu hog', timeout=30)
        time.sleep(4)
        used = box.client.wait_for(cpu, 'metrics of the cpu hog', timeout=10)
        assert 40 <= used <= 160, used           # a busy loop held to 100m
        listing = box.kubelab('top', 'pods').stdout
        assert listing.splitlines()[0].split() == ['NAME', 'CPU(cores)', 'MEMORY(bytes)']
        assert 'pair' in listing
        frame = box.kubelab('top', '--once').stdout        # the live view has them too
        found = re.search(r'^default/cpu-hog\s+(\d+)m\s+(\d+)Mi', frame, re.MULTILINE)
        assert found and 40 <= int(found.group(1)) <= 160, frame
    finally:
        box.kubelab('delete', 'pod', 'memory-hog', 'cpu-hog', check=False)


def test_a_restart_keeps_the_pod_ip_and_loses_the_containers_writes(box, applied):
    applied(scratch('restarter'))
    ip = box.pod_ip('restarter')
    pid, started = daemonise(box, 'restarter', 1004)
    sh(box, 'restarter', 'echo kept > /disk/marker; echo lost > /etc/marker; kill 1')
    box.client.wait_for(lambda: box.client.get('Pod', 'default', 'restarter')['status'][
        'containerStatuses'][0]['restartCount'] == 1 and box.client.get(
        'Pod', 'default', 'restarter')['status']['containerStatuses'][0]['ready'],
        'the container to restart', timeout=30)
    assert box.pod_ip('restarter') == ip
    assert not is_alive(pid, started)     # what it daemonised ended with the container
    code, out = sh(box, 'restarter', 'cat /disk/marker; cat /etc/marker', check=False)
    assert out.splitlines()[0] == 'kept' and 'No such file' in out, out
    box.kubelab('delete', 'pod', 'restarter', '--wait')
    box.apply(scratch('restarter'))
    assert box.pod_ip('restarter') != ip            # a replaced pod: a new sandbox, IP


def test_emptydir_and_daemonised_children_go_with_the_pod(box):
    box.apply(scratch('scratch'))
    disk = os.path.join(pod_dir(box, 'scratch'), 'volumes', 'kubernetes.io~empty-dir')
    sh(box, 'scratch', 'echo on-disk > /disk/f; echo in-memory > /mem/f')
    with open(os.path.join(disk, 'disk', 'f')) as f:
        assert f.read() == 'on-disk\n'
    assert os.listdir(os.path.join(disk, 'mem')) == []     # a tmpfs in the sandbox only
    assert 'tmpfs' in sh(box, 'scratch', 'grep " /mem " /proc/mounts')[1]
    pid, started = daemonise(box, 'scratch', 1001)
    box.kubelab('delete', 'pod', 'scratch', '--wait')
    assert not is_alive(pid, started)
    assert not os.path.exists(disk)


def test_the_app_and_logger_example_runs_as_the_seed_draws_it(box):
    with open(os.path.join(os.path.dirname(__file__), '..', '..', 'examples',
                           'app-logger.yaml')) as f:
        box.apply(f.read())
    try:
        box.client.wait_for(lambda: re.search(
            r'^(127\.0\.0\.1|\[::1\]):\d+: url:/hostname', box.kubelab(
                'logs', 'app-logger', '-c', 'logger').stdout, re.MULTILINE),
            "the app's access log in the logger's, for a call over localhost", timeout=15)
        assert 'app-events' in sh(box, 'app-logger', 'ls /dev/mqueue', 'logger')[1]
        worker = box.client.lab()['nodes'][1]['ip']
        [r] = box.request('host/client-1', worker, 30090, '/')
        assert r['body'] == 'Hello from app-logger\n', r
        [r] = box.request('host/client-1', worker, 80, '/', host_header='app.example')
        assert (r['status'], r['body']) == (200, 'Hello from app-logger\n'), r
        # The outside requests are in the log too, from a cluster address (NodePort's
        # masquerade, the ingress pod), not from the loopback.
        code, out = sh(box, 'app-logger', 'cat /var/log/app/access.log', 'logger')
        assert re.search(r'^(?!127\.|\[::1\])\S+:\d+: url:/$', out, re.MULTILINE), out
    finally:
        box.kubelab('delete', '-f', os.path.join(os.path.dirname(__file__), '..', '..',
                                                 'examples', 'app-logger.yaml'), check=False)


def test_daemonised_children_and_cgroups_are_gone_after_down(box):
    """It takes the module's lab down (the next test starts another)."""
    pid, started = daemonise(box, 'pair', 1002)
    with open(state_path('cgroups.json')) as f:
        dirs = set(json.load(f)['dirs'].values())
    assert all(os.path.isdir(d) for d in dirs)
    box.down()
    assert not is_alive(pid, started)
    assert not any(os.path.exists(d) for d in dirs), dirs
    assert not os.path.exists(state_path('cgroups.json'))


def test_a_crashed_labs_containers_die_with_it_and_the_next_start_removes_its_cgroups(box):
    """After the previous test took the lab down: a new one, killed with SIGKILL. The
    next start removes the crashed lab's cgroups, then restores its objects (issue 19):
    the pod starts again in a new sandbox and new cgroups, none of the old processes in
    them."""
    box.up()
    box.apply(scratch('survivor'))
    uid = box.client.get('Pod', 'default', 'survivor')['metadata']['uid']
    pid, started = daemonise(box, 'survivor', 1003)
    with open(state_path('cgroups.json')) as f:
        pods = [os.path.join(d, f'pod{uid}') for d in json.load(f)['dirs'].values()]
    inodes = {p: os.stat(p).st_ino for p in pods}
    daemon = int(open(state_path('daemon.pid')).read().split()[0])
    os.kill(daemon, 9)
    box.client.wait_for(lambda: not is_alive(pid, started),
                        'the daemonised child to die with the lab', timeout=10)
    assert all(os.path.isdir(p) for p in pods)       # left behind by the crash ...
    out = box.up().stdout
    for p in pods:                                    # ... and removed by the next start
        assert not os.path.exists(p) or os.stat(p).st_ino != inodes[p], p
    box.client.wait_ready('default', timeout=30)
    pod = box.client.get('Pod', 'default', 'survivor')
    assert pod['metadata']['uid'] == uid, out            # the object came back
    for p in pods:
        assert os.stat(p).st_ino != inodes[p], p         # in cgroups of the new lab
