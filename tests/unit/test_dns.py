"""Cluster DNS records (services/dns.py): what the store's Services, EndpointSlices,
Pods and Namespaces turn into, record by record, as the Kubernetes DNS specification
and CoreDNS's kubernetes plugin say; and the resolv.conf of a ClusterFirst pod."""

import json
import random

from services.dns import (SCHEMA_VERSION, TTL, dashed, merged_node, pod_records,
                          pod_records_path, records, reverse_name, reverse_zones)

Z = 'cluster.local.'


# ---------------------------------------------------------------- objects
def svc(name='web', namespace='default', cluster_ip='10.96.0.20', ports=None, **spec):
    return {'apiVersion': 'v1', 'kind': 'Service',
            'metadata': {'name': name, 'namespace': namespace},
            'spec': {'type': 'ClusterIP', 'clusterIP': cluster_ip,
                     'ports': [{'name': 'http', 'port': 80, 'protocol': 'TCP'}]
                     if ports is None else ports, **spec}}


def headless(name='db', namespace='default', ports=None, **spec):
    return svc(name, namespace, 'None',
               ports if ports is not None else [{'name': 'pg', 'port': 5432,
                                                 'protocol': 'TCP'}], **spec)


def ep(ip, ready=True, hostname=None, pod=None, terminating=False):
    endpoint = {'addresses': [ip], 'conditions': {'ready': ready, 'serving': ready,
                                                  'terminating': terminating}}
    if ready is None:
        del endpoint['conditions']['ready']
    if hostname:
        endpoint['hostname'] = hostname
    if pod:
        endpoint['targetRef'] = {'kind': 'Pod', 'name': pod}
    return endpoint


def eps(service, *endpoints, namespace='default', ports=None, name=None):
    return {'apiVersion': 'discovery.k8s.io/v1', 'kind': 'EndpointSlice',
            'metadata': {'name': name or f'{service}-abcde', 'namespace': namespace,
                         'labels': {'kubernetes.io/service-name': service}},
            'addressType': 'IPv4', 'endpoints': list(endpoints),
            'ports': [{'name': 'pg', 'port': 5432, 'protocol': 'TCP'}]
            if ports is None else ports}


def pod(name, ip, namespace='default', hostname=None, subdomain=None, phase='Running',
        deleting=False):
    spec = {'nodeName': 'worker-1', 'containers': [{'name': 'c'}]}
    if hostname:
        spec['hostname'] = hostname
    if subdomain:
        spec['subdomain'] = subdomain
    meta = {'name': name, 'namespace': namespace}
    if deleting:
        meta['deletionTimestamp'] = '2024-05-01T12:00:00Z'
    return {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': meta, 'spec': spec,
            'status': {'phase': phase, 'podIP': ip}}


def ns(name):
    return {'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': name}}


def compute(services=(), slices=(), pods=(), namespaces=(), **kwargs):
    return records({'Service': list(services), 'EndpointSlice': list(slices),
                    'Pod': list(pods), 'Namespace': list(namespaces)}, **kwargs)


def rr(result, name, rdtype):
    """The data of ``name``'s records of ``rdtype`` ([] when there are none)."""
    return result['records'].get(name, {}).get(rdtype, [])


# ---------------------------------------------------------------- ClusterIP Services
def test_cluster_ip_service_has_an_a_record_to_its_cluster_ip():
    result = compute([svc()])
    assert rr(result, f'web.default.svc.{Z}', 'A') == ['10.96.0.20']
    assert result['records'][f'web.default.svc.{Z}'] == {'A': ['10.96.0.20']}


def test_srv_for_each_named_port_only_with_lowercase_protocol():
    ports = [{'name': 'http', 'port': 80, 'protocol': 'TCP'},
             {'name': 'dns', 'port': 53, 'protocol': 'UDP'},
             {'port': 8080, 'protocol': 'TCP'}]
    result = compute([svc(ports=ports)])
    assert rr(result, f'_http._tcp.web.default.svc.{Z}', 'SRV') == \
        [f'0 100 80 web.default.svc.{Z}']
    assert rr(result, f'_dns._udp.web.default.svc.{Z}', 'SRV') == \
        [f'0 100 53 web.default.svc.{Z}']
    srv_names = [n for n, node in result['records'].items() if 'SRV' in node]
    assert sorted(srv_names) == [f'_dns._udp.web.default.svc.{Z}',
                                 f'_http._tcp.web.default.svc.{Z}']


