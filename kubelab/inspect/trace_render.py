"""``kubelab trace`` in words: a traced connection (kubelab/inspect/trace.py) as the
learner reads it.

trace.py walks the switches and records what Open vSwitch did (the steps, the bucket
chosen, the translations, where the packet ended); this module only tells it, so the
walk stays about ofproto/trace's output and the words can change without touching it:

* ``path_words``: the way in in the seed's words (External Client -> NodeIP:NodePort ->
  EndpointSlice of ns/svc -> Pod IP -> Container), each front named by the address the
  DNAT came from: a ClusterIP, a NodePort, an external IP, the cloud's load balancer or
  a MetalLB address with the node that announces it;
* ``render``: the whole report, each leg bridge by bridge: every flow that matched with
  its table's name and owner, the Service group's choice (and the cloud edge's pick of
  a node, from the source port: trace_legs.py), every translation with its
  conntrack zone, the NetworkPolicy verdicts, then where the packet went (delivered,
  DROPPED, REJECTED) and whether the answer comes back from the address the client
  called; an L7 proxy's second leg follows (kubelab/inspect/trace_legs.py);
* ``policy_verdicts``: which policy and rule allowed the connection (the ``conj_id``
  flow it matched, as Antrea's Traceflow names the rule), or which policies isolate the
  pod that no rule let it reach.
"""

from __future__ import annotations

from kubelab.inspect.trace import Leg, Trace, Tracer, endpoint_of
from services import wiring

SERVICE_WORDS = {'DNAT': 'DNAT', 'SNAT': 'SNAT (masquerade)', 'un-DNAT': 'un-DNAT',
                 'un-SNAT': 'un-SNAT'}


def path_words(tracer: Tracer, trace: Trace) -> str:
    """The way in, in the seed's words: External Client -> NodeIP:NodePort -> ..."""
    src_ip = trace.src.split(':')[0]
    words = ['Pod' if src_ip in tracer.pods else 'External Client'
             if any(c.ip == src_ip for c in tracer.cluster.clients) else 'Node']
    nodes = {n.ip for n in tracer.cluster.nodes}
    for t in trace.forward.translations:
        if t.kind != 'DNAT':
            continue
        ip, _, port = t.before.partition(':')
        sp = next((sp for sp in tracer.state.service_ports
                   if (ip in (sp.vip, *sp.external_addresses) and str(sp.port) == port)
                   or (ip in nodes and str(sp.node_port) == port)), None)
        if sp is not None and sp.lb_ip == ip and tracer.cluster.bare_metal:
            words.append(f'LoadBalancer IP {t.before} on {tracer.announcer(ip) or "?"} '
                         f'(MetalLB L2)')
        elif sp is not None and sp.lb_ip == ip and t.bridge == wiring.EDGE_BRIDGE:
            words.append(f'Cloud LB {t.before}')
        elif sp is not None and sp.lb_ip == ip:
            words.append(f'LoadBalancer IP {t.before} (caught on the node)')
        elif sp is not None and ip in sp.external_ips:
            words.append(f'External IP {t.before}')
        elif sp is not None and ip in nodes:
            words.append(f'NodeIP:NodePort {t.before}')
        elif sp is not None:
            words.append(f'ClusterIP {t.before}')
        elif ip in nodes:
            words.append(f'NodeIP:hostPort {t.before}')
        if sp is not None and t.after.split(':')[0] in tracer.pods:
            words.append(f'EndpointSlice of {sp.namespace}/{sp.service} '
                         f'({len(sp.endpoints)} ready)')
    if trace.forward.outcome != 'delivered':
        return ' -> '.join(words + [trace.forward.outcome.upper()])
    final = trace.forward.final
    pod = tracer.pod_objects.get(final.get('nw_dst'))
    if pod is None:
        return ' -> '.join(words + [tracer.receiver(final.get('nw_dst', '?'))])
    words.append(f'Pod IP {endpoint_of(final, "dst")}')
    port = final.get('tp_dst')
    container = next((c['name'] for c in pod['spec'].get('containers', [])
                      for p in c.get('ports') or [] if str(p.get('containerPort')) == port),
                     None)
    words.append(f'Container {container}' if container else 'Container')
    return ' -> '.join(words)


