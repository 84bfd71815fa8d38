"""Executor side of synchronous training: one barrier task trains its partition for a whole epoch.

The task trains window after window of its partition and, after each window, hands
``Σ samples·Δ`` to the round's reducer (:mod:`.reducers`), which answers once every partition of
the round has pushed, with the new center; the task continues from it. There is no Spark job per
round: the epoch is one stage. Everything here depends on plain values only (model spec,
weights, settings); the Keras model is taken from the per-process cache, so an epoch after the
first builds nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .block_store import Block, Missing, block_size, resolve
from .errors import check_finite_logs
from .reducers import open_round_reducer
from .runtime import WorkerRuntime, prepare_worker
from .shipping import ModelSpec, cached_model
from .worker import WindowPlan, apply_learning_rate, take, train_window


class MissingBlockError(RuntimeError):
    """The staged files of a partition are not on the executor that runs its task."""


@dataclass(frozen=True)
class TaskReport:
    """What one task of an epoch stage reports back (plain values, one row per task)."""

    partition: int
    rows: int
    windows: int
    batches: int
    compute_s: float
    exchange_s: float
    attempt: str
    metric_sums: dict[str, float] | None = None
    """``Σ samples·value`` of every metric over the task's windows (set by ``'collective'`` stages)."""
    center: list[np.ndarray] | None = None
    """The center after the epoch's last round (``'collective'`` stages, rank 0 only)."""
    step_state: list[np.ndarray] | None = None
    """The server step's state after the epoch (``'collective'`` stages, rank 0 only)."""


def merge_blocks(pid: int, blocks: list[Block]) -> Block:
    """One block out of the blocks of a coalesced partition (rows concatenated in order)."""
    blocks = [b for b in blocks if block_size(b)]
    if not blocks:
        return pid, [], []
    if len(blocks) == 1:
        return pid, blocks[0][1], blocks[0][2]
    xs = [np.concatenate([b[1][i] for b in blocks]) for i in range(len(blocks[0][1]))]
    ys = [np.concatenate([b[2][j] for b in blocks]) for j in range(len(blocks[0][2] or []))]
    return pid, xs, ys


def task_identity() -> tuple[int, int, str]:
    """``(partition, taskAttemptId, attempt id)`` of the running (barrier) task."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return 0, 0, "driver"
    attempt = f"{ctx.stageId()}.{ctx.partitionId()}.{ctx.attemptNumber()}:{ctx.taskAttemptId()}"
    return ctx.partitionId(), ctx.taskAttemptId(), attempt


def make_epoch_fn(
    spec: ModelSpec,
    runtime: WorkerRuntime,
    plan: WindowPlan,
    epoch: int,
    start: list[np.ndarray],
    reducer: dict[str, Any],
    learning_rate: float | None = None,
    rounds: int | None = None,
):
    """Build the function one synchronous epoch stage runs in every (barrier) task.

    Args:
        spec: The model description.
        runtime: Worker thread and backend settings.
        plan: How rows are cut into batches and windows.
        epoch: The epoch (0-based).
        start: The center weights at the start of the epoch.
        reducer: The plain config of the round reducer (see :func:`.reducers.open_round_reducer`).
        learning_rate: The driver optimizer's learning rate (``None``: keep the worker's).
        rounds: The epoch's number of rounds (the most windows of any partition), for reducers in
            which every rank joins every round (``'collective'``): a task out of rows pushes a zero
            delta with 0 samples until then, and a task without rows joins all of them.

    Returns:
        A ``mapPartitions`` function yielding one :class:`TaskReport` per task. A task whose
        staged files are missing raises :class:`MissingBlockError` before its first round.
    """
    collective = reducer.get("kind") == "collective"
    if collective and rounds is None:
        raise ValueError("Expected the epoch's number of rounds for a 'collective' reducer, received None.")

    def run(items: Iterable[Any]) -> Iterator[TaskReport]:
        pid, task_attempt, attempt = task_identity()
        blocks = []
        for block in resolve(items):
            if isinstance(block, Missing):
                raise MissingBlockError(
                    f"Expected the staged block of partition {block.partition} on this "
                    "executor, received none (its local directory was cleaned or the task "
                    "ran elsewhere)."
                )
            blocks.append(block)
        _, xs, ys = merge_blocks(pid, blocks)
        rows = int(xs[0].shape[0]) if xs else 0
        windows = plan.windows(rows)
        if not windows and not collective:
            yield TaskReport(pid, 0, 0, 0, 0.0, 0.0, attempt)
            return
        if windows:
            prepare_worker(runtime)
            model = cached_model(spec, start)
            apply_learning_rate(model, learning_rate)
        exchange = open_round_reducer(reducer, str(pid), attempt, epoch, task_attempt, center=start)
        center = start
        compute = communicate = 0.0
        sums: dict[str, float] = {}
        try:
            for window in range(windows):
                idx = plan.window_rows(rows, epoch, pid, window)
                t0 = time.perf_counter()
                if len(idx) == rows and windows == 1:  # the window is the whole partition: no copy
                    logs = train_window(model, xs, ys, plan.batch_size, shuffle=plan.shuffle)
                else:
                    logs = train_window(model, take(xs, idx), take(ys, idx), plan.batch_size)
                check_finite_logs(logs, partition=pid, epoch=epoch, window=window)
                n = int(len(idx))
                scale = np.float32(n)
                delta = [(np.asarray(w) - c) * scale for w, c in zip(model.get_weights(), center)]
                t1 = time.perf_counter()
                center = exchange.exchange(delta, n, logs, window)
                model.set_weights(center)
                t2 = time.perf_counter()
                compute += t1 - t0
                communicate += t2 - t1
                for name, value in logs.items():
                    sums[name] = sums.get(name, 0.0) + n * float(value)
            if collective:
                idle = [(c - c) * np.float32(0) for c in start]  # the dtypes a delta of the model has
                for window in range(windows, int(rounds)):
                    t1 = time.perf_counter()
                    center = exchange.exchange(idle, 0, {}, window)
                    communicate += time.perf_counter() - t1
        finally:
            exchange.close()
        if not collective:
            yield TaskReport(pid, rows, windows, plan.batches(rows), compute, communicate, attempt)
            return
        final = pid == 0
        state = exchange.step.state() if final else None
        yield TaskReport(
            pid,
            rows,
            windows,
            plan.batches(rows),
            compute,
            communicate,
            attempt,
            sums,
            [np.asarray(c) for c in center] if final else None,
            state,
        )

    return run