def test_cluster_ip_service_ptr_names_the_service():
    result = compute([svc(cluster_ip='10.96.3.7')])
    assert rr(result, '7.3.96.10.in-addr.arpa.', 'PTR') == [f'web.default.svc.{Z}']


def test_service_without_an_allocated_cluster_ip_has_no_records():
    result = compute([svc(cluster_ip='')])
    assert f'web.default.svc.{Z}' not in result['records']


def test_cluster_ip_service_endpoints_do_not_change_its_records():
    result = compute([svc()], [eps('web', ep('192.168.2.5', pod='a'),
                                   ports=[{'name': 'http', 'port': 8080}])],
                     [pod('a', '192.168.2.5')])
    assert rr(result, f'web.default.svc.{Z}', 'A') == ['10.96.0.20']
    assert rr(result, f'_http._tcp.web.default.svc.{Z}', 'SRV') == \
        [f'0 100 80 web.default.svc.{Z}']
    assert f'192-168-2-5.web.default.svc.{Z}' not in result['records']


# ---------------------------------------------------------------- headless Services
def test_headless_service_answers_its_ready_endpoints():
    result = compute([headless()], [eps('db', ep('192.168.2.5'), ep('192.168.3.9'),
                                        ep('192.168.2.10'))])
    assert rr(result, f'db.default.svc.{Z}', 'A') == \
        ['192.168.2.5', '192.168.2.10', '192.168.3.9']


def test_headless_service_follows_readiness():
    result = compute([headless()], [eps('db', ep('192.168.2.5'),
                                        ep('192.168.2.6', ready=False),
                                        ep('192.168.2.7', ready=False, terminating=True),
                                        ep('192.168.2.8', ready=None))])
    # ready nil: "consumers should interpret this unknown state as ready"
    assert rr(result, f'db.default.svc.{Z}', 'A') == ['192.168.2.5', '192.168.2.8']
    assert f'192-168-2-6.db.default.svc.{Z}' not in result['records']
    assert rr(result, '6.2.168.192.in-addr.arpa.', 'PTR') == []


def test_headless_service_without_ready_endpoints_does_not_exist():
    result = compute([headless()], [eps('db', ep('192.168.2.6', ready=False))],
                     namespaces=[ns('default')])
    assert f'db.default.svc.{Z}' not in result['records']
    assert f'_pg._tcp.db.default.svc.{Z}' not in result['records']
    assert result['records'][f'default.svc.{Z}'] == {}


def test_publish_not_ready_addresses_includes_not_ready_endpoints():
    result = compute([headless(publishNotReadyAddresses=True)],
                     [eps('db', ep('192.168.2.5'), ep('192.168.2.6', ready=False))])
    assert rr(result, f'db.default.svc.{Z}', 'A') == ['192.168.2.5', '192.168.2.6']
    assert rr(result, f'192-168-2-6.db.default.svc.{Z}', 'A') == ['192.168.2.6']


def test_headless_endpoints_without_hostname_are_named_by_dashed_ip():
    result = compute([headless()], [eps('db', ep('192.168.2.5'))])
    assert rr(result, f'192-168-2-5.db.default.svc.{Z}', 'A') == ['192.168.2.5']
    assert rr(result, f'_pg._tcp.db.default.svc.{Z}', 'SRV') == \
        [f'0 100 5432 192-168-2-5.db.default.svc.{Z}']
    assert rr(result, '5.2.168.192.in-addr.arpa.', 'PTR') == \
        [f'192-168-2-5.db.default.svc.{Z}']


def test_headless_endpoint_hostname_names_it():
    result = compute([headless()], [eps('db', ep('192.168.2.5', hostname='db-0'),
                                        ep('192.168.3.5', hostname='db-1'))])
    assert rr(result, f'db-0.db.default.svc.{Z}', 'A') == ['192.168.2.5']
    assert rr(result, f'db-1.db.default.svc.{Z}', 'A') == ['192.168.3.5']
    assert f'192-168-2-5.db.default.svc.{Z}' not in result['records']
    assert rr(result, '5.3.168.192.in-addr.arpa.', 'PTR') == [f'db-1.db.default.svc.{Z}']


