"""What ``ovs-ofctl`` prints about a bridge, as plain values.

Three dumps, each parsed by a pure function (the text in, dataclasses out; nothing here
runs ``ovs-ofctl``):

- ``parse_flows``: ``ovs-ofctl -O OpenFlow13 --names dump-flows BR``, one ``LiveFlow``
  per line (cookie, table as printed, priority, match and actions text, counters);
- ``parse_group_desc``: ``ovs-ofctl -O OpenFlow13 dump-groups BR``, each group's type
  and its buckets' actions;
- ``parse_group_stats``: ``ovs-ofctl -O OpenFlow13 dump-group-stats BR``, each group's
  and each bucket's packet and byte counters.

``merge_groups`` joins the last two into ``LiveGroup``s (either may be missing: a bucket
then has no actions, or no counters). ``match_fields``, ``group_refs``, ``nat_target``
and ``learned_endpoint`` read the few things the annotation needs out of match and
action text.

Format notes (Open vSwitch 2.17-3.x): a flow line is ``key=value, `` statistics, then the
priority and the match (``priority=200,tcp,nw_dst=10.96.0.10,tp_dst=53``, no spaces;
``priority=`` is left out when it is the default 32768), then `` actions=``. Port names
are quoted (``in_port="kl-n1-eth2"``). Reply headers (``OFPST_FLOW reply ...``) and blank
lines are skipped; any other line that does not parse raises ``DumpError`` naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PRIORITY = 32768
#: Statistics ``dump-flows`` prints before the match, as ``key=value``.
_FLOW_STATS = ('cookie', 'duration', 'table', 'n_packets', 'n_bytes', 'idle_timeout',
               'hard_timeout', 'idle_age', 'hard_age', 'importance')
#: Flags it may print among them, as bare words.
_FLOW_FLAGS = ('send_flow_rem', 'check_overlap', 'reset_counts', 'no_packet_counts',
               'no_byte_counts')
_HEADER = re.compile(r'^(OFPST|NXST|OFPT)_\w+ reply\b|^(OFPST|NXST)_\w+\b.*:$')


class DumpError(ValueError):
    """A line of ovs-ofctl output that is not what this module understands."""


@dataclass(frozen=True)
class LiveFlow:
    cookie: int
    table: str                 # as printed: a table's name (with --names) or its number
    priority: int
    match: str                 # '' matches everything
    actions: str
    n_packets: int
    n_bytes: int
    duration: float | None = None
    idle_timeout: int | None = None
    hard_timeout: int | None = None

    def fields(self) -> dict:
        return match_fields(self.match)


@dataclass(frozen=True)
class LiveBucket:
    index: int
    actions: str | None = None     # None: only the statistics were dumped
    weight: int | None = None      # None: not printed (OpenFlow's default, 1)
    n_packets: int | None = None   # None: only the description was dumped
    n_bytes: int | None = None


@dataclass(frozen=True)
class LiveGroup:
    group_id: int
    type: str | None = None
    buckets: tuple = ()            # (LiveBucket, ...) in the switch's order
    n_packets: int | None = None
    n_bytes: int | None = None
    duration: float | None = None


# ---------------------------------------------------------------- flows
def parse_flows(text: str) -> list[LiveFlow]:
    """Every flow of a ``dump-flows`` output, in the order printed."""
    flows = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or _HEADER.search(line):
            continue
        try:
            flows.append(_parse_flow(line))
        except (ValueError, KeyError) as exc:
            raise DumpError(f'dump-flows line {number}: {exc}: {line}') from None
    return flows


def _parse_flow(line: str) -> LiveFlow:
    head, sep, actions = line.partition(' actions=')
    if not sep:
        raise DumpError('no " actions="')
    parts = head.rstrip(',').split(', ')
    stats = {}
    rest = []
    for i, part in enumerate(parts):
        key, eq, value = part.partition('=')
        if eq and key in _FLOW_STATS:
            stats[key] = value
        elif part.strip() in _FLOW_FLAGS:
            continue
        else:
            rest = parts[i:]
            break
    if 'cookie' not in stats:
        raise DumpError('no cookie=')
    priority = DEFAULT_PRIORITY
    match = []
    # Flags print as bare words before the match ('send_flow_rem priority=...').
    words = ', '.join(rest).split(' ')
    while words and words[0].rstrip(',') in _FLOW_FLAGS:
        words.pop(0)
    for token in ' '.join(words).split(','):
        token = token.strip()
        if token.startswith('priority='):
            priority = int(token[len('priority='):])
        elif token:
            match.append(token)
    duration = stats.get('duration')
    return LiveFlow(
        cookie=int(stats['cookie'], 16), table=stats.get('table', '0'), priority=priority,
        match=','.join(match), actions=actions.strip(),
        n_packets=int(stats.get('n_packets', 0)), n_bytes=int(stats.get('n_bytes', 0)),
        duration=float(duration.rstrip('s')) if duration else None,
        idle_timeout=int(stats['idle_timeout']) if 'idle_timeout' in stats else None,
        hard_timeout=int(stats['hard_timeout']) if 'hard_timeout' in stats else None)


def match_fields(match: str) -> dict:
    """``'tcp,in_port="kl-n1-eth2",nw_dst=10.96.0.10'`` -> ``{'tcp': None, 'in_port':
    'kl-n1-eth2', 'nw_dst': '10.96.0.10'}``: protocol words map to None, quotes go."""
    out = {}
    for token in match.split(','):
        token = token.strip()
        if not token:
            continue
        key, eq, value = token.partition('=')
        out[key] = value.strip('"') if eq else None
    return out


# ---------------------------------------------------------------- groups
def parse_group_desc(text: str) -> dict[int, tuple[str | None, list]]:
    """``dump-groups``: group id -> (type, [(actions, weight or None), ...])."""
    groups = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or _HEADER.search(line):
            continue
        props, *buckets = line.split(',bucket=')
        fields = dict(p.partition('=')[::2] for p in props.split(','))
        if 'group_id' not in fields:
            raise DumpError(f'dump-groups line {number}: no group_id=: {line}')
        parsed = []
        for bucket in buckets:
            head, sep, actions = bucket.partition('actions=')
            if not sep:
                raise DumpError(f'dump-groups line {number}: a bucket without actions=: '
                                f'{line}')
            props_of_bucket = dict(p.partition(':')[::2] for p in head.split(',') if p)
            weight = props_of_bucket.get('weight')
            parsed.append((actions, int(weight) if weight else None))
        try:
            groups[int(fields['group_id'])] = (fields.get('type'), parsed)
        except ValueError:
            raise DumpError(f'dump-groups line {number}: bad group_id: {line}') from None
    return groups


_GROUP_STATS = re.compile(r'group_id=(\d+)(?:,duration=([\d.]+)s)?.*?'
                          r'(?<!:)packet_count=(\d+),byte_count=(\d+)')
_BUCKET_STATS = re.compile(r'bucket(\d+):packet_count=(\d+),byte_count=(\d+)')


def parse_group_stats(text: str) -> dict[int, dict]:
    """``dump-group-stats``: group id -> {'n_packets', 'n_bytes', 'duration',
    'buckets': [(n_packets, n_bytes), ...]}."""
    stats = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or _HEADER.search(line):
            continue
        head = line.split(',bucket', 1)[0]
        m = _GROUP_STATS.match(head)
        if m is None:
            raise DumpError(f'dump-group-stats line {number}: {line}')
        buckets = {int(i): (int(p), int(b)) for i, p, b in _BUCKET_STATS.findall(line)}
        stats[int(m.group(1))] = {
            'n_packets': int(m.group(3)), 'n_bytes': int(m.group(4)),
            'duration': float(m.group(2)) if m.group(2) else None,
            'buckets': [buckets[i] for i in sorted(buckets)]}
    return stats


def merge_groups(desc: dict | None, stats: dict | None) -> list[LiveGroup]:
    """The groups of a bridge from its description, its statistics or both (sorted by
    id). A group only one of them knows is kept with what that one tells."""
    desc, stats = desc or {}, stats or {}
    out = []
    for gid in sorted(set(desc) | set(stats)):
        gtype, described = desc.get(gid, (None, []))
        counted = stats.get(gid, {})
        counters = counted.get('buckets', [])
        buckets = []
        for i in range(max(len(described), len(counters))):
            actions, weight = described[i] if i < len(described) else (None, None)
            packets, nbytes = counters[i] if i < len(counters) else (None, None)
            buckets.append(LiveBucket(i, actions, weight, packets, nbytes))
        out.append(LiveGroup(gid, gtype, tuple(buckets), counted.get('n_packets'),
                             counted.get('n_bytes'), counted.get('duration')))
    return out


# ---------------------------------------------------------------- actions
_GROUP_REF = re.compile(r'(?:^|,)group:(\d+)')
_NAT_DST = re.compile(r'nat\(dst=([0-9.]+)(?:-[0-9.]+)?(?::(\d+)(?:-\d+)?)?\)')
_LOAD = re.compile(r'(?:load|set_field):(0x[0-9a-fA-F]+|\d+)(?:/0x[0-9a-fA-F]+)?->'
                   r'(?:NXM_NX_)?(?:reg|REG)(\d)\b')


def group_refs(actions: str) -> list[int]:
    """The groups an action list sends to (``group:123``)."""
    return [int(g) for g in _GROUP_REF.findall(actions)]


def nat_target(actions: str | None) -> tuple[str, int | None] | None:
    """The destination of the first ``nat(dst=IP[:PORT])`` in ``actions``."""
    m = _NAT_DST.search(actions or '')
    if m is None:
        return None
    return m.group(1), int(m.group(2)) if m.group(2) else None


def learned_endpoint(actions: str) -> tuple[str, int] | None:
    """A learned session-affinity flow loads the endpoint into reg3 (IP) and reg4 (port):
    that endpoint, from either way Open vSwitch prints the loads."""
    regs = {int(reg): int(value, 0) for value, reg in _LOAD.findall(actions)}
    if 3 not in regs:
        return None
    ip = '.'.join(str((regs[3] >> shift) & 0xFF) for shift in (24, 16, 8, 0))
    return ip, regs.get(4, 0) & 0xFFFF
