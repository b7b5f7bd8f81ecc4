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

import re

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

_REFERENCE = re.compile(r'\$\$|\$\(([^()$]*)\)')

#: Linux's limit on one argument or ``NAME=value`` environment string (32 pages).
MAX_ARG_STRLEN = 131072
#: What all of a container's expanded env values and arguments may add up to (Linux's
#: ARG_MAX is a quarter of the stack limit: 2 MiB with the usual 8 MiB stack).
MAX_EXPANDED_TOTAL = 2 * 1024 * 1024


class ExpansionTooLarge(ValueError):
    """A ``$(VAR)`` expansion would exceed what Linux lets a process be given."""


def _name(container):
    return container.get('name') or '<unnamed>'


def _spec_env(container, fields=None):
    """The container's ``env`` list as a dict, each value expanded in order.

    ``valueFrom.fieldRef`` (the downward API) takes its value from ``fields``
    (``metadata.name``, ``status.podIP``...: what the kubelet knows of the pod); other
    ``valueFrom`` sources (secrets, config maps) are not emulated: such a variable is
    left out, so a ``$(NAME)`` reference to it stays literal.
    """
    env = {}
    fields = fields or {}
    budget = [MAX_EXPANDED_TOTAL]
    for i, var in enumerate(container.get('env') or []):
        if 'name' not in var:
            continue
        ref = (var.get('valueFrom') or {}).get('fieldRef') or {}
        if 'valueFrom' not in var:
            where = f'container "{_name(container)}": env[{i}] ({var["name"]})'
            env[var['name']] = expand(str(var.get('value', '')), env, where, budget)
        elif ref.get('fieldPath') in fields:
            env[var['name']] = fields[ref['fieldPath']]
    return env


def expand(text, env, where: str = '', budget: list | None = None):
    """Kubernetes' ``$(VAR)`` expansion of ``text`` using ``env``, in one pass.

    Raises ExpansionTooLarge, naming ``where``, as soon as the result passes
    MAX_ARG_STRLEN or the shared ``budget`` (a one-item list of bytes left), before
    the rest is built."""
    parts, size, pos = [], 0, 0
    for match in _REFERENCE.finditer(text):
        if match.group(0) == '$$':
            value = '$'
        else:
            value = env.get(match.group(1), match.group(0))
        parts += [text[pos:match.start()], value]
        size += match.start() - pos + len(value)
        pos = match.end()
        if size > MAX_ARG_STRLEN:
            break
    parts.append(text[pos:])
    size += len(text) - pos
    left = budget[0] if budget is not None else MAX_EXPANDED_TOTAL
    if size > min(MAX_ARG_STRLEN, left):
        limit = 'MAX_ARG_STRLEN, 131072 bytes' if size > MAX_ARG_STRLEN else \
            f'with the rest, {MAX_EXPANDED_TOTAL} bytes in all'
        raise ExpansionTooLarge(
            f'{where or "a value"}: $(VAR) references expand to more than Linux passes '
            f'to a process ({limit}): the container cannot start (argument list too '
            'long); Kubernetes expands each reference to an earlier variable, so every '
            'level of $(A)$(A) doubles the size')
    if budget is not None:
        budget[0] -= size
    return ''.join(parts)


def _words(container):
    """The image's ENTRYPOINT/CMD combined with command/args, expanded."""
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
    env = _spec_env(container)
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


def container_argv(container: dict, python: str) -> list[str]:
    """The argv to exec for ``container`` (a pod spec's container dict).

    ``python`` is the interpreter that runs the emulated images. Raises
    ValueError naming the supported images when the image is unknown.
    """
    words = _words(container)
    return _emulated(words, python) or words


def container_env(container: dict, pod_name: str,
                  busybox_dir: str, fields: dict | None = None) -> dict[str, str]:
    """The environment of ``container``'s process in pod ``pod_name``.

    PATH starts with ``busybox_dir`` (the lab's busybox applet links),
    HOSTNAME is the pod name, emulated images get PYTHONUNBUFFERED=1 so their
    logs appear at once; the container's own ``env`` overrides all of these,
    as it overrides image defaults in Kubernetes.
    """
    env = {'PATH': f'{busybox_dir}:{IMAGE_PATH}', 'HOSTNAME': pod_name}
    if _emulated(_words(container), 'python') is not None:
        env['PYTHONUNBUFFERED'] = '1'
    env.update(_spec_env(container, fields))
    return env


def with_resolv_conf(argv: list[str], resolv_conf: str | None) -> list[str]:
    """``argv`` run with ``resolv_conf`` as its /etc/resolv.conf, in a private mount
    namespace of its own: the pod's DNS settings, the machine's file untouched (a bind
    mount that only the process and its children see). None: the machine's file (a pod
    with ``dnsPolicy: Default`` inherits the node's, and the nodes are this machine)."""
    if resolv_conf is None:
        return list(argv)
    return ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c',
            'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv_conf, *argv]


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
