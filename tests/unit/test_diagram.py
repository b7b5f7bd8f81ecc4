"""``kubelab diagram``: the picture of a lab running examples/demo.yaml.

The objects come from an in-process store with the lab's add-ons (kube-dns,
ingress-nginx, the GatewayClass) and the demo applied, the demo Gateway's data plane
created, every pod scheduled, given an address of its node's pod CIDR and made ready,
and the statuses the lab's controllers write (Ingress and Gateway addresses, the cloud
load balancer's health checks); ``INFO`` stands for the lab's ``/lab/v1/lab``. The DOT
names every node, pod, Service, Ingress, Gateway and client; ``dot`` turns it into an
SVG that parses and names them, and a PNG of a plausible size; names full of DOT and
HTML syntax cannot break it; the CLI fetches, filters and writes.

``python -m tests.unit.test_diagram docs/diagram-demo.png`` redraws the README's
picture from this state (no lab needed; on a lab: ``kubelab diagram -o FILE``).
"""

from __future__ import annotations

import copy
import ipaddress
import random
import re
import shutil
import struct
import sys
import xml.etree.ElementTree as ET

import pytest

from kubelab import cli
from kubelab.cli import observe as cli_observe
from kubelab.inspect import diagram, diagram_dot
from services import addons
from services.cluster import default_cluster
from services.errors import KubelabError
from services.store import Store
from tests.invalid_corpus import DEMO, apply_text

needs_dot = pytest.mark.skipif(
    shutil.which('dot') is None,
    reason='Graphviz `dot` is not installed (apt-get install graphviz; '
           'scripts/install.sh installs it)')

INFO = {
    'nodes': [{'name': 'control-plane', 'ip': '10.128.0.11', 'role': 'control-plane',
               'bridge': 'kl-n1', 'pid': 101},
              {'name': 'worker-1', 'ip': '10.128.0.12', 'role': 'worker',
               'bridge': 'kl-n2', 'pid': 102},
              {'name': 'worker-2', 'ip': '10.128.0.13', 'role': 'worker',
               'bridge': 'kl-n3', 'pid': 103}],
    'hosts': [{'name': 'client-1', 'ip': '203.0.113.10', 'pid': 201},
              {'name': 'client-2', 'ip': '203.0.113.11', 'pid': 202}],
    'sandboxes': {}, 'datapath': 'user', 'controllerPid': 300, 'failedNodes': [],
    'stateDir': '/run/kubelab'}
SVG = '{http://www.w3.org/2000/svg}'


def live_demo() -> Store:
    """The store of a lab that ran ``kubelab apply -f examples/demo.yaml --wait``."""
    store = Store(default_cluster(), rng=random.Random(7))
    store.apply(addons.dns_objects(store.cluster.dns_ip, '/run/kubelab/dns/records.json')
                + addons.ingress_nginx_objects('worker-1')
                + [addons.gateway_class_object()])
    apply_text(store, DEMO.read_text(), str(DEMO))
    store.apply(addons.gateway_objects(store.get('Gateway', 'default', 'demo-gw')))
    cidrs = {n['metadata']['name']: ipaddress.ip_network(n['spec']['podCIDR'])
             for n in store.list('Node')}
    taken: dict[str, int] = {}
    for pod in store.list('Pod'):
        meta, node = pod['metadata'], pod['spec']['nodeName']
        taken[node] = taken.get(node, 9) + 1
        store.update_pod_status(meta['namespace'], meta['name'], meta['uid'], {
            'phase': 'Running', 'podIP': str(cidrs[node][taken[node]]),
            'conditions': [{'type': 'Ready', 'status': 'True'}]})
    for name in cidrs:
        store.set_node_ready(name, True)

    def lb_ip(namespace, name):
        return store.get('Service', namespace, name)['status']['loadBalancer'][
            'ingress'][0]['ip']
    ingress = store.get('Ingress', 'default', 'web')
    store.set_status('Ingress', 'default', 'web', ingress['metadata']['uid'], {
        'loadBalancer': {'ingress': [{'ip': lb_ip('ingress-nginx',
                                                  'ingress-nginx-controller')}]}})
    gateway = store.get('Gateway', 'default', 'demo-gw')
    store.set_status('Gateway', 'default', 'demo-gw', gateway['metadata']['uid'], {
        'addresses': [{'type': 'IPAddress', 'value': lb_ip('default', 'demo-gw-nginx')}]})
    gateway_node = next(p['spec']['nodeName'] for p in store.list('Pod', 'default')
                        if p['metadata']['name'].startswith('demo-gw-nginx-'))
    store.set_lb_health('default', 'web-lb', sorted(cidrs))
    store.set_lb_health('ingress-nginx', 'ingress-nginx-controller', ['worker-1'])
    store.set_lb_health('default', 'demo-gw-nginx', [gateway_node])
    return store


