"""What the cluster DNS records (services/dns.py) read from the store, and whether it
changed since they were last written.

The daemon writes the records after every change of the store; at 10,000 Services one
run takes 0.05 s of the interpreter the API server shares (0.02 s of reading, then
``dns.records`` from its memo). Most changes do not touch them: a pod's readiness and a
new pod without an address (its record needs only its live address, a headless Service's
endpoint its hostname and subdomain), the slices of ClusterIP Services (only a headless
Service's slices make records), a Lease, an Event. ``DNSInputs.objects`` reads what
``records`` needs (the views, and of the slices only the headless Services') and
remembers it; ``unchanged`` then tells, from the keys changed since (the store's change
log), that a run would write the same records, and ``files_moved`` which of the two
files the daemon writes may have changed (a pod's new address: the pods' file alone).
tests/unit/test_dns_inputs.py compares the answers with the records.
"""

from __future__ import annotations

from services import dns
from services.endpoints import SERVICE_NAME_LABEL

KINDS = ('Service', 'EndpointSlice', 'Pod', 'Namespace')


#: ``pod_inputs`` of no pod: a pod without an address, hostname or subdomain reads
#: the same (a new pod changes the records only once it has an address).
NO_POD = (None, None, None)


def pod_inputs(pod: dict | None) -> tuple:
    """What the records read of a pod: its live address (``dns.live_pod_ip``), and the
    hostname and subdomain a headless Service's endpoint may take from it."""
    if pod is None:
        return NO_POD
    spec = pod.get('spec') or {}
    return dns.live_pod_ip(pod), spec.get('hostname'), spec.get('subdomain')


class DNSInputs:
    def __init__(self, store):
        self.store = store
        self.version = None          # the store version the records were read at
        self.pods: dict = {}         # pod key -> pod_inputs
        self.headless: set = set()   # (namespace, name) in lower case
        self.slices: set = set()     # the keys of the slices read
        self.memo: dict = {}         # dns.records' memo of each Service's own records
        self.read: dict | None = None    # what ``objects`` gave last
        self.moved: set | None = None    # the kinds it read again for it (None: all)

    def objects(self) -> dict:
        """What ``dns.records`` reads, now (and remembered for ``unchanged``): the kinds
        that changed as the records read them viewed again, the others as last time (a
        new pod's address: the pods alone, not 10,000 Services and their slices)."""
        version = self.store.rv
        moved = self._moved() if self.read is not None else None
        objects = {kind: self.read[kind] if moved is not None and kind not in moved
                   else self.store.view(kind) for kind in ('Service', 'Pod', 'Namespace')}
        headless = self.headless if moved is not None and 'Service' not in moved else \
            dns.headless_services(objects['Service'])
        if moved is None or moved & {'Service', 'EndpointSlice'}:
            objects['EndpointSlice'] = self.store.view(
                'EndpointSlice', where=lambda s: dns.reads_slice(headless, s))
            self.slices = {('EndpointSlice', s['metadata'].get('namespace', ''),
                            s['metadata']['name']) for s in objects['EndpointSlice']}
        else:
            objects['EndpointSlice'] = self.read['EndpointSlice']
        if moved is None or 'Pod' in moved:
            self.pods = {('Pod', p['metadata'].get('namespace', ''), p['metadata']['name']):
                         pod_inputs(p) for p in objects['Pod']}
        self.version, self.headless, self.read = version, headless, objects
        self.moved = moved
        return objects

    def files_moved(self) -> tuple[bool, bool]:
        """After ``objects``: whether the records file (``dns.records`` without the
        pods') and whether the pods' file (``dns.pod_records``) may have changed. A
        pod's new address alone, with no headless Service to name it, moves the pods'
        file alone: at 10,000 Services, a few pods' records and not 24,000 names."""
        if self.moved is None:
            return True, True
        pods = 'Pod' in self.moved
        return bool(self.moved - {'Pod'}) or (pods and bool(self.headless)), pods

    def unchanged(self) -> bool:
        """True when nothing the records read changed since ``objects``."""
        now = self.store.rv
        if self.version is None or self._moved(first=True) != set():
            return False
        self.version = now           # the same records as at ``now``
        return True

    def _moved(self, first: bool = False) -> set | None:
        """The kinds of which something the records read changed since ``version``
        (None: the store's log of changes does not reach back that far); with
        ``first``, only the first of them."""
        changes = self.store.changed_with_label(self.version, SERVICE_NAME_LABEL)
        if changes is None:
            return None
        moved = set()
        for key, service in changes:
            kind = key[0]
            if kind in moved:
                continue
            if kind == 'EndpointSlice':
                if key not in self.slices and (service is None or (
                        (key[1] or 'default').lower(), str(service).lower())
                        not in self.headless):
                    continue
            elif kind == 'Pod':
                if self.store.read(key, pod_inputs) == self.pods.get(key, NO_POD):
                    continue
            elif kind not in ('Service', 'Namespace'):
                continue
            moved.add(kind)
            if first:
                break
        return moved
