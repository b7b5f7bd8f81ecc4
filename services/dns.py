"""Cluster DNS: the records the store's objects define, and a pod's resolv.conf.

A pure function, ``records``, with the rules of the Kubernetes DNS-based service
discovery specification (schema 1.1.0, github.com/kubernetes/dns
docs/specification.md) as CoreDNS's ``kubernetes`` plugin serves them. The lab's
daemon writes its result to a file on every store change, the pods' own records apart
(``pod_records``, in a file of their own: a pod's new address rewrites that one); the
cluster DNS pods (``topo/images/coredns.py``) answer from both as one (``merged_node``).

Records, for the cluster domain ``<zone>`` (``cluster.local``), every TTL 5 s (the
CoreDNS kubernetes plugin's default):

* ``dns-version.<zone>`` TXT ``"1.1.0"``, the schema version.
* A Service with a ClusterIP: ``<svc>.<ns>.svc.<zone>`` A the ClusterIP; for each
  *named* port ``_<port>._<proto>.<svc>.<ns>.svc.<zone>`` SRV ``0 100 <port>
  <svc>.<ns>.svc.<zone>.`` (proto in lower case); the ClusterIP's PTR names the
  Service. Unnamed ports get no SRV (the specification).
* A headless Service (``clusterIP: None``): its *ready* endpoints, read from the
  EndpointSlices labelled ``kubernetes.io/service-name`` (by services/endpoints.py).
  An endpoint is ready when its ``conditions.ready`` is not false (nil means ready,
  as the EndpointSlice API says consumers should read it), or always when the
  Service sets ``publishNotReadyAddresses``. ``<svc>.<ns>.svc.<zone>`` A every ready
  address; ``<hostname>.<svc>.<ns>.svc.<zone>`` A each address of a ready endpoint,
  where the hostname is the endpoint's ``hostname``, else the dashed IP (``10-1-2-3``,
  CoreDNS's choice of the "unique, system-assigned identifier" the specification
  allows); for each named port of each slice
  ``_<port>._<proto>.<svc>.<ns>.svc.<zone>`` SRV, one per ready endpoint, ``0 <w>
  <port> <hostname>.<svc>.<ns>.svc.<zone>.`` with CoreDNS's weight
  ``w = max(1, 100 // N)`` for N records; the address's PTR names the endpoint. No
  ready endpoint: no records, so the name is NXDOMAIN (the specification).
  The lab's EndpointSlice controller does not fill ``hostname``; Kubernetes' does,
  from a pod whose ``spec.hostname`` is set and ``spec.subdomain`` is the Service's
  name, so such a pod's hostname is taken from the pod that ``targetRef`` names.
  That is how a pod gets ``<hostname>.<subdomain>.<ns>.svc.<zone>``: through the
  headless Service of its subdomain that selects it, once it is ready, as in
  Kubernetes.
* A Service of type ExternalName: ``<svc>.<ns>.svc.<zone>`` CNAME ``<externalName>.``.
* Pods: ``<a-b-c-d>.<ns>.pod.<zone>`` A ``a.b.c.d`` for every pod with an IPv4
  ``status.podIP`` that is neither finished (phase Succeeded/Failed: its address is
  released) nor terminating (CoreDNS drops pods with a deletionTimestamp). This is
  CoreDNS's ``pods verified`` mode: only addresses of pods that exist in that
  namespace; not ``pods insecure``, which answers any dashed address in any
  namespace.
* PTR ``d.c.b.a.in-addr.arpa.``: a ClusterIP names its Service; else an address
  that is a ready endpoint of headless Services names those endpoints (the
  specification, and CoreDNS); else a pod's address names the pod,
  ``<a-b-c-d>.<ns>.pod.<zone>.`` (a name that answers A, unlike CoreDNS, which
  would ask its upstream). Several names for one address: several PTRs, sorted. An
  endpoint name too long for DNS names nothing: the next in line names the address.
* Each zone's apex: SOA ``ns.dns.<zone>. hostmaster.<zone>. <serial> 7200 1800 86400
  5`` (CoreDNS's values; the serial comes from ``generation``); the cluster domain
  also has NS ``ns.dns.<zone>.``, with an A record when the Service
  ``kube-system/kube-dns`` has a ClusterIP.

The zones served with authority are the cluster domain and reverse zones: those
covering ``networks`` (the Service and pod CIDRs the lab gives; rounded out to whole
octets, as CoreDNS does with a CIDR in its zone list: 10.96.0.0/12 is
``96.10.in-addr.arpa.`` ... ``111.10.in-addr.arpa.``), and the /24 zone of every
other address with a PTR record. Names between a record and its zone's apex exist
without data (empty non-terminals: ``svc.<zone>``, ``default.svc.<zone>``,
``_tcp.web.default.svc.<zone>``), and so do ``<ns>.svc.<zone>`` and
``<ns>.pod.<zone>`` of every Namespace: asked for, they answer NOERROR with no
records, not NXDOMAIN.

Only IPv4 addresses are published (the lab is IPv4). Names are case-insensitive: all
are stored in lower case, absolute (ending with a dot). A name that cannot be a DNS
name (a label over 63 octets, over 253 in all) is left out.

The result is JSON-serialisable and deterministic (names and record data sorted)::

    {'version': 1, 'generation': '5be1f6a0', 'domain': 'cluster.local', 'ttl': 5,
     'zones': ['0.96.10.in-addr.arpa.', 'cluster.local.'],
     'records': {'web.default.svc.cluster.local.': {'A': ['10.96.0.20']},
                 'default.svc.cluster.local.': {}, ...}}

``records`` maps each name to its records by type, each record in zone-file
presentation format (``SRV``: ``'0 100 80 web.default.svc.cluster.local.'``, ``TXT``:
``'"1.1.0"'``); ``{}`` is a name that exists without records. ``version`` is the
format's version, ``generation`` the first 8 hex digits of the SHA-256 of the content:
it changes exactly when the answers do.
"""

