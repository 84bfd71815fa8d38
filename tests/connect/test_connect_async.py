"""Asynchronous modes on a Spark Connect session: the parameter server runs inside every epoch's barrier stage,
in the task of rank 0; and weights above the closure's share travel as session artifacts."""

from __future__ import annotations

import json
import logging
import math
import socket

import keras
import numpy as np
import pytest
from conftest import make_blobs, make_dense_model
from pyspark.ml.linalg import Vectors

from elephas.engine import frame_weights
from elephas.engine.windows import at_least_four_rounds, bounds_for
from elephas.spark_model import SparkModel


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(n=240, input_dim=4, classes=3, seed=3)


@pytest.fixture(scope="module")
def frame(spark, blobs):
    x, y = blobs
    rows = [(Vectors.dense(x[i].tolist()), Vectors.dense(y[i].tolist())) for i in range(len(x))]
    return spark.createDataFrame(rows, ["features", "label"])


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


def python_worker_threads(spark):
    """``{pid: thread names}`` of the Python workers that run the next two barrier tasks."""

    def probe(batches):
        import os
        import threading

        import pyarrow as pa

        for _ in batches:
            pass
        names = json.dumps([t.name for t in threading.enumerate()])
        yield pa.RecordBatch.from_pydict({"pid": [os.getpid()], "threads": [names]})

    table = spark.range(4).repartition(2).mapInArrow(probe, "pid long, threads string", barrier=True).toArrow()
    return {int(p): json.loads(t) for p, t in zip(table.column("pid").to_pylist(), table.column("threads").to_pylist())}


def assert_server_gone(spark, stats):
    assert stats["threads_left"] == []
    host, _, port = stats["address"].rpartition(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()
    workers = python_worker_threads(spark)
    assert stats["pid"] in workers  # the Python worker that hosted the server is still alive
    assert not any(n.startswith("elephas-ps-") for names in workers.values() for n in names)


def test_asynchronous_fit_on_a_dataframe_learns_with_callbacks_and_history(spark, blobs, frame):
    x, y = blobs
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.01))
    recorder = EpochRecorder()
    spark_model = SparkModel(model, mode="asynchronous", frequency=2, num_workers=2)
    history = spark_model.fit(frame, epochs=2, batch_size=16, callbacks=[recorder])
    assert set(history.history) == {"loss", "accuracy"} and len(history.history["loss"]) == 2
    assert recorder.began == 1 and recorder.ended == 1 and [e for e, _ in recorder.epochs] == [0, 1]
    assert recorder.epochs[-1][1]["loss"] == pytest.approx(history.history["loss"][-1])
    assert sum(history.partition_rows) == len(x)
    records = history.window_records
    assert {r["epoch"] for r in records} == {0, 1} and {r["worker_id"] for r in records} == {"0", "1"}
    assert sum(r["samples"] for r in records if r["epoch"] == 0) == len(x)
    assert len(history.server_stats) == 2
    for stats in history.server_stats:  # one server per epoch stage
        assert stats["updates_applied"] == len(records) // 2 and stats["updates_refused"] == 0
        assert stats["transport"] == "http" and set(stats["workers"]) == {"0", "1"}
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.9
    assert_server_gone(spark, history.server_stats[-1])


def test_hogwild_on_the_socket_transport_validates_held_out_rows(spark, blobs, frame):
    x, y = blobs
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.01))
    spark_model = SparkModel(model, mode="hogwild", parameter_server_mode="socket", frequency=3, num_workers=2)
    history = spark_model.fit(frame, epochs=2, batch_size=16, validation_split=0.25)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert sum(history.partition_rows) == 180 and history.server_stats[-1]["transport"] == "socket"
    assert not history.server_stats[-1]["locked"]
    assert np.isfinite(history.history["val_loss"]).all() and history.history["val_accuracy"][-1] > 0.85
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.9
    assert_server_gone(spark, history.server_stats[-1])


def test_asynchronous_fit_on_numpy_with_validation_split_and_background_push(blobs):
    x, y = blobs
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.01))
    spark_model = SparkModel(model, mode="asynchronous", frequency=2, num_workers=2, background_push=True)
    history = spark_model.fit(x, y, epochs=2, batch_size=16, validation_split=0.25)
    assert sum(r["samples"] for r in history.window_records if r["epoch"] == 1) == 180
    loss, accuracy = model.evaluate(x[180:], y[180:], verbose=0)  # the held-out last rows, as in Keras
    assert history.history["val_loss"][-1] == pytest.approx(loss, rel=1e-4)
    assert accuracy > 0.9


