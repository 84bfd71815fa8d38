"""Merge per-window metrics into per-epoch values, weighted by samples; run the epoch loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .errors import TaskFailedError

logger = logging.getLogger(__name__)


class MetricSum:
    """Accumulates ``samples·value`` per metric name and yields sample-weighted means."""

    def __init__(self) -> None:
        self.samples = 0
        self.sums: dict[str, float] = {}

    def add_weighted(self, samples: int, weighted: dict[str, float]) -> None:
        """Add metric values already multiplied by ``samples``."""
        self.samples += int(samples)
        for name, value in weighted.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)

    def add(self, samples: int, values: dict[str, float]) -> None:
        """Add plain per-window means observed over ``samples`` rows."""
        self.add_weighted(samples, {k: samples * float(v) for k, v in values.items()})

    def means(self) -> dict[str, float]:
        """Sample-weighted mean of every metric (empty when nothing was added)."""
        if self.samples <= 0:
            return {}
        return {name: total / self.samples for name, total in self.sums.items()}


def run_epochs(
    model: Any,
    epochs: int,
    callbacks: list[Any] | None,
    verbose: int,
    run_epoch: Callable[[int, Callable[[int, dict[str, float]], None]], dict[str, float]],
    steps_per_epoch: int | None,
    validate: Callable[[], dict[str, float]] | None = None,
    initial_epoch: int = 0,
    unit_name: str = "sample",
) -> Any:
    """Drive epochs on the driver with Keras callbacks, a History and a progress bar.

    Args:
        model: The driver's (master) Keras model; it must hold the current weights at epoch ends.
        epochs: Number of epochs.
        callbacks: Keras callbacks (EarlyStopping, ModelCheckpoint, TerminateOnNaN, custom ones).
        verbose: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.
        run_epoch: ``run_epoch(epoch, progress)`` trains one epoch and returns its merged logs;
            it calls ``progress(done, partial_logs)`` as work completes, ``done`` counting
            ``unit_name`` s (samples trained so far in this epoch, summed over all workers).
        steps_per_epoch: Progress bar target: the epoch's total in ``unit_name`` s (the number of
            training samples across all partitions), if known.
        validate: Returns validation logs (without the ``val_`` prefix) for the current weights.
        initial_epoch: Epoch to start from (0-based, as in ``keras.Model.fit``). A
            ``keras.callbacks.BackupAndRestore`` that finds a backup in ``on_train_begin`` sets the
            model's weights and the epoch to resume from, which then replaces this value, as in Keras.
        unit_name: What ``steps_per_epoch`` and ``done`` count, shown in the bar's time per unit.

    Returns:
        The ``keras.callbacks.History``. When a worker's loss becomes NaN or infinite
        (:class:`~elephas.engine.errors.NonFiniteLossError`) and ``callbacks`` holds a
        ``keras.callbacks.TerminateOnNaN``, training stops as in Keras: that epoch is recorded
        with the non-finite loss and no further epoch runs; without it the error is raised.
    """
    import keras

    history = keras.callbacks.History()
    cbs = keras.callbacks.CallbackList(
        list(callbacks or []) + [history],
        add_history=False,
        add_progbar=False,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    terminate_on_nan = any(isinstance(c, keras.callbacks.TerminateOnNaN) for c in callbacks or [])
    model.stop_training = False
    cbs.on_train_begin()
    restored = getattr(model, "_initial_epoch", None)  # set by keras.callbacks.BackupAndRestore
    if restored:
        logger.info("resuming from the backup at epoch %d (of %d)", int(restored), epochs)
        initial_epoch = int(restored)
    if hasattr(model, "_initial_epoch"):
        model._initial_epoch = None  # consumed: a later fit without a backup starts where it is told
    for epoch in range(initial_epoch, epochs):
        cbs.on_epoch_begin(epoch)
        bar = keras.utils.Progbar(steps_per_epoch, verbose=1, unit_name=unit_name) if verbose == 1 else None
        if verbose:
            logger.info("Epoch %d/%d", epoch + 1, epochs)

        seen = [0, 0]  # units done, progress calls (the callbacks' batch index)

        def progress(done: int, logs: dict[str, float], _bar=bar, _seen=seen) -> None:
            _seen[0] = done
            cbs.on_train_batch_end(_seen[1], logs)
            _seen[1] += 1
            if _bar is not None:
                _bar.stateful_metrics.update(logs)
                _bar.update(done, values=list(logs.items()))

        started = time.perf_counter()
        try:
            logs = dict(run_epoch(epoch, progress))
        except TaskFailedError as err:
            if not (err.non_finite_loss and terminate_on_nan):
                raise
            logger.warning("%s", err.args[0].splitlines()[0])
            logs = {"loss": float("nan")}
            cbs.on_train_batch_end(seen[1], logs)  # TerminateOnNaN sets model.stop_training
            model.stop_training = True
        if validate is not None and not getattr(model, "stop_training", False):
            logs.update({f"val_{k}": v for k, v in validate().items()})
        elapsed = time.perf_counter() - started
        if bar is not None:
            bar.stateful_metrics.update(logs)
            bar.update(steps_per_epoch or seen[0], values=list(logs.items()), finalize=True)
        logger.log(
            logging.INFO if verbose else logging.DEBUG,
            "epoch %d/%d done in %.2fs: %s",
            epoch + 1,
            epochs,
            elapsed,
            " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()),
        )
        cbs.on_epoch_end(epoch, logs)
        if getattr(model, "stop_training", False):
            logger.info("training stopped by a callback after epoch %d", epoch + 1)
            break
    cbs.on_train_end(history.history and {k: v[-1] for k, v in history.history.items()})
    return history
