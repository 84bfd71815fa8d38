"""Save a trained SparkModel through the Hadoop FileSystem API and load it back.

    python examples/save_load_hadoop.py --small
    spark-submit examples/save_load_hadoop.py --uri hdfs:///user/me/models/clf.keras

``SparkModel.save`` and ``load_spark_model`` accept local paths and any Hadoop-compatible URI:
``file://`` (used here, so it runs anywhere), ``hdfs://namenode:8020/...`` and ``s3a://bucket/...``
(with the hadoop-aws jars and credentials configured in Spark). The file is a normal ``.keras``
(or ``.h5``) file with the distributed configuration (mode, frequency, workers...) embedded.
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

from elephas.engine.runtime import quiet_framework_import  # noqa: E402

quiet_framework_import()  # TensorFlow's C++ start-up lines go to the debug log, not the console

import keras  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from elephas.spark_model import SparkModel, load_spark_model  # noqa: E402
from elephas.utils.rdd_utils import to_simple_rdd  # noqa: E402

log = logging.getLogger("save_load_example")


def build_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
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


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="where to save (.keras or .h5); default: file:// in a temp dir")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="1,000 rows, 1 epoch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows, epochs = (1000, 1) if args.small else (10000, args.epochs)

    spark = spark_session("elephas-save-load", args.workers)
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    tmp = tempfile.TemporaryDirectory(prefix="elephas-save-")
    try:
        rng = np.random.default_rng(0)
        x = rng.random((rows, 10)).astype("float32")
        y = keras.utils.to_categorical((x[:, :5].sum(axis=1) > x[:, 5:].sum(axis=1)).astype(int), 2)
        spark_model = SparkModel(build_model(), mode="synchronous", frequency="epoch", num_workers=args.workers)
        spark_model.fit(to_simple_rdd(sc, x, y, num_slices=args.workers), epochs=epochs, batch_size=32)

        uri = args.uri or "file://" + os.path.join(tmp.name, "model.keras")
        spark_model.save(uri, overwrite=True)  # written through Hadoop's FileSystem API
        log.info("saved to %s", uri)

        loaded = load_spark_model(uri)
        log.info("loaded: mode=%s frequency=%s num_workers=%s", loaded.mode, loaded.frequency, loaded.num_workers)
        before, after = spark_model.predict(x[:200]), loaded.predict(x[:200])
        max_diff = float(np.max(np.abs(before - after)))
        if max_diff > 1e-6:
            raise SystemExit(f"predictions differ after loading: max |diff| = {max_diff}")
        print(
            f"saved and loaded {uri}: predictions identical (max |diff| {max_diff:.1e}); "
            f"accuracy {loaded.evaluate(x, y)[1]:.4f}"
        )
        return max_diff
    finally:
        spark.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
