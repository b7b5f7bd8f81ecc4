"""A Service port whose endpoints alone changed: its part of a node bridge from the part
it had, by new buckets in the same groups.

A pod that backs 10,000 Services becoming ready changes 10,000 Service ports, each only
in its endpoints. Their flows stay as they were (ServiceLB matches the Service address
and jumps to the group; only whether there is any endpoint, and how many groups they
take, shows in a flow) and so do their group ids (given by group key, in Service
order, to the fronts that have endpoints); what changes is the buckets. ``moved`` says
when a change is of that kind, ``moved_templates`` and ``regrouped`` give the new fronts
and part from the old ones, each equal to what ``front_templates`` and
``node_switch.service_part`` compute afresh (tests/unit/test_endpoint_moves.py), in a
fraction of the time: the per-Service memo (memo.py) derives them on a miss, and the
incremental path (incremental.py) sends only the groups' new buckets.

Only Service ports whose every front balances over all of the Service's endpoints
qualify: no Local traffic policy (a front's endpoints are the node's own), no session
affinity (its EndpointDNAT flows name each endpoint).
"""

from __future__ import annotations

import dataclasses
import operator
from functools import lru_cache
from typing import Callable

from controller.flows import Bucket, Ct, GroupSpec, Nat
from controller.pipeline.service_fronts import split_count, split_endpoints
from controller.state import ServicePort, same_shape


def _rest_of(cls) -> Callable:
    """A getter of every field of ``cls`` but its endpoints."""
    return operator.attrgetter(*(f.name for f in dataclasses.fields(cls)
                                 if f.name not in ('endpoints', 'node_local')))


_shape = _rest_of(ServicePort)


@lru_cache(maxsize=65536)
def bucket(zone: int, after: int, ip: str, port: int, mark: int | None) -> Bucket:
    """A bucket that DNATs to one endpoint: one object for every group that has it (a
    pod behind 10,000 Services), so its content hash is computed once."""
    return Bucket((Ct(zone=zone, commit=True, table=after, nat=Nat(dst=ip, port=port),
                      mark=mark),))


def moved(old, new) -> bool:
    """True when Service port ``new`` is ``old`` with other endpoints, in a way that
    leaves its flows and group ids as they were."""
    if old is new or old.key != new.key or old.affinity_timeout or old.internal_local \
            or old.external_local:
        return False
    if bool(old.endpoints) != bool(new.endpoints) or \
            split_count(len(old.endpoints)) != split_count(len(new.endpoints)):
        return False
    return same_shape(old, new) or _shape(old) == _shape(new)


def moved_templates(old, templates: list, new) -> list | None:
    """``front_templates`` of ``new`` from those of ``old`` (None unless ``moved``):
    every front balances over all the endpoints."""
    if not moved(old, new):
        return None
    return [(match, new.endpoints, key, kw) for match, _, key, kw in templates]


def regrouped(old, part: dict, new, known: bool = False) -> dict | None:
    """``old``'s ``part`` of a node bridge for ``new`` (None unless ``moved``): the same
    flows, each group with the buckets of the new endpoints. A front's groups follow
    one another in its part, one per slice of ``split_endpoints``; every bucket of a
    group carries the same zone, next table and mark. ``known``: the caller checked
    ``moved`` already."""
    if not known and not moved(old, new):
        return None
    if not part['groups']:
        return part                 # no endpoint before, none now
    return dict(part, groups=new_groups(part['groups'], new.endpoints))


def new_groups(groups: tuple, endpoints: tuple) -> tuple:
    """``groups`` (a part's, from ``interned``) over ``endpoints``: the same ids, zones,
    next tables and marks, new buckets. Once per groups tuple and endpoints (the parts
    of the Service ports that share a selection's groups have the same tuple)."""
    key = (id(groups), id(endpoints))
    hit = _MOVED.get(key)
    if hit is not None and hit[0] is groups and hit[1] is endpoints:
        return hit[2]
    out, parts = [], split_count(len(endpoints))
    for i, g in enumerate(groups):
        ct = g.buckets[0].actions[0]
        out.append(group(g.group_id, ct.zone, ct.table, ct.mark, endpoints, i % parts,
                         g.owner))
    if len(_MOVED) >= 65536:
        _MOVED.clear()
    answer = interned(out)
    _MOVED[key] = (groups, endpoints, answer)
    return answer


def interned(groups: list) -> tuple:
    """One tuple for every part with the same group objects (``group`` gives one object
    per content): a move of 10,000 such parts is then one ``new_groups``."""
    key = tuple(map(id, groups))
    hit = _TUPLES.get(key)
    if hit is None:
        if len(_TUPLES) >= 65536:
            _TUPLES.clear()
        hit = _TUPLES[key] = tuple(groups)      # holds its groups: their ids stay theirs
    return hit


def group(gid: int, zone: int, after: int, mark: int | None, endpoints: tuple,
          index: int, owner: str) -> GroupSpec:
    """Group ``gid``: slice ``index`` of ``endpoints`` (``split_endpoints``), a bucket
    each that DNATs to it in ``zone``, marks the connection ``mark`` and goes on to
    table ``after``. One object for every part that has it (the Service ports over the
    same pods: their groups' bucket tuple, and a shared group itself), so its content
    hash is computed once."""
    key = (gid, zone, after, mark, id(endpoints), index, owner)
    hit = _GROUPS.get(key)
    if hit is None or hit[0] is not endpoints:
        if len(_GROUPS) >= 65536:
            _GROUPS.clear()
        hit = _GROUPS[key] = (endpoints, GroupSpec(
            gid, _buckets(zone, after, mark, endpoints, index), owner=owner))
    return hit[1]


def _buckets(zone: int, after: int, mark: int | None, endpoints: tuple,
             index: int) -> tuple:
    key = (zone, after, mark, id(endpoints), index)
    hit = _BUCKETS.get(key)
    if hit is None or hit[0] is not endpoints:
        chunks = split_endpoints(endpoints)
        if len(_BUCKETS) >= 65536:
            _BUCKETS.clear()
        hit = _BUCKETS[key] = (endpoints, tuple(
            bucket(zone, after, ep.ip, ep.port, mark)
            for ep in chunks[index % len(chunks)]))
    return hit[1]


# (zone, table, mark, id(endpoints), group index) -> (endpoints, the group's buckets):
# the Service ports over the same pods share one endpoints tuple (controller/state.py),
# and so their groups one bucket tuple (its content hash computed once).
_BUCKETS: dict = {}
# (group id, zone, table, mark, id(endpoints), group index, owner) -> (endpoints, group)
_GROUPS: dict = {}
_TUPLES: dict = {}      # the ids of a part's groups -> the one tuple of them
_MOVED: dict = {}       # (id(groups), id(endpoints)) -> (groups, endpoints, new_groups)
