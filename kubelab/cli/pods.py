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
