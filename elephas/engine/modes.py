"""Resolve ``mode`` and ``frequency`` values: ``get_strategy`` and ``get_frequency``."""

from __future__ import annotations

from enum import Enum
from typing import Any

from . import strategies
from .strategies import Strategy
from .windows import window_batches  # noqa: F401  (re-exported)

# the registry lives in elephas.engine.strategies; these names stay for existing imports
_STRATEGIES = strategies._REGISTRY
register_strategy = strategies.register
valid_modes = strategies.names
strategy_knobs = strategies.knobs

FREQUENCIES = ("auto", "epoch", "batch")


def _plain(value: Any) -> Any:
    """The value behind an enum member (``elephas.enums.Frequency.EPOCH`` -> ``'epoch'``), else ``value``."""
    return value.value if isinstance(value, Enum) else value


def get_strategy(mode: Any, **knobs: Any) -> Strategy:
    """Return the strategy for ``mode`` (see :func:`elephas.engine.strategies.get`).

    Args:
        mode: A mode name ('synchronous', 'asynchronous', 'hogwild', ...), an
            ``elephas.enums.modes.Mode`` member, a strategy config dict, or a Strategy instance.
        **knobs: The strategy's own settings (e.g. ``rho``, ``learning_rate``, ``momentum``).

    Raises:
        ValueError: For an unknown mode, listing the valid ones, or for a knob the strategy
            does not take.
    """
    return strategies.get(mode, **knobs)


def get_frequency(frequency: str | int | None, strategy: Strategy) -> str | int:
    """Validate a communication window: 'auto', 'epoch', 'batch' or a positive number of batches.

    ``None`` gives the strategy's default ('auto' for the synchronous, asynchronous and hogwild
    modes: a window chosen from measured compute and exchange times, see
    :mod:`elephas.engine.windows`).
    """
    frequency = _plain(frequency)  # elephas.enums.frequency.Frequency
    if frequency is None:
        return strategy.default_frequency
    if isinstance(frequency, bool):
        raise ValueError(
            f"Could not interpret frequency: {frequency!r}. Expected one of "
            f"{list(FREQUENCIES)} or a positive int number of batches."
        )
    if hasattr(frequency, "__index__") and not isinstance(frequency, str):
        n = int(frequency)
        if n < 1:
            raise ValueError(f"frequency must be a positive number of batches. Received: frequency={n}.")
        return n
    if isinstance(frequency, str) and frequency.lower() in FREQUENCIES:
        return frequency.lower()
    raise ValueError(
        f"Could not interpret frequency: {frequency!r}. Expected one of "
        f"{list(FREQUENCIES)} or a positive int number of batches."
    )
