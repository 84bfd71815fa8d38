"""SparkModel against plain Keras on local[2]: training throughput, accuracy and predict speed.

Workload (the issue's): 60,000 x 784 float32 rows, 10 classes from a fixed random linear teacher;
MLP 128-128-10 with dropout; SGD lr 0.05; batch 64; 3 epochs. The synchronous accuracy setting is
``frequency=100, server_optimizer='nesterov', server_momentum=0.8``. Every Spark configuration first runs
a short warm-up fit so the Python workers have TensorFlow loaded and the model cached, as in a
long-running session. Every configuration is trained from ``--seeds`` model initialisations (plain
Keras's own test accuracy on this task spans several points between seeds); prints mean samples/s,
mean test accuracy with its range, and ratios measured in this one run.

    python benchmarks/bench_core.py                       # synchronous + predict
    python benchmarks/bench_core.py --modes all           # also asynchronous/hogwild, epoch/batch
    python benchmarks/bench_core.py --rows 6000 --predict-rows 10000   # quick
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # keep all traffic on loopback
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from elephas.spark_model import SparkModel  # noqa: E402
from elephas.utils.rdd_utils import to_simple_rdd  # noqa: E402

EPOCHS, BATCH, LR = 3, 64, 0.05


def data(rows: int, seed: int = 0, features: str = "uniform"):
    """Rows labelled by a fixed random linear teacher.

    ``features='uniform'``: pixel-like values in [0, 1) (not centred: an ill-conditioned problem
    for SGD, far from converged after 3 epochs); ``'normal'``: standard normal features.
    """
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(784, 10)).astype("float32")
    if features == "uniform":
        x = rng.random((rows + 10000, 784), dtype=np.float32)
        logits = (x - 0.5) @ teacher
    else:
        x = rng.standard_normal((rows + 10000, 784), dtype=np.float32)
        logits = x @ teacher
    y = keras.utils.to_categorical(np.argmax(logits, axis=1), 10)
    return x[:rows], y[:rows], x[rows:], y[rows:]


def model(seed: int = 1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((784,)), keras.layers.Dense(128, activation="relu"),
                          keras.layers.Dropout(0.2), keras.layers.Dense(128, activation="relu"),
                          keras.layers.Dropout(0.2), keras.layers.Dense(10, activation="softmax")])
    m.compile(keras.optimizers.SGD(LR), "categorical_crossentropy", metrics=["accuracy"])
    return m


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=60000)
    p.add_argument("--predict-rows", type=int, default=100000)
    p.add_argument("--modes", default="sync", help="'sync' or 'all'")
    p.add_argument("--seeds", type=int, default=3,
                   help="model initialisations per configuration; accuracy on this task varies by several "
                        "points between seeds even for plain Keras, so means are compared")
    p.add_argument("--only", nargs="+", default=None,
                   help="run only the configurations whose label matches one of these regular "
                        "expressions in full (e.g. 'hogwild freq=batch' or 'hogwild.*'); plain "
                        "Keras always runs")
    p.add_argument("--no-predict", action="store_true", help="skip the distributed predict part")
    p.add_argument("--features", choices=["uniform", "normal"], default="uniform",
                   help="feature distribution: uniform [0, 1) (default) or standard normal")
    args = p.parse_args()
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "4g").getOrCreate())
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    x, y, xt, yt = data(args.rows, features=args.features)
    rows = []

    seeds = list(range(1, args.seeds + 1))
    keras_runs = []
    for seed in seeds:
        m = model(seed)
        t = time.perf_counter()
        m.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0)
        keras_runs.append((EPOCHS * len(x) / (time.perf_counter() - t), m.evaluate(xt, yt, verbose=0)[1]))
    rows.append(("plain Keras", keras_runs))

    rdd = to_simple_rdd(sc, x, y, num_slices=2).cache()
    rdd.count()
    configs = [("synchronous", "epoch", {}),
               # the accuracy setting: 5 averaging rounds per epoch (100 batches of each of the two
               # partitions) with server-side Nesterov momentum 0.8 on the averaged deltas
               ("synchronous", 100, {"server_optimizer": "nesterov", "server_momentum": 0.8})]
    if args.modes == "all":
        configs += [(mode, f, {}) for mode in ("asynchronous", "hogwild") for f in ("epoch", "batch")]
        configs += [(mode, "batch", {"parameter_server_mode": "socket", "background_push": True})
                    for mode in ("asynchronous", "hogwild")]
    def label(mode, freq, extra):
        return f"{mode} freq={freq}" + (f" {extra}" if extra else "")

    if args.only:
        configs = [c for c in configs if any(re.fullmatch(o, label(*c)) for o in args.only)]
    for mode, freq, extra in configs:
        warm = SparkModel(model(), mode=mode, frequency=freq, **extra)
        warm.fit(to_simple_rdd(sc, x[:2000], y[:2000], 2), epochs=1, batch_size=BATCH)
        runs = []
        for seed in seeds:
            sm = SparkModel(model(seed), mode=mode, frequency=freq, **extra)
            t = time.perf_counter()
            sm.fit(rdd, epochs=EPOCHS, batch_size=BATCH)
            elapsed = time.perf_counter() - t
            runs.append((EPOCHS * len(x) / elapsed, sm.master_network.evaluate(xt, yt, verbose=0)[1]))
        rows.append((label(mode, freq, extra), runs))

    keras_sps = float(np.mean([r[0] for r in keras_runs]))
    keras_acc = float(np.mean([r[1] for r in keras_runs]))
    print(f"\nmeans over model seeds {seeds} (accuracy range in brackets)")
    print("(Δ points: mean accuracy minus plain Keras's; s.e.: standard error of the per-seed "
          "differences, each configuration and Keras starting from the same initialisation)")
    print(f"{'configuration':58s} {'samples/s':>10s} {'x Keras':>8s} {'test acc':>9s} {'[min, max]':>16s} "
          f"{'Δ points':>9s} {'s.e.':>5s}")
    for name, runs in rows:
        sps, accs = float(np.mean([r[0] for r in runs])), [r[1] for r in runs]
        acc = float(np.mean(accs))
        diffs = 100 * (np.array(accs) - np.array([r[1] for r in keras_runs]))
        se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
        print(f"{name:58s} {sps:10.0f} {sps / keras_sps:8.2f} {acc:9.4f} "
              f"[{min(accs):.3f}, {max(accs):.3f}] {100 * (acc - keras_acc):+9.2f} {se:5.2f}")
    if args.no_predict:
        spark.stop()
        return

    # distributed predict over rows already in Spark vs single-process predict
    xp = np.random.default_rng(3).random((args.predict_rows, 784), dtype=np.float32)
    pm = model()
    pm.predict(xp[:1000], verbose=0)
    t = time.perf_counter()
    pm.predict(xp, batch_size=1024, verbose=0)
    single = args.predict_rows / (time.perf_counter() - t)
    prdd = sc.parallelize(list(xp), 2).cache()
    prdd.count()
    sm = SparkModel(pm)
    sm.predict(prdd)  # warm
    t = time.perf_counter()
    out = sm.predict(prdd)
    dist = args.predict_rows / (time.perf_counter() - t)
    assert out.shape == (args.predict_rows, 10)
    print(f"\npredict rows/s: single-process {single:.0f}, distributed (cached RDD) {dist:.0f}, "
          f"ratio {dist / single:.2f}")
    spark.stop()


if __name__ == "__main__":
    main()
