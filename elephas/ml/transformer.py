"""``ElephasTransformer``: a fitted Keras model as a Spark ML Model (a column operation).

``transform`` adds ``outputCol`` through :func:`elephas.engine.inference.predict_column`, a scalar
iterator UDF over Arrow batches (Arrow-native on PySpark 4.1+, pandas before) with the model cached
once per Python worker, so every prediction stays on its own row whatever the partitioning.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
from pyspark.ml import Model

from ..utils.checks import check_column, model_output_width
from .params import ElephasParams
from .persistence import ElephasReadable, ElephasWritable

logger = logging.getLogger(__name__)

__all__ = ["ElephasTransformer", "classification_output"]


def classification_output(categorical: bool, loss: Any) -> bool:
    """Whether predictions are class indices: categorical labels or a sparse categorical loss."""
    return bool(categorical) or "sparse_categorical" in str(loss).lower()


class ElephasTransformer(Model, ElephasParams, ElephasWritable, ElephasReadable):
    """A trained Keras model that adds a prediction column to a DataFrame.

    ``outputCol`` holds the class index as a double for classification models (``categorical``
    set, or a sparse categorical loss), so ``MulticlassClassificationEvaluator`` and
    ``MulticlassMetrics`` read it directly; for regression it holds the value (one output unit) or
    an ml DenseVector (several units). A non-empty ``probabilityCol`` adds the raw model outputs
    (class probabilities for a softmax model) as an ml DenseVector.

    Args:
        keras_model: The trained Keras model (set by ``ElephasEstimator.fit`` or ``load``).
        history: The training ``History.history`` dict.
        **params: Params by name, as for the estimator.

    Example:
        >>> fitted = estimator.fit(train_df)  # doctest: +SKIP
        >>> fitted.setProbabilityCol("probability").transform(test_df).show()  # doctest: +SKIP
    """

    def __init__(self, keras_model: Any = None, history: dict[str, list[float]] | None = None, **params: Any) -> None:
        super().__init__()
        self._keras_model: Any = None
        self._history: dict[str, list[float]] = {}
        self._spec: Any = None
        if params:
            self.set_params(**params)
        if keras_model is not None:
            self._set_fitted_model(keras_model, history or {})

    def _set_fitted_model(self, model: Any, history: dict[str, list[float]]) -> None:
        from .params import model_to_config_json

        self._keras_model = model
        self._history = dict(history)
        self._spec = None
        self._set(keras_model_config=model_to_config_json(model))

    # -------------------------------------------------------------------------- accessors
    def get_model(self) -> Any:
        """The trained Keras model.

        Raises:
            ValueError: For a transformer without a model.
        """
        if self._keras_model is None:
            raise ValueError(
                "ElephasTransformer expected a trained Keras model. Received: none. Obtain "
                "transformers from ElephasEstimator.fit or ElephasTransformer.load."
            )
        return self._keras_model

    @property
    def history(self) -> dict[str, list[float]]:
        """The training history (``keras.callbacks.History.history``): metric name -> per-epoch values."""
        return self._history

    def weights(self) -> list[np.ndarray]:
        """The model's weights."""
        return self.get_model().get_weights()

    def is_classifier(self) -> bool:
        """Whether ``outputCol`` holds class indices."""
        model = self.get_model()
        loss = getattr(model, "loss", None)
        return classification_output(self.getOrDefault("categorical"), loss)

    # -------------------------------------------------------------------------- transform
    def _transform(self, dataset: Any) -> Any:
        from ..engine.inference import predict_column
        from ..engine.shipping import ModelSpec

        model = self.get_model()
        fcol, ocol = self.getOrDefault("featuresCol"), self.getOrDefault("outputCol")
        pcol = self.getOrDefault("probabilityCol") or None
        schema = dataset.schema
        check_column(schema, fcol, role="features", argument="featuresCol", owner="ElephasTransformer")
        for col, role in ((ocol, "outputCol"), (pcol, "probabilityCol")):
            if col and col in schema.fieldNames():
                raise ValueError(
                    f"ElephasTransformer expected {role} {col!r} not to exist yet. Received a "
                    f"DataFrame that already has it. Set {role} to a new name."
                )
        if self._spec is None:
            self._spec = ModelSpec.from_model(
                model,
                custom_objects=self.getOrDefault("custom_objects"),
                require_compiled=False,
                model_id=f"elephas-ml-{uuid.uuid4().hex}",
            )
        output = self._output_kind(model)
        from ..engine.resources import resource_profile

        return predict_column(
            dataset,
            self._spec,
            model.get_weights(),
            fcol,
            ocol,
            batch_size=self.getOrDefault("inference_batch_size"),
            output=output,
            probability_col=pcol,
            profile=resource_profile(self.get_resources_value()),
        )

    def _output_kind(self, model: Any) -> str:
        """What ``outputCol`` holds: ``'class'`` indices, the ``'raw'`` value of one unit, or a ``'vector'``."""
        if self.is_classifier():
            return "class"
        width = model_output_width(model)
        return "raw" if width == 1 else "vector"

    # ------------------------------------------------------------------------ persistence
    def _persisted_model(self) -> Any:
        return self.get_model()

    def _extra_metadata(self) -> dict[str, Any]:
        return {"history": self._history}

    def _restore(self, metadata: dict[str, Any], model: Any) -> None:
        if model is None:
            raise ValueError("ElephasTransformer expected a saved model file next to its metadata. Received: none.")
        self._keras_model = model
        self._history = dict(metadata.get("history") or {})
        self._spec = None
