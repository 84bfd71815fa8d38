"""Training through DataFrames alone: the driver of a Spark Connect session (synchronous stages here).

On a Spark Connect session there is no SparkContext, no RDD and no broadcast, and executors may
not reach the client. Training therefore runs as one *barrier* ``mapInArrow`` stage per epoch over
the training DataFrame (repartitioned to ``K`` partitions and cached once):

* the center weights and the server step's momentum travel in the function's closure, or as a session
  artifact when large (:mod:`.frame_weights`); the step and a fresh per-epoch secret in the closure;
* every task stacks its partition's Arrow batches into numpy arrays, trains window after window
  (:func:`~elephas.engine.stage_worker.make_epoch_fn`) and reduces every round with the other
  tasks through an in-stage all-reduce (reducer kind ``'collective'``, :mod:`.reducers`): every
  rank applies the server step to the same summed delta, so all hold the same center;
* the tasks answer with Arrow rows: a report (rows, windows, timings, the sample-weighted metric
  sums of their windows), the validation of their held-out rows (``validation_split``) on the
  epoch's final center, and from rank 0 the final center and the step's state, encoded with the
  project's wire codec in chunks (nothing is unpickled on the client).

The client sets the model's weights, keeps the step's state for the next epoch's closure, and runs
Keras callbacks, validation and History through :func:`~elephas.engine.history.run_epochs`, as on
classic Spark. The asynchronous modes share everything but the stage's function, which runs the parameter
server in the task of rank 0 (:mod:`.frame_async`). A failed barrier stage is retried as a whole by Spark
(its rows go through a one-partition shuffle, which makes it a shuffle map stage, the kind Spark restarts);
every attempt starts from the center the client shipped, so there is nothing to undo.

The closure goes to the server in one gRPC message, which PySpark's client caps at 128 MiB after its
plan compression (200 MiB of random float32 weights were refused, 135 MiB passed), and the server's driver
holds it as the stage's task binary: the center and the step's state therefore travel in the closure only
up to :data:`~elephas.engine.frame_weights.ARTIFACT_THRESHOLD_BYTES`, and as a session artifact above
(:mod:`.frame_weights`).
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
from ..utils.checks import check_single_output
from .data import ModelIO, arrow_to_numpy, conform, one_hot_encode, prepare_dataframe
from .driver import TrainingSettings, Validation, _next_window, make_validate
from .errors import guard, run_job
from .frame_weights import StageArrays, ship_arrays
from .history import MetricSum, run_epochs
from .inference import merge_evaluations
from .shipping import ModelSpec, cached_model
from .stage_worker import TaskReport, make_epoch_fn
from .windows import bounds_for, default_server_step
from .worker import WindowPlan, master_learning_rate, unwrap

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


class SynchronousEpochs:
    """Synchronous epoch stages: rounds all-reduced inside the stage, the server step on every rank."""

    def __init__(self, frame: FrameEpochs, reducer: str) -> None:
        settings = frame.settings
        self.frame, self.reducer = frame, reducer
        self.auto = settings.frequency == "auto"
        self.bounds = bounds_for("synchronous")
        self.window = self.bounds.initial if self.auto else settings.frequency
        self.step = settings.server_optimizer or default_server_step(sum(1 for n in frame.train_sizes if n))
        self.windows_used: list[Any] = []
        logger.info(
            "synchronous training: %d partitions (%d rows: %s), rounds reduced inside the stage (%s "
            "all-reduce); server step %s; window %s",
            len(frame.train_sizes),
            sum(frame.train_sizes),
            frame.train_sizes,
            reducer,
            self.step.get_config(),
            "auto" if self.auto else self.window,
        )
        weights = sum(int(np.asarray(w).nbytes) for w in frame.model.get_weights())
        momentum = self.step.name != "sgd"
        check_result_size(weights * (2 if momentum else 1), "center and momentum" if momentum else "center")

    def __call__(self, epoch: int, progress: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
        """Run one epoch stage; return its metrics."""
        from ..parameter.auth import new_secret

        f, settings = self.frame, self.frame.settings
        shipped = ship_start(f.session, f.model.get_weights(), self.step.state())
        wplan = WindowPlan(settings.batch_size, self.window, settings.shuffle, settings.seed)
        config = {
            "kind": "collective",
            "reducer": self.reducer,
            "secret": new_secret().hex(),
            "step": stateless(self.step),
            "timeout": max(float(settings.server.get("timeout", 60.0)), 300.0),
        }
        fn = make_stage_fn(
            f.spec,
            f.io,
            settings.runtime,
            wplan,
            epoch,
            shipped,
            config,
            master_learning_rate(f.model),
            max(wplan.windows(n) for n in f.train_sizes),
            f.n_feat,
            f.n_cols,
            f.one_hot,
            f.validation_split,
            f.val_batch_size,
        )
        result = f.run_stage(fn)
        f.model.set_weights(result.center)
        self.step.restore(result.step_state)
        self.windows_used.append(self.window)
        means = result.metrics.means()
        progress(sum(f.train_sizes), means)
        if self.auto:
            self.window = _next_window(result.reports, self.bounds, self.window, epoch)
        return means

    def finish(self, history: Any) -> None:
        """Set the fit's attributes on its History."""
        history.server_optimizer = self.step
        history.windows = self.windows_used


