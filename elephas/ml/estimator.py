"""``ElephasEstimator``: a Spark ML Estimator that trains a Keras model with the elephas engine.

The estimator holds only params (plus, when built from a model object, that model's starting
weights). ``_fit`` checks the DataFrame's schema and the model/loss/label combination on the
driver, rebuilds and compiles the Keras model from its JSON config, trains it with
:class:`~elephas.spark_model.SparkModel` (any mode, the same engine) and returns an
:class:`~elephas.ml.transformer.ElephasTransformer`.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import numpy as np
from pyspark.ml import Estimator

from ..utils.checks import (
    check_column,
    check_nb_classes,
    check_scalar_labels,
    check_single_output,
    column_type,
    model_output_width,
)
from .params import ElephasParams, model_to_config_json
from .persistence import ElephasReadable, ElephasWritable
from .transformer import ElephasTransformer, classification_output

logger = logging.getLogger(__name__)

__all__ = ["ElephasEstimator"]


class ElephasEstimator(Estimator, ElephasParams, ElephasWritable, ElephasReadable):
    """Train a Keras model on a DataFrame inside Spark ML (``Pipeline``, ``CrossValidator``).

    Args:
        keras_model: Optional compiled Keras model. Its architecture, compile config (loss,
            metrics, optimizer) and current weights are the starting point of every fit.
        **params: Any param by name (``epochs``, ``batch_size``, ``mode``, ``frequency``,
            ``categorical``, ``nb_classes``, ``featuresCol``/``features_col``, ...; ``nb_epoch`` is
            accepted with a DeprecationWarning).

    Example:
        >>> estimator = ElephasEstimator(model, epochs=5, batch_size=64, categorical=True,
        ...                              nb_classes=3, featuresCol="scaled")  # doctest: +SKIP
        >>> fitted = Pipeline(stages=[indexer, scaler, estimator]).fit(df)  # doctest: +SKIP
        >>> fitted.transform(df).select("label", "prediction").show()  # doctest: +SKIP
    """

    def __init__(self, keras_model: Any = None, **params: Any) -> None:
        super().__init__()
        self._initial_weights: tuple[str, list[np.ndarray]] | None = None
        if keras_model is not None:
            self.set_keras_model(keras_model)
        if params:
            self.set_params(**params)

    # ------------------------------------------------------------------------------ model
    def set_keras_model(self, model: Any) -> ElephasEstimator:
        """Use ``model``'s architecture, compile config and current weights.

        Args:
            model: A Keras model (compiled, or with ``loss``/``optimizer_config`` set separately).
        """
        import keras

        if not isinstance(model, keras.Model):
            raise TypeError(f"Expected a Keras model. Received: {type(model).__name__}.")
        config = model_to_config_json(model)
        self._set(keras_model_config=config)
        self._initial_weights = (_architecture_key(config), [np.array(w) for w in model.get_weights()])
        return self

    def initial_weights(self) -> list[np.ndarray] | None:
        """The starting weights given with a model object, if they fit the current config."""
        if self._initial_weights is None or not self.isDefined("keras_model_config"):
            return None
        config = self.getOrDefault("keras_model_config")
        if config is None or _architecture_key(config) != self._initial_weights[0]:
            return None
        return self._initial_weights[1]

    def compile_config(self) -> dict[str, Any]:
        """The compile config used for training: the model JSON's, overridden by set params.

        Raises:
            ValueError: When no loss is known.
        """
        config = json.loads(self._require_config())
        compile_config = dict(config.get("compile_config") or {})
        if self.getOrDefault("optimizer_config") is not None:  # a copy: Keras edits what it deserializes
            compile_config["optimizer"] = copy.deepcopy(self.getOrDefault("optimizer_config"))
        if self.getOrDefault("loss") is not None:
            compile_config["loss"] = self.getOrDefault("loss")
        if self.getOrDefault("metrics") is not None:
            compile_config["metrics"] = list(self.getOrDefault("metrics"))
        if compile_config.get("loss") is None:
            raise ValueError(
                "ElephasEstimator expected a loss: in the compile config of the model JSON "
                "(pass a compiled model) or set with set_loss('...'). Received: no loss."
            )
        if compile_config.get("optimizer") is None:
            logger.info("no optimizer configured; using Keras' default 'rmsprop'")
            compile_config["optimizer"] = "rmsprop"
        return compile_config

    def build_model(self) -> Any:
        """A compiled Keras model from the params (with the starting weights when known)."""
        import keras

        config = json.loads(self._require_config())
        config.pop("compile_config", None)
        custom = self.getOrDefault("custom_objects") or {}
        with keras.saving.custom_object_scope(custom):
            model = keras.models.model_from_json(json.dumps(config), custom_objects=custom)
            model.compile_from_config(self.compile_config())
        weights = self.initial_weights()
        if weights is not None:
            model.set_weights(weights)
        return model

    def _require_config(self) -> str:
        config = self.getOrDefault("keras_model_config")
        if config is None:
            raise ValueError(
                "ElephasEstimator expected a Keras model config. Received: none. Pass a "
                "compiled model (ElephasEstimator(model, ...)) or call "
                "set_keras_model_config(model.to_json())."
            )
        return config

    # -------------------------------------------------------------------------------- fit
    def _fit(self, dataset: Any) -> ElephasTransformer:
        from ..engine import strategies
        from ..engine.config import EngineOptions
        from ..spark_model import SparkModel

        model = self.build_model()
        nb_classes = self._check_inputs(dataset, model)
        # the params become the engine's typed objects: a strategy and the engine options
        spark_model = SparkModel(
            model,
            mode=strategies.get(self.getOrDefault("mode")),
            frequency=self.get_frequency_value(),
            num_workers=self.getOrDefault("num_workers"),
            custom_objects=self.getOrDefault("custom_objects"),
            batch_size=self.getOrDefault("batch_size"),
            **EngineOptions(resources=self.get_resources_value()).get_config(),
        )
        history = spark_model.fit(
            dataset,
            epochs=self.getOrDefault("epochs"),
            batch_size=self.getOrDefault("batch_size"),
            verbose=self.getOrDefault("verbose"),
            validation_split=self.getOrDefault("validation_split"),
            features_col=self.getOrDefault("featuresCol"),
            label_col=self.getOrDefault("labelCol"),
            nb_classes=nb_classes,
        )
        transformer = ElephasTransformer()
        self._copyValues(transformer)
        transformer._set_fitted_model(
            spark_model.master_network, {k: [float(v) for v in vs] for k, vs in history.history.items()}
        )
        return transformer

    def _check_inputs(self, df: Any, model: Any) -> int | None:
        """Check columns, label encoding and loss on the driver; the one-hot width or ``None``."""
        from pyspark.sql.types import NumericType

        fcol, lcol = self.getOrDefault("featuresCol"), self.getOrDefault("labelCol")
        owner = "ElephasEstimator"
        column_type(df.schema, fcol, role="features", argument="featuresCol", owner=owner)
        label_type = column_type(df.schema, lcol, role="label", argument="labelCol", owner=owner)
        check_column(df.schema, fcol, role="features", argument="featuresCol", owner=owner)
        if self.getOrDefault("categorical"):
            check_single_output(len(model.outputs))
        width = model_output_width(model)
        loss = str(self.compile_config().get("loss")).lower()
        label_is_scalar = isinstance(label_type, NumericType)
        if self.getOrDefault("categorical"):
            if not label_is_scalar:
                raise ValueError(
                    f"categorical=True expected labelCol {lcol!r} to hold class indices "
                    f"(numbers). Received type {label_type.simpleString()}. Index string "
                    "labels with StringIndexer."
                )
            if "sparse" in loss:
                return None
            return check_nb_classes(self.getOrDefault("nb_classes"), width)
        check_column(df.schema, lcol, role="label", argument="labelCol", owner=owner)
        if label_is_scalar:
            check_scalar_labels(loss, width, f"a scalar label column {lcol!r} ({label_type.simpleString()})")
        return None

    # ------------------------------------------------------------------------ persistence
    def _persisted_model(self) -> Any:
        weights = self.initial_weights()
        if weights is None:
            return None
        import keras

        config = json.loads(self._require_config())
        config.pop("compile_config", None)
        custom = self.getOrDefault("custom_objects") or {}
        with keras.saving.custom_object_scope(custom):
            model = keras.models.model_from_json(json.dumps(config), custom_objects=custom)
        model.set_weights(weights)
        return model

    def _restore(self, metadata: dict[str, Any], model: Any) -> None:
        if model is not None:
            self._initial_weights = (
                _architecture_key(self._require_config()),
                [np.array(w) for w in model.get_weights()],
            )

    def is_classifier(self) -> bool:
        """Whether fitted models output class indices (see :func:`classification_output`)."""
        return classification_output(self.getOrDefault("categorical"), self.compile_config().get("loss"))


def _architecture_key(config_json: str) -> str:
    config = json.loads(config_json)
    config.pop("compile_config", None)
    return json.dumps(config, sort_keys=True)
