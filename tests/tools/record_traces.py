"""Record tests/data/ovs/traces.json anew from a running lab; prints each trace.

tests/unit/test_trace.py replays ``kubelab trace``'s talk with ofproto/trace from that
file. When the flows change, the recording shows the old ones (flows whose cookie no
flow of the pipeline has any more render with no owner): record it again, as root, in a
default lab with examples/demo.yaml applied:

    sudo kubelab up --detach && sudo kubelab apply -f examples/demo.yaml --wait
    sudo .venv/bin/python -m tests.tools.record_traces tests/data/ovs/traces.json
    sudo kubelab down

Three connections, as the tests expect them: a pod on the control-plane node to the
ClusterIP of Service web (followed to its endpoint on worker-2), client-1 to the
control-plane's NodePort 30080 (web-nodeport), client-1 straight to a pod IP (dropped
at the external network). The objects of the API are recorded with them: the replay
rebuilds the tracer from them and the default cluster.
"""

from __future__ import annotations

import json
import os
import sys

from kubelab.api import TRACE_KINDS
from kubelab.client import Client
from kubelab.inspect import switches, trace as tracing, trace_render
from services.cluster import load_cluster_file


class Recorder(tracing.Tracer):
    """A live Tracer that keeps every ofproto/trace it asks and every hop it takes."""

    def __init__(self, cluster, objects, router_pid):
        self.runs, self.hops = [], []
        super().__init__(cluster, objects, run=self.record, router_pid=router_pid)

    def record(self, bridge, flow, states):
        out = tracing.ofproto_trace(bridge, flow, states)
        self.runs.append([bridge, flow, states[0], out])
        return out

    def next_hop(self, bridge, port):
        hop = super().next_hop(bridge, port)
        self.hops.append([bridge, port, list(hop) if hop else None])
        return hop


def pod_ip(objects: dict, prefix: str, node: str | None = None) -> str:
    for pod in objects['Pod']:
        if pod['metadata']['name'].startswith(prefix) and \
                node in (None, pod['spec'].get('nodeName')):
            return pod['status']['podIP']
    raise SystemExit(f'no pod {prefix}* on {node or "any node"}: is examples/demo.yaml '
                     'applied?')


def main(path: str) -> int:
    client = Client()
    switches.use_lab_openvswitch(client.state_dir)
    info = client.lab()
    cluster = load_cluster_file(os.path.join(info['stateDir'], 'cluster.json'))
    objects = {kind: client.list(kind) for kind in TRACE_KINDS}
    router_pid = (info.get('router') or {}).get('pid')
    vip = next(s['spec']['clusterIP'] for s in objects['Service']
               if s['metadata']['name'] == 'web')
    cases = {
        'clusterip': [pod_ip(objects, 'client'), vip, 80, 'tcp',
                      pod_ip(objects, 'web-', 'worker-2')],
        'nodeport': ['203.0.113.10', '10.128.0.11', 30080, 'tcp', None],
        'dropped': ['203.0.113.10', pod_ip(objects, 'web-', 'worker-1'), 8080, 'tcp', None],
    }
    data = {'objects': objects, 'cases': {}}
    for name, args in cases.items():
        recorder = Recorder(cluster, objects, router_pid)
        got = tracing.trace_connection(recorder, *args)
        render = trace_render.render(got, recorder)
        data['cases'][name] = {'args': args, 'runs': recorder.runs, 'hops': recorder.hops,
                               'render': render}
        print(render, end='\n\n')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else 'tests/data/ovs/traces.json'))
