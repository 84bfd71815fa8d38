"""Defaults that need no knobs: the communication window and the synchronous server step.

``frequency='auto'`` (the default of the synchronous, asynchronous and hogwild modes) picks the
window from what the tasks measured: the compute time of a batch and the time an exchange took
(a synchronous round includes waiting for the slowest partition). The window is the smallest
number of batches for which exchanging costs at most :data:`EXCHANGE_SHARE` of the time, kept
within ``[min, max]`` bounds where the update rule is known to track single-process Keras (see
docs/modes.md for the measurements behind every number here). The first epoch starts at the
mode's initial window, every later epoch uses what the previous one measured; the choice is
logged at INFO. The window is also kept to at most a quarter of a partition's batches, so an
epoch has at least four rounds (one round per epoch lost up to 2 points in the measurements).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .server_optimizer import ServerOptimizer

logger = logging.getLogger(__name__)

EXCHANGE_SHARE = 0.10
"""Largest share of a task's time that exchanging may cost under ``frequency='auto'``."""


@dataclass(frozen=True)
class WindowBounds:
    """The automatic window of a mode: where it starts and the range it stays in (batches)."""

    initial: int
    low: int
    high: int

    def choose(self, batch_s: float, exchange_s: float, share: float = EXCHANGE_SHARE) -> int:
        """The smallest window whose exchanges cost at most ``share`` of the time, bounded.

        Args:
            batch_s: Measured seconds of compute per batch.
            exchange_s: Measured seconds per exchange (push, wait for the round, pull).
            share: The share of time exchanging may take.

        Example:
            >>> WindowBounds(16, 8, 64).choose(batch_s=0.002, exchange_s=0.004)
            18
            >>> WindowBounds(16, 8, 64).choose(batch_s=0.01, exchange_s=0.001)
            8
        """
        if not (batch_s > 0 and math.isfinite(batch_s)) or not math.isfinite(exchange_s):
            return self.initial
        # exchange / (window·batch + exchange) <= share  <=>  window >= exchange·(1−share)/(share·batch)
        window = math.ceil(max(exchange_s, 0.0) * (1 - share) / (share * batch_s))
        return int(min(self.high, max(self.low, window)))


SYNCHRONOUS_WINDOW = WindowBounds(initial=16, low=8, high=32)
ASYNCHRONOUS_WINDOW = WindowBounds(initial=4, low=2, high=8)
"""Asynchronous workers each add their whole window to the center, so the center takes K·W batches
of steps from weights up to (K−1)·W batches stale. Measured with two workers (mean over 3–5 seeds
against plain Keras, docs/modes.md): W=4 and W=8 stay within half a point on the 60,000-row task
and lose 0.1–0.4 points on the 4,000-row one. The window starts at 4 and follows the measured
exchange cost within [2, 8]."""
HOGWILD_WINDOW = WindowBounds(initial=4, low=2, high=6)
"""Hogwild applies deltas without the lock, so its updates are staler still: on the 4,000-row task
W=8 lost 0.7 points where W=6 gained 0.2; the range stops at 6."""


class WindowTiming(Protocol):
    """What a task measured over an epoch (:class:`~elephas.engine.stage_worker.TaskReport`)."""

    windows: int
    batches: int
    compute_s: float
    exchange_s: float


def next_window(
    reports: Sequence[WindowTiming], bounds: WindowBounds, current: int, epoch: int, mode: str = "synchronous"
) -> int:
    """The automatic window for the next epoch from what this epoch's tasks measured (logged at INFO).

    Args:
        reports: Every task's measurements (tasks without windows are ignored).
        bounds: The mode's window bounds.
        current: This epoch's window (kept when nothing was measured).
        epoch: This epoch (0-based), for the log line.
        mode: The mode's name, for the log line.

    Example:
        >>> from types import SimpleNamespace as T
        >>> next_window([T(windows=100, batches=400, compute_s=1.0, exchange_s=0.4)], WindowBounds(2, 2, 8), 2, 0)
        8
    """
    active = [r for r in reports if r.batches and r.windows]
    if not active:
        return current
    batch_s = sum(r.compute_s for r in active) / sum(r.batches for r in active)
    exchange_s = sum(r.exchange_s for r in active) / sum(r.windows for r in active)
    chosen = bounds.choose(batch_s, exchange_s)
    logger.info(
        "frequency='auto': epoch %d measured %.2f ms per batch and %.2f ms per %s; window %d batches "
        "from epoch %d on (was %d)",
        epoch + 1,
        1e3 * batch_s,
        1e3 * exchange_s,
        "round" if mode == "synchronous" else "exchange",
        chosen,
        epoch + 2,
        current,
    )
    return chosen


