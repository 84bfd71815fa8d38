"""SparkModel against plain Keras on local[2]: training throughput, accuracy and predict speed.

Tasks (``--task``):
  a  60,000 x 784 standard-normal features, 10 classes from a fixed random linear teacher; MLP
     128-128-10 with dropout; SGD lr 0.05; batch 64; 3 epochs (``--task a`` = ``--features normal``)
  b  the same with uniform [0, 1) features (the default task of earlier versions)
  c  4,000 x 20 features, 3 classes from a random linear teacher; MLP 32-32; SGD 0.1; batch 32; 5 epochs
The default configurations (``--modes defaults``, the default) are ``SparkModel(model)``,
``SparkModel(model, mode='asynchronous')`` and ``SparkModel(model, mode='hogwild')`` with no other
argument. The ideal is 2 x the samples/s of single-thread Keras (measured in a subprocess with one
TensorFlow thread). Every Spark configuration first runs
a short warm-up fit so the Python workers have TensorFlow loaded and the model cached, as in a
long-running session. Every configuration is trained from ``--seeds`` model initialisations (plain
Keras's own test accuracy on this task spans several points between seeds), interleaved: for each
seed plain Keras first, then every configuration, so that a ratio compares fits run minutes apart
(the machine's speed drifts within a run). Prints mean samples/s, mean test accuracy with its range,
and ratios measured in this one run.

    python benchmarks/bench_core.py --task a              # the no-knob defaults on task a, + predict
    python benchmarks/bench_core.py --task c --no-predict # the small task
    python benchmarks/bench_core.py --modes all           # also explicit windows and settings
    python benchmarks/bench_core.py --rows 6000 --predict-rows 10000   # quick
    python benchmarks/bench_core.py --backend jax --task c    # the same ratios on the JAX backend

``--backend`` (tensorflow, jax or torch) sets ``KERAS_BACKEND`` before Keras is imported; the
executors get the same backend through the engine's ``WorkerRuntime``, and the single-thread
reference runs with that backend's one-thread settings.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # keep all traffic on loopback
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
BACKENDS = ("tensorflow", "jax", "torch")


def _backend_argument(argv: list[str]) -> str | None:
    """The value of ``--backend`` in ``argv``, read before Keras is imported (it fixes the backend)."""
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--backend="):
            return arg.split("=", 1)[1]
    return None


if _backend_argument(sys.argv[1:]) in BACKENDS:
    os.environ["KERAS_BACKEND"] = _backend_argument(sys.argv[1:])

import keras  # noqa: E402
import numpy as np  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from elephas.spark_model import SparkModel  # noqa: E402
from elephas.utils.rdd_utils import to_simple_rdd  # noqa: E402

TASKS = {  # features, classes, hidden, lr, batch, epochs, dropout
    "a": dict(features=784, classes=10, hidden=128, lr=0.05, batch=64, epochs=3, dropout=0.2, dist="normal"),
    "b": dict(features=784, classes=10, hidden=128, lr=0.05, batch=64, epochs=3, dropout=0.2, dist="uniform"),
    "c": dict(
        features=20,
        classes=3,
        hidden=32,
        lr=0.1,
        batch=32,
        epochs=5,
        dropout=0.0,
        dist="normal",
        rows=4000,
        test_rows=1000,
    ),
}
TASK = dict(TASKS["b"])
EPOCHS, BATCH, LR = TASK["epochs"], TASK["batch"], TASK["lr"]


def use_task(name: str) -> None:
    """Make ``name`` the task that :func:`data` and :func:`model` build."""
    global EPOCHS, BATCH, LR
    TASK.clear()
    TASK.update(TASKS[name])
    EPOCHS, BATCH, LR = TASK["epochs"], TASK["batch"], TASK["lr"]


def data(rows: int, seed: int = 0, features: str | None = None):
    """Rows labelled by a fixed random linear teacher (the current task's shapes).

    ``features='uniform'``: pixel-like values in [0, 1) (not centred: an ill-conditioned problem
    for SGD, far from converged after 3 epochs); ``'normal'``: standard normal features.
    """
    features = features or TASK["dist"]
    dim, classes, test = TASK["features"], TASK["classes"], TASK.get("test_rows", 10000)
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(dim, classes)).astype("float32")
    if features == "uniform":
        x = rng.random((rows + test, dim), dtype=np.float32)
        logits = (x - 0.5) @ teacher
    else:
        x = rng.standard_normal((rows + test, dim), dtype=np.float32)
        logits = x @ teacher
    y = keras.utils.to_categorical(np.argmax(logits, axis=1), classes)
    return x[:rows], y[:rows], x[rows:], y[rows:]


def model(seed: int = 1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((TASK["features"],))]
    for _ in range(2):
        layers.append(keras.layers.Dense(TASK["hidden"], activation="relu"))
        if TASK["dropout"]:
            layers.append(keras.layers.Dropout(TASK["dropout"]))
    layers.append(keras.layers.Dense(TASK["classes"], activation="softmax"))
    m = keras.Sequential(layers)
    m.compile(keras.optimizers.SGD(LR), "categorical_crossentropy", metrics=["accuracy"])
    return m


def single_thread_keras(task: str, rows: int) -> float:
    """Samples/s of plain Keras with one TensorFlow thread (a subprocess: threads are fixed per process)."""
    code = (
        f"import sys, time; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
        f"import bench_core as b; b.use_task({task!r}); x, y, _, _ = b.data({rows}); m = b.model(1); "
        "m.fit(x[:2000], y[:2000], batch_size=b.BATCH, epochs=1, verbose=0); t = time.perf_counter(); "
        "m.fit(x, y, batch_size=b.BATCH, epochs=1, verbose=0); print(len(x) / (time.perf_counter() - t))"
    )
    env = dict(
        os.environ,
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", choices=sorted(TASKS), default="b", help="a, b or c (see the module docstring)")
    p.add_argument(
        "--backend", choices=BACKENDS, default=None, help="Keras backend (default: KERAS_BACKEND, else tensorflow)"
    )
    p.add_argument("--rows", type=int, default=None, help="training rows (default: the task's)")
    p.add_argument("--predict-rows", type=int, default=100000)
    p.add_argument(
        "--modes",
        default="defaults",
        help="'defaults' (no knobs), 'sync', 'all', or 'variants' (the defaults next to the default "
        "window with reducer='ring', the socket transport, and background_push)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="model initialisations per configuration; accuracy on this task varies by several "
        "points between seeds even for plain Keras, so means are compared",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="run only the configurations whose label matches one of these regular "
        "expressions in full (e.g. 'hogwild freq=batch' or 'hogwild.*'); plain "
        "Keras always runs",
    )
    p.add_argument("--no-predict", action="store_true", help="skip the distributed predict part")
    p.add_argument(
        "--features",
        choices=["uniform", "normal"],
        default=None,
        help="feature distribution: uniform [0, 1) or standard normal (default: the task's)",
    )
    args = p.parse_args()
    use_task(args.task)
    args.rows = args.rows or TASK.get("rows", 60000)
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    x, y, xt, yt = data(args.rows, features=args.features)

    seeds = list(range(1, args.seeds + 1))

    def keras_run(seed: int) -> tuple[float, float]:
        m = model(seed)
        t = time.perf_counter()
        m.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0)
        return EPOCHS * len(x) / (time.perf_counter() - t), float(m.evaluate(xt, yt, verbose=0)[1])

    keras_run(seeds[0])  # warm-up: the first fit of a process also pays TensorFlow's start-up

    ideal = 2 * single_thread_keras(args.task, args.rows)
    rdd = to_simple_rdd(sc, x, y, num_slices=2).cache()
    rdd.count()
    defaults = [(mode, None, {}) for mode in ("synchronous", "asynchronous", "hogwild")]
    configs = (
        defaults
        if args.modes == "defaults"
        else defaults
        + [
            ("synchronous", "epoch", {}),
            # the accuracy setting: 5 averaging rounds per epoch (100 batches of each of the two
            # partitions) with server-side Nesterov momentum 0.8 on the averaged deltas
            ("synchronous", 100, {"server_optimizer": "nesterov", "server_momentum": 0.8}),
        ]
    )
    if args.modes == "variants":
        configs = defaults + [
            ("synchronous", None, {"reducer": "ring"}),
            ("asynchronous", None, {"parameter_server_mode": "socket"}),
            ("asynchronous", None, {"background_push": True}),
            ("hogwild", None, {"parameter_server_mode": "socket", "background_push": True}),
        ]
    if args.modes == "all":
        configs += [(mode, f, {}) for mode in ("asynchronous", "hogwild") for f in ("epoch", "batch")]
        configs += [
            (mode, "batch", {"parameter_server_mode": "socket", "background_push": True})
            for mode in ("asynchronous", "hogwild")
        ]

    def label(mode, freq, extra):
        if freq is None and not extra:
            return f"SparkModel(model, mode={mode!r})  (no knobs)"
        return f"{mode} freq={freq}" + (f" {extra}" if extra else "")

    if args.only:
        configs = [c for c in configs if any(re.fullmatch(o, label(*c)) for o in args.only)]
    for mode, freq, extra in configs:
        warm = SparkModel(model(), mode=mode, **(dict(extra) if freq is None else dict(extra, frequency=freq)))
        warm.fit(to_simple_rdd(sc, x[:2000], y[:2000], 2), epochs=1, batch_size=BATCH)

    # Interleaved: for each seed, plain Keras and then every configuration, so each ratio compares
    # fits minutes apart at most (this machine's speed drifts by tens of percent within a run).
    keras_runs: list[tuple[float, float]] = []
    runs: dict[str, list[tuple[float, float]]] = {label(*c): [] for c in configs}
    for seed in seeds:
        keras_runs.append(keras_run(seed))
        for mode, freq, extra in configs:
            kwargs = dict(extra) if freq is None else dict(extra, frequency=freq)
            sm = SparkModel(model(seed), mode=mode, **kwargs)
            t = time.perf_counter()
            sm.fit(rdd, epochs=EPOCHS, batch_size=BATCH)
            elapsed = time.perf_counter() - t
            runs[label(mode, freq, extra)].append(
                (EPOCHS * len(x) / elapsed, float(sm.master_network.evaluate(xt, yt, verbose=0)[1]))
            )
    rows = [("plain Keras", keras_runs), *runs.items()]

    keras_sps = float(np.mean([r[0] for r in keras_runs]))
    keras_acc = float(np.mean([r[1] for r in keras_runs]))
    print(
        f"\nbackend {keras.backend.backend()}, task {args.task}: {args.rows} rows; means over model seeds "
        f"{seeds} (accuracy range in brackets)"
    )
    print(f"ideal (2 x single-thread Keras): {ideal:.0f} samples/s = {ideal / keras_sps:.2f} x plain Keras")
    print(
        "(Δ points: mean accuracy minus plain Keras's; s.e.: standard error of the per-seed "
        "differences, each configuration and Keras starting from the same initialisation)"
    )
    print(
        f"{'configuration':58s} {'samples/s':>10s} {'x Keras':>8s} {'test acc':>9s} {'[min, max]':>16s} "
        f"{'Δ points':>9s} {'s.e.':>5s}"
    )
    for name, runs in rows:
        sps, accs = float(np.mean([r[0] for r in runs])), [r[1] for r in runs]
        acc = float(np.mean(accs))
        diffs = 100 * (np.array(accs) - np.array([r[1] for r in keras_runs]))
        se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
        print(
            f"{name:58s} {sps:10.0f} {sps / keras_sps:8.2f} {acc:9.4f} "
            f"[{min(accs):.3f}, {max(accs):.3f}] {100 * (acc - keras_acc):+9.2f} {se:5.2f}"
        )
    if args.no_predict:
        spark.stop()
        return

    # distributed predict over rows already in Spark vs single-process predict
    xp = np.random.default_rng(3).random((args.predict_rows, TASK["features"]), dtype=np.float32)
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
    assert out.shape == (args.predict_rows, TASK["classes"])
    print(
        f"\npredict rows/s: single-process {single:.0f}, distributed (cached RDD) {dist:.0f}, ratio {dist / single:.2f}"
    )
    spark.stop()


if __name__ == "__main__":
    main()
