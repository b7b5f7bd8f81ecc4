"""The cluster file: the lab's nodes, external clients and subnets.

The file is optional and so is every field in it; what is left out gets the
defaults of ``default_cluster()`` (three nodes, two clients)::

    apiVersion: kubelab.io/v1alpha1
    kind: Cluster
    metadata: {name: kubelab}
    networking: {serviceSubnet: 10.96.0.0/12, podSubnet: 192.168.0.0/16,
                 nodeSubnet: 10.128.0.0/24, externalSubnet: 203.0.113.0/24,
                 loadBalancerPool: 198.51.100.0/24, nodePortRange: 30000-32767}
    nodes:
      - {name: control-plane, role: control-plane}
      - {name: worker-1, role: worker, ip: 10.128.0.12,
         podCIDR: 192.168.2.0/24}
    clients:
      - {name: client-1}
    cloud: kubelab            # the emulated cloud and its load balancer; none: bare metal
    nodeLifecycle: {nodeMonitorGracePeriod: 40s, defaultTolerationSeconds: 300}
    addons: {ingressNginx: {enabled: true}, metallb: {enabled: false}}

``cloud: none`` is a bare-metal cluster: no cloud edge and no health checker; the
external hosts reach the nodes' network through a router, and a LoadBalancer Service
stays ``<pending>`` until something gives it an address: the MetalLB add-on
(``addons.metallb``, on by default there, refused with the cloud) once IPAddressPools
exist. ``nodeLifecycle`` sets kube-controller-manager's node-monitor-grace-period (how
long a node may stay silent before it turns NotReady) and the DefaultTolerationSeconds
admission's tolerationSeconds (how long pods stay on a NotReady or unreachable node
before they are evicted); a class that cannot wait 40 s shortens the first.

Defaults by position (1-based ``i``): node ``i`` gets host ``10+i`` of the
node subnet and the ``i``-th /24 of the pod subnet (``192.168.i.0/24``); its
role is control-plane for the first node and worker for the others. Client
``i`` gets host ``10+i-1`` of the external subnet; its last host address is the cloud
load balancer's health checker. Reserved addresses: ``.1``
of the external subnet (the lab's router), of the node subnet (its gateway)
and of every pod CIDR (the node's pod gateway).

Problems raise ``ValidationError("Cluster <file>", "nodes[1].ip", ...)``; the
first problem found is reported.
"""

import dataclasses
import ipaddress
import re

from services.errors import KubelabError, NotFound, ValidationError
from services.manifests import parse_yaml
from services.validation.common import (choices, describe,
                                      dns1123_label_problem, suggestion)

API_VERSION = 'kubelab.io/v1alpha1'
KIND = 'Cluster'
TOP_LEVEL_FIELDS = ('apiVersion', 'kind', 'metadata', 'networking', 'nodes',
                    'clients', 'addons', 'cloud', 'nodeLifecycle')
ADDON_FIELDS = ('ingressNginx', 'metallb')
INGRESS_ADDON_FIELDS = ('enabled', 'node')
METALLB_ADDON_FIELDS = ('enabled',)
#: ``cloud``: the lab's emulated cloud (a load balancer in front of the nodes), or none.
CLOUDS = ('kubelab', 'none')
NODE_LIFECYCLE_FIELDS = ('nodeMonitorGracePeriod', 'defaultTolerationSeconds')
#: kube-controller-manager's --node-monitor-grace-period and the DefaultTolerationSeconds
#: admission's --default-not-ready-toleration-seconds / -unreachable- (their defaults).
NODE_MONITOR_GRACE_PERIOD = 40.0
DEFAULT_TOLERATION_SECONDS = 300
GRACE_PERIOD_RANGE = (1.0, 3600.0)      # seconds a cluster file may set
#: networking key -> ClusterConfig field, for the subnets.
SUBNET_FIELDS = {'serviceSubnet': 'service_cidr', 'podSubnet': 'cluster_cidr',
                 'nodeSubnet': 'node_cidr', 'externalSubnet': 'external_cidr',
                 'loadBalancerPool': 'lb_pool'}
