"""``kubectl get`` rows of the Ingress and Gateway API kinds: Ingress, IngressClass,
GatewayClass, Gateway, HTTPRoute.

They live apart from kubelab/printers.py as their model lives apart from the core kinds
(services/l7/): the L7 kinds print the columns their API declares, the Gateway API's as
its CRDs' ``additionalPrinterColumns`` (a condition's status, ``Unknown`` when none is
set; a list-valued column as JSON), the Ingress's as kubectl's own printer (HOSTS cut
after three rules, ADDRESS cut to 16 characters unless ``-o wide``).

kubelab/printers.py keeps every kind's words and ``-o name`` prefix (``KIND_ALIASES``,
``NAME_PREFIX``) and registers ``ROWS`` here beside its own, as it does those of
kubelab/printers_more.py.
"""

from __future__ import annotations

import json
from datetime import datetime

from kubelab.ages import age


#: kubectl cuts an Ingress's ADDRESS to this width (unless -o wide).
LOAD_BALANCER_WIDTH = 16


def ingress_hosts(rules: list[dict]) -> str:
    """HOSTS: the first three rule hosts, ``+ N more...`` when there are
    more rules (kubectl counts every further rule, host or not), ``*``
    when no rule names a host."""
    hosts, more = [], False
    for rule in rules:
        if len(hosts) == 3:
            more = True
        if not more and rule.get('host'):
            hosts.append(rule['host'])
    if not hosts:
        return '*'
    text = ','.join(hosts)
    return f'{text} + {len(rules) - 3} more...' if more else text


def ingress_address(status: dict, wide: bool) -> str:
    """ADDRESS: the load balancer's IPs (or hostnames), sorted and
    comma-joined; cut to 16 characters unless wide; empty when none."""
    found = set()
    for entry in (status.get('loadBalancer') or {}).get('ingress') or []:
        address = entry.get('ip') or entry.get('hostname')
        if address:
            found.add(address)
    text = ','.join(sorted(found))
    if not wide and len(text) > LOAD_BALANCER_WIDTH:
        text = text[:LOAD_BALANCER_WIDTH - 3] + '...'
    return text


def ingress_row(ing: dict, now: datetime, wide: bool) -> list[str]:
    """NAME CLASS HOSTS ADDRESS PORTS AGE (no wide columns)."""
    meta, spec = ing.get('metadata') or {}, ing.get('spec') or {}
    class_name = spec.get('ingressClassName')
    return [meta.get('name', ''),
            '<none>' if class_name is None else class_name,
            ingress_hosts(spec.get('rules') or []),
            ingress_address(ing.get('status') or {}, wide),
            '80, 443' if spec.get('tls') else '80',
            age(meta.get('creationTimestamp'), now)]


def ingressclass_row(cls: dict, now: datetime, wide: bool) -> list[str]:
    """NAME CONTROLLER PARAMETERS AGE; PARAMETERS is
    ``Kind[.apiGroup]/name``."""
    meta, spec = cls.get('metadata') or {}, cls.get('spec') or {}
    params = spec.get('parameters')
    text = '<none>'
    if params:
        text = params.get('kind', '')
        if params.get('apiGroup') is not None:
            text += '.' + params['apiGroup']
        text += '/' + params.get('name', '')
    return [meta.get('name', ''), spec.get('controller', ''), text,
            age(meta.get('creationTimestamp'), now)]


def condition_status(obj: dict, condition: str) -> str:
    """The status of a condition, ``Unknown`` when there is none (the
    Gateway API CRDs default their conditions to Unknown)."""
    for entry in (obj.get('status') or {}).get('conditions') or []:
        if entry.get('type') == condition:
            return entry.get('status') or 'Unknown'
    return 'Unknown'


def gatewayclass_row(gc: dict, now: datetime, wide: bool) -> list[str]:
    """NAME CONTROLLER ACCEPTED AGE [DESCRIPTION]."""
    meta, spec = gc.get('metadata') or {}, gc.get('spec') or {}
    cells = [meta.get('name', ''), spec.get('controllerName') or '',
             condition_status(gc, 'Accepted'),
             age(meta.get('creationTimestamp'), now)]
    if wide:
        cells.append(spec.get('description') or '')
    return cells


def gateway_row(gw: dict, now: datetime, wide: bool) -> list[str]:
    """NAME CLASS ADDRESS PROGRAMMED AGE; ADDRESS is the first of
    ``status.addresses`` (kubectl shows the first match of the CRD's
    JSONPath)."""
    meta, spec = gw.get('metadata') or {}, gw.get('spec') or {}
    addresses = [a.get('value') for a in (gw.get('status') or {}).get('addresses') or []
                 if a.get('value')]
    return [meta.get('name', ''), spec.get('gatewayClassName') or '',
            addresses[0] if addresses else '',
            condition_status(gw, 'Programmed'),
            age(meta.get('creationTimestamp'), now)]


def httproute_row(route: dict, now: datetime, wide: bool) -> list[str]:
    """NAME HOSTNAMES AGE; HOSTNAMES is the list as JSON
    (``["foo.com","bar.com"]``), as kubectl prints a list-valued column,
    empty without hostnames."""
    meta, spec = route.get('metadata') or {}, route.get('spec') or {}
    hostnames = spec.get('hostnames')
    text = json.dumps(hostnames, separators=(',', ':')) \
        if isinstance(hostnames, list) else ''
    return [meta.get('name', ''), text, age(meta.get('creationTimestamp'), now)]


#: Canonical kind -> (header, wide header, row function).
ROWS = {
    'ingresses': (['NAME', 'CLASS', 'HOSTS', 'ADDRESS', 'PORTS', 'AGE'], [],
                  ingress_row),
    'ingressclasses': (['NAME', 'CONTROLLER', 'PARAMETERS', 'AGE'], [],
                       ingressclass_row),
    'gatewayclasses': (['NAME', 'CONTROLLER', 'ACCEPTED', 'AGE'],
                       ['DESCRIPTION'], gatewayclass_row),
    'gateways': (['NAME', 'CLASS', 'ADDRESS', 'PROGRAMMED', 'AGE'], [],
                 gateway_row),
    'httproutes': (['NAME', 'HOSTNAMES', 'AGE'], [], httproute_row),
}
