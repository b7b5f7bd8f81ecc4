"""Exercise 3, ClusterIP Services and EndpointSlices: the checks of ``kubelab lab check 3``.

A stable VIP over changing pods, load balancing, readiness (README.md beside this file).
kubelab/course/ctx.py has what the checks use; ``TASKS``, at the end, names the tasks.
"""

from __future__ import annotations

from kubelab.course.ctx import Ctx, Failed, bodies, failures, owner
from services.endpoints import ANY_PORT, by_service, endpoint_addresses


def ex3_selects(ctx: Ctx):
    hint = ctx.diagnose('web')
    if hint:
        raise Failed(hint)
    slices = by_service(ctx.client.list('EndpointSlice', ctx.ns)).get((ctx.ns, 'web'), [])
    if not endpoint_addresses(slices, ANY_PORT):
        raise Failed('the EndpointSlice of web lists no ready endpoint')


def ex3_dns(ctx: Ctx):
    client = ctx.client_pod()
    proc = ctx.exec(client, 'wget', '-qO-', 'http://web.lab-03.svc.cluster.local/hostname')
    if proc.returncode != 0:
        hint = ctx.diagnose('web') if ctx.get('Service', 'web') else None
        raise Failed(f'wget http://web.lab-03.svc.cluster.local/hostname from the client '
                     f'pod failed ({(proc.stderr.strip().splitlines() or ["?"])[-1]})'
                     + (f': {hint}' if hint else ''))


def ex3_balance(ctx: Ctx):
    svc = ctx.service('web')
    web = [p for p in ctx.pods({'app': 'web'}) if owner(p)]
    ready = {p['metadata']['name'] for p in web if ctx.ready(p)}
    if len(ready) < 3:
        raise Failed(f'the web Deployment has {len(ready)} ready pod(s): scale it to 3')
    got = ctx.http(ctx.client_pod(), svc['spec']['clusterIP'], 80, '/hostname', count=36)
    answered = set(bodies(got))
    if not answered:
        raise Failed(f'the ClusterIP {svc["spec"]["clusterIP"]}:80 answered nothing '
                     f'({dict(failures(got))}): {ctx.diagnose("web") or "see the Service"}')
    missing = ready - answered
    if missing:
        raise Failed(f'36 requests to {svc["spec"]["clusterIP"]}:80 never reached '
                     f'{", ".join(sorted(missing))}')


def ex3_readiness(ctx: Ctx):
    warm = ctx.get('Pod', 'web-warming')
    if warm is None or warm['metadata'].get('deletionTimestamp'):
        raise Failed('pod web-warming is gone: keep it (it is the pod that must be taken '
                     'out of rotation, not deleted); `kubelab lab start 3` brings it back')
    svc = ctx.service('web')
    got = ctx.http(ctx.client_pod(), svc['spec']['clusterIP'], 80, '/hostname', count=24)
    bad = failures(got)
    if bad:
        state = 'ready' if ctx.ready(warm) else 'not ready'
        hint = ctx.diagnose('web')
        if hint and ctx.ready(warm) and not any(
                c.get('readinessProbe') for c in warm['spec']['containers']):
            hint += ('; pod web-warming has no readinessProbe, so it counts as ready. A '
                     "running pod's containers cannot change: delete web-warming and "
                     'apply it again with the probe')
        if hint or not ctx.ready(warm):
            raise Failed(f'{sum(bad.values())} of 24 requests through the ClusterIP failed'
                         f': {hint or "see the EndpointSlice of web"}')
        raise Failed(f'{sum(bad.values())} of 24 requests through the ClusterIP failed '
                     f'({", ".join(f"{n} {e}" for e, n in bad.items())}): pod web-warming '
                     f'is {state} but serves nothing on 8080; give the pods a '
                     'readinessProbe (httpGet /healthz on 8080)')
    if (warm['metadata'].get('labels') or {}).get('app') != 'web':
        raise Failed('web-warming no longer carries app=web: keep the label and let '
                     'readiness take it out of rotation')
    if ctx.ready(warm):
        raise Failed('web-warming is ready although nothing listens on 8080')


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ('Service web selects the web pods (ready endpoints in its EndpointSlice)',
     ex3_selects),
    ('web.lab-03.svc.cluster.local answers from the client pod', ex3_dns),
    ('the ClusterIP balances over every ready pod of the Deployment', ex3_balance),
    ('a pod that does not serve is out of rotation (readiness)', ex3_readiness),
]
