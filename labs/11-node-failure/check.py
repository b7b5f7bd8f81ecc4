"""Exercise 11, when a node dies: the checks of ``kubelab lab check 11``.

Node lifecycle: heartbeats, NotReady, endpoints leaving, eviction and replacement
(README.md beside this file). kubelab/course/ctx.py has what the checks use; ``TASKS``,
at the end, names the tasks. The last check fails a worker itself, for the node
monitor's grace period plus the pods' tolerationSeconds, and restores it.
"""

from __future__ import annotations

from kubelab.course.ctx import Ctx, Failed, failures, wait

UNREACHABLE = 'node.kubernetes.io/unreachable'


def _web(ctx: Ctx) -> list[dict]:
    pods = [p for p in ctx.pods({'app': 'web'}) if ctx.ready(p)]
    if not pods:
        raise Failed('no ready pod of web: `kubelab lab start 11` puts it back')
    return pods


def unreachable_seconds(pod: dict) -> float | None:
    """How long the pod stays on an unreachable node (None: for ever)."""
    seconds = [t.get('tolerationSeconds') for t in pod['spec'].get('tolerations') or []
               if t.get('effect') in (None, '', 'NoExecute') and (
                   t.get('key') == UNREACHABLE or (not t.get('key') and
                                                   t.get('operator') == 'Exists'))]
    if not seconds:
        return 0.0
    if None in seconds:
        return None
    return min(seconds)


def ex11_replicas(ctx: Ctx):
    pods = _web(ctx)
    nodes = {p['spec']['nodeName'] for p in pods}
    if len(pods) < 3:
        raise Failed(f'web has {len(pods)} ready replicas: with one node down, more of '
                     'them are needed for the rest to carry the load; scale it to 3')
    if len(nodes) < 2:
        raise Failed(f'every ready pod of web is on {nodes.pop()}: one node failure takes '
                     'them all')


def ex11_tolerations(ctx: Ctx):
    pod = _web(ctx)[0]
    seconds = unreachable_seconds(pod)
    if seconds is None or seconds > 10:
        shown = 'for ever' if seconds is None else f'for {seconds:g} s'
        raise Failed(f'web\'s pods stay on an unreachable node {shown} (the default the '
                     f'DefaultTolerationSeconds admission gives is 300 s): give the pod '
                     f'template a toleration of {UNREACHABLE} (effect NoExecute) with '
                     'tolerationSeconds 10; a node that stops answering is '
                     'unreachable, not not-ready')


def ex11_node_failure(ctx: Ctx):
    pods = _web(ctx)
    seconds = unreachable_seconds(pods[0])
    if len(pods) < 3 or seconds is None or seconds > 10:
        raise Failed('skipped until web has 3 ready replicas whose pods leave an '
                     'unreachable node within 10 s (the tasks above)')
    info = ctx.client.lab()
    grace = info.get('nodeMonitorGracePeriod', 40)
    workers = [n['name'] for n in info['nodes'] if n['role'] == 'worker']
    victim = max(workers, key=lambda n: sum(p['spec']['nodeName'] == n for p in pods))
    vip = ctx.service('web')['spec']['clusterIP']
    client = ctx.client_pod()
    ctx.client.node_network(victim, False)
    try:
        def whole():
            elsewhere = [p for p in ctx.pods({'app': 'web'})
                         if ctx.ready(p) and p['spec'].get('nodeName') != victim]
            return len(elsewhere) >= 3
        if not wait(whole, grace + seconds + 30, 1):
            raise Failed(f'{grace + seconds + 30:g} s after {victim} failed, web does not '
                         f'have 3 ready pods on the other nodes: see `kubelab get pods -n '
                         f'{ctx.ns} -o wide` and `kubelab get events -n {ctx.ns}`')
        ctx.client.wait_dataplane()
        got = ctx.http(client, vip, 80, count=10)
        bad = failures(got)
        if bad:
            raise Failed(f'with {victim} failed and web whole again, {sum(bad.values())} '
                         f'of 10 requests to {vip} failed ({dict(bad)})')
    finally:
        ctx.client.node_network(victim, True)
        wait(lambda: all(c['status'] == 'True' for c in ctx.client.get(
            'Node', None, victim)['status']['conditions'] if c['type'] == 'Ready'), 30, 1)


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ('web has 3 ready replicas on two nodes or more', ex11_replicas),
    ("web's pods leave an unreachable node within 10 s", ex11_tolerations),
    ('with a worker failed, web is whole again on the other nodes and answers',
     ex11_node_failure),
]
