"""Pure engine logic, no Spark: modes, windows, averaging, server optimizer, runtime mapping."""

from __future__ import annotations

import numpy as np
import pytest

from elephas.engine.data import ModelIO, arrow_to_numpy, conform, one_hot_encode, split_evenly
from elephas.engine.errors import RemoteTaskError, guard, task_failure
from elephas.engine.history import MetricSum
from elephas.engine.modes import get_frequency, get_strategy, valid_modes
from elephas.engine.runtime import default_threads, gpu_environment, thread_environment
from elephas.engine.server_optimizer import ServerOptimizer
from elephas.engine.strategies.averaging import SynchronousAveraging
from elephas.engine.worker import WindowPlan


def test_unknown_mode_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        get_strategy("asynch")
    msg = str(err.value)
    assert "asynch" in msg
    for mode in ("synchronous", "asynchronous", "hogwild"):
        assert mode in msg


def test_mode_rejects_knobs_it_does_not_take():
    with pytest.raises(ValueError, match="does not take"):
        get_strategy("synchronous", rho=3.0)


@pytest.mark.parametrize("bad", ["epochs", 0, -2, 1.5, True, None.__class__])
def test_unknown_frequency(bad):
    with pytest.raises(ValueError, match="frequency"):
        get_frequency(bad, SynchronousAveraging())


def test_frequency_values():
    s = SynchronousAveraging()
    assert get_frequency("EPOCH", s) == "epoch"
    assert get_frequency("batch", s) == "batch"
    assert get_frequency(np.int64(3), s) == 3
    assert get_frequency(None, s) == "auto"
    assert get_frequency("Auto", s) == "auto"
    assert set(valid_modes()) >= {"synchronous", "asynchronous", "hogwild"}


def test_window_plan_covers_every_row_once_including_partial_batch():
    plan = WindowPlan(batch_size=4, frequency=2, shuffle=True, seed=7)
    rows = 19  # 5 batches, the last one partial (3 rows) -> windows of 2,2,1 batches
    assert plan.windows(rows) == 3
    seen = np.concatenate([plan.window_rows(rows, epoch=1, partition=0, window=w) for w in range(3)])
    assert sorted(seen.tolist()) == list(range(rows))
    assert plan.window_rows(rows, 1, 0, 3) is None
    assert len(plan.window_rows(rows, 1, 0, 2)) == 3
    # a new epoch shuffles differently, the same epoch reproducibly
    assert not np.array_equal(plan.order(rows, 1, 0), plan.order(rows, 2, 0))
    assert np.array_equal(plan.order(rows, 1, 0), plan.order(rows, 1, 0))


def test_window_plan_epoch_and_batch():
    assert WindowPlan(10, "epoch", False, 0).windows(95) == 1
    assert WindowPlan(10, "batch", False, 0).windows(95) == 10
    assert WindowPlan(10, "epoch", False, 0).windows(0) == 0


def test_sample_weighted_average_exact_numbers():
    from elephas.parameter.rounds import RoundState

    # partition A: 3 samples, delta [1, 2]; partition B: 1 sample, delta [5, -2]
    state = RoundState([np.zeros(2, np.float32)], SynchronousAveraging(), lambda d: d)
    state.begin_epoch(0, {"0": 1, "1": 1})
    import threading

    first = threading.Thread(
        target=state.apply,
        args=([np.array([3.0, 6.0], np.float32)],),
        kwargs=dict(
            worker_id="0", attempt_id="a", version_seen=0, samples=3, metrics={"loss": 0.5}, round=0, task_attempt=1
        ),
    )
    first.start()
    version = state.apply(
        [np.array([5.0, -2.0], np.float32)],
        worker_id="1",
        attempt_id="b",
        version_seen=0,
        samples=1,
        metrics={"loss": 0.1},
        round=0,
        task_attempt=2,
    )
    first.join(10)
    assert version == 1 and not first.is_alive()
    np.testing.assert_array_equal(state.pull()[0][0], np.array([2.0, 1.0], np.float32))
    losses = {r.worker_id: (r.samples, r.metrics["loss"]) for r in state.records()}
    assert losses == {"0": (3, 0.5), "1": (1, pytest.approx(0.1))}
    # no samples at all: a zero delta, never NaN
    zero = SynchronousAveraging.average([np.ones(2, np.float32)], 0)
    np.testing.assert_array_equal(zero[0], np.zeros(2))


def test_server_optimizers():
    c = [np.array([1.0], np.float32)]
    d = [np.array([0.5], np.float32)]
    assert ServerOptimizer().apply(c, d)[0][0] == pytest.approx(1.5)
    mom = ServerOptimizer("momentum", learning_rate=1.0, momentum=0.5)
    c1 = mom.apply(c, d)  # v = 0.5 -> 1.5
    c2 = mom.apply(c1, d)  # v = 0.75 -> 2.25
    assert c2[0][0] == pytest.approx(2.25)
    nes = ServerOptimizer("nesterov", learning_rate=2.0, momentum=0.5)
    n1 = nes.apply(c, d)  # v = 0.5, step = 0.25 + 0.5 = 0.75 -> 1 + 1.5
    assert n1[0][0] == pytest.approx(2.5)
    n2 = nes.apply(n1, d)  # v = 0.75, step = 0.375 + 0.5 -> 2.5 + 1.75
    assert n2[0][0] == pytest.approx(4.25)
    with pytest.raises(ValueError, match="server_optimizer"):
        ServerOptimizer("adamw")
    with pytest.raises(ValueError, match="server_momentum"):
        ServerOptimizer("nesterov", momentum=1.0)


