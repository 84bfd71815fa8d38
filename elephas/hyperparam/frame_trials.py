"""Trials on a Spark Connect session: one one-row DataFrame job per trial, results back as Arrow rows.

A Spark Connect client has no SparkContext, RDD or broadcast, and its executors may not reach it,
so the slot tasks' channel to the driver (:mod:`elephas.hyperparam.slots`) is not an option there.
:class:`FrameTrialRunner` instead runs each trial as its own job: ``mapInArrow`` over a one-row
DataFrame, with the trial function, the trial's values and ``data()``'s arrays in the function's
closure (so they are sent with every trial; :data:`CLOSURE_LIMIT_BYTES` bounds the arrays), from
one of ``slots`` client threads, so ``slots`` trials run at once. The scheduler
(:mod:`elephas.hyperparam.scheduler`) decides which trial starts when, exactly as on classic Spark.

The task answers with one Arrow row of three columns, none of them pickled:

* ``report``: the JSON report of :func:`~elephas.hyperparam.slots.outcome_report` (trial id, loss,
  status, duration, or the error with its traceback), checked field by field on the client;
* ``extra``: JSON of the result's other values: the model's architecture
  (``ModelSpec.to_dict()``) and the user's own keys (numpy values as numbers and lists; a value
  that is not JSON comes back as its ``repr``, with a warning);
* ``weights``: the trained model's weights encoded with the project's wire codec.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from elephas.hyperparam.slots import outcome_from_report, outcome_report
from elephas.hyperparam.trial import TrialOutcome

logger = logging.getLogger(__name__)

TrialFn = Any
_SCHEMA = "report string, extra string, weights binary"
_REPORTED = ("loss", "status", "loss_variance", "model_spec", "model_weights")
CLOSURE_LIMIT_BYTES = 120 << 20
"""Largest ``data()`` arrays a Connect search sends in each trial's closure: PySpark's Connect client
refuses a message above 128 MiB (``docs/connect.md``, "Size limit")."""


def _json_value(value: Any) -> Any:
    """``json.dumps`` default: numpy arrays and scalars as lists and numbers."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(type(value).__name__)


def _extra_json(result: dict[str, Any]) -> str:
    extra: dict[str, Any] = {}
    for key, value in result.items():
        if key in _REPORTED and key != "model_spec":
            continue
        try:
            text = json.dumps(value, default=_json_value, allow_nan=True)
        except (TypeError, ValueError):
            logger.warning("trial result %r is not JSON; it comes back as its repr", key)
            text = json.dumps(repr(value))
        extra[str(key)] = json.loads(text)
    return json.dumps(extra, allow_nan=True)


class TrialBatches:
    """The ``mapInArrow`` function of one trial's job: runs ``fn(item)`` once, yields one Arrow row.

    Args:
        fn: The trial function (:func:`~elephas.hyperparam.trial.make_trial_fn`).
        item: ``(tid, values)``.
    """

    def __init__(self, fn: TrialFn, item: tuple[int, dict[str, Any]]):
        self.fn = fn
        self.item = item

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        from elephas.parameter import codec

        rows = sum(batch.num_rows for batch in batches)
        if not rows:  # only the partition holding the row runs the trial
            return
        outcome = self.fn(self.item)
        try:
            result = outcome.result or {}
            weights = result.get("model_weights")
            payload = b"" if weights is None else bytes(codec.encode(list(weights), codec.KIND_PARAMETERS))
            extra = _extra_json(result) if outcome.ok else "{}"
        except Exception as exc:  # a result that cannot travel fails the trial, with the reason
            outcome = TrialOutcome(
                outcome.tid,
                False,
                error=(type(exc).__name__, str(exc), traceback.format_exc()),
                duration=outcome.duration,
            )
            payload, extra = b"", "{}"
        report = json.dumps(outcome_report(outcome), allow_nan=True)
        yield pa.RecordBatch.from_pydict(
            {"report": [report], "extra": [extra], "weights": [payload]},
            schema=pa.schema([("report", pa.string()), ("extra", pa.string()), ("weights", pa.binary())]),
        )


