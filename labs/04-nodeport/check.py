"""Exercise 4, NodePort: the checks of ``kubelab lab check 4``.

Reaching the cluster from outside; Cluster vs Local traffic policy; source IP (README.md
beside this file). kubelab/course/ctx.py has what the checks use; ``TASKS``, at the end,
names the tasks.
"""

from __future__ import annotations

from kubelab.course.ctx import Ctx, Failed, failures, node_port


def ex4_every_node(ctx: Ctx):
    svc = ctx.service('web')
    port = node_port(svc)
    for node, ip in ctx.nodes.items():
        got = ctx.http('host/client-1', ip, port, '/clientip', count=2)
        if not all(r['ok'] for r in got):
            hint = ctx.diagnose('web')
            raise Failed(f'client-1 -> {node} {ip}:{port}: {dict(failures(got))}'
                         + (f': {hint}' if hint else
                            (': externalTrafficPolicy Local drops it on nodes without a '
                             'web pod' if svc['spec'].get('externalTrafficPolicy') == 'Local'
                             else '')))


def ex4_local(ctx: Ctx):
    svc = ctx.service('web-local')
    port = node_port(svc)
    web = [p for p in ctx.pods({'app': 'web'}) if ctx.ready(p)]
    here = {p['spec']['nodeName'] for p in web}
    client_ip = ctx.hosts['client-1']
    for node in sorted(('worker-1', 'worker-2'), key=lambda n: n not in here):
        [r] = ctx.http('host/client-1', ctx.nodes[node], port, '/clientip', timeout=1)
        if node in here:
            if not r['ok']:
                raise Failed(f'client-1 -> {node}:{port} (it runs a web pod): {r["error"]}'
                             + (f': {ctx.diagnose("web-local")}' if ctx.diagnose('web-local')
                                else ''))
            seen = r['body'].split(':')[0]
            if seen != client_ip:
                raise Failed(f'the web pod saw {seen} ({ctx.node_of_ip.get(seen, "?")}), not '
                             f'client-1\'s {client_ip}: the node masqueraded the connection;'
                             ' set externalTrafficPolicy: Local on web-local')
        elif r['ok']:
            raise Failed(f'{node} runs no web pod yet answered on {port}: with '
                         'externalTrafficPolicy Local it must not forward to other nodes')
    if not here & {'worker-1', 'worker-2'}:
        raise Failed('no ready web pod runs on a worker')


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ("client-1 reaches web on every node's NodePort", ex4_every_node),
    ("web-local keeps client-1's IP and only its pod's node answers", ex4_local),
]
