"""Spark Connect against classic Spark: the same fit and the same transform on both kinds of session.

In one run, on a classic ``local[2]`` session and on a local Spark Connect session
(``SparkSession.builder.remote("local[2]")``):

* fit: ``SparkModel(model).fit(df, epochs=3, batch_size=64, nb_classes=10)`` (the synchronous default,
  no other argument) on task a of ``bench_core.py`` (60,000 x 784 standard-normal features, 10 classes
  from a random linear teacher, MLP 128-128-10 with dropout, SGD 0.05), the training DataFrame cached
  and counted before the clock starts; test accuracy on task a's 10,000 held-out rows;
* transform: ``ElephasTransformer.transform`` of 200,000 random 784-float rows generated and cached on
  the executors, forced by counting the rows whose prediction is >= 0, ``--repeat`` times (median).

The classic side also times the fit with ``reducer='ring'`` (``--classic-reducers``): a Connect session
always reduces rounds with the ring among the tasks, a classic one by default with the driver's parameter
server, so that row separates the reducer's share of a difference from the session's.

Each side first runs an untimed 2,000-row fit and transform, so that its Python workers have imported
TensorFlow (as in a long-running session). A classic session and a local Connect server cannot live in
one process, so each side runs in a subprocess of this script and reports JSON; this process prints
both and the ratios (Connect / classic throughput; the target is >= 0.8 for fit and for transform, and
test accuracy within 0.5 point).

Usage::

    python benchmarks/bench_connect.py                      # full size
    python benchmarks/bench_connect.py --rows 6000 --predict-rows 20000 --repeat 1   # quick
    python benchmarks/bench_connect.py --seeds 1 2 3        # fit from three model seeds on each side

The local Connect server listens on port 15002: the Connect side waits (``--port-wait`` seconds) while
another local Connect server holds it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # keep all traffic on loopback
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

SIDES = ("classic", "connect")
CONNECT_PORT = 15002
CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "4g",
    "spark.sql.shuffle.partitions": "2",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.python.worker.reuse": "true",
}


def session(side: str):
    """A ``local[2]`` session of the given kind, with the same configuration on both."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]") if side == "classic" else SparkSession.builder.remote("local[2]")
    for key, value in CONF.items():
        builder = builder.config(key, value)
    spark = builder.appName(f"bench_connect-{side}").getOrCreate()
    if side == "classic":
        spark.sparkContext.setLogLevel("ERROR")
    return spark


def training_frame(spark, x, y):
    """A cached DataFrame of ``array<float>`` features and a class-index label, in 2 partitions."""
    import numpy as np
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1))
    table = pa.table(
        {
            "features": pa.FixedSizeListArray.from_arrays(flat, x.shape[1]).cast(pa.list_(pa.float32())),
            "label": pa.array(np.argmax(y, axis=1).astype(np.float64)),
        }
    )
    df = spark.createDataFrame(table.to_pandas()).repartition(2).cache()
    df.count()
    return df


def count_positive(transformed) -> int:
    """Rows whose prediction is >= 0 (all of them): forces the model to run on every row."""
    from pyspark.sql import functions as F

    return int(transformed.filter(F.col("prediction") >= 0).count())


def run_side(side: str, args: argparse.Namespace) -> dict:
    """Time the fit and the transform on one kind of session; return the measurements."""
    sys.path.insert(0, HERE)
    import bench_core
    import bench_ml
    import numpy as np

    from elephas.ml_model import ElephasTransformer
    from elephas.spark_model import SparkModel

    bench_core.use_task("a")
    x, y, xt, yt = bench_core.data(args.rows)
    spark = session(side)
    try:
        start = time.perf_counter()
        small = training_frame(spark, x[:2000], y[:2000])
        warm = SparkModel(bench_core.model(99))
        warm.fit(small, epochs=1, batch_size=bench_core.BATCH, nb_classes=10)
        warm_transformer = ElephasTransformer(warm.master_network, categorical=True, inference_batch_size=1024)
        count_positive(warm_transformer.transform(small.select("features")))
        small.unpersist()
        warmup = time.perf_counter() - start

        df = training_frame(spark, x, y)
        fits, extra = [], []
        reducers = [None] + ([r for r in args.classic_reducers if r != "server"] if side == "classic" else [])
        for reducer in reducers:
            for seed in args.seeds:
                spark_model = SparkModel(bench_core.model(seed), **({"reducer": reducer} if reducer else {}))
                start = time.perf_counter()
                spark_model.fit(df, epochs=bench_core.EPOCHS, batch_size=bench_core.BATCH, nb_classes=10)
                seconds = time.perf_counter() - start
                accuracy = float(spark_model.master_network.evaluate(xt, yt, verbose=0)[1])
                run = {"seed": seed, "seconds": seconds, "accuracy": accuracy, "reducer": reducer}
                (extra if reducer else fits).append(run)
                if reducer is None:
                    model = spark_model.master_network
        df.unpersist()

        frame = bench_ml.generated_frame(spark, args.predict_rows, 2, seed=99)
        transformer = ElephasTransformer(model, categorical=True, inference_batch_size=1024)
        start = time.perf_counter()
        assert count_positive(transformer.transform(frame)) == args.predict_rows
        first = time.perf_counter() - start
        transforms = []
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            assert count_positive(transformer.transform(frame)) == args.predict_rows
            transforms.append(time.perf_counter() - start)
        frame.unpersist()
    finally:
        spark.stop()
    return {
        "side": side,
        "rows": args.rows,
        "epochs": bench_core.EPOCHS,
        "predict_rows": args.predict_rows,
        "warmup_s": warmup,
        "fits": fits,
        "reducer_fits": extra,
        "first_transform_s": first,
        "transforms_s": transforms,
        "load": list(os.getloadavg()),
        "accuracy_mean": float(np.mean([f["accuracy"] for f in fits])),
    }