def at_least_four_rounds(window: int, partition_batches: int) -> int:
    """``window`` capped so a partition of ``partition_batches`` batches has at least four rounds.

    Example:
        >>> at_least_four_rounds(16, 469), at_least_four_rounds(16, 31), at_least_four_rounds(16, 2)
        (16, 7, 1)
    """
    return int(max(1, min(window, partition_batches // 4)))


class WindowSchedule:
    """The communication window of one fit, epoch by epoch: fixed, or ``'auto'``.

    With ``'auto'`` the first epoch uses the mode's initial window and every later one
    :func:`next_window` of what the previous epoch's tasks measured, both kept to at least four
    rounds per epoch on the largest partition (:func:`at_least_four_rounds`). Any other
    ``frequency`` is used as given every epoch.

    Args:
        frequency: ``'auto'``, ``'epoch'``, ``'batch'`` or a number of batches.
        mode: The strategy's name (chooses the bounds).
        sizes: Rows of every partition.
        batch_size: Rows per batch.

    Attributes:
        current: The window of the coming epoch.
        used: The window of every epoch done (``History.windows``).

    Example:
        >>> from types import SimpleNamespace as T
        >>> schedule = WindowSchedule("auto", "asynchronous", [400, 400], 10)
        >>> schedule.current
        4
        >>> schedule.advance([T(windows=10, batches=40, compute_s=0.02, exchange_s=0.5)], epoch=0)
        >>> schedule.current, schedule.used
        (8, [4])
        >>> WindowSchedule(3, "hogwild", [400], 10).current
        3
    """

    def __init__(self, frequency: str | int, mode: str, sizes: Sequence[int], batch_size: int) -> None:
        self.auto = frequency == "auto"
        self.mode = mode
        self.bounds = bounds_for(mode)
        self.most_batches = max((-(-int(n) // batch_size) for n in sizes), default=0)
        self.current: str | int = (
            at_least_four_rounds(self.bounds.initial, self.most_batches) if self.auto else frequency
        )
        self.used: list[str | int] = []

    def describe(self) -> str:
        """``'auto (first epoch N batches, then A-B as measured)'`` or the fixed window, for logs."""
        if not self.auto:
            return str(self.current)
        return f"auto (first epoch {self.current} batches, then {self.bounds.low}-{self.bounds.high} as measured)"

    def advance(self, reports: Sequence[WindowTiming], epoch: int) -> None:
        """Record this epoch's window and, with ``'auto'``, choose the next one from ``reports``."""
        self.used.append(self.current)
        if self.auto:
            chosen = next_window(reports, self.bounds, int(self.current), epoch, self.mode)
            self.current = at_least_four_rounds(chosen, self.most_batches)


def bounds_for(mode: str) -> WindowBounds:
    """The automatic window bounds of a mode ('synchronous', 'hogwild', or another asynchronous one)."""
    if mode == "synchronous":
        return SYNCHRONOUS_WINDOW
    return HOGWILD_WINDOW if mode == "hogwild" else ASYNCHRONOUS_WINDOW


def default_server_step(workers: int) -> ServerOptimizer:
    """The synchronous rule's default server step for ``workers`` partitions.

    The mean of K workers' deltas over a window moves the center about as far as one worker's
    window: 1/K of the progress per sample of sequential training. Outer Nesterov momentum μ
    amplifies a steady step by 1/(1−μ); μ = 1 − 1/K restores the progress per sample, so a fit
    with no knobs tracks single-process Keras (one worker: plain averaging, μ = 0). μ is capped
    at 0.9 because larger outer momentum on top of an adaptive inner optimizer can diverge.

    Example:
        >>> default_server_step(2).get_config()
        {'server_optimizer': 'nesterov', 'server_learning_rate': 1.0, 'server_momentum': 0.5}
        >>> default_server_step(1).get_config()["server_optimizer"]
        'sgd'
    """
    if workers <= 1:
        return ServerOptimizer("sgd", 1.0)
    return ServerOptimizer("nesterov", 1.0, min(0.9, 1.0 - 1.0 / workers))


def window_batches(frequency: str | int, partition_batches: int) -> int:
    """Number of batches in one communication window for a partition of ``partition_batches``."""
    if frequency == "epoch":
        return max(1, partition_batches)
    if frequency == "batch":
        return 1
    if frequency == "auto":
        raise ValueError("frequency='auto' is resolved to a number of batches before training.")
    return int(frequency)
