"""``kubelab lab``: the guided exercises of ``labs/``: list, start, check, reset, solve.

Each exercise lives in ``labs/NN-slug/`` (README.md, ``start/`` and ``solution/``
manifests, ``check.py``: its checks) and keeps its objects in its own namespace
``lab-NN``; objects it must put elsewhere carry the label ``kubelab.io/lab: "NN"``.
``reset`` deletes exactly those.

``EXERCISES`` is the course in order: number, folder, title, summary. ``check`` runs an
exercise's table of ``(task title, check function)`` from its check.py
(kubelab/course/exercise.py loads it) against the running lab, each check with a
``Ctx`` of the exercise (kubelab/course/ctx.py), and prints one line per task.
"""

from __future__ import annotations

import json
import os

from kubelab import printers
from kubelab.client import Client, NoLab
from kubelab.course.ctx import Ctx, Failed, record_path, wait
from kubelab.course.exercise import LABEL, Exercise
from kubelab.labctl import LabControl
from services.errors import KubelabError, NotFound
from services.manifests import read_paths

#: What reset deletes when it finds it labelled outside the exercise's namespace.
LABELLED_KINDS = ('HTTPRoute', 'Gateway', 'Ingress', 'NetworkPolicy', 'Service',
                  'Deployment', 'Pod', 'Secret', 'L2Advertisement', 'IPAddressPool')


# ---------------------------------------------------------------- the course
EXERCISES = [
    Exercise(1, 'pods-and-containers', 'Pods and containers',
             'app + logger sidecar: localhost, one IP, a shared emptyDir, the pod\'s IPC'),
    Exercise(2, 'pod-to-pod', 'Pod-to-pod networking across nodes',
             'routes and node bridges between nodes; a replaced pod gets a new IP'),
    Exercise(3, 'clusterip', 'ClusterIP Services and EndpointSlices',
             'a stable VIP over changing pods, load balancing, readiness'),
    Exercise(4, 'nodeport', 'NodePort',
             'reaching the cluster from outside; Cluster vs Local traffic policy; source IP'),
    Exercise(5, 'loadbalancer', 'LoadBalancer',
             'the cloud LB in front of the NodePorts, health checks, node failure'),
    Exercise(6, 'ingress', 'Ingress',
             'host and path routing to several Services, TLS'),
    Exercise(7, 'gateway-api', 'Gateway API',
             'the same with a Gateway and HTTPRoutes; a weighted canary'),
    Exercise(8, 'service-types', 'The Service type hierarchy',
             'one Service from ClusterIP to NodePort to LoadBalancer, traced at each step'),
    Exercise(9, 'troubleshooting', 'Troubleshooting',
             'four broken Services to diagnose and fix'),
    Exercise(10, 'network-policy', 'NetworkPolicy',
             'lock a namespace down: default deny, the frontend in, DNS out, one address '
             'from outside'),
    Exercise(11, 'node-failure', 'When a node dies',
             'heartbeats, NotReady, endpoints leaving, eviction; a dead kubelet'),
    Exercise(12, 'bare-metal-metallb', 'Bare metal: MetalLB in layer 2',
             'LoadBalancer without a cloud: pools, ARP, one announcing node, failover',
             cloud='none'),
]


def exercise(number: int | str) -> Exercise:
    try:
        n = int(str(number).split('-')[0])
    except ValueError:
        n = -1
    for ex in EXERCISES:
        if ex.number == n:
            return ex
    raise KubelabError(f'no exercise {number}; exercises: '
                       + ', '.join(str(e.number) for e in EXERCISES) + ' (`kubelab lab list`)')


# ---------------------------------------------------------------- start / reset / solve
def _read(directory: str) -> list[dict]:
    return read_paths([directory])


