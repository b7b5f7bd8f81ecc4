"""Validation of user-written ``discovery.k8s.io/v1`` EndpointSlices.

Users write EndpointSlices for Services without a selector (pointing a
Service at addresses the lab does not manage). kubelab's dataplane is IPv4
and uses one address per endpoint, as kube-proxy does; a slice holds at most
``MAX_ENDPOINTS`` endpoints, as in Kubernetes. Missing conditions are
filled the way consumers read them: ``ready`` true, ``serving`` = ``ready``,
``terminating`` false.
"""

from services.validation.common import (
    PROTOCOLS, UNSUPPORTED_PROTOCOLS, Checker, dns1123_label_problem,
    dns1123_subdomain_problem, join, parse_ipv4)

#: The label that ties a slice to its Service.
SERVICE_NAME_LABEL = 'kubernetes.io/service-name'

ENDPOINTSLICE_FIELDS = ('apiVersion', 'kind', 'metadata', 'addressType',
                        'endpoints', 'ports')
ADDRESS_TYPES = ('IPv4',)
UNSUPPORTED_ADDRESS_TYPES = ('IPv6', 'FQDN')
ENDPOINT_FIELDS = ('addresses', 'conditions', 'nodeName', 'targetRef')
#: Endpoint fields kept but not acted on: name -> type.
IGNORED_ENDPOINT_FIELDS = {'deprecatedTopology': 'mapping', 'hints': 'mapping',
                           'hostname': 'string', 'zone': 'string'}
TARGET_REF_FIELDS = ('apiVersion', 'kind', 'name', 'namespace', 'uid',
                     'resourceVersion', 'fieldPath')
#: The API server's limit on the endpoints and ports of one slice.
MAX_ENDPOINTS = 1000
MAX_PORTS = 100
CONDITION_FIELDS = ('ready', 'serving', 'terminating')
ENDPOINT_PORT_FIELDS = ('name', 'port', 'protocol', 'appProtocol')


def validate_endpointslice(chk: Checker, obj: dict) -> None:
    """Check an EndpointSlice (metadata is checked by the caller)."""
    chk.known_fields(obj, '', ENDPOINTSLICE_FIELDS)
    meta = obj.get('metadata')
    labels = meta.get('labels') if isinstance(meta, dict) else None
    if isinstance(meta, dict) and (not isinstance(labels, dict)
                                   or SERVICE_NAME_LABEL not in labels):
        chk.error('metadata.labels',
                  f'must have the label "{SERVICE_NAME_LABEL}" naming the '
                  f'Service these endpoints belong to')
    chk.one_of(obj, 'addressType', '', ADDRESS_TYPES, required=True,
               unsupported=UNSUPPORTED_ADDRESS_TYPES)
    endpoints = chk.items(obj, 'endpoints', '', default=list)
    if len(endpoints) > MAX_ENDPOINTS:
        chk.error('endpoints', f'must have at most {MAX_ENDPOINTS} items, '
                               f'got {len(endpoints)}; split them over '
                               f'several slices')
    for path, endpoint in endpoints:
        _endpoint(chk, endpoint, path)
    names: set[str] = set()
    ports = chk.items(obj, 'ports', '', default=list)
    if len(ports) > MAX_PORTS:
        chk.error('ports', f'must have at most {MAX_PORTS} items, got '
                           f'{len(ports)}')
    for path, port in ports:
        chk.known_fields(port, path, ENDPOINT_PORT_FIELDS)
        name = chk.string(port, 'name', path, default='')
        if name:
            chk.name(name, join(path, 'name'), dns1123_label_problem)
        if name is not None:
            if name in names:
                chk.error(join(path, 'name'), f'Duplicate value: "{name}"')
            names.add(name)
        chk.port(port, 'port', path, required=True)
        chk.one_of(port, 'protocol', path, PROTOCOLS, default='TCP',
                   unsupported=UNSUPPORTED_PROTOCOLS)
        chk.string(port, 'appProtocol', path)


def _endpoint(chk, endpoint, path) -> None:
    chk.known_fields(endpoint, path, ENDPOINT_FIELDS,
                     IGNORED_ENDPOINT_FIELDS)
    chk.typed(endpoint, path, IGNORED_ENDPOINT_FIELDS)
    addresses = chk.sequence(endpoint, 'addresses', path, required=True)
    apath = join(path, 'addresses')
    if addresses is not None:
        if len(addresses) != 1:
            chk.error(apath, f'must have exactly one address, got '
                             f'{len(addresses)}')
        for index, address in enumerate(addresses):
            if parse_ipv4(address) is None:
                chk.error(join(apath, index),
                          f'"{address}" is not a valid IPv4 address')
    conditions = chk.mapping(endpoint, 'conditions', path, default=dict)
    if conditions is not None:
        cpath = join(path, 'conditions')
        chk.known_fields(conditions, cpath, CONDITION_FIELDS)
        ready = chk.boolean(conditions, 'ready', cpath, default=True)
        chk.boolean(conditions, 'serving', cpath,
                    default=True if ready is None else ready)
        chk.boolean(conditions, 'terminating', cpath, default=False)
    node = chk.string(endpoint, 'nodeName', path)
    if node:
        chk.name(node, join(path, 'nodeName'), dns1123_subdomain_problem)
    ref = chk.mapping(endpoint, 'targetRef', path)
    if ref is not None:
        rpath = join(path, 'targetRef')
        chk.known_fields(ref, rpath, TARGET_REF_FIELDS)
        for field in TARGET_REF_FIELDS:
            chk.string(ref, field, rpath)
