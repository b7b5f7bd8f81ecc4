"""``kubelab apply -f`` reads YAML through libyaml when it can (services/manifests.py's
``_FastLoader``: 1,000 Services in 0.04 s instead of 0.4 s, issue 20) and through
PyYAML's own parser otherwise. The fast loader may only ever give what the checked one
gives: on every manifest of the project, every invalid-corpus file and every fuzz case,
it either gives the same documents or fails (and the checked loader then decides)."""

from pathlib import Path

import pytest

from services import manifests
from tests.invalid_corpus import corpus, fuzz_cases

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [(str(p.relative_to(ROOT)), p.read_text(encoding='utf-8', errors='surrogateescape'))
         for p in sorted(ROOT.glob('**/*.yaml')) if '.venv' not in p.parts] + \
    [(f'corpus/{c.name}', c.text) for c in corpus()] + \
    [(f'fuzz/{i}', c.text) for i, c in enumerate(fuzz_cases())]


def _outcome(loader, text):
    """('ok', (first line, data) of every document but the empty ones, which
    ``load_documents`` skips), or ('failed', the exception's type)."""
    try:
        return 'ok', [(line, data) for line, data in manifests._parse(loader, text)
                      if data is not None]
    except Exception as exc:            # noqa: BLE001 - any failure is one outcome
        return 'failed', type(exc).__name__


@pytest.mark.parametrize('name,text', TEXTS, ids=[name for name, _ in TEXTS])
def test_the_fast_loader_never_gives_what_the_checked_one_would_not(name, text):
    fast = _outcome(manifests._FastLoader, text)
    if fast[0] == 'failed':
        return
    assert _outcome(manifests._Loader, text) == fast


def test_the_fast_loader_reads_most_manifests():
    ok = sum(_outcome(manifests._FastLoader, text)[0] == 'ok' for _, text in TEXTS)
    assert ok > len(TEXTS) // 2
