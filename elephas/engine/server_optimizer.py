"""Optional optimizer applied by the driver to the averaged delta of a synchronous round.

The averaged delta ``Δ̄`` is treated as a pseudo-gradient step (as in local SGD / DiLoCo):

* ``'sgd'`` (default, lr 1): ``C ← C + lr·Δ̄`` — plain model averaging.
* ``'momentum'``: ``v ← μv + Δ̄``; ``C ← C + lr·v``.
* ``'nesterov'``: ``v ← μv + Δ̄``; ``C ← C + lr·(μv + Δ̄)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SERVER_OPTIMIZERS = ("sgd", "momentum", "nesterov")


class ServerOptimizer:
    """Applies averaged deltas to the center weights with optional (Nesterov) momentum."""

    def __init__(self, name: str = "sgd", learning_rate: float = 1.0, momentum: float = 0.9):
        if name not in SERVER_OPTIMIZERS:
            raise ValueError(f"Could not interpret server_optimizer: {name!r}. "
                             f"Expected one of {list(SERVER_OPTIMIZERS)}.")
        if not learning_rate > 0:
            raise ValueError(f"server_learning_rate must be > 0. Received: {learning_rate}.")
        if name != "sgd" and not 0 <= momentum < 1:
            raise ValueError(f"server_momentum must be in [0, 1). Received: {momentum}.")
        self.name = name
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self._velocity: list[np.ndarray] | None = None

    @classmethod
    def get(cls, identifier: Any, learning_rate: float | None = None,
            momentum: float | None = None) -> ServerOptimizer:
        """Resolve ``None``, a name, or an instance."""
        if isinstance(identifier, ServerOptimizer):
            return identifier
        return cls(identifier or "sgd", 1.0 if learning_rate is None else learning_rate,
                   0.9 if momentum is None else momentum)

    def apply(self, center: list[np.ndarray], delta: list[np.ndarray]) -> list[np.ndarray]:
        """Return the new center weights for the averaged ``delta``."""
        lr = self.learning_rate
        if self.name == "sgd":
            return [c + (lr * d).astype(c.dtype) for c, d in zip(center, delta)]
        if self._velocity is None:
            self._velocity = [np.zeros_like(d) for d in delta]
        mu = self.momentum
        self._velocity = [mu * v + d for v, d in zip(self._velocity, delta)]
        if self.name == "momentum":
            steps = self._velocity
        else:
            steps = [mu * v + d for v, d in zip(self._velocity, delta)]
        return [c + (lr * s).astype(c.dtype) for c, s in zip(center, steps)]

    def get_config(self) -> dict[str, Any]:
        """Settings as plain values."""
        return {"server_optimizer": self.name, "server_learning_rate": self.learning_rate,
                "server_momentum": self.momentum}
