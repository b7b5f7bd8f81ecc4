"""Every manifest the lab ships is valid for a real cluster of the version the lab reports.

The lab's promise is that what a learner writes here works on a real cluster. The lab's
own validation follows the API server's rules, but it is the lab's reading of them; this
test checks the same manifests against the Kubernetes API's published OpenAPI schemas
(``kubernetes-validate``, offline, ``strict``: an unknown field is an error, as with
``kubectl apply --validate=strict``) for the version ``kubelab get nodes`` shows.

What is checked: ``examples/``, every exercise's ``start/``, ``solution/`` and ``broken/``
files, the YAML blocks of the README, docs/ and the exercises' READMEs, and every
manifest the traffic tests apply that is written as a plain string (f-strings are
templates, not manifests, and are skipped; the unit tests' strings are not manifests but
probes of the lab's validation, some deliberately odd, and are skipped too).

What is not: kinds from CustomResourceDefinitions (Gateway API, MetalLB). Their schemas are
not in ``kubernetes-validate`` and the lab ships none of the projects' CRD files; the
lab's own validation checks them (services/validation/). They are listed in
``UNCHECKED_GROUPS`` with that reason, and a kind outside that list without a schema fails
the test (a new core kind must be checked).
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

from services.store import KUBELET_VERSION

kubernetes_validate = pytest.importorskip(
    'kubernetes_validate', reason='kubernetes-validate is in requirements.txt: run the install')

ROOT = Path(__file__).resolve().parents[2]
#: The version the lab reports (v1.31.0-kubelab -> 1.31.0).
K8S_VERSION = re.match(r'v(\d+\.\d+\.\d+)', KUBELET_VERSION).group(1)
#: API groups of CRDs: no published schema offline; the lab's validation checks them.
UNCHECKED_GROUPS = {
    'gateway.networking.k8s.io': 'Gateway API CRDs (services/validation/gateway.py, httproute.py)',
    'metallb.io': 'MetalLB CRDs (services/validation/metallb.py)',
    'kubelab.io': "the lab's own cluster file, not a Kubernetes object",
}
YAML_BLOCK = re.compile(r'^```ya?ml\n(.*?)^```', re.M | re.S)


def _documents(text: str):
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and 'kind' in d]


def _yaml_files():
    files = sorted((ROOT / 'examples').glob('*.yaml')) + sorted((ROOT / 'labs').rglob('*.yaml'))
    return [f for f in files if f.is_file()]


def _markdown_blocks():
    pages = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md')),
             *sorted((ROOT / 'labs').glob('*/README.md')), ROOT / 'labs' / 'README.md']
    for page in pages:
        if not page.exists():
            continue
        for number, match in enumerate(YAML_BLOCK.finditer(page.read_text()), 1):
            yield f'{page.relative_to(ROOT)}#yaml{number}', match.group(1)


def _test_strings():
    """(where, text) of every plain string in the traffic tests that looks like a manifest."""
    for path in sorted((ROOT / 'tests' / 'traffic').rglob('*.py')):
        tree = ast.parse(path.read_text())
        templates = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in templates
                    and 'apiVersion:' in node.value and '\nkind:' in f'\n{node.value}'):
                yield f'{path.relative_to(ROOT)}:{node.lineno}', node.value


def _shared_test_manifests():
    """The traffic tests' shared manifest builders, rendered with sample arguments."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('traffic_manifests',
                                                  ROOT / 'tests' / 'traffic' / 'manifests.py')
    manifests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(manifests)
    yield 'tests/traffic/manifests.py:echo_pod', manifests.echo_pod('echo-a', 'worker-1')
    yield 'tests/traffic/manifests.py:shell_pods', manifests.shell_pods(('shell-a', 'worker-1'))
    yield 'tests/traffic/manifests.py:echo_backend', manifests.echo_backend('web', 2, 8080)


def _sources():
    yield from _shared_test_manifests()
    for path in _yaml_files():
        yield str(path.relative_to(ROOT)), path.read_text()
    yield from _markdown_blocks()
    yield from _test_strings()


def _parsed_sources():
    out = []
    for where, text in _sources():
        try:
            docs = _documents(text)
        except yaml.YAMLError:
            continue            # the invalid corpus and deliberately broken strings
        if docs:
            out.append((where, docs))
    return out


SOURCES = _parsed_sources()


def check(doc: dict) -> str | None:
    """None when the schema accepts ``doc`` (or has none, for an unchecked group), else why."""
    group = str(doc.get('apiVersion', '')).rpartition('/')[0]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        if group in UNCHECKED_GROUPS:
            return None
        return f'no schema for {doc.get("apiVersion")} {doc.get("kind")} and not a known CRD group'
    except kubernetes_validate.ValidationError as e:
        path = '.'.join(str(p) for p in e.path) or '(top)'
        return f'{doc.get("kind")} {doc.get("metadata", {}).get("name")}: {path}: {e.message}'
    return None


def test_the_sources_are_found():
    """The collection itself works: the demo, every exercise and some test manifests are in."""
    names = [where for where, _ in SOURCES]
    assert 'examples/demo.yaml' in names
    assert sum(n.startswith('labs/') for n in names) >= 20
    assert any(n.startswith('tests/') for n in names)


@pytest.mark.parametrize('where,docs', SOURCES, ids=[w for w, _ in SOURCES])
def test_manifest_is_valid_for_a_real_cluster(where, docs):
    problems = [p for p in map(check, docs) if p]
    assert not problems, f'{where}: ' + '; '.join(problems)


def test_an_unknown_field_is_caught():
    """strict mode is on: the check would see a misspelt field (the test can fail)."""
    doc = {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': 's'},
           'spec': {'selector': {'app': 'x'}, 'ports': [{'port': 80}], 'externalTrafficPolcy': 'Local'}}
    assert 'externalTrafficPolcy' in check(doc)


def test_a_core_kind_without_a_schema_is_not_waved_through():
    assert 'no schema' in check({'apiVersion': 'example.com/v1', 'kind': 'Widget', 'metadata': {'name': 'w'}})
