"""Synchronous training with the rounds inside one barrier stage per epoch (real Spark, real server)."""

from __future__ import annotations

import logging
import socket
import threading

import numpy as np
import pytest
from conftest import make_dense_model

from elephas.engine.data import ModelIO
from elephas.engine.driver import TrainingSettings, fit_synchronous
from elephas.engine.server_optimizer import ServerOptimizer
from elephas.engine.shipping import ModelSpec
from elephas.engine.strategies.averaging import SynchronousAveraging
from elephas.engine.worker import WindowPlan, take, train_window


def teacher_task(n: int, features: int = 8, classes: int = 3, seed: int = 0):
    """A learnable task: labels from a random linear teacher on standard-normal features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    teacher = rng.normal(size=(features, classes))
    y = np.eye(classes, dtype="float32")[np.argmax(x @ teacher, axis=1)]
    return x, y


def blocks_of(sc, parts):
    """An RDD of blocks with exactly the given (x, y) per partition."""
    data = [(i, [x], [y]) for i, (x, y) in enumerate(parts)]
    return sc.parallelize(data, len(data)).cache()


def simulate(model, parts, frequency, batch_size, epochs, step, seed=0):
    """The synchronous rule in one process: every partition trains its window from the center,
    the sample-weighted mean delta goes through the server step, everyone continues from it."""
    plan = WindowPlan(batch_size, frequency, True, seed)
    center = [w.copy() for w in model.get_weights()]
    for epoch in range(epochs):
        sizes = [len(x) for x, _ in parts]
        rounds = max(plan.windows(n) for n in sizes)
        for window in range(rounds):
            total, samples = None, 0
            for pid, (x, y) in enumerate(parts):
                if window >= plan.windows(len(x)):
                    continue
                idx = plan.window_rows(len(x), epoch, pid, window)
                model.set_weights(center)
                train_window(model, take([x], idx), take([y], idx), batch_size)
                n = len(idx)
                delta = [(np.asarray(w) - c) * np.float32(n) for w, c in zip(model.get_weights(), center)]
                total = (
                    [d.astype(np.float64) for d in delta] if total is None else [t + d for t, d in zip(total, delta)]
                )
                samples += n
            mean = [(t / samples).astype(np.float32) for t in total]
            center = [c + s.astype(np.float32) for c, s in zip(center, step.step(mean))]
    return center


def _settings(frequency, epochs, step, batch_size=10):
    return TrainingSettings(
        strategy=SynchronousAveraging(),
        frequency=frequency,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        seed=0,
        server_optimizer=step,
    )


@pytest.mark.parametrize("sizes", [(120, 120), (240, 80), (160, 0)], ids=["equal", "3x", "one-empty"])
def test_in_stage_rounds_equal_an_in_process_simulation(sc, sizes):
    x, y = teacher_task(sum(sizes), features=4)
    cuts = np.cumsum((0,) + sizes)
    parts = [(x[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    model = make_dense_model(input_dim=4, seed=11)
    start = model.get_weights()
    history = fit_synchronous(
        sc,
        model,
        ModelSpec.from_model(model),
        blocks_of(sc, parts),
        _settings(4, 1, ServerOptimizer("nesterov", 1.0, 0.5)),
    )
    reference = make_dense_model(input_dim=4, seed=11)
    reference.set_weights(start)
    expected = simulate(reference, parts, 4, 10, 1, ServerOptimizer("nesterov", 1.0, 0.5))
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # every row of every partition trained once, in rounds of 4 batches
    records = history.window_records
    assert sum(r["samples"] for r in records) == sum(sizes)
    for pid, n in enumerate(sizes):
        assert len([r for r in records if r["worker_id"] == str(pid)]) == -(-n // 40)


def test_one_training_job_per_epoch_and_rounds_follow_the_window(sc):
    x, y = teacher_task(200, features=4)
    model = make_dense_model(input_dim=4, seed=2)
    io = ModelIO.of(model)
    from elephas.engine.data import blocks_from_numpy

    blocks = blocks_from_numpy(sc, [x], [y], io, 2).cache()
    history = fit_synchronous(sc, model, ModelSpec.from_model(model), blocks, _settings(4, 3, None))
    jobs = sc.statusTracker().getJobIdsForGroup(history.job_group)
    assert len(jobs) == 3
    assert history.windows == [4, 4, 4]
    for epoch in range(3):  # 100 rows per partition, batches of 10: 10 batches, windows of 4 -> 3 rounds
        per_worker = {}
        for r in history.window_records:
            if r["epoch"] == epoch:
                per_worker[r["worker_id"]] = per_worker.get(r["worker_id"], 0) + 1
        assert per_worker == {"0": 3, "1": 3}


def _keras_accuracy(x, y, xt, yt, epochs, batch_size, seed):
    import keras

    model = make_dense_model(
        input_dim=x.shape[1], hidden=32, classes=y.shape[1], seed=seed, optimizer=keras.optimizers.SGD(0.1)
    )
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return float(model.evaluate(xt, yt, verbose=0)[1])


@pytest.mark.parametrize("mode", ["synchronous", "asynchronous", "hogwild"])
def test_defaults_land_near_plain_keras(sc, mode):
    import keras

    from elephas.spark_model import SparkModel

    x, y = teacher_task(3000, features=10, seed=5)
    x, y, xt, yt = x[:2400], y[:2400], x[2400:], y[2400:]
    keras_acc = _keras_accuracy(x, y, xt, yt, 4, 32, seed=3)
    model = make_dense_model(input_dim=10, hidden=32, classes=3, seed=3, optimizer=keras.optimizers.SGD(0.1))
    SparkModel(model, mode=mode, num_workers=2).fit(x, y, epochs=4, batch_size=32)
    acc = float(model.evaluate(xt, yt, verbose=0)[1])
    assert acc >= keras_acc - 0.03, (mode, acc, keras_acc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failing_task_stops_the_fit_cleanly(sc):
    import keras

    from elephas.engine.errors import TaskFailedError
    from elephas.spark_model import SparkModel

    class PoisonLearningRate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:  # epoch 2 then trains with a NaN step on every worker
                self.model.optimizer.learning_rate.assign(float("nan"))

    x, y = teacher_task(400, features=4)
    port = _free_port()
    before = {t.name for t in threading.enumerate()}
    sm = SparkModel(make_dense_model(input_dim=4, seed=1), frequency=4, port=port, num_workers=2)
    with pytest.raises(TaskFailedError) as info:
        sm.fit(x, y, epochs=3, batch_size=10, callbacks=[PoisonLearningRate()])
    message = str(info.value)
    assert "epoch 2" in message and "partition" in message and "Executor traceback" in message
    assert "NaN" in message or "nan" in message
    left = {t.name for t in threading.enumerate()} - before
    assert not [n for n in left if "elephas" in n or "werkzeug" in n or "Thread-" in n], left
    with socket.socket() as s:  # the server's port is free again
        s.bind(("127.0.0.1", port))


def test_more_partitions_than_slots_are_coalesced(sc, caplog):
    from elephas.spark_model import SparkModel
    from elephas.utils.rdd_utils import to_simple_rdd

    x, y = teacher_task(300, features=4)
    rdd = to_simple_rdd(sc, x, y, 5)
    sm = SparkModel(make_dense_model(input_dim=4, seed=3), frequency=2)
    with caplog.at_level(logging.INFO, logger="elephas.engine.driver"):
        history = sm.fit(rdd, epochs=2, batch_size=10)
    assert len(history.history["loss"]) == 2
    assert any("coalescing to 2 partitions" in r.getMessage() for r in caplog.records)
    assert sum(r["samples"] for r in history.window_records if r["epoch"] == 1) == 300