def _owned_elsewhere(client: Client, ex: Exercise) -> list[tuple[str, str, str]]:
    tag = f'{ex.number:02d}'
    out = []
    for kind in LABELLED_KINDS:
        for obj in client.list(kind):
            meta = obj['metadata']
            if (meta.get('labels') or {}).get(LABEL) == tag and \
                    meta.get('namespace') != ex.namespace:
                out.append((kind, meta.get('namespace'), meta['name']))
    return out


def reset(ex: Exercise, client: Client, quiet: bool = False) -> list[str]:
    """Delete what the exercise created: its namespace and objects labelled with it."""
    gone = []
    for kind, ns, name in _owned_elsewhere(client, ex):
        try:
            client.delete(kind, ns, name, 0)
            gone.append(f'{kind.lower()}/{name} -n {ns}')
        except NotFound:
            pass
    try:
        client.delete('Namespace', None, ex.namespace, 0)
        gone.append(f'namespace/{ex.namespace}')
    except NotFound:
        pass
    client.wait_for(lambda: not client.list('Pod', ex.namespace),
                    f'the pods of {ex.namespace} to terminate', timeout=60)
    client.wait_dataplane()
    try:
        os.unlink(record_path(client, ex))
    except FileNotFoundError:
        pass
    return gone


def apply_objects(ex: Exercise, client: Client, objects: list[dict], timeout: float = 90):
    """Apply ``objects`` and wait for them; a Pod whose spec changes is deleted first
    (a pod's spec cannot be updated), as `kubectl replace --force` does."""
    replaced = []
    for obj in objects:
        if obj.get('kind') != 'Pod':
            continue
        meta = obj['metadata']
        ns = meta.get('namespace', 'default')
        try:
            client.get('Pod', ns, meta['name'])
        except NotFound:
            continue
        try:
            client.apply([obj], dry_run=True)
        except KubelabError:
            client.delete('Pod', ns, meta['name'], 0)
            replaced.append((ns, meta['name']))
    for ns, name in replaced:
        print(f'pod/{name} deleted (its spec changes: pods are replaced, not updated)')

        def gone(ns=ns, name=name):
            try:
                client.get('Pod', ns, name)
                return False
            except NotFound:
                return True
        client.wait_for(gone, f'pod {name} to terminate', timeout=60)
    printers.print_apply_results(client.apply(objects))
    settle(ex, client, timeout)


def settle(ex: Exercise, client: Client, timeout: float = 90, grace: float = 4):
    """Wait until every pod of the exercise runs and every Deployment has its pods,
    then up to ``grace`` seconds more for the pods to be ready: some exercises hold a
    pod that is meant never to be ready. Then until the dataplane carries it all."""
    def started():
        pods = [p for p in client.list('Pod', ex.namespace)
                if not p['metadata'].get('deletionTimestamp')]
        deps = client.list('Deployment', ex.namespace)
        running = all((p.get('status') or {}).get('phase') == 'Running' and all(
            c.get('started') for c in p['status'].get('containerStatuses') or [{}])
            for p in pods)
        complete = all((d.get('status') or {}).get('updatedReplicas', 0)
                       == d['spec'].get('replicas', 1)
                       == (d.get('status') or {}).get('replicas', 0) for d in deps)
        return running and complete
    client.wait_for(started, f'the pods of {ex.namespace} to run', timeout=timeout)
    wait(lambda: all(Ctx.ready(p) for p in client.list('Pod', ex.namespace)
                      if not p['metadata'].get('deletionTimestamp')), grace, 0.2)
    client.wait_dataplane()


def start(ex: Exercise, client: Client):
    gone = reset(ex, client)
    if gone:
        print(f'Reset: deleted {", ".join(gone)}')
    apply_objects(ex, client, _read(os.path.join(ex.directory, 'start')))
    if ex.number == 8:                    # remember the ClusterIP the walk starts from
        path = record_path(client, ex)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump({'clusterIP': client.get('Service', ex.namespace, 'web')['spec'][
                'clusterIP']}, f)
    print(f'\nExercise {ex.number}: {ex.title}. Read '
          f'{os.path.join(os.path.abspath(ex.directory), "README.md")}; '
          f'`kubelab lab check {ex.number}` checks your work.')


