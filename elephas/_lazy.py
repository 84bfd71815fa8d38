"""Lazy public names for packages whose exports live in heavier modules."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` that import ``exports[name]`` on first use.

    Args:
        package: The package's name (for the error message).
        exports: Public name → module that defines it.
        namespace: The package's ``globals()``; a resolved name is stored there.

    Example:
        >>> __getattr__, __dir__ = lazy_exports(__name__, {"SparkModel": "elephas.spark_model"},
        ...                                     globals())  # doctest: +SKIP
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
