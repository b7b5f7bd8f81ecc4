"""Validation of ``v1`` Service objects.

kubelab emulates kube-proxy and a cloud load balancer, so a Service is checked
for what the dataplane needs, with the API server's rules and messages: type,
ports (port, targetPort, protocol, nodePort), clusterIP (empty = allocate,
``None`` = headless, or an IPv4 address; whether it lies in the Service range
is the store's job), selector, session affinity, traffic policies,
``externalIPs``, ``externalName`` and the LoadBalancer fields.

Every type of the API is accepted (``SERVICE_TYPES``). ``ExternalName`` is only
a DNS alias (the cluster DNS answers a CNAME): it needs ``externalName``, a
DNS-1123 subdomain (a trailing dot allowed), and may have neither a clusterIP
nor the IP family fields; its ports are optional and unused. ``ports`` may also
be left out of a headless Service, as the API server allows. A ``nodePort`` or
``healthCheckNodePort`` is checked here only as a port number (1-65535) and a
nodePort for duplicates within the Service; whether it lies in the cluster's
NodePort range and is free is the store's job, as it is the API server's
allocator's in Kubernetes. The same goes for ``loadBalancerIP``: here an IPv4
address, the store checks it against the load balancer pool.

``externalIPs`` are IP addresses that are not unspecified, loopback or
link-local (the API server's checks; it does not ask whether anything routes
them). A Service with external IPs is externally accessible, whatever its type:
it takes an ``externalTrafficPolicy`` (defaulted to Cluster), as NodePort and
LoadBalancer Services do.

The LoadBalancer fields follow the API server: ``loadBalancerSourceRanges``,
``loadBalancerClass`` (a qualified name), ``allocateLoadBalancerNodePorts`` and
``healthCheckNodePort`` only on a LoadBalancer Service (the last only with
``externalTrafficPolicy: Local``); ``loadBalancerIP`` is kept on any type, as
the API server keeps it. A class is accepted and hands the Service to the
implementation of that class: the lab's cloud and its MetalLB serve only
Services without one, so such a Service gets no address (EXTERNAL-IP
``<pending>``, as on a cluster without that implementation). ``allocateLoadBalancerNodePorts: false`` is
refused: the lab's cloud load balancer forwards to NodeIP:NodePort.
``trafficDistribution`` takes its one value, PreferClose. kubelab is
single-stack IPv4: ``clusterIPs`` may only repeat ``clusterIP``, ``ipFamilies``
may only name IPv4 and ``ipFamilyPolicy`` may not be RequireDualStack (the API
server of a single-stack cluster refuses it; PreferDualStack falls back to
single-stack there).
"""

import ipaddress

from services.validation.common import (
    MISSING, PROTOCOLS, UNSUPPORTED_PROTOCOLS, Checker, describe,
    dns1123_label_problem, dns1123_subdomain_problem, join, label_key_problem,
    parse_ipv4)

SERVICE_TYPES = ('ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName')
#: Types whose Services have nodePorts (and are reachable from outside the cluster).
EXTERNAL_SERVICE_TYPES = ('NodePort', 'LoadBalancer')
#: The Kubernetes words for a field an ExternalName Service may not have.
NOT_FOR_EXTERNAL_NAME = 'may not be set for ExternalName services'
TRAFFIC_DISTRIBUTIONS = ('PreferClose',)
#: Kubernetes' words for a headless Service of an external type.
HEADLESS_EXTERNAL = "may not be set to 'None' for {type} services"
#: Kubernetes' words for a LoadBalancer field on another type.
ONLY_LOAD_BALANCER = "may only be used when `type` is 'LoadBalancer'"
#: Kubernetes' words for a malformed ``loadBalancerSourceRanges`` entry.
SOURCE_RANGES_FORMAT = ('must be a list of IP ranges. For example, '
                        '10.240.0.0/24,10.250.0.0/24')