def demo_objects() -> dict[str, list[dict]]:
    return live_demo().snapshot()[1]


@pytest.fixture(scope='module')
def demo():
    return demo_objects()


@pytest.fixture
def objects(demo):
    return copy.deepcopy(demo)


def names(objects, kind):
    return [o['metadata']['name'] for o in objects.get(kind, [])]


def box_id(source: str, name: str, kind: str = '') -> str:
    """The DOT id of the box whose title is ``name`` (in bold), then ``kind``."""
    found = re.findall(r'^\s*(\w+) \[label=<<TABLE[^\n]*?<B>' + re.escape(name)
                       + r'</B> <FONT[^>]*>' + re.escape(kind), source, re.M)
    assert len(found) == 1, (name, found)
    return found[0]


def edges(source: str) -> list[tuple[str, str, str]]:
    """(tail box, head box, attributes) of every arrow."""
    return [(tail, head, attrs) for tail, head, attrs in re.findall(
        r'^\s*(\w+)(?::\w+)*? -> (\w+)(?::\w+)*(?: \[(.*)\])?;$', source, re.M)]


def svg_text(path) -> str:
    """The SVG's texts, one a line (a label line in several fonts is several texts)."""
    root = ET.parse(path).getroot()
    return '\n'.join(''.join(t.itertext()) for t in root.iter(SVG + 'text'))


def svg_texts(path) -> set[str]:
    return set(svg_text(path).split('\n'))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    length, chunk = struct.unpack('>I4s', data[8:16])
    assert (length, chunk) == (13, b'IHDR')
    return struct.unpack('>II', data[16:24])


# ---------------------------------------------------------------- the DOT
def test_the_demo_has_what_the_picture_must_show(demo):
    assert len(demo['Pod']) == 10 and len(demo['Service']) == 8
    assert {p['spec']['nodeName'] for p in demo['Pod']} == {
        'control-plane', 'worker-1', 'worker-2'}
    assert all(p['status']['podIP'] for p in demo['Pod'])


def test_the_dot_names_every_node_pod_service_and_client(demo):
    source = diagram.dot_source(demo, INFO)
    for node in demo['Node']:
        assert node['metadata']['name'] in source
        assert node['spec']['podCIDR'] in source
        assert next(a['address'] for a in node['status']['addresses']
                    if a['type'] == 'InternalIP') in source
    for pod in demo['Pod']:
        assert f'<B>{pod["metadata"]["name"]}</B>' in source
        assert pod['status']['podIP'] in source
    for svc in demo['Service']:
        assert f'<B>{svc["metadata"]["name"]}</B>' in source
        assert svc['spec']['clusterIP'] in source
        for port in svc['spec']['ports']:
            assert str(port.get('nodePort', port['port'])) in source
    for kind in ('Ingress', 'Gateway', 'HTTPRoute'):
        for name in names(demo, kind):
            assert f'<B>{name}</B> <FONT COLOR="#595959" POINT-SIZE="9">{kind}</FONT>' \
                in source
    for host in INFO['hosts']:
        assert f'<B>{host["name"]}</B>' in source and host['ip'] in source
    for text in ('kl-n2', 'shop.example/ (Prefix) \u2192 web:http', 'web:80 \u00b7 80%',
                 'web-v2:80 \u00b7 20%', 'hostPort 10.128.0.12:80, 443',
                 'Cloud load balancer', 'cluster DNS', 'agnhost:2.53', 'busybox:1.36',
                 'ingress-nginx/controller:v1.11.3', 'NodeIP:30080 on every node',
                 'healthy: worker-1', 'namespace kube-system', 'namespace ingress-nginx'):
        assert _plain(text) in source, text


