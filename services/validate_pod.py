"""Validation of a Pod spec: a Pod's ``spec`` and a Deployment's pod template.

Checks what the node agent needs to run the pod: containers with supported
images (``services.images``), their ports and readiness probes, env, restart
policy, grace period. Fields that real Kubernetes accepts but that do not
matter in the lab are kept and ignored (``IGNORED_*``); fields kubelab cannot
emulate (``UNSUPPORTED_*``) are errors, as are unknown fields.
"""

from services.images import (AGNHOST_BINARIES, AGNHOST_SUBCOMMANDS,
                             image_kind, unknown_image_message)
from services.validate_common import (
    PROTOCOLS, UNSUPPORTED_PROTOCOLS, Checker, choices, describe,
    dns1123_label_problem, dns1123_subdomain_problem, iana_svc_name_problem,
    join, suggestion)

POD_SPEC_FIELDS = ('containers', 'nodeName', 'restartPolicy',
                   'terminationGracePeriodSeconds', 'tolerations')
IGNORED_POD_SPEC_FIELDS = (
    'activeDeadlineSeconds', 'affinity', 'automountServiceAccountToken',
    'dnsConfig', 'dnsPolicy', 'enableServiceLinks', 'hostAliases', 'hostname',
    'imagePullSecrets', 'nodeSelector', 'os', 'overhead', 'preemptionPolicy',
    'priority', 'priorityClassName', 'readinessGates', 'runtimeClassName',
    'schedulerName', 'securityContext', 'serviceAccount',
    'serviceAccountName', 'setHostnameAsFQDN', 'shareProcessNamespace',
    'subdomain', 'topologySpreadConstraints', 'volumes')
UNSUPPORTED_POD_SPEC_FIELDS = ('ephemeralContainers', 'hostIPC',
                               'hostNetwork', 'hostPID', 'initContainers')

CONTAINER_FIELDS = ('name', 'image', 'command', 'args', 'ports', 'env',
                    'readinessProbe')
IGNORED_CONTAINER_FIELDS = (
    'envFrom', 'imagePullPolicy', 'lifecycle', 'livenessProbe',
    'resizePolicy', 'resources', 'securityContext', 'startupProbe', 'stdin',
    'stdinOnce', 'terminationMessagePath', 'terminationMessagePolicy', 'tty',
    'volumeDevices', 'volumeMounts', 'workingDir')

CONTAINER_PORT_FIELDS = ('containerPort', 'protocol', 'name')
UNSUPPORTED_CONTAINER_PORT_FIELDS = ('hostPort', 'hostIP')

PROBE_FIELDS = ('httpGet', 'tcpSocket', 'initialDelaySeconds',
                'periodSeconds', 'timeoutSeconds', 'successThreshold',
                'failureThreshold')
IGNORED_PROBE_FIELDS = ('terminationGracePeriodSeconds',)
PROBE_HANDLERS = ('httpGet', 'tcpSocket')
UNSUPPORTED_PROBE_HANDLERS = ('exec', 'grpc')
#: Probe timing fields: (name, minimum, default), as Kubernetes defaults them.
PROBE_TIMING = (('initialDelaySeconds', 0, 0), ('periodSeconds', 1, 10),
                ('timeoutSeconds', 1, 1), ('successThreshold', 1, 1),
                ('failureThreshold', 1, 3))
HTTP_SCHEMES = ('HTTP',)

ENV_FIELDS = ('name', 'value', 'valueFrom')
#: Downward-API fields an env var may take with ``valueFrom.fieldRef``.
ENV_FIELD_PATHS = ('metadata.name', 'metadata.namespace', 'metadata.uid',
                   'spec.nodeName', 'spec.serviceAccountName',
                   'status.hostIP', 'status.podIP')

RESTART_POLICIES = ('Always', 'OnFailure', 'Never')


