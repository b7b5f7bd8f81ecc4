"""Exercise 2, Pod-to-pod networking across nodes: the checks of ``kubelab lab check 2``.

Routes and node bridges between nodes; a replaced pod gets a new IP (README.md beside this
file). kubelab/course/ctx.py has what the checks use; ``TASKS``, at the end, names the
tasks.
"""

from __future__ import annotations

from kubelab.course.ctx import Ctx, Failed, owner


def _server(ctx: Ctx) -> dict:
    pods = [p for p in ctx.pods({'app': 'server'})]
    if not pods:
        raise Failed('no pod labelled app=server in namespace lab-02')
    if len(pods) > 1:
        raise Failed(f'{len(pods)} pods are labelled app=server '
                     f'({", ".join(p["metadata"]["name"] for p in pods)}): keep one')
    if not ctx.ready(pods[0]):
        raise Failed(f'pod {pods[0]["metadata"]["name"]} is not ready')
    return pods[0]


def ex2_other_node(ctx: Ctx):
    server, client = _server(ctx), ctx.get('Pod', ctx.client_pod())
    s_node, c_node = server['spec']['nodeName'], client['spec']['nodeName']
    if s_node == c_node:
        raise Failed(f'{server["metadata"]["name"]} runs on {s_node}, the same node as the '
                     'client pod: place it on worker-2 (nodeSelector or nodeName)')
    node = next(n for n in ctx.client.list('Node') if n['metadata']['name'] == s_node)
    cidr = node['spec'].get('podCIDR', '')
    prefix = cidr.rsplit('.', 1)[0]
    if cidr and not server['status']['podIP'].startswith(prefix + '.'):
        raise Failed(f'{server["status"]["podIP"]} is not in {s_node}\'s podCIDR {cidr}')


def ex2_direct(ctx: Ctx):
    server, client = _server(ctx), ctx.client_pod()
    if server['spec']['nodeName'] == ctx.get('Pod', client)['spec']['nodeName']:
        raise Failed('server and client share a node: this is not yet pod-to-pod across '
                     'nodes')
    [r] = ctx.http(client, server['status']['podIP'], 8080, '/clientip')
    if not r['ok']:
        raise Failed(f'client -> {server["status"]["podIP"]}:8080: {r["error"]}')
    seen, mine = r['body'].split(':')[0], ctx.lab.pod_ip(client, ctx.ns)
    if seen != mine:
        raise Failed(f'the server saw {seen}, not the client\'s pod IP {mine}')


def ex2_restart(ctx: Ctx):
    server = _server(ctx)
    if owner(server) is None:
        raise Failed(f'pod {server["metadata"]["name"]} is a bare Pod: nothing recreates it '
                     'when it goes; run it from a Deployment named server')
    deps = [d for d in ctx.client.list('Deployment', ctx.ns)
            if d['spec']['selector'].get('matchLabels', {}).get('app') == 'server']
    if not deps:
        raise Failed('no Deployment selects app=server')
    old_ip, old_name = server['status']['podIP'], server['metadata']['name']
    ctx.lab.kubelab('rollout', 'restart', '-n', ctx.ns, 'deployment',
                    deps[0]['metadata']['name'])
    ctx.lab.kubelab('rollout', 'status', '-n', ctx.ns, 'deployment',
                    deps[0]['metadata']['name'], '--timeout', '60s')
    ctx.client.wait_ready(ctx.ns)
    new = _server(ctx)
    if new['metadata']['name'] == old_name:
        raise Failed('the rollout restart did not replace the server pod')
    [r] = ctx.http(ctx.client_pod(), new['status']['podIP'], 8080, '/hostname')
    if not r['ok'] or r['body'] != new['metadata']['name']:
        raise Failed(f'the new pod {new["metadata"]["name"]} at {new["status"]["podIP"]} '
                     f'does not answer: {r.get("error")}')
    if new['status']['podIP'] == old_ip:
        raise Failed(f'the new pod kept {old_ip}: expected a new address')


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ('the server pod runs on another node than the client, in its podCIDR',
     ex2_other_node),
    ('the client reaches the server by pod IP across nodes, no NAT', ex2_direct),
    ('a Deployment runs the server; a replaced pod gets a new IP', ex2_restart),
]
