"""``kubelab up | down | node | wait | lab | demo | bench``: the lab itself.

``up`` checks the state directory, that no lab runs (the instance locks), the cluster
file and the manifests it is given, starts the lab daemon (kubelab/daemon/) in its own
session with the manifests on its standard input (no file left anywhere) and waits for
it to say it is ready; the objects a crashed daemon saved come back with it. ``down``
asks it to stop, removes whatever a crashed lab left behind (what carries its mark)
and the saved objects. ``lab``, ``demo`` and
``bench`` hand over to the course (kubelab/course/), kubelab/demo.py and
kubelab/bench.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from kubelab.client import STATE_DIR, Client
from kubelab.daemon import persist
from kubelab.daemon.instance import InstanceLock
from kubelab.daemon.statedir import append_fd, check_state_dir, lab_mark, read_text, \
    running_daemon, state_path, write_file
from kubelab.printers import datapath_text
from services import manifests
from services.errors import ApplyError, KubelabError, ValidationError
from services.manifests import read_paths

#: Seconds ``up`` waits for the daemon to say it is ready.
UP_TIMEOUT = 180


# ---------------------------------------------------------------- up
def cmd_up(args) -> int:
    if os.geteuid() != 0:
        raise KubelabError('the lab needs root (network namespaces and Open vSwitch): '
                           'run `sudo kubelab up`')
    check_state_dir()
    pid = running_daemon()
    if pid:
        raise KubelabError(f'a lab is already running (daemon pid {pid}): '
                           '`kubelab down` stops it')
    holder = InstanceLock().running()
    if holder:
        raise KubelabError(f'a lab is already running ({holder}): `kubelab down` stops '
                           'it (with its KUBELAB_STATE_DIR)')
    cluster_file, objects = read_up_files(args.filename or [])
    if getattr(args, 'cloud', None):
        cluster_file = with_cloud(cluster_file, args.cloud)
    check_objects(objects)
    if os.path.exists(state_path(persist.SAVED_NAME)):
        print('The last lab stopped without `kubelab down`: its objects come back '
              '(pods start again, with new IPs).')
    proc, log_path = start_daemon(cluster_file, objects)
    wait_until_up(proc, log_path)
    print_lab(Client().lab())
    if args.detach:
        print('Try: kubelab get nodes -o wide; `kubelab down` stops the lab.')
        return 0
    print('The lab runs until Ctrl-C (or `kubelab down` from another shell).')
    try:
        while proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print('\nTaking the lab down...')
        return cmd_down(args)
    return 0


def read_up_files(paths: list[str]) -> tuple[str | None, list[dict]]:
    """(the cluster file's absolute path or None, the objects to apply) of ``up -f``:
    a file holding a ``kind: Cluster`` is the cluster file (checked before booting),
    every other file or directory gives manifests."""
    from services.cluster import load_cluster    # here: keeps other commands fast
    cluster_file, objects = None, []
    for path in paths:
        if os.path.isfile(path):
            with open(path) as f:
                text = f.read()
            docs = manifests.load_documents(text, path)
            if any(d.get('kind') == 'Cluster' for d in docs):
                load_cluster(text, path)            # check it before booting
                cluster_file = os.path.abspath(path)
            else:
                objects.extend(docs)
            continue
        objects.extend(read_paths([path]))
    return cluster_file, objects


def with_cloud(cluster_file: str | None, cloud: str) -> str:
    """``up --cloud``: the cluster file (or the defaults) with its ``cloud`` set, written
    to the state directory; its path."""
    import yaml
    from services.cluster import load_cluster
    data = {}
    if cluster_file:
        with open(cluster_file) as f:
            data = yaml.safe_load(f) or {}
    data['cloud'] = cloud
    text = yaml.safe_dump(data)
    load_cluster(text, cluster_file or '--cloud')      # check it before booting
    path = state_path('cluster-up.yaml')
    write_file(path, text.encode())
    return path


def check_objects(objects: list[dict]):
    """Every problem of every manifest, as one ApplyError, before anything boots."""
    errors = []
    for obj in objects:
        try:
            manifests.validate(obj)
        except ApplyError as exc:
            errors.extend(exc.errors)
        except ValidationError as exc:
            errors.append(exc)
    if errors:
        raise ApplyError(errors)


def start_daemon(cluster_file: str | None, objects: list[dict]):
    """Start ``python -m kubelab.daemon`` in a session of its own, the objects on its
    standard input, its output appended to STATE_DIR/daemon.log: (the process, the
    log's path)."""
    argv = [sys.executable, '-m', 'kubelab.daemon', '--manifests-stdin']
    if cluster_file:
        argv += ['--cluster', cluster_file]
    log_path = state_path('daemon.log')
    log = append_fd(log_path)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd='/', env=dict(os.environ, PYTHONPATH=_pythonpath()))
    finally:
        os.close(log)
    try:
        proc.stdin.write(json.dumps(objects).encode())
        proc.stdin.close()
    except BrokenPipeError:        # it died before reading: wait_until_up shows why
        pass
    return proc, log_path


def _ready(pid: int) -> bool:
    """Has the daemon ``pid`` written STATE_DIR/ready (and not an earlier one)?"""
    try:
        return read_text(state_path('ready')).strip() == str(pid)
    except OSError:
        return False


def wait_until_up(proc: subprocess.Popen, log_path: str):
    """Dots until the daemon writes STATE_DIR/ready; the log's tail if it dies or
    takes longer than UP_TIMEOUT seconds."""
    print('Bringing the lab up', end='', flush=True)
    start = time.monotonic()
    while not _ready(proc.pid):
        if proc.poll() is not None:
            print(' failed.')
            raise KubelabError('the lab did not come up:\n' + _tail(log_path, 15))
        if time.monotonic() - start > UP_TIMEOUT:
            proc.terminate()
            raise KubelabError(f'the lab did not come up within {UP_TIMEOUT} s:\n'
                               + _tail(log_path))
        print('.', end='', flush=True)
        time.sleep(0.5)
    print(f' ready in {time.monotonic() - start:.1f} s.')


def print_lab(info: dict):
    print(f'Nodes: {", ".join(n["name"] + " " + n["ip"] for n in info["nodes"])}')
    print(f'External hosts: {", ".join(h["name"] + " " + h["ip"] for h in info["hosts"])}')
    print(f'Datapath: {datapath_text(info)}; controller pid {info["controllerPid"]}; '
          f'state in {STATE_DIR}')


def _pythonpath() -> str:
    return os.pathsep.join(p for p in sys.path if p)


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return ''


# ---------------------------------------------------------------- down, node, wait
def cmd_down(args) -> int:
    from topo import ovs                         # here: keeps other commands fast
    from topo.cleanup import clean_leftovers
    ovs.activate()                               # the lab's bridges are in its Open vSwitch
    check_state_dir(create=False)
    if not os.path.isdir(STATE_DIR):
        print('No lab is running.')
        return 0
    pid = running_daemon()
    if pid is None:
        lock = InstanceLock(STATE_DIR, machine_lock=None)
        try:
            lock.acquire()
        except KubelabError:
            raise KubelabError('a lab daemon of this state directory is starting or '
                               'stopping: try again in a moment') from None
        try:
            removed = clean_leftovers(state_path('pids'), lab_mark(),
                                      cgroups_record=state_path('cgroups.json'))
            for name in ('token', 'daemon.pid', 'ready'):
                if os.path.exists(state_path(name)):
                    os.unlink(state_path(name))
            if persist.discard(state_path(persist.SAVED_NAME)):
                removed.append('the objects saved by the lab that stopped')
        finally:
            lock.release()
        print('No lab is running.' + (f' Removed leftovers: {"; ".join(removed)}.'
                                      if removed else ''))
        return 0
    try:
        Client().shutdown()
    except KubelabError:
        os.kill(pid, 15)
    deadline = time.monotonic() + 60
    while running_daemon() and time.monotonic() < deadline:
        time.sleep(0.2)
    if running_daemon():
        os.kill(pid, 9)
    clean_leftovers(state_path('pids'), lab_mark(),
                    cgroups_record=state_path('cgroups.json'))
    persist.discard(state_path(persist.SAVED_NAME))
    print('The lab is down.')
    return 0


def cmd_node(args) -> int:
    client = Client()
    if args.action.endswith('-kubelet'):
        print(client.node_kubelet(args.name, args.action == 'start-kubelet')['message'])
    else:
        print(client.node_network(args.name, args.action == 'restore')['message'])
    return 0


def cmd_wait(args) -> int:
    Client().wait_ready(args.namespace, timeout=args.timeout)
    where = f' in namespace {args.namespace}' if args.namespace else ''
    print(f'All pods{where} are ready, every deployment is rolled out, and every switch '
          'carries the current state.')
    return 0


# ---------------------------------------------------------------- lab, demo, bench
def cmd_lab(args) -> int:
    """``kubelab lab list|start|check|reset|solve [N]``: the guided exercises of labs/
    (kubelab/course/runner.py)."""
    from kubelab.course.runner import run        # here: keeps other commands fast
    return run(args)


def cmd_demo(args) -> int:
    from kubelab.demo import run_demo            # here: keeps other commands fast
    return run_demo()


def cmd_bench(args) -> int:
    from kubelab.bench import run_bench          # here: keeps other commands fast
    from topo import ovs
    ovs.activate()     # its ovs-appctl and ovs-ofctl talk to the lab's Open vSwitch
    return run_bench(args)
