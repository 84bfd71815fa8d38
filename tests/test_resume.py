"""Checkpoints and resume: ``fit(initial_epoch=k)``, ``BackupAndRestore`` and ``ModelCheckpoint`` on the driver.

Synchronous training with an explicit ``frequency``, a fixed ``seed`` and a stateless worker optimizer
(plain SGD) is deterministic: rows per epoch are seeded by (seed, epoch, partition) and two partitions'
deltas are summed in an order-independent way. So a fit cut after epoch 2 and continued on the same
SparkModel reaches exactly the weights of an uninterrupted fit. A restart from a ``BackupAndRestore``
backup in a new SparkModel keeps the weights and the epoch but restarts the server momentum from zero:
the test measures that difference.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from conftest import make_blobs, make_dense_model

from elephas.callbacks import BackupAndRestore, ModelCheckpoint
from elephas.spark_model import SparkModel

EPOCHS = 4


class _Interrupt(keras.callbacks.Callback):
    """Stops training with an error after epoch ``after`` (0-based), as a crash would."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after:
            raise RuntimeError(f"interrupted after epoch {epoch}")


def _spark_model(seed: int = 0) -> SparkModel:
    # frequency=2 batches: several rounds per epoch; 2 partitions: the default Nesterov server step
    return SparkModel(make_dense_model(seed=seed), frequency=2, seed=7, batch_size=16)


@pytest.fixture(scope="module")
def rdd(sc):
    x, y = make_blobs(n=160)
    return sc.parallelize(list(zip(x, y)), 2)


@pytest.fixture(scope="module")
def uninterrupted(rdd):
    sm = _spark_model()
    history = sm.fit(rdd, epochs=EPOCHS)
    return sm.master_network.get_weights(), history


def test_initial_epoch_on_the_same_model_continues_exactly(rdd, uninterrupted):
    weights, history = uninterrupted
    sm = _spark_model()
    first = sm.fit(rdd, epochs=2)
    second = sm.fit(rdd, epochs=EPOCHS, initial_epoch=2)
    assert first.epoch == [0, 1] and second.epoch == [2, 3]
    assert second.history["loss"] == pytest.approx(history.history["loss"][2:], rel=1e-6)
    for got, want in zip(sm.master_network.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="initial_epoch"):
        sm.fit(rdd, epochs=2, initial_epoch=2)


def test_backup_and_restore_on_a_hadoop_uri_resumes_after_epoch_2(rdd, uninterrupted, tmp_path):
    weights, history = uninterrupted
    backup = f"file://{tmp_path}/backup"
    checkpoints = f"file://{tmp_path}/ckpt"
    sm = _spark_model()
    with pytest.raises(RuntimeError, match="interrupted after epoch 1"):
        sm.fit(
            rdd,
            epochs=EPOCHS,
            callbacks=[
                BackupAndRestore(backup),
                _Interrupt(after=1),
                ModelCheckpoint(checkpoints + "/m-{epoch}.keras"),
            ],
        )
    assert sorted(f for f in os.listdir(tmp_path / "backup") if not f.startswith(".")) == [
        "latest.weights.h5",
        "training_metadata.json",
    ]
    assert sorted(f for f in os.listdir(tmp_path / "ckpt") if not f.startswith(".")) == ["m-1.keras"]
    after_two = sm.master_network.get_weights()

    restarted = _spark_model(seed=1)  # a new process: other initial weights, a fresh server step
    resumed = restarted.fit(rdd, epochs=EPOCHS, callbacks=[BackupAndRestore(backup)])
    assert resumed.epoch == [2, 3]
    assert not os.path.exists(tmp_path / "backup")  # deleted after a fit that ended normally
    got = restarted.master_network.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(got, after_two))  # it trained on
    # The same rows and weights, but the server momentum restarts from zero. Measured (tensorflow, CPU):
    # max |dw| 0.0068 against weights up to 0.76, epoch-4 loss 0.593 against 0.581. Before the server's
    # center followed the restored weights, the restart trained on from the initial ones (max |dw| 1.44).
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(got, weights))
    assert 0.0 < diff < 0.02
    assert resumed.history["loss"][-1] == pytest.approx(history.history["loss"][-1], rel=0.05)


@pytest.mark.parametrize("mode", ["asynchronous", "hogwild"])  # locked and lock-free centers
def test_server_center_follows_weights_a_callback_set(mode):
    """Between epochs the asynchronous driver hands the model's (restored) weights to the server."""
    from elephas.engine.modes import get_strategy
    from elephas.parameter.state import ServerState

    state = ServerState([np.zeros(3, np.float32)], get_strategy(mode))
    assert state.set_center([np.zeros(3, np.float32)]) is False and state.version == 0
    assert state.set_center([np.arange(3, dtype=np.float32)]) is True
    weights, version = state.pull()
    np.testing.assert_array_equal(weights[0], [0, 1, 2])
    assert version == 1 and weights[0].dtype == np.float32


def test_round_state_epoch_starts_from_the_given_center():
    from elephas.engine.modes import get_strategy
    from elephas.parameter.rounds import RoundState

    state = RoundState([np.zeros(2, np.float32)], get_strategy("synchronous"), lambda d: d)
    state.begin_epoch(0, {"0": 1}, [np.ones(2, np.float32)])
    weights, version = state.pull()
    np.testing.assert_array_equal(weights[0], [1, 1])
    assert version == 1
    state.begin_epoch(1, {"0": 1}, [np.ones(2, np.float32)])  # unchanged: no new version
    assert state.pull()[1] == 1
