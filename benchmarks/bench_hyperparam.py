"""Distributed hyper-parameter search vs sequential hyperopt ``fmin`` on one small task.

16 trials over units / dropout / learning rate of a small MLP on synthetic data:

* elephas: ``HyperParamModel(sc, num_workers=2).compute_trials(...)`` on ``local[2]``;
* baseline: the same search space and objective with plain ``hyperopt.fmin`` in this process.

Run: ``python benchmarks/bench_hyperparam.py [--trials 16] [--workers 2]``. Prints wall times, their
ratio and the best loss of each. Python workers are warmed up (TensorFlow imported) before timing.
With psutil installed it also prints the CPU seconds each search used (driver, JVM and Python
workers together), which, unlike the wall times, do not depend on what else the machine is running.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # keep all traffic on loopback
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import numpy as np  # noqa: E402
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe  # noqa: E402


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 20)).astype("float32")
    w = rng.normal(size=(20, 4))
    labels = (x @ w + 0.5 * rng.normal(size=(2000, 4))).argmax(axis=1)
    y = np.eye(4, dtype="float32")[labels]
    return x[:1600], y[:1600], x[1600:], y[1600:]


def objective(params, x_train, y_train, x_test, y_test):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(int(params["units"]), activation="relu"),
            keras.layers.Dropout(params["dropout"]),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(params["learning_rate"]), loss="categorical_crossentropy")
    model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    loss = model.evaluate(x_test, y_test, verbose=0)
    return {"loss": float(loss), "status": STATUS_OK, "model": model}


SPACE = {
    "units": hp.choice("units", [16, 64, 128]),
    "dropout": hp.uniform("dropout", 0.0, 0.5),
    "learning_rate": hp.loguniform("learning_rate", np.log(1e-4), np.log(3e-2)),
}


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its children (JVM, Python workers); NaN without psutil."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    me = psutil.Process()
    total = 0.0
    for proc in [me] + me.children(recursive=True):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def warm_up(sc, workers: int) -> None:
    def load(_):
        import keras  # noqa: F401

        return 0

    sc.parallelize(range(workers), workers).map(load).collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from pyspark.sql import SparkSession

    from elephas.hyperparam import HyperParamModel

    spark = (
        SparkSession.builder.master(f"local[{args.workers}]")
        .appName("bench-hyperparam")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    load_before = os.getloadavg()[0]
    try:
        warm_up(sc, args.workers)
        import keras  # noqa: F401 - warm the driver too

        cpu = cpu_seconds()
        start = time.perf_counter()
        hpm = HyperParamModel(sc, num_workers=args.workers)
        hpm.compute_trials(objective, data, max_evals=args.trials, space=SPACE, algo="tpe", seed=0)
        t_spark = time.perf_counter() - start
        cpu_spark = cpu_seconds() - cpu

        arrays = data()
        cpu = cpu_seconds()
        start = time.perf_counter()
        trials = Trials()
        fmin(
            lambda p: objective(p, *arrays),
            SPACE,
            algo=tpe.suggest,
            max_evals=args.trials,
            trials=trials,
            rstate=np.random.default_rng(0),
            show_progressbar=False,
        )
        t_seq = time.perf_counter() - start
        cpu_seq = cpu_seconds() - cpu
        best_seq = min(trials.losses())
    finally:
        spark.stop()

    print(
        f"trials: {args.trials}, workers: {args.workers}, load average before/after: "
        f"{load_before:.2f} / {os.getloadavg()[0]:.2f} (1 min)"
    )
    print(f"elephas HyperParamModel : {t_spark:7.1f} s  best loss {hpm.best_loss:.4f}  CPU {cpu_spark:6.1f} s")
    print(f"hyperopt fmin sequential: {t_seq:7.1f} s  best loss {best_seq:.4f}  CPU {cpu_seq:6.1f} s")
    print(f"speed-up: {t_seq / t_spark:.2f}x")


if __name__ == "__main__":
    main()
