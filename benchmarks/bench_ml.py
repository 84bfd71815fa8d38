"""Benchmark: ElephasEstimator.fit / ElephasTransformer.transform against single-process Keras.

* fit: a DataFrame of ``--rows`` x 784 float32 features, 10 classes labelled by a fixed random
  linear teacher; MLP Dense(128, relu) - Dropout(0.2) - Dense(128, relu) - Dropout(0.2) -
  Dense(10, softmax), SGD(lr=0.05), batch 64, synchronous, ``--epochs`` epochs; against
  ``model.fit`` on the same numpy arrays from the same initial weights.
* transform: ``transform`` + count of ``--predict-rows`` rows against ``model.predict`` on the same
  number of rows.

Prints samples/s and the ratios (targets: fit >= 0.7 x Keras, transform >= 0.5 x predict).
Before timing, an untimed 2,000-row fit and transform start the Python workers and import
TensorFlow in them, as the driver already has; ``--no-warmup`` times cold executors instead.

Usage:
    python benchmarks/bench_ml.py                       # full size: 60,000 rows, 200,000 to predict
    python benchmarks/bench_ml.py --rows 3000 --predict-rows 10000 --epochs 1   # quick check
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # keep all traffic on loopback
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

import numpy as np  # noqa: E402

FEATURES = 784
CLASSES = 10
logger = logging.getLogger("bench_ml")


def build_model(seed: int):
    """The benchmark MLP, compiled with SGD(0.05) and categorical cross-entropy."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(CLASSES, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def teacher_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features ~ N(0, 1) and class labels argmax(x @ W) of a fixed random linear teacher."""
    teacher = np.random.default_rng(1234).normal(size=(FEATURES, CLASSES)).astype(np.float32)
    x = np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)
    return x, np.argmax(x @ teacher, axis=1).astype(np.float64)


def make_frame(spark, x: np.ndarray, labels: np.ndarray | None, partitions: int):
    """A cached DataFrame with an array<float> ``features`` column (built through Arrow)."""
    import pandas as pd

    data = {"features": list(x)}
    if labels is not None:
        data["label"] = labels
    df = spark.createDataFrame(pd.DataFrame(data)).repartition(partitions).cache()
    df.count()
    return df


def generated_frame(spark, rows: int, partitions: int, seed: int):
    """A cached DataFrame of ``rows`` random feature arrays generated on the executors."""
    import pandas as pd

    def gen(batches):
        for batch in batches:
            ids = batch["id"].to_numpy()
            rng = np.random.default_rng(seed + int(ids[0]) if len(ids) else seed)
            yield pd.DataFrame({"features": list(rng.normal(size=(len(ids), FEATURES)).astype(np.float32))})

    df = spark.range(0, rows, numPartitions=partitions).mapInPandas(gen, "features array<float>").cache()
    df.count()
    return df


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000, help="training rows")
    parser.add_argument("--predict-rows", type=int, default=200_000, help="rows to transform")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--partitions", type=int, default=None,
                        help="DataFrame partitions (default: Spark's default parallelism)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="time cold executors too (Python workers still importing TensorFlow)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from elephas.ml_model import ElephasEstimator

    spark = (SparkSession.builder.master(args.master).appName("bench_ml")
             .config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "6g")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.python.worker.reuse", "true")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    partitions = args.partitions or spark.sparkContext.defaultParallelism
    try:
        x, labels = teacher_data(args.rows, seed=0)
        y = np.eye(CLASSES, dtype=np.float32)[labels.astype(int)]

        keras_model = build_model(seed=0)
        start = time.perf_counter()
        keras_model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
        keras_fit = time.perf_counter() - start
        keras_acc = float(np.mean(np.argmax(keras_model.predict(x, verbose=0, batch_size=1024), 1) == labels))

        warmup = 0.0
        if not args.no_warmup:  # start the Python workers and import TensorFlow there, untimed
            start = time.perf_counter()
            small = make_frame(spark, x[:2000], labels[:2000], partitions)
            warm = ElephasEstimator(build_model(seed=1), epochs=1, batch_size=args.batch_size,
                                    categorical=True, validation_split=0.0).fit(small)
            warm.transform(small.select("features")).filter(F.col("prediction") >= 0).count()
            small.unpersist()
            warmup = time.perf_counter() - start

        df = make_frame(spark, x, labels, partitions)
        estimator = ElephasEstimator(build_model(seed=0), epochs=args.epochs, batch_size=args.batch_size,
                                     categorical=True, nb_classes=CLASSES, validation_split=0.0,
                                     mode="synchronous", frequency="epoch")
        start = time.perf_counter()
        fitted = estimator.fit(df)
        elephas_fit = time.perf_counter() - start
        elephas_acc = float(np.mean(np.argmax(fitted.get_model().predict(x, verbose=0, batch_size=1024), 1)
                                    == labels))
        df.unpersist()
        del x, y

        pdf = generated_frame(spark, args.predict_rows, partitions, seed=99)
        start = time.perf_counter()
        counted = fitted.transform(pdf).filter(F.col("prediction") >= 0).count()
        elephas_pred = time.perf_counter() - start
        assert counted == args.predict_rows, counted
        pdf.unpersist()

        px = np.random.default_rng(99).normal(size=(args.predict_rows, FEATURES)).astype(np.float32)
        model = fitted.get_model()
        model.predict(px[:1024], verbose=0, batch_size=1024)  # build the predict function first
        start = time.perf_counter()
        model.predict(px, verbose=0, batch_size=1024)
        keras_pred = time.perf_counter() - start
    finally:
        spark.stop()

    fit_samples = args.rows * args.epochs
    rows = [
        ("fit  keras", fit_samples / keras_fit, keras_fit, f"train accuracy {keras_acc:.3f}"),
        ("fit  elephas", fit_samples / elephas_fit, elephas_fit, f"train accuracy {elephas_acc:.3f}"),
        ("predict keras", args.predict_rows / keras_pred, keras_pred, ""),
        ("transform elephas", args.predict_rows / elephas_pred, elephas_pred, ""),
    ]
    print(f"rows={args.rows} epochs={args.epochs} predict_rows={args.predict_rows} "
          f"partitions={partitions} master={args.master} cpus={os.cpu_count()} "
          f"warm-up={'off' if args.no_warmup else f'{warmup:.1f} s (untimed)'}")
    for name, rate, secs, note in rows:
        print(f"{name:<18} {rate:>12,.0f} samples/s  {secs:8.2f} s  {note}")
    fit_ratio = keras_fit / elephas_fit
    pred_ratio = keras_pred / elephas_pred
    print(f"fit ratio       elephas/keras = {fit_ratio:.2f}  (target >= 0.70)")
    print(f"transform ratio elephas/keras = {pred_ratio:.2f}  (target >= 0.50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
