"""Synchronous rounds all-reduced among the barrier tasks on a classic session (``reducer='ring'``/``'hub'``).

The rounds compute the same sums as the driver's parameter server (float64 sums of ``Σ samples·Δ``, the
same server step), so a fit with either reducer reaches the same weights up to float rounding.
"""

from __future__ import annotations

import os
import threading

import keras
import numpy as np
import pytest
from conftest import make_dense_model
from test_stage_rounds import simulate, teacher_task
from worker_kill import KillOnce, kill_once_model

from elephas.engine.driver import check_reducer
from elephas.engine.server_optimizer import ServerOptimizer
from elephas.spark_model import SparkModel


def _fit(reducer, x, y, epochs=1, seed=7, **kwargs):
    model = make_dense_model(input_dim=x.shape[1], seed=seed)
    spark_model = SparkModel(model, frequency=4, num_workers=2, reducer=reducer, **kwargs)
    history = spark_model.fit(x, y, epochs=epochs, batch_size=10)
    return model, history


@pytest.mark.parametrize("reducer", ["ring", "hub"])
def test_all_reduced_rounds_match_the_parameter_server(sc, reducer):
    x, y = teacher_task(400, features=4, seed=1)
    start = make_dense_model(input_dim=4, seed=7).get_weights()
    by_server, server_history = _fit("server", x, y)
    by_tasks, history = _fit(reducer, x, y)
    assert any(not np.array_equal(a, b) for a, b in zip(start, by_tasks.get_weights()))
    for got, want in zip(by_tasks.get_weights(), by_server.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert history.history["loss"] == [pytest.approx(server_history.history["loss"][0], rel=1e-6)]
    assert history.history["accuracy"] == [pytest.approx(server_history.history["accuracy"][0], abs=1e-6)]
    assert history.windows == [4] and history.window_records == []


def test_ring_rounds_equal_an_in_process_simulation_with_uneven_partitions(sc):
    from elephas.engine.driver import TrainingSettings, fit_synchronous
    from elephas.engine.shipping import ModelSpec
    from elephas.engine.strategies.averaging import SynchronousAveraging

    x, y = teacher_task(320, features=4, seed=2)
    parts = [(x[:240], y[:240]), (x[240:], y[240:])]  # 6 rounds against 2: the short task joins idle rounds
    model = make_dense_model(input_dim=4, seed=11)
    start = model.get_weights()
    settings = TrainingSettings(
        strategy=SynchronousAveraging(),
        frequency=4,
        batch_size=10,
        epochs=2,
        seed=0,
        server_optimizer=ServerOptimizer("nesterov", 1.0, 0.5),
        reducer="ring",
    )
    blocks = sc.parallelize([(i, [a], [b]) for i, (a, b) in enumerate(parts)], 2).cache()
    history = fit_synchronous(sc, model, ModelSpec.from_model(model), blocks, settings)
    reference = make_dense_model(input_dim=4, seed=11)
    reference.set_weights(start)
    expected = simulate(reference, parts, 4, 10, 2, ServerOptimizer("nesterov", 1.0, 0.5))
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # the server step's momentum came back from rank 0 after each epoch: epoch 2 continued from it
    assert history.server_optimizer.state() is not None
    assert len(sc.statusTracker().getJobIdsForGroup(history.job_group)) == 2


def test_a_ring_fit_learns_and_leaves_no_threads(sc):
    x, y = teacher_task(1200, features=6, seed=4)
    before = {t.name for t in threading.enumerate()}
    model = make_dense_model(input_dim=6, hidden=16, seed=3, optimizer=keras.optimizers.SGD(0.1))
    history = SparkModel(model, num_workers=2, reducer="ring").fit(
        x[:1000], y[:1000], epochs=3, batch_size=20, validation_split=0.1
    )
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    _, accuracy = model.evaluate(x[1000:], y[1000:], verbose=0)
    assert accuracy > 0.85
    left = {t.name for t in threading.enumerate()} - before
    assert not [n for n in left if "elephas" in n or "werkzeug" in n], left


def test_the_reducer_is_checked_before_any_job(sc):
    model = make_dense_model()
    with pytest.raises(ValueError, match=r"Could not interpret reducer: 'tree'. Expected one of"):
        SparkModel(model, reducer="tree")
    with pytest.raises(ValueError, match="asynchronous"):
        SparkModel(model, mode="hogwild", reducer="ring")
    assert check_reducer(None, synchronous=False) is None
    spark_model = SparkModel(model, reducer="hub")
    assert spark_model.get_config()["reducer"] == "hub"
    assert "reducer" not in SparkModel(model).get_config()


@pytest.mark.parametrize("reducer", ["server", "ring"])
def test_a_killed_worker_restarts_the_epoch_stage_and_the_fit_completes(sc, tmp_path, reducer):
    x, y = teacher_task(600, features=4, seed=6)
    marker = str(tmp_path / "killed-worker-pid")
    model = kill_once_model(marker, hidden=16, learning_rate=0.02)
    before = {t.name for t in threading.enumerate()}
    spark_model = SparkModel(model, frequency=4, num_workers=2, reducer=reducer, custom_objects={"KillOnce": KillOnce})
    history = spark_model.fit(x[:500], y[:500], epochs=3, batch_size=10)
    with open(marker) as f:
        killed = int(f.read())
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)  # the worker really died
    assert len(history.history["loss"]) == 3 and history.history["loss"][-1] < history.history["loss"][0]
    _, accuracy = model.evaluate(x[500:], y[500:], verbose=0)
    assert accuracy > 0.85
    left = {t.name for t in threading.enumerate()} - before
    assert not [n for n in left if "elephas" in n or "werkzeug" in n], left
