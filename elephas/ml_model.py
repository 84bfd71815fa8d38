"""Spark ML face of elephas: ``ElephasEstimator``, ``ElephasTransformer`` and loaders.

Example:
    >>> from elephas.ml_model import ElephasEstimator
    >>> estimator = ElephasEstimator(model, epochs=5, categorical=True, nb_classes=3)  # doctest: +SKIP
    >>> fitted = estimator.fit(df)  # doctest: +SKIP
    >>> fitted.save("hdfs:///models/otto")  # doctest: +SKIP
    >>> same = load_ml_transformer("hdfs:///models/otto")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from .ml.estimator import ElephasEstimator
from .ml.persistence import ElephasReader
from .ml.transformer import ElephasTransformer

__all__ = ["ElephasEstimator", "ElephasTransformer", "load_ml_estimator", "load_ml_transformer"]


def load_ml_estimator(path: str, custom_objects: dict[str, Any] | None = None) -> ElephasEstimator:
    """Load an :class:`ElephasEstimator` saved with ``estimator.save(path)``.

    Args:
        path: Local path or Hadoop-compatible URI (``file://``, ``hdfs://``, ``s3a://``).
        custom_objects: Unregistered custom Keras objects the model needs.
    """
    return ElephasReader(ElephasEstimator, custom_objects).load(path)


def load_ml_transformer(path: str, custom_objects: dict[str, Any] | None = None) -> ElephasTransformer:
    """Load an :class:`ElephasTransformer` saved with ``transformer.save(path)``.

    Args:
        path: Local path or Hadoop-compatible URI (``file://``, ``hdfs://``, ``s3a://``).
        custom_objects: Unregistered custom Keras objects the model needs.
    """
    return ElephasReader(ElephasTransformer, custom_objects).load(path)
