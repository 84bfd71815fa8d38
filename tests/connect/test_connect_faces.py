"""The faces that do not train, on a Spark Connect session: predict, evaluate, transformers,
evaluators, persistence, and one clear error for what needs RDDs (training: test_connect_training.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_blobs, make_dense_model
from pyspark.ml import PipelineModel
from pyspark.ml.linalg import DenseVector, Vectors

from elephas.engine.session import is_connect, require_classic
from elephas.ml.transformer import ElephasTransformer
from elephas.ml.transformers import (
    AccuracyEvaluator,
    LabelIndexTransformer,
    MinMaxTransformer,
    ModelPredictor,
    OneHotTransformer,
    StandardTransformer,
)
from elephas.spark_model import SparkModel


@pytest.fixture(scope="module")
def data():
    x, y = make_blobs(n=60, input_dim=4, classes=3, seed=1)
    return x, y


@pytest.fixture(scope="module")
def frame(spark, data):
    x, y = data
    rows = [
        (i, Vectors.dense(x[i].tolist()), Vectors.dense(y[i].tolist()), float(np.argmax(y[i]))) for i in range(len(x))
    ]
    return spark.createDataFrame(rows, ["id", "features", "label", "label_index"]).repartition(2)


def _ordered(df, column):
    return [row[column] for row in df.orderBy("id").collect()]


def test_the_session_is_connect_and_the_spark_context_is_hidden(spark, frame):
    from pyspark import SparkContext

    assert is_connect() and is_connect(spark) and is_connect(frame)
    assert SparkContext._active_spark_context is None
    with pytest.raises(AssertionError, match="no use of a SparkContext"):
        SparkContext.getOrCreate()
    with pytest.raises(
        TypeError,
        match=r"needs RDDs and a SparkContext.*pass a DataFrame instead.*Received: "
        r"pyspark\.sql\.connect\.dataframe\.DataFrame",
    ):
        require_classic("Something on an RDD", frame)


def test_spark_model_predict_numpy_and_dataframe_match_keras(data, frame):
    x, _ = data
    model = make_dense_model()
    spark_model = SparkModel(model, num_workers=2)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(spark_model.predict(x, batch_size=7), expected, rtol=1e-5, atol=1e-6)
    from_frame = spark_model.predict(frame.orderBy("id"))
    np.testing.assert_allclose(from_frame, expected, rtol=1e-5, atol=1e-6)
    assert spark_model.predict(x[:0]).shape == (0, 3)


def test_spark_model_evaluate_matches_keras(data, frame):
    x, y = data
    model = make_dense_model(metrics=("accuracy",))
    loss, acc = model.evaluate(x, y, verbose=0)
    spark_model = SparkModel(model, num_workers=2)
    got_loss, got_acc = spark_model.evaluate(x, y, batch_size=8)
    assert got_loss == pytest.approx(loss, rel=1e-4) and got_acc == pytest.approx(acc, abs=1e-6)
    df_loss, df_acc = spark_model.evaluate(frame, features_col="features", label_col="label")
    assert df_loss == pytest.approx(loss, rel=1e-4) and df_acc == pytest.approx(acc, abs=1e-6)


def test_rdd_inputs_and_mllib_get_one_clear_error(data, frame):
    from pyspark import RDD

    from elephas.mllib.model import SparkMLlibModel

    model = make_dense_model()
    spark_model = SparkModel(model)
    an_rdd = RDD.__new__(RDD)  # what a user holding an RDD passes; no job may start
    with pytest.raises(
        TypeError,
        match=r"SparkModel.predict on an RDD needs RDDs and a SparkContext, which only "
        r"a classic SparkSession has.*Received: pyspark\.core\.rdd\.RDD",
    ):
        spark_model.predict(an_rdd)
    with pytest.raises(TypeError, match="SparkModel.evaluate on an RDD needs RDDs"):
        spark_model.evaluate(an_rdd)
    with pytest.raises(TypeError, match="SparkMLlibModel needs RDDs.*use SparkModel with a DataFrame"):
        SparkMLlibModel(model)
    with pytest.raises(TypeError, match="SparkModel.fit on an RDD needs RDDs"):
        spark_model.fit(an_rdd, epochs=1)


def test_elephas_transformer_transform_matches_keras(data, frame):
    x, _ = data
    model = make_dense_model()
    transformer = ElephasTransformer(model, categorical=True, outputCol="prediction").setProbabilityCol("prob")
    out = transformer.transform(frame)
    probs = np.array([v.toArray() for v in _ordered(out, "prob")])
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    assert _ordered(out, "prediction") == np.argmax(expected, axis=1).astype(float).tolist()


def test_model_predictor_and_accuracy_evaluator(data, frame):
    x, _ = data
    model = make_dense_model()
    out = ModelPredictor(keras_model=model, batch_size=5).transform(frame)
    got = _ordered(out, "prediction")
    assert all(isinstance(v, DenseVector) for v in got)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.array([v.toArray() for v in got]), expected, rtol=1e-5, atol=1e-6)
    indexed = LabelIndexTransformer(output_dim=3).transform(out)
    accuracy = AccuracyEvaluator(prediction_col="prediction_index", label_col="label_index").evaluate(indexed)
    labels = np.array(_ordered(frame, "label_index"))
    assert accuracy == pytest.approx(float(np.mean(np.argmax(expected, axis=1) == labels)))


def test_dataframe_toolkit(spark):
    df = spark.createDataFrame([(0, 1.0, 10.0, 0.0), (1, 3.0, 20.0, 2.0), (2, 5.0, 30.0, 1.0)], ["id", "a", "b", "idx"])
    one_hot = OneHotTransformer(output_dim=3, input_col="idx", output_col="oh").transform(df)
    assert [v.toArray().tolist() for v in _ordered(one_hot, "oh")] == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    scaled = MinMaxTransformer(
        o_min=0.0, o_max=10.0, n_min=0.0, n_max=1.0, input_col="b", is_vector=False, output_col="b01"
    ).transform(df)
    assert _ordered(scaled, "b01") == pytest.approx([1.0, 2.0, 3.0])
    standard = StandardTransformer(columns=["a"]).transform(df)
    assert _ordered(standard, "a_normalized") == pytest.approx([-1.0, 0.0, 1.0])  # mean 3, sample std 2


def test_pipeline_model_save_and_load_through_the_session(data, frame, tmp_path):
    x, _ = data
    model = make_dense_model()
    pipeline = PipelineModel(
        stages=[
            ElephasTransformer(model, categorical=True, outputCol="prediction"),
            ModelPredictor(keras_model=model, output_col="raw"),
            LabelIndexTransformer(output_dim=3, input_col="raw", output_col="raw_index"),
        ]
    )
    before = pipeline.transform(frame)
    path = str(tmp_path / "pipeline")
    pipeline.write().overwrite().save(path)
    pipeline.write().overwrite().save(path)  # overwrite through the session, twice
    loaded = PipelineModel.load(path)
    assert [type(s).__name__ for s in loaded.stages] == [
        "ElephasTransformer",
        "ModelPredictor",
        "LabelIndexTransformer",
    ]
    after = loaded.transform(frame)
    assert _ordered(after, "prediction") == _ordered(before, "prediction")
    assert _ordered(after, "raw_index") == _ordered(before, "raw_index")
    np.testing.assert_allclose(
        loaded.stages[0].get_model().predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )
    # The stage's model went through the session's writer (rows), not a local model.keras file.
    assert (tmp_path / "pipeline" / "stages").is_dir()
    stage_dirs = sorted(p.name for p in (tmp_path / "pipeline" / "stages").iterdir())
    first = tmp_path / "pipeline" / "stages" / stage_dirs[0]
    assert (first / "keras_model").is_dir() and not (first / "model.keras").exists()
    transformer = ElephasTransformer(model, categorical=True)
    transformer.write().overwrite().save(str(tmp_path / "single"))
    transformer.write().overwrite().save(str(tmp_path / "single"))
    again = ElephasTransformer.load(str(tmp_path / "single"))
    np.testing.assert_allclose(again.get_model().predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_ring_reducer_in_a_barrier_map_in_arrow_stage(spark):
    """The in-stage reducer needs no SparkContext: a barrier ``mapInArrow`` stage all-reduces."""
    from elephas.parameter.auth import new_secret

    secret = new_secret().hex()

    def stage(batches):
        import pyarrow as pa
        from pyspark import BarrierTaskContext

        from elephas.collective import open_reducer

        values = np.concatenate([b.column(0).to_numpy() for b in batches] or [np.zeros(0)]).astype(np.float64)
        context = BarrierTaskContext.get()
        with open_reducer("ring", context, secret, timeout=30) as reducer:
            total, count = reducer.allreduce([np.array([values.sum()]), np.array(len(values), np.int64)])
        yield pa.RecordBatch.from_pydict(
            {"rank": [context.partitionId()], "total": [float(total[0])], "count": [int(count)]}
        )

    rows = (
        spark.range(10).repartition(2).mapInArrow(stage, "rank long, total double, count long", barrier=True).collect()
    )
    assert sorted(r["rank"] for r in rows) == [0, 1]
    assert all(r["total"] == 45.0 and r["count"] == 10 for r in rows)
