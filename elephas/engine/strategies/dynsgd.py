"""DynSGD (Jiang et al., 2017): the server scales each Δ by 1/(staleness + 1)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import Weights
from .scheduled import ScheduledStrategy, check_positive


class DynSGD(ScheduledStrategy):
    """Worker sends Δ with the version ``u`` it last pulled; server C ← C + Δ/(n − u + 1).

    The parameter server reads the staleness ``n − u``, applies and bumps ``n`` atomically under
    its lock, so this rule only scales the update. A fresh update (staleness 0) is added whole.

    Args:
        learning_rate: When set, the worker optimizer's learning rate (the compiled optimizer does
            every local step); ``None`` keeps the model's own. A plateau schedule changes it.

    Example:
        >>> import numpy as np
        >>> center = [np.zeros(1, np.float32)]
        >>> DynSGD().server_apply(center, [np.full(1, 3.0, np.float32)], staleness=2)
        >>> center[0].tolist()
        [1.0]
    """

    name: ClassVar[str] = "dynsgd"
    locked: ClassVar[bool] = True
    default_frequency: ClassVar[str | int] = 5

    def __init__(self, learning_rate: float | None = None) -> None:
        self.learning_rate = None if learning_rate is None else check_positive("learning_rate", learning_rate)

    def server_apply(self, center: Weights, update: Weights, staleness: int = 0) -> None:
        """C ← C + Δ/(staleness + 1), in place."""
        if staleness < 0:
            raise ValueError(f"staleness must be >= 0. Received: staleness={staleness}.")
        scale = 1.0 / (int(staleness) + 1)
        for c, u in zip(center, update):
            np.add(c, np.asarray(u) * np.asarray(scale, dtype=c.dtype), out=c, casting="unsafe")

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}
