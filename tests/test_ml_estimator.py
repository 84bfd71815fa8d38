"""ElephasEstimator / ElephasTransformer on a real local[2] SparkSession.

Pipelines (StringIndexer + StandardScaler + estimator) for classification and regression,
per-row prediction alignment on several partitions, fit(df, params) overrides, CrossValidator,
an asynchronous fit, and every bad input's message (raised on the driver before training).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_blobs, make_dense_model

from elephas.ml_model import ElephasEstimator, ElephasTransformer


def _vec(values):
    from pyspark.ml.linalg import Vectors

    return Vectors.dense([float(v) for v in values])


@pytest.fixture(scope="module")
def category_df(spark):
    """90 rows: 4-d feature vectors and string categories (the Otto notebook's shape)."""
    x, y = make_blobs(n=90, input_dim=4, classes=3, seed=1)
    rows = [(i, _vec(x[i]), f"Class_{int(np.argmax(y[i])) + 1}") for i in range(len(x))]
    return spark.createDataFrame(rows, ["id", "features", "category"]).repartition(2)


@pytest.fixture(scope="module")
def indexed_df(spark):
    """60 rows with a double class index label in [0, 3)."""
    x, y = make_blobs(n=60, input_dim=4, classes=3, seed=2)
    rows = [(_vec(x[i]), float(np.argmax(y[i]))) for i in range(len(x))]
    return spark.createDataFrame(rows, ["features", "label"]).repartition(2)


@pytest.fixture(scope="module")
def classification_pipeline(category_df):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler, StringIndexer

    estimator = ElephasEstimator(
        make_dense_model(optimizer="adam"),
        epochs=2,
        batch_size=16,
        categorical=True,
        nb_classes=3,
        validation_split=0.0,
    )
    estimator.setFeaturesCol("scaled_features").setLabelCol("index_category")
    estimator.setProbabilityCol("probability")
    pipeline = Pipeline(
        stages=[
            StringIndexer(inputCol="category", outputCol="index_category"),
            StandardScaler(inputCol="features", outputCol="scaled_features", withStd=True, withMean=True),
            estimator,
        ]
    )
    return pipeline.fit(category_df)


@pytest.mark.backend
def test_classification_pipeline_fits(classification_pipeline):
    fitted = classification_pipeline.stages[-1]
    assert isinstance(fitted, ElephasTransformer)
    assert len(fitted.history["loss"]) == 2 and len(fitted.history["accuracy"]) == 2
    assert fitted.get_model().output_shape == (None, 3)
    assert fitted.getFeaturesCol() == "scaled_features" and fitted.get_categorical()


@pytest.mark.backend
def test_classification_predictions_are_class_indices_aligned_per_row(classification_pipeline, category_df):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.mllib.evaluation import MulticlassMetrics
    from pyspark.sql.types import DoubleType

    out = classification_pipeline.transform(category_df.repartition(5))
    assert out.rdd.getNumPartitions() == 5
    assert isinstance(out.schema["prediction"].dataType, DoubleType)
    rows = out.select("id", "scaled_features", "index_category", "prediction", "probability").collect()
    assert sorted(r.id for r in rows) == list(range(90))
    model = classification_pipeline.stages[-1].get_model()
    feats = np.stack([r.scaled_features.toArray() for r in rows]).astype("float32")
    expected = model.predict(feats, verbose=0)
    np.testing.assert_allclose(np.stack([r.probability.toArray() for r in rows]), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal([r.prediction for r in rows], np.argmax(expected, axis=1))
    accuracy = float(np.mean([r.prediction == r.index_category for r in rows]))
    evaluator = MulticlassClassificationEvaluator(
        labelCol="index_category", predictionCol="prediction", metricName="accuracy"
    )
    assert evaluator.evaluate(out) == pytest.approx(accuracy)
    metrics = MulticlassMetrics(out.select("prediction", "index_category").rdd.map(tuple))
    assert metrics.accuracy == pytest.approx(accuracy)


def test_regression_pipeline_with_fit_param_overrides(spark):
    import keras
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler
    from pyspark.sql.types import DoubleType

    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 3))
    city = rng.choice(["a", "b"], size=64)
    target = x @ np.array([1.0, -2.0, 0.5]) + (city == "a") * 3.0
    df = spark.createDataFrame(
        [(_vec(x[i]), str(city[i]), float(target[i])) for i in range(64)], ["raw", "city", "target"]
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    estimator = ElephasEstimator(
        model, epochs=1, batch_size=16, validation_split=0.0, featuresCol="scaled", labelCol="target"
    )
    pipeline = Pipeline(
        stages=[
            StringIndexer(inputCol="city", outputCol="city_index"),
            VectorAssembler(inputCols=["raw", "city_index"], outputCol="assembled"),
            StandardScaler(inputCol="assembled", outputCol="scaled", withMean=True, withStd=True),
            estimator,
        ]
    )
    fitted = pipeline.fit(df, {estimator.epochs: 2, estimator.outputCol: "predicted_target"})
    assert estimator.get_epochs() == 1 and estimator.getOutputCol() == "prediction"
    transformer = fitted.stages[-1]
    assert len(transformer.history["loss"]) == 2 and "mae" in transformer.history
    out = fitted.transform(df)
    assert isinstance(out.schema["predicted_target"].dataType, DoubleType)
    rows = out.select("scaled", "predicted_target").collect()
    expected = transformer.get_model().predict(np.stack([r.scaled.toArray() for r in rows]), verbose=0)
    np.testing.assert_allclose([r.predicted_target for r in rows], expected[:, 0], rtol=1e-5, atol=1e-5)


def test_cross_validator_over_two_epoch_values(indexed_df):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    estimator = ElephasEstimator(make_dense_model(), batch_size=16, categorical=True, validation_split=0.0)
    grid = ParamGridBuilder().addGrid(estimator.epochs, [1, 2]).build()
    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, evaluator=evaluator, numFolds=2, seed=7)
    cv_model = cv.fit(indexed_df)
    assert len(cv_model.avgMetrics) == 2 and all(0.0 <= m <= 1.0 for m in cv_model.avgMetrics)
    best = cv_model.bestModel
    assert isinstance(best, ElephasTransformer)
    best_epochs = [1, 2][int(np.argmax(cv_model.avgMetrics))]
    assert len(best.history["loss"]) == best_epochs == best.get_epochs()
    assert estimator.get_epochs() == 10  # the grid never touched the original


