"""Train the classic MNIST MLP with elephas on local Spark: synchronous, asynchronous or hogwild.

Run it with plain Python (an embedded local Spark is started) or with spark-submit:

    python examples/mnist_mlp_spark.py --mode synchronous
    spark-submit examples/mnist_mlp_spark.py --mode hogwild --frequency batch

``--small`` trains on a few thousand rows for a quick check. The real MNIST data is loaded with
``keras.datasets.mnist``; without network access (or with ``ELEPHAS_EXAMPLES_OFFLINE=1``) the
script trains on synthetic handwriting-like digits of the same shape instead: each digit's 5x7
glyph, scaled, shifted, thickened and noised, so the model has something to learn and the
accuracy printed at the end means something. The script says which data it used.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from elephas.engine.runtime import quiet_framework_import  # noqa: E402

quiet_framework_import()  # TensorFlow's C++ start-up lines go to the debug log, not the console

import keras  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from elephas.spark_model import SparkModel  # noqa: E402
from elephas.utils.rdd_utils import to_simple_rdd  # noqa: E402

log = logging.getLogger("mnist_example")


# 5x7 glyphs of the digits 0-9 (rows top to bottom, '#' = ink)
GLYPHS = [
    [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "],
    ["  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
    [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"],
    ["#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "],
    ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "],
    ["#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "],
    ["  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "],
    ["#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "],
    [" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "],
    [" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "],
]


def synthetic_digits(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` 28x28 uint8 images of digit glyphs (scaled 3x, randomly shifted, thickened and
    noised) and their labels: an MNIST-shaped task with real structure to learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=rows)
    images = np.zeros((rows, 28, 28), dtype="float32")
    glyphs = [
        np.kron(np.array([[c == "#" for c in line] for line in g], dtype="float32"), np.ones((3, 3))) for g in GLYPHS
    ]  # 21 x 15
    for i, label in enumerate(labels):
        top, left = rng.integers(2, 6), rng.integers(5, 10)  # a few pixels of jitter
        glyph = glyphs[label]
        if rng.random() < 0.5:  # a thicker stroke
            glyph = np.maximum(glyph, np.roll(glyph, 1, axis=1))
        images[i, top : top + 21, left : left + 15] = glyph * rng.uniform(0.6, 1.0)
    images += rng.normal(0.0, 0.15, size=images.shape)
    return (np.clip(images, 0.0, 1.0) * 255).astype("uint8"), labels


def load_mnist(rows: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """MNIST as flat float32 features and one-hot labels; synthetic digits when it cannot be downloaded."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)
    try:
        if os.environ.get("ELEPHAS_EXAMPLES_OFFLINE") == "1":
            raise OSError("ELEPHAS_EXAMPLES_OFFLINE=1")
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        real = True
    except Exception as exc:  # offline: MNIST-shaped synthetic digits
        log.warning(
            "MNIST could not be downloaded (%s: %s); using synthetic 28x28 digit glyphs instead.",
            type(exc).__name__,
            exc,
        )
        n_train, n_test = (rows, max(1, rows // 5)) if rows else (60000, 10000)
        x_train, y_train = synthetic_digits(n_train, seed=0)
        x_test, y_test = synthetic_digits(n_test, seed=1)
        real = False
    finally:
        socket.setdefaulttimeout(previous)
    if rows:
        x_train, y_train = x_train[:rows], y_train[:rows]
        x_test, y_test = x_test[: max(1, rows // 5)], y_test[: max(1, rows // 5)]
    x_train = x_train.reshape(len(x_train), 784).astype("float32") / 255.0
    x_test = x_test.reshape(len(x_test), 784).astype("float32") / 255.0
    y_train = keras.utils.to_categorical(y_train, 10)
    y_test = keras.utils.to_categorical(y_test, 10)
    return x_train, y_train, x_test, y_test, real


def build_model() -> keras.Model:
    """The MLP of the original elephas README."""
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="synchronous", choices=["synchronous", "asynchronous", "hogwild"])
    parser.add_argument("--frequency", default="epoch", help="'epoch', 'batch' or a number of batches")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="train on 3,000 rows for a quick check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    frequency = int(args.frequency) if args.frequency.isdigit() else args.frequency
    builder = SparkSession.builder.appName("elephas-mnist").config("spark.ui.enabled", "false")
    if "SPARK_MASTER" in os.environ or "PYSPARK_GATEWAY_PORT" not in os.environ:
        # plain python: embedded local Spark; under spark-submit its --master is kept
        builder = builder.master(os.environ.get("SPARK_MASTER", f"local[{args.workers}]"))
    spark = builder.getOrCreate()
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    try:
        x_train, y_train, x_test, y_test, real = load_mnist(3000 if args.small else None)
        log.info("training on %d %s rows", len(x_train), "MNIST" if real else "synthetic digit")
        rdd = to_simple_rdd(sc, x_train, y_train, num_slices=args.workers)
        spark_model = SparkModel(build_model(), mode=args.mode, frequency=frequency, num_workers=args.workers)
        history = spark_model.fit(rdd, epochs=args.epochs, batch_size=args.batch_size, verbose=1, validation_split=0.1)
        loss, accuracy = spark_model.evaluate(x_test, y_test)
        log.info("history: %s", {k: [round(v, 4) for v in vs] for k, vs in history.history.items()})
        log.info("test loss %.4f, test accuracy %.4f", loss, accuracy)
        return accuracy
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
