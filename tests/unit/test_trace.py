"""kubelab trace's reading of ofproto/trace, replayed from a real lab's answers.

tests/data/ovs/traces.json holds, for three connections in a lab running
examples/demo.yaml, every ofproto/trace the tracer asked (bridge, flow, answer), where
each output port led (patch peers, veths) and the objects at that moment. Replaying
them checks, without root, that the tracer follows the bridges, resumes the Service's
group at the chosen bucket, records each translation with its zone, un-NATs the answer
and renders the path in the seed's words; the traffic tests run it live. When the flows
change, record it again: tests/tools/record_traces.py.
"""

import json
from pathlib import Path

import pytest

from kubelab.inspect import trace, trace_render
from services.cluster import default_cluster

DATA = json.loads((Path(__file__).resolve().parents[1] / 'data' / 'ovs' / 'traces.json')
                  .read_text())


def without_registers(flow: str) -> str:
    """The recording was made by a tracer that carried the registers a bridge had set
    (reg0) into the next bridge's trace, which a patch port clears; no recorded bridge
    matches on them, so the answers hold without them."""
    return ','.join(part for part in flow.split(',')
                    if not trace.REGISTER.match(part.partition('=')[0]))


class Replay(trace.Tracer):
    """A Tracer whose OVS answers come from the recording, in the order they were given."""

    def __init__(self, case):
        self.answers = {(b, without_registers(f)): out for b, f, _, out in case['runs']}
        self.hops = {(b, p): tuple(h) if h else None for b, p, h in case['hops']}
        super().__init__(default_cluster(), DATA['objects'], run=self.answer)

    def answer(self, bridge, flow, states):
        key = (bridge, without_registers(flow))
        if key not in self.answers:
            pytest.fail(f'the tracer asked something new: {bridge} {flow}')
        return self.answers[key]

    def next_hop(self, bridge, port):
        return self.hops[(bridge, port)]


@pytest.mark.parametrize('name', sorted(DATA['cases']))
def test_the_recorded_trace_renders_as_it_did_live(name):
    case = DATA['cases'][name]
    tracer = Replay(case)
    got = trace.trace_connection(tracer, *case['args'])
    assert trace_render.render(got, tracer) == case['render']


def test_a_cluster_ip_trace_follows_the_chosen_endpoint_and_un_nats_the_answer():
    case = DATA['cases']['clusterip']
    tracer = Replay(case)
    src, vip, port, proto, endpoint = case['args']
    got = trace.trace_connection(tracer, src, vip, port, proto, endpoint)
    assert got.forward.outcome == 'delivered'
    assert got.forward.final['nw_dst'] == endpoint
    [dnat] = got.forward.translations
    assert (dnat.kind, dnat.zone, dnat.before, dnat.after) == (
        'DNAT', 1, f'{vip}:{port}', f'{endpoint}:8080')
    [(bridge, targets, chosen)] = got.forward.choices
    assert bridge == 'kl-n1' and chosen == f'{endpoint}:8080' and len(targets) == 3
    assert got.reply.outcome == 'delivered'
    assert [t.kind for t in got.reply.translations] == ['un-DNAT']
    assert trace.endpoint_of(got.reply.final, 'src') == f'{vip}:{port}'
    steps = [(s.bridge, s.table_name) for s in got.forward.steps]
    assert ('kl-n1', 'ServiceLB') in steps and ('kl-ul', 'Classifier') in steps
    assert got.forward.bridges[0] == 'kl-n1'


def test_a_node_port_trace_records_the_dnat_and_the_masquerade():
    case = DATA['cases']['nodeport']
    got = trace.trace_connection(Replay(case), *case['args'])
    kinds = [(t.kind, t.zone) for t in got.forward.translations]
    assert kinds == [('DNAT', 1), ('SNAT', 1001)]
    assert got.forward.translations[1].after == '10.128.0.11'
    assert [t.kind for t in got.reply.translations] == ['un-SNAT', 'un-DNAT']
    assert trace.endpoint_of(got.reply.final, 'src') == '10.128.0.11:30080'


def test_a_dropped_packet_names_the_switch_table_and_flow():
    case = DATA['cases']['dropped']
    got = trace.trace_connection(Replay(case), *case['args'])
    assert got.forward.outcome == 'dropped' and got.reply is None
    assert got.forward.where.startswith('kl-ex table L3Forwarding')


