"""DOWNPOUR (Dean et al., 2012): push Δ = W − W0 every τ = 5 batches; the server adds it."""

from __future__ import annotations

from typing import Any, ClassVar

from .scheduled import ScheduledStrategy, check_positive


class Downpour(ScheduledStrategy):
    """Worker sends Δ = W − W0 after each window; server C ← C + Δ under a lock; worker pulls C.

    DOWNPOUR likes small windows (< 5 batches): the larger the window, the staler the deltas.

    Args:
        learning_rate: When set, the worker optimizer's learning rate (the compiled optimizer does
            every local step); ``None`` keeps the model's own. A plateau schedule changes it.

    Example:
        >>> import numpy as np
        >>> s = Downpour(); center = [np.zeros(2, np.float32)]
        >>> update, _ = s.worker_update([np.ones(2, np.float32)], [np.zeros(2, np.float32)], None, 5)
        >>> s.server_apply(center, update); center[0].tolist()
        [1.0, 1.0]
    """

    name: ClassVar[str] = "downpour"
    locked: ClassVar[bool] = True
    default_frequency: ClassVar[str | int] = 5

    def __init__(self, learning_rate: float | None = None) -> None:
        self.learning_rate = None if learning_rate is None else check_positive("learning_rate", learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}
