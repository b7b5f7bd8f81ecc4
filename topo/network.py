"""The lab's Mininet network: node bridges, underlay, cloud edge, external network, pods.

A bare-metal cluster (``cloud: none``) has no cloud edge and no health checker: a router
host joins the external network and the nodes' network instead (``kl-rt``, a Linux
network namespace with two interfaces and IP forwarding, services/wiring.py), so the
external hosts reach the nodes, and MetalLB's addresses in the nodes' subnet, as on a
LAN behind a router: ``ip neigh`` in it shows which node answers for an address.

``ClusterTopo`` is plain data (names and cables from services/wiring.py); ``LabNetwork``
turns it into Open vSwitch bridges and Mininet hosts, connects the bridges to the
controller, and adds and removes pod hosts while the lab runs. Every Mininet call goes
through one lock: Mininet's host shells are not thread-safe.

On the userspace datapath (no Open vSwitch kernel module) the veths keep the kernel's
offloads (TCP segmentation, checksums) only where ovs-vswitchd reads and writes their
offload metadata (the lab's own build, topo/ovs.py: each port's status says
``tx_tcp_csum_offload="true"``); elsewhere TCP through a bridge only works with TX
checksum offload off on every veth, and ``_offload_off`` does that for every link.

Everything the network creates on the machine carries the lab's mark (topo/cleanup.py):
``external_ids:kubelab-lab`` on each bridge, set in the command that creates it, and the
alias ``kubelab-lab=<mark>`` on each root-namespace interface. ``start`` refuses to
build over a bridge or interface with one of the lab's names that it did not mark
(Mininet would delete it). The bridges reach the controller on a Unix socket that only
root can open (``controller_socket``): no TCP port to race for. Open vSwitch connects to
a Unix socket only inside its own run directory (it refuses other paths "due to
possibility for remote exploit"), so the socket lives there, mode 0600.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shlex
import subprocess
import threading
from functools import partial

from mininet.link import Link, OVSLink
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import Host, OVSSwitch
from mininet.topo import Topo

from services import wiring
from services.errors import KubelabError
from topo import ovs
from topo.cleanup import MARK_KEY, foreign

LOG = logging.getLogger('kubelab.topo')
#: The Linux kernel's conntrack timeouts (nf_conntrack's defaults, seconds), as Open
#: vSwitch names them: what kube-proxy's connections live with on a real node. One is
#: not the kernel's under the same name: Open vSwitch's "close" is a connection both
#: sides have ended, with FINs (the kernel's TIME_WAIT, 120 s) or a RST (the kernel's
#: CLOSE, 10 s). It gets the TIME_WAIT's 120 s: a masquerade must not hand a (node
#: address, port) pair to a new connection while the server may still hold it in
#: TIME_WAIT (60 s); a reset connection is remembered longer than on a real node.
KERNEL_CONNTRACK_TIMEOUTS = {
    'tcp_syn_sent': 120, 'tcp_syn_recv': 60, 'tcp_established': 432000,
    'tcp_fin_wait': 120, 'tcp_close_wait': 60, 'tcp_last_ack': 30,
    'tcp_time_wait': 120, 'tcp_close': 120, 'udp_first': 30, 'udp_single': 30,
    'udp_multiple': 120, 'icmp_first': 30, 'icmp_reply': 30}
#: The userspace datapath, whose conntrack ``_tcp_window_check`` sets.
NETDEV_DATAPATH = 'netdev@ovs-netdev'


def ovs_rundir() -> str:
    """Open vSwitch's run directory (``OVS_RUNDIR``, as its own tools read it)."""
    return os.environ.get('OVS_RUNDIR', '/var/run/openvswitch')


def controller_socket() -> str:
    """Where the lab's controller listens for its bridges (one lab per machine)."""
    return os.path.join(ovs_rundir(), 'kubelab-ofp.sock')


def detect_datapath() -> str:
    """'kernel' where the Open vSwitch kernel module is loaded or loadable, else 'user'."""
    forced = os.environ.get('KUBELAB_DATAPATH')
    if forced in ('user', 'kernel'):
        return forced
    return 'kernel' if ovs.kernel_module() else 'user'


#: The pod's interface, inside its network namespace.
POD_INTERFACE = 'eth0'


