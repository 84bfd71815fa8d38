"""A ``hyperopt.Trials`` that runs its trials in the background, driven by ``hyperopt.fmin``.

It plugs into hyperopt the way hyperopt's own ``SparkTrials`` does: ``hyperopt.fmin(fn, space,
algo, max_evals, trials=RunnerTrials(...))`` calls :meth:`RunnerTrials.fmin`, which runs
``hyperopt.fmin`` again on itself with ``allow_trials_fmin=False``. From then on fmin's own loop
asks ``algo`` for one trial at a time and inserts it; :meth:`RunnerTrials.insert_trial_docs` starts
each inserted trial on a :class:`~elephas.hyperparam.scheduler.TrialRunner` (slot tasks on Spark, a
per-trial DataFrame job on Spark Connect, or this process) and marks it running, so fmin never
evaluates a trial itself and never waits by polling. The outcomes are written back into the trial
documents whenever fmin (or the algorithm) looks at the trials (:meth:`RunnerTrials.refresh`).

The algorithm decides when a trial may start: :class:`~elephas.hyperparam.scheduler.ReproducibleAlgo`
calls :meth:`RunnerTrials.wait_for_turn`, which returns once a slot is free and the trials its
history needs have finished. Once the last trial is inserted (or the algorithm stops suggesting),
the trials still running are waited for, so ``fmin`` returns a complete ``Trials``.

Only public hyperopt API is used: ``fmin``, ``Trials.insert_trial_docs`` / ``refresh`` /
``trials``, ``space_eval``, ``spec_from_misc`` and the ``JOB_STATE_*`` constants.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from hyperopt import STATUS_OK, Trials, fmin, space_eval
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, JOB_STATE_RUNNING, spec_from_misc
from hyperopt.utils import coarse_utcnow

from elephas.hyperparam.scheduler import TrialFn, TrialRunner
from elephas.hyperparam.trial import TrialOutcome

logger = logging.getLogger(__name__)


class _Run:
    """The live state of one ``fmin`` call (threads, locks and futures: never pickled)."""

    def __init__(self, runner: TrialRunner, slots: int):
        self.runner = runner
        self.slots = slots
        self.fn: TrialFn | None = None
        self.space: Any = None
        self.max_evals = 0
        self.cond = threading.Condition()
        self.running: set[int] = set()
        self.to_write: list[tuple[int, TrialOutcome]] = []
        self.errors: list[BaseException] = []


class RunnerTrials(Trials):
    """``hyperopt.Trials`` whose trials run on a :class:`~elephas.hyperparam.scheduler.TrialRunner`.

    Pass it to ``hyperopt.fmin`` once; ``fn`` is then the elephas trial function
    (:func:`~elephas.hyperparam.trial.make_trial_fn`: ``fn((tid, values)) -> TrialOutcome``), and
    ``algo`` an algorithm that asks :meth:`wait_for_turn` before each suggestion
    (:class:`~elephas.hyperparam.scheduler.ReproducibleAlgo`).

    Args:
        runner: Runs the trials (its ``close`` is called when ``fmin`` returns or raises).
        slots: Trials running at once.

    Attributes:
        reports: Outcomes as they arrived (loss, status or error), by trial id, in arrival order.
        job_failures_only: After ``fmin``: every finished trial failed as a Spark job (the job
            itself could not run, so every trial would fail the same way).

    Example:
        >>> trials = RunnerTrials(LocalTrialRunner(), slots=1)  # doctest: +SKIP
        >>> fmin(run, space, algo=ReproducibleAlgo(tpe.suggest, 1), max_evals=8, trials=trials,
        ...      rstate=np.random.default_rng(0), return_argmin=False)  # doctest: +SKIP
    """

    asynchronous = False  # fmin's own loop drives; trials start when inserted, nothing is polled

    def __init__(self, runner: TrialRunner, slots: int):
        self._run: _Run | None = _Run(runner, slots)
        self._docs: dict[int, dict[str, Any]] = {}
        self.reports: dict[int, TrialOutcome] = {}
        self.job_failures_only = False
        super().__init__()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_run"] = None  # threads and futures stay behind; the documents travel
        return state

    @property
    def all_trials(self) -> list[dict[str, Any]]:
        """Every trial document in trial id order, failed ones included (``trials`` leaves them out)."""
        return [self._docs[tid] for tid in sorted(self._docs)]

    # ------------------------------------------------------------------ hyperopt's entry points

    def fmin(
        self,
        fn: Callable[..., Any],
        space: Any,
        algo: Callable[..., Any] | None = None,
        max_evals: int | None = None,
        timeout: Any = None,
        loss_threshold: Any = None,
        max_queue_len: int = 1,
        rstate: Any = None,
        verbose: bool = False,
        pass_expr_memo_ctrl: Any = None,
        catch_eval_exceptions: bool = False,
        return_argmin: bool = True,
        show_progressbar: bool = True,
        early_stop_fn: Any = None,
        trials_save_file: str = "",
    ) -> Any:
        """Run the search (called by ``hyperopt.fmin(..., trials=self)``; see ``hyperopt.fmin``).

        Raises:
            ValueError: An option these trials do not support (``timeout``, ``loss_threshold``,
                ``early_stop_fn``, ``pass_expr_memo_ctrl``, ``trials_save_file``), no
                ``max_evals``, or the trials already ran a search.
        """
        unsupported = {
            "timeout": timeout,
            "loss_threshold": loss_threshold,
            "early_stop_fn": early_stop_fn,
            "pass_expr_memo_ctrl": pass_expr_memo_ctrl,
            "trials_save_file": trials_save_file,
        }
        given = sorted(name for name, value in unsupported.items() if value)
        if given:
            raise ValueError(f"Expected none of {sorted(unsupported)} with RunnerTrials. Received: {given}.")
        if max_evals is None or self._run is None or self._run.fn is not None:
            raise ValueError(
                "Expected a fresh RunnerTrials and a finite max_evals. "
                f"Received: max_evals={max_evals!r}, trials that already ran: {self._run is None}."
            )
        run = self._run
        run.fn, run.space, run.max_evals = fn, space, int(max_evals)
        try:
            return fmin(
                fn,
                space,
                algo=self._draining(algo),
                max_evals=max_evals,
                trials=self,
                rstate=rstate,
                verbose=verbose,
                max_queue_len=1,  # one suggestion per call, each with its own draw of rstate
                allow_trials_fmin=False,  # fmin calls us: do not come back here
                catch_eval_exceptions=catch_eval_exceptions,
                return_argmin=return_argmin,
                show_progressbar=show_progressbar,
            )
        finally:
            self._finish()

    def insert_trial_docs(self, docs: list[dict[str, Any]]) -> list[int]:
        """Insert trials and start them on the runner (outside ``fmin``: insert only)."""
        tids = super().insert_trial_docs(docs)
        run = self._run
        if run is None or run.fn is None:
            return tids
        super().refresh()
        by_tid = {t["tid"]: t for t in self.trials if t["tid"] in tids}
        for tid in tids:
            doc = by_tid[tid]
            self._docs[tid] = doc
            doc["state"] = JOB_STATE_RUNNING
            doc["book_time"] = doc["refresh_time"] = coarse_utcnow()
            values = space_eval(run.space, spec_from_misc(doc["misc"]))
            with run.cond:
                run.running.add(tid)
            future = run.runner.submit(run.fn, (tid, values))
            future.add_done_callback(functools.partial(self._arrived, run, tid))
        if len(self._docs) >= run.max_evals:  # the last trial: fmin returns next, with every outcome in
            self._drain()
        return tids

    def refresh(self) -> None:
        """Write the outcomes that arrived into their trial documents, then refresh as hyperopt does."""
        if getattr(self, "_run", None) is not None:
            self._write_back_arrived()
        super().refresh()

    def wait_for_turn(self, required: int) -> dict[int, TrialOutcome] | None:
        """Wait until a slot is free and trials ``0 .. required - 1`` have finished.

        Called by the algorithm before it suggests a trial (on fmin's thread).

        Args:
            required: How many of the first trials the next suggestion needs finished.

        Returns:
            The finished outcomes by trial id; ``None`` when the search should stop: every
            finished trial failed as a Spark job and none is running any more.
        """
        run = self._require_run()
        while True:
            self._write_back_arrived()
            with run.cond:
                self._raise_runner_error(run)
                if run.to_write:
                    continue
                failures_only = bool(self.reports) and all(o.job_failed for o in self.reports.values())
                if failures_only and not run.running:
                    return None
                if (
                    not failures_only
                    and len(run.running) < run.slots
                    and all(t in self.reports for t in range(required))
                ):
                    return dict(self.reports)
                run.cond.wait()

    # ------------------------------------------------------------------ internals

    def _require_run(self) -> _Run:
        if self._run is None or self._run.fn is None:
            raise RuntimeError("Expected a search in progress: pass these trials to hyperopt.fmin.")
        return self._run

    def _draining(self, algo: Callable[..., Any] | None) -> Callable[..., Any] | None:
        """``algo``, waiting for the running trials when it stops suggesting (fmin returns next)."""
        if algo is None:
            return None

        def suggest(new_ids: list[int], domain: Any, trials: Any, seed: int) -> list[dict[str, Any]]:
            docs = algo(new_ids, domain, trials, seed)
            if not docs:
                logger.info("the search algorithm stopped suggesting after %d trials", len(self._docs))
                self._drain()
            return docs

        return suggest

    def _arrived(self, run: _Run, tid: int, future: Future[TrialOutcome]) -> None:
        """A runner's future is done (any thread): record it for fmin's thread."""
        with run.cond:
            run.running.discard(tid)
            try:
                outcome = future.result()
            except BaseException as exc:  # a runner bug: re-raised on fmin's thread
                run.errors.append(exc)
            else:
                self.reports[tid] = outcome
                run.to_write.append((tid, outcome))
            run.cond.notify_all()

    @staticmethod
    def _raise_runner_error(run: _Run) -> None:
        if run.errors:
            raise run.errors[0]

    def _write_back_arrived(self) -> None:
        run = self._run
        if run is None:
            return
        with run.cond:
            arrived, run.to_write = run.to_write, []
        for tid, outcome in arrived:
            write_back(self._docs[tid], outcome)
            if outcome.ok and outcome.result and outcome.result.get("status") == STATUS_OK:
                logger.info(
                    "trial %d done (%d/%d), loss %.5g", tid, len(self.reports), run.max_evals, outcome.result["loss"]
                )

    def _drain(self) -> None:
        """Wait for every running trial and write its outcome back."""
        run = self._require_run()
        with run.cond:
            while run.running and not run.errors:
                run.cond.wait()
            self._raise_runner_error(run)
        self._write_back_arrived()

    def _finish(self) -> None:
        """Stop the runner (cancelling what still runs after an error or Ctrl-C), collect the full
        outcomes (the slot tasks return the models at the end) and drop the live state."""
        run = self._run
        try:
            with run.cond:
                interrupted = bool(run.running)
            if interrupted:
                run.runner.cancel()
        finally:
            try:
                run.runner.close()
            finally:
                self._write_back_arrived()
                for tid, outcome in run.runner.outcomes().items():
                    if tid in self._docs:
                        write_back(self._docs[tid], outcome, log=False)
                self.job_failures_only = bool(self.reports) and all(o.job_failed for o in self.reports.values())
                self._run = None
                super().refresh()


def write_back(doc: dict[str, Any], outcome: TrialOutcome, log: bool = True) -> None:
    """Record a trial's outcome in its hyperopt document (done with its result, or failed with
    ``misc['error'] == (type, traceback)``)."""
    doc["refresh_time"] = coarse_utcnow()
    if outcome.ok:
        doc["state"] = JOB_STATE_DONE
        doc["result"] = dict(outcome.result or {}, duration=outcome.duration)
    else:
        err_type, message, tb = outcome.error or ("Exception", "", "")
        doc["state"] = JOB_STATE_ERROR
        doc["misc"]["error"] = (err_type, tb)
        if log:
            logger.warning("trial %d failed: %s: %s", outcome.tid, err_type, message)
