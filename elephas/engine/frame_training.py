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

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..utils.checks import check_single_output
from .data import ModelIO, one_hot_encode, prepare_dataframe
from .driver import TrainingSettings, Validation, make_validate
from .frame_stage import (
    DEFAULT_REDUCER,
    FrameEpochs,
    check_result_size,
    choose_workers,
    make_stage_fn,
    partition_rows,
    ship_start,
)
from .history import run_epochs
from .inference import merge_evaluations
from .prepare import columns
from .shipping import ModelSpec
from .windows import WindowSchedule, default_server_step
from .worker import WindowPlan, master_learning_rate

logger = logging.getLogger(__name__)


class SynchronousEpochs:
    """Synchronous epoch stages: rounds all-reduced inside the stage, the server step on every rank."""

    def __init__(self, frame: FrameEpochs, reducer: str) -> None:
        settings = frame.settings
        self.frame, self.reducer = frame, reducer
        self.window = WindowSchedule(settings.frequency, "synchronous", frame.train_sizes, settings.batch_size)
        self.step = settings.server_optimizer or default_server_step(sum(1 for n in frame.train_sizes if n))
        logger.info(
            "synchronous training: %d partitions (%d rows: %s), rounds reduced inside the stage (%s "
            "all-reduce); server step %s; window %s",
            len(frame.train_sizes),
            sum(frame.train_sizes),
            frame.train_sizes,
            reducer,
            self.step.get_config(),
            self.window.describe(),
        )
        weights = sum(int(np.asarray(w).nbytes) for w in frame.model.get_weights())
        momentum = self.step.name != "sgd"
        check_result_size(weights * (2 if momentum else 1), "center and momentum" if momentum else "center")

    def __call__(self, epoch: int, progress: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
        """Run one epoch stage; return its metrics."""
        from ..parameter.auth import new_secret

        f, settings = self.frame, self.frame.settings
        shipped = ship_start(f.session, f.model.get_weights(), self.step.state())
        wplan = WindowPlan(settings.batch_size, self.window.current, settings.shuffle, settings.seed)
        config = {
            "kind": "collective",
            "reducer": self.reducer,
            "secret": new_secret().hex(),
            "step": stateless(self.step),
            "timeout": max(settings.server.timeout, 300.0),
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
        means = result.metrics.means()
        progress(sum(f.train_sizes), means)
        self.window.advance(result.reports, epoch)
        return means

    def finish(self, history: Any) -> None:
        """Set the fit's attributes on its History."""
        history.server_optimizer = self.step
        history.windows = self.window.used


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
        fcols, lcols = columns(features_col), columns(label_col)
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
            vf, vl = columns(features_col), columns(label_col)
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
