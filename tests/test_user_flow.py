"""What a new user meets first: the seed notebook's flow, registered custom layers, clear errors.

Each test here pins one defect a newcomer ran into (issue 12).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_blobs, make_dense_model


def _otto_like_df(spark, n: int = 240, features: int = 6, classes: int = 3, seed: int = 0):
    """A DataFrame shaped like the Otto notebook's: a dense feature vector and a string category."""
    from pyspark.ml.linalg import Vectors

    x, y = make_blobs(n, features, classes, seed=seed)
    labels = y.argmax(axis=1)
    rows = [(Vectors.dense(row.astype(float).tolist()), f"Class_{int(c) + 1}") for row, c in zip(x, labels)]
    return spark.createDataFrame(rows, ["features", "category"]).repartition(2)


@pytest.mark.parametrize("make_optimizer", ["Adadelta", "SGD"])
def test_seed_notebook_flow_fits_with_serialized_optimizer(spark, make_optimizer):
    """The Otto notebook (seed 002): uncompiled model JSON, a serialized optimizer and every setter,
    then ``Pipeline([...indexer, scaler, estimator]).fit(df)``."""
    import keras
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler, StringIndexer

    from elephas.ml_model import ElephasEstimator

    train_df = _otto_like_df(spark)
    nb_classes = train_df.select("category").distinct().count()
    input_dim = len(train_df.select("features").first()[0])

    keras.utils.set_random_seed(0)
    model = keras.Sequential()
    model.add(keras.Input((input_dim,)))
    model.add(keras.layers.Dense(32))
    model.add(keras.layers.Activation("relu"))
    model.add(keras.layers.Dropout(0.1))
    model.add(keras.layers.Dense(nb_classes))
    model.add(keras.layers.Activation("softmax"))

    if make_optimizer == "Adadelta":
        optimizer = keras.optimizers.Adadelta(learning_rate=1.0)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=0.1)
    serialized = keras.optimizers.serialize(optimizer)
    class_name = serialized["class_name"]

    string_indexer = StringIndexer(inputCol="category", outputCol="index_category")
    scaler = StandardScaler(inputCol="features", outputCol="scaled_features", withStd=True, withMean=True)
    estimator = ElephasEstimator()
    estimator.setFeaturesCol("scaled_features")
    estimator.setLabelCol("index_category")
    estimator.set_keras_model_config(model.to_json())
    estimator.set_optimizer_config(serialized)
    estimator.set_loss("categorical_crossentropy")
    estimator.set_metrics(["acc"])
    estimator.set_categorical_labels(True)
    estimator.set_nb_classes(nb_classes)
    estimator.set_num_workers(2)
    estimator.set_nb_epoch(8)
    estimator.set_batch_size(16)
    estimator.set_verbosity(0)
    estimator.set_validation_split(0.15)

    assert serialized["class_name"] == class_name, "setting the optimizer must not edit the user's dict"
    assert estimator.get_optimizer_config()["class_name"] == class_name

    fitted = Pipeline(stages=[string_indexer, scaler, estimator]).fit(train_df)
    assert estimator.get_optimizer_config()["class_name"] == class_name
    prediction = fitted.transform(train_df).select("index_category", "prediction").collect()
    accuracy = np.mean([r.index_category == r.prediction for r in prediction])
    assert accuracy > 0.8, accuracy
    trained = fitted.stages[-1].get_model()
    assert type(trained.optimizer).__name__ == class_name
    # a second fit of the same estimator (the params were not consumed by the first)
    Pipeline(stages=[string_indexer, scaler, estimator.copy({estimator.epochs: 1})]).fit(train_df)


def test_trainer_worker_optimizer_from_serialized_config(spark):
    """dist-keras trainers take ``worker_optimizer`` as a serialized config, more than once."""
    import keras

    from elephas.ml.adapter import to_data_frame
    from elephas.trainers import SingleTrainer

    x, y = make_blobs(120, 4, 3)
    df = to_data_frame(spark.sparkContext, x, y, categorical=True)
    from elephas.ml.transformers import OneHotTransformer

    df = OneHotTransformer(output_dim=3, input_col="label", output_col="label_oh").transform(df)
    serialized = keras.optimizers.serialize(keras.optimizers.SGD(learning_rate=0.1))
    model = make_dense_model()
    for _ in range(2):
        trainer = SingleTrainer(
            model,
            worker_optimizer=serialized,
            loss="categorical_crossentropy",
            metrics=["accuracy"],
            features_col="features",
            label_col="label_oh",
            num_epoch=1,
            batch_size=16,
        )
        trained = trainer.train(df)
        assert type(trained.optimizer).__name__ == "SGD"
    assert serialized["class_name"] == "SGD"