def validate_pod_spec(chk: Checker, spec: dict, path: str, *,
                      restart_policies=RESTART_POLICIES) -> None:
    """Check ``spec`` (a PodSpec at ``path``), fill its defaults in place."""
    chk.known_fields(spec, path, POD_SPEC_FIELDS, IGNORED_POD_SPEC_FIELDS,
                     UNSUPPORTED_POD_SPEC_FIELDS)
    container_names: set[str] = set()
    port_names: set[str] = set()
    for cpath, container in chk.items(spec, 'containers', path,
                                      required=True, non_empty=True):
        _container(chk, container, cpath, container_names, port_names)
    node = chk.string(spec, 'nodeName', path)
    if node:
        chk.name(node, join(path, 'nodeName'), dns1123_subdomain_problem)
    chk.one_of(spec, 'restartPolicy', path, restart_policies,
               default='Always')
    chk.integer(spec, 'terminationGracePeriodSeconds', path, minimum=0,
                default=30)
    chk.sequence(spec, 'tolerations', path)


def _container(chk, container, path, names, port_names) -> None:
    chk.known_fields(container, path, CONTAINER_FIELDS,
                     IGNORED_CONTAINER_FIELDS)
    name = chk.string(container, 'name', path, required=True)
    if name is not None:
        chk.name(name, join(path, 'name'), dns1123_label_problem)
        if name in names:
            chk.error(join(path, 'name'), f'Duplicate value: "{name}"')
        names.add(name)
    command = _strings(chk, container, 'command', path)
    args = _strings(chk, container, 'args', path)
    image = chk.string(container, 'image', path, required=True)
    if image is not None:
        kind = image_kind(image)
        if kind is None:
            chk.error(join(path, 'image'), unknown_image_message(image))
        elif kind == 'agnhost' and command is not False and args is not False:
            _agnhost(chk, command, args, path)
    own_ports: dict[str, dict] = {}
    for ppath, port in chk.items(container, 'ports', path):
        _container_port(chk, port, ppath, port_names, own_ports)
    for epath, env in chk.items(container, 'env', path):
        _env(chk, env, epath)
    probe = chk.mapping(container, 'readinessProbe', path)
    if probe is not None:
        _probe(chk, probe, join(path, 'readinessProbe'), own_ports)


def _strings(chk, obj, key, path):
    """A list of strings (``command``/``args``): the list, None if absent,
    False if malformed (reported)."""
    values = chk.sequence(obj, key, path)
    if values is None:
        return False if key in obj else None
    ok = True
    for index, value in enumerate(values):
        if not isinstance(value, str):
            chk.error(join(join(path, key), index),
                      f'must be a string, got {describe(value)} (quote it)')
            ok = False
    return values if ok else False


def _agnhost(chk, command, args, path) -> None:
    """agnhost's entrypoint is ``/agnhost`` and its default CMD ``pause``.

    With ``command: [/agnhost, ...]`` the subcommand is the next word (the
    image's CMD no longer applies); otherwise it is ``args[0]``. A command
    that is not agnhost (``sh -c ...``) is not checked.
    """
    supported = choices(AGNHOST_SUBCOMMANDS)
    if command and command[0] not in AGNHOST_BINARIES:
        return
    if command and len(command) > 1:
        where, word = join(path, 'command') + '[1]', command[1]
    elif args:
        where, word = join(path, 'args') + '[0]', args[0]
    elif command:
        chk.error(join(path, 'args'),
                  f'"{command[0]}" needs a subcommand as its first '
                  f'argument; supported: {supported}')
        return
    else:
        return
    if word not in AGNHOST_SUBCOMMANDS:
        hint = suggestion(word, AGNHOST_SUBCOMMANDS)
        chk.error(where, f'unknown agnhost subcommand "{word}"{hint or ";"} '
                         f'supported: {supported}')


