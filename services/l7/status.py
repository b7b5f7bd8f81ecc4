"""The statuses the lab's Ingress controller and Gateway API implementation write back.

``ingress_statuses``: an Ingress the controller serves gets the address of the
controller's own LoadBalancer Service in ``status.loadBalancer.ingress`` (as
ingress-nginx's ``--publish-service`` does: ``ip`` or ``hostname``, no ``ipMode``);
any other Ingress an empty ``loadBalancer``.

``httproute_statuses``, ``gateway_status`` and ``gatewayclass_status`` are in
metav1.Condition shape; a condition keeps its ``lastTransitionTime`` from the object's
current status while its status value does not change (``condition``). An HTTPRoute's
status has one ``parents`` entry per parentRef naming one of our Gateways (Accepted,
ResolvedRefs), the entries of other controllers kept; a Gateway's has its address, its
Accepted and Programmed conditions and each listener's; a GatewayClass of ours is
Accepted.
"""

from __future__ import annotations

import ipaddress
from typing import Iterator

from services import naming
from services.l7.backends import Objects
from services.l7.gateway import (GATEWAY_CONTROLLER, GATEWAY_GROUP, GatewayModel,
                                 parent_ref_key, resolved_refs)
from services.l7.ingress import INGRESS_CONTROLLER, served_ingresses
from services.l7.routes import key_of, meta_of, namespace_of


def lb_ingress(objects: dict, namespace: str, name: str) -> list:
    """The ``status.loadBalancer.ingress`` of a Service ([] when it has none)."""
    for svc in objects['Service']:
        if (svc['metadata']['namespace'], svc['metadata']['name']) == (namespace, name):
            return ((svc.get('status') or {}).get('loadBalancer') or {}).get(
                'ingress') or []
    return []


def ingress_statuses(objects: dict, publish: tuple[str, str] | None, *,
                     controller: str = INGRESS_CONTROLLER) -> Iterator[tuple[dict, dict]]:
    """(Ingress, the status it should have) for every Ingress: ``publish`` is the
    (namespace, name) of the controller's LoadBalancer Service, None when no
    controller runs (then no Ingress is served)."""
    served = {(i['metadata']['namespace'], i['metadata']['name'])
              for i in served_ingresses(objects, controller)} if publish else set()
    # An Ingress's load balancer status has ip/hostname (no ipMode, unlike a Service's).
    published = [{k: v for k, v in entry.items() if k in ('ip', 'hostname')}
                 for entry in lb_ingress(objects, *publish)] if publish else []
    for ing in objects['Ingress']:
        meta = ing['metadata']
        status = dict(ing.get('status') or {})
        lb = {'ingress': published} if (meta['namespace'], meta['name']) in served \
            and published else {}
        status['loadBalancer'] = lb
        yield ing, status


def condition(ctype: str, status: bool, reason: str, message: str, *,
              previous=None, generation=None, now: str) -> dict:
    """A metav1.Condition; ``lastTransitionTime`` comes from the same type in
    ``previous`` while the status value is unchanged."""
    value = 'True' if status else 'False'
    old = next((c for c in previous or () if c.get('type') == ctype), None)
    since = old.get('lastTransitionTime') if old and old.get('status') == value else None
    out = {'type': ctype, 'status': value, 'reason': reason, 'message': message,
           'lastTransitionTime': since or now}
    if generation is not None:
        out['observedGeneration'] = generation
    return out


