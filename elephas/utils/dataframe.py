"""Convert between numpy arrays, DataFrames and RDDs of (features, label) pairs."""

from __future__ import annotations

from typing import Any

import numpy as np

from .rdd_utils import encode_label


def to_data_frame(sc: Any, features: np.ndarray, labels: np.ndarray, categorical: bool = False) -> Any:
    """A DataFrame with an ml-Vector ``features`` column and a double ``label`` column.

    With ``categorical=True`` one-hot labels are stored as their class index.
    """
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    features, labels = np.asarray(features), np.asarray(labels)
    if len(features) != len(labels):
        raise ValueError(
            f"features and labels must have the same number of rows. Received: {len(features)} and {len(labels)}."
        )
    if categorical:
        lab = np.argmax(labels, axis=1) if labels.ndim > 1 else labels
        rows = [(Vectors.dense(x.reshape(-1).tolist()), float(y)) for x, y in zip(features, lab)]
    elif labels.ndim > 1 and labels.shape[1] > 1:
        rows = [(Vectors.dense(x.reshape(-1).tolist()), Vectors.dense(y.tolist())) for x, y in zip(features, labels)]
    else:
        rows = [
            (Vectors.dense(x.reshape(-1).tolist()), float(np.asarray(y).reshape(-1)[0]))
            for x, y in zip(features, labels)
        ]
    return spark.createDataFrame(rows, ["features", "label"])


def from_data_frame(
    df: Any,
    categorical: bool = False,
    nb_classes: int | None = None,
    features_col: str = "features",
    label_col: str = "label",
) -> tuple[np.ndarray, np.ndarray]:
    """Collect a DataFrame's features and labels into numpy arrays."""
    rows = df.select(features_col, label_col).collect()
    features = np.stack([np.asarray(r[0].toArray() if hasattr(r[0], "toArray") else r[0]) for r in rows])
    labels = np.asarray([np.asarray(r[1].toArray() if hasattr(r[1], "toArray") else r[1]) for r in rows])
    if categorical:
        nb = nb_classes or int(labels.max()) + 1
        labels = np.stack([encode_label(lab, nb) for lab in labels])
    return features, labels


def df_to_simple_rdd(
    df: Any,
    categorical: bool = False,
    nb_classes: int | None = None,
    features_col: str = "features",
    label_col: str = "label",
) -> Any:
    """An RDD of ``(features, label)`` numpy pairs from a DataFrame (one-hot when ``categorical``)."""
    if categorical and nb_classes is None:
        nb_classes = int(df.agg({label_col: "max"}).first()[0]) + 1
    nb = nb_classes

    def convert(row: Any) -> tuple[np.ndarray, Any]:
        x = np.asarray(row[0].toArray() if hasattr(row[0], "toArray") else row[0], dtype=np.float32)
        y = row[1]
        y = encode_label(y, nb) if categorical else np.asarray(y.toArray() if hasattr(y, "toArray") else y)
        return x, y

    return df.select(features_col, label_col).rdd.map(convert)
