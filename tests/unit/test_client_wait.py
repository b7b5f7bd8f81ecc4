"""``kubelab wait`` and ``apply --wait`` honour the caller's timeout for the whole wait,
the dataplane's part included (issue 20: ``kubelab wait --timeout 600`` gave up after
10 s with "the dataplane is at version 29, the proxies at 28"). A fake API and a fake
clock: the switches catch up only after a given number of (fake) seconds."""

import pytest

from kubelab import client as client_module
from kubelab.client import Client
from services.errors import KubelabError

READY_POD = {'metadata': {'name': 'p'}, 'status': {'phase': 'Running', 'conditions': [
    {'type': 'Ready', 'status': 'True'}]}}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class FakeClient(Client):
    """The API of a lab whose switches carry store version 29 from ``catch_up`` fake
    seconds on, and version 28 before."""

    def __init__(self, clock, catch_up: float):
        self.clock, self.catch_up = clock, catch_up
        self.start = clock.now

    def lab(self):
        return {'nodes': [{}, {}, {}]}

    def list(self, kind, namespace=None):
        return [READY_POD] if kind == 'Pod' else []

    def dataplane(self, until=None, switches=0, timeout=0):
        self.clock.now += 0.5          # each request takes half a second
        version = 29 if self.clock.now - self.start >= self.catch_up else 28
        return {'version': version, 'switches': list(range(6)), 'storeVersion': 29,
                'proxies': {'version': 29, 'pending': []}}


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(client_module.time, 'monotonic', fake.monotonic)
    monkeypatch.setattr(client_module.time, 'sleep', fake.sleep)
    return fake


def test_wait_ready_gives_the_dataplane_the_callers_timeout(clock):
    api = FakeClient(clock, catch_up=45)
    api.wait_ready(timeout=600)
    assert 45 <= clock.now - api.start < 47


def test_wait_applied_gives_the_dataplane_the_callers_timeout(clock):
    api = FakeClient(clock, catch_up=30)
    api.wait_applied([{'kind': 'Service', 'metadata': {'name': 's'}}], timeout=120)
    assert 30 <= clock.now - api.start < 32


def test_wait_ready_still_times_out_at_the_callers_timeout(clock):
    api = FakeClient(clock, catch_up=100)
    with pytest.raises(KubelabError, match='the dataplane is at version 28'):
        api.wait_ready(timeout=20)
    assert 20 <= clock.now - api.start < 22
