"""The dist-keras ATLAS Higgs workflow (Hermans, CERN) with elephas: VectorAssembler,
StandardScaler, StringIndexer, OneHotTransformer, then the distributed trainers, ModelPredictor,
LabelIndexTransformer and AccuracyEvaluator.

    python examples/distkeras_higgs.py --data data/atlas_higgs.csv
    python examples/distkeras_higgs.py --small                 # synthetic file, same layout
    spark-submit examples/distkeras_higgs.py --trainers adag,aeasgd,dynsgd

The CSV layout is the Kaggle Higgs challenge's: ``EventId``, 30 ``DER_*``/``PRI_*`` features
(``PRI_jet_num`` an integer), ``Weight``, ``Label`` (``b`` or ``s``). Without ``--data`` a
synthetic file of that layout is written to a temporary directory by :func:`generate_higgs_csv`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

log = logging.getLogger("distkeras_higgs_example")

FEATURES = [
    "DER_mass_MMC",
    "DER_mass_transverse_met_lep",
    "DER_mass_vis",
    "DER_pt_h",
    "DER_deltaeta_jet_jet",
    "DER_mass_jet_jet",
    "DER_prodeta_jet_jet",
    "DER_deltar_tau_lep",
    "DER_pt_tot",
    "DER_sum_pt",
    "DER_pt_ratio_lep_tau",
    "DER_met_phi_centrality",
    "DER_lep_eta_centrality",
    "PRI_tau_pt",
    "PRI_tau_eta",
    "PRI_tau_phi",
    "PRI_lep_pt",
    "PRI_lep_eta",
    "PRI_lep_phi",
    "PRI_met",
    "PRI_met_phi",
    "PRI_met_sumet",
    "PRI_jet_num",
    "PRI_jet_leading_pt",
    "PRI_jet_leading_eta",
    "PRI_jet_leading_phi",
    "PRI_jet_subleading_pt",
    "PRI_jet_subleading_eta",
    "PRI_jet_subleading_phi",
    "PRI_jet_all_pt",
]
TRAINERS = ["single", "averaging", "downpour", "adag", "dynsgd", "aeasgd", "eamsgd"]


def generate_higgs_csv(path: str, rows: int, seed: int = 0) -> str:
    """Write ``rows`` synthetic events in the Higgs challenge layout (about 1/3 signal)."""
    rng = np.random.default_rng(seed)
    signal = rng.random(rows) < 0.34
    x = rng.normal(size=(rows, len(FEATURES)))
    x[signal, :8] += 0.8  # signal events are shifted in the derived features: learnable
    scales = rng.uniform(1, 100, size=len(FEATURES))
    x = np.round(np.abs(x * scales + scales), 3)
    jet = FEATURES.index("PRI_jet_num")
    x[:, jet] = rng.integers(0, 4, size=rows)
    weights = np.where(signal, rng.uniform(0.001, 0.01, rows), rng.uniform(0.5, 5.0, rows))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["EventId"] + FEATURES + ["Weight", "Label"])
        for i in range(rows):
            values = [int(v) if j == jet else float(v) for j, v in enumerate(x[i])]
            writer.writerow([100000 + i] + values + [round(float(weights[i]), 6), "s" if signal[i] else "b"])
    return path


def build_model(input_dim: int):
    """The notebook's model: Dense(500) x 2 with ReLU and dropout, softmax over 2 classes."""
    import keras

    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(500, activation="relu"),
            keras.layers.Dropout(0.4),
            keras.layers.Dense(500, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def make_trainer(name: str, model, num_workers: int, epochs: int, batch_size: int):
    from elephas import trainers

    common = dict(
        keras_model=model,
        worker_optimizer="adam",
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        num_workers=num_workers,
        batch_size=batch_size,
        features_col="features_normalized",
        label_col="label",
        num_epoch=epochs,
    )
    if name == "single":
        return trainers.SingleTrainer(**common)
    if name == "averaging":
        return trainers.AveragingTrainer(**common)
    if name == "downpour":
        return trainers.DOWNPOUR(**common, communication_window=5)
    if name == "adag":
        return trainers.ADAG(**common, communication_window=12)
    if name == "dynsgd":
        return trainers.DynSGD(**common, communication_window=5)
    if name == "aeasgd":
        return trainers.AEASGD(**common, communication_window=32, rho=5.0, learning_rate=0.1)
    if name == "eamsgd":
        return trainers.EAMSGD(**common, communication_window=32, rho=5.0, learning_rate=0.1, momentum=0.6)
    raise ValueError(f"unknown trainer {name!r}; expected one of {TRAINERS}")


def spark_session(app: str, workers: int):
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.locality.wait", "0")
    )
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain python: embedded local Spark
        builder = builder.master(f"local[{workers}]")  # (spark-submit brings its own --master)
    return builder.getOrCreate()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="atlas_higgs.csv (local path or Hadoop URI)")
    parser.add_argument("--trainers", default="single,adag,aeasgd", help=f"comma-separated, from {','.join(TRAINERS)}")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=50000, help="rows of the synthetic file")
    parser.add_argument("--small", action="store_true", help="2,000 synthetic rows, 1 epoch, trainers single and adag")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = ["single", "adag"] if args.small else [n.strip().lower() for n in args.trainers.split(",")]
    epochs = 1 if args.small else args.epochs

    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler

    from elephas.ml.evaluators import AccuracyEvaluator
    from elephas.ml.transformers import LabelIndexTransformer, ModelPredictor, OneHotTransformer, shuffle

    spark = spark_session("elephas-distkeras-higgs", args.workers)
    spark.sparkContext.setLogLevel("ERROR")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="higgs-") as tmp:
        try:
            path = args.data
            if not path:
                rows = 2000 if args.small else args.rows
                path = generate_higgs_csv(os.path.join(tmp, "atlas_higgs.csv"), rows)
                log.warning("no --data given: using %d synthetic events in the Higgs layout (%s)", rows, path)
            raw = spark.read.csv(path, header=True, inferSchema=True)
            features = [c for c in raw.columns if c not in ("EventId", "Weight", "Label")]
            dataset = VectorAssembler(inputCols=features, outputCol="features").transform(raw)
            dataset = (
                StandardScaler(inputCol="features", outputCol="features_normalized", withStd=True, withMean=True)
                .fit(dataset)
                .transform(dataset)
            )
            dataset = StringIndexer(inputCol="Label", outputCol="label_index").fit(dataset).transform(dataset)
            dataset = OneHotTransformer(output_dim=2, input_col="label_index", output_col="label").transform(dataset)
            dataset = shuffle(dataset.select("features_normalized", "label_index", "label"), seed=0)
            training_set, test_set = dataset.randomSplit([0.6, 0.4], seed=0)
            training_set = training_set.repartition(args.workers).cache()
            test_set = test_set.cache()

            model = build_model(len(features))
            for name in names:
                trainer = make_trainer(name, model, args.workers, epochs, args.batch_size)
                trained = trainer.train(training_set)  # a new Keras model; `model` is unchanged
                predicted = ModelPredictor(
                    keras_model=trained, features_col="features_normalized", output_col="prediction"
                ).predict(test_set)
                predicted = LabelIndexTransformer(
                    output_dim=2, input_col="prediction", output_col="prediction_index"
                ).transform(predicted)
                accuracy = AccuracyEvaluator(prediction_col="prediction_index", label_col="label_index").evaluate(
                    predicted
                )
                results[name] = accuracy
                print(
                    f"{type(trainer).__name__:>16}: training time {trainer.get_training_time():6.1f} s, "
                    f"test accuracy {accuracy:.4f}"
                )
            return results
        finally:
            spark.stop()


if __name__ == "__main__":
    main()
