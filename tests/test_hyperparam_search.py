"""Distributed hyper-parameter search on the test session's local[2] Spark (tiny nets, 1 epoch)."""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hyperopt import STATUS_OK, Trials, anneal, hp, rand, tpe
from hyperopt.base import JOB_STATE_ERROR

from elephas.hyperparam import HyperParamModel, TrialsFailedError, VotingModel
from elephas.hyperparam.distributions import choice, uniform  # noqa: F401 - as users import them
from elephas.hyperparam.scheduler import history_free


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype("float32")
    labels = (x[:, 0] + x[:, 1] > 0).astype("int64")
    y = np.eye(2, dtype="float32")[labels]
    return x[:64], y[:64], x[64:], y[64:]


def model(x_train, y_train, x_test, y_test):
    from keras.layers import Dense, Dropout
    from keras.models import Sequential
    from keras.optimizers import Adam

    model = Sequential()
    model.add(Dense({{choice([2, 16])}}, activation="relu", input_shape=(4,)))
    model.add(Dropout({{uniform(0, 0.5)}}))
    model.add(Dense(2, activation="softmax"))
    model.compile(
        loss="categorical_crossentropy", metrics=["accuracy"], optimizer=Adam(learning_rate={{choice([0.0001, 0.05])}})
    )
    model.fit(x_train, y_train, batch_size=16, epochs=1, verbose=0)
    score, acc = model.evaluate(x_test, y_test, verbose=0)
    return {"loss": score, "status": STATUS_OK, "model": model}


@pytest.mark.backend
def test_seed_readme_shape_minimize_and_best_ensemble(sc):
    """data() + templated model() + HyperParamModel(sc).minimize(...) + best_ensemble(...)."""
    hyperparam_model = HyperParamModel(sc, num_workers=2)
    best = hyperparam_model.minimize(model=model, data=data, max_evals=4, seed=3)
    trials = hyperparam_model.trials
    losses = sorted(t["result"]["loss"] for t in trials.trials)
    assert len(trials.trials) == 4 and isinstance(trials, Trials)
    assert losses[0] < losses[-1]  # the search found something better than its worst trial
    assert hyperparam_model.best_loss == losses[0]
    # the returned model carries the trained weights: it reproduces the best trial's loss
    x_train, y_train, x_test, y_test = data()
    assert best.evaluate(x_test, y_test, verbose=0)[0] == pytest.approx(losses[0], rel=1e-5)
    params = hyperparam_model.best_params
    assert set(params) == {"Dense_units", "Dropout_rate", "Adam_learning_rate"}
    assert params["Dense_units"] in (2, 16) and params["Adam_learning_rate"] in (0.0001, 0.05)
    assert best.layers[0].units == params["Dense_units"]

    ensemble = hyperparam_model.best_ensemble(nb_ensemble_models=2, model=model, data=data, max_evals=2, voting="soft")
    assert isinstance(ensemble, VotingModel) and len(ensemble) == 2
    predictions = ensemble.predict(x_test)
    assert predictions.shape == (len(x_test),) and set(predictions) <= {0, 1}


def objective(params, x_train, y_train, x_test, y_test):
    if params["x"] > 0.6:
        raise ValueError(f"x={params['x']:.3f} is too large")
    return {"loss": (params["x"] - 0.3) ** 2 + float(x_test.sum()), "status": STATUS_OK}


def test_failed_trials_are_recorded_and_the_search_goes_on(sc):
    hyperparam_model = HyperParamModel(sc, num_workers=2)
    space = {"x": hp.uniform("x", 0, 1)}
    trials = hyperparam_model.compute_trials(objective, data, max_evals=8, space=space, algo="random", seed=0)
    states = [t["state"] for t in trials._dynamic_trials]
    failed = hyperparam_model.failed_trials
    assert len(states) == 8 and 0 < len(failed) < 8
    assert states.count(JOB_STATE_ERROR) == len(failed)
    assert all(f["params"]["x"] > 0.6 for f in failed)
    assert "ValueError" in failed[0]["traceback"] and "is too large" in failed[0]["traceback"]
    assert hyperparam_model.best_params["x"] <= 0.6


def always_fails(params):
    raise RuntimeError("no GPU here")


def test_all_trials_failing_raises_naming_the_first_failure(sc):
    with pytest.raises(TrialsFailedError, match=r"All 2 trials failed. First failure \(trial 0") as info:
        HyperParamModel(sc, num_workers=2).compute_trials(always_fails, max_evals=2, space={"x": hp.uniform("x", 0, 1)})
    assert "RuntimeError" in str(info.value) and "no GPU here" in str(info.value)


def quadratic(params):
    return {"loss": (params["x"] - 0.25) ** 2, "status": STATUS_OK}


@pytest.mark.parametrize("algo", ["tpe", "random"])
def test_seed_makes_the_search_reproducible(algo):
    space = {"x": hp.uniform("x", -1, 1)}
    runs = []
    for seed in (7, 7, 8):
        hyperparam_model = HyperParamModel(None, num_workers=3)  # in-process runner
        trials = hyperparam_model.compute_trials(quadratic, max_evals=7, space=space, algo=algo, seed=seed)
        runs.append([t["misc"]["vals"]["x"][0] for t in trials.trials])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def reports_frozen_heap(params):
    import gc

    return {"loss": params["x"] ** 2, "status": STATUS_OK, "frozen_objects": gc.get_freeze_count()}


