"""Base of the dist-keras rules: a strategy whose workers' learning rate can be rescheduled.

A driver-side schedule (:mod:`elephas.engine.schedules`) changes ``worker_learning_rate`` (or,
for elastic rules, the strategy's own ``learning_rate``) between epochs; the strategy object
travels with the next epoch's job and applies the value on the executor before each window.
Kept free of Keras imports so that importing the strategy registry stays cheap.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Strategy


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float > 0, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0. Received: {name}={value!r}.")
    return float(value)


def check_momentum(value: Any) -> float:
    """``value`` as a float in [0, 1), else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"momentum must be a number in [0, 1). Received: momentum={value!r}.")
    return float(value)


def optimizer_learning_rate(model: Any) -> float:
    """The current (constant) learning rate of ``model``'s compiled optimizer."""
    import keras

    opt = model.optimizer
    if isinstance(getattr(opt, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule):
        raise ValueError(
            "The worker optimizer uses a LearningRateSchedule; a plateau schedule needs a "
            f"constant learning rate. Received: {type(opt._learning_rate).__name__}."
        )
    return float(keras.ops.convert_to_numpy(opt.learning_rate))


def set_optimizer_learning_rate(model: Any, value: float) -> None:
    """Assign ``value`` to ``model``'s compiled optimizer learning rate, keeping its state."""
    current = model.optimizer.learning_rate
    if hasattr(current, "assign"):
        current.assign(float(value))
    else:
        model.optimizer.learning_rate = float(value)


class ScheduledStrategy(Strategy):
    """A strategy whose workers' optimizer learning rate a driver-side schedule may change.

    ``worker_learning_rate`` is ``None`` (leave the compiled optimizer alone) until a schedule sets
    it on the driver; :meth:`train_window` applies it on the executor before training a window
    (the optimizer's own state, e.g. Adagrad's accumulators, is kept).
    """

    elastic: ClassVar[bool] = False
    """Whether ``learning_rate`` is the strategy's own elastic step η (easgd-type rules)."""

    worker_learning_rate: float | None = None

    def apply_worker_learning_rate(self, model: Any) -> None:
        """Set the worker optimizer's learning rate to ``worker_learning_rate`` when it is set."""
        if self.worker_learning_rate is not None:
            set_optimizer_learning_rate(model, self.worker_learning_rate)

    def train_window(self, model: Any, xs: list, ys: list, batch_size: int) -> dict[str, float]:
        """Apply the scheduled worker learning rate, then train the window with the model's optimizer."""
        self.apply_worker_learning_rate(model)
        return super().train_window(model, xs, ys, batch_size)
