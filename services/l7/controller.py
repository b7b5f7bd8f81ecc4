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
   HTTPRoutes (``services.l7.routes``);
3. renders the nginx configuration of the ingress controller and of each Gateway
   (``services.l7.nginx_conf``) into its directory under ``l7_dir``, where the proxy
   pods pick it up (``topo/images/nginx_proxy.py``). A file is written only when its
   bytes change, so nginx reloads only for a real change: a new backend, an endpoint
   set going empty or coming back, a certificate.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import threading

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


def write_if_changed(path: str, data: bytes) -> bool:
    """Write ``data`` to ``path`` by rename (a reader never sees half a file), unless
    the file already holds it. True when it was written."""
    try:
        with open(path, 'rb') as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)
    return True


def write_config(directory: str, config) -> bool:
    """Write ``config``'s files, then its nginx.conf (atomically, last), where they
    differ; remove files it no longer has. True when anything changed."""
    os.makedirs(directory, exist_ok=True)
    changed = False
    wanted = dict(config.files)
    wanted['nginx.conf'] = config.text.encode()
    for name in sorted(wanted, key=lambda n: n == 'nginx.conf'):
        changed |= write_if_changed(os.path.join(directory, name), wanted[name])
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
        self.lock = threading.Lock()
        self.synced = 0            # the store version the files were last rendered from
        self.wanted: dict[str, str] = {}     # config directory -> sha256 of its nginx.conf

    def objects(self) -> dict[str, list[dict]]:
        return {kind: self.store.list(kind) for kind in KINDS}

    def sync(self) -> None:
        version = self.store.rv
        self.gateway_data_planes(self.objects())
        self.statuses(self.objects())
        wanted = self.configs(self.objects())
        with self.lock:
            self.wanted = wanted
            self.synced = version

    def write(self, directory: str, config, wanted: dict) -> None:
        write_config(directory, config)
        wanted[directory] = hashlib.sha256(config.text.encode()).hexdigest()

    def proxies(self) -> dict:
        """How far the proxies are: the store version of the rendered files, and which
        ready proxy pods do not run them yet (``kubelab wait`` waits for none)."""
        with self.lock:
            wanted, version = dict(self.wanted), self.synced
        ready = {p['metadata']['name'] for p in self.store.list('Pod')
                 if any(c.get('type') == 'Ready' and c.get('status') == 'True'
                        for c in (p.get('status') or {}).get('conditions') or ())}
        pending = []
        for directory, digest in sorted(wanted.items()):
            pods = os.path.join(directory, 'pods')
            for pod in sorted(os.listdir(pods)) if os.path.isdir(pods) else ():
                if pod not in ready:
                    continue
                try:
                    with open(os.path.join(pods, pod, 'loaded')) as f:
                        loaded = f.read()
                except OSError:
                    loaded = None
                if loaded != digest:
                    pending.append(f'pod {pod} has not loaded '
                                   f'{os.path.relpath(directory, self.l7_dir)} yet')
        return {'version': version, 'pending': pending}

    # ------------------------------------------------------------ Gateways' pods
    def gateway_data_planes(self, objects) -> None:
        from services.l7 import routes as l7routes
        gateways = {(g['metadata']['namespace'], g['metadata']['name']): g
                    for g in objects['Gateway']
                    if l7routes.gateway_class_is_ours(objects, g, addons.GATEWAY_CONTROLLER)}
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
        from services.l7 import routes as l7routes
        served = {(i['metadata']['namespace'], i['metadata']['name'])
                  for i in l7routes.served_ingresses(objects, addons.INGRESS_CONTROLLER)} \
            if self.ingress else set()
        # An Ingress's load balancer status has ip/hostname (no ipMode, unlike a Service's).
        published = [{k: v for k, v in entry.items() if k in ('ip', 'hostname')}
                     for entry in self.lb_ingress(objects, addons.INGRESS_NAMESPACE,
                                                  addons.INGRESS_NAME)]
        for ing in objects['Ingress']:
            meta = ing['metadata']
            status = dict(ing.get('status') or {})
            lb = {'ingress': published} if (meta['namespace'], meta['name']) in served \
                and published else {}
            status['loadBalancer'] = lb
            self.put('Ingress', ing, status)
        for cls in objects['GatewayClass']:
            status = l7routes.gatewayclass_status(cls, controller=addons.GATEWAY_CONTROLLER)
            if status is not None:
                self.put('GatewayClass', cls, status)
        for gw in objects['Gateway']:
            meta = gw['metadata']
            address = self.lb_ingress(objects, meta['namespace'], f'{meta["name"]}-nginx')
            status = l7routes.gateway_status(
                objects, gw, controller=addons.GATEWAY_CONTROLLER,
                address=address[0].get('ip') if address else None)
            if status is not None:
                self.put('Gateway', gw, status)
        routes = {(r['metadata']['namespace'], r['metadata']['name']): r
                  for r in objects['HTTPRoute']}
        for key, status in l7routes.httproute_statuses(
                objects, controller=addons.GATEWAY_CONTROLLER).items():
            if key in routes:
                self.put('HTTPRoute', routes[key], status)

    @staticmethod
    def lb_ingress(objects, namespace: str, name: str) -> list:
        for svc in objects['Service']:
            if (svc['metadata']['namespace'], svc['metadata']['name']) == (namespace, name):
                return ((svc.get('status') or {}).get('loadBalancer') or {}).get(
                    'ingress') or []
        return []

    def put(self, kind: str, obj: dict, status: dict) -> None:
        meta = obj['metadata']
        self.store.set_status(kind, meta.get('namespace', ''), meta['name'], meta['uid'],
                              status)

    # ------------------------------------------------------------ configurations
    def configs(self, objects) -> dict[str, str]:
        """Render and write every proxy's configuration; config directory -> digest."""
        from services.l7 import nginx_conf, routes as l7routes
        wanted: dict[str, str] = {}
        if self.ingress:
            directory = addons.config_dir(self.l7_dir,
                                          controller_class=addons.INGRESS_CONTROLLER)
            self.write(directory, nginx_conf.ingress_config(
                objects, controller=addons.INGRESS_CONTROLLER, files_dir=directory,
                default_cert=self.default_cert), wanted)
        for gw in objects['Gateway']:
            if not l7routes.gateway_class_is_ours(objects, gw, addons.GATEWAY_CONTROLLER):
                continue
            meta = gw['metadata']
            directory = addons.config_dir(self.l7_dir,
                                          gateway=(meta['namespace'], meta['name']))
            self.write(directory, nginx_conf.gateway_config(
                objects, gw, controller=addons.GATEWAY_CONTROLLER, files_dir=directory,
                default_cert=self.default_cert), wanted)
        self.remove_stale(set(wanted))
        return wanted

    def remove_stale(self, keep: set[str]) -> None:
        root = os.path.join(self.l7_dir, 'gateway')
        if not os.path.isdir(root):
            return
        for ns in os.listdir(root):
            for name in os.listdir(os.path.join(root, ns)):
                path = os.path.join(root, ns, name)
                if path not in keep:
                    shutil.rmtree(path, ignore_errors=True)
