"""Background pushes: the helper thread of a worker, against real servers on loopback, and the
asynchronous task function run in-process with ``background_push`` on and off."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import make_blobs, make_dense_model
from test_parameter_server import MODES, AddStrategy

from elephas.engine.async_worker import make_async_epoch_fn
from elephas.engine.modes import get_strategy
from elephas.engine.runtime import WorkerRuntime
from elephas.engine.shipping import ModelSpec
from elephas.engine.strategies.base import Strategy
from elephas.engine.worker import WindowPlan
from elephas.parameter import ParameterServer, ParameterServerError
from elephas.parameter.background import BackgroundExchange


class StalenessRecorder(Strategy):
    """C += Δ, remembering the staleness of every update."""

    name = "test-staleness"
    locked = True

    def __init__(self) -> None:
        self.seen: list[int] = []

    def server_apply(self, center, update, staleness=0):
        self.seen.append(staleness)
        super().server_apply(center, update, staleness)


def _push_threads():
    return [t for t in threading.enumerate() if t.name.startswith("elephas-push")]


def _kw(version, **extra):
    return {"worker_id": "w0", "attempt_id": "a0", "version_seen": version, "samples": 1, "epoch": 0, **extra}


@pytest.mark.parametrize("mode", MODES)
def test_every_update_arrives_and_versions_are_exact(mode):
    weights = [np.zeros(5, np.float32), np.zeros((2, 2), np.float32)]
    with ParameterServer(weights, AddStrategy(), mode=mode) as srv:
        with srv.client() as client, BackgroundExchange(client, name="t") as exchange:
            assert exchange.wait() is None  # nothing in flight yet
            version = 0
            for k in range(1, 21):
                exchange.submit([np.full(5, k, np.float32), np.full((2, 2), k, np.float32)], pull=True, **_kw(version))
                assert exchange.in_flight
                done = exchange.wait()
                assert not exchange.in_flight
                assert done.version == k and done.center_version == k  # one client: no one else
                np.testing.assert_array_equal(done.center[0], np.full(5, k * (k + 1) / 2))
                version = done.center_version
            exchange.submit([np.ones(5, np.float32), np.ones((2, 2), np.float32)], pull=False, **_kw(version))
            done = exchange.wait()
            assert done.version == 21 and done.center is None and done.center_version == -1
            assert (exchange.submitted, exchange.completed) == (21, 21)
        center, version = srv.state.pull()
        records = srv.state.records()
    assert version == 21 and len(records) == 21
    assert [r.version for r in records] == list(range(1, 22))
    assert [r.staleness for r in records] == [0] * 21
    np.testing.assert_array_equal(center[1], np.full((2, 2), 211, np.float32))
    assert not _push_threads()


@pytest.mark.parametrize("mode", MODES)
def test_errors_of_the_helper_thread_are_raised_by_wait(mode):
    weights = [np.zeros(3, np.float32)]
    with ParameterServer(weights, AddStrategy(), mode=mode) as srv:
        with srv.client() as client, BackgroundExchange(client) as exchange:
            exchange.submit([np.array([1, np.nan, 0], np.float32)], pull=True, **_kw(0))
            with pytest.raises(ParameterServerError, match="status 422") as err:
                exchange.wait()
            assert err.value.status == 422
            assert not exchange.in_flight
            exchange.submit([np.ones(3, np.float32)], pull=True, **_kw(0))  # usable again
            assert exchange.wait().center_version == 1
        assert srv.state.stats()["refused_by_reason"] == {"nonfinite": 1}
    assert not _push_threads()


def test_connection_errors_surface_and_close_still_stops_the_thread():
    weights = [np.zeros(3, np.float32)]
    srv = ParameterServer(weights, AddStrategy(), mode="socket").start()
    client = srv.client(retries=1, backoff_s=0.01, timeout=2)
    srv.stop()
    exchange = BackgroundExchange(client)
    try:
        exchange.submit([np.ones(3, np.float32)], pull=False, **_kw(0))
        with pytest.raises(ConnectionError, match="Could not reach the parameter server"):
            exchange.wait()
    finally:
        exchange.close()
        client.close()
    assert not _push_threads()


def test_misuse_is_refused_and_close_finishes_the_exchange_in_flight():
    weights = [np.zeros(3, np.float32)]
    with ParameterServer(weights, AddStrategy(), mode="socket") as srv:
        client = srv.client()
        exchange = BackgroundExchange(client)
        exchange.submit([np.ones(3, np.float32)], pull=False, **_kw(0))
        with pytest.raises(RuntimeError, match="wait"):
            exchange.submit([np.ones(3, np.float32)], pull=False, **_kw(0))
        exchange.close()  # lets the push in flight finish, then ends the thread
        exchange.close()  # idempotent
        with pytest.raises(RuntimeError, match="close"):
            exchange.submit([np.ones(3, np.float32)], pull=False, **_kw(0))
        client.close()
        assert srv.state.version == 1
    assert not _push_threads()


# ----- the asynchronous task function, in-process ----------------------------------------------
def _run_epoch(mode, strategy, background, frequency, rows=96, batch_size=8):
    x, y = make_blobs(rows, seed=3)
    model = make_dense_model()
    spec = ModelSpec.from_model(model)
    plan = WindowPlan(batch_size, frequency, shuffle=False, seed=0)
    with ParameterServer(model.get_weights(), strategy, mode=mode) as srv:
        fn = make_async_epoch_fn(
            spec, WorkerRuntime(threads=0), srv.client_config(), plan, strategy, epoch=0, background_push=background
        )
        out = list(fn(0, iter([(7, [x], [y])])))
        records = srv.state.records()
        center, version = srv.state.pull()
    return out, records, center, version, plan.windows(rows)


@pytest.mark.parametrize("mode", MODES)
def test_background_push_sends_every_window_with_exact_staleness(mode):
    strategy = StalenessRecorder()
    out, records, _, version, windows = _run_epoch(mode, strategy, True, "batch")
    [report] = out
    assert (report.partition, report.rows, report.attempt) == (7, 96, "driver")
    assert report.windows == report.batches == 12  # 'batch': one window per batch
    assert report.compute_s > 0 and report.exchange_s > 0  # the times the automatic window is chosen from
    assert version == windows == len(records) == 12
    assert sum(r.samples for r in records) == 96
    assert [r.version for r in records] == list(range(1, 13))
    # the worker continues from the newest center it has: the first two windows start from the
    # initial pull (version 0), then each from the center pulled after the push before last,
    # which misses exactly one update: the worker's own, still in flight
    assert [r.staleness for r in records] == [0, 1] + [1] * 10
    assert strategy.seen == [r.staleness for r in records]
    assert not _push_threads()


def test_without_background_push_every_window_starts_from_the_fresh_center():
    strategy = StalenessRecorder()
    _, records, _, version, _ = _run_epoch("socket", strategy, False, "batch")
    assert version == 12 and [r.staleness for r in records] == [0] * 12


@pytest.mark.parametrize("mode", ["easgd", "adag", "dynsgd"])
def test_background_push_with_the_dist_keras_rules(mode):
    strategy = get_strategy(mode)
    _, records, center, version, windows = _run_epoch("socket", strategy, True, 2)
    assert version == windows == len(records) == 6
    assert all(np.isfinite(c).all() for c in center)
    expected = [0] * 6 if strategy.needs_center_pull else [0, 1, 1, 1, 1, 1]
    assert [r.staleness for r in records] == expected
    assert not _push_threads()


def test_an_error_in_the_helper_thread_fails_the_task():
    class NaNAfterTwo(Strategy):
        name = "test-nan"
        calls = 0

        def worker_update(self, weights, start_weights, center, window_batches):
            type(self).calls += 1
            delta, after = super().worker_update(weights, start_weights, center, window_batches)
            if type(self).calls == 3:
                delta[0] = np.full_like(delta[0], np.nan)
            return delta, after

    with pytest.raises(ParameterServerError, match="status 422"):
        _run_epoch("socket", NaNAfterTwo(), True, "batch")
    assert not _push_threads()


# ----- end to end through SparkModel ------------------------------------------------------------
def test_spark_model_refuses_a_non_boolean_knob():
    from elephas.spark_model import SparkModel

    with pytest.raises(ValueError, match="background_push must be True or False"):
        SparkModel(make_dense_model(), mode="asynchronous", background_push="yes")


def test_fit_with_background_push_learns_and_records_every_window(sc):
    import keras

    from elephas.spark_model import SparkModel
    from elephas.utils.rdd_utils import to_simple_rdd

    x, y = make_blobs(160, seed=6)
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.05))
    sm = SparkModel(model, mode="asynchronous", frequency="batch", parameter_server_mode="socket", background_push=True)
    assert sm.get_config()["background_push"] is True
    history = sm.fit(to_simple_rdd(sc, x, y), epochs=3, batch_size=16)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.evaluate(x, y, verbose=0)[1] > 0.8
    records = history.window_records
    assert sum(r["samples"] for r in records) == 3 * 160
    assert sorted(r["version"] for r in records) == list(range(1, len(records) + 1))
    assert not _push_threads()