def fit_frame(
    session: Any,
    model: Any,
    spec: ModelSpec,
    io: ModelIO,
    df: Any,
    feature_cols: Sequence[str],
    label_cols: Sequence[str],
    settings: TrainingSettings,
    workers: int,
    *,
    repartition: bool = True,
    one_hot: int | None = None,
    callbacks: list[Any] | None = None,
    validation_split: float = 0.0,
    validation: Validation | None = None,
    validation_frame: Any = None,
    sample: Any = None,
    reducer: str = DEFAULT_REDUCER,
) -> Any:
    """Train ``model`` on a DataFrame without a SparkContext (one barrier stage per epoch).

    Synchronous strategies reduce their rounds inside the stage (:class:`SynchronousEpochs`); the
    asynchronous ones run the parameter server in the task of rank 0
    (:class:`~elephas.engine.frame_async.AsynchronousEpochs`).

    Args:
        session: The session (Connect or classic) ``df`` belongs to.
        model: The driver's compiled Keras model, trained in place.
        spec: Its spec.
        io: Its input and output shapes.
        df: The training DataFrame.
        feature_cols: One column per model input (ml Vector, array or numeric).
        label_cols: One column per model output.
        settings: The fit's settings.
        workers: Partitions (barrier tasks) to train on.
        repartition: Repartition ``df`` to ``workers`` partitions (``False``: it has them already).
        one_hot: One-hot encode a class-index label to this width in the tasks.
        callbacks: Keras callbacks run on the client at epoch ends.
        validation_split: Fraction of every partition's rows (the last ones) held out and evaluated
            in the epoch's stage on its final center.
        validation: Driver-side validation arrays (``validation_data=(x, y)``).
        validation_frame: A validation DataFrame ``(df, feature cols, label cols)`` evaluated after each epoch.
        sample: ``(xs, ys)`` one row with a batch axis, to build the model's metrics with.
        reducer: The in-stage reducer of synchronous rounds, ``'ring'`` or ``'hub'``.

    Returns:
        A ``keras.callbacks.History`` (``partition_rows``: the training rows of each partition;
        synchronous: ``windows``, the window of each epoch, and ``server_optimizer``; asynchronous:
        ``window_records`` and ``server_stats``, one dict per epoch).

    Raises:
        ValueError: When the data is empty.
        elephas.engine.errors.TaskFailedError: When a task fails (with the executor's traceback).
    """
    from .frame_inference import evaluate_frame

    cols = list(feature_cols) + list(label_cols)
    prepared = prepare_dataframe(df, cols)
    if repartition:
        prepared = prepared.repartition(int(workers))
    prepared = prepared.cache()
    try:
        sizes = partition_rows(prepared, int(workers))
        train_sizes = [n - int(n * validation_split) for n in sizes]
        if sum(train_sizes) == 0:
            raise ValueError("The training data is empty: every partition has 0 rows.")
        val_batch_size = validation.batch_size if validation is not None else settings.batch_size
        frame = FrameEpochs(
            session,
            model,
            spec,
            io,
            prepared,
            settings,
            train_sizes,
            len(feature_cols),
            len(cols),
            one_hot,
            validation_split,
            val_batch_size,
        )
        if settings.strategy.synchronous:
            epochs: Any = SynchronousEpochs(frame, reducer)
        else:
            from .frame_async import AsynchronousEpochs

            epochs = AsynchronousEpochs(frame)
        if validation_split:

            def validate() -> dict[str, float]:
                return merge_evaluations(frame.held["validation"], model, sample)
        elif validation_frame is not None:
            vdf, vf, vl = validation_frame

            def validate() -> dict[str, float]:
                results = evaluate_frame(
                    vdf, spec, model.get_weights(), io, vf, vl, settings.runtime, val_batch_size, one_hot
                )
                return merge_evaluations(results, model, sample)
        else:
            validate = make_validate(None, model, spec, settings, validation, sample)
        history = run_epochs(
            model,
            settings.epochs,
            callbacks,
            settings.verbose,
            epochs,
            sum(train_sizes),
            validate,
            initial_epoch=settings.initial_epoch,
        )
        epochs.finish(history)
        history.partition_rows = train_sizes
        return history
    finally:
        prepared.unpersist()


def stateless(step: Any) -> Any:
    """A copy of the server step without its momentum (the momentum travels with the center)."""
    import copy

    blank = copy.copy(step)
    blank.restore(None)
    return blank


def _columns(col: str | Sequence[str]) -> list[str]:
    return [col] if isinstance(col, str) else list(col)