def httproute_statuses(objects: dict, *, controller: str = GATEWAY_CONTROLLER,
                       address_of=None, now: str | None = None) -> dict:
    """(namespace, name) -> the ``status`` each HTTPRoute should have: one
    ``parents`` entry per parentRef naming one of our Gateways (Accepted and
    ResolvedRefs), the entries of other controllers kept. Routes with nothing of ours
    (now or before) are left out."""
    now = now or naming.now_rfc3339()
    cluster = Objects(objects, address_of)
    gateways = {key_of(g): g for g in objects.get('Gateway') or ()}
    models: dict[tuple, GatewayModel] = {}
    out = {}
    for route in objects.get('HTTPRoute') or ():
        namespace = namespace_of(route)
        previous = (route.get('status') or {}).get('parents') or []
        mine = [p for p in previous if p.get('controllerName') == controller]
        others = [p for p in previous if p.get('controllerName') != controller]
        entries, done, resolved = [], set(), None
        for ref in (route.get('spec') or {}).get('parentRefs') or ():
            ref_key = parent_ref_key(ref, namespace)
            gateway_key = (ref.get('namespace') or namespace, ref.get('name'))
            if ref_key in done or ref_key[:2] != (GATEWAY_GROUP, 'Gateway') or \
                    gateway_key not in gateways:
                continue
            if gateway_key not in models:
                models[gateway_key] = GatewayModel(cluster, gateways[gateway_key],
                                                    controller)
            model = models[gateway_key]
            if not model.ours:
                continue
            done.add(ref_key)
            accepted, reason, message = model.results[(key_of(route), ref_key)]
            if resolved is None:
                resolved = resolved_refs(cluster, route)
            old = next((p.get('conditions') for p in mine
                        if parent_ref_key(p.get('parentRef') or {}, namespace) == ref_key),
                       None)
            generation = meta_of(route).get('generation')
            entries.append({
                'parentRef': dict(ref), 'controllerName': controller,
                'conditions': [
                    condition('Accepted', accepted, reason, message, previous=old,
                              generation=generation, now=now),
                    condition('ResolvedRefs', *resolved, previous=old,
                              generation=generation, now=now)]})
        if entries or mine:
            out[key_of(route)] = {'parents': others + entries}
    return out


def gateway_status(objects: dict, gateway: dict, *, controller: str = GATEWAY_CONTROLLER,
                   address: str | None = None, now: str | None = None) -> dict | None:
    """The ``status`` of a Gateway of ours (None when its class is not ours):
    ``addresses`` (``address``, the caller's), conditions Accepted and Programmed,
    and per listener its supportedKinds, attachedRoutes and conditions."""
    now = now or naming.now_rfc3339()
    model = GatewayModel(Objects(objects), gateway, controller)
    if not model.ours:
        return None
    generation = meta_of(gateway).get('generation')
    previous = gateway.get('status') or {}
    old_listeners = {l.get('name'): l.get('conditions')
                     for l in previous.get('listeners') or ()}
    listeners = []
    for listener in model.listeners:
        old = old_listeners.get(listener.name)
        programmed = listener.programmed
        listeners.append({
            'name': listener.name,
            'supportedKinds': [dict(k) for k in listener.kinds],
            'attachedRoutes': model.attached_count(listener),
            'conditions': [
                condition('Accepted', *listener.accepted, previous=old,
                          generation=generation, now=now),
                condition('Programmed', programmed,
                          'Programmed' if programmed else 'Invalid',
                          '' if programmed else 'the listener is not served',
                          previous=old, generation=generation, now=now),
                condition('ResolvedRefs', *listener.resolved, previous=old,
                          generation=generation, now=now),
                condition('Conflicted', *listener.conflicted, previous=old,
                          generation=generation, now=now)]})
    valid = [l for l in model.listeners if l.programmed]
    if len(valid) == len(model.listeners):
        accepted = (True, 'Accepted', '')
    else:
        accepted = (bool(valid), 'ListenersNotValid',
                    f'{len(model.listeners) - len(valid)} listener(s) are not valid')
    if not address:
        programmed = (False, 'AddressNotAssigned', 'the Gateway has no address yet')
    elif not valid:
        programmed = (False, 'Invalid', 'no listener is valid')
    else:
        programmed = (True, 'Programmed', '')
    old = previous.get('conditions')
    status = {
        'conditions': [
            condition('Accepted', *accepted, previous=old, generation=generation, now=now),
            condition('Programmed', *programmed, previous=old, generation=generation,
                      now=now)],
        'listeners': listeners}
    if address:
        try:
            ipaddress.ip_address(address)
            kind = 'IPAddress'
        except ValueError:
            kind = 'Hostname'
        status['addresses'] = [{'type': kind, 'value': address}]
    return status


def gatewayclass_status(gatewayclass: dict, *, controller: str = GATEWAY_CONTROLLER,
                        now: str | None = None) -> dict | None:
    """The ``status`` of a GatewayClass of ours (Accepted), None for others'."""
    if (gatewayclass.get('spec') or {}).get('controllerName') != controller:
        return None
    return {'conditions': [condition(
        'Accepted', True, 'Accepted', f'handled by {controller}',
        previous=(gatewayclass.get('status') or {}).get('conditions'),
        generation=meta_of(gatewayclass).get('generation'),
        now=now or naming.now_rfc3339())]}