def port_free(port: int) -> bool:
    """Whether nothing listens on ``port`` of this machine."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def run_subprocess(side: str, args: argparse.Namespace) -> dict:
    """Run one side in a fresh interpreter and read its JSON."""
    if side == "connect":
        deadline = time.monotonic() + args.port_wait
        while not port_free(CONNECT_PORT) and time.monotonic() < deadline:
            time.sleep(5)
        if not port_free(CONNECT_PORT):
            raise RuntimeError(
                f"Expected port {CONNECT_PORT} free for the local Spark Connect server, received a listener there "
                f"for {args.port_wait:.0f} s: stop the other local Connect server first."
            )
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--side",
        side,
        "--rows",
        str(args.rows),
        "--predict-rows",
        str(args.predict_rows),
        "--repeat",
        str(args.repeat),
        "--seeds",
        *map(str, args.seeds),
        "--classic-reducers",
        *args.classic_reducers,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise RuntimeError(f"The {side} side failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len("RESULT ") :])


def report(results: dict[str, dict]) -> None:
    """Print both sides and the Connect / classic ratios."""
    rates = {}
    classic = results["classic"]
    for reducer in sorted({f["reducer"] for f in classic.get("reducer_fits", [])}):
        runs = [f for f in classic["reducer_fits"] if f["reducer"] == reducer]
        seconds = statistics.median(f["seconds"] for f in runs)
        accuracy = sum(f["accuracy"] for f in runs) / len(runs)
        print(
            f"classic, reducer={reducer!r}: fit {seconds:7.2f} s = "
            f"{classic['rows'] * classic['epochs'] / seconds:8.0f} samples/s  test accuracy {accuracy:.4f}"
        )
    for side in SIDES:
        r = results[side]
        fit_s = statistics.median(f["seconds"] for f in r["fits"])
        transform_s = statistics.median(r["transforms_s"])
        rates[side] = (r["rows"] * r["epochs"] / fit_s, r["predict_rows"] / transform_s, r["accuracy_mean"])
        accs = ", ".join(f"{f['accuracy']:.4f}" for f in r["fits"])
        print(
            f"{side:8s} fit {fit_s:7.2f} s = {rates[side][0]:8.0f} samples/s  test accuracy {r['accuracy_mean']:.4f} "
            f"[{accs}] | transform {transform_s:6.2f} s = {rates[side][1]:8.0f} rows/s (first "
            f"{r['first_transform_s']:.2f} s) | load {r['load'][0]:.2f} {r['load'][1]:.2f} {r['load'][2]:.2f}"
        )
    fit_ratio = rates["connect"][0] / rates["classic"][0]
    transform_ratio = rates["connect"][1] / rates["classic"][1]
    points = 100 * (rates["connect"][2] - rates["classic"][2])
    print(
        f"Connect / classic: fit {fit_ratio:.2f} x, transform {transform_ratio:.2f} x (target >= 0.8); "
        f"accuracy {points:+.2f} points (target within 0.5)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000, help="training rows")
    parser.add_argument("--predict-rows", type=int, default=200_000, help="rows to transform")
    parser.add_argument("--repeat", type=int, default=3, help="timed transforms per side (median)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="model seeds of the timed fits")
    parser.add_argument(
        "--classic-reducers",
        nargs="*",
        default=["ring"],
        help="reducers also timed on the classic side besides its default (the parameter server)",
    )
    parser.add_argument(
        "--port-wait", type=float, default=900.0, help="seconds to wait for another local Connect server to stop"
    )
    parser.add_argument("--side", choices=SIDES, default=None, help="run one side only and print its JSON")
    args = parser.parse_args(argv)
    if args.side:
        print("RESULT " + json.dumps(run_side(args.side, args)), flush=True)
        return 0
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; cpus {os.cpu_count()}")
    results = {}
    for side in SIDES:
        results[side] = run_subprocess(side, args)
        print(f"{side}: {json.dumps(results[side])}", flush=True)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