def test_headless_srv_one_per_ready_endpoint_and_named_port():
    ports = [{'name': 'pg', 'port': 5432, 'protocol': 'TCP'},
             {'name': 'metrics', 'port': 9187, 'protocol': 'TCP'},
             {'name': '', 'port': 7000, 'protocol': 'TCP'}]
    result = compute([headless()], [eps('db', ep('192.168.2.5', hostname='db-0'),
                                        ep('192.168.2.6', hostname='db-1'),
                                        ep('192.168.2.7', hostname='db-2'),
                                        ep('192.168.2.8', ready=False), ports=ports)])
    # CoreDNS's weights: 100 shared by the records of the same priority
    assert rr(result, f'_pg._tcp.db.default.svc.{Z}', 'SRV') == [
        f'0 33 5432 db-{i}.db.default.svc.{Z}' for i in range(3)]
    assert rr(result, f'_metrics._tcp.db.default.svc.{Z}', 'SRV') == [
        f'0 33 9187 db-{i}.db.default.svc.{Z}' for i in range(3)]
    assert sum('SRV' in node for node in result['records'].values()) == 2


def test_headless_endpoints_of_several_slices_are_merged():
    result = compute([headless()], [
        eps('db', ep('192.168.2.5'), name='db-aaaaa'),
        eps('db', ep('192.168.2.5'), ep('192.168.3.3'), name='db-bbbbb',
            ports=[{'name': 'pg', 'port': 5433, 'protocol': 'TCP'}])])
    assert rr(result, f'db.default.svc.{Z}', 'A') == ['192.168.2.5', '192.168.3.3']
    assert rr(result, f'_pg._tcp.db.default.svc.{Z}', 'SRV') == [
        f'0 33 5432 192-168-2-5.db.default.svc.{Z}',
        f'0 33 5433 192-168-2-5.db.default.svc.{Z}',
        f'0 33 5433 192-168-3-3.db.default.svc.{Z}']


def test_slices_of_other_services_or_namespaces_are_not_mixed_in():
    result = compute([headless()], [eps('db', ep('192.168.2.5')),
                                    eps('db', ep('192.168.9.9'), namespace='other'),
                                    eps('cache', ep('192.168.8.8'))])
    assert rr(result, f'db.default.svc.{Z}', 'A') == ['192.168.2.5']
    assert f'db.other.svc.{Z}' not in result['records']


# ---------------------------------------------------------------- pods
def test_pod_a_records_only_for_existing_pods_in_their_namespace():
    result = compute(pods=[pod('a', '192.168.2.5'), pod('b', '192.168.3.6', 'shop')])
    assert rr(result, f'192-168-2-5.default.pod.{Z}', 'A') == ['192.168.2.5']
    assert rr(result, f'192-168-3-6.shop.pod.{Z}', 'A') == ['192.168.3.6']
    # "pods verified": not another namespace's pod, not an address nobody has
    assert f'192-168-3-6.default.pod.{Z}' not in result['records']
    assert f'192-168-2-99.default.pod.{Z}' not in result['records']


def test_finished_terminating_and_unaddressed_pods_have_no_records():
    result = compute(pods=[pod('done', '192.168.2.5', phase='Succeeded'),
                           pod('failed', '192.168.2.6', phase='Failed'),
                           pod('going', '192.168.2.7', deleting=True),
                           pod('pending', None, phase='Pending')])
    assert not [name for name in result['records'] if '.pod.' in name
                and name != f'default.pod.{Z}']


def test_pod_ptr_names_the_pod():
    result = compute(pods=[pod('a', '192.168.2.5')])
    assert rr(result, '5.2.168.192.in-addr.arpa.', 'PTR') == \
        [f'192-168-2-5.default.pod.{Z}']


