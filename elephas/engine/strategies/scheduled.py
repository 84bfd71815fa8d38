"""Base of the dist-keras rules: a strategy whose workers' learning rate can be rescheduled.

A driver-side schedule (:mod:`elephas.engine.schedules`) changes the driver model's optimizer rate
(or, for elastic rules, the strategy's own ``learning_rate``) between epochs. Kept free of Keras
imports so that importing the strategy registry stays cheap.
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


class ScheduledStrategy(Strategy):
    """A dist-keras rule whose learning rate a driver-side schedule may change.

    Elastic rules (``elastic = True``: easgd, eamsgd) keep their own elastic step ``learning_rate``,
    which a schedule divides and the next epoch's job carries to the executors with the strategy.
    The other rules keep no rate of their own: the workers' optimizer rate has one source, the
    driver model's compiled optimizer, which the engine ships with every round and epoch
    (:func:`elephas.engine.worker.master_learning_rate`). Their ``learning_rate`` knob is the rate
    to give that optimizer when the rule is chosen (``SparkModel`` sets it once, at construction).
    """

    elastic: ClassVar[bool] = False
    """Whether ``learning_rate`` is the strategy's own elastic step η (easgd-type rules)."""

    learning_rate: float | None = None
