"""The corpus of invalid manifests and the fuzzed ones: what they are and how to apply them.

``tests/data/invalid/`` holds small manifests with one mistake each, named for the
mistake. Each file starts with comment lines saying what the error must contain:

    # expect: spec.ports[0].port: 0 is not a valid port number, must be 1-65535
    # xfail: needs fix in services/store.py: ...      (optional: a known gap)

Every ``expect`` text must appear in the error, which must be a ``KubelabError``; and
nothing may change (a file is applied as a whole: its first objects are not applied
when a later one is bad). Several files assume the objects of ``examples/demo.yaml``
exist (they update the ``web`` Deployment and Services or the ``client`` pod, or take
the demo's NodePort 30080), so apply that first.

``fuzz_cases()`` gives deterministic mutations of ``examples/demo.yaml`` (a key
deleted, a scalar's type changed, a value swapped for a huge number / empty string /
list / null, random bytes or indentation inserted, a line repeated, the text cut).
They may apply or fail; when they fail, the error must name a field or a YAML line.

In-process (unit tests), ``apply_text`` takes text the way ``kubelab apply -f`` does:
``manifests.load_documents``, a JSON round trip (the CLI posts the objects to the API
server as JSON), ``Store.apply``; ``store_state`` is what must not change.

Against a running lab (a traffic test), with ``LabControl`` as ``lab``::

    from tests.invalid_corpus import corpus, fuzz_cases, lab_state
    lab.apply(open('examples/demo.yaml').read())
    for case in corpus():
        before = lab_state(lab.client)
        proc = lab.kubelab('apply', '-f', str(case.path), check=False)
        assert proc.returncode == 1, case.name
        assert all(text in proc.stderr for text in case.expect), (case.name, proc.stderr)
        assert lab_state(lab.client) == before, case.name
        # ... and the switches' flows are the ones dumped before

(skip or ``pytest.xfail`` the cases whose ``xfail`` is set). ``lab_state`` leaves out
what the kubelets and the EndpointSlice controller change on their own (status,
resourceVersions, endpoint conditions), so it is stable on a live lab.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = ROOT / 'tests' / 'data' / 'invalid'
DEMO = ROOT / 'examples' / 'demo.yaml'
_HEADER = re.compile(r'#\s*(expect|xfail):\s?(.*)')


@dataclass(frozen=True)
class Case:
    """One corpus file: ``name`` (the file's stem), the texts its error must contain,
    and the reason it is a known gap (``xfail``), if it is one."""
    name: str
    path: Path
    expect: tuple[str, ...]
    xfail: str | None = None

    @property
    def text(self) -> str:
        return self.path.read_text(encoding='utf-8')


def read_case(path: Path) -> Case:
    """A corpus file with the ``# expect:``/``# xfail:`` lines of its header."""
    expect, xfail = [], None
    with open(path, encoding='utf-8', newline='') as f:
        for line in f:
            match = _HEADER.match(line.rstrip('\r\n'))
            if not match:
                break
            if match.group(1) == 'expect':
                expect.append(match.group(2))
            else:
                xfail = match.group(2)
    if not expect:
        raise ValueError(f'{path}: starts with no "# expect: ..." line')
    return Case(path.stem, path, tuple(expect), xfail)


def corpus() -> list[Case]:
    """Every corpus file, sorted by name."""
    return [read_case(path) for path in sorted(CORPUS_DIR.glob('*.yaml'))]


# ---------------------------------------------------------------- in-process apply
def load_text(text: str, source: str) -> list[dict]:
    """The objects ``kubelab apply -f`` sends for ``text``: the file parsed as the CLI
    parses it, then through JSON as the API server receives them."""
    from services import manifests
    docs = manifests.load_documents(text, source)
    return json.loads(json.dumps({'objects': docs}))['objects']


def apply_text(store, text: str, source: str, dry_run: bool = False) -> dict:
    """``kubelab apply -f`` of ``text`` against ``store``, in-process."""
    return store.apply(load_text(text, source), dry_run=dry_run)


def store_state(store) -> dict:
    """Everything an apply may change: every object, the resourceVersion counter,
    the ClusterIPs and NodePorts taken."""
    version, objects = store.snapshot()
    return {'resourceVersion': version, 'objects': objects,
            'clusterIPs': store.cluster_ips.allocated(),
            'nodePorts': store.node_ports.allocated(),
            'lbIPs': store.lb_ips.allocated()}


# ---------------------------------------------------------------- a running lab
def lab_state(client) -> dict:
    """What a rejected apply must leave unchanged on a running lab, read through the
    API server (``kubelab.client.Client``): every object's identity, labels,
    annotations and spec (EndpointSlices: addresses and ports), without what changes
    on its own (status, resourceVersion, endpoint conditions)."""
    objects = client._call('GET', '/lab/v1/snapshot?since=0')['objects']
    return {kind: sorted((stable_view(obj) for obj in items), key=json.dumps)
            for kind, items in objects.items() if kind not in CHANGING_ON_THEIR_OWN}


#: Kinds the lab writes by itself all the time: Events (a log, not state).
CHANGING_ON_THEIR_OWN = ('Event',)
#: Fields the lab renews by itself: a node's Lease is renewed by its kubelet's heartbeat.
RENEWED = {'Lease': ('renewTime', 'acquireTime')}


def stable_view(obj: dict) -> dict:
    meta = obj.get('metadata', {})
    view = {'namespace': meta.get('namespace', ''), 'name': meta.get('name'),
            'uid': meta.get('uid'), 'labels': meta.get('labels', {}),
            'annotations': meta.get('annotations', {}), 'spec': obj.get('spec')}
    renewed = RENEWED.get(obj.get('kind'), ())
    if renewed and isinstance(view['spec'], dict):
        view['spec'] = {k: v for k, v in view['spec'].items() if k not in renewed}
    if obj.get('kind') == 'EndpointSlice':
        view['endpoints'] = sorted(tuple(ep.get('addresses', ()))
                                   for ep in obj.get('endpoints') or [])
        view['ports'] = obj.get('ports')
    return view


# ---------------------------------------------------------------- fuzzing
FUZZ_SEED = 'kubelab-invalid-corpus'
FUZZ_COUNT = 48

#: Values a mutation puts in place of another one.
ODD_VALUES = (10**20, 2**31, 2**63, -1, 0, '', [], {}, None, 'x' * 300, 1.5, True,
              '8080', 'None', [1, 2], {'a': 'b'})
#: Characters a mutation inserts into the text: YAML syntax, whitespace, control
#: characters, non-ASCII.
ODD_CHARS = ':-{}[]"\'#&*!|>%@`,? \t\n\x00\x07\x1b\x7f\u00e9\u2028\ufeff\U0001f600'


@dataclass(frozen=True)
class FuzzCase:
    name: str
    mutation: str
    text: str


def _demo_documents() -> list:
    return list(yaml.safe_load_all(DEMO.read_text(encoding='utf-8')))


def _nodes(value, path=()):
    """``(path, value)`` of every node below ``value``, depth first."""
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _nodes(child, path + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _nodes(child, path + (index,))


def _set(root, path, value):
    for step in path[:-1]:
        root = root[step]
    root[path[-1]] = value


def _other_type(value, rng: random.Random):
    """``value`` as another type: ``80`` -> ``"80"``, ``"web"`` -> ``["web"]`` ..."""
    if isinstance(value, bool):
        return rng.choice([str(value).lower(), int(value)])
    if isinstance(value, int):
        return rng.choice([str(value), float(value), [value], value != 0])
    if isinstance(value, str):
        return rng.choice([[value], {value: value}, len(value), value == ''])
    if isinstance(value, list):
        return rng.choice([value[0] if value else '', {'items': value}])
    if isinstance(value, dict):
        return rng.choice([list(value), list(value.values()), json.dumps(value)])
    return rng.choice(['', 0, []])


def _delete_key(docs, rng):
    maps = [(p, v) for p, v in _nodes(docs) if isinstance(v, dict) and v]
    path, mapping = rng.choice(maps)
    key = rng.choice(list(mapping))
    del mapping[key]
    return f'delete {"/".join(map(str, path + (key,)))}'


def _change_type(docs, rng):
    path, value = rng.choice([(p, v) for p, v in _nodes(docs) if len(p) > 1])
    _set(docs, path, _other_type(value, rng))
    return f'retype {"/".join(map(str, path))}'


def _swap_value(docs, rng):
    path, _ = rng.choice([(p, v) for p, v in _nodes(docs) if len(p) > 1])
    value = rng.choice(ODD_VALUES)
    _set(docs, path, value)
    return f'set {"/".join(map(str, path))} = {value!r:.20}'


def _dump(docs) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True)


def _insert_chars(text, rng):
    at = rng.randrange(len(text) + 1)
    chars = ''.join(rng.choice(ODD_CHARS) for _ in range(rng.randint(1, 4)))
    return text[:at] + chars + text[at:], f'insert {chars!r} at {at}'


def _reindent(text, rng):
    lines = text.split('\n')
    index = rng.randrange(len(lines))
    shift = rng.choice([-4, -2, -1, 1, 2, 3, 8])
    line = lines[index]
    lines[index] = line[-shift:] if shift < 0 else ' ' * shift + line
    return '\n'.join(lines), f'indent line {index + 1} by {shift}'


def _repeat_line(text, rng):
    lines = text.split('\n')
    index = rng.randrange(len(lines))
    lines.insert(index, lines[index])
    return '\n'.join(lines), f'repeat line {index + 1}'


def _truncate(text, rng):
    at = rng.randrange(len(text))
    return text[:at], f'truncate at {at}'


DATA_MUTATIONS = {'delete-key': _delete_key, 'change-type': _change_type,
                  'swap-value': _swap_value}
TEXT_MUTATIONS = {'insert-chars': _insert_chars, 'reindent': _reindent,
                  'repeat-line': _repeat_line, 'truncate': _truncate}
MUTATIONS = tuple(DATA_MUTATIONS) + tuple(TEXT_MUTATIONS)


def fuzz_cases(count: int = FUZZ_COUNT, seed: str = FUZZ_SEED) -> list[FuzzCase]:
    """``count`` mutated copies of ``examples/demo.yaml``, the same on every run: case
    ``i`` uses mutation ``i % len(MUTATIONS)``, 1-3 times, with a generator seeded by
    ``seed`` and ``i``."""
    demo_text = DEMO.read_text(encoding='utf-8')
    cases = []
    for index in range(count):
        rng = random.Random(f'{seed}-{index}')
        kind = MUTATIONS[index % len(MUTATIONS)]
        steps = []
        if kind in DATA_MUTATIONS:
            docs = _demo_documents()
            for _ in range(rng.randint(1, 3)):
                steps.append(DATA_MUTATIONS[kind](docs, rng))
            text = _dump(docs)
        else:
            text = demo_text
            for _ in range(rng.randint(1, 3) if kind != 'truncate' else 1):
                text, step = TEXT_MUTATIONS[kind](text, rng)
                steps.append(step)
        cases.append(FuzzCase(f'fuzz-{index:02d}-{kind}', '; '.join(steps), text))
    return cases
