"""Build RDDs from numpy arrays and convert between (features, label) pairs and LabeledPoints."""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import check_class_indices
from .linalg import from_vector, to_vector


def encode_label(label: Any, nb_classes: int) -> np.ndarray:
    """One-hot encode a class index.

    Example:
        >>> encode_label(2, 4).tolist()
        [0.0, 0.0, 1.0, 0.0]
    """
    out = np.zeros(nb_classes, dtype=np.float32)
    out[check_class_indices([label], nb_classes)[0]] = 1.0
    return out


def to_simple_rdd(sc: Any, features: np.ndarray, labels: np.ndarray, num_slices: int | None = None) -> Any:
    """An RDD of ``(features_row, label_row)`` pairs from two numpy arrays.

    Example:
        >>> rdd = to_simple_rdd(sc, x_train, y_train)  # doctest: +SKIP
    """
    features, labels = np.asarray(features), np.asarray(labels)
    if len(features) != len(labels):
        raise ValueError(
            f"features and labels must have the same number of rows. Received: {len(features)} and {len(labels)}."
        )
    pairs = list(zip(features, labels))
    return sc.parallelize(pairs, num_slices or sc.defaultParallelism)


def to_labeled_point(sc: Any, features: np.ndarray, labels: np.ndarray, categorical: bool = False) -> Any:
    """An RDD of mllib ``LabeledPoint``; one-hot labels become their class index when ``categorical``."""
    from pyspark.mllib.regression import LabeledPoint

    features, labels = np.asarray(features), np.asarray(labels)
    if len(features) != len(labels):
        raise ValueError(
            f"features and labels must have the same number of rows. Received: {len(features)} and {len(labels)}."
        )
    points = []
    for x, y in zip(features, labels):
        label = float(np.argmax(y)) if categorical and np.ndim(y) > 0 else float(np.asarray(y).reshape(-1)[0])
        points.append(LabeledPoint(label, to_vector(x.reshape(-1))))
    return sc.parallelize(points)


def from_labeled_point(
    rdd: Any, categorical: bool = False, nb_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Collect an RDD of LabeledPoints into ``(features, labels)`` numpy arrays."""
    points = rdd.collect()
    features = np.stack([from_vector(lp.features) for lp in points])
    labels = np.asarray([lp.label for lp in points])
    if categorical:
        nb = nb_classes or int(labels.max()) + 1
        labels = np.stack([encode_label(lab, nb) for lab in labels])
    return features, labels


def lp_to_simple_rdd(lp_rdd: Any, categorical: bool = False, nb_classes: int | None = None) -> Any:
    """Map LabeledPoints to ``(features, label)`` pairs (one-hot labels when ``categorical``)."""
    if categorical and nb_classes is None:
        nb_classes = int(lp_rdd.map(lambda lp: lp.label).max()) + 1
    nb = nb_classes

    def convert(lp: Any) -> tuple[np.ndarray, Any]:
        x = from_vector(lp.features)
        y = encode_label(lp.label, nb) if categorical else np.float32(lp.label)
        return x, y

    return lp_rdd.map(convert)
