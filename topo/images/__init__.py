"""Emulated container images: the programs a pod's containers run.

kubelab has no images. Each container runs in its sandbox (topo/sandbox.py) on the
machine's own files; the image only decides *which* program:

- ``agnhost.py`` is a Python stand-in for Kubernetes' e2e test image
  ``registry.k8s.io/e2e-test-images/agnhost`` (``netexec``,
  ``serve-hostname``, ``pause``); ``registry.k8s.io/pause`` runs its
  ``pause`` subcommand too. ``echo_basic.py``, ``coredns.py`` and
  ``nginx_proxy.py`` stand for the Gateway API's echo server, CoreDNS and the
  ingress-nginx and NGINX Gateway Fabric controllers.
- busybox images run their ``command``/``args`` with the machine's real
  busybox applets (``sh``, ``wget``, ``nc``, ...).
- ``runtime.py`` turns a container spec into the argv and environment to
  exec, with Kubernetes' ``command``/``args`` versus ENTRYPOINT/CMD rules.

A real binary serves within milliseconds of its exec; Python needs a second or more
to start (more in a fresh sandbox on a busy machine). So that a learner never sees that
second as a pod that is Ready but refuses connections, an emulated program calls
``announce_started`` once it serves (its ports bound); the kubelet counts its
container as started from then on (readiness, the first probe). The file it writes is
``STARTED_FILE`` in the container, given by the runtime in ``KUBELAB_STARTED``.

Which image references are supported is data in ``services/images.py``.
"""

import os

#: Where an emulated program says it has started, inside its container.
STARTED_FILE = '/dev/kubelab-started'


def announce_started() -> None:
    """Tell the kubelet this emulated program serves (nothing outside a lab container)."""
    path = os.environ.get('KUBELAB_STARTED')
    if not path:
        return
    try:
        with open(path, 'w') as f:
            f.write('started\n')
    except OSError:
        pass
