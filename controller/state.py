"""What the dataplane needs to know of the cluster, distilled from Kubernetes objects.

``ClusterState.from_objects`` reads the API server's snapshot (Pods, Services,
EndpointSlices, Namespaces, NetworkPolicies) and keeps only what turns into flows: where
each pod lives (with the labels and named ports policies select on), for each Service
port its virtual IP and its ready endpoints, the namespaces' labels and the policies. The same snapshot always gives the
same state, so the flows computed from it are stable. No Ryu import here. Which
endpoints serve a Service port is read as kube-proxy reads it, by services/endpoints.py:
for the Cluster traffic policies the ready endpoints, else (none ready anywhere) the
terminating ones still serving; for the Local policies, node by node, the node's ready
endpoints, else its own serving terminating ones (``node_local``).

A Service port is reached at its ClusterIP and, when the Service has them, at every
node's NodePort, its load balancer address (``status.loadBalancer.ingress``) and its
``spec.externalIPs``. A Service labelled ``service.kubernetes.io/service-proxy-name``
or ``service.kubernetes.io/headless`` is not kube-proxy's: its ports are kept with
``proxied`` false, so that the node bridges give it no flow while the cloud's load
balancer (not kube-proxy) still serves its address.

A node cut off from the API server (``cut_off``: a failed node, or every other node when
the control-plane node fails) keeps the kube-proxy rules it had, as a kube-proxy that
cannot reach the API server does: ``as_seen_by`` gives its switch the state it last had,
with only its MetalLB speaker's announcements (which need no API server) current.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field

from services import networkpolicy
from services.conditions import node_ready
from services.endpoints import (by_service, endpoint_addresses, kube_proxy_ignores,
                                local_endpoint_addresses)

PROTOCOL_NUMBERS = {'TCP': 6, 'UDP': 17}


@dataclass(frozen=True)
class PodNet:
    namespace: str
    name: str
    node: str
    ip: str
    host_ports: tuple = ()      # (protocol, hostPort, containerPort): portmap's DNAT
    labels: tuple = ()          # sorted (key, value): what NetworkPolicies select on
    ports: tuple = ()           # named container ports (name, protocol, number)

    @property
    def owner(self) -> str:
        return f'pod {self.namespace}/{self.name}'

    def label_map(self) -> dict:
        return dict(self.labels)


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str


@dataclass(frozen=True)
class ServicePort:
    """One (Service, port) pair: ``ns/svc/tcp/p80`` in kube-proxy's naming."""
    namespace: str
    service: str
    port_name: str
    protocol: str
    vip: str
    port: int
    endpoints: tuple = ()
    node_port: int | None = None      # type NodePort: this port on every node's IP
    external_local: bool = False      # externalTrafficPolicy: Local
    internal_local: bool = False      # internalTrafficPolicy: Local
    affinity_timeout: int | None = None   # sessionAffinity ClientIP: seconds
    lb_ip: str | None = None          # type LoadBalancer: status.loadBalancer.ingress[0].ip
    source_ranges: tuple = ()         # loadBalancerSourceRanges (empty: everyone)
    external_ips: tuple = ()          # spec.externalIPs
    node_local: tuple = ()            # ((node, endpoints), ...): the Local policies' own
    proxied: bool = True              # False: a label gives the Service to another proxy

    def local_endpoints(self, node_name: str) -> tuple:
        """The endpoints a Local traffic policy uses on ``node_name``: its ready ones,
        else its serving terminating ones (the fallback is per node)."""
        return dict(self.node_local).get(node_name, ())

    @property
    def external_addresses(self) -> tuple:
        """The addresses other than the ClusterIP at which every node catches this port
        (kube-proxy's KUBE-SERVICES -> KUBE-EXT): the load balancer's, the external IPs."""
        return ((self.lb_ip,) if self.lb_ip else ()) + tuple(
            ip for ip in self.external_ips if ip != self.lb_ip)

    @property
    def key(self) -> str:
        return f'{self.namespace}/{self.service}/{self.protocol.lower()}/' \
               f'{self.port_name or "p" + str(self.port)}'

    @property
    def proto_number(self) -> int:
        return PROTOCOL_NUMBERS[self.protocol]


