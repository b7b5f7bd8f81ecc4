"""The control-plane half of the lab's ingress-nginx controller and Gateway API
implementation: a controller that reads the store like any Kubernetes controller and
acts through it.

On every change of the store, ``L7Controller.sync``:

1. keeps each Gateway's data plane (``services.addons.gateway_objects``: a Deployment
   and a LoadBalancer Service, owned by the Gateway) applied, and deletes those whose
   Gateway is gone (garbage collection by owner);
2. writes the statuses: ``status.loadBalancer.ingress`` of the Ingresses the
   controller serves (the address of its own LoadBalancer Service, as ingress-nginx's
   ``--publish-service`` does), and the conditions of GatewayClasses, Gateways and
   HTTPRoutes (``services.l7routes``);
3. renders the nginx configuration of the ingress controller and of each Gateway
   (``services.nginx_conf``) into its directory under ``l7_dir``, where the proxy
   pods pick it up (``topo/images/nginx_proxy.py``). A file is written only when its
   bytes change, so nginx reloads only for a real change: a new backend, an endpoint
   set going empty or coming back, a certificate.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

from services import addons
from services.errors import KubelabError

LOG = logging.getLogger('kubelab.l7')

#: The kinds the routes are computed from.
KINDS = ('Service', 'EndpointSlice', 'Ingress', 'IngressClass', 'Secret', 'Gateway',
         'GatewayClass', 'HTTPRoute', 'Namespace')
#: ingress-nginx's certificate for TLS hosts without a usable Secret (its subject).
FAKE_CERT_SUBJECT = '/O=Acme Co/CN=Kubernetes Ingress Controller Fake Certificate'


def fake_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate and key (PEM paths), made once per lab with openssl."""
    os.makedirs(directory, exist_ok=True)
    cert, key = os.path.join(directory, 'fake.crt'), os.path.join(directory, 'fake.key')
    if not (os.path.exists(cert) and os.path.exists(key)):
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
                        '-days', '3650', '-subj', FAKE_CERT_SUBJECT,
                        '-keyout', key, '-out', cert], check=True, capture_output=True)
    return cert, key


def write_config(directory: str, config) -> bool:
    """Write ``config``'s files, then its nginx.conf (atomically, last), where they
    differ; remove files it no longer has. True when anything changed."""
    os.makedirs(directory, exist_ok=True)
    changed = False
    wanted = dict(config.files)
    wanted['nginx.conf'] = config.text.encode()
    for name in sorted(wanted, key=lambda n: n == 'nginx.conf'):
        path = os.path.join(directory, name)
        try:
            with open(path, 'rb') as f:
                if f.read() == wanted[name]:
                    continue
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + '.tmp'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'wb') as f:
            f.write(wanted[name])
        os.replace(tmp, path)
        changed = True
    for root, _, names in os.walk(directory):
        if os.path.relpath(root, directory).split(os.sep)[0] == 'pods':
            continue                               # the pods' own runtime files
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), directory)
            if rel not in wanted:
                os.unlink(os.path.join(root, name))
                changed = True
    return changed


class L7Controller:
    def __init__(self, store, l7_dir: str, ingress: bool = True):
        self.store = store
        self.l7_dir = l7_dir
        self.ingress = ingress
        self.default_cert = fake_certificate(os.path.join(l7_dir, 'default-certificate'))

    def objects(self) -> dict[str, list[dict]]:
        return {kind: self.store.list(kind) for kind in KINDS}

    def sync(self) -> None:
        self.gateway_data_planes(self.objects())
        objects = self.objects()
        self.statuses(objects)
        self.configs(self.objects())

    # ------------------------------------------------------------ Gateways' pods
    def ours(self, objects, gateway) -> bool:
        return any(c['metadata']['name'] == gateway['spec'].get('gatewayClassName')
                   and c['spec'].get('controllerName') == addons.GATEWAY_CONTROLLER
                   for c in objects['GatewayClass'])

    def gateway_data_planes(self, objects) -> None:
        gateways = {(g['metadata']['namespace'], g['metadata']['name']): g
                    for g in objects['Gateway'] if self.ours(objects, g)}
        for gateway in gateways.values():
            try:
                self.store.apply(addons.gateway_objects(gateway))
            except KubelabError as exc:
                LOG.error('gateway %s/%s: %s', gateway['metadata']['namespace'],
                          gateway['metadata']['name'], exc)
        for kind in ('Deployment', 'Service'):
            for obj in self.store.list(kind):
                meta = obj['metadata']
                owner = (meta.get('labels') or {}).get(addons.GATEWAY_NAME_LABEL)
                if owner is None or (meta.get('labels') or {}).get(
                        addons.MANAGED_BY) != 'kubelab-gateway':
                    continue
                gateway = gateways.get((meta['namespace'], owner))
                uids = [r.get('uid') for r in meta.get('ownerReferences') or []]
                if gateway is None or gateway['metadata'].get('uid') not in uids:
                    try:
                        self.store.delete(kind, meta['namespace'], meta['name'])
                    except KubelabError:
                        pass                         # already gone

    # ------------------------------------------------------------ statuses
    def statuses(self, objects) -> None:
        raise NotImplementedError   # filled in with services.l7routes' status functions

    # ------------------------------------------------------------ configurations
    def configs(self, objects) -> None:
        raise NotImplementedError   # filled in with services.nginx_conf's renderers

    def remove_stale(self, keep: set[str]) -> None:
        root = os.path.join(self.l7_dir, 'gateway')
        if not os.path.isdir(root):
            return
        for ns in os.listdir(root):
            for name in os.listdir(os.path.join(root, ns)):
                path = os.path.join(root, ns, name)
                if path not in keep:
                    shutil.rmtree(path, ignore_errors=True)