def outcome_from_row(row: dict[str, Any]) -> TrialOutcome:
    """The full :class:`TrialOutcome` of a trial job's row (nothing is unpickled).

    Raises:
        ValueError: A malformed row.
    """
    from elephas.parameter import codec

    outcome = outcome_from_report(json.loads(row["report"]))
    if not outcome.ok:
        return outcome
    extra = json.loads(row["extra"] or "{}")
    if not isinstance(extra, dict):
        raise ValueError(f"Expected a JSON object of result values. Received: {type(extra).__name__}.")
    result = dict(extra)
    result.update(outcome.result or {})
    if row["weights"]:
        result["model_weights"] = [a.copy() for a in codec.decode(row["weights"]).arrays]
    elif "model_spec" in result:
        result["model_weights"] = None
    outcome.result = result
    return outcome


class FrameTrialRunner:
    """Runs each trial as a one-task DataFrame job from one of ``slots`` client threads (Spark Connect).

    Implements the scheduler's ``TrialRunner`` interface; the futures carry the full outcomes. The
    jobs of a search share one operation tag, so :meth:`cancel` interrupts the ones still running
    (on an error or Ctrl-C on the client).

    Args:
        session: The Spark Connect session.
        slots: Trials running at once.
    """

    def __init__(self, session: Any, slots: int):
        self.session = session
        self.tag = f"elephas-hyperparam-{uuid.uuid4().hex[:12]}"
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="elephas-trial")

    def submit(self, fn: TrialFn, item: tuple[int, dict[str, Any]]) -> Future[TrialOutcome]:
        """Start trial ``item = (tid, values)`` as soon as a client thread is free."""
        return self._pool.submit(self._run, fn, item)

    def _run(self, fn: TrialFn, item: tuple[int, dict[str, Any]]) -> TrialOutcome:
        tid = item[0]
        self.session.addTag(self.tag)  # tags belong to the thread that starts the operations
        try:
            frame = self.session.range(0, 1, 1, numPartitions=1)
            table = frame.mapInArrow(TrialBatches(fn, item), _SCHEMA).toArrow()
            rows = table.to_pylist()
            if len(rows) != 1:
                raise RuntimeError(f"Expected one result row from the job of trial {tid}. Received: {len(rows)}.")
            return outcome_from_row(rows[0])
        except Exception as exc:  # the job failed around the trial (worker crash, unpicklable closure)
            from elephas.engine.errors import task_failure

            failure = task_failure(exc, "trial")
            text = str(failure or exc)
            first = text.splitlines()[0] if text else ""
            logger.error("Spark job for trial %d failed: %s", tid, first or exc)
            return TrialOutcome(tid, False, error=(type(exc).__name__, first, text), job_failed=True)
        finally:
            self.session.removeTag(self.tag)

    def cancel(self) -> None:
        """Interrupt the search's jobs that are still running."""
        try:
            self.session.interruptTag(self.tag)
        except Exception:  # noqa: BLE001 - the session may be gone already (Ctrl-C at exit)
            logger.debug("could not interrupt the trial jobs", exc_info=True)

    def close(self) -> None:
        """Wait for the client threads and stop them."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def outcomes(self) -> dict[int, TrialOutcome]:
        """Nothing beyond the futures: they carry the full outcomes."""
        return {}


def check_closure_data(values: tuple | None) -> None:
    """Refuse ``data()`` arrays too large to travel in every trial's closure, before any job.

    Raises:
        ValueError: Their size exceeds :data:`CLOSURE_LIMIT_BYTES`.
    """
    size = sum(int(getattr(v, "nbytes", 0)) for v in values or ())
    if size > CLOSURE_LIMIT_BYTES:
        raise ValueError(
            f"Expected data() to return at most {CLOSURE_LIMIT_BYTES >> 20} MiB of arrays on a Spark Connect "
            f"session (they travel in every trial's job). Received: {size / (1 << 20):.1f} MiB. Use a "
            "smaller sample for the search, or a classic SparkSession (its trials share one broadcast)."
        )
