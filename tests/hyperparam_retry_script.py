"""Driver program for the slot-retry test: a search on ``local[2,3]`` (Spark retries failed tasks).

Usage: python hyperparam_retry_script.py WORKDIR
The objective kills its Python worker once, in the third trial to start, after that slot task had
reported trials; Spark reruns the task. Prints ``RESULT <json>`` with each trial's id, point, loss,
state and whether its model came back.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def objective(params, workdir):
    import os

    import keras

    started = os.path.join(workdir, "started")
    with open(started, "a") as f:
        f.write("x\n")
    with open(started) as f:
        count = len(f.read().splitlines())
    crashed = os.path.join(workdir, "crashed")
    if count == 3 and not os.path.exists(crashed):
        open(crashed, "w").close()
        os._exit(1)  # the Python worker dies in the middle of a trial
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    return {"loss": (params["x"] - 0.25) ** 2, "status": "ok", "model": net}


def main() -> None:
    import functools

    from hyperopt import hp
    from pyspark.sql import SparkSession

    from elephas.hyperparam import HyperParamModel

    workdir = sys.argv[1]
    spark = (
        SparkSession.builder.master("local[2,3]")
        .appName("elephas-hyperparam-retry")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        hyperparam_model = HyperParamModel(spark.sparkContext, num_workers=2)
        trials = hyperparam_model.compute_trials(
            functools.partial(objective, workdir=workdir),
            max_evals=6,
            space={"x": hp.uniform("x", -1, 1)},
            algo="random",
            seed=3,
        )
        rows = [
            {
                "tid": t["tid"],
                "x": t["misc"]["vals"]["x"][0],
                "state": t["state"],
                "loss": t["result"].get("loss"),
                "model": "model_spec" in t["result"],
            }
            for t in trials.trials
        ]
        print("RESULT " + json.dumps(rows), flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