NETWORKING_FIELDS = tuple(SUBNET_FIELDS) + ('nodePortRange',)
NODE_FIELDS = ('name', 'role', 'ip', 'podCIDR')
CLIENT_FIELDS = ('name', 'ip')
ROLES = ('control-plane', 'worker')
MAX_NODES = 200
NODE_HOST_OFFSET = 10      # node i (1-based) is host 10+i of the node subnet
CLIENT_HOST_OFFSET = 10    # client i (1-based) is host 10+i-1
POD_CIDR_PREFIX = 24       # default per-node pod CIDR size
#: serviceSubnet sizes: /12 at most (as kube-apiserver), /28 at least
#: (the tenth host address is the cluster DNS address).
SERVICE_PREFIXES = (12, 28)
DEFAULT_NODES = ({'name': 'control-plane', 'role': 'control-plane'},
                 {'name': 'worker-1', 'role': 'worker'},
                 {'name': 'worker-2', 'role': 'worker'})
DEFAULT_CLIENTS = ({'name': 'client-1'}, {'name': 'client-2'})


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One Kubernetes node: a Mininet host with its own OVS bridge."""
    name: str
    role: str
    ip: str
    pod_cidr: str
    index: int


@dataclasses.dataclass(frozen=True)
class ClientSpec:
    """One external client host on the external network."""
    name: str
    ip: str


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """The whole cluster file, with every default filled in."""
    name: str = 'kubelab'
    nodes: tuple[NodeSpec, ...] = ()
    clients: tuple[ClientSpec, ...] = ()
    service_cidr: str = '10.96.0.0/12'
    cluster_cidr: str = '192.168.0.0/16'
    node_cidr: str = '10.128.0.0/24'
    external_cidr: str = '203.0.113.0/24'
    external_gateway: str = '203.0.113.1'
    health_checker: str = '203.0.113.254'   # the cloud LB's health checks come from here
    lb_pool: str = '198.51.100.0/24'
    node_port_range: tuple[int, int] = (30000, 32767)
    ingress_node: str | None = None     # where the ingress-nginx controller runs (None: off)
    cloud: str = 'kubelab'              # 'kubelab': the emulated cloud; 'none': bare metal
    metallb: bool = False               # the MetalLB add-on (bare metal only)
    node_monitor_grace_period: float = NODE_MONITOR_GRACE_PERIOD   # seconds
    default_toleration_seconds: int = DEFAULT_TOLERATION_SECONDS

    @property
    def bare_metal(self) -> bool:
        """No cloud: no cloud load balancer in front of the nodes, a router instead."""
        return self.cloud == 'none'

    @property
    def lan_gateway(self) -> str:
        """The router's address on the nodes' network (bare metal): its first host."""
        return str(ipaddress.IPv4Network(self.node_cidr).network_address + 1)

    @property
    def heartbeat_interval(self) -> float:
        """How often a kubelet renews its node's Lease: a quarter of the grace period
        (kubelet renews every 10 s, a quarter of its 40 s lease), at most 10 s."""
        return min(10.0, self.node_monitor_grace_period / 4)

    def node(self, name: str) -> NodeSpec:
        """The node called ``name``; NotFound lists the node names."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise NotFound(f'node "{name}" not found; nodes: '
                       f'{choices(n.name for n in self.nodes)}')

    def client(self, name: str) -> ClientSpec:
        """The external client called ``name``; NotFound lists the clients."""
        for client in self.clients:
            if client.name == name:
                return client
        known = choices(c.name for c in self.clients) or 'none'
        raise NotFound(f'client "{name}" not found; clients: {known}')

    @property
    def dns_ip(self) -> str:
        """The cluster DNS Service's address: the tenth of the Service range."""
        return str(ipaddress.IPv4Network(self.service_cidr).network_address + 10)

    def pod_gateway(self, node: 'NodeSpec | str') -> str:
        """The first address of the node's pod CIDR (its pod gateway)."""
        if isinstance(node, str):
            node = self.node(node)
        network = ipaddress.IPv4Network(node.pod_cidr)
        return str(network.network_address + 1)


