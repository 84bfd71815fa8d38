"""Classification with a Spark ML Pipeline: StringIndexer + StandardScaler + ElephasEstimator,
scored with MulticlassClassificationEvaluator.

    python examples/ml_pipeline_classification.py --small
    spark-submit examples/ml_pipeline_classification.py --mode hogwild

The data is a synthetic DataFrame (a features vector and a string category from a fixed linear
teacher), so the script runs anywhere without downloads.
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
from pyspark.ml.evaluation import MulticlassClassificationEvaluator  # noqa: E402
from pyspark.ml.feature import StandardScaler, StringIndexer  # noqa: E402
from pyspark.ml.linalg import Vectors  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from elephas.ml_model import ElephasEstimator  # noqa: E402

log = logging.getLogger("ml_classification_example")
NB_CLASSES = 4
NB_FEATURES = 16


def make_frame(spark: SparkSession, rows: int, seed: int = 0):
    """A DataFrame (features: Vector, category: 'cat_k'), unscaled features on purpose."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(NB_FEATURES, NB_CLASSES))
    x = rng.normal(loc=5.0, scale=3.0, size=(rows, NB_FEATURES))
    labels = np.argmax((x - 5.0) @ teacher, axis=1)
    data = [(Vectors.dense(row), f"cat_{k}") for row, k in zip(x.tolist(), labels.tolist())]
    return spark.createDataFrame(data, ["features", "category"])


def build_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((NB_FEATURES,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.1),
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
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--small", action="store_true", help="2,000 rows, 5 epochs (enough to learn)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows, epochs = (2000, 5) if args.small else (args.rows, args.epochs)

    spark = spark_session("elephas-ml-classification", args.workers)
    spark.sparkContext.setLogLevel("ERROR")
    try:
        df = make_frame(spark, rows).repartition(args.workers)  # one training worker per partition
        train_df, test_df = df.randomSplit([0.8, 0.2], seed=1)

        estimator = ElephasEstimator(
            build_model(),
            mode=args.mode,
            frequency="epoch",
            epochs=epochs,
            batch_size=args.batch_size,
            validation_split=0.1,
            categorical=True,
            nb_classes=NB_CLASSES,
            featuresCol="scaled_features",
            labelCol="label_index",
            probabilityCol="probability",
        )
        pipeline = Pipeline(
            stages=[
                StringIndexer(inputCol="category", outputCol="label_index"),
                StandardScaler(inputCol="features", outputCol="scaled_features", withMean=True, withStd=True),
                estimator,
            ]
        )
        fitted = pipeline.fit(train_df)
        history = fitted.stages[-1].history
        log.info("history: %s", {k: [round(v, 4) for v in vs] for k, vs in history.items()})

        prediction = fitted.transform(test_df)
        prediction.select("category", "label_index", "prediction", "probability").show(5, truncate=40)
        evaluator = MulticlassClassificationEvaluator(labelCol="label_index", predictionCol="prediction")
        accuracy = evaluator.setMetricName("accuracy").evaluate(prediction)
        f1 = evaluator.setMetricName("f1").evaluate(prediction)
        print(f"test accuracy {accuracy:.4f}, weighted F1 {f1:.4f}")
        return accuracy
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
