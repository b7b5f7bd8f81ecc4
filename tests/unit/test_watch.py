"""services/watch.py: the loop that follows the store."""

import logging
import threading

from services.watch import follow


class FakeStore:
    """A store whose ``wait`` returns the next version at once."""

    def __init__(self, stop_after: int, stop: threading.Event):
        self.calls = []
        self.stop_after = stop_after
        self.stop = stop

    def wait(self, since: int, timeout: float) -> int:
        self.calls.append((since, timeout))
        if len(self.calls) >= self.stop_after:
            self.stop.set()
        return since + 1


def test_each_change_runs_the_step_until_stopped():
    stop = threading.Event()
    store = FakeStore(3, stop)
    steps = []
    follow(store, stop, lambda: steps.append(1), 'stepping', interval=0.5)
    assert store.calls == [(0, 0.5), (1, 0.5), (2, 0.5)]
    assert len(steps) == 3


def test_a_failing_step_is_logged_and_retried(caplog):
    stop = threading.Event()
    store = FakeStore(2, stop)
    runs = []

    def step():
        runs.append(1)
        raise RuntimeError('boom')
    with caplog.at_level(logging.ERROR, logger='kubelab.watch'):
        follow(store, stop, step, 'writing the records')
    assert len(runs) == 2
    assert [r.getMessage() for r in caplog.records] == ['writing the records failed'] * 2
    assert caplog.records[0].exc_info[0] is RuntimeError


def test_a_stopped_loop_runs_nothing():
    stop = threading.Event()
    stop.set()
    store = FakeStore(1, stop)
    follow(store, stop, lambda: 1 / 0, 'never')
    assert store.calls == []
