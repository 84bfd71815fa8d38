"""Structured Streaming inference with a saved Spark ML pipeline: StandardScaler + ElephasEstimator
trained in batch, saved, loaded back and applied to a stream of Parquet files.

    python examples/streaming_inference.py --small
    spark-submit examples/streaming_inference.py

Files arrive in a directory one at a time (the script writes them); the loaded ``PipelineModel``
transforms the streaming DataFrame (an ml Vector features column) one file per micro-batch, and
``foreachBatch`` collects the predictions. The script checks that they equal the batch transform
of the same rows. The Keras model is built once per Python worker, not once per micro-batch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import keras  # noqa: E402
from pyspark.ml import Pipeline, PipelineModel  # noqa: E402
from pyspark.ml.feature import StandardScaler  # noqa: E402
from pyspark.ml.linalg import Vectors  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from elephas.ml_model import ElephasEstimator  # noqa: E402

log = logging.getLogger("streaming_inference_example")
NB_CLASSES = 3
NB_FEATURES = 8


def make_rows(rows: int, start: int = 0, seed: int = 0) -> list[tuple]:
    """``(id, features Vector, label)`` rows from a fixed random linear teacher."""
    rng = np.random.default_rng(seed)
    teacher = np.random.default_rng(42).normal(size=(NB_FEATURES, NB_CLASSES))
    x = rng.normal(size=(rows, NB_FEATURES))
    labels = np.argmax(x @ teacher, axis=1)
    return [(start + i, Vectors.dense(r), float(k)) for i, (r, k) in enumerate(zip(x.tolist(), labels.tolist()))]


def build_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((NB_FEATURES,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(NB_CLASSES, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
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


def main(argv: list[str] | None = None) -> bool:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--files", type=int, default=5, help="Parquet files in the stream (one per micro-batch)")
    parser.add_argument("--rows-per-file", type=int, default=2000)
    parser.add_argument("--small", action="store_true", help="3 files of 100 rows, 1 epoch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    files, per_file, epochs = (3, 100, 1) if args.small else (args.files, args.rows_per_file, args.epochs)

    spark = spark_session("elephas-streaming-inference", args.workers)
    spark.sparkContext.setLogLevel("ERROR")
    work = tempfile.mkdtemp(prefix="elephas-streaming-")
    try:
        train = spark.createDataFrame(make_rows(10 * per_file, seed=1), ["id", "features", "label"])
        pipeline = Pipeline(
            stages=[
                StandardScaler(inputCol="features", outputCol="scaled"),
                ElephasEstimator(
                    build_model(),
                    epochs=epochs,
                    batch_size=32,
                    categorical=True,
                    nb_classes=NB_CLASSES,
                    featuresCol="scaled",
                    probabilityCol="probability",
                ),
            ]
        )
        pipeline.fit(train.repartition(args.workers)).save(os.path.join(work, "pipeline"))
        model = PipelineModel.load(os.path.join(work, "pipeline"))

        source = os.path.join(work, "incoming")
        for f in range(files):  # the files that "arrive"; the stream reads one per micro-batch
            rows = make_rows(per_file, start=f * per_file, seed=100 + f)
            spark.createDataFrame(rows, ["id", "features", "label"]).coalesce(1).write.mode("append").parquet(source)
        schema = spark.read.parquet(source).schema

        collected = []

        def keep(batch_df, batch_id: int) -> None:
            got = batch_df.select("id", "prediction").collect()
            log.info("micro-batch %d: %d rows", batch_id, len(got))
            collected.extend(got)

        stream = spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).parquet(source)
        query = model.transform(stream).writeStream.foreachBatch(keep).start()
        try:
            query.processAllAvailable()
        finally:
            query.stop()

        streamed = {r["id"]: r["prediction"] for r in collected}
        batch = {
            r["id"]: r["prediction"]
            for r in model.transform(spark.read.parquet(source)).select("id", "prediction").collect()
        }
        same = streamed == batch and len(batch) == files * per_file
        accuracy = np.mean([batch[r["id"]] == r["label"] for r in spark.read.parquet(source).collect()])
        print(f"streamed {len(streamed)} rows in {files} micro-batches; accuracy {accuracy:.4f}")
        print(f"streaming predictions identical to batch: {same}")
        return same
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