class _Parser:
    """Reads the cluster file's data, failing on the first problem."""

    def __init__(self, source: str):
        self.ref = f'Cluster {source}'

    def fail(self, path: str, message: str):
        raise ValidationError(self.ref, path, message)

    def mapping(self, value, path: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f'must be a mapping, got {describe(value)}')
        return value

    def known(self, data: dict, path: str, fields) -> None:
        for key in data:
            if key not in fields:
                where = f'{path}.{key}' if path else str(key)
                hint = suggestion(key, fields) or ';'
                self.fail(where, f'unknown field "{key}"{hint} known '
                                 f'fields: {choices(fields)}')

    def string(self, data: dict, key: str, path: str) -> str | None:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(path, f'must be a string, got {describe(value)}')
        return value

    def network(self, text, path: str) -> ipaddress.IPv4Network:
        if not isinstance(text, str):
            self.fail(path, f'must be a subnet like 10.0.0.0/24, '
                            f'got {describe(text)}')
        try:
            return ipaddress.IPv4Network(text)
        except ValueError:
            pass
        try:
            network = ipaddress.IPv4Network(text, strict=False)
        except ValueError:
            self.fail(path, f'"{text}" is not an IPv4 subnet '
                            f'(e.g. 10.128.0.0/24)')
        self.fail(path, f'"{text}" has host bits set; did you mean '
                        f'{network}?')

    def name(self, data: dict, path: str, names: dict) -> str:
        name = self.string(data, 'name', f'{path}.name')
        if name is None:
            self.fail(f'{path}.name', 'required value')
        problem = dns1123_label_problem(name)
        if problem:
            self.fail(f'{path}.name', problem)
        if name in names:
            self.fail(f'{path}.name', f'Duplicate value: "{name}" is '
                                      f'already used by {names[name]}; node '
                                      f'and client names must be unique')
        names[name] = path
        return name


def _host(network: ipaddress.IPv4Network, offset: int):
    address = network.network_address + offset
    if address >= network.broadcast_address:
        return None
    return address


def _address(p: _Parser, data: dict, path: str, network, default_offset: int,
             subnet_key: str, used: dict) -> str:
    """Check (or default) ``data['ip']``: inside ``network``, not reserved."""
    text = p.string(data, 'ip', f'{path}.ip')
    if text is None:
        address = _host(network, default_offset)
        if address is None:
            p.fail(f'{path}.ip', f'no default address: {subnet_key} '
                                 f'{network} has no host .{default_offset}; '
                                 f'set ip')
    else:
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            p.fail(f'{path}.ip', f'"{text}" is not an IPv4 address')
    valid = f'{network.network_address + 2}-{network.broadcast_address - 1}'
    if address not in network or address in (
            network.network_address, network.broadcast_address):
        p.fail(f'{path}.ip', f'{address} is not a host address of '
                             f'{subnet_key} {network}; valid: {valid}')
    if address == network.network_address + 1:
        p.fail(f'{path}.ip', f'{address} is the gateway of {subnet_key} '
                             f'{network} (reserved for the lab); valid: '
                             f'{valid}')
    if address in used:
        p.fail(f'{path}.ip', f'Duplicate value: {address} is already used by '
                             f'{used[address]}')
    used[address] = path
    return str(address)


