"""Synchronous training through DataFrames alone: the driver of a Spark Connect session.

On a Spark Connect session there is no SparkContext, no RDD and no broadcast, and executors may
not reach the client. Training therefore runs as one *barrier* ``mapInArrow`` stage per epoch over
the training DataFrame (repartitioned to ``K`` partitions and cached once):

* the center weights, the server step (with its momentum) and a fresh per-epoch secret travel in
  the function's closure;
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
classic Spark. A failed barrier stage is retried as a whole by Spark; every attempt starts from
the closure's center, so there is nothing to undo.

The closure goes to the server in one gRPC message, which PySpark's client caps at 128 MiB after its
plan compression (as does the server's ``spark.connect.grpc.maxInboundMessageSize`` by default; 200 MiB
of random float32 weights were refused, 135 MiB passed): the weights plus the server step's momentum
must fit in it (see :data:`CLOSURE_LIMIT_BYTES`), and the server's driver must hold the task binary.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..parameter import codec
from ..utils.checks import check_single_output
from .data import ModelIO, arrow_to_numpy, conform, one_hot_encode, prepare_dataframe
from .driver import TrainingSettings, Validation, _next_window, make_validate
from .errors import guard, run_job
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
CLOSURE_LIMIT_BYTES = 120 << 20
"""Largest weights plus server-step state shipped in an epoch's closure: a Spark Connect client refuses to
send a plan message above 128 MiB (after compression), as the server's ``spark.connect.grpc.maxInboundMessageSize``
does by default."""
DEFAULT_REDUCER = "ring"


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
        "synchronous training on Spark Connect: %d partitions (barrier tasks)%s",
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


def make_stage_fn(
    epoch_fn: Callable[[Any], Iterator[TaskReport]],
    spec: ModelSpec,
    io: ModelIO,
    n_feat: int,
    n_cols: int,
    one_hot: int | None,
    val_fraction: float,
    val_batch_size: int,
) -> Callable:
    """The ``mapInArrow`` function of one epoch stage: Arrow batches in, report/validation/center rows out."""
    shapes = list(io.input_shapes)

    def stage(pid: int, batches: Iterator[Any]) -> Iterator[Any]:
        parts: list[list[np.ndarray]] = [[] for _ in range(n_cols)]
        for batch in batches:
            for i in range(n_cols):
                parts[i].append(arrow_to_numpy(batch.column(i)))
        if parts[0] and sum(len(p) for p in parts[0]):
            arrays = [np.concatenate(p) for p in parts]
            xs = [conform(a, s) for a, s in zip(arrays[:n_feat], shapes)]
            ys = [conform(a, (), float_cast=False) for a in arrays[n_feat:]]
            if one_hot:
                ys = [one_hot_encode(ys[0], one_hot)]
        else:
            xs, ys = [], []
        n = int(xs[0].shape[0]) if xs else 0
        cut = n - int(n * val_fraction)
        train = (pid, [x[:cut] for x in xs], [y[:cut] for y in ys])
        (report,) = list(epoch_fn([train]))
        info = {
            "rows": report.rows,
            "windows": report.windows,
            "batches": report.batches,
            "compute_s": report.compute_s,
            "exchange_s": report.exchange_s,
            "attempt": report.attempt,
            "metrics": report.metric_sums or {},
        }
        yield _row(pid, "report", 0, json.dumps(info).encode())
        if cut < n:
            model = cached_model(spec, report.center)
            vx, vy = [x[cut:] for x in xs], [y[cut:] for y in ys]
            logs = model.evaluate(unwrap(vx), unwrap(vy), batch_size=val_batch_size, verbose=0, return_dict=True)
            state = [np.asarray(v) for v in model.metrics_variables]
            values = np.array([float(v) for v in logs.values()], dtype=np.float64)  # JSON has no NaN
            yield _row(pid, "val", 0, _encode([values, *state], {"rows": n - cut, "logs": list(logs)}))
        if report.center is not None and pid == 0:
            weights, state = report.center, report.step_state or []
            payload = _encode(
                [*weights, *state],
                {"weights": len(weights), "state": len(state) if report.step_state is not None else -1},
            )
            for seq, start in enumerate(range(0, len(payload), CHUNK_BYTES)):
                yield _row(pid, "final", seq, payload[start : start + CHUNK_BYTES])

    guarded = guard(stage)

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        from pyspark import BarrierTaskContext

        yield from guarded(BarrierTaskContext.get().partitionId(), batches)

    return run


class EpochResult:
    """What the client reads back from one epoch stage."""

    def __init__(self, table: Any) -> None:
        self.reports: list[TaskReport] = []
        self.metrics = MetricSum()
        self.validation: list[tuple[int, dict[str, float], list[np.ndarray]]] = []
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
            elif kind == "final":
                chunks.append((int(seq), payload))
        if not chunks:
            raise RuntimeError("Expected the epoch's center from the task of partition 0, received none.")
        decoded = codec.decode(b"".join(p for _, p in sorted(chunks)))
        k, s = int(decoded.meta["weights"]), int(decoded.meta["state"])
        arrays = [np.array(a) for a in decoded.arrays]
        self.center = arrays[:k]
        self.step_state = None if s < 0 else arrays[k : k + s]


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
    """Train ``model`` synchronously on a DataFrame without a SparkContext (one barrier stage per epoch).

    Args:
        session: The session (Connect or classic) ``df`` belongs to.
        model: The driver's compiled Keras model, trained in place.
        spec: Its spec.
        io: Its input and output shapes.
        df: The training DataFrame.
        feature_cols: One column per model input (ml Vector, array or numeric).
        label_cols: One column per model output.
        settings: The fit's settings (synchronous strategy).
        workers: Partitions (barrier tasks) to train on.
        repartition: Repartition ``df`` to ``workers`` partitions (``False``: it has them already).
        one_hot: One-hot encode a class-index label to this width in the tasks.
        callbacks: Keras callbacks run on the client at epoch ends.
        validation_split: Fraction of every partition's rows (the last ones) held out and evaluated
            in the epoch's stage on its final center.
        validation: Driver-side validation arrays (``validation_data=(x, y)``).
        validation_frame: A validation DataFrame ``(df, feature cols, label cols)`` evaluated after each epoch.
        sample: ``(xs, ys)`` one row with a batch axis, to build the model's metrics with.
        reducer: The in-stage reducer, ``'ring'`` or ``'hub'``.

    Returns:
        A ``keras.callbacks.History`` (``windows``: the window of each epoch; ``partition_rows``: the
        training rows of each partition).

    Raises:
        ValueError: When the data is empty or the weights do not fit in a closure.
        elephas.engine.errors.TaskFailedError: When a task fails (with the executor's traceback).
    """
    from ..parameter.auth import new_secret
    from .frame_inference import evaluate_frame

    if not settings.strategy.synchronous:
        raise TypeError(f"fit_frame runs the synchronous strategy. Received: {settings.strategy.name!r}.")
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
        active = sum(1 for n in train_sizes if n)
        auto = settings.frequency == "auto"
        bounds = bounds_for("synchronous")
        window: list[Any] = [bounds.initial if auto else settings.frequency]
        step = settings.server_optimizer or default_server_step(active)
        logger.info(
            "synchronous training: %d partitions (%d rows: %s), rounds reduced inside the stage (%s "
            "all-reduce); server step %s; window %s",
            len(sizes),
            sum(train_sizes),
            train_sizes,
            reducer,
            step.get_config(),
            "auto" if auto else window[0],
        )
        windows_used: list[Any] = []
        held: dict[str, Any] = {}
        n_feat = len(feature_cols)

        def run_epoch(epoch: int, progress: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
            start = model.get_weights()
            check_closure_size(start, step.state())
            wplan = WindowPlan(settings.batch_size, window[0], settings.shuffle, settings.seed)
            rounds = max(wplan.windows(n) for n in train_sizes)
            config = {
                "kind": "collective",
                "reducer": reducer,
                "secret": new_secret().hex(),
                "step": step,
                "timeout": max(float(settings.server.get("timeout", 60.0)), 300.0),
            }
            epoch_fn = make_epoch_fn(
                spec, settings.runtime, wplan, epoch, start, config, master_learning_rate(model), rounds=rounds
            )
            fn = make_stage_fn(
                epoch_fn,
                spec,
                io,
                n_feat,
                len(cols),
                one_hot,
                validation_split,
                validation.batch_size if validation is not None else settings.batch_size,
            )
            table = run_job(lambda: prepared.mapInArrow(fn, STAGE_SCHEMA, barrier=True).toArrow(), "Training")
            result = EpochResult(table)
            model.set_weights(result.center)
            step.restore(result.step_state)
            windows_used.append(window[0])
            held["validation"] = result.validation
            means = result.metrics.means()
            progress(sum(train_sizes), means)
            if auto:
                window[0] = _next_window(result.reports, bounds, window[0], epoch)
            return means

        if validation_split:

            def validate() -> dict[str, float]:
                return merge_evaluations(held["validation"], model, sample)
        elif validation_frame is not None:
            vdf, vf, vl = validation_frame

            def validate() -> dict[str, float]:
                results = evaluate_frame(
                    vdf,
                    spec,
                    model.get_weights(),
                    io,
                    vf,
                    vl,
                    settings.runtime,
                    validation.batch_size if validation is not None else settings.batch_size,
                    one_hot,
                )
                return merge_evaluations(results, model, sample)
        else:
            validate = make_validate(None, model, spec, settings, validation, sample)
        history = run_epochs(
            model,
            settings.epochs,
            callbacks,
            settings.verbose,
            run_epoch,
            sum(train_sizes),
            validate,
            initial_epoch=settings.initial_epoch,
        )
        history.server_optimizer = step
        history.windows = windows_used
        history.partition_rows = train_sizes
        return history
    finally:
        prepared.unpersist()


def check_closure_size(
    weights: Sequence[np.ndarray], state: Sequence[np.ndarray] | None, limit: int = CLOSURE_LIMIT_BYTES
) -> int:
    """The bytes an epoch's closure carries; raise when Spark Connect would refuse the message.

    Example:
        >>> check_closure_size([np.zeros(4, np.float32)], None)
        16
    """
    size = sum(int(np.asarray(w).nbytes) for w in weights) + sum(int(np.asarray(s).nbytes) for s in state or [])
    if size > limit:
        raise ValueError(
            f"Expected the model's weights plus the server step's state to fit in one Spark Connect "
            f"message (at most {limit >> 20} MiB here; the server's "
            f"spark.connect.grpc.maxInboundMessageSize is 128 MiB by default). Received: {size >> 20} "
            "MiB. Use server_optimizer='sgd' (no momentum state), a smaller model, or a classic "
            "SparkSession."
        )
    return size


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
    """``SparkModel.fit`` without a SparkContext: numpy arrays or a DataFrame, synchronous mode.

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
