"""The kubelet's prober: when a container is ready.

Kept apart from the kubelet's loop (topo/kubelet.py) as the kubelet keeps its prober
manager (pkg/kubelet/prober): the loop decides what runs; this module decides, for a
container that runs, whether it may take traffic, the one fact kube-proxy acts on
(a pod is an endpoint only while Ready):

* a readiness probe (``httpGet``, ``tcpSocket``) is sent from the node's own network
  namespace to the pod's address, as kubelet sends it (``run_probe``, on the node's
  executor: topo/netns.py), after ``initialDelaySeconds`` and every ``periodSeconds``;
  ``successThreshold`` passes in a row make the container ready, ``failureThreshold``
  failures in a row unready, and a container that never passed stays unready;
* a container without a readiness probe is ready once its declared ports are bound in
  its network namespace, at the latest ``UNPROBED_READY_AFTER`` after its start;
* an emulated image (topo/images/) is not probed before it says it serves, since Python
  takes a second where the real binary takes milliseconds: at the latest
  ``EMULATED_START_LIMIT`` after its start.

The kubelet also sends a preStop ``httpGet`` hook with ``run_probe``.
"""

from __future__ import annotations

import http.client
import os
import socket

UNPROBED_READY_AFTER = 2.0    # a container without a readiness probe whose declared
                              # ports never open is called ready after this long
EMULATED_START_LIMIT = 15.0   # an emulated image that never says it serves: started


def check_ready(prober, rt, c, now: float):
    """Update a running container's readiness (``c``, a topo/kubelet.py ``Container`` of
    the pod ``rt``, its ``PodRuntime``): its probe's result when one is due (run on
    ``prober``, the node's executor), counted against the probe's thresholds."""
    if not _serving(c, now):
        return                # an emulated image still starting: no probe yet
    probe = c.spec.get('readinessProbe')
    if probe is None:
        if not c.ready:
            c.ready = (now - c.started_mono > UNPROBED_READY_AFTER
                       or _ports_bound(c.proc.pid, c.spec.get('ports') or []))
        return
    if c.probing or now < c.next_probe:
        return
    c.probing = True
    c.next_probe = now + probe.get('periodSeconds', 10)
    future = prober.submit(run_probe, probe, rt.ip, c.spec)

    def done(fut, c=c, probe=probe):
        ok = False
        try:
            ok = fut.result()
        except Exception:
            ok = False
        if ok:
            c.probe_ok, c.probe_fail = c.probe_ok + 1, 0
            if c.probe_ok >= probe.get('successThreshold', 1):
                c.ready = True
        else:
            c.probe_fail, c.probe_ok = c.probe_fail + 1, 0
            if c.probe_fail >= probe.get('failureThreshold', 3) or not c.ready:
                c.ready = False
        c.probing = False
    future.add_done_callback(done)


def _serving(c, now: float) -> bool:
    """Has the container's program started? An emulated image says so once it serves
    (topo/images/__init__.py: Python takes a second where the real binary takes
    milliseconds), at the latest ``EMULATED_START_LIMIT`` after its start; any other
    program at once, as the kubelet counts a container started at its exec."""
    path = c.run.started_file if c.run is not None else None
    if path is None or now - c.started_mono > EMULATED_START_LIMIT:
        return True
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def _ports_bound(pid: int, ports: list) -> bool:
    """Are all the container's declared ports bound inside its network namespace?"""
    want = {(p.get('protocol', 'TCP'), p['containerPort']) for p in ports}
    if not want:
        return True
    have = set()
    for proto, path, listen_state in (('TCP', 'tcp', '0A'), ('TCP', 'tcp6', '0A'),
                                      ('UDP', 'udp', '07'), ('UDP', 'udp6', '07')):
        try:
            with open(f'/proc/{pid}/net/{path}') as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == listen_state:
                        have.add((proto, int(cols[1].rsplit(':', 1)[1], 16)))
        except OSError:
            if not path.endswith('6'):           # (a machine without IPv6 has no tcp6)
                return False
    return want <= have


def _resolve_port(port, spec: dict) -> int:
    if isinstance(port, int):
        return port
    for p in spec.get('ports') or []:
        if p.get('name') == port:
            return p['containerPort']
    raise ValueError(f'no container port named {port!r}')


def run_probe(probe: dict, ip: str, spec: dict) -> bool:
    """One readiness probe, from the node's network namespace, as kubelet sends it."""
    timeout = probe.get('timeoutSeconds', 1)
    if 'httpGet' in probe:
        get = probe['httpGet']
        conn = http.client.HTTPConnection(ip, _resolve_port(get['port'], spec),
                                          timeout=timeout)
        try:
            conn.request('GET', get.get('path', '/'),
                         headers={'User-Agent': 'kube-probe/1.31'})
            return 200 <= conn.getresponse().status < 400
        except OSError:
            return False
        finally:
            conn.close()
    if 'tcpSocket' in probe:
        try:
            with socket.create_connection((ip, _resolve_port(probe['tcpSocket']['port'], spec)),
                                          timeout=timeout):
                return True
        except OSError:
            return False
    return False