@dataclass
class ClusterState:
    cluster: object
    pods: list = field(default_factory=list)           # [PodNet]
    service_ports: list = field(default_factory=list)  # [ServicePort]
    not_ready: frozenset = frozenset()                 # names of nodes not Ready
    lb_health: dict = field(default_factory=dict)      # (ns, svc) -> healthy node names
    announced: dict = field(default_factory=dict)      # node -> {address: 'ns/svc'}: what
                                                       # its MetalLB speaker answers ARP for
    cut_off: frozenset = frozenset()                   # nodes that cannot reach the API
    namespaces: dict = field(default_factory=dict)     # name -> its labels
    policies: list = field(default_factory=list)       # [networkpolicy.NetworkPolicy]

    def pods_on(self, node_name: str) -> list:
        return [p for p in self.pods if p.node == node_name]

    def lb_targets(self, sp) -> list:
        """The nodes the cloud load balancer sends ``sp``'s connections to: those its
        health checks found answering (kube-proxy's healthz for externalTrafficPolicy
        Cluster, the Service's healthCheckNodePort for Local). Until the first checks
        are in: every Ready node, or (Local) those with an endpoint of their own."""
        healthy = self.lb_health.get((sp.namespace, sp.service))
        if healthy is not None:
            return [n for n in self.cluster.nodes if n.name in healthy]
        nodes = [n for n in self.cluster.nodes if n.name not in self.not_ready]
        if sp.external_local:
            nodes = [n for n in nodes if sp.local_endpoints(n.name)]
        return nodes

    def vips(self) -> dict[str, str]:
        """Every ClusterIP -> the Service that owns it."""
        return {sp.vip: f'{sp.namespace}/{sp.service}' for sp in self.service_ports}

    @property
    def proxied_ports(self) -> list:
        """The Service ports kube-proxy (the node bridges) implements."""
        return [sp for sp in self.service_ports if sp.proxied]

    @classmethod
    def from_objects(cls, cluster, objects: dict) -> 'ClusterState':
        """``objects`` maps a kind ('Pod', 'Service', 'EndpointSlice') to its items."""
        cidrs = {n.name: ipaddress.IPv4Network(n.pod_cidr) for n in cluster.nodes}
        pods = []
        for pod in objects.get('Pod', []):
            ip = pod.get('status', {}).get('podIP')
            node = pod.get('spec', {}).get('nodeName')
            if ip and node in cidrs and _inside(ip, cidrs[node]):
                meta = pod['metadata']
                host_ports = tuple(sorted(
                    (port.get('protocol', 'TCP'), port['hostPort'], port['containerPort'])
                    for c in pod['spec'].get('containers') or []
                    for port in c.get('ports') or [] if port.get('hostPort')))
                pods.append(PodNet(meta.get('namespace', 'default'), meta['name'], node, ip,
                                   host_ports, tuple(sorted((meta.get('labels') or
                                                             {}).items())),
                                   networkpolicy.named_ports(pod['spec'])))
        pods.sort(key=lambda p: (p.node, p.ip))
        slices = by_service(objects.get('EndpointSlice', []))
        ports = []
        for svc in objects.get('Service', []):
            ports.extend(_service_ports(svc, slices))
        ports.sort(key=lambda sp: sp.key)
        not_ready = frozenset(n['metadata']['name'] for n in objects.get('Node', [])
                              if not node_ready(n))
        lb_health = {(h['metadata'].get('namespace', 'default'), h['metadata']['name']):
                     frozenset(h['status']['healthyNodes'])
                     for h in objects.get('LoadBalancerHealth', [])}
        network = next(iter(objects.get('LabNetwork', [])), None)
        cut_off = frozenset((network or {}).get('status', {}).get('cutOff') or ())
        namespaces = {n['metadata']['name']: n['metadata'].get('labels') or {}
                      for n in objects.get('Namespace', [])}
        policies = sorted((networkpolicy.from_object(p)
                           for p in objects.get('NetworkPolicy', [])), key=lambda p: p.key)
        return cls(cluster, pods, ports, not_ready, lb_health,
                   announced=l2_announcements(objects), cut_off=cut_off,
                   namespaces=namespaces, policies=policies)


