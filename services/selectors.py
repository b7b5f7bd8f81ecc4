"""Label selectors: which labels a selector matches, and how kubectl prints it.

Two kinds, as in Kubernetes:

* a Service selector is a plain ``{key: value}`` map; an empty or missing one
  selects nothing (such a Service has endpoints only if the user writes them);
* a Deployment's ``spec.selector`` is a LabelSelector, ``{matchLabels,
  matchExpressions}``; every requirement must hold. A null LabelSelector
  matches nothing, an empty one (``{}``) matches everything.
"""

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
