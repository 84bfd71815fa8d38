"""Convert between numpy and ``pyspark.mllib.linalg`` vectors and matrices.

The converters live in :mod:`elephas.utils.linalg` (below every other package); this module keeps
the names where MLlib users import them.
"""

from __future__ import annotations

from ..utils.linalg import from_matrix, from_vector, to_matrix, to_vector

__all__ = ["from_matrix", "from_vector", "to_matrix", "to_vector"]
