"""Convert between numpy and ``pyspark.mllib.linalg`` vectors and matrices."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_vector(array: np.ndarray) -> Any:
    """A 1-D array as an mllib ``DenseVector``."""
    from pyspark.mllib.linalg import Vectors

    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"Expected a 1-D array. Received shape {arr.shape}.")
    return Vectors.dense(arr)


def from_vector(vector: Any) -> np.ndarray:
    """An mllib (or ml) vector as a 1-D float array."""
    return np.asarray(vector.toArray() if hasattr(vector, "toArray") else vector)


def to_matrix(array: np.ndarray) -> Any:
    """A 2-D array as an mllib ``DenseMatrix`` (same row/column layout)."""
    from pyspark.mllib.linalg import Matrices

    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"Expected a 2-D array. Received shape {arr.shape}.")
    rows, cols = arr.shape
    return Matrices.dense(rows, cols, arr.ravel(order="F"))


def from_matrix(matrix: Any) -> np.ndarray:
    """An mllib ``DenseMatrix`` as a 2-D array."""
    return np.asarray(matrix.toArray())
