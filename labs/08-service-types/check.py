"""Exercise 8, The Service type hierarchy: the checks of ``kubelab lab check 8``.

One Service from ClusterIP to NodePort to LoadBalancer, traced at each step (README.md
beside this file). kubelab/course/ctx.py has what the checks use; ``TASKS``, at the end,
names the tasks.
"""

from __future__ import annotations

import json

from kubelab.course.ctx import Ctx, Failed, failures, node_port, load_balancer, record_path


def _start_record(ctx: Ctx) -> dict:
    try:
        with open(record_path(ctx.client, ctx.ex)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def ex8_cluster_ip(ctx: Ctx):
    svc = ctx.service('web')
    vip = svc['spec']['clusterIP']
    first = _start_record(ctx).get('clusterIP')
    if first and first != vip:
        raise Failed(f'web\'s ClusterIP changed from {first} to {vip}: change the type of '
                     'the Service in place (apply it again), do not delete and recreate it')
    got = ctx.http(ctx.client_pod(), vip, 80, '/hostname', count=4)
    if not all(r['ok'] for r in got):
        raise Failed(f'client -> {vip}:80: {dict(failures(got))}'
                     + (f': {ctx.diagnose("web")}' if ctx.diagnose('web') else ''))


def ex8_node_port(ctx: Ctx):
    port = node_port(ctx.service('web'))
    for node, ip in ctx.nodes.items():
        [r] = ctx.http('host/client-1', ip, port, '/hostname')
        if not r['ok']:
            raise Failed(f'client-1 -> {node} {ip}:{port}: {r["error"]}')


def ex8_load_balancer(ctx: Ctx):
    svc, ip = load_balancer(ctx)
    got = ctx.http('host/client-1', ip, 80, '/hostname', count=4)
    if not all(r['ok'] for r in got):
        raise Failed(f'client-1 -> {ip}:80: {dict(failures(got))}')


def ex8_trace(ctx: Ctx):
    svc, ip = load_balancer(ctx)
    proc = ctx.lab.kubelab('trace', 'host/client-1', f'{ip}:80', check=False)
    out = proc.stdout
    if proc.returncode != 0 or 'delivered to' not in out:
        raise Failed(f'kubelab trace host/client-1 {ip}:80 did not end at a pod: '
                     + ((out or proc.stderr).strip().splitlines() or ['?'])[-1])
    dnats = out.count('DNAT on')
    if dnats < 2:
        raise Failed(f'the trace shows {dnats} DNAT: expected the cloud\'s (to '
                     'NodeIP:NodePort) and kube-proxy\'s (to the pod)')


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ('the ClusterIP (unchanged) still answers inside the cluster', ex8_cluster_ip),
    ('the NodePort answers client-1 on every node', ex8_node_port),
    ('the LoadBalancer address answers client-1 on port 80', ex8_load_balancer),
    ('kubelab trace follows client-1 -> LB -> NodePort -> pod', ex8_trace),
]
