"""``kubelab apply | delete | get | create | label | scale | rollout``: the commands on
the API's objects, as kubectl's verbs.

Each reads the running lab through ``kubelab.client.Client`` and prints with
kubelab/printers.py; a user's mistake (an unknown kind, a missing name) is a
``KubelabError``, which ``kubelab`` prints as one ``error:`` line.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime, timezone

from kubelab import printers
from kubelab.client import Client
from services import manifests, selectors
from services.errors import KubelabError, NotFound
from services.labels import parse_label_args
from services.manifests import read_paths

STORE_KIND = {'pods': 'Pod', 'deployments': 'Deployment', 'services': 'Service',
              'endpointslices': 'EndpointSlice', 'nodes': 'Node', 'namespaces': 'Namespace',
              'secrets': 'Secret', 'configmaps': 'ConfigMap', 'ingresses': 'Ingress',
              'ingressclasses': 'IngressClass',
              'gatewayclasses': 'GatewayClass', 'gateways': 'Gateway',
              'httproutes': 'HTTPRoute', 'networkpolicies': 'NetworkPolicy',
              'leases': 'Lease', 'events': 'Event',
              'ipaddresspools': 'IPAddressPool', 'l2advertisements': 'L2Advertisement',
              'servicel2statuses': 'ServiceL2Status'}
DELETE_KINDS = {word: kind for word, kind in STORE_KIND.items() if kind != 'Node'}


def cmd_apply(args) -> int:
    objects = read_paths(args.filename)
    client = Client()
    printers.print_apply_results(client.apply(objects, dry_run=args.dry_run))
    if args.wait and not args.dry_run:
        client.wait_applied(objects, timeout=args.timeout)
    return 0


def cmd_delete(args) -> int:
    client = Client()
    targets = []
    if args.filename:
        for obj in read_paths(args.filename):
            kind, ns, name = manifests.key(obj)
            targets.append((kind, ns or None, name))
    else:
        word = args.kind or ''
        if '/' in word:                                   # kubelab delete pod/web
            word, args.name = word.split('/', 1)
        if not word or not args.name:
            raise KubelabError('delete needs -f FILE, KIND NAME or KIND/NAME (e.g. '
                               '`kubelab delete pod web`)')
        kind = DELETE_KINDS.get(printers.kind_alias(word) if word not in ('ns', 'namespace',
                                'namespaces') else 'namespaces')
        if kind is None:
            raise KubelabError(f'cannot delete {word}; valid: '
                               + ', '.join(sorted(DELETE_KINDS)))
        targets.append((kind, args.namespace if manifests.namespaced(kind) else None,
                        args.name))
    code = 0
    for kind, ns, name in targets:
        try:
            print(client.delete(kind, ns, name, args.grace_period)['message'])
        except NotFound as exc:
            print(f'Error from server (NotFound): {exc}', file=sys.stderr)
            code = 1
        except KubelabError as exc:
            print(f'error: {exc}', file=sys.stderr)
            code = 1
    if args.wait and code == 0:
        # kubectl's --wait (default true): until every object is gone from the API (a
        # pod after its graceful termination), so that applying it again creates it anew.
        deadline = time.monotonic() + args.timeout
        for kind, ns, name in targets:
            def gone(kind=kind, ns=ns, name=name):
                try:
                    client.get(kind, ns, name)
                    return False
                except NotFound:
                    return True
            client.wait_for(gone, f'{manifests.resource_name(kind)} "{name}" to be '
                            'deleted (--wait=false does not wait)',
                            timeout=max(0.0, deadline - time.monotonic()))
        client.wait_dataplane()
    return code


def parse_bool(text: str) -> bool:
    """kubectl's boolean flag values (``--wait=false``)."""
    value = {'true': True, 't': True, '1': True, 'false': False, 'f': False,
             '0': False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f'invalid boolean value "{text}": use true or '
                                         'false (e.g. --wait=false)')
    return value


def cmd_get(args) -> int:
    kind = printers.kind_alias(args.kind)
    client = Client()
    now = datetime.now(timezone.utc)
    if kind == 'hosts':
        objs = [{'kind': 'Host', 'metadata': {'name': h['name']},
                 'status': {'addresses': [{'type': 'ExternalIP', 'address': h['ip']}]}}
                for h in client.lab()['hosts']]
        if args.name:
            objs = [o for o in objs if o['metadata']['name'] == args.name]
            if not objs:
                raise KubelabError(f'hosts "{args.name}" not found')
    elif kind == 'endpoints':
        objs = v1_endpoints(client, None if args.all_namespaces else args.namespace,
                            args.name)
    else:
        ns = None if args.all_namespaces or kind in printers.CLUSTER_SCOPED \
            else args.namespace
        if args.name:
            objs = [client.get(STORE_KIND[kind], ns, args.name)]
        else:
            objs = client.list(STORE_KIND[kind], ns)
    if args.selector is not None:
        if args.name:
            raise KubelabError('when specifying a name, a selector (-l) is not allowed '
                               f'(`kubelab get {args.kind} -l {args.selector}`)')
        try:
            sel = selectors.parse_selector(args.selector)
        except ValueError as exc:
            raise KubelabError(str(exc)) from None
        objs = [o for o in objs if selectors.matches_label_selector(
            sel, (o.get('metadata') or {}).get('labels'))]
    out = printers.render(kind, objs, args.output, now, namespace=args.namespace,
                          single=bool(args.name), all_namespaces=args.all_namespaces,
                          show_labels=args.show_labels)
    print(out)
    return 0


