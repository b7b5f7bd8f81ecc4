"""The reconcile diff: what to send a switch so that it holds what the pipeline wants.

``changes(installed, wanted)`` compares what a switch is known to hold (``Installed``:
flow cookies, group contents, meter configs) with what ``pipeline.desired`` wants for it,
and lists the meters to add or modify, the groups to add, modify or delete and the flows
to add or delete. It is pure: the Ryu shell (controller/ryu_app.py) turns each change
into one OpenFlow message, sends them in ``Changes.steps()`` order, and then records
them with ``Installed.apply``.

Flows are told apart by their content cookie alone (controller/flows.py): a flow whose
content changed is a new cookie to add and an old one to delete, an unchanged flow is
never touched. Learned session-affinity flows carry ``AFFINITY_COOKIE``, which the
pipeline never wants, and are never deleted: they expire by themselves. A group is
compared by a hash of its buckets; one the switch reported at (re)connection has unknown
content (None) and is modified, as is a meter whose config is unknown. Meters are added
or modified, never deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.flows import SwitchConfig
from controller.pipeline.tables import AFFINITY_COOKIE


@dataclass
class Installed:
    """What the controller knows one switch holds."""
    flows: set = field(default_factory=set)       # cookies
    groups: dict = field(default_factory=dict)    # group id -> content hash (None: unknown)
    meters: dict = field(default_factory=dict)    # meter id -> MeterSpec (None: unknown)

    def apply(self, changes: Changes) -> None:
        """Record ``changes`` as sent."""
        for meter in changes.meters_to_add + changes.meters_to_modify:
            self.meters[meter.meter_id] = meter
        for group in changes.groups_to_add + changes.groups_to_modify:
            self.groups[group.group_id] = group.content
        self.flows.update(spec.cookie for spec in changes.flows_to_add)
        self.flows.difference_update(changes.flows_to_delete)
        for gid in changes.groups_to_delete:
            del self.groups[gid]


@dataclass(frozen=True)
class Changes:
    """What to send one switch. Additions keep the order of the wanted config;
    deletions go by ascending cookie or group id."""
    meters_to_add: tuple = ()           # MeterSpecs
    meters_to_modify: tuple = ()        # MeterSpecs
    groups_to_add: tuple = ()           # GroupSpecs
    groups_to_modify: tuple = ()        # GroupSpecs
    flows_to_add: tuple = ()            # FlowSpecs
    flows_to_delete: tuple = ()         # cookies
    groups_to_delete: tuple = ()        # group ids

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)

    def steps(self) -> list[tuple[str, str, object]]:
        """Every change as ``(op, kind, item)`` in the order to send them: meters and
        groups before the flows that use them, new flows before the old ones they
        replace go (no packet meets neither), flows deleted before the groups they
        used. ``item`` is the spec to add or modify, the cookie or group id to delete."""
        return ([('add', 'meter', m) for m in self.meters_to_add]
                + [('modify', 'meter', m) for m in self.meters_to_modify]
                + [('add', 'group', g) for g in self.groups_to_add]
                + [('modify', 'group', g) for g in self.groups_to_modify]
                + [('add', 'flow', f) for f in self.flows_to_add]
                + [('delete', 'flow', c) for c in self.flows_to_delete]
                + [('delete', 'group', gid) for gid in self.groups_to_delete])


def changes(installed: Installed, wanted: SwitchConfig) -> Changes:
    """What turns a switch holding ``installed`` into one holding ``wanted``."""
    meters = [m for m in wanted.meters if installed.meters.get(m.meter_id, 'absent') != m]
    groups = [g for g in wanted.groups
              if installed.groups.get(g.group_id, 'absent') != g.content]
    flows = wanted.by_cookie()
    return Changes(
        meters_to_add=tuple(m for m in meters if m.meter_id not in installed.meters),
        meters_to_modify=tuple(m for m in meters if m.meter_id in installed.meters),
        groups_to_add=tuple(g for g in groups if g.group_id not in installed.groups),
        groups_to_modify=tuple(g for g in groups if g.group_id in installed.groups),
        flows_to_add=tuple(spec for cookie, spec in flows.items()
                           if cookie not in installed.flows),
        flows_to_delete=tuple(sorted(installed.flows - set(flows) - {AFFINITY_COOKIE})),
        groups_to_delete=tuple(sorted(set(installed.groups)
                                      - {g.group_id for g in wanted.groups})))
