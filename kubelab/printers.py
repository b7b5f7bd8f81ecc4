"""Render objects the way ``kubectl get`` prints them.

Pure functions over plain dicts in Kubernetes shape (what the lab's API
returns); the time is passed in so output is reproducible. ``render`` is the
entry point: a table (``-o wide`` adds columns), ``json``, ``yaml`` or
``name``. Columns and cell rules follow kubectl's printers (STATUS of a pod,
EXTERNAL-IP of a Service, ``+ N more...`` of an EndpointSlice, HOSTS and
PORTS of an Ingress, ...) so what a learner reads here reads the same on a
real cluster. The rows of the Ingress and Gateway API kinds are in
kubelab/printers_l7.py, those of the node lifecycle's and MetalLB's kinds in
kubelab/printers_more.py; both are registered here. A Secret's
table shows its type and how many keys it holds, never their values (a ConfigMap's: how
many keys). ``hosts`` is the lab's
own kind: the external client hosts of the cluster file. ``rollout_status`` is
the line ``kubectl rollout status`` prints for a Deployment.

The returned text has no trailing newline: ``print()`` it. A resource type or an
output format that does not exist raises ``UsageError``, the user's mistake.
"""

import difflib
import json
import sys
from datetime import datetime

import yaml

from kubelab.ages import age, parse_time
from services.errors import UsageError

#: Canonical kind -> the words ``kubectl get`` accepts for it.
KIND_ALIASES = {
    'pods': ('po', 'pod', 'pods'),
    'deployments': ('deploy', 'deployment', 'deployments'),
    'services': ('svc', 'service', 'services'),
    'endpointslices': ('endpointslice', 'endpointslices'),
    'endpoints': ('ep', 'endpoint', 'endpoints'),
    'nodes': ('no', 'node', 'nodes'),
    'hosts': ('host', 'hosts'),
    'namespaces': ('ns', 'namespace', 'namespaces'),
    'secrets': ('secret', 'secrets'),
    'configmaps': ('cm', 'configmap', 'configmaps'),
    'ingresses': ('ing', 'ingress', 'ingresses'),
    'ingressclasses': ('ingressclass', 'ingressclasses'),
    'gatewayclasses': ('gc', 'gatewayclass', 'gatewayclasses'),
    'gateways': ('gtw', 'gateway', 'gateways'),
    'httproutes': ('httproute', 'httproutes'),
    'networkpolicies': ('netpol', 'networkpolicy', 'networkpolicies'),
}

#: Canonical kind -> prefix of ``-o name`` (kubectl adds the API group).
NAME_PREFIX = {
    'pods': 'pod', 'deployments': 'deployment.apps', 'services': 'service',
    'endpointslices': 'endpointslice.discovery.k8s.io', 'endpoints': 'endpoints',
    'nodes': 'node',
    'hosts': 'host', 'namespaces': 'namespace', 'secrets': 'secret',
    'configmaps': 'configmap',
    'ingresses': 'ingress.networking.k8s.io',
    'ingressclasses': 'ingressclass.networking.k8s.io',
    'gatewayclasses': 'gatewayclass.gateway.networking.k8s.io',
    'gateways': 'gateway.gateway.networking.k8s.io',
    'httproutes': 'httproute.gateway.networking.k8s.io',
    'networkpolicies': 'networkpolicy.networking.k8s.io',
}

CLUSTER_SCOPED = ('nodes', 'hosts', 'namespaces', 'ingressclasses',
                  'gatewayclasses')
OUTPUTS = (None, 'wide', 'json', 'yaml', 'name')


# tabwriter settings of kubectl: minimum cell width 6, padding 3.
MIN_WIDTH = 6
PADDING = 3


