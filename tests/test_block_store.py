"""Executor-local staging of training blocks: files, fallback when they vanish, clean-up."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
from conftest import make_blobs, make_dense_model

from elephas.engine import block_store
from elephas.engine.block_store import Missing, StagedBlock, read_block, resolve, write_block
from elephas.engine.data import ModelIO, blocks_from_numpy, first_element
from elephas.engine.driver import TrainingSettings, fit_synchronous
from elephas.engine.shipping import ModelSpec
from elephas.engine.strategies.averaging import SynchronousAveraging


@pytest.fixture
def local_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", f"{tmp_path},/unused")
    return tmp_path


def test_write_and_read_round_trip(local_dir):
    xs = [np.arange(12, dtype=np.float32).reshape(6, 2), np.ones((6, 3, 2), np.float32)]
    ys = [np.arange(6, dtype=np.int64)]
    handle = write_block("s1", (4, xs, ys))
    assert handle == StagedBlock("s1", 4, 6, 2, 1)
    assert os.path.isdir(local_dir / "elephas-blocks" / "s1" / "4")
    pid, rx, ry = read_block(handle)
    assert pid == 4
    for a, b in zip(rx + ry, xs + ys):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype and not a.flags.writeable
    assert write_block("s1", (4, xs, ys)) == handle  # a second attempt keeps the first copy


def test_missing_and_empty_blocks(local_dir):
    assert read_block(StagedBlock("nowhere", 0, 5, 1, 1)) is None
    empty = write_block("s2", (3, [], []))
    assert empty.rows == 0 and read_block(empty) == (3, [], [])
    assert not os.path.exists(local_dir / "elephas-blocks" / "s2")
    handle = write_block("s3", (0, [np.zeros((2, 1), np.float32)], [np.zeros((2, 1), np.float32)]))
    os.remove(local_dir / "elephas-blocks" / "s3" / "0" / "y0.npy")
    items = list(resolve([handle, (9, [np.ones((1, 1))], [np.ones((1, 1))])]))
    assert items[0] == Missing(0)
    assert items[1][0] == 9  # plain blocks pass through
    block_store.remove_store("s3")
    assert not os.path.exists(local_dir / "elephas-blocks" / "s3")


def test_first_element_skips_empty_partitions(sc):
    rdd = sc.parallelize([1, 2, 3], 3).filter(lambda v: v > 1)  # partition 0 is empty
    assert first_element(rdd) == 2
    with pytest.raises(ValueError, match="empty"):
        first_element(sc.parallelize([], 2))


def _executor_root(sc) -> str:
    """The executors' staging root, created if no fit has staged anything yet."""
    root = sc.parallelize([0], 1).map(lambda _: block_store.local_root()).collect()[0]
    os.makedirs(root, exist_ok=True)
    return root


def _fit(sc, stage: bool, callbacks=None, partitions: int = 3):
    x, y = make_blobs(150)
    model = make_dense_model(seed=3)
    io = ModelIO.of(model)
    blocks = blocks_from_numpy(sc, [x], [y], io, partitions).cache()
    settings = TrainingSettings(
        strategy=SynchronousAveraging(), frequency=2, batch_size=10, epochs=3, shuffle=False, stage_blocks=stage
    )
    history = fit_synchronous(sc, model, ModelSpec.from_model(model), blocks, settings, callbacks)
    blocks.unpersist()
    return model, history


def test_staged_fit_equals_unstaged_and_cleans_up(sc):
    root = _executor_root(sc)
    before = set(os.listdir(root)) if os.path.isdir(root) else set()
    staged, h1 = _fit(sc, stage=True)
    plain, h2 = _fit(sc, stage=False)
    for a, b in zip(staged.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-6)
    after = set(os.listdir(root)) if os.path.isdir(root) else set()
    assert after <= before  # the fit's store directory is gone


def test_vanished_files_are_read_from_spark_in_the_same_round(sc, caplog):
    import keras

    root = _executor_root(sc)

    class WipeStagedFiles(keras.callbacks.Callback):
        wiped = 0

        def on_epoch_end(self, epoch, logs=None):
            for name in os.listdir(root):
                shutil.rmtree(os.path.join(root, name))
                WipeStagedFiles.wiped += 1

    plain, _ = _fit(sc, stage=False)
    with caplog.at_level(logging.INFO, logger="elephas.engine.driver"):
        staged, history = _fit(sc, stage=True, callbacks=[WipeStagedFiles()])
    assert WipeStagedFiles.wiped >= 1
    assert any("not found on their executor" in r.getMessage() for r in caplog.records)
    assert len(history.history["loss"]) == 3
    for a, b in zip(staged.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_asynchronous_fit_reads_vanished_blocks_from_spark(sc, caplog):
    import keras

    from elephas.spark_model import SparkModel

    root = _executor_root(sc)
    wiped = []

    class WipeStagedFiles(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for name in os.listdir(root):
                shutil.rmtree(os.path.join(root, name))
                wiped.append(name)

    x, y = make_blobs(120)
    before = set(os.listdir(root))
    model = SparkModel(make_dense_model(seed=4), mode="asynchronous", frequency="epoch", num_workers=2)
    with caplog.at_level(logging.INFO, logger="elephas.engine.async_driver"):
        history = model.fit(x, y, epochs=2, batch_size=10, callbacks=[WipeStagedFiles()])
    assert wiped
    assert any("not found on their executor" in r.getMessage() for r in caplog.records)
    assert len(history.history["loss"]) == 2
    epoch2 = [r for r in history.window_records if r["epoch"] == 1]
    assert sum(r["samples"] for r in epoch2) == 120  # every row trained in the epoch after the wipe
    assert set(os.listdir(root)) <= before


def test_stage_blocks_option_is_checked():
    from elephas.spark_model import SparkModel

    with pytest.raises(ValueError, match="stage_blocks must be True or False. Received: stage_blocks='yes'"):
        SparkModel(make_dense_model(), stage_blocks="yes")


def test_dataframe_staged_from_arrow_equals_unstaged(spark):
    from pyspark.ml.linalg import Vectors

    from elephas.spark_model import SparkModel

    x, y = make_blobs(90)
    df = spark.createDataFrame(
        [(Vectors.dense(row.tolist()), float(np.argmax(lab))) for row, lab in zip(x, y)], ["features", "label"]
    ).repartition(3)
    df = df.sortWithinPartitions("label").cache()
    weights = []
    for stage in (True, False):
        sm = SparkModel(make_dense_model(seed=5), frequency=3, stage_blocks=stage)
        history = sm.fit(df, epochs=2, batch_size=8, shuffle=False, nb_classes=3)
        assert len(history.history["loss"]) == 2
        weights.append(sm.master_network.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