def render(trace: Trace, tracer: Tracer | None = None) -> str:
    from kubelab.inspect.trace_legs import edge_pick_notes, render_proxy, service_notes
    lines = [f'{trace.proto.upper()} {trace.src} -> {trace.dst} ({trace.described})']
    if tracer is not None:
        lines.append(f'  {path_words(tracer, trace)}')
        lines += [f'  {note}' for note in service_notes(tracer, trace)]
        lines += [f'  {note}' for note in edge_pick_notes(tracer, trace)]
    lines.append('')
    lines += _render_leg(trace.forward)
    if trace.reply is not None:
        lines += ['', f'The answer: {endpoint_of(trace.forward.final, "dst")} -> '
                      f'{endpoint_of(trace.forward.final, "src")}', '']
        lines += _render_leg(trace.reply)
        if trace.reply.outcome == 'delivered':
            got = endpoint_of(trace.reply.final, 'src')
            same = got == trace.dst
            lines.append(f'  the answer comes from {got}: '
                         + ('the address the client called (conntrack un-NATed it)'
                            if same else f'NOT the address the client called ({trace.dst}):'
                            ' its kernel refuses the answer and the connection never '
                            'opens'))
    if trace.proxy is not None:
        lines += render_proxy(trace.proxy, trace.backend and render(trace.backend, tracer))
    return '\n'.join(lines)


POLICY_RULE_TABLES = {'EgressRule': 'egress', 'IngressRule': 'ingress'}
POLICY_DENY_TABLES = {'EgressDefaultRule': 'egress', 'IngressDefaultRule': 'ingress'}


def policy_verdicts(leg: Leg) -> list[str]:
    """What NetworkPolicy decided on the way, from the flows the packet took."""
    out = []
    for step in leg.steps:
        owner = step.owner or ''
        if step.table_name in POLICY_RULE_TABLES and owner and owner != 'networkpolicy':
            direction = POLICY_RULE_TABLES[step.table_name]
            why = owner[len('networkpolicy '):] if owner.startswith('networkpolicy ') \
                else owner
            out.append(f'NetworkPolicy on {step.bridge}: {direction} allowed by '
                       f'{"rule " if owner.startswith("networkpolicy ") else ""}{why}')
        elif step.table_name in POLICY_DENY_TABLES and ' isolates ' in owner:
            keys, _, rest = owner[len('networkpolicy '):].partition(' isolates ')
            pod = rest.rsplit(' for ', 1)[0]
            out.append(f'NetworkPolicy on {step.bridge}: {POLICY_DENY_TABLES[step.table_name]}'
                       f' DENIED: {pod} is isolated by {keys.replace(",", ", ")} and no '
                       f'rule of theirs admits this connection')
    return out


def _render_leg(leg: Leg) -> list[str]:
    out, bridge = [], None
    for step in leg.steps:
        if step.bridge != bridge:
            bridge = step.bridge
            out.append(f'  {bridge}')
        # ofproto/trace prints "drop" after a ct() that does not recirculate, though the
        # actions go on: only a last "drop" drops.
        # The group action shows again where the trace resumes at the chosen bucket.
        shown = [a for i, a in enumerate(step.actions) if not a.startswith('bucket ')
                 and not (a.startswith('group:') and a in step.actions[:i])]
        actions = '; '.join(a for i, a in enumerate(shown)
                            if a != 'drop' or i == len(shown) - 1)
        out.append(f'    {step.table_name:16} {step.owner or "-":40.40} '
                   f'{(step.match or "(any)")[:60]}')
        if actions:
            out.append(f'    {"":16} -> {actions if step.table < 0 else actions[:110]}')
    for bridge_name, targets, chosen in leg.choices:
        out.append(f'  {bridge_name}: the Service\'s group chooses among '
                   f'{", ".join(targets)}; followed: {chosen}')
    for t in leg.translations:
        zone = f' (conntrack zone {t.zone})' if t.zone is not None else ''
        out.append(f'  {SERVICE_WORDS.get(t.kind, t.kind)} on {t.bridge}{zone}: '
                   f'{t.before} -> {t.after}')
    out += [f'  {line}' for line in policy_verdicts(leg)]
    verdict = {'delivered': 'delivered to', 'dropped': 'DROPPED at',
               'rejected': 'REJECTED at', 'loop': 'stopped (a loop?) at'}[leg.outcome]
    out.append(f'  => {verdict} {leg.where}')
    return out
