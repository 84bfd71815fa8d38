"""Resolve ``mode`` and ``frequency`` values: ``get_strategy`` and ``get_frequency``."""

from __future__ import annotations

import inspect
from enum import Enum
from typing import Any

from .strategies.adag import Adag
from .strategies.asynchronous import Asynchronous, Hogwild
from .strategies.averaging import SynchronousAveraging
from .strategies.base import Strategy
from .strategies.downpour import Downpour
from .strategies.dynsgd import DynSGD
from .strategies.eamsgd import EAMSGD
from .strategies.easgd import EASGD

_STRATEGIES: dict[str, type[Strategy]] = {
    SynchronousAveraging.name: SynchronousAveraging,
    Asynchronous.name: Asynchronous,
    Hogwild.name: Hogwild,
    Downpour.name: Downpour,
    Adag.name: Adag,
    EASGD.name: EASGD,
    EAMSGD.name: EAMSGD,
    DynSGD.name: DynSGD,
}

FREQUENCIES = ("auto", "epoch", "batch")


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Make a strategy class selectable as ``mode=cls.name`` (usable as a decorator)."""
    _STRATEGIES[cls.name] = cls
    return cls


def valid_modes() -> list[str]:
    """The names accepted as ``mode``."""
    return list(_STRATEGIES)


def strategy_knobs(mode: str) -> list[str]:
    """Keyword arguments the strategy behind ``mode`` accepts."""
    cls = _STRATEGIES[mode]
    params = inspect.signature(cls.__init__).parameters
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [name for name, p in params.items() if name != "self" and p.kind in kinds]


def _plain(value: Any) -> Any:
    """The value behind an enum member (``elephas.enums.Mode.HOGWILD`` -> ``'hogwild'``), else ``value``."""
    return value.value if isinstance(value, Enum) else value


def get_strategy(mode: str | Strategy, **knobs: Any) -> Strategy:
    """Return the strategy for ``mode``.

    Args:
        mode: A mode name ('synchronous', 'asynchronous', 'hogwild', ...), an
            ``elephas.enums.modes.Mode`` member, or a Strategy instance.
        **knobs: The strategy's own settings (e.g. ``rho``, ``learning_rate``, ``momentum``).

    Raises:
        ValueError: For an unknown mode, listing the valid ones, or for a knob the strategy
            does not take.
    """
    if isinstance(mode, Strategy):
        if knobs:
            raise ValueError(
                f"Strategy knobs {sorted(knobs)} cannot be combined with a Strategy instance; set them on the instance."
            )
        return mode
    mode = _plain(mode)
    modes = valid_modes()
    if not isinstance(mode, str) or mode.lower() not in _STRATEGIES:
        raise ValueError(f"Could not interpret mode: {mode!r}. Expected one of {modes}.")
    cls = _STRATEGIES[mode.lower()]
    accepted = strategy_knobs(mode.lower())
    unknown = sorted(set(knobs) - set(accepted))
    if unknown:
        raise ValueError(f"Mode {mode!r} does not take {unknown}. It accepts: {accepted or 'no settings'}.")
    return cls(**knobs)


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


def window_batches(frequency: str | int, partition_batches: int) -> int:
    """Number of batches in one communication window for a partition of ``partition_batches``."""
    if frequency == "epoch":
        return max(1, partition_batches)
    if frequency == "batch":
        return 1
    if frequency == "auto":
        raise ValueError("frequency='auto' is resolved to a number of batches before training.")
    return int(frequency)