import hashlib
import ipaddress
from functools import lru_cache

import msgspec

from services.endpoints import endpoint_addresses

DEFAULT_DOMAIN = 'cluster.local'
#: Every record's TTL and the SOA minimum (the CoreDNS kubernetes plugin's default).
TTL = 5
#: The version of the Kubernetes DNS schema served at ``dns-version.<zone>``.
SCHEMA_VERSION = '1.1.0'
#: The version of the records file's format.
FORMAT_VERSION = 1
#: SOA refresh, retry and expire, as CoreDNS sets them.
SOA_TIMERS = (7200, 1800, 86400)
#: The Service whose ClusterIP is the cluster's nameserver (``ns.dns.<zone>``).
DNS_SERVICE = ('kube-system', 'kube-dns')
SERVICE_NAME_LABEL = 'kubernetes.io/service-name'


def dashed(ip: str) -> str:
    """``10.1.2.3`` -> ``10-1-2-3``: an address as one DNS label."""
    return ip.replace('.', '-')


@lru_cache(maxsize=65536)
def reverse_name(ip: str) -> str:
    """``10.1.2.3`` -> ``3.2.1.10.in-addr.arpa.``."""
    return '.'.join(reversed(ip.split('.'))) + '.in-addr.arpa.'


def reverse_zones(networks) -> list[str]:
    """The in-addr.arpa zones covering the IPv4 CIDRs ``networks``: each rounded out to
    whole octets (a /12 gives 16 zones of /16, a /20 16 zones of /24), at most /24."""
    zones = set()
    for cidr in networks:
        net = ipaddress.IPv4Network(cidr, strict=False)
        prefix = min(24, -(-net.prefixlen // 8) * 8)
        if prefix == 0:
            zones.add('in-addr.arpa.')
            continue
        for subnet in net.subnets(new_prefix=prefix) if prefix >= net.prefixlen \
                else [net.supernet(new_prefix=prefix)]:
            octets = str(subnet.network_address).split('.')[:prefix // 8]
            zones.add('.'.join(reversed(octets)) + '.in-addr.arpa.')
    return sorted(zones)


def _ipv4(value) -> str | None:
    """``value`` as a canonical IPv4 address, or None."""
    return _ipv4_text(value) if isinstance(value, str) else None


@lru_cache(maxsize=65536)
def _ipv4_text(value: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError):
        return None


@lru_cache(maxsize=262144)
def _valid_name(name: str) -> bool:
    """True when absolute ``name`` can be a DNS name (RFC 1035 lengths)."""
    labels = name[:-1].split('.')
    return len(name) <= 254 and all(0 < len(label) <= 63 for label in labels)


def _meta(obj: dict) -> tuple[str, str]:
    meta = obj.get('metadata') or {}
    return str(meta.get('namespace') or 'default').lower(), str(meta.get('name') or '').lower()


class _Records:
    """name -> type -> set of presentation-format data, skipping invalid names."""

    def __init__(self):
        self.names: dict[str, dict[str, set]] = {}

    def add(self, name: str, rdtype: str | None = None, data: str | None = None) -> None:
        if not _valid_name(name) or (rdtype in ('PTR', 'CNAME', 'NS', 'SRV')
                                     and not _valid_name(data.rsplit(' ', 1)[-1])):
            return
        node = self.names.setdefault(name, {})
        if rdtype:
            node.setdefault(rdtype, set()).add(data)


def _sort_key(rdtype: str):
    if rdtype == 'A':          # canonical addresses (``_ipv4``): by their octets
        return lambda data: tuple(int(octet) for octet in data.split('.'))
    return None


def _ready_endpoints(service: dict, slices: list, pods: dict) -> list:
    """A headless Service's ready endpoints: [(address, hostname label, [(port name,
    protocol, port)])], one entry per (slice, endpoint, address)."""
    namespace, name = _meta(service)
    publish = bool((service.get('spec') or {}).get('publishNotReadyAddresses'))
    found = []
    ipv4_slices = [s for s in slices if s.get('addressType', 'IPv4') == 'IPv4']
    for served in endpoint_addresses(ipv4_slices, publish_not_ready=publish):
        ip = _ipv4(served.address)
        if ip:
            hostname = _hostname(served.endpoint, namespace, name, pods)
            found.append((ip, str(hostname).lower() if hostname else dashed(ip),
                          _named_ports(served.endpoint_slice)))
    return found


def _named_ports(endpoint_slice: dict) -> list:
    """A slice's named ports: [(name, protocol, port)], in lower case (SRV records)."""
    return [(str(p['name']).lower(), str(p.get('protocol') or 'TCP').lower(), p['port'])
            for p in endpoint_slice.get('ports') or ()
            if p.get('name') and isinstance(p.get('port'), int)]


def _hostname(endpoint: dict, namespace: str, service: str, pods: dict):
    """The endpoint's ``hostname``, else that of the pod ``targetRef`` names when its
    ``spec.subdomain`` is the Service's name (None: neither)."""
    hostname = endpoint.get('hostname')
    ref = endpoint.get('targetRef') or {}
    if not hostname and ref.get('kind', 'Pod') == 'Pod' and ref.get('name'):
        pod_spec = (pods.get((str(ref.get('namespace') or namespace).lower(),
                              str(ref['name']).lower())) or {}).get('spec') or {}
        if pod_spec.get('hostname') and \
                str(pod_spec.get('subdomain') or '').lower() == service:
            hostname = pod_spec['hostname']
    return hostname


def live_pod_ip(pod: dict) -> str | None:
    """The pod's IPv4 address while it holds it (None: none yet, finished, or
    terminating)."""
    meta, status = pod.get('metadata') or {}, pod.get('status') or {}
    if meta.get('deletionTimestamp') or status.get('phase') in ('Succeeded', 'Failed'):
        return None
    return _ipv4(status.get('podIP'))


def records(objects: dict, domain: str = DEFAULT_DOMAIN, networks=(),
            memo: dict | None = None, pods: bool = True) -> dict:
    """Every DNS record of the cluster whose objects are ``objects`` (kind -> items:
    'Service', 'EndpointSlice', 'Pod', 'Namespace'; other kinds are ignored).

    ``domain`` is the cluster domain; ``networks`` the IPv4 CIDRs whose reverse zones
    are served with authority even where no address has a record (the lab's Service
    and pod subnets). See the module's docstring for the records and the format.

    ``memo``, a dict the caller keeps from one call to the next, holds each Service's
    own records (a ClusterIP's or an ExternalName's, which read nothing else) by the
    identity of its object: a caller that passes the same objects while they stay
    (``Store.view``) pays for the records of the Services that changed only. At
    10,000 Services a pod's new address then costs the daemon a fraction of a build.

    Without ``pods``, the pods' own records (their A and, where nothing else names
    their address, their PTR) are left to ``pod_records``: the daemon writes those to a
    file of their own (``pod_records_path``), so that a pod's new address rewrites a
    small file and not 24,000 names; the DNS servers serve both files as one
    (``merged_node`` says how).
    """
    domain = domain.strip('.').lower()
    zone = domain + '.'
    table = _Records()
    with_pods, pods = pods, {_meta(p): p for p in objects.get('Pod') or ()}
    ptr = _Pointers()
    table.add(f'dns-version.{zone}', 'TXT', f'"{SCHEMA_VERSION}"')
    memo = {} if memo is None else memo
    finished = memo.pop(_FINISHED, {})
    nameserver = _service_records(table, ptr, objects, pods, zone, memo)
    if with_pods:
        _pod_records(table, ptr, pods, zone)
    for ip in set(ptr.cluster) | set(ptr.endpoint) | set(ptr.pod):
        named = ptr.cluster.get(ip)
        if named is not None and len(named) == 1 and ptr.nodes.get(ip) is not None:
            table.names[reverse_name(ip)] = ptr.nodes[ip]   # the Service's, from the memo
            continue
        endpoints = {name for name in ptr.endpoint.get(ip, ()) if _valid_name(name)}
        for target in named or endpoints or ptr.pod.get(ip, ()):
            table.add(reverse_name(ip), 'PTR', target)
    _namespace_records(table, objects, zone, nameserver)
    zones = _complete_zones(table, zone, networks)
    doc, memo[_FINISHED] = _finish(table, domain, zone, zones, finished)
    return doc


#: ``records``'s memo keeps there what ``_finish`` made of the nodes it saw.
_FINISHED = 'finished'


def pod_records(pods, domain: str = DEFAULT_DOMAIN, networks=()) -> dict:
    """The records ``records(..., pods=False)`` leaves out, in the same format: every
    live pod address's A record and PTR (``merged_node``: a PTR the other file has for
    the same name wins, as a headless Service's endpoint names the address before its
    pod does), the names between them and their zones' apexes, and the zones of pod
    addresses outside ``networks`` (a hostNetwork pod's), with their SOA."""
    domain = domain.strip('.').lower()
    zone = domain + '.'
    table, ptr = _Records(), _Pointers()
    _pod_records(table, ptr, {_meta(p): p for p in pods or ()}, zone)
    for ip, owners in ptr.pod.items():
        for owner in owners:
            table.add(reverse_name(ip), 'PTR', owner)
    zones = _complete_zones(table, zone, networks)
    return _finish(table, domain, zone, zones, {})[0]


def pod_records_path(records_path: str) -> str:
    """The file of ``pod_records`` beside the records file at ``records_path``."""
    base, dot, ext = records_path.rpartition('.')
    return f'{base}.pods.{ext}' if dot and '/' not in ext else records_path + '.pods'


def merged_node(main: dict | None, pods: dict | None) -> dict | None:
    """A name's records served from the records file (``main``) and the pods' file
    (``pods``), each the name's {type: data} there or None: both files' types, the
    records file's where both have one (its PTR and every apex's SOA); None when
    neither has the name."""
    if pods is None:
        return main
    if main is None:
        return pods
    return {**pods, **main}


class _Pointers:
    """The names each address has, by priority for its PTR records: a ClusterIP names
    its Service; else a headless endpoint address its endpoint names; else a pod's
    address the pod."""

    def __init__(self):
        self.cluster: dict[str, set] = {}
        self.nodes: dict[str, dict] = {}     # a ClusterIP -> its Service's PTR node
        self.endpoint: dict[str, set] = {}
        self.pod: dict[str, set] = {}


def headless_services(services) -> set[tuple[str, str]]:
    """(namespace, name), in lower case, of the headless Services: the only ones whose
    EndpointSlices ``records`` reads."""
    return {_meta(s) for s in services if (s.get('spec') or {}).get('clusterIP') == 'None'}


def reads_slice(headless: set, endpoint_slice: dict) -> bool:
    """Whether ``records`` reads ``endpoint_slice`` (a slice of one of ``headless``): a
    caller may leave the others out (at 10,000 Services, the slices of ClusterIP
    Services are nearly all of the store)."""
    labels = (endpoint_slice.get('metadata') or {}).get('labels') or {}
    return bool(labels.get(SERVICE_NAME_LABEL)) and (
        _meta(endpoint_slice)[0], str(labels[SERVICE_NAME_LABEL]).lower()) in headless


def _slices_by_service(objects: dict) -> dict[tuple, list]:
    """EndpointSlices by the (namespace, Service name) of their label, in lower case."""
    slices: dict[tuple, list] = {}
    for endpoint_slice in objects.get('EndpointSlice') or ():
        namespace, _ = _meta(endpoint_slice)
        labels = (endpoint_slice.get('metadata') or {}).get('labels') or {}
        if labels.get(SERVICE_NAME_LABEL):
            slices.setdefault((namespace, str(labels[SERVICE_NAME_LABEL]).lower()),
                              []).append(endpoint_slice)
    return slices


def _service_records(table: _Records, ptr: _Pointers, objects: dict, pods: dict,
                     zone: str, memo: dict) -> str | None:
    """Every Service's records (ClusterIP, headless, ExternalName); returns the
    nameserver's address (kube-dns's ClusterIP), if any. ``memo``: see ``records``
    (the order of the Services does not matter: records are sets)."""
    slices = _slices_by_service(objects)
    nameserver, used, names = None, {}, table.names
    for service in objects.get('Service') or ():
        spec = service.get('spec') or {}
        if spec.get('clusterIP') == 'None' and spec.get('type') != 'ExternalName':
            namespace, name = _meta(service)
            _headless_records(table, ptr, f'{name}.{namespace}.svc.{zone}',
                              _ready_endpoints(service, slices.get((namespace, name), ()),
                                               pods))
            continue
        hit = memo.get(id(service))
        if hit is None or hit[0] is not service or hit[1] != zone:
            hit = (service, zone, *_own_records(service, zone))
        used[id(service)] = hit
        _, _, own, pointer, serves_dns = hit
        for name, node in own.items():
            if name in names:                 # (no other Service has its names)
                for rdtype, data in node.items():
                    for item in data:
                        table.add(name, rdtype, item)
            else:
                names[name] = node            # shared with the memo: never changed
        if pointer:
            ptr.cluster.setdefault(pointer[0], set()).add(pointer[1])
            ptr.nodes[pointer[0]] = pointer[2]
            if serves_dns:
                nameserver = pointer[0]
    memo.clear()
    memo.update(used)
    return nameserver


def _own_records(service: dict, zone: str) -> tuple[dict, tuple | None, bool]:
    """A ClusterIP's or an ExternalName Service's records: (name -> type -> data, its
    (ClusterIP, name, the PTR's node when the name is valid) for the PTR or None,
    whether it is the cluster's nameserver)."""
    namespace, name = _meta(service)
    spec = service.get('spec') or {}
    owner = f'{name}.{namespace}.svc.{zone}'
    own, pointer = _Records(), None
    if spec.get('type') == 'ExternalName':
        if spec.get('externalName'):
            own.add(owner, 'CNAME', str(spec['externalName']).strip('.').lower() + '.')
    elif _ipv4(spec.get('clusterIP')):
        ip = _ipv4(spec.get('clusterIP'))
        own.add(owner, 'A', ip)
        reverse = _Records()
        reverse.add(reverse_name(ip), 'PTR', owner)
        pointer = (ip, owner, reverse.names.get(reverse_name(ip)))
        for port in spec.get('ports') or ():
            if port.get('name') and isinstance(port.get('port'), int):
                protocol = str(port.get('protocol') or 'TCP').lower()
                own.add(f'_{str(port["name"]).lower()}._{protocol}.{owner}', 'SRV',
                        f'0 100 {port["port"]} {owner}')
    return own.names, pointer, (namespace, name) == DNS_SERVICE


def _headless_records(table: _Records, ptr: _Pointers, owner: str, endpoints: list) -> None:
    """A headless Service's A, per-endpoint A and SRV records (``owner``: its name)."""
    srv: dict[str, set] = {}
    for ip, label, ports in endpoints:
        target = f'{label}.{owner}'
        table.add(owner, 'A', ip)
        table.add(target, 'A', ip)
        ptr.endpoint.setdefault(ip, set()).add(target)
        for port_name, protocol, port in ports:
            srv.setdefault(f'_{port_name}._{protocol}.{owner}', set()).add(
                (port, target))
    for srv_name, targets in srv.items():
        weight = max(1, 100 // len(targets))
        for port, target in targets:
            table.add(srv_name, 'SRV', f'0 {weight} {port} {target}')


def _pod_records(table: _Records, ptr: _Pointers, pods: dict, zone: str) -> None:
    """``<a-b-c-d>.<ns>.pod.<zone>`` for every live pod address."""
    for (namespace, _), pod in sorted(pods.items()):
        ip = live_pod_ip(pod)
        if ip:
            owner = f'{dashed(ip)}.{namespace}.pod.{zone}'
            table.add(owner, 'A', ip)
            ptr.pod.setdefault(ip, set()).add(owner)


def _namespace_records(table: _Records, objects: dict, zone: str,
                       nameserver: str | None) -> None:
    """The cluster domain's NS, and the names that exist without records: ``svc``,
    ``pod``, and ``<ns>.svc``, ``<ns>.pod`` of every Namespace."""
    table.add(zone, 'NS', f'ns.dns.{zone}')
    if nameserver:
        table.add(f'ns.dns.{zone}', 'A', nameserver)
    for label in ('svc', 'pod'):
        table.add(f'{label}.{zone}')
    for namespace_obj in objects.get('Namespace') or ():
        _, name = _meta(namespace_obj)
        if name:
            table.add(f'{name}.svc.{zone}')
            table.add(f'{name}.pod.{zone}')


def _complete_zones(table: _Records, zone: str, networks) -> set:
    """The zones served (the cluster domain, the reverse zones of ``networks`` and of
    every other address with a PTR), with their apexes and empty non-terminals added."""
    served = frozenset(reverse_zones(networks)) | {zone}
    zones, names = set(served), table.names
    for name in list(names):
        apex, parents = _walk(name, served)
        if apex is None:                     # an address outside ``networks``
            apex = name.split('.', 1)[1]
            zones.add(apex)
            parents = _parents(name, apex)
        for parent in parents:               # the empty non-terminals up to the apex
            if parent in names:              # its own walk (done or to come) goes on
                break
            names[parent] = {}
    for apex in zones:
        table.add(apex)
    return zones


@lru_cache(maxsize=262144)
def _walk(name: str, zones: frozenset) -> tuple[str | None, tuple]:
    """(the zone ``name`` is in, the names between them: ``_parents``); (None, ()) when
    it is in none of ``zones``. Once per name (a build walks every name)."""
    apex = _zone_of(name, zones)
    return (apex, _parents(name, apex)) if apex is not None else (None, ())


def _parents(name: str, apex: str) -> tuple:
    """The names above ``name`` and below ``apex``, nearest first (valid: shorter than
    a valid ``name``)."""
    out = []
    while name != apex:
        name = name.split('.', 1)[1]
        if name != apex:
            out.append(name)
    return tuple(out)


def _finish(table: _Records, domain: str, zone: str, zones: set,
            finished: dict) -> tuple[dict, dict]:
    """The sorted content, its generation, and each zone's SOA (serial from it); and
    what each node became, by its id (``finished`` holds the last call's: a Service's
    own nodes stay from one call to the next, ``_service_records``)."""
    kept: dict = {}
    out = {}
    for name, node in sorted(table.names.items()):
        hit = finished.get(id(node))
        if hit is None or hit[0] is not node:
            hit = (node, {rdtype: sorted(data, key=_sort_key(rdtype)) if len(data) > 1
                          else list(data) for rdtype, data in sorted(node.items())})
        kept[id(node)] = hit
        out[name] = hit[1]
    content = {'domain': domain, 'ttl': TTL, 'zones': sorted(zones), 'records': out}
    generation = hashlib.sha256(encode(content)).hexdigest()[:8]
    refresh, retry, expire = SOA_TIMERS
    for apex in content['zones']:        # (a copy: the finished node may be kept)
        out[apex] = dict(out[apex], SOA=[
            f'ns.dns.{zone} hostmaster.{zone} {int(generation, 16)} '
            f'{refresh} {retry} {expire} {TTL}'])
    return {'version': FORMAT_VERSION, 'generation': generation, **content}, kept


def encode(records_doc: dict) -> bytes:
    """``records``'s answer as the DNS servers read it: JSON with sorted keys (msgspec:
    at 10,000 Services the json module took 30 ms of the daemon's interpreter)."""
    return msgspec.json.encode(records_doc, order='sorted')


def _zone_of(name: str, zones) -> str | None:
    """The longest of ``zones`` that ``name`` is in (or is), or None."""
    while True:
        if name in zones:
            return name
        if '.' not in name[:-1]:
            return None
        name = name.split('.', 1)[1]
