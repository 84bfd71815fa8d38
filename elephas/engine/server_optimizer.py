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
            raise ValueError(
                f"Could not interpret server_optimizer: {name!r}. Expected one of {list(SERVER_OPTIMIZERS)}."
            )
        if not learning_rate > 0:
            raise ValueError(f"server_learning_rate must be > 0. Received: {learning_rate}.")
        if name != "sgd" and not 0 <= momentum < 1:
            raise ValueError(f"server_momentum must be in [0, 1). Received: {momentum}.")
        self.name = name
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self._velocity: list[np.ndarray] | None = None

    @classmethod
    def get(cls, identifier: Any, learning_rate: float | None = None, momentum: float | None = None) -> ServerOptimizer:
        """Resolve ``None``, a name, or an instance."""
        if isinstance(identifier, ServerOptimizer):
            return identifier
        return cls(
            identifier or "sgd", 1.0 if learning_rate is None else learning_rate, 0.9 if momentum is None else momentum
        )

    def step(self, delta: list[np.ndarray]) -> list[np.ndarray]:
        """The step added to the center for the averaged ``delta`` (updates the momentum)."""
        lr = self.learning_rate
        if self.name == "sgd":
            return [d if lr == 1.0 else (lr * d).astype(d.dtype) for d in delta]
        if self._velocity is None:
            self._velocity = [np.zeros_like(d) for d in delta]
        mu = self.momentum
        self._velocity = [(mu * v + d).astype(d.dtype) for v, d in zip(self._velocity, delta)]
        if self.name == "momentum":
            steps = self._velocity
        else:
            steps = [mu * v + d for v, d in zip(self._velocity, delta)]
        return [(lr * s).astype(d.dtype) for s, d in zip(steps, delta)]

    __call__ = step

    def apply(self, center: list[np.ndarray], delta: list[np.ndarray]) -> list[np.ndarray]:
        """Return the new center weights for the averaged ``delta``."""
        return [c + s.astype(c.dtype) for c, s in zip(center, self.step(delta))]

    def state(self) -> list[np.ndarray] | None:
        """A copy of the momentum (``None`` before the first step), for :meth:`restore`."""
        return None if self._velocity is None else [v.copy() for v in self._velocity]

    def restore(self, state: list[np.ndarray] | None) -> None:
        """Go back to a momentum taken with :meth:`state` (an epoch restarted)."""
        self._velocity = None if state is None else [v.copy() for v in state]

    def get_config(self) -> dict[str, Any]:
        """Settings as plain values."""
        return {
            "server_optimizer": self.name,
            "server_learning_rate": self.learning_rate,
            "server_momentum": self.momentum,
        }
