"""Train a Keras classifier on an RDD of MLlib LabeledPoints with SparkMLlibModel, then predict
single vectors, a matrix and a whole RDD of vectors.

    python examples/mllib_labeled_points.py --small
    spark-submit examples/mllib_labeled_points.py --mode asynchronous

The data is synthetic (a fixed linear teacher over 20 features, 3 classes), so the script runs
anywhere without downloads.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from elephas.engine.runtime import quiet_framework_import  # noqa: E402

quiet_framework_import()  # TensorFlow's C++ start-up lines go to the debug log, not the console

import keras  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from elephas.mllib.adapter import from_matrix, to_matrix  # noqa: E402
from elephas.spark_model import SparkMLlibModel  # noqa: E402
from elephas.utils.rdd_utils import to_labeled_point  # noqa: E402

log = logging.getLogger("mllib_example")
NB_CLASSES = 3
NB_FEATURES = 20


def make_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features in [0, 1) and one-hot labels from a fixed linear teacher (learnable)."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(NB_FEATURES, NB_CLASSES))
    x = rng.random((rows, NB_FEATURES)).astype("float32")
    y = keras.utils.to_categorical(np.argmax((x - 0.5) @ teacher, axis=1), NB_CLASSES)
    return x, y


def build_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((NB_FEATURES,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(NB_CLASSES, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def spark_session(app: str, workers: int) -> SparkSession:
    builder = (
        SparkSession.builder.appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain python: embedded local Spark
        builder = builder.master(f"local[{workers}]")  # (spark-submit brings its own --master)
    return builder.getOrCreate()


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="synchronous", help="synchronous, asynchronous, hogwild or a dist-keras rule")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--small", action="store_true", help="2,000 rows, 5 epochs (enough to learn)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows, epochs = (2000, 5) if args.small else (args.rows, args.epochs)

    spark = spark_session("elephas-mllib", args.workers)
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    try:
        x, y = make_data(rows)
        split = int(0.8 * rows)
        # One-hot labels become class indices in the LabeledPoints (categorical=True).
        train_lp = to_labeled_point(sc, x[:split], y[:split], categorical=True).repartition(args.workers)
        test_lp = to_labeled_point(sc, x[split:], y[split:], categorical=True)

        spark_model = SparkMLlibModel(build_model(), mode=args.mode, frequency="epoch", num_workers=args.workers)
        history = spark_model.train(
            train_lp,
            epochs=epochs,
            batch_size=args.batch_size,
            validation_split=0.1,
            categorical=True,
            nb_classes=NB_CLASSES,
        )
        log.info("history: %s", {k: [round(v, 4) for v in vs] for k, vs in history.history.items()})

        vector = spark_model.predict(test_lp.first().features)  # one mllib DenseVector
        log.info("one vector -> %s", np.round(vector.toArray(), 3))
        matrix = spark_model.predict(to_matrix(x[split : split + 5]))  # DenseMatrix, a row per sample
        log.info("a 5-row matrix -> predictions of shape %s", from_matrix(matrix).shape)

        # An RDD of vectors in, an RDD of DenseVectors out, element for element: zip works.
        predictions = spark_model.predict(test_lp.map(lambda lp: lp.features))
        pairs = test_lp.map(lambda lp: lp.label).zip(predictions.map(lambda v: float(np.argmax(v))))
        accuracy = pairs.filter(lambda p: p[0] == p[1]).count() / pairs.count()
        print(f"test accuracy on {rows - split} rows: {accuracy:.4f}")
        return accuracy
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