def kind_alias(word: str) -> str:
    """The canonical kind for a resource word (``svc`` -> ``services``)."""
    lowered = word.lower()
    for kind, words in KIND_ALIASES.items():
        if lowered in words:
            return kind
    known = [w for words in KIND_ALIASES.values() for w in words]
    close = difflib.get_close_matches(lowered, known, n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ''
    valid = ', '.join(f'{kind} ({", ".join(w for w in words if w != kind)})'
                      for kind, words in KIND_ALIASES.items())
    raise UsageError(f'the server doesn\'t have a resource type "{word}"'
                     f'{hint} (valid: {valid})')


def format_labels(labels: dict | None) -> str:
    """``k=v,k2=v2`` sorted by key, ``<none>`` when empty."""
    if not labels:
        return '<none>'
    return ','.join(f'{k}={v}' for k, v in sorted(labels.items()))


def format_label_selector(selector: dict | None) -> str:
    """A LabelSelector (matchLabels, matchExpressions) as kubectl shows it."""
    selector = selector or {}
    terms = [(k, f'{k}={v}')
             for k, v in (selector.get('matchLabels') or {}).items()]
    for expr in selector.get('matchExpressions') or []:
        key, op = expr.get('key', ''), expr.get('operator', '')
        values = ','.join(sorted(expr.get('values') or []))
        text = {'In': f'{key} in ({values})',
                'NotIn': f'{key} notin ({values})',
                'Exists': key, 'DoesNotExist': f'!{key}'}.get(op, '<error>')
        terms.append((key, text))
    return ','.join(text for _, text in sorted(terms)) or '<none>'


def list_with_more(items: list[str], limit: int = 3) -> str:
    """First ``limit`` items comma-joined, then `` + N more...``."""
    text = ','.join(items[:limit])
    if len(items) > limit:
        return f'{text} + {len(items) - limit} more...'
    return text or '<unset>'


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns padded like kubectl's tabwriter (last unpadded)."""
    lines = [header] + rows
    widths = [max(MIN_WIDTH, max(len(line[i]) for line in lines) + PADDING)
              for i in range(len(header) - 1)]
    out = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths)]
        out.append(''.join(cells) + line[-1])
    return '\n'.join(out)


def _meta(obj):
    return obj.get('metadata') or {}


def _spec(obj):
    return obj.get('spec') or {}


def _status(obj):
    return obj.get('status') or {}


# --- one function per kind: the row's cells (wide columns last) ------------

def pod_row(pod: dict, now: datetime, wide: bool) -> list[str]:
    """NAME READY STATUS RESTARTS AGE, then the wide columns."""
    meta, spec, status = _meta(pod), _spec(pod), _status(pod)
    statuses = status.get('containerStatuses') or []
    total = len(spec.get('containers') or statuses)
    reason = status.get('reason') or status.get('phase') or 'Pending'
    ready = restarts = 0
    last_restart = ''
    has_running = False
    for cs in reversed(statuses):
        restarts += cs.get('restartCount', 0)
        finished = ((cs.get('lastState') or {}).get('terminated')
                    or {}).get('finishedAt') or ''
        if finished and (not last_restart
                         or parse_time(finished) > parse_time(last_restart)):
            last_restart = finished
        state = cs.get('state') or {}
        waiting, terminated = state.get('waiting'), state.get('terminated')
        if waiting and waiting.get('reason'):
            reason = waiting['reason']
        elif terminated and terminated.get('reason'):
            reason = terminated['reason']
        elif terminated:
            reason = (f'Signal:{terminated["signal"]}'
                      if terminated.get('signal')
                      else f'ExitCode:{terminated.get("exitCode", 0)}')
        elif cs.get('ready') and ('running' in state or not state):
            has_running = True
            ready += 1
    if reason == 'Completed' and has_running:
        ready_condition = any(c.get('type') == 'Ready'
                              and c.get('status') == 'True'
                              for c in status.get('conditions') or [])
        reason = 'Running' if ready_condition else 'NotReady'
    if meta.get('deletionTimestamp'):
        if status.get('reason') == 'NodeLost':
            reason = 'Unknown'
        elif status.get('phase') not in ('Succeeded', 'Failed'):
            reason = 'Terminating'
    restarts_text = str(restarts)
    if restarts and last_restart:
        restarts_text = f'{restarts} ({age(last_restart, now)} ago)'
    cells = [meta.get('name', ''), f'{ready}/{total}', reason, restarts_text,
             age(meta.get('creationTimestamp'), now)]
    if wide:
        ips = status.get('podIPs') or []
        ip = (ips[0].get('ip') if ips else None) or status.get('podIP')
        gates = spec.get('readinessGates') or []
        gates_text = '<none>'
        if gates:
            conditions = {c.get('type'): c.get('status')
                          for c in status.get('conditions') or []}
            true = sum(1 for g in gates
                       if conditions.get(g.get('conditionType')) == 'True')
            gates_text = f'{true}/{len(gates)}'
        cells += [ip or '<none>', spec.get('nodeName') or '<none>',
                  status.get('nominatedNodeName') or '<none>', gates_text]
    return cells


def _containers(template_spec: dict) -> tuple[str, str]:
    containers = template_spec.get('containers') or []
    return (','.join(c.get('name', '') for c in containers),
            ','.join(c.get('image', '') for c in containers))


