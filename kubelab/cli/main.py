"""``kubelab``: the lab's one command, with kubectl's verbs and output shapes.

  kubelab up [-f cluster.yaml] [-f manifest-or-dir ...] [--cloud none] [--detach]
  kubelab down
  kubelab apply -f FILE|DIR [--wait]      kubelab delete -f FILE | KIND NAME
  kubelab get KIND [NAME] [-o wide|json|yaml|name] [-n NS | -A] [-l SELECTOR] [--show-labels]
  kubelab diagram -o FILE.svg|FILE.png [-n NS | -A]   (a picture of the lab)
  kubelab label pod|namespace|... NAME k=v [k-] [--overwrite]
  kubelab scale deployment NAME --replicas N
  kubelab rollout restart deployment NAME
  kubelab rollout status deployment NAME [--timeout 60s]
  kubelab node fail|restore NAME               (cut a node off the network, reconnect it)
  kubelab node stop-kubelet|start-kubelet NAME (the node's kubelet stops; its pods run on)
  kubelab exec POD|node/NAME|host/NAME [-c CONTAINER] -- CMD...
  kubelab logs POD [-c CONTAINER]
  kubelab capture POD|node/NAME|host/NAME [-w FILE.pcap] [-c N] [--seconds S] [FILTER]
  kubelab wait                             (every pod ready, the dataplane caught up)
  kubelab flows [--service NAME] [--node NAME] [-n NS] [-o json]  (flows, counters, owners)
  kubelab top [--interval 1] [-n NS | -A] [--once]   (connections per Service and endpoint)
  kubelab top pods [NAME] [-n NS | -A] [--containers]   (CPU and memory per pod)
  kubelab lab list|start|check|reset|solve [N]   (the guided exercises of labs/)
  kubelab demo                             (bring up the default lab, show traffic, tear down)
  kubelab bench                            (the benchmark table)

This module holds the parser and ``main``; the commands live by subject beside it:
lab.py (up, down, node, wait, lab, demo, bench), objects.py (apply, delete, get,
create, label, scale, rollout), pods.py (exec, logs), observe.py (trace, flows, top, diagram).
Every command is declared by a small function below, grouped by subject, and
``build_parser`` calls them in the order ``kubelab --help`` lists the commands.

A ``KubelabError`` is the user's to fix: ``main`` prints it as one ``error:`` line (an
``ApplyError`` one line per problem, ``NotFound`` as kubectl does) and returns 1. Any
other exception is a bug of kubelab's and shows its traceback. A reader that leaves
(``kubelab flows | head``) ends the command quietly, as kubectl.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from kubelab.cli import lab, objects, observe, pods
from services.errors import ApplyError, KubelabError, NotFound


# ---------------------------------------------------------------- the lab
def _up(add):
    sp = add('up', lab.cmd_up, 'bring up a lab (default: 3 nodes, 2 external hosts)')
    sp.add_argument('-f', '--filename', action='append',
                    help='a cluster file (kind: Cluster) or manifests to apply; repeatable')
    sp.add_argument('--detach', action='store_true', help='return once the lab is ready')
    sp.add_argument('--cloud', choices=['kubelab', 'none'],
                    help="the cloud: kubelab's emulated one (default), or none: bare metal, "
                         'with MetalLB (overrides the cluster file\'s cloud)')


def _down(add):
    add('down', lab.cmd_down, 'take the lab down and remove everything it created')


def _node(add):
    sp = add('node', lab.cmd_node, 'fail a node (cut it off the network) or restore it; '
             "stop or start a node's kubelet")
    sp.add_argument('action', choices=['fail', 'restore', 'stop-kubelet', 'start-kubelet'])
    sp.add_argument('name')


def _wait(add):
    sp = add('wait', lab.cmd_wait, 'wait until all pods are ready (of every namespace, or '
             "-n's) and the dataplane caught up")
    sp.add_argument('--timeout', type=objects.parse_duration, default=60.0,
                    help='how long to wait, e.g. 90s or 2m (default 60s)')
    sp.set_defaults(namespace=None)              # every namespace unless -n NS


def _lab(add):
    sp = add('lab', lab.cmd_lab, 'the guided exercises: list, start N, check N, reset N, '
             'solve N')
    sp.add_argument('action', choices=['list', 'start', 'check', 'reset', 'solve'])
    sp.add_argument('number', nargs='?', help='the exercise number (kubelab lab list)')


def _demo(add):
    add('demo', lab.cmd_demo, 'bring up the default lab, show traffic through it, take it '
        'down')


def _bench(add):
    sp = add('bench', lab.cmd_bench, 'measure the dataplane: direct vs through a ClusterIP')
    sp.add_argument('--connections', type=int, default=10000,
                    help='short connections through the ClusterIP per run (default 10000)')
    sp.add_argument('--runs', type=int, default=4,
                    help='runs of --connections from one client, back to back (default 4)')
    sp.add_argument('--seconds', type=float, default=5)
    sp.add_argument('--rounds', type=int, default=4,
                    help='rounds of the path rows (direct, ClusterIP, NodePort, load '
                         'balancer in turn; default 4)')
    sp.add_argument('--paths-only', action='store_true',
                    help='only the path rows (no HTTP, failures or MetalLB)')
    sp.add_argument('--fin-close', action='store_true',
                    help='end short connections with FIN (server TIME_WAIT) instead of RST')
    sp.add_argument('--policies', type=int, default=0, metavar='N',
                    help='also measure N NetworkPolicies: time to program, latency')
    sp.add_argument('--policy-pods', type=int, default=100, metavar='M',
                    help='the pods the --policies select among (default 100)')
    sp.add_argument('--policies-only', action='store_true',
                    help='with --policies: only the NetworkPolicy rows')
    sp.add_argument('--scale', type=int, default=0, metavar='N',
                    help='also measure N Services x 10 endpoints: time to program, '
                         'changes among them, connect latency, memory')
    sp.add_argument('--scale-only', action='store_true',
                    help='with --scale: only the rows of N Services')


# ---------------------------------------------------------------- objects
def _apply(add):
    sp = add('apply', objects.cmd_apply, 'create or update objects from files')
    sp.add_argument('-f', '--filename', action='append', required=True)
    sp.add_argument('--dry-run', action='store_true', help='validate only')
    sp.add_argument('--wait', action='store_true',
                    help='wait until pods are ready and the switches carry the change')
    sp.add_argument('--timeout', type=objects.parse_duration, default=60.0,
                    help='how long --wait waits, e.g. 90s or 2m (default 60s)')


def _delete(add):
    sp = add('delete', objects.cmd_delete, 'delete objects')
    sp.add_argument('kind', nargs='?')
    sp.add_argument('name', nargs='?')
    sp.add_argument('-f', '--filename', action='append')
    sp.add_argument('--grace-period', type=int, default=None)
    sp.add_argument('--wait', nargs='?', const=True, default=True, type=objects.parse_bool,
                    metavar='true|false', help='wait until the objects are gone, as '
                    'kubectl does (default true; --wait=false returns at once)')
    sp.add_argument('--timeout', type=objects.parse_duration, default=120.0,
                    help='how long --wait waits, e.g. 60s (default 120s)')
    sp.set_defaults(late_name=True)          # `delete pod -n shop client`


def _get(add):
    sp = add('get', objects.cmd_get, 'list objects as kubectl does')
    sp.add_argument('kind')
    sp.add_argument('name', nargs='?')
    sp.add_argument('-o', '--output', choices=['wide', 'json', 'yaml', 'name'])
    sp.add_argument('-A', '--all-namespaces', action='store_true')
    sp.add_argument('-l', '--selector', metavar='SELECTOR',
                    help='only objects with these labels, as kubectl: k=v, k==v, k!=v, '
                         "'k in (a,b)', 'k notin (a,b)', k, !k, joined by commas")
    sp.add_argument('--show-labels', action='store_true',
                    help='a LABELS column with every label')
    sp.set_defaults(late_name=True)          # `get svc -o yaml web`


def _create(add):
    sp = add('create', objects.cmd_create, 'create a namespace (`create namespace NAME`)')
    sp.add_argument('kind', metavar='namespace')
    sp.add_argument('name')


def _label(add):
    sp = add('label', objects.cmd_label, "set or remove an object's labels "
             '(`label pod web tier=front app-`)')
    sp.add_argument('kind', metavar='KIND', help='pod, namespace, ... or KIND/NAME')
    sp.add_argument('items', nargs='*', metavar='NAME k=v|k-',
                    help='the name, then labels to set (k=v) or remove (k-)')
    sp.add_argument('--overwrite', action='store_true',
                    help='allow changing a label that already has a value')
    sp.set_defaults(rest_into='items')       # labels may also follow the options


def _scale(add):
    sp = add('scale', objects.cmd_scale, 'set the replicas of a deployment')
    sp.add_argument('kind')
    sp.add_argument('name', nargs='?')
    sp.add_argument('--replicas', type=int, required=True)
    sp.set_defaults(late_name=True)          # `scale deployment --replicas 3 web`


def _rollout(add):
    sp = add('rollout', None, "manage a deployment's rollout: restart, status")
    actions = sp.add_subparsers(dest='action', required=True, metavar='ACTION')
    for action, fn, help_text in (
            ('restart', objects.cmd_rollout_restart, 'replace every pod of a deployment anew'),
            ('status', objects.cmd_rollout_status, 'follow a rollout until it is done')):
        ap = actions.add_parser(action, help=help_text)
        ap.set_defaults(fn=fn)
        # Also after the action (`rollout status deploy web -n dev`), without
        # overriding one given before it.
        ap.add_argument('-n', '--namespace', default=argparse.SUPPRESS)
        ap.add_argument('kind', metavar='deployment', help='deployment, deploy or '
                        'deployment/NAME')
        ap.add_argument('name', nargs='?')
        if action == 'status':
            ap.add_argument('--timeout', type=objects.parse_duration, default=60.0,
                            help='how long to wait, e.g. 60s or 5m (0: no limit; '
                                 'default 60s)')


# ---------------------------------------------------------------- pods
def _exec(add):
    sp = add('exec', pods.cmd_exec, 'run a command in a pod, node/NAME or host/NAME')
    sp.add_argument('target')
    sp.add_argument('-c', '--container')
    sp.set_defaults(command=[])


def _capture(add):
    sp = add('capture', pods.cmd_capture, "tcpdump on a pod's, node/NAME's or host/NAME's "
             'interface: summary lines, or a pcap file for Wireshark')
    sp.add_argument('target', metavar='POD|node/NAME|host/NAME')
    sp.add_argument('filter', nargs='*', metavar='FILTER',
                    help="a tcpdump filter, e.g. 'tcp port 80' or icmp")
    sp.add_argument('-w', '--write', metavar='FILE.pcap', help='write the packets to a '
                    'pcap file (open it with Wireshark) instead of printing them')
    sp.add_argument('-c', '--count', type=int, help='stop after this many packets')
    sp.add_argument('--seconds', type=float, help='stop after this many seconds')
    sp.set_defaults(rest_into='filter')          # a filter may also follow the options


def _logs(add):
    sp = add('logs', pods.cmd_logs, "print a container's log")
    sp.add_argument('pod')
    sp.add_argument('-c', '--container')
    sp.add_argument('-f', '--follow', action='store_true')


# ---------------------------------------------------------------- looking into the lab
def _diagram(add):
    sp = add('diagram', observe.cmd_diagram, 'draw the lab (nodes, pods, Services, '
             'Ingresses, Gateways, clients) into an SVG or PNG file with Graphviz')
    sp.add_argument('-o', '--output', required=True, metavar='FILE',
                    help='the picture to write: FILE.svg or FILE.png')
    sp.add_argument('-A', '--all-namespaces', action='store_true',
                    help='every namespace (the default)')
    sp.set_defaults(namespace=None)              # all namespaces unless -n NS


def _trace(add):
    sp = add('trace', observe.cmd_trace, "a new connection's path through the live switches")
    sp.add_argument('source', metavar='SRC', help='a pod, node/NAME or host/NAME')
    sp.add_argument('destination', metavar='DST', help='IP:PORT or svc/NAME[:PORT]')
    sp.add_argument('--proto', choices=['tcp', 'udp'])
    sp.add_argument('--endpoint', help="follow the Service's bucket of this endpoint IP")
    sp.add_argument('--sport', type=int, default=40000,
                    help="the client's source port (default 40000; the cloud's load "
                    'balancer picks a node from it)')
    sp.add_argument('--host', default='', help='to an Ingress or Gateway: the Host of the '
                    'request whose second leg (proxy -> backend) to trace')
    sp.add_argument('--path', default='/', help='to an Ingress or Gateway: its path')


def _flows(add):
    sp = add('flows', observe.cmd_flows, "the switches' flows and groups, with counters "
             'and the object that owns each')
    sp.add_argument('--service', metavar='NAME',
                    help="only what this Service owns (in -n's namespace)")
    sp.add_argument('--node', metavar='NAME', help="only this node's bridge")
    sp.add_argument('-o', '--output', choices=['json'])


def _top(add):
    sp = add('top', observe.cmd_top, 'new connections per Service port and endpoint and '
             "each pod's CPU and memory, live; `top pods`: kubectl top pod")
    sp.add_argument('resource', nargs='?', choices=['pods', 'pod', 'po'],
                    help="pods: each pod's CPU and memory once, as kubectl top pod")
    sp.add_argument('name', nargs='?', help='one pod (with `top pods`)')
    sp.add_argument('--containers', action='store_true',
                    help='a row per container (with `top pods`)')
    sp.add_argument('--interval', type=float, default=1.0, help='seconds between frames')
    sp.add_argument('--once', action='store_true', help='print one frame and exit')
    sp.add_argument('-A', '--all-namespaces', action='store_true')


# ---------------------------------------------------------------- parser
#: The commands in the order ``kubelab --help`` lists them.
COMMANDS = (_up, _down, _apply, _delete, _get, _diagram, _trace, _create, _label, _scale,
            _node, _rollout, _exec, _logs, _capture, _wait, _flows, _top, _lab, _demo, _bench)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='kubelab', description='An emulated Kubernetes network '
                                'lab: Mininet + Open vSwitch + a Ryu kube-proxy.')
    sub = p.add_subparsers(dest='verb', required=True, metavar='COMMAND')

    def add(name, fn, help_text):
        sp = sub.add_parser(name, help=help_text)
        sp.set_defaults(fn=fn)
        sp.add_argument('-n', '--namespace', default='default')
        return sp

    for command in COMMANDS:
        command(add)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line as kubectl reads it: a command after ``--``, labels and capture
    filters after the options, and an object's name after them too (``get svc -o yaml
    web``, ``scale deployment --replicas 3 web``), which argparse alone refuses."""
    argv = list(argv)
    command = []
    if '--' in argv:                      # kubelab exec TARGET [-c C] -- CMD...
        i = argv.index('--')
        argv, command = argv[:i], argv[i + 1:]
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and getattr(args, 'rest_into', None):    # `label pod a -n y app=web`
        getattr(args, args.rest_into).extend(rest)
    elif len(rest) == 1 and getattr(args, 'late_name', False) and args.name is None \
            and not rest[0].startswith('-'):
        args.name = rest[0]
    elif rest:
        parser.error(f'unrecognized arguments: {" ".join(rest)}')
    if command:
        args.command = command
    return args


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return args.fn(args) or 0
    except ApplyError as exc:
        for err in exc.errors:
            print(f'error: {str(err).lstrip(": ")}', file=sys.stderr)
        print('Nothing was applied.', file=sys.stderr)
        return 1
    except NotFound as exc:
        print(f'Error from server (NotFound): {exc}', file=sys.stderr)
        return 1
    except KubelabError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `kubelab flows | head`: the reader is gone. End quietly, as kubectl does (killed
        # by SIGPIPE); Python would flush stdout again at exit and print a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
