"""The node bridges' per-Service memo: a Service port's flows and groups are computed
again only when the Service port changed.

At 10,000 Services a change touches one of them, but ``desired`` builds every flow of a
bridge (``pipeline.desired`` stays a pure function of the state: the memo changes how
fast, never what). The state the controller builds (controller/state.py's
``StateBuilder``) keeps the very same ``ServicePort`` object for a Service whose objects
did not change, so the memo recognises an unchanged Service port by identity (``is``),
plus a signature of everything else its part depends on (the node, its group ids). An
entry holds its ServicePort, so an id is never reused while the entry lives; each build
of a bridge keeps only the entries it used, so the memo holds one bridge's worth per
bridge. A state built afresh (a test, ``kubelab flows``) simply misses.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

_MEMO: dict[object, dict[int, tuple]] = {}     # bridge -> id(sp) -> (sp, signature, part)
_ENABLED = [True]


@contextmanager
def bypassed():
    """Compute every part afresh, remembering nothing (what the tests compare with)."""
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = True


def per_service(bridge, items: list[tuple], compute: Callable,
                derive: Callable | None = None) -> list:
    """``compute(arg)`` for every ``(sp, signature, arg)`` of ``items``, or the part
    remembered from the last build of ``bridge`` for the same ``sp`` object and an
    equal signature. On a miss, ``derive(old_sp, old_part, sp)`` may give the part
    from the one remembered for the Service port of the same key and an equal
    signature (endpoint_moves.py: only the endpoints changed), or None."""
    if not _ENABLED[0]:
        return [compute(arg) for _, _, arg in items]
    old, new, out = _MEMO.get(bridge, {}), {}, []
    by_key = None
    for sp, signature, arg in items:
        hit = old.get(id(sp))
        if hit is not None and hit[0] is sp and hit[1] == signature:
            part = hit[2]
        else:
            part = None
            if derive is not None:
                if by_key is None:
                    by_key = {entry[0].key: entry for entry in old.values()}
                was = by_key.get(sp.key)
                if was is not None and was[1] == signature:
                    part = derive(was[0], was[2], sp)
            if part is None:
                part = compute(arg)
        new[id(sp)] = (sp, signature, part)
        out.append(part)
    _MEMO[bridge] = new
    return out


def put(bridge, sp, signature, part) -> None:
    """Remember ``part`` for ``sp`` as ``per_service`` would have (the incremental path
    computes the parts of the Service ports it adds: the next full pass finds them)."""
    if _ENABLED[0]:
        _MEMO.setdefault(bridge, {})[id(sp)] = (sp, signature, part)


_WHOLE: dict = {}        # bridge -> (signature, the Service ports, what was built of them)


def same_ports(bridge, signature, ports: list):
    """What ``remember_ports`` kept for ``bridge`` when it was built from the very same
    Service port objects in the same order and an equal signature, else None: a change
    of pods, policies or nodes alone (a new pod's address) keeps every Service port, and
    its full pass then takes every part as it was, without a pass over 10,000 of them."""
    hit = _WHOLE.get(bridge) if _ENABLED[0] else None
    if hit is None or hit[0] != signature or len(hit[1]) != len(ports) or not all(
            a is b for a, b in zip(hit[1], ports)):
        return None
    if callable(hit[2]):                # read when first asked for (``remember_ports``)
        built = hit[2]()
        _WHOLE[bridge] = hit = (hit[0], hit[1], built)
    return hit[2]


def remember_ports(bridge, signature, ports: list, built) -> None:
    """Keep ``built`` for ``same_ports``; a callable is asked for it then, once (None:
    nothing to give any more)."""
    if _ENABLED[0]:
        _WHOLE[bridge] = (signature, list(ports), built)
