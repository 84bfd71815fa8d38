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

import math
from dataclasses import dataclass

from .server_optimizer import ServerOptimizer

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
ASYNCHRONOUS_WINDOW = WindowBounds(initial=2, low=1, high=4)
"""Asynchronous and hogwild workers each add their whole window to the center, so the center takes
K·W batches of steps from weights up to (K−1)·W batches stale; past a few stale batches accuracy
falls off (−0.8 points at W=4 and −3 at W=8 on the benchmark task with two workers), W=2 stays
within a quarter of a point."""


def at_least_four_rounds(window: int, partition_batches: int) -> int:
    """``window`` capped so a partition of ``partition_batches`` batches has at least four rounds.

    Example:
        >>> at_least_four_rounds(16, 469), at_least_four_rounds(16, 31), at_least_four_rounds(16, 2)
        (16, 7, 1)
    """
    return int(max(1, min(window, partition_batches // 4)))


def bounds_for(mode: str) -> WindowBounds:
    """The automatic window bounds of a mode ('synchronous' or an asynchronous one)."""
    return SYNCHRONOUS_WINDOW if mode == "synchronous" else ASYNCHRONOUS_WINDOW


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
