"""``kubelab``: the lab's one command, with kubectl's verbs and output shapes.

  kubelab up [-f cluster.yaml] [-f manifest-or-dir ...] [--detach]
  kubelab down
  kubelab apply -f FILE|DIR [--wait]      kubelab delete -f FILE | KIND NAME
  kubelab get KIND [NAME] [-o wide|json|yaml|name] [-n NS | -A]
  kubelab diagram -o FILE.svg|FILE.png [-n NS | -A]   (a picture of the lab)
  kubelab scale deployment NAME --replicas N
  kubelab rollout restart deployment NAME
  kubelab rollout status deployment NAME [--timeout 60s]
  kubelab node fail|restore NAME               (cut a node off the network, reconnect it)
  kubelab exec POD|node/NAME|host/NAME [-c CONTAINER] -- CMD...
  kubelab logs POD [-c CONTAINER]
  kubelab wait                             (every pod ready, the dataplane caught up)
  kubelab flows [--service NAME] [--node NAME] [-n NS] [-o json]  (flows, counters, owners)
  kubelab top [--interval 1] [-n NS | -A] [--once]   (connections per Service and endpoint)
  kubelab lab list|start|check|reset|solve [N]   (the guided exercises of labs/)
  kubelab demo                             (bring up the default lab, show traffic, tear down)
  kubelab bench                            (the benchmark table)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

from kubelab import printers
from kubelab.client import STATE_DIR, Client, NoLab, container_of, exec_target
from services import manifests
from services.manifests import read_paths
from services.errors import ApplyError, KubelabError, NotFound, ValidationError

STORE_KIND = {'pods': 'Pod', 'deployments': 'Deployment', 'services': 'Service',
              'endpointslices': 'EndpointSlice', 'nodes': 'Node', 'namespaces': 'Namespace',
              'secrets': 'Secret', 'ingresses': 'Ingress', 'ingressclasses': 'IngressClass',
              'gatewayclasses': 'GatewayClass', 'gateways': 'Gateway',
              'httproutes': 'HTTPRoute'}
DELETE_KINDS = {word: kind for word, kind in STORE_KIND.items() if kind != 'Node'}


# ---------------------------------------------------------------- up / down
def cmd_up(args) -> int:
    from kubelab.daemon.statedir import running_daemon
    from services.cluster import load_cluster
    if os.geteuid() != 0:
        raise KubelabError('the lab needs root (network namespaces and Open vSwitch): '
                           'run `sudo kubelab up`')
    pid = running_daemon()
    if pid:
        raise KubelabError(f'a lab is already running (daemon pid {pid}): '
                           '`kubelab down` stops it')
    cluster_file, objects = None, []
    for path in args.filename or []:
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
    os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
    argv = [sys.executable, '-m', 'kubelab.daemon']
    if cluster_file:
        argv += ['--cluster', cluster_file]
    if objects:
        fd, mpath = tempfile.mkstemp(prefix='manifests-', suffix='.json', dir=STATE_DIR)
        with os.fdopen(fd, 'w') as f:
            json.dump(objects, f)
        argv += ['--manifests', mpath]
    for name in ('ready', 'api.json'):
        if os.path.exists(os.path.join(STATE_DIR, name)):
            os.unlink(os.path.join(STATE_DIR, name))
    log_path = os.path.join(STATE_DIR, 'daemon.log')
    with open(log_path, 'ab') as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd='/', env=dict(os.environ, PYTHONPATH=_pythonpath()))
    print('Bringing the lab up', end='', flush=True)
    start = time.monotonic()
    while not os.path.exists(os.path.join(STATE_DIR, 'ready')):
        if proc.poll() is not None:
            print(' failed.')
            raise KubelabError('the lab did not come up:\n' + _tail(log_path, 15))
        if time.monotonic() - start > 180:
            proc.terminate()
            raise KubelabError('the lab did not come up within 180 s:\n' + _tail(log_path))
        print('.', end='', flush=True)
        time.sleep(0.5)
    print(f' ready in {time.monotonic() - start:.1f} s.')
    client = Client()
    info = client.lab()
    print(f'Nodes: {", ".join(n["name"] + " " + n["ip"] for n in info["nodes"])}')
    print(f'External hosts: {", ".join(h["name"] + " " + h["ip"] for h in info["hosts"])}')
    print(f'Datapath: {info["datapath"]} (Open vSwitch); controller pid '
          f'{info["controllerPid"]}; state in {STATE_DIR}')
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


def _pythonpath() -> str:
    return os.pathsep.join(p for p in sys.path if p)


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return ''


def cmd_down(args) -> int:
    from kubelab.daemon.statedir import running_daemon, state_path
    from topo.cleanup import clean_leftovers
    pid = running_daemon()
    if pid is None:
        removed = clean_leftovers(state_path('pids'))
        for name in ('api.json', 'token', 'daemon.pid', 'ready'):
            if os.path.exists(state_path(name)):
                os.unlink(state_path(name))
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
    clean_leftovers(state_path('pids'))
    print('The lab is down.')
    return 0


# ---------------------------------------------------------------- objects
def cmd_apply(args) -> int:
    objects = read_paths(args.filename)
    client = Client()
    printers.print_apply_results(client.apply(objects, dry_run=args.dry_run))
    if args.wait and not args.dry_run:
        client.wait_applied(objects, timeout=args.timeout)
    return 0


def cmd_delete(args) -> int:
    client = Client()
    targets = []
    if args.filename:
        for obj in read_paths(args.filename):
            kind, ns, name = manifests.key(obj)
            targets.append((kind, ns or None, name))
    else:
        word = args.kind or ''
        if '/' in word:                                   # kubelab delete pod/web
            word, args.name = word.split('/', 1)
        if not word or not args.name:
            raise KubelabError('delete needs -f FILE, KIND NAME or KIND/NAME (e.g. '
                               '`kubelab delete pod web`)')
        kind = DELETE_KINDS.get(printers.kind_alias(word) if word not in ('ns', 'namespace',
                                'namespaces') else 'namespaces')
        if kind is None:
            raise KubelabError(f'cannot delete {word}; valid: '
                               + ', '.join(sorted(DELETE_KINDS)))
        targets.append((kind, args.namespace if manifests.namespaced(kind) else None,
                        args.name))
    code = 0
    for kind, ns, name in targets:
        try:
            print(client.delete(kind, ns, name, args.grace_period)['message'])
        except NotFound as exc:
            print(f'Error from server (NotFound): {exc}', file=sys.stderr)
            code = 1
        except KubelabError as exc:
            print(f'error: {exc}', file=sys.stderr)
            code = 1
    if args.wait:
        for kind, ns, name in targets:
            def gone(kind=kind, ns=ns, name=name):
                try:
                    client.get(kind, ns, name)
                    return False
                except KubelabError:
                    return True
            client.wait_for(gone, f'{kind} {name} to be deleted', timeout=60)
        client.wait_dataplane()
    return code


def cmd_get(args) -> int:
    kind = printers.kind_alias(args.kind)
    client = Client()
    now = datetime.now(timezone.utc)
    if kind == 'hosts':
        objs = [{'kind': 'Host', 'metadata': {'name': h['name']},
                 'status': {'addresses': [{'type': 'ExternalIP', 'address': h['ip']}]}}
                for h in client.lab()['hosts']]
        if args.name:
            objs = [o for o in objs if o['metadata']['name'] == args.name]
            if not objs:
                raise KubelabError(f'hosts "{args.name}" not found')
    else:
        ns = None if args.all_namespaces or kind in printers.CLUSTER_SCOPED \
            else args.namespace
        if args.name:
            objs = [client.get(STORE_KIND[kind], ns, args.name)]
        else:
            objs = client.list(STORE_KIND[kind], ns)
    out = printers.render(kind, objs, args.output, now, namespace=args.namespace,
                          single=bool(args.name), all_namespaces=args.all_namespaces)
    print(out)
    return 0


def cmd_diagram(args) -> int:
    """``kubelab diagram -o FILE``: a picture of the lab (kubelab/inspect/diagram.py) from one
    snapshot of the store; every namespace unless ``-n NS`` (the nodes and external
    hosts are always drawn)."""
    from kubelab.inspect import diagram
    diagram.output_format(args.output)           # a wrong name or no Graphviz: say so
    diagram.find_dot()                           # before asking the lab
    client = Client()
    _, objects = client.snapshot()
    info = client.lab()
    ns = None if args.all_namespaces else args.namespace
    if ns is not None:
        known = sorted(o['metadata']['name'] for o in objects.get('Namespace', []))
        if ns not in known:
            raise KubelabError(f'namespaces "{ns}" not found; namespaces: '
                               + ', '.join(known))
        objects = {kind: [o for o in items
                          if (o.get('metadata') or {}).get('namespace') in (None, '', ns)]
                   for kind, items in objects.items()}
    diagram.render(objects, info, args.output)
    nodes = {n['name'] for n in info.get('nodes', [])} | \
        {n['metadata']['name'] for n in objects.get('Node', [])}
    pods, services = len(objects.get('Pod', [])), len(objects.get('Service', []))
    print(f'wrote {args.output} ({len(nodes)} node{"s" * (len(nodes) != 1)}, {pods} '
          f'pod{"s" * (pods != 1)}, {services} Service{"s" * (services != 1)})')
    return 0


def cmd_scale(args) -> int:
    word = args.kind
    if '/' in word:
        word, args.name = word.split('/', 1)
    if printers.kind_alias(word) != 'deployments':
        raise KubelabError(f'scale works on deployments, not "{word}"')
    print(Client().scale(args.namespace, args.name, args.replicas)['message'])
    return 0


def cmd_node(args) -> int:
    print(Client().node_network(args.name, args.action == 'restore')['message'])
    return 0


def deployment_name(args) -> str:
    """The NAME of ``deployment NAME``, ``deploy NAME`` or ``deployment/NAME``."""
    word, name = args.kind, args.name
    if '/' in word:
        if name is not None:
            raise KubelabError('there is no need to specify a resource type as a separate '
                               'argument when passing arguments in resource/name form '
                               f'(e.g. `kubelab rollout {args.action} {word}`)')
        word, name = word.split('/', 1)
    if printers.kind_alias(word) != 'deployments':
        raise KubelabError(f'rollout works on deployments, not "{word}"')
    if not name:
        raise KubelabError(f'rollout {args.action} needs the name of a deployment, e.g. '
                           f'`kubelab rollout {args.action} deployment web`')
    return name


_NUMBER = r'(\d+(?:\.\d*)?|\.\d+)'
_DURATION = re.compile(_NUMBER + '(ms|s|m|h)')
_UNIT_SECONDS = {'ms': 0.001, 's': 1, 'm': 60, 'h': 3600}


def parse_duration(text: str) -> float:
    """Seconds of a kubectl duration (``60s``, ``2m``, ``1m30s``, ``500ms``) or of a
    plain number of seconds; 0 means no limit."""
    if re.fullmatch(_NUMBER, text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or ''.join(number + unit for number, unit in parts) != text:
        raise argparse.ArgumentTypeError(f'invalid duration "{text}": use a number with '
                                         'a unit, e.g. 60s, 2m or 1m30s')
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def cmd_rollout_restart(args) -> int:
    print(Client().restart_rollout(args.namespace, deployment_name(args))['message'])
    return 0


def cmd_rollout_status(args) -> int:
    """Print each new progress line of the rollout until it is done, as kubectl does
    (it watches; this long-polls the store's snapshot, which wakes on every change)."""
    name = deployment_name(args)
    client = Client()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    version, last = 0, None
    try:
        while True:
            left = 60.0 if deadline is None else max(0.0, deadline - time.monotonic())
            version, objects = client.snapshot(version, timeout=min(left, 60.0))
            deploy = next((d for d in objects.get('Deployment', [])
                           if (d['metadata']['namespace'], d['metadata']['name'])
                           == (args.namespace, name)), None)
            if deploy is None:
                raise NotFound(f'deployments.apps "{name}" not found in namespace '
                               f'"{args.namespace}"')
            line, done = printers.rollout_status(deploy)
            if line != last:
                print(line, flush=True)
                last = line
            if done:
                return 0
            if deadline is not None and time.monotonic() >= deadline:
                print(f'error: timed out after {args.timeout:g}s waiting for deployment '
                      f'"{name}" rollout to finish', file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        return 130


def cmd_wait(args) -> int:
    Client().wait_ready(args.namespace, timeout=args.timeout)
    print('All pods are ready and every switch carries the current state.')
    return 0


# ---------------------------------------------------------------- exec / logs
def cmd_exec(args) -> int:
    if not args.command:
        raise KubelabError('exec needs a command after --, e.g. '
                           '`kubelab exec web-abc -- wget -qO- 10.96.0.10`')
    from topo.images.runtime import with_resolv_conf
    client = Client()
    pid, env = exec_target(client, args.target, args.namespace, args.container)
    command = list(args.command)
    if not args.target.startswith(('node/', 'host/')):
        # The pod's own /etc/resolv.conf, as its containers see it.
        name = args.target.split('/', 1)[-1]
        meta = client.get('Pod', args.namespace, name)['metadata']
        resolv = os.path.join(client.lab()['stateDir'], 'pods',
                              f'{meta["namespace"]}_{meta["name"]}_{meta["uid"]}',
                              'resolv.conf')
        command = with_resolv_conf(command, resolv if os.path.exists(resolv) else None)
    argv = ['nsenter', f'--net=/proc/{pid}/ns/net', '--', *command]
    os.execvpe('nsenter', argv, env)


def cmd_logs(args) -> int:
    client = Client()
    pod = client.get('Pod', args.namespace, args.pod)
    spec = container_of(pod, args.container)
    meta = pod['metadata']
    path = os.path.join(client.lab()['stateDir'], 'pods',
                        f'{meta["namespace"]}_{meta["name"]}_{meta["uid"]}',
                        f'{spec["name"]}.log')
    try:
        with open(path, errors='replace') as f:
            sys.stdout.write(f.read())
            while args.follow:
                line = f.readline()
                if line:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)
    except FileNotFoundError:
        raise KubelabError(f'container "{spec["name"]}" in pod "{meta["name"]}" has not '
                           'started yet') from None
    except KeyboardInterrupt:
        pass
    return 0


def cmd_create(args) -> int:
    """``kubelab create namespace NAME``: kubectl's imperative create."""
    if args.kind not in ('namespace', 'ns'):
        raise KubelabError(f'kubelab create makes namespaces only (`kubelab create '
                           f'namespace NAME`); for "{args.kind}" write a manifest and '
                           f'`kubelab apply -f` it')
    client = Client()
    try:
        client.get('Namespace', None, args.name)
    except NotFound:
        pass
    else:
        raise KubelabError(f'namespaces "{args.name}" already exists')
    client.apply([{'apiVersion': 'v1', 'kind': 'Namespace',
                   'metadata': {'name': args.name}}])
    print(f'namespace/{args.name} created')
    return 0


def cmd_trace(args) -> int:
    """``kubelab trace SRC DST[:PORT]``: a new connection's path through the live
    switches (ofproto/trace), in the seed's words."""
    from kubelab.inspect import trace
    from services.cluster import load_cluster_file
    client = Client()
    cluster = load_cluster_file(os.path.join(client.lab()['stateDir'], 'cluster.json'))
    objects = {kind: client.list(kind) for kind in (
        'Pod', 'Service', 'EndpointSlice', 'Node', 'LoadBalancerHealth')}
    src = args.source
    if src.startswith(('node/', 'host/')):
        kind, name = src.split('/', 1)
        src_ip = (cluster.node(name) if kind == 'node' else cluster.client(name)).ip
    else:
        pod = client.get('Pod', args.namespace, src.split('/', 1)[-1])
        src_ip = (pod.get('status') or {}).get('podIP')
        if not src_ip:
            raise KubelabError(f'pod {src} has no IP yet')
    dst, port = args.destination, None
    if dst.startswith(('svc/', 'service/')):
        name, _, port = dst.split('/', 1)[1].partition(':')
        svc = client.get('Service', args.namespace, name)
        ports = svc['spec'].get('ports') or []
        chosen = next((p for p in ports if port in (str(p['port']), p.get('name'))),
                      None) if port else (ports[0] if ports else None)
        if chosen is None or svc['spec'].get('clusterIP') in (None, 'None'):
            raise KubelabError(f'service {name} has no ClusterIP port {port or ""}; ports: '
                               + ', '.join(str(p['port']) for p in ports))
        dst_ip, port = svc['spec']['clusterIP'], chosen['port']
        proto = args.proto or chosen.get('protocol', 'TCP').lower()
    else:
        dst_ip, _, text = dst.partition(':')
        if not text.isdigit():
            raise KubelabError(f'destination "{dst}": give IP:PORT or svc/NAME[:PORT]')
        port, proto = int(text), args.proto or 'tcp'
    tracer = trace.Tracer(cluster, objects)
    print(trace.render(trace.trace_connection(tracer, src_ip, dst_ip, int(port), proto,
                                              args.endpoint), tracer))
    return 0


def cmd_lab(args) -> int:
    """``kubelab lab list|start|check|reset|solve [N]``: the guided exercises of labs/
    (kubelab/course/runner.py)."""
    from kubelab.course.runner import run
    return run(args)


def cmd_demo(args) -> int:
    from kubelab.demo import run_demo
    return run_demo()


def cmd_bench(args) -> int:
    from kubelab.bench import run_bench
    return run_bench(args)


# ---------------------------------------------------------------- flows / top
OFCTL_TIMEOUT = 10


class OfctlFailed(KubelabError):
    pass


def lab_cluster(client: Client):
    """The running lab's cluster: the file the daemon gave the controller."""
    from services.cluster import load_cluster_file
    return load_cluster_file(os.environ.get('KUBELAB_CLUSTER_FILE')
                             or os.path.join(client.state_dir, 'cluster.json'))


def lab_bridges(cluster, only: str | None = None) -> list[tuple[str, int]]:
    """(name, dpid) of the lab's bridges: the nodes', the underlay, the cloud edge, the
    external network; ``only``: one node (by node or bridge name)."""
    from services import wiring
    order = {'node': 0, 'underlay': 1, 'edge': 2, 'external': 3}
    bridges = sorted(wiring.all_bridges(cluster), key=lambda b: (
        order[wiring.switch_role(cluster, b[1]).kind], b[1]))
    if only is None:
        return bridges
    for node in cluster.nodes:
        if only in (node.name, wiring.node_bridge(node)):
            return [(wiring.node_bridge(node), wiring.node_dpid(node))]
    if only in {name for name, _ in bridges}:
        return [b for b in bridges if b[0] == only]
    raise KubelabError(f'no node "{only}"; nodes: '
                       + ', '.join(n.name for n in cluster.nodes)
                       + '; bridges: ' + ', '.join(name for name, _ in bridges))


def ovs_ofctl(bridge: str, *args: str) -> str:
    argv = ['ovs-ofctl', '-O', 'OpenFlow13', *args, bridge]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=OFCTL_TIMEOUT)
    except FileNotFoundError:
        raise KubelabError('ovs-ofctl not found: Open vSwitch is not installed '
                           '(`sudo ./run.sh install`)') from None
    except subprocess.TimeoutExpired:
        raise OfctlFailed(f'`{" ".join(argv)}` did not answer within {OFCTL_TIMEOUT} s') \
            from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f'exit status {proc.returncode}']
        hint = ' (run kubelab with sudo)' if 'Permission denied' in lines[-1] else ''
        raise OfctlFailed(f'`{" ".join(argv)}` failed: {lines[-1]}{hint}')
    return proc.stdout


