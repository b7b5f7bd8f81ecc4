"""Validation of a Pod spec: a Pod's ``spec`` and a Deployment's pod template.

Checks what the node agent needs to run the pod: containers with supported
images (``services.images``), their ports and readiness probes, env and envFrom
(services/validation/env.py), resources (cpu and memory, applied through the
container's cgroup), volumes and volume mounts (services/validation/volumes.py),
securityContext (services/validation/security.py), working directory, hostname,
subdomain and host aliases (the pod's /etc/hosts), restart policy, grace period,
tolerations (the scheduler reads them). Fields that real Kubernetes accepts but
that do not change what runs are kept and ignored (``IGNORED_*``, with the type
the API server would decode them into, and the API server's checks where they
are simple: pull policy, liveness and startup probes); fields kubelab cannot
emulate (``UNSUPPORTED_*``, with the reason) are errors, as are unknown fields.
"""

from services.images import (AGNHOST_BINARIES, AGNHOST_SUBCOMMANDS,
                             image_kind, unknown_image_message)
from services.validation.common import (
    MISSING, PROTOCOLS, UNSUPPORTED_PROTOCOLS, Checker, choices, describe,
    dns1123_label_problem, dns1123_subdomain_problem, iana_svc_name_problem,
    join, label_key_problem, label_value_problem, map_key, parse_ipv4,
    parse_quantity, suggestion)
from services.validation.env import validate_env
from services.validation.security import (validate_container_security,
                                          validate_pod_security)
from services.validation.volumes import validate_mounts, validate_volumes

POD_SPEC_FIELDS = ('containers', 'nodeName', 'restartPolicy',
                   'terminationGracePeriodSeconds', 'tolerations', 'volumes',
                   'securityContext', 'hostname', 'subdomain', 'hostAliases',
                   'setHostnameAsFQDN', 'shareProcessNamespace')
#: Pod spec fields kept but not acted on: name -> type.
IGNORED_POD_SPEC_FIELDS = {
    'activeDeadlineSeconds': 'integer', 'affinity': 'mapping',
    'automountServiceAccountToken': 'boolean', 'dnsConfig': 'mapping',
    'dnsPolicy': 'string', 'enableServiceLinks': 'boolean',
    'imagePullSecrets': 'list',
    'nodeSelector': 'mapping', 'os': 'mapping', 'overhead': 'mapping',
    'preemptionPolicy': 'string', 'priority': 'integer',
    'priorityClassName': 'string', 'readinessGates': 'list',
    'runtimeClassName': 'string', 'schedulerName': 'string',
    'serviceAccount': 'string', 'serviceAccountName': 'string',
    'topologySpreadConstraints': 'list'}
DNS_POLICIES = ('ClusterFirst', 'ClusterFirstWithHostNet', 'Default', 'None')
PREEMPTION_POLICIES = ('PreemptLowerPriority', 'Never')
#: Pod spec fields kubelab does not emulate, and why.
UNSUPPORTED_POD_SPEC_FIELDS = {
    'ephemeralContainers': 'use kubelab exec',
    'hostIPC': "a pod's IPC namespace is its own, shared by its containers only",
    'hostNetwork': 'a pod always has its own network namespace',
    'hostPID': 'each container has its own PID namespace',
    'initContainers': 'kubelab starts all containers of a pod together',
    'resourceClaims': 'kubelab nodes have no devices to claim'}

TOLERATION_FIELDS = ('key', 'operator', 'value', 'effect',
                     'tolerationSeconds')
TOLERATION_OPERATORS = ('Exists', 'Equal')
TAINT_EFFECTS = ('NoSchedule', 'PreferNoSchedule', 'NoExecute')

CONTAINER_FIELDS = ('name', 'image', 'command', 'args', 'ports', 'env',
                    'envFrom', 'readinessProbe', 'lifecycle', 'resources',
                    'securityContext', 'volumeMounts', 'workingDir',
                    'terminationMessagePath', 'terminationMessagePolicy')
#: Container fields kept but not acted on: name -> type.
IGNORED_CONTAINER_FIELDS = {
    'imagePullPolicy': 'string', 'livenessProbe': 'mapping',
    'resizePolicy': 'list', 'startupProbe': 'mapping', 'stdin': 'boolean',
    'stdinOnce': 'boolean', 'tty': 'boolean'}
UNSUPPORTED_CONTAINER_FIELDS = {
    'volumeDevices': 'kubelab has no block devices (no PersistentVolumes)',
    'restartPolicy': 'a container restart policy belongs to init containers'}
