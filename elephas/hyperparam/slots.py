"""Long-running slot tasks: one Spark task per slot runs trial after trial, asking the driver for each.

Starting a Spark job per trial costs the JVM about 0.2 CPU-seconds and the slot about 0.1 s before
the trial starts, which is a large share of a trial that trains a small model for a second.
Instead, :class:`SlotTrialRunner` keeps ``slots`` one-task Spark jobs running. Each task
(:class:`SlotTask`) connects to the driver over an authenticated channel
(:mod:`elephas.hyperparam.channel`) and loops: ask for the next trial (its id and JSON-encoded
values, :mod:`elephas.hyperparam.values`), run it, report its loss and status (or its error) with
the next request. The driver's scheduler suggests the next point as soon as a report arrives, just
as it would when a one-task job returned; which trial runs in which slot does not change the points.

The trials' full outcomes (model architecture and weights, the user's other result keys) are
kept in the task and come back as the Spark task's result when the driver tells the slot to stop,
through Spark's own channel; the reported loss and status are what the suggestions use meanwhile.
A slot task whose models reach :data:`SLOT_RESULT_BYTES` returns early and a new one takes over.
A slot task holds its executor core for the whole search, also while it waits for its next trial.

Failures:

* A trial that raises is reported as failed, with its traceback, like any other outcome.
* A slot task that dies (its Python worker crashed) and is rerun by Spark (``spark.task.maxFailures``)
  connects again with a higher attempt number. It is handed again, in order, every trial the dead
  attempt had been given: those already reported are run again only for their full outcomes (their
  reported outcome is not counted a second time), the one that was running is run for the first
  time. Trials are never lost nor counted twice.
* A slot job that fails for good (no retries left, as in ``local[n]``) fails the trial it was
  running as a Spark job failure (``TrialOutcome.job_failed``) like a failed one-task job did; if it
  was running none, the next trial fails that way. The trials it had already reported run once more
  in another slot, for their full outcomes only (if that fails too, they keep their reported loss
  and status without a model, and a warning says so). New slot jobs take over.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from elephas.hyperparam.channel import ChannelClient, ChannelServer, new_secret
from elephas.hyperparam.trial import TrialOutcome
from elephas.hyperparam.values import ValueEncoder, decode

logger = logging.getLogger(__name__)

TrialFn = Callable[[tuple[int, dict[str, Any]]], TrialOutcome]
_REPORTED_KEYS = ("loss", "status", "loss_variance")
SLOT_RESULT_BYTES = 128 * 1024 * 1024
"""A slot task returns (and a new one takes over) once its trials' model weights reach this size,
which bounds the executor's memory and the task result (``spark.driver.maxResultSize``)."""


def outcome_report(outcome: TrialOutcome) -> dict[str, Any]:
    """The JSON report of a trial: what the suggestions need, and the error with its traceback."""
    source = outcome.result or {}
    result = {
        k: source[k]
        for k in _REPORTED_KEYS
        if k in source and (source[k] is None or type(source[k]) in (int, float, str, bool))
    }
    report: dict[str, Any] = {
        "tid": outcome.tid,
        "ok": outcome.ok,
        "duration": outcome.duration,
        "result": result if outcome.ok else None,
    }
    if outcome.error is not None:
        report["error"] = [str(part) for part in outcome.error]
    return report


def outcome_from_report(report: dict[str, Any]) -> TrialOutcome:
    """The :class:`TrialOutcome` of a report (checked field by field: it came over the network).

    Raises:
        ValueError: A malformed report.
    """
    tid, ok, duration = report.get("tid"), report.get("ok"), report.get("duration", 0.0)
    if not isinstance(tid, int) or isinstance(tid, bool) or not isinstance(ok, bool):
        raise ValueError(
            f"Expected a report with an integer 'tid' and a boolean 'ok'. Received: tid={tid!r}, ok={ok!r}."
        )
    if not isinstance(duration, (int, float)):
        raise ValueError(f"Expected a number for 'duration'. Received: {duration!r}.")
    result = report.get("result")
    if ok and not (isinstance(result, dict) and "status" in result):
        raise ValueError(f"Expected the result of a successful trial with a 'status'. Received: {result!r}.")
    error = report.get("error")
    if error is not None and not (
        isinstance(error, list) and len(error) == 3 and all(isinstance(e, str) for e in error)
    ):
        raise ValueError("Expected 'error' as [type, message, traceback].")
    return TrialOutcome(
        tid,
        ok,
        result=dict(result) if ok else None,
        error=tuple(error) if error is not None else None,
        duration=float(duration),
    )