SERVICE_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
SERVICE_SPEC_FIELDS = ('type', 'ports', 'selector', 'clusterIP',
                       'sessionAffinity', 'sessionAffinityConfig',
                       'internalTrafficPolicy', 'externalTrafficPolicy',
                       'publishNotReadyAddresses', 'loadBalancerIP',
                       'loadBalancerSourceRanges', 'loadBalancerClass',
                       'allocateLoadBalancerNodePorts', 'healthCheckNodePort',
                       'externalIPs', 'externalName', 'trafficDistribution')
#: Spec fields kept but not acted on: name -> type.
IGNORED_SERVICE_SPEC_FIELDS = {
    'clusterIPs': 'list', 'ipFamilies': 'list', 'ipFamilyPolicy': 'string'}
IP_FAMILY_POLICIES = ('SingleStack', 'PreferDualStack', 'RequireDualStack')
IP_FAMILIES = ('IPv4',)
SERVICE_PORT_FIELDS = ('name', 'protocol', 'port', 'targetPort', 'nodePort',
                       'appProtocol')

SESSION_AFFINITIES = ('None', 'ClientIP')
TRAFFIC_POLICIES = ('Cluster', 'Local')
#: Default and bounds of ``sessionAffinityConfig.clientIP.timeoutSeconds``.
AFFINITY_TIMEOUT_DEFAULT = 10800
AFFINITY_TIMEOUT_MAX = 86400


def validate_service(chk: Checker, obj: dict) -> None:
    """Check a Service (metadata is checked by the caller); fill defaults."""
    chk.known_fields(obj, '', SERVICE_FIELDS)
    spec = chk.mapping(obj, 'spec', '', required=True)
    if spec is None:
        return
    chk.known_fields(spec, 'spec', SERVICE_SPEC_FIELDS,
                     IGNORED_SERVICE_SPEC_FIELDS)
    service_type = chk.one_of(spec, 'type', 'spec', SERVICE_TYPES,
                              default='ClusterIP')
    _ports(chk, spec, service_type)
    _cluster_ip(chk, spec, service_type)
    _external_name(chk, spec, service_type)
    external_ips = _external_ips(chk, spec)
    external = service_type in EXTERNAL_SERVICE_TYPES or bool(
        service_type == 'ClusterIP' and external_ips)
    chk.string_map(spec, 'selector', 'spec', labels=True)
    _session_affinity(chk, spec)
    chk.one_of(spec, 'internalTrafficPolicy', 'spec', TRAFFIC_POLICIES,
               default='Cluster' if service_type != 'ExternalName' else MISSING)
    policy = chk.one_of(spec, 'externalTrafficPolicy', 'spec',
                        TRAFFIC_POLICIES,
                        default='Cluster' if external else MISSING)
    if policy and service_type and not external:
        chk.error('spec.externalTrafficPolicy',
                  f'may only be set for externally-accessible services '
                  f'(type {" or ".join(EXTERNAL_SERVICE_TYPES)}, or with '
                  f'externalIPs), not {service_type}')
    chk.boolean(spec, 'publishNotReadyAddresses', 'spec', default=False)
    chk.one_of(spec, 'trafficDistribution', 'spec', TRAFFIC_DISTRIBUTIONS)
    _load_balancer(chk, spec, service_type)
    _health_check_node_port(chk, spec, service_type, policy)
    _ignored_fields(chk, spec, service_type)


def _external_name(chk, spec, service_type) -> None:
    """``externalName``: required for (and only used by) an ExternalName
    Service, a DNS-1123 subdomain; a trailing dot marks it fully qualified."""
    name = chk.string(spec, 'externalName', 'spec')
    if service_type != 'ExternalName':
        return
    cname = (name or '').removesuffix('.')
    if not cname:
        chk.error('spec.externalName', 'required value: the DNS name this '
                  'Service is an alias for (e.g. "db.example.com" or '
                  '"web.default.svc.cluster.local")')
        return
    problem = dns1123_subdomain_problem(cname)
    if problem:
        chk.error('spec.externalName', f'Invalid value: {problem}')


