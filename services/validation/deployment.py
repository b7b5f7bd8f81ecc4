"""Validation of ``apps/v1`` Deployment objects.

A Deployment is checked for what the lab's deployment controller needs:
replicas, a LabelSelector, and a pod template whose labels the selector
matches (the error reads like Kubernetes' own). The template's spec is
validated as a Pod spec (``services.validation.pod``) under
``spec.template.spec``; its restart policy must be ``Always``.

The rollout fields follow the API server's rules and messages:
``spec.strategy.type`` is ``RollingUpdate`` or ``Recreate``; ``maxSurge`` and
``maxUnavailable`` are a number of pods or a percentage of ``replicas``, not
both 0 as written, and ``rollingUpdate`` may not be set for ``Recreate``;
``minReadySeconds`` is at least 0. ``validate`` leaves the strategy as it was
written; ``default_strategy`` writes the API server's defaults (RollingUpdate,
25% and 25%) when the store keeps the object, and a field left out counts as
its default in the checks here.
"""

import json
import re

from services.selectors import SELECTOR_OPERATORS, matches_label_selector
from services.validation.common import (Checker, describe, join,
                                      label_key_problem, label_value_problem)
from services.validation.pod import validate_pod_spec

DEPLOYMENT_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
DEPLOYMENT_SPEC_FIELDS = ('replicas', 'selector', 'template', 'strategy',
                          'minReadySeconds')
IGNORED_DEPLOYMENT_SPEC_FIELDS = ('paused', 'progressDeadlineSeconds',
                                  'revisionHistoryLimit')
STRATEGY_FIELDS = ('type', 'rollingUpdate')
ROLLING_UPDATE_FIELDS = ('maxSurge', 'maxUnavailable')
STRATEGY_TYPES = ('RollingUpdate', 'Recreate')
#: The API server's defaults for a RollingUpdate strategy.
DEFAULT_MAX_SURGE = DEFAULT_MAX_UNAVAILABLE = '25%'
INT_OR_PERCENT = 'an integer >= 0 or a percentage of replicas such as "25%"'
_PERCENT = re.compile(r'[0-9]+%\Z')
TEMPLATE_FIELDS = ('metadata', 'spec')
TEMPLATE_METADATA_FIELDS = ('labels', 'annotations')
IGNORED_TEMPLATE_METADATA_FIELDS = ('creationTimestamp', 'generateName',
                                    'name', 'namespace')
SELECTOR_FIELDS = ('matchLabels', 'matchExpressions')
#: A Deployment's pods always restart (as in Kubernetes).
DEPLOYMENT_RESTART_POLICIES = ('Always',)


def validate_deployment(chk: Checker, obj: dict) -> None:
    """Check a Deployment (the caller checks metadata); fill defaults."""
    chk.known_fields(obj, '', DEPLOYMENT_FIELDS)
    spec = chk.mapping(obj, 'spec', '', required=True)
    if spec is None:
        return
    chk.known_fields(spec, 'spec', DEPLOYMENT_SPEC_FIELDS,
                     IGNORED_DEPLOYMENT_SPEC_FIELDS)
    chk.integer(spec, 'replicas', 'spec', minimum=0, default=1)
    min_ready = chk.integer(spec, 'minReadySeconds', 'spec', minimum=0)
    # Accepted but not acted on; checked as the API server checks them.
    chk.boolean(spec, 'paused', 'spec')
    chk.integer(spec, 'revisionHistoryLimit', 'spec', minimum=0)
    deadline = chk.integer(spec, 'progressDeadlineSeconds', 'spec')
    if deadline is not None and deadline <= (min_ready or 0):
        chk.error('spec.progressDeadlineSeconds',
                  f'Invalid value: {deadline}: must be greater than minReadySeconds')
    validate_strategy(chk, spec)
    errors_before = len(chk.errors)
    selector = chk.mapping(spec, 'selector', 'spec', required=True)
    if selector is not None:
        validate_label_selector(chk, selector, 'spec.selector')
    selector_ok = selector is not None and len(chk.errors) == errors_before
    template = chk.mapping(spec, 'template', 'spec', required=True)
    if template is None:
        return
    chk.known_fields(template, 'spec.template', TEMPLATE_FIELDS)
    errors_before = len(chk.errors)
    meta = chk.mapping(template, 'metadata', 'spec.template', default=dict)
    labels = None
    if meta is not None:
        chk.known_fields(meta, 'spec.template.metadata',
                         TEMPLATE_METADATA_FIELDS,
                         IGNORED_TEMPLATE_METADATA_FIELDS)
        labels = chk.string_map(meta, 'labels', 'spec.template.metadata',
                                labels=True)
        chk.string_map(meta, 'annotations', 'spec.template.metadata',
                       labels=False)
    labels_ok = len(chk.errors) == errors_before
    if selector_ok and labels_ok and \
            not matches_label_selector(selector, labels or {}):
        shown = json.dumps(labels or {}, sort_keys=True)
        chk.error('spec.template.metadata.labels',
                  f'Invalid value: {shown}: selector does not match '
                  f'template labels')
    pod_spec = chk.mapping(template, 'spec', 'spec.template', required=True)
    if pod_spec is not None:
        validate_pod_spec(chk, pod_spec, 'spec.template.spec',
                          restart_policies=DEPLOYMENT_RESTART_POLICIES)


