"""The lab daemon: one running emulated cluster, from ``kubelab up`` to ``kubelab down``.

It wires the parts together in the order a cluster boots: clean what a crashed run left
(only what carries this lab's mark), make sure Open vSwitch runs, start the API server
(store + controllers, with the objects a crashed daemon saved), start the Ryu controller
(kube-proxy), build the Mininet network and wait until every switch carries its flows,
open the API endpoint on the control-plane node and start every node's heartbeats
through the network (topo/heartbeat.py), start one kubelet per node (and, on bare
metal, MetalLB's speakers), apply the user's manifests, and say it is ready. On SIGTERM,
SIGINT or ``POST /lab/v1/shutdown`` it takes everything down again and removes what it
created, nothing else. ``python -m kubelab.daemon`` takes the instance locks
(instance.py) before any of this, so a second lab never cleans up the first.

State lives in ``$KUBELAB_STATE_DIR`` (default /run/kubelab, checked by statedir.py):
the API socket and token, the OpenFlow socket, the pid registry, the saved objects,
the controller's and the daemon's logs, the pods' logs.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading

from kubelab.daemon import persist
from kubelab.daemon.statedir import STATE_DIR, append_fd, lab_mark, state_path, write_file
from services import dns_inputs, transport
from services.allocation.load_balancer_ips import is_load_balancer
from services.endpoints import SERVICE_NAME_LABEL
from services.errors import KubelabError
from services.watch import WRITER_SETTLE, follow
from topo import cloudlb

LOG = logging.getLogger('kubelab.daemon')


def cluster_document(cluster) -> dict:
    """The cluster file that describes ``cluster`` (what the controller is given)."""
    lo, hi = cluster.node_port_range
    return {
        'apiVersion': 'kubelab.io/v1alpha1', 'kind': 'Cluster',
        'metadata': {'name': cluster.name},
        'networking': {'serviceSubnet': cluster.service_cidr,
                       'podSubnet': cluster.cluster_cidr, 'nodeSubnet': cluster.node_cidr,
                       'externalSubnet': cluster.external_cidr,
                       'loadBalancerPool': cluster.lb_pool, 'nodePortRange': f'{lo}-{hi}'},
        'nodes': [{'name': n.name, 'role': n.role, 'ip': n.ip, 'podCIDR': n.pod_cidr}
                  for n in cluster.nodes],
        'clients': [{'name': c.name, 'ip': c.ip} for c in cluster.clients],
        'cloud': cluster.cloud,
        'nodeLifecycle': {'nodeMonitorGracePeriod': cluster.node_monitor_grace_period,
                          'defaultTolerationSeconds': cluster.default_toleration_seconds},
        'addons': {'ingressNginx': {'enabled': bool(cluster.ingress_node),
                                    **({'node': cluster.ingress_node}
                                       if cluster.ingress_node else {})},
                   'metallb': {'enabled': cluster.metallb}},
    }


def ensure_openvswitch():
    """Start the Open vSwitch the lab runs on (topo/ovs.py) when it does not answer, and
    put its programs first on the PATH of everything the lab runs."""
    from topo import ovs
    try:
        return ovs.start()
    except RuntimeError as exc:
        raise KubelabError(str(exc)) from None


class Lab:
    def __init__(self, cluster, manifests: list[dict]):
        self.cluster = cluster
        self.manifests = manifests
        self.done = threading.Event()
        self.agents = []
        self.heartbeats = {}           # node name -> its kubelet's Lease renewals
        self.speakers = []             # MetalLB's, on bare metal
        self.lease_endpoint = None
        self.failed_nodes: set[str] = set()
        self.proxy_health = []         # kube-proxy's health servers, one per node
        self.checker = None            # the cloud load balancer's health checks
        self.network = None
        self.controller = None
        self.api = None
        self.store = None
        self.registry = None
        self.l7 = None
        self.dns_records = None
        self.cgroups = None
        self._dns_version = None      # the store version of the kinds the records read
        self._dns_pending = (False, False)   # (records file, pods file) a failed run left
        self._dns_inputs = None       # what they read (services/dns_inputs.py)
        self.saver = None
        self.ofp_socket = None
        self.openvswitch = None       # which Open vSwitch runs the lab (topo/ovs.py)
        self.openvswitch_prefix = None  # its prefix when it is the lab's own build

    # ------------------------------------------------------------ up
    def up(self):
        from controller.pipeline import TABLE_NAMES
        from controller.pipeline.tables import conntrack_zones
        from kubelab.daemon.apiserver import APIServer
        from services.store import Store
        from topo.cgroups import LabCgroups
        from topo.cleanup import PidRegistry, clean_leftovers, start_time
        from topo.kubelet import NodeAgent
        from topo.network import LabNetwork, controller_socket

        if os.geteuid() != 0:
            raise KubelabError('the lab needs root (network namespaces and Open vSwitch): '
                               'run it with sudo')
        for tool in ('mnexec', 'ethtool', 'busybox', 'bwrap', 'nsenter', 'unshare',
                     'setpriv'):
            if shutil.which(tool) is None:
                raise KubelabError(f'{tool} is missing: run `make install` as root')
        ovs = ensure_openvswitch()
        self.openvswitch = ovs.describe()
        self.openvswitch_prefix = ovs.prefix if ovs.own else None
        for what in clean_leftovers(state_path('pids'), lab_mark(), skip_pid=os.getpid(),
                                    cgroups_record=state_path('cgroups.json')):
            LOG.warning('removed leftovers of an earlier run: %s', what)
        shutil.rmtree(state_path('pods'), ignore_errors=True)
        self.cgroups = LabCgroups.create(state_path('cgroups.json'))
        write_file(state_path('daemon.pid'), f'{os.getpid()} {start_time(os.getpid())}'
                   .encode())
        self.registry = PidRegistry(state_path('pids'))
        token = secrets.token_hex(24)
        write_file(state_path('token'), token.encode())
        doc = cluster_document(self.cluster)
        write_file(state_path('cluster.json'), json.dumps(doc).encode())
        write_file(state_path('openvswitch.json'), json.dumps(
            {'prefix': self.openvswitch_prefix, 'description': self.openvswitch}).encode())

        self.store = Store(self.cluster)
        self._dns_inputs = dns_inputs.DNSInputs(self.store)
        self._restore(doc)
        self.api = APIServer(self.store, token, self.lab_info, self.done.set,
                             path=state_path(transport.SOCKET_NAME),
                             on_node_network=self.node_network, proxies=self.proxies,
                             after_write=self.saver.save, on_node_kubelet=self.node_kubelet,
                             pod_metrics=self.pod_metrics)
        self.api.start()

        self.ofp_socket = controller_socket()
        self._start_controller(state_path(transport.SOCKET_NAME), self.ofp_socket)
        self.network = LabNetwork(self.cluster, 'unix:' + self.ofp_socket, lab_mark(),
                                  table_names=TABLE_NAMES,
                                  conntrack_zones=conntrack_zones(self.cluster),
                                  recirculation_limit=ovs.recirculation_limit())
        self.network.start()
        for host in self.network.net.hosts:
            self.registry.add(host.pid, f'host {host.name}')
        switches = len(self.network.net.switches)
        if not self.api.wait_dataplane(self.store.rv, switches, timeout=60):
            raise KubelabError('the switches did not get their flows within 60 s: see '
                               + state_path('controller.log'))
        busybox_dir = state_path('busybox-bin')
        os.makedirs(busybox_dir, exist_ok=True)
        subprocess.run(['busybox', '--install', '-s', busybox_dir], check=True)
        self._start_heartbeats()
        for node in self.cluster.nodes:
            beat = self.heartbeats[node.name]
            agent = NodeAgent(node, self.store, self.network, self.registry, STATE_DIR,
                              busybox_dir, self.cgroups,
                              api_reachable=lambda beat=beat: beat.connected)
            agent.start()
            self.agents.append(agent)
        self._start_cloud()
        self._start_metallb()
        self._start_dns()
        self._start_l7()
        if self.manifests:
            result = self.store.apply(self.manifests)
            for ref, action in result['results']:
                LOG.info('%s %s', ref, action)
        self.saver.save()
        self.saver.follow(self.done)

    def _restore(self, cluster_doc: dict):
        """The objects a daemon that died without ``kubelab down`` saved, back in the
        store (services/persistence.py: pods start again, with new IPs)."""
        self.saver = persist.Saver(self.store, cluster_doc, state_path(persist.SAVED_NAME))
        document = persist.load(self.saver.path, cluster_doc)
        if document is None:
            return
        problems = self.store.restore(document)
        for problem in problems:
            LOG.error('restoring: %s', problem)
        LOG.warning('restored %d objects saved by the lab that stopped without '
                    '`kubelab down`; their pods start again with new IPs',
                    len(document['objects']))

    def _start_controller(self, api_socket: str, ofp_socket: str):
        env = dict(os.environ, KUBELAB_API_SOCKET=api_socket,
                   KUBELAB_TOKEN_FILE=state_path('token'),
                   KUBELAB_CLUSTER_FILE=state_path('cluster.json'),
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        log = append_fd(state_path('controller.log'))
        try:
            self.controller = subprocess.Popen(
                [sys.executable, '-m', 'controller.ryu_app', '--ofp-socket', ofp_socket],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)
        finally:
            os.close(log)
        self.registry.add(self.controller.pid, 'controller')
        self._controller_args = (api_socket, ofp_socket)

    # ------------------------------------------------------------ heartbeats
    def _start_heartbeats(self):
        """The API endpoint on the control-plane node's address, and every node's
        kubelet renewing its Lease there through the lab's network."""
        from topo.heartbeat import Heartbeat, LeaseEndpoint
        from topo.netns import netns_executor
        control = self._control_plane()
        executor = netns_executor(self.network.node_host(control.name).pid, workers=1,
                                  name='api-endpoint')
        self.lease_endpoint = LeaseEndpoint(self.store, control.ip, executor)
        executor.shutdown(wait=False)
        for node in self.cluster.nodes:
            beat = Heartbeat(node.name, self.network.node_host(node.name).pid, control.ip,
                             self.cluster.heartbeat_interval)
            self.heartbeats[node.name] = beat
            if not beat.start():
                LOG.warning('node %s: its first heartbeat did not get through', node.name)

    def _start_metallb(self):
        """MetalLB's speakers (its controller runs in the store), one per node."""
        if not self.cluster.metallb:
            return
        from topo.metallb import Speaker
        for node in self.cluster.nodes:
            beat = self.heartbeats[node.name]
            speaker = Speaker(node, self.cluster, self.network.node_host(node.name).pid,
                              self.store, lambda beat=beat: beat.connected)
            speaker.start()
            self.speakers.append(speaker)

    def node_kubelet(self, name: str, running: bool) -> str:
        """``kubelab node stop-kubelet|start-kubelet``: the node's kubelet stops (no
        heartbeats, no syncs; its pods keep running) or starts again."""
        self.cluster.node(name)                 # NotFound names the nodes
        agent = next(a for a in self.agents if a.node.name == name)
        beat = self.heartbeats[name]
        if running:
            beat.resume()
            agent.resume()
            return f'node/{name}: kubelet started'
        agent.pause()
        beat.pause()
        return f'node/{name}: kubelet stopped (its pods keep running)'

    # ------------------------------------------------------------ the cloud
    def _start_cloud(self):
        """kube-proxy's health servers on every node, and the cloud load balancer's
        health checks from its own host outside the cluster; what they find goes to the
        store (LoadBalancerHealth), which the controller turns into the edge's targets."""
        from topo.netns import netns_executor
        for node in self.cluster.nodes:
            pid = self.network.node_host(node.name).pid
            self.proxy_health.append(cloudlb.ProxyHealthServer(
                node.name, netns_executor(pid, workers=1, name=f'healthz-{node.name}')))
        if not self.cluster.bare_metal:         # bare metal: no cloud health checks
            checker_pid = self.network.health_checker_host().pid
            self.checker = cloudlb.HealthChecker(netns_executor(checker_pid, workers=8,
                                                                name='lb-health-checks'),
                                                 self._publish_health)
            self.checker.start()
        threading.Thread(target=self._sync_cloud, name='cloud-lb', daemon=True).start()

    # ------------------------------------------------------------ cluster DNS
    def _start_dns(self):
        """kube-dns at the tenth address of the Service range, two coredns pods behind
        it, answering from the records file this daemon rewrites on every change and
        the pods' file beside it (a pod's new address rewrites that one alone)."""
        from services import addons
        self.dns_records = state_path('dns', 'records.json')
        os.makedirs(os.path.dirname(self.dns_records), exist_ok=True)
        self._write_dns()
        self.store.apply(addons.dns_objects(self.cluster.dns_ip, self.dns_records))
        threading.Thread(target=self._sync_dns, name='dns', daemon=True).start()

    def _write_dns(self) -> bool:
        from services import dns
        from topo.l7files import write_if_changed
        version = self.store.version_of(dns_inputs.KINDS)
        if version == self._dns_version:     # nothing it reads changed: same records
            return False
        pending = self._dns_pending        # files a failed run left to write
        if not any(pending) and self._dns_inputs.unchanged():
            self._dns_version = version      # a pod's readiness, a ClusterIP's slices
            return False
        objects = self._dns_inputs.objects()
        networks = (self.cluster.service_cidr, self.cluster.cluster_cidr)
        moved = self._dns_inputs.files_moved()
        records, pods = self._dns_pending = (moved[0] or pending[0], moved[1] or pending[1])
        written = False
        # By rename: the DNS servers never read half a file.
        if pods:
            written |= write_if_changed(dns.pod_records_path(self.dns_records), dns.encode(
                dns.pod_records(objects['Pod'], networks=networks)))
            self._dns_pending = (records, False)
        if records:
            written |= write_if_changed(self.dns_records, dns.encode(dns.records(
                objects, networks=networks, memo=self._dns_inputs.memo, pods=False)))
        self._dns_pending = (False, False)
        self._dns_version = version
        return written

    def _sync_dns(self):
        # A failure keeps answering the old records; the next change retries.
        follow(self.store, self.done, self._write_dns, 'writing the DNS records',
               settle=WRITER_SETTLE, log=LOG)

    # ------------------------------------------------------------ Ingress, Gateway API
    def _start_l7(self):
        """The lab's own add-ons (ingress-nginx on the cluster file's node, the
        GatewayClass), and the controller that renders their nginx configuration."""
        from services import addons
        from services.l7.controller import L7Controller
        from topo.l7files import L7Files
        objects = [addons.gateway_class_object()]
        if self.cluster.ingress_node:
            objects = addons.ingress_nginx_objects(self.cluster.ingress_node) + objects
        self.store.apply(objects)
        l7_dir = state_path('l7')
        shutil.rmtree(l7_dir, ignore_errors=True)       # a crashed run's configurations
        self.l7 = L7Controller(self.store, L7Files(l7_dir),
                               ingress=bool(self.cluster.ingress_node))
        threading.Thread(target=self._sync_l7, name='l7', daemon=True).start()

    def proxies(self) -> dict | None:
        return self.l7.proxies() if self.l7 is not None else None

    def _sync_l7(self):
        # No settle: `kubelab wait` waits for the proxies' version (its check of a
        # change no Ingress, route or Gateway reads is one shared pass: changed_with_label).
        follow(self.store, self.done, self.l7.sync, 'syncing Ingress and Gateway API',
               log=LOG)

    def _publish_health(self, key: str, healthy: list[str]):
        namespace, name = key.split('/', 1)
        self.store.set_lb_health(namespace, name, healthy)

    def _sync_cloud(self):
        keys = set()             # the load balancers checked, to forget the ones gone
        seen = None              # the version of what the step read last time
        read = (None, [], set())  # (Services' version, the Services, those checked)
        since = 0                # the store's version at the last step

        def step():
            nonlocal keys, seen, read, since
            version = self.store.version_of(('Service', 'EndpointSlice'))
            last, since = since, self.store.rv
            if version == seen:
                return           # the health checks go on by themselves
            # At 10,000 Services a pod's readiness changes 10,000 slices and no Service:
            # the Services are read again only when one changed, the slices only when a
            # Service's health check counts its endpoints (externalTrafficPolicy Local).
            services_version = self.store.version_of(('Service',))
            changed = services_version != read[0]
            if changed:          # (the cloud reads only the LoadBalancers)
                services = self.store.view('Service', where=is_load_balancer)
                checked = cloudlb.health_checked(services)
            else:
                _, services, checked = read
            if changed or checked and _checked_slices_moved(self.store, last, checked):
                slices = self.store.view(      # only the slices the health checks read
                    'EndpointSlice', where=lambda s: cloudlb.slice_service(s) in checked)
                for server in self.proxy_health:
                    server.sync(services, slices)
            if self.checker is not None and changed:
                targets = cloudlb.health_check_targets(self.cluster, services)
                self.checker.set_targets(targets)
                for key in keys - set(targets):
                    self.store.set_lb_health(*key.split('/', 1), None)
                keys = set(targets)
            read = (services_version, services, checked)
            seen = version
        # No settle: a Service's health check node port answers as soon as it can.
        follow(self.store, self.done, step, 'syncing the cloud load balancer', log=LOG)

    def node_network(self, name: str, up: bool) -> str:
        """``kubelab node fail|restore``: the node's cable to the underlay cut or put back.
        Its pods, kubelet and flows carry on; only the network cannot reach it, as in a
        network partition or a node that stopped answering."""
        self.cluster.node(name)                 # NotFound names the nodes
        self.network.set_uplink(name, up)
        if up:
            self.failed_nodes.discard(name)
        else:
            self.failed_nodes.add(name)
        control = self._control_plane()
        cut_off = {n.name for n in self.cluster.nodes if n.name != control.name and (
            n.name in self.failed_nodes or control.name in self.failed_nodes)}
        self.store.set_lab_network(sorted(self.failed_nodes), sorted(cut_off))
        for beat in self.heartbeats.values():
            beat.poke()                     # a cable back: TCP gets through again at once
        return f'node/{name} ' + ('restored' if up else 'failed: cut off the network')

    def _control_plane(self):
        return next((n for n in self.cluster.nodes if n.role == 'control-plane'),
                    self.cluster.nodes[0])

    def lab_info(self) -> dict:
        from services import wiring
        net = self.network
        nodes, hosts, sandboxes, containers = [], [], {}, {}
        if net is not None and net.net is not None:
            for node in self.cluster.nodes:
                nodes.append({'name': node.name, 'ip': node.ip, 'role': node.role,
                              'bridge': wiring.node_bridge(node),
                              'pid': net.node_host(node.name).pid})
            for client in self.cluster.clients:
                hosts.append({'name': client.name, 'ip': client.ip,
                              'pid': net.client_host(client.name).pid})
        for agent in self.agents:
            for uid, rt in list(agent.pods.items()):
                sandboxes[uid] = rt.host.pid
            containers.update(agent.containers_info())
        router = net.router_host() if net is not None and net.net is not None else None
        return {'nodes': nodes, 'hosts': hosts, 'sandboxes': sandboxes,
                'containers': containers,
                'switches': len(wiring.all_bridges(self.cluster)),
                'router': {'name': wiring.ROUTER_HOST, 'pid': router.pid} if router else None,
                'cloud': self.cluster.cloud,
                'nodeMonitorGracePeriod': self.cluster.node_monitor_grace_period,
                'datapath': net.datapath if net else None,
                'offloads': net.offloads if net else None,
                'openvswitch': self.openvswitch,
                'openvswitchPrefix': self.openvswitch_prefix,
                'controllerPid': self.controller.pid if self.controller else None,
                'failedNodes': sorted(self.failed_nodes),
                'stoppedKubelets': sorted(n for n, b in self.heartbeats.items()
                                          if not b.running),
                'ofpSocket': self.ofp_socket,
                'stateDir': STATE_DIR}

    def pod_metrics(self) -> list[dict]:
        return [m for agent in self.agents for m in agent.pod_metrics()]

    # ------------------------------------------------------------ run / down
    def supervise(self):
        """Until shutdown: restart the controller if it dies (switches keep forwarding
        meanwhile: they are fail-secure), and let time-driven controller steps happen
        (minReadySeconds)."""
        while not self.done.wait(0.5):
            self.store.tick()
            if self.controller is not None and self.controller.poll() is not None:
                LOG.warning('the controller exited (%s); starting it again',
                            self.controller.returncode)
                self._start_controller(*self._controller_args)

    def down(self):
        from topo.cleanup import clean_leftovers
        if self.checker is not None:
            self.checker.stop()
        for server in self.proxy_health:
            server.close()
        for speaker in self.speakers:
            speaker.stop()
        for beat in self.heartbeats.values():
            beat.stop()
        if self.lease_endpoint is not None:
            self.lease_endpoint.close()
        for agent in self.agents:
            agent.stop()
        if self.network is not None:
            self.network.stop()
        if self.controller is not None:
            self.controller.terminate()
            try:
                self.controller.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.controller.kill()
        if self.api is not None:
            self.api.stop()
        clean_leftovers(state_path('pids'), lab_mark(), skip_pid=os.getpid(),
                        cgroups_record=state_path('cgroups.json'))
        for path in [state_path(name) for name in ('token', 'daemon.pid', 'ready')] + \
                ([self.ofp_socket] if self.ofp_socket else []):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _checked_slices_moved(store, since: int, checked: set) -> bool:
    """Whether a slice of one of the ``checked`` Services ((namespace, name)) changed
    after store version ``since`` (True when the store cannot tell)."""
    changes = store.changed_with_label(since, SERVICE_NAME_LABEL)
    return changes is None or any(
        key[0] == 'EndpointSlice' and (key[1] or 'default', service) in checked
        for key, service in changes)
