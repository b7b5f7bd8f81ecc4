"""Ingress (networking.k8s.io/v1) -> the ingress controller's fronts, as ingress-nginx
routes.

Served Ingresses: ``spec.ingressClassName`` (or the legacy annotation
``kubernetes.io/ingress.class``) names an IngressClass whose ``spec.controller`` is ours,
or the Ingress has no class and one of our IngressClasses is the default
(``ingressclass.kubernetes.io/is-default-class: "true"``). Older Ingresses first
(creationTimestamp, then namespace/name): on identical (host, path, pathType) the oldest
wins.

Paths: ``Exact`` is a case-sensitive equality. ``Prefix`` matches path elements, the
trailing slash of the rule ignored: ``/foo`` and ``/foo/`` match ``/foo``, ``/foo/`` and
``/foo/x`` but not ``/foobar``. ``ImplementationSpecific`` is treated as ``Prefix`` here.
Within a host the longest path wins (a Prefix's length without its trailing slash), and
at equal length Exact beats Prefix.

Hosts, as ingress-nginx decides them: a request whose host equals a rule's host is
decided by that host's rules only; else one matching a wildcard rule (``*.foo.com``
matches exactly ONE label: ``bar.foo.com``, not ``baz.bar.foo.com`` nor ``foo.com``) is
decided by that wildcard's rules only. Unmatched paths of such a host go to the
``defaultBackend`` of the oldest Ingress with rules for that host that has one, else
404. Any other request (or one without Host) goes through the host-less rules, then the
``defaultBackend`` of the oldest Ingress that has one, else 404. A backend without ready
endpoints, or one that does not exist, answers 503 (ingress-nginx's behaviour).

TLS: ``spec.tls[].hosts`` get the certificate of their Secret (type kubernetes.io/tls,
in the Ingress's namespace; the oldest Ingress wins a host) by SNI on 443; a missing or
unusable Secret leaves the host on the default (fake) certificate. A ``tls`` entry
without hosts is ignored. Plain HTTP requests for a TLS host are redirected (308) to
https unless the Ingress of the matched rule says
``nginx.ingress.kubernetes.io/ssl-redirect: "false"``; otherwise 80 and 443 route alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.l7.backends import READY, Objects
from services.l7.certificates import load_certificate
from services.l7.routes import (ANY, EXACT, ONE_LABEL, PREFIX, REDIRECT, Action, Front,
                                Route, Target, age_key, host_matches, host_order,
                                meta_of, name_of, namespace_of, prefix_base)

INGRESS_CONTROLLER = 'k8s.io/ingress-nginx'
IS_DEFAULT_CLASS = 'ingressclass.kubernetes.io/is-default-class'
LEGACY_CLASS = 'kubernetes.io/ingress.class'
SSL_REDIRECT = 'nginx.ingress.kubernetes.io/ssl-redirect'


def _truthy(value) -> bool:
    return str(value).strip().lower() == 'true'


def served_ingresses(objects: dict, controller: str = INGRESS_CONTROLLER) -> list[dict]:
    """The Ingresses ``controller`` serves, oldest first."""
    ours = {name_of(c) for c in objects.get('IngressClass') or ()
            if (c.get('spec') or {}).get('controller') == controller}
    default = any(_truthy((meta_of(c).get('annotations') or {}).get(IS_DEFAULT_CLASS))
                  for c in objects.get('IngressClass') or () if name_of(c) in ours)
    served = []
    for ingress in objects.get('Ingress') or ():
        cls = (ingress.get('spec') or {}).get('ingressClassName') or \
            (meta_of(ingress).get('annotations') or {}).get(LEGACY_CLASS)
        if (cls in ours) if cls else default:
            served.append(ingress)
    return sorted(served, key=age_key)


def _ssl_redirect(ingress: dict) -> bool:
    value = (meta_of(ingress).get('annotations') or {}).get(SSL_REDIRECT, 'true')
    return str(value).strip().lower() != 'false'


def _ingress_action(cluster: Objects, namespace: str, backend: dict) -> Action:
    service = (backend or {}).get('service')
    if not service:
        resource = (backend or {}).get('resource') or {}
        label = f'{namespace}/{resource.get("kind", "?")}/{resource.get("name", "?")}'
        return Action((Target(1, label, status=503),), status=503)
    port = service.get('port') or {}
    ref = port.get('number') if port.get('number') is not None else port.get('name')
    state, address, label = cluster.resolve(namespace, service.get('name'), ref)
    if state == READY:
        return Action((Target(1, label, address),))
    return Action((Target(1, label, status=503),), status=503)


@dataclass
class _IngressPath:
    order: tuple
    kind: str
    path: str
    ingress: dict
    action: Action
    source: str


@dataclass
class _Rules:
    """The served Ingresses' rules, gathered oldest first."""
    by_host: dict = field(default_factory=dict)    # host -> [_IngressPath]
    owners: dict = field(default_factory=dict)     # host -> Ingresses with rules for it
    hostless: list = field(default_factory=list)   # [_IngressPath] of rules without host
    global_default: dict | None = None             # the oldest Ingress with a defaultBackend
    tls_hosts: dict = field(default_factory=dict)  # host -> (Ingress, secretName)