def _plain(text: str) -> str:
    return text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')


def test_every_endpoint_is_an_arrow_from_its_service_to_its_pod(demo):
    source = diagram.dot_source(demo, INFO)
    arrows = {(tail, head) for tail, head, attrs in edges(source)
              if f'color="{diagram.SERVICE}"' in attrs}
    expected = set()
    for eps in demo['EndpointSlice']:
        service = box_id(source, eps['metadata']['labels']['kubernetes.io/service-name'],
                         'Service')
        for endpoint in eps['endpoints']:
            assert endpoint['conditions']['ready']
            expected.add((service, box_id(source, endpoint['targetRef']['name'], 'Pod')))
    assert len(expected) == 17
    assert arrows == expected


def test_the_ways_in_from_outside(demo):
    """client -> LB -> NodePort; client -> NodePort; client -> node:80 -> ingress pod;
    Ingress/HTTPRoute -> Service; Gateway -> HTTPRoute."""
    source = diagram.dot_source(demo, INFO)
    outside = {(tail, head) for tail, head, attrs in edges(source)
               if f'color="{diagram.EXTERNAL}"' in attrs}
    client, lb = box_id(source, 'client-1'), box_id(source, 'Cloud load balancer')
    ingress_pod = next(n for n in names(demo, 'Pod') if n.startswith('ingress-nginx-'))
    assert outside == {(client, lb),
                       (client, box_id(source, 'web-nodeport', 'Service')),
                       (client, box_id(source, 'web-local', 'Service')),
                       (client, box_id(source, ingress_pod, 'Pod')),
                       (lb, box_id(source, 'web-lb', 'Service')),
                       (lb, box_id(source, 'demo-gw-nginx', 'Service')),
                       (lb, box_id(source, 'ingress-nginx-controller', 'Service'))}
    assert 'ltail="cluster_external"' in source
    routing = {(tail, head) for tail, head, attrs in edges(source)
               if f'color="{diagram.L7}"' in attrs}
    web, web_v2 = box_id(source, 'web', 'Service'), box_id(source, 'web-v2', 'Service')
    canary = box_id(source, 'canary', 'HTTPRoute')
    assert routing == {(box_id(source, 'web', 'Ingress'), web), (canary, web),
                       (canary, web_v2), (box_id(source, 'demo-gw', 'Gateway'), canary)}


def test_the_proxy_pods_and_their_rules_name_each_other(demo):
    source = diagram.dot_source(demo, INFO)
    ingress_pod = next(n for n in names(demo, 'Pod') if n.startswith('ingress-nginx-'))
    gateway_pod = next(n for n in names(demo, 'Pod') if n.startswith('demo-gw-nginx-'))
    source = source.replace('<BR ALIGN="LEFT"/>', '')      # long lines are wrapped
    assert f'proxy pod ingress-nginx/{ingress_pod} on worker-1' in source
    assert 'proxy of Ingress web' in source and 'proxy of Gateway demo-gw' in source
    assert f'proxy pod {gateway_pod} on ' in source


def test_box_ids_are_generated_never_taken_from_names(demo):
    source = diagram.dot_source(demo, INFO)
    ids = re.findall(r'^\s*(\w+) \[label=', source, re.M)
    assert ids and all(re.fullmatch(r'(pod|svc|host|lb|ing|gw|route|empty|addr|legend)'
                                    r'\d+', i) for i in ids)
    assert len(ids) == len(set(ids))