def test_asynchronous_mode_trains(indexed_df):
    estimator = ElephasEstimator(
        make_dense_model(),
        epochs=1,
        batch_size=16,
        categorical=True,
        validation_split=0.0,
        mode="asynchronous",
        frequency="epoch",
    )
    fitted = estimator.fit(indexed_df)
    assert len(fitted.history["loss"]) == 1 and np.isfinite(fitted.history["loss"][0])


# ------------------------------------------------------------------------------ bad input


def _fit_error(df, match, **params):
    params = {"epochs": 1, "validation_split": 0.0, **params}
    model = params.pop("model", None) or make_dense_model()
    with pytest.raises((ValueError, TypeError), match=match):
        ElephasEstimator(model, **params).fit(df)


def test_missing_columns(indexed_df):
    _fit_error(
        indexed_df,
        r"expected a features column 'nope' \(featuresCol\). Received: a DataFrame with "
        r"columns \['features', 'label'\]. Set featuresCol to one of them",
        featuresCol="nope",
        categorical=True,
    )
    _fit_error(
        indexed_df, r"expected a label column 'y' \(labelCol\). Received: a DataFrame", labelCol="y", categorical=True
    )


def test_non_vector_features_column(spark):
    df = spark.createDataFrame([("a", 0.0)], ["features", "label"])
    _fit_error(
        df,
        r"expected featuresCol 'features' to hold ml Vectors, numeric arrays or numbers. Received: "
        "type string",
        categorical=True,
    )


def test_labels_outside_class_range(spark):
    df = spark.createDataFrame([(_vec([0, 1, 2, 3]), 0.0), (_vec([1, 1, 1, 1]), 5.0)], ["features", "label"])
    _fit_error(df, r"class indices in \[0, 3\). Received: values from 0.0 to 5.0 in 'label'", categorical=True)


def test_string_labels_with_categorical(spark):
    df = spark.createDataFrame([(_vec([0, 1, 2, 3]), "x")], ["features", "label"])
    _fit_error(
        df,
        "categorical=True expected labelCol 'label' to hold class indices .* Received type "
        "string. Index string labels with StringIndexer",
        categorical=True,
    )


