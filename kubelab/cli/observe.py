"""``kubelab trace | flows | top | diagram``: the commands that look into the running lab.

Each fetches what it needs from the lab (its objects, its cluster file, the switches'
dumps) and hands it to the inspection wing, kubelab/inspect/, which does the work and
the text: trace.py, flows.py, top.py, diagram.py (trace_render.py and flows_render.py
write the text of the first two); switches.py reads the switches. The inspection
modules are imported inside the commands: they load the pipeline, and ``kubelab get``
should not wait for that.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

from kubelab.client import Client
from services.errors import KubelabError, NotFound


def cmd_trace(args) -> int:
    """``kubelab trace SRC DST[:PORT]``: a new connection's path through the live
    switches (ofproto/trace), in the seed's words (kubelab/api.py resolves and walks)."""
    from kubelab import api
    from kubelab.inspect import trace_render  # here: see the module's docstring
    tracer, result = api.trace(args.source, args.destination, namespace=args.namespace,
                               proto=args.proto, endpoint=args.endpoint, host=args.host,
                               path=args.path, sport=args.sport)
    print(trace_render.render(result, tracer))
    return 0


def cmd_flows(args) -> int:
    """``kubelab flows``: the switches' flows and groups, each with its counters and the
    object that owns it (kubelab/inspect/flows.py)."""
    from kubelab.inspect import flows, flows_render, switches  # here: see the docstring
    from kubelab.inspect.switches import dump_bridges, lab_bridges, lab_cluster
    client = Client()
    switches.use_lab_openvswitch(client.state_dir)
    cluster = lab_cluster(client)
    bridges = lab_bridges(cluster, args.node)
    for _ in range(3):            # a change between the snapshot and the dumps: again
        version, objects = client.snapshot()
        if args.service and not any(
                (s['metadata'].get('namespace', 'default'), s['metadata']['name'])
                == (args.namespace, args.service) for s in objects.get('Service', [])):
            raise NotFound(f'services "{args.service}" not found in namespace '
                           f'"{args.namespace}"')
        dumps = dump_bridges(bridges)
        dataplane = client.dataplane()
        if dataplane['storeVersion'] == version:
            break
    report = flows.annotate(cluster, objects, dumps)
    if dataplane['storeVersion'] != version:
        report.notes.append('the cluster kept changing while the switches were read: '
                            'some flows may show as stale or missing')
    elif dataplane['version'] < version:
        report.notes.append(f'the controller is still programming the switches (they '
                            f'carry version {dataplane["version"]} of {version}): stale '
                            f'and missing flows are expected for a moment')
    if args.service:
        report = flows.only_service(report, args.namespace, args.service)
    if args.output == 'json':
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(flows_render.render_flows(report))
    failed = [d for d in dumps if d.error]
    if args.output == 'json':        # the text names them in place
        for dump in failed:
            print(f'error: {dump.name}: {dump.error}', file=sys.stderr)
    return 1 if failed else 0


def cmd_top(args) -> int:
    """``kubelab top``: new connections per Service port and endpoint, bytes per pod,
    connections per load balancer node, redrawn every ``--interval`` seconds."""
    from kubelab.inspect import flows, switches, top  # here: see the module's docstring
    from kubelab.inspect.switches import dump_bridges, lab_bridges, lab_cluster
    from services import wiring
    if args.resource:
        return cmd_top_pods(args)
    if args.interval <= 0:
        raise KubelabError('--interval must be more than 0 seconds')
    client = Client()
    switches.use_lab_openvswitch(client.state_dir)
    cluster = lab_cluster(client)
    bridges = [b for b in lab_bridges(cluster)
               if b[1] not in (wiring.UNDERLAY_DPID, wiring.EXTERNAL_DPID)]
    namespace = None if args.all_namespaces else args.namespace

    def poll():
        _, objects = client.snapshot()
        start = time.monotonic()
        dumps = dump_bridges(bridges)
        read = (start + time.monotonic()) / 2
        return top.Poll(read, flows.annotate(cluster, objects, dumps))

    try:
        last = poll()
        while True:
            time.sleep(args.interval)
            now = poll()
            view = top.top_view(last, now, namespace)
            frame = top.render_top(view, datetime.now().strftime('%H:%M:%S'),
                                   client.pod_metrics())
            if args.once:
                print(frame)
                return 1 if view.errors else 0
            sys.stdout.write('\033[H\033[2J' + frame + '\n')
            sys.stdout.flush()
            last = now
    except KeyboardInterrupt:
        return 0


def cmd_top_pods(args) -> int:
    """``kubelab top pods [NAME]``: each pod's CPU and memory, as ``kubectl top pod``."""
    from kubelab.inspect import top
    client = Client()
    items = [m for m in client.pod_metrics()
             if args.all_namespaces or m['metadata']['namespace'] == args.namespace]
    if args.name:
        client.get('Pod', args.namespace, args.name)        # NotFound, as kubectl says
        items = [m for m in items if m['metadata']['name'] == args.name]
    print(top.render_top_pods(items, all_namespaces=args.all_namespaces,
                              containers=args.containers))
    return 0


def cmd_diagram(args) -> int:
    """``kubelab diagram -o FILE``: a picture of the lab (kubelab/inspect/diagram.py) from one
    snapshot of the store; every namespace unless ``-n NS`` (the nodes and external
    hosts are always drawn)."""
    from kubelab.inspect import diagram          # here: see the module's docstring
    diagram.output_format(args.output)           # a wrong name or no Graphviz: say so
    diagram.find_dot()                           # before asking the lab
    client = Client()
    _, objects = client.snapshot()
    info = client.lab()
    ns = None if args.all_namespaces else args.namespace
    if ns is not None:
        known = sorted(o['metadata']['name'] for o in objects.get('Namespace', []))
        if ns not in known:
            raise KubelabError(f'namespaces "{ns}" not found; namespaces: '
                               + ', '.join(known))
        objects = {kind: [o for o in items
                          if (o.get('metadata') or {}).get('namespace') in (None, '', ns)]
                   for kind, items in objects.items()}
    diagram.render(objects, info, args.output)
    nodes = {n['name'] for n in info.get('nodes', [])} | \
        {n['metadata']['name'] for n in objects.get('Node', [])}
    pods, services = len(objects.get('Pod', [])), len(objects.get('Service', []))
    print(f'wrote {args.output} ({len(nodes)} node{"s" * (len(nodes) != 1)}, {pods} '
          f'pod{"s" * (pods != 1)}, {services} Service{"s" * (services != 1)})')
    return 0
