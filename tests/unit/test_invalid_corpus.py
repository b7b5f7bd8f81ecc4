"""Invalid manifests get a clear error and change nothing (tests/data/invalid/).

Every corpus file is applied the way ``kubelab apply -f`` applies it (parsed, sent
through JSON, ``Store.apply``) to a store that already runs ``examples/demo.yaml``
with ready pods: the error is a ``KubelabError`` holding the file's ``# expect:``
texts, and the store (objects, resourceVersion, ClusterIPs, NodePorts) is exactly as
it was. Fuzzed copies of the demo either apply and still validate, or fail the same
clean way with a field path or a YAML line. See ``tests/invalid_corpus.py``.
"""

import json
import random

import pytest

from services import addons, manifests
from services.cluster import default_cluster
from services.errors import ApplyError, KubelabError, ValidationError
from services.store import Store
from tests.invalid_corpus import (DEMO, apply_text, corpus, fuzz_cases, load_text,
                                  store_state)

CASES = corpus()
FUZZ = fuzz_cases()


def running_demo() -> Store:
    """A store with the lab's add-ons (cluster DNS, ingress-nginx) and the demo applied
    and every pod running and ready, as in a running lab."""
    store = Store(default_cluster(), rng=random.Random(7))
    store.apply(addons.dns_objects(store.cluster.dns_ip, '/run/kubelab/dns/records.json')
                + addons.ingress_nginx_objects('worker-1') + [addons.gateway_class_object()])
    apply_text(store, DEMO.read_text(), str(DEMO))
    for index, pod in enumerate(store.list('Pod')):
        meta = pod['metadata']
        store.update_pod_status(meta['namespace'], meta['name'], meta['uid'], {
            'phase': 'Running', 'podIP': f'192.168.2.{10 + index}',
            'conditions': [{'type': 'Ready', 'status': 'True'}]})
    return store


def problems(exc: KubelabError) -> list[ValidationError]:
    if isinstance(exc, ApplyError):
        return exc.errors
    if isinstance(exc, ValidationError):
        return [exc]
    return []


def case_param(case):
    marks = [pytest.mark.xfail(reason=case.xfail, strict=False)] if case.xfail else []
    return pytest.param(case, id=case.name, marks=marks)


# ---------------------------------------------------------------- the corpus
def test_the_corpus_is_large_and_every_file_says_what_it_expects():
    assert len(CASES) >= 55
    assert len({case.name for case in CASES}) == len(CASES)
    for case in CASES:
        assert all(text.strip() for text in case.expect), case.name


@pytest.mark.parametrize('case', [case_param(c) for c in CASES])
def test_an_invalid_manifest_gets_a_clear_error_and_changes_nothing(case):
    store = running_demo()
    before = store_state(store)
    with pytest.raises(KubelabError) as info:
        apply_text(store, case.text, case.name + '.yaml')
    message = str(info.value)
    for text in case.expect:
        assert text in message, f'{case.name}: {text!r} not in:\n{message}'
    assert 'Traceback' not in message
    for problem in problems(info.value):
        assert problem.path or problem.message == 'no Kubernetes objects found', problem
    assert store_state(store) == before


@pytest.mark.parametrize('case', [case_param(c) for c in CASES])
def test_a_dry_run_of_an_invalid_manifest_fails_the_same_way(case):
    store = running_demo()
    before = store_state(store)
    with pytest.raises(KubelabError) as info:
        apply_text(store, case.text, case.name + '.yaml', dry_run=True)
    assert all(text in str(info.value) for text in case.expect)
    assert store_state(store) == before


def test_the_demo_store_is_a_fair_background():
    """The cases that collide with the demo's objects (the web Deployment and Service,
    the client pod, NodePort 30080) can only do so if they exist, with endpoints."""
    store = running_demo()
    assert 30080 in store_state(store)['nodePorts']
    for kind, name in [('Deployment', 'web'), ('Service', 'web'), ('Pod', 'client')]:
        store.get(kind, 'default', name)
    assert any(slice_.get('endpoints') for slice_ in store.list('EndpointSlice'))


# ---------------------------------------------------------------- fuzzing
def assert_clean_failure(exc: KubelabError, case):
    found = problems(exc)
    assert found, f'{case.name} ({case.mutation}): {type(exc).__name__}: {exc}'
    for problem in found:
        assert problem.path or problem.message == 'no Kubernetes objects found', \
            f'{case.name} ({case.mutation}): no field or line in {problem!r}'
        assert 'Traceback' not in problem.message


def assert_consistent(store: Store):
    """Every object the store holds still validates, and the API server can send it."""
    for kind, items in store.snapshot()[1].items():
        for obj in items:
            if kind in manifests.SUPPORTED_KINDS:      # not Node, Event, Lease
                manifests.validate(obj)
    json.dumps(store.snapshot())


