"""The 'collective' round reducer: every rank applies the server step to the same all-reduced delta."""

from __future__ import annotations

import copy
import logging
import threading

import numpy as np
import pytest

from elephas.collective import RingReducer
from elephas.engine.frame_stage import RESULT_WARN_BYTES, check_result_size
from elephas.engine.frame_weights import ship_arrays
from elephas.engine.reducers import CollectiveRounds, open_round_reducer
from elephas.engine.server_optimizer import ServerOptimizer
from elephas.parameter.auth import new_secret
from elephas.parameter.netio import bind_listener


def _rounds_in_threads(world, step, center, work):
    secret = new_secret()
    listeners = [bind_listener("127.0.0.1", 0) for _ in range(world)]
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in listeners]
    results = [None] * world

    def main(rank):
        try:
            reducer = RingReducer(rank, world, addresses, secret, listener=listeners[rank], session="s", timeout=10)
            rounds = CollectiveRounds(reducer, copy.deepcopy(step), center)
            try:
                results[rank] = work(rank, rounds)
            finally:
                rounds.close()
        except BaseException as exc:  # noqa: B036 - handed back to the test
            results[rank] = exc

    threads = [threading.Thread(target=main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_every_rank_gets_the_same_center_as_the_server_step_computes():
    center = [np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), np.zeros(3, np.float32)]
    step = ServerOptimizer("nesterov", 1.0, 0.5)
    rng = np.random.default_rng(0)
    deltas = {r: [[rng.normal(size=c.shape).astype(np.float32) for c in center] for _ in range(2)] for r in range(3)}
    samples = {0: [4, 2], 1: [3, 0], 2: [0, 0]}  # rank 1 runs out of rows after one round, rank 2 has none

    def work(rank, rounds):
        out = []
        for r in range(2):
            weighted = [d * np.float32(samples[rank][r]) for d in deltas[rank][r]]
            out.append([c.copy() for c in rounds.exchange(weighted, samples[rank][r], {}, r)])
        return out, rounds.step.state()

    results = _rounds_in_threads(3, step, center, work)
    assert not any(isinstance(r, BaseException) for r in results), results
    expected, reference = [c.copy() for c in center], copy.deepcopy(step)
    for r in range(2):
        n = sum(samples[k][r] for k in range(3))
        total = [
            sum(np.float64(samples[k][r]) * deltas[k][r][i].astype(np.float64) for k in range(3))
            for i in range(len(center))
        ]
        mean = [(t / n).astype(np.float32) for t in total]
        expected = [c + s for c, s in zip(expected, reference.step(mean))]
        for rank in range(3):
            for got, want in zip(results[rank][0][r], expected):
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
                assert got.dtype == np.float32
    for rank in range(1, 3):  # the same bytes everywhere
        assert all(np.array_equal(a, b) for a, b in zip(results[rank][0][-1], results[0][0][-1]))
        assert all(np.array_equal(a, b) for a, b in zip(results[rank][1], results[0][1]))


def test_a_round_without_samples_keeps_the_center():
    center = [np.ones(4, np.float32)]
    results = _rounds_in_threads(
        2, ServerOptimizer("sgd"), center, lambda rank, rounds: rounds.exchange([np.zeros(4, np.float32)], 0, {}, 0)
    )
    assert all(np.array_equal(r[0], center[0]) for r in results)


def test_unknown_kinds_and_missing_centers_are_refused():
    with pytest.raises(
        ValueError,
        match=r"Could not interpret reducer kind: 'mpi'. Expected one of \['server', "
        r"'collective'\]",
    ):
        open_round_reducer({"kind": "mpi"}, "0", "a", 0, 1)
    with pytest.raises(ValueError, match="start center"):
        open_round_reducer({"kind": "collective", "secret": "00" * 32, "step": ServerOptimizer()}, "0", "a", 0, 1)


def test_stage_arrays_stay_in_the_closure_on_a_classic_session(spark):
    """A classic session broadcasts large closures itself; the artifact path is tested on Spark Connect."""
    weights = [np.arange(1 << 10, dtype=np.float32), np.ones((3, 2), np.float64)]
    for threshold in (8 << 10, 1 << 10):
        shipped = ship_arrays(spark, weights, {"weights": 2}, threshold=threshold)
        assert shipped.in_closure and shipped.nbytes == (4 << 10) + 48 and shipped.meta == {"weights": 2}
        loaded = spark.sparkContext.parallelize([0], 1).map(lambda _, s=shipped: s.load()).collect()[0]
        assert [a.dtype for a in loaded] == [np.float32, np.float64]
        assert all(np.array_equal(a, b) for a, b in zip(loaded, weights))


def test_a_large_center_coming_back_through_the_connect_server_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="elephas.engine.frame_training"):
        check_result_size(RESULT_WARN_BYTES, "center")
        assert not caplog.records
        check_result_size(RESULT_WARN_BYTES + 1, "center and momentum")
    (record,) = caplog.records
    assert "center and momentum (128.0 MiB)" in record.getMessage()
    assert "spark.driver.memory" in record.getMessage() and "server_optimizer='sgd'" in record.getMessage()
