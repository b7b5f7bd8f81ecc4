"""What the cluster DNS records (services/dns.py) read from the store, and whether it
changed since they were last written.

The daemon writes the records after every change of the store; at 10,000 Services one
run takes 0.05 s of the interpreter the API server shares (0.02 s of reading, then
``dns.records`` from its memo). Most changes do not touch
them: a pod's readiness (its record needs only its address, phase and deletion), the
slices of ClusterIP Services (only a headless Service's slices make records), a Lease,
an Event. ``DNSInputs.objects`` reads what ``records`` needs (the views, and of the
slices only the headless Services') and remembers it; ``unchanged`` then tells, from
the keys changed since (the store's change log), that a run would write the same
records. tests/unit/test_dns_inputs.py compares the answers with the records.
"""

from __future__ import annotations

from services import dns
from services.endpoints import SERVICE_NAME_LABEL

KINDS = ('Service', 'EndpointSlice', 'Pod', 'Namespace')


def pod_inputs(pod: dict | None) -> tuple | None:
    """What the records read of a pod (None: no pod)."""
    if pod is None:
        return None
    meta, spec, status = pod.get('metadata') or {}, pod.get('spec') or {}, \
        pod.get('status') or {}
    return (status.get('podIP'), status.get('phase'), bool(meta.get('deletionTimestamp')),
            spec.get('hostname'), spec.get('subdomain'))


class DNSInputs:
    def __init__(self, store):
        self.store = store
        self.version = None          # the store version the records were read at
        self.pods: dict = {}         # pod key -> pod_inputs
        self.headless: set = set()   # (namespace, name) in lower case
        self.slices: set = set()     # the keys of the slices read
        self.memo: dict = {}         # dns.records' memo of each Service's own records

    def objects(self) -> dict:
        """What ``dns.records`` reads, now (and remembered for ``unchanged``)."""
        version = self.store.rv
        objects = {kind: self.store.view(kind) for kind in KINDS if kind != 'EndpointSlice'}
        headless = dns.headless_services(objects['Service'])
        objects['EndpointSlice'] = self.store.view(
            'EndpointSlice', where=lambda s: dns.reads_slice(headless, s))
        self.version, self.headless = version, headless
        self.pods = {('Pod', p['metadata'].get('namespace', ''), p['metadata']['name']):
                     pod_inputs(p) for p in objects['Pod']}
        self.slices = {('EndpointSlice', s['metadata'].get('namespace', ''),
                        s['metadata']['name']) for s in objects['EndpointSlice']}
        return objects

    def unchanged(self) -> bool:
        """True when nothing the records read changed since ``objects``."""
        if self.version is None:
            return False
        now = self.store.rv
        changes = self.store.changed_with_label(self.version, SERVICE_NAME_LABEL)
        if changes is None:
            return False
        for key, service in changes:
            kind = key[0]
            if kind in ('Service', 'Namespace'):
                return False
            if kind == 'EndpointSlice':
                if key in self.slices or (service is not None and (
                        (key[1] or 'default').lower(), str(service).lower())
                        in self.headless):
                    return False
            elif kind == 'Pod':
                if self.store.read(key, pod_inputs) != self.pods.get(key):
                    return False
        self.version = now           # the same records as at ``now``
        return True
