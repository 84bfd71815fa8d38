"""Driver side of training: validate, plan, run rounds, merge, history and callbacks.

Synchronous rounds are Spark jobs: broadcast the weights, every partition trains one
communication window, the driver sums ``samples·Δ`` and applies the sample-weighted mean (through
the optional server optimizer). A retried task is harmless because the driver only merges what
the job returned. Asynchronous strategies run through :mod:`elephas.engine.async_driver`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .block_store import Missing, StagedBlocks
from .data import Block, block_size
from .errors import guard, run_job
from .history import MetricSum, run_epochs
from .inference import evaluate_blocks
from .runtime import WorkerRuntime
from .server_optimizer import ServerOptimizer
from .shipping import ModelSpec
from .strategies.averaging import SynchronousAveraging
from .strategies.base import Strategy
from .worker import WindowPlan, make_round_fn, master_learning_rate, merge_round, unwrap

logger = logging.getLogger(__name__)

_COLLECT_LIMIT = 16


@dataclass
class TrainingSettings:
    """Plain settings of one ``fit`` call, shared by every strategy."""

    strategy: Strategy
    frequency: str | int
    batch_size: int
    epochs: int
    verbose: int = 0
    shuffle: bool = True
    seed: int = 0
    runtime: WorkerRuntime = field(default_factory=WorkerRuntime)
    server_optimizer: ServerOptimizer = field(default_factory=ServerOptimizer)
    server: dict[str, Any] = field(default_factory=dict)
    stage_blocks: bool = True


@dataclass
class Validation:
    """Where validation metrics come from: held-out blocks (distributed) or driver-side arrays."""

    blocks: Any = None
    arrays: tuple[list[np.ndarray], list[np.ndarray]] | None = None
    batch_size: int = 32


def split_validation(blocks: Any, fraction: float) -> tuple[Any, Any]:
    """Hold out the last ``fraction`` of every block's rows for validation."""

    def head(block: Block) -> Block:
        pid, xs, ys = block
        n = block_size(block)
        cut = n - int(n * fraction)
        return pid, [x[:cut] for x in xs], [y[:cut] for y in ys]

    def tail(block: Block) -> Block:
        pid, xs, ys = block
        n = block_size(block)
        cut = n - int(n * fraction)
        return pid, [x[cut:] for x in xs], [y[cut:] for y in ys]

    return blocks.map(head, preservesPartitioning=True), blocks.map(tail, preservesPartitioning=True)


def _add(a: tuple | None, b: tuple | None) -> tuple | None:
    if a is None or b is None:
        return a if b is None else b
    return merge_round(a, b)


def reduce_rounds(rdd: Any, partitions: int) -> tuple[tuple | None, list[int]]:
    """Sum the round results of all partitions.

    Returns:
        ``(result, missing)``: the summed result (``None`` if no partition had rows) and the
        partitions whose staged block could not be mapped (see :mod:`.block_store`).
    """
    if partitions <= _COLLECT_LIMIT:
        items = run_job(rdd.collect, "Training round")
        missing = [m.partition for m in items if isinstance(m, Missing)]
        results = [r for r in items if not isinstance(r, Missing)]
        return (functools.reduce(merge_round, results) if results else None), missing

    def seq(acc: tuple, item: Any) -> tuple:
        if isinstance(item, Missing):
            return acc[0], acc[1] + [item.partition]
        return _add(acc[0], item), acc[1]

    def comb(a: tuple, b: tuple) -> tuple:
        return _add(a[0], b[0]), a[1] + b[1]

    return run_job(lambda: rdd.treeAggregate((None, []), seq, comb, depth=2), "Training round")


def run_round(staged: StagedBlocks, fn: Callable, partitions: int) -> tuple | None:
    """One synchronous round over the staged blocks, partitions whose files went missing
    trained from the original blocks in the same round."""
    result, missing = reduce_rounds(staged.rdd.mapPartitionsWithIndex(fn), partitions)
    if missing:
        logger.info("round: %d staged block(s) not found on their executor; reading them from "
                    "Spark instead", len(missing))
        for item in staged.rerun(fn, missing, "Training round"):
            result = _add(result, item)
    return result


def make_validate(sc: Any, model: Any, spec: ModelSpec, settings: TrainingSettings,
                  validation: Validation | None, sample: Any) -> Callable[[], dict[str, float]] | None:
    """The per-epoch validation function on the driver's current weights, if any."""
    if validation is None:
        return None
    if validation.arrays is not None:
        xv, yv = validation.arrays

        def on_driver() -> dict[str, float]:
            logs = model.evaluate(unwrap(xv), unwrap(yv), batch_size=validation.batch_size,
                                  verbose=0, return_dict=True)
            return {k: float(v) for k, v in logs.items()}

        return on_driver

    def distributed() -> dict[str, float]:
        return evaluate_blocks(sc, validation.blocks, spec, model.get_weights(), settings.runtime,
                               validation.batch_size, model, sample)

    return distributed


def fit_synchronous(sc: Any, model: Any, spec: ModelSpec, blocks: Any, settings: TrainingSettings,
                    callbacks: list[Any] | None = None, validation: Validation | None = None,
                    sample: Any = None) -> Any:
    """Train ``model`` (the driver's master copy) with synchronous rounds over ``blocks``.

    Returns:
        A ``keras.callbacks.History`` with per-epoch loss and metrics merged by samples.
    """
    strategy = settings.strategy
    if not isinstance(strategy, SynchronousAveraging):
        raise TypeError(f"fit_synchronous runs the synchronous strategy. Received: {strategy.name!r}.")
    with StagedBlocks(blocks, settings.stage_blocks) as staged:
        return _fit_staged(sc, model, spec, staged, settings, callbacks, validation, sample)


def _fit_staged(sc: Any, model: Any, spec: ModelSpec, staged: StagedBlocks, settings: TrainingSettings,
                callbacks: list[Any] | None, validation: Validation | None, sample: Any) -> Any:
    strategy = settings.strategy
    sizes = staged.sizes
    if sum(sizes) == 0:
        raise ValueError("The training data is empty: every partition has 0 rows.")
    plan = WindowPlan(settings.batch_size, settings.frequency, settings.shuffle, settings.seed)
    rounds = max(plan.windows(n) for n in sizes)
    logger.info("synchronous training: %d partitions (%d rows), %d round(s) per epoch",
                len(sizes), sum(sizes), rounds)
    server_opt = settings.server_optimizer
    runtime = settings.runtime

    def run_epoch(epoch: int, progress: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
        metrics = MetricSum()
        for window in range(rounds):
            start = model.get_weights()
            bc = sc.broadcast(start)
            try:
                fn = guard(make_round_fn(spec, runtime, bc, plan, epoch, window,
                                         master_learning_rate(model)))
                result = run_round(staged, fn, len(sizes))
            finally:
                bc.unpersist()
            if result is None:
                continue
            samples, weighted_delta, weighted_metrics = result
            delta = strategy.average(weighted_delta, samples)
            model.set_weights(server_opt.apply(start, delta))
            metrics.add_weighted(samples, weighted_metrics)
            progress(window + 1, metrics.means())
        return metrics.means()

    validate = make_validate(sc, model, spec, settings, validation, sample)
    return run_epochs(model, settings.epochs, callbacks, settings.verbose, run_epoch, rounds, validate)
