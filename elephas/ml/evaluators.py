"""dist-keras style evaluators as persistable Spark ML evaluators."""

from __future__ import annotations

import logging

from pyspark import keyword_only
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.param.shared import HasLabelCol, HasPredictionCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType

from elephas.ml import _transformer_utils as U

logger = logging.getLogger(__name__)

__all__ = ["AccuracyEvaluator"]


class AccuracyEvaluator(Evaluator, HasLabelCol, HasPredictionCol, DefaultParamsReadable, DefaultParamsWritable):
    """Fraction of rows whose prediction equals their label.

    Both columns must be numeric (compared as numbers, so ``1`` equals ``1.0``) or of the same
    type. A row where either value is null counts as wrong. An empty DataFrame raises
    ``ValueError``. It is a :class:`pyspark.ml.evaluation.Evaluator` (``isLargerBetter()`` is
    ``True``), so it works with ``CrossValidator`` and ``TrainValidationSplit``.

    Args:
        label_col: Column with the true labels (e.g. class indices).
        prediction_col: Column with the predicted labels (e.g. ``LabelIndexTransformer`` output).

    Example:
        >>> evaluator = AccuracyEvaluator(prediction_col="prediction_index",
        ...                               label_col="label_index")
        >>> evaluator.evaluate(test_set)
        0.84
    """

    _ARGUMENTS = {"label_col": "labelCol", "prediction_col": "predictionCol"}

    @keyword_only
    def __init__(self, *, label_col: str = "label", prediction_col: str = "prediction") -> None:
        super().__init__()
        U.set_kwargs(self, self._input_kwargs, self._ARGUMENTS)

    @keyword_only
    def setParams(self, *, label_col: str = "label", prediction_col: str = "prediction") -> AccuracyEvaluator:
        """Set params by their dist-keras names."""
        U.set_kwargs(self, self._input_kwargs, self._ARGUMENTS)
        return self

    def isLargerBetter(self) -> bool:
        """Accuracy: larger is better."""
        return True

    def _evaluate(self, dataset: DataFrame) -> float:
        owner = type(self).__name__
        label = self.getLabelCol()
        prediction = self.getPredictionCol()
        label_type = U.column_type(dataset, label, owner, "label_col")
        prediction_type = U.column_type(dataset, prediction, owner, "prediction_col")
        _check_comparable(label_type, prediction_type, owner, label, prediction)
        hit = F.when(U.col(label) == U.col(prediction), F.lit(1.0)).otherwise(F.lit(0.0))
        row = dataset.agg(F.avg(hit).alias("accuracy")).first()
        if row is None or row["accuracy"] is None:
            raise ValueError(f"{owner} expected a non-empty DataFrame, received one with no rows.")
        return float(row["accuracy"])


def _check_comparable(label_type: DataType, prediction_type: DataType, owner: str, label: str, prediction: str) -> None:
    if U.is_numeric(label_type) and U.is_numeric(prediction_type):
        return
    if label_type == prediction_type and not U.is_vector(label_type):
        return
    raise TypeError(
        f"{owner} expected label column {label!r} and prediction column {prediction!r} to hold "
        f"comparable values (both numeric, or the same non-vector type), received "
        f"{U.describe_type(label_type)} and {U.describe_type(prediction_type)}. Turn prediction "
        "vectors into indices with LabelIndexTransformer first."
    )