def _pod_cidr(p: _Parser, data: dict, path: str, pod_subnet, index: int,
              taken: dict) -> str:
    text = data.get('podCIDR')
    where = f'{path}.podCIDR'
    if text is None:
        if pod_subnet.prefixlen > POD_CIDR_PREFIX or index >= \
                2 ** (POD_CIDR_PREFIX - pod_subnet.prefixlen):
            p.fail(where, f'no default: podSubnet {pod_subnet} has no '
                          f'/{POD_CIDR_PREFIX} number {index}; set podCIDR')
        size = 2 ** (32 - POD_CIDR_PREFIX)
        cidr = ipaddress.IPv4Network(
            (int(pod_subnet.network_address) + index * size, POD_CIDR_PREFIX))
    else:
        cidr = p.network(text, where)
    if not cidr.subnet_of(pod_subnet):
        p.fail(where, f'{cidr} is not inside podSubnet {pod_subnet}')
    if cidr.prefixlen > 30:
        p.fail(where, f'{cidr} is too small: a pod CIDR needs a gateway and '
                      f'pod addresses, use /30 or larger (e.g. /24)')
    for other, other_path in taken.items():
        if cidr.overlaps(other):
            p.fail(where, f'{cidr} overlaps {other} of {other_path}')
    taken[cidr] = path
    return str(cidr)


def _networking(p: _Parser, data: dict) -> dict:
    net = p.mapping(data.get('networking'), 'networking')
    p.known(net, 'networking', NETWORKING_FIELDS)
    defaults = ClusterConfig()
    fields, networks = {}, {}
    for key, attr in SUBNET_FIELDS.items():
        text = net.get(key, getattr(defaults, attr))
        networks[key] = p.network(text, f'networking.{key}')
        fields[attr] = str(networks[key])
    low, high = SERVICE_PREFIXES
    service = networks['serviceSubnet']
    if not low <= service.prefixlen <= high:
        p.fail('networking.serviceSubnet',
               f'{service} has the wrong size: use a prefix from /{low} '
               f'to /{high}')
    for key in ('nodeSubnet', 'externalSubnet', 'podSubnet'):
        if networks[key].prefixlen > 29:
            p.fail(f'networking.{key}', f'{networks[key]} is too small, '
                                        f'use /29 or larger')
    keys = list(networks)
    for i, first in enumerate(keys):
        for second in keys[i + 1:]:
            if networks[first].overlaps(networks[second]):
                p.fail(f'networking.{second}',
                       f'{networks[second]} overlaps networking.{first} '
                       f'({networks[first]}); the subnets must not overlap')
    fields['node_port_range'] = _port_range(p, net.get('nodePortRange'))
    external = networks['externalSubnet']
    fields['external_gateway'] = str(external.network_address + 1)
    fields['health_checker'] = str(external.broadcast_address - 1)
    return fields


def _port_range(p: _Parser, value) -> tuple[int, int]:
    if value is None:
        return ClusterConfig().node_port_range
    match = re.fullmatch(r'\s*(\d+)\s*-\s*(\d+)\s*', str(value)) \
        if isinstance(value, str) else None
    if match:
        first, last = int(match.group(1)), int(match.group(2))
        if 1 <= first <= last <= 65535:
            return first, last
    p.fail('networking.nodePortRange',
           f'{value!r} is not a port range: write FIRST-LAST with '
           f'1 <= FIRST <= LAST <= 65535 (e.g. 30000-32767)')


def _build(data, source: str) -> ClusterConfig:
    p = _Parser(source)
    data = p.mapping(data, '')
    p.known(data, '', TOP_LEVEL_FIELDS)
    if data.get('apiVersion', API_VERSION) != API_VERSION:
        p.fail('apiVersion', f'"{data["apiVersion"]}" is not supported; '
                             f'use {API_VERSION}')
    if data.get('kind', KIND) != KIND:
        p.fail('kind', f'"{data["kind"]}" is not a cluster file; '
                       f'use kind: {KIND}')
    meta = p.mapping(data.get('metadata'), 'metadata')
    p.known(meta, 'metadata', ('name',))
    name = p.string(meta, 'name', 'metadata.name') or 'kubelab'
    if dns1123_label_problem(name):
        p.fail('metadata.name', dns1123_label_problem(name))
    fields = _networking(p, data)
    names: dict = {}
    nodes = _nodes(p, data, fields, names)
    clients = _clients(p, data, fields, names)
    cloud = p.string(data, 'cloud', 'cloud') or 'kubelab'
    if cloud not in CLOUDS:
        p.fail('cloud', f'unsupported value "{cloud}"; supported: {choices(CLOUDS)} '
                        f'(none: a bare-metal cluster without a cloud load balancer)')
    return ClusterConfig(name=name, nodes=nodes, clients=clients, cloud=cloud,
                         ingress_node=_ingress_node(p, data, nodes),
                         metallb=_metallb(p, data, cloud), **_node_lifecycle(p, data),
                         **fields)


