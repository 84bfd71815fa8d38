"""Asynchronous and hogwild training: workers push Δ = W − W0 to the parameter server."""

from __future__ import annotations

from typing import ClassVar

from .base import Strategy


class Asynchronous(Strategy):
    """C ← C + Δ under a lock; the worker then pulls C."""

    name: ClassVar[str] = "asynchronous"
    locked: ClassVar[bool] = True
    default_frequency: ClassVar[str | int] = "auto"


class Hogwild(Strategy):
    """C ← C + Δ with no lock (Niu et al., HOGWILD!); the worker then pulls C."""

    name: ClassVar[str] = "hogwild"
    locked: ClassVar[bool] = False
    default_frequency: ClassVar[str | int] = "auto"