def test_a_not_ready_endpoint_is_a_grey_dashed_arrow_and_its_pod_dashed():
    store = live_demo()
    pod = next(p for p in store.list('Pod') if p['metadata']['name'].startswith('web-v2-'))
    meta = pod['metadata']
    store.update_pod_status(meta['namespace'], meta['name'], meta['uid'], dict(
        pod['status'], conditions=[{'type': 'Ready', 'status': 'False'}]))
    objects = store.snapshot()[1]
    source = diagram.dot_source(objects, INFO)
    pid, sid = box_id(source, meta['name'], 'Pod'), box_id(source, 'web-v2', 'Service')
    [attrs] = [a for t, h, a in edges(source) if (t, h) == (sid, pid)]
    assert f'color="{diagram.DIM}"' in attrs and 'style="dashed"' in attrs
    line = next(line for line in source.splitlines() if line.strip().startswith(pid + ' '))
    assert 'STYLE="rounded,dashed"' in line and 'NotReady' in line
    assert '0 ready, 1 not ready' in source


def test_a_failed_node_and_a_missing_backend_are_red(objects):
    route = next(r for r in objects['HTTPRoute'] if r['metadata']['name'] == 'canary')
    route['spec']['rules'][0]['backendRefs'][1]['name'] = 'web-v3'
    info = dict(INFO, failedNodes=['worker-2'])
    source = diagram.dot_source(objects, info)
    assert 'cable cut (kubelab node fail)' in source
    assert re.search(r'subgraph cluster_node2 \{\n[^\n]*style="rounded,filled,bold"; '
                     rf'color="{diagram.BAD}"', source)
    missing = box_id(source, 'web-v3', 'Service')
    assert 'not found: requests get 500' in source
    canary = box_id(source, 'canary', 'HTTPRoute')
    assert (canary, missing) in {(tail, head) for tail, head, _ in edges(source)}


def test_pods_group_by_namespace_inside_their_node(demo):
    source = diagram.dot_source(demo, INFO)
    nodes = re.split(r'^  subgraph cluster_node\d+ \{$', source, flags=re.M)[1:]
    nodes = [chunk.split('\n  }\n', 1)[0] for chunk in nodes]
    assert len(nodes) == 3
    worker1 = next(chunk for chunk in nodes if '<B>worker-1</B>' in chunk)
    for namespace in ('ingress-nginx', 'kube-system'):
        group = worker1.split(f'namespace {namespace}</FONT>', 1)[1].split('\n    }', 1)[0]
        pods = [p for p in demo['Pod'] if p['metadata']['namespace'] == namespace
                and p['spec']['nodeName'] == 'worker-1']
        assert pods and all(f'<B>{p["metadata"]["name"]}</B>' in group for p in pods)
    assert 'namespace default' not in ''.join(nodes)


def test_short_image():
    assert diagram_dot.short_image('registry.k8s.io/e2e-test-images/agnhost:2.53') == \
        'agnhost:2.53'
    assert diagram_dot.short_image('busybox:1.36') == 'busybox:1.36'
    assert diagram_dot.short_image('registry.k8s.io/ingress-nginx/controller:v1.11.3') == \
        'ingress-nginx/controller:v1.11.3'
    assert diagram_dot.short_image('ghcr.io/nginx/nginx-gateway-fabric/nginx:1.4.0') == \
        'nginx-gateway-fabric/nginx:1.4.0'
    assert diagram_dot.short_image('localhost:5000/team/app@sha256:' + 'ab' * 32) == \
        'team/app@sha256:abababababab'
    assert diagram_dot.short_image('library/busybox') == 'busybox'


HOSTILE = 'a"b\'c{d}e<f>g&h;i\\j]k[l|m#n'


