"""v1 Endpoints, derived read-only from the EndpointSlices.

Kubernetes keeps a Service's endpoints twice: the old ``v1`` Endpoints object (one per
Service, every address in it) and, since v1.21 (GA), ``discovery.k8s.io/v1``
EndpointSlices, which replaced it for everything that reads endpoints: kube-proxy
(v1.19+), CoreDNS, Ingress controllers. v1.31 still serves Endpoints (its controller
writes them for Services with a selector); v1.33 deprecates the API.

The lab's store keeps only the slices, which is what its kube-proxy, DNS and proxies
read. ``endpoints_for`` writes the Endpoints object a v1.31 API server would serve for a
Service, from its slices, for ``kubelab get endpoints``; it is never stored and cannot
be applied. The rules are the Endpoints controller's:

* only a Service with a selector that is not ExternalName has one (a Service without
  selector has the Endpoints its user writes; in the lab the user writes slices);
* an endpoint that is ready goes to ``addresses``, one that is not ready and not
  terminating to ``notReadyAddresses``, a terminating one nowhere (unless the Service
  publishes not-ready addresses, when the slice already calls it ready);
* endpoints with the same ports form one subset; ``subsets`` is absent when empty.
"""

from services.controllers.endpointslices import SERVICE_NAME_LABEL


def endpoints_for(service: dict, slices: list[dict]) -> dict | None:
    """The v1 Endpoints of ``service`` from its EndpointSlices; None: it has none."""
    meta, spec = service['metadata'], service.get('spec') or {}
    if not spec.get('selector') or spec.get('type') == 'ExternalName':
        return None
    ns = meta.get('namespace', 'default')
    subsets: dict[tuple, dict] = {}
    for eps in slices:
        emeta = eps.get('metadata') or {}
        if emeta.get('namespace', 'default') != ns or \
                (emeta.get('labels') or {}).get(SERVICE_NAME_LABEL) != meta['name']:
            continue
        ports = tuple(sorted((p.get('name') or '', p.get('port'), p.get('protocol', 'TCP'))
                             for p in eps.get('ports') or [] if p.get('port') is not None))
        if not ports:
            continue
        subset = subsets.setdefault(ports, {'addresses': [], 'notReadyAddresses': []})
        for endpoint in eps.get('endpoints') or []:
            cond = endpoint.get('conditions') or {}
            if cond.get('ready', True):
                into = 'addresses'
            elif not cond.get('terminating', False):
                into = 'notReadyAddresses'
            else:
                continue
            for ip in endpoint.get('addresses') or []:
                subset[into].append(_address(ip, endpoint))
    out = []
    for ports, subset in sorted(subsets.items()):
        entry = {key: sorted(value, key=lambda a: a['ip'])
                 for key, value in subset.items() if value}
        if not entry:
            continue
        entry['ports'] = [dict({'name': name} if name else {}, port=port, protocol=proto)
                          for name, port, proto in ports]
        out.append(entry)
    obj = {'apiVersion': 'v1', 'kind': 'Endpoints',
           'metadata': {'name': meta['name'], 'namespace': ns,
                        'labels': dict(meta.get('labels') or {}),
                        'creationTimestamp': meta.get('creationTimestamp')}}
    if not obj['metadata']['labels']:
        del obj['metadata']['labels']
    if out:
        obj['subsets'] = out
    return obj


def _address(ip: str, endpoint: dict) -> dict:
    address = {'ip': ip}
    if endpoint.get('nodeName'):
        address['nodeName'] = endpoint['nodeName']
    if endpoint.get('targetRef'):
        address['targetRef'] = dict(endpoint['targetRef'])
    return address
