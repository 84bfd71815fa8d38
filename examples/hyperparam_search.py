"""Distributed hyper-parameter search with hyperas-style templates, then a voting ensemble of the
best models.

    python examples/hyperparam_search.py --small
    spark-submit examples/hyperparam_search.py --max-evals 16

``data()`` returns the arrays, ``model(...)`` marks its hyper-parameters with ``{{...}}`` templates
and returns ``{'loss', 'status', 'model'}``; ``HyperParamModel(sc).minimize`` runs the trials as
Spark tasks. The data is synthetic (a linear teacher over 20 features, 3 classes); its size is read
from the environment variable ``ELEPHAS_EXAMPLE_ROWS`` because ``data()`` takes no arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from hyperopt import STATUS_OK  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from elephas.hyperparam import HyperParamModel, choice, uniform  # noqa: E402,F401

log = logging.getLogger("hyperparam_example")


def data():
    """Train and test arrays; called once on the driver, shared with the trials."""
    import os

    import keras
    import numpy as np

    rows = int(os.environ.get("ELEPHAS_EXAMPLE_ROWS", "5000"))
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(20, 3))
    x = rng.random((rows, 20)).astype("float32")
    y = keras.utils.to_categorical(np.argmax((x - 0.5) @ teacher, axis=1), 3)
    split = int(0.8 * rows)
    return x[:split], y[:split], x[split:], y[split:]


def model(x_train, y_train, x_test, y_test):
    """One trial: the templates are replaced by values drawn by hyperopt."""
    import os

    import keras

    net = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense({{choice([16, 64])}}, activation="relu"),
            keras.layers.Dropout({{uniform(0, 0.5)}}),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    net.compile(
        optimizer=keras.optimizers.Adam(learning_rate={{choice([0.001, 0.01])}}),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    epochs = int(os.environ.get("ELEPHAS_EXAMPLE_EPOCHS", "5"))
    net.fit(x_train, y_train, batch_size={{choice([32, 128])}}, epochs=epochs, verbose=0)
    _, accuracy = net.evaluate(x_test, y_test, verbose=0)
    return {"loss": -accuracy, "status": STATUS_OK, "model": net}


def spark_session(app: str, workers: int) -> SparkSession:
    builder = (
        SparkSession.builder.appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # plain python: embedded local Spark
        builder = builder.master(f"local[{workers}]")  # (spark-submit brings its own --master)
    return builder.getOrCreate()


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-evals", type=int, default=8)
    parser.add_argument("--ensemble", type=int, default=3, help="models in the voting ensemble")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="1,000 rows, 1 epoch, 2 trials")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.small:
        os.environ["ELEPHAS_EXAMPLE_ROWS"], os.environ["ELEPHAS_EXAMPLE_EPOCHS"] = "1000", "1"
        args.max_evals, args.ensemble = 2, 2

    spark = spark_session("elephas-hyperparam", args.workers)
    sc = spark.sparkContext
    sc.setLogLevel("ERROR")
    try:
        import numpy as np

        search = HyperParamModel(sc, num_workers=args.workers)
        best = search.minimize(model=model, data=data, max_evals=args.max_evals, seed=0)
        log.info("best parameters: %s", search.best_params)
        x_train, y_train, x_test, y_test = data()
        _, best_accuracy = best.evaluate(x_test, y_test, verbose=0)

        ensemble = search.best_ensemble(
            nb_ensemble_models=args.ensemble, model=model, data=data, max_evals=args.max_evals, voting="soft", seed=1
        )
        votes = ensemble.predict(x_test)  # class indices
        ensemble_accuracy = float(np.mean(votes == np.argmax(y_test, axis=1)))
        print(
            f"best model accuracy {best_accuracy:.4f}; soft-voting ensemble of {len(ensemble)} "
            f"models accuracy {ensemble_accuracy:.4f}"
        )
        return ensemble_accuracy
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
