"""Synchronous training on a Spark Connect session: one barrier ``mapInArrow`` stage per epoch, rounds reduced
inside the stage (no SparkContext, no RDD, executors never reach the client)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import make_blobs, make_dense_model
from pyspark.ml.linalg import Vectors

from elephas.engine.errors import TaskFailedError
from elephas.spark_model import SparkModel


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(n=240, input_dim=4, classes=3, seed=3)


@pytest.fixture(scope="module")
def frame(spark, blobs):
    x, y = blobs
    rows = [
        (i, Vectors.dense(x[i].tolist()), Vectors.dense(y[i].tolist()), float(np.argmax(y[i]))) for i in range(len(x))
    ]
    return spark.createDataFrame(rows, ["id", "features", "label", "label_index"])


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.began, self.ended = [], 0, 0

    def on_train_begin(self, logs=None):
        self.began += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, dict(logs or {})))

    def on_train_end(self, logs=None):
        self.ended += 1


def test_fit_on_a_dataframe_learns_with_callbacks_and_history(blobs, frame):
    x, y = blobs
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.01))
    before = model.get_weights()
    recorder = EpochRecorder()
    spark_model = SparkModel(model, frequency=2, num_workers=2)
    history = spark_model.fit(frame, epochs=3, batch_size=16, callbacks=[recorder])
    assert set(history.history) == {"loss", "accuracy"} and len(history.history["loss"]) == 3
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.windows == [2, 2, 2] and sum(history.partition_rows) == len(x)
    assert recorder.began == 1 and recorder.ended == 1 and [e for e, _ in recorder.epochs] == [0, 1, 2]
    assert recorder.epochs[-1][1]["loss"] == pytest.approx(history.history["loss"][-1])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.9
    assert spark_model.training_histories[-1] is history


def test_fit_on_numpy_with_validation_split_and_validation_data(blobs):
    x, y = blobs
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.01))
    history = SparkModel(model, num_workers=2).fit(x, y, epochs=2, batch_size=16, validation_split=0.25)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["val_loss"]) == 2 and sum(history.partition_rows) == 180
    loss, accuracy = model.evaluate(x[180:], y[180:], verbose=0)  # the held-out last rows, as in Keras
    assert history.history["val_loss"][-1] == pytest.approx(loss, rel=1e-4)
    assert history.history["val_accuracy"][-1] == pytest.approx(accuracy, abs=1e-6)
    more = SparkModel(model, num_workers=2).fit(x, y, epochs=1, batch_size=16, validation_data=(x[:30], y[:30]))
    loss, _ = model.evaluate(x[:30], y[:30], verbose=0)
    assert more.history["val_loss"] == [pytest.approx(loss, rel=1e-4)]


def test_fit_on_a_dataframe_validates_in_the_stage_and_on_a_frame(blobs, frame):
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.01))
    spark_model = SparkModel(model, num_workers=2)
    history = spark_model.fit(frame, epochs=1, batch_size=16, validation_split=0.2)
    assert {"val_loss", "val_accuracy"} <= set(history.history) and sum(history.partition_rows) == 192
    val = frame.limit(50)
    again = spark_model.fit(
        frame,
        epochs=1,
        batch_size=16,
        validation_data=val,
        features_col="features",
        label_col="label_index",
        nb_classes=3,
    )
    loss, accuracy = spark_model.evaluate(val, features_col="features", label_col="label")
    assert again.history["val_loss"] == [pytest.approx(loss, rel=1e-4)]
    assert again.history["val_accuracy"] == [pytest.approx(accuracy, abs=1e-6)]


def test_a_task_error_comes_back_with_the_executor_traceback(spark):
    rows = [(Vectors.dense([float(i), 1.0, 0.0, 2.0]), float(i % 3)) for i in range(20)] + [
        (Vectors.dense([1.0, 1.0, 1.0, 1.0]), 7.0)
    ]  # one label outside [0, 3)
    df = spark.createDataFrame(rows, ["features", "label"])
    with pytest.raises(
        TaskFailedError,
        match=r"Training failed in the task for partition \d+: ValueError: Expected labels "
        r"to be class indices in \[0, 3\)",
    ) as info:
        SparkModel(make_dense_model(), num_workers=2).fit(df, epochs=1, nb_classes=3)
    assert "one_hot_encode" in info.value.remote_traceback


def test_the_estimator_fits_and_transforms_in_a_pipeline(blobs, frame):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler

    from elephas.ml.estimator import ElephasEstimator

    estimator = ElephasEstimator(
        make_dense_model(optimizer=keras.optimizers.Adam(0.01)),
        epochs=2,
        batch_size=16,
        categorical=True,
        nb_classes=3,
        validation_split=0.0,
        num_workers=2,
    )
    estimator.setFeaturesCol("scaled").setLabelCol("label_index")
    pipeline = Pipeline(stages=[StandardScaler(inputCol="features", outputCol="scaled"), estimator])
    fitted = pipeline.fit(frame)
    assert len(fitted.stages[-1].history["loss"]) == 2
    out = fitted.transform(frame).select("prediction", "label_index").toPandas()
    assert len(out) == len(blobs[0]) and (out["prediction"] == out["label_index"]).mean() > 0.9


def test_the_averaging_trainer_trains(frame):
    from elephas.trainers import AveragingTrainer

    trainer = AveragingTrainer(
        keras_model=make_dense_model(),
        worker_optimizer=keras.optimizers.Adam(0.01),
        loss="categorical_crossentropy",
        batch_size=16,
        num_epoch=2,
        num_workers=2,
    )
    model = trainer.train(frame)
    assert len(trainer.history.history["loss"]) == 2 and model.count_params() > 0
