"""Exercise 6, Ingress: the checks of ``kubelab lab check 6``.

Host and path routing to several Services, TLS (README.md beside this file).
kubelab/course/ctx.py has what the checks use; ``TASKS``, at the end, names the tasks.
"""

from __future__ import annotations

from kubelab.course.ctx import Ctx, Failed, who_answered


def _ingress_ip(ctx: Ctx) -> str:
    return ctx.nodes['worker-1']          # ingress-nginx's hostPorts 80/443


def _route_check(ctx: Ctx, host: str, path: str, service: str, tls: bool = False):
    port = 443 if tls else 80
    [r] = ctx.request('host/client-1', _ingress_ip(ctx), port, path, host_header=host,
                      tls=tls, sni=host if tls else None)
    if not tls and r.get('status') in (301, 302, 307, 308) and \
            str(r.get('location') or '').startswith('https://'):
        return _route_check(ctx, host, path, service, tls=True)     # TLS host: follow
    want = f'{service}-'
    who = who_answered(r) if r.get('status') == 200 else None
    if who and who.startswith(want):
        return r
    if who:
        raise Failed(f'{"https" if tls else "http"}://{host}{path} was answered by pod '
                     f'{who}, not by a pod of Service {service}: no rule sends it there '
                     '(an Exact path matches only itself, a Prefix path also what lies '
                     'below it)')
    state = r.get('error') or f'HTTP {r.get("status")}'
    hint = ''
    if r.get('status') == 404:
        hint = ': no Ingress rule matches this host and path'
    elif r.get('status') == 503 and ctx.get('Service', service):
        hint = f': {ctx.diagnose(service) or "the backend has no ready endpoint"}'
    elif r.get('status') == 308:
        hint = f' (redirect to {r.get("location")})'
    raise Failed(f'{"https" if tls else "http"}://{host}{path}: {state}{hint}')


def ex6_host(ctx: Ctx):
    _route_check(ctx, 'shop.example', '/', 'shop')
    _route_check(ctx, 'blog.example', '/', 'blog')


def ex6_path(ctx: Ctx):
    _route_check(ctx, 'shop.example', '/api/items', 'api')
    _route_check(ctx, 'shop.example', '/cart', 'shop')


def ex6_tls(ctx: Ctx):
    r = _route_check(ctx, 'shop.example', '/', 'shop', tls=True)
    subject = r.get('subject') or ''
    if 'shop.example' not in subject:
        raise Failed(f'https://shop.example was served with the certificate "{subject}", '
                     'not the one of Secret shop-tls: add a tls section for shop.example')


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ('shop.example goes to shop, blog.example to blog', ex6_host),
    ('shop.example/api/... goes to api, the rest of shop.example to shop', ex6_path),
    ('https://shop.example is served with the shop-tls certificate', ex6_tls),
]
