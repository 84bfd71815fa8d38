"""Asynchronous elastic averaging with local Nesterov momentum (EAMSGD)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .easgd import EASGD
from .scheduled import check_momentum


def _task_key() -> str:
    """Identifies the running Spark task attempt (``'driver'`` outside Spark tasks)."""
    try:
        from pyspark import TaskContext
    except ImportError:  # pragma: no cover - pyspark is a dependency
        return "driver"
    ctx = TaskContext.get()
    return "driver" if ctx is None else str(ctx.taskAttemptId())


class EAMSGD(EASGD):
    """EASGD's elastic exchange, with Nesterov momentum on the worker's local steps.

    Per batch, with velocity ``v`` (zero at the start of each task, kept across the task's
    windows): look-ahead ``Wl = W + μv``; one step of the model's compiled Keras optimizer from
    ``Wl`` gives ``Wa``; ``g = Wa − Wl``; ``v ← μv + g``; ``W ← W + v``. The elastic exchange
    after each window is EASGD's (it moves ``W``, not ``v``).

    Args:
        rho: Elastic coefficient ``ρ`` (> 0).
        learning_rate: Elastic step ``η`` (> 0).
        momentum: ``μ`` in [0, 1).

    Example:
        >>> s = EAMSGD(rho=5.0, learning_rate=0.1, momentum=0.9)
        >>> s.get_config()["momentum"]
        0.9
    """

    name: ClassVar[str] = "eamsgd"

    def __init__(self, rho: float = 5.0, learning_rate: float = 0.1, momentum: float = 0.9) -> None:
        super().__init__(rho=rho, learning_rate=learning_rate)
        self.momentum = check_momentum(momentum)
        self._velocity: list[np.ndarray] | None = None
        self._velocity_key: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_velocity"], state["_velocity_key"] = None, None
        return state

    def reset_momentum(self) -> None:
        """Forget the velocity (the next window starts from ``v = 0``)."""
        self._velocity, self._velocity_key = None, None

    def train_window(self, model: Any, xs: list[np.ndarray], ys: list[np.ndarray], batch_size: int) -> dict[str, float]:
        """Train the window batch by batch with Nesterov momentum around Keras steps.

        Returns:
            The window's loss and metrics, sample-weighted over its batches (as evaluated at the
            look-ahead points, where each Keras step computed them).
        """
        key = _task_key()
        weights = [np.asarray(w).copy() for w in model.get_weights()]
        if self._velocity is None or self._velocity_key != key or len(self._velocity) != len(weights):
            self._velocity = [np.zeros_like(w) for w in weights]
            self._velocity_key = key
        mu = self.momentum
        velocity = self._velocity
        rows = int(xs[0].shape[0])
        sums: dict[str, float] = {}
        for start in range(0, rows, batch_size):
            xb = [x[start : start + batch_size] for x in xs]
            yb = [y[start : start + batch_size] for y in ys]
            lookahead = [w + np.asarray(mu, w.dtype) * v for w, v in zip(weights, velocity)]
            model.set_weights(lookahead)
            logs = model.train_on_batch(xb[0] if len(xb) == 1 else xb, yb[0] if len(yb) == 1 else yb, return_dict=True)
            n = int(xb[0].shape[0])
            for name, value in logs.items():
                sums[name] = sums.get(name, 0.0) + n * float(value)
            stepped = model.get_weights()
            for i, (wa, wl) in enumerate(zip(stepped, lookahead)):
                velocity[i] = np.asarray(mu, wl.dtype) * velocity[i] + (np.asarray(wa) - wl)
                weights[i] = weights[i] + velocity[i]
        model.set_weights(weights)
        return {name: total / rows for name, total in sums.items()} if rows else {}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum}