def deployment_row(deploy: dict, now: datetime, wide: bool) -> list[str]:
    """NAME READY UP-TO-DATE AVAILABLE AGE [CONTAINERS IMAGES SELECTOR]."""
    meta, spec, status = _meta(deploy), _spec(deploy), _status(deploy)
    desired = spec.get('replicas', 1)  # the API server defaults it to 1
    cells = [meta.get('name', ''),
             f'{status.get("readyReplicas", 0)}/{desired}',
             str(status.get('updatedReplicas', 0)),
             str(status.get('availableReplicas', 0)),
             age(meta.get('creationTimestamp'), now)]
    if wide:
        template_spec = (spec.get('template') or {}).get('spec') or {}
        cells += [*_containers(template_spec),
                  format_label_selector(spec.get('selector'))]
    return cells


def service_external_ip(svc: dict) -> str:
    """EXTERNAL-IP: externalIPs, LB ingress, ``<pending>`` or ``<none>``."""
    spec = _spec(svc)
    svc_type = spec.get('type') or 'ClusterIP'
    external = list(spec.get('externalIPs') or [])
    if svc_type in ('ClusterIP', 'NodePort'):
        return ','.join(external) or '<none>'
    if svc_type == 'LoadBalancer':
        ingress = ((_status(svc).get('loadBalancer') or {}).get('ingress')
                   or [])
        lb = []
        for entry in ingress:
            address = entry.get('ip') or entry.get('hostname')
            if address and address not in lb:
                lb.append(address)
        return ','.join(lb + external) or '<pending>'
    if svc_type == 'ExternalName':
        return spec.get('externalName', '')
    return '<unknown>'


def service_ports(ports: list[dict]) -> str:
    """PORT(S): ``80/TCP``, ``80:30754/TCP`` with a nodePort; comma-joined."""
    pieces = []
    for port in ports:
        protocol = port.get('protocol', 'TCP')
        if port.get('nodePort'):
            pieces.append(f'{port.get("port")}:{port["nodePort"]}/{protocol}')
        else:
            pieces.append(f'{port.get("port")}/{protocol}')
    return ','.join(pieces) or '<none>'


def service_row(svc: dict, now: datetime, wide: bool) -> list[str]:
    """NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE [SELECTOR]."""
    meta, spec = _meta(svc), _spec(svc)
    cluster_ips = spec.get('clusterIPs') or []
    cluster_ip = (cluster_ips[0] if cluster_ips else spec.get('clusterIP'))
    cells = [meta.get('name', ''), spec.get('type') or 'ClusterIP',
             cluster_ip or '<none>', service_external_ip(svc),
             service_ports(spec.get('ports') or []),
             age(meta.get('creationTimestamp'), now)]
    if wide:
        cells.append(format_labels(spec.get('selector')))
    return cells


def endpointslice_row(eps: dict, now: datetime, wide: bool) -> list[str]:
    """NAME ADDRESSTYPE PORTS ENDPOINTS AGE (no wide columns)."""
    meta = _meta(eps)
    ports = []
    for port in eps.get('ports') or []:
        if port.get('port') is not None:
            ports.append(str(port['port']))
        else:
            ports.append(port.get('name') or '*')
    addresses = [address for endpoint in eps.get('endpoints') or []
                 for address in endpoint.get('addresses') or []]
    return [meta.get('name', ''), eps.get('addressType', ''),
            list_with_more(ports), list_with_more(addresses),
            age(meta.get('creationTimestamp'), now)]


def endpoints_row(ep: dict, now: datetime, wide: bool) -> list[str]:
    """NAME ENDPOINTS AGE of a v1 Endpoints: its ready addresses with each port of their
    subset, three at most and ``+ N more...`` (kubectl's formatEndpoints)."""
    meta = _meta(ep)
    pairs = [f'{a["ip"]}:{p["port"]}' for s in ep.get('subsets') or []
             for a in s.get('addresses') or [] for p in s.get('ports') or []]
    shown = ','.join(pairs[:3]) + (f' + {len(pairs) - 3} more...' if len(pairs) > 3
                                   else '')
    return [meta.get('name', ''), shown or '<none>', age(meta.get('creationTimestamp'), now)]


def node_roles(labels: dict) -> str:
    """ROLES: ``node-role.kubernetes.io/<role>`` or ``kubernetes.io/role``."""
    roles = set()
    for key, value in labels.items():
        if key.startswith('node-role.kubernetes.io/'):
            role = key[len('node-role.kubernetes.io/'):]
            if role:
                roles.add(role)
        elif key == 'kubernetes.io/role' and value:
            roles.add(value)
    return ','.join(sorted(roles)) or '<none>'