def _external_ips(chk, spec) -> list:
    """``externalIPs``: IP addresses the nodes take the Service's ports on, as
    the API server checks them (valid, not unspecified, loopback or
    link-local); kubelab is single-stack, so IPv4."""
    values = chk.sequence(spec, 'externalIPs', 'spec') or []
    for index, value in enumerate(values):
        path = f'spec.externalIPs[{index}]'
        if not isinstance(value, str):
            chk.error(path, f'must be a string, got {describe(value)}')
            continue
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            chk.error(path, f'Invalid value: "{value}": must be a valid IP '
                            f'address, (e.g. 10.9.8.7 or 2001:db8::ffff)')
            continue
        if address.version != 4:
            chk.error(path, f'Invalid value: "{value}": kubelab is '
                            f'single-stack: use an IPv4 address')
            continue
        problem = _special_ip_problem(address)
        if problem:
            chk.error(path, f'Invalid value: "{value}": {problem}')
    return values


def _special_ip_problem(address) -> str | None:
    """The API server's ValidateNonSpecialIP: why ``address`` may not be an
    external IP (or an endpoint), or None."""
    if address.is_unspecified:
        return f'may not be unspecified ({address})'
    if address.is_loopback:
        return 'may not be in the loopback range (127.0.0.0/8, ::1/128)'
    if address in ipaddress.ip_network('169.254.0.0/16'):
        return 'may not be in the link-local range (169.254.0.0/16, fe80::/10)'
    if address in ipaddress.ip_network('224.0.0.0/24'):
        return ('may not be in the link-local multicast range '
                '(224.0.0.0/24, ff02::/10)')
    return None


def _load_balancer(chk, spec, service_type) -> None:
    """``loadBalancerIP``, ``loadBalancerSourceRanges``, ``loadBalancerClass``
    and ``allocateLoadBalancerNodePorts`` (defaulted to true on a LoadBalancer
    Service, as the API server does). An unknown ``service_type`` (already
    reported) is not held against them."""
    balanced = service_type == 'LoadBalancer'
    elsewhere = service_type is not None and not balanced
    address = chk.string(spec, 'loadBalancerIP', 'spec')
    if address and parse_ipv4(address) is None:
        chk.error('spec.loadBalancerIP',
                  f'"{address}" is not a valid IPv4 address; use a free '
                  f'address of the load balancer pool, or leave it out to '
                  f'get one allocated')
    ranges = chk.sequence(spec, 'loadBalancerSourceRanges', 'spec')
    if ranges:
        if elsewhere:
            chk.error('spec.loadBalancerSourceRanges', ONLY_LOAD_BALANCER)
        for index, value in enumerate(ranges):
            problem = _source_range_problem(value)
            if problem:
                chk.error(f'spec.loadBalancerSourceRanges[{index}]', problem)
    lb_class = chk.string(spec, 'loadBalancerClass', 'spec')
    if lb_class is not None and elsewhere:
        chk.error('spec.loadBalancerClass', ONLY_LOAD_BALANCER)
    elif lb_class is not None and label_key_problem(lb_class):
        chk.error('spec.loadBalancerClass', f'Invalid value: "{lb_class}": '
                  f'must be a qualified name, '
                  + label_key_problem(lb_class).split(': ', 1)[1])
    allocate = chk.boolean(spec, 'allocateLoadBalancerNodePorts', 'spec',
                           default=True if balanced else MISSING)
    if allocate is not None and elsewhere:
        chk.error('spec.allocateLoadBalancerNodePorts', ONLY_LOAD_BALANCER)
    elif allocate is False:
        chk.error('spec.allocateLoadBalancerNodePorts',
                  'false is not supported by kubelab: the lab\'s cloud load '
                  'balancer forwards to NodeIP:NodePort, so a LoadBalancer '
                  'Service needs its nodePorts; leave the field out or set '
                  'it to true')


