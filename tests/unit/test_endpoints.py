"""The endpoint controller and selectors: which pods become endpoints of a
Service, with which conditions and ports, in which (named) slices."""

import random

import pytest

from services.controllers.endpointslices import (CONTROLLER_NAME, MANAGED_BY_LABEL,
                                SERVICE_NAME_LABEL, compute_endpoint_slices)
from services.selectors import (format_label_selector, format_selector,
                                matches, matches_label_selector)


def svc(ports=None, selector=None, namespace='default', **spec):
    return {'apiVersion': 'v1', 'kind': 'Service',
            'metadata': {'name': 'web', 'namespace': namespace,
                         'uid': 'svc-uid'},
            'spec': {'selector': {'app': 'web'} if selector is None
                     else selector,
                     'ports': ports or [{'name': 'http', 'port': 80,
                                         'targetPort': 8080,
                                         'protocol': 'TCP'}],
                     **spec}}


def pod(name, ip, ready=True, node='worker-1', namespace='default',
        labels=None, phase='Running', deleting=False, ports=None):
    meta = {'name': name, 'namespace': namespace, 'uid': f'uid-{name}',
            'labels': {'app': 'web'} if labels is None else labels}
    if deleting:
        meta['deletionTimestamp'] = '2024-05-01T12:00:00Z'
    status = {'phase': phase, 'conditions': [
        {'type': 'Ready', 'status': 'True' if ready else 'False'}]}
    if ip:
        status['podIP'] = ip
    return {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': meta,
            'spec': {'nodeName': node, 'containers': [
                {'name': 'c', 'ports': ports or []}]},
            'status': status}


def compute(service, pods, existing=(), seed=0):
    return compute_endpoint_slices(service, pods, list(existing),
                                   rng=random.Random(seed))


def addresses(endpoint_slice):
    return [e['addresses'][0] for e in endpoint_slice['endpoints']]


def test_slice_shape():
    [result] = compute(svc(), [pod('a', '192.168.2.5')])
    name = result['metadata'].pop('name')
    assert name.startswith('web-') and len(name) == 9
    assert result == {
        'apiVersion': 'discovery.k8s.io/v1', 'kind': 'EndpointSlice',
        'metadata': {
            'namespace': 'default',
            'labels': {SERVICE_NAME_LABEL: 'web',
                       MANAGED_BY_LABEL: CONTROLLER_NAME},
            'ownerReferences': [{'apiVersion': 'v1', 'kind': 'Service',
                                 'name': 'web', 'uid': 'svc-uid',
                                 'controller': True}]},
        'addressType': 'IPv4',
        'endpoints': [{
            'addresses': ['192.168.2.5'],
            'conditions': {'ready': True, 'serving': True,
                           'terminating': False},
            'nodeName': 'worker-1',
            'targetRef': {'kind': 'Pod', 'namespace': 'default',
                          'name': 'a', 'uid': 'uid-a'}}],
        'ports': [{'name': 'http', 'port': 8080, 'protocol': 'TCP'}]}


@pytest.mark.parametrize('name, kwargs, publish, want', [
    ('ready pod', {}, False, (True, True, False)),
    ('not ready pod', {'ready': False}, False, (False, False, False)),
    ('terminating ready pod', {'deleting': True}, False,
     (False, True, True)),
    ('terminating not ready pod', {'deleting': True, 'ready': False}, False,
     (False, False, True)),
    ('not ready, publishNotReadyAddresses', {'ready': False}, True,
     (True, False, False)),
    ('terminating, publishNotReadyAddresses', {'deleting': True}, True,
     (True, True, True)),
])
def test_conditions(name, kwargs, publish, want):
    [result] = compute(svc(publishNotReadyAddresses=publish),
                       [pod('a', '192.168.2.5', **kwargs)])
    conditions = result['endpoints'][0]['conditions']
    assert (conditions['ready'], conditions['serving'],
            conditions['terminating']) == want, name


