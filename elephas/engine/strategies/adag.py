"""ADAG, accumulated gradient normalisation (Hermans, 2017): push Δ/τ every τ = 12 batches."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import Weights
from .scheduled import ScheduledStrategy, check_positive


class Adag(ScheduledStrategy):
    """Worker sends Δ/τ; server C ← C + Δ/τ under a lock; worker pulls C.

    ``τ`` is the number of batches the window actually had: the configured window for full
    windows and the smaller count for the flushed tail of a partition. The update is then always
    the mean per-batch step of the window, so a short tail is not over- or under-weighted.

    Args:
        learning_rate: When set, the worker optimizer's learning rate (the compiled optimizer does
            every local step); ``None`` keeps the model's own. A plateau schedule changes it.

    Example:
        >>> import numpy as np
        >>> s = Adag()
        >>> s.worker_update([np.full(2, 6.0, np.float32)], [np.zeros(2, np.float32)], None, 3)[0][0].tolist()
        [2.0, 2.0]
    """

    name: ClassVar[str] = "adag"
    locked: ClassVar[bool] = True
    default_frequency: ClassVar[str | int] = 12

    def __init__(self, learning_rate: float | None = None) -> None:
        self.learning_rate = None if learning_rate is None else check_positive("learning_rate", learning_rate)

    def worker_update(
        self, weights: Weights, start_weights: Weights, center: Weights | None, window_batches: int
    ) -> tuple[Weights, Weights]:
        """Δ/τ with τ = ``window_batches`` (≥ 1), and the weights to continue from (``W``)."""
        tau = max(1, int(window_batches))
        update = [
            ((np.asarray(w) - w0) / np.asarray(tau, dtype=np.asarray(w).dtype)) for w, w0 in zip(weights, start_weights)
        ]
        return update, weights

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}
