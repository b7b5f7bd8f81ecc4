"""Emulated container images: the programs a pod's containers run.

kubelab has no container runtime. A pod is a Mininet host (a network
namespace) and each of its containers is an ordinary process that the node
agent starts inside that namespace. The image only decides *which* process:

- ``agnhost.py`` is a Python stand-in for Kubernetes' e2e test image
  ``registry.k8s.io/e2e-test-images/agnhost`` (``netexec``,
  ``serve-hostname``, ``pause``); ``registry.k8s.io/pause`` runs its
  ``pause`` subcommand too.
- busybox images run their ``command``/``args`` with the machine's real
  busybox applets (``sh``, ``wget``, ``nc``, ...).
- ``runtime.py`` turns a container spec into the argv and environment to
  exec, with Kubernetes' ``command``/``args`` versus ENTRYPOINT/CMD rules.

Which image references are supported is data in ``services/images.py``.
"""