def ports_offload(names: list[str]) -> bool:
    """Whether Open vSwitch takes the kernel's TCP checksum offload on every one of these
    ports (its Interface status, set when ovs-vswitchd runs with userspace TSO)."""
    proc = subprocess.run(['ovs-vsctl', '--timeout=10', '--format=json', '--columns=name,status',
                           'list', 'Interface', *names], capture_output=True, text=True)
    if proc.returncode != 0:
        return False
    rows = json.loads(proc.stdout)['data']
    return len(rows) == len(names) and all(
        dict(status[1]).get('tx_tcp_csum_offload') == 'true' for _, status in rows)


class MarkedSwitch(OVSSwitch):
    """An OVSSwitch whose bridge is created with the lab's mark in its external_ids."""

    def __init__(self, name, mark: str = '', **params):
        super().__init__(name, **params)
        self.mark = mark

    def bridgeOpts(self):
        return super().bridgeOpts() + ' ' + shlex.quote(
            f'external_ids:{MARK_KEY}="{self.mark}"')


class ClusterTopo(Topo):
    """Node bridges on an underlay, node hosts, the cloud edge, an external network with
    clients."""

    def build(self, cluster, edge_patch: bool = False):
        ul = self.addSwitch(wiring.UNDERLAY_BRIDGE, dpid=f'{wiring.UNDERLAY_DPID:016x}')
        ex = self.addSwitch(wiring.EXTERNAL_BRIDGE, dpid=f'{wiring.EXTERNAL_DPID:016x}')
        if cluster.bare_metal:
            self._router(cluster, ex, ul)
        else:
            lb = self.addSwitch(wiring.EDGE_BRIDGE, dpid=f'{wiring.EDGE_DPID:016x}')
            self.addLink(ex, lb, port1=wiring.EXTERNAL_UPLINK_PORT,
                         port2=wiring.EDGE_EXTERNAL_PORT, cls=OVSLink)
            self.addLink(lb, ul, port1=wiring.EDGE_UNDERLAY_PORT,   # see wiring
                         port2=wiring.UNDERLAY_EXTERNAL_PORT,
                         **({'cls': OVSLink} if edge_patch else {}))
        node_prefix = ipaddress.IPv4Network(cluster.node_cidr).prefixlen
        for node in cluster.nodes:
            br = self.addSwitch(wiring.node_bridge(node), dpid=f'{wiring.node_dpid(node):016x}')
            self.addLink(br, ul, port1=wiring.UPLINK_PORT, port2=node.index, cls=OVSLink)
            host = self.addHost(wiring.node_host_name(node), ip=f'{node.ip}/{node_prefix}',
                                mac=wiring.mac_for(node.ip))
            self.addLink(host, br, port2=wiring.NODE_HOST_PORT)
        ext_prefix = ipaddress.IPv4Network(cluster.external_cidr).prefixlen
        for j, client in enumerate(cluster.clients, start=1):
            host = self.addHost(wiring.client_host_name(j), ip=f'{client.ip}/{ext_prefix}',
                                mac=wiring.mac_for(client.ip))
            self.addLink(host, ex, port2=wiring.client_port(j))
        if cluster.bare_metal:
            return
        checker = self.addHost(wiring.HEALTH_CHECKER_HOST,
                               ip=f'{cluster.health_checker}/{ext_prefix}',
                               mac=wiring.mac_for(cluster.health_checker))
        self.addLink(checker, ex, port2=wiring.HEALTH_CHECKER_PORT)

    def _router(self, cluster, ex, ul):
        """Bare metal: the router, eth0 on the external network, eth1 on the nodes'."""
        ext_prefix = ipaddress.IPv4Network(cluster.external_cidr).prefixlen
        gw = cluster.external_gateway
        router = self.addHost(wiring.ROUTER_HOST, ip=f'{gw}/{ext_prefix}',
                              mac=wiring.router_mac(gw))
        self.addLink(router, ex, port2=wiring.EXTERNAL_UPLINK_PORT)
        self.addLink(router, ul, port2=wiring.UNDERLAY_EXTERNAL_PORT)


class PodSandbox(Host):
    """A pod's sandbox, what the pause container is to a pod: its shell holds the pod's
    network namespace and mount namespace (Mininet's ``mnexec -n`` makes both, with a
    /sys of the pod's network), and new IPC and UTS namespaces (``unshare`` in the
    shell's command line, before ``bash``), which every container of the pod joins
    (topo/sandbox.py). ``pid`` is that shell's."""

    NAMESPACES = ['unshare', '--ipc', '--uts']

    def _popen(self, cmd, **params):
        if cmd[:1] == ['mnexec'] and 'bash' in cmd:       # the host's shell (startShell)
            cmd = cmd[:2] + self.NAMESPACES + cmd[2:]
        return super()._popen(cmd, **params)


