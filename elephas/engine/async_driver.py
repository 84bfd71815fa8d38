"""Driver side of asynchronous training through the parameter server in the driver.

The server is started before the first epoch and stopped in ``finally`` (also when training
raises or is interrupted). Each epoch is one Spark stage whose tasks pull, train a window and
push; between stages the driver copies the center weights into the master model, builds the
epoch's history from the workers' window records (weighted by samples), validates and runs the
Keras callbacks — so EarlyStopping and friends work as with plain Keras.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from ..parameter.server import ParameterServer
from .async_worker import make_async_epoch_fn
from .block_store import Missing, StagedBlocks
from .driver import EpochProgress, TrainingSettings, Validation, epoch_metrics, make_validate
from .errors import guard, run_job
from .history import run_epochs
from .resources import with_profile
from .shipping import ModelSpec
from .windows import WindowSchedule
from .worker import WindowPlan, master_learning_rate

logger = logging.getLogger(__name__)


def fit_asynchronous(
    sc: Any,
    model: Any,
    spec: ModelSpec,
    blocks: Any,
    settings: TrainingSettings,
    callbacks: list[Any] | None = None,
    validation: Validation | None = None,
    sample: Any = None,
) -> Any:
    """Train ``model`` asynchronously with ``settings.strategy`` through a parameter server.

    Returns:
        A ``keras.callbacks.History`` with per-epoch loss and metrics merged by samples; its
        ``window_records`` attribute lists every window record as a dict.
    """
    with StagedBlocks(blocks, settings.stage_blocks) as staged:
        return _fit_staged(sc, model, spec, staged, settings, callbacks, validation, sample)


def _fit_staged(
    sc: Any,
    model: Any,
    spec: ModelSpec,
    staged: StagedBlocks,
    settings: TrainingSettings,
    callbacks: list[Any] | None,
    validation: Validation | None,
    sample: Any,
) -> Any:
    strategy = settings.strategy
    sizes = staged.sizes
    total = sum(sizes)
    if total == 0:
        raise ValueError("The training data is empty: every partition has 0 rows.")
    window = WindowSchedule(settings.frequency, strategy.name, sizes, settings.batch_size)
    group = f"elephas-{uuid.uuid4().hex[:12]}"
    server = ParameterServer(
        model.get_weights(),
        strategy,
        **settings.server.server_args(),
        expected_workers=len(sizes),
    )
    with server:
        client_config = server.client_config()
        state = server.state
        logger.info(
            "%s training: %d partitions (%d rows), parameter server at %s (%s); window %s",
            strategy.name,
            len(sizes),
            total,
            server.address,
            server.mode,
            window.describe(),
        )

        def run_epoch(epoch: int, progress: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
            if state.set_center(model.get_weights()):  # a callback (BackupAndRestore) set the weights
                logger.info("epoch %d starts from the driver model's weights set by a callback", epoch + 1)
            plan = WindowPlan(settings.batch_size, window.current, settings.shuffle, settings.seed)
            fn = guard(
                make_async_epoch_fn(
                    spec,
                    settings.runtime,
                    client_config,
                    plan,
                    strategy,
                    epoch,
                    master_learning_rate(model),
                    background_push=settings.server.background_push,
                )
            )
            watcher = EpochProgress(state, epoch, total, progress)
            sc.setJobGroup(
                group,
                f"elephas: epoch {epoch + 1}/{settings.epochs} ({strategy.name}, "
                f"{len(sizes)} workers, window {window.current})",
                True,
            )
            try:
                stage = with_profile(staged.rdd.mapPartitionsWithIndex(fn), settings.profile)
                finished = run_job(stage.collect, "Training")
                missing = sorted(m.partition for m in finished if isinstance(m, Missing))
                if missing:  # staged files not on the executor that ran the task: train from Spark
                    logger.info(
                        "epoch %d: %d staged block(s) not found on their executor; reading them from Spark instead",
                        epoch + 1,
                        len(missing),
                    )
                    finished = [f for f in finished if not isinstance(f, Missing)] + staged.rerun(
                        fn, missing, "Training"
                    )
            except BaseException:
                sc.cancelJobGroup(group)
                raise
            finally:
                watcher.stop()
                sc.setLocalProperty("spark.jobGroup.id", None)
            ok = {r.attempt for r in finished}
            for r in state.records(include_failed=True):
                if r.epoch == epoch and r.attempt_id not in ok:
                    state.mark_attempt_failed(r.attempt_id)
            weights, _ = state.pull()
            model.set_weights(weights)
            merged = epoch_metrics(state.records(), epoch)
            progress(total, merged.means())
            window.advance(finished, epoch)
            return merged.means()

        validate = make_validate(sc, model, spec, settings, validation, sample)
        history = run_epochs(
            model,
            settings.epochs,
            callbacks,
            settings.verbose,
            run_epoch,
            total,
            validate,
            initial_epoch=settings.initial_epoch,
        )
        # Per-window records (worker id, epoch, samples, metrics, timestamp, staleness) of the
        # successful attempts, for per-worker views such as the trainers' get_history().
        history.window_records = [r.to_dict() for r in state.records()]
        history.windows = window.used
        logger.info("parameter server stats: %s", {k: v for k, v in state.stats().items() if k != "workers"})
    return history