def test_adapter_importable_as_first_elephas_import():
    """``from elephas.ml.adapter import to_data_frame`` as a program's first elephas import."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from elephas.ml.adapter import to_data_frame; "
            "from elephas.utils import to_data_frame as t; assert t is to_data_frame",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_upstream_mode_and_frequency_enums(spark, blobs):
    """``elephas.enums.modes.Mode`` / ``elephas.enums.frequency.Frequency`` work wherever a mode or a
    frequency is taken, and equal our strings."""
    from elephas.enums.frequency import Frequency
    from elephas.enums.modes import Mode
    from elephas.ml_model import ElephasEstimator
    from elephas.spark_model import AsynchronousSparkModel, SparkMLlibModel, SparkModel

    assert Mode.ASYNCHRONOUS == "asynchronous" and Mode.SYNCHRONOUS == "synchronous" and Mode.HOGWILD == "hogwild"
    assert Frequency.EPOCH == "epoch" and Frequency.BATCH == "batch"
    for mode in Mode:
        assert SparkModel(make_dense_model(), mode=mode).mode == mode.value
    spark_model = SparkModel(make_dense_model(), mode=Mode.HOGWILD, frequency=Frequency.BATCH)
    assert (spark_model.mode, spark_model.frequency) == ("hogwild", "batch")
    assert type(spark_model.frequency) is str
    assert SparkMLlibModel(make_dense_model(), mode=Mode.ASYNCHRONOUS, frequency=Frequency.EPOCH).mode == "asynchronous"
    assert AsynchronousSparkModel(make_dense_model(), frequency=Frequency.BATCH).frequency == "batch"
    estimator = ElephasEstimator(make_dense_model(), mode=Mode.ASYNCHRONOUS, frequency=Frequency.BATCH)
    assert estimator.get_mode() == "asynchronous" and type(estimator.get_mode()) is str
    estimator.set_mode(Mode.HOGWILD)
    estimator.set_frequency(Frequency.EPOCH)
    assert (estimator.get_mode(), estimator.get_frequency()) == ("hogwild", "epoch")

    x, y = blobs
    history = SparkModel(make_dense_model(), mode=Mode.ASYNCHRONOUS, frequency=Frequency.BATCH).fit(
        x, y, epochs=1, batch_size=32
    )
    assert len(history.history["loss"]) == 1


def _nan_data(blobs):
    x, y = blobs
    y = y.copy()
    y[:, 0] = np.nan  # every window's loss is NaN
    return x, y


@pytest.mark.parametrize("mode", ["synchronous", "asynchronous"])
def test_non_finite_loss_names_partition_epoch_and_window(spark, blobs, mode):
    """A worker whose loss becomes NaN fails with an error that says so and where."""
    from elephas.engine.errors import TaskFailedError
    from elephas.spark_model import SparkModel

    x, y = _nan_data(blobs)
    model = make_dense_model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(TaskFailedError, match=r"Non-finite loss in partition \d+, epoch 1, window 1") as info:
        SparkModel(model, mode=mode).fit(x, y, epochs=2, batch_size=32)
    assert info.value.non_finite_loss
    assert "JSON" not in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("mode", ["synchronous", "asynchronous"])
def test_terminate_on_nan_stops_training_like_keras(spark, blobs, mode):
    """With ``keras.callbacks.TerminateOnNaN`` the fit stops after the epoch whose loss is NaN, as in
    Keras, instead of raising; the model keeps its last finite weights."""
    import keras

    from elephas.spark_model import SparkModel

    x, y = _nan_data(blobs)
    model = make_dense_model()
    history = SparkModel(model, mode=mode).fit(
        x, y, epochs=3, batch_size=32, callbacks=[keras.callbacks.TerminateOnNaN()]
    )
    assert len(history.history["loss"]) == 1
    assert np.isnan(history.history["loss"][0])
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_keras2_positional_compile_fails_on_the_driver_before_any_job(spark, blobs):
    """Keras 2's ``compile(optimizer, loss, metrics)`` puts the metrics into ``loss_weights`` in
    Keras 3: elephas says so on the driver (a ValueError, not a failed task), naming the argument."""
    from elephas.engine.errors import TaskFailedError
    from elephas.spark_model import SparkModel

    model = make_dense_model()
    model.compile("sgd", "categorical_crossentropy", ["accuracy"])
    x, y = blobs
    spark_model = SparkModel(model)
    for data, labels in ((spark.sparkContext.parallelize(list(zip(x, y)), 2), None), (x, y)):
        with pytest.raises(ValueError, match=r"loss_weights=\['accuracy'\]") as info:
            spark_model.fit(data, labels, epochs=1)
        assert not isinstance(info.value, TaskFailedError)
        assert "third positional argument" in str(info.value)


def test_model_keras_cannot_train_fails_on_the_driver_with_keras_message(spark, blobs):
    """In general: what plain Keras cannot train fails on the driver with Keras's own message."""
    import keras

    from elephas.spark_model import SparkModel

    def shape_mismatch_loss(y_true, y_pred):
        return keras.ops.matmul(y_true, y_pred)  # (n, 3) @ (n, 3): Keras refuses at its first step

    x, y = blobs
    plain = make_dense_model(loss=shape_mismatch_loss)
    with pytest.raises(Exception) as keras_info:
        plain.train_on_batch(x[:1], y[:1])
    keras_message = str(keras_info.value).strip().splitlines()[0].split(" for ")[0]  # node names differ

    model = make_dense_model(loss=shape_mismatch_loss)
    with pytest.raises(ValueError, match="Keras cannot train this model") as info:
        SparkModel(model, custom_objects={"shape_mismatch_loss": shape_mismatch_loss}).fit(x, y, epochs=1)
    assert keras_message in str(info.value)


