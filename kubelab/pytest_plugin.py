"""A pytest plugin: a running kubelab lab as a fixture, for your own traffic tests.

Load it with ``pytest -p kubelab.pytest_plugin`` (or ``pytest_plugins =
['kubelab.pytest_plugin']`` in your conftest.py); installing kubelab with pip also
registers it (the ``pytest11`` entry point in setup.py). Fixtures:

* ``kubelab``: one lab per test module, brought up before its first test and taken
  down after its last, whatever happened;
* ``kubelab_session``: one lab for the whole run.

Both are ``kubelab.api.Lab`` objects. The cluster file is the module's
``KUBELAB_CLUSTER`` variable, else ``--kubelab-cluster FILE``, else the default cluster;
the module's ``KUBELAB_MANIFESTS`` (files or directories) are applied once it is up.
Without root the tests that use them are skipped, with the reason. One lab runs on a
machine at a time: ``kubelab`` and ``kubelab_session`` do not mix in one run.

    # test_web.py
    KUBELAB_MANIFESTS = ['app.yaml']

    def test_web_answers_from_both_pods(kubelab):
        pods = {kubelab.probe_url('client', 'http://web/').pod for _ in range(20)}
        assert len(pods) == 2
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    parser.addoption('--kubelab-cluster', metavar='FILE', default=None,
                     help='the cluster file of the kubelab fixtures (default: the '
                          "module's KUBELAB_CLUSTER, else kubelab's default cluster)")


def _lab(request, module=None):
    if os.geteuid() != 0:
        pytest.skip('kubelab needs root (network namespaces, Open vSwitch)')
    from kubelab.api import Lab
    from topo import ovs
    ovs.activate()                        # the Open vSwitch the lab runs on, first on PATH
    cluster = getattr(module, 'KUBELAB_CLUSTER', None) or \
        request.config.getoption('--kubelab-cluster')
    manifests = [os.path.join(os.path.dirname(module.__file__), m)
                 if module is not None and not os.path.isabs(m) else m
                 for m in getattr(module, 'KUBELAB_MANIFESTS', ())]
    return Lab.start(cluster, *manifests)


@pytest.fixture(scope='module')
def kubelab(request):
    """A lab for this test module (see the module docstring)."""
    lab = _lab(request, request.module)
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope='session')
def kubelab_session(request):
    """A lab for the whole test run."""
    lab = _lab(request)
    try:
        yield lab
    finally:
        lab.down()
