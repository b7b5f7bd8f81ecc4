"""``kubelab flows`` as text: an annotated report (kubelab/inspect/flows.py) printed for
the learner.

flows.py joins the live switches with the pipeline and returns rows (what each flow
and group is, who owns it, whether it is current); this module only lays them out, so
the join stays testable on its rows and ``kubelab top`` (kubelab/inspect/top.py) reads
the same report without this text:

* per bridge a head line with its role, datapath id and how many flows and groups are
  not current (stale, missing, learned, not kubelab's);
* per table, in pipeline order with its stage, every flow with its counters, owner and
  status, and a note where the join has one;
* the groups: a select group's packets per bucket are the new connections sent to its
  endpoint (with the endpoint's pod and node, and the node masquerade a bucket's
  ct_mark asks for: KUBE-MARK-MASQ's part);
* last, NetworkPolicy's verdicts from the counters (kubelab/inspect/policy_counters.py).
"""

from __future__ import annotations

import re

from controller.pipeline.tables import CT_MARK_NODE_MASQ
from kubelab.inspect import policy_counters
from kubelab.inspect.flows import CURRENT, MISSING, Report
from kubelab.printers import format_table


def _cell(value) -> str:
    return '-' if value is None else str(value)


def _owner_cell(owner: str, status: str) -> str:
    return owner if status == CURRENT else f'{owner} [{status}]'


_CT_MARK_SET = re.compile(r'set_field:(0x[0-9a-f]+)(?:/0x[0-9a-f]+)?->ct_mark')


def _masq_note(actions: str | None) -> str:
    """What a bucket's ct_mark asks for: the node masquerade (KUBE-MARK-MASQ's part)."""
    found = _CT_MARK_SET.search(actions or '')
    if found and int(found.group(1), 16) & CT_MARK_NODE_MASQ:
        return '  + ct_mark masquerade (SNAT to the node)'
    return ''


def render_flows(report: Report) -> str:
    """``kubelab flows``: per bridge, per table in pipeline order, every flow with its
    counters and owner; then the groups with their buckets."""
    out = [f'note: {note}' for note in report.notes]
    for bridge in report.bridges:
        if out:
            out.append('')
        head = f'{bridge.name}  {bridge.role} (datapath {bridge.dpid:#x})'
        if bridge.error and not bridge.flows and not bridge.groups:
            out.append(f'{head}: error: {bridge.error}')
            continue
        live = sum(r.status != MISSING for r in bridge.flows)
        counts = f'{live} flow{"s" * (live != 1)}, {len(bridge.groups)} group' \
                 f'{"s" * (len(bridge.groups) != 1)}'
        odd = {}
        for item in bridge.flows + bridge.groups:
            if item.status != CURRENT:
                odd[item.status] = odd.get(item.status, 0) + 1
        extra = ''.join(f', {n} {status}' for status, n in sorted(odd.items()))
        if report.service:
            counts += f' of service {report.service}'
        out.append(f'{head}: {counts}{extra}')
        if bridge.error:
            out.append(f'  error: {bridge.error}')
        for tid, name, stage, rows in bridge.tables():
            title = f'table {tid} {name}' if tid is not None else f'table {name}'
            out.append(f'  {title}' + (f'  [{stage}]' if stage else ''))
            table = format_table(
                ['PRIORITY', 'PACKETS', 'BYTES', 'OWNER', 'FLOW'],
                [[str(r.priority), _cell(r.n_packets), _cell(r.n_bytes),
                  _owner_cell(r.owner, r.status),
                  (f'{r.match} ' if r.match else '') + f'actions={r.actions}'
                  + (f'  # {r.note}' if r.note else '')] for r in rows])
            out.extend('    ' + line for line in table.splitlines())
        if bridge.groups:
            out.append('  groups (select: a bucket\'s packets = new connections sent to '
                       'its endpoint)')
            lines = []
            for g in bridge.groups:
                entry = f'{g.entry_kind} {g.entry}'.strip() or ', '.join(g.used_by) or '-'
                lines.append([str(g.group_id), _cell(g.n_packets),
                              _owner_cell(g.owner, g.status),
                              entry + (f'  # {g.note}' if g.note else '')])
                for b in g.buckets:
                    where = ' '.join(x for x in (
                        b.target, f'({b.node})' if b.node and b.target and
                        not b.target.startswith('node ') else None) if x)
                    lines.append(['', _cell(b.n_packets), f'  bucket {b.index}',
                                  f'-> {b.endpoint or b.actions or "?"}'
                                  + (f'  {where}' if where else '') + _masq_note(b.actions)])
            table = format_table(['GROUP', 'PACKETS', 'OWNER', 'ENTRY / ENDPOINT'], lines)
            out.extend('    ' + line for line in table.splitlines())
    verdicts = policy_counters.table(report)
    if verdicts:
        out += ['', verdicts]
    return '\n'.join(line.rstrip() for line in out)