def test_nb_classes_not_matching_the_model(indexed_df):
    _fit_error(
        indexed_df,
        "Expected nb_classes to match the model's output width 3. Received: nb_classes=5",
        categorical=True,
        nb_classes=5,
    )


def test_categorical_loss_with_scalar_label_without_categorical(indexed_df):
    _fit_error(
        indexed_df,
        "The loss 'categorical_crossentropy' expected labels with 3 values per row "
        r".* Received: a scalar label column 'label' \(double\) with categorical=False. Set "
        "categorical=True and nb_classes=3",
    )


def test_no_model_config(indexed_df):
    with pytest.raises(ValueError, match="expected a Keras model config. Received: none"):
        ElephasEstimator(epochs=1).fit(indexed_df)


def test_unknown_mode(indexed_df):
    _fit_error(indexed_df, "Could not interpret mode: 'asynch'", categorical=True, mode="asynch")


def test_transform_bad_input(spark, indexed_df):
    transformer = ElephasTransformer(make_dense_model(), categorical=True)
    with pytest.raises(
        ValueError,
        match=r"expected a features column 'features' \(featuresCol\). Received: a "
        r"DataFrame with columns \['x'\]",
    ):
        transformer.transform(spark.createDataFrame([(1.0,)], ["x"]))
    with pytest.raises(ValueError, match="expected outputCol 'label' not to exist yet"):
        transformer.setOutputCol("label").transform(indexed_df)
    with pytest.raises(ValueError, match="expected a trained Keras model. Received: none"):
        ElephasTransformer().transform(indexed_df)


# ------------------------------------------------------------------------------------------------
# transform's read-ahead of input batches (elephas.engine.inference.prefetched)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_transform_prefetch_keeps_order_and_converts(depth):
    from elephas.engine.inference import prefetched

    assert list(prefetched(iter(range(20)), lambda i: i * 10, depth)) == [i * 10 for i in range(20)]
    assert list(prefetched(iter([]), lambda i: i, depth)) == []


def test_transform_prefetch_reads_at_most_depth_items_ahead():
    import threading
    import time

    from elephas.engine.inference import prefetched

    pulled = []
    lock = threading.Lock()

    def source():
        for i in range(10):
            with lock:
                pulled.append(i)
            yield i

    gen = prefetched(source(), lambda i: i, 2)
    assert next(gen) == 0
    time.sleep(0.5)  # the reader has had time to run ahead as far as it may
    with lock:
        assert len(pulled) == 3  # the item in hand and two read ahead
    assert list(gen) == list(range(1, 10))


@pytest.mark.parametrize("where", ["source", "convert"])
def test_transform_prefetch_reraises_reader_errors(where):
    from elephas.engine.inference import prefetched

    def source():
        yield 1
        if where == "source":
            raise ValueError("broken input")
        yield 2

    def convert(i):
        if where == "convert" and i == 2:
            raise ValueError("broken input")
        return i

    gen = prefetched(source(), convert, 1)
    assert next(gen) == 1
    with pytest.raises(ValueError, match="broken input"):
        next(gen)


def test_transform_prefetch_close_stops_the_reader():
    import threading

    from elephas.engine.inference import prefetched

    gen = prefetched(iter(range(1000)), lambda i: i, 1)
    assert next(gen) == 0
    gen.close()
    assert not [t for t in threading.enumerate() if t.name == "elephas-prefetch"]


def test_transform_many_small_arrow_batches_keep_rows_aligned(spark):
    """Several Arrow batches per partition (read ahead in the worker): each output on its own row."""
    import keras

    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(4).normal(size=(123, 5)).astype("float32")
    df = spark.createDataFrame([(i, [float(v) for v in x[i]]) for i in range(len(x))], ["id", "features"])
    transformer = ElephasTransformer(model, inference_batch_size=4).setProbabilityCol("raw")
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(key)
    spark.conf.set(key, "7")
    try:
        rows = transformer.transform(df.repartition(3)).select("id", "prediction", "raw").collect()
    finally:
        spark.conf.set(key, previous)
    rows.sort(key=lambda r: r.id)
    assert [r.id for r in rows] == list(range(len(x)))
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.stack([r.prediction.toArray() for r in rows]), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.stack([r.raw.toArray() for r in rows]), expected, rtol=1e-5, atol=1e-6)