def test_trial_workers_exempt_loaded_modules_from_garbage_collection_but_the_driver_does_not(sc):
    """PySpark's daemon collects garbage after every task; the trial workers freeze TF/Keras first."""
    import gc

    space = {"x": hp.uniform("x", -1, 1)}
    trials = HyperParamModel(sc, num_workers=2).compute_trials(
        reports_frozen_heap, max_evals=4, space=space, algo="random", seed=0
    )
    assert all(t["result"]["frozen_objects"] > 50_000 for t in trials.trials)  # Keras is imported
    before = gc.get_freeze_count()
    trials = HyperParamModel(None).compute_trials(reports_frozen_heap, max_evals=2, space=space)
    assert [t["result"]["frozen_objects"] for t in trials.trials] == [before, before]


def ranked_model(x_train, y_train, x_test, y_test):
    import keras

    units = {{choice([1, 2, 3, 4])}}
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
    return {"loss": 10.0 - units, "status": STATUS_OK, "model": net}


def test_best_models_lowest_loss_first():
    hyperparam_model = HyperParamModel(None, num_workers=2)
    models = hyperparam_model.best_models(3, ranked_model, data, max_evals=6, algo="random", seed=1)
    losses = sorted(t["result"]["loss"] for t in hyperparam_model.trials.trials)
    assert [10.0 - m.layers[0].units for m in models] == losses[:3]


def test_history_free_algorithms():
    assert history_free(rand.suggest, 100)
    assert history_free(tpe.suggest, 19) and not history_free(tpe.suggest, 20)
    startup_3 = functools.partial(tpe.suggest, n_startup_jobs=3)
    assert history_free(startup_3, 2) and not history_free(startup_3, 3)
    assert not history_free(anneal.suggest, 0)
    assert not history_free(lambda *args: [], 0)


def slow_quadratic(params):
    import time

    time.sleep(0.02 + 0.3 * abs(params["x"]))  # trials finish in another order than they started
    return {"loss": (params["x"] - 0.25) ** 2, "status": STATUS_OK}


def test_seeded_search_is_reproducible_on_spark_whatever_finishes_first(sc):
    """TPE past its random start-up: each point depends on earlier losses, yet same seed, same run."""
    algo = functools.partial(tpe.suggest, n_startup_jobs=2)
    space = {"x": hp.uniform("x", -1, 1)}

    def run(spark_context, seed=5):
        hyperparam_model = HyperParamModel(spark_context, num_workers=2)
        trials = hyperparam_model.compute_trials(slow_quadratic, max_evals=8, space=space, algo=algo, seed=seed)
        return [(t["tid"], t["misc"]["vals"]["x"][0], t["result"]["loss"]) for t in trials.trials]

    first, second, in_process = run(sc), run(sc), run(None)
    assert first == second == in_process
    assert [tid for tid, _, _ in first] == list(range(8))
    assert run(None, seed=6) != first


class ScriptedRunner:
    """Runs trials on background threads and logs their start and end.

    Trial ``tid`` in ``after`` finishes only once trial ``after[tid]`` has finished (30 s at most).
    """

    def __init__(self, slots, after):
        self.pool = ThreadPoolExecutor(slots)
        self.after = after
        self.events = []
        self.ended = {}
        self.lock = threading.Lock()

    def _ended(self, tid):
        with self.lock:
            return self.ended.setdefault(tid, threading.Event())

    def _log(self, event):
        with self.lock:
            self.events.append(event)

    def submit(self, fn, item):
        tid = item[0]

        def go():
            self._log(("start", tid))
            if tid in self.after:
                self._ended(self.after[tid]).wait(timeout=30)
            outcome = fn(item)
            self._log(("end", tid))
            self._ended(tid).set()
            return outcome

        return self.pool.submit(go)

    def cancel(self):
        pass

    def close(self):
        self.pool.shutdown(wait=True)

    def outcomes(self):
        return {}


def scripted_search(runner, algo, max_evals=6, seed=2):
    class Scripted(HyperParamModel):
        def _make_runner(self):
            return runner

    hyperparam_model = Scripted(None, num_workers=2)
    trials = hyperparam_model.compute_trials(
        quadratic, max_evals=max_evals, space={"x": hp.uniform("x", -1, 1)}, algo=algo, seed=seed
    )
    return [t["misc"]["vals"]["x"][0] for t in trials.trials]


def test_a_slow_trial_holds_up_only_its_own_slot():
    runner = ScriptedRunner(2, {0: 5})  # trial 0 runs until trial 5 is done
    scripted_search(runner, "random")
    events = runner.events
    assert events[-1] == ("end", 0)  # trials 1..5 all ran on the other slot meanwhile
    assert {tid for kind, tid in events[:-1] if kind == "end"} == {1, 2, 3, 4, 5}


