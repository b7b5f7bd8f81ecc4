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
import functools
import ipaddress
from dataclasses import dataclass, field

from services import networkpolicy
from services.conditions import node_ready
from services.endpoints import (SERVICE_NAME_LABEL, by_service, endpoint_keys,
                                kube_proxy_ignores, local_endpoint_addresses)
from services.store_reads import with_endpoints

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
    selects: str | None = None        # what chooses its endpoints (``selection``): Services
                                      # that select alike may share their groups

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

    @functools.cached_property
    def key(self) -> str:       # (cached in the instance's dict: not a field)
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
    # (the state before, [(its Service port, this one)]): every Service port that
    # changed from it, each only in its endpoints (``StateBuilder``: a pod behind
    # 10,000 Services); None when that is not known.
    moves: tuple | None = field(default=None, compare=False, repr=False)

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

    @functools.cached_property
    def selections(self) -> dict:
        """``selects`` -> (the endpoints of the first proxied Service port without
        session affinity that selects so, in order: the one whose groups the others of
        its kind share when their endpoints are the same; every such Service port):
        see ``shares``."""
        out: dict = {}
        for sp in self.service_ports:
            if sp.selects is not None and sp.proxied and not sp.affinity_timeout:
                hit = out.get(sp.selects)
                if hit is None:
                    out[sp.selects] = (sp.endpoints, [sp])
                else:
                    hit[1].append(sp)
        return out

    def shares(self, sp) -> bool:
        """True when ``sp``'s groups are the ones every Service port that selects the
        same pods alike shares (``selections``): it has no session affinity, and its
        endpoints are those of the first of them (the EndpointSlice controller writes
        each Service's slices in turn, so two such Services can differ for a moment).
        A datapath saving only: kube-proxy's chains are per Service."""
        if sp.selects is None or sp.affinity_timeout or not sp.proxied:
            return False
        first = self.selections.get(sp.selects)
        return first is not None and (first[0] is sp.endpoints or first[0] == sp.endpoints)

    def vips(self) -> dict[str, str]:
        """Every ClusterIP -> the Service that owns it."""
        return {sp.vip: f'{sp.namespace}/{sp.service}' for sp in self.service_ports}

    @functools.cached_property
    def proxied_ports(self) -> list:
        """The Service ports kube-proxy (the node bridges) implements (read by every
        switch's pass: once a state)."""
        return [sp for sp in self.service_ports if sp.proxied]

    @classmethod
    def from_objects(cls, cluster, objects: dict) -> 'ClusterState':
        """``objects`` maps a kind ('Pod', 'Service', 'EndpointSlice') to its items."""
        cidrs = _pod_cidrs(cluster)
        pods = [net for net in (_pod_net(pod, cidrs) for pod in objects.get('Pod', []))
                if net is not None]
        slices = by_service(objects.get('EndpointSlice', []))
        ports = []
        for svc in objects.get('Service', []):
            ports.extend(_service_ports(svc, slices))
        return cls._assemble(cluster, objects, pods, ports,
                             [networkpolicy.from_object(p)
                              for p in objects.get('NetworkPolicy', [])])

    @classmethod
    def _assemble(cls, cluster, objects, pods, ports, policies) -> 'ClusterState':
        pods.sort(key=lambda p: (p.node, p.ip))
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
        policies = sorted(policies, key=lambda p: p.key)
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


def same_dataplane(a: 'ClusterState | None', b: 'ClusterState') -> bool:
    """True when ``b`` gives every switch the same flows as ``a`` because everything
    the pipeline reads is the same; cheap where ``StateBuilder`` kept the very objects of
    what did not change (a pod's status, a Deployment, an Ingress status: at 10,000
    Services such a change no longer costs a recomputation of every switch)."""
    def same(xs, ys):
        return len(xs) == len(ys) and all(x is y or x == y for x, y in zip(xs, ys))
    return a is not None and a.cluster is b.cluster and same(
        a.service_ports, b.service_ports) and same(a.pods, b.pods) and same(
        a.policies, b.policies) and (a.not_ready, a.lb_health, a.namespaces,
                                     a.announced) == (
        b.not_ready, b.lb_health, b.namespaces, b.announced)


