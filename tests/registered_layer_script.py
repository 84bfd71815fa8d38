"""A user's script: a custom layer registered in ``__main__``, used without ``custom_objects``.

Usage: python registered_layer_script.py MODE
Prints ``RESULT fit=... predict=... evaluate=... transform=...`` when everything ran.
"""

from __future__ import annotations

import os
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402


@keras.saving.register_keras_serializable(package="user_script")
class ScaledDense(keras.layers.Layer):
    """A Dense layer times a constant: a custom layer Keras knows only through the registry."""

    def __init__(self, units: int, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.scale = units, scale
        self.dense = keras.layers.Dense(units)

    def call(self, inputs):
        return self.dense(inputs) * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale}


def main() -> None:
    mode = sys.argv[1]
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    from elephas.ml_model import ElephasEstimator
    from elephas.spark_model import SparkModel
    from elephas.utils.rdd_utils import to_simple_rdd

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("elephas-registered-layer")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(200, 4)).astype("float32")
        labels = (x[:, 0] + x[:, 1] > 0).astype(int)
        y = np.eye(2, dtype="float32")[labels]

        def build():
            keras.utils.set_random_seed(0)
            model = keras.Sequential(
                [
                    keras.Input((4,)),
                    ScaledDense(8, scale=0.5),
                    keras.layers.Activation("relu"),
                    keras.layers.Dense(2, activation="softmax"),
                ]
            )
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy", metrics=["accuracy"])
            return model

        spark_model = SparkModel(build(), mode=mode)
        history = spark_model.fit(to_simple_rdd(spark.sparkContext, x, y, num_slices=2), epochs=2, batch_size=16)
        predictions = spark_model.predict(x)
        loss, accuracy = spark_model.evaluate(x, y)
        df = spark.createDataFrame(
            [(Vectors.dense(r.tolist()), float(c)) for r, c in zip(x, labels)], ["features", "label"]
        ).repartition(2)
        fitted = ElephasEstimator(build(), mode=mode, epochs=1, batch_size=16, categorical=True, nb_classes=2).fit(df)
        transformed = fitted.transform(df).count()
        print(
            f"RESULT fit={len(history.history['loss'])} predict={predictions.shape[0]} "
            f"evaluate={accuracy:.3f} transform={transformed}",
            flush=True,
        )
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
