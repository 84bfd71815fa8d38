"""Asynchronous elastic averaging SGD (Zhang, Choromanska & LeCun, 2015)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from .base import Weights
from .scheduled import ScheduledStrategy, check_positive

logger = logging.getLogger(__name__)


class EASGD(ScheduledStrategy):
    """Elastic exchange every τ = 32 batches: E = ηρ(W − C); W ← W − E; send E; C ← C + E.

    The worker pulls ``C`` just before computing ``E`` and continues from ``W − E`` afterwards
    (no pull after the push): workers explore, the center exploits. ``α = ηρ`` is the elastic
    step; values above 1 overshoot and are logged as a warning.

    Args:
        rho: Elastic coefficient ``ρ`` (> 0).
        learning_rate: Elastic step ``η`` (> 0). A plateau schedule divides this value.

    Example:
        >>> import numpy as np
        >>> s = EASGD(rho=5.0, learning_rate=0.1)
        >>> e, w = s.worker_update([np.full(1, 2.0, np.float32)], [np.zeros(1, np.float32)],
        ...                        [np.zeros(1, np.float32)], 32)
        >>> e[0].tolist(), w[0].tolist()
        ([1.0], [1.0])
    """

    name: ClassVar[str] = "easgd"
    locked: ClassVar[bool] = True
    default_frequency: ClassVar[str | int] = 32
    needs_center_pull: ClassVar[bool] = True
    pull_after_push: ClassVar[bool] = False
    elastic: ClassVar[bool] = True

    def __init__(self, rho: float = 5.0, learning_rate: float = 0.1) -> None:
        self.rho = check_positive("rho", rho)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        if self.rho * self.learning_rate > 1.0:
            logger.warning(
                "%s: the elastic step learning_rate*rho = %g exceeds 1; workers will overshoot the center.",
                self.name,
                self.rho * self.learning_rate,
            )

    def worker_update(
        self, weights: Weights, start_weights: Weights, center: Weights | None, window_batches: int
    ) -> tuple[Weights, Weights]:
        """``(E, W − E)`` with ``E = ηρ(W − C)``."""
        if center is None:
            raise ValueError(f"{self.name} needs the center weights pulled before its worker update.")
        alpha = self.learning_rate * self.rho
        elastic = []
        after = []
        for w, c in zip(weights, center):
            w = np.asarray(w)
            e = (w - c) * np.asarray(alpha, dtype=w.dtype)
            elastic.append(e)
            after.append(w - e)
        return elastic, after

    def get_config(self) -> dict[str, Any]:
        return {"rho": self.rho, "learning_rate": self.learning_rate}
