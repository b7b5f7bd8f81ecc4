"""Exercise 10, NetworkPolicy: the checks of ``kubelab lab check 10``.

Lock a namespace down step by step: a default deny, the frontend in, DNS out, one
address from outside (README.md beside this file). The checks send real traffic; when
it does not do what the task asks, they read the policies with the lab's own model of
the API (services/networkpolicy.py) to say which policy isolates whom and which rule
would have to admit the connection. kubelab/course/ctx.py has what the checks use;
``TASKS``, at the end, names the tasks.
"""

from __future__ import annotations

import sys

from kubelab.course.ctx import Ctx, Failed
from services import networkpolicy as np
from services.selectors import matches_label_selector

DNS_IP, DNS_NAME = '10.96.0.10', 'web.lab-10.svc.cluster.local'
NODE_PORT = 31000


# ---------------------------------------------------------------- reading the policies
def _policies(ctx: Ctx) -> list:
    return [np.from_object(p) for p in ctx.client.list('NetworkPolicy', ctx.ns)]


def _member(pod: dict) -> np.Member:
    return np.member(pod) or np.Member(pod['metadata']['namespace'],
                                       pod['metadata']['name'], '')


def _admitting(ctx: Ctx, direction: str, subject: dict, other, port: int,
               proto: str = 'TCP') -> tuple[list, list]:
    """(the policies isolating ``subject`` in ``direction``, the rules of theirs that
    admit ``other`` (a pod or an address) on ``port``)."""
    namespaces = {n['metadata']['name']: n['metadata'].get('labels') or {}
                  for n in ctx.client.list('Namespace')}
    me = _member(subject)
    isolating = np.isolating(_policies(ctx), me, direction)
    rules = []
    for policy in isolating:
        for i, rule in enumerate(policy.rules(direction)):
            if rule.peers:
                if isinstance(other, str):
                    ok = any(block.contains(other) for block in np.ip_blocks(rule))
                else:
                    ok = any(np.peer_selects(peer, policy.namespace, _member(other),
                                             namespaces) for peer in rule.peers)
                    ok = ok or any(block.contains(_member(other).ip)
                                   for block in np.ip_blocks(rule))
                if not ok:
                    continue
            if rule.ports and not any(p.protocol == proto and (
                    p.port is None or p.port == port or (
                        isinstance(p.port, int) and p.end_port and
                        p.port <= port <= p.end_port)) for p in rule.ports):
                continue
            rules.append(f'{policy.name} {direction.lower()}[{i}]')
    return isolating, rules


def _why_blocked(ctx: Ctx, src, dst: dict, port: int, proto: str = 'TCP') -> str:
    src_name = src if isinstance(src, str) else src['metadata']['name']
    parts = []
    if not isinstance(src, str):
        isolating, rules = _admitting(ctx, np.EGRESS, src, dst, port, proto)
        if isolating and not rules:
            parts.append(f'{src_name} is isolated for egress (by '
                         f'{", ".join(p.name for p in isolating)}) and no egress rule '
                         f'admits {dst["metadata"]["name"]}:{port}/{proto}')
    isolating, rules = _admitting(ctx, np.INGRESS, dst, src, port, proto)
    if isolating and not rules:
        parts.append(f'{dst["metadata"]["name"]} is isolated for ingress (by '
                     f'{", ".join(p.name for p in isolating)}) and no ingress rule admits '
                     f'{src_name} on {port}/{proto}')
    return '; '.join(parts) or 'the policies look right: give the switches a moment ' \
                               '(`kubelab wait`) and check again'


def _web(ctx: Ctx) -> dict:
    pods = [p for p in ctx.pods({'app': 'web'}) if ctx.ready(p)]
    if not pods:
        raise Failed('web has no ready pod: `kubelab lab start 10` puts the app back')
    return pods[0]


def _pod(ctx: Ctx, name: str) -> dict:
    ctx.client_pod(name)
    return ctx.get('Pod', name)


# ---------------------------------------------------------------- the tasks
def ex10_default_deny(ctx: Ctx):
    web, client = _web(ctx), _pod(ctx, 'client')
    got = ctx.tcp('client', web['status']['podIP'], 8080)
    if got['ok']:
        isolating, rules = _admitting(ctx, np.INGRESS, web, client, 8080)
        raise Failed('the client pod reached web (8080): ' + (
            f'a rule admits it ({", ".join(rules)})' if isolating else
            'no NetworkPolicy isolates web for ingress; start with one that selects '
            'every pod of lab-10 (podSelector: {}) and has no rules'))
    node_ip = ctx.nodes[client['spec']['nodeName']]
    got = ctx.tcp('client', node_ip, 10256)
    if got['ok']:
        raise Failed(f'the client pod opened a connection to its node ({node_ip}:10256, '
                     'kube-proxy\'s healthz): it is not isolated for egress; the default '
                     'deny needs policyTypes: [Ingress, Egress]')
    if got['error'] != 'timeout':
        raise Failed(f'the client pod\'s connection to its node got {got["error"]}: a '
                     'NetworkPolicy drops, it does not refuse')