def node_row(node: dict, now: datetime, wide: bool) -> list[str]:
    """NAME STATUS ROLES AGE VERSION [INTERNAL-IP EXTERNAL-IP OS-IMAGE ...]."""
    meta, spec, status = _meta(node), _spec(node), _status(node)
    ready = [c for c in status.get('conditions') or []
             if c.get('type') == 'Ready']
    states = []
    if ready:
        states.append('Ready' if ready[-1].get('status') == 'True'
                      else 'NotReady')
    else:
        states.append('Unknown')
    if spec.get('unschedulable'):
        states.append('SchedulingDisabled')
    info = status.get('nodeInfo') or {}
    cells = [meta.get('name', ''), ','.join(states),
             node_roles(meta.get('labels') or {}),
             age(meta.get('creationTimestamp'), now),
             info.get('kubeletVersion', '')]
    if wide:
        cells += [_address(status, 'InternalIP'),
                  _address(status, 'ExternalIP'),
                  info.get('osImage') or '<unknown>',
                  info.get('kernelVersion') or '<unknown>',
                  info.get('containerRuntimeVersion') or '<unknown>']
    return cells


def _address(status: dict, address_type: str) -> str:
    for address in status.get('addresses') or []:
        if address.get('type') == address_type:
            return address.get('address', '')
    return '<none>'


def host_row(host: dict, now: datetime, wide: bool) -> list[str]:
    """NAME IP: a lab client host and its first ExternalIP."""
    return [_meta(host).get('name', ''), _address(_status(host), 'ExternalIP')]


def namespace_row(ns: dict, now: datetime, wide: bool) -> list[str]:
    """NAME STATUS AGE."""
    return [_meta(ns).get('name', ''), _status(ns).get('phase', 'Active'),
            age(_meta(ns).get('creationTimestamp'), now)]


def configmap_row(configmap: dict, now: datetime, wide: bool) -> list[str]:
    """NAME DATA AGE: how many keys (data and binaryData)."""
    meta = _meta(configmap)
    return [meta.get('name', ''),
            str(len(configmap.get('data') or {}) + len(configmap.get('binaryData') or {})),
            age(meta.get('creationTimestamp'), now)]


def secret_row(secret: dict, now: datetime, wide: bool) -> list[str]:
    """NAME TYPE DATA AGE: how many keys, never what they hold."""
    meta = _meta(secret)
    return [meta.get('name', ''), secret.get('type') or '',
            str(len(secret.get('data') or {})),
            age(meta.get('creationTimestamp'), now)]


def networkpolicy_row(policy: dict, now: datetime, wide: bool) -> list[str]:
    return [_meta(policy).get('name', ''),
            format_label_selector(_spec(policy).get('podSelector')),
            age(_meta(policy).get('creationTimestamp'), now)]


def rollout_status(deploy: dict) -> tuple[str, bool]:
    """``kubectl rollout status``'s line for a Deployment, and whether its
    rollout is done: every replica updated, no old one left (terminating pods
    are no replicas), every updated one available."""
    meta, spec, status = _meta(deploy), _spec(deploy), _status(deploy)
    name = meta.get('name', '')
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if meta.get('generation', 0) > status.get('observedGeneration', 0):
        return 'Waiting for deployment spec update to be observed...', False
    desired = spec.get('replicas', 1)
    replicas = status.get('replicas', 0)
    updated = status.get('updatedReplicas', 0)
    available = status.get('availableReplicas', 0)
    if updated < desired:
        return (f'{waiting}{updated} out of {desired} new replicas have been '
                f'updated...', False)
    if replicas > updated:
        return (f'{waiting}{replicas - updated} old replicas are pending '
                f'termination...', False)
    if available < updated:
        return (f'{waiting}{available} of {updated} updated replicas are '
                f'available...', False)
    return f'deployment "{name}" successfully rolled out', True


