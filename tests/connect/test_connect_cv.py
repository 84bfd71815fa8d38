"""PySpark's CrossValidator over an ElephasEstimator on a Spark Connect session.

``pyspark.ml.tuning.CrossValidator`` splits the folds with DataFrame operations and fits and evaluates
through the estimator's and evaluator's own ``fit``/``evaluate``, so on a Connect session it runs the
elephas estimator's DataFrame-only training; the evaluator may be PySpark's (run by the server's ML
support) or elephas's ``AccuracyEvaluator`` (a DataFrame aggregation).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import make_blobs, make_dense_model
from pyspark.ml.linalg import Vectors

from elephas.ml.estimator import ElephasEstimator
from elephas.ml.transformer import ElephasTransformer
from elephas.ml.transformers import AccuracyEvaluator


@pytest.fixture(scope="module")
def indexed(spark):
    x, y = make_blobs(n=300, input_dim=4, classes=3, seed=2)
    rows = [(Vectors.dense(x[i].tolist()), float(np.argmax(y[i]))) for i in range(len(x))]
    return spark.createDataFrame(rows, ["features", "label"]).repartition(2)


def _estimator() -> ElephasEstimator:
    return ElephasEstimator(
        make_dense_model(optimizer=keras.optimizers.Adam(0.02)),
        batch_size=16,
        categorical=True,
        nb_classes=3,
        validation_split=0.0,
        num_workers=2,
    )


def test_cross_validator_picks_a_model_with_pyspark_s_evaluator(indexed):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    estimator = _estimator()
    grid = ParamGridBuilder().addGrid(estimator.epochs, [1, 4]).build()
    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, evaluator=evaluator, numFolds=2, seed=7)
    cv_model = cv.fit(indexed)
    assert len(cv_model.avgMetrics) == 2 and all(0.0 <= m <= 1.0 for m in cv_model.avgMetrics)
    best = cv_model.bestModel
    assert isinstance(best, ElephasTransformer)
    best_epochs = [1, 4][int(np.argmax(cv_model.avgMetrics))]
    assert len(best.history["loss"]) == best_epochs == best.get_epochs()
    assert estimator.get_epochs() == 10  # the grid never touched the original
    accuracy = evaluator.evaluate(cv_model.transform(indexed))
    assert accuracy > 0.85 and max(cv_model.avgMetrics) > 0.8


def test_cross_validator_with_the_elephas_accuracy_evaluator(indexed):
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    estimator = _estimator()
    grid = ParamGridBuilder().addGrid(estimator.batch_size, [8, 32]).addGrid(estimator.epochs, [3]).build()
    evaluator = AccuracyEvaluator(label_col="label", prediction_col="prediction")
    cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, evaluator=evaluator, numFolds=2, seed=3)
    cv_model = cv.fit(indexed)
    assert len(cv_model.avgMetrics) == 2 and max(cv_model.avgMetrics) > 0.8
    assert cv_model.bestModel.get_batch_size() == [8, 32][int(np.argmax(cv_model.avgMetrics))]