def test_history_dependent_suggestions_wait_for_their_history_and_stay_reproducible():
    """Trial i sees the outcomes of trials 0..i-2 (2 slots): trial 2 waits for slow trial 0."""
    algo = functools.partial(tpe.suggest, n_startup_jobs=1)
    runner = ScriptedRunner(2, {0: 1, 3: 4})  # trials 0 and 3 finish after 1 and 4
    points = scripted_search(runner, algo)
    events = runner.events
    for tid in range(2, 6):
        assert events.index(("start", tid)) > events.index(("end", tid - 2))
    assert events.index(("end", 1)) < events.index(("end", 0))  # trials finished out of order
    assert points == scripted_search(ScriptedRunner(2, {}), algo)  # same seed, other timing, same points


def test_one_worker_gives_the_points_of_sequential_fmin():
    from hyperopt import fmin

    algo = functools.partial(tpe.suggest, n_startup_jobs=3)
    space = {"x": hp.uniform("x", -1, 1)}
    hyperparam_model = HyperParamModel(None, num_workers=1)
    ours = hyperparam_model.compute_trials(quadratic, max_evals=8, space=space, algo=algo, seed=4)
    theirs = Trials()
    fmin(
        quadratic, space, algo=algo, max_evals=8, trials=theirs, rstate=np.random.default_rng(4), show_progressbar=False
    )
    assert [t["misc"]["vals"]["x"] for t in ours.trials] == [t["misc"]["vals"]["x"] for t in theirs.trials]


def bounded_quadratic(params):
    if params["x"] > 0.6:
        raise ValueError(f"x={params['x']:.3f} is too large")
    return {"loss": (params["x"] - 0.25) ** 2, "status": STATUS_OK}


def test_runner_trials_plug_into_hyperopt_fmin_through_its_public_api():
    """RunnerTrials is a hyperopt.Trials that hyperopt.fmin drives, as it drives SparkTrials."""
    import pickle

    from hyperopt import fmin

    from elephas.hyperparam.runner_trials import RunnerTrials
    from elephas.hyperparam.scheduler import LocalTrialRunner, ReproducibleAlgo
    from elephas.hyperparam.trial import constant_build, make_trial_fn

    algo = functools.partial(tpe.suggest, n_startup_jobs=3)
    space = {"x": hp.uniform("x", -1, 1)}
    run = make_trial_fn(constant_build(bounded_quadratic), True, None, 4, None)
    trials = RunnerTrials(LocalTrialRunner(), slots=1)
    fmin(
        run,
        space,
        algo=ReproducibleAlgo(algo, 1),
        max_evals=8,
        trials=trials,
        rstate=np.random.default_rng(4),
        return_argmin=False,
        show_progressbar=False,
    )
    theirs = Trials()
    fmin(
        bounded_quadratic,
        space,
        algo=algo,
        max_evals=8,
        trials=theirs,
        rstate=np.random.default_rng(4),
        show_progressbar=False,
        catch_eval_exceptions=True,
    )
    assert [t["misc"]["vals"] for t in trials.all_trials] == [t["misc"]["vals"] for t in theirs._dynamic_trials]
    assert [t["state"] for t in trials.all_trials] == [t["state"] for t in theirs._dynamic_trials]
    assert [t["result"].get("loss") for t in trials.trials] == [t["result"].get("loss") for t in theirs.trials]
    copy = pickle.loads(pickle.dumps(trials))  # the documents travel, the runner stays behind
    assert [t["tid"] for t in copy.all_trials] == list(range(8)) and copy.losses() == trials.losses()
    with pytest.raises(ValueError, match="Expected a fresh RunnerTrials"):
        fmin(run, space, algo=ReproducibleAlgo(algo, 1), max_evals=8, trials=trials)
    with pytest.raises(ValueError, match=r"Expected none of .* Received: \['timeout'\]"):
        fmin(run, space, algo=algo, max_evals=2, trials=RunnerTrials(LocalTrialRunner(), 1), timeout=5)


def test_the_search_uses_no_private_hyperopt_attribute():
    """The first hyperopt release that renames a private attribute must not break the search."""
    import ast
    from pathlib import Path

    import elephas.hyperparam

    hyperopt_private = {"_dynamic_trials", "_ids", "_trials", "_exp_key", "_fmin_cancelled", "_spark"}
    for path in Path(elephas.hyperparam.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in hyperopt_private, f"{path.name}:{node.lineno} uses {node.attr}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hyperopt"):
                names = {alias.name for alias in node.names}
                assert not names & {"Domain", "FMinIter"}, f"{path.name}:{node.lineno} imports {names}"
                assert not any(n.startswith("_") for n in names), f"{path.name}:{node.lineno} imports {names}"


def test_a_classic_spark_session_stands_for_its_spark_context(spark, sc):
    hyperparam_model = HyperParamModel(spark, num_workers=2)
    assert hyperparam_model.sc is sc and not hyperparam_model.connect
    trials = hyperparam_model.compute_trials(quadratic, max_evals=2, space={"x": hp.uniform("x", -1, 1)}, seed=0)
    assert [t["tid"] for t in trials.trials] == [0, 1]