def _source_range_problem(value) -> str | None:
    """Why ``value`` is not an IPv4 range as the API server's strict CIDR
    validation wants it (``10.0.0.0/24``: address, ``/``, prefix length, no
    bits set beyond it, canonical), or None. A range is kept as written, so
    what the load balancer filters on is what the manifest says."""
    if not isinstance(value, str):
        return f'must be a string, got {describe(value)}'
    invalid = f'Invalid value: "{value}": '
    address, slash, _ = value.partition('/')
    if not slash:
        one = parse_ipv4(address)
        hint = f' (for this one address write {one}/32)' if one else ''
        return invalid + SOURCE_RANGES_FORMAT + hint
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return invalid + SOURCE_RANGES_FORMAT
    if network.version != 4:
        return invalid + 'kubelab is single-stack: use IPv4 ranges'
    if network.network_address != ipaddress.ip_address(address):
        return (invalid + f'must not have bits set beyond the prefix length '
                          f'(did you mean "{network}" or "{address}/32"?)')
    if str(network) != value:
        return invalid + f'must be in canonical form ("{network}")'
    return None


def _health_check_node_port(chk, spec, service_type, policy) -> None:
    """``healthCheckNodePort``: a port number, only where the API server
    allows one (a LoadBalancer Service with ``externalTrafficPolicy:
    Local``, the one kind whose load balancer health-checks the nodes).
    Nothing is reported when the type or the policy is itself invalid."""
    port = chk.port(spec, 'healthCheckNodePort', 'spec')
    if port is None or service_type is None or \
            (service_type in EXTERNAL_SERVICE_TYPES and policy is None):
        return
    if (service_type, policy) != ('LoadBalancer', 'Local'):
        chk.error('spec.healthCheckNodePort',
                  f"Invalid value: {port}: may only be set when `type` is "
                  f"'LoadBalancer' and `externalTrafficPolicy` is 'Local'")


def _ignored_fields(chk, spec, service_type) -> None:
    """The API server's checks of fields kubelab keeps but does not use
    (kubelab is IPv4 single-stack: ``clusterIPs`` may only repeat
    ``clusterIP``); an ExternalName Service has no IP family at all."""
    chk.typed(spec, 'spec', IGNORED_SERVICE_SPEC_FIELDS)
    if service_type == 'ExternalName':
        for key in ('ipFamilies', 'ipFamilyPolicy', 'clusterIPs'):
            if spec.get(key):
                chk.error(f'spec.{key}', f'Forbidden: {NOT_FOR_EXTERNAL_NAME}')
        return
    if isinstance(spec.get('ipFamilyPolicy'), str):
        policy = chk.one_of(spec, 'ipFamilyPolicy', 'spec', IP_FAMILY_POLICIES)
        if policy == 'RequireDualStack':
            chk.error('spec.ipFamilyPolicy',
                      'Invalid value: "RequireDualStack": this cluster is not '
                      'configured for dual-stack services (kubelab is '
                      'single-stack IPv4; use SingleStack or PreferDualStack)')
    for index, family in enumerate(spec.get('ipFamilies') or ()):
        if family not in IP_FAMILIES:
            chk.error(f'spec.ipFamilies[{index}]',
                      f'unsupported value {describe(family)}; kubelab is '
                      f'single-stack, supported: {", ".join(IP_FAMILIES)}')
    cluster_ips = spec.get('clusterIPs')
    if isinstance(cluster_ips, list) and cluster_ips:
        first = spec.get('clusterIP')
        if not all(isinstance(ip, str) for ip in cluster_ips):
            chk.error('spec.clusterIPs', 'must be a list of strings')
        elif len(cluster_ips) > 1:
            chk.error('spec.clusterIPs', f'may hold one address, got '
                                         f'{len(cluster_ips)}; kubelab is '
                                         f'single-stack (IPv4)')
        elif first and cluster_ips[0] != first:
            chk.error('spec.clusterIPs[0]',
                      f'Invalid value: "{cluster_ips[0]}": must be the same '
                      f'as spec.clusterIP "{first}"')


