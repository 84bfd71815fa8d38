"""``Frequency``: how often workers communicate, as a string enum (upstream's ``elephas.enums.frequency``)."""

from __future__ import annotations

from enum import Enum


class Frequency(str, Enum):
    """A communication window; each member equals its string (``Frequency.BATCH == 'batch'``).

    A number of batches is passed as a plain ``int``.

    Example:
        >>> Frequency.EPOCH == "epoch", str(Frequency.BATCH)
        (True, 'batch')
    """

    EPOCH = "epoch"
    BATCH = "batch"

    def __str__(self) -> str:
        return self.value
