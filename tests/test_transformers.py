"""Tests of the dist-keras style DataFrame transformers, the accuracy evaluator and shuffle."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.linalg import DenseVector, Vectors, VectorUDT
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, IntegerType, StructField, StructType

from elephas.ml.transformers import (
    AccuracyEvaluator,
    BinaryLabelTransformer,
    DenseTransformer,
    LabelIndexTransformer,
    MinMaxTransformer,
    ModelPredictor,
    OneHotTransformer,
    ReshapeTransformer,
    StandardTransformer,
    shuffle,
)


def _column(df, name):
    return [row[name] for row in df.orderBy("id").collect()]


def _vectors(values):
    return [None if v is None else v.toArray().tolist() for v in values]


@pytest.fixture(scope="module")
def indices(spark):
    return spark.createDataFrame(
        [(0, 0.0, 1), (1, 2.0, 0), (2, 1.0, 2), (3, None, None)],
        "id int, label_index double, int_index int",
    )


@pytest.fixture(scope="module")
def predictions(spark):
    return spark.createDataFrame(
        [
            (0, Vectors.dense([0.1, 0.7, 0.2]), [0.1, 0.7, 0.2]),
            (1, Vectors.dense([0.5, 0.2, 0.3]), [0.5, 0.2, 0.3]),
            (2, Vectors.sparse(3, {2: 0.9}), [0.0, 0.0, 0.9]),
            (3, Vectors.dense([0.4, 0.4, 0.2]), [0.4, 0.4, 0.2]),
            (4, None, None),
        ],
        StructType(
            [
                StructField("id", IntegerType()),
                StructField("prediction", VectorUDT()),
                StructField("prediction_array", ArrayType(DoubleType())),
            ]
        ),
    )


# --- OneHotTransformer -----------------------------------------------------------------------


def test_one_hot_double_and_integer_indices(indices):
    t = OneHotTransformer(output_dim=3, input_col="label_index", output_col="label")
    out = t.transform(indices)
    assert isinstance(out.schema["label"].dataType, VectorUDT)
    values = _column(out, "label")
    assert all(isinstance(v, DenseVector) for v in values[:3])
    assert _vectors(values) == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], None]
    t.setParams(input_col="int_index", output_col="label2")
    assert _vectors(_column(t.transform(indices), "label2")) == [
        [0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0],
        None,
    ]


@pytest.mark.parametrize("bad", [3.0, -1.0, 1.5, float("nan")])
def test_one_hot_bad_index_fails_with_message(spark, bad):
    df = spark.createDataFrame([(0.0,), (bad,)], ["label_index"])
    t = OneHotTransformer(output_dim=3, input_col="label_index", output_col="label")
    with pytest.raises(Exception, match=r"expected an integer index in \[0, 3\).*received"):
        t.transform(df).collect()


def test_one_hot_schema_errors_raise_on_driver(indices, spark):
    t = OneHotTransformer(output_dim=3, input_col="missing", output_col="label")
    with pytest.raises(
        ValueError, match=r"expected a column named 'missing' \(input_col\). Received: a DataFrame with columns"
    ):
        t.transform(indices)
    strings = spark.createDataFrame([("a",)], ["label_index"])
    t = OneHotTransformer(output_dim=3, input_col="label_index", output_col="label")
    with pytest.raises(TypeError, match="numeric class indices, received string"):
        t.transform(strings)
    with pytest.raises(ValueError, match="expected output_dim to be set, received nothing"):
        OneHotTransformer(input_col="label_index", output_col="label").transform(indices)


@pytest.mark.parametrize(
    "bad, error", [(0, ValueError), (-2, ValueError), (2.5, TypeError), ("3", TypeError), (True, TypeError)]
)
def test_one_hot_bad_output_dim(bad, error):
    with pytest.raises(error, match="expected output_dim to be a positive integer|an integer"):
        OneHotTransformer(output_dim=bad, input_col="a", output_col="b")


def test_keyword_only_constructor():
    with pytest.raises(TypeError):
        OneHotTransformer(3, "a", "b")


# --- LabelIndexTransformer -------------------------------------------------------------------


def test_label_index_argmax_vectors_and_arrays(predictions):
    t = LabelIndexTransformer(output_dim=3)
    assert t.getInputCol() == "prediction" and t.getOutputCol() == "prediction_index"
    out = t.transform(predictions)
    assert out.schema["prediction_index"].dataType.simpleString() == "double"
    # First index on ties; null stays null.
    assert _column(out, "prediction_index") == [1.0, 0.0, 2.0, 0.0, None]
    t = LabelIndexTransformer(output_dim=3, input_col="prediction_array", output_col="idx")
    assert _column(t.transform(predictions), "idx") == [1.0, 0.0, 2.0, 0.0, None]


def test_label_index_threshold(predictions):
    t = LabelIndexTransformer(output_dim=3, activation_threshold=0.45, default_index=2)
    assert _column(t.transform(predictions), "prediction_index") == [1.0, 0.0, 2.0, 2.0, None]
    t = LabelIndexTransformer(output_dim=3, activation_threshold=0.15, default_index=2)
    assert _column(t.transform(predictions), "prediction_index") == [1.0, 0.0, 2.0, 0.0, None]
    t.setParams(activation_threshold=None)
    assert t.getActivationThreshold() is None


def test_label_index_errors(predictions, indices):
    t = LabelIndexTransformer(output_dim=4)
    with pytest.raises(Exception, match="expected vectors of length 4 .*received length 3"):
        t.transform(predictions).collect()
    t = LabelIndexTransformer(output_dim=3, input_col="label_index")
    with pytest.raises(TypeError, match="vectors or numeric arrays, received double"):
        t.transform(indices)


# --- MinMaxTransformer -----------------------------------------------------------------------


def test_min_max_vector_array_and_scalar(spark):
    df = spark.createDataFrame(
        [
            (0, Vectors.dense([0.0, 2.0, 4.0]), [0, 2, 4], 6.0),
            (1, Vectors.sparse(3, {1: 1.0}), [1, 0, 3], 1.0),
            (2, None, None, None),
        ],
        StructType(
            [
                StructField("id", IntegerType()),
                StructField("v", VectorUDT()),
                StructField("a", ArrayType(IntegerType())),
                StructField("x", DoubleType()),
            ]
        ),
    )
    kw = dict(o_min=0.0, o_max=4.0, n_min=-1.0, n_max=1.0)
    out = MinMaxTransformer(input_col="v", output_col="v2", **kw).transform(df)
    assert _vectors(_column(out, "v2")) == [[-1.0, 0.0, 1.0], [-1.0, -0.5, -1.0], None]
    assert all(isinstance(v, DenseVector) for v in _column(out, "v2")[:2])
    out = MinMaxTransformer(input_col="a", output_col="a2", **kw).transform(df)
    assert _column(out, "a2") == [[-1.0, 0.0, 1.0], [-0.5, -1.0, 0.5], None]
    out = MinMaxTransformer(input_col="x", output_col="x2", is_vector=False, **kw).transform(df)
    assert _column(out, "x2") == [2.0, -0.5, None]  # outside the original range: extrapolated


def test_min_max_errors(spark):
    df = spark.createDataFrame([(1.0, Vectors.dense([1.0]))], ["x", "v"])
    with pytest.raises(ValueError, match="expected o_min != o_max.*received o_min=1.0, o_max=1.0"):
        MinMaxTransformer(o_min=1.0, o_max=1.0, n_min=0.0, n_max=1.0, input_col="x", output_col="y")
    kw = dict(o_min=0.0, o_max=2.0, n_min=0.0, n_max=1.0, output_col="y")
    with pytest.raises(
        TypeError,
        match=r"vectors or numeric arrays \(is_vector=True\), received "
        "double",
    ):
        MinMaxTransformer(input_col="x", **kw).transform(df)
    with pytest.raises(TypeError, match=r"numbers \(is_vector=False\), received vector"):
        MinMaxTransformer(input_col="v", is_vector=False, **kw).transform(df)
    with pytest.raises(ValueError, match="expected n_max to be set"):
        MinMaxTransformer(o_min=0.0, o_max=1.0, n_min=0.0, input_col="x", output_col="y").transform(df)
    with pytest.raises(ValueError, match="expected o_min to be a finite number"):
        MinMaxTransformer(o_min=float("nan"))


# --- BinaryLabelTransformer ------------------------------------------------------------------


def test_binary_label(spark):
    df = spark.createDataFrame([(0, "s", 1), (1, "b", 0), (2, None, None)], "id int, Label string, flag int")
    out = BinaryLabelTransformer(input_col="Label", output_col="label", label="s").transform(df)
    assert _vectors(_column(out, "label")) == [[0.0, 1.0], [1.0, 0.0], None]
    out = BinaryLabelTransformer(input_col="flag", output_col="label", label=1).transform(df)
    assert _vectors(_column(out, "label")) == [[0.0, 1.0], [1.0, 0.0], None]
    # Positive maps back to index 1.
    back = LabelIndexTransformer(output_dim=2, input_col="label", output_col="i").transform(out)
    assert _column(back, "i") == [1.0, 0.0, None]


def test_binary_label_errors(spark):
    df = spark.createDataFrame([("s", [1.0])], ["Label", "arr"])
    with pytest.raises(
        TypeError,
        match="expected a label of the same kind as column 'Label' "
        r"\(string\), received 1 \(int\)",
    ):
        BinaryLabelTransformer(input_col="Label", output_col="y", label=1).transform(df)
    with pytest.raises(TypeError, match="strings, numbers or booleans, received array<double>"):
        BinaryLabelTransformer(input_col="arr", output_col="y", label=1).transform(df)
    with pytest.raises(TypeError, match="expected label to be a string, a number or a boolean"):
        BinaryLabelTransformer(label=[1])


# --- StandardTransformer ---------------------------------------------------------------------


def test_standard_transformer_one_pass(spark, monkeypatch):
    df = spark.createDataFrame([(0, 1.0, 10), (1, 3.0, 20), (2, 5.0, 30)], ["id", "a", "b"])
    t = StandardTransformer(columns=["a", "b"])
    aggregations = []
    original = type(df).agg

    def counting_agg(self, *exprs):
        aggregations.append(len(exprs))
        return original(self, *exprs)

    monkeypatch.setattr(type(df), "agg", counting_agg)
    out = t.transform(df)
    monkeypatch.undo()
    assert aggregations == [4]  # one aggregation: mean and std of both columns
    # mean 3, sample std 2; mean 20, sample std 10
    assert _column(out, "a_normalized") == [-1.0, 0.0, 1.0]
    assert _column(out, "b_normalized") == [-1.0, 0.0, 1.0]
    out = StandardTransformer(columns=["a"], suffix="_z").transform(df)
    assert _column(out, "a_z") == [-1.0, 0.0, 1.0]


def test_standard_transformer_errors(spark):
    df = spark.createDataFrame([(1.0, 2.0, "x"), (1.0, 3.0, "y")], ["c", "d", "s"])
    with pytest.raises(ValueError, match="column 'c' to have a positive, finite standard deviation, received std=0.0"):
        StandardTransformer(columns=["d", "c"]).transform(df)
    with pytest.raises(TypeError, match="column 's' to hold numbers, received string"):
        StandardTransformer(columns=["s"]).transform(df)
    with pytest.raises(ValueError, match="expected a column named 'zz'"):
        StandardTransformer(columns=["d", "zz"]).transform(df)
    with pytest.raises(ValueError, match="non-empty list of distinct column names"):
        StandardTransformer(columns=["d", "d"])


# --- DenseTransformer ------------------------------------------------------------------------


def test_dense_transformer(spark):
    df = spark.createDataFrame(
        [(0, Vectors.sparse(4, {1: 2.0, 3: -1.0})), (1, Vectors.dense([1.0, 0.0, 0.0, 5.0])), (2, None)],
        StructType([StructField("id", IntegerType()), StructField("features", VectorUDT())]),
    )
    out = _column(DenseTransformer(input_col="features", output_col="d").transform(df), "d")
    assert all(isinstance(v, DenseVector) for v in out[:2])
    assert _vectors(out) == [[0.0, 2.0, 0.0, -1.0], [1.0, 0.0, 0.0, 5.0], None]


def test_dense_transformer_error(spark):
    df = spark.createDataFrame([([1.0],)], ["features"])
    with pytest.raises(TypeError, match="expected column 'features' to hold vectors, received array<double>"):
        DenseTransformer(input_col="features", output_col="d").transform(df)


# --- ReshapeTransformer ----------------------------------------------------------------------


def test_reshape(spark):
    df = spark.createDataFrame(
        [(0, Vectors.dense([float(i) for i in range(12)]), list(range(12)))],
        ["id", "features", "arr"],
    )
    out = ReshapeTransformer(input_col="features", output_col="m", shape=(3, 4)).transform(df)
    assert out.schema["m"].dataType.simpleString() == "array<array<double>>"
    assert _column(out, "m") == [[[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]]]
    out = ReshapeTransformer(input_col="arr", output_col="t", shape=[2, 3, 2]).transform(df)
    assert _column(out, "t") == [[[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], [[6.0, 7.0], [8.0, 9.0], [10.0, 11.0]]]]
    out = ReshapeTransformer(input_col="arr", output_col="f", shape=(12,)).transform(df)
    assert _column(out, "f") == [[float(i) for i in range(12)]]


def test_reshape_errors(spark):
    df = spark.createDataFrame([(Vectors.dense([1.0, 2.0, 3.0]), "s")], ["features", "s"])
    t = ReshapeTransformer(input_col="features", output_col="m", shape=(2, 2))
    with pytest.raises(
        Exception,
        match=r"expected vectors of length 4 \(shape \(2, 2\)\).*"
        "received length 3",
    ):
        t.transform(df).collect()
    with pytest.raises(TypeError, match="vectors or numeric arrays, received string"):
        ReshapeTransformer(input_col="s", output_col="m", shape=(1,)).transform(df)
    with pytest.raises(ValueError, match="non-empty tuple of positive integers"):
        ReshapeTransformer(shape=(2, 0))


# --- persistence -----------------------------------------------------------------------------


def _all_transformers():
    return [
        (OneHotTransformer(output_dim=3, input_col="label_index", output_col="onehot"), "onehot"),
        (LabelIndexTransformer(output_dim=3, activation_threshold=0.45, default_index=2), "prediction_index"),
        (
            MinMaxTransformer(o_min=0.0, o_max=4.0, n_min=-1.0, n_max=1.0, input_col="prediction", output_col="scaled"),
            "scaled",
        ),
        (BinaryLabelTransformer(input_col="label_index", output_col="binary", label=2.0), "binary"),
        (StandardTransformer(columns=["label_index"], suffix="_z"), "label_index_z"),
        (DenseTransformer(input_col="prediction", output_col="dense"), "dense"),
        (ReshapeTransformer(input_col="prediction", output_col="reshaped", shape=(3, 1)), "reshaped"),
    ]


@pytest.fixture(scope="module")
def frame(spark):
    return spark.createDataFrame(
        [
            (0, 0.0, Vectors.dense([0.1, 0.7, 0.2])),
            (1, 2.0, Vectors.sparse(3, {2: 0.9})),
            (2, 1.0, Vectors.dense([0.5, 0.2, 0.3])),
        ],
        ["id", "label_index", "prediction"],
    )


@pytest.mark.parametrize("index", range(7))
def test_save_load_round_trip(frame, tmp_path, index):
    transformer, output = _all_transformers()[index]
    path = str(tmp_path / type(transformer).__name__)
    transformer.save(path)
    loaded = type(transformer).load(path)
    assert loaded.uid == transformer.uid

    def named(t):
        return {p.name: v for p, v in t.extractParamMap().items()}

    assert named(loaded) == named(transformer)
    assert _column(loaded.transform(frame), output) == _column(transformer.transform(frame), output)


def test_pipeline_model_round_trip(frame, tmp_path):
    stages = [t for t, _ in _all_transformers()]
    model = Pipeline(stages=stages).fit(frame)
    model.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert [type(s) for s in loaded.stages] == [type(s) for s in stages]
    expected = model.transform(frame).orderBy("id").collect()
    assert loaded.transform(frame).orderBy("id").collect() == expected


# --- AccuracyEvaluator -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(spark):
    return spark.createDataFrame(
        [(1.0, 1.0, 1), (0.0, 1.0, 0), (2.0, 2.0, 2), (1.0, None, 1)],
        "label double, prediction double, label_int int",
    )


def test_accuracy_evaluator(scored):
    evaluator = AccuracyEvaluator()
    assert isinstance(evaluator, Evaluator)
    assert evaluator.isLargerBetter() is True
    assert evaluator.evaluate(scored) == 0.5  # the null prediction counts as wrong
    assert Evaluator.evaluate(evaluator, scored) == 0.5
    assert AccuracyEvaluator(label_col="label_int").evaluate(scored) == 0.5
    assert evaluator.evaluate(scored, {evaluator.predictionCol: "label"}) == 1.0


def test_accuracy_evaluator_errors_and_persistence(scored, spark, tmp_path):
    evaluator = AccuracyEvaluator(label_col="label_index", prediction_col="prediction_index")
    with pytest.raises(ValueError, match="expected a column named 'prediction_index'"):
        evaluator.evaluate(scored.withColumnRenamed("label", "label_index"))
    empty = scored.limit(0)
    with pytest.raises(ValueError, match="expected a non-empty DataFrame"):
        AccuracyEvaluator().evaluate(empty)
    mixed = scored.withColumn("prediction", F.lit("a"))
    with pytest.raises(TypeError, match="comparable values.*received double and string"):
        AccuracyEvaluator().evaluate(mixed)
    evaluator.save(str(tmp_path / "evaluator"))
    loaded = AccuracyEvaluator.load(str(tmp_path / "evaluator"))
    assert loaded.getLabelCol() == "label_index"
    assert loaded.getPredictionCol() == "prediction_index"


# --- shuffle ---------------------------------------------------------------------------------


def test_shuffle(spark):
    df = spark.range(200).withColumn("x", F.col("id") * 2).repartition(2)
    ordered = [tuple(r) for r in df.collect()]
    shuffled = shuffle(df, seed=7)
    rows = [tuple(r) for r in shuffled.collect()]
    assert shuffled.columns == ["id", "x"]
    assert sorted(rows) == sorted(ordered)
    assert rows != ordered
    assert [tuple(r) for r in shuffle(df, seed=7).collect()] == rows  # reproducible with a seed
    assert [tuple(r) for r in shuffle(df, seed=8).collect()] != rows
    with pytest.raises(TypeError, match="expected a DataFrame, received list"):
        shuffle([1, 2])


# --- ModelPredictor --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_frame(spark):
    from conftest import make_blobs, make_dense_model

    model = make_dense_model(input_dim=4, hidden=8, classes=3)
    x, y = make_blobs(n=24, input_dim=4, classes=3)
    rows = [(i, Vectors.dense(x[i].tolist()), float(np.argmax(y[i]))) for i in range(len(x))]
    df = spark.createDataFrame(rows, ["id", "features", "label_index"]).repartition(2)
    return model, x, df


def test_model_predictor_matches_keras(model_and_frame):
    model, x, df = model_and_frame
    predictor = ModelPredictor(keras_model=model, batch_size=5)
    out = predictor.predict(df)
    assert set(out.columns) == {"id", "features", "label_index", "prediction"}
    got = _column(out, "prediction")
    assert all(isinstance(v, DenseVector) for v in got)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.array(_vectors(got)), expected, rtol=1e-5, atol=1e-6)
    # The dist-keras evaluation chain: predict -> argmax index -> accuracy.
    indexed = LabelIndexTransformer(output_dim=3).transform(out)
    accuracy = AccuracyEvaluator(prediction_col="prediction_index", label_col="label_index").evaluate(indexed)
    labels = np.array(_column(df, "label_index"))
    assert accuracy == pytest.approx(float(np.mean(np.argmax(expected, axis=1) == labels)))


def test_model_predictor_persistence_and_errors(model_and_frame, tmp_path):
    model, x, df = model_and_frame
    predictor = ModelPredictor(keras_model=model, output_col="p", batch_size=7)
    expected = _vectors(_column(predictor.transform(df), "p"))
    predictor.save(str(tmp_path / "predictor"))
    loaded = ModelPredictor.load(str(tmp_path / "predictor"))
    assert loaded.getOutputCol() == "p" and loaded.getBatchSize() == 7
    np.testing.assert_allclose(_vectors(_column(loaded.transform(df), "p")), expected, rtol=1e-6)
    pipeline = PipelineModel(stages=[predictor, LabelIndexTransformer(output_dim=3, input_col="p")])
    pipeline.save(str(tmp_path / "pipeline"))
    reloaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert isinstance(reloaded.stages[0], ModelPredictor)
    assert _column(reloaded.transform(df), "prediction_index") == _column(pipeline.transform(df), "prediction_index")
    with pytest.raises(ValueError, match="expected keras_model to be set, received nothing"):
        ModelPredictor().transform(df)
    with pytest.raises(ValueError, match="expected a column named 'missing'"):
        ModelPredictor(keras_model=model, features_col="missing").transform(df)
    with pytest.raises(TypeError, match="vectors, arrays or numbers, received string"):
        ModelPredictor(keras_model=model, features_col="id").transform(df.withColumn("id", F.col("id").cast("string")))


def test_accuracy_evaluator_drives_cross_validator(spark):
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    rows = [(Vectors.dense([float(i % 2), float(i)]), float(i % 2)) for i in range(12)]
    df = spark.createDataFrame(rows, ["features", "label"])
    lr = LogisticRegression(maxIter=5)
    grid = ParamGridBuilder().addGrid(lr.regParam, [0.0, 10.0]).build()
    cv = CrossValidator(estimator=lr, estimatorParamMaps=grid, evaluator=AccuracyEvaluator(), numFolds=2, seed=0)
    model = cv.fit(df)
    assert len(model.avgMetrics) == 2
    assert all(0.0 <= m <= 1.0 for m in model.avgMetrics)
    assert AccuracyEvaluator().evaluate(model.transform(df)) == 1.0
