"""The control-plane half of the lab's ingress-nginx controller and Gateway API
implementation: a controller that reads the store like any Kubernetes controller and
acts through it.

On every change of the store, ``L7Controller.sync``:

1. keeps each Gateway's data plane (``services.addons.gateway_objects``: a Deployment
   and a LoadBalancer Service, owned by the Gateway) applied, and deletes those whose
   Gateway is gone (garbage collection by owner: ``stale_data_planes``);
2. writes the statuses (``statuses``, decided by ``services.l7.status``):
   ``status.loadBalancer.ingress`` of the Ingresses the controller serves (the address
   of its own LoadBalancer Service, as ingress-nginx's ``--publish-service`` does), and
   the conditions of GatewayClasses, Gateways and HTTPRoutes;
3. renders the nginx configuration of the ingress controller and of each Gateway
   (``proxy_configs``, ``services.l7.nginx_conf``), each for its directory under the
   lab's L7 directory, where the proxy pods pick it up (``topo/images/nginx_proxy.py``).

The decisions are the pure functions of this module; the controller acts through the
store and through ``files``, the machine side the daemon hands in (topo/l7files.py:
the fake certificate, writing a configuration only when its bytes change, so nginx
reloads only for a real change, removing a gone Gateway's directory, and reading
which proxy pods loaded what).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Iterator

from services import addons
from services.conditions import pod_ready
from services.endpoints import SERVICE_NAME_LABEL
from services.errors import KubelabError
from services.l7 import nginx_conf
from services.l7.gateway import gateway_class_is_ours
from services.l7.status import gateway_status, gatewayclass_status, httproute_statuses, \
    ingress_statuses, lb_ingress

LOG = logging.getLogger('kubelab.l7')

#: The kinds the routes are computed from.
KINDS = ('Service', 'EndpointSlice', 'Ingress', 'IngressClass', 'Secret', 'Gateway',
         'GatewayClass', 'HTTPRoute', 'Namespace')


#: The kinds a sync reads or writes (the Gateways' data planes are Deployments).
WATCHED_KINDS = frozenset(KINDS) | {'Deployment'}


# ---------------------------------------------------------------- decisions
def referenced_services(objects: dict) -> set[tuple[str, str]]:
    """(namespace, name) of every Service a sync may read: each name any Ingress,
    HTTPRoute or Gateway spec gives (backends, default backends, mirrors: more than
    it needs, never less), the ingress controller's own Service and each Gateway's."""
    found = {(addons.INGRESS_NAMESPACE, addons.INGRESS_NAME)}

    def walk(node, namespace):
        if isinstance(node, dict):
            if isinstance(node.get('name'), str):
                found.add((str(node.get('namespace') or namespace), node['name']))
            for value in node.values():
                walk(value, namespace)
        elif isinstance(node, list):
            for value in node:
                walk(value, namespace)
    for kind in ('Ingress', 'HTTPRoute', 'Gateway'):
        for obj in objects.get(kind) or ():
            namespace = obj['metadata'].get('namespace') or 'default'
            walk(obj.get('spec'), namespace)
            if kind == 'Gateway':
                found.add((namespace, f'{obj["metadata"]["name"]}-nginx'))
    return found


def _slice_service(namespace, endpoint_slice: dict) -> tuple[str, str | None]:
    return (namespace or 'default',
            (endpoint_slice['metadata'].get('labels') or {}).get(SERVICE_NAME_LABEL))


def our_gateways(objects: dict) -> dict[tuple[str, str], dict]:
    """(namespace, name) -> each Gateway whose class is ours."""
    return {(g['metadata']['namespace'], g['metadata']['name']): g
            for g in objects['Gateway']
            if gateway_class_is_ours(objects, g, addons.GATEWAY_CONTROLLER)}


def stale_data_planes(gateways: dict, objs: list[dict]) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of the Gateway data-plane objects among ``objs`` whose
    Gateway (by name and uid, from ``our_gateways``) is gone: garbage to delete."""
    stale = []
    for obj in objs:
        meta = obj['metadata']
        owner = (meta.get('labels') or {}).get(addons.GATEWAY_NAME_LABEL)
        if owner is None or (meta.get('labels') or {}).get(
                addons.MANAGED_BY) != 'kubelab-gateway':
            continue
        gateway = gateways.get((meta['namespace'], owner))
        uids = [r.get('uid') for r in meta.get('ownerReferences') or []]
        if gateway is None or gateway['metadata'].get('uid') not in uids:
            stale.append((obj['kind'], meta['namespace'], meta['name']))
    return stale


