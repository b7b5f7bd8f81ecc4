"""Exercise 9, Troubleshooting: the checks of ``kubelab lab check 9``.

Four broken Services to diagnose and fix (README.md beside this file).
kubelab/course/ctx.py has what the checks use; ``TASKS``, at the end, names the tasks.
"""

from __future__ import annotations

from kubelab.course.ctx import Ctx, Failed, failures, node_port


def _service_works(ctx: Ctx, name: str):
    svc = ctx.service(name)
    got = ctx.http(ctx.client_pod(), svc['spec']['clusterIP'], 80, '/hostname', count=3)
    if not all(r['ok'] for r in got):
        hint = ctx.diagnose(name)
        raise Failed(f'{name} ({svc["spec"]["clusterIP"]}:80) from the client pod: '
                     f'{", ".join(sorted(failures(got)))}' + (f': {hint}' if hint else ''))


def ex9_catalog(ctx: Ctx):
    _service_works(ctx, 'catalog')


def ex9_orders(ctx: Ctx):
    _service_works(ctx, 'orders')


def ex9_payments(ctx: Ctx):
    _service_works(ctx, 'payments')


def ex9_edge(ctx: Ctx):
    svc = ctx.service('edge')
    port = node_port(svc)
    ip = ctx.nodes['worker-1']
    got = ctx.http('host/client-1', ip, port, '/hostname', count=3, timeout=1)
    if all(r['ok'] for r in got):
        return
    hint = ctx.diagnose('edge')
    if not hint and svc['spec'].get('externalTrafficPolicy') == 'Local':
        where = sorted({p['spec']['nodeName'] for p in ctx.pods(svc['spec']['selector'])
                        if ctx.ready(p)})
        hint = (f'externalTrafficPolicy Local on worker-1, which runs no endpoint of edge '
                f'(they run on {", ".join(where) or "no node"}): the node drops the '
                'connection')
    raise Failed(f'client-1 -> worker-1 {ip}:{port}: {", ".join(sorted(failures(got)))}'
                 + (f': {hint}' if hint else ''))


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ('catalog answers from the client pod', ex9_catalog),
    ('orders answers from the client pod', ex9_orders),
    ('payments answers from the client pod', ex9_payments),
    ("client-1 reaches edge through worker-1's NodePort", ex9_edge),
]
