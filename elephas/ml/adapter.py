"""Convert between numpy arrays, DataFrames and RDDs of (features, label) pairs.

The converters live in :mod:`elephas.utils.dataframe` (below every other package); this module
keeps the names where Spark ML users import them.
"""

from __future__ import annotations

from ..utils.dataframe import df_to_simple_rdd, from_data_frame, to_data_frame

__all__ = ["df_to_simple_rdd", "from_data_frame", "to_data_frame"]