#: Canonical kind -> (header, wide header, row function).
ROWS = {
    'pods': (['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE'],
             ['IP', 'NODE', 'NOMINATED NODE', 'READINESS GATES'], pod_row),
    'deployments': (['NAME', 'READY', 'UP-TO-DATE', 'AVAILABLE', 'AGE'],
                    ['CONTAINERS', 'IMAGES', 'SELECTOR'], deployment_row),
    'services': (['NAME', 'TYPE', 'CLUSTER-IP', 'EXTERNAL-IP', 'PORT(S)',
                  'AGE'], ['SELECTOR'], service_row),
    'endpointslices': (['NAME', 'ADDRESSTYPE', 'PORTS', 'ENDPOINTS', 'AGE'],
                       [], endpointslice_row),
    'endpoints': (['NAME', 'ENDPOINTS', 'AGE'], [], endpoints_row),
    'nodes': (['NAME', 'STATUS', 'ROLES', 'AGE', 'VERSION'],
              ['INTERNAL-IP', 'EXTERNAL-IP', 'OS-IMAGE', 'KERNEL-VERSION',
               'CONTAINER-RUNTIME'], node_row),
    'hosts': (['NAME', 'IP'], [], host_row),
    'namespaces': (['NAME', 'STATUS', 'AGE'], [], namespace_row),
    'secrets': (['NAME', 'TYPE', 'DATA', 'AGE'], [], secret_row),
    'configmaps': (['NAME', 'DATA', 'AGE'], [], configmap_row),
    'networkpolicies': (['NAME', 'POD-SELECTOR', 'AGE'], [], networkpolicy_row),
}


def _register_more():
    """The rows of the Ingress and Gateway API kinds (kubelab/printers_l7.py); the node
    lifecycle's and MetalLB's kinds (kubelab/printers_more.py)."""
    from kubelab import printers_l7 as l7, printers_more as more
    ROWS.update(l7.ROWS)
    KIND_ALIASES.update(more.ALIASES)
    NAME_PREFIX.update(more.PREFIXES)
    ROWS.update(more.ROWS)


_register_more()


def render(kind: str, objs: list[dict], output: str | None, now: datetime,
           *, namespace: str = 'default', single: bool = False,
           all_namespaces: bool = False, show_labels: bool = False) -> str:
    """Print ``objs`` of canonical ``kind`` in ``output`` format.

    ``single`` prints one object by itself for json/yaml (``kubectl get pod
    web``) instead of a List. ``namespace`` is named in the empty message.
    """
    if output not in OUTPUTS:
        raise UsageError(f'unable to match a printer suitable for the output '
                         f'format "{output}", allowed formats are: '
                         f'json,name,wide,yaml')
    if kind not in KIND_ALIASES:
        kind = kind_alias(kind)
    if output in ('json', 'yaml'):
        doc = objs[0] if single and len(objs) == 1 else {
            'apiVersion': 'v1', 'items': list(objs), 'kind': 'List',
            'metadata': {'resourceVersion': ''}}
        if output == 'json':
            return json.dumps(doc, indent=4, ensure_ascii=False)
        return yaml.safe_dump(doc, default_flow_style=False,
                              sort_keys=False).rstrip('\n')
    if output == 'name':
        return '\n'.join(f'{NAME_PREFIX[kind]}/{_meta(o).get("name", "")}'
                         for o in objs)
    if not objs:
        if kind in CLUSTER_SCOPED:
            return 'No resources found'
        return f'No resources found in {namespace} namespace.'
    header, wide_header, row = ROWS[kind]
    wide = output == 'wide'
    if kind == 'events':                   # as with --sort-by=.lastTimestamp
        from services.events import order
        objs = sorted(objs, key=order)
    rows = [row(obj, now, wide) for obj in objs]
    header = header + (wide_header if wide else [])
    if show_labels:                                         # kubectl get --show-labels
        header = header + ['LABELS']
        rows = [r + [','.join(f'{k}={v}' for k, v in sorted(
            (_meta(obj).get('labels') or {}).items())) or '<none>']
            for obj, r in zip(objs, rows)]
    if all_namespaces and kind not in CLUSTER_SCOPED:      # kubectl get -A
        header = ['NAMESPACE'] + header
        rows = [[_meta(obj).get('namespace', 'default')] + r for obj, r in zip(objs, rows)]
    return format_table(header, rows)


def print_apply_results(result: dict):
    """What ``kubectl apply`` prints: warnings on stderr, then one line per object."""
    for warning in result.get('warnings', []):
        print(f'Warning: {warning}', file=sys.stderr)
    for ref, action in result['results']:
        print(f'{ref} {"created (dry run)" if action == "validated" else action}')


def datapath_text(info: dict) -> str:
    """Which datapath and Open vSwitch run the lab, and on the userspace datapath whether
    the veths keep the kernel's TCP offloads (topo/network.py)."""
    text = f'{info["datapath"]} ({info.get("openvswitch") or "Open vSwitch"})'
    if info['datapath'] == 'user':
        text += ('; the veths keep their TCP offloads (userspace TSO)' if info.get('offloads')
                 else '; TX checksum offload off on the veths')
    return text
