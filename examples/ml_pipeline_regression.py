"""Regression with a Spark ML Pipeline: VectorAssembler + StandardScaler + ElephasEstimator,
scored with RegressionEvaluator against the predict-the-mean baseline.

    python examples/ml_pipeline_regression.py --small
    spark-submit examples/ml_pipeline_regression.py --epochs 20

The data is a synthetic table of 8 numeric columns and a smooth non-linear target with noise,
so the script runs anywhere without downloads.
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
from pyspark.ml import Pipeline  # noqa: E402
from pyspark.ml.evaluation import RegressionEvaluator  # noqa: E402
from pyspark.ml.feature import StandardScaler, VectorAssembler  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from elephas.ml_model import ElephasEstimator  # noqa: E402

log = logging.getLogger("ml_regression_example")
COLUMNS = [f"x{i}" for i in range(8)]


def make_frame(spark: SparkSession, rows: int, seed: int = 0):
    """Columns x0..x7 (different scales) and a target y = f(x) + noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(COLUMNS))) * np.arange(1, len(COLUMNS) + 1)
    z = x / np.arange(1, len(COLUMNS) + 1)
    y = 2.0 * z[:, 0] - z[:, 1] + np.sin(z[:, 2]) + 0.5 * z[:, 3] * z[:, 4] + 0.1 * rng.normal(size=rows)
    data = [tuple(map(float, row)) + (float(t),) for row, t in zip(x, y)]
    return spark.createDataFrame(data, COLUMNS + ["y"])


def build_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((len(COLUMNS),)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
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
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--small", action="store_true", help="2,000 rows, 5 epochs (enough to learn)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows, epochs = (2000, 5) if args.small else (args.rows, args.epochs)

    spark = spark_session("elephas-ml-regression", args.workers)
    spark.sparkContext.setLogLevel("ERROR")
    try:
        df = make_frame(spark, rows).repartition(args.workers)  # one training worker per partition
        train_df, test_df = df.randomSplit([0.8, 0.2], seed=1)

        estimator = ElephasEstimator(
            build_model(),
            mode=args.mode,
            epochs=epochs,
            batch_size=args.batch_size,
            validation_split=0.1,
            featuresCol="scaled",
            labelCol="y",
            outputCol="y_hat",
        )
        pipeline = Pipeline(
            stages=[
                VectorAssembler(inputCols=COLUMNS, outputCol="raw"),
                StandardScaler(inputCol="raw", outputCol="scaled", withMean=True, withStd=True),
                estimator,
            ]
        )
        fitted = pipeline.fit(train_df)
        history = fitted.stages[-1].history
        log.info("history: %s", {k: [round(v, 4) for v in vs] for k, vs in history.items()})

        prediction = fitted.transform(test_df)
        prediction.select("y", "y_hat").show(5)
        evaluator = RegressionEvaluator(labelCol="y", predictionCol="y_hat", metricName="rmse")
        rmse = evaluator.evaluate(prediction)
        mean = train_df.agg(F.avg("y")).first()[0]
        baseline = evaluator.evaluate(test_df.withColumn("y_hat", F.lit(mean)))
        r2 = evaluator.setMetricName("r2").evaluate(prediction)
        print(f"test RMSE {rmse:.4f} (predict-the-mean baseline {baseline:.4f}), R^2 {r2:.4f}")
        return rmse
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
