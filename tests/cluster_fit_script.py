"""Driver program for the cluster tests: asynchronous fit against a standalone master.

Usage: python cluster_fit_script.py MASTER_URL MODE TRANSPORT EPOCHS [ROWS]
Prints ``TRAINING n`` once updates of epoch n arrive (the test kills a worker then),
``EPOCH_END n`` after every epoch and
``RESULT accuracy=...`` at the end.
"""

from __future__ import annotations

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    master, mode, transport, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rows = int(sys.argv[5]) if len(sys.argv) > 5 else 4000
    import keras
    from pyspark.sql import SparkSession

    from elephas.spark_model import SparkModel
    from elephas.utils.rdd_utils import to_simple_rdd

    spark = (
        SparkSession.builder.master(master)
        .appName("elephas-cluster-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.executor.memory", "1g")
        .config("spark.cores.max", "2")
        .config("spark.task.maxFailures", "4")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("elephas.engine.async_driver").setLevel(logging.INFO)
    logging.getLogger("elephas.engine.driver").setLevel(logging.INFO)
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, size=(3, 4))
    labels = rng.integers(0, 3, size=rows)
    x = (centers[labels] + rng.normal(0, 0.5, size=(rows, 4))).astype("float32")
    y = np.eye(3, dtype="float32")[labels]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3, activation="softmax")]
    )
    model.compile(keras.optimizers.Adam(0.02), "categorical_crossentropy", metrics=["accuracy"])

    class Announce(keras.callbacks.Callback):
        epoch = 0
        announced: set = set()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):  # called while the epoch's stage runs
            if self.epoch not in self.announced:
                self.announced.add(self.epoch)
                print(f"TRAINING {self.epoch}", flush=True)

        def on_epoch_end(self, epoch, logs=None):
            print(f"EPOCH_END {epoch}", flush=True)

    sm = SparkModel(model, mode=mode, frequency=4, parameter_server_mode=transport, num_workers=2)
    history = sm.fit(to_simple_rdd(sc, x, y, 2), epochs=epochs, batch_size=8, callbacks=[Announce()])
    accuracy = float(model.evaluate(x, y, verbose=0)[1])
    print(f"RESULT accuracy={accuracy:.4f} epochs={len(history.history['loss'])}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
