"""Keep every trial slot busy while a seeded search stays reproducible.

Trials start one at a time as soon as a slot frees up (on Spark, in long-running slot tasks,
:mod:`elephas.hyperparam.slots`); there are no rounds that wait for their slowest trial. What
makes a seeded run reproducible is the history each suggestion sees: with ``lag = num_workers``
slots, trial ``i`` is suggested from

* trials ``0 .. i - lag`` with their outcomes (loss or failure), and
* trials ``i - lag + 1 .. i - 1`` as pending (their points are known, their outcomes are not),

whatever actually finished first, and with the ``i``-th draw of ``np.random.default_rng(seed)`` as
the algorithm's seed. When a slot frees and trial ``i - lag`` is still running, trial ``i`` waits
for it (the only idle time the scheme allows). Algorithms whose next point does not depend on past
losses are not made to wait: random search never is, and TPE is not during its
``n_startup_jobs`` random start-up trials (it then calls random search itself, on the same seed).
The points and their order are the same for every run with the same seed and ``num_workers``,
in-process (``sc=None``) or on Spark.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from hyperopt import Trials, rand, tpe
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR

from elephas.hyperparam.trial import TrialCall, TrialOutcome

logger = logging.getLogger(__name__)

TrialFn = Callable[[tuple[int, dict[str, Any]]], TrialOutcome]


def history_free(suggest: Callable[..., Any], n_previous: int) -> bool:
    """Whether ``suggest``'s next point is known not to depend on the losses of earlier trials.

    Args:
        suggest: A hyperopt suggest function (or a ``functools.partial`` of one).
        n_previous: Trials suggested before this one (an upper bound on the history it would see).

    Returns:
        ``True`` for random search, and for TPE while fewer than ``n_startup_jobs`` trials came
        before (TPE then draws at random); ``False`` otherwise (unknown algorithms included).

    Example:
        >>> from hyperopt import tpe
        >>> history_free(tpe.suggest, 5), history_free(tpe.suggest, 20)
        (True, False)
    """
    fn, keywords = suggest, {}
    while isinstance(fn, functools.partial):
        if fn.args:
            return False
        keywords = {**fn.keywords, **keywords}
        fn = fn.func
    if fn is rand.suggest:
        return True
    if fn is tpe.suggest:
        n_startup = keywords.get("n_startup_jobs", _tpe_startup_default())
        return n_previous < n_startup
    return False


@functools.lru_cache(maxsize=1)
def _tpe_startup_default() -> int:
    return int(inspect.signature(tpe.suggest).parameters["n_startup_jobs"].default)


class ReproducibleAlgo:
    """A hyperopt ``algo`` that suggests trial ``i`` from the history described in this module's docstring.

    ``hyperopt.fmin`` calls it once per trial, in trial id order, with the trials it drives (a
    :class:`~elephas.hyperparam.runner_trials.RunnerTrials`) and a fresh draw of its ``rstate`` as
    the seed; with ``rstate=np.random.default_rng(seed)`` those draws are the per-trial seeds of
    the scheme. Before suggesting trial ``i`` it asks the trials to wait until a slot is free and
    trials ``0 .. i - lag`` have finished (:meth:`~elephas.hyperparam.runner_trials.RunnerTrials.wait_for_turn`),
    then suggests from its own history, in which trials ``i - lag + 1 .. i - 1`` are pending
    whatever actually finished first.

    Args:
        suggest: The hyperopt suggest function.
        lag: Trials running at once (``num_workers``).
    """

    def __init__(self, suggest: Callable[..., Any], lag: int):
        self.suggest_fn = suggest
        self.lag = lag
        self.history = Trials()
        self._docs: dict[int, dict[str, Any]] = {}
        self._revealed = 0
        self._next = 0

    def required(self, tid: int) -> int:
        """How many of the first trials must have finished before trial ``tid`` is suggested."""
        if history_free(self.suggest_fn, tid):
            return 0
        return max(0, tid - self.lag + 1)

    def __call__(self, new_ids: list[int], domain: Any, trials: Any, seed: int) -> list[dict[str, Any]]:
        """The hyperopt trial document of trial ``new_ids[0]`` (``[]``: stop the search).

        Args:
            new_ids: One trial id, the next in order (``fmin(..., max_queue_len=1)``).
            domain: fmin's ``Domain`` of the search space.
            trials: The trials fmin drives; they must offer ``wait_for_turn``.
            seed: This trial's seed for the algorithm.

        Raises:
            ValueError: More than one id, or ids out of order.
            TypeError: ``trials`` that cannot wait for a trial's turn.
        """
        if len(new_ids) != 1 or new_ids[0] != self._next:
            raise ValueError(
                f"Expected one trial id at a time, in order: [{self._next}]. Received: new_ids={list(new_ids)}."
            )
        wait_for_turn = getattr(trials, "wait_for_turn", None)
        if wait_for_turn is None:
            raise TypeError(
                "Expected trials that run their trials in the background (RunnerTrials). "
                f"Received: {type(trials).__name__}."
            )
        tid = new_ids[0]
        finished = wait_for_turn(self.required(tid))
        if finished is None:
            return []
        for done in range(self._revealed, self.required(tid)):
            self._reveal(done, finished[done])
        self._revealed = max(self._revealed, self.required(tid))
        self.history.new_trial_ids(1)
        self.history.refresh()
        docs = self.suggest_fn([tid], domain, self.history, seed)
        self._next += 1
        if not docs:
            return []
        if len(docs) != 1 or docs[0]["tid"] != tid:
            raise RuntimeError(f"The search algorithm returned {len(docs)} trials for trial id {tid}; expected one.")
        self.history.insert_trial_docs(docs)
        self.history.refresh()
        self._docs[tid] = next(t for t in self.history.trials if t["tid"] == tid)
        return [copy.deepcopy(docs[0])]

    def _reveal(self, tid: int, outcome: TrialOutcome) -> None:
        doc = self._docs[tid]
        if outcome.ok:
            result = outcome.result or {}
            doc["state"] = JOB_STATE_DONE
            doc["result"] = {k: result[k] for k in ("loss", "status", "loss_variance") if k in result}
        else:
            doc["state"] = JOB_STATE_ERROR


class TrialRunner(Protocol):
    """Starts one trial and returns a future of its outcome.

    The future may carry only what the suggestions need (loss, status, error); :meth:`outcomes`
    then returns the full outcomes (with the models) after :meth:`close`.
    """

    def submit(self, fn: TrialFn, item: tuple[int, dict[str, Any]]) -> Future[TrialOutcome]: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...

    def outcomes(self) -> dict[int, TrialOutcome]: ...


class SparkTrialRunner:
    """Runs each trial as a one-task Spark job from one of ``slots`` driver threads.

    Used for search spaces whose values cannot travel as JSON to slot tasks
    (:func:`elephas.hyperparam.values.space_is_sendable`); the trial's values ride in the task.

    SparkContext accepts jobs from several threads; the jobs of a search share one job group, so
    :meth:`cancel` stops the ones still running (on an error or Ctrl-C on the driver).
    """

    def __init__(self, sc: Any, slots: int):
        self.sc = sc
        self.group = f"elephas-hyperparam-{uuid.uuid4().hex[:12]}"
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="elephas-trial")
        self._one = sc.parallelize([None], 1)  # each trial's job maps this one-row RDD

    def submit(self, fn: TrialFn, item: tuple[int, dict[str, Any]]) -> Future[TrialOutcome]:
        """Start trial ``item = (tid, values)`` as soon as a driver thread is free."""
        return self._pool.submit(self._run, fn, item)

    def _run(self, fn: TrialFn, item: tuple[int, dict[str, Any]]) -> TrialOutcome:
        tid = item[0]
        self.sc.setJobGroup(self.group, f"elephas hyper-parameter trial {tid}")
        try:
            return self._one.map(TrialCall(fn, item)).collect()[0]
        except Exception as exc:  # the task died outside the trial's own try (worker crash, ...)
            from elephas.engine.errors import task_failure

            failure = task_failure(exc, "trial")
            text = str(failure or exc)
            first = text.splitlines()[0] if text else ""
            logger.error("Spark job for trial %d failed: %s", tid, first or exc)
            return TrialOutcome(tid, False, error=(type(exc).__name__, first, text), job_failed=True)

    def cancel(self) -> None:
        """Cancel the search's Spark jobs that are still running."""
        self.sc.cancelJobGroup(self.group)

    def close(self) -> None:
        """Wait for the driver threads and stop them."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def outcomes(self) -> dict[int, TrialOutcome]:
        """Nothing beyond the futures: they carry the full outcomes."""
        return {}


class LocalTrialRunner:
    """Runs each trial in this process when it is submitted (for tests and debugging)."""

    def submit(self, fn: TrialFn, item: tuple[int, dict[str, Any]]) -> Future[TrialOutcome]:
        """Run trial ``item = (tid, values)`` now; the returned future is already done."""
        future: Future[TrialOutcome] = Future()
        future.set_result(fn(item))
        return future

    def cancel(self) -> None:
        """Nothing runs in the background."""

    def close(self) -> None:
        """Nothing to release."""

    def outcomes(self) -> dict[int, TrialOutcome]:
        """Nothing beyond the futures: they carry the full outcomes."""
        return {}