def ex10_frontend(ctx: Ctx):
    web, frontend = _web(ctx), _pod(ctx, 'frontend')
    vip = ctx.service('web')['spec']['clusterIP']
    [got] = ctx.http('frontend', vip, 80, '/hostname')
    if not got['ok']:
        raise Failed(f'frontend cannot reach web through its ClusterIP {vip}:80 '
                     f'({got.get("error")}): {_why_blocked(ctx, frontend, web, 8080)} (a '
                     'policy sees the pod and its port 8080, after the Service\'s DNAT)')
    if ctx.tcp('client', vip, 80)['ok']:
        raise Failed('the client pod reaches web too: admit the frontend pods only '
                     '(podSelector role=frontend)')


def ex10_dns(ctx: Ctx):
    frontend = _pod(ctx, 'frontend')
    if not np.isolating(_policies(ctx), _member(frontend), np.EGRESS):
        raise Failed('frontend is not isolated for egress yet (the default deny, task 1): '
                     'this task is DNS under it')
    proc = ctx.lab.run_in('frontend', [
        sys.executable, '-c', 'import dns.resolver, sys; r = dns.resolver.Resolver('
        f'configure=False); r.nameservers = ["{DNS_IP}"]; r.lifetime = 1.5; '
        f'print(r.resolve(sys.argv[1], "A")[0])', DNS_NAME], namespace=ctx.ns, timeout=20)
    if proc.returncode != 0:
        dns_pods = [p for p in ctx.client.list('Pod', 'kube-system')
                    if (p['metadata'].get('labels') or {}).get('k8s-app') == 'kube-dns']
        why = _why_blocked(ctx, frontend, dns_pods[0], 53, 'UDP') if dns_pods else ''
        raise Failed(f'frontend asked the cluster DNS ({DNS_IP}:53/UDP) for {DNS_NAME} '
                     f'and got no answer: {why}{_selectors_hint(ctx)}')
    vip = ctx.service('web')['spec']['clusterIP']
    if proc.stdout.strip() != vip:
        raise Failed(f'{DNS_NAME} resolved to {proc.stdout.strip()}, not {vip}')


def _selectors_hint(ctx: Ctx) -> str:
    """A namespaceSelector that matches no namespace: the classic DNS mistake."""
    namespaces = [n['metadata'].get('labels') or {} for n in ctx.client.list('Namespace')]
    for policy in _policies(ctx):
        for rule in policy.egress:
            for peer in rule.peers:
                sel = peer.namespace_selector
                if sel and not any(matches_label_selector(sel, labels)
                                   for labels in namespaces):
                    shown = ','.join(f'{k}={v}' for k, v in
                                     sorted((sel.get('matchLabels') or {}).items()))
                    return (f'; the namespaceSelector {shown} of {policy.name} matches no '
                            f'namespace (a namespace carries kubernetes.io/metadata.name='
                            f'<its name>; see `kubelab get namespace kube-system -o yaml`)')
    return ''


def ex10_outside(ctx: Ctx):
    web = _web(ctx)
    node = web['spec']['nodeName']
    [got] = ctx.http('host/client-1', ctx.nodes[node], NODE_PORT, '/clientip')
    if not got['ok']:
        raise Failed(f'client-1 (203.0.113.10) cannot reach web-public on {node} '
                     f'({ctx.nodes[node]}:{NODE_PORT}): '
                     f'{_why_blocked(ctx, "203.0.113.10", web, 8080)}')
    if not got['body'].startswith('203.0.113.10:'):
        raise Failed(f'web saw {got["body"]}, not client-1: keep web-public\'s '
                     'externalTrafficPolicy Local, which keeps the client\'s address')
    [other] = ctx.http('host/client-2', ctx.nodes[node], NODE_PORT, '/clientip')
    if other['ok']:
        raise Failed('client-2 (203.0.113.11) reaches web-public too: admit client-1\'s '
                     'address only (an ipBlock, with except if it is a network)')


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ('default deny: no pod of lab-10 takes or opens a connection no rule admits',
     ex10_default_deny),
    ('the frontend (and only it) reaches web through its ClusterIP', ex10_frontend),
    ('the frontend resolves web by name under the default deny (DNS egress)', ex10_dns),
    ('client-1, and no other external host, reaches web through web-public',
     ex10_outside),
]