PULL_POLICIES = ('Always', 'IfNotPresent', 'Never')
TERMINATION_MESSAGE_POLICIES = ('File', 'FallbackToLogsOnError')
#: Probes the kubelet of kubelab does not run (checked, then ignored).
OTHER_PROBES = ('livenessProbe', 'startupProbe')

RESOURCE_FIELDS = ('limits', 'requests')
STANDARD_RESOURCES = ('cpu', 'memory', 'ephemeral-storage')
#: What the container's cgroup enforces (limits) and weighs (a cpu request).
ENFORCED_RESOURCES = ('cpu', 'memory')

CONTAINER_PORT_FIELDS = ('containerPort', 'protocol', 'name', 'hostPort')
#: hostIP: kubelab's hostPort DNAT listens on the node's one address.
UNSUPPORTED_CONTAINER_PORT_FIELDS = ('hostIP',)

PROBE_FIELDS = ('httpGet', 'tcpSocket', 'initialDelaySeconds',
                'periodSeconds', 'timeoutSeconds', 'successThreshold',
                'failureThreshold')
IGNORED_PROBE_FIELDS = ('terminationGracePeriodSeconds',)
PROBE_HANDLERS = ('httpGet', 'tcpSocket')
UNSUPPORTED_PROBE_HANDLERS = ('exec', 'grpc')
ALL_PROBE_HANDLERS = PROBE_HANDLERS + UNSUPPORTED_PROBE_HANDLERS
#: Probe timing fields: (name, minimum, default), as Kubernetes defaults them.
PROBE_TIMING = (('initialDelaySeconds', 0, 0), ('periodSeconds', 1, 10),
                ('timeoutSeconds', 1, 1), ('successThreshold', 1, 1),
                ('failureThreshold', 1, 3))
HTTP_SCHEMES = ('HTTP',)

RESTART_POLICIES = ('Always', 'OnFailure', 'Never')

LIFECYCLE_FIELDS = ('preStop', 'postStart')
#: Hook handlers: the kubelet of kubelab runs all three for preStop.
HOOK_HANDLERS = ('exec', 'httpGet', 'sleep')


def validate_pod_spec(chk: Checker, spec: dict, path: str, *,
                      restart_policies=RESTART_POLICIES) -> None:
    """Check ``spec`` (a PodSpec at ``path``), fill its defaults in place."""
    chk.known_fields(spec, path, POD_SPEC_FIELDS, IGNORED_POD_SPEC_FIELDS,
                     UNSUPPORTED_POD_SPEC_FIELDS)
    container_names: set[str] = set()
    port_names: set = set()     # names, and ('hostPort', port, protocol) pairs
    grace = chk.integer(spec, 'terminationGracePeriodSeconds', path, minimum=0,
                        default=30, bits=64)
    volumes = validate_volumes(chk, spec, path)
    for cpath, container in chk.items(spec, 'containers', path,
                                      required=True, non_empty=True):
        _container(chk, container, cpath, container_names, port_names, grace)
        validate_mounts(chk, container, cpath, volumes)
    validate_pod_security(chk, spec, path)
    _identity(chk, spec, path)
    node = chk.string(spec, 'nodeName', path)
    if node:
        chk.name(node, join(path, 'nodeName'), dns1123_subdomain_problem)
    chk.one_of(spec, 'restartPolicy', path, restart_policies,
               default='Always')
    for tpath, toleration in chk.items(spec, 'tolerations', path):
        _toleration(chk, toleration, tpath)
    _ignored_pod_fields(chk, spec, path)


def _identity(chk, spec, path) -> None:
    """What the pod's /etc/hosts and hostname are made of: ``hostname``, ``subdomain``,
    ``setHostnameAsFQDN``, ``hostAliases``; ``shareProcessNamespace`` (not emulated)."""
    for field in ('hostname', 'subdomain'):
        value = chk.string(spec, field, path)
        if value:
            chk.name(value, join(path, field), dns1123_label_problem)
    chk.boolean(spec, 'setHostnameAsFQDN', path)
    if chk.boolean(spec, 'shareProcessNamespace', path):
        chk.error(join(path, 'shareProcessNamespace'),
                  'true is not supported by kubelab: each container has its own PID '
                  'namespace')
    for apath, alias in chk.items(spec, 'hostAliases', path):
        chk.known_fields(alias, apath, ('ip', 'hostnames'))
        ip = chk.string(alias, 'ip', apath, required=True)
        if ip is not None and parse_ipv4(ip) is None:
            chk.error(join(apath, 'ip'), f'Invalid value: "{ip}": must be a valid IPv4 '
                                         f'address')
        for index, name in enumerate(chk.sequence(alias, 'hostnames', apath) or ()):
            where = join(join(apath, 'hostnames'), index)
            if not isinstance(name, str):
                chk.error(where, f'must be a string, got {describe(name)}')
            else:
                chk.name(name, where, dns1123_subdomain_problem)


