"""The kubectl habits of the CLI, without a lab: ``-l`` selectors, ``--show-labels``,
``delete --wait=false``, when a Deployment counts as rolled out for ``kubelab wait``,
and the warnings an apply does (not) print."""

from datetime import datetime, timezone

import pytest

from kubelab import printers
from kubelab.cli.main import build_parser
from kubelab.client import deployment_complete
from services.selectors import matches_label_selector, parse_selector
from services.validation.warnings import apply_warnings

LABELS = {'app': 'web', 'tier': 'front', 'env': 'dev'}


@pytest.mark.parametrize('text, want', [
    ('app=web', True), ('app==web', True), ('app=db', False), ('app!=db', True),
    ('app!=web', False), ('missing!=x', True), ('env in (dev,prod)', True),
    ('env in (prod)', False), ('env notin (prod, test)', True), ('env notin (dev)', False),
    ('tier', True), ('missing', False), ('!missing', True), ('!tier', False),
    ('app=web,tier=front', True), ('app=web,tier=back', False),
    ('app in (web, db),!missing,env', True),
])
def test_selectors_select_as_kubectl_does(text, want):
    assert matches_label_selector(parse_selector(text), LABELS) is want


@pytest.mark.parametrize('text, problem', [
    ('app in web', 'use k=v'), ('=web', 'use k=v'), ('app=web,', 'an empty requirement'),
    ('app=we b', 'invalid label value'), ('app in (a,b c)', 'invalid value'),
])
def test_a_bad_selector_is_named(text, problem):
    with pytest.raises(ValueError, match=problem) as err:
        parse_selector(text)
    assert f'selector "{text}"' in str(err.value)


def pod(name, labels):
    return {'kind': 'Pod', 'metadata': {'name': name, 'namespace': 'default',
                                        'labels': labels,
                                        'creationTimestamp': '2026-01-01T00:00:00Z'},
            'spec': {'containers': [{'name': 'c', 'image': 'busybox'}]},
            'status': {'phase': 'Running', 'podIP': '192.168.1.5'}}


def test_show_labels_adds_the_labels_column_last():
    now = datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc)
    out = printers.render('pods', [pod('a', {'tier': 'x', 'app': 'web'}), pod('b', {})],
                          'wide', now, show_labels=True).splitlines()
    assert out[0].split()[-1] == 'LABELS'
    assert out[1].split()[-1] == 'app=web,tier=x' and out[2].split()[-1] == '<none>'


def test_get_takes_selectors_and_delete_waits_unless_told_not_to():
    p = build_parser()
    args = p.parse_args(['get', 'pods', '-l', 'app=web', '--show-labels'])
    assert (args.selector, args.show_labels) == ('app=web', True)
    assert p.parse_args(['delete', 'pod', 'web']).wait is True
    assert p.parse_args(['delete', 'pod', 'web', '--wait=false']).wait is False
    assert p.parse_args(['delete', '-f', 'x.yaml', '--wait']).wait is True
    with pytest.raises(SystemExit):
        p.parse_args(['delete', 'pod', 'web', '--wait=maybe'])
    assert p.parse_args(['wait']).namespace is None          # every namespace
    assert p.parse_args(['wait', '-n', 'lab-03']).namespace == 'lab-03'


def deployment(replicas, generation, observed, updated, total, ready):
    return {'metadata': {'generation': generation}, 'spec': {'replicas': replicas},
            'status': {'observedGeneration': observed, 'updatedReplicas': updated,
                       'replicas': total, 'readyReplicas': ready}}


@pytest.mark.parametrize('dep, done', [
    (deployment(3, 2, 2, 3, 3, 3), True),
    (deployment(3, 2, 1, 0, 0, 0), False),      # just scaled: the controller is behind
    (deployment(3, 2, 1, 3, 3, 3), False),      # scaled 3 -> 0 -> 3, status of before
    (deployment(3, 2, 2, 3, 3, 2), False),      # one pod not ready yet
    (deployment(3, 2, 2, 3, 4, 3), False),      # an old pod still around
    (deployment(0, 3, 3, 0, 0, 0), True),
])
def test_kubelab_wait_waits_for_the_deployment_controller(dep, done):
    assert deployment_complete(dep) is done


def test_a_service_that_selects_no_pod_gets_no_warning():
    svc = {'apiVersion': 'v1', 'kind': 'Service',
           'metadata': {'name': 'web', 'namespace': 'default'},
           'spec': {'selector': {'app': 'nothing'}, 'ports': [{'port': 80}]}}
    assert apply_warnings([svc], [pod('a', {'app': 'web'})]) == []


def test_a_reader_that_leaves_ends_the_command_quietly(monkeypatch, capsys):
    """`kubelab flows | head`: no BrokenPipeError traceback, the exit status of a
    program killed by SIGPIPE (as kubectl's)."""
    import os
    import sys
    from kubelab.cli import observe
    from kubelab.cli.main import main

    def flows(args):
        for i in range(100000):
            print(f'flow {i}')
    monkeypatch.setattr(observe, 'cmd_flows', flows)
    read, write = os.pipe()
    os.close(read)
    saved = os.dup(write)
    out = os.fdopen(write, 'w')
    monkeypatch.setattr(sys, 'stdout', out)
    try:
        assert main(['flows']) == 141
        assert 'Traceback' not in capsys.readouterr().err
        out.write('x' * 100000)
        out.flush()                       # stdout now goes nowhere, without an error
    finally:
        os.close(saved)


@pytest.mark.parametrize('argv, name', [
    (['get', 'svc', '-o', 'yaml', 'web-lb'], 'web-lb'),
    (['get', 'svc', '-n', 'ingress-nginx', 'ingress-nginx-controller', '-o', 'json'],
     'ingress-nginx-controller'),
    (['get', 'pods'], None),
    (['delete', 'pod', '-n', 'shop', 'client'], 'client'),
    (['scale', 'deployment', '--replicas', '3', 'web'], 'web'),
])
def test_a_name_may_follow_the_options_as_with_kubectl(argv, name):
    from kubelab.cli.main import parse
    assert parse(argv).name == name


def test_two_names_are_still_refused():
    from kubelab.cli.main import parse
    with pytest.raises(SystemExit):
        parse(['get', 'svc', '-o', 'yaml', 'a', 'b'])
