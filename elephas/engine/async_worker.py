"""Executor side of asynchronous training: pull, train a window, push, repeat.

Runs in Spark's Python workers with plain values only (model spec, client settings, strategy);
the Keras model comes from the per-process cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .data import Block, block_size
from .runtime import WorkerRuntime, prepare_worker
from .shipping import ModelSpec, cached_model
from .strategies.base import Strategy
from .worker import WindowPlan, apply_learning_rate, take


def attempt_id() -> str:
    """A unique id of the running Spark task attempt (``stage.partition.attempt:taskAttemptId``)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return "driver"
    return f"{ctx.stageId()}.{ctx.partitionId()}.{ctx.attemptNumber()}:{ctx.taskAttemptId()}"


def make_async_epoch_fn(spec: ModelSpec, runtime: WorkerRuntime, client_config: dict[str, Any],
                        plan: WindowPlan, strategy: Strategy, epoch: int,
                        learning_rate: float | None = None):
    """Build the task function of one asynchronous epoch.

    Every task trains its partition window by window against the parameter server and yields
    ``(partition, rows, attempt_id)`` when done. The tail after the last full window is trained
    (including the last partial batch) and flushed like any other window.
    """

    def run(pid: int, blocks: Iterable[Block]) -> Iterator[tuple[int, int, str]]:
        from ..parameter.client import ParameterClient

        for part, xs, ys in blocks:
            rows = block_size((part, xs, ys))
            if not rows:
                continue
            prepare_worker(runtime)
            attempt = attempt_id()
            client = ParameterClient(**client_config)
            try:
                start, version = client.pull()
                model = cached_model(spec, start)
                apply_learning_rate(model, learning_rate)
                for window in range(plan.windows(rows)):
                    idx = plan.window_rows(rows, epoch, part, window)
                    if idx is None or not len(idx):
                        break
                    logs = strategy.train_window(model, take(xs, idx), take(ys, idx), plan.batch_size)
                    weights = model.get_weights()
                    center = None
                    if strategy.needs_center_pull:
                        center, version = client.pull()
                    update, continue_from = strategy.worker_update(
                        weights, start, center, plan.batches(len(idx)))
                    version = client.push(update, worker_id=str(part), attempt_id=attempt,
                                          version_seen=version, samples=int(len(idx)),
                                          metrics=logs, epoch=epoch)
                    if strategy.pull_after_push:
                        start, version = client.pull()
                    else:
                        start = continue_from
                    model.set_weights(start)
            finally:
                client.close()
            yield part, rows, attempt

    return run