def _ignored_pod_fields(chk, spec, path) -> None:
    """The API server's checks of fields kubelab keeps but does not use."""
    chk.typed(spec, path, IGNORED_POD_SPEC_FIELDS)
    if isinstance(spec.get('dnsPolicy'), str):
        chk.one_of(spec, 'dnsPolicy', path, DNS_POLICIES)
    if isinstance(spec.get('preemptionPolicy'), str):
        chk.one_of(spec, 'preemptionPolicy', path, PREEMPTION_POLICIES)
    if isinstance(spec.get('nodeSelector'), dict):
        chk.string_map(spec, 'nodeSelector', path, labels=True)
    if type(spec.get('activeDeadlineSeconds')) is int:
        chk.integer(spec, 'activeDeadlineSeconds', path, minimum=1, bits=64)


def _toleration(chk, toleration, path) -> None:
    """A toleration, as the scheduler reads it and the API server checks it
    (an empty ``operator`` means Equal, an empty ``effect`` every effect)."""
    chk.known_fields(toleration, path, TOLERATION_FIELDS)
    key = chk.string(toleration, 'key', path)
    if key and label_key_problem(key):
        chk.error(join(path, 'key'), label_key_problem(key))
    operator = 'Equal'
    if toleration.get('operator') not in (None, ''):
        operator = chk.one_of(toleration, 'operator', path,
                              TOLERATION_OPERATORS)
    value = chk.string(toleration, 'value', path)
    if operator == 'Exists' and value:
        chk.error(join(path, 'operator'),
                  "value must be empty when `operator` is 'Exists'")
    elif value and label_value_problem(value):
        chk.error(join(path, 'value'), label_value_problem(value))
    if toleration.get('key') in (None, '') and operator == 'Equal':
        chk.error(join(path, 'operator'),
                  'must be Exists when `key` is empty, which means "match '
                  'all values and all keys"')
    effect = toleration.get('effect')
    if effect != '':
        effect = chk.one_of(toleration, 'effect', path, TAINT_EFFECTS)
    seconds = chk.integer(toleration, 'tolerationSeconds', path, bits=64)
    if seconds is not None and effect != 'NoExecute':
        chk.error(join(path, 'effect'),
                  "must be 'NoExecute' when `tolerationSeconds` is set")


def _container(chk, container, path, names, port_names, grace) -> None:
    chk.known_fields(container, path, CONTAINER_FIELDS,
                     IGNORED_CONTAINER_FIELDS, UNSUPPORTED_CONTAINER_FIELDS)
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
    validate_env(chk, container, path)
    probe = chk.mapping(container, 'readinessProbe', path)
    if probe is not None:
        _probe(chk, probe, join(path, 'readinessProbe'), own_ports)
    lifecycle = chk.mapping(container, 'lifecycle', path)
    if lifecycle is not None:
        lpath = join(path, 'lifecycle')
        chk.known_fields(lifecycle, lpath, LIFECYCLE_FIELDS)
        for hook in LIFECYCLE_FIELDS:
            handler = chk.mapping(lifecycle, hook, lpath)
            if handler is not None:
                _hook(chk, handler, join(lpath, hook), own_ports, grace)
    workdir = chk.string(container, 'workingDir', path)
    if workdir and not workdir.startswith('/'):
        chk.error(join(path, 'workingDir'), f'Invalid value: "{workdir}": must be an '
                                            f'absolute path')
    if chk.string(container, 'terminationMessagePath', path) == '':
        chk.error(join(path, 'terminationMessagePath'), 'Required value')
    chk.one_of(container, 'terminationMessagePolicy', path,
               TERMINATION_MESSAGE_POLICIES)
    resources = chk.mapping(container, 'resources', path)
    if resources is not None:
        _resources(chk, resources, join(path, 'resources'))
    validate_container_security(chk, container, path)
    _ignored_container_fields(chk, container, path, own_ports)


