"""What the DataFrame-only epoch stages share (Spark Connect): slots, partition stacking, result rows.

:mod:`.frame_training` (synchronous rounds) and :mod:`.frame_async` (the parameter server inside
the stage) build their barrier ``mapInArrow`` stage functions from these pieces; every stage answers
with rows of :data:`STAGE_SCHEMA`, which :class:`EpochResult` reads back on the client.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..parameter import codec
from .data import ModelIO, arrow_to_numpy, conform, one_hot_encode
from .driver import TrainingSettings
from .errors import guard, run_job
from .frame_weights import StageArrays, ship_arrays
from .history import MetricSum
from .shipping import ModelSpec, cached_model
from .stage_worker import TaskReport, make_epoch_fn
from .worker import WindowPlan, unwrap

logger = logging.getLogger(__name__)

STAGE_SCHEMA = "part long, kind string, seq long, payload binary"
CHUNK_BYTES = 2 << 20
"""Rank 0 returns the center in rows of at most this many bytes (Connect streams results in small batches)."""
DEFAULT_REDUCER = "ring"
RESULT_WARN_BYTES = 128 << 20
"""Above this many bytes of center (and step state) coming back per epoch, the client warns about the server's heap."""


def task_slots(session: Any) -> int | None:
    """How many tasks the session's cluster runs at once, read from its configuration (``None``: unknown)."""

    def conf(key: str) -> str | None:
        try:
            return session.conf.get(key, None) or None
        except Exception:  # noqa: BLE001 - a server may refuse to show some keys
            return None

    master = conf("spark.master") or ""
    if master.startswith("local"):
        inside = master[master.find("[") + 1 : master.find("]")] if "[" in master else "1"
        inside = inside.split(",")[0]
        return os.cpu_count() or 1 if inside in ("*", "") else int(inside)
    parallelism = conf("spark.default.parallelism")
    if parallelism:
        return int(parallelism)
    executors, cores = conf("spark.executor.instances"), conf("spark.executor.cores")
    if executors and cores:
        return int(executors) * max(1, int(cores) // int(conf("spark.task.cpus") or 1))
    return None


def choose_workers(session: Any, num_workers: int | None) -> int:
    """The number of partitions (barrier tasks) to train on: ``num_workers``, else the cluster's task slots."""
    slots = task_slots(session)
    if num_workers:
        if slots is not None and num_workers > slots:
            logger.warning(
                "num_workers=%d but the session's configuration shows %d task slots; a barrier stage "
                "needs all its tasks at once and waits for them.",
                num_workers,
                slots,
            )
        workers = int(num_workers)
    else:
        workers = slots or 2
    logger.info(
        "training on Spark Connect: %d partitions (barrier tasks)%s",
        workers,
        "" if num_workers else " (the session's task slots; set num_workers to choose)",
    )
    return workers


def partition_rows(df: Any, partitions: int) -> list[int]:
    """Rows in each partition of ``df`` (one small job)."""
    from pyspark.sql import functions as F

    counts = [0] * partitions
    for row in df.groupBy(F.spark_partition_id().alias("p")).count().collect():
        counts[int(row["p"])] = int(row["count"])
    return counts


def _encode(arrays: Sequence[np.ndarray], meta: dict[str, Any] | None = None) -> bytes:
    return bytes(codec.encode([np.asarray(a) for a in arrays], codec.KIND_PARAMETERS, meta=meta))


def _row(part: int, kind: str, seq: int, payload: bytes) -> Any:
    import pyarrow as pa

    return pa.RecordBatch.from_pydict(
        {"part": [part], "kind": [kind], "seq": [seq], "payload": [payload]},
        schema=pa.schema([("part", pa.int64()), ("kind", pa.string()), ("seq", pa.int64()), ("payload", pa.binary())]),
    )


def stack_partition(
    batches: Iterator[Any], n_feat: int, n_cols: int, shapes: Sequence[Any], one_hot: int | None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A task's Arrow batches stacked into the model's input and label arrays (empty lists: no rows)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(n_cols)]
    for batch in batches:
        for i in range(n_cols):
            parts[i].append(arrow_to_numpy(batch.column(i)))
    if not parts[0] or not sum(len(p) for p in parts[0]):
        return [], []
    arrays = [np.concatenate(p) for p in parts]
    xs = [conform(a, s) for a, s in zip(arrays[:n_feat], shapes)]
    ys = [conform(a, (), float_cast=False) for a in arrays[n_feat:]]
    if one_hot:
        ys = [one_hot_encode(ys[0], one_hot)]
    return xs, ys


def validation_row(
    pid: int, spec: ModelSpec, center: Sequence[np.ndarray] | None, vx: list, vy: list, batch_size: int
) -> Any:
    """The row carrying the evaluation of a task's held-out rows on ``center`` (values and metric state;
    ``None``: the weights the process's cached model holds)."""
    model = cached_model(spec, None if center is None else list(center))
    logs = model.evaluate(unwrap(vx), unwrap(vy), batch_size=batch_size, verbose=0, return_dict=True)
    state = [np.asarray(v) for v in model.metrics_variables]
    values = np.array([float(v) for v in logs.values()], dtype=np.float64)  # JSON has no NaN
    return _row(pid, "val", 0, _encode([values, *state], {"rows": int(vx[0].shape[0]), "logs": list(logs)}))


def center_rows(pid: int, weights: Sequence[np.ndarray], state: Sequence[np.ndarray] | None) -> Iterator[Any]:
    """The rows carrying the epoch's final center (and the server step's state) in codec chunks."""
    payload = _encode(
        [*weights, *(state or [])], {"weights": len(weights), "state": len(state) if state is not None else -1}
    )
    for seq, start in enumerate(range(0, len(payload), CHUNK_BYTES)):
        yield _row(pid, "final", seq, payload[start : start + CHUNK_BYTES])


def json_row(pid: int, kind: str, value: Any) -> Any:
    """A row carrying plain values as JSON."""
    return _row(pid, kind, 0, json.dumps(value).encode())


def stage_start(shipped: StageArrays) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """In a task: the epoch's start center and the server step's state (``None``: none yet)."""
    arrays = shipped.load()
    k, s = int(shipped.meta["weights"]), int(shipped.meta["state"])
    return arrays[:k], (None if s < 0 else arrays[k : k + s])


def ship_start(session: Any, weights: Sequence[np.ndarray], state: Sequence[np.ndarray] | None) -> StageArrays:
    """On the client: the epoch's start center and step state, in the closure or as a session artifact."""
    meta = {"weights": len(weights), "state": -1 if state is None else len(state)}
    return ship_arrays(session, [*weights, *(state or [])], meta)


def barrier_stage(stage: Callable[[int, Iterator[Any]], Iterator[Any]]) -> Callable:
    """``stage(partition, batches)`` as a barrier ``mapInArrow`` function, its errors sent back with tracebacks."""
    guarded = guard(stage)

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        from pyspark import BarrierTaskContext

        yield from guarded(BarrierTaskContext.get().partitionId(), batches)

    return run


def make_stage_fn(
    spec: ModelSpec,
    io: ModelIO,
    runtime: Any,
    plan: WindowPlan,
    epoch: int,
    shipped: StageArrays,
    config: dict[str, Any],
    learning_rate: float | None,
    rounds: int,
    n_feat: int,
    n_cols: int,
    one_hot: int | None,
    val_fraction: float,
    val_batch_size: int,
) -> Callable:
    """The ``mapInArrow`` function of one synchronous epoch stage: Arrow batches in, report/validation/center
    rows out. ``config`` is the ``'collective'`` reducer's (its step without state: the state is in
    ``shipped`` with the center)."""
    shapes = list(io.input_shapes)

    def stage(pid: int, batches: Iterator[Any]) -> Iterator[Any]:
        xs, ys = stack_partition(batches, n_feat, n_cols, shapes, one_hot)
        n = int(xs[0].shape[0]) if xs else 0
        cut = n - int(n * val_fraction)
        start, state = stage_start(shipped)
        config["step"].restore(state)
        epoch_fn = make_epoch_fn(spec, runtime, plan, epoch, start, config, learning_rate, rounds=rounds)
        (report,) = list(epoch_fn([(pid, [x[:cut] for x in xs], [y[:cut] for y in ys])]))
        info = {
            "rows": report.rows,
            "windows": report.windows,
            "batches": report.batches,
            "compute_s": report.compute_s,
            "exchange_s": report.exchange_s,
            "attempt": report.attempt,
            "metrics": report.metric_sums or {},
        }
        yield json_row(pid, "report", info)
        if cut < n:
            yield validation_row(pid, spec, report.center, [x[cut:] for x in xs], [y[cut:] for y in ys], val_batch_size)
        if report.center is not None and pid == 0:
            yield from center_rows(pid, report.center, report.step_state)

    return barrier_stage(stage)


class EpochResult:
    """What the client reads back from one epoch stage.

    Attributes:
        reports: The tasks' reports (synchronous stages).
        metrics: Their sample-weighted metrics.
        validation: ``(rows, logs, metric state)`` of every task's held-out rows.
        center: The epoch's final center.
        step_state: The server step's state after the epoch (``None``: none).
        records: The parameter server's window records as dicts (asynchronous stages).
        stats: The parameter server's statistics (asynchronous stages).
    """

    def __init__(self, table: Any) -> None:
        self.reports: list[TaskReport] = []
        self.metrics = MetricSum()
        self.validation: list[tuple[int, dict[str, float], list[np.ndarray]]] = []
        self.records: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}
        chunks: list[tuple[int, bytes]] = []
        for part, kind, seq, payload in zip(*(table.column(c).to_pylist() for c in ("part", "kind", "seq", "payload"))):
            if kind == "report":
                info = json.loads(payload)
                self.reports.append(
                    TaskReport(
                        int(part),
                        info["rows"],
                        info["windows"],
                        info["batches"],
                        info["compute_s"],
                        info["exchange_s"],
                        info["attempt"],
                        info["metrics"],
                    )
                )
                self.metrics.add_weighted(info["rows"], info["metrics"])
            elif kind == "val":
                decoded = codec.decode(payload)
                values, *state = decoded.arrays
                logs = {str(k): float(v) for k, v in zip(decoded.meta["logs"], values)}
                self.validation.append((int(decoded.meta["rows"]), logs, [np.array(a) for a in state]))
            elif kind == "records":
                self.records.extend(json.loads(payload))
            elif kind == "stats":
                self.stats = json.loads(payload)
            elif kind == "final":
                chunks.append((int(seq), payload))
        if not chunks:
            raise RuntimeError("Expected the epoch's center from the task of partition 0, received none.")
        decoded = codec.decode(b"".join(p for _, p in sorted(chunks)))
        k, s = int(decoded.meta["weights"]), int(decoded.meta["state"])
        arrays = [np.array(a) for a in decoded.arrays]
        self.center = arrays[:k]
        self.step_state = None if s < 0 else arrays[k : k + s]