def solve(ex: Exercise, client: Client):
    """Apply the solution over the current state; objects of the exercise's namespace
    that the solution does not have (and nothing owns) are deleted first."""
    objects = _read(os.path.join(ex.directory, 'solution'))
    wanted = {(o['kind'], o['metadata']['name']) for o in objects}
    stale = []
    for kind in LABELLED_KINDS:
        try:
            items = client.list(kind, ex.namespace)
        except KubelabError:
            continue
        for obj in items:
            meta = obj['metadata']
            if meta.get('namespace') != ex.namespace or meta.get('ownerReferences') or \
                    (kind, meta['name']) in wanted:
                continue
            stale.append((kind, meta['name']))
    for kind, name in stale:
        try:
            client.delete(kind, ex.namespace, name, 0)
            print(f'{kind.lower()}/{name} deleted (not in the solution)')
        except NotFound:
            pass
    if stale:
        client.wait_for(lambda: not [p for p in client.list('Pod', ex.namespace)
                                     if ('Pod', p['metadata']['name']) in stale],
                        'the stale pods to terminate', timeout=60)
    apply_objects(ex, client, objects)


def check(ex: Exercise, lab: LabControl, out=print) -> bool:
    try:
        lab.client.get('Namespace', None, ex.namespace)
    except NotFound:
        out(f'[FAIL] exercise {ex.number} is not started: `kubelab lab start {ex.number}`')
        return False
    ctx = Ctx(lab, ex)
    ok = True
    for title, fn in ex.tasks:
        try:
            fn(ctx)
            out(f'[PASS] {title}')
        except Failed as exc:
            ok = False
            out(f'[FAIL] {title}: {exc}')
        except Exception as exc:          # a check that breaks is a failed task, said so
            ok = False
            out(f'[FAIL] {title}: the check itself failed: {exc}')
    return ok


# ---------------------------------------------------------------- the command
def needs_cloud(ex: Exercise, client: Client):
    """An exercise that needs a bare-metal lab refuses another, saying how to get one."""
    if ex.cloud is None:
        return
    cloud = client.lab().get('cloud', 'kubelab')
    if cloud != ex.cloud:
        raise KubelabError(f'exercise {ex.number} needs a bare-metal lab (cloud: {ex.cloud}); '
                           f'this one runs with cloud "{cloud}": `kubelab down`, then '
                           f'`kubelab up --cloud {ex.cloud} --detach`')


def run(args) -> int:
    action = args.action
    if action == 'list':
        for ex in EXERCISES:
            print(f'{ex.number:>2}  {ex.title:38} {ex.summary}')
        return 0
    if args.number is None:
        raise KubelabError(f'`kubelab lab {action}` needs the exercise number, e.g. '
                           f'`kubelab lab {action} 1`')
    ex = exercise(args.number)
    try:
        client = Client()
    except NoLab:
        if action != 'start':
            raise
        # As a course platform does: the exercise needs a lab, so bring up the default.
        print('No lab is running: starting the default lab (`kubelab up --detach`; '
              '`kubelab down` stops it)...', flush=True)
        print(LabControl().up().stdout, end='', flush=True)
        client = Client()
    if action != 'reset':
        needs_cloud(ex, client)
    if action == 'check':
        return 0 if check(ex, LabControl()) else 1
    if action == 'start':
        start(ex, client)
    elif action == 'reset':
        gone = reset(ex, client)
        print(f'Deleted {", ".join(gone)}.' if gone else
              f'Nothing of exercise {ex.number} was in the lab.')
    elif action == 'solve':
        solve(ex, client)
        print(f'\nApplied the solution of exercise {ex.number}; `kubelab lab check '
              f'{ex.number}` should pass.')
    return 0
