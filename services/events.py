"""Events (``v1`` Event): what the controllers tell about an object, as ``kubectl get
events`` and ``kubectl describe`` show them.

An event names the object it is about (``involvedObject``), the component that
recorded it (``source.component``: node-controller, service-controller,
metallb-controller, metallb-speaker...), a type (Normal or Warning), a reason
(``NodeNotReady``, ``TaintManagerEviction``, ``IPAllocated``...) and a message. The
same event again (same object, type, reason and message) counts up (``count``,
``lastTimestamp``) instead of adding one, as client-go's event recorder aggregates
them. The store keeps at most ``MAX_EVENTS`` (the oldest go first; a real API server
keeps them an hour).

``event_for`` is pure: it returns the Event to write, new or counted up.
"""

from __future__ import annotations

import copy
import zlib

from services.naming import now_rfc3339

MAX_EVENTS = 1000
EVENT_TYPES = ('Normal', 'Warning')


def _reference(obj: dict) -> dict:
    meta = obj.get('metadata') or {}
    ref = {'kind': obj.get('kind', ''), 'name': meta.get('name', ''),
           'apiVersion': obj.get('apiVersion', 'v1')}
    if meta.get('namespace'):
        ref['namespace'] = meta['namespace']
    if meta.get('uid'):
        ref['uid'] = meta['uid']
    return ref


def event_name(ref: dict, reason: str, message: str) -> str:
    """``<object name>.<16 hex digits>``: stable for one (object, reason, message), so
    a repeated event finds its earlier self."""
    digest = zlib.crc32(f'{ref.get("uid")}/{reason}/{message}'.encode())
    return f'{ref["name"]}.{digest:08x}{zlib.adler32(message.encode()):08x}'


def event_for(existing: dict | None, obj: dict, event_type: str, reason: str,
              message: str, component: str, now: float | None = None) -> dict:
    """The Event recording ``reason``/``message`` about ``obj``: ``existing`` (the
    Event of that name, if any) counted up, or a new one."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f'event type {event_type!r}: must be one of {EVENT_TYPES}')
    stamp = now_rfc3339(now)
    if existing is not None:
        event = copy.deepcopy(existing)
        event['count'] = event.get('count', 1) + 1
        event['lastTimestamp'] = stamp
        return event
    ref = _reference(obj)
    return {
        'apiVersion': 'v1', 'kind': 'Event',
        'metadata': {'name': event_name(ref, reason, message),
                     'namespace': ref.get('namespace', 'default')},
        'involvedObject': ref, 'reason': reason, 'message': message, 'type': event_type,
        'source': {'component': component}, 'reportingComponent': component,
        'firstTimestamp': stamp, 'lastTimestamp': stamp, 'count': 1,
    }


def about(events: list[dict], obj: dict) -> list[dict]:
    """The events about ``obj`` (by uid, else kind, namespace and name), oldest first."""
    ref = _reference(obj)

    def mine(event):
        other = event.get('involvedObject') or {}
        if ref.get('uid') and other.get('uid'):
            return other['uid'] == ref['uid']
        return all(other.get(k) == ref.get(k) for k in ('kind', 'namespace', 'name'))
    return sorted((e for e in events if mine(e)), key=order)


def order(event: dict):
    """Last seen first to last, ties (one second) by the store's version."""
    return (event.get('lastTimestamp') or '',
            int(event['metadata'].get('resourceVersion') or 0), event['metadata']['name'])
