"""NetworkPolicy verdicts counted from the switches' flow counters.

Only a connection's first packets meet the policy tables (established ones and replies
never do), so the counters of their flows count new connections (and the
retransmissions of a refused one, which are judged again):

* allowed: a rule's ``conj_id`` flow (or its plain flow, a rule with only its pods left)
  in EgressRule or IngressRule: connections that rule admitted, on the node that judged
  them (a connection between two isolated pods passes an egress and an ingress rule,
  each counts it);
* dropped: the per-pod flows of EgressDefaultRule and IngressDefaultRule, owned by the
  policies that isolate the pod: connections no rule admitted. A pod isolated by
  several policies counts its drops for each of them.

``counters`` reads them out of a ``kubelab flows`` report, keyed so that ``kubelab top``
can turn two reads into rates; ``table`` sums them per policy and rule for ``kubelab
flows``.
"""

from __future__ import annotations

from controller import pipeline
from controller.pipeline.network_policy import policy_keys
from controller.pipeline.tables import PRIORITY_HIGH
from kubelab.printers import format_table

RULE_TABLES = {pipeline.T['EgressRule'], pipeline.T['IngressRule']}
ISOLATION_TABLES = {pipeline.T['EgressDefaultRule'], pipeline.T['IngressDefaultRule']}
ISOLATION = '(no rule: dropped)'


def counters(report) -> dict:
    """('policy', policy key, rule or ISOLATION, (bridge, cookie)) -> packets."""
    out = {}
    for bridge in report.bridges:
        if bridge.kind != 'node':
            continue
        for row in bridge.flows:
            if row.n_packets is None or row.spec is None:
                continue
            for owner in row.owners:
                if row.table_id in RULE_TABLES and (
                        dict(row.spec.match).get('conj_id') or row.spec.priority ==
                        PRIORITY_HIGH):
                    words = owner.split()
                    if len(words) == 3 and words[0] == 'networkpolicy':
                        out[('policy', words[1], words[2],
                             (bridge.name, row.cookie))] = row.n_packets
                elif row.table_id in ISOLATION_TABLES and ' isolates ' in owner:
                    for key in policy_keys(owner):
                        out[('policy', key, ISOLATION, (bridge.name, row.cookie))] = \
                            row.n_packets
    return out


def summed(values: dict) -> dict:
    """(policy, rule) -> total, from ``counters``-shaped keys (or their deltas)."""
    out = {}
    for (_, key, rule, _where), n in values.items():
        out[(key, rule)] = out.get((key, rule), 0) + n
    return out


def table(report, namespace: str | None = None) -> str:
    """Per policy: the new connections each rule allowed, those it isolated pods
    against dropped; '' without NetworkPolicy flows."""
    totals = summed(counters(report))
    if not totals:
        return ''
    rows = [[key, rule, str(n)] for (key, rule), n in sorted(totals.items())
            if namespace is None or key.startswith(namespace + '/')]
    if not rows:
        return ''
    return ('NetworkPolicy verdicts (first packets of new connections, on the node that '
            'judged them)\n' + '\n'.join(
                '  ' + line for line in format_table(['POLICY', 'RULE', 'PACKETS'],
                                                     rows).splitlines()))
