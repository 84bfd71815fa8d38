"""SparkMLlibModel: train/fit on LabeledPoints, predict Vectors, Matrices and RDDs (aligned)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_blobs, make_dense_model

from elephas.mllib.model import SparkMLlibModel
from elephas.utils.rdd_utils import to_labeled_point


@pytest.fixture(scope="module")
def trained(sc):
    x, y = make_blobs(n=80, input_dim=4, classes=3, seed=4)
    lp = to_labeled_point(sc, x, y, categorical=True)
    model = make_dense_model()
    spark_model = SparkMLlibModel(model, frequency="epoch", mode="synchronous")
    history = spark_model.train(
        lp, epochs=2, batch_size=16, verbose=0, validation_split=0.1, categorical=True, nb_classes=3
    )
    return spark_model, history, x


def test_importable_from_spark_model():
    from elephas.spark_model import SparkMLlibModel as reexported

    assert reexported is SparkMLlibModel


def test_train_categorical(trained):
    spark_model, history, _ = trained
    assert len(history.history["loss"]) == 2 and "val_loss" in history.history
    assert spark_model.training_histories[-1] is history


def test_predict_vector_and_matrix(trained):
    from pyspark.mllib.linalg import DenseMatrix, DenseVector, Matrices, Vectors

    spark_model, _, x = trained
    expected = spark_model.master_network.predict(x[:5], verbose=0)
    vec = spark_model.predict(Vectors.dense(x[0].tolist()))
    assert isinstance(vec, DenseVector)
    np.testing.assert_allclose(vec.toArray(), expected[0], rtol=1e-5, atol=1e-6)
    mat = spark_model.predict(Matrices.dense(5, 4, x[:5].ravel(order="F").tolist()))
    assert isinstance(mat, DenseMatrix) and (mat.numRows, mat.numCols) == (5, 3)
    np.testing.assert_allclose(mat.toArray(), expected, rtol=1e-5, atol=1e-6)


def test_predict_rdd_is_aligned_on_several_partitions(sc, trained):
    from pyspark.mllib.linalg import DenseVector, Vectors

    spark_model, _, x = trained
    rdd = sc.parallelize([Vectors.dense(r.tolist()) for r in x], 5)
    out = spark_model.predict(rdd)
    assert out.getNumPartitions() == 5
    pairs = rdd.zip(out).collect()
    assert len(pairs) == len(x) and all(isinstance(p, DenseVector) for _, p in pairs)
    feats = np.stack([f.toArray() for f, _ in pairs]).astype("float32")
    np.testing.assert_allclose(feats, x, rtol=1e-6)
    expected = spark_model.master_network.predict(feats, verbose=0)
    np.testing.assert_allclose(np.stack([p.toArray() for _, p in pairs]), expected, rtol=1e-5, atol=1e-6)


def test_fit_regression_on_labeled_points(sc):
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = x @ np.array([1.0, 2.0, -1.0], dtype="float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    history = SparkMLlibModel(model).fit(to_labeled_point(sc, x, y), epochs=1, batch_size=8, validation_split=0.0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])


def test_bad_input(sc):
    x, y = make_blobs(n=10, input_dim=4, classes=3)
    spark_model = SparkMLlibModel(make_dense_model())
    with pytest.raises(TypeError, match="expected an RDD of LabeledPoint. Received: ndarray"):
        spark_model.train(x)
    with pytest.raises(TypeError, match="expected an RDD of LabeledPoint. Received an RDD of tuple"):
        spark_model.train(sc.parallelize(list(zip(x, y))))
    labels = np.argmax(y, axis=1).astype(float)
    labels[3] = 7.0
    from pyspark.mllib.linalg import Vectors
    from pyspark.mllib.regression import LabeledPoint

    lp = sc.parallelize([LabeledPoint(lab, Vectors.dense(f.tolist())) for f, lab in zip(x, labels)], 2)
    with pytest.raises(
        ValueError,
        match=r"Expected labels to be class indices in \[0, 3\). "
        r"Received: labels=\[7.0\]",
    ):
        spark_model.train(lp, categorical=True)
    with pytest.raises(
        ValueError, match="Expected nb_classes to match the model's output width 3. Received: nb_classes=4"
    ):
        spark_model.train(lp, categorical=True, nb_classes=4)
    with pytest.raises(
        ValueError,
        match="The loss 'categorical_crossentropy' expected labels with 3 "
        "values per row .* Received: scalar LabeledPoint labels with categorical=False. Set categorical=True",
    ):
        spark_model.train(lp, categorical=False)
    with pytest.raises(ValueError, match="non-empty"):
        spark_model.train(sc.parallelize([], 1))


def test_label_check_reads_whole_partitions_so_python_workers_are_reused(sc):
    """A check that stops reading a partition early (``take``) makes its Python worker exit, and
    the next task pays for a new one (TensorFlow's import included)."""
    import os

    from pyspark.mllib.linalg import Vectors
    from pyspark.mllib.regression import LabeledPoint

    def worker_pids() -> set[int]:
        return set(
            sc.parallelize(range(4), 2).mapPartitions(lambda it: [(len(list(it)), os.getpid())]).values().collect()
        )

    rows = [LabeledPoint(9.0 if i < 20 else float(i % 3), Vectors.dense([float(i), 1.0])) for i in range(4000)]
    lp = sc.parallelize(rows, 2).cache()
    lp.count()
    before = worker_pids()
    with pytest.raises(ValueError, match=r"Received: labels=\[9.0, 9.0, 9.0, 9.0, 9.0\]"):
        SparkMLlibModel._check_label_range(lp, 3)
    assert worker_pids() == before
    lp.unpersist()
