"""Validation of MetalLB's objects (``metallb.io/v1beta1``): IPAddressPool and
L2Advertisement, with the checks of MetalLB's admission webhook.

* IPAddressPool: ``spec.addresses`` (required, non-empty), each a CIDR
  (``10.128.0.200/29``) or a range (``10.128.0.200-10.128.0.220``, first <= last), IPv4;
  ``autoAssign`` (default true: the controller may hand its addresses to any Service;
  false: only to a Service that asks for one of them or for the pool by name) and
  ``avoidBuggyIPs`` (no ``.0`` or ``.255`` address); ``serviceAllocation`` is refused
  (kubelab does not run MetalLB's pool priorities and selectors).
* L2Advertisement: ``ipAddressPools`` (pool names), ``ipAddressPoolSelectors`` and
  ``nodeSelectors`` (LabelSelectors; none at all: every pool, every node);
  ``interfaces`` is refused (a lab node has one network interface).

That two pools may not overlap (the webhook checks it against the pools that exist) is
checked by the store, with every pool of the apply. MetalLB reads its objects only in
its own namespace, ``metallb-system``: elsewhere they are accepted with a warning
(services/metallb/ipam.py says so), as the API server accepts them.
"""

from __future__ import annotations

import ipaddress

from services.validation.common import Checker, describe
from services.validation.deployment import validate_label_selector

POOL_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
POOL_SPEC_FIELDS = ('addresses', 'autoAssign', 'avoidBuggyIPs')
UNSUPPORTED_POOL_FIELDS = ('serviceAllocation',)
L2_SPEC_FIELDS = ('ipAddressPools', 'ipAddressPoolSelectors', 'nodeSelectors')
UNSUPPORTED_L2_FIELDS = ('interfaces',)
ADDRESS_FORMAT = 'a CIDR (10.128.0.200/29) or a range (10.128.0.200-10.128.0.220)'


def parse_addresses(text: str) -> tuple[int, int]:
    """(first, last) address of a pool entry as integers; ValueError with the reason."""
    if not isinstance(text, str):
        raise ValueError(f'must be a string, got {describe(text)}')
    if '-' in text:
        low, _, high = (part.strip() for part in text.partition('-'))
        try:
            first, last = ipaddress.IPv4Address(low), ipaddress.IPv4Address(high)
        except ValueError:
            raise ValueError(f'invalid range "{text}": write {ADDRESS_FORMAT}') from None
        if first > last:
            raise ValueError(f'invalid range "{text}": {first} is after {last}')
        return int(first), int(last)
    try:
        network = ipaddress.IPv4Network(text)
    except ValueError:
        try:
            network = ipaddress.IPv4Network(text, strict=False)
        except ValueError:
            raise ValueError(f'invalid CIDR "{text}": write {ADDRESS_FORMAT}') from None
        raise ValueError(f'invalid CIDR "{text}": host bits set; did you mean '
                         f'{network}?') from None
    return int(network.network_address), int(network.broadcast_address)


def _strings(values, path: str = 'spec.addresses'):
    return [(f'{path}[{i}]', v) for i, v in enumerate(values or ())]


def validate_ipaddresspool(chk: Checker, obj: dict) -> None:
    chk.known_fields(obj, '', POOL_FIELDS)
    spec = chk.mapping(obj, 'spec', '', required=True)
    if spec is None:
        return
    chk.known_fields(spec, 'spec', POOL_SPEC_FIELDS, (), UNSUPPORTED_POOL_FIELDS)
    addresses = chk.sequence(spec, 'addresses', 'spec', required=True)
    if addresses is not None and not addresses:
        chk.error('spec.addresses', f'must have at least one item: {ADDRESS_FORMAT}')
    seen = []
    for path, text in _strings(addresses):
        try:
            first, last = parse_addresses(text)
        except ValueError as exc:
            chk.error(path, str(exc))
            continue
        for other_path, (low, high) in seen:
            if first <= high and low <= last:
                chk.error(path, f'"{text}" overlaps {other_path}')
        seen.append((path, (first, last)))
    chk.boolean(spec, 'autoAssign', 'spec', default=True)
    chk.boolean(spec, 'avoidBuggyIPs', 'spec', default=False)


def validate_l2advertisement(chk: Checker, obj: dict) -> None:
    chk.known_fields(obj, '', POOL_FIELDS)
    spec = chk.mapping(obj, 'spec', '', default=dict)
    if spec is None:
        return
    chk.known_fields(spec, 'spec', L2_SPEC_FIELDS, (), UNSUPPORTED_L2_FIELDS)
    for path, name in _strings(chk.sequence(spec, 'ipAddressPools', 'spec'),
                               'spec.ipAddressPools'):
        if not isinstance(name, str) or not name:
            chk.error(path, f'must be the name of an IPAddressPool, got {describe(name)}')
    for key in ('ipAddressPoolSelectors', 'nodeSelectors'):
        for path, selector in chk.items(spec, key, 'spec'):
            if selector:                    # {} selects everything
                validate_label_selector(chk, selector, path)


def pool_ranges(pool: dict) -> list[tuple[int, int]]:
    """The (first, last) of every entry of a valid pool."""
    return [parse_addresses(text) for text in pool['spec'].get('addresses') or ()]


def overlap_problems(pools: list[dict]) -> dict[tuple[str, str], str]:
    """MetalLB's webhook rule that no two pools share an address: (namespace, name) of
    the later pool -> the message, for each pool that overlaps an earlier one."""
    out: dict = {}
    seen: list = []
    for pool in pools:
        meta = pool['metadata']
        key = (meta.get('namespace', 'default'), meta['name'])
        for first, last in pool_ranges(pool):
            for other, (low, high) in seen:
                if first <= high and low <= last and other != key and key not in out:
                    out[key] = (f'overlaps with already defined CIDR of IPAddressPool '
                                f'{other[1]}: {ipaddress.IPv4Address(max(first, low))} is in '
                                f'both')
        seen += [(key, r) for r in pool_ranges(pool)]
    return out