def _gather(cluster: Objects, ingresses: list[dict]) -> _Rules:
    """Every path of every served Ingress, by host, with its precedence key; the owners
    of each host, the global default backend and the TLS hosts."""
    rules = _Rules()
    for rank, ingress in enumerate(ingresses):
        namespace, spec = namespace_of(ingress), ingress.get('spec') or {}
        ref = f'Ingress {namespace}/{name_of(ingress)}'
        if spec.get('defaultBackend') and rules.global_default is None:
            rules.global_default = ingress
        for r, rule in enumerate(spec.get('rules') or ()):
            host = str(rule.get('host') or '').lower() or None
            if host is not None:
                rules.by_host.setdefault(host, [])
                if ingress not in rules.owners.setdefault(host, []):
                    rules.owners[host].append(ingress)
            for p, item in enumerate((rule.get('http') or {}).get('paths') or ()):
                kind = EXACT if item.get('pathType') == 'Exact' else PREFIX
                path = item.get('path') or '/'
                length = len(path) if kind == EXACT else len(prefix_base(path))
                entry = _IngressPath(
                    (-length, 0 if kind == EXACT else 1, rank, r, p), kind, path, ingress,
                    _ingress_action(cluster, namespace, item.get('backend')),
                    f'{ref} rules[{r}].http.paths[{p}] {item.get("pathType")} {path}')
                (rules.by_host[host] if host is not None else rules.hostless).append(entry)
        for entry in spec.get('tls') or ():
            for host in entry.get('hosts') or ():
                rules.tls_hosts.setdefault(str(host).lower(),
                                           (ingress, entry.get('secretName')))
    return rules


def _tls_enabled(rules: _Rules, host: str) -> bool:
    """``host`` is a TLS host, itself or through a one-label wildcard."""
    return host in rules.tls_hosts or (not host.startswith('*.') and any(
        pattern.startswith('*.') and host_matches(pattern, host, ONE_LABEL)
        for pattern in rules.tls_hosts))


def _ordered(entries: list[_IngressPath]) -> list[_IngressPath]:
    """Paths by precedence, the first of each (kind, path) only (the oldest wins)."""
    seen, out = set(), []
    for entry in sorted(entries, key=lambda e: e.order):
        identity = (entry.kind, entry.path if entry.kind == EXACT
                    else prefix_base(entry.path))
        if identity not in seen:
            seen.add(identity)
            out.append(entry)
    return out


def _host_routes(cluster: Objects, rules: _Rules, host: str, tls: bool) -> list[Route]:
    """A host's paths, then its catch-all: the defaultBackend of its oldest owner that
    has one, else 404; on plain HTTP a TLS host's routes redirect (ssl-redirect)."""
    table = []
    redirect = not tls and _tls_enabled(rules, host)
    for entry in _ordered(rules.by_host[host]):
        action = Action(status=REDIRECT) \
            if redirect and _ssl_redirect(entry.ingress) else entry.action
        table.append(Route(host, entry.kind, entry.path, action, source=entry.source))
    owners = rules.owners[host]
    owner = next((i for i in owners if (i.get('spec') or {}).get('defaultBackend')), None)
    if owner is not None:
        action = _ingress_action(cluster, namespace_of(owner),
                                 owner['spec']['defaultBackend'])
        source = f'Ingress {namespace_of(owner)}/{name_of(owner)} defaultBackend'
        redirect = redirect and _ssl_redirect(owner)
    else:
        action, source = Action(status=404), f'host {host}: no rule matches'
        redirect = redirect and any(_ssl_redirect(i) for i in owners)
    table.append(Route(host, ANY, '', Action(status=REDIRECT) if redirect else action,
                       source=source))
    return table


def _routes(cluster: Objects, rules: _Rules, tls: bool) -> tuple:
    """A front's table: the hosts' routes (most specific host first), the host-less
    paths, then the global default backend."""
    table = []
    for host in sorted(rules.by_host, key=host_order):
        table += _host_routes(cluster, rules, host, tls)
    for entry in _ordered(rules.hostless):
        table.append(Route(None, entry.kind, entry.path, entry.action, source=entry.source))
    default = rules.global_default
    if default is not None:
        table.append(Route(None, ANY, '', _ingress_action(
            cluster, namespace_of(default), default['spec']['defaultBackend']),
            source=f'Ingress {namespace_of(default)}/{name_of(default)} defaultBackend'))
    return tuple(table)


def _sni(cluster: Objects, rules: _Rules) -> tuple:
    """(host, certificate) of the TLS hosts whose Secret is usable, most specific
    first."""
    sni = []
    for host in sorted(rules.tls_hosts, key=host_order):
        ingress, secret_name = rules.tls_hosts[host]
        certificate, _ = load_certificate(
            cluster.secrets.get((namespace_of(ingress), secret_name)) if secret_name
            else None)
        if certificate is not None:
            sni.append((host, certificate))
    return tuple(sni)


def ingress_fronts(objects: dict, *, controller: str = INGRESS_CONTROLLER,
                   address_of=None, http_port: int = 80,
                   https_port: int = 443) -> list[Front]:
    """The HTTP and HTTPS fronts of the Ingresses ``controller`` serves."""
    cluster = Objects(objects, address_of)
    rules = _gather(cluster, served_ingresses(objects, controller))
    return [Front(http_port, False, ONE_LABEL, _routes(cluster, rules, False)),
            Front(https_port, True, ONE_LABEL, _routes(cluster, rules, True),
                  _sni(cluster, rules))]