def dump_bridges(bridges: list[tuple[str, int]]) -> list:
    """Each bridge's flows, groups and group counters; a bridge that cannot be read
    (missing, ovs-ofctl failing) carries the error, the others are read all the same."""
    from kubelab.inspect import flows as observe
    dumps = []
    for name, dpid in bridges:
        texts, errors = {}, []
        for what, args in (('flows', ('--names', 'dump-flows')),
                           ('groups', ('dump-groups',)),
                           ('stats', ('dump-group-stats',))):
            try:
                texts[what] = ovs_ofctl(name, *args)
            except OfctlFailed as exc:
                errors.append(str(exc))
                if what == 'flows':       # no such bridge: the other dumps fail alike
                    break
        dumps.append(observe.bridge_dump(name, dpid, texts.get('flows'),
                                         texts.get('groups'), texts.get('stats'),
                                         error='; '.join(errors) or None))
    return dumps


def cmd_flows(args) -> int:
    """``kubelab flows``: the switches' flows and groups, each with its counters and the
    object that owns it (kubelab/inspect/flows.py)."""
    from kubelab.inspect import flows as observe
    client = Client()
    cluster = lab_cluster(client)
    bridges = lab_bridges(cluster, args.node)
    for _ in range(3):            # a change between the snapshot and the dumps: again
        version, objects = client.snapshot()
        if args.service and not any(
                (s['metadata'].get('namespace', 'default'), s['metadata']['name'])
                == (args.namespace, args.service) for s in objects.get('Service', [])):
            raise NotFound(f'services "{args.service}" not found in namespace '
                           f'"{args.namespace}"')
        dumps = dump_bridges(bridges)
        dataplane = client.dataplane()
        if dataplane['storeVersion'] == version:
            break
    report = observe.annotate(cluster, objects, dumps)
    if dataplane['storeVersion'] != version:
        report.notes.append('the cluster kept changing while the switches were read: '
                            'some flows may show as stale or missing')
    elif dataplane['version'] < version:
        report.notes.append(f'the controller is still programming the switches (they '
                            f'carry version {dataplane["version"]} of {version}): stale '
                            f'and missing flows are expected for a moment')
    if args.service:
        report = observe.only_service(report, args.namespace, args.service)
    if args.output == 'json':
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(observe.render_flows(report))
    failed = [d for d in dumps if d.error]
    if args.output == 'json':        # the text names them in place
        for dump in failed:
            print(f'error: {dump.name}: {dump.error}', file=sys.stderr)
    return 1 if failed else 0


