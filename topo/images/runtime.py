"""From a container spec to the process the node agent execs in the pod.

Pure translation, no side effects: the node agent calls ``container_argv``
and ``container_env`` and runs the result inside the pod's namespace.

Kubernetes' rules decide the command line: ``command`` replaces the image's
ENTRYPOINT, ``args`` replace its CMD, and ``$(VAR)`` in either expands to the
container's own ``env`` (``$$`` escapes a ``$``; an undefined name stays as
written). Expansion follows Kubernetes' rules (third_party/forked/golang/expansion):
an ``env`` value may refer only to variables defined earlier in the list, and the
result is never expanded again; still, each level may double what the one before made
(``B=$(A)$(A)``, ``C=$(B)$(B)``...), so a few hundred bytes of spec can ask for
gigabytes. Linux refuses an environment string or argument longer than
``MAX_ARG_STRLEN`` (128 KiB) and a total of ``MAX_EXPANDED_TOTAL`` near ARG_MAX: the
expansion stops at those bounds, without building the rest, and the container fails to
start with a message saying which variable went over (``ExpansionTooLarge``), as the
real runtime's exec fails with "argument list too long". The emulated images declare
what their real counterparts do:

=========== ============== ========= ==========================================
image       ENTRYPOINT     CMD       runs here as
=========== ============== ========= ==========================================
agnhost     ``/agnhost``   ``pause`` ``python -m topo.images.agnhost ARGS``
pause       ``/pause``     (none)    ``python -m topo.images.agnhost pause``
busybox     (none)         ``sh``    the command itself, busybox applets first
coredns     ``/coredns``   (none)    ``python -m topo.images.coredns ARGS``
echo-basic  ``/echo-       (none)    ``python -m topo.images.echo_basic``
            basic``
ingress-    ``/nginx-      (none)    ``python -m topo.images.nginx_proxy ARGS``
nginx       ingress-
            controller``
nginx-      ``/nginx-      (none)    ``python -m topo.images.nginx_proxy ARGS``
gateway     gateway``
=========== ============== ========= ==========================================

A command that is not an emulated binary (``sh -c ...`` in any image) runs
unchanged, and ``container_env`` puts the lab's busybox applet directory first
in PATH so that ``sh``, ``wget``, ``nc`` and ``sleep`` are busybox's. Which
image references are supported is decided by ``services.images``.
"""

import os

from services.container_config import (  # noqa: F401 (ExpansionTooLarge: for callers)
    MAX_EXPANDED_TOTAL, ExpansionTooLarge, Sources, env_vars, expand)
from services.images import AGNHOST_BINARIES, image_kind, unknown_image_message

AGNHOST_MODULE = 'topo.images.agnhost'
PAUSE_BINARY = '/pause'
NGINX_MODULE = 'topo.images.nginx_proxy'
ECHO_BASIC_MODULE = 'topo.images.echo_basic'
COREDNS_MODULE = 'topo.images.coredns'
COREDNS_BINARY = '/coredns'
ECHO_BASIC_BINARY = '/echo-basic'
#: The entrypoints of the images that run the lab's nginx.
NGINX_BINARIES = ('/nginx-ingress-controller', '/nginx-gateway')

#: PATH of the real images (and of most container images).
IMAGE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

#: Image kind -> (ENTRYPOINT, CMD), as ``docker inspect`` shows them.
IMAGE_CONFIG = {
    'agnhost': (['/agnhost'], ['pause']),
    'pause': ([PAUSE_BINARY], []),
    'busybox': ([], ['sh']),
    'echo-basic': ([ECHO_BASIC_BINARY], []),
    'coredns': ([COREDNS_BINARY], []),
    'ingress-nginx': (['/nginx-ingress-controller'], []),
    'nginx-gateway': (['/nginx-gateway'], []),
}


def _name(container):
    return container.get('name') or '<unnamed>'


def _words(container, env=None):
    """The image's ENTRYPOINT/CMD combined with command/args, expanded with ``env`` (the
    container's variables; by default those of its spec that need no lookup)."""
    image = container.get('image')
    kind = image_kind(image)
    if kind not in IMAGE_CONFIG:
        raise ValueError(f'container "{_name(container)}": '
                         f'{unknown_image_message(image)}')
    entrypoint, cmd = IMAGE_CONFIG[kind]
    command = list(container.get('command') or [])
    args = list(container.get('args') or [])
    if command:
        words = command + args
    else:
        words = entrypoint + (args or cmd)
    if not words:
        raise ValueError(f'container "{_name(container)}": no command to run:'
                         f' image "{image}" has no ENTRYPOINT or CMD, set '
                         f'command or args')
    if env is None:
        env = env_vars({'name': container.get('name'),     # lookups left out, in place
                        'env': [{} if 'valueFrom' in v else v
                                for v in container.get('env') or []]})
    budget = [MAX_EXPANDED_TOTAL]
    return [expand(str(word), env, f'container "{_name(container)}": command/args[{i}]',
                   budget) for i, word in enumerate(words)]