class LabNetwork:
    """The running Mininet network of one lab."""

    def __init__(self, cluster, controller: str, mark: str, datapath: str | None = None,
                 table_names: dict[int, str] | None = None,
                 conntrack_zones: list[int] | None = None, recirculation_limit: int = 0):
        self.cluster = cluster
        self.table_names = table_names or {}    # OpenFlow table id -> its pipeline name
        self.conntrack_zones = conntrack_zones or []   # the zones the pipeline uses
        self.controller = controller          # an OVS target: unix:<OVS rundir>/kubelab-ofp.sock
        self.mark = mark
        self.datapath = datapath or detect_datapath()
        # The cloud edge's cable to the underlay (services/wiring.py): a patch port
        # where the userspace datapath lets the deepest path through in one pass.
        self.edge_patch = (self.datapath == 'user'
                           and recirculation_limit >= wiring.DEEPEST_PASS)
        self.lock = threading.RLock()
        self.net = None
        self.offloads = False     # the veths keep their offloads (see the docstring)
        self._pod_count = 0
        self._seq_chk_was_on = False    # Open vSwitch's TCP sequence checks, before start

    # ------------------------------------------------------------ start / stop
    def start(self):
        setLogLevel('warning')
        theirs = foreign(self.mark)
        if theirs:
            raise KubelabError(
                'the lab will not build over what it did not make: ' + '; '.join(theirs)
                + '. Remove them if they are leftovers (ovs-vsctl del-br NAME, ip link '
                'del NAME), or stop the lab they belong to')
        switch = partial(MarkedSwitch, mark=self.mark, datapath=self.datapath,
                         protocols='OpenFlow13', failMode='secure')
        self.net = Mininet(topo=ClusterTopo(cluster=self.cluster, edge_patch=self.edge_patch),
                           switch=switch,
                           controller=None, autoSetMacs=False, build=False,
                           waitConnected=False)
        self.net.build()
        self.net.start()
        self._mark_links([intf.name for sw in self.net.switches for intf in sw.intfList()
                          if intf.name != 'lo'] + [sw.name for sw in self.net.switches])
        veths = [link for link in self.net.links if not isinstance(link, OVSLink)]
        self.offloads = self.datapath == 'user' and bool(veths) and ports_offload(
            [link.intf2.name for link in veths])
        for link in veths:
            self._offload_off(link)
        self._name_tables()
        self._connect_controller()
        self._conntrack_timeouts()
        self._tcp_window_check(False)
        for node in self.cluster.nodes:
            host = self.node_host(node.name)
            for cidr in (self.cluster.cluster_cidr, self.cluster.service_cidr,
                         self.cluster.external_cidr):
                host.cmd(f'ip route replace {cidr} dev {host.defaultIntf()}')
            # Everything else to the bridge too (a load balancer address, an external
            # IP: kube-proxy catches them on the node); the bridge is the node's only
            # way out and leads nowhere beyond the lab.
            host.cmd(f'ip route replace default dev {host.defaultIntf()}')
        hosts = [wiring.client_host_name(j) for j in range(1, len(self.cluster.clients) + 1)]
        if self.cluster.bare_metal:
            self._start_router()
        else:
            hosts.append(wiring.HEALTH_CHECKER_HOST)
        for name in hosts:
            self.net.get(name).cmd(
                f'ip route replace default via {self.cluster.external_gateway}')

    def _start_router(self):
        """The router's second interface (the nodes' network) and IP forwarding, in its
        own namespace only."""
        router = self.router_host()
        lan = router.intfList()[1]
        prefix = ipaddress.IPv4Network(self.cluster.node_cidr).prefixlen
        router.setMAC(wiring.router_mac(self.cluster.lan_gateway), lan)
        router.setIP(self.cluster.lan_gateway, prefix, lan)
        router.cmd('sysctl -qw net.ipv4.ip_forward=1')
        router.cmd('sysctl -qw net.ipv4.conf.all.send_redirects=0')

    def router_host(self):
        """The bare-metal router (None with the cloud)."""
        return self.net.get(wiring.ROUTER_HOST) if self.cluster.bare_metal else None

    def stop(self):
        with self.lock:
            if self.net is not None:
                self.net.stop()
                self.net = None
                self._conntrack_timeouts_off()
                self._tcp_window_check(True)

    def _offload_off(self, link):
        if self.datapath != 'user' or self.offloads:
            return
        for intf in (link.intf1, link.intf2):
            intf.node.cmd(f'ethtool -K {intf.name} tx off >/dev/null 2>&1')

    def _mark_links(self, names: list[str]):
        """The lab's mark as the alias of its root-namespace interfaces (patch ports are
        not interfaces of the kernel: their ``ip`` command fails, harmlessly)."""
        script = ''.join(f'link set dev {name} alias {MARK_KEY}={self.mark}\n'
                         for name in names)
        subprocess.run(['ip', '-force', '-batch', '-'], input=script, text=True,
                       capture_output=True)

    def _connect_controller(self):
        """Point every bridge at the controller's Unix socket, reconnecting every second
        at most while it is away."""
        args = []
        for i, sw in enumerate(self.net.switches):
            args += ['--', f'--id=@c{i}', 'create', 'Controller',
                     f'target="{self.controller}"', 'max_backoff=1000',
                     '--', 'set', 'Bridge', sw.name, f'controller=@c{i}']
        subprocess.run(['ovs-vsctl', '--timeout=10', *args], check=True,
                       capture_output=True)

    def _name_tables(self):
        """Give the pipeline's tables their names in OVSDB: dumps then say
        ``table=ServiceLB`` instead of ``table=40`` (the daemon hands the names over
        from the pipeline)."""
        for sw in self.net.switches:
            args = []
            for tid, name in sorted(self.table_names.items()):
                args += ['--', f'--id=@t{tid}', 'create', 'Flow_Table', f'name={name}',
                         '--', 'set', 'Bridge', sw.name, f'flow_tables:{tid}=@t{tid}']
            if not args:
                continue
            subprocess.run(['ovs-vsctl', *args], check=True, capture_output=True)

    def _conntrack_timeouts(self):
        """On the userspace datapath, give the lab's conntrack zones the Linux kernel's
        conntrack timeouts, which kube-proxy's rules live with (the kernel datapath uses
        the kernel's own). Open vSwitch's own forget a connection both sides closed
        after 30 s where the kernel keeps it 120 s in TIME_WAIT: a masquerade could then
        reuse a (node address, port) pair a server still holds in TIME_WAIT (60 s)."""
        if self.datapath != 'user' or not self.conntrack_zones:
            return
        have = subprocess.run(['ovs-vsctl', 'get', 'Open_vSwitch', '.', 'datapaths'],
                              capture_output=True, text=True).stdout
        if 'netdev=' not in have:     # the record zone policies hang on
            subprocess.run(['ovs-vsctl', '--', '--id=@dp', 'create', 'Datapath',
                            'datapath_version=0', '--', 'set', 'Open_vSwitch', '.',
                            'datapaths:netdev=@dp'], check=True, capture_output=True)
        args = []
        for zone in self.conntrack_zones:
            args += ['--', '--may-exist', 'add-zone-tp', 'netdev', f'zone={zone}',
                     *(f'{k}={v}' for k, v in KERNEL_CONNTRACK_TIMEOUTS.items())]
        subprocess.run(['ovs-vsctl', *args], check=True, capture_output=True)

    def _conntrack_timeouts_off(self):
        """Remove the zone timeout policies ``_conntrack_timeouts`` added."""
        if self.datapath != 'user' or not self.conntrack_zones:
            return
        args = []
        for zone in self.conntrack_zones:
            args += ['--', '--if-exists', 'del-zone-tp', 'netdev', f'zone={zone}']
        subprocess.run(['ovs-vsctl', *args], capture_output=True)

    def _tcp_window_check(self, enabled: bool):
        """On the userspace datapath, turn Open vSwitch's TCP sequence checks off while
        the lab runs (on again when it stops, if they were on), so that its conntrack
        passes what Linux's passes where kube-proxy works.

        The case that needs it: a new connection arrives at an address and port the
        server still holds in TIME_WAIT (two clients' connections masqueraded to one
        node address and port, say). The server refuses about half of those SYNs
        (PAWS: a Linux client's TCP timestamps start at an offset drawn from the source
        and destination addresses, so two clients masqueraded as one address look like
        one client whose clock jumps) and answers with the old connection's ACK; the
        client answers that with a RST carrying the old connection's sequence number,
        which clears the TIME_WAIT, and its SYN goes through when retried a few
        milliseconds later. Linux's conntrack lets that RST pass; Open vSwitch's drops
        it as out of its window (``conntrack_tcp_seq_chk_failed``), so the SYN fails until the TIME_WAIT ends.
        Without the checks Open vSwitch's conntrack is as lenient as Linux's with
        ``nf_conntrack_tcp_be_liberal`` (kube-proxy's ``--conntrack-tcp-be-liberal``): an
        out-of-window segment is not INVALID. The checks are the datapath's, not a
        zone's: every bridge of the lab's Open vSwitch shares them."""
        if self.datapath != 'user':
            return
        if not enabled:
            now = subprocess.run(['ovs-appctl', '--timeout=5', 'dpctl/ct-get-tcp-seq-chk',
                                  NETDEV_DATAPATH], capture_output=True, text=True)
            self._seq_chk_was_on = 'enabled' in now.stdout
        elif not self._seq_chk_was_on:
            return
        verb = 'enable' if enabled else 'disable'
        proc = subprocess.run(['ovs-appctl', '--timeout=5', f'dpctl/ct-{verb}-tcp-seq-chk',
                               NETDEV_DATAPATH], capture_output=True, text=True)
        if proc.returncode != 0 and not enabled:
            raise KubelabError('could not turn off the TCP sequence checks of Open '
                               f'vSwitch\'s conntrack: {proc.stderr.strip()}')

    # ------------------------------------------------------------ hosts
    def node_host(self, node_name: str):
        node = self.cluster.node(node_name)
        return self.net.get(wiring.node_host_name(node))

    def health_checker_host(self):
        return self.net.get(wiring.HEALTH_CHECKER_HOST)

    def set_uplink(self, node_name: str, up: bool):
        """Cut a node off the underlay (or reconnect it), as a failed node or a pulled
        cable would be: both ends of its cable stop receiving and forwarding (OpenFlow
        port config; a patch port ignores "down"); flows and state stay as they are."""
        node = self.cluster.node(node_name)
        for bridge, port in ((wiring.UNDERLAY_BRIDGE, node.index),
                             (wiring.node_bridge(node), wiring.UPLINK_PORT)):
            for setting in (('receive', 'forward') if up else ('no-receive', 'no-forward')):
                subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'mod-port', bridge,
                                str(port), setting], check=True, capture_output=True)

    def client_host(self, client_name: str):
        for j, client in enumerate(self.cluster.clients, start=1):
            if client.name == client_name:
                return self.net.get(wiring.client_host_name(j))
        raise KeyError(client_name)

    def add_pod(self, node_name: str, ip: str) -> Host:
        """A new pod sandbox (``PodSandbox``): a host with ``ip`` on ``node_name``'s
        bridge."""
        node = self.cluster.node(node_name)
        prefix = ipaddress.IPv4Network(node.pod_cidr).prefixlen
        port = wiring.pod_port(node, ip)
        with self.lock:
            self._pod_count += 1
            name = f'{wiring.PREFIX}p{self._pod_count}'
            host = self.net.addHost(name, cls=PodSandbox, ip=None, inNamespace=True)
            bridge = self.net.get(wiring.node_bridge(node))
            link = self.net.addLink(host, bridge, port2=port, cls=Link)
            bridge.vsctl('add-port', bridge.name, link.intf2.name, '--', 'set',
                         'Interface', link.intf2.name, f'ofport_request={port}')
            bridge.cmd(f'ip link set {link.intf2.name} up')
            self._mark_links([link.intf2.name])
            intf = link.intf1
            # Inside the pod the interface is eth0, as a CNI plugin names it; Mininet
            # made it as <host>-eth0 (unique on the machine while it was created there).
            intf.rename(POD_INTERFACE)
            host.setMAC(wiring.mac_for(ip), intf)
            host.setIP(ip, prefix, intf)
            host.cmd(f'ip route replace default via {wiring.pod_gateway(node)} dev {intf}')
            host.cmd('ip link set lo up')
            self._offload_off(link)
            return host

    def remove_pod(self, host: Host):
        with self.lock:
            if self.net is None or host not in self.net.hosts:
                return
            for intf in list(host.intfList()):
                link = intf.link
                if link is None:
                    continue
                other = link.intf2 if link.intf1 is intf else link.intf1
                other.node.vsctl('--if-exists', 'del-port', other.node.name, other.name)
                self.net.links.remove(link)
            self.net.delHost(host)
