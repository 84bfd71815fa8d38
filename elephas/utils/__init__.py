"""Utilities: RDD helpers, DataFrame adapters, file systems."""

from typing import Any

from .rdd_utils import encode_label, from_labeled_point, lp_to_simple_rdd, to_labeled_point, to_simple_rdd

__all__ = [
    "encode_label",
    "from_labeled_point",
    "lp_to_simple_rdd",
    "to_labeled_point",
    "to_simple_rdd",
    "df_to_simple_rdd",
    "from_data_frame",
    "to_data_frame",
]

_ADAPTER = ("df_to_simple_rdd", "from_data_frame", "to_data_frame")


def __getattr__(name: str) -> Any:
    # The DataFrame adapters are re-exported lazily: elephas.ml.adapter imports rdd_utils from this
    # package, so an eager import here made `from elephas.ml.adapter import ...` fail as a
    # program's first elephas import (a circular import).
    if name in _ADAPTER:
        from ..ml import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
