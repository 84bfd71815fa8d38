"""SparkModel on a real local[2] SparkSession with tiny Keras models."""

from __future__ import annotations

import os
import threading

import keras
import numpy as np
import pytest
from conftest import make_blobs, make_dense_model

from elephas.engine.errors import TaskFailedError
from elephas.spark_model import AsynchronousSparkModel, SparkModel, load_spark_model
from elephas.utils.rdd_utils import to_simple_rdd


def with_empty_partition(sc, rows, slices, empty):
    """An RDD of ``rows`` over ``slices`` partitions where partition ``empty`` has no rows."""
    chunks = np.array_split(np.arange(len(rows)), slices - 1)
    parts = [[rows[i] for i in c] for c in chunks]
    parts.insert(empty, [])
    return sc.parallelize(range(slices), slices).flatMap(lambda i: parts[i])


def jobs_started(sc, fn):
    group = f"probe-{threading.get_ident()}-{np.random.randint(1 << 30)}"
    sc.setJobGroup(group, "probe")
    try:
        fn()
    finally:
        jobs = sc.statusTracker().getJobIdsForGroup(group)
        sc.setLocalProperty("spark.jobGroup.id", None)
    return len(jobs)


# ------------------------------------------------------------------------------ predict/evaluate
@pytest.mark.parametrize("slices,empty", [(1, None), (2, None), (7, 3)])
@pytest.mark.backend
def test_predict_keeps_input_order(sc, slices, empty):
    x, _ = make_blobs(23)
    model = make_dense_model()
    expected = model.predict(x, verbose=0)
    rows = list(x)
    rdd = sc.parallelize(rows, slices) if empty is None else with_empty_partition(sc, rows, slices, empty)
    if empty is not None:
        sizes = rdd.glom().map(len).collect()
        assert sizes[empty] == 0 and len(sizes) == slices
    out = SparkModel(model).predict(rdd)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.backend
def test_predict_numpy_and_dataframe(spark, sc):
    from pyspark.ml.linalg import Vectors

    x, _ = make_blobs(17)
    model = make_dense_model()
    expected = model.predict(x, verbose=0)
    sm = SparkModel(model, num_workers=3)
    np.testing.assert_allclose(sm.predict(x), expected, atol=1e-6)
    df = (
        spark.createDataFrame([(i, Vectors.dense(r.tolist())) for i, r in enumerate(x)], ["id", "features"])
        .repartition(4)
        .orderBy("id")
    )
    np.testing.assert_allclose(sm.predict(df), expected, atol=1e-6)


@pytest.mark.backend
def test_evaluate_equals_keras(sc):
    x, y = make_blobs(150, seed=3)
    model = make_dense_model(metrics=("accuracy", keras.metrics.Precision(name="precision")))
    model.fit(x, y, epochs=2, verbose=0)
    expected = model.evaluate(x, y, batch_size=16, verbose=0)
    rdd = to_simple_rdd(sc, x, y, num_slices=3)
    got = SparkModel(model).evaluate(rdd, batch_size=16)
    assert isinstance(got, list) and len(got) == 3
    np.testing.assert_allclose(got, expected, atol=1e-5)
    got_np = SparkModel(model, num_workers=2).evaluate(x, y, batch_size=16)
    np.testing.assert_allclose(got_np, expected, atol=1e-5)


def test_evaluate_loss_only_is_a_float(sc):
    x, y = make_blobs(40)
    model = make_dense_model(metrics=())
    got = SparkModel(model).evaluate(x, y)
    assert isinstance(got, float)
    assert got == pytest.approx(model.evaluate(x, y, verbose=0), abs=1e-5)


# ------------------------------------------------------------------------------------- fitting
def test_synchronous_average_weighted_by_samples_exact(sc):
    """One round over unequal partitions (and an empty one) equals the weighted mean of deltas."""
    x, y = make_blobs(12, seed=5)
    model = make_dense_model(optimizer=keras.optimizers.SGD(0.1))
    start = model.get_weights()
    parts = [list(zip(x[:3], y[:3])), [], list(zip(x[3:], y[3:]))]
    rdd = sc.parallelize(range(3), 3).flatMap(lambda i: parts[i])
    SparkModel(model, frequency="epoch").fit(rdd, epochs=1, batch_size=64, shuffle=False)
    got = model.get_weights()

    deltas = []
    for xs, ys in ((x[:3], y[:3]), (x[3:], y[3:])):
        local = make_dense_model(optimizer=keras.optimizers.SGD(0.1))
        local.set_weights(start)
        local.train_on_batch(xs, ys)
        deltas.append([w - s for w, s in zip(local.get_weights(), start)])
    expected = [s + (3 * d0 + 9 * d1) / 12 for s, d0, d1 in zip(start, *deltas)]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-6)


