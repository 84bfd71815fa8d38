"""Executor side of asynchronous training: pull, train a window, push, repeat.

Runs in Spark's Python workers with plain values only (model spec, client settings, strategy);
the Keras model comes from the per-process cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from .block_store import Missing, block_size, resolve
from .errors import check_finite_logs
from .runtime import WorkerRuntime, prepare_worker
from .shipping import ModelSpec, cached_model
from .stage_worker import TaskReport
from .strategies.base import Strategy
from .worker import WindowPlan, apply_learning_rate, take


def attempt_id() -> str:
    """A unique id of the running Spark task attempt (``stage.partition.attempt:taskAttemptId``)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return "driver"
    return f"{ctx.stageId()}.{ctx.partitionId()}.{ctx.attemptNumber()}:{ctx.taskAttemptId()}"


def make_async_epoch_fn(
    spec: ModelSpec,
    runtime: WorkerRuntime,
    client_config: dict[str, Any],
    plan: WindowPlan,
    strategy: Strategy,
    epoch: int,
    learning_rate: float | None = None,
    background_push: bool = False,
):
    """Build the task function of one asynchronous epoch.

    Every task trains its partition (a block, or a staged block handle) window by window against
    the parameter server and yields a :class:`~elephas.engine.stage_worker.TaskReport` when done
    (rows, windows, batches, seconds spent training and exchanging, attempt id), or a
    :class:`~elephas.engine.block_store.Missing` when a staged block's files are not here. The
    tail after the last full window is trained (including the last partial batch) and flushed
    like any other window. The driver picks the next epoch's automatic window from the times.

    With ``background_push`` the push of a window (and the pull after it) runs in a helper thread
    while the next window trains; the worker then continues from the newest center it has
    received, which is one exchange behind (its own update in flight is not in it yet), and
    reports that center's version as ``version_seen``, so the server's staleness stays exact.
    The task waits for its last exchange before it returns, and an error of the helper thread
    is raised in the task.
    """

    def run(pid: int, blocks: Iterable[Any]) -> Iterator[TaskReport | Missing]:
        from ..parameter.background import BackgroundExchange
        from ..parameter.client import ParameterClient

        for block in resolve(blocks):
            if isinstance(block, Missing):
                yield block
                continue
            part, xs, ys = block
            rows = block_size((part, xs, ys))
            if not rows:
                continue
            prepare_worker(runtime)
            attempt = attempt_id()
            client = ParameterClient(**client_config)
            exchange = BackgroundExchange(client, name=str(part)) if background_push else None
            windows = batches = 0
            compute_s = exchange_s = 0.0
            try:
                start, version = client.pull()
                model = cached_model(spec, start)
                apply_learning_rate(model, learning_rate)
                for window in range(plan.windows(rows)):
                    idx = plan.window_rows(rows, epoch, part, window)
                    if idx is None or not len(idx):
                        break
                    began = time.perf_counter()
                    logs = strategy.train_window(model, take(xs, idx), take(ys, idx), plan.batch_size)
                    check_finite_logs(logs, partition=part, epoch=epoch, window=window)  # before any push
                    trained = time.perf_counter()
                    weights = model.get_weights()
                    # the client is free again once the exchange in flight is done
                    done = exchange.wait() if exchange is not None else None
                    center = None
                    if strategy.needs_center_pull:
                        center, version = client.pull()
                    update, continue_from = strategy.worker_update(weights, start, center, plan.batches(len(idx)))
                    push = {
                        "worker_id": str(part),
                        "attempt_id": attempt,
                        "version_seen": version,
                        "samples": int(len(idx)),
                        "metrics": logs,
                        "epoch": epoch,
                    }
                    if exchange is None:
                        if strategy.pull_after_push:  # one request: push, answered with C
                            _, start, version = client.push_and_pull(update, **push)
                        else:
                            version = client.push(update, **push)
                            start = continue_from
                    else:
                        exchange.submit(update, pull=strategy.pull_after_push, **push)
                        if not strategy.pull_after_push:
                            start = continue_from
                            if done is not None:
                                version = max(version, done.version)
                        elif done is not None:  # the newest center received; else keep ``start``
                            start, version = done.center, done.center_version
                    if start is not weights:
                        model.set_weights(start)
                    windows, batches = windows + 1, batches + plan.batches(len(idx))
                    compute_s += trained - began
                    exchange_s += time.perf_counter() - trained
                if exchange is not None:
                    exchange.wait()  # every update is applied before the task reports success
            finally:
                if exchange is not None:
                    exchange.close()
                client.close()
            yield TaskReport(part, rows, windows, batches, compute_s, exchange_s, attempt)

    return run
