"""The cluster DNS server (topo/images/coredns.py) as a client sees it: the program runs
as a subprocess on 127.0.0.1 with free ports, answering from a records file written
with services.dns.records, and is asked with dnspython over real UDP and TCP: each
response code, truncation and the retry over TCP, EDNS0, the reload of the file, the
health and readiness endpoints, SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from services.dns import pod_records, pod_records_path, records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCALHOST = '127.0.0.1'
Z = 'cluster.local.'


# ---------------------------------------------------------------- the cluster
def service(name, cluster_ip, ports=(('http', 80, 'TCP'),), namespace='default'):
    return {'kind': 'Service', 'metadata': {'name': name, 'namespace': namespace},
            'spec': {'clusterIP': cluster_ip, 'ports': [
                {'name': n, 'port': p, 'protocol': proto} for n, p, proto in ports]}}


def endpoint_slice(svc, addresses, hostnames=None, namespace='default'):
    hostnames = hostnames or {}
    return {'kind': 'EndpointSlice',
            'metadata': {'name': f'{svc}-x', 'namespace': namespace,
                         'labels': {'kubernetes.io/service-name': svc}},
            'endpoints': [dict({'addresses': [a], 'conditions': {'ready': True}},
                               **({'hostname': hostnames[a]} if a in hostnames else {}))
                          for a in addresses],
            'ports': [{'name': 'pg', 'port': 5432, 'protocol': 'TCP'}]}


BIG = [f'192.168.{4 + i // 200}.{1 + i % 200}' for i in range(60)]


def cluster(web_ip='10.96.0.20'):
    """The objects of a small cluster; ``web_ip`` is web's ClusterIP."""
    return {
        'Service': [service('kube-dns', '10.96.0.10', (('dns', 53, 'UDP'),
                                                       ('dns-tcp', 53, 'TCP')),
                            'kube-system'),
                    service('web', web_ip),
                    service('db', 'None', (('pg', 5432, 'TCP'),)),
                    service('big', 'None', (('pg', 5432, 'TCP'),)),
                    {'kind': 'Service', 'metadata': {'name': 'ext', 'namespace': 'default'},
                     'spec': {'type': 'ExternalName', 'externalName': 'db.example.com'}},
                    {'kind': 'Service', 'metadata': {'name': 'alias', 'namespace': 'default'},
                     'spec': {'type': 'ExternalName',
                              'externalName': 'web.default.svc.cluster.local'}}],
        'EndpointSlice': [endpoint_slice('db', ['192.168.2.5', '192.168.3.5'],
                                         {'192.168.2.5': 'db-0', '192.168.3.5': 'db-1'}),
                          endpoint_slice('big', BIG)],
        'Pod': [{'kind': 'Pod', 'metadata': {'name': name, 'namespace': 'default'},
                 'status': {'phase': 'Running', 'podIP': ip}}
                for name, ip in (('client', '192.168.1.7'), ('db-0', '192.168.2.5'))],
        'Namespace': [{'kind': 'Namespace', 'metadata': {'name': 'default'}}],
    }


def write_records(path, objects=None, **kwargs):
    """The daemon's way: a temporary file renamed over ``path``."""
    data = records(cluster() if objects is None else objects,
                   networks=['10.96.0.0/12', '192.168.0.0/16'], **kwargs)
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f)
    os.replace(tmp, path)
    return data


def write_apart(path, objects=None):
    """The daemon's way: the records but the pods' to ``path``, the pods' beside it
    (``pod_records_path``), each by rename. Returns the two."""
    objects = cluster() if objects is None else objects
    networks = ['10.96.0.0/12', '192.168.0.0/16']
    out = []
    for where, doc in ((pod_records_path(str(path)), pod_records(objects['Pod'],
                                                                  networks=networks)),
                       (str(path), records(objects, networks=networks, pods=False))):
        with open(f'{where}.tmp', 'w') as f:
            json.dump(doc, f)
        os.replace(f'{where}.tmp', where)
        out.append(doc)
    return out