@pytest.mark.parametrize('background', ['empty', 'demo'])
@pytest.mark.parametrize('case', FUZZ, ids=[c.name for c in FUZZ])
def test_a_fuzzed_manifest_applies_or_fails_cleanly_and_wholly(case, background):
    store = running_demo() if background == 'demo' else Store(default_cluster())
    before = store_state(store)
    try:
        apply_text(store, case.text, case.name + '.yaml')
    except KubelabError as exc:
        assert_clean_failure(exc, case)
        assert store_state(store) == before, f'{case.name}: partial apply'
    else:
        assert_consistent(store)


def test_the_fuzz_cases_are_deterministic_and_varied():
    assert [c.text for c in fuzz_cases()] == [c.text for c in FUZZ]
    assert len(FUZZ) >= 30
    assert len({c.text for c in FUZZ}) == len(FUZZ)
    assert {c.name.split('-', 2)[2] for c in FUZZ} == {
        'delete-key', 'change-type', 'swap-value', 'insert-chars', 'reindent',
        'repeat-line', 'truncate'}


def test_the_fuzz_exercises_both_outcomes():
    outcomes = set()
    for case in FUZZ:
        try:
            apply_text(running_demo(), case.text, case.name)
            outcomes.add('applied')
        except KubelabError:
            outcomes.add('rejected')
    assert outcomes == {'applied', 'rejected'}


# ---------------------------------------------------------------- the path a file takes
def test_the_objects_go_through_json_as_the_cli_sends_them():
    # YAML keys that are not strings become strings on the way to the API server.
    docs = load_text('apiVersion: v1\nkind: Namespace\nmetadata: {name: a, 1: b}\n', 'f')
    assert docs[0]['metadata'] == {'name': 'a', '1': 'b'}


# ---------------------------------------------------------------- what the checks still accept
AGNHOST = 'registry.k8s.io/e2e-test-images/agnhost:2.53'
VALID = {
    'tolerations of every shape': f'''
apiVersion: v1
kind: Pod
metadata: {{name: tolerant}}
spec:
  tolerations:
  - {{operator: Exists}}
  - {{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}}
  - {{key: dedicated, operator: Equal, value: lab, effect: ""}}
  - {{key: gone, operator: Exists, effect: NoExecute, tolerationSeconds: 30}}
  containers: [{{name: app, image: {AGNHOST}, args: [pause]}}]
''',
    'resources, pull policy, probes kubelab does not run': f'''
apiVersion: v1
kind: Pod
metadata: {{name: resourced}}
spec:
  containers:
  - name: app
    image: {AGNHOST}
    imagePullPolicy: IfNotPresent
    args: [netexec, --http-port=8080]
    ports: [{{name: http, containerPort: 8080}}]
    resources:
      limits: {{cpu: "1", memory: 1.5Gi}}
      requests: {{cpu: 250m, memory: 64Mi}}
    livenessProbe: {{exec: {{command: [cat, /tmp/ok]}}, periodSeconds: 5}}
    startupProbe: {{httpGet: {{port: http, scheme: HTTPS}}, failureThreshold: 30}}
''',
    'kubectl get -o yaml output with server fields': '''
apiVersion: v1
kind: Service
metadata:
  name: exported
  uid: 0b9ef3c4-0000-0000-0000-000000000000
  resourceVersion: "4711"
  creationTimestamp: "2024-05-01T12:00:00Z"
  finalizers: [example.com/keep]
  ownerReferences: [{apiVersion: v1, kind: Pod, name: p, uid: u, controller: true}]
spec:
  clusterIP: 10.96.0.77
  clusterIPs: [10.96.0.77]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  ports: [{port: 80}]
''',
}


@pytest.mark.parametrize('text', VALID.values(), ids=list(VALID))
def test_the_new_checks_accept_what_kubernetes_accepts(text):
    store = Store(default_cluster())
    out = apply_text(store, text, 'valid.yaml')
    assert [action for _, action in out['results']] == ['created']


def test_fields_the_api_server_sets_are_not_taken_from_the_manifest():
    store = Store(default_cluster())
    apply_text(store, f'''
apiVersion: v1
kind: Pod
metadata: {{name: p, uid: mine, deletionTimestamp: "2024-01-01T00:00:00Z",
           deletionGracePeriodSeconds: 0, generation: 9}}
spec: {{containers: [{{name: app, image: {AGNHOST}, args: [pause]}}]}}
''', 'p.yaml')
    meta = store.get('Pod', 'default', 'p')['metadata']
    assert 'deletionTimestamp' not in meta and 'deletionGracePeriodSeconds' not in meta
    assert meta['uid'] != 'mine' and meta['generation'] == 1
