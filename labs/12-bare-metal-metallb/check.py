"""Exercise 12, bare metal with MetalLB: the checks of ``kubelab lab check 12``.

A LoadBalancer Service without a cloud: MetalLB's pools, one node answering ARP, the
client's address (README.md beside this file). It needs a bare-metal lab
(``kubelab up --cloud none``). kubelab/course/ctx.py has what the checks use; ``TASKS``,
at the end, names the tasks.
"""

from __future__ import annotations

import ipaddress
import re

from kubelab.course.ctx import Ctx, Failed, failures, wait
from services import wiring

POOL_NOTE = 'metallb.io/ip-allocated-from-pool'


def _address(ctx: Ctx) -> tuple[dict, str]:
    svc = ctx.service('web')
    if svc['spec'].get('type') != 'LoadBalancer':
        raise Failed('Service web is no longer type LoadBalancer')
    ip = wait(lambda: ctx.lb_address(ctx.service('web')), 5)
    if not ip:
        why = [e['message'] for e in ctx.client.list('Event', ctx.ns)
               if e['involvedObject'].get('name') == 'web'
               and e['reason'] == 'AllocationFailed']
        raise Failed('web is <pending>: MetalLB has no address to give it'
                     + (f' ({why[-1]})' if why else '') + ': create an IPAddressPool in '
                     'namespace metallb-system with addresses in the nodes\' subnet '
                     '10.128.0.0/24 that no node uses (e.g. 10.128.0.230-10.128.0.239)')
    return ctx.service('web'), ip


def ex12_address(ctx: Ctx):
    svc, ip = _address(ctx)
    pool = (svc['metadata'].get('annotations') or {}).get(POOL_NOTE)
    nodes = ipaddress.ip_network('10.128.0.0/24')
    if ipaddress.ip_address(ip) not in nodes:
        raise Failed(f'web has {ip} (pool {pool}), outside the nodes\' subnet {nodes}: in '
                     'layer 2 the router finds an address by ARP on the nodes\' LAN, so '
                     'it must be one of that LAN\'s')


def ex12_one_owner(ctx: Ctx):
    _, ip = _address(ctx)
    out = ctx.lab.run_in('host/router', ['arping', '-c', '3', '-w', '4', '-I',
                                         'kl-rt-eth1', ip]).stdout
    macs = {m.lower() for m in re.findall(r'\[([0-9A-Fa-f:]{17})\]', out)}
    owners = {wiring.router_mac(node_ip): name for name, node_ip in ctx.nodes.items()}
    if not macs:
        raise Failed(f'web has {ip}, but no node answers ARP for it: an address is '
                     'announced only when an L2Advertisement (in metallb-system) selects '
                     'its pool, by name in ipAddressPools or by label')
    if len(macs) > 1:
        raise Failed(f'{len(macs)} nodes answer ARP for {ip}: '
                     + ', '.join(owners.get(m, m) for m in sorted(macs)))
    got = ctx.http('host/client-1', ip, 80, count=6)
    bad = failures(got)
    if bad:
        raise Failed(f'{owners.get(macs.pop(), "a node")} answers ARP for {ip}, but '
                     f'{sum(bad.values())} of 6 requests from client-1 failed '
                     f'({dict(bad)})')


def ex12_client_ip(ctx: Ctx):
    svc, ip = _address(ctx)
    got = ctx.http('host/client-1', ip, 80, '/clientip', count=6)
    seen = {r['body'].split(':')[0] for r in got if r['ok']}
    if not seen:
        raise Failed(f'client-1 -> {ip}:80: {dict(failures(got))}')
    if seen != {ctx.hosts['client-1']}:
        names = ', '.join(ctx.node_of_ip.get(s, s) for s in sorted(seen))
        raise Failed(f'the pods saw {", ".join(sorted(seen))} ({names}), not client-1\'s '
                     f'{ctx.hosts["client-1"]}: the announcing node masquerades with '
                     'externalTrafficPolicy Cluster; with Local it keeps the client\'s '
                     'address, and only a node with a ready pod of web announces it')


#: The tasks in the order ``kubelab lab check`` runs them: (title, check).
TASKS = [
    ("web has an address from a MetalLB pool in the nodes' subnet", ex12_address),
    ('exactly one node answers ARP for it, and client-1 reaches web through the router',
     ex12_one_owner),
    ("web's pods see client-1's own address", ex12_client_ip),
]
