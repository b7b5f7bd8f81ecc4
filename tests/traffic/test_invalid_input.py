"""Bad input against a running lab: every manifest of the invalid corpus (and the fuzzed
ones) gets a clear error and changes nothing, neither the objects nor a single flow; the
API server listens on loopback only and changes nothing without the lab's token."""

import json
import os
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from kubelab.daemon.statedir import state_path
from services.errors import KubelabError
from tests.invalid_corpus import corpus, fuzz_cases, lab_state, load_text

DEMO = Path(__file__).resolve().parents[2] / 'examples' / 'demo.yaml'
BRIDGES = ('kl-n1', 'kl-n2', 'kl-n3', 'kl-ul', 'kl-lb', 'kl-ex')


@pytest.fixture(scope='module')
def demo(lab):
    lab.apply(DEMO.read_text())
    lab.client.wait_ready()
    settle(lab)
    return lab


def settle(lab, quiet: float = 3.0, timeout: float = 60) -> None:
    """Until the objects and flows stop changing on their own: the demo's Gateway gets
    its pod, its load balancer address and then its health checks (two good ones a
    second apart) after the pods are ready, and the cloud edge's flows follow."""
    deadline = time.monotonic() + timeout
    before = (lab_state(lab.client), dataplane())
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = (lab_state(lab.client), dataplane())
        if now == before:
            return
        before = now
    raise AssertionError(f'the lab did not settle within {timeout} s')


def dataplane() -> dict:
    """Every flow (cookie, table, match, actions) and group of every lab bridge."""
    out = {}
    for bridge in BRIDGES:
        flows = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', '--no-stats', 'dump-flows',
                                bridge], capture_output=True, text=True, check=True).stdout
        groups = subprocess.run(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-groups', bridge],
                                capture_output=True, text=True, check=True).stdout
        out[bridge] = sorted(flows.splitlines()[1:]) + sorted(groups.splitlines()[1:])
    return out


def test_every_invalid_manifest_is_refused_and_changes_nothing(demo):
    cases = [c for c in corpus() if not c.xfail]
    objects, flows = lab_state(demo.client), dataplane()
    unclear = []
    for case in cases:
        try:
            demo.client.apply(load_text(case.path.read_text(), str(case.path)))
        except KubelabError as exc:
            missing = [e for e in case.expect if e not in str(exc)]
            if missing:
                unclear.append(f'{case.name}: {missing} not in {exc}')
        else:
            unclear.append(f'{case.name}: applied')
    demo.client.wait_dataplane()
    print(f'{len(cases)} invalid manifests refused through the API server; objects and '
          f'{sum(map(len, flows.values()))} flows/groups compared')
    assert not unclear, '\n'.join(unclear)
    assert lab_state(demo.client) == objects
    assert dataplane() == flows


def test_the_cli_names_the_file_the_field_and_the_valid_values(demo):
    objects = lab_state(demo.client)
    by_name = {c.name: c for c in corpus()}
    for name in ('service-port-out-of-range', 'service-type-invalid', 'yaml-tab-indentation',
                 'multi-third-document-invalid', 'pod-image-missing'):
        case = by_name[name]
        proc = demo.kubelab('apply', '-f', str(case.path), check=False)
        assert proc.returncode == 1, proc.stdout
        for text in case.expect:
            assert text in proc.stderr, (name, proc.stderr)
        assert 'Traceback' not in proc.stderr
    assert lab_state(demo.client) == objects


def test_fuzzed_manifests_apply_or_fail_cleanly_against_the_running_lab(demo):
    objects = lab_state(demo.client)
    outcomes = {'valid': 0, 'refused': 0}
    for case in fuzz_cases():
        try:
            demo.client.apply(load_text(case.text, case.name), dry_run=True)
            outcomes['valid'] += 1
        except KubelabError as exc:
            assert str(exc).strip(), case.name
            outcomes['refused'] += 1
    print(f'fuzzed manifests (dry run): {outcomes}')
    assert outcomes['refused'] > 0
    assert lab_state(demo.client) == objects


def test_the_api_listens_on_loopback_only_and_needs_the_token(demo):
    with open(state_path('api.json')) as f:
        url = json.load(f)['url']
    port = urlparse(url).port
    assert urlparse(url).hostname == '127.0.0.1'
    listening = subprocess.run(['ss', '-Hltn', f'sport = :{port}'], capture_output=True,
                               text=True, check=True).stdout.split()
    assert f'127.0.0.1:{port}' in listening and f'0.0.0.0:{port}' not in listening
    token_file = os.stat(state_path('token'))
    assert token_file.st_uid == 0 and stat.S_IMODE(token_file.st_mode) == 0o600
    objects = lab_state(demo.client)
    body = json.dumps({'objects': [{'apiVersion': 'v1', 'kind': 'Namespace',
                                    'metadata': {'name': 'intruder'}}]}).encode()
    for headers in ({}, {'Authorization': 'Bearer not-the-token'}):
        req = urllib.request.Request(f'{url}/lab/v1/apply', data=body, method='POST',
                                     headers=dict(headers, **{
                                         'Content-Type': 'application/json'}))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        assert refused.value.code == 401
    assert lab_state(demo.client) == objects
    # Not from inside the lab either: a pod has no route to the host's loopback.
    [probe] = demo.probe('client', 'tcp', '127.0.0.1', port, timeout=1)
    assert not probe['ok'], probe
