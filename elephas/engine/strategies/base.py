"""The strategy interface: where an update rule lives, worker side and server side.

A strategy says what a worker sends after each communication window and how the server (the
parameter server in the driver, or the driver itself for synchronous rounds) folds it into the
center weights. Strategies hold only plain values (their knobs), so they pickle to executors.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

Weights = list[np.ndarray]


class Strategy:
    """Base class of every update rule.

    Class attributes:
        name: The ``mode`` string that selects the strategy.
        synchronous: ``True`` when rounds are Spark jobs merged on the driver (no parameter server).
        locked: Server lock policy: ``True`` applies each update under a lock, ``False`` lock-free.
        default_frequency: Communication window used when the user does not set one.
    """

    name: ClassVar[str] = "base"
    synchronous: ClassVar[bool] = False
    locked: ClassVar[bool] = True
    default_frequency: ClassVar[str | int] = "epoch"

    def get_config(self) -> dict[str, Any]:
        """The strategy's knobs (what ``__init__`` takes), JSON-serialisable."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Strategy:
        """The strategy with the knobs of :meth:`get_config` (``cls(**config)``)."""
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(map(str, self.get_config().items())))))

    # ----- worker side -------------------------------------------------------------------------
    def worker_update(
        self, weights: Weights, start_weights: Weights, center: Weights | None, window_batches: int
    ) -> tuple[Weights, Weights]:
        """What the worker sends after a window, and the weights it continues from.

        Args:
            weights: The worker's weights after training the window (``W``).
            start_weights: The weights at the worker's last sync (``W0``).
            center: Freshly pulled center weights (only for strategies with ``needs_center_pull``).
            window_batches: How many batches the window had (``τ`` or fewer for the tail).

        Returns:
            ``(update, continue_from)``: the arrays to send and the worker's weights afterwards
            (before it pulls again, for strategies that pull after a push).
        """
        delta = [w - w0 for w, w0 in zip(weights, start_weights)]
        return delta, weights

    needs_center_pull: ClassVar[bool] = False
    """Whether :meth:`worker_update` needs the current center weights pulled before it runs."""

    pull_after_push: ClassVar[bool] = True
    """Whether the worker replaces its weights with the center's after pushing."""

    # ----- server side -------------------------------------------------------------------------
    def server_apply(self, center: Weights, update: Weights, staleness: int = 0) -> None:
        """Fold ``update`` into ``center`` in place.

        Args:
            center: The center weights, modified in place.
            update: What a worker sent.
            staleness: How many updates the server applied since that worker last pulled
                (``n - u``), read atomically with the apply under the lock policy.
        """
        for c, u in zip(center, update):
            np.add(c, u, out=c, casting="unsafe")

    def server_apply_to(self, center: Weights, update: Weights, out: Weights, staleness: int = 0) -> None:
        """Write the center after ``update`` into ``out``, leaving ``center`` as it was.

        The parameter server of locked strategies computes each version of the center into the
        buffer that pulls of that version send, so a pull never copies the center. This copies
        ``center`` into ``out`` and applies :meth:`server_apply` there, so a strategy only ever
        defines ``server_apply``; for the plain sum of this base class the copy and the add are
        one pass (``out = center + update``).

        Args:
            center: The current center weights (not modified).
            update: What a worker sent.
            out: Arrays shaped and typed like ``center`` that receive the result.
            staleness: As for :meth:`server_apply`.
        """
        if type(self).server_apply is Strategy.server_apply:
            for c, u, o in zip(center, update, out):
                np.add(c, u, out=o, casting="unsafe")
            return
        for c, o in zip(center, out):
            np.copyto(o, c)
        self.server_apply(out, update, staleness)

    def train_window(self, model: Any, xs: list[np.ndarray], ys: list[np.ndarray], batch_size: int) -> dict[str, float]:
        """Train one communication window locally; return its mean loss and metrics.

        The default runs the model's own compiled optimizer over the window's batches.
        """
        from ..worker import train_window

        return train_window(model, xs, ys, batch_size)