@pytest.mark.parametrize("mode", ["synchronous", "asynchronous"])
def test_layer_registered_in_main_works_on_executors(mode):
    """API.md: a layer registered with ``keras.saving.register_keras_serializable`` in the user's
    script works on the executors without ``custom_objects``: training, predict, evaluate and the
    Spark ML estimator/transformer. The script runs as ``__main__`` in its own process, as users run it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("registered_layer_script.py")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    env.pop("PYSPARK_GATEWAY_SECRET", None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != script.parent
    )  # not importable there
    run = subprocess.run(
        [sys.executable, str(script), mode], capture_output=True, text=True, timeout=600, cwd=str(script.parent.parent)
    )
    tail = run.stdout[-2000:] + "\n--- stderr ---\n" + run.stderr[-5000:]
    assert run.returncode == 0, tail
    assert "RESULT fit=2 predict=200" in run.stdout and "transform=200" in run.stdout, tail


def test_progress_bar_counts_samples_across_workers(capsys):
    """verbose=1 shows one Keras bar per epoch whose target and steps are samples over all workers."""
    from elephas.engine.history import run_epochs

    model = make_dense_model()

    def run_epoch(epoch, progress):
        progress(60, {"loss": 1.0})  # samples done so far, summed over the workers
        progress(200, {"loss": 0.5})
        return {"loss": 0.5}

    history = run_epochs(model, 2, None, 1, run_epoch, 200)
    out = capsys.readouterr().out
    assert out.count("200/200") >= 2 and "/sample" in out, out
    assert " 1/1 " not in out
    assert history.history["loss"] == [0.5, 0.5]


def test_worker_framework_import_writes_nothing_to_stderr():
    """The worker set-up imports Keras without TensorFlow's C++ start-up lines on standard error
    (TF_CPP_MIN_LOG_LEVEL does not silence them in TensorFlow 2.21)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = (
        "from elephas.engine.runtime import WorkerRuntime, prepare_worker; "
        "prepare_worker(WorkerRuntime('tensorflow', 1)); import keras; "
        "keras.layers.Dense(2)(keras.ops.ones((1, 3))); print('ok')"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]
    assert "oneDNN" not in run.stderr and "absl::InitializeLog" not in run.stderr, run.stderr[-3000:]


def test_fit_on_dataframe_from_python_rdd_leaves_no_broken_pipe():
    """A DataFrame built from a Python RDD (as the seed notebook builds it): ``fit`` must not leave a
    Python worker with unread input, whose release makes PySpark's daemon print a BrokenPipeError
    traceback."""
    import os
    import subprocess
    import sys

    code = """
import numpy as np, keras
from pyspark.sql import SparkSession
from pyspark.ml.linalg import Vectors
from elephas.spark_model import SparkModel
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
rng = np.random.default_rng(0)
rdd = spark.sparkContext.parallelize(range(20000), 2).map(
    lambda i: (Vectors.dense([float(i % 7), float(i % 3)]), [1.0, 0.0] if i % 2 else [0.0, 1.0]))
df = spark.createDataFrame(rdd, ["features", "label"])
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer="sgd", loss="categorical_crossentropy")
SparkModel(model, mode="asynchronous").fit(df, epochs=1, batch_size=512)
spark.stop()
print("ok")
"""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    env.pop("PYSPARK_GATEWAY_SECRET", None)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-4000:]
    assert "BrokenPipeError" not in run.stderr and "Traceback" not in run.stderr, run.stderr[-4000:]
