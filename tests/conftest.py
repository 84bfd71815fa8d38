"""Shared fixtures: one real local[2] SparkSession for the whole test session, tiny Keras models."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# Executors must import classes defined in test modules (custom layers, callbacks).
_TESTS = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_TESTS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def spark():
    """The test session's SparkSession (local[2], UI off, 2 shuffle partitions)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("elephas-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.python.worker.reuse", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sc(spark):
    """The test session's SparkContext."""
    return spark.sparkContext


def make_dense_model(
    input_dim: int = 4,
    hidden: int = 8,
    classes: int = 3,
    optimizer="sgd",
    loss="categorical_crossentropy",
    metrics=("accuracy",),
    seed: int = 0,
):
    """A tiny compiled MLP classifier."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    return model


def make_blobs(n: int = 200, input_dim: int = 4, classes: int = 3, seed: int = 0):
    """Separable synthetic classification data: (x float32, one-hot y float32)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(classes, input_dim))
    labels = rng.integers(0, classes, size=n)
    x = (centers[labels] + rng.normal(0, 0.5, size=(n, input_dim))).astype("float32")
    y = np.eye(classes, dtype="float32")[labels]
    return x, y


@pytest.fixture
def blobs():
    """200 rows of 4 features, 3 classes."""
    return make_blobs()