@dataclass
class FrameEpochs:
    """What every epoch stage of one fit on a DataFrame shares (built once by :func:`fit_frame`).

    Attributes:
        session: The session the stages run on.
        model: The client's compiled Keras model, trained in place.
        spec: Its spec.
        io: Its input and output shapes.
        prepared: The cached training DataFrame, ``K`` partitions of the feature and label columns.
        settings: The fit's settings.
        train_sizes: Training rows of every partition (without the held-out rows).
        n_feat: Feature columns (the rest are label columns).
        n_cols: All columns.
        one_hot: One-hot encode a class-index label to this width in the tasks.
        validation_split: Fraction of every partition's rows held out and evaluated in the stage.
        val_batch_size: Batch size of that evaluation.
        held: The latest epoch's held-out evaluations (``'validation'``).
    """

    session: Any
    model: Any
    spec: ModelSpec
    io: ModelIO
    prepared: Any
    settings: TrainingSettings
    train_sizes: list[int]
    n_feat: int
    n_cols: int
    one_hot: int | None
    validation_split: float
    val_batch_size: int
    held: dict[str, Any] = field(default_factory=dict)

    def run_stage(self, fn: Callable) -> EpochResult:
        """Run ``fn`` as the epoch's barrier ``mapInArrow`` stage; keep its held-out evaluations.

        The stage's rows go through a one-partition shuffle before they are collected: Spark restarts a
        failed barrier stage as a whole only when it is a shuffle map stage (a barrier result stage
        aborts the job), so a task whose Python worker dies costs one more attempt of the epoch, not the fit.
        """
        stage = self.prepared.mapInArrow(fn, STAGE_SCHEMA, barrier=True).repartition(1)
        table = run_job(stage.toArrow, "Training")
        result = EpochResult(table)
        self.held["validation"] = result.validation
        return result


def check_result_size(nbytes: int, what: str) -> None:
    """Warn when an epoch's center (with ``what``) coming back through the Connect server's driver is large."""
    if nbytes > RESULT_WARN_BYTES:
        logger.warning(
            "Every epoch's %s (%.1f MiB) comes back through the Spark Connect server's driver as Arrow rows. "
            "It needs several times that in Java heap: a local server with a 1 GiB driver heap returned "
            "130 MiB and ran out of heap on 260 MiB. Give the server's driver more memory "
            "(spark.driver.memory)%s.",
            what,
            nbytes / (1 << 20),
            ", or use server_optimizer='sgd' (no momentum state to return)" if "momentum" in what else "",
        )