def _pod_cidrs(cluster) -> dict:
    return {n.name: ipaddress.IPv4Network(n.pod_cidr) for n in cluster.nodes}


def _pod_net(pod: dict, cidrs: dict) -> PodNet | None:
    """What the dataplane knows of a pod: None until it has an address on its node."""
    ip = pod.get('status', {}).get('podIP')
    node = pod.get('spec', {}).get('nodeName')
    if not (ip and node in cidrs and _inside(ip, cidrs[node])):
        return None
    meta = pod['metadata']
    host_ports = tuple(sorted(
        (port.get('protocol', 'TCP'), port['hostPort'], port['containerPort'])
        for c in pod['spec'].get('containers') or []
        for port in c.get('ports') or [] if port.get('hostPort')))
    return PodNet(meta.get('namespace', 'default'), meta['name'], node, ip, host_ports,
                  tuple(sorted((meta.get('labels') or {}).items())),
                  networkpolicy.named_ports(pod['spec']))


def _service_of(endpoint_slice: dict | None) -> str | None:
    """The Service a slice belongs to (its ``kubernetes.io/service-name`` label)."""
    return ((endpoint_slice or {}).get('metadata', {}).get('labels') or {}).get(
        SERVICE_NAME_LABEL)


class StateBuilder:
    """``ClusterState`` kept up to date from the store's changes (``/lab/v1/changes``):
    a mirror of the objects, and each Pod, Service port list and NetworkPolicy read
    again only when its resourceVersion (for a Service: its own and its slices') moved.
    Unchanged Services keep the very same ``ServicePort`` objects from one state to the
    next, which the pipeline's per-Service memo (controller/pipeline/memo.py) relies on.
    ``state()`` equals ``ClusterState.from_objects`` of the mirror (tests/unit/
    test_state_builder.py)."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.cidrs = _pod_cidrs(cluster)
        self.kinds: dict[str, dict[tuple, dict]] = {}
        self.slices: dict[tuple, dict[str, dict]] = {}    # (ns, service) -> name -> slice
        self.memo: dict[tuple, tuple] = {}    # key -> (signature, value); for a Service
                                              # (version, port_templates, its ports)
        self.dirty: set | None = None     # Services whose ports may have changed (None: all)
        self.moved: list = []     # (old, new) Service ports whose endpoints alone moved
        self.other = False        # a Service came, went or changed itself since
        self.last: ClusterState | None = None     # the state built last

    def apply(self, body: dict) -> None:
        """One answer of ``Store.changes`` (its slices' endpoints by index into the
        answer's table: services/store_reads.py's ``for_proxy``)."""
        with_endpoints(body)
        if body.get('full'):
            self.kinds, self.slices, self.dirty = {}, {}, None
            self.other = True
        for kind, items in body.get('objects', {}).items():
            if kind == 'EndpointSlice' and self.dirty is not None:
                items = self._new_endpoints(items)
            for obj in items:
                meta = obj['metadata']
                self._put((kind, meta.get('namespace', ''), meta['name']), obj)
        for kind, ns, name in body.get('deleted', []):
            self._put((kind, ns, name), None)

    def _new_endpoints(self, items: list) -> list:
        """``_put`` of the slices that only replace a slice of the same Service (new
        endpoints: a pod behind 10,000 Services changes 10,000 of them), inline; the
        others are returned for ``_put``."""
        mirror = self.kinds.setdefault('EndpointSlice', {})
        slices, dirty, rest = self.slices, self.dirty, []
        for obj in items:
            meta = obj['metadata']
            ns, name = meta.get('namespace', ''), meta['name']
            key = ('EndpointSlice', ns, name)
            old = mirror.get(key)
            service = (meta.get('labels') or {}).get(SERVICE_NAME_LABEL)
            if old is None or not service or (old['metadata'].get('labels') or {}).get(
                    SERVICE_NAME_LABEL) != service:
                rest.append(obj)
                continue
            mirror[key] = obj
            dirty.add(('Service', ns, service))
            if ns == 'default':
                dirty.add(('Service', '', service))
            slices[(ns or 'default', service)][name] = obj
        return rest

    def _put(self, key: tuple, obj: dict | None) -> None:
        kind, ns, name = key
        old = self.kinds.setdefault(kind, {}).pop(key, None)
        if obj is not None:
            self.kinds[kind][key] = obj
        if kind == 'Service' and self.dirty is not None:
            self.dirty.add(key)
            if old is None or obj is None:
                self.other = True
        if kind == 'EndpointSlice':
            service = _service_of(obj)
            if old is not None and obj is not None and service and \
                    _service_of(old) == service:      # the common case: new endpoints
                if self.dirty is not None:
                    self.dirty.add(('Service', ns, service))
                    if ns == 'default':
                        self.dirty.add(('Service', '', service))
                self.slices[(ns or 'default', service)][name] = obj
                return
            for sl, drop in ((old, True), (obj, False)):
                service = _service_of(sl)
                if service and self.dirty is not None:
                    self.dirty.update((('Service', ns, service),
                                       ('Service', '' if ns == 'default' else ns, service)))
                if service:
                    mine = self.slices.setdefault((ns or 'default', service), {})
                    if drop:
                        mine.pop(name, None)
                    else:
                        mine[name] = sl

    def _memo(self, key, signature, compute):
        hit = self.memo.get(key)
        if hit is not None and hit[0] == signature:
            return hit[1]
        value = compute()
        if hit is not None and hit[1] == value:
            value = hit[1]          # equal: keep the very objects (as ``_service`` does)
        self.memo[key] = (signature, value)
        return value

    def _service(self, key, svc: dict, hit: tuple | None) -> tuple:
        """(its resourceVersion, its ``port_templates``, its Service ports) for Service
        ``key``, whose object or slices changed: the templates read again only when its
        resourceVersion moved, the endpoints read from its slices (``_served``, once per
        set of endpoint objects), and the very Service ports of ``hit`` kept when every
        port has the endpoints it had (a pod that is not ready yet changes 10,000
        slices but no endpoint; the pipeline's memo knows Service ports by identity).
        A Service port whose template stayed and whose endpoints moved is recorded in
        ``moved`` with the one it replaces (``ClusterState.moves``)."""
        version = svc['metadata'].get('resourceVersion')
        kept = hit is not None and hit[0] == version
        templates = hit[1] if kept else port_templates(svc)
        mine = self.slices.get((key[1] or 'default', key[2]), {})
        slices = list(mine.values()) if len(mine) < 2 else [mine[n] for n in sorted(mine)]
        served = [_served(slices, port, local, memo=True) for _, port, local in templates]
        if kept:
            old = hit[2]
            if all((sp.endpoints is endpoints or sp.endpoints == endpoints)
                   and sp.node_local == local
                   for sp, (endpoints, local) in zip(old, served)):
                return hit
        ports = [_with_endpoints(template, *endpoints)
                 for (template, _, _), endpoints in zip(templates, served)]
        if kept:
            self.moved.extend(zip(old, ports))
        else:
            self.other = True
        entry = self.memo[key] = (version, templates, ports)
        return entry

    def state(self) -> 'ClusterState':
        try:
            return self._state()
        except BaseException:       # (the caller goes on): read everything again next time
            self.dirty, self.moved, self.other = None, [], True
            raise

    def _state(self) -> 'ClusterState':
        used = {}
        pods, ports, policies = [], [], []
        for key, pod in self.kinds.get('Pod', {}).items():
            net = self._memo(key, pod['metadata'].get('resourceVersion'),
                             lambda pod=pod: _pod_net(pod, self.cidrs))
            used[key] = self.memo[key]
            if net is not None:
                pods.append(net)
        dirty, self.dirty = self.dirty, set()
        for key, svc in self.kinds.get('Service', {}).items():
            hit = self.memo.get(key)
            if dirty is None or key in dirty or hit is None:
                hit = self._service(key, svc, hit)
            ports.extend(hit[2])
            used[key] = hit
        for key, policy in self.kinds.get('NetworkPolicy', {}).items():
            policies.append(self._memo(key, policy['metadata'].get('resourceVersion'),
                                       lambda policy=policy: networkpolicy.from_object(policy)))
            used[key] = self.memo[key]
        self.memo = used
        objects = {kind: list(self.kinds.get(kind, {}).values())
                   for kind in ('Node', 'LoadBalancerHealth', 'Namespace', 'LabNetwork',
                                'L2Announcement')}
        state = ClusterState._assemble(self.cluster, objects, pods, ports, policies)
        if self.last is not None:
            self.last.moves = None          # (no chain of every state before)
            if not self.other:
                state.moves = (self.last, self.moved)
        self.moved, self.other, self.last = [], False, state
        return state


def _inside(ip: str, net) -> bool:
    """A pod address the node can own (not the network, gateway or broadcast address)."""
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    return addr in net and int(addr) - int(net.network_address) not in (
        0, 1, net.num_addresses - 1)


def _service_ports(svc: dict, slices: dict) -> list:
    """The Service's ports with their endpoints from ``slices`` (a snapshot's; the
    ``StateBuilder`` keeps the templates and reads the endpoints itself)."""
    templates = port_templates(svc)
    if not templates:
        return []
    meta = svc['metadata']
    mine = slices.get((meta.get('namespace', 'default'), meta['name']), [])
    return [_with_endpoints(template, *_served(mine, port, local_policy))
            for template, port, local_policy in templates]


def port_templates(svc: dict) -> list[tuple]:
    """Per port of the Service that kube-proxy reads: (its ServicePort without
    endpoints, the (name, protocol) its slices' ports carry, whether a Local policy
    reads its endpoints per node). What a Service object alone decides; a change of
    its slices alone keeps them (``StateBuilder``)."""
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
        external_local = spec.get('externalTrafficPolicy') == 'Local'
        internal_local = spec.get('internalTrafficPolicy') == 'Local'
        template = ServicePort(
            ns, meta['name'], name, protocol, vip, port['port'],
            node_port=port.get('nodePort') if external else None,
            external_local=external_local, internal_local=internal_local,
            affinity_timeout=(spec.get('sessionAffinityConfig') or {}).get(
                'clientIP', {}).get('timeoutSeconds', 10800)
            if spec.get('sessionAffinity') == 'ClientIP' else None,
            lb_ip=lb_ip, source_ranges=tuple(spec.get('loadBalancerSourceRanges') or ()),
            external_ips=tuple(spec.get('externalIPs') or ()),
            proxied=not kube_proxy_ignores(svc), selects=selection(ns, spec, port))
        template.key               # computed once, carried to every copy
        out.append((template, (name, protocol), external_local or internal_local))
    return out


def _with_endpoints(template: ServicePort, endpoints: tuple, node_local: tuple):
    """``template`` with these endpoints: a copy of its fields (and its cached key)
    without ``__init__``, which costs several times more and is all a pod behind
    10,000 Services costs here. The fields are set before anyone sees the object."""
    sp = object.__new__(ServicePort)
    fields = sp.__dict__
    fields.update(template.__dict__)
    fields['endpoints'] = endpoints
    fields['node_local'] = node_local
    fields['template'] = template   # not a field: Service ports from one template
    return sp                        # differ in their endpoints alone (``same_shape``)


def same_shape(a: ServicePort, b: ServicePort) -> bool | None:
    """True when ``a`` and ``b`` were built from the same template (every field but
    their endpoints is the same object); None when that cannot tell."""
    first = a.__dict__.get('template')
    return True if first is not None and first is b.__dict__.get('template') else None


def selection(namespace: str, spec: dict, port: dict) -> str | None:
    """What chooses a Service port's endpoints, as a key (None: no selector, its slices
    are someone's own): its namespace, selector, target port and protocol, and whether
    unready pods are published. The EndpointSlice controller gives Service ports that
    select alike the same endpoints (services/controllers/endpointslices.py memoizes
    them on the same terms)."""
    selector = spec.get('selector')
    if not selector or not isinstance(selector, dict):
        return None
    labels = ','.join(f'{k}={v}' for k, v in sorted(selector.items()))
    target = port.get('targetPort', port.get('port'))
    ready = ' (with unready pods)' if spec.get('publishNotReadyAddresses') else ''
    return f'{namespace}/{labels} -> {target}/{port.get("protocol", "TCP")}{ready}'


@functools.lru_cache(maxsize=65536)
def _endpoint(ip: str, port: int, node: str) -> Endpoint:
    """One object per endpoint, shared by every Service port it serves (a pod behind
    10,000 Services): compared by identity first, built once."""
    return Endpoint(ip, port, node)


@functools.lru_cache(maxsize=65536)
def _endpoints(keys: tuple) -> tuple:
    """One tuple per set of endpoints, shared by every Service port over the same pods
    (the incremental path then builds their groups' buckets once)."""
    return tuple(_endpoint(*key) for key in keys)


_SERVED: dict = {}       # _served's memo: key -> (the endpoint objects it read, answer)


def _served(slices: list, port: tuple, local_policy: bool,
            memo: bool = False) -> tuple[tuple, tuple]:
    """kube-proxy's endpoints of one Service port: for the Cluster policies the ready
    ones, else (none anywhere) the terminating ones still serving; for the Local ones
    (only when ``local_policy``: nothing else reads them), per node, ((node,
    endpoints), ...) with the fallback among the node's own.

    Read once per set of endpoint objects: the slices of Services over the same pods
    share them (the store's controller gives them the same objects, the change stream
    sends each once, and ``with_endpoints`` gives slices with the same ones one list),
    so a pod behind 10,000 Services is one read, not 10,000 (their ports lists are
    shared the same way). The memo holds the lists it keyed by id (an id stays
    theirs); only ``StateBuilder`` asks for it (``memo``), whose lists nothing changes."""
    if not memo:
        return _read_served(slices, port, local_policy)
    try:
        key = (port, local_policy, id(slices[0]['ports']), id(slices[0]['endpoints'])) \
            if len(slices) == 1 else (port, local_policy, tuple(
                (id(sl['ports']), id(sl['endpoints'])) for sl in slices))
    except (KeyError, TypeError):          # not the shape of a valid slice
        return _read_served(slices, port, local_policy)
    hit = _SERVED.get(key)
    if hit is None:
        if len(_SERVED) >= 65536:
            _SERVED.clear()
        hit = _SERVED[key] = ([(sl['ports'], sl['endpoints']) for sl in slices],
                              _read_served(slices, port, local_policy))
    return hit[1]


def _read_served(slices: list, port: tuple, local_policy: bool) -> tuple[tuple, tuple]:
    def endpoints(keys) -> tuple:
        return _endpoints(tuple(sorted(dict.fromkeys(keys), key=lambda k: (k[0], k[1]))))
    served = endpoints(endpoint_keys(slices, port, terminating_fallback=True))
    local = tuple((node, endpoints((a.address, a.port, a.node) for a in addresses))
                  for node, addresses in local_endpoint_addresses(slices, port).items()) \
        if local_policy else ()
    return served, local
