"""Asynchronous training through DataFrames alone: the parameter server inside the epoch's stage.

On a Spark Connect session the executors cannot be assumed to reach the client, so the parameter
server of the asynchronous modes (``'asynchronous'``, ``'hogwild'`` and the dist-keras rules) cannot
live there. Each epoch is one barrier ``mapInArrow`` stage (as the synchronous epochs of
:mod:`.frame_training`):

1. The task of rank 0 starts the project's :class:`~elephas.parameter.server.ParameterServer` (same
   service, codec, transports and authentication; the secret is fresh for every epoch and travels in
   the closure) from the epoch's center, bound to the address Spark lists for its executor, and every
   task learns that address from one ``BarrierTaskContext.allGather``.
2. Every task, rank 0 included, trains its partition with the worker loop of classic Spark
   (:func:`~elephas.engine.async_worker.make_async_epoch_fn`): pull, train a window, push, under the
   strategy's update rule, which only the server applies.
3. A second ``allGather`` tells rank 0 that every task is done (every push applied); tasks with held-out
   rows (``validation_split``) pull the final center and evaluate them, behind a third barrier then.
4. Rank 0 reads the final center, the window records and the server's statistics, stops the server in
   ``finally`` (its threads are joined, its port released) and answers with Arrow rows: records and
   statistics as JSON, the center in codec chunks. The client sets the weights, merges the epoch's
   metrics from the records by samples and runs validation and the Keras callbacks.

The asynchronous rules keep no server state besides the center (a strategy's ``server_apply`` is
stateless; DynSGD's staleness is counted within the stage), so nothing else carries over between
epochs; the server's version count starts at 0 in every epoch. A failed stage is retried by Spark as a
whole, from the center the client shipped, with a new server.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np

from .async_worker import make_async_epoch_fn
from .driver import epoch_metrics
from .frame_stage import (
    FrameEpochs,
    barrier_stage,
    center_rows,
    check_result_size,
    json_row,
    ship_start,
    stack_partition,
    stage_start,
    validation_row,
)
from .frame_weights import StageArrays
from .runtime import WorkerRuntime
from .shipping import ModelSpec
from .strategies.base import Strategy
from .windows import WindowSchedule
from .worker import WindowPlan, master_learning_rate

logger = logging.getLogger(__name__)

TIMING_KEYS = ("rows", "windows", "batches", "compute_s", "exchange_s")
"""What every task of an asynchronous stage tells rank 0 at its end (the automatic window's inputs)."""

SERVER_THREAD_PREFIX = "elephas-ps-"
"""The names of the parameter server's threads begin with this."""


def stage_host(context: Any) -> str:
    """The address the other tasks of a barrier stage reach this task at.

    The ``ELEPHAS_COLLECTIVE_HOST`` environment variable of the executor (as for the in-stage reducer),
    else the executor's host as Spark lists it in the barrier context's task infos.
    """
    from ..collective.barrier import HOST_ENV_VAR

    return os.environ.get(HOST_ENV_VAR) or context.getTaskInfos()[context.partitionId()].address.rpartition(":")[
        0
    ].strip("[]")


def make_async_stage_fn(
    spec: ModelSpec,
    io: Any,
    runtime: WorkerRuntime,
    plan: WindowPlan,
    strategy: Strategy,
    epoch: int,
    shipped: StageArrays,
    server: dict[str, Any],
    secret: str,
    learning_rate: float | None,
    n_feat: int,
    n_cols: int,
    one_hot: int | None,
    val_fraction: float,
    val_batch_size: int,
) -> Callable:
    """The ``mapInArrow`` function of one asynchronous epoch stage.

    Args:
        spec: The model description.
        io: Its input and output shapes.
        runtime: Worker thread and backend settings.
        plan: How rows are cut into batches and windows.
        strategy: The update rule.
        epoch: The epoch (0-based).
        shipped: The epoch's start center.
        server: The server's settings (:class:`~elephas.engine.config.ServerSettings`: transport,
            compression, client timeout, ``background_push``; its host and port are the task's).
        secret: The epoch's secret (hex).
        learning_rate: The client optimizer's learning rate (``None``: keep the worker's).
        n_feat: Feature columns (the rest are label columns).
        n_cols: All columns.
        one_hot: One-hot encode a class-index label to this width in the tasks.
        val_fraction: Fraction of every partition's rows (the last ones) held out and evaluated on the
            epoch's final center.
        val_batch_size: Batch size of that evaluation.

    Returns:
        A barrier ``mapInArrow`` function yielding rows of :data:`~elephas.engine.frame_stage.STAGE_SCHEMA`.
    """
    shapes = list(io.input_shapes)
    transport = server.transport
    timeout = server.timeout

    def stage(pid: int, batches: Iterator[Any]) -> Iterator[Any]:
        from pyspark import BarrierTaskContext

        from ..parameter.client import ParameterClient
        from ..parameter.server import ParameterServer

        xs, ys = stack_partition(batches, n_feat, n_cols, shapes, one_hot)
        n = int(xs[0].shape[0]) if xs else 0
        cut = n - int(n * val_fraction)
        context = BarrierTaskContext.get()
        host: ParameterServer | None = None
        final: tuple[list[np.ndarray], list[dict[str, Any]], dict[str, Any]] | None = None
        center: list[np.ndarray] | None = None
        try:
            if pid == 0:
                start, _ = stage_start(shipped)
                host = ParameterServer(
                    start,
                    copy.deepcopy(strategy),
                    mode=transport,
                    host=stage_host(context),
                    secret=secret,
                    compression=server.compression,
                    client_timeout_s=timeout,
                    expected_workers=len(context.getTaskInfos()),
                ).start()
                message = json.dumps({"host": host.host, "port": host.port, "max_payload_bytes": host.max_body_bytes})
            else:
                message = ""
            address = json.loads(context.allGather(message)[0])
            client_config = {
                "host": address["host"],
                "port": int(address["port"]),
                "mode": transport,
                "secret": secret,
                "compression": server.compression,
                "timeout": timeout,
                "max_payload_bytes": int(address["max_payload_bytes"]),
            }
            worker = make_async_epoch_fn(
                spec,
                runtime,
                client_config,
                plan,
                strategy,
                epoch,
                learning_rate,
                background_push=server.background_push,
            )
            done = list(worker(pid, [(pid, [x[:cut] for x in xs], [y[:cut] for y in ys])]))
            timing = {k: getattr(done[0], k) if done else 0 for k in TIMING_KEYS}
            timings = [json.loads(t) for t in context.allGather(json.dumps(timing))]  # every push is applied now
            if cut < n:
                if host is not None:
                    center, _ = host.state.pull()
                else:
                    with ParameterClient(**client_config) as client:
                        center, _ = client.pull()
            if val_fraction:
                context.barrier()  # every task holds the final center before the server stops
            if host is not None:
                weights, _ = host.state.pull()
                final = (weights, [r.to_dict() for r in host.state.records()], host.state.stats())
        finally:
            if host is not None:
                host.stop()
        if center is not None:
            yield validation_row(pid, spec, center, [x[cut:] for x in xs], [y[cut:] for y in ys], val_batch_size)
        if final is not None:
            weights, records, stats = final
            stats.update(
                tasks=timings,
                address=host.address,
                transport=transport,
                pid=os.getpid(),
                threads_left=[t.name for t in threading.enumerate() if t.name.startswith(SERVER_THREAD_PREFIX)],
            )
            yield json_row(pid, "records", records)
            yield json_row(pid, "stats", stats)
            yield from center_rows(pid, weights, None)

    return barrier_stage(stage)


class AsynchronousEpochs:
    """Asynchronous epoch stages of one fit on a DataFrame, the parameter server in the task of rank 0.

    Args:
        frame: What the fit's stages share.
    """

    def __init__(self, frame: FrameEpochs) -> None:
        settings = frame.settings
        self.frame = frame
        self.strategy = settings.strategy
        self.window = WindowSchedule(settings.frequency, self.strategy.name, frame.train_sizes, settings.batch_size)
        self.records: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []
        logger.info(
            "%s training: %d partitions (%d rows: %s), the parameter server (%s) inside every epoch's stage, "
            "in the task of rank 0; window %s",
            self.strategy.name,
            len(frame.train_sizes),
            sum(frame.train_sizes),
            frame.train_sizes,
            settings.server.transport,
            self.window.describe(),
        )
        check_result_size(sum(int(np.asarray(w).nbytes) for w in frame.model.get_weights()), "center")

    def __call__(self, epoch: int, progress: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
        """Run one epoch stage; return its metrics merged from the server's window records."""
        from ..parameter.auth import new_secret
        from ..parameter.state import WindowRecord

        f, settings = self.frame, self.frame.settings
        fn = make_async_stage_fn(
            f.spec,
            f.io,
            settings.runtime,
            WindowPlan(settings.batch_size, self.window.current, settings.shuffle, settings.seed),
            self.strategy,
            epoch,
            ship_start(f.session, f.model.get_weights(), None),
            settings.server,
            new_secret().hex(),
            master_learning_rate(f.model),
            f.n_feat,
            f.n_cols,
            f.one_hot,
            f.validation_split,
            f.val_batch_size,
        )
        result = f.run_stage(fn)
        f.model.set_weights(result.center)
        self.records.extend(result.records)
        self.stats.append(result.stats)
        logger.info(
            "epoch %d: parameter server stats: %s",
            epoch + 1,
            {k: v for k, v in result.stats.items() if k != "workers"},
        )
        merged = epoch_metrics([WindowRecord(**r) for r in result.records], epoch)
        progress(sum(f.train_sizes), merged.means())
        self.window.advance([SimpleNamespace(**t) for t in result.stats.get("tasks", [])], epoch)
        return merged.means()

    def finish(self, history: Any) -> None:
        """Set the fit's attributes on its History: ``window_records`` and ``server_stats`` (one per epoch)."""
        history.window_records = self.records
        history.server_stats = self.stats
        history.windows = self.window.used