def hostile_objects() -> dict[str, list[dict]]:
    """Every user text a picture shows, full of DOT and HTML syntax."""
    meta = {'name': 'web<script>', 'namespace': 'ns"}{<b>',
            'labels': {'app': 'x"y<z>'},
            'annotations': {'note': 'line one\nline "two" }\n<html>&amp;', 'x': '\\'}}
    pod = {'kind': 'Pod', 'metadata': dict(meta, name='pod"}; x -> y [label="pwn'),
           'spec': {'nodeName': 'node{1}', 'containers': [
               {'name': 'c<1>', 'image': 'reg.io/we\\ird/img:"tag"&<>',
                'ports': [{'containerPort': 80, 'hostPort': 8080, 'protocol': 'TCP'}]}]},
           'status': {'podIP': '192.168.9.9', 'phase': 'Running',
                      'conditions': [{'type': 'Ready', 'status': 'True'}]}}
    svc = {'kind': 'Service', 'metadata': dict(meta, name=HOSTILE),
           'spec': {'type': 'NodePort', 'clusterIP': '10.96.5.5',
                    'selector': {'k"}': 'v<\n>'},
                    'ports': [{'port': 80, 'targetPort': 'h"t<t>p', 'nodePort': 30999,
                               'protocol': 'TCP'}]},
           'status': {'loadBalancer': {}}}
    eps = {'kind': 'EndpointSlice',
           'metadata': dict(meta, name='slice\n"}',
                            labels={'kubernetes.io/service-name': HOSTILE}),
           'ports': [{'port': 80, 'protocol': 'TCP'}],
           'endpoints': [{'addresses': ['192.168.9.9'], 'conditions': {'ready': True},
                          'targetRef': {'kind': 'Pod', 'namespace': meta['namespace'],
                                        'name': pod['metadata']['name']}},
                         {'addresses': ['8.8.8.8"'], 'conditions': {'ready': False}}]}
    ingress = {'kind': 'Ingress', 'metadata': dict(meta, name='ing\\'),
               'spec': {'ingressClassName': 'c"l>s', 'tls': [{'hosts': ['<t>'],
                                                              'secretName': 's&s'}],
                        'rules': [{'host': 'h"o<s>t', 'http': {'paths': [
                            {'path': '/p"a<t>h{}\\', 'pathType': 'Prefix',
                             'backend': {'service': {'name': HOSTILE,
                                                     'port': {'name': 'h"t<t>p'}}}}]}}]},
               'status': {'loadBalancer': {'ingress': [{'ip': '1.2.3.4"<'}]}}}
    gateway = {'kind': 'Gateway', 'metadata': dict(meta, name='gw>\n<'),
               'spec': {'gatewayClassName': 'g"c', 'listeners': [
                   {'name': 'l{}', 'port': 80, 'protocol': 'HTTP', 'hostname': '*.a"b'}]},
               'status': {'addresses': [{'value': '5.6.7.8'}]}}
    route = {'kind': 'HTTPRoute', 'metadata': dict(meta, name='route\u202e\x07\ud800'),
             'spec': {'parentRefs': [{'name': 'gw>\n<', 'sectionName': 'l{}'}],
                      'hostnames': ['x"}<y>'],
                      'rules': [{'matches': [{'path': {'type': 'Exact', 'value': '/"}'},
                                              'method': 'G<E>T',
                                              'headers': [{'name': 'a', 'value': 'b'}]}],
                                 'backendRefs': [{'name': HOSTILE, 'port': 80, 'weight': 3},
                                                 {'name': 'gone"}', 'port': 80}]}]}}
    node = {'kind': 'Node', 'metadata': {'name': 'node{1}', 'labels': {}},
            'spec': {'podCIDR': '192.168.9.0/24'},
            'status': {'addresses': [{'type': 'InternalIP', 'address': '10.0.0.9'}]}}
    return {'Pod': [pod], 'Service': [svc], 'EndpointSlice': [eps], 'Ingress': [ingress],
            'Gateway': [gateway], 'HTTPRoute': [route], 'Node': [node],
            'Namespace': [{'kind': 'Namespace', 'metadata': {'name': meta['namespace']}}]}


HOSTILE_INFO = {'nodes': [{'name': 'node{1}', 'ip': '10.0.0.9', 'role': 'w"<r>',
                           'bridge': 'b}', 'pid': 1}],
                'hosts': [{'name': 'host"\\', 'ip': '203.0.113.9', 'pid': 2}],
                'failedNodes': ['node{1}']}


def outside_labels(source: str) -> str:
    """The DOT without the contents of its HTML-like labels (``<...>``, nested)."""
    out, depth = [], 0
    for ch in source:
        if ch == '<':
            depth += 1
        elif ch == '>' and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
    assert depth == 0
    return ''.join(out)


