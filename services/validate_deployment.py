"""Validation of ``apps/v1`` Deployment objects.

A Deployment is checked for what the lab's deployment controller needs:
replicas, a LabelSelector, and a pod template whose labels the selector
matches (the error reads like Kubernetes' own). The template's spec is
validated as a Pod spec (``services.validate_pod``) under
``spec.template.spec``; its restart policy must be ``Always``.
"""

import json

from services.selectors import SELECTOR_OPERATORS, matches_label_selector
from services.validate_common import (Checker, describe, join,
                                      label_key_problem, label_value_problem)
from services.validate_pod import validate_pod_spec

DEPLOYMENT_FIELDS = ('apiVersion', 'kind', 'metadata', 'spec', 'status')
DEPLOYMENT_SPEC_FIELDS = ('replicas', 'selector', 'template')
IGNORED_DEPLOYMENT_SPEC_FIELDS = ('minReadySeconds', 'paused',
                                  'progressDeadlineSeconds',
                                  'revisionHistoryLimit', 'strategy')
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


def validate_label_selector(chk: Checker, selector: dict, path: str) -> None:
    """Check a LabelSelector (``matchLabels``/``matchExpressions``)."""
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
    if not match_labels and not expressions and \
            len(chk.errors) == errors_before:
        chk.error(path, 'Invalid value: {}: empty selector is invalid for '
                        'deployment; set matchLabels')
