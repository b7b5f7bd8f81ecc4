"""The container images kubelab can emulate, as data.

A pod's containers are not real containers: the node agent runs a built-in
program (written in ``topo/images/``) that behaves like the image. This module
only says which image references map to which program, so validation can
reject an unknown image with a message that lists the supported ones.

An image reference is ``[registry/]repository[:tag][@digest]``; the kind is
chosen by the repository alone, any tag or digest is accepted.
"""

import difflib

#: What the user may write, for messages (one line per emulated image).
SUPPORTED_IMAGES = (
    'registry.k8s.io/e2e-test-images/agnhost:<tag>'
    ' (also k8s.gcr.io/e2e-test-images/agnhost,'
    ' gcr.io/kubernetes-e2e-test-images/agnhost)',
    'registry.k8s.io/pause:<tag> (also k8s.gcr.io/pause)',
    'busybox[:tag] (also docker.io/library/busybox, docker.io/busybox)',
    'registry.k8s.io/coredns/coredns:<tag> (the lab\'s cluster DNS server: --records FILE)',
    'gcr.io/k8s-staging-gateway-api/echo-basic:<tag> (Gateway API conformance\'s echo '
    'server: JSON of the request and the pod that answered, on $HTTP_PORT, default 3000)',
    'registry.k8s.io/ingress-nginx/controller:<tag> (the lab\'s nginx, serving the '
    'Ingresses of its --controller-class)',
    'ghcr.io/nginx/nginx-gateway-fabric/nginx:<tag> (the lab\'s nginx for one Gateway, '
    '--gateway=NAMESPACE/NAME)',
)

#: Repository -> image kind. A new emulated image goes here and in
#: SUPPORTED_IMAGES.
IMAGE_REPOSITORIES = {
    'registry.k8s.io/e2e-test-images/agnhost': 'agnhost',
    'k8s.gcr.io/e2e-test-images/agnhost': 'agnhost',
    'gcr.io/kubernetes-e2e-test-images/agnhost': 'agnhost',
    'registry.k8s.io/pause': 'pause',
    'k8s.gcr.io/pause': 'pause',
    'busybox': 'busybox',
    'docker.io/library/busybox': 'busybox',
    'docker.io/busybox': 'busybox',
    'gcr.io/k8s-staging-gateway-api/echo-basic': 'echo-basic',
    'registry.k8s.io/coredns/coredns': 'coredns',
    'registry.k8s.io/ingress-nginx/controller': 'ingress-nginx',
    'ghcr.io/nginx/nginx-gateway-fabric/nginx': 'nginx-gateway',
}

#: The agnhost subcommands kubelab emulates.
AGNHOST_SUBCOMMANDS = ('netexec', 'serve-hostname', 'porter', 'pause')

#: How the agnhost binary is named in ``command: [/agnhost, netexec]``.
AGNHOST_BINARIES = ('/agnhost', 'agnhost')
#: The agnhost image's CMD: what runs without command and args.
AGNHOST_DEFAULT_ARGS = ('pause',)


def repository(image: str) -> str:
    """The repository part of an image reference (no tag, no digest)."""
    name = image.split('@', 1)[0]
    slash = name.rfind('/')
    colon = name.rfind(':')
    if colon > slash:
        name = name[:colon]
    return name


def image_kind(image: str) -> str | None:
    """'agnhost', 'pause', 'busybox', 'ingress-nginx' or 'nginx-gateway' for a
    supported image, else None."""
    if not isinstance(image, str) or not image or image != image.strip():
        return None
    return IMAGE_REPOSITORIES.get(repository(image))


#: The name to suggest for a repository's last component (``agnhost``).
_CANONICAL = {'agnhost': 'registry.k8s.io/e2e-test-images/agnhost',
              'pause': 'registry.k8s.io/pause',
              'busybox': 'busybox'}


def _close_repository(image: str) -> str | None:
    base = repository(image).rsplit('/', 1)[-1]
    if base in _CANONICAL:
        return _CANONICAL[base]
    close = difflib.get_close_matches(repository(image), IMAGE_REPOSITORIES,
                                      n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_image_message(image: str) -> str:
    """Why ``image`` cannot run in kubelab, listing the supported images."""
    hint = ''
    if isinstance(image, str):
        close = _close_repository(image)
        if close:
            hint = f'; did you mean "{close}"?'
    return (f'image "{image}" is not supported by kubelab{hint}; '
            f'supported: {"; ".join(SUPPORTED_IMAGES)}')
