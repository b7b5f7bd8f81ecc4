"""docs/pipeline.md stays true to the code: its table sections are the pipeline's tables
in order, every flow, group and meter line it shows is one the pure pipeline produces
for the state the page documents (the default cluster, the NodePort Service default/web
-> two pods; the sections on load balancer addresses and session affinity add the page's
other Services, which select the same pods; an ingress controller pod with a hostPort on worker-1; the NetworkPolicy
sections add a frontend pod and the page's NetworkPolicies), or one a ``learn`` action
installs when a pod connects to that second Service on the fake switches of
tests/unit/flowsim.py, and each walk-through shows, in order, the flows its packets
really take on those switches, and the addresses they really arrive with."""

import pathlib
import re

import pytest
import yaml

from controller.pipeline import TABLE_NAMES, TABLES, desired
from controller.state import ClusterState
from services import manifests
from services.cluster import default_cluster
from tests.unit.flowsim import LEARNED_OWNER, Lab, answer, l4
from services import wiring

PAGE = pathlib.Path(__file__).resolve().parents[2] / 'docs' / 'pipeline.md'
TABLE_HEADING = re.compile(r'^## (\d+) (\S+)\s*$')


@pytest.fixture(scope='module')
def text():
    return PAGE.read_text(encoding='utf-8')


PODS = [('web-1', 'control-plane', '192.168.1.10'), ('web-2', 'worker-1', '192.168.2.10')]
#: The NetworkPolicy sections' client pod (no endpoint of any Service).
FRONTEND = {'metadata': {'name': 'frontend', 'namespace': 'default',
                         'labels': {'role': 'frontend'}},
            'spec': {'nodeName': 'control-plane'}, 'status': {'podIP': '192.168.1.20'}}
#: The ingress controller of the hostPort section: hostPort 80 on worker-1, no Service.
INGRESS_POD = {'metadata': {'name': 'ingress-nginx-controller', 'namespace': 'ingress-nginx'},
               'spec': {'nodeName': 'worker-1', 'containers': [{'name': 'controller', 'ports': [
                   {'containerPort': 80, 'hostPort': 80, 'protocol': 'TCP'}]}]},
               'status': {'podIP': '192.168.2.2'}}


def page_objects(text, kind):
    """The objects of one kind in the page's yaml blocks, in order."""
    return [doc for block in re.findall(r'```yaml\n(.*?)```', text, re.S)
            for doc in yaml.safe_load_all(block) if doc.get('kind') == kind]


def page_services(text):
    """The Services of the page's yaml blocks, in order."""
    return page_objects(text, 'Service')


def state_of(services, policies=()):
    """``services`` with web-1 and web-2 (labelled app: web) behind each of them;
    ``policies`` (NetworkPolicies) bring the frontend pod along."""
    slices = [{
        'metadata': {'name': f'{svc["metadata"]["name"]}-6xq2k', 'namespace': 'default',
                     'labels': {'kubernetes.io/service-name': svc['metadata']['name']}},
        'ports': [{'name': 'http', 'port': 8080, 'protocol': 'TCP'}],
        'endpoints': [{'addresses': [ip], 'nodeName': node, 'conditions': {'ready': True}}
                      for _, node, ip in PODS]} for svc in services]
    return ClusterState.from_objects(default_cluster(), {
        'Pod': [{'metadata': {'name': name, 'namespace': 'default', 'labels': {'app': 'web'}},
                 'spec': {'nodeName': node}, 'status': {'podIP': ip}}
                for name, node, ip in PODS] + [INGRESS_POD] + ([FRONTEND] if policies else []),
        'Service': services, 'EndpointSlice': slices,
        'NetworkPolicy': [manifests.validate(p) for p in policies]})


def documented_state(text):
    """The page's Service (its first yaml block) with web-1 and web-2 behind it."""
    return state_of(page_services(text)[:1])


def sticky_state(text):
    """The state of the later sections (load balancer addresses, session affinity):
    every Service of the page."""
    return state_of(page_services(text))


def policy_state(text):
    """The state of the NetworkPolicy sections: the page's first Service, the frontend
    pod and the page's NetworkPolicies."""
    return state_of(page_services(text)[:1], page_objects(text, 'NetworkPolicy'))


def produced(state):
    """Every flow, group and meter line of every switch, as the page renders them."""
    lines = set()
    for _, dpid in wiring.all_bridges(state.cluster):
        config = desired(state, dpid)
        lines.update(f.to_ofctl(TABLE_NAMES) for f in config.flows)
        lines.update(g.to_ofctl() for g in config.groups)
        lines.update(m.to_ofctl() for m in config.meters)
    return lines


def learned(state):
    """The flows ``learn`` installs when each pod connects to each sticky Service port,
    whichever endpoint the group picks."""
    lines = set()
    for sp in state.service_ports:
        if not sp.affinity_timeout:
            continue
        for _, _, pod_ip in PODS:
            for bucket in range(len(sp.endpoints)):
                lab = Lab(state)
                lab.send(lab.packet(pod_ip, sp.vip, sp.port), bucket=bucket)
                lines.update(f.to_ofctl(TABLE_NAMES) for config in lab.configs.values()
                             for f in config.flows if f.owner == LEARNED_OWNER)
    return lines


def sections(text):
    """{(id, name): body} of every table section."""
    out, current = {}, None
    for line in text.splitlines():
        if line.startswith('## '):
            found = TABLE_HEADING.match(line)
            current = (int(found.group(1)), found.group(2)) if found else None
            if current:
                out[current] = []
        elif current:
            out[current].append(line)
    return out