def statuses(objects: dict, *, ingress: bool = True) -> Iterator[tuple[str, dict, dict]]:
    """(kind, object, the status it should have) for every Ingress, and for every
    GatewayClass, Gateway and HTTPRoute of ours, one at a time (the controller writes
    each before the next is computed); ``ingress`` False: the lab runs no ingress
    controller, so no Ingress is served."""
    publish = (addons.INGRESS_NAMESPACE, addons.INGRESS_NAME) if ingress else None
    for ing, status in ingress_statuses(objects, publish,
                                        controller=addons.INGRESS_CONTROLLER):
        yield 'Ingress', ing, status
    for cls in objects['GatewayClass']:
        status = gatewayclass_status(cls, controller=addons.GATEWAY_CONTROLLER)
        if status is not None:
            yield 'GatewayClass', cls, status
    for gw in objects['Gateway']:
        meta = gw['metadata']
        address = lb_ingress(objects, meta['namespace'], f'{meta["name"]}-nginx')
        status = gateway_status(objects, gw, controller=addons.GATEWAY_CONTROLLER,
                                address=address[0].get('ip') if address else None)
        if status is not None:
            yield 'Gateway', gw, status
    routes = {(r['metadata']['namespace'], r['metadata']['name']): r
              for r in objects['HTTPRoute']}
    for key, status in httproute_statuses(
            objects, controller=addons.GATEWAY_CONTROLLER).items():
        if key in routes:
            yield 'HTTPRoute', routes[key], status


def proxy_configs(objects: dict, l7_dir: str, default_cert, *,
                  ingress: bool = True) -> Iterator[tuple[str, nginx_conf.NginxConfig]]:
    """(directory, configuration) of every proxy, one at a time (the controller writes
    each before the next is rendered): the ingress controller's (when the lab runs one)
    and each Gateway's of ours."""
    if ingress:
        directory = addons.config_dir(l7_dir, controller_class=addons.INGRESS_CONTROLLER)
        yield directory, nginx_conf.ingress_config(
            objects, controller=addons.INGRESS_CONTROLLER, files_dir=directory,
            default_cert=default_cert)
    for gw in objects['Gateway']:
        if not gateway_class_is_ours(objects, gw, addons.GATEWAY_CONTROLLER):
            continue
        meta = gw['metadata']
        directory = addons.config_dir(l7_dir, gateway=(meta['namespace'], meta['name']))
        yield directory, nginx_conf.gateway_config(
            objects, gw, controller=addons.GATEWAY_CONTROLLER, files_dir=directory,
            default_cert=default_cert)


def digest(config: nginx_conf.NginxConfig) -> str:
    """What a proxy reports once it loaded ``config``: the SHA-256 of its nginx.conf."""
    return hashlib.sha256(config.text.encode()).hexdigest()


