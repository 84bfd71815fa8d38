"""Learning-rate schedules on plateaus and stop-on-target-loss, as driver-side Keras callbacks.

dist-keras called these "schemes". Here they are plain ``keras.callbacks.Callback`` objects that
the engine runs on the driver between epochs, so they work with every trainer face and with
``SparkModel.fit(callbacks=[...])``.

Which learning rate a schedule divides depends on the rule:

- elastic rules (``easgd``, ``eamsgd``): the strategy's elastic step ``η`` (``learning_rate``),
  which the next epoch's job carries to the executors with the strategy;
- every other mode (synchronous, asynchronous, hogwild, ``downpour``, ``adag``, ``dynsgd``): the
  driver model's optimizer rate. That rate is the workers' only source: the engine ships it with
  every round and epoch and each task sets it on its cached model's optimizer before training
  (the optimizer's own state, e.g. Adagrad's accumulators, is kept). Keras's own
  ``ReduceLROnPlateau`` and ``LearningRateScheduler`` reach the workers the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import keras

from ..utils.checks import check_int, check_positive_int
from .strategies.base import Strategy
from .strategies.scheduled import ScheduledStrategy
from .worker import apply_learning_rate, master_learning_rate

logger = logging.getLogger(__name__)


def current_learning_rate(model: Any, strategy: Strategy | None) -> float:
    """The learning rate a schedule acts on for ``strategy`` (see the module docstring)."""
    if isinstance(strategy, ScheduledStrategy) and strategy.elastic:
        return float(strategy.learning_rate)  # type: ignore[arg-type]
    rate = master_learning_rate(model)
    if rate is None:
        raise ValueError(
            "A plateau schedule needs a constant optimizer learning rate. Received: an optimizer "
            f"following a {type(model.optimizer._learning_rate).__name__}. Compile with a float learning_rate."
        )
    return rate


def set_learning_rate(model: Any, strategy: Strategy | None, value: float) -> None:
    """Set the learning rate a schedule acts on (the next round's workers receive it)."""
    if isinstance(strategy, ScheduledStrategy) and strategy.elastic:
        strategy.learning_rate = float(value)
        return
    apply_learning_rate(model, float(value))


class LearningRateOnPlateau(keras.callbacks.Callback):
    """Divide the learning rate when the validation loss stops improving.

    Every ``every`` epochs the callback obtains a loss (from ``evaluate()`` when given, else from
    the epoch logs under ``monitor``); when it has not improved by more than ``min_delta`` for
    ``patience`` consecutive checks, the learning rate is divided by ``factor`` (never below
    ``min_learning_rate``).

    Args:
        strategy: The training strategy (decides which learning rate is divided; ``None`` for the
            model's optimizer).
        evaluate: Returns the validation loss for the model's current weights (e.g. a distributed
            ``SparkModel.evaluate`` on a validation DataFrame).
        monitor: Log key used when ``evaluate`` is not given.
        every: Check every this many epochs (``k``).
        factor: Divisor (> 1).
        patience: Checks without improvement before dividing.
        min_delta: Smallest decrease that counts as an improvement.
        min_learning_rate: Lower bound.

    Example:
        >>> cb = LearningRateOnPlateau(strategy=None, monitor="val_loss", every=2)  # doctest: +SKIP
    """

    def __init__(
        self,
        strategy: Strategy | None = None,
        evaluate: Callable[[], float] | None = None,
        monitor: str = "val_loss",
        every: int = 1,
        factor: float = 2.0,
        patience: int = 0,
        min_delta: float = 0.0,
        min_learning_rate: float = 0.0,
    ) -> None:
        super().__init__()
        every = check_positive_int("every", every)
        if not factor > 1.0:
            raise ValueError(f"factor must be > 1 (the learning rate is divided by it). Received: factor={factor!r}.")
        patience = check_int("patience", patience, minimum=0)
        self.strategy = strategy
        self.evaluate = evaluate
        self.monitor = monitor
        self.every = every
        self.factor = float(factor)
        self.patience = patience
        self.min_delta = float(min_delta)
        self.min_learning_rate = float(min_learning_rate)
        self.best = math.inf
        self.wait = 0
        self.reductions: list[tuple[int, float]] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.best, self.wait = math.inf, 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        if self.evaluate is not None:
            loss = float(self.evaluate())
        else:
            logs = logs or {}
            if self.monitor not in logs:
                logger.warning(
                    "LearningRateOnPlateau: %r is not in the epoch logs %s; skipping.", self.monitor, sorted(logs)
                )
                return
            loss = float(logs[self.monitor])
        if loss < self.best - self.min_delta:
            self.best, self.wait = loss, 0
            return
        self.wait += 1
        if self.wait <= self.patience:
            return
        self.wait = 0
        old = current_learning_rate(self.model, self.strategy)
        new = max(old / self.factor, self.min_learning_rate)
        if new < old:
            set_learning_rate(self.model, self.strategy, new)
            self.reductions.append((epoch, new))
            logger.info(
                "epoch %d: loss %.5f did not improve on %.5f; learning rate %.3g -> %.3g",
                epoch + 1,
                loss,
                self.best,
                old,
                new,
            )


class StopOnTargetLoss(keras.callbacks.Callback):
    """Stop training once the monitored loss reaches ``target`` (checked at epoch ends).

    Args:
        target: Stop when the loss is ``<= target``.
        monitor: Log key ('loss', or 'val_loss' with validation data).
        evaluate: Returns the loss to compare instead of reading ``monitor`` from the logs.

    Example:
        >>> cb = StopOnTargetLoss(0.05)  # doctest: +SKIP
    """

    def __init__(self, target: float, monitor: str = "loss", evaluate: Callable[[], float] | None = None) -> None:
        super().__init__()
        if not isinstance(target, (int, float)) or isinstance(target, bool) or not math.isfinite(target):
            raise ValueError(f"target must be a finite number. Received: target={target!r}.")
        self.target = float(target)
        self.monitor = monitor
        self.evaluate = evaluate
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.evaluate is not None:
            loss = float(self.evaluate())
        else:
            value = (logs or {}).get(self.monitor)
            if value is None:
                logger.warning("StopOnTargetLoss: %r is not in the epoch logs; skipping.", self.monitor)
                return
            loss = float(value)
        if loss <= self.target:
            self.model.stop_training = True
            self.stopped_epoch = epoch
            logger.info(
                "epoch %d: %s %.5f reached the target %.5f; stopping.", epoch + 1, self.monitor, loss, self.target
            )
