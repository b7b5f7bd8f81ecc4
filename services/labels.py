"""``kubectl label``: reading its ``key=value`` / ``key-`` arguments and changing an
object's labels with its rules and messages. Pure: the CLI parses with
``parse_label_args``, the store changes the object with ``relabel``.

kubectl's rules: a key that already has a value (even the same one) may only be set
again with ``--overwrite``; removing a label the object does not have is not an error
(kubectl says ``label "x" not found.``); the result is "labeled", "unlabeled" (labels
only removed, without ``--overwrite``) or "not labeled" (nothing changed).
"""

from __future__ import annotations

import json

from services.errors import KubelabError
from services.validation.common import label_value_problem


def parse_label_args(specs: list[str]) -> tuple[dict, list]:
    """``['app=web', 'tier-']`` -> ({'app': 'web'}, ['tier']), as kubectl reads them."""
    labels, remove = {}, []
    for spec in specs:
        if '=' in spec:
            parts = spec.split('=')
            if len(parts) != 2:
                raise KubelabError(f'invalid label spec: {spec}')
            problem = label_value_problem(parts[1])
            if problem:
                raise KubelabError(f'invalid label value: "{spec}": {problem}')
            labels[parts[0]] = parts[1]
        elif spec.endswith('-'):
            remove.append(spec[:-1])
        else:
            raise KubelabError(f'unknown label spec: {spec}')
    if any(key in labels for key in remove):
        raise KubelabError('can not both modify and remove a label in the same command')
    if not labels and not remove:
        raise KubelabError('at least one label update is required')
    return labels, remove


def relabel(current: dict | None, labels: dict, remove: list,
            overwrite: bool) -> tuple[dict, str, list]:
    """(the new labels, kubectl's verdict word, the keys to remove that were not
    there). Raises ``KubelabError`` for a key set again without ``overwrite``."""
    current = dict(current or {})
    if not overwrite:
        taken = [f"'{key}' already has a value ({current[key]}), and --overwrite is false"
                 for key in labels if key in current]
        if taken:
            raise KubelabError(taken[0] if len(taken) == 1 else
                               '[' + ', '.join(taken) + ']')
    missing = [key for key in remove if key not in current]
    new = dict(current, **labels)
    for key in remove:
        new.pop(key, None)
    if new == current:
        word = 'not labeled'
    elif not overwrite and len(json.dumps(new)) < len(json.dumps(current)):
        word = 'unlabeled'
    else:
        word = 'labeled'
    return new, word, missing
