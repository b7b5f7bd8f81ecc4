"""The guided labs (labs/, kubelab/course/runner.py) against one running lab.

For every exercise: ``lab start N`` gives a state the checker rejects with the hints a
learner needs; ``lab solve N`` gives one it accepts; a small mutation of the solution
(``labs/NN-*/broken/``) is rejected again with the hint that names it; ``lab reset N``
removes exactly what the exercise created.
"""

import os
import re
import time

import pytest

from kubelab.course import runner as labs

#: exercise -> (hints the checker gives on the start state, hints on the broken solution)
EXPECTED = {
    1: (['pod web has 1 container (app): add a logger sidecar',
         "pod web has no sidecar container to read the app's log"],
        ["the logger's log shows none of the app's access log"]),
    2: (['server runs on control-plane, the same node as the client pod',
         'pod server is a bare Pod'],
        ['the same node as the client pod']),
    3: (['the Service selects no pod: its selector app=web-v2 matches none of app=web',
         'scale it to 3'],
        ['but got refused: targetPort 8081 has no listener (the pod declares 8080)']),
    4: (['Service web is type ClusterIP: it has no NodePort',
         'there is no Service web-local in namespace lab-04'],
        ["not client-1's 203.0.113.10: the node masqueraded the connection"]),
    5: (['Service web is type NodePort: the cloud gives an address only to type '
         'LoadBalancer'],
        # (the node-failure hint is left out: with 10 requests, 1 run in 1024 sends
        # none of them to the cut-off pod)
        ['with externalTrafficPolicy Cluster the node masquerades']),
    6: (['http://blog.example/: HTTP 404: no Ingress rule matches this host and path',
         'http://shop.example/api/items was answered by pod shop-',
         'Kubernetes Ingress Controller Fake Certificate'],
        ['https://shop.example/api/items was answered by pod shop-']),
    7: (['add a rule matching the path prefix /docs to Service docs',
         '0 of 40 requests went to app-v2 (the canary)'],
        ['20 of 40 requests went to app-v2 (the canary)']),
    8: (['Service web is type ClusterIP: it has no NodePort',
         'Service web is type ClusterIP: the cloud gives an address only'],
        ['Service web is type NodePort: the cloud gives an address only']),
    10: (['no NetworkPolicy isolates web for ingress',
          'the client pod reaches web too',
          'frontend is not isolated for egress yet',
          'client-2 (203.0.113.11) reaches web-public too'],
         ['the namespaceSelector name=kube-system of allow-dns matches no namespace']),
    9: (['its selector app=catalogue matches none of app=catalog',
         'traffic reached orders-',
         'targetPort 8081 has no listener',
         'is not ready: its readinessProbe GET :8080/ready (container netexec) answers '
         'HTTP 404',
         'externalTrafficPolicy Local on worker-1, which runs no endpoint of edge'],
        ['its selector app=catalogue matches none of app=catalog']),
}

LINE = re.compile(r'^\[(PASS|FAIL)\] (.*)$')


def check(lab, number: int) -> tuple[int, list[str], list[str]]:
    """Run `kubelab lab check N`: exit status, passed tasks, failed lines."""
    proc = lab.kubelab('lab', 'check', str(number), check=False)
    lines = [LINE.match(line) for line in proc.stdout.splitlines()]
    assert all(lines), proc.stdout + proc.stderr
    passed = [m.group(2) for m in lines if m.group(1) == 'PASS']
    failed = [m.group(2) for m in lines if m.group(1) == 'FAIL']
    return proc.returncode, passed, failed


def assert_hints(failed: list[str], hints: list[str], stdout_hint: str):
    text = '\n'.join(failed)
    for hint in hints:
        assert hint in text, f'{stdout_hint}: expected hint {hint!r} in:\n{text}'


@pytest.fixture(scope='module')
def course(lab):
    return lab


def test_list_names_every_exercise(course):
    out = course.kubelab('lab', 'list').stdout.splitlines()
    assert len(out) == len(labs.EXERCISES) == 12
    assert [int(line.split()[0]) for line in out] == list(range(1, 13))
    for ex in labs.EXERCISES:
        assert os.path.isfile(os.path.join(ex.directory, 'README.md')), ex.directory
        for part in ('start', 'solution', 'broken'):
            assert os.listdir(os.path.join(ex.directory, part)), (ex.directory, part)


@pytest.mark.parametrize('number', sorted(EXPECTED))
def test_exercise(course, number):
    run_exercise(course, number, *EXPECTED[number])


def run_exercise(course, number: int, start_hints: list, broken_hints: list):
    """Start, check (hints), solve, check (all pass), break, check (hint), reset."""
    ex = labs.exercise(number)
    began = time.monotonic()
    try:
        course.kubelab('lab', 'start', str(number))
        code, passed, failed = check(course, number)
        assert code == 1 and failed, (passed, failed)
        assert_hints(failed, start_hints, f'exercise {number} after start')

        course.kubelab('lab', 'solve', str(number))
        code, passed, failed = check(course, number)
        assert (code, failed) == (0, []), failed
        assert passed == [title for title, _ in ex.tasks]

        broken = labs._read(os.path.join(ex.directory, 'broken'))
        labs.apply_objects(ex, course.client, broken)
        code, passed, failed = check(course, number)
        assert code == 1 and failed, passed
        assert_hints(failed, broken_hints, f'exercise {number} broken')
    finally:
        course.kubelab('lab', 'reset', str(number))
    assert not course.client.list('Pod', ex.namespace)
    print(f'exercise {number}: {time.monotonic() - began:.1f} s')


def test_reset_deletes_only_what_the_exercise_made(course):
    mine = """apiVersion: v1
kind: Service
metadata: {name: mine}
spec:
  selector: {app: mine}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: from-lab, labels: {kubelab.io/lab: "03"}}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""
    try:
        course.kubelab('lab', 'start', '3')
        course.apply(mine)               # after start: start resets exercise 3 first
        addons = sorted(p['metadata']['name'] for p in course.client.list('Pod', 'ingress-nginx'))
        out = course.kubelab('lab', 'reset', '3').stdout
        assert 'namespace/lab-03' in out and 'service/from-lab -n default' in out, out
        names = {s['metadata']['name'] for s in course.client.list('Service', 'default')}
        assert 'mine' in names and 'from-lab' not in names
        assert sorted(p['metadata']['name']
                      for p in course.client.list('Pod', 'ingress-nginx')) == addons
        code, _, failed = check(course, 3)
        assert code == 1 and 'is not started' in failed[0]
    finally:
        course.kubelab('delete', 'service', 'mine', check=False)
        course.kubelab('delete', 'service', 'from-lab', check=False)


def test_exercise_3_says_to_recreate_a_bare_pod_without_probe(course):
    """The Deployment has its probe, web-warming (a bare pod) still has none: the hint
    says that a running pod cannot get one and must be re-created."""
    ex = labs.exercise(3)
    try:
        course.kubelab('lab', 'start', '3')
        course.kubelab('lab', 'solve', '3')
        start = [o for o in labs._read(os.path.join(ex.directory, 'start'))
                 if o['kind'] == 'Pod' and o['metadata']['name'] == 'web-warming']
        labs.apply_objects(ex, course.client, start)     # replaced: the spec changes
        code, _, failed = check(course, 3)
        assert code == 1
        assert_hints(failed, ['pod web-warming has no readinessProbe',
                              'delete web-warming and apply it again'], 'exercise 3')
    finally:
        course.kubelab('lab', 'reset', '3')
