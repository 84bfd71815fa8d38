"""Synchronous rounds on the parameter server: a round closes when every participant has pushed.

Synchronous training runs one Spark barrier stage per epoch. Each task trains its partition in
windows of N batches; after window ``r`` it pushes ``Σ samples·Δ`` (its delta weighted by its
sample count) for round ``r`` and waits. :class:`RoundState` adds the pushes of a round up (in
float64, so the result does not depend on the order they arrive in), and when the last
participant of the round has pushed it turns the sum into one step of the center
(``C ← C + combine(Σ nᵢΔᵢ / Σ nᵢ)``, ``combine`` being the synchronous rule's server step), bumps
the version and wakes every waiting push; each is answered with the new center.

Participants: the driver tells the state, per epoch, how many windows each partition has. Round
``r`` waits for exactly the partitions with more than ``r`` windows, so a partition that runs out
of rows early simply stops pushing (nothing waits for it, nothing divides by zero), and a round
of only empty partitions never happens.

Stage attempts: Spark restarts a barrier stage as a whole when one task fails. Every push carries
its task's ``taskAttemptId`` (unique and increasing: a restarted stage's tasks have larger ids than
every task of the attempt before). The first push of a partition from a task with a larger id
than the one registered for that partition starts a new attempt of the epoch: the center, the
server step's state and the round counter go back to what they were when the epoch began, pushes
still waiting from the dead attempt are answered 409, and later pushes of it (smaller ids) are
refused. Nothing of a dead attempt survives in the center.

A task of the dead attempt that had not pushed yet cannot be told from a task of the new one by
its id alone (PySpark does not expose the stage attempt number, and asking every task for its id
would cost a barrier call per stage). Two rules keep it out: a push is registered only once it
is admitted to the current round, so the dead task's late push of a later round is refused
without leaving a trace (the new attempt starts at round 0); and every id up to the largest one
known to be dead (the id a newer task replaced, or any id of an attempt the driver abandoned)
is refused for the rest of the epoch, from whichever partition it comes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from elephas.parameter.state import ServerState, UpdateRejected, WindowRecord

logger = logging.getLogger(__name__)

Step = Callable[[list[np.ndarray]], list[np.ndarray]]
"""Turns the sample-weighted mean delta of a round into the step added to the center."""


class RoundClosed(UpdateRejected):
    """A push that can no longer take part in its round (stale attempt, reset, shutdown)."""

    def __init__(self, message: str, status: int = 409, reason: str = "stale_round") -> None:
        super().__init__(message, status=status, reason=reason)


class RoundState(ServerState):
    """Server state of synchronous rounds (see the module docstring).

    Args:
        weights: Initial center weights.
        strategy: The synchronous strategy (its ``server_apply`` adds the step to the center).
        step: The server step: mean delta → what is added to the center; it may keep state
            (momentum) and must offer ``state()``/``restore(state)`` for epoch restarts.
        round_timeout_s: Longest a push waits for its round to close.
        max_records: Window records kept at most.

    Example:
        >>> import numpy as np
        >>> from elephas.engine.strategies.averaging import SynchronousAveraging
        >>> state = RoundState([np.zeros(2, np.float32)], SynchronousAveraging(), lambda d: d)
        >>> state.begin_epoch(0, {"0": 1})
        >>> state.apply([np.full(2, 4.0, np.float32)], worker_id="0", attempt_id="a",
        ...             version_seen=0, samples=2, round=0, task_attempt=7)
        1
        >>> state.pull()[0][0].tolist()
        [2.0, 2.0]
    """

    def __init__(
        self,
        weights: Sequence[np.ndarray],
        strategy: Any,
        step: Any,
        round_timeout_s: float = 600.0,
        max_records: int = 1_000_000,
    ) -> None:
        super().__init__(weights, strategy, max_records=max_records)
        self.step = step
        self.round_timeout_s = float(round_timeout_s)
        self._cond = threading.Condition(self._apply_lock)
        self._epoch = -1
        self._windows: dict[str, int] = {}
        self._tasks: dict[str, int] = {}
        self._floor = 0  # task ids below it belong to dead attempts of the epoch
        self._round = 0
        self._pushed: set[str] = set()
        self._sum: list[np.ndarray] | None = None
        self._samples = 0
        self._pending: list[WindowRecord] = []
        self._start: tuple[list[np.ndarray], int, Any] | None = None
        self._stopped = False
        self._error: str | None = None
        self._generation = 0
        self.rounds_closed = 0

    # ----- driver side ----------------------------------------------------------------------
    def begin_epoch(self, epoch: int, windows: dict[str, int], center: Sequence[np.ndarray] | None = None) -> None:
        """Start an epoch: ``windows`` maps each partition (worker id) to its window count.

        ``center``: the weights the epoch starts from when they are not the server's center (a
        callback such as ``BackupAndRestore`` set the driver model's weights); they become a new
        version of the center.
        """
        with self._cond:
            if center is not None and any(not np.array_equal(c, n) for c, n in zip(self._center, center)):
                self._center = self._publish(
                    [np.asarray(n, dtype=c.dtype) for c, n in zip(self._center, center)], None, self._version + 1
                )
                self._version += 1
            center, version = [w.copy() for w in self._center], self._version
            self._epoch = int(epoch)
            self._windows = {str(k): int(v) for k, v in windows.items() if int(v) > 0}
            self._start = (center, version, _state_of(self.step))
            self._tasks = {}
            self._floor = 0
            self._error = None
            self._reset_round(0)

    def stop(self) -> None:
        """Wake every waiting push with a refusal (the fit is over or failed)."""
        with self._cond:
            self._stopped = True
            self._generation += 1
            self._cond.notify_all()

    def participants(self, round_index: int) -> set[str]:
        """The partitions that push in round ``round_index`` of the current epoch."""
        return {w for w, n in self._windows.items() if n > round_index}

    # ----- pushes -----------------------------------------------------------------------------
    def apply(
        self,
        update: Sequence[np.ndarray],
        *,
        worker_id: str,
        attempt_id: str,
        version_seen: int,
        samples: int = 0,
        metrics: dict[str, float] | None = None,
        epoch: int = 0,
        round: int | None = None,
        task_attempt: int = 0,
    ) -> int:  # noqa: A002
        """Add one task's ``Σ samples·Δ`` to its round and wait until the round closes.

        Args:
            update: The task's delta multiplied by ``samples``.
            worker_id: The partition index.
            attempt_id: The Spark task attempt.
            version_seen: Unused by rounds (the round index says where the task is).
            samples: Samples the task trained in this window.
            metrics: The window's loss and metrics (plain means).
            epoch: The epoch the push belongs to.
            round: The round (window index) within the epoch.
            task_attempt: The Spark ``taskAttemptId`` of the pushing task.

        Returns:
            The version after the round closed.

        Raises:
            UpdateRejected: For an invalid update or one that does not belong to the current
                round (status 409); nothing is added then.
        """
        worker_id = str(worker_id)
        try:
            self.check_update(update)
            if round is None or int(round) < 0:
                raise UpdateRejected(
                    f"Expected a round index with a synchronous push, received {round!r}.", reason="metadata"
                )
            if int(samples) < 0:
                raise UpdateRejected(f"Expected samples >= 0, received {samples}.", reason="metadata")
        except UpdateRejected as exc:
            self.count_refused(exc.reason, worker_id)
            raise
        round_index, task_attempt = int(round), int(task_attempt)
        with self._cond:
            try:
                self._admit(worker_id, int(epoch), round_index, task_attempt)
            except UpdateRejected as exc:
                self._refuse(exc.reason, worker_id)
                raise
            self._add(update, int(samples))
            self._pending.append(
                WindowRecord(
                    worker_id=worker_id,
                    attempt_id=str(attempt_id),
                    epoch=int(epoch),
                    samples=int(samples),
                    metrics={k: float(v) for k, v in (metrics or {}).items()},
                    timestamp=time.time(),
                    version=self._version + 1,
                    staleness=0,
                )
            )
            self._pushed.add(worker_id)
            if self._pushed >= self.participants(self._round):
                self._close_round()
                return self._version
            generation = self._generation
            deadline = time.monotonic() + self.round_timeout_s
            while self._generation == generation:
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(self.participants(self._round) - self._pushed, key=_order)
                    raise RoundClosed(
                        f"Expected every partition of round {round_index} to push within "
                        f"{self.round_timeout_s:.0f}s, still waiting for {missing}.",
                        status=504,
                        reason="round_timeout",
                    )
                self._cond.wait(left)
            if self._error is not None:
                raise RoundClosed(self._error, status=422, reason="nonfinite")
            if self._stopped or self._tasks.get(worker_id) != task_attempt or self._epoch != int(epoch):
                raise RoundClosed(
                    "The round was abandoned (the stage was restarted or the fit ended) before it closed."
                )
            return self._version

    def _admit(self, worker_id: str, epoch: int, round_index: int, task_attempt: int) -> None:
        """Check that a push belongs to the current round; start a newer attempt of the epoch."""
        if self._stopped:
            raise RoundClosed("Expected a running fit, received a push after it ended.", status=410)
        if epoch != self._epoch:
            raise RoundClosed(f"Expected a push of epoch {self._epoch}, received epoch {epoch}.")
        if worker_id not in self._windows:
            raise RoundClosed(
                f"Expected a push from one of the partitions {sorted(self._windows, key=_order)},"
                f" received one from {worker_id!r}.",
                status=400,
                reason="metadata",
            )
        known = self._tasks.get(worker_id)
        if task_attempt < self._floor or (known is not None and task_attempt < known):
            raise RoundClosed(
                f"Expected a push of task {max(known or 0, self._floor)} or later for partition {worker_id}, "
                f"received one of the earlier task {task_attempt} (a restarted stage's dead attempt)."
            )
        if known is not None and task_attempt > known:
            logger.info(
                "epoch %d: partition %s runs in a new task (%d, was %d); the stage was restarted, so "
                "the epoch restarts from its first center.",
                epoch + 1,
                worker_id,
                task_attempt,
                known,
            )
            self._restart_epoch(dead=known)
        if self._error is not None:
            raise RoundClosed(self._error, status=422, reason="nonfinite")
        if round_index != self._round:
            raise RoundClosed(f"Expected a push for round {self._round}, received round {round_index}.")
        if worker_id in self._pushed:
            raise RoundClosed(
                f"Expected one push per partition and round, received a second push "
                f"from partition {worker_id} for round {round_index}."
            )
        self._tasks[worker_id] = task_attempt  # registered only once admitted to the round

    def restart_epoch(self) -> None:
        """Go back to the state the current epoch began with (the driver runs it again).

        Every task that pushed so far is dead from now on: the driver's next run is a new
        stage, whose tasks have larger ids.
        """
        with self._cond:
            self._restart_epoch(dead=max(self._tasks.values(), default=None))

    def _restart_epoch(self, dead: int | None) -> None:
        """Restore the epoch's start; task ids up to ``dead`` (known dead) stay refused."""
        if dead is not None:
            self._floor = max(self._floor, dead + 1)
        assert self._start is not None
        center, version, step_state = self._start
        if self._version != version:
            self._center = self._publish([c.copy() for c in center], None, version)
            self._version = version
        _restore(self.step, step_state)
        with self._meta_lock:  # the abandoned attempt's windows leave the records and the history
            for record in self._records:
                if record.epoch == self._epoch:
                    self._failed_attempts.add(record.attempt_id)
        self._tasks = {}
        self._error = None
        self._reset_round(0)

    def _reset_round(self, round_index: int) -> None:
        self._round = round_index
        self._pushed = set()
        self._sum = None
        self._samples = 0
        self._pending = []
        self._generation += 1
        self._cond.notify_all()

    def _add(self, update: Sequence[np.ndarray], samples: int) -> None:
        if self._sum is None:
            self._sum = [np.zeros(u.shape, np.float64) for u in update]
        for s, u in zip(self._sum, update):
            np.add(s, u, out=s)
        self._samples += samples

    def _close_round(self) -> None:
        """Fold the round's sum into the center, record its windows and wake its pushes."""
        assert self._sum is not None
        if self._samples > 0:
            mean = [
                m.astype(dtype) for m, (_, dtype) in zip(self.strategy.average(self._sum, self._samples), self.spec)
            ]
            step = [np.asarray(s) for s in self.step(mean)]
            try:  # refuses a step that is not finite or makes the center overflow
                self._center = self._publish(self._center, step, self._version + 1)
            except UpdateRejected as exc:
                self._refuse(exc.reason, None)
                self._error = (
                    f"Expected a finite center after round {self._round + 1} of epoch {self._epoch + 1}, "
                    f"received NaN or infinity ({exc}); the center was left as it was."
                )
                self._generation += 1
                self._cond.notify_all()
                raise RoundClosed(self._error, status=422, reason=exc.reason) from None
        else:
            self._center = self._publish(self._center, None, self._version + 1)
        self._version += 1
        self.rounds_closed += 1
        with self._meta_lock:
            for record in self._pending:
                self._records.append(record)
                stats = self._workers[record.worker_id]
                stats.updates += 1
                stats.samples += record.samples
                stats.attempts.add(record.attempt_id)
                self._attempt_updates[record.attempt_id] += 1
        self._reset_round(self._round + 1)

    def _refuse(self, reason: str, worker_id: str | None) -> None:
        with self._meta_lock:
            self._refused[reason] += 1
            if worker_id is not None:
                self._workers[worker_id].refused += 1


def _order(worker_id: str) -> tuple[int, str]:
    return (int(worker_id), "") if worker_id.isdigit() else (1 << 30, worker_id)


def _state_of(step: Any) -> Any:
    getter = getattr(step, "state", None)
    return getter() if callable(getter) else None


def _restore(step: Any, state: Any) -> None:
    restore = getattr(step, "restore", None)
    if callable(restore):
        restore(state)