def _hook(chk, handler, path, own_ports, grace) -> None:
    """A lifecycle hook: exactly one of exec, httpGet and sleep (Kubernetes keeps a
    tcpSocket handler for old manifests but never runs it; kubelab refuses it)."""
    chk.known_fields(handler, path, HOOK_HANDLERS, (), ('tcpSocket',))
    present = [h for h in HOOK_HANDLERS if h in handler]
    if not present:
        chk.error(path, f'must specify a handler type; supported: '
                        f'{choices(HOOK_HANDLERS)}')
    elif len(present) > 1:
        chk.error(path, f'may not specify more than 1 handler type, got '
                        f'{choices(present)}')
    exec_ = chk.mapping(handler, 'exec', path)
    if exec_ is not None:
        epath = join(path, 'exec')
        chk.known_fields(exec_, epath, ('command',))
        command = _strings(chk, exec_, 'command', epath)
        if command is None or command == []:
            chk.error(join(epath, 'command'), 'Required value')
    http = chk.mapping(handler, 'httpGet', path)
    if http is not None:
        _http_get(chk, http, join(path, 'httpGet'), own_ports)
    sleep = chk.mapping(handler, 'sleep', path)
    if sleep is not None:
        spath = join(path, 'sleep')
        chk.known_fields(sleep, spath, ('seconds',))
        seconds = chk.integer(sleep, 'seconds', spath, minimum=0, required=True,
                              bits=64)
        if isinstance(grace, int) and isinstance(seconds, int) and seconds > grace:
            chk.error(join(spath, 'seconds'),
                      f'Invalid value: {seconds}: must be non-negative and less than '
                      f'terminationGracePeriodSeconds ({grace})')


def _ignored_container_fields(chk, container, path, own_ports) -> None:
    """The API server's checks of fields kubelab keeps but does not use."""
    chk.typed(container, path, IGNORED_CONTAINER_FIELDS)
    if isinstance(container.get('imagePullPolicy'), str):
        chk.one_of(container, 'imagePullPolicy', path, PULL_POLICIES)
    for name in OTHER_PROBES:
        if isinstance(container.get(name), dict):
            _probe(chk, container[name], join(path, name), own_ports,
                   run=False)


def _resources(chk, resources, path) -> None:
    """``limits``/``requests``: resource names with quantities, each request
    at most its limit (as the API server checks them), a missing request set to
    its limit (as the API server defaults it). kubelab enforces cpu and memory;
    other resources are refused with that reason."""
    chk.known_fields(resources, path, RESOURCE_FIELDS, (),
                     {'claims': 'kubelab nodes have no devices to claim'})
    amounts: dict[str, dict] = {}
    for field in RESOURCE_FIELDS:
        amounts[field] = {}
        values = chk.mapping(resources, field, path)
        where = join(path, field)
        for name, value in (values or {}).items():
            if not isinstance(name, str):
                chk.error(where, f'keys must be strings, got {describe(name)}')
                continue
            rpath = map_key(where, name)
            problem = _resource_name_problem(name)
            if problem:
                chk.error(rpath, problem)
                continue
            if name not in ENFORCED_RESOURCES:
                chk.error(rpath, f'"{name}" is not supported by kubelab: its nodes '
                                 f'account for {choices(ENFORCED_RESOURCES)} only '
                                 f"(enforced through each container's cgroup)")
                continue
            amount = parse_quantity(value)
            if amount is None:
                chk.error(rpath, f'{describe(value)} is not a quantity; write '
                                 f'one like "250m", "1", "64Mi" or "1Gi"')
            elif amount < 0:
                chk.error(rpath, f'Invalid value: "{value}": must be greater '
                                 f'than or equal to 0')
            else:
                amounts[field][name] = amount
    for name, request in amounts['requests'].items():
        limit = amounts['limits'].get(name)
        if limit is not None and request > limit:
            chk.error(map_key(join(path, 'requests'), name),
                      f'Invalid value: "{resources["requests"][name]}": must '
                      f'be less than or equal to {name} limit of '
                      f'{resources["limits"][name]}')
    if not chk.errors and amounts['limits']:
        requests = resources.setdefault('requests', {})
        for name in amounts['limits']:
            requests.setdefault(name, resources['limits'][name])


