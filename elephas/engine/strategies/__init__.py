"""Update rules (strategies) and their registry; :func:`get` turns a mode into a strategy instance.

``get`` accepts what Keras's ``get`` functions accept: a name (``'easgd'``, or an
``elephas.enums.Mode`` member), a config dict (``{"class_name": "easgd", "config": {"rho": 2.0}}``,
as :func:`serialize` writes it) or an instance (returned as is). Strategies registered with
:func:`register` (a decorator) are selectable by their ``name`` everywhere a mode is.
"""

from __future__ import annotations

import inspect
from enum import Enum
from typing import Any

from .adag import Adag
from .asynchronous import Asynchronous, Hogwild
from .averaging import SynchronousAveraging
from .base import Strategy
from .downpour import Downpour
from .dynsgd import DynSGD
from .eamsgd import EAMSGD
from .easgd import EASGD

__all__ = [
    "Adag",
    "Asynchronous",
    "Downpour",
    "DynSGD",
    "EAMSGD",
    "EASGD",
    "Hogwild",
    "Strategy",
    "SynchronousAveraging",
    "deserialize",
    "get",
    "knobs",
    "names",
    "register",
    "serialize",
]

_REGISTRY: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (SynchronousAveraging, Asynchronous, Hogwild, Downpour, Adag, EASGD, EAMSGD, DynSGD)
}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Make a strategy class selectable as ``mode=cls.name`` (usable as a decorator)."""
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """The names accepted as a mode."""
    return list(_REGISTRY)


def knobs(name: str) -> list[str]:
    """Keyword arguments the strategy registered as ``name`` accepts."""
    params = inspect.signature(_REGISTRY[name].__init__).parameters
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p, spec in params.items() if p != "self" and spec.kind in kinds]


def serialize(strategy: Strategy) -> dict[str, Any]:
    """``{"class_name": name, "config": strategy.get_config()}`` (what :func:`deserialize` reads)."""
    return {"class_name": strategy.name, "config": strategy.get_config()}


def _class(name: Any) -> type[Strategy]:
    name = name.value if isinstance(name, Enum) else name  # elephas.enums.Mode.HOGWILD -> 'hogwild'
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise ValueError(f"Could not interpret mode: {name!r}. Expected one of {names()}.")
    return _REGISTRY[name.lower()]


def deserialize(config: dict[str, Any]) -> Strategy:
    """The strategy described by a :func:`serialize` dict."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(
            "Could not interpret a strategy config. Expected a dict with 'class_name' and 'config'. "
            f"Received: {config!r}."
        )
    cls = _class(config["class_name"])
    settings = dict(config.get("config") or {})
    unknown = sorted(set(settings) - set(knobs(cls.name)))
    if unknown:
        raise ValueError(f"Mode {cls.name!r} does not take {unknown}. It accepts: {knobs(cls.name) or 'no settings'}.")
    return cls.from_config(settings)


def get(identifier: Any, **settings: Any) -> Strategy:
    """Return the strategy for a mode name, a config dict or an instance.

    Args:
        identifier: A mode name ('synchronous', 'asynchronous', 'hogwild', 'downpour', ...), an
            ``elephas.enums.Mode`` member, a :func:`serialize` dict, or a Strategy instance.
        **settings: The strategy's own knobs (e.g. ``rho``, ``learning_rate``, ``momentum``), with
            a name only.

    Raises:
        ValueError: For an unknown mode (listing the valid ones), a knob the strategy does not
            take, or knobs given together with an instance or a config dict.

    Example:
        >>> get("easgd", rho=2.0).get_config()
        {'rho': 2.0, 'learning_rate': 0.1}
        >>> get({"class_name": "easgd", "config": {"rho": 2.0, "learning_rate": 0.05}}).learning_rate
        0.05
    """
    if isinstance(identifier, Strategy) or isinstance(identifier, dict):
        if settings:
            raise ValueError(
                f"Strategy knobs {sorted(settings)} cannot be combined with a Strategy instance or config; "
                "set them on the instance or in its config."
            )
        return identifier if isinstance(identifier, Strategy) else deserialize(identifier)
    cls = _class(identifier)
    return deserialize({"class_name": cls.name, "config": settings})
