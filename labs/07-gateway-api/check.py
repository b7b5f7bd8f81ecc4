"""Exercise 7, Gateway API: the checks of ``kubelab lab check 7``.

The same with a Gateway and HTTPRoutes; a weighted canary (README.md beside this file).
kubelab/course/ctx.py has what the checks use; ``TASKS``, at the end, names the tasks.
"""

from __future__ import annotations

from collections import Counter

from kubelab.course.ctx import Ctx, Failed, wait, who_answered


def _gateway_ip(ctx: Ctx) -> str:
    gw = ctx.get('Gateway', 'gw')
    if gw is None:
        raise Failed('there is no Gateway gw in namespace lab-07')
    addresses = (gw.get('status') or {}).get('addresses') or []
    if not addresses:
        raise Failed('Gateway gw has no address yet (status.addresses)')
    return addresses[0]['value']


def _gw_requests(ctx: Ctx, path: str, count: int, host: str = 'app.example',
                 headers: dict | None = None) -> list[dict]:
    ip = _gateway_ip(ctx)
    # A new Gateway's address answers once the cloud's health checks found its node.
    wait(lambda: ctx.request('host/client-1', ip, 80, '/', host_header=host,
                              timeout=1)[0].get('error') != 'timeout', 6)
    return ctx.request('host/client-1', ip, 80, path, count=count, host_header=host,
                       headers=headers)


def ex7_route(ctx: Ctx):
    [r] = _gw_requests(ctx, '/', 1)
    who = who_answered(r) or ''
    if r.get('status') != 200 or not who.startswith('app-v1-'):
        raise Failed(f'http://app.example/ via the Gateway: '
                     f'{r.get("error") or "HTTP " + str(r.get("status"))}'
                     + (f', answered by {who}' if who else '')
                     + ': an HTTPRoute for host app.example attached to gw must send it '
                       'to app-v1')


def ex7_docs(ctx: Ctx):
    [r] = _gw_requests(ctx, '/docs/intro', 1)
    who = who_answered(r) or ''
    if r.get('status') != 200 or not who.startswith('docs-'):
        raise Failed(f'http://app.example/docs/intro: '
                     f'{r.get("error") or "HTTP " + str(r.get("status"))}'
                     + (f', answered by {who}' if who else '')
                     + ': add a rule matching the path prefix /docs to Service docs')


def ex7_canary(ctx: Ctx):
    got = _gw_requests(ctx, '/', 40)
    # The split is the question here, not one request lost on a busy machine (seen once
    # in a CI-sized run: 39 of 40 answered): a request that got no answer is sent again,
    # once; one that fails again counts against the split.
    lost = [r for r in got if r.get('status') is None]
    if lost:
        got = [r for r in got if r.get('status') is not None] + _gw_requests(
            ctx, '/', len(lost))
    who = Counter((who_answered(r) or '').rsplit('-', 2)[0] for r in got if r.get('status') == 200)
    v1, v2 = who.get('app-v1', 0), who.get('app-v2', 0)
    if v1 + v2 != 40:
        raise Failed(f'of 40 requests to app.example/, {v1} reached app-v1 and {v2} '
                     f'app-v2; the others: {dict(Counter(r.get("status") for r in got))}')
    if not 2 <= v2 <= 6:
        raise Failed(f'{v2} of 40 requests went to app-v2 (the canary) and {v1} to '
                     'app-v1: give the backendRefs weights of about 90 and 10')


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ('app.example through Gateway gw reaches app-v1', ex7_route),
    ('app.example/docs/... goes to docs', ex7_docs),
    ('about 10% of app.example/ goes to the canary app-v2', ex7_canary),
]