def test_hostile_text_never_reaches_dot_syntax():
    source = diagram.dot_source(hostile_objects(), HOSTILE_INFO)
    syntax = outside_labels(source)
    for marker in ('pwn', 'script', 'node{1}', 'host"', 'slice\n', 'route\u202e', 'gone"',
                   'ing\\', 'a"b', '8.8.8.8', 'k"}', 'w"'):
        assert marker not in syntax, marker
    assert syntax.count('{') == syntax.count('}')
    assert 'pod&quot;}; x -&gt; y [label=&quot;pwn' in source
    assert '\x07' not in source and '\ud800' not in source
    source.encode('utf-8')                          # no lone surrogate survives


@needs_dot
def test_hostile_text_renders_as_text(tmp_path):
    path = tmp_path / 'hostile.svg'
    diagram.render(hostile_objects(), HOSTILE_INFO, str(path))
    text = svg_text(path)
    for shown in ('pod"}; x -> y [label="pwn', 'namespace ns"}{<b>', HOSTILE[:20],
                  'node{1}', 'host"\\', '/p"a<t>h{}\\', 'h"o<s>t', 'c<1>',
                  'TLS <t> (secret s&s)', '8.8.8.8"', 'gone"}', 'gw>', 'x"}<y>',
                  'cable cut', 'k"}=v<'):
        assert shown in text, shown
    png = tmp_path / 'hostile.png'
    diagram.render(hostile_objects(), HOSTILE_INFO, str(png))
    assert png_size(png.read_bytes())[0] > 100


@needs_dot
def test_sparse_objects_and_an_empty_lab_still_draw(tmp_path):
    sparse = {'Pod': [{'metadata': {'name': 'lonely'}}, {}],
              'Service': [{'metadata': {'name': 'bare'}, 'spec': {'clusterIP': 'None'}},
                          {'metadata': {'name': 'lb'}, 'spec': {'type': 'LoadBalancer'}}],
              'EndpointSlice': [{'metadata': {'name': 'x', 'labels': {
                  'kubernetes.io/service-name': 'bare'}}, 'endpoints': [{}]}],
              'Ingress': [{'metadata': {'name': 'i'}}], 'Gateway': [{}],
              'HTTPRoute': [{'metadata': {'name': 'r'}, 'spec': {'rules': [{}]}}]}
    for objects, info in ((sparse, {}), ({}, {}), ({}, INFO)):
        path = tmp_path / 'sparse.svg'
        diagram.render(objects, info, str(path))
        ET.parse(path)
    text = svg_text(path)
    assert 'no pods' in text and 'client-1' in text


# ---------------------------------------------------------------- rendering
@needs_dot
def test_the_demo_renders_to_an_svg_that_names_everything(demo, tmp_path):
    path = tmp_path / 'lab.svg'
    diagram.render(demo, INFO, str(path))
    texts = svg_texts(path)                       # each name is a text of its own
    for name in (names(demo, 'Node') + names(demo, 'Pod') + names(demo, 'Service')
                 + names(demo, 'Ingress') + names(demo, 'Gateway')
                 + names(demo, 'HTTPRoute') + [h['name'] for h in INFO['hosts']]):
        assert name in texts, name
    for pod in demo['Pod']:
        assert pod['status']['podIP'] in texts
    for svc in demo['Service']:
        assert f'ClusterIP {svc["spec"]["clusterIP"]}' in texts
    assert not list(tmp_path.glob('.*'))           # no temporary file left


@needs_dot
def test_the_demo_renders_to_a_png_of_a_plausible_size(demo, tmp_path):
    path = tmp_path / 'lab.PNG'
    diagram.render(demo, INFO, str(path))
    data = path.read_bytes()
    width, height = png_size(data)
    assert 1200 < width < 6000 and 800 < height < 6000, (width, height)
    assert len(data) > 50_000


def test_an_unknown_extension_names_the_valid_ones(demo, tmp_path):
    for name in ('lab.jpg', 'lab', 'lab.svg.txt'):
        with pytest.raises(KubelabError, match=r'\.svg or \.png'):
            diagram.render(demo, INFO, str(tmp_path / name))
    assert not list(tmp_path.iterdir())


