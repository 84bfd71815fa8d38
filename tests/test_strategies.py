"""Golden numbers for the dist-keras rules (worker and server side), schedules, knob checks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_blobs, make_dense_model

from elephas.engine.modes import get_frequency, get_strategy, valid_modes
from elephas.engine.schedules import LearningRateOnPlateau, StopOnTargetLoss
from elephas.engine.strategies.adag import Adag
from elephas.engine.strategies.downpour import Downpour
from elephas.engine.strategies.dynsgd import DynSGD
from elephas.engine.strategies.eamsgd import EAMSGD
from elephas.engine.strategies.easgd import EASGD
from elephas.engine.worker import apply_learning_rate, master_learning_rate
from elephas.parameter.state import ServerState


def f32(*values):
    return np.array(values, dtype=np.float32)


# ------------------------------------------------------------------------- registry and defaults
@pytest.mark.parametrize(
    "mode,cls,window",
    [
        ("downpour", Downpour, 5),
        ("adag", Adag, 12),
        ("easgd", EASGD, 32),
        ("eamsgd", EAMSGD, 32),
        ("dynsgd", DynSGD, 5),
    ],
)
def test_registered_with_default_window(mode, cls, window):
    assert mode in valid_modes()
    strategy = get_strategy(mode)
    assert type(strategy) is cls
    assert get_frequency(None, strategy) == window
    assert not strategy.synchronous and strategy.locked


def test_easgd_defaults():
    s = get_strategy("eamsgd")
    assert (s.rho, s.learning_rate, s.momentum) == (5.0, 0.1, 0.9)
    assert s.needs_center_pull and not s.pull_after_push


# ----------------------------------------------------------------------------------- downpour
def test_downpour_worker_and_server():
    s = Downpour()
    update, cont = s.worker_update([f32(1, 2)], [f32(0.5, 0.5)], None, 5)
    np.testing.assert_allclose(update[0], [0.5, 1.5])
    np.testing.assert_allclose(cont[0], [1, 2])
    center = [f32(1, 1)]
    s.server_apply(center, update, staleness=7)  # staleness does not matter for downpour
    np.testing.assert_allclose(center[0], [1.5, 2.5])
    assert s.pull_after_push


# --------------------------------------------------------------------------------------- adag
def test_adag_divides_by_window_and_by_actual_tail_length():
    s = Adag()
    full, _ = s.worker_update([f32(6, 3)], [f32(0, 0)], None, 3)
    np.testing.assert_allclose(full[0], [2, 1])
    tail, _ = s.worker_update([f32(6, 3)], [f32(0, 0)], None, 2)
    np.testing.assert_allclose(tail[0], [3, 1.5])
    center = [f32(1, 1)]
    s.server_apply(center, full)
    np.testing.assert_allclose(center[0], [3, 2])
    assert full[0].dtype == np.float32


# -------------------------------------------------------------------------------------- easgd
def test_easgd_elastic_exchange():
    s = EASGD(rho=5.0, learning_rate=0.1)  # alpha = 0.5
    weights = [f32(3, 1), f32(-2)]
    center = [f32(1, 1), f32(2)]
    elastic, cont = s.worker_update(weights, [f32(0, 0), f32(0)], center, 32)
    np.testing.assert_allclose(elastic[0], [1, 0])
    np.testing.assert_allclose(elastic[1], [-2])
    np.testing.assert_allclose(cont[0], [2, 1])  # worker continues from W - E
    np.testing.assert_allclose(cont[1], [0])
    s.server_apply(center, elastic)
    np.testing.assert_allclose(center[0], [2, 1])
    np.testing.assert_allclose(center[1], [0])


def test_easgd_requires_center():
    with pytest.raises(ValueError, match="center"):
        EASGD().worker_update([f32(1)], [f32(0)], None, 1)


# ------------------------------------------------------------------------------------- dynsgd
def test_dynsgd_server_rule():
    s = DynSGD()
    center = [f32(0)]
    s.server_apply(center, [f32(6)], staleness=0)
    np.testing.assert_allclose(center[0], [6])
    s.server_apply(center, [f32(6)], staleness=2)
    np.testing.assert_allclose(center[0], [8])
    s.server_apply(center, [f32(6)], staleness=5)
    np.testing.assert_allclose(center[0], [9])


def test_dynsgd_staleness_through_server_state():
    state = ServerState([f32(0, 0)], DynSGD())
    _, u_a = state.pull()
    _, u_b = state.pull()
    state.apply([f32(4, 4)], worker_id="a", attempt_id="a", version_seen=u_a)  # staleness 0
    state.apply([f32(4, 2)], worker_id="b", attempt_id="b", version_seen=u_b)  # staleness 1
    _, u_a = state.pull()
    state.apply([f32(3, 3)], worker_id="a", attempt_id="a", version_seen=u_a)  # staleness 0
    state.apply([f32(8, 4)], worker_id="b", attempt_id="b", version_seen=u_b)  # staleness 3
    center, version = state.pull()
    np.testing.assert_allclose(center[0], [4 + 2 + 3 + 2, 4 + 1 + 3 + 1])
    assert version == 4
    assert [r.staleness for r in state.records()] == [0, 1, 0, 3]


# ------------------------------------------------------------------------------------- eamsgd
def _scalar_model(lr: float = 0.1):
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    return model


def test_eamsgd_nesterov_momentum_golden():
    """loss = w², one SGD(0.1) step maps w to 0.8·w; μ = 0.5; rows of x=1, y=0."""
    model = _scalar_model()
    s = EAMSGD(momentum=0.5)
    x, y = np.ones((3, 1), np.float32), np.zeros((3, 1), np.float32)
    logs = s.train_window(model, [x], [y], batch_size=2)  # batches of 2 rows and 1 row
    # batch 1: Wl = 1, Wa = 0.8, g = -0.2, v = -0.2, W = 0.8
    # batch 2: Wl = 0.8 + 0.5·(-0.2) = 0.7, Wa = 0.56, g = -0.14, v = -0.24, W = 0.56
    np.testing.assert_allclose(model.get_weights()[0], [[0.56]], rtol=1e-5)
    np.testing.assert_allclose(s._velocity[0], [[-0.24]], rtol=1e-5)
    # loss evaluated at the look-ahead points, sample-weighted: (2·1 + 1·0.49) / 3
    assert logs["loss"] == pytest.approx((2 * 1.0 + 0.49) / 3, rel=1e-5)
    # the velocity carries over to the next window of the same task
    s.train_window(model, [x[:1]], [y[:1]], batch_size=2)
    # Wl = 0.56 + 0.5·(-0.24) = 0.44, Wa = 0.352, g = -0.088, v = -0.208, W = 0.352
    np.testing.assert_allclose(model.get_weights()[0], [[0.352]], rtol=1e-5)


def test_eamsgd_velocity_resets_for_a_new_task(monkeypatch):
    import elephas.engine.strategies.eamsgd as mod

    model = _scalar_model()
    s = EAMSGD(momentum=0.5)
    x, y = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    monkeypatch.setattr(mod, "_task_key", lambda: "task-1")
    s.train_window(model, [x], [y], 1)
    model.set_weights([np.ones((1, 1), np.float32)])
    monkeypatch.setattr(mod, "_task_key", lambda: "task-2")
    s.train_window(model, [x], [y], 1)  # v = 0 again: a plain step 1 -> 0.8
    np.testing.assert_allclose(model.get_weights()[0], [[0.8]], rtol=1e-6)


def test_eamsgd_zero_momentum_is_plain_keras_steps():
    model = _scalar_model()
    EAMSGD(momentum=0.0).train_window(model, [np.ones((2, 1), np.float32)], [np.zeros((2, 1), np.float32)], 1)
    np.testing.assert_allclose(model.get_weights()[0], [[0.64]], rtol=1e-6)


def test_eamsgd_pickles_without_velocity():
    import pickle

    s = EAMSGD(momentum=0.5)
    s._velocity, s._velocity_key = [f32(1)], "x"
    t = pickle.loads(pickle.dumps(s))
    assert t._velocity is None and t.momentum == 0.5 and t.rho == 5.0


# --------------------------------------------------------------------------------- knob checks
@pytest.mark.parametrize(
    "mode,knobs,message",
    [
        ("easgd", {"rho": 0}, "rho must be a number > 0. Received: rho=0"),
        ("easgd", {"learning_rate": -0.1}, "learning_rate must be a number > 0"),
        ("eamsgd", {"momentum": 1.0}, r"momentum must be a number in \[0, 1\). Received: momentum=1.0"),
        ("eamsgd", {"momentum": -0.1}, r"momentum must be a number in \[0, 1\)"),
        ("downpour", {"learning_rate": 0}, "learning_rate must be a number > 0"),
        ("downpour", {"rho": 1.0}, r"Mode 'downpour' does not take \['rho'\]"),
        ("adag", {"momentum": 0.5}, r"does not take \['momentum'\]"),
    ],
)
def test_knob_validation(mode, knobs, message):
    with pytest.raises(ValueError, match=message):
        get_strategy(mode, **knobs)


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="positive number of batches"):
        get_frequency(0, get_strategy("downpour"))


# ---------------------------------------------------------------------------------- schedules
class _FakeModel:
    stop_training = False


def test_plateau_divides_elastic_learning_rate():
    s = EASGD(learning_rate=0.1)
    cb = LearningRateOnPlateau(strategy=s, monitor="val_loss", every=1, factor=2.0)
    cb.set_model(_FakeModel())
    cb.on_train_begin()
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.97, 0.5]):
        cb.on_epoch_end(epoch, {"val_loss": loss})
    assert s.learning_rate == pytest.approx(0.025)
    assert [e for e, _ in cb.reductions] == [2, 3]


def test_plateau_every_k_and_patience_divides_worker_optimizer_rate():
    model = _scalar_model(lr=0.1)
    s = Downpour()
    losses = iter([1.0, 1.0, 1.0])
    cb = LearningRateOnPlateau(strategy=s, evaluate=lambda: next(losses), every=2, patience=1, factor=4.0)
    cb.set_model(model)
    cb.on_train_begin()
    for epoch in range(6):  # checks at epochs 1, 3, 5: improve, wait, divide
        cb.on_epoch_end(epoch, {})
    assert cb.reductions and cb.reductions[0][0] == 5
    # one source for the workers' rate: the driver model's optimizer (the strategy keeps no copy)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.025)
    assert s.learning_rate is None and not hasattr(s, "worker_learning_rate")
    # the worker side applies the rate shipped with the round to its own (cached) model before a window
    worker = _scalar_model(lr=0.1)
    apply_learning_rate(worker, master_learning_rate(model))
    s.train_window(worker, [np.ones((1, 1), np.float32)], [np.zeros((1, 1), np.float32)], 1)
    assert float(worker.optimizer.learning_rate.numpy()) == pytest.approx(0.025)
    np.testing.assert_allclose(worker.get_weights()[0], [[1 - 0.025 * 2]], rtol=1e-6)


def test_plateau_and_target_validation():
    with pytest.raises(ValueError, match="factor must be > 1"):
        LearningRateOnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="Expected every to be an integer >= 1. Received: every=0"):
        LearningRateOnPlateau(every=0)
    with pytest.raises(ValueError, match="target must be a finite number"):
        StopOnTargetLoss(float("nan"))


def test_stop_on_target_loss():
    model = _FakeModel()
    cb = StopOnTargetLoss(0.5)
    cb.set_model(model)
    cb.on_epoch_end(0, {"loss": 0.7})
    assert not model.stop_training
    cb.on_epoch_end(1, {"loss": 0.5})
    assert model.stop_training and cb.stopped_epoch == 1


# ------------------------------------------------------------------------- through the engine
@pytest.mark.parametrize("mode", ["adag", "eamsgd"])
def test_tail_is_trained_and_flushed(sc, mode):
    """53 rows, batch 4, window 5: 14 batches -> windows of 20, 20 and 13 rows (last batch of 1)."""
    from elephas.spark_model import SparkModel

    x, y = make_blobs(53, seed=1)
    model = make_dense_model(seed=1)
    before = model.get_weights()
    spark_model = SparkModel(model, mode=mode, frequency=5, num_workers=1)
    history = spark_model.fit(x, y, epochs=1, batch_size=4, shuffle=False)
    samples = [r["samples"] for r in history.window_records]
    assert samples == [20, 20, 13]
    assert all(np.isfinite(r["metrics"]["loss"]) for r in history.window_records)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