def validate_strategy(chk: Checker, spec: dict) -> None:
    """Check ``spec.strategy`` (a field left out counts as its default)."""
    strategy = chk.mapping(spec, 'strategy', 'spec')
    if strategy is None:
        return
    chk.known_fields(strategy, 'spec.strategy', STRATEGY_FIELDS)
    kind = chk.one_of(strategy, 'type', 'spec.strategy', STRATEGY_TYPES)
    rolling = chk.mapping(strategy, 'rollingUpdate', 'spec.strategy')
    if rolling is None:
        return
    path = 'spec.strategy.rollingUpdate'
    if kind == 'Recreate':
        chk.error(path, "Forbidden: may not be specified when strategy `type` "
                        "is 'Recreate'; remove it or use type RollingUpdate")
        return
    chk.known_fields(rolling, path, ROLLING_UPDATE_FIELDS)
    surge = _int_or_percent(chk, rolling, 'maxSurge', path)
    unavailable = _int_or_percent(chk, rolling, 'maxUnavailable', path)
    if surge == 0 and unavailable == 0:
        chk.error(join(path, 'maxUnavailable'),
                  f'Invalid value: {json.dumps(rolling["maxUnavailable"])}: '
                  f'may not be 0 when `maxSurge` is 0 (a rollout could '
                  f'neither add a pod nor remove one); raise one of them')
    value = rolling.get('maxUnavailable')
    if isinstance(value, str) and unavailable is not None and \
            unavailable > 100:
        chk.error(join(path, 'maxUnavailable'),
                  f'Invalid value: "{value}": must not be greater than 100%')


def _int_or_percent(chk: Checker, obj: dict, key: str, path: str):
    """The number an IntOrString field holds (``1`` -> 1, ``"25%"`` -> 25);
    None when it is absent (its default is not 0) or bad (reported)."""
    where = join(path, key)
    value = obj.get(key)
    if value is None:
        obj.pop(key, None)
        return None
    if isinstance(value, str):
        if _PERCENT.match(value):
            return int(value[:-1])
        hint = ' (write the number without quotes)' if value.isdigit() else ''
        chk.error(where, f'Invalid value: "{value}": a valid percent string '
                         f"must be a numeric string followed by an ending '%' "
                         f"(e.g. '1%' or '93%'){hint}; "
                         f'valid: {INT_OR_PERCENT}')
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            chk.error(where, f'Invalid value: {value}: must be greater than '
                             f'or equal to 0; valid: {INT_OR_PERCENT}')
            return None
        return value
    chk.error(where, f'must be {INT_OR_PERCENT}, got {describe(value)}')
    return None


def default_strategy(spec: dict) -> None:
    """Fill a valid Deployment spec's strategy as the API server stores it:
    type RollingUpdate, and for it maxSurge and maxUnavailable 25%."""
    strategy = spec.setdefault('strategy', {})
    strategy.setdefault('type', 'RollingUpdate')
    if strategy['type'] == 'RollingUpdate':
        rolling = strategy.setdefault('rollingUpdate', {})
        rolling.setdefault('maxSurge', DEFAULT_MAX_SURGE)
        rolling.setdefault('maxUnavailable', DEFAULT_MAX_UNAVAILABLE)


def validate_label_selector(chk: Checker, selector: dict, path: str,
                            allow_empty: bool = False) -> None:
    """Check a LabelSelector (``matchLabels``/``matchExpressions``). An empty one is
    refused (a Deployment's) unless ``allow_empty`` (a NetworkPolicy's: every pod)."""
    errors_before = len(chk.errors)
    chk.known_fields(selector, path, SELECTOR_FIELDS)
    match_labels = chk.string_map(selector, 'matchLabels', path, labels=True)
    expressions = chk.items(selector, 'matchExpressions', path)
    for epath, expression in expressions:
        chk.known_fields(expression, epath, ('key', 'operator', 'values'))
        key = chk.string(expression, 'key', epath, required=True)
        if key is not None and label_key_problem(key):
            chk.error(join(epath, 'key'), label_key_problem(key))
        operator = chk.one_of(expression, 'operator', epath,
                              SELECTOR_OPERATORS, required=True)
        values = chk.sequence(expression, 'values', epath)
        for index, value in enumerate(values or ()):
            vpath = join(join(epath, 'values'), index)
            if not isinstance(value, str):
                chk.error(vpath, f'must be a string, got {describe(value)} '
                                 f'(quote it)')
            elif label_value_problem(value):
                chk.error(vpath, label_value_problem(value))
        if operator in ('In', 'NotIn') and not values:
            chk.error(join(epath, 'values'),
                      f'must be specified when operator is {operator}')
        elif operator in ('Exists', 'DoesNotExist') and values:
            chk.error(join(epath, 'values'),
                      f'may not be specified when operator is {operator}')
    if not allow_empty and not match_labels and not expressions and \
            len(chk.errors) == errors_before:
        chk.error(path, 'Invalid value: {}: empty selector is invalid for '
                        'deployment; set matchLabels')
