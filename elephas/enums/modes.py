"""``Mode``: the training modes as a string enum (upstream elephas' ``elephas.enums.modes``)."""

from __future__ import annotations

from enum import Enum


class Mode(str, Enum):
    """A training mode; each member equals its string (``Mode.ASYNCHRONOUS == 'asynchronous'``).

    Example:
        >>> Mode.ASYNCHRONOUS == "asynchronous", str(Mode.HOGWILD)
        (True, 'hogwild')
    """

    SYNCHRONOUS = "synchronous"
    ASYNCHRONOUS = "asynchronous"
    HOGWILD = "hogwild"
    DOWNPOUR = "downpour"
    ADAG = "adag"
    EASGD = "easgd"
    EAMSGD = "eamsgd"
    DYNSGD = "dynsgd"

    def __str__(self) -> str:
        return self.value