def _resource_name_problem(name: str) -> str | None:
    if '/' in name:
        return label_key_problem(name)
    if name in STANDARD_RESOURCES or name.startswith('hugepages-'):
        return None
    hint = suggestion(name, STANDARD_RESOURCES)
    return (f'"{name}" is not a standard resource name{hint or ";"} use '
            f'{choices(STANDARD_RESOURCES)}, hugepages-<size> or a '
            f'fully-qualified name (e.g. example.com/gpu)')


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
    protocol = chk.one_of(port, 'protocol', path, PROTOCOLS, default='TCP',
                          unsupported=UNSUPPORTED_PROTOCOLS)
    host_port = chk.port(port, 'hostPort', path)
    if host_port is not None and protocol is not None:
        # The API server: a hostPort/protocol pair is unique within a pod.
        if ('hostPort', host_port, protocol) in port_names:
            chk.error(join(path, 'hostPort'), f'Duplicate value: "{host_port}/{protocol}"')
        port_names.add(('hostPort', host_port, protocol))
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


def _probe(chk, probe, path, own_ports, run=True) -> None:
    """A probe at ``path``; ``run``: the kubelet runs it (readinessProbe), so
    its handler must be one kubelab emulates and its timing gets defaults."""
    handlers = [h for h in PROBE_HANDLERS if h in probe]
    for handler in UNSUPPORTED_PROBE_HANDLERS:
        if handler in probe:
            if run:
                chk.error(join(path, handler),
                          f'"{handler}" probes are not supported by kubelab; '
                          f'supported: {choices(PROBE_HANDLERS)}')
            else:
                chk.mapping(probe, handler, path)
            handlers.append(handler)
    chk.known_fields(probe, path, PROBE_FIELDS,
                     IGNORED_PROBE_FIELDS + UNSUPPORTED_PROBE_HANDLERS)
    if not handlers:
        supported = PROBE_HANDLERS if run else ALL_PROBE_HANDLERS
        chk.error(path, f'must specify a handler; supported: '
                        f'{choices(supported)}')
    elif len(handlers) > 1:
        chk.error(path, f'may not specify more than 1 handler type, got '
                        f'{choices(handlers)}')
    http = chk.mapping(probe, 'httpGet', path)
    if http is not None:
        hpath = join(path, 'httpGet')
        if run:
            _http_get(chk, http, hpath, own_ports)
        else:
            chk.known_fields(http, hpath, ('path', 'port', 'scheme', 'host',
                                           'httpHeaders'))
            chk.string(http, 'path', hpath)
            chk.one_of(http, 'scheme', hpath, ('HTTP', 'HTTPS'))
            _probe_port(chk, http, hpath, own_ports)
    tcp = chk.mapping(probe, 'tcpSocket', path)
    if tcp is not None:
        tpath = join(path, 'tcpSocket')
        if run:
            chk.known_fields(tcp, tpath, ('port',), (), ('host',))
        else:
            chk.known_fields(tcp, tpath, ('port', 'host'))
        _probe_port(chk, tcp, tpath, own_ports)
    for name, minimum, default in PROBE_TIMING:
        chk.integer(probe, name, path, minimum=minimum,
                    default=default if run else MISSING)
    grace = 'terminationGracePeriodSeconds'
    if run and probe.get(grace) is not None:
        chk.error(join(path, grace), 'must not be set for readinessProbes')
    else:
        chk.integer(probe, grace, path, minimum=1, bits=64)
    threshold = probe.get('successThreshold')
    if not run and type(threshold) is int and threshold != 1:
        chk.error(join(path, 'successThreshold'),
                  f'Invalid value: {threshold}: must be 1')


def _http_get(chk, http, path, own_ports) -> None:
    """An httpGet the kubelet sends (a readiness probe, a preStop hook): plain HTTP to
    the pod's address, so no ``host`` and no HTTPS."""
    chk.known_fields(http, path, ('path', 'port', 'scheme'), ('httpHeaders',), ('host',))
    chk.string(http, 'path', path, default='/')
    chk.one_of(http, 'scheme', path, HTTP_SCHEMES, default='HTTP', unsupported=('HTTPS',))
    _probe_port(chk, http, path, own_ports)


def _probe_port(chk, handler, path, own_ports) -> None:
    port = chk.int_or_name(handler, 'port', path, required=True)
    if isinstance(port, str) and port not in own_ports:
        known = choices(own_ports) if own_ports else 'none'
        chk.error(join(path, 'port'),
                  f'"{port}" does not name a containerPort of this container;'
                  f' named ports of this container: {known}')
