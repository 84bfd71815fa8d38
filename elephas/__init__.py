"""elephas: distributed deep learning with Keras 3 on Apache Spark.

Public names are imported lazily, so ``import elephas`` stays cheap (no TensorFlow, no Spark)
until a face is used.

Example:
    >>> from elephas import SparkModel  # doctest: +SKIP
    >>> SparkModel(model, mode="synchronous").fit(rdd, epochs=3)  # doctest: +SKIP
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "4.0.0"

_EXPORTS = {
    "SparkModel": "elephas.spark_model",
    "AsynchronousSparkModel": "elephas.spark_model",
    "SparkMLlibModel": "elephas.spark_model",
    "load_spark_model": "elephas.spark_model",
    "ElephasEstimator": "elephas.ml_model",
    "ElephasTransformer": "elephas.ml_model",
    "load_ml_estimator": "elephas.ml_model",
    "load_ml_transformer": "elephas.ml_model",
    "HyperParamModel": "elephas.hyperparam",
    "VotingModel": "elephas.hyperparam",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
