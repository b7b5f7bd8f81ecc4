"""A Service port as a backend of the lab's Ingress controller and Gateways.

A backend is a Service port, reached through its ClusterIP (``spec.clusterIP`` and the
port number of ``spec.ports``): the lab's kube-proxy dataplane balances the pods, as it
does for any client. ``address_of(service, port)`` replaces the address (tests point
backends at loopback servers). A backend is *ready* (``READY``) when the EndpointSlices
of its Service hold, for that port (slice ports matched by name and protocol, as
kube-proxy does), an endpoint whose ``conditions.ready`` is not false: the reader is
services/endpoints.py's. Without one it has ``NO_ENDPOINTS``. A missing Service, a
missing port, a UDP-only port or a headless Service (``clusterIP: None``) is
``NOT_FOUND``.

``Objects`` indexes the objects the tables are made of (Services, EndpointSlices,
Secrets, Namespaces) and resolves backends.
"""

from __future__ import annotations

import ipaddress

from services.endpoints import by_service, endpoint_addresses
from services.l7.routes import key_of, meta_of, name_of

#: Backend states of ``resolve_backend``.
READY = 'ready'
NO_ENDPOINTS = 'no-endpoints'
NOT_FOUND = 'not-found'

#: The label the API server puts on every Namespace (namespace selectors use it).
NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name'


def _valid_address(address) -> bool:
    if not isinstance(address, str):
        return False
    host, sep, port = address.rpartition(':')
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or \
            port != str(int(port)):
        return False
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
        try:
            return ipaddress.ip_address(host).version == 6
        except ValueError:
            return False
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False


def _cluster_ip_address(service: dict, port: dict) -> str | None:
    ip = (service.get('spec') or {}).get('clusterIP')
    try:
        parsed = ipaddress.ip_address(ip)
    except (TypeError, ValueError):
        return None
    number = port.get('port')
    host = f'[{parsed}]' if parsed.version == 6 else str(parsed)
    return f'{host}:{number}'


class Objects:
    """Indexes of the objects the tables are made of."""

    def __init__(self, objects: dict, address_of=None):
        self.objects = objects
        self.address_of = address_of
        self.services = {key_of(s): s for s in objects.get('Service') or ()}
        self.slices = by_service(objects.get('EndpointSlice') or ())
        self.secrets = {key_of(s): s for s in objects.get('Secret') or ()}
        self.namespaces = {name_of(n): n for n in objects.get('Namespace') or ()}

    def resolve(self, namespace: str, name, port) -> tuple[str, str | None, str]:
        """(state, address, 'namespace/name:port') of a Service port given by number
        or (str) by name."""
        label = f'{namespace}/{name}:{port}'
        service = self.services.get((namespace, name))
        if service is None:
            return NOT_FOUND, None, label
        spec = service.get('spec') or {}
        if spec.get('clusterIP') == 'None':
            return NOT_FOUND, None, label
        chosen = None
        for candidate in spec.get('ports') or ():
            if candidate.get('protocol', 'TCP') != 'TCP':
                continue
            if (isinstance(port, str) and candidate.get('name') == port) or \
                    (not isinstance(port, str) and candidate.get('port') == port):
                chosen = candidate
                break
        if chosen is None:
            return NOT_FOUND, None, label
        address = (self.address_of or _cluster_ip_address)(service, chosen)
        if not _valid_address(address):
            return NOT_FOUND, None, label
        return (READY if self._ready(namespace, name, chosen) else NO_ENDPOINTS,
                address, label)

    def _ready(self, namespace: str, name: str, port: dict) -> bool:
        return bool(endpoint_addresses(self.slices.get((namespace, name), ()),
                                       (port.get('name') or '', 'TCP')))

    def namespace_labels(self, name: str) -> dict:
        labels = dict(meta_of(self.namespaces.get(name) or {}).get('labels') or {})
        labels[NAMESPACE_NAME_LABEL] = name
        return labels


def resolve_backend(objects: dict, namespace: str, service: str, port,
                    address_of=None) -> tuple[str, str | None]:
    """(READY | NO_ENDPOINTS | NOT_FOUND, 'IP:PORT' or None) of a Service port, given
    by number (int) or by name (str)."""
    state, address, _ = Objects(objects, address_of).resolve(namespace, service, port)
    return state, address