class SlotTask:
    """The function of a slot's one-task Spark job (``mapPartitions``): runs trials until told to stop.

    Args:
        fn: The trial function (:func:`~elephas.hyperparam.trial.make_trial_fn`).
        address: ``(host, port)`` of the driver's channel.
        secret: The per-search channel secret.
        literals: :attr:`~elephas.hyperparam.values.ValueEncoder.pickled`.
        key: This slot job's name, unique within the search.
        result_bytes: Leave after the trials' model weights reach this many bytes (see
            :data:`SLOT_RESULT_BYTES`).
    """

    def __init__(
        self,
        fn: TrialFn,
        address: tuple[str, int],
        secret: bytes,
        literals: list[bytes],
        key: str,
        result_bytes: int = SLOT_RESULT_BYTES,
    ):
        self.fn = fn
        self.address = address
        self.secret = secret
        self.literals = literals
        self.key = key
        self.result_bytes = result_bytes

    def __call__(self, rows: Iterable[Any]) -> Iterator[TrialOutcome]:
        from pyspark import TaskContext

        for _ in rows:  # read the input to its end, or PySpark does not reuse this Python worker
            pass
        context = TaskContext.get()
        attempt = context.attemptNumber() if context is not None else 0
        outcomes: list[TrialOutcome] = []
        kept = 0
        with ChannelClient(self.address, self.secret) as client:
            report = None
            while True:
                leaving = kept >= self.result_bytes
                reply = client.request({"slot": self.key, "attempt": attempt, "done": report, "leaving": leaving})
                if reply.get("stop") or leaving:
                    break
                tid = reply["tid"]
                if not isinstance(tid, int):
                    raise ValueError(f"Expected an integer trial id. Received: {tid!r}.")
                outcome = self.fn((tid, decode(reply["values"], self.literals)))
                outcomes.append(outcome)
                kept += _weight_bytes(outcome)
                report = outcome_report(outcome)
        return iter(outcomes)


def _weight_bytes(outcome: TrialOutcome) -> int:
    weights = (outcome.result or {}).get("model_weights") or []
    return sum(int(getattr(w, "nbytes", 0)) for w in weights)


@dataclass
class _Slot:
    """Driver-side bookkeeping of one slot job."""

    key: str
    attempt: int = -1
    handed: list[int] = field(default_factory=list)  # trials given to any attempt, full outcome not back
    redo: deque[int] = field(default_factory=deque)  # trials to give a new attempt first
    running: int | None = None  # the trial the current attempt is running (not reported yet)