@pytest.mark.backend
def test_fit_learns_and_merges_history(sc):
    x, y = make_blobs(300, seed=1)
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.05))
    sm = SparkModel(model, num_workers=2)
    history = sm.fit(to_simple_rdd(sc, x, y), epochs=4, batch_size=16, validation_split=0.2)
    assert isinstance(history, keras.callbacks.History)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 4 for v in history.history.values())
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_accuracy"][-1] > 0.8
    assert sm.training_histories == [history]
    assert model.evaluate(x, y, verbose=0)[1] > 0.8


@pytest.mark.backend
def test_fit_numpy_with_validation_data_and_int_frequency(sc):
    x, y = make_blobs(120, seed=2)
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.05))
    sm = SparkModel(
        model, frequency=2, num_workers=2, server_optimizer="nesterov", server_learning_rate=1.0, server_momentum=0.5
    )
    history = sm.fit(x, y, epochs=2, batch_size=8, validation_data=(x, y))
    val_loss = history.history["val_loss"][-1]
    assert val_loss == pytest.approx(model.evaluate(x, y, verbose=0)[0], abs=1e-5)


def test_fit_dataframe_with_index_labels(spark, sc):
    from elephas.ml.adapter import to_data_frame

    x, y = make_blobs(150, seed=4)
    df = to_data_frame(sc, x, y, categorical=True)
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.05))
    history = SparkModel(model).fit(df, epochs=3, batch_size=16, nb_classes=3)
    assert history.history["accuracy"][-1] > 0.7


def test_multi_input_multi_output(sc):
    rng = np.random.default_rng(0)
    a_in, b_in = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([a_in, b_in])
    out_c = keras.layers.Dense(2, activation="softmax", name="cls")(h)
    out_r = keras.layers.Dense(1, name="reg")(h)
    model = keras.Model([a_in, b_in], [out_c, out_r])
    model.compile("adam", loss=["categorical_crossentropy", "mse"])
    a = rng.normal(size=(40, 3)).astype("float32")
    b = rng.normal(size=(40, 2)).astype("float32")
    yc = np.eye(2, dtype="float32")[(a[:, 0] > 0).astype(int)]
    yr = (a[:, :1] + b[:, :1]).astype("float32")
    rdd = sc.parallelize([((a[i], b[i]), (yc[i], yr[i])) for i in range(40)], 2)
    sm = SparkModel(model)
    history = sm.fit(rdd, epochs=2, batch_size=8)
    assert len(history.history["loss"]) == 2
    preds = sm.predict([a, b])
    assert isinstance(preds, list) and preds[0].shape == (40, 2) and preds[1].shape == (40, 1)
    expected = model.predict([a, b], verbose=0)
    np.testing.assert_allclose(preds[1], expected[1], atol=1e-5)


# ------------------------------------------------------------------------------------ callbacks
def test_callbacks_stop_training_and_checkpoint(sc, tmp_path):
    x, y = make_blobs(80)
    model = make_dense_model()
    seen = []

    class StopAtTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, dict(logs)))
            if epoch == 1:
                self.model.stop_training = True

    ckpt = str(tmp_path / "best.keras")
    history = SparkModel(model).fit(
        x,
        y,
        epochs=5,
        batch_size=16,
        callbacks=[StopAtTwo(), keras.callbacks.ModelCheckpoint(ckpt), keras.callbacks.TerminateOnNaN()],
    )
    assert len(history.history["loss"]) == 2
    assert [e for e, _ in seen] == [0, 1] and "loss" in seen[0][1]
    assert os.path.exists(ckpt)