def test_without_graphviz_the_error_says_to_install_it(demo, tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    with pytest.raises(KubelabError, match='install the graphviz package'):
        diagram.render(demo, INFO, str(tmp_path / 'lab.svg'))


def test_a_failing_dot_leaves_the_old_picture(demo, tmp_path, monkeypatch):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    fake = bin_dir / 'dot'
    fake.write_text('#!/bin/sh\necho "Error: something broke" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv('PATH', str(bin_dir))
    old = tmp_path / 'lab.svg'
    old.write_text('the old picture')
    with pytest.raises(KubelabError, match='something broke'):
        diagram.render(demo, INFO, str(old))
    assert old.read_text() == 'the old picture'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bin', 'lab.svg']
    with pytest.raises(KubelabError, match='does not exist'):
        diagram.render(demo, INFO, str(tmp_path / 'no' / 'lab.svg'))


# ---------------------------------------------------------------- the command
class FakeClient:
    """The two calls ``kubelab diagram`` makes of the lab."""
    objects: dict = {}
    made = 0

    def __init__(self):
        FakeClient.made += 1

    def snapshot(self, since=0, timeout=0):
        return 42, copy.deepcopy(self.objects)

    def lab(self):
        return copy.deepcopy(INFO)


@pytest.fixture
def fake_lab(demo, monkeypatch):
    monkeypatch.setattr(cli_observe, 'Client', FakeClient)
    FakeClient.objects, FakeClient.made = demo, 0
    return FakeClient


@needs_dot
def test_the_command_draws_every_namespace_by_default(fake_lab, demo, tmp_path, capsys):
    path = tmp_path / 'lab.svg'
    assert cli.main(['diagram', '-o', str(path)]) == 0
    assert capsys.readouterr().out == f'wrote {path} (3 nodes, 10 pods, 8 Services)\n'
    text = svg_text(path)
    assert all(name in text for name in names(demo, 'Pod'))
    assert cli.main(['diagram', '-A', '-o', str(path)]) == 0
    assert '(3 nodes, 10 pods, 8 Services)' in capsys.readouterr().out


@needs_dot
def test_the_command_draws_one_namespace_with_the_nodes_and_clients(fake_lab, demo,
                                                                    tmp_path, capsys):
    path = tmp_path / 'lab.png'
    assert cli.main(['diagram', '-n', 'kube-system', '-o', str(path)]) == 0
    assert capsys.readouterr().out == f'wrote {path} (3 nodes, 2 pods, 1 Service)\n'
    png_size(path.read_bytes())
    svg = tmp_path / 'lab.svg'
    assert cli.main(['diagram', '-o', str(svg), '-n', 'kube-system']) == 0
    text = svg_text(svg)
    for name in names(demo, 'Node') + ['client-1', 'client-2', 'kube-dns']:
        assert name in text
    for pod in demo['Pod']:
        assert (pod['metadata']['name'] in svg_texts(svg)) == \
            (pod['metadata']['namespace'] == 'kube-system')
    assert 'web-lb' not in text


def test_the_command_refuses_a_bad_name_before_asking_the_lab(fake_lab, tmp_path, capsys):
    assert cli.main(['diagram', '-o', str(tmp_path / 'lab.gif')]) == 1
    assert 'name a file ending in .svg or .png' in capsys.readouterr().err
    assert fake_lab.made == 0


@needs_dot
def test_the_command_names_the_namespaces_for_an_unknown_one(fake_lab, tmp_path, capsys):
    assert cli.main(['diagram', '-n', 'nope', '-o', str(tmp_path / 'lab.svg')]) == 1
    err = capsys.readouterr().err
    assert 'namespaces "nope" not found' in err and 'kube-system' in err
    assert not (tmp_path / 'lab.svg').exists()


if __name__ == '__main__':
    # Redraw the README's picture: python -m tests.unit.test_diagram docs/diagram-demo.png
    target = sys.argv[1] if len(sys.argv) > 1 else 'docs/diagram-demo.png'
    diagram.render(demo_objects(), INFO, target)
    print(f'wrote {target}')
