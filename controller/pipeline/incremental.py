"""The incremental path: when only a few Service ports changed, what to send a switch is
worked out from those Service ports alone, not from every flow of the switch.

``pipeline.desired`` plus ``reconcile.changes`` costs a pass over every Service port of a
bridge (about 0.1 s a node bridge at 10,000 Services even with the per-Service memo).
``full(state, dpid)`` does that once and keeps a ``Plan`` of what it gave the switch: per
Service port (by identity: ``StateBuilder`` keeps the very object of an unchanged one)
its part of a node bridge (memo.py's flows and groups), how many parts want each flow
cookie, every group id given. ``changes(plan, old, new, installed)`` then answers a new
state in which nothing but Service ports changed by computing the parts of the added
Service ports only and diffing them against the parts of the removed ones (a changed
Service port is one removed and one added): a flow whose count drops to zero goes, one
that rises from zero comes, a removed group goes unless an added part has it again.

It answers None (the caller then computes everything: ``full``) wherever a Service port
reaches beyond its own part, so that the answer is always what ``full`` would send:
anything but Service ports changed (pods, policies, nodes, health, namespaces, MetalLB's
announcements); more than ``MAX_CHANGED`` Service ports changed (a batch of 1,000
Services among 10,000 is answered here in about half the time of a full pass, which
passes over all of them; any number of Service ports whose endpoints alone changed, as
when a pod behind 10,000 Services becomes ready, is answered with their groups' new
buckets: endpoint_moves.py); a changed Service port is
sticky (ConntrackState's flow depends on whether any is), has a load balancer address or
external IPs (the cloud edge and the external switch read those, and
``loadBalancerSourceRanges`` adds ServiceLB flows outside the part); its ClusterIP is
shared with another Service (ServiceLB keeps one reject flow per ClusterIP); or its group
ids depend on the order of the Services (a collision of two group keys' hashes is
resolved in Service order: ``shared.group_id`` records every id such a probe touched,
and a changed Service port must touch none of them, nor need a probe itself).
tests/unit/test_pipeline_incremental.py compares it with ``full`` on random change
sequences.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from controller.flows import SwitchConfig
from controller.pipeline import endpoint_moves, node_switch
from controller.pipeline.service_fronts import bind_fronts, front_templates, group_ids
from controller.pipeline.tables import check_pipeline
from controller.reconcile import Changes, Installed
from controller.state import same_shape
from services import wiring

MAX_CHANGED = 4096      # more changed Service ports than this: the full pass


@dataclass
class Plan:
    """What ``full`` (then ``changes``) gave one switch. A node bridge's index (parts,
    refs, vips) is built on first use (``index``): a full pass that no incremental one
    follows (a batch of Services) pays nothing for it."""
    kind: str                                   # the switch's role
    node: object = None                         # a node bridge's node
    parts: dict = field(default_factory=dict)   # id(sp) -> (sp, its part)
    refs: Counter = field(default_factory=Counter)   # flow cookie -> parts wanting it
    taken: set = field(default_factory=set)     # every group id of the parts
    given: dict = field(default_factory=dict)   # shared group key -> its ids
    group_refs: Counter = field(default_factory=Counter)    # group id -> parts using it
    spans: frozenset = frozenset()              # the ids probes touched
    vips: dict = field(default_factory=dict)    # ClusterIP -> Counter of its Services
    pending: tuple | None = None                # (ports, parts, flows, next) to index
    outside: tuple = ()         # the cookies of the flows outside the parts, once each
    checked: set = field(default_factory=set)   # ids of the parts' flows (full pass)
    moved: list = field(default_factory=list)   # moves whose parts are still to re-key

    def index(self, budget: int | None = None) -> bool:
        """Count the parts and flows of the full pass in (once); with ``budget``, at
        most that many parts now (the caller goes on later). True once done. First
        the parts of the last moves are re-keyed (``settle``)."""
        self.settle()
        if self.pending is None:
            return True
        ports, parts, flows, start = self.pending
        end = len(ports) if budget is None else min(len(ports), start + budget)
        for i in range(start, end):
            _take(self, ports[i], parts[i], +1)
        if end < len(ports):
            self.pending = (ports, parts, flows, end)
            return False
        self.pending = None
        self.recount(tuple(f.cookie for f in flows if id(f) not in self.checked))
        return True

    def recount(self, outside: tuple) -> set:
        """Count ``outside`` (the cookies of the flows outside the parts, once each: a
        part's flow equal to one of them stays while either wants it) in place of the
        ones counted until now; the cookies no flow wants any more."""
        was = self.outside
        self.refs.subtract(was)
        self.outside = outside
        self.refs.update(outside)
        gone = {cookie for cookie in was if self.refs[cookie] <= 0}
        for cookie in gone:
            del self.refs[cookie]
        return gone

    def settle(self) -> None:
        """Key the parts of the Service ports that moved (``_node_changes``: their
        endpoints alone changed) by the new Service ports, each with its new groups.
        Left until the switches were given the moves' new buckets: 10,000 of them (a
        pod behind 10,000 Services) take 10 ms a node bridge, which the switch after it
        need not wait for."""
        parts, pop = self.parts, self.parts.pop
        for moves in self.moved:
            last = (None, None, None)       # the last (groups, endpoints, new groups)
            for was, sp in moves:
                part = pop(id(was))[1]
                if part['groups']:
                    if part['groups'] is not last[0] or sp.endpoints is not last[1]:
                        last = (part['groups'], sp.endpoints,
                                endpoint_moves.new_groups(part['groups'], sp.endpoints))
                    part = dict(part, groups=last[2])
                parts[id(sp)] = (sp, part)
        self.moved = []

    def carry(self, previous: 'Plan | None') -> None:
        """Take ``previous``'s index when this full pass has the very parts it had
        (a pod's address changed, not a Service port: the memo gave every part as it
        was), so that the incremental step that follows (the pod becoming ready)
        does not wait for an index of 10,000 parts."""
        ports, parts, flows, _ = self.pending
        if previous is not None:
            previous.settle()
        if previous is None or previous.pending is not None or \
                previous.kind != 'node' or previous.node is not self.node or \
                len(previous.parts) != len(parts):
            return
        get = previous.parts.get
        if not all((hit := get(id(sp))) is not None and hit[1] is part
                   for sp, part in zip(ports, parts)):
            return
        self.parts, self.group_refs, self.vips = previous.parts, previous.group_refs, \
            previous.vips
        self.refs, self.outside, self.pending = previous.refs, previous.outside, None
        self.recount(tuple(f.cookie for f in flows if id(f) not in self.checked))


def full(state, dpid: int, previous: Plan | None = None) -> tuple[SwitchConfig, Plan]:
    """``pipeline.desired(state, dpid)``, and the plan of it for ``changes``
    (``previous``: the switch's plan until now, whose index it may take)."""
    from controller import pipeline
    role = wiring.switch_role(state.cluster, dpid)
    if role is None or role.kind != 'node':
        return pipeline.desired(state, dpid), Plan(kind=role.kind if role else '')
    ctx = node_switch.NodeBridge(state, role.node)
    config = node_switch.node_bridge_context(ctx)
    plan = Plan(kind='node', node=role.node, taken=ctx.groups_taken,
                given=ctx.groups_given, spans=frozenset(ctx.group_spans),
                pending=(state.proxied_ports, ctx.service_parts, config.flows, 0),
                checked=config.checked)
    plan.carry(previous)
    config.flows = list({f.cookie: f for f in config.flows}.values())
    check_pipeline(config)
    return config, plan


def _part_flows(part: dict) -> list:
    return [f for stage in node_switch.PART_STAGES for f in part[stage]] + [part['vip'][1]]


def _take(plan: Plan, sp, part: dict, sign: int) -> None:
    """Count ``sp``'s part in (+1) or out (-1) of ``plan``."""
    if sign > 0:
        plan.parts[id(sp)] = (sp, part)
    else:
        del plan.parts[id(sp)]
    for f in _part_flows(part):
        plan.refs[f.cookie] += sign
        if not plan.refs[f.cookie]:
            del plan.refs[f.cookie]
    for g in part['groups']:            # once each: a part builds a shared group once
        plan.group_refs[g.group_id] += sign
        if not plan.group_refs[g.group_id]:
            del plan.group_refs[g.group_id]
    owners = plan.vips.setdefault(sp.vip, Counter())
    owners[(sp.namespace, sp.service)] += sign
    if not owners[(sp.namespace, sp.service)]:
        del owners[(sp.namespace, sp.service)]
        if not owners:
            del plan.vips[sp.vip]


_LAST_DELTA: list = [None, None, None]       # old, new, their service_delta
_LAST_MOVES: list = [None, None, None]       # a service_delta, its _moves, and
                                             # whether they may go incrementally


def service_delta(old, new) -> tuple[list, list] | None:
    """(removed, added) Service ports from ``old`` to ``new``, by identity; None when
    anything else the pipeline reads differs. Remembered for the last pair of states
    (every switch asks for the same)."""
    if _LAST_DELTA[0] is old and _LAST_DELTA[1] is new:
        return _LAST_DELTA[2]
    delta = _service_delta(old, new)
    _LAST_DELTA[:] = [old, new, delta]
    return delta


def _alike(old, new, pods: bool = True) -> bool:
    """True when ``old`` and ``new`` hold the same of everything the pipeline reads but
    their Service ports (and, unless ``pods``, their pods)."""
    if old is None or old.cluster is not new.cluster or (
            old.not_ready, old.lb_health, old.namespaces, old.announced) != (
            new.not_ready, new.lb_health, new.namespaces, new.announced):
        return False
    pairs = ((old.pods, new.pods), (old.policies, new.policies)) if pods else \
        ((old.policies, new.policies),)
    return all(len(xs) == len(ys) and all(x is y or x == y for x, y in zip(xs, ys))
               for xs, ys in pairs)


def _service_delta(old, new) -> tuple[list, list] | None:
    if not _alike(old, new):
        return None
    pairs = _builder_moves(old, new)
    if pairs is not None:
        return [x for x, _ in pairs], [y for _, y in pairs]
    xs, ys = old.service_ports, new.service_ports
    if len(xs) == len(ys):          # (both in key order, keys unique) the common case:
        pairs = [(x, y) for x, y in zip(xs, ys) if x is not y]    # the same Services
        if all(x.key == y.key for x, y in pairs):
            return [x for x, _ in pairs], [y for _, y in pairs]
    before = {id(sp): sp for sp in xs}
    after = {id(sp): sp for sp in ys}
    return ([sp for key, sp in before.items() if key not in after],
            [sp for key, sp in after.items() if key not in before])


def _sharing_kept(old, new, moves: list, removed: list, added: list) -> bool:
    """True when every Service port that did not change shares its selection's groups
    (``ClusterState.shares``) in ``new`` as it did in ``old``: only then is what
    changed all there is to send. A selection's shared endpoints are those of its first
    Service port; when they changed, a Service port of it that did not change shares
    them no more (or now does)."""
    touched = {sp.selects for sp in removed + added + [sp for _, sp in moves]} - {None}
    if not touched:
        return True
    fresh = {id(sp) for sp in added} | {id(sp) for _, sp in moves}
    for selects in touched:
        before = old.selections.get(selects, ((), ()))[0]
        after = new.selections.get(selects, ((), ()))[0]
        if before is after or before == after:
            continue
        for sp in new.selections.get(selects, ((), ()))[1]:
            if id(sp) not in fresh and (sp.endpoints == before) != (sp.endpoints == after):
                return False
    return True


def _outside(plan: Plan | None, old, new, installed: Installed) -> Changes | None:
    """What changes on a node bridge when its Service ports stayed the very same
    objects and something else changed (a pod's address, a policy, a node's health):
    the flows outside the Service parts, computed afresh and diffed against those the
    plan counted; the parts, their groups and the meter stay. None where the full pass
    must answer (another kind of switch, a changed Service port)."""
    if plan is None or plan.kind != 'node' or old is None or old.cluster is not new.cluster \
            or len(old.service_ports) != len(new.service_ports) or not all(
                a is b for a, b in zip(old.service_ports, new.service_ports)):
        return None
    plan.index()
    ctx = node_switch.NodeBridge(new, plan.node)
    ctx.__dict__['service_parts'] = ()          # the stages without the parts
    config = node_switch.node_bridge_context(ctx)
    check_pipeline(config)
    wanted = {f.cookie: f for f in config.flows}
    gone = plan.recount(tuple(f.cookie for f in config.flows))
    ctx.remember_all(_parts_of(plan, new.proxied_ports), plan.taken,
                     plan.spans, plan.given)
    return Changes(flows_to_add=tuple(f for cookie, f in wanted.items()
                                      if cookie not in installed.flows),
                   flows_to_delete=tuple(sorted(c for c in gone if c in installed.flows)))


_LAST_MIDWAY: list = [None, None, None]      # old, new, their _midway


def _midway(old, new):
    """``new`` with ``old``'s pods, when the two differ in their pods and Service ports
    alone (else None); one object for every switch asking."""
    if _LAST_MIDWAY[0] is old and _LAST_MIDWAY[1] is new:
        return _LAST_MIDWAY[2]
    mid = replace(new, pods=old.pods) if _alike(old, new, pods=False) else None
    _LAST_MIDWAY[:] = [old, new, mid]
    return mid


@dataclass
class _Held:
    flows: set          # what ``_outside`` reads of an ``Installed``


def _both(plan: Plan, old, new, installed: Installed) -> Changes | None:
    """A version that changes pods and Service ports (a pod's address and readiness
    read in one answer of the change stream, as when kube-proxy was busy with the
    version before): the Service ports' changes, as from ``old`` to ``new`` with
    ``old``'s pods (no Service part reads a pod), then the flows outside the parts for
    ``new``'s pods. None where either needs the full pass (the plan may have changed
    by then: the caller replaces it)."""
    mid = _midway(old, new)
    if mid is None:
        return None
    first = changes(plan, old, mid, installed)
    if first is None:
        return None
    held = (installed.flows | {f.cookie for f in first.flows_to_add}).difference(
        first.flows_to_delete)
    second = _outside(plan, mid, new, _Held(held))
    if second is None:
        return None
    gone = set(second.flows_to_delete)
    adds = {f.cookie: f for f in first.flows_to_add + second.flows_to_add
            if f.cookie not in gone}
    return replace(first, flows_to_add=tuple(adds.values()), flows_to_delete=tuple(sorted(
        c for c in gone.union(first.flows_to_delete)
        if c not in adds and c in installed.flows)))


def _parts_of(plan: Plan, ports: list):
    """A function that gives the parts of ``ports`` in ``plan`` (``remember_all``), when
    asked: None once the plan holds another part for one of them. A pass over 10,000
    Service ports each switch, done only for a full pass over the very same ones."""
    def parts():
        plan.settle()
        out = []
        for sp in ports:
            hit = plan.parts.get(id(sp))
            if hit is None or hit[0] is not sp:
                return None
            out.append(hit[1])
        return out
    return parts


def _local(sp) -> bool:
    """True when ``sp`` reaches no further than its own part of a node bridge."""
    return not (sp.affinity_timeout or sp.lb_ip or sp.external_ips)


def changes(plan: Plan | None, old, new, installed: Installed) -> Changes | None:
    """What turns a switch that got ``plan`` for ``old`` into one holding what
    ``full(new, ...)`` wants, or None when only the full pass can tell. ``plan`` is
    updated as if the answer were sent."""
    delta = service_delta(old, new) if plan is not None else None
    if delta is None:
        answer = _outside(plan, old, new, installed)
        if answer is None and plan is not None and plan.kind == 'node':
            answer = _both(plan, old, new, installed)
        return answer
    if _LAST_MOVES[0] is not delta:          # every switch asks for the same
        moves = _moves(old, new, *delta)
        moved, removed, added = moves
        _LAST_MOVES[:] = [delta, (
            [(was, sp) for was, sp in moved if sp.proxied],
            [sp for sp in removed if sp.proxied], [sp for sp in added if sp.proxied]),
            len(removed) + len(added) <= MAX_CHANGED and all(
                _local(sp) for sp in removed + added + [sp for _, sp in moved])
            and _sharing_kept(old, new, *moves)]
    if not _LAST_MOVES[2]:
        return None
    if plan.kind != 'node':
        return Changes()            # only a node bridge reads such Service ports
    moves, removed, added = _LAST_MOVES[1]      # those the node bridges proxy
    return _node_changes(plan, new, removed, added, installed, moves)


def _builder_moves(old, new) -> list | None:
    """The (old, new) pairs of every Service port that changed from ``old`` to ``new``,
    each only in its endpoints, as ``StateBuilder`` recorded them (``ClusterState.moves``);
    None when it did not (another state before, a Service that came, went or changed)."""
    moves = new.moves
    return moves[1] if moves is not None and moves[0] is old else None


def _moves(old, new, removed: list, added: list) -> tuple[list, list, list]:
    """(the (old, new) pairs of a Service port whose endpoints alone changed
    (endpoint_moves.py) and that shares its selection's groups in both states or in
    neither, the other removed ones, the other added ones). The pairs may be many (a
    pod behind 10,000 Services): each costs only its groups' new buckets."""
    if not removed or not added:
        return [], removed, added
    pairs = _builder_moves(old, new)
    if pairs is not None and len(pairs) == len(added):      # the delta is the pairs
        moves, rest = [], []
        moved, shares_before, shares_now = endpoint_moves.moved, old.shares, new.shares
        seen: dict = {}     # the answer for pairs of one template each that differ only
        for was, sp in pairs:      # in the fields below (10,000 a pod: one answer)
            if same_shape(was, sp):
                kind = (was.selects, was.affinity_timeout, was.internal_local,
                        was.external_local, was.proxied, id(was.endpoints), id(sp.endpoints))
                ok = seen.get(kind)
                if ok is None:
                    ok = seen[kind] = moved(was, sp) and shares_before(was) == shares_now(sp)
            else:
                ok = moved(was, sp) and shares_before(was) == shares_now(sp)
            (moves if ok else rest).append((was, sp))
        rest.sort(key=lambda pair: pair[0].key)      # (in the order of the states)
        return moves, [was for was, _ in rest], [sp for _, sp in rest]
    gone = {sp.key: sp for sp in removed}
    moves, rest = [], []
    for sp in added:
        was = gone.get(sp.key)
        if was is not None and endpoint_moves.moved(was, sp) and \
                old.shares(was) == new.shares(sp):
            moves.append((was, sp))
            del gone[sp.key]
        else:
            rest.append(sp)
    return moves, [sp for sp in removed if gone.get(sp.key) is sp], rest


def _node_changes(plan: Plan, new, removed: list, added: list,
                  installed: Installed, moves: list = ()) -> Changes | None:
    plan.index()
    if any(id(sp) not in plan.parts for sp in removed):
        return None         # (a move's is checked as it goes: the plan is replaced)
    old_parts = [plan.parts[id(sp)][1] for sp in removed]
    old_gids = Counter(g.group_id for part in old_parts for g in part['groups'])
    if set(old_gids) & plan.spans:
        return None
    # The groups no Service port uses once the removed ones are gone (a shared one
    # stays while another uses it).
    freed = {gid for gid, n in old_gids.items() if plan.group_refs[gid] == n}
    taken = plan.taken - freed
    given = {key: ids for key, ids in plan.given.items() if not freed.intersection(ids)}
    ctx = node_switch.NodeBridge(new, plan.node)
    new_parts = []
    for sp in added:
        templates = front_templates(sp, plan.node, new.cluster.cluster_cidr,
                                    new.shares(sp))
        probed = set()
        gids = group_ids(sp, templates, taken, probed, given)
        if probed or {g for ids in gids for g in ids} & plan.spans:
            return None
        new_parts.append(node_switch.service_part(ctx, bind_fronts(sp, templates, gids)))
        ctx.remember(sp, templates, gids, new_parts[-1])
    before = {f.cookie: plan.refs.get(f.cookie, 0) for part in new_parts
              for f in _part_flows(part)}
    for sp, part in zip(removed, old_parts):
        _take(plan, sp, part, -1)
    for sp, part in zip(added, new_parts):
        _take(plan, sp, part, +1)
    if any(len(plan.vips.get(sp.vip, ())) > 1 for sp in added + removed):
        # The full pass decides which Service's reject flow a shared ClusterIP keeps
        # (the plan, already changed, is replaced by the caller's full pass).
        return None
    plan.taken, plan.given = taken, given
    flows = {f.cookie: f for part in new_parts for f in _part_flows(part)}
    gone = {f.cookie for part in old_parts for f in _part_flows(part)}
    groups = {g.group_id: g for part in new_parts for g in part['groups']}
    get = plan.parts.get
    last = (None, None)             # the last (groups, endpoints) given new buckets
    for was, sp in moves:           # the same flows and group ids: new buckets
        hit = get(id(was))
        if hit is None or hit[0] is not was:
            return None             # the caller replaces the plan with a full pass
        mine = hit[1]['groups']     # (endpoint_moves.regrouped, inline: 10,000 a pod;
        # the parts that share their groups follow one another: new_groups once)
        if mine and (mine is not last[0] or sp.endpoints is not last[1]):
            groups.update((g.group_id, g)
                          for g in endpoint_moves.new_groups(mine, sp.endpoints))
            last = (mine, sp.endpoints)
    if moves:
        plan.moved.append(moves)    # their parts re-keyed once the switch has them
    changed = [g for g in groups.values()
               if installed.groups.get(g.group_id, 'absent') != g.content]
    ctx.remember_all(_parts_of(plan, new.proxied_ports), plan.taken,
                     plan.spans, plan.given)
    return Changes(
        groups_to_add=tuple(g for g in changed if g.group_id not in installed.groups),
        groups_to_modify=tuple(g for g in changed if g.group_id in installed.groups),
        flows_to_add=tuple(f for cookie, f in flows.items()
                           if not before[cookie] and cookie not in installed.flows),
        flows_to_delete=tuple(sorted(c for c in gone if c not in plan.refs
                                     and c in installed.flows)),
        groups_to_delete=tuple(sorted(gid for gid in old_gids
                                      if gid not in plan.group_refs
                                      and gid in installed.groups)))
