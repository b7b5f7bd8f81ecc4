"""A flow's match in one canonical form, whether ovs-ofctl printed it or the pipeline
computed it, so that a live flow and a desired one can be compared field by field.

ovs-ofctl prints ``tcp,nw_dst=10.96.0.10,tp_dst=80`` where a FlowSpec holds
``eth_type=0x800, ip_proto=6, ipv4_dst='10.96.0.10', tcp_dst=80``: keywords become the
fields they stand for, old names the OXM ones, addresses and masks one spelling,
numbers ints. kubelab/inspect/flows.py joins the switches' dumps with the pipeline on
these (and on the table ids, which ``--names`` prints as names).
"""

from __future__ import annotations

import ipaddress

from controller import pipeline
from controller.flows import ct_state

_KEYWORDS = {'ip': (0x0800, None), 'arp': (0x0806, None), 'tcp': (0x0800, 6),
             'udp': (0x0800, 17), 'icmp': (0x0800, 1), 'sctp': (0x0800, 132)}
_ALIASES = {'dl_src': 'eth_src', 'dl_dst': 'eth_dst', 'nw_src': 'ipv4_src',
            'nw_dst': 'ipv4_dst', 'ip_src': 'ipv4_src', 'ip_dst': 'ipv4_dst',
            'tp_src': 'l4_src', 'tp_dst': 'l4_dst', 'tcp_src': 'l4_src',
            'tcp_dst': 'l4_dst', 'udp_src': 'l4_src', 'udp_dst': 'l4_dst',
            'dl_type': 'eth_type', 'nw_proto': 'ip_proto'}
_ADDRESSES = ('ipv4_src', 'ipv4_dst', 'arp_spa', 'arp_tpa')
_MACS = ('eth_src', 'eth_dst', 'arp_sha', 'arp_tha')


def _canon_value(key: str, value):
    """One match value in a form both ovs-ofctl's text and a FlowSpec reach."""
    try:
        if key in _ADDRESSES:
            if isinstance(value, tuple):
                value = f'{value[0]}/{value[1]}'
            if '/' in value:
                return str(ipaddress.IPv4Network(value, strict=False))
            return str(ipaddress.IPv4Address(value))
        if key in _MACS:
            return str(value).lower()
        if key == 'ct_state' and isinstance(value, str):
            return ct_state(value)
        if key == 'in_port' and isinstance(value, str):
            name, _, number = value.rpartition('-eth')    # Mininet: <bridge>-eth<port>
            return int(number) if name and number.isdigit() else int(value, 0)
        if isinstance(value, tuple):
            return tuple(int(v) for v in value)
        if isinstance(value, int):
            return value
        if '/' in value:
            v, m = value.split('/', 1)
            return int(v, 0), int(m, 0)
        return int(value, 0)
    except (ValueError, KeyError, TypeError):
        return value


def canonical_live(fields: dict) -> dict:
    """``ovsdump.match_fields`` of a live flow -> canonical {field: value}."""
    out = {}
    for key, value in fields.items():
        if value is None:
            if key in _KEYWORDS:
                eth_type, proto = _KEYWORDS[key]
                out['eth_type'] = eth_type
                if proto is not None:
                    out['ip_proto'] = proto
            else:
                out[key] = True
            continue
        key = _ALIASES.get(key, key)
        out[key] = _canon_value(key, value)
    return out


def canonical_spec(spec) -> dict:
    """A FlowSpec's match in the same canonical form."""
    return {_ALIASES.get(key, key): _canon_value(_ALIASES.get(key, key), value)
            for key, value in spec.match}


def table_id(printed: str) -> int | None:
    """A table as ovs-ofctl printed it (a name with --names, or a number) -> its id."""
    if printed.isdigit():
        return int(printed)
    return pipeline.T.get(printed)
