"""Executor side of synchronous training: one communication window of one partition per task.

Everything here runs in Spark's Python workers and depends on plain values only (model spec,
weights, settings); the Keras model is taken from the per-process cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .block_store import Missing, resolve
from .data import block_size
from .modes import window_batches
from .runtime import WorkerRuntime, prepare_worker
from .shipping import ModelSpec, cached_model


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
        return order[start * self.batch_size: min(rows, (start + per) * self.batch_size)]


def take(arrays: list[np.ndarray], idx: np.ndarray) -> list[np.ndarray]:
    """Rows ``idx`` of each array (a view when ``idx`` is a contiguous range)."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1 and np.all(np.diff(idx) == 1):
        a, b = int(idx[0]), int(idx[-1]) + 1
        return [x[a:b] for x in arrays]
    return [x[idx] for x in arrays]


def unwrap(arrays: list[np.ndarray]) -> Any:
    """A single array for single-input/output models, else the list."""
    return arrays[0] if len(arrays) == 1 else list(arrays)


def train_window(model: Any, xs: list[np.ndarray], ys: list[np.ndarray], batch_size: int,
                 shuffle: bool = False) -> dict[str, float]:
    """Train one window with the model's own compiled optimizer; return its mean metrics.

    ``shuffle`` lets Keras visit the window's batches in random order (used when the window is a
    whole partition, which saves copying the partition into a permuted order first).
    """
    n = int(xs[0].shape[0])
    if n <= batch_size:
        logs = model.train_on_batch(unwrap(xs), unwrap(ys), return_dict=True)
        return {k: float(v) for k, v in logs.items()}
    history = model.fit(unwrap(xs), unwrap(ys), batch_size=batch_size, epochs=1, shuffle=shuffle,
                        verbose=0)
    return {k: float(v[-1]) for k, v in history.history.items()}


def master_learning_rate(model: Any) -> float | None:
    """The driver optimizer's current learning rate, or ``None`` when it follows a schedule.

    Shipped with every round so Keras callbacks that change it on the driver (ReduceLROnPlateau,
    LearningRateScheduler, elephas' plateau schedule) reach the workers.
    """
    import keras

    opt = getattr(model, "optimizer", None)
    if opt is None or isinstance(getattr(opt, "_learning_rate", None),
                                 keras.optimizers.schedules.LearningRateSchedule):
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


def make_round_fn(spec: ModelSpec, runtime: WorkerRuntime, broadcast: Any, plan: WindowPlan,
                  epoch: int, window: int, learning_rate: float | None = None):
    """Build the function one synchronous round runs on every block.

    It runs over blocks or staged block handles and yields ``(samples, Σ samples·Δ, {metric:
    samples·value})`` for partitions that had rows in this window, nothing for the others, and a
    :class:`~elephas.engine.block_store.Missing` for a staged block whose files are not here.
    """

    def run(pid: int, blocks: Iterable[Any]) -> Iterator[tuple[int, list[np.ndarray], dict[str, float]] | Missing]:
        for block in resolve(blocks):
            if isinstance(block, Missing):
                yield block
                continue
            part, xs, ys = block
            rows = block_size((part, xs, ys))
            idx = plan.window_rows(rows, epoch, part, window) if rows else None
            if idx is None or not len(idx):
                continue
            prepare_worker(runtime)
            start = broadcast.value
            model = cached_model(spec, start)
            apply_learning_rate(model, learning_rate)
            if len(idx) == rows:  # the window is the whole partition: no permuted copy
                logs = train_window(model, xs, ys, plan.batch_size, shuffle=plan.shuffle)
            else:
                logs = train_window(model, take(xs, idx), take(ys, idx), plan.batch_size)
            k = int(len(idx))
            kf = np.float32(k)
            delta = [(np.asarray(w) - w0) * kf for w, w0 in zip(model.get_weights(), start)]
            yield k, delta, {name: k * value for name, value in logs.items()}

    return run


def merge_round(a: tuple, b: tuple) -> tuple:
    """Add two round results (sample counts, weighted deltas, weighted metrics)."""
    metrics = dict(a[2])
    for name, value in b[2].items():
        metrics[name] = metrics.get(name, 0.0) + value
    return a[0] + b[0], [x + y for x, y in zip(a[1], b[1])], metrics
