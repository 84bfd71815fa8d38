"""Save/load round trips: ElephasEstimator, ElephasTransformer and a PipelineModel holding one.

Paths are local directories and ``file://`` URIs (the latter go through Spark's Hadoop FileSystem
API, like hdfs:// and s3a://). Predictions after load are identical to those before.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_blobs, make_dense_model

from elephas.ml_model import ElephasEstimator, ElephasTransformer, load_ml_estimator, load_ml_transformer


@pytest.fixture(scope="module")
def df(spark):
    from pyspark.ml.linalg import Vectors

    x, y = make_blobs(n=40, input_dim=4, classes=3, seed=5)
    rows = [(Vectors.dense(x[i].tolist()), f"c{int(np.argmax(y[i]))}") for i in range(len(x))]
    return spark.createDataFrame(rows, ["features", "category"])


@pytest.fixture(scope="module")
def fitted_pipeline(df):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler, StringIndexer

    estimator = ElephasEstimator(
        make_dense_model(),
        epochs=1,
        batch_size=8,
        categorical=True,
        validation_split=0.0,
        featuresCol="scaled",
        labelCol="index",
        probabilityCol="probability",
    )
    return Pipeline(
        stages=[
            StringIndexer(inputCol="category", outputCol="index"),
            StandardScaler(inputCol="features", outputCol="scaled"),
            estimator,
        ]
    ).fit(df)


def _predictions(model, df):
    rows = model.transform(df).select("prediction", "probability").collect()
    return np.array([r.prediction for r in rows]), np.stack([r.probability.toArray() for r in rows])


def _uri(tmp_path, name, scheme):
    path = tmp_path / name
    return path.as_uri() if scheme == "file" else str(path)


@pytest.mark.parametrize("scheme", ["local", "file"])
def test_transformer_round_trip(fitted_pipeline, df, tmp_path, scheme):
    transformer = fitted_pipeline.stages[-1]
    prepared = fitted_pipeline.stages[1].transform(fitted_pipeline.stages[0].transform(df))
    path = _uri(tmp_path, "transformer", scheme)
    transformer.save(path)
    assert (tmp_path / "transformer" / "model.keras").is_file()
    for loaded in (ElephasTransformer.load(path), load_ml_transformer(path)):
        assert loaded.uid == transformer.uid and loaded.history == transformer.history
        assert loaded.getFeaturesCol() == "scaled" and loaded.get_categorical()
        for a, b in zip(loaded.get_model().get_weights(), transformer.get_model().get_weights()):
            np.testing.assert_array_equal(a, b)
        before, after = _predictions(transformer, prepared), _predictions(loaded, prepared)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
    with pytest.raises(Exception, match="already exists"):
        transformer.save(path)
    transformer.write().overwrite().save(path)


@pytest.mark.backend
def test_pipeline_model_round_trip(fitted_pipeline, df, tmp_path):
    from pyspark.ml import PipelineModel

    path = _uri(tmp_path, "pipeline", "file")
    fitted_pipeline.save(path)
    loaded = PipelineModel.load(path)
    assert isinstance(loaded.stages[-1], ElephasTransformer)
    before, after = _predictions(fitted_pipeline, df), _predictions(loaded, df)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


@pytest.mark.parametrize("scheme", ["local", "file"])
def test_estimator_round_trip(tmp_path, scheme):
    model = make_dense_model(optimizer="adam")
    estimator = ElephasEstimator(
        model,
        epochs=3,
        batch_size=8,
        categorical=True,
        nb_classes=3,
        mode="synchronous",
        frequency=2,
        metrics=["accuracy"],
        custom_objects={"Unused": int},
    ).setLabelCol("y")
    path = _uri(tmp_path, "estimator", scheme)
    estimator.save(path)
    for loaded in (ElephasEstimator.load(path), load_ml_estimator(path, custom_objects={"Unused": int})):
        assert loaded.uid == estimator.uid
        for p in estimator.params:
            if p.name != "custom_objects":
                assert loaded.getOrDefault(p.name) == estimator.getOrDefault(p.name), p.name
        assert loaded.compile_config() == estimator.compile_config()
        for a, b in zip(loaded.initial_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert load_ml_estimator(path, custom_objects={"Unused": int}).get_custom_objects() == {"Unused": int}
    assert ElephasEstimator.load(path).get_custom_objects() is None


def test_estimator_from_configs_saves_without_sidecar(tmp_path):
    estimator = ElephasEstimator().set_keras_model_config(make_dense_model().to_json()).set_loss("mse")
    estimator.save(str(tmp_path / "e"))
    assert not (tmp_path / "e" / "model.keras").exists()
    loaded = ElephasEstimator.load(str(tmp_path / "e"))
    assert loaded.get_loss() == "mse" and loaded.initial_weights() is None


def test_loading_with_the_wrong_class(tmp_path):
    ElephasEstimator(make_dense_model()).save(str(tmp_path / "e"))
    with pytest.raises(
        ValueError,
        match="Expected a saved ElephasTransformer .* Received a saved elephas.ml.estimator.ElephasEstimator",
    ):
        load_ml_transformer(str(tmp_path / "e"))
