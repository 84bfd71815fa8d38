"""The automatic window of the asynchronous modes: starts at the mode's initial window, then follows
what the tasks measured (real Spark, real parameter server)."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
from conftest import make_dense_model
from test_stage_rounds import teacher_task

from elephas.engine.windows import at_least_four_rounds, bounds_for, next_window


@pytest.mark.parametrize("mode", ["asynchronous", "hogwild"])
def test_auto_window_starts_at_the_initial_one_then_follows_the_measurements(sc, caplog, mode):
    from elephas.spark_model import SparkModel

    x, y = teacher_task(800, features=6, seed=4)
    model = make_dense_model(input_dim=6, seed=1)
    with caplog.at_level(logging.INFO, logger="elephas.engine.windows"):
        history = SparkModel(model, mode=mode, num_workers=2).fit(x, y, epochs=3, batch_size=10)
    bounds = bounds_for(mode)
    batches = 40  # 400 rows per partition, batches of 10
    assert len(history.windows) == 3
    assert history.windows[0] == at_least_four_rounds(bounds.initial, batches)
    assert all(bounds.low <= w <= bounds.high for w in history.windows)
    chosen = [r.getMessage() for r in caplog.records if "per exchange" in r.getMessage()]
    assert len(chosen) == 3 and chosen[0].startswith("frequency='auto': epoch 1 measured")
    for epoch, window in enumerate(history.windows):  # every worker exchanged once per window
        per_worker: dict[str, int] = {}
        for r in history.window_records:
            if r["epoch"] == epoch:
                per_worker[r["worker_id"]] = per_worker.get(r["worker_id"], 0) + 1
        assert per_worker == {"0": math.ceil(batches / window), "1": math.ceil(batches / window)}


def test_an_explicit_frequency_is_kept_every_epoch(sc):
    from elephas.spark_model import SparkModel

    x, y = teacher_task(400, features=6, seed=4)
    history = SparkModel(make_dense_model(input_dim=6, seed=1), mode="asynchronous", frequency=3, num_workers=2).fit(
        x, y, epochs=2, batch_size=10
    )
    assert history.windows == [3, 3]


def test_next_window_weighs_tasks_by_batches_and_windows_and_ignores_idle_ones():
    bounds = bounds_for("asynchronous")
    busy = SimpleNamespace(windows=10, batches=40, compute_s=0.4, exchange_s=0.05)  # 10 ms per batch, 5 ms per exchange
    idle = SimpleNamespace(windows=0, batches=0, compute_s=0.0, exchange_s=0.0)
    assert next_window([busy, idle], bounds, 4, 0) == bounds.choose(0.01, 0.005) == 5
    assert next_window([idle], bounds, 7, 0) == 7  # nothing measured: keep the current window
    slow_exchange = SimpleNamespace(windows=10, batches=10, compute_s=0.01, exchange_s=1.0)
    assert next_window([slow_exchange], bounds, 4, 0) == bounds.high
    assert next_window([slow_exchange], bounds_for("hogwild"), 4, 0) == bounds_for("hogwild").high < bounds.high


def test_window_schedule_is_one_rule_for_every_mode():
    from elephas.engine.windows import WindowSchedule

    fast_exchange = SimpleNamespace(windows=10, batches=100, compute_s=1.0, exchange_s=0.001)
    slow_exchange = SimpleNamespace(windows=10, batches=100, compute_s=0.1, exchange_s=1.0)
    sync = WindowSchedule("auto", "synchronous", [3200, 3000], 10)  # 320 batches on the largest partition
    assert sync.current == bounds_for("synchronous").initial
    sync.advance([fast_exchange], epoch=0)
    sync.advance([slow_exchange], epoch=1)
    assert sync.used == [16, 8] and sync.current == 32
    small = WindowSchedule("auto", "synchronous", [120, 80], 10)  # 12 batches: at least four rounds
    assert small.current == 3
    small.advance([slow_exchange], epoch=0)
    assert small.current == 3 and small.used == [3]
    fixed = WindowSchedule("epoch", "asynchronous", [100], 10)
    fixed.advance([slow_exchange], epoch=0)
    assert fixed.current == "epoch" and fixed.used == ["epoch"] and fixed.describe() == "epoch"
    assert "2-6 as measured" in WindowSchedule("auto", "hogwild", [1000], 10).describe()
