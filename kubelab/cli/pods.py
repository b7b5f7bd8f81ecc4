"""``kubelab exec`` and ``kubelab logs``: into a pod's container (its namespaces, cgroups,
user and capabilities, as ``kubectl exec``) or a node's or external host's network
namespace, and a container's log as the lab's kubelet wrote it."""

from __future__ import annotations

import os
import sys
import time

from kubelab.client import Client, container_exec, container_of, exec_target
from services.errors import KubelabError


def cmd_exec(args) -> int:
    if not args.command:
        raise KubelabError('exec needs a command after --, e.g. '
                           '`kubelab exec web-abc -- wget -qO- 10.96.0.10`')
    client = Client()
    if args.target.startswith(('node/', 'host/')):
        pid, env = exec_target(client, args.target, args.namespace, args.container)
        argv = ['nsenter', f'--net=/proc/{pid}/ns/net', '--', *args.command]
        os.execvpe('nsenter', argv, env)
    argv, env = container_exec(client, args.target, args.namespace, args.container,
                               list(args.command))
    os.execve(argv[0], argv, env)


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


def cmd_capture(args) -> int:
    """``kubelab capture TARGET [-w FILE.pcap] [-c N] [--seconds S] [FILTER...]``:
    tcpdump on the interface of a pod, node/NAME or host/NAME (its network namespace's
    one non-loopback interface, the pod's eth0 as a CNI would name it), one summary
    line per packet, or a pcap file for Wireshark with -w. Until Ctrl-C, N packets or S
    seconds."""
    import shutil
    import subprocess
    if shutil.which('tcpdump') is None:
        raise KubelabError('tcpdump is not installed: `sudo apt-get install tcpdump` '
                           '(scripts/install.sh installs it)')
    client = Client()
    pid, env = exec_target(client, args.target, args.namespace, None)
    netns = f'--net=/proc/{pid}/ns/net'
    links = subprocess.run(['nsenter', netns, '--', 'ip', '-o', 'link', 'show'],
                           capture_output=True, text=True).stdout
    names = [line.split(':')[1].strip().split('@')[0] for line in links.splitlines()
             if ':' in line and ' lo:' not in line and 'LOOPBACK' not in line]
    iface = names[0] if len(names) == 1 else 'any'
    argv = ['nsenter', netns, '--', 'tcpdump', '-i', iface, '-n', '-l', '-Z', 'root']
    if args.count:
        argv += ['-c', str(args.count)]
    if args.write:
        argv += ['-w', os.path.abspath(args.write), '-U']
    argv += list(args.filter)
    print(f'Capturing on {args.target} ({iface}); Ctrl-C stops.', file=sys.stderr,
          flush=True)
    try:
        proc = subprocess.run(argv, env=env, timeout=args.seconds or None)
        return proc.returncode
    except subprocess.TimeoutExpired:
        return 0
    except KeyboardInterrupt:
        return 0