# ---------------------------------------------------------------- the server
def free_ports(count):
    """``count`` ports free for both TCP and UDP on 127.0.0.1."""
    ports = []
    while len(ports) < count:
        with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
            tcp.bind((LOCALHOST, 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind((LOCALHOST, port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def http_get(port, path):
    """(status, body) of GET ``path`` on 127.0.0.1:``port``."""
    try:
        with urllib.request.urlopen(f'http://{LOCALHOST}:{port}{path}', timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(predicate, timeout=5.0, step=0.005):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(step)


class Server:
    """The DNS program on free ports; ``log()`` is what it printed."""

    def __init__(self, directory, *extra):
        self.records = str(directory / 'records.json')
        self.port, self.health, self.ready = free_ports(3)
        self.logfile = open(directory / 'coredns.log', 'w+')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'topo.images.coredns', '--records', self.records,
             '--port', str(self.port), '--bind', LOCALHOST,
             '--health-port', str(self.health), '--ready-port', str(self.ready),
             '--tcp-idle-timeout', '0.5', '--log', *extra],
            cwd=ROOT, stdout=self.logfile, stderr=subprocess.STDOUT)

        def up():                 # its banner: every port is bound (not another's)
            assert self.proc.poll() is None, self.log()
            return f'.:{self.port} on {LOCALHOST}' in self.log()
        try:
            wait_for(up)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        self.logfile.flush()
        with open(self.logfile.name) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()

    def udp(self, name, rdtype='A', **kwargs):
        return dns.query.udp(query(name, rdtype, **kwargs), LOCALHOST, port=self.port,
                             timeout=2)

    def tcp(self, name, rdtype='A', **kwargs):
        return dns.query.tcp(query(name, rdtype, **kwargs), LOCALHOST, port=self.port,
                             timeout=2)


def query(name, rdtype='A', **kwargs):
    return dns.message.make_query(name, rdtype, **kwargs)


def data(response, rdtype=None):
    """The answer's records as presentation text, sorted."""
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset
                  if rdtype is None or rrset.rdtype == dns.rdatatype.from_text(rdtype))


def ready(server):
    return http_get(server.ready, '/ready')[0] == 200


@pytest.fixture(scope='module')
def dns_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp('coredns')
    write_apart(directory / 'records.json')          # as the daemon writes them
    server = Server(directory)
    try:
        wait_for(lambda: ready(server))
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh(tmp_path):
    """A server of this test's own (its file changes)."""
    servers = []

    def start(with_records=True, *extra):
        if with_records:
            write_records(tmp_path / 'records.json')
        servers.append(Server(tmp_path, *extra))
        return servers[-1]
    yield start
    for server in servers:
        server.stop()


# ---------------------------------------------------------------- answers
def test_a_record_of_a_service(dns_server):
    response = dns_server.udp(f'web.default.svc.{Z}')
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA and response.flags & dns.flags.QR
    assert data(response) == ['10.96.0.20']
    assert response.answer[0].ttl == 5


def test_names_are_case_insensitive_and_the_question_keeps_its_case(dns_server):
    response = dns_server.udp('WEB.Default.SVC.cluster.LOCAL.')
    assert data(response) == ['10.96.0.20']
    assert response.answer[0].name.to_text() == 'WEB.Default.SVC.cluster.LOCAL.'


def test_headless_service_answers_every_ready_endpoint(dns_server):
    assert data(dns_server.udp(f'db.default.svc.{Z}')) == ['192.168.2.5', '192.168.3.5']
    assert data(dns_server.udp(f'db-1.db.default.svc.{Z}')) == ['192.168.3.5']


def test_srv_records(dns_server):
    response = dns_server.udp(f'_dns._udp.kube-dns.kube-system.svc.{Z}', 'SRV')
    assert data(response) == [f'0 100 53 kube-dns.kube-system.svc.{Z}']
    response = dns_server.udp(f'_pg._tcp.db.default.svc.{Z}', 'SRV')
    assert data(response) == [f'0 50 5432 db-0.db.default.svc.{Z}',
                              f'0 50 5432 db-1.db.default.svc.{Z}']


def test_ptr_records(dns_server):
    assert data(dns_server.udp('10.0.96.10.in-addr.arpa.', 'PTR')) == \
        [f'kube-dns.kube-system.svc.{Z}']
    assert data(dns_server.udp('5.2.168.192.in-addr.arpa.', 'PTR')) == \
        [f'db-0.db.default.svc.{Z}']
    assert data(dns_server.udp('7.1.168.192.in-addr.arpa.', 'PTR')) == \
        [f'192-168-1-7.default.pod.{Z}']


def test_pod_and_schema_records(dns_server):
    assert data(dns_server.udp(f'192-168-1-7.default.pod.{Z}')) == ['192.168.1.7']
    assert data(dns_server.udp(f'192-168-2-5.default.pod.{Z}')) == ['192.168.2.5']
    assert data(dns_server.udp(f'dns-version.{Z}', 'TXT')) == ['"1.1.0"']


def test_one_file_with_the_pods_records_serves_them_too(fresh):
    """A records file that holds the pods' records itself (no pods' file beside it)."""
    server = fresh()
    assert data(server.udp(f'192-168-1-7.default.pod.{Z}')) == ['192.168.1.7']
    assert data(server.udp('5.2.168.192.in-addr.arpa.', 'PTR')) == [f'db-0.db.default.svc.{Z}']


def test_nxdomain_carries_the_soa(dns_server):
    for name, zone in ((f'nope.default.svc.{Z}', Z), (f'192-168-1-8.default.pod.{Z}', Z),
                       ('99.0.96.10.in-addr.arpa.', '96.10.in-addr.arpa.')):
        response = dns_server.udp(name, 'PTR' if 'arpa' in name else 'A')
        assert response.rcode() == dns.rcode.NXDOMAIN, name
        assert response.flags & dns.flags.AA
        assert response.answer == []
        [soa] = response.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == zone
        assert soa.ttl == 5 and soa[0].minimum == 5
        assert soa[0].mname.to_text() == f'ns.dns.{Z}'


def test_nodata_for_an_existing_name_and_another_type(dns_server):
    for name, rdtype in ((f'web.default.svc.{Z}', 'AAAA'), (f'web.default.svc.{Z}', 'TXT'),
                         (f'default.svc.{Z}', 'A'), (f'svc.{Z}', 'A')):
        response = dns_server.udp(name, rdtype)
        assert response.rcode() == dns.rcode.NOERROR, name
        assert response.flags & dns.flags.AA
        assert response.answer == []
        assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


def test_names_outside_the_cluster_do_not_exist_in_a_lab_without_internet(dns_server):
    for name, rdtype in (('example.com.', 'A'), ('kubernetes.io.', 'AAAA'),
                         ('1.1.1.1.in-addr.arpa.', 'PTR'), ('web.', 'A')):
        response = dns_server.udp(name, rdtype)
        assert response.rcode() == dns.rcode.NXDOMAIN, name
        assert not response.flags & dns.flags.AA
    assert 'plugin/forward: example.com. A: no upstream' in dns_server.log()


def test_external_name_is_a_cname(dns_server):
    response = dns_server.udp(f'ext.default.svc.{Z}')
    assert response.rcode() == dns.rcode.NOERROR
    assert data(response) == ['db.example.com.']
    response = dns_server.udp(f'alias.default.svc.{Z}')         # followed in the zone
    assert data(response, 'CNAME') == [f'web.default.svc.{Z}']
    assert data(response, 'A') == ['10.96.0.20']


def test_zone_apex_soa_and_ns(dns_server):
    response = dns_server.udp(Z, 'NS')
    assert data(response) == [f'ns.dns.{Z}']
    assert data(dns_server.udp(f'ns.dns.{Z}')) == ['10.96.0.10']
    assert dns_server.udp(Z, 'SOA').answer[0].rdtype == dns.rdatatype.SOA


def test_other_rcodes(dns_server):
    response = dns_server.udp(f'web.default.svc.{Z}', rdclass=dns.rdataclass.CH)
    assert response.rcode() == dns.rcode.REFUSED
    response = dns_server.tcp(Z, 'AXFR')
    assert response.rcode() == dns.rcode.REFUSED
    response = dns_server.udp(f'web.default.svc.{Z}', use_edns=1)
    assert response.rcode() == dns.rcode.BADVERS
    # a message that does not parse: FORMERR with its id
    with socket.socket(type=socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07garbage',
                    (LOCALHOST, dns_server.port))
        reply = dns.message.from_wire(sock.recv(512))
    assert reply.id == 0x1234 and reply.rcode() == dns.rcode.FORMERR


# ---------------------------------------------------------------- size, transports
def test_large_answer_is_truncated_over_udp_then_whole_over_tcp(dns_server):
    name = f'big.default.svc.{Z}'
    response = dns_server.udp(name)
    assert response.flags & dns.flags.TC
    assert response.answer == [] and response.rcode() == dns.rcode.NOERROR
    assert data(dns_server.tcp(name)) == sorted(BIG)


def test_edns_buffer_size_is_honoured(dns_server):
    name = f'big.default.svc.{Z}'
    response = dns_server.udp(name, use_edns=0, payload=4096)
    assert not response.flags & dns.flags.TC
    assert data(response) == sorted(BIG)
    assert response.edns == 0 and response.payload == 1232
    small = dns_server.udp(name, use_edns=0, payload=600)     # 60 records: ~1 kB
    assert small.flags & dns.flags.TC and small.answer == []


def test_several_queries_on_one_tcp_connection_then_idle_close(dns_server):
    with socket.create_connection((LOCALHOST, dns_server.port), timeout=2) as sock:
        for name, expected in ((f'web.default.svc.{Z}', ['10.96.0.20']),
                               (f'ns.dns.{Z}', ['10.96.0.10']),
                               (f'db-0.db.default.svc.{Z}', ['192.168.2.5'])):
            q = query(name)
            dns.query.send_tcp(sock, q)
            response, _ = dns.query.receive_tcp(sock, time.time() + 2)
            assert response.id == q.id and data(response) == expected
        started = time.monotonic()
        assert sock.recv(1) == b''                      # closed after 0.5 s idle
        assert 0.3 < time.monotonic() - started < 1.5


def test_query_log_in_coredns_format(dns_server):
    dns_server.udp(f'web.default.svc.{Z}')
    line = wait_for(lambda: [l for l in dns_server.log().splitlines()
                             if f'"A IN web.default.svc.{Z} udp' in l])[-1]
    assert line.startswith('[INFO] 127.0.0.1:')
    assert ' false 512" NOERROR qr,aa,rd ' in line and line.endswith('s')


def test_health_and_ready(dns_server):
    assert http_get(dns_server.health, '/health') == (200, 'OK')
    assert http_get(dns_server.ready, '/ready') == (200, 'OK')
    assert http_get(dns_server.health, '/other')[0] == 404


# ---------------------------------------------------------------- the file changes
def test_a_change_is_served_within_0_2_s(fresh):
    server = fresh()
    assert data(server.udp(f'web.default.svc.{Z}')) == ['10.96.0.20']
    generation = write_records(server.records, cluster(web_ip='10.96.0.99'))['generation']
    started = time.monotonic()
    wait_for(lambda: data(server.udp(f'web.default.svc.{Z}')) == ['10.96.0.99'],
             timeout=1, step=0.01)
    assert time.monotonic() - started < 0.2
    wait_for(lambda: f'records generation {generation} loaded' in server.log())
    # the same records written again: served, not logged again
    write_records(server.records, cluster(web_ip='10.96.0.99'))
    time.sleep(0.25)
    assert server.log().count(f'records generation {generation} loaded') == 1


def test_a_pods_new_address_is_served_from_its_file_alone(fresh, tmp_path):
    """A pod's address rewrites the pods' file alone: served within 0.2 s, the records
    file not read again, and each zone's SOA serial moves."""
    server = fresh(False)
    write_apart(tmp_path / 'records.json')
    wait_for(lambda: ready(server), timeout=1)
    serial = server.udp(Z, 'SOA').answer[0][0].serial
    loaded = server.log().count('loaded from')
    objects = cluster()
    objects['Pod'].append({'kind': 'Pod', 'metadata': {'name': 'new', 'namespace': 'default'},
                           'status': {'phase': 'Running', 'podIP': '192.168.1.9'}})
    pods = pod_records(objects['Pod'], networks=['10.96.0.0/12', '192.168.0.0/16'])
    inode = os.stat(server.records).st_ino
    started = time.monotonic()
    with open(f'{server.records}.tmp', 'w') as f:       # the pods' file alone, by rename
        json.dump(pods, f)
    os.replace(f'{server.records}.tmp', pod_records_path(server.records))
    wait_for(lambda: data(server.udp(f'192-168-1-9.default.pod.{Z}')) == ['192.168.1.9'],
             timeout=1, step=0.01)
    assert time.monotonic() - started < 0.3 and os.stat(server.records).st_ino == inode
    assert data(server.udp('9.1.168.192.in-addr.arpa.', 'PTR')) == [
        f'192-168-1-9.default.pod.{Z}']
    assert data(server.udp('5.2.168.192.in-addr.arpa.', 'PTR')) == [f'db-0.db.default.svc.{Z}']
    assert server.udp(Z, 'SOA').answer[0][0].serial != serial
    wait_for(lambda: f'records generation {pods["generation"]} loaded from '
             f'{pod_records_path(server.records)}' in server.log())
    assert server.log().count('loaded from') == loaded + 1     # the records file: the same
    os.remove(pod_records_path(server.records))                 # gone: the pods' records too
    wait_for(lambda: server.udp(f'192-168-1-9.default.pod.{Z}').rcode() == dns.rcode.NXDOMAIN,
             timeout=1)
    assert data(server.udp(f'web.default.svc.{Z}')) == ['10.96.0.20']


def test_a_broken_file_keeps_the_old_records(fresh):
    server = fresh()
    with open(server.records, 'w') as f:          # written in place, half-way
        f.write('{"version": 1, "generation": "deadbeef", "reco')
    wait_for(lambda: 'is not valid' in server.log())
    assert data(server.udp(f'web.default.svc.{Z}')) == ['10.96.0.20']
    assert 'still serving generation' in server.log()
    with open(server.records, 'w') as f:          # JSON, but not records
        json.dump({'version': 1, 'generation': 'x', 'ttl': 5, 'zones': [Z],
                   'records': {Z: {'A': ['not an address']}}}, f)
    time.sleep(0.25)
    assert data(server.udp(f'web.default.svc.{Z}')) == ['10.96.0.20']
    os.remove(server.records)
    wait_for(lambda: 'does not exist' in server.log())
    assert data(server.udp(f'web.default.svc.{Z}')) == ['10.96.0.20']
    write_records(server.records, cluster(web_ip='10.96.0.77'))
    wait_for(lambda: data(server.udp(f'web.default.svc.{Z}')) == ['10.96.0.77'], timeout=1)


def test_ready_once_records_are_loaded_and_sigterm(fresh, tmp_path):
    server = fresh(False)
    assert http_get(server.ready, '/ready') == (503, 'kubernetes\n')
    assert http_get(server.health, '/health') == (200, 'OK')
    assert server.udp(f'web.default.svc.{Z}').rcode() == dns.rcode.SERVFAIL
    write_records(tmp_path / 'records.json')
    started = time.monotonic()
    wait_for(lambda: ready(server), timeout=1)
    assert time.monotonic() - started < 0.3
    assert data(server.udp(f'web.default.svc.{Z}')) == ['10.96.0.20']
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=2) == 0
    assert time.monotonic() - started < 1


def test_the_real_images_flags_are_accepted():
    from topo.images.coredns import DEFAULT_RECORDS, parse_args
    args = parse_args(['-conf', '/etc/coredns/Corefile'])
    assert (args.conf, args.port, args.bind, args.health_port, args.ready_port) == \
        ('/etc/coredns/Corefile', 53, '0.0.0.0', 8080, 8181)
    assert args.records == os.environ.get('KUBELAB_DNS_RECORDS', DEFAULT_RECORDS)
    assert parse_args(['-dns.port', '1053', '--records', 'r.json']).port == 1053