@pytest.mark.parametrize('name, pods', [
    ('no IP yet', [pod('a', None)]),
    ('succeeded', [pod('a', '192.168.2.5', phase='Succeeded')]),
    ('failed', [pod('a', '192.168.2.5', phase='Failed')]),
    ('other labels', [pod('a', '192.168.2.5', labels={'app': 'api'})]),
    ('no labels', [pod('a', '192.168.2.5', labels={})]),
    ('other namespace', [pod('a', '192.168.2.5', namespace='shop')]),
    ('no pods', []),
])
def test_pods_that_are_not_endpoints_leave_one_empty_slice(name, pods):
    [result] = compute(svc(), pods)
    assert result['endpoints'] == [], name
    assert result['ports'] == []


@pytest.mark.parametrize('selector', [{}, None])
def test_service_without_selector_gets_no_slices(selector):
    service = svc()
    if selector is None:
        del service['spec']['selector']
    else:
        service['spec']['selector'] = selector
    assert compute(service, [pod('a', '192.168.2.5')]) == []


def test_namespace_isolation():
    service = svc(namespace='shop')
    pods = [pod('a', '192.168.2.5'), pod('b', '192.168.2.6',
                                         namespace='shop')]
    [result] = compute(service, pods)
    assert addresses(result) == ['192.168.2.6']
    assert result['metadata']['namespace'] == 'shop'


def test_endpoints_sorted_by_ip_numerically():
    pods = [pod('a', '192.168.2.10'), pod('b', '192.168.2.9'),
            pod('c', '192.168.1.200')]
    [result] = compute(svc(), pods)
    assert addresses(result) == ['192.168.1.200', '192.168.2.9',
                                 '192.168.2.10']


def test_named_target_port_resolving_differently_gives_two_slices():
    service = svc(ports=[{'name': 'http', 'port': 80, 'targetPort': 'web',
                          'protocol': 'TCP'}])
    pods = [pod('a', '192.168.2.5',
                ports=[{'name': 'web', 'containerPort': 8080,
                        'protocol': 'TCP'}]),
            pod('b', '192.168.3.5',
                ports=[{'name': 'web', 'containerPort': 9090,
                        'protocol': 'TCP'}]),
            pod('c', '192.168.3.6',
                ports=[{'name': 'web', 'containerPort': 8080,
                        'protocol': 'TCP'}])]
    result = compute(service, pods)
    by_port = {s['ports'][0]['port']: addresses(s) for s in result}
    assert by_port == {8080: ['192.168.2.5', '192.168.3.6'],
                       9090: ['192.168.3.5']}
    assert len({s['metadata']['name'] for s in result}) == 2


def test_named_target_port_needs_the_same_protocol():
    service = svc(ports=[{'name': 'dns', 'port': 53, 'targetPort': 'dns',
                          'protocol': 'UDP'}])
    tcp_only = pod('a', '192.168.2.5', ports=[
        {'name': 'dns', 'containerPort': 5353, 'protocol': 'TCP'}])
    udp = pod('b', '192.168.2.6', ports=[
        {'name': 'dns', 'containerPort': 5353, 'protocol': 'UDP'}])
    result = compute(service, [tcp_only, udp])
    by_ports = {tuple(p['port'] for p in s['ports']): addresses(s)
                for s in result}
    # the TCP-only pod cannot serve the UDP port: it is left out of it
    assert by_ports == {(): ['192.168.2.5'], (5353,): ['192.168.2.6']}


def test_more_than_100_endpoints_are_split():
    pods = [pod(f'p{i}', f'192.168.{2 + i // 200}.{1 + i % 200}')
            for i in range(250)]
    result = compute(svc(), pods)
    assert [len(s['endpoints']) for s in result] == [100, 100, 50]
    assert len({s['metadata']['name'] for s in result}) == 3


def test_names_are_kept_across_recomputes():
    first = compute(svc(), [pod('a', '192.168.2.5')], seed=1)
    second = compute(svc(), [pod('a', '192.168.2.5'),
                             pod('b', '192.168.2.6')], first, seed=2)
    assert second[0]['metadata']['name'] == first[0]['metadata']['name']
    # the empty slice's name is reused once pods appear
    empty = compute(svc(), [], seed=3)
    later = compute(svc(), [pod('a', '192.168.2.5')], empty, seed=4)
    assert later[0]['metadata']['name'] == empty[0]['metadata']['name']


