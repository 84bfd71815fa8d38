"""Higgs-like dist-keras workflow on synthetic data: every trainer vs SingleTrainer.

30 float features, a binary label from a fixed nonlinear teacher, MLP 500-500-2 with dropout,
adagrad, batch 32, 1 epoch, 2 workers. Prints wall time, test accuracy and F1 of each trainer,
and their ratios to SingleTrainer.

Usage:
    python benchmarks/bench_distkeras.py --rows 200000
    python benchmarks/bench_distkeras.py --rows 4000 --trainers single,downpour
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # keep all traffic on loopback
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import numpy as np  # noqa: E402

logger = logging.getLogger("bench_distkeras")


def teacher_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features ~ N(0, 1) (with a few skewed columns, like Higgs), label from a fixed nonlinear teacher."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 30))
    x[:, :5] = np.exp(x[:, :5] / 2) * 50  # skewed "mass-like" columns, left unscaled for StandardScaler
    t = np.random.default_rng(1234)
    w1, w2 = t.normal(size=(30, 16)), t.normal(size=16)
    z = np.tanh(((x - x.mean(0)) / x.std(0)) @ w1 / np.sqrt(30)) @ w2
    y = (z + 0.3 * rng.normal(size=rows) > np.median(z)).astype(int)
    return x.astype("float64"), np.where(y == 1, "s", "b")


def build_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((30,)),
            keras.layers.Dense(500, activation="relu"),
            keras.layers.Dropout(0.4),
            keras.layers.Dense(500, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trainers", default="single,averaging,downpour,adag,aeasgd,eamsgd,dynsgd")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler
    from pyspark.sql import SparkSession

    from elephas import trainers as T
    from elephas.ml.transformers import LabelIndexTransformer, ModelPredictor, OneHotTransformer

    spark = (
        SparkSession.builder.master(f"local[{args.workers}]")
        .appName("bench-distkeras")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    x, label = teacher_data(args.rows)
    import pandas as pd

    pdf = pd.DataFrame(x, columns=[f"f{i}" for i in range(30)])
    pdf["Label"] = label
    raw = spark.createDataFrame(pdf)
    features = [f"f{i}" for i in range(30)]
    dataset = VectorAssembler(inputCols=features, outputCol="features").transform(raw)
    dataset = (
        StandardScaler(inputCol="features", outputCol="features_normalized", withStd=True, withMean=True)
        .fit(dataset)
        .transform(dataset)
    )
    dataset = StringIndexer(inputCol="Label", outputCol="label_index").fit(dataset).transform(dataset)
    dataset = OneHotTransformer(output_dim=2, input_col="label_index", output_col="label").transform(dataset)
    dataset = dataset.select("features_normalized", "label_index", "label")
    training_set, test_set = dataset.randomSplit([0.6, 0.4], seed=1)
    training_set = training_set.repartition(args.workers).cache()
    test_set = test_set.cache()
    n_train, n_test = training_set.count(), test_set.count()

    model = build_model()
    common = dict(
        keras_model=model,
        worker_optimizer="adagrad",
        loss="categorical_crossentropy",
        features_col="features_normalized",
        label_col="label",
        num_epoch=1,
        batch_size=32,
    )
    dist = dict(common, num_workers=args.workers)
    factories = {
        "single": lambda: T.SingleTrainer(**common),
        "averaging": lambda: T.AveragingTrainer(**dist),
        "downpour": lambda: T.DOWNPOUR(**dist, communication_window=5),
        # ADAG pushes Δ/τ: with K workers the center moves ~K/τ of a worker's steps, so its
        # workers get a learning rate ~τ/K larger than Keras 3's adagrad default of 0.001
        "adag": lambda: T.ADAG(**dist, communication_window=12, learning_rate=0.01),
        "aeasgd": lambda: T.AEASGD(**dist, communication_window=32, rho=5.0, learning_rate=0.1),
        "eamsgd": lambda: T.EAMSGD(**dist, communication_window=32, rho=5.0, learning_rate=0.1, momentum=0.6),
        "dynsgd": lambda: T.DynSGD(**dist, communication_window=5),
    }
    results = {}
    for name in args.trainers.split(","):
        trainer = factories[name]()
        started = time.perf_counter()
        trained = trainer.train(training_set)
        wall = time.perf_counter() - started
        predicted = ModelPredictor(keras_model=trained, features_col="features_normalized", batch_size=4096).predict(
            test_set
        )
        predicted = LabelIndexTransformer(output_dim=2).transform(predicted)
        pairs = np.array(predicted.select("label_index", "prediction_index").collect(), dtype=float)
        truth, pred = pairs[:, 0], pairs[:, 1]
        acc = float(np.mean(truth == pred))
        tp = float(np.sum((pred == 1) & (truth == 1)))
        f1 = 2 * tp / max(1.0, float(np.sum(pred == 1) + np.sum(truth == 1)))
        results[name] = (trainer.get_training_time(), wall, acc, f1)
        logger.info("%-10s train %.1fs (wall %.1fs) acc %.4f f1 %.4f", name, *results[name])

    base = results.get("single")
    print(
        f"\nrows={args.rows} (train {n_train}, test {n_test}), workers={args.workers}, "
        f"cores={os.cpu_count()}, MLP 500-500-2, adagrad, batch 32, 1 epoch"
    )
    print(
        f"{'trainer':<10} {'train s':>8} {'rows/s':>8} {'acc':>7} {'F1':>7} {'time/single':>12} "
        f"{'acc - single':>13} {'F1 - single':>12}"
    )
    for name, (t, _, acc, f1) in results.items():
        rel = f"{t / base[0]:>12.2f} {100 * (acc - base[2]):>+12.2f}p {100 * (f1 - base[3]):>+11.2f}p" if base else ""
        print(f"{name:<10} {t:>8.1f} {n_train / t:>8.0f} {acc:>7.4f} {f1:>7.4f} {rel}")
    spark.stop()


if __name__ == "__main__":
    main()