def test_early_stopping_restores_best_weights(sc):
    x, y = make_blobs(60)
    model = make_dense_model(optimizer=keras.optimizers.SGD(0.1))
    scores = [3.0, 1.0, 2.0, 4.0, 5.0, 6.0]  # best after epoch 1, no improvement after it
    snapshots = []

    class Score(keras.callbacks.Callback):  # runs before EarlyStopping and sets what it monitors
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = scores[epoch]
            snapshots.append(self.model.get_weights())

    es = keras.callbacks.EarlyStopping(monitor="score", mode="min", patience=1, restore_best_weights=True)
    history = SparkModel(model).fit(x, y, epochs=6, batch_size=4, callbacks=[Score(), es])
    assert len(history.history["loss"]) == 3  # epochs 0, 1, 2: stopped after one worse epoch
    assert es.stopped_epoch == 2 and es.best == 1.0
    for w, b in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_allclose(w, b)
    assert any(not np.allclose(a, b) for a, b in zip(snapshots[2], snapshots[1]))


# ---------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("ext", [".keras", ".h5"])
@pytest.mark.backend
def test_save_load_roundtrip(sc, tmp_path, ext):
    x, _ = make_blobs(10)
    model = make_dense_model()
    sm = SparkModel(model, mode="hogwild", frequency=3, parameter_server_mode="socket", num_workers=2, batch_size=7)
    path = str(tmp_path / f"model{ext}")
    sm.save(path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        sm.save(path)
    sm.save(path, overwrite=True)
    loaded = load_spark_model(path)
    assert loaded.get_config() == sm.get_config()
    assert loaded.mode == "hogwild" and loaded.frequency == 3 and loaded.batch_size == 7
    np.testing.assert_allclose(loaded.master_network.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_save_load_hadoop_uri(sc, tmp_path):
    model = make_dense_model()
    uri = "file://" + str(tmp_path / "sub" / "m.keras")
    SparkModel(model).save(uri)
    assert (tmp_path / "sub" / "m.keras").exists()
    loaded = load_spark_model(uri)
    for a, b in zip(loaded.master_network.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=".keras or .h5"):
        SparkModel(model).save(str(tmp_path / "m.bin"))


@keras.saving.register_keras_serializable(package="elephas_tests")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        return inputs * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class Shift(keras.layers.Layer):  # not registered: needs custom_objects
    def call(self, inputs):
        return inputs + 1.0


def test_custom_layers_train_predict_and_roundtrip(sc, tmp_path):
    x, y = make_blobs(40)
    model = keras.Sequential([keras.Input((4,)), Scale(0.5), Shift(), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    sm = SparkModel(model, custom_objects={"Shift": Shift})
    sm.fit(to_simple_rdd(sc, x, y), epochs=1, batch_size=8)
    np.testing.assert_allclose(sm.predict(x), model.predict(x, verbose=0), atol=1e-6)
    path = str(tmp_path / "custom.keras")
    sm.save(path)
    loaded = load_spark_model(path, custom_objects={"Shift": Shift})
    np.testing.assert_allclose(loaded.predict(x), model.predict(x, verbose=0), atol=1e-6)


# ---------------------------------------------------------------------------------- bad input
def test_uncompiled_model_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="compiled"):
        SparkModel(model)
    with pytest.raises(TypeError, match="Keras model"):
        SparkModel("not a model")


def test_bad_arguments_fail_before_any_job(sc):
    x, y = make_blobs(20)
    model = make_dense_model()
    with pytest.raises(ValueError, match="Expected one of"):
        SparkModel(model, mode="asynch")
    with pytest.raises(ValueError, match="frequency"):
        SparkModel(model, frequency="sometimes")
    with pytest.raises(ValueError, match="parameter_server_mode"):
        SparkModel(model, parameter_server_mode="grpc")
    sm = SparkModel(model)
    cases = [
        (lambda: sm.fit(x, y, epochs=0), "epochs"),
        (lambda: sm.fit(x, y, batch_size=0), "batch_size"),
        (lambda: sm.fit(x[:, :3], y), r"shape \(4,\)"),
        (lambda: sm.fit(x, y[:, :2]), "3 value"),
        (lambda: sm.fit(x, np.argmax(y, 1)), "one-hot"),
        (lambda: sm.fit(x[:0], y[:0]), "empty"),
        (lambda: sm.fit(x, y, validation_split=1.5), "validation_split"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            assert jobs_started(sc, call) == 0
        assert jobs_started(sc, lambda call=call: _swallow(call)) == 0


def _swallow(call):
    try:
        call()
    except ValueError:
        pass


def test_bad_rdd_input(sc):
    x, y = make_blobs(20)
    sm = SparkModel(make_dense_model())
    with pytest.raises(ValueError, match="empty"):
        sm.fit(sc.parallelize([], 2))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        sm.fit(to_simple_rdd(sc, x[:, :2], y))
    with pytest.raises(ValueError, match="pair"):
        sm.fit(sc.parallelize(list(x)))


def test_task_failure_names_the_partition(sc):
    x, y = make_blobs(20)
    good = list(zip(x[:10], y[:10]))
    bad = [(np.zeros(7, np.float32), yy) for yy in y[10:]]  # wrong width in partition 1 only
    rdd = sc.parallelize(good + bad, 2)
    with pytest.raises(TaskFailedError) as err:
        SparkModel(make_dense_model()).fit(rdd, epochs=1)
    assert err.value.partition == 1
    assert "partition 1" in str(err.value) and "Traceback" in err.value.remote_traceback


# ------------------------------------------------------------------------------- asynchronous
@pytest.mark.parametrize(
    "mode,transport,frequency", [("asynchronous", "http", "epoch"), ("hogwild", "socket", "batch")]
)
@pytest.mark.backend
def test_async_modes_learn(sc, mode, transport, frequency):
    x, y = make_blobs(160, seed=6)
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.05))
    sm = SparkModel(model, mode=mode, frequency=frequency, parameter_server_mode=transport)
    history = sm.fit(to_simple_rdd(sc, x, y), epochs=3, batch_size=16, validation_split=0.1)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.evaluate(x, y, verbose=0)[1] > 0.8


def _server_threads():
    return [
        t
        for t in threading.enumerate()
        if t.is_alive()
        and (
            "werkzeug" in t.name.lower()
            or "parameter" in t.name.lower()
            or "elephas" in t.name.lower()
            or "socket" in t.name.lower()
        )
    ]


def test_async_fit_that_raises_releases_server(sc):
    x, y = make_blobs(20)
    before = set(_server_threads())
    rdd = sc.parallelize(list(zip(x[:10], y[:10])) + [(np.zeros(7, np.float32), t) for t in y[10:]], 2)
    sm = AsynchronousSparkModel(make_dense_model(), parameter_server_mode="socket")
    with pytest.raises(TaskFailedError):
        sm.fit(rdd, epochs=1)
    assert set(_server_threads()) <= before


def test_async_port_is_released_after_fit(sc):
    import socket

    x, y = make_blobs(20)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sm = SparkModel(make_dense_model(), mode="asynchronous", port=port)
    sm.fit(x, y, epochs=1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # free again


@pytest.mark.parametrize("mode", ["synchronous", "asynchronous"])
def test_learning_rate_changed_on_the_driver_reaches_workers(sc, mode):
    x, y = make_blobs(40)
    model = make_dense_model(optimizer=keras.optimizers.SGD(0.1))
    after_first = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                after_first.extend(self.model.get_weights())

    freeze = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.0 if epoch >= 1 else lr)
    # plain averaging: the default outer (server) momentum keeps moving the center after the workers'
    # learning rate is 0, as Keras's own momentum SGD keeps moving the weights with a learning rate of 0
    extra = {"server_optimizer": "sgd"} if mode == "synchronous" else {}
    SparkModel(model, mode=mode, **extra).fit(x, y, epochs=3, batch_size=8, callbacks=[Snapshot(), freeze])
    assert after_first
    for w, w0 in zip(model.get_weights(), after_first):
        np.testing.assert_allclose(w, w0, atol=1e-7)


def test_mode_default_window_and_strategy_property():
    model = make_dense_model()
    assert SparkModel(model).frequency == "auto"  # chosen from measured times, see engine.windows
    assert SparkModel(model, mode="hogwild").frequency == "auto"
    assert SparkModel(model, frequency="epoch").frequency == "epoch"
    downpour = SparkModel(model, mode="downpour")
    assert downpour.frequency == 5 and downpour.strategy.name == "downpour"
    assert SparkModel(model, mode="easgd", rho=2.0).frequency == 32


def test_one_partition_reproduces_plain_keras(sc):
    """One partition, one round per epoch, no shuffling: the same steps as model.fit."""
    x, y = make_blobs(96, seed=9)
    reference = make_dense_model(optimizer=keras.optimizers.SGD(0.1), seed=4)
    model = make_dense_model(optimizer=keras.optimizers.SGD(0.1), seed=4)
    reference.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    history = SparkModel(model, num_workers=1).fit(x, y, epochs=2, batch_size=16, shuffle=False)
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert len(history.history["loss"]) == 2
