"""ClusterIP, pod IP and NodePort allocation: ranges, reservations, order,
exhaustion."""

import ipaddress
import random

import pytest

from services.allocation.allocators import (
    ClusterIPAllocator, NodePortAllocator, PodIPAllocator)
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


def test_the_cluster_dns_address_can_be_asked_for_once():
    ips = cluster_ips()
    assert ips.reserve('10.96.0.10') == '10.96.0.10'
    assert ips.allocated() == ['10.96.0.10']
    with pytest.raises(AllocationError, match='already allocated'):
        ips.copy().reserve('10.96.0.10')
    ips.release('10.96.0.10')
    assert ips.is_allocated('10.96.0.10') and ips.allocated() == []
    assert ips.reserve('10.96.0.10') == '10.96.0.10'


@pytest.mark.parametrize('ip, words', [
    ('10.96.0.1', 'already allocated'),
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


def test_pod_copy_is_independent():
    pods = PodIPAllocator('192.168.1.0/24')
    pods.allocate()
    trial = pods.copy()
    trial.allocate()
    assert pods.allocated() == ['192.168.1.2']
    assert trial.allocated() == ['192.168.1.2', '192.168.1.3']


# ---------------------------------------------------------------- NodePorts

def node_ports(first=30000, last=32767, seed=1):
    return NodePortAllocator(first, last, rng=random.Random(seed))


@pytest.mark.parametrize('first, last, static', [
    (30000, 32767, 86),       # 2768 ports // 32
    (30000, 30099, 16),       # at least 16
    (20000, 39999, 128),      # at most 128
    (30000, 30016, 16),       # 17 ports: 16 static, 1 dynamic
    (30000, 30015, 0),        # no larger than the static band: all dynamic
    (30000, 30000, 0),
])
def test_static_band_size(first, last, static):
    assert node_ports(first, last).static_size == static


def test_allocate_stays_in_the_upper_band_of_the_range():
    ports = node_ports()
    seen = {ports.allocate() for _ in range(500)}
    assert len(seen) == 500
    assert all(30086 <= port <= 32767 for port in seen)
    assert sorted(seen) == ports.allocated()


def test_the_static_band_is_used_only_when_the_upper_band_is_full():
    ports = node_ports(30000, 30031)                 # 16 static, 16 dynamic
    upper = {ports.allocate() for _ in range(16)}
    assert upper == set(range(30016, 30032))
    lower = {ports.allocate() for _ in range(16)}
    assert lower == set(range(30000, 30016))
    with pytest.raises(AllocationError) as info:
        ports.allocate()
    assert str(info.value) == ('range is full: every port of the NodePort '
                               'range 30000-30031 is allocated')


def test_a_full_upper_band_with_requested_ports_still_leaves_the_rest():
    ports = node_ports(30000, 30031)
    for port in range(30016, 30032):
        ports.reserve(port)
    ports.reserve(30003)
    got = {ports.allocate() for _ in range(15)}
    assert got == set(range(30000, 30016)) - {30003}


def test_node_port_allocation_is_random_but_reproducible_with_a_seed():
    first = [node_ports(seed=7).allocate() for _ in range(3)]
    assert first == [node_ports(seed=7).allocate() for _ in range(3)]
    assert first != [node_ports(seed=8).allocate() for _ in range(3)]


@pytest.mark.parametrize('port', [29999, 32768, 40000, 80, 0, -1, True,
                                  '30080', None])
def test_reserve_outside_the_range_names_the_range(port):
    with pytest.raises(AllocationError) as info:
        node_ports().reserve(port)
    assert str(info.value) == ('provided port is not in the valid range. '
                               'The range of valid ports is 30000-32767')


def test_the_message_carries_the_configured_range():
    with pytest.raises(AllocationError) as info:
        node_ports(31000, 31999).reserve(30080)
    assert str(info.value).endswith('The range of valid ports is 31000-31999')


@pytest.mark.parametrize('port', [30000, 30085, 30086, 32767])
def test_reserve_anywhere_in_the_range(port):
    ports = node_ports()
    assert ports.reserve(port) == port
    assert ports.is_allocated(port)


def test_a_port_is_reserved_once_and_can_be_taken_again_after_release():
    ports = node_ports()
    ports.reserve(30080)
    with pytest.raises(AllocationError) as info:
        ports.reserve(30080)
    assert str(info.value) == 'provided port is already allocated'
    ports.release(30080)
    assert not ports.is_allocated(30080)
    assert ports.reserve(30080) == 30080


def test_an_allocated_port_cannot_be_reserved_and_is_free_after_release():
    ports = node_ports(30000, 30016)                 # one dynamic port
    assert ports.allocate() == 30016
    with pytest.raises(AllocationError, match='already allocated'):
        ports.reserve(30016)
    ports.release(30016)
    assert ports.allocate() == 30016


def test_release_of_a_free_or_foreign_port_is_a_no_op():
    ports = node_ports()
    ports.release(30080)
    ports.release(80)
    assert ports.allocated() == []


def test_node_port_copy_is_independent():
    ports = node_ports()
    ports.reserve(30080)
    trial = ports.copy()
    trial.reserve(30081)
    trial.release(30080)
    assert ports.allocated() == [30080]
    assert trial.allocated() == [30081]
    assert (trial.first, trial.last, trial.static_size) == (30000, 32767, 86)