def as_seen_by(node: str | None, current: ClusterState,
               last: ClusterState | None) -> ClusterState:
    """The state ``node``'s switch is programmed from: the current one, unless the
    node is cut off from the API server; then the one it had (``last``), with the
    speakers' current announcements."""
    if node is None or node not in current.cut_off or last is None:
        return current
    return dataclasses.replace(last, announced=current.announced, cut_off=current.cut_off)


def l2_announcements(objects: dict) -> dict:
    """The MetalLB speakers' announcements (the lab's ``L2Announcement`` objects, one
    per node, topo/metallb.py): node -> {address: 'namespace/service'}."""
    return {a['metadata']['name']: {e['ip']: e['service'] for e in
                                     a['status'].get('addresses') or ()}
            for a in objects.get('L2Announcement', [])}


def _inside(ip: str, net) -> bool:
    """A pod address the node can own (not the network, gateway or broadcast address)."""
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    return addr in net and int(addr) - int(net.network_address) not in (
        0, 1, net.num_addresses - 1)


def _service_ports(svc: dict, slices: dict) -> list:
    spec = svc.get('spec', {})
    vip = spec.get('clusterIP')
    if not vip or vip == 'None' or spec.get('type') == 'ExternalName':
        return []
    meta = svc['metadata']
    ns = meta.get('namespace', 'default')
    ingress = (svc.get('status') or {}).get('loadBalancer', {}).get('ingress') or [{}]
    lb_ip = ingress[0].get('ip') if spec.get('type') == 'LoadBalancer' else None
    external = spec.get('type') in ('NodePort', 'LoadBalancer')
    out = []
    for port in spec.get('ports', []):
        name = port.get('name') or ''
        protocol = port.get('protocol', 'TCP')
        if protocol not in PROTOCOL_NUMBERS:
            continue
        served, local = _served(slices.get((ns, meta['name']), []), (name, protocol))
        out.append(ServicePort(
            ns, meta['name'], name, protocol, vip, port['port'], served,
            node_port=port.get('nodePort') if external else None,
            external_local=spec.get('externalTrafficPolicy') == 'Local',
            internal_local=spec.get('internalTrafficPolicy') == 'Local',
            affinity_timeout=(spec.get('sessionAffinityConfig') or {}).get(
                'clientIP', {}).get('timeoutSeconds', 10800)
            if spec.get('sessionAffinity') == 'ClientIP' else None,
            lb_ip=lb_ip, source_ranges=tuple(spec.get('loadBalancerSourceRanges') or ()),
            external_ips=tuple(spec.get('externalIPs') or ()), node_local=local,
            proxied=not kube_proxy_ignores(svc)))
    return out


def _served(slices: list, port: tuple) -> tuple[tuple, tuple]:
    """kube-proxy's endpoints of one Service port: for the Cluster policies the ready
    ones, else (none anywhere) the terminating ones still serving; for the Local ones,
    per node, ((node, endpoints), ...) with the fallback among the node's own."""
    def endpoints(addresses) -> tuple:
        return tuple(sorted({Endpoint(a.address, a.port, a.node) for a in addresses},
                            key=lambda e: (e.ip, e.port)))
    served = endpoints(endpoint_addresses(slices, port, terminating_fallback=True))
    local = tuple((node, endpoints(addresses)) for node, addresses in
                  local_endpoint_addresses(slices, port).items())
    return served, local