def cmd_top(args) -> int:
    """``kubelab top``: new connections per Service port and endpoint, bytes per pod,
    connections per load balancer node, redrawn every ``--interval`` seconds."""
    from kubelab.inspect import flows as observe
    from services import wiring
    if args.interval <= 0:
        raise KubelabError('--interval must be more than 0 seconds')
    client = Client()
    cluster = lab_cluster(client)
    bridges = [b for b in lab_bridges(cluster)
               if b[1] not in (wiring.UNDERLAY_DPID, wiring.EXTERNAL_DPID)]
    namespace = None if args.all_namespaces else args.namespace

    def poll():
        _, objects = client.snapshot()
        start = time.monotonic()
        dumps = dump_bridges(bridges)
        read = (start + time.monotonic()) / 2
        return observe.Poll(read, observe.annotate(cluster, objects, dumps))

    try:
        last = poll()
        while True:
            time.sleep(args.interval)
            now = poll()
            view = observe.top_view(last, now, namespace)
            frame = observe.render_top(view, datetime.now().strftime('%H:%M:%S'))
            if args.once:
                print(frame)
                return 1 if view.errors else 0
            sys.stdout.write('\033[H\033[2J' + frame + '\n')
            sys.stdout.flush()
            last = now
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='kubelab', description='An emulated Kubernetes network '
                                'lab: Mininet + Open vSwitch + a Ryu kube-proxy.')
    sub = p.add_subparsers(dest='verb', required=True, metavar='COMMAND')

    def add(name, fn, help_text):
        sp = sub.add_parser(name, help=help_text)
        sp.set_defaults(fn=fn)
        sp.add_argument('-n', '--namespace', default='default')
        return sp

    sp = add('up', cmd_up, 'bring up a lab (default: 3 nodes, 2 external hosts)')
    sp.add_argument('-f', '--filename', action='append',
                    help='a cluster file (kind: Cluster) or manifests to apply; repeatable')
    sp.add_argument('--detach', action='store_true', help='return once the lab is ready')
    add('down', cmd_down, 'take the lab down and remove everything it created')
    sp = add('apply', cmd_apply, 'create or update objects from files')
    sp.add_argument('-f', '--filename', action='append', required=True)
    sp.add_argument('--dry-run', action='store_true', help='validate only')
    sp.add_argument('--wait', action='store_true',
                    help='wait until pods are ready and the switches carry the change')
    sp.add_argument('--timeout', type=float, default=60)
    sp = add('delete', cmd_delete, 'delete objects')
    sp.add_argument('kind', nargs='?')
    sp.add_argument('name', nargs='?')
    sp.add_argument('-f', '--filename', action='append')
    sp.add_argument('--grace-period', type=int, default=None)
    sp.add_argument('--wait', action='store_true')
    sp = add('get', cmd_get, 'list objects as kubectl does')
    sp.add_argument('kind')
    sp.add_argument('name', nargs='?')
    sp.add_argument('-o', '--output', choices=['wide', 'json', 'yaml', 'name'])
    sp.add_argument('-A', '--all-namespaces', action='store_true')
    sp = add('diagram', cmd_diagram, 'draw the lab (nodes, pods, Services, Ingresses, '
             'Gateways, clients) into an SVG or PNG file with Graphviz')
    sp.add_argument('-o', '--output', required=True, metavar='FILE',
                    help='the picture to write: FILE.svg or FILE.png')
    sp.add_argument('-A', '--all-namespaces', action='store_true',
                    help='every namespace (the default)')
    sp.set_defaults(namespace=None)              # all namespaces unless -n NS
    sp = add('trace', cmd_trace, "a new connection's path through the live switches")
    sp.add_argument('source', metavar='SRC', help='a pod, node/NAME or host/NAME')
    sp.add_argument('destination', metavar='DST', help='IP:PORT or svc/NAME[:PORT]')
    sp.add_argument('--proto', choices=['tcp', 'udp'])
    sp.add_argument('--endpoint', help="follow the Service's bucket of this endpoint IP")
    sp = add('create', cmd_create, 'create a namespace (`create namespace NAME`)')
    sp.add_argument('kind', metavar='namespace')
    sp.add_argument('name')
    sp = add('scale', cmd_scale, 'set the replicas of a deployment')
    sp.add_argument('kind')
    sp.add_argument('name', nargs='?')
    sp.add_argument('--replicas', type=int, required=True)
    sp = add('node', cmd_node, 'fail a node (cut it off the network) or restore it')
    sp.add_argument('action', choices=['fail', 'restore'])
    sp.add_argument('name')
    sp = add('rollout', None, "manage a deployment's rollout: restart, status")
    actions = sp.add_subparsers(dest='action', required=True, metavar='ACTION')
    for action, fn, help_text in (
            ('restart', cmd_rollout_restart, 'replace every pod of a deployment anew'),
            ('status', cmd_rollout_status, 'follow a rollout until it is done')):
        ap = actions.add_parser(action, help=help_text)
        ap.set_defaults(fn=fn)
        # Also after the action (`rollout status deploy web -n dev`), without
        # overriding one given before it.
        ap.add_argument('-n', '--namespace', default=argparse.SUPPRESS)
        ap.add_argument('kind', metavar='deployment', help='deployment, deploy or '
                        'deployment/NAME')
        ap.add_argument('name', nargs='?')
        if action == 'status':
            ap.add_argument('--timeout', type=parse_duration, default=60.0,
                            help='how long to wait, e.g. 60s or 5m (0: no limit; '
                                 'default 60s)')
    sp = add('exec', cmd_exec, 'run a command in a pod, node/NAME or host/NAME')
    sp.add_argument('target')
    sp.add_argument('-c', '--container')
    sp.set_defaults(command=[])
    sp = add('logs', cmd_logs, "print a container's log")
    sp.add_argument('pod')
    sp.add_argument('-c', '--container')
    sp.add_argument('-f', '--follow', action='store_true')
    sp = add('wait', cmd_wait, 'wait until all pods are ready and the dataplane caught up')
    sp.add_argument('--timeout', type=float, default=60)
    sp = add('flows', cmd_flows, "the switches' flows and groups, with counters and the "
             'object that owns each')
    sp.add_argument('--service', metavar='NAME',
                    help="only what this Service owns (in -n's namespace)")
    sp.add_argument('--node', metavar='NAME', help="only this node's bridge")
    sp.add_argument('-o', '--output', choices=['json'])
    sp = add('top', cmd_top, 'new connections per Service port and endpoint, live')
    sp.add_argument('--interval', type=float, default=1.0, help='seconds between frames')
    sp.add_argument('--once', action='store_true', help='print one frame and exit')
    sp.add_argument('-A', '--all-namespaces', action='store_true')
    sp = add('lab', cmd_lab, 'the guided exercises: list, start N, check N, reset N, '
             'solve N')
    sp.add_argument('action', choices=['list', 'start', 'check', 'reset', 'solve'])
    sp.add_argument('number', nargs='?', help='the exercise number (kubelab lab list)')
    add('demo', cmd_demo, 'bring up the default lab, show traffic through it, take it down')
    sp = add('bench', cmd_bench, 'measure the dataplane: direct vs through a ClusterIP')
    sp.add_argument('--connections', type=int, default=10000)
    sp.add_argument('--seconds', type=float, default=5)
    sp.add_argument('--fin-close', action='store_true',
                    help='end short connections with FIN (server TIME_WAIT) instead of RST')
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = []
    if '--' in argv:                      # kubelab exec TARGET [-c C] -- CMD...
        i = argv.index('--')
        argv, command = argv[:i], argv[i + 1:]
    args = build_parser().parse_args(argv)
    if command:
        args.command = command
    try:
        return args.fn(args) or 0
    except ApplyError as exc:
        for err in exc.errors:
            print(f'error: {str(err).lstrip(": ")}', file=sys.stderr)
        print('Nothing was applied.', file=sys.stderr)
        return 1
    except NoLab as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    except NotFound as exc:
        print(f'Error from server (NotFound): {exc}', file=sys.stderr)
        return 1
    except (KubelabError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