def _ports(chk, spec, service_type) -> None:
    """``ports``: required, except on a headless or ExternalName Service (an
    ExternalName Service's ports are unused)."""
    optional = service_type == 'ExternalName' or spec.get('clusterIP') == 'None'
    if optional and not spec.get('ports'):
        spec['ports'] = []
    ports = chk.items(spec, 'ports', 'spec', required=not optional,
                      non_empty=not optional)
    names: set[str] = set()
    seen: set[tuple] = set()
    node_ports: set[tuple] = set()
    for path, port in ports:
        chk.known_fields(port, path, SERVICE_PORT_FIELDS)
        number = chk.port(port, 'port', path, required=True)
        protocol = chk.one_of(port, 'protocol', path, PROTOCOLS,
                              default='TCP', unsupported=UNSUPPORTED_PROTOCOLS)
        name = chk.string(port, 'name', path)
        if name:
            chk.name(name, join(path, 'name'), dns1123_label_problem)
            if name in names:
                chk.error(join(path, 'name'), f'Duplicate value: "{name}"')
            names.add(name)
        elif len(ports) > 1:
            chk.error(join(path, 'name'),
                      'required value: every port needs a name when the '
                      'Service has more than one port')
        if 'targetPort' in port and port['targetPort'] is not None:
            chk.int_or_name(port, 'targetPort', path)
        elif number is not None:
            port['targetPort'] = number
        chk.string(port, 'appProtocol', path)
        _node_port(chk, port, path, service_type, protocol, node_ports)
        if number is not None and protocol is not None:
            if (number, protocol) in seen:
                chk.error(path, f'Duplicate value: port {number}/{protocol} '
                                f'is listed twice')
            seen.add((number, protocol))


def _node_port(chk, port, path, service_type, protocol, taken) -> None:
    """``nodePort``: a port number, only on external types, and not twice
    for one protocol (TCP and UDP may share one, as in Kubernetes)."""
    if port.get('nodePort') is None:
        port.pop('nodePort', None)
        return
    if service_type is not None and \
            service_type not in EXTERNAL_SERVICE_TYPES:
        chk.error(join(path, 'nodePort'),
                  f'may not be used when type is {service_type}')
        return
    number = chk.port(port, 'nodePort', path)
    if number is None or protocol is None:
        return
    if (number, protocol) in taken:
        chk.error(join(path, 'nodePort'), f'Duplicate value: {number}')
    taken.add((number, protocol))


def _cluster_ip(chk, spec, service_type) -> None:
    cluster_ip = chk.string(spec, 'clusterIP', 'spec',
                            default='' if service_type != 'ExternalName'
                            else MISSING)
    if service_type == 'ExternalName':
        if cluster_ip:
            chk.error('spec.clusterIP', f'Forbidden: {NOT_FOR_EXTERNAL_NAME}: '
                      f'an ExternalName Service is a DNS alias without an '
                      f'address of its own; leave clusterIP out')
        spec.pop('clusterIP', None)
        return
    if cluster_ip == 'None' and service_type in EXTERNAL_SERVICE_TYPES:
        chk.error('spec.clusterIP', 'Invalid value: "None": '
                  + HEADLESS_EXTERNAL.format(type=service_type))
    if cluster_ip in ('', 'None', None):
        return
    if parse_ipv4(cluster_ip) is None:
        chk.error('spec.clusterIP',
                  f'"{cluster_ip}" is not a valid IPv4 address; use an '
                  f'address of the Service range, "None" for a headless '
                  f'Service, or leave it empty to get one allocated')


def _session_affinity(chk, spec) -> None:
    affinity = chk.one_of(spec, 'sessionAffinity', 'spec', SESSION_AFFINITIES,
                          default='None')
    config = chk.mapping(spec, 'sessionAffinityConfig', 'spec')
    if affinity == 'None' and config:
        chk.error('spec.sessionAffinityConfig',
                  'must not be set when sessionAffinity is None')
        return
    if affinity != 'ClientIP':
        return
    if config is None:
        config = spec['sessionAffinityConfig'] = {}
    path = 'spec.sessionAffinityConfig'
    chk.known_fields(config, path, ('clientIP',))
    client_ip = chk.mapping(config, 'clientIP', path, default=dict)
    if client_ip is not None:
        cpath = join(path, 'clientIP')
        chk.known_fields(client_ip, cpath, ('timeoutSeconds',))
        chk.integer(client_ip, 'timeoutSeconds', cpath, minimum=1,
                    maximum=AFFINITY_TIMEOUT_MAX,
                    default=AFFINITY_TIMEOUT_DEFAULT)