class SlotTrialRunner:
    """Runs the trials in ``slots`` long-running Spark tasks that ask the driver for their next trial.

    Implements the scheduler's ``TrialRunner`` interface: :meth:`submit` queues a trial and returns
    a future resolved by the trial's report (loss, status or error: no model); :meth:`outcomes`
    returns the full outcomes after :meth:`close`.

    Args:
        sc: The SparkContext.
        slots: Slot tasks running at once.
        space: The search space (its options that are not plain JSON are shipped with the jobs).
    """

    def __init__(self, sc: Any, slots: int, space: Any):
        from elephas.hyperparam.values import literal_table

        self.sc = sc
        self.slots = slots
        self.group = f"elephas-hyperparam-{uuid.uuid4().hex[:12]}"
        self.result_bytes = SLOT_RESULT_BYTES
        self._encoder = ValueEncoder(literal_table(space))
        self._secret = new_secret()
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()  # trials not handed to a slot yet
        self._rerun: deque[int] = deque()  # reported trials whose full outcomes died with their task
        self._reruns: dict[int, int] = {}
        self._values: dict[int, Any] = {}
        self._futures: dict[int, Future[TrialOutcome]] = {}
        self._reported: set[int] = set()
        self._final: dict[int, TrialOutcome] = {}
        self._slots: dict[str, _Slot] = {}
        self._live: set[str] = set()
        self._pending_failure: TrialOutcome | None = None
        self._fn: TrialFn | None = None
        self._closing = False
        self._cancelled = False
        self._started = 0
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="elephas-slot")
        advertised, bind = channel_hosts(sc)
        self._server = ChannelServer(self._handle, self._secret, bind, advertised, max_connections=max(8, 2 * slots))

    # ---------------------------------------------------------------- scheduler side

    def submit(self, fn: TrialFn, item: tuple[int, dict[str, Any]]) -> Future[TrialOutcome]:
        """Queue trial ``item = (tid, values)`` for the next free slot.

        Raises:
            UnsendableValueError: A value that is neither JSON-like nor an option of the space.
            ValueError: A different trial function than the earlier trials'.
        """
        tid, values = item
        encoded = self._encoder.encode(values)
        future: Future[TrialOutcome] = Future()
        with self._cond:
            if self._fn is None:
                self._fn = fn
            elif fn is not self._fn:
                raise ValueError("Expected the same trial function for every trial of a search.")
            self._futures[tid] = future
            self._values[tid] = encoded
            if self._pending_failure is not None:
                self._fail(tid, self._pending_failure)
                self._pending_failure = None
            else:
                self._queue.append(tid)
                self._ensure_slots()
            self._cond.notify_all()
        return future

    def cancel(self) -> None:
        """Stop the slot tasks now (an error or Ctrl-C on the driver)."""
        with self._cond:
            self._cancelled = self._closing = True
            self._cond.notify_all()
        self.sc.cancelJobGroup(self.group)

    def close(self) -> None:
        """Tell the slots to stop, wait for their outcomes, stop the channel and join every thread.

        Slots still running trials again for their lost models finish those first.
        """
        try:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
                while self._live:
                    self._cond.wait()
        except BaseException:  # interrupted while waiting: do not leave the tasks running
            self.cancel()
            raise
        finally:
            try:
                self._pool.shutdown(wait=True)
            finally:
                self._server.stop()

    def outcomes(self) -> dict[int, TrialOutcome]:
        """Full outcomes (with models) by trial id, as the slot tasks returned them."""
        with self._cond:
            return dict(self._final)

    @property
    def address(self) -> tuple[str, int]:
        """Where the slot tasks reach the driver."""
        return self._server.address

    def _ensure_slots(self) -> None:
        """Start slot jobs while trials wait and fewer than ``slots`` run (called with the lock)."""
        while (
            not self._cancelled
            and (self._rerun or (self._queue and not self._closing))
            and len(self._live) < self.slots
        ):
            key = f"slot-{self._started}"
            self._started += 1
            self._slots[key] = _Slot(key)
            self._live.add(key)
            task = SlotTask(self._fn, self.address, self._secret, self._encoder.pickled, key, self.result_bytes)
            self._pool.submit(self._run_slot, key, task)

    def _run_slot(self, key: str, task: SlotTask) -> None:
        self.sc.setJobGroup(self.group, f"elephas hyper-parameter trials ({key})")
        try:
            outcomes = self.sc.parallelize([key], 1).mapPartitions(task).collect()
        except Exception as exc:
            self._slot_failed(key, exc)
        else:
            self._slot_returned(key, outcomes)

    def _slot_returned(self, key: str, outcomes: list[TrialOutcome]) -> None:
        with self._cond:
            slot = self._slots[key]
            for outcome in outcomes:
                if outcome.tid in slot.handed:
                    slot.handed.remove(outcome.tid)
                    self._final[outcome.tid] = outcome
                    self._resolve(outcome)
            self._take_back(slot, f"the attempt of {key} that ran it was superseded")
            self._live.discard(key)
            self._ensure_slots()
            self._cond.notify_all()

    def _slot_failed(self, key: str, exc: Exception) -> None:
        from elephas.engine.errors import task_failure

        with self._cond:
            self._live.discard(key)
            self._cond.notify_all()
            if self._cancelled:
                return
            failure = task_failure(exc, "trial")
            text = str(failure or exc)
            first = text.splitlines()[0] if text else ""
            logger.error("Spark job of %s failed: %s", key, first or exc)
            slot = self._slots[key]
            error = TrialOutcome(-1, False, error=(type(exc).__name__, first, text), job_failed=True)
            running = [t for t in slot.handed if t not in self._reported]
            for tid in running:
                slot.handed.remove(tid)
                self._fail(tid, error)
            if not running:  # it failed before running a trial: the next trial takes the failure
                if self._queue:
                    self._fail(self._queue.popleft(), error)
                else:
                    self._pending_failure = error
            self._take_back(slot, f"its models died with {key}")
            self._ensure_slots()

    def _take_back(self, slot: _Slot, why: str) -> None:
        """Hand the slot's trials whose full outcomes did not come back to other slots (with the lock)."""
        for tid in reversed(slot.handed):
            if tid not in self._reported:
                self._queue.appendleft(tid)
                logger.warning("trial %d is run in another slot: %s", tid, why)
            elif self._reruns.get(tid, 0) < 1:
                self._reruns[tid] = self._reruns.get(tid, 0) + 1
                self._rerun.appendleft(tid)
                logger.warning("trial %d is run again for its model (its loss counts once): %s", tid, why)
            else:
                logger.warning("trial %d keeps its reported loss without its model: %s again", tid, why)
        slot.handed.clear()

    def _fail(self, tid: int, failure: TrialOutcome) -> None:
        outcome = TrialOutcome(tid, False, error=failure.error, job_failed=True)
        self._final[tid] = outcome
        self._resolve(outcome)

    def _resolve(self, outcome: TrialOutcome) -> None:
        if outcome.tid in self._reported:
            return
        self._reported.add(outcome.tid)
        future = self._futures.get(outcome.tid)
        if future is not None and not future.done():
            future.set_result(outcome)

    # ---------------------------------------------------------------- channel side

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        key, attempt, report = request.get("slot"), request.get("attempt"), request.get("done")
        with self._cond:
            slot = self._slots.get(key) if isinstance(key, str) else None
            if slot is None or not isinstance(attempt, int) or attempt < slot.attempt:
                logger.warning("trial channel: request from unknown or superseded slot %r (attempt %r)", key, attempt)
                return {"stop": True}
            if attempt > slot.attempt:
                if slot.attempt >= 0:
                    logger.warning("%s was restarted (attempt %d): it runs trials %s again", key, attempt, slot.handed)
                slot.attempt = attempt
                slot.redo = deque(slot.handed)
                slot.running = None
            if report is not None:
                outcome = outcome_from_report(report)
                if outcome.tid != slot.running:
                    raise ValueError(
                        f"Expected a report of trial {slot.running} from {key}. Received: trial {outcome.tid}."
                    )
                slot.running = None
                self._resolve(outcome)  # a trial run again is not counted again
            if request.get("leaving") is True:
                return {"stop": True}
            while True:
                if self._cancelled:
                    return {"stop": True}
                if slot.redo:
                    tid = slot.redo.popleft()
                    break
                if self._rerun or (self._queue and not self._closing):
                    tid = (self._rerun or self._queue).popleft()
                    slot.handed.append(tid)
                    break
                if self._closing:
                    return {"stop": True}
                self._cond.wait()
            slot.running = tid
            return {"tid": tid, "values": self._values[tid]}


def channel_hosts(sc: Any) -> tuple[str, str]:
    """``(advertised, bind)``: the executors reach the driver at ``spark.driver.host`` (127.0.0.1
    without one); the channel listens as the parameter server does
    (:func:`~elephas.utils.netio.default_bind_host`)."""
    from elephas.utils.netio import default_bind_host

    host = sc.getConf().get("spark.driver.host", None) or "127.0.0.1"
    return host, default_bind_host(host, sc.getConf().get("spark.driver.bindAddress", None))
