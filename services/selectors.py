"""Label selectors: which labels a selector matches, and how kubectl prints it.

Two kinds, as in Kubernetes:

* a Service selector is a plain ``{key: value}`` map; an empty or missing one
  selects nothing (such a Service has endpoints only if the user writes them);
* a Deployment's ``spec.selector`` is a LabelSelector, ``{matchLabels,
  matchExpressions}``; every requirement must hold. A null LabelSelector
  matches nothing, an empty one (``{}``) matches everything.
"""

import re

#: Operators of ``matchExpressions``.
SELECTOR_OPERATORS = ('In', 'NotIn', 'Exists', 'DoesNotExist')


def matches(selector: dict | None, labels: dict | None) -> bool:
    """True when a Service ``selector`` selects an object with ``labels``."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(key) == value for key, value in selector.items())


def _requirement_holds(expression: dict, labels: dict) -> bool:
    key = expression.get('key')
    operator = expression.get('operator')
    values = expression.get('values') or ()
    if operator == 'In':
        return key in labels and labels[key] in values
    if operator == 'NotIn':
        return key not in labels or labels[key] not in values
    if operator == 'Exists':
        return key in labels
    if operator == 'DoesNotExist':
        return key not in labels
    raise ValueError(f'unknown selector operator {operator!r}; '
                     f'supported: {", ".join(SELECTOR_OPERATORS)}')


def matches_label_selector(sel: dict | None, labels: dict | None) -> bool:
    """True when a LabelSelector (matchLabels/matchExpressions) holds."""
    if sel is None:
        return False
    labels = labels or {}
    for key, value in (sel.get('matchLabels') or {}).items():
        if labels.get(key) != value:
            return False
    return all(_requirement_holds(expression, labels)
               for expression in sel.get('matchExpressions') or ())


def format_selector(selector: dict | None) -> str:
    """``{'tier': 'fe', 'app': 'web'}`` -> ``'app=web,tier=fe'`` (sorted)."""
    return ','.join(f'{key}={value}'
                    for key, value in sorted((selector or {}).items()))


def format_label_selector(sel: dict | None) -> str:
    """A LabelSelector as kubectl prints it: ``app=web,tier in (a,b),!x``."""
    if sel is None:
        return '<none>'
    parts = [f'{key}={value}'
             for key, value in sorted((sel.get('matchLabels') or {}).items())]
    for expression in sel.get('matchExpressions') or ():
        key = expression.get('key')
        operator = expression.get('operator')
        values = ','.join(sorted(expression.get('values') or ()))
        if operator == 'In':
            parts.append(f'{key} in ({values})')
        elif operator == 'NotIn':
            parts.append(f'{key} notin ({values})')
        elif operator == 'Exists':
            parts.append(key)
        else:
            parts.append(f'!{key}')
    return ','.join(parts)


def parse_selector(text: str) -> dict:
    """A ``-l`` selector string, as kubectl reads it, into a LabelSelector:
    ``k=v`` / ``k==v`` (In), ``k!=v`` (NotIn), ``k in (a,b)``, ``k notin (a,b)``,
    ``k`` (Exists), ``!k`` (DoesNotExist), joined by commas; every one must hold.
    A malformed requirement raises ValueError naming it."""
    expressions, depth, part = [], 0, ''
    for char in text + ',':
        depth += {'(': 1, ')': -1}.get(char, 0)
        if char == ',' and depth == 0:
            expressions.append(_requirement(part.strip(), text))
            part = ''
        else:
            part += char
    return {'matchExpressions': expressions}


def _requirement(part: str, whole: str) -> dict:
    key_re = r'[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?'
    value_re = r'([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?'
    problem = f'unable to parse requirement "{part}" of selector "{whole}"'
    if not part:
        raise ValueError(f'{problem}: an empty requirement')
    m = re.fullmatch(rf'({key_re})\s+(in|notin)\s*\(([^()]*)\)', part)
    if m:
        values = [v.strip() for v in m.group(4).split(',')]
        if not all(re.fullmatch(value_re, v) for v in values):
            raise ValueError(f'{problem}: invalid value in ({m.group(4)})')
        return {'key': m.group(1), 'operator': 'In' if m.group(3) == 'in' else 'NotIn',
                'values': values}
    m = re.fullmatch(rf'({key_re})\s*(!=|==|=)\s*(.*)', part)
    if m:
        if not re.fullmatch(value_re, m.group(4)):
            raise ValueError(f'{problem}: invalid label value "{m.group(4)}"')
        return {'key': m.group(1), 'operator': 'NotIn' if m.group(3) == '!=' else 'In',
                'values': [m.group(4)]}
    m = re.fullmatch(rf'(!?)\s*({key_re})', part)
    if m:
        return {'key': m.group(2), 'operator': 'DoesNotExist' if m.group(1) else 'Exists'}
    raise ValueError(f'{problem}: use k=v, k==v, k!=v, "k in (a,b)", "k notin (a,b)", k '
                     'or !k')
