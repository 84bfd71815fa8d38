"""Stage attempts of synchronous rounds: a dead attempt's pushes never reach the center."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from elephas.engine.strategies.averaging import SynchronousAveraging
from elephas.parameter.rounds import RoundClosed, RoundState


def _state(windows: int = 3) -> RoundState:
    state = RoundState([np.zeros(2, np.float32)], SynchronousAveraging(), lambda d: d, round_timeout_s=30)
    state.begin_epoch(0, {"0": windows, "1": windows})
    return state


def _push(state: RoundState, worker: str, task: int, value: float, round_index: int = 0) -> int:
    return state.apply(
        [np.full(2, value, np.float32)],
        worker_id=worker,
        attempt_id=f"{task}",
        version_seen=0,
        samples=1,
        round=round_index,
        task_attempt=task,
    )


class _Background:
    """A push that waits for its round in a thread; ``result`` is its version or its error."""

    def __init__(self, state: RoundState, worker: str, task: int, value: float, round_index: int = 0) -> None:
        self.result: object = None
        self.thread = threading.Thread(target=self._run, args=(state, worker, task, value, round_index))
        self.thread.start()

    def _run(self, state: RoundState, worker: str, task: int, value: float, round_index: int) -> None:
        try:
            self.result = _push(state, worker, task, value, round_index)
        except RoundClosed as exc:
            self.result = exc

    def wait(self) -> object:
        self.thread.join(20)
        assert not self.thread.is_alive()
        return self.result


def _wait_for_pushes(state: RoundState, count: int) -> None:
    for _ in range(2000):
        with state._cond:
            if len(state._pushed) >= count:
                return
        time.sleep(0.005)
    raise AssertionError(f"expected {count} waiting pushes")


def _center(state: RoundState) -> list[float]:
    return state.pull()[0][0].tolist()


def test_a_dead_tasks_late_push_does_not_abandon_the_restarted_stage():
    """Partition 0's task dies in round 1; the stage restarts; partition 1's old task, still
    running, pushes round 1 only after the new partition 0 pushed round 0. It is refused and
    leaves no trace, so the new partition 1's push closes round 0 instead of restarting again."""
    state = _state()
    first = _Background(state, "0", 834, 1.0)
    assert _push(state, "1", 835, 3.0) == 1 and first.wait() == 1
    dying = _Background(state, "0", 834, 5.0, round_index=1)
    _wait_for_pushes(state, 1)
    restarted = _Background(state, "0", 836, 2.0)  # the new attempt: back to the epoch's start
    assert isinstance(dying.wait(), RoundClosed)
    _wait_for_pushes(state, 1)
    with pytest.raises(RoundClosed, match="Expected a push for round 0, received round 1"):
        _push(state, "1", 835, 100.0, round_index=1)
    assert _push(state, "1", 837, 4.0) == 1
    assert restarted.wait() == 1
    assert _center(state) == [3.0, 3.0]
    assert {r.attempt_id for r in state.records()} == {"836", "837"}


def test_a_dead_task_replaced_by_a_newer_one_is_refused_from_any_partition():
    state = _state()
    waiting = _Background(state, "0", 834, 1.0)
    _wait_for_pushes(state, 1)
    restarted = _Background(state, "0", 836, 2.0)
    assert isinstance(waiting.wait(), RoundClosed)
    with pytest.raises(RoundClosed, match="earlier task 834"):
        _push(state, "1", 834, 100.0)
    assert _push(state, "1", 837, 4.0) == 1 and restarted.wait() == 1
    assert _center(state) == [3.0, 3.0]


def test_after_the_driver_restarts_the_epoch_every_task_that_pushed_is_refused():
    """A dead task of the abandoned run that pushes round 0 again is not admitted."""
    state = _state()
    waiting = _Background(state, "0", 834, 1.0)
    _wait_for_pushes(state, 1)
    state.restart_epoch()  # the driver runs the epoch again, in a new stage
    assert isinstance(waiting.wait(), RoundClosed)
    with pytest.raises(RoundClosed, match="received one of the earlier task 834"):
        _push(state, "1", 834, 1.0)
    pending = _Background(state, "1", 901, 1.0)
    assert _push(state, "0", 900, 3.0) == 1 and pending.wait() == 1
    assert _center(state) == [2.0, 2.0]


def test_a_newer_attempt_restarts_the_epoch_from_its_first_center():
    state = _state()
    first = _Background(state, "0", 834, 1.0)
    assert _push(state, "1", 835, 3.0) == 1 and first.wait() == 1
    assert _center(state) == [2.0, 2.0]
    waiting = _Background(state, "1", 835, 0.0, round_index=1)
    _wait_for_pushes(state, 1)
    restarted = _Background(state, "1", 837, 6.0)
    assert isinstance(waiting.wait(), RoundClosed)
    assert _push(state, "0", 836, 2.0) == 1 and restarted.wait() == 1
    assert _center(state) == [4.0, 4.0]