def v1_endpoints(client: Client, namespace: str | None, name: str | None) -> list[dict]:
    """The v1 Endpoints a v1.31 API server serves, derived from the EndpointSlices
    (services/controllers/endpoints_v1.py); read-only, as the note on stderr says."""
    from services.controllers.endpoints_v1 import endpoints_for
    slices = client.list('EndpointSlice', namespace)
    try:
        services = [client.get('Service', namespace, name)] if name else \
            client.list('Service', namespace)
    except NotFound:
        services = []
    objs = [ep for ep in (endpoints_for(svc, slices) for svc in services) if ep]
    if name and not objs:
        raise NotFound(f'endpoints "{name}" not found'
                       + (f' in namespace "{namespace}"' if namespace else ''))
    print('Note: kubelab derives v1 Endpoints from the EndpointSlices, read-only. '
          'EndpointSlice (discovery.k8s.io/v1, GA in v1.21) replaced them for kube-proxy, '
          'the DNS and the Ingress controllers: `kubelab get endpointslices`.',
          file=sys.stderr)
    return objs


def cmd_create(args) -> int:
    """``kubelab create namespace NAME``: kubectl's imperative create."""
    if args.kind not in ('namespace', 'ns'):
        raise KubelabError(f'kubelab create makes namespaces only (`kubelab create '
                           f'namespace NAME`); for "{args.kind}" write a manifest and '
                           f'`kubelab apply -f` it')
    client = Client()
    try:
        client.get('Namespace', None, args.name)
    except NotFound:
        pass
    else:
        raise KubelabError(f'namespaces "{args.name}" already exists')
    client.apply([{'apiVersion': 'v1', 'kind': 'Namespace',
                   'metadata': {'name': args.name}}])
    print(f'namespace/{args.name} created')
    return 0


def cmd_label(args) -> int:
    """``kubelab label KIND NAME k=v k2- [--overwrite]`` (or ``KIND/NAME``), as
    ``kubectl label`` (services/labels.py has its rules and messages)."""
    word, rest = args.kind, list(args.items)
    if '/' in word:
        word, name = word.split('/', 1)
    elif rest:
        name = rest.pop(0)
    else:
        raise KubelabError('one or more resources must be specified as <resource> <name> '
                           'or <resource>/<name>')
    kind = STORE_KIND.get(printers.kind_alias(word))
    if kind is None:
        raise KubelabError(f'cannot label {word}')
    labels, remove = parse_label_args(rest)
    result = Client().label(kind, args.namespace if manifests.namespaced(kind) else None,
                            name, labels, remove, args.overwrite)
    for key in result['notFound']:
        print(f'label "{key}" not found.')
    print(result['message'])
    return 0


def cmd_scale(args) -> int:
    word = args.kind
    if '/' in word:
        word, args.name = word.split('/', 1)
    if printers.kind_alias(word) != 'deployments':
        raise KubelabError(f'scale works on deployments, not "{word}"')
    print(Client().scale(args.namespace, args.name, args.replicas)['message'])
    return 0


# ---------------------------------------------------------------- rollout
def deployment_name(args) -> str:
    """The NAME of ``deployment NAME``, ``deploy NAME`` or ``deployment/NAME``."""
    word, name = args.kind, args.name
    if '/' in word:
        if name is not None:
            raise KubelabError('there is no need to specify a resource type as a separate '
                               'argument when passing arguments in resource/name form '
                               f'(e.g. `kubelab rollout {args.action} {word}`)')
        word, name = word.split('/', 1)
    if printers.kind_alias(word) != 'deployments':
        raise KubelabError(f'rollout works on deployments, not "{word}"')
    if not name:
        raise KubelabError(f'rollout {args.action} needs the name of a deployment, e.g. '
                           f'`kubelab rollout {args.action} deployment web`')
    return name


_NUMBER = r'(\d+(?:\.\d*)?|\.\d+)'
_DURATION = re.compile(_NUMBER + '(ms|s|m|h)')
_UNIT_SECONDS = {'ms': 0.001, 's': 1, 'm': 60, 'h': 3600}


def parse_duration(text: str) -> float:
    """Seconds of a kubectl duration (``60s``, ``2m``, ``1m30s``, ``500ms``) or of a
    plain number of seconds; 0 means no limit."""
    if re.fullmatch(_NUMBER, text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or ''.join(number + unit for number, unit in parts) != text:
        raise argparse.ArgumentTypeError(f'invalid duration "{text}": use a number with '
                                         'a unit, e.g. 60s, 2m or 1m30s')
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def cmd_rollout_restart(args) -> int:
    print(Client().restart_rollout(args.namespace, deployment_name(args))['message'])
    return 0


def cmd_rollout_status(args) -> int:
    """Print each new progress line of the rollout until it is done, as kubectl does
    (it watches; this long-polls the store's snapshot, which wakes on every change)."""
    name = deployment_name(args)
    client = Client()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    version, last = 0, None
    try:
        while True:
            left = 60.0 if deadline is None else max(0.0, deadline - time.monotonic())
            version, objects = client.snapshot(version, timeout=min(left, 60.0))
            deploy = next((d for d in objects.get('Deployment', [])
                           if (d['metadata']['namespace'], d['metadata']['name'])
                           == (args.namespace, name)), None)
            if deploy is None:
                raise NotFound(f'deployments.apps "{name}" not found in namespace '
                               f'"{args.namespace}"')
            line, done = printers.rollout_status(deploy)
            if line != last:
                print(line, flush=True)
                last = line
            if done:
                return 0
            if deadline is not None and time.monotonic() >= deadline:
                print(f'error: timed out after {args.timeout:g}s waiting for deployment '
                      f'"{name}" rollout to finish', file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        return 130
