"""The Otto Product Classification walkthrough as a script: CSV -> DataFrame -> StringIndexer +
StandardScaler + ElephasEstimator Pipeline -> accuracy.

    python examples/otto_pipeline.py --data /path/to/otto/train.csv
    python examples/otto_pipeline.py --small          # synthetic file of the same layout
    spark-submit examples/otto_pipeline.py --data hdfs:///data/otto/train.csv

The Otto CSV layout: ``id``, ``feat_1`` .. ``feat_93`` (integer counts), ``target``
(``Class_1`` .. ``Class_9``). Without ``--data`` a synthetic file of exactly that layout is written
to a temporary directory by :func:`generate_otto_csv` (the script says so).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

log = logging.getLogger("otto_example")
NB_FEATURES = 93
NB_CLASSES = 9


def generate_otto_csv(path: str, rows: int, seed: int = 0) -> str:
    """Write ``rows`` synthetic products in the Otto ``train.csv`` layout to ``path``.

    Each class has its own Poisson rate per feature, so the counts are sparse like Otto's and the
    classes are learnable. Rows are sorted by class, as in the real file.
    """
    rng = np.random.default_rng(seed)
    rates = rng.gamma(shape=0.3, scale=2.0, size=(NB_CLASSES, NB_FEATURES))
    weights = np.linspace(2, 1, NB_CLASSES)  # Class_1 most frequent
    classes = np.sort(rng.choice(NB_CLASSES, size=rows, p=weights / weights.sum()))
    counts = rng.poisson(rates[classes])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id"] + [f"feat_{i}" for i in range(1, NB_FEATURES + 1)] + ["target"])
        for i, (row, k) in enumerate(zip(counts.tolist(), classes.tolist()), start=1):
            writer.writerow([i] + row + [f"Class_{k + 1}"])
    return path


def load_otto(spark, path: str):
    """The CSV as a DataFrame (features: Vector of the 93 counts, category: string)."""
    from pyspark.ml.feature import VectorAssembler

    raw = spark.read.csv(path, header=True, inferSchema=True)
    feature_cols = [c for c in raw.columns if c.startswith("feat_")]
    assembled = VectorAssembler(inputCols=feature_cols, outputCol="features").transform(raw)
    return assembled.select("features", assembled["target"].alias("category"))


def build_model(input_dim: int, nb_classes: int):
    """The walkthrough's MLP: three Dense(512) + ReLU + Dropout(0.5) blocks, softmax output."""
    import keras

    layers = [keras.Input((input_dim,))]
    for _ in range(3):
        layers += [keras.layers.Dense(512, activation="relu"), keras.layers.Dropout(0.5)]
    model = keras.Sequential(layers + [keras.layers.Dense(nb_classes, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def spark_session(app: str, workers: int):
    from pyspark.sql import SparkSession

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
    parser.add_argument("--data", help="Otto train.csv (local path or Hadoop URI)")
    parser.add_argument("--mode", default="synchronous", help="synchronous, asynchronous, hogwild or a dist-keras rule")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20000, help="rows of the synthetic file")
    parser.add_argument("--small", action="store_true", help="2,000 synthetic rows, 5 epochs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    epochs = 5 if args.small else args.epochs

    from pyspark.ml import Pipeline
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import StandardScaler, StringIndexer

    from elephas.ml_model import ElephasEstimator

    spark = spark_session("elephas-otto", args.workers)
    spark.sparkContext.setLogLevel("ERROR")
    with tempfile.TemporaryDirectory(prefix="otto-") as tmp:
        try:
            path = args.data
            if not path:
                rows = 2000 if args.small else args.rows
                path = generate_otto_csv(os.path.join(tmp, "train.csv"), rows)
                log.warning("no --data given: using %d synthetic rows in the Otto layout (%s)", rows, path)
            # The file is sorted by class: shuffle by repartitioning before splitting.
            df = load_otto(spark, path).repartition(args.workers)
            train_df, test_df = df.randomSplit([0.85, 0.15], seed=1)
            nb_classes = df.select("category").distinct().count()
            input_dim = len(df.first()["features"])
            log.info("%d classes, %d features", nb_classes, input_dim)

            estimator = ElephasEstimator(
                build_model(input_dim, nb_classes),
                mode=args.mode,
                epochs=epochs,
                batch_size=args.batch_size,
                validation_split=0.15,
                categorical=True,
                nb_classes=nb_classes,
                featuresCol="scaled_features",
                labelCol="index_category",
            )
            pipeline = Pipeline(
                stages=[
                    StringIndexer(inputCol="category", outputCol="index_category"),
                    StandardScaler(inputCol="features", outputCol="scaled_features", withStd=True, withMean=True),
                    estimator,
                ]
            )
            fitted = pipeline.fit(train_df)
            prediction = fitted.transform(test_df)
            prediction.select("category", "index_category", "prediction").show(10)
            accuracy = MulticlassClassificationEvaluator(labelCol="index_category", metricName="accuracy").evaluate(
                prediction
            )
            print(f"test accuracy {accuracy:.4f}")
            return accuracy
        finally:
            spark.stop()


if __name__ == "__main__":
    main()