def _emulated(words, python):
    """The python argv for an emulated binary, or None for anything else."""
    if words[0] in AGNHOST_BINARIES:
        return [python, '-m', AGNHOST_MODULE] + words[1:]
    if words[0] == PAUSE_BINARY:
        return [python, '-m', AGNHOST_MODULE, 'pause']
    if words[0] == COREDNS_BINARY:
        return [python, '-m', COREDNS_MODULE] + words[1:]
    if words[0] == ECHO_BASIC_BINARY:
        return [python, '-m', ECHO_BASIC_MODULE] + words[1:]
    if words[0] in NGINX_BINARIES:
        return [python, '-m', NGINX_MODULE, words[0]] + words[1:]
    return None


def is_emulated(container: dict) -> bool:
    """Does ``container`` run one of the lab's Python stand-ins (which say when they
    serve: topo/images/__init__.py)?"""
    return _emulated(_words(container), 'python') is not None


def container_argv(container: dict, python: str, env: dict | None = None) -> list[str]:
    """The argv to exec for ``container`` (a pod spec's container dict).

    ``python`` is the interpreter that runs the emulated images; ``env`` the container's
    own variables (``services.container_config.env_vars``) for ``$(VAR)``. Raises
    ValueError naming the supported images when the image is unknown.
    """
    words = _words(container, env)
    return _emulated(words, python) or words


def container_env(container: dict, pod_name: str, busybox_dir: str,
                  fields: dict | None = None, sources: Sources | None = None,
                  emulated_env: dict | None = None) -> dict[str, str]:
    """The environment of ``container``'s process in pod ``pod_name``.

    PATH starts with ``busybox_dir`` (the lab's busybox applet links),
    HOSTNAME is the pod's hostname, emulated images get PYTHONUNBUFFERED=1 so their
    logs appear at once, and ``emulated_env`` (what the lab's Python needs: PYTHONPATH,
    the proxies' directory); the container's own variables (``env``, ``envFrom``, with
    ``fields`` for the downward API and ``sources`` for ConfigMaps and Secrets) override
    all of these, as they override image defaults in Kubernetes. Raises
    ``services.container_config.ConfigError`` for a missing ConfigMap, Secret or key.
    """
    env = {'PATH': f'{busybox_dir}:{IMAGE_PATH}', 'HOSTNAME': pod_name}
    if _emulated(_words(container), 'python') is not None:
        env['PYTHONUNBUFFERED'] = '1'
        env.update(emulated_env or {})
    env.update(env_vars(container, fields, sources))
    return env


def pod_resolv_conf(spec: dict, namespace: str, nameserver: str,
                    domain: str = 'cluster.local') -> str | None:
    """The /etc/resolv.conf the kubelet gives a pod (None: the node's own).

    ``dnsPolicy`` ClusterFirst (the default; ClusterFirstWithHostNet is the same for a
    pod without hostNetwork): the cluster DNS, the search path of the pod's namespace and
    ``ndots:5``. Default: the node's file. None: only what ``dnsConfig`` says.
    ``dnsConfig`` adds nameservers (at most 3 in all), search domains (at most 32) and
    options (a later value of an option replaces an earlier one), as kubelet does."""
    policy = spec.get('dnsPolicy') or 'ClusterFirst'
    if policy == 'Default':
        return None
    config = spec.get('dnsConfig') or {}
    servers, searches, options = [], [], {}
    if policy != 'None':
        servers = [nameserver]
        searches = [f'{namespace}.svc.{domain}', f'svc.{domain}', domain]
        options = {'ndots': '5'}
    servers += [s for s in config.get('nameservers') or [] if s not in servers]
    searches += [s for s in config.get('searches') or [] if s not in searches]
    for option in config.get('options') or []:
        options[option['name']] = option.get('value')
    lines = [f'search {" ".join(searches[:32])}'] if searches else []
    lines += [f'nameserver {server}' for server in servers[:3]]
    if options:
        lines.append('options ' + ' '.join(name if value is None else f'{name}:{value}'
                                            for name, value in options.items()))
    return '\n'.join(lines) + '\n'


def lab_files(container: dict, pod_name: str, state_dir: str) -> list[tuple[str, bool]]:
    """What of the lab's state directory an emulated image reads, and writes, as
    ``(path, writable)``: where a real controller image watches the API, the lab's
    writes files (services/dns.py's records, services/l7's nginx configurations) and
    these images read them. coredns: the records, read-only; the nginx images: their
    configuration and the default certificate, read-only, and their own directory for
    nginx's pid, temporary files and the version it loaded, writable. Nothing else of
    the state directory (the lab's token among it) is in any container."""
    words = _words(container)
    if words[0] == COREDNS_BINARY:
        return [(os.path.join(state_dir, 'dns'), False)]
    if words[0] in NGINX_BINARIES:
        from topo.images.nginx_proxy import config_dir
        l7_dir = os.path.join(state_dir, 'l7')
        conf = config_dir(words, l7_dir)
        return [(os.path.join(l7_dir, 'default-certificate'), False), (conf, False),
                (os.path.join(conf, 'pods', pod_name), True)]
    return []
