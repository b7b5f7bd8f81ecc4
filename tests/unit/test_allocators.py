"""ClusterIP and pod IP allocation: ranges, reservations, order, exhaustion."""

import ipaddress
import random

import pytest

from services.allocators import ClusterIPAllocator, PodIPAllocator
from services.errors import AllocationError


def cluster_ips(cidr='10.96.0.0/12', seed=1):
    return ClusterIPAllocator(cidr, rng=random.Random(seed))


# ---------------------------------------------------------------- ClusterIP

def test_system_addresses_are_reserved_from_the_start():
    ips = cluster_ips()
    assert ips.kubernetes_ip == '10.96.0.1'
    assert ips.dns_ip == '10.96.0.10'
    assert ips.is_allocated('10.96.0.1')
    assert ips.is_allocated('10.96.0.10')
    assert not ips.is_allocated('10.96.0.2')
    assert ips.allocated() == []


@pytest.mark.parametrize('ip, words', [
    ('10.96.0.1', 'already allocated'),
    ('10.96.0.10', 'already allocated'),
    ('10.96.0.0', 'not in the valid range. The range of valid IPs is '
                  '10.96.0.0/12'),
    ('10.111.255.255', 'not in the valid range'),
    ('10.112.0.1', 'not in the valid range. The range of valid IPs is '
                   '10.96.0.0/12'),
    ('banana', 'not in the valid range'),
])
def test_reserve_rejects(ip, words):
    with pytest.raises(AllocationError) as info:
        cluster_ips().reserve(ip)
    assert words in str(info.value)
    assert ip in str(info.value)


def test_reserve_then_reserve_again_is_already_allocated():
    ips = cluster_ips()
    assert ips.reserve('10.96.0.20') == '10.96.0.20'
    with pytest.raises(AllocationError, match='already allocated'):
        ips.reserve('10.96.0.20')
    ips.release('10.96.0.20')
    ips.reserve('10.96.0.20')


def test_allocate_prefers_the_upper_band_and_stays_in_range():
    ips = cluster_ips()
    network = ipaddress.IPv4Network('10.96.0.0/12')
    seen = {ips.allocate() for _ in range(200)}
    assert len(seen) == 200
    for ip in seen:
        address = ipaddress.IPv4Address(ip)
        assert address in network
        assert address >= ipaddress.IPv4Address('10.96.1.1')  # static band
        assert address != network.broadcast_address
    assert sorted(seen, key=ipaddress.IPv4Address) == ips.allocated()


def test_allocation_is_random_but_reproducible_with_a_seed():
    first = [cluster_ips(seed=7).allocate() for _ in range(3)]
    again = [cluster_ips(seed=7).allocate() for _ in range(3)]
    other = [cluster_ips(seed=8).allocate() for _ in range(3)]
    assert first == again
    assert first != other


def test_small_range_is_exhausted_with_the_range_in_the_message():
    ips = cluster_ips('10.96.0.0/28')        # 14 hosts, 2 reserved
    got = {ips.allocate() for _ in range(12)}
    assert got == {f'10.96.0.{i}' for i in range(2, 15)} - {'10.96.0.10'}
    with pytest.raises(AllocationError) as info:
        ips.allocate()
    assert '10.96.0.0/28' in str(info.value)
    ips.release('10.96.0.7')
    assert ips.allocate() == '10.96.0.7'


def test_release_ignores_system_and_unknown_addresses():
    ips = cluster_ips()
    ips.release('10.96.0.1')
    ips.release('None')
    ips.release('10.96.0.99')
    assert ips.is_allocated('10.96.0.1')


def test_copy_is_independent_for_all_or_nothing_applies():
    ips = cluster_ips()
    ips.reserve('10.96.0.20')
    trial = ips.copy()
    trial.reserve('10.96.0.21')
    trial.release('10.96.0.20')
    assert ips.is_allocated('10.96.0.20')
    assert not ips.is_allocated('10.96.0.21')
    assert trial.allocated() == ['10.96.0.21']


def test_snapshot_and_restore():
    ips = cluster_ips()
    saved = ips.snapshot()
    ips.reserve('10.96.0.20')
    ips.restore(saved)
    assert not ips.is_allocated('10.96.0.20')
    assert ips.is_allocated('10.96.0.10')


# ------------------------------------------------------------------ pod IPs

def test_pod_ips_start_after_the_gateway():
    pods = PodIPAllocator('192.168.1.0/24')
    assert pods.gateway == '192.168.1.1'
    assert [pods.allocate() for _ in range(3)] == [
        '192.168.1.2', '192.168.1.3', '192.168.1.4']


def test_a_replaced_pod_gets_a_new_ip_round_robin():
    pods = PodIPAllocator('192.168.1.0/24')
    first = pods.allocate()
    pods.release(first)
    assert pods.allocate() == '192.168.1.3'
    assert not pods.is_allocated(first)


def test_round_robin_wraps_around_and_skips_used_addresses():
    pods = PodIPAllocator('192.168.1.0/29')   # hosts .2-.6
    got = [pods.allocate() for _ in range(5)]
    assert got == [f'192.168.1.{i}' for i in range(2, 7)]
    pods.release('192.168.1.4')
    pods.release('192.168.1.2')
    assert pods.allocate() == '192.168.1.2'   # wrapped, first free
    assert pods.allocate() == '192.168.1.4'


def test_pod_range_exhaustion_names_the_cidr():
    pods = PodIPAllocator('192.168.1.0/30')   # only .2
    assert pods.allocate() == '192.168.1.2'
    with pytest.raises(AllocationError) as info:
        pods.allocate()
    assert '192.168.1.0/30' in str(info.value)


@pytest.mark.parametrize('ip', ['192.168.1.0', '192.168.1.1',
                                '192.168.1.255', '192.168.2.5', 'x'])
def test_pod_reserve_outside_the_range(ip):
    with pytest.raises(AllocationError) as info:
        PodIPAllocator('192.168.1.0/24').reserve(ip)
    assert '192.168.1.2-192.168.1.254' in str(info.value)


def test_pod_reserve_moves_the_round_robin_position():
    pods = PodIPAllocator('192.168.1.0/24')
    pods.reserve('192.168.1.50')
    with pytest.raises(AllocationError, match='already allocated'):
        pods.reserve('192.168.1.50')
    assert pods.allocate() == '192.168.1.51'


def test_pod_copy_and_snapshot():
    pods = PodIPAllocator('192.168.1.0/24')
    pods.allocate()
    trial = pods.copy()
    trial.allocate()
    assert pods.allocated() == ['192.168.1.2']
    saved = pods.snapshot()
    pods.allocate()
    pods.restore(saved)
    assert pods.allocate() == '192.168.1.3'