def test_table_sections_are_the_pipeline_tables_in_order(text):
    found = [TABLE_HEADING.match(line) for line in text.splitlines()]
    headings = [(int(m.group(1)), m.group(2)) for m in found if m]
    assert headings == [(t.id, t.name) for t in TABLES]


@pytest.mark.parametrize('table', TABLES, ids=[t.name for t in TABLES])
def test_each_table_section_shows_a_flow_of_its_table(text, table):
    body = sections(text)[(table.id, table.name)]
    assert any(line.startswith(f'table={table.name},') for line in body)


def test_the_documented_state_is_the_one_described(text):
    state = documented_state(text)
    [port] = state.service_ports
    assert (port.key, port.vip, port.port, port.node_port) == (
        'default/web/tcp/http', '10.96.0.20', 80, 30080)
    assert not (port.external_local or port.internal_local or port.affinity_timeout)
    assert [(e.ip, e.port) for e in port.endpoints] == [('192.168.1.10', 8080),
                                                        ('192.168.2.10', 8080)]
    ports = {sp.service: sp for sp in sticky_state(text).service_ports}
    web, sticky = ports['web'], ports['web-sticky']
    assert web == port
    assert (sticky.key, sticky.vip, sticky.affinity_timeout) == (
        'default/web-sticky/tcp/http', '10.96.0.21', 600)
    assert sticky.endpoints == port.endpoints


def bare_metal_state(text):
    """The bare-metal section's state: the same cluster with ``cloud: none``, the page's
    Service as a LoadBalancer holding 10.128.0.200, announced by worker-1's speaker."""
    from services.cluster import load_cluster
    svc = page_services(text)[0]
    svc = dict(svc, spec=dict(svc['spec'], type='LoadBalancer'),
               status={'loadBalancer': {'ingress': [{'ip': '10.128.0.200'}]}})
    objects = {'Pod': [{'metadata': {'name': name, 'namespace': 'default'},
                        'spec': {'nodeName': node}, 'status': {'podIP': ip}}
                       for name, node, ip in PODS],
               'Service': [svc], 'EndpointSlice': [{
                   'metadata': {'name': 'web-6xq2k', 'namespace': 'default',
                                'labels': {'kubernetes.io/service-name': 'web'}},
                   'ports': [{'name': 'http', 'port': 8080, 'protocol': 'TCP'}],
                   'endpoints': [{'addresses': [ip], 'nodeName': node,
                                  'conditions': {'ready': True}} for _, node, ip in PODS]}],
               'L2Announcement': [{'metadata': {'name': 'worker-1'}, 'status': {
                   'addresses': [{'ip': '10.128.0.200', 'service': 'default/web'}]}}]}
    return ClusterState.from_objects(load_cluster('cloud: none\n', 'page'), objects)


def test_every_flow_line_is_produced_by_the_pipeline(text):
    shown = [line for line in text.splitlines()
             if line.startswith(('table=', 'group_id=', 'meter='))]
    assert len(shown) > len(TABLES)
    lines = produced(documented_state(text)) | produced(sticky_state(text)) | \
        produced(policy_state(text)) | produced(bare_metal_state(text))
    lines |= learned(sticky_state(text))
    missing = [line for line in shown if line not in lines]
    assert missing == []


# heading -> (sender, destination, port, group bucket, state); the destination answers.
WALKS = {
    '## Walk-through: a pod calls its own Service (hairpin)':
        ('192.168.1.10', '10.96.0.20', 80, 0, documented_state),
    '## Walk-through: a pod calls the external network (egress)':
        ('192.168.1.10', '203.0.113.10', 80, None, documented_state),
    '## Walk-through: an external client calls a NodePort on a node without the endpoint':
        ('203.0.113.10', '10.128.0.13', 30080, 0, documented_state),
    '## Walk-through: an isolated pod calls a Service whose pods are isolated':
        ('192.168.1.20', '10.96.0.20', 80, 0, policy_state),
}


def section_text(text, heading):
    lines = text.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith('## ')),
               len(lines))
    return '\n'.join(lines[start + 1:end])


def flows_taken(trip):
    """The flow lines a trip hit, switch after switch (the group's bucket is no flow)."""
    return [text for _, step in trip.hops for table, _, text in step.trace
            if not table.startswith('group:')]


def addresses(pkt):
    """``src:sport -> dst:dport``, as the page writes a packet."""
    sport, dport = l4(pkt)
    return f'{pkt["ipv4_src"]}:{sport} -> {pkt["ipv4_dst"]}:{dport}'


def arrival(trip):
    kind, _, got = trip.outcome
    assert kind == 'output'
    return addresses(got)


@pytest.mark.parametrize('heading', WALKS)
def test_a_walk_through_shows_the_flows_its_packets_take(text, heading):
    sender, dst, port, bucket, state = WALKS[heading]
    lab = Lab(state(text))
    there = lab.send(lab.packet(sender, dst, port), bucket=bucket)
    receiver = lab.owner_of(there.dpids[-1], there.outcome[1])
    reply = answer(there.outcome[2])
    back = lab.send(reply, sender=receiver)
    assert lab.owner_of(back.dpids[-1], back.outcome[1]) == sender
    body = section_text(text, heading)
    shown = [line for line in body.splitlines() if line.startswith('table=')]
    assert shown == flows_taken(there) + flows_taken(back)
    for packet in (f'{sender}:40000 -> {dst}:{port}', arrival(there), addresses(reply),
                   arrival(back)):
        assert f'`{packet}`' in body