def test_the_elastic_averaging_trainer_learns(blobs, frame):
    from elephas.trainers import AEASGD

    x, y = blobs
    trainer = AEASGD(
        keras_model=make_dense_model(),
        worker_optimizer=keras.optimizers.Adam(0.01),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        batch_size=16,
        num_epoch=2,
        num_workers=2,
        communication_window=3,
    )
    model = trainer.train(frame)
    assert len(trainer.history.history["loss"]) == 2
    assert trainer.spark_model.mode == "easgd" and trainer.history.server_stats[-1]["updates_applied"] > 0
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.9


@pytest.mark.parametrize("mode", ["synchronous", "asynchronous"])
def test_weights_above_the_threshold_travel_as_session_artifacts(blobs, frame, monkeypatch, caplog, mode):
    """The threshold lowered to 128 bytes sends this tiny model's weights (268 bytes) as artifacts every epoch."""
    x, y = blobs
    monkeypatch.setattr(frame_weights, "ARTIFACT_THRESHOLD_BYTES", 128)
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.01))
    assert sum(w.nbytes for w in model.get_weights()) > 128
    with caplog.at_level(logging.INFO, logger="elephas.engine.frame_weights"):
        history = SparkModel(model, mode=mode, frequency=2, num_workers=2).fit(frame, epochs=2, batch_size=16)
    shipped = [r for r in caplog.records if "shipped as the session artifact" in r.getMessage()]
    assert len(shipped) == 2 and len(history.history["loss"]) == 2
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.9


def test_a_model_with_50_mb_of_weights_trains_two_epochs_through_artifacts(caplog):
    """51 MB of weights, and 102 MB with the server step's momentum in the second epoch: both above the
    closure's share, so both epochs ship them as session artifacts (a closure of 97 MiB ran the local
    server's 1 GiB driver out of heap)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(4096, activation="relu"),
            keras.layers.Dense(3100),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("sgd", "categorical_crossentropy")
    size = sum(w.nbytes for w in model.get_weights())
    assert 50e6 < size < 53e6 and size > frame_weights.ARTIFACT_THRESHOLD_BYTES
    x, y = make_blobs(n=64, input_dim=4, classes=3, seed=1)
    with caplog.at_level(logging.INFO, logger="elephas.engine.frame_weights"):
        history = SparkModel(model, num_workers=2).fit(x, y, epochs=2, batch_size=32)
    shipped = [r.getMessage() for r in caplog.records if "shipped as the session artifact" in r.getMessage()]
    assert len(shipped) == 2 and f"{2 * size / (1 << 20):.1f} MiB" in shipped[1]  # with the Nesterov momentum
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


def test_an_artifact_is_read_by_the_tasks_and_checked_before_it_is_decoded(spark):
    import dataclasses

    weights = [np.arange(12, dtype=np.float32).reshape(3, 4), np.array([7], np.int64)]
    shipped = frame_weights.ship_arrays(spark, weights, {"weights": 2}, threshold=0)
    assert not shipped.in_closure and shipped.arrays is None and shipped.artifact.startswith("elephas-weights-")

    def read(ref):
        def fn(batches):
            import pyarrow as pa

            for _ in batches:
                pass
            arrays = ref.load()
            yield pa.RecordBatch.from_pydict({"values": [json.dumps([a.tolist() for a in arrays])]})

        return fn

    rows = spark.range(2).repartition(2).mapInArrow(read(shipped), "values string").toArrow()
    assert [json.loads(v) for v in rows.column("values").to_pylist()] == [[w.tolist() for w in weights]] * 2
    tampered = dataclasses.replace(shipped, digest="0" * 64)
    with pytest.raises(Exception, match=r"Expected the artifact elephas-weights-\w+\.bin with SHA-256 0{64}"):
        spark.range(1).mapInArrow(read(tampered), "values string").toArrow()


def test_automatic_window_is_measured_by_every_task_and_capped_for_small_partitions(spark, blobs, frame):
    x, y = blobs
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.01))
    history = SparkModel(model, mode="asynchronous", num_workers=2).fit(frame, epochs=2, batch_size=16)
    batches = [math.ceil(n / 16) for n in history.partition_rows]
    expected = at_least_four_rounds(bounds_for("asynchronous").initial, max(batches))
    assert history.windows == [expected, expected]  # small partitions: at least four exchanges an epoch
    for stats in history.server_stats:  # every task told rank 0 what it measured
        tasks = stats["tasks"]
        assert sorted(t["batches"] for t in tasks) == sorted(batches)
        assert all(t["windows"] == math.ceil(t["batches"] / expected) for t in tasks)
        assert all(t["compute_s"] > 0 and t["exchange_s"] > 0 for t in tasks)
    assert_server_gone(spark, history.server_stats[-1])