# ---------------------------------------------------------------- the controller
class L7Controller:
    """``files`` is the machine side (topo/l7files.py's ``L7Files``): it has the L7
    directory (``l7_dir``) and the fake certificate, writes and removes the proxies'
    configuration directories, and tells which proxy pods have not loaded theirs."""

    def __init__(self, store, files, ingress: bool = True):
        self.store = store
        self.files = files
        self.l7_dir = files.l7_dir
        self.ingress = ingress
        self.default_cert = files.default_certificate()
        self.lock = threading.Lock()
        self.synced = 0            # the store version the files were last rendered from
        self.wanted: dict[str, str] = {}     # config directory -> sha256 of its nginx.conf
        self.watched: set = set()            # (namespace, name) of the Services it read
        self.watched_slices: set = set()     # the keys of their EndpointSlices

    def objects(self) -> dict[str, list[dict]]:
        return {kind: self.store.view(kind) for kind in KINDS}   # read only

    def sync(self) -> None:
        version = self.store.rv
        if self.synced and self._unaffected(self.synced):
            with self.lock:
                self.synced = version     # the files of that version are these
            return
        self.gateway_data_planes(self.objects())
        self.statuses(self.objects())
        objects = self.objects()
        wanted = self.configs(objects)
        with self.lock:
            self.wanted = wanted
            self.synced = version
        self.watched = referenced_services(objects)
        self.watched_slices = {
            ('EndpointSlice', s['metadata']['namespace'], s['metadata']['name'])
            for s in objects['EndpointSlice']
            if _slice_service(s['metadata'].get('namespace'), s) in self.watched}

    def _unaffected(self, since: int) -> bool:
        """True when nothing the last sync read changed after version ``since``: only
        objects of other kinds, and Services and slices no Ingress, route or Gateway
        refers to (at 10,000 Services a sync costs 0.1 s; one Service more, or a pod
        behind all of them, should not make the proxies' version wait for it)."""
        changes = self.store.changed_with_label(since, SERVICE_NAME_LABEL)
        if changes is None:
            return False
        for key, service in changes:
            kind, namespace = key[0], key[1] or 'default'
            if kind not in WATCHED_KINDS:
                continue
            if kind == 'Service':
                if (namespace, key[2]) in self.watched or self.store.label_of(
                        key, addons.GATEWAY_NAME_LABEL) is not None:
                    return False
            elif kind == 'EndpointSlice':
                if key in self.watched_slices or (namespace, service) in self.watched:
                    return False
            else:
                return False
        return True

    def rendered(self) -> tuple[int, dict[str, str]]:
        """The store version the files were last rendered from, and config directory
        -> the digest of its nginx.conf (what the proxies should have loaded)."""
        with self.lock:
            return self.synced, dict(self.wanted)

    def proxies(self) -> dict:
        """How far the proxies are: the store version of the rendered files, and which
        ready proxy pods do not run them yet (``kubelab wait`` waits for none)."""
        version, wanted = self.rendered()
        ready = {p['metadata']['name'] for p in self.store.list('Pod')
                 if pod_ready(p) and not p['metadata'].get('deletionTimestamp')}
        return {'version': version, 'pending': self.files.pending(wanted, ready)}

    def gateway_data_planes(self, objects) -> None:
        gateways = our_gateways(objects)
        for gateway in gateways.values():
            try:
                self.store.apply(addons.gateway_objects(gateway))
            except KubelabError as exc:
                LOG.error('gateway %s/%s: %s', gateway['metadata']['namespace'],
                          gateway['metadata']['name'], exc)
        for kind in ('Deployment', 'Service'):
            for _, namespace, name in stale_data_planes(gateways, self.store.view(kind)):
                try:
                    self.store.delete(kind, namespace, name)
                except KubelabError:
                    pass                         # already gone

    def statuses(self, objects) -> None:
        for kind, obj, status in statuses(objects, ingress=self.ingress):
            meta = obj['metadata']
            self.store.set_status(kind, meta.get('namespace', ''), meta['name'],
                                  meta['uid'], status)

    def configs(self, objects) -> dict[str, str]:
        """Render and write every proxy's configuration; config directory -> digest."""
        wanted: dict[str, str] = {}
        for directory, config in proxy_configs(objects, self.l7_dir, self.default_cert,
                                               ingress=self.ingress):
            self.files.write_config(directory, config)
            wanted[directory] = digest(config)
        self.files.remove_stale(set(wanted))
        return wanted