def test_pod_hostname_and_subdomain_through_its_headless_service():
    pods = [pod('db-0', '192.168.2.5', hostname='db-0', subdomain='db'),
            pod('db-1', '192.168.2.6', hostname='db-1', subdomain='db'),
            pod('x', '192.168.2.7', hostname='x', subdomain='other')]
    slices = [eps('db', ep('192.168.2.5', pod='db-0'), ep('192.168.2.6', ready=False,
                                                         pod='db-1'),
                  ep('192.168.2.7', pod='x'))]
    result = compute([headless()], slices, pods)
    assert rr(result, f'db-0.db.default.svc.{Z}', 'A') == ['192.168.2.5']
    assert rr(result, f'_pg._tcp.db.default.svc.{Z}', 'SRV') == [
        f'0 50 5432 192-168-2-7.db.default.svc.{Z}', f'0 50 5432 db-0.db.default.svc.{Z}']
    # not ready: no name yet (as in Kubernetes)
    assert f'db-1.db.default.svc.{Z}' not in result['records']
    # a subdomain that is not this Service's name: the dashed name
    assert f'x.db.default.svc.{Z}' not in result['records']
    assert rr(result, f'192-168-2-7.db.default.svc.{Z}', 'A') == ['192.168.2.7']
    assert rr(result, '5.2.168.192.in-addr.arpa.', 'PTR') == [f'db-0.db.default.svc.{Z}']
    # the pod's own dashed name is still there
    assert rr(result, f'192-168-2-5.default.pod.{Z}', 'A') == ['192.168.2.5']


def test_pod_hostname_without_a_matching_headless_service_gets_no_service_name():
    result = compute([svc('db')], [eps('db', ep('192.168.2.5', pod='db-0'))],
                     [pod('db-0', '192.168.2.5', hostname='db-0', subdomain='db')])
    assert f'db-0.db.default.svc.{Z}' not in result['records']


# ---------------------------------------------------------------- PTR precedence
def test_ptr_cluster_ip_then_headless_endpoint_then_pod():
    result = compute([svc(cluster_ip='10.96.0.20'), headless()],
                     [eps('db', ep('192.168.2.5'))],
                     [pod('a', '192.168.2.5'), pod('b', '192.168.2.6')])
    assert rr(result, '20.0.96.10.in-addr.arpa.', 'PTR') == [f'web.default.svc.{Z}']
    assert rr(result, '5.2.168.192.in-addr.arpa.', 'PTR') == \
        [f'192-168-2-5.db.default.svc.{Z}']
    assert rr(result, '6.2.168.192.in-addr.arpa.', 'PTR') == \
        [f'192-168-2-6.default.pod.{Z}']


def _served_apart(objects, networks):
    """What the DNS servers serve from the daemon's two files (``records`` without the
    pods', ``pod_records``): every name's records by type (SOAs aside: their serial
    comes from both files' generations), and the zones."""
    main = records(objects, networks=networks, pods=False)
    pods = pod_records(objects.get('Pod'), networks=networks)
    names = set(main['records']) | set(pods['records'])
    served = {name: merged_node(main['records'].get(name), pods['records'].get(name))
              for name in names}
    return ({name: {t: d for t, d in node.items() if t != 'SOA'} for name, node in
             served.items()}, {name for name, node in served.items() if 'SOA' in node},
            set(main['zones']) | set(pods['zones']))


def _served_at_once(objects, networks):
    one = records(objects, networks=networks)
    return ({name: {t: d for t, d in node.items() if t != 'SOA'} for name, node in
             one['records'].items()},
            {name for name, node in one['records'].items() if 'SOA' in node},
            set(one['zones']))


def test_the_pods_file_and_the_rest_serve_what_one_file_serves():
    """The daemon writes the pods' records to a file of their own (a pod's address
    then rewrites that small file, not every Service's names): served together, the two
    files answer every name as one file would, a headless endpoint's PTR winning over
    its pod's, a pod outside the networks (host network) with a zone of its own."""
    objects = {'Service': [svc(cluster_ip='10.96.0.20'), headless()],
               'EndpointSlice': [eps('db', ep('192.168.2.5', hostname='db-0'),
                                     ep('192.168.2.8', hostname='x' * 64))],
               'Pod': [pod('db-0', '192.168.2.5'), pod('b', '192.168.2.6'),
                       pod('long', '192.168.2.8'),
                       pod('host', '10.0.0.2', namespace='kube-system'),
                       pod('gone', '192.168.2.7', phase='Succeeded')],
               'Namespace': [ns('default'), ns('kube-system')]}
    for networks in (['10.96.0.0/12', '192.168.0.0/16'], ()):
        assert _served_apart(objects, networks) == _served_at_once(objects, networks)
    main = records(objects, networks=['10.96.0.0/12', '192.168.0.0/16'], pods=False)
    pods = pod_records(objects['Pod'], networks=['10.96.0.0/12', '192.168.0.0/16'])
    assert f'192-168-2-6.default.pod.{Z}' not in main['records']
    assert rr(pods, '5.2.168.192.in-addr.arpa.', 'PTR') == [f'192-168-2-5.default.pod.{Z}']
    assert rr(main, '5.2.168.192.in-addr.arpa.', 'PTR') == [f'db-0.db.default.svc.{Z}']
    assert merged_node(main['records']['5.2.168.192.in-addr.arpa.'], pods['records'][
        '5.2.168.192.in-addr.arpa.'])['PTR'] == [f'db-0.db.default.svc.{Z}']
    assert '0.0.10.in-addr.arpa.' in pods['zones'] and \
        rr(pods, '0.0.10.in-addr.arpa.', 'SOA')
    # an endpoint named beyond DNS's limits names nothing: its pod names the address
    assert rr(pods, '8.2.168.192.in-addr.arpa.', 'PTR') == [f'192-168-2-8.default.pod.{Z}']
    assert '8.2.168.192.in-addr.arpa.' not in main['records']
    assert pod_records_path('/run/kubelab/dns/records.json') == \
        '/run/kubelab/dns/records.pods.json'
    assert pod_records_path('/tmp/records') == '/tmp/records.pods'


