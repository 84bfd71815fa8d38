"""Benchmark: ElephasEstimator.fit / ElephasTransformer.transform against single-process Keras.

* fit: a DataFrame of ``--rows`` x 784 float32 features, 10 classes labelled by a fixed random
  linear teacher; MLP Dense(128, relu) - Dropout(0.2) - Dense(128, relu) - Dropout(0.2) -
  Dense(10, softmax), SGD(lr=0.05), batch 64, synchronous, ``--epochs`` epochs; against
  ``model.fit`` on the same numpy arrays from the same initial weights.
* transform: ``transform`` of a cached DataFrame of ``--predict-rows`` random 784-float
  ``array<float>`` rows (``--vector``: an ml DenseVector column), forced by counting the rows
  whose prediction is >= 0 (the filter reads the prediction, so the UDF runs for every row, once:
  the benchmark checks that the executed plan has exactly one Python evaluation), against
  ``model.predict(batch_size=1024)`` on the same number of rows; ``inference_batch_size`` is
  1024 too, and the model is the same.

Prints samples/s and the ratios (targets: fit >= 0.7 x Keras, transform >= 0.5 x predict).
Before timing, an untimed 2,000-row fit and transform start the Python workers and import
TensorFlow in them, as the driver already has; ``--no-warmup`` times cold executors instead.
The baseline builds its predict function on 1,024 rows before it is timed; likewise the first
transform, which builds the transformer's model and predict function in each Python worker, is
reported apart (``first transform``) and the ratio uses the transforms after it.

``--transform-only`` skips the fit (the transformer holds the untrained model: inference costs
the same) and ``--repeat N`` times transform and predict N times each, alternating, reporting the
best and the median. ``--transfer-floor`` also times an Arrow UDF that only receives the feature
column and returns a constant: the cost of moving the column to Python, which no model can beat.

Usage:
    python benchmarks/bench_ml.py                       # full size: 60,000 rows, 200,000 to predict
    python benchmarks/bench_ml.py --rows 3000 --predict-rows 10000 --epochs 1   # quick check
    python benchmarks/bench_ml.py --transform-only --repeat 3 --transfer-floor  # transform only
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
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="categorical_crossentropy", metrics=["accuracy"]
    )
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


def vector_frame(df):
    """``df`` with its array ``features`` column as an ml DenseVector column, cached."""
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    out = df.select(array_to_vector(F.col("features")).alias("features")).cache()
    out.count()
    return out


def python_evaluations(df) -> int:
    """How many Python UDF evaluation operators the executed plan of ``df`` has."""
    plan = df._jdf.queryExecution().executedPlan().toString()
    return sum(plan.count(op) for op in ("ArrowEvalPython", "BatchEvalPython"))


def count_predictions(transformed) -> int:
    """Rows with a prediction >= 0 (all of them), after checking that the UDF runs exactly once."""
    from pyspark.sql import functions as F

    counted = transformed.filter(F.col("prediction") >= 0).groupBy().count()
    evaluations = python_evaluations(counted)
    if evaluations != 1:
        raise RuntimeError(f"expected the model to run once per row; the plan has {evaluations} Python evaluations")
    return int(counted.collect()[0][0])


def transfer_floor(df) -> float:
    """Seconds for an Arrow UDF that receives the feature column and returns a constant per row."""
    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType
    from pyspark.util import PythonEvalType

    def noop(batches):
        for batch in batches:
            yield pa.array(np.zeros(len(batch)))

    udf = F.arrow_udf(noop, DoubleType(), functionType=PythonEvalType.SQL_SCALAR_ARROW_ITER_UDF)
    column = F.col("features")
    if "Vector" in type(df.schema["features"].dataType).__name__:
        from pyspark.ml.functions import vector_to_array

        column = vector_to_array(column, "float32")  # what transform sends for a vector column
    start = time.perf_counter()
    counted = df.withColumn("prediction", udf(column)).filter(F.col("prediction") >= 0).count()
    seconds = time.perf_counter() - start
    assert counted == df.count(), counted
    return seconds


def summary(times: list[float]) -> tuple[float, float]:
    """(best, median) of ``times``."""
    ordered = sorted(times)
    return ordered[0], ordered[len(ordered) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000, help="training rows")
    parser.add_argument("--predict-rows", type=int, default=200_000, help="rows to transform")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument(
        "--partitions", type=int, default=None, help="DataFrame partitions (default: Spark's default parallelism)"
    )
    parser.add_argument(
        "--no-warmup", action="store_true", help="time cold executors too (Python workers still importing TensorFlow)"
    )
    parser.add_argument(
        "--transform-only",
        action="store_true",
        help="skip the fit: time transform (untrained model) against model.predict only",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time transform and predict this many times each (best and median reported)",
    )
    parser.add_argument("--vector", action="store_true", help="transform an ml DenseVector features column")
    parser.add_argument(
        "--transfer-floor",
        action="store_true",
        help="also time a no-op Arrow UDF over the feature column (the JVM -> Python transfer)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from elephas.ml_model import ElephasEstimator

    spark = (
        SparkSession.builder.master(args.master)
        .appName("bench_ml")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "6g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    partitions = args.partitions or spark.sparkContext.defaultParallelism
    fit = None
    floor = None
    try:
        from elephas.ml_model import ElephasTransformer

        x, labels = teacher_data(args.rows if not args.transform_only else 2000, seed=0)
        y = np.eye(CLASSES, dtype=np.float32)[labels.astype(int)]

        if not args.transform_only:
            keras_model = build_model(seed=0)
            start = time.perf_counter()
            keras_model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
            keras_fit = time.perf_counter() - start
            keras_acc = float(np.mean(np.argmax(keras_model.predict(x, verbose=0, batch_size=1024), 1) == labels))

        warmup = 0.0
        if not args.no_warmup:  # start the Python workers and import TensorFlow there, untimed
            start = time.perf_counter()
            small = make_frame(spark, x[:2000], labels[:2000], partitions)
            if args.transform_only:
                warm = ElephasTransformer(build_model(seed=1), categorical=True)
            else:
                warm = ElephasEstimator(
                    build_model(seed=1), epochs=1, batch_size=args.batch_size, categorical=True, validation_split=0.0
                ).fit(small)
            warm.transform(small.select("features")).filter(F.col("prediction") >= 0).count()
            small.unpersist()
            warmup = time.perf_counter() - start

        if args.transform_only:
            fitted = ElephasTransformer(build_model(seed=0), categorical=True)
        else:
            df = make_frame(spark, x, labels, partitions)
            estimator = ElephasEstimator(
                build_model(seed=0),
                epochs=args.epochs,
                batch_size=args.batch_size,
                categorical=True,
                nb_classes=CLASSES,
                validation_split=0.0,
                mode="synchronous",
                frequency="epoch",
            )
            start = time.perf_counter()
            fitted = estimator.fit(df)
            elephas_fit = time.perf_counter() - start
            elephas_acc = float(
                np.mean(np.argmax(fitted.get_model().predict(x, verbose=0, batch_size=1024), 1) == labels)
            )
            df.unpersist()
            fit = (keras_fit, keras_acc, elephas_fit, elephas_acc)
        fitted.set_params(inference_batch_size=1024)
        del x, y

        pdf = generated_frame(spark, args.predict_rows, partitions, seed=99)
        if args.vector:
            arrays, pdf = pdf, vector_frame(pdf)
            arrays.unpersist()
        # the first transform builds the transformer's model and predict function in the Python
        # workers: timed and reported apart, as the baseline's predict function is built before
        # it is timed
        start = time.perf_counter()
        assert count_predictions(fitted.transform(pdf)) == args.predict_rows
        transform_cold = time.perf_counter() - start

        px = np.random.default_rng(99).normal(size=(args.predict_rows, FEATURES)).astype(np.float32)
        model = fitted.get_model()
        model.predict(px[:1024], verbose=0, batch_size=1024)  # build the predict function first
        elephas_times: list[float] = []
        keras_times: list[float] = []
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            counted = count_predictions(fitted.transform(pdf))
            elephas_times.append(time.perf_counter() - start)
            assert counted == args.predict_rows, counted
            start = time.perf_counter()
            model.predict(px, verbose=0, batch_size=1024)
            keras_times.append(time.perf_counter() - start)
        if args.transfer_floor:
            floor = transfer_floor(pdf)
        pdf.unpersist()
    finally:
        spark.stop()

    elephas_pred, elephas_median = summary(elephas_times)
    keras_pred, keras_median = summary(keras_times)
    rows = []
    if fit is not None:
        keras_fit, keras_acc, elephas_fit, elephas_acc = fit
        fit_samples = args.rows * args.epochs
        rows += [
            ("fit  keras", fit_samples / keras_fit, keras_fit, f"train accuracy {keras_acc:.3f}"),
            ("fit  elephas", fit_samples / elephas_fit, elephas_fit, f"train accuracy {elephas_acc:.3f}"),
        ]
    rows += [
        ("predict keras", args.predict_rows / keras_pred, keras_pred, ""),
        ("transform elephas", args.predict_rows / elephas_pred, elephas_pred, "model built in the workers"),
        (
            "  first transform",
            args.predict_rows / transform_cold,
            transform_cold,
            "building the model and its predict function in each worker",
        ),
    ]
    if floor is not None:
        rows.append(("no-op Arrow UDF", args.predict_rows / floor, floor, "moving the feature column to Python only"))
    load = os.getloadavg()
    print(
        f"rows={args.rows if fit else 0} epochs={args.epochs if fit else 0} predict_rows={args.predict_rows} "
        f"features={'vector' if args.vector else 'array<float>'} partitions={partitions} master={args.master} "
        f"cpus={os.cpu_count()} repeat={max(1, args.repeat)} "
        f"warm-up={'off' if args.no_warmup else f'{warmup:.1f} s (untimed)'} "
        f"load average={load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    for name, rate, secs, note in rows:
        print(f"{name:<18} {rate:>12,.0f} samples/s  {secs:8.2f} s  {note}")
    if fit is not None:
        print(f"fit ratio       elephas/keras = {keras_fit / elephas_fit:.2f}  (target >= 0.70)")
    print(
        f"transform ratio elephas/keras = {keras_pred / elephas_pred:.2f}  (target >= 0.50)"
        + (
            f"  median {keras_median / elephas_median:.2f}; per run "
            + " ".join(f"{k / e:.2f}" for k, e in zip(keras_times, elephas_times))
            if args.repeat > 1
            else ""
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
