"""Hyper-parameter search and VotingModel on a Spark Connect session (no SparkContext, RDD or broadcast)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conftest import make_blobs, make_dense_model
from hyperopt import STATUS_OK, Trials, hp, tpe
from hyperopt.base import JOB_STATE_ERROR
from pyspark.ml.linalg import Vectors

from elephas.hyperparam import HyperParamModel, VotingModel
from elephas.hyperparam.distributions import choice, uniform  # noqa: F401 - as users import them


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).astype("float32")
    labels = (x[:, 0] + x[:, 1] > 0).astype("int64")
    y = np.eye(2, dtype="float32")[labels]
    return x[:64], y[:64], x[64:], y[64:]


def model(x_train, y_train, x_test, y_test):
    from keras.layers import Dense
    from keras.models import Sequential
    from keras.optimizers import Adam

    model = Sequential()
    model.add(Dense({{choice([2, 16])}}, activation="relu", input_shape=(4,)))
    model.add(Dense(2, activation="softmax"))
    model.compile(
        loss="categorical_crossentropy", metrics=["accuracy"], optimizer=Adam(learning_rate={{choice([0.001, 0.05])}})
    )
    history = model.fit(x_train, y_train, batch_size=16, epochs=2, verbose=0)
    score, acc = model.evaluate(x_test, y_test, verbose=0)
    return {"loss": score, "status": STATUS_OK, "model": model, "history": history, "accuracy": np.float32(acc)}


def quadratic_failing_above(params):
    if params["x"] > 0.7:
        raise ValueError(f"x={params['x']:.3f} is too large")
    return {"loss": (params["x"] - 0.25) ** 2, "status": STATUS_OK}


def test_seeded_search_on_connect_gives_the_points_and_losses_of_the_in_process_search(spark):
    """TPE past its start-up (points depend on earlier losses); failures recorded; same seed, same run."""
    algo = functools.partial(tpe.suggest, n_startup_jobs=2)
    space = {"x": hp.uniform("x", -1, 1)}

    def run(session):
        hyperparam_model = HyperParamModel(session, num_workers=2)
        trials = hyperparam_model.compute_trials(quadratic_failing_above, max_evals=6, space=space, algo=algo, seed=3)
        points = [(t["tid"], t["misc"]["vals"]["x"][0], t["state"]) for t in trials.all_trials]
        return hyperparam_model, points

    on_connect, connect_points = run(spark)
    in_process, local_points = run(None)
    assert connect_points == local_points
    assert [tid for tid, _, _ in connect_points] == list(range(6))
    assert on_connect.best_loss == in_process.best_loss and on_connect.best_params == in_process.best_params
    failed = on_connect.failed_trials
    assert [f["tid"] for f in failed] == [tid for tid, x, state in connect_points if state == JOB_STATE_ERROR]
    assert all(f["params"]["x"] > 0.7 and "is too large" in f["traceback"] for f in failed)


def sleepy(params):
    import time

    started = time.time()
    time.sleep(3.0)
    return {"loss": params["x"], "status": STATUS_OK, "started": started, "ended": time.time()}


def test_num_workers_trials_run_at_once_on_connect(spark):
    trials = HyperParamModel(spark, num_workers=2).compute_trials(
        sleepy, max_evals=2, space={"x": hp.uniform("x", 0, 1)}, algo="random", seed=0
    )
    (a_start, a_end), (b_start, b_end) = [(t["result"]["started"], t["result"]["ended"]) for t in trials.trials]
    assert a_start < b_end and b_start < a_end  # the two trial jobs overlapped


def test_minimize_on_connect_returns_a_usable_best_model_close_to_the_in_process_search(spark):
    connect_model = HyperParamModel(spark, num_workers=2)
    best = connect_model.minimize(model=model, data=data, max_evals=4, seed=5)
    trials = connect_model.trials
    assert isinstance(trials, Trials) and len(trials.trials) == 4
    losses = sorted(t["result"]["loss"] for t in trials.trials)
    assert connect_model.best_loss == losses[0]
    _, _, x_test, y_test = data()
    # the returned model carries the trained weights: it reproduces the best trial's loss
    assert best.evaluate(x_test, y_test, verbose=0)[0] == pytest.approx(losses[0], rel=1e-5)
    assert best.layers[0].units == connect_model.best_params["Dense_units"]
    result = trials.best_trial["result"]
    assert set(result["history"]) == {"loss", "accuracy"} and len(result["history"]["loss"]) == 2
    assert isinstance(result["accuracy"], float) and 0.0 <= result["accuracy"] <= 1.0

    local_model = HyperParamModel(None, num_workers=2)
    local_model.minimize(model=model, data=data, max_evals=4, seed=5)
    assert connect_model.best_params == local_model.best_params
    assert connect_model.best_loss == pytest.approx(local_model.best_loss, rel=1e-3)


@pytest.fixture(scope="module")
def members():
    models = [make_dense_model(seed=seed) for seed in (1, 2, 3)]
    return models


@pytest.fixture(scope="module")
def blobs_frame(spark):
    x, _ = make_blobs(n=50, input_dim=4, classes=3, seed=4)
    rows = [(i, Vectors.dense(x[i].tolist())) for i in range(len(x))]
    return x, spark.createDataFrame(rows, ["id", "features"]).repartition(2).orderBy("id")


def test_voting_model_on_a_connect_dataframe_predicts_like_its_members(members, blobs_frame):
    x, frame = blobs_frame
    outputs = [m.predict(x, verbose=0) for m in members]
    weights = [2.0, 1.0, 1.0]

    soft = VotingModel(members, voting="soft", weights=weights)
    mean = np.average(np.stack(outputs), axis=0, weights=weights)
    np.testing.assert_allclose(soft.predict_proba(frame), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(soft.predict(frame), mean.argmax(axis=1))

    hard = VotingModel(members, voting="hard")
    tally = np.zeros_like(outputs[0])
    for out in outputs:
        tally[np.arange(len(x)), out.argmax(axis=1)] += 1
    voted = hard.predict(frame)
    np.testing.assert_array_equal(voted, tally.argmax(axis=1))
    np.testing.assert_array_equal(voted, hard.predict(x))


def too_much_data():
    return (np.empty(121 << 20, dtype=np.uint8),)


def uses_data(params, blob):
    return {"loss": float(params["x"]), "status": STATUS_OK}


def test_data_too_large_for_the_trial_closure_is_refused_before_any_job(spark):
    with pytest.raises(ValueError, match=r"Expected data\(\) to return at most 120 MiB .* Received: 121.0 MiB"):
        HyperParamModel(spark).compute_trials(uses_data, too_much_data, max_evals=2, space={"x": hp.uniform("x", 0, 1)})