def test_the_two_files_serve_what_one_serves_on_random_clusters():
    from services.cluster import default_cluster
    from services.dns_inputs import DNSInputs
    from services.store import Store
    from tests.unit.test_dns_inputs import risky_step
    from tests.unit.test_store_incremental import random_step
    for seed in range(4):
        rng = random.Random(seed)
        store = Store(default_cluster(), rng=random.Random(seed))
        store.apply([ns('team')])
        for serial in range(100):
            (risky_step if rng.random() < 0.6 else random_step)(store, rng, serial)
            objects = DNSInputs(store).objects()
            for networks in (('10.96.0.0/12', '192.168.0.0/16'), ()):
                assert _served_apart(objects, networks) == \
                    _served_at_once(objects, networks), f'after step {serial}'


def test_an_endpoint_of_two_headless_services_has_two_ptrs():
    result = compute([headless('a'), headless('b')],
                     [eps('a', ep('192.168.2.5')), eps('b', ep('192.168.2.5'))])
    assert rr(result, '5.2.168.192.in-addr.arpa.', 'PTR') == [
        f'192-168-2-5.a.default.svc.{Z}', f'192-168-2-5.b.default.svc.{Z}']


# ---------------------------------------------------------------- zone, schema, names
def test_dns_version_txt():
    assert rr(compute(), f'dns-version.{Z}', 'TXT') == [f'"{SCHEMA_VERSION}"']
    assert SCHEMA_VERSION == '1.1.0'


def test_zone_apexes_have_soa_and_the_domain_ns_to_kube_dns():
    result = compute([svc('kube-dns', 'kube-system', '10.96.0.10',
                          [{'name': 'dns', 'port': 53, 'protocol': 'UDP'}])])
    apex = result['records'][Z]
    assert apex['NS'] == [f'ns.dns.{Z}']
    [soa] = apex['SOA']
    mname, rname, serial, *timers = soa.split()
    assert (mname, rname) == (f'ns.dns.{Z}', f'hostmaster.{Z}')
    assert int(serial) == int(result['generation'], 16)
    assert timers == ['7200', '1800', '86400', str(TTL)]
    assert rr(result, f'ns.dns.{Z}', 'A') == ['10.96.0.10']
    for zone in result['zones']:
        assert result['records'][zone]['SOA'] == [soa]


def test_reverse_zones_cover_the_networks_and_every_ptr():
    result = compute([svc(cluster_ip='10.96.0.20')], pods=[pod('a', '10.128.0.12')],
                     networks=['10.96.0.0/12', '192.168.0.0/16'])
    assert result['zones'] == sorted(
        [f'{i}.10.in-addr.arpa.' for i in range(96, 112)]
        + ['168.192.in-addr.arpa.', '0.128.10.in-addr.arpa.', Z])
    # the empty non-terminals between a PTR and its zone's apex exist
    assert result['records']['0.96.10.in-addr.arpa.'] == {}
    assert reverse_zones(['10.0.0.0/28']) == ['0.0.10.in-addr.arpa.']
    assert reverse_zones(['10.0.0.0/8']) == ['10.in-addr.arpa.']
    assert len(reverse_zones(['10.0.0.0/20'])) == 16