def _frame_sample(df: Any, fcols: list[str], lcols: list[str], one_hot: int | None) -> tuple[list, list]:
    first = prepare_dataframe(df, fcols + lcols).first()
    if first is None:
        raise ValueError("The training DataFrame is empty.")
    xs = [np.asarray(first[i]) for i in range(len(fcols))]
    ys = [np.asarray(first[len(fcols) + j]) for j in range(len(lcols))]
    if one_hot:
        ys = [one_hot_encode(ys[0], one_hot)[0]]
    return xs, ys


def fit_data(
    session: Any,
    model: Any,
    spec: ModelSpec,
    data: Any,
    y: Any,
    settings: TrainingSettings,
    num_workers: int | None,
    *,
    features_col: str | Sequence[str] = "features",
    label_col: str | Sequence[str] = "label",
    nb_classes: int | None = None,
    callbacks: list[Any] | None = None,
    validation_split: float = 0.0,
    validation_data: Any = None,
) -> Any:
    """``SparkModel.fit`` without a SparkContext: numpy arrays or a DataFrame, every mode.

    Numpy input becomes a DataFrame through Arrow (:func:`~elephas.engine.frame_inference.numpy_frame`,
    ``validation_split`` then holds out the last rows of the arrays, as on classic Spark); a DataFrame's
    ``validation_split`` holds out the last rows of every partition. ``validation_data`` may be numpy
    ``(x, y)`` (evaluated on the client) or a DataFrame (evaluated on the executors after each epoch).

    Returns:
        The ``keras.callbacks.History`` of :func:`fit_frame`.

    Raises:
        ValueError: For data Keras cannot train on (checked on the client before any job) or empty data.
    """
    from .frame_inference import numpy_frame
    from .preflight import preflight_check
    from .validation import check_dataframe, check_features, check_labels, numpy_sample

    io = ModelIO.of(model)
    if nb_classes is not None:
        check_single_output(len(io.output_shapes))
    workers = choose_workers(session, num_workers)
    validation = None
    frame_split = 0.0
    if hasattr(data, "schema") and hasattr(data, "mapInArrow"):
        fcols, lcols = _columns(features_col), _columns(label_col)
        check_dataframe(data, fcols + lcols, {**{c: "features" for c in fcols}, **{c: "label" for c in lcols}})
        sample = _frame_sample(data, fcols, lcols, nb_classes)
        df, repartition, frame_split = data, True, validation_split
    else:
        if y is None:
            raise ValueError("With numpy features, pass labels too: fit(x, y, ...).")
        xs, ys = numpy_sample(data, y, io)
        if validation_split:
            cut = int(xs[0].shape[0] * (1 - validation_split))
            vys = [one_hot_encode(t[cut:], nb_classes) for t in ys] if nb_classes else [t[cut:] for t in ys]
            validation = Validation(arrays=([x[cut:] for x in xs], vys), batch_size=settings.batch_size)
            xs, ys = [x[:cut] for x in xs], [t[:cut] for t in ys]
        if not xs[0].shape[0]:
            raise ValueError("The training data is empty: the arrays have no rows to train on.")
        sample = ([x[0] for x in xs], [one_hot_encode(ys[0][:1], nb_classes)[0]] if nb_classes else [t[0] for t in ys])
        df, fcols, lcols = numpy_frame(session, xs, ys, workers)
        repartition = False
    check_features(io, sample[0])
    check_labels(io, sample[1], model.loss)
    batch_sample = ([np.asarray(a)[None] for a in sample[0]], [np.asarray(b)[None] for b in sample[1]])
    preflight_check(spec, batch_sample)
    validation_frame = None
    if validation_data is not None:
        frame_split = 0.0  # as on classic Spark, validation_data takes the place of validation_split
        if hasattr(validation_data, "schema") and hasattr(validation_data, "mapInArrow"):
            vf, vl = _columns(features_col), _columns(label_col)
            check_dataframe(validation_data, vf + vl, {**{c: "features" for c in vf}, **{c: "label" for c in vl}})
            validation_frame = (validation_data, vf, vl)
            validation = Validation(batch_size=settings.batch_size)
        elif isinstance(validation_data, (tuple, list)) and len(validation_data) >= 2:
            vxs, vys = numpy_sample(validation_data[0], validation_data[1], io)
            if nb_classes:
                vys = [one_hot_encode(vys[0], nb_classes)]
            validation = Validation(arrays=(vxs, vys), batch_size=settings.batch_size)
        else:
            raise ValueError(
                "validation_data must be (x_val, y_val) or a DataFrame on a Spark Connect session. "
                f"Received: {type(validation_data).__name__}."
            )
    return fit_frame(
        session,
        model,
        spec,
        io,
        df,
        fcols,
        lcols,
        settings,
        workers,
        repartition=repartition,
        one_hot=nb_classes,
        callbacks=callbacks,
        validation_split=frame_split,
        validation=validation,
        validation_frame=validation_frame,
        sample=batch_sample,
    )
