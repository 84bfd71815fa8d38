"""Executor-side building blocks shared by every mode: window plans, window training, learning rate.

Everything here runs in Spark's Python workers and depends on plain values only; the synchronous
epoch task is :mod:`.stage_worker`, the asynchronous one :mod:`.async_worker`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .windows import window_batches


@dataclass(frozen=True)
class WindowPlan:
    """How a partition's rows are cut into batches and communication windows."""

    batch_size: int
    frequency: str | int
    shuffle: bool
    seed: int

    def batches(self, rows: int) -> int:
        """Number of batches of a partition with ``rows`` rows (the last one may be partial)."""
        return math.ceil(rows / self.batch_size) if rows else 0

    def windows(self, rows: int) -> int:
        """Number of communication windows in one epoch of a partition."""
        nb = self.batches(rows)
        return math.ceil(nb / window_batches(self.frequency, nb)) if nb else 0

    def order(self, rows: int, epoch: int, partition: int) -> np.ndarray:
        """The row order of an epoch (a seeded permutation when shuffling)."""
        if not self.shuffle:
            return np.arange(rows)
        rng = np.random.default_rng([self.seed, epoch, partition])
        return rng.permutation(rows)

    def window_rows(self, rows: int, epoch: int, partition: int, window: int) -> np.ndarray | None:
        """Row indices of window ``window`` of an epoch, or ``None`` once the partition is done."""
        nb = self.batches(rows)
        per = window_batches(self.frequency, nb)
        start = window * per
        if start >= nb:
            return None
        order = self.order(rows, epoch, partition)
        return order[start * self.batch_size : min(rows, (start + per) * self.batch_size)]


def take(arrays: list[np.ndarray], idx: np.ndarray) -> list[np.ndarray]:
    """Rows ``idx`` of each array (a view when ``idx`` is a contiguous range)."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1 and np.all(np.diff(idx) == 1):
        a, b = int(idx[0]), int(idx[-1]) + 1
        return [x[a:b] for x in arrays]
    return [x[idx] for x in arrays]


def unwrap(arrays: list[np.ndarray]) -> Any:
    """A single array for single-input/output models, else the list."""
    return arrays[0] if len(arrays) == 1 else list(arrays)


_LOOP_BATCHES = 64
"""Windows of at most this many batches are trained batch by batch (``train_on_batch``), which
costs far less per call than ``Model.fit``; longer ones go through ``fit``."""


def train_window(
    model: Any, xs: list[np.ndarray], ys: list[np.ndarray], batch_size: int, shuffle: bool = False
) -> dict[str, float]:
    """Train one window with the model's own compiled optimizer; return its mean metrics.

    Short windows are trained batch by batch and their metrics averaged over the batches weighted
    by rows (exact for the loss and mean metrics such as accuracy); long ones through ``fit``.

    ``shuffle`` lets Keras visit the window's batches in random order (used when the window is a
    whole partition, which saves copying the partition into a permuted order first).
    """
    n = int(xs[0].shape[0])
    batches = math.ceil(n / batch_size)
    if batches <= _LOOP_BATCHES and not (shuffle and batches > 1):
        sums: dict[str, float] = {}
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            logs = model.train_on_batch(
                unwrap([x[start:stop] for x in xs]), unwrap([y[start:stop] for y in ys]), return_dict=True
            )
            for name, value in logs.items():  # the window's mean: batch values weighted by rows
                sums[name] = sums.get(name, 0.0) + float(value) * (stop - start)
        return {name: total / n for name, total in sums.items()}
    history = model.fit(unwrap(xs), unwrap(ys), batch_size=batch_size, epochs=1, shuffle=shuffle, verbose=0)
    return {k: float(v[-1]) for k, v in history.history.items()}


def master_learning_rate(model: Any) -> float | None:
    """The driver optimizer's current learning rate, or ``None`` when it follows a schedule.

    Shipped with every round so Keras callbacks that change it on the driver (ReduceLROnPlateau,
    LearningRateScheduler, elephas' plateau schedule) reach the workers.
    """
    import keras

    opt = getattr(model, "optimizer", None)
    if opt is None or isinstance(getattr(opt, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule):
        return None
    return float(keras.ops.convert_to_numpy(opt.learning_rate))


def apply_learning_rate(model: Any, value: float | None) -> None:
    """Give the worker model's optimizer the driver's learning rate (its state is kept)."""
    if value is None:
        return
    current = model.optimizer.learning_rate
    if hasattr(current, "assign"):
        if float(current.numpy() if hasattr(current, "numpy") else current) != value:
            current.assign(value)
    else:
        model.optimizer.learning_rate = value
