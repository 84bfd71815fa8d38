"""``SparkModel`` and its variants: distributed training, inference and evaluation of a Keras model.

``SparkModel``, ``AsynchronousSparkModel`` and ``load_spark_model`` are defined in
:mod:`elephas.spark_model.model`; ``SparkMLlibModel`` (a subclass taking MLlib data) in
:mod:`elephas.mllib.model`, which imports the base class from :mod:`elephas.spark_model.model`. This
package only gathers the names, so no module imports its own importer.
"""

from __future__ import annotations

from typing import Any

from ..saving import read_model_with_config, save_model_with_config
from .model import AsynchronousSparkModel, SparkModel, load_spark_model

__all__ = [
    "AsynchronousSparkModel",
    "SparkMLlibModel",
    "SparkModel",
    "load_spark_model",
    "read_model_with_config",
    "save_model_with_config",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: elephas.mllib.model imports elephas.spark_model.model, which runs this
    # package's __init__ first, so an import at the top would find elephas.mllib.model half-built.
    if name == "SparkMLlibModel":
        from ..mllib.model import SparkMLlibModel

        return SparkMLlibModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
