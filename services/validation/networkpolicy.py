"""Validation of ``networking.k8s.io/v1`` NetworkPolicy objects, as the API server does.

The rules and messages are those of Kubernetes' ``ValidateNetworkPolicySpec``:

* ``spec.podSelector`` is a LabelSelector; an empty one (or none) selects every pod of
  the policy's namespace;
* a rule's ``ports[i]``: ``protocol`` TCP or UDP (SCTP is Kubernetes' third, which the
  lab does not forward), ``port`` a number 1-65535 or a port name (an IANA service
  name, resolved against each pod's named container ports), ``endPort`` only with a
  numeric ``port`` and not below it;
* a peer (``from[j]``/``to[j]``) names at least one of ``podSelector``,
  ``namespaceSelector`` (both: pods matching the one in namespaces matching the
  other) and ``ipBlock``, and an ``ipBlock`` no other; ``ipBlock.cidr`` is a CIDR and
  each ``except`` a strict subset of it;
* ``policyTypes`` holds at most two of Ingress and Egress.

Defaults are the API server's: a port's ``protocol`` is TCP; without ``policyTypes``
a policy is ``[Ingress]``, plus ``Egress`` when it has egress rules. IPv6 blocks are
accepted, as Kubernetes accepts them; the lab carries only IPv4, so they match nothing.
"""

from __future__ import annotations

import ipaddress
import json

from services.validation.common import (
    PROTOCOLS, UNSUPPORTED_PROTOCOLS, Checker, describe, iana_svc_name_problem, join)
from services.validation.deployment import validate_label_selector

NETWORKPOLICY_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec')
SPEC_FIELDS = ('podSelector', 'policyTypes', 'ingress', 'egress')
PEER_FIELDS = ('podSelector', 'namespaceSelector', 'ipBlock')
IPBLOCK_FIELDS = ('cidr', 'except')
PORT_FIELDS = ('protocol', 'port', 'endPort')
POLICY_TYPES = ('Ingress', 'Egress')
#: direction -> the field that holds its rules' peers.
PEERS_FIELD = {'ingress': 'from', 'egress': 'to'}
CIDR_EXAMPLE = 'must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)'


def validate_networkpolicy(chk: Checker, obj: dict) -> None:
    """Check a NetworkPolicy (metadata is checked by the caller); fill the defaults."""
    chk.known_fields(obj, '', NETWORKPOLICY_FIELDS)
    spec = chk.mapping(obj, 'spec', '', default=dict)
    if spec is None:
        return
    chk.known_fields(spec, 'spec', SPEC_FIELDS)
    selector = chk.mapping(spec, 'podSelector', 'spec', default=dict)
    if selector is not None:
        validate_label_selector(chk, selector, 'spec.podSelector', allow_empty=True)
    for direction, peers in PEERS_FIELD.items():
        for path, rule in chk.items(spec, direction, 'spec'):
            chk.known_fields(rule, path, (peers, 'ports'))
            for port_path, port in chk.items(rule, 'ports', path):
                _port(chk, port, port_path)
            for peer_path, peer in chk.items(rule, peers, path):
                _peer(chk, peer, peer_path)
    _policy_types(chk, spec)


def _port(chk: Checker, port: dict, path: str) -> None:
    chk.known_fields(port, path, PORT_FIELDS)
    chk.one_of(port, 'protocol', path, PROTOCOLS, default='TCP',
               unsupported=UNSUPPORTED_PROTOCOLS)
    value = port.get('port')
    end = chk.integer(port, 'endPort', path)
    where, end_where = join(path, 'port'), join(path, 'endPort')
    if value is None:
        port.pop('port', None)
        if end is not None:
            chk.error(end_where, f'Invalid value: {end}: may not be specified when '
                                 f'`port` is not specified')
    elif isinstance(value, str):
        problem = iana_svc_name_problem(value)
        if problem:
            chk.error(where, f'Invalid value: "{value}": {problem}')
        if end is not None:
            chk.error(end_where, f'Invalid value: {end}: may not be specified when '
                                 f'`port` is non-numeric')
    elif isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 65535:
            chk.error(where, f'Invalid value: {value}: must be between 1 and 65535, '
                             f'inclusive')
        if end is not None:
            if end < value:
                chk.error(end_where, f'Invalid value: {end}: must be greater than or '
                                     f'equal to `port`')
            if not 1 <= end <= 65535:
                chk.error(end_where, f'Invalid value: {end}: must be between 1 and '
                                     f'65535, inclusive')
    else:
        chk.error(where, f'must be a port number or a port name, got {describe(value)}')


def _peer(chk: Checker, peer: dict, path: str) -> None:
    chk.known_fields(peer, path, PEER_FIELDS)
    given = 0
    for key in ('podSelector', 'namespaceSelector'):
        selector = chk.mapping(peer, key, path)
        if selector is not None:
            given += 1
            validate_label_selector(chk, selector, join(path, key), allow_empty=True)
    block = chk.mapping(peer, 'ipBlock', path)
    if block is not None:
        given += 1
        _ip_block(chk, block, join(path, 'ipBlock'))
    if given == 0 and not any(peer.get(k) is not None for k in PEER_FIELDS):
        chk.error(path, 'Required value: must specify a peer')
    elif given > 1 and block is not None:
        chk.error(path, 'Forbidden: may not specify both ipBlock and another peer')


def _network(text) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network a CIDR spells (host bits allowed, as Go's ParseCIDR), else None."""
    if not isinstance(text, str) or '/' not in text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _ip_block(chk: Checker, block: dict, path: str) -> None:
    chk.known_fields(block, path, IPBLOCK_FIELDS)
    cidr = block.get('cidr')
    if cidr in (None, ''):
        block.pop('cidr', None)
        chk.error(join(path, 'cidr'), 'Required value')
        return
    cidr = chk.string(block, 'cidr', path)
    if cidr is None:
        return
    net = _network(cidr)
    if net is None:
        chk.error(join(path, 'cidr'), f'Invalid value: "{cidr}": {CIDR_EXAMPLE}')
    excepts = chk.sequence(block, 'except', path)
    for index, text in enumerate(excepts or ()):
        where = join(join(path, 'except'), index)
        inner = _network(text)
        if inner is None:
            shown = f'"{text}"' if isinstance(text, str) else describe(text)
            chk.error(where, f'Invalid value: {shown}: {CIDR_EXAMPLE}')
        elif net is not None and not _strict_subset(inner, net):
            chk.error(where, f'Invalid value: "{text}": must be a strict subset of `cidr`')


def _strict_subset(inner, outer) -> bool:
    return inner.version == outer.version and inner.prefixlen > outer.prefixlen \
        and inner.subnet_of(outer)


def _policy_types(chk: Checker, spec: dict) -> None:
    types = chk.sequence(spec, 'policyTypes', 'spec')
    if not types:
        # The API server's default: Ingress, plus Egress when there are egress rules.
        spec['policyTypes'] = ['Ingress'] + (['Egress'] if spec.get('egress') else [])
        return
    if len(types) > len(POLICY_TYPES):
        chk.error('spec.policyTypes', f'Invalid value: {json.dumps(types)}: may not '
                                      f'specify more than two policyTypes')
        return
    for index, value in enumerate(types):
        if value not in POLICY_TYPES:
            shown = f'"{value}"' if isinstance(value, str) else describe(value)
            chk.error(f'spec.policyTypes[{index}]', f'Unsupported value: {shown}: '
                      'supported values: "Ingress", "Egress"')