def _container_port(chk, port, path, port_names, own_ports) -> None:
    chk.known_fields(port, path, CONTAINER_PORT_FIELDS, (),
                     UNSUPPORTED_CONTAINER_PORT_FIELDS)
    chk.port(port, 'containerPort', path, required=True)
    chk.one_of(port, 'protocol', path, PROTOCOLS, default='TCP',
               unsupported=UNSUPPORTED_PROTOCOLS)
    name = chk.string(port, 'name', path)
    if name is None:
        return
    problem = iana_svc_name_problem(name)
    if problem:
        chk.error(join(path, 'name'), problem)
    elif name in port_names:
        chk.error(join(path, 'name'), f'Duplicate value: "{name}": port '
                                      f'names must be unique within a pod')
    port_names.add(name)
    own_ports[name] = port


def _env(chk, env, path) -> None:
    chk.known_fields(env, path, ENV_FIELDS)
    name = chk.string(env, 'name', path, required=True)
    if name is not None and (not name or '=' in name):
        chk.error(join(path, 'name'),
                  f'"{name}" is not a valid environment variable name: it '
                  f"must be non-empty and must not contain '='")
    value = chk.string(env, 'value', path)
    source = chk.mapping(env, 'valueFrom', path)
    if source is None:
        return
    spath = join(path, 'valueFrom')
    if value:
        chk.error(spath, 'may not be specified when `value` is not empty')
    chk.known_fields(source, spath, ('fieldRef',), (),
                     ('configMapKeyRef', 'secretKeyRef', 'resourceFieldRef'))
    ref = chk.mapping(source, 'fieldRef', spath, required=True)
    if ref is not None:
        rpath = join(spath, 'fieldRef')
        chk.known_fields(ref, rpath, ('fieldPath', 'apiVersion'))
        chk.one_of(ref, 'fieldPath', rpath, ENV_FIELD_PATHS, required=True)


def _probe(chk, probe, path, own_ports) -> None:
    handlers = [h for h in PROBE_HANDLERS if h in probe]
    for handler in UNSUPPORTED_PROBE_HANDLERS:
        if handler in probe:
            chk.error(join(path, handler),
                      f'"{handler}" probes are not supported by kubelab; '
                      f'supported: {choices(PROBE_HANDLERS)}')
            handlers.append(handler)
    chk.known_fields(probe, path, PROBE_FIELDS,
                     IGNORED_PROBE_FIELDS + UNSUPPORTED_PROBE_HANDLERS)
    if not handlers:
        chk.error(path, f'must specify a handler; supported: '
                        f'{choices(PROBE_HANDLERS)}')
    elif len(handlers) > 1:
        chk.error(path, f'may not specify more than 1 handler type, got '
                        f'{choices(handlers)}')
    http = chk.mapping(probe, 'httpGet', path)
    if http is not None:
        hpath = join(path, 'httpGet')
        chk.known_fields(http, hpath, ('path', 'port', 'scheme'),
                         ('httpHeaders',), ('host',))
        chk.string(http, 'path', hpath, default='/')
        chk.one_of(http, 'scheme', hpath, HTTP_SCHEMES, default='HTTP',
                   unsupported=('HTTPS',))
        _probe_port(chk, http, hpath, own_ports)
    tcp = chk.mapping(probe, 'tcpSocket', path)
    if tcp is not None:
        tpath = join(path, 'tcpSocket')
        chk.known_fields(tcp, tpath, ('port',), (), ('host',))
        _probe_port(chk, tcp, tpath, own_ports)
    for name, minimum, default in PROBE_TIMING:
        chk.integer(probe, name, path, minimum=minimum, default=default)


def _probe_port(chk, handler, path, own_ports) -> None:
    port = chk.int_or_name(handler, 'port', path, required=True)
    if isinstance(port, str) and port not in own_ports:
        known = choices(own_ports) if own_ports else 'none'
        chk.error(join(path, 'port'),
                  f'"{port}" does not name a containerPort of this container;'
                  f' named ports of this container: {known}')
