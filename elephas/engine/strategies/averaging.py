"""Synchronous model averaging: rounds are Spark jobs, the driver averages deltas by sample count."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import Strategy, Weights


class SynchronousAveraging(Strategy):
    """C ← C + Σ nᵢΔᵢ / Σ nᵢ, optionally through a server optimizer (see :mod:`server_optimizer`).

    Workers return ``Δ = W − W0`` with their sample count to the driver; partitions without
    samples contribute nothing.
    """

    name: ClassVar[str] = "synchronous"
    synchronous: ClassVar[bool] = True
    locked: ClassVar[bool] = True
    default_frequency: ClassVar[str | int] = "auto"

    @staticmethod
    def average(weighted_sum: Weights, total_samples: int) -> Weights:
        """Turn Σ nᵢΔᵢ into the sample-weighted mean delta (zeros when no samples were seen)."""
        if total_samples <= 0:
            return [np.zeros_like(s) for s in weighted_sum]
        return [s / np.asarray(total_samples, dtype=s.dtype) for s in weighted_sum]

    def get_config(self) -> dict[str, Any]:
        return {}