def test_without_networks_each_ptr_has_its_24_zone():
    result = compute([svc(cluster_ip='10.96.0.20')], pods=[pod('a', '192.168.2.5')])
    assert result['zones'] == ['0.96.10.in-addr.arpa.', '2.168.192.in-addr.arpa.', Z]


def test_empty_non_terminals_and_namespaces_exist():
    result = compute([svc()], namespaces=[ns('default'), ns('empty')])
    names = result['records']
    for name in (f'svc.{Z}', f'pod.{Z}', f'default.svc.{Z}', f'empty.svc.{Z}',
                 f'empty.pod.{Z}', f'_tcp.web.default.svc.{Z}'):
        assert names[name] == {}, name
    assert f'missing.svc.{Z}' not in names


def test_names_are_case_insensitive():
    service = svc('Web', 'Shop', '10.96.0.20',
                  [{'name': 'HTTP', 'port': 80, 'protocol': 'TCP'}])
    result = compute([service, headless('DB', 'Shop')],
                     [eps('DB', ep('192.168.2.5', hostname='DB-0'), namespace='Shop',
                          ports=[{'name': 'PG', 'port': 5432, 'protocol': 'TCP'}])],
                     domain='Cluster.Local.')
    assert result['domain'] == 'cluster.local'
    assert rr(result, f'web.shop.svc.{Z}', 'A') == ['10.96.0.20']
    assert rr(result, f'_http._tcp.web.shop.svc.{Z}', 'SRV') == \
        [f'0 100 80 web.shop.svc.{Z}']
    assert rr(result, f'db-0.db.shop.svc.{Z}', 'A') == ['192.168.2.5']
    assert all(name == name.lower() for name in result['records'])


def test_another_cluster_domain():
    result = compute([svc()], domain='k8s.example')
    assert rr(result, 'web.default.svc.k8s.example.', 'A') == ['10.96.0.20']
    assert 'k8s.example.' in result['zones'] and Z not in result['zones']


def test_external_name_service_is_a_cname():
    result = compute([svc('ext', cluster_ip=None, type='ExternalName',
                          externalName='db.Example.com')])
    assert result['records'][f'ext.default.svc.{Z}'] == {'CNAME': ['db.example.com.']}


def test_names_too_long_for_dns_are_left_out():
    result = compute([headless()], [eps('db', ep('192.168.2.5', hostname='h' * 64))])
    assert not [name for name in result['records'] if name.startswith('h' * 64)]
    assert rr(result, f'db.default.svc.{Z}', 'A') == ['192.168.2.5']


# ---------------------------------------------------------------- changes, format
def test_a_deleted_service_is_gone():
    objects = ([svc(), headless()], [eps('db', ep('192.168.2.5'))], [])
    before = compute(*objects)
    after = compute([headless()], objects[1])
    assert f'web.default.svc.{Z}' in before['records']
    gone = [name for name in after['records'] if name.endswith(f'web.default.svc.{Z}')]
    assert gone == []
    assert '20.0.96.10.in-addr.arpa.' not in after['records']
    assert after['generation'] != before['generation']
    # and a deleted headless Service takes its slices' names with it
    empty = compute([], objects[1])
    assert not [name for name in empty['records'] if 'db.default' in name]


def test_json_serialisable_deterministic_and_sorted():
    services = [svc(), svc('api', cluster_ip='10.96.0.30'), headless()]
    slices = [eps('db', ep('192.168.2.5'), ep('192.168.3.6'))]
    pods = [pod(f'p{i}', f'192.168.2.{i}') for i in range(2, 12)]
    first = compute(services, slices, pods, [ns('default')])
    rng = random.Random(7)
    for _ in range(3):
        shuffled = [list(x) for x in (services, slices, pods)]
        for items in shuffled:
            rng.shuffle(items)
        again = compute(*shuffled, [ns('default')])
        assert json.dumps(again) == json.dumps(first)
    assert json.loads(json.dumps(first)) == first
    assert list(first['records']) == sorted(first['records'])
    assert first['version'] == 1 and first['ttl'] == TTL == 5
    assert len(first['generation']) == 8 and int(first['generation'], 16) >= 0
    assert set(first) == {'version', 'generation', 'domain', 'ttl', 'zones', 'records'}


def test_helpers():
    assert dashed('10.1.2.3') == '10-1-2-3'
    assert reverse_name('10.1.2.3') == '3.2.1.10.in-addr.arpa.'


