"""The kubelet's restart back-off (topo/kubelet.py ``restart_delay``), as kubelet's: the
first exit restarts at once, then 10 s, 20 s, 40 s... capped at 5 min, and a container
that ran 10 min since its last restart starts over."""

from topo.kubelet import BACKOFF, MAX_BACKOFF, restart_delay


def _exits(times):
    """The delays of a container that exits at each of ``times`` (seconds after its
    first start), restarted after each delay."""
    backoff = backoff_at = 0.0
    delays = []
    for t in times:
        delay, backoff = restart_delay(backoff, backoff_at, t)
        backoff_at = t + delay
        delays.append(delay)
    return delays


def test_the_first_exit_restarts_at_once_then_the_back_off_doubles_to_its_cap():
    t, times = 0.0, []
    for delay in [0, 10, 20, 40, 80, 160, 300, 300]:
        t += 1                       # it runs 1 s, exits, waits its delay
        times.append(t)
        t += delay
    assert _exits(times) == [0, 10, 20, 40, 80, 160, 300, 300]
    assert BACKOFF == 10 and MAX_BACKOFF == 300


def test_a_container_that_ran_ten_minutes_starts_over():
    # Exits at 1 s (restarted at once) and at 2 s (restarted at 12 s), then runs just
    # over, or just under, ten minutes.
    assert _exits([1, 2, 12 + 601]) == [0, 10, 0]
    assert _exits([1, 2, 12 + 599]) == [0, 10, 20]