def test_flow_text_round_trips_and_names_ports_for_their_protocol():
    fields = trace.parse_fields('udp,in_port=3,nw_src=1.2.3.4,tp_src=5,tp_dst=53,eth')
    assert trace.format_fields(fields) == 'udp,in_port=3,nw_src=1.2.3.4,udp_src=5,udp_dst=53'
    assert trace.endpoint_of(fields, 'dst') == '?:53'


def test_a_register_set_on_one_bridge_is_not_carried_into_the_next():
    # The Classifier of the external network sets reg0 (local origin) on a client's
    # packet; a patch port clears the registers, so the node bridge's trace must start
    # without it (with it, a Local NodePort's "from the node" flow would match there and
    # the trace would show a DNAT the real packet never gets).
    case = DATA['cases']['nodeport']
    asked = []

    class Recording(Replay):
        def answer(self, bridge, flow, states):
            asked.append((bridge, flow))
            return super().answer(bridge, flow, states)
    trace.trace_connection(Recording(case), *case['args'])
    starts = [(b, f) for b, f in asked if f.startswith('in_port=')]   # a bridge entered
    assert [b for b, _ in starts][:4] == ['kl-ex', 'kl-lb', 'kl-ul', 'kl-n1']
    assert [b for b, f in starts if 'reg0' in f] == []


def test_an_answer_un_nated_without_a_recirculation_goes_on_translated():
    """The cloud edge looks a load balancer's answer up with ``ct(zone=2000,nat)`` and no
    recirculation: the datapath translates it in place and sends it on, so the tracer
    gives it the load balancer's address back on that bridge; a pass that ends in a
    recirculation is left to the resumed trace (``unnat_reply``)."""
    dnat = trace.Translation('kl-lb', 2000, 'DNAT', '198.51.100.2:80', '10.128.0.11:30090')
    answer = {'nw_src': '10.128.0.11', 'tp_src': '30090', 'nw_dst': '203.0.113.10',
              'tp_dst': '41000'}
    leg, current = trace.Leg(), dict(answer)
    trace.Tracer.unnat_in_place(leg, 'kl-lb', 'Datapath actions: ct(zone=2000,nat),'
                                'set(eth(src=0a:5a:c6:33:64:00)),3\n', current, True,
                                {2000: [dnat]})
    assert trace.endpoint_of(current, 'src') == '198.51.100.2:80'
    assert [(t.kind, t.zone, t.before) for t in leg.translations] == [
        ('un-DNAT', 2000, '10.128.0.11:30090')]
    leg, current = trace.Leg(), dict(answer)
    trace.Tracer.unnat_in_place(leg, 'kl-lb', 'Datapath actions: ct(zone=2000,nat),'
                                'recirc(0x2a)\n', current, True, {2000: [dnat]})
    assert current == answer and leg.translations == []


def test_a_masquerade_without_a_recirculation_goes_on_translated():
    """The NodePort masquerade commits ``ct(commit,zone=Z,nat(src=NODE))`` with no table:
    the datapath translates the packet and the same pass goes on to the next bridge,
    while ofproto/trace's fields keep the client's address. The tracer records the SNAT
    and hands the next bridge the translated packet; a committing NAT that recirculates
    is left to the resumed trace's own fields."""
    syn = {'nw_src': '203.0.113.10', 'tp_src': '40000', 'nw_dst': '192.168.1.10',
           'tp_dst': '8080'}
    leg, current = trace.Leg(), dict(syn)
    leg.steps.append(trace.Step('kl-n3', 75, 'ip', 250, '', owner='nodeport masquerade'))
    trace.Tracer.read_action(leg, 'kl-n3', 'ct(commit,zone=1003,nat(src=10.128.0.13))',
                             current)
    assert trace.endpoint_of(current, 'src') == '10.128.0.13:40000'
    assert [(t.kind, t.zone, t.before, t.after) for t in leg.translations] == [
        ('SNAT', 1003, '203.0.113.10:40000', '10.128.0.13')]
    leg, current = trace.Leg(), dict(syn)
    trace.Tracer.read_action(leg, 'kl-n3', 'ct(commit,table=80,zone=1003,'
                             'nat(src=10.128.0.13))', current)
    assert current == syn and [t.kind for t in leg.translations] == ['SNAT']
