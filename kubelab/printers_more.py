"""``kubectl get`` rows of the kinds node lifecycle and MetalLB bring: Lease, Event,
IPAddressPool, L2Advertisement, ServiceL2Status.

kubelab/printers.py registers them (``ALIASES``, ``PREFIXES``, ``ROWS``) beside its own
kinds. Events print as ``kubectl get events`` does (LAST SEEN TYPE REASON OBJECT
MESSAGE, oldest first, as with ``--sort-by=.lastTimestamp``); the MetalLB kinds with
the columns their CRDs declare.
"""

from __future__ import annotations

import json
from datetime import datetime

from kubelab import ages as base

ALIASES = {
    'leases': ('lease', 'leases'),
    'events': ('ev', 'event', 'events'),
    'ipaddresspools': ('ipaddresspool', 'ipaddresspools'),
    'l2advertisements': ('l2advertisement', 'l2advertisements'),
    'servicel2statuses': ('servicel2status', 'servicel2statuses'),
}
PREFIXES = {
    'leases': 'lease.coordination.k8s.io', 'events': 'event',
    'ipaddresspools': 'ipaddresspool.metallb.io',
    'l2advertisements': 'l2advertisement.metallb.io',
    'servicel2statuses': 'servicel2status.metallb.io',
}


def lease_row(lease: dict, now: datetime, wide: bool) -> list[str]:
    """NAME HOLDER AGE."""
    meta = lease.get('metadata') or {}
    return [meta.get('name', ''), (lease.get('spec') or {}).get('holderIdentity', ''),
            base.age(meta.get('creationTimestamp'), now)]


def event_row(event: dict, now: datetime, wide: bool) -> list[str]:
    """LAST SEEN TYPE REASON OBJECT MESSAGE."""
    ref = event.get('involvedObject') or {}
    return [base.age(event.get('lastTimestamp'), now), event.get('type', ''),
            event.get('reason', ''), f'{ref.get("kind", "").lower()}/{ref.get("name", "")}',
            event.get('message', '')]


def _flag(value, default: bool) -> str:
    return str(default if value is None else value).lower()


def ipaddresspool_row(pool: dict, now: datetime, wide: bool) -> list[str]:
    """NAME AUTO ASSIGN AVOID BUGGY IPS ADDRESSES (the CRD's printer columns)."""
    spec = pool.get('spec') or {}
    return [(pool.get('metadata') or {}).get('name', ''),
            _flag(spec.get('autoAssign'), True), _flag(spec.get('avoidBuggyIPs'), False),
            json.dumps(spec.get('addresses') or [], separators=(',', ':'))]


def _list(values) -> str:
    return json.dumps(values, separators=(',', ':')) if values else ''


def l2advertisement_row(adv: dict, now: datetime, wide: bool) -> list[str]:
    """NAME IPADDRESSPOOLS IPADDRESSPOOL SELECTORS INTERFACES AGE [NODE SELECTORS]."""
    spec = adv.get('spec') or {}
    meta = adv.get('metadata') or {}
    cells = [meta.get('name', ''), _list(spec.get('ipAddressPools')),
             _list(spec.get('ipAddressPoolSelectors')), _list(spec.get('interfaces')),
             base.age(meta.get('creationTimestamp'), now)]
    if wide:
        cells.append(_list(spec.get('nodeSelectors')))
    return cells


def servicel2status_row(status: dict, now: datetime, wide: bool) -> list[str]:
    """NAME ALLOCATED NODE SERVICE NAME SERVICE NAMESPACE."""
    st = status.get('status') or {}
    return [(status.get('metadata') or {}).get('name', ''), st.get('node', ''),
            st.get('serviceName', ''), st.get('serviceNamespace', '')]


ROWS = {
    'leases': (['NAME', 'HOLDER', 'AGE'], [], lease_row),
    'events': (['LAST SEEN', 'TYPE', 'REASON', 'OBJECT', 'MESSAGE'], [], event_row),
    'ipaddresspools': (['NAME', 'AUTO ASSIGN', 'AVOID BUGGY IPS', 'ADDRESSES'], [],
                       ipaddresspool_row),
    'l2advertisements': (['NAME', 'IPADDRESSPOOLS', 'IPADDRESSPOOL SELECTORS',
                          'INTERFACES', 'AGE'], ['NODE SELECTORS'], l2advertisement_row),
    'servicel2statuses': (['NAME', 'ALLOCATED NODE', 'SERVICE NAME', 'SERVICE NAMESPACE'],
                          [], servicel2status_row),
}
