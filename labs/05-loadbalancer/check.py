"""Exercise 5, LoadBalancer: the checks of ``kubelab lab check 5``.

The cloud LB in front of the NodePorts, health checks, node failure (README.md beside
this file). kubelab/course/ctx.py has what the checks use; ``TASKS``, at the end, names
the tasks.
"""

from __future__ import annotations

import time

from kubelab.course.ctx import Ctx, Failed, failures, load_balancer


def ex5_address(ctx: Ctx):
    svc, ip = load_balancer(ctx)
    port = svc['spec']['ports'][0]['port']
    got = ctx.http('host/client-1', ip, port, '/hostname', count=6)
    if not all(r['ok'] for r in got):
        raise Failed(f'client-1 -> {ip}:{port}: {dict(failures(got))}'
                     + (f': {ctx.diagnose("web")}' if ctx.diagnose('web') else ''))


def ex5_client_ip(ctx: Ctx):
    svc, ip = load_balancer(ctx)
    port = svc['spec']['ports'][0]['port']
    got = ctx.http('host/client-1', ip, port, '/clientip', count=6)
    seen = {r['body'].split(':')[0] for r in got if r['ok']}
    if not seen:
        raise Failed(f'client-1 -> {ip}:{port}: {dict(failures(got))}')
    if seen != {ctx.hosts['client-1']}:
        names = ', '.join(ctx.node_of_ip.get(s, s) for s in sorted(seen))
        raise Failed(f'the pods saw {", ".join(sorted(seen))} ({names}), not client-1\'s '
                     f'{ctx.hosts["client-1"]}: with externalTrafficPolicy '
                     f'{svc["spec"].get("externalTrafficPolicy", "Cluster")} the node '
                     'masquerades; Local keeps the client IP')


def ex5_node_failure(ctx: Ctx):
    svc, ip = load_balancer(ctx)
    port = svc['spec']['ports'][0]['port']
    ctx.lab.kubelab('node', 'fail', 'worker-1')
    try:
        time.sleep(4)                     # two failed health checks, with margin
        got = ctx.http('host/client-1', ip, port, '/hostname', count=10, timeout=1)
    finally:
        ctx.lab.kubelab('node', 'restore', 'worker-1')
    bad = failures(got)
    if bad and svc['spec'].get('externalTrafficPolicy') == 'Local':
        raise Failed(f'with worker-1 failed, {sum(bad.values())} of 10 new connections to '
                     f'{ip}:{port} failed ({", ".join(f"{n} {e}" for e, n in bad.items())})'
                     ': every node without a failure needs a ready web pod of its own')
    if bad:
        raise Failed(f'with worker-1 failed, {sum(bad.values())} of 10 new connections to '
                     f'{ip}:{port} failed ({", ".join(f"{n} {e}" for e, n in bad.items())}):'
                     ' the cloud stopped using worker-1, but with externalTrafficPolicy '
                     'Cluster the other nodes still forward to the pod on worker-1 until '
                     'worker-1 turns NotReady (the node monitor\'s grace period, 40 s by '
                     'default: exercise 11); with Local each node serves only its own '
                     'pods and the health check tells the cloud which nodes have one')
    time.sleep(3)                         # the cloud takes worker-1 back


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ('web has a cloud address that answers client-1 on port 80', ex5_address),
    ("the pods see client-1's own IP", ex5_client_ip),
    ('with worker-1 failed, every new connection still succeeds', ex5_node_failure),
]