def test_metric_sum_weights_by_samples():
    m = MetricSum()
    m.add(30, {"loss": 1.0, "accuracy": 0.5})
    m.add(10, {"loss": 3.0, "accuracy": 1.0})
    assert m.means() == {"loss": pytest.approx(1.5), "accuracy": pytest.approx(0.625)}
    assert MetricSum().means() == {}


def test_gpu_mapping():
    class Info:
        addresses = ["2", "3"]

    assert gpu_environment({}) == {}
    assert gpu_environment({"gpu": Info()}) == {
        "CUDA_VISIBLE_DEVICES": "2,3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    }
    assert gpu_environment({"gpu": ["1"]})["CUDA_VISIBLE_DEVICES"] == "1"
    assert gpu_environment({"fpga": ["0"]}) == {}
    assert gpu_environment({"gpu": []}) == {}


def test_thread_settings():
    assert thread_environment(0) == {}
    env = thread_environment(3)
    assert env["OMP_NUM_THREADS"] == "3" and env["TF_NUM_INTRAOP_THREADS"] == "3"
    conf = {"spark.master": "local[2]", "spark.task.cpus": "1"}
    assert default_threads(conf, 2, cpu_count=8) == 4
    assert default_threads({"spark.master": "spark://h:7077", "spark.task.cpus": "2"}, 16) == 2


def test_conform_and_one_hot():
    flat = np.arange(12, dtype=np.float64).reshape(2, 6)
    out = conform(flat, (2, 3))
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(one_hot_encode(np.array([2.0, 0.0]), 3), np.array([[0, 0, 1], [1, 0, 0]], np.float32))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        one_hot_encode(np.array([3.0]), 3)
    assert split_evenly(10, 3) == [(0, 3), (3, 6), (6, 10)]


def test_arrow_lists_to_numpy():
    import pyarrow as pa

    col = pa.array([[1.0, 2.0], [3.0, 4.0]], type=pa.list_(pa.float32()))
    np.testing.assert_array_equal(arrow_to_numpy(col), np.array([[1, 2], [3, 4]], np.float32))
    nested = pa.array([[[1.0], [2.0]], [[3.0], [4.0]]])
    assert arrow_to_numpy(nested).shape == (2, 2, 1)
    with pytest.raises(ValueError, match="same length"):
        arrow_to_numpy(pa.array([[1.0], [2.0, 3.0]]))


def test_guard_marks_partition_and_driver_finds_it():
    def boom(pid, it):
        yield 1
        raise KeyError("missing thing")

    with pytest.raises(RemoteTaskError) as err:
        list(guard(boom)(4, iter([])))
    failure = task_failure(RuntimeError("java stuff\n" + str(err.value) + "\nmore"), "Training")
    assert failure is not None and failure.partition == 4
    assert "partition 4" in str(failure) and "missing thing" in str(failure)
    assert "Traceback" in failure.remote_traceback
    assert task_failure(RuntimeError("unrelated"), "x") is None


def test_model_io_multi():
    import keras

    a, b = keras.Input((3,), name="a"), keras.Input((2, 2), name="b")
    out1 = keras.layers.Dense(1, name="o1")(a)
    out2 = keras.layers.Dense(4, name="o2")(keras.layers.Flatten()(b))
    io = ModelIO.of(keras.Model([a, b], [out1, out2]))
    assert io.input_shapes == ((3,), (2, 2)) and io.output_shapes == ((1,), (4,))


def test_model_is_built_once_per_process_and_only_weights_change():
    from conftest import make_dense_model

    from elephas.engine.shipping import ModelSpec, cached_model, clear_cache

    clear_cache()
    model = make_dense_model()
    spec = ModelSpec.from_model(model)
    first = cached_model(spec, model.get_weights())
    zeros = [np.zeros_like(w) for w in model.get_weights()]
    second = cached_model(spec, zeros)
    assert first is second
    assert all(not np.any(w) for w in second.get_weights())
    assert second.optimizer.__class__ is model.optimizer.__class__ and second.compiled
    other = cached_model(ModelSpec.from_model(model), None)
    assert other is not first
    clear_cache()


def test_custom_strategy_can_be_registered():
    from elephas.engine.modes import _STRATEGIES, register_strategy
    from elephas.engine.strategies.base import Strategy

    @register_strategy
    class Halving(Strategy):
        name = "halving_test"

        def __init__(self, factor: float = 0.5):
            self.factor = factor

        def server_apply(self, center, update, staleness=0):
            for c, u in zip(center, update):
                c += self.factor * u

    try:
        strategy = get_strategy("halving_test", factor=0.25)
        center = [np.zeros(2, np.float32)]
        strategy.server_apply(center, [np.full(2, 4.0, np.float32)])
        np.testing.assert_array_equal(center[0], [1.0, 1.0])
        assert get_frequency(None, strategy) == "epoch"
    finally:
        _STRATEGIES.pop("halving_test", None)


def _freeze_count_after_preparing(_):
    import gc

    from elephas.engine.runtime import WorkerRuntime, prepare_worker

    prepare_worker(WorkerRuntime(threads=1))
    return gc.get_freeze_count()


def test_task_workers_exempt_loaded_modules_from_garbage_collection_but_the_driver_does_not(sc):
    """PySpark's daemon collects garbage after every task; elephas's tasks freeze Keras/TF first."""
    import gc

    before = gc.get_freeze_count()
    counts = sc.parallelize(range(2), 2).map(_freeze_count_after_preparing).collect()
    assert all(c > 50_000 for c in counts)  # Keras and its backend are loaded and frozen
    assert gc.get_freeze_count() == before  # nothing is frozen in the driver
