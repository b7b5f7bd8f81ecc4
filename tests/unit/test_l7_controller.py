"""The L7 controller against a real store and a temporary L7 directory: the Gateway's
data plane applied and collected, the statuses written back, the proxies'
configurations written and removed, and which proxy pods have not loaded theirs."""

import os

import pytest

from services import addons
from services.cluster import default_cluster
from services.l7.controller import L7Controller, digest, proxy_configs, stale_data_planes
from services.store import Store
from topo.l7files import L7Files


def gateway(name='gw'):
    return {'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'Gateway',
            'metadata': {'name': name, 'namespace': 'default'},
            'spec': {'gatewayClassName': addons.GATEWAY_CLASS,
                     'listeners': [{'name': 'http', 'port': 80, 'protocol': 'HTTP'}]}}


def web_objects():
    return [
        {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': 'web'},
         'spec': {'selector': {'app': 'web'}, 'ports': [{'port': 80}]}},
        {'apiVersion': 'gateway.networking.k8s.io/v1', 'kind': 'HTTPRoute',
         'metadata': {'name': 'web'},
         'spec': {'parentRefs': [{'name': 'gw'}],
                  'rules': [{'backendRefs': [{'name': 'web', 'port': 80}]}]}},
        {'apiVersion': 'networking.k8s.io/v1', 'kind': 'Ingress',
         'metadata': {'name': 'web'},
         'spec': {'ingressClassName': addons.INGRESS_CLASS,
                  'rules': [{'host': 'web.example.com', 'http': {'paths': [
                      {'path': '/', 'pathType': 'Prefix', 'backend': {
                          'service': {'name': 'web', 'port': {'number': 80}}}}]}}]}},
    ]


@pytest.fixture
def lab(tmp_path):
    cluster = default_cluster()
    store = Store(cluster)
    store.apply(addons.ingress_nginx_objects(cluster.nodes[-1].name)
                + [addons.gateway_class_object()])
    store.apply(web_objects() + [gateway()])
    controller = L7Controller(store, L7Files(str(tmp_path / 'l7')))
    controller.sync()
    return store, controller, str(tmp_path / 'l7')


def conditions(obj):
    return {c['type']: c['status'] for c in obj['conditions']}


def test_a_sync_applies_the_gateway_data_plane_and_writes_the_statuses(lab):
    store, controller, _ = lab
    assert store.get('Deployment', 'default', 'gw-nginx')['metadata']['labels'][
        addons.GATEWAY_NAME_LABEL] == 'gw'
    service = store.get('Service', 'default', 'gw-nginx')
    assert service['spec']['type'] == 'LoadBalancer'
    assert conditions(store.get('GatewayClass', '', addons.GATEWAY_CLASS)['status']) == {
        'Accepted': 'True'}
    controller.sync()                    # the data plane's address is in the status now
    gw = store.get('Gateway', 'default', 'gw')
    assert gw['status']['addresses'] == [
        {'type': 'IPAddress', 'value': service['status']['loadBalancer']['ingress'][0]['ip']}]
    [parent] = store.get('HTTPRoute', 'default', 'web')['status']['parents']
    assert conditions(parent) == {'Accepted': 'True', 'ResolvedRefs': 'True'}
    published = store.get('Service', addons.INGRESS_NAMESPACE, addons.INGRESS_NAME)[
        'status']['loadBalancer']['ingress'][0]['ip']
    assert store.get('Ingress', 'default', 'web')['status']['loadBalancer'] == {
        'ingress': [{'ip': published}]}


def test_a_sync_writes_each_proxy_configuration_and_remembers_its_digest(lab):
    store, controller, l7_dir = lab
    version = store.rv
    controller.sync()                    # rendered from the store as it was at the start
    configs = dict(proxy_configs(controller.objects(), l7_dir, controller.default_cert))
    assert sorted(os.path.relpath(d, l7_dir) for d in configs) == [
        os.path.join('gateway', 'default', 'gw'),
        os.path.join('ingress', addons.INGRESS_CONTROLLER.replace('/', '_'))]
    assert controller.rendered() == (version, {d: digest(c) for d, c in configs.items()})
    for directory, config in configs.items():
        with open(os.path.join(directory, 'nginx.conf')) as f:
            assert f.read() == config.text
    assert os.path.exists(os.path.join(l7_dir, 'default-certificate', 'fake.crt'))


def test_a_gone_gateway_loses_its_data_plane_and_its_directory(lab):
    store, controller, l7_dir = lab
    directory = os.path.join(l7_dir, 'gateway', 'default', 'gw')
    assert os.path.isdir(directory)
    store.delete('Gateway', 'default', 'gw')
    controller.sync()
    assert not os.path.exists(directory)
    assert [s['metadata']['name'] for s in store.list('Service', 'default')] == ['web']
    assert store.list('Deployment', 'default') == []


def test_data_planes_of_a_gateway_recreated_under_the_same_name_are_stale():
    gateways = {('default', 'gw'): {'metadata': {'uid': 'new'}}}
    objs = [addons.gateway_objects({'metadata': {'name': 'gw', 'namespace': 'default',
                                                 'uid': uid},
                                    'spec': {'listeners': []}})[0]
            for uid in ('old', 'new')]
    objs.append({'kind': 'Deployment', 'metadata': {'name': 'mine', 'namespace': 'default'}})
    assert stale_data_planes(gateways, objs) == [('Deployment', 'default', 'gw-nginx')]


def test_the_proxies_pending_are_the_ready_pods_that_have_not_loaded_theirs(lab):
    store, controller, l7_dir = lab
    [(directory, wanted)] = [(d, w) for d, w in controller.rendered()[1].items()
                             if 'gateway' in d]
    pod = store.list('Pod', 'default')[0]
    name = pod['metadata']['name']
    os.makedirs(os.path.join(directory, 'pods', name))
    assert controller.proxies()['pending'] == []           # not ready: not waited for
    store.update_pod_status('default', name, pod['metadata']['uid'], {
        'phase': 'Running', 'conditions': [{'type': 'Ready', 'status': 'True'}]})
    assert controller.proxies()['pending'] == [
        f'pod {name} has not loaded gateway/default/gw yet']
    with open(os.path.join(directory, 'pods', name, 'loaded'), 'w') as f:
        f.write(wanted)
    assert controller.proxies() == {'version': controller.rendered()[0], 'pending': []}