def test_name_reuse_prefers_the_slice_with_the_same_ports():
    service = svc(ports=[{'name': 'http', 'port': 80, 'targetPort': 'web',
                          'protocol': 'TCP'}])

    def with_port(name, ip, number):
        return pod(name, ip, ports=[{'name': 'web', 'containerPort': number,
                                     'protocol': 'TCP'}])
    before = compute(service, [with_port('a', '192.168.2.5', 8080),
                               with_port('b', '192.168.2.6', 9090)])
    names = {s['ports'][0]['port']: s['metadata']['name'] for s in before}
    after = compute(service, [with_port('b', '192.168.2.6', 9090)],
                    list(reversed(before)), seed=9)
    assert [s['metadata']['name'] for s in after] == [names[9090]]


def test_slices_of_others_are_not_reused():
    foreign = {'metadata': {'name': 'web-zzzzz', 'namespace': 'default',
                            'labels': {SERVICE_NAME_LABEL: 'web'}},
               'ports': []}
    [result] = compute(svc(), [], [foreign])
    assert result['metadata']['name'] != 'web-zzzzz'


def test_output_is_deterministic_given_the_seed():
    pods = [pod('b', '192.168.2.6'), pod('a', '192.168.2.5')]
    assert compute(svc(), pods, seed=5) == compute(svc(),
                                                   list(reversed(pods)),
                                                   seed=5)


def test_inputs_are_not_modified():
    service, pods = svc(), [pod('a', '192.168.2.5')]
    before = repr((service, pods))
    compute(service, pods)
    assert repr((service, pods)) == before


# ---------------------------------------------------------------- selectors

@pytest.mark.parametrize('selector, labels, want', [
    ({'app': 'web'}, {'app': 'web', 'tier': 'fe'}, True),
    ({'app': 'web', 'tier': 'fe'}, {'app': 'web'}, False),
    ({'app': 'web'}, {'app': 'api'}, False),
    ({}, {'app': 'web'}, False),
    (None, {'app': 'web'}, False),
    ({'app': 'web'}, None, False),
])
def test_service_selector(selector, labels, want):
    assert matches(selector, labels) is want


@pytest.mark.parametrize('selector, labels, want', [
    ({'matchLabels': {'app': 'web'}}, {'app': 'web'}, True),
    ({}, {'app': 'web'}, True),
    (None, {'app': 'web'}, False),
    ({'matchExpressions': [{'key': 'tier', 'operator': 'In',
                            'values': ['fe', 'be']}]}, {'tier': 'be'}, True),
    ({'matchExpressions': [{'key': 'tier', 'operator': 'In',
                            'values': ['fe']}]}, {}, False),
    ({'matchExpressions': [{'key': 'tier', 'operator': 'NotIn',
                            'values': ['fe']}]}, {}, True),
    ({'matchExpressions': [{'key': 'tier', 'operator': 'Exists'}]},
     {'tier': ''}, True),
    ({'matchExpressions': [{'key': 'tier', 'operator': 'DoesNotExist'}]},
     {'tier': 'x'}, False),
    ({'matchLabels': {'app': 'web'},
      'matchExpressions': [{'key': 'canary', 'operator': 'DoesNotExist'}]},
     {'app': 'web', 'canary': 'y'}, False),
])
def test_label_selector(selector, labels, want):
    assert matches_label_selector(selector, labels) is want


def test_format_selectors():
    assert format_selector({'tier': 'fe', 'app': 'web'}) == 'app=web,tier=fe'
    assert format_label_selector({
        'matchLabels': {'app': 'web'},
        'matchExpressions': [
            {'key': 'tier', 'operator': 'In', 'values': ['fe', 'be']},
            {'key': 'canary', 'operator': 'DoesNotExist'}]}) == \
        'app=web,tier in (be,fe),!canary'
