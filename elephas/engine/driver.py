"""Driver side of training: settings, validation, and synchronous training in one stage per epoch.

Synchronous training runs one Spark *barrier* stage per epoch over the staged blocks. Every task
trains its partition window by window and, after each window, exchanges ``Σ samples·Δ`` with the
other tasks through the round reducer (:mod:`.reducers`; by default the driver's parameter
server in its synchronous-rounds policy, :mod:`elephas.parameter.rounds`; with
``TrainingSettings.reducer`` ``'ring'`` or ``'hub'`` an all-reduce among the stage's tasks,
:mod:`elephas.collective`, the server step applied on every rank). A round closes when
every partition of the round has pushed; the sample-weighted mean delta goes through the server
step (:mod:`.server_optimizer`) and every task continues from the new center. Between epochs the
driver holds the center, validates, runs the Keras callbacks and records the History. There is
no Spark job per round: the Spark UI shows one job per epoch (plus validation).

Failures: the epoch stage's reports go through a one-partition shuffle, so that Spark restarts the
barrier stage as a whole when a task fails (a Python worker killed, out of memory; a barrier result
stage would abort the job instead); the epoch then restarts from the center the driver held at its
start (the server refuses the dead attempt's pushes; an in-stage reducer starts from the closure's
center). A stage that cannot
get all its task slots (an executor was lost) is cancelled after a grace period and the epoch
runs again on the slots that are left. Asynchronous strategies run through
:mod:`elephas.engine.async_driver`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .block_store import Block, StagedBlocks, block_size, resolve
from .config import REDUCERS, ServerSettings
from .errors import TaskFailedError, guard, run_job
from .history import MetricSum, run_epochs
from .inference import evaluate_blocks
from .resources import with_profile
from .runtime import WorkerRuntime
from .server_optimizer import ServerOptimizer
from .shipping import ModelSpec
from .stage_worker import MissingBlockError, TaskReport, make_epoch_fn, merge_blocks
from .strategies.base import Strategy
from .windows import WindowSchedule, default_server_step
from .worker import WindowPlan, master_learning_rate, unwrap

logger = logging.getLogger(__name__)


@dataclass
class TrainingSettings:
    """Plain settings of one ``fit`` call, shared by every strategy.

    ``frequency`` may be ``'auto'`` (the default of the synchronous, asynchronous and hogwild
    modes: a window chosen from measured compute and exchange times, see :mod:`.windows`);
    ``server_optimizer`` ``None`` is the synchronous rule's default server step (see
    :func:`.windows.default_server_step`); an instance keeps its momentum from one fit to the next.
    ``initial_epoch`` is the first epoch to run (``fit(..., initial_epoch=k)``); ``profile`` the
    ``pyspark.resource.ResourceProfile`` of the training stages (see :mod:`.resources`); ``reducer``
    where synchronous rounds are reduced: ``'server'`` (the driver's parameter server) or ``'ring'`` /
    ``'hub'`` (an all-reduce among the stage's tasks, :mod:`elephas.collective`).
    """

    strategy: Strategy
    frequency: str | int
    batch_size: int
    epochs: int
    verbose: int = 0
    shuffle: bool = True
    seed: int = 0
    runtime: WorkerRuntime = field(default_factory=WorkerRuntime)
    server_optimizer: ServerOptimizer | None = None
    server: ServerSettings = field(default_factory=ServerSettings)
    stage_blocks: bool = True
    initial_epoch: int = 0
    profile: Any = None
    reducer: str = "server"


def check_reducer(reducer: Any, synchronous: bool) -> str | None:
    """``reducer`` if it names a round reducer (``None``: the session's default), else a ``ValueError``.

    Example:
        >>> check_reducer("ring", synchronous=True)
        'ring'
    """
    if reducer is None:
        return None
    if not isinstance(reducer, str) or reducer not in REDUCERS:
        raise ValueError(f"Could not interpret reducer: {reducer!r}. Expected one of {list(REDUCERS)}.")
    if not synchronous:
        raise ValueError(
            "reducer chooses where synchronous rounds are reduced; the asynchronous modes exchange through "
            f"the parameter server. Received: reducer={reducer!r} with an asynchronous mode."
        )
    return reducer


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


def make_validate(
    sc: Any, model: Any, spec: ModelSpec, settings: TrainingSettings, validation: Validation | None, sample: Any
) -> Callable[[], dict[str, float]] | None:
    """The per-epoch validation function on the driver's current weights, if any."""
    if validation is None:
        return None
    if validation.arrays is not None:
        xv, yv = validation.arrays

        def on_driver() -> dict[str, float]:
            logs = model.evaluate(unwrap(xv), unwrap(yv), batch_size=validation.batch_size, verbose=0, return_dict=True)
            return {k: float(v) for k, v in logs.items()}

        return on_driver

    def distributed() -> dict[str, float]:
        return evaluate_blocks(
            sc,
            validation.blocks,
            spec,
            model.get_weights(),
            settings.runtime,
            validation.batch_size,
            model,
            sample,
            settings.profile,
        )

    return distributed


_POLL_S = 0.5
_MAX_REPLANS = 3
SLOT_GRACE_S = 30.0
"""How long a stage may lack task slots (an executor was lost) before it is cancelled and rerun."""


def task_slots(sc: Any) -> int:
    """How many tasks the cluster can run at once now (what a barrier stage needs)."""
    try:
        jsc = sc._jsc.sc()
        profile = jsc.resourceProfileManager().defaultResourceProfile()
        slots = int(jsc.maxNumConcurrentTasks(profile))
        if slots > 0:
            return slots
    except Exception:  # noqa: BLE001 - older Spark or no JVM access: fall back below
        logger.debug("maxNumConcurrentTasks unavailable", exc_info=True)
    return max(1, int(sc.defaultParallelism))


def fit_to_slots(blocks: Any, slots: int, cut: bool = False) -> Any:
    """``blocks`` with at most ``slots`` partitions, as a barrier stage can run them.

    A barrier stage needs every task scheduled at once, and Spark refuses a barrier stage whose
    lineage changes the number of partitions (``coalesce``, ``union``, ...). Blocks are therefore
    regrouped with a shuffle (partition ``p`` joins partition ``p mod slots``, rows kept in
    partition order), which also cuts such a lineage (``cut=True`` asks for that alone).
    """
    partitions = blocks.getNumPartitions()
    if partitions <= slots and not cut:
        return blocks
    target = min(partitions, slots)
    if partitions > slots:
        logger.info(
            "synchronous training: the data has %d partitions but the cluster runs %d tasks at once; "
            "coalescing to %d partitions (a barrier stage needs all its tasks scheduled together).",
            partitions,
            slots,
            target,
        )

    def keyed(pid: int, items: Any) -> Any:
        for block in resolve(items):
            if not isinstance(block, tuple):
                raise MissingBlockError(
                    f"Expected the staged block of partition {block.partition} on this executor, received none."
                )
            yield pid % target, (pid, block)

    def merge(pid: int, items: Any) -> Any:
        found = [block for _, (_, block) in sorted(items, key=lambda kv: kv[1][0])]
        yield merge_blocks(pid, found)

    return (
        blocks.mapPartitionsWithIndex(keyed)
        .partitionBy(target, lambda key: key)
        .mapPartitionsWithIndex(merge, preservesPartitioning=True)
    )


def epoch_metrics(records: list[Any], epoch: int) -> MetricSum:
    """Sample-weighted metrics of one epoch from the server's window records."""
    merged = MetricSum()
    for r in records:
        if r.epoch == epoch and r.samples > 0:
            merged.add(r.samples, r.metrics)
    return merged


class EpochProgress:
    """Reports an epoch's progress from the server's window records while its stage runs.

    A thread polls ``state.records()`` every half second and calls ``progress(samples, means)``
    (the progress bar and ``on_train_batch_end`` callbacks); :meth:`stop` ends and joins it.
    """

    def __init__(self, state: Any, epoch: int, total: int, progress: Callable[[int, dict[str, float]], None]) -> None:
        self._done = threading.Event()

        def poll() -> None:
            while not self._done.wait(_POLL_S):
                seen = epoch_metrics(state.records(), epoch)
                if seen.samples:
                    progress(min(seen.samples, total), seen.means())

        self._thread = threading.Thread(target=poll, name="elephas-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and join the thread."""
        self._done.set()
        self._thread.join()


class _SlotWatch:
    """Cancels a stage's job group when the cluster has fewer slots than the stage needs for
    longer than ``grace_s`` (Spark would otherwise wait for them forever)."""

    def __init__(self, sc: Any, group: str, needed: int, grace_s: float) -> None:
        self.sc, self.group, self.needed, self.grace_s = sc, group, needed, grace_s
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elephas-slot-watch", daemon=True)

    def _run(self) -> None:
        short_since: float | None = None
        while not self._done.wait(2.0):
            if task_slots(self.sc) >= self.needed:
                short_since = None
                continue
            short_since = short_since or time.monotonic()
            if time.monotonic() - short_since >= self.grace_s:
                self.fired = True
                logger.warning(
                    "the epoch stage needs %d task slots but the cluster has had fewer for %.0fs; "
                    "cancelling it to run the epoch again on the slots left.",
                    self.needed,
                    self.grace_s,
                )
                self.sc.cancelJobGroup(self.group)
                return

    def __enter__(self) -> _SlotWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()


class _Plan:
    """The staged data of a fit, re-planned when slots are lost or staged files vanish."""

    def __init__(self, sc: Any, blocks: Any, settings: TrainingSettings) -> None:
        self.sc, self.blocks, self.settings = sc, blocks, settings
        self.staged: StagedBlocks | None = None
        self.group = f"elephas-fit-{uuid.uuid4().hex[:12]}"
        self.replans = 0
        self.stage(task_slots(sc))

    def stage(self, slots: int, cut: bool = False) -> None:
        if self.staged is not None:
            self.staged.close()
            self.staged = None
        self.staged = StagedBlocks(fit_to_slots(self.blocks, slots, cut), self.settings.stage_blocks)
        self.sizes = self.staged.sizes

    def restage(self, replan: _Replan) -> None:
        self.replans += 1
        if self.replans > _MAX_REPLANS:
            raise RuntimeError(
                f"Expected the epoch stage to run after re-staging the data, received {replan.why} "
                f"{self.replans} times."
            ) from replan
        self.stage(replan.slots, replan.cut)

    def close(self) -> None:
        if self.staged is not None:
            self.staged.close()
            self.staged = None


def fit_synchronous(
    sc: Any,
    model: Any,
    spec: ModelSpec,
    blocks: Any,
    settings: TrainingSettings,
    callbacks: list[Any] | None = None,
    validation: Validation | None = None,
    sample: Any = None,
) -> Any:
    """Train ``model`` (the driver's master copy) synchronously, one barrier stage per epoch.

    Returns:
        A ``keras.callbacks.History`` with per-epoch loss and metrics merged by samples; its
        ``window_records`` attribute lists every round's per-partition record as a dict (empty
        when the rounds are all-reduced inside the stage: no process sees them all), and
        ``windows`` the window used in each epoch and ``job_group`` the Spark job group of its
        epoch stages.
    """
    strategy = settings.strategy
    if not strategy.synchronous:
        raise TypeError(f"fit_synchronous runs the synchronous strategy. Received: {strategy.name!r}.")
    plan = _Plan(sc, blocks, settings)
    try:
        return _fit(sc, model, spec, plan, settings, callbacks, validation, sample)
    finally:
        plan.close()


def _fit(
    sc: Any,
    model: Any,
    spec: ModelSpec,
    plan: _Plan,
    settings: TrainingSettings,
    callbacks: list[Any] | None,
    validation: Validation | None,
    sample: Any,
) -> Any:
    from ..parameter.rounds import RoundState
    from ..parameter.server import ParameterServer

    if sum(plan.sizes) == 0:
        raise ValueError("The training data is empty: every partition has 0 rows.")
    workers = sum(1 for n in plan.sizes if n)
    window = WindowSchedule(settings.frequency, "synchronous", plan.sizes, settings.batch_size)
    step = settings.server_optimizer or default_server_step(workers)
    timeout = max(settings.server.timeout, 300.0)
    in_stage = settings.reducer != "server"
    state = None if in_stage else RoundState(model.get_weights(), settings.strategy, step, round_timeout_s=timeout)
    server: Any = (
        contextlib.nullcontext()
        if in_stage
        else ParameterServer(
            model.get_weights(),
            settings.strategy,
            **settings.server.server_args(timeout=timeout),
            state=state,
            expected_workers=len(plan.sizes),
        )
    )
    with server:
        where = (
            f"inside the stage ({settings.reducer} all-reduce among the tasks)"
            if in_stage
            else f"by the parameter server at {server.address} ({server.mode})"
        )
        logger.info(
            "synchronous training: %d partitions (%d rows), rounds reduced %s; server step %s; window %s",
            len(plan.sizes),
            sum(plan.sizes),
            where,
            step.get_config(),
            window.describe(),
        )

        def run_epoch(epoch: int, progress: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
            start = model.get_weights()
            while True:
                wplan = WindowPlan(settings.batch_size, window.current, settings.shuffle, settings.seed)
                if in_stage:
                    rounds: int | None = max(wplan.windows(n) for n in plan.sizes)
                    config = collective_config(settings.reducer, step, timeout)
                else:
                    rounds, config = None, {"kind": "server", "client": server.client_config()}
                    counts = {str(p): wplan.windows(n) for p, n in enumerate(plan.sizes)}
                    state.begin_epoch(epoch, counts, start)  # start: a callback may have set the weights
                lr = master_learning_rate(model)
                fn = make_epoch_fn(spec, settings.runtime, wplan, epoch, start, config, lr, rounds=rounds)
                try:
                    reports = _run_stage(sc, plan, fn, state, epoch, settings, window.current, progress)
                    break
                except _Replan as replan:
                    if state is not None:
                        state.restart_epoch()
                    model.set_weights(start)
                    plan.restage(replan)
            if in_stage:
                center, merged = collective_result(reports, step)
            else:
                center, merged = state.pull()[0], epoch_metrics(state.records(), epoch)
            model.set_weights(center)
            progress(sum(plan.sizes), merged.means())
            window.advance(reports, epoch)
            return merged.means()

        validate = make_validate(sc, model, spec, settings, validation, sample)
        history = run_epochs(
            model,
            settings.epochs,
            callbacks,
            settings.verbose,
            run_epoch,
            sum(plan.sizes),
            validate,
            initial_epoch=settings.initial_epoch,
        )
        history.server_optimizer = step  # its momentum, for a fit that continues (initial_epoch)
        history.window_records = [] if state is None else [r.to_dict() for r in state.records()]
        history.windows = window.used
        history.job_group = plan.group
        if state is not None:
            logger.info("parameter server stats: %s", {k: v for k, v in state.stats().items() if k != "workers"})
    return history


def collective_config(kind: str, step: ServerOptimizer, timeout: float) -> dict[str, Any]:
    """The reducer config of one epoch stage whose rounds are all-reduced among its tasks.

    A fresh secret per stage signs the frames; ``step`` (with its state) travels in the config and every
    rank applies its own copy of it (see :class:`.reducers.CollectiveRounds`).
    """
    from ..parameter.auth import new_secret

    return {"kind": "collective", "reducer": kind, "secret": new_secret().hex(), "step": step, "timeout": timeout}


def collective_result(reports: list[TaskReport], step: ServerOptimizer) -> tuple[list[np.ndarray], MetricSum]:
    """The center and the epoch's merged metrics from the reports of an all-reduced stage.

    Rank 0 reports the final center and the server step's state; ``step`` (the driver's copy) takes
    that state, so the next epoch's config carries it.
    """
    final = [r for r in reports if r.center is not None]
    if len(final) != 1:
        raise RuntimeError(f"Expected the epoch's center from the task of partition 0, received {len(final)}.")
    step.restore(final[0].step_state)
    merged = MetricSum()
    for r in reports:
        if r.rows:
            merged.add_weighted(r.rows, r.metric_sums or {})
    return [np.asarray(c) for c in final[0].center], merged


class _Replan(Exception):
    """The epoch stage must run again on re-staged data (``slots`` partitions at most)."""

    def __init__(self, slots: int, why: str, cut: bool = False) -> None:
        super().__init__(why)
        self.slots, self.why, self.cut = slots, why, cut


def _run_stage(
    sc: Any,
    plan: _Plan,
    fn: Any,
    state: Any,
    epoch: int,
    settings: TrainingSettings,
    window: Any,
    progress: Callable[[int, dict[str, float]], None],
) -> list[TaskReport]:
    """Run one epoch's barrier stage; raise :class:`_Replan` when it must run again re-staged.

    ``state`` is the parameter server's round state, polled for progress while the stage runs
    (``None`` when the rounds are all-reduced inside the stage: progress comes at the epoch's end).
    """
    staged = plan.staged
    assert staged is not None
    workers = len(plan.sizes)
    group = plan.group
    description = f"elephas: epoch {epoch + 1}/{settings.epochs} (synchronous, {workers} workers, window {window})"
    guarded = guard(lambda pid, it: fn(it))
    rdd = with_profile(staged.rdd.barrier().mapPartitions(lambda it: guarded(_partition_id(), it)), settings.profile)
    watcher = EpochProgress(state, epoch, sum(plan.sizes), progress) if state is not None else None
    sc.setJobGroup(group, description, True)
    watch = _SlotWatch(sc, group, workers, SLOT_GRACE_S)
    try:
        with watch:
            # through a one-partition shuffle: Spark restarts a failed barrier stage only when it is a
            # shuffle map stage (a barrier result stage aborts the job)
            return run_job(lambda: rdd.repartition(1).collect(), "Training")
    except TaskFailedError as exc:
        if "MissingBlockError" in str(exc):
            logger.info(
                "epoch %d: staged block(s) not found on their executor; staging them again and "
                "running the epoch again from its first center",
                epoch + 1,
            )
            raise _Replan(task_slots(sc), "missing staged blocks") from exc
        raise
    except Exception as exc:
        if watch.fired or task_slots(sc) < workers:
            raise _Replan(task_slots(sc), "too few task slots") from None
        if "BarrierJobUnsupportedRDDChainException" in str(exc):
            logger.info(
                "the data's lineage changes its number of partitions, which a barrier stage does not "
                "allow; regrouping it with a shuffle once"
            )
            raise _Replan(task_slots(sc), "an unsupported lineage", cut=True) from None
        raise
    except BaseException:
        sc.cancelJobGroup(group)
        raise
    finally:
        if watcher is not None:
            watcher.stop()
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)


def _partition_id() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return ctx.partitionId() if ctx is not None else 0