def _seconds(p: _Parser, value, path: str) -> float:
    """A duration as kube-controller-manager's flags take it (``40s``, ``1m30s``,
    ``500ms``) or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    parts = re.findall(r'(\d+(?:\.\d+)?)(ms|s|m|h)', value) if isinstance(value, str) else []
    if not parts or ''.join(n + u for n, u in parts) != value:
        p.fail(path, f'{value!r} is not a duration: write e.g. 40s, 1m30s or 500ms')
    units = {'ms': 0.001, 's': 1, 'm': 60, 'h': 3600}
    return sum(float(n) * units[u] for n, u in parts)


def _node_lifecycle(p: _Parser, data: dict) -> dict:
    """``nodeLifecycle``: the node monitor's grace period and the pods' default
    tolerationSeconds for not-ready and unreachable nodes."""
    section = p.mapping(data.get('nodeLifecycle'), 'nodeLifecycle')
    p.known(section, 'nodeLifecycle', NODE_LIFECYCLE_FIELDS)
    path = 'nodeLifecycle.nodeMonitorGracePeriod'
    grace = _seconds(p, section.get('nodeMonitorGracePeriod', NODE_MONITOR_GRACE_PERIOD),
                     path)
    low, high = GRACE_PERIOD_RANGE
    if not low <= grace <= high:
        p.fail(path, f'{grace:g}s is out of range: {low:g}s to {high:g}s (the default, '
                     f'as kube-controller-manager, is {NODE_MONITOR_GRACE_PERIOD:g}s)')
    path = 'nodeLifecycle.defaultTolerationSeconds'
    seconds = section.get('defaultTolerationSeconds', DEFAULT_TOLERATION_SECONDS)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0:
        p.fail(path, f'must be a whole number of seconds >= 0, got {describe(seconds)} '
                     f'(the default is {DEFAULT_TOLERATION_SECONDS})')
    return {'node_monitor_grace_period': grace, 'default_toleration_seconds': seconds}


def _metallb(p: _Parser, data: dict, cloud: str) -> bool:
    """``addons.metallb``: on by default on bare metal; refused with the cloud, whose
    load balancer already serves every LoadBalancer Service."""
    addons = p.mapping(data.get('addons'), 'addons')
    section = p.mapping(addons.get('metallb'), 'addons.metallb')
    p.known(section, 'addons.metallb', METALLB_ADDON_FIELDS)
    enabled = section.get('enabled', cloud == 'none')
    if not isinstance(enabled, bool):
        p.fail('addons.metallb.enabled', f'must be true or false, got {describe(enabled)}')
    if enabled and cloud != 'none':
        p.fail('addons.metallb.enabled', f'MetalLB is for a bare-metal cluster: set '
                                         f'cloud: none (the cloud "{cloud}" gives '
                                         f'LoadBalancer Services their addresses)')
    return enabled


def _ingress_node(p: _Parser, data: dict, nodes: tuple) -> str | None:
    """``addons.ingressNginx``: on by default, on the first worker (else the first node)."""
    addons = p.mapping(data.get('addons'), 'addons')
    p.known(addons, 'addons', ADDON_FIELDS)
    ingress = p.mapping(addons.get('ingressNginx'), 'addons.ingressNginx')
    p.known(ingress, 'addons.ingressNginx', INGRESS_ADDON_FIELDS)
    enabled = ingress.get('enabled', True)
    if not isinstance(enabled, bool):
        p.fail('addons.ingressNginx.enabled', f'must be true or false, got {describe(enabled)}')
    if not enabled:
        return None
    workers = [n.name for n in nodes if n.role == 'worker'] or [nodes[0].name]
    name = p.string(ingress, 'node', 'addons.ingressNginx.node') or workers[0]
    if name not in {n.name for n in nodes}:
        p.fail('addons.ingressNginx.node', f'node "{name}" is not in the cluster; nodes: '
                                           f'{choices(n.name for n in nodes)}')
    return name


def _entries(p: _Parser, data: dict, key: str, default) -> list:
    entries = data.get(key, default)
    if entries is None:
        entries = []
    if not isinstance(entries, (list, tuple)):
        p.fail(key, f'must be a list, got {describe(entries)}')
    return list(entries)


def _nodes(p: _Parser, data: dict, fields: dict, names: dict) -> tuple:
    entries = _entries(p, data, 'nodes', DEFAULT_NODES)
    if not entries:
        p.fail('nodes', 'the cluster needs at least one node')
    if len(entries) > MAX_NODES:
        p.fail('nodes', f'{len(entries)} nodes: at most {MAX_NODES} are '
                        f'supported')
    node_subnet = ipaddress.IPv4Network(fields['node_cidr'])
    pod_subnet = ipaddress.IPv4Network(fields['cluster_cidr'])
    used_ips: dict = {}
    pod_cidrs: dict = {}
    nodes = []
    for position, entry in enumerate(entries):
        path = f'nodes[{position}]'
        entry = p.mapping(entry, path)
        p.known(entry, path, NODE_FIELDS)
        index = position + 1
        name = p.name(entry, path, names)
        role = p.string(entry, 'role', f'{path}.role') or \
            ('control-plane' if position == 0 else 'worker')
        if role not in ROLES:
            p.fail(f'{path}.role', f'unsupported value "{role}"; '
                                   f'supported: {choices(ROLES)}')
        ip = _address(p, entry, path, node_subnet, NODE_HOST_OFFSET + index,
                      'nodeSubnet', used_ips)
        pod_cidr = _pod_cidr(p, entry, path, pod_subnet, index, pod_cidrs)
        nodes.append(NodeSpec(name, role, ip, pod_cidr, index))
    return tuple(nodes)


def _clients(p: _Parser, data: dict, fields: dict, names: dict) -> tuple:
    external = ipaddress.IPv4Network(fields['external_cidr'])
    used_ips: dict = {ipaddress.IPv4Address(fields['health_checker']):
                      "the cloud load balancer's health checker"}
    clients = []
    for position, entry in enumerate(_entries(p, data, 'clients',
                                              DEFAULT_CLIENTS)):
        path = f'clients[{position}]'
        entry = p.mapping(entry, path)
        p.known(entry, path, CLIENT_FIELDS)
        name = p.name(entry, path, names)
        ip = _address(p, entry, path, external, CLIENT_HOST_OFFSET + position,
                      'externalSubnet', used_ips)
        clients.append(ClientSpec(name, ip))
    return tuple(clients)


def default_cluster() -> ClusterConfig:
    """Three nodes (control-plane, worker-1, worker-2) and two clients."""
    return _build({}, '<defaults>')


def load_cluster(text: str, source: str) -> ClusterConfig:
    """Parse and check a cluster file's text (``source`` names it)."""
    documents = [data for _, data in parse_yaml(text, f'Cluster {source}')
                 if data is not None]
    if len(documents) > 1:
        raise ValidationError(f'Cluster {source}', '',
                              f'a cluster file holds one document, found '
                              f'{len(documents)}')
    return _build(documents[0] if documents else {}, source)


def load_cluster_file(path) -> ClusterConfig:
    """Read and check the cluster file at ``path``."""
    try:
        with open(path, encoding='utf-8') as stream:
            text = stream.read()
    except OSError as exc:
        raise KubelabError(f'cannot read cluster file {path}: '
                           f'{exc.strerror}') from None
    return load_cluster(text, str(path))
