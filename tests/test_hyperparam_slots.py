"""Slot tasks of a distributed search: the authenticated channel, the values codec, and the runner on
the test session's local[2] Spark (plus one search on its own local[2,3] Spark, which retries tasks)."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hyperopt import STATUS_OK, hp, rand, space_eval
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR
from hyperopt.pyll import scope

from elephas.hyperparam import HyperParamModel
from elephas.hyperparam.channel import ChannelClient, ChannelError, ChannelServer, new_secret
from elephas.hyperparam.values import (
    UnsendableValueError,
    ValueEncoder,
    decode,
    literal_table,
    space_is_sendable,
)

HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------------------ channel


def echo(request):
    return {"echo": request}


def test_channel_round_trips_json_and_stop_joins_its_threads():
    secret = new_secret()
    server = ChannelServer(echo, secret)
    try:
        with ChannelClient(server.address, secret) as client:
            assert client.request({"n": 1, "x": [0.5, "a", None]}) == {"echo": {"n": 1, "x": [0.5, "a", None]}}
            assert client.request({"n": 2}) == {"echo": {"n": 2}}
            idle = ChannelClient(server.address, secret)  # still connected when the server stops
            idle.request({"n": 3})
    finally:
        server.stop()
    assert server.threads_alive == 0
    with pytest.raises((ChannelError, OSError)):
        idle.request({"n": 4})
    idle.close()


def test_channel_drops_a_client_with_the_wrong_secret_and_keeps_serving_others():
    secret = new_secret()
    with ChannelServer(echo, secret) as server:
        with ChannelClient(server.address, new_secret()) as intruder, pytest.raises(ChannelError):
            intruder.request({"op": "next"})
        with ChannelClient(server.address, secret) as client:
            assert client.request({"ok": True}) == {"echo": {"ok": True}}


def test_channel_refuses_a_replayed_frame():
    """The same signed bytes sent again carry the wrong sequence number."""
    secret = new_secret()
    with ChannelServer(echo, secret) as server:
        client = ChannelClient(server.address, secret)
        sent = []
        original = client.sock.sendall
        client.sock = _Recorder(client.sock, sent)
        client._framer.sock = client.sock
        assert client.request({"pay": 1}) == {"echo": {"pay": 1}}
        original(sent[0])  # replay the first request's frame on the same connection
        with pytest.raises(ChannelError):
            client._framer.receive()
        client.close()


class _Recorder:
    """A socket whose sendall keeps a copy of what it sent."""

    def __init__(self, sock, sent):
        self._sock = sock
        self._sent = sent

    def sendall(self, data):
        self._sent.append(bytes(data))
        return self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_channel_refuses_an_oversized_frame_before_reading_it():
    secret = new_secret()
    with ChannelServer(echo, secret) as server:
        sock = socket.create_connection(server.address)
        sock.sendall(os.urandom(16))
        sock.recv(16)
        sock.sendall((2**31).to_bytes(4, "big") + b"\0" * 32)
        sock.settimeout(10)
        try:
            assert sock.recv(1) == b""  # the server hung up ...
        except ConnectionResetError:  # ... with the tag it did not read still unread
            pass
        sock.close()


# ------------------------------------------------------------------ values


class Box:
    def __init__(self):
        self.items = []


SHARED = Box()
SPACE = {
    "obj": hp.choice("obj", [SHARED, "relu", (1, 2), {3: "x"}, np.float32(0.5), None, float("inf")]),
    "u": hp.uniform("u", 0, 1),
    "n": hp.randint("n", 5),
    "q": [hp.quniform("q", 1, 4, 1)],
    "m": hp.loguniform("m", -2, 0) * 2,
}


@pytest.mark.parametrize("choice", range(7))
def test_values_survive_json_with_their_types(choice):
    encoder = ValueEncoder(literal_table(SPACE))
    values = space_eval(SPACE, {"obj": choice, "u": 0.25, "n": np.int64(3), "q": 2.0, "m": -1.0})
    decoded = decode(json.loads(json.dumps(encoder.encode(values), allow_nan=False)), encoder.pickled)
    assert sorted(decoded) == sorted(values)
    for key, value in values.items():
        if isinstance(value, Box):
            assert isinstance(decoded[key], Box) and decoded[key] is not value
        else:
            assert decoded[key] == value and type(decoded[key]) is type(value), key


def test_space_options_are_fresh_copies_in_every_trial():
    encoder = ValueEncoder(literal_table(SPACE))
    encoded = encoder.encode({"obj": SHARED})
    first = decode(encoded, encoder.pickled)["obj"]
    first.items.append("mutated by trial 0")
    assert decode(encoded, encoder.pickled)["obj"].items == []


def test_values_that_are_not_options_of_the_space_are_refused():
    encoder = ValueEncoder([])
    with pytest.raises(UnsendableValueError, match=r"Received: a Box at values\['k'\]"):
        encoder.encode({"k": Box()})
    with pytest.raises(ValueError, match="literal index"):
        decode({"$lit": 0}, [])


@scope.define
def make_box(size):
    box = Box()
    box.items = [0] * int(size)
    return box


def test_spaces_with_functions_of_their_own_are_not_sendable():
    assert space_is_sendable(SPACE)
    assert not space_is_sendable({"box": scope.make_box(hp.quniform("size", 1, 3, 1))})


# ------------------------------------------------------------------ slot tasks on Spark


def test_the_executor_side_imports_neither_hyperopt_nor_scipy():
    code = (
        "import sys, elephas.hyperparam.slots, elephas.hyperparam.trial; "
        "print(sorted(m for m in ('hyperopt', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def where_it_ran(params):
    from pyspark import TaskContext

    context = TaskContext.get()
    return {"loss": (params["x"] - 0.25) ** 2, "status": STATUS_OK, "task": context.taskAttemptId(), "pid": os.getpid()}


def test_trials_run_in_one_long_task_per_slot(sc):
    space = {"x": hp.uniform("x", -1, 1)}
    trials = HyperParamModel(sc, num_workers=2).compute_trials(
        where_it_ran, max_evals=8, space=space, algo="random", seed=1
    )
    tasks = {t["result"]["task"] for t in trials.trials}
    assert len(trials.trials) == 8 and len(tasks) <= 2  # 8 trials, not 8 Spark tasks
    assert [t["tid"] for t in trials.trials] == list(range(8))
    time.sleep(1)  # the slot tasks' Python workers stay for reuse (Keras stays imported there)
    assert all(_running(pid) for pid in {t["result"]["pid"] for t in trials.trials})


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def boxed(params):
    return {"loss": float(len(params["box"].items) + params["x"]), "status": STATUS_OK}


def test_a_space_with_functions_of_its_own_runs_each_trial_as_its_own_job(sc):
    space = {"box": scope.make_box(hp.quniform("size", 1, 3, 1)), "x": hp.uniform("x", 0, 1)}
    trials = HyperParamModel(sc, num_workers=2).compute_trials(boxed, max_evals=3, space=space, algo="random", seed=0)
    assert all(t["state"] == JOB_STATE_DONE for t in trials.trials)
    assert [t["result"]["loss"] for t in trials.trials] == [
        t["misc"]["vals"]["size"][0] + t["misc"]["vals"]["x"][0] for t in trials.trials
    ]


def crash_once(params, workdir):
    """Kills its Python worker, once, in the second trial a worker runs (after it reported one)."""
    import os

    with open(os.path.join(workdir, "started"), "a") as f:
        f.write("x\n")
    mine = os.path.join(workdir, f"pid-{os.getpid()}")
    crashed = os.path.join(workdir, "crashed")
    if os.path.exists(mine) and not os.path.exists(crashed):
        open(crashed, "w").close()
        os._exit(1)  # the slot task's Python worker dies in the middle of a trial
    open(mine, "a").close()
    return {"loss": (params["x"] - 0.25) ** 2, "status": STATUS_OK}


def returns_a_model_crashing_once(params, workdir):
    import keras

    result = crash_once(params, workdir)
    return dict(result, model=keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))


@pytest.mark.timeout(300)
def test_a_slot_task_that_dies_fails_its_trial_and_the_models_it_held_are_made_again(sc, tmp_path):
    """local[2] does not retry tasks: the trial it was running fails as a job failure; the trials it
    had reported run again elsewhere for their models (their losses count once); the rest run."""
    objective = functools.partial(returns_a_model_crashing_once, workdir=str(tmp_path))
    hyperparam_model = HyperParamModel(sc, num_workers=2)
    trials = hyperparam_model.compute_trials(
        objective, max_evals=6, space={"x": hp.uniform("x", -1, 1)}, algo="random", seed=0
    )
    dynamic = trials._dynamic_trials  # .trials leaves failed trials out
    states = [t["state"] for t in dynamic]
    assert len(states) == 6 and states.count(JOB_STATE_ERROR) == 1 and states.count(JOB_STATE_DONE) == 5
    (failed,) = hyperparam_model.failed_trials
    assert "exited unexpectedly" in failed["traceback"] or "crashed" in failed["traceback"]
    assert all("model_spec" in t["result"] for t in dynamic if t["state"] == JOB_STATE_DONE)
    assert [t["result"]["loss"] for t in dynamic if t["state"] == JOB_STATE_DONE] == [
        (t["misc"]["vals"]["x"][0] - 0.25) ** 2 for t in dynamic if t["state"] == JOB_STATE_DONE
    ]
    with open(tmp_path / "started") as f:
        assert len(f.read().splitlines()) > 6  # some trials did run twice


def small_model(params):
    import keras

    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    return {"loss": (params["x"] - 0.25) ** 2, "status": STATUS_OK, "model": net, "task": where_it_ran(params)["task"]}


def test_a_slot_whose_models_reach_the_result_budget_hands_over_to_a_new_slot_task(sc):
    class OneModelPerTask(HyperParamModel):
        def _make_runner(self):
            runner = super()._make_runner()
            runner.result_bytes = 1  # every model is larger: each slot task returns after one trial
            return runner

    hyperparam_model = OneModelPerTask(sc, num_workers=2)
    trials = hyperparam_model.compute_trials(
        small_model, max_evals=5, space={"x": hp.uniform("x", -1, 1)}, algo="random", seed=2
    )
    assert [t["tid"] for t in trials.trials] == list(range(5))
    assert all("model_spec" in t["result"] and t["result"]["model_weights"] for t in trials.trials)
    assert len({t["result"]["task"] for t in trials.trials}) == 5
    assert len(hyperparam_model.models_from_trials(trials)) == 5


def uses_helper(params, helper):
    return {"loss": helper.loss(params["x"]), "status": STATUS_OK}


def test_slot_tasks_that_cannot_start_stop_the_search_at_once_with_the_executor_error(sc, tmp_path, monkeypatch):
    (tmp_path / "driver_only_helper.py").write_text("def loss(x):\n    return x * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # importable here, not in the Python workers
    import driver_only_helper

    with pytest.raises(RuntimeError, match="could not run on the executors") as info:
        HyperParamModel(sc, num_workers=2).compute_trials(
            functools.partial(uses_helper, helper=driver_only_helper),
            max_evals=8,
            space={"x": hp.uniform("x", -1, 1)},
            algo="random",
            seed=0,
        )
    assert "driver_only_helper" in str(info.value)
    assert _search_threads() == []


class Boom(Exception):
    pass


def failing_suggest(exc_type):
    def suggest(new_ids, domain, trials, seed):
        if new_ids[0] == 3:
            raise exc_type("stop the search")
        return rand.suggest(new_ids, domain, trials, seed)

    return suggest


def slow_square(params):
    import time

    time.sleep(0.5)
    return {"loss": params["x"] ** 2, "status": STATUS_OK}


def _search_threads():
    return [t for t in threading.enumerate() if t.name.startswith(("elephas-slot", "elephas-trial-channel"))]


@pytest.mark.parametrize("exc_type", [Boom, KeyboardInterrupt])
def test_an_error_on_the_driver_stops_the_slots_the_channel_and_their_threads(sc, exc_type):
    with pytest.raises(exc_type, match="stop the search"):
        HyperParamModel(sc, num_workers=2).compute_trials(
            slow_square, max_evals=6, space={"x": hp.uniform("x", -1, 1)}, algo=failing_suggest(exc_type)
        )
    assert _search_threads() == []
    deadline = time.time() + 30
    while sc.statusTracker().getActiveJobsIds() and time.time() < deadline:
        time.sleep(0.2)
    assert sc.statusTracker().getActiveJobsIds() == []
    trials = HyperParamModel(sc, num_workers=2).compute_trials(  # the session still works
        slow_square, max_evals=2, space={"x": hp.uniform("x", -1, 1)}, algo="random", seed=0
    )
    assert len(trials.trials) == 2


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_a_slot_task_rerun_by_spark_loses_no_trial_and_counts_none_twice(tmp_path):
    """On local[2,3] Spark reruns the dead slot task: it runs the dead attempt's trials again, for
    their models; every trial is recorded once, with the points and losses of an in-process run."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "hyperparam_retry_script.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    rows = json.loads(lines[-1][len("RESULT ") :])
    assert (tmp_path / "crashed").exists()  # a worker did die
    assert "was restarted (attempt 1)" in proc.stderr
    assert [r["tid"] for r in rows] == list(range(6))
    assert all(r["state"] == JOB_STATE_DONE and r["model"] for r in rows)

    sys.path.insert(0, HERE)
    try:
        from hyperparam_retry_script import objective
    finally:
        sys.path.remove(HERE)
    local_dir = tmp_path / "in-process"
    local_dir.mkdir()
    (local_dir / "crashed").touch()  # no crash in-process
    trials = HyperParamModel(None, num_workers=2).compute_trials(
        functools.partial(objective, workdir=str(local_dir)),
        max_evals=6,
        space={"x": hp.uniform("x", -1, 1)},
        algo="random",
        seed=3,
    )
    assert [(r["x"], r["loss"]) for r in rows] == [
        (t["misc"]["vals"]["x"][0], t["result"]["loss"]) for t in trials.trials
    ]
