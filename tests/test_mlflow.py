"""MLflow against a real local tracking store (a SQLite file made by each test), read back through
``MlflowClient``: ``elephas.mlflow.autolog()`` on every face, ``mlflow.keras.MlflowCallback`` passed
by hand, and a fitted PipelineModel through ``mlflow.spark``."""

from __future__ import annotations

import subprocess
import sys

import keras
import mlflow
import mlflow.keras
import mlflow.spark
import numpy as np
import pytest
from conftest import make_blobs, make_dense_model
from mlflow.tracking import MlflowClient

import elephas.mlflow
from elephas.ml_model import ElephasEstimator
from elephas.spark_model import SparkModel
from elephas.trainers import AveragingTrainer
from elephas.utils.rdd_utils import to_simple_rdd


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite tracking store; autologging off again afterwards."""
    monkeypatch.setenv("MLFLOW_AUTOLOGGING_TESTING", "true")  # errors in the logging code raise
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)  # artifacts in the test's directory, not ./mlruns of the working directory
    client.create_experiment("elephas-tests", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment("elephas-tests")
    yield client
    elephas.mlflow.autolog(disable=True)
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def _only_run(client):
    experiment = client.get_experiment_by_name("elephas-tests")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def _steps(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.mark.backend
def test_autolog_spark_model_fit_logs_config_epoch_metrics_and_model(sc, store):
    elephas.mlflow.autolog()
    x, y = make_blobs(160, seed=2)
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.05))
    spark_model = SparkModel(model, mode="synchronous", frequency="epoch", num_workers=2)
    history = spark_model.fit(to_simple_rdd(sc, x, y), epochs=3, batch_size=16, validation_split=0.2)

    run = _only_run(store)
    assert run.info.status == "FINISHED"  # autolog started the run and ended it
    params = run.data.params
    assert params["mode"] == "synchronous" and params["frequency"] == "epoch"
    assert params["num_workers"] == "2" and params["workers"] == "2"
    assert params["batch_size"] == "16" and params["epochs"] == "3" and params["validation_split"] == "0.2"
    assert params["backend"] == keras.backend.backend()
    assert params["face"] == "SparkModel"
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        logged = _steps(store, run.info.run_id, key)
        assert [s for s, _ in logged] == [0, 1, 2], key
        np.testing.assert_allclose([v for _, v in logged], history.history[key], rtol=1e-6)

    logged_models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert len(logged_models) == 1 and logged_models[0].source_run_id == run.info.run_id
    uri = f"models:/{logged_models[0].model_id}"
    signature = mlflow.models.get_model_info(uri).signature
    assert list(signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 4]
    reloaded = mlflow.keras.load_model(uri)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_autolog_estimator_and_trainer_log_to_the_active_run_and_to_new_ones(spark, store):
    from pyspark.ml.linalg import Vectors

    elephas.mlflow.autolog(log_models=False)
    x, y = make_blobs(120, seed=5)
    df = spark.createDataFrame(
        [(Vectors.dense(a.tolist()), float(b.argmax()), Vectors.dense(b.tolist())) for a, b in zip(x, y)],
        ["features", "label", "onehot"],
    ).repartition(2)
    estimator = ElephasEstimator(make_dense_model(), epochs=2, batch_size=16, categorical=True, nb_classes=3)
    with mlflow.start_run() as active:
        estimator.fit(df)
    run = _only_run(store)
    assert run.info.run_id == active.info.run_id
    assert run.data.params["face"] == "ElephasEstimator"
    assert run.data.params["epochs"] == "2" and run.data.params["workers"] == "2"
    assert [s for s, _ in _steps(store, run.info.run_id, "loss")] == [0, 1]

    trainer = AveragingTrainer(
        make_dense_model(),
        worker_optimizer="adam",
        loss="categorical_crossentropy",
        num_workers=2,
        batch_size=8,
        num_epoch=2,
        label_col="onehot",
    )
    trainer.train(df)
    experiment = store.get_experiment_by_name("elephas-tests")
    runs = store.search_runs([experiment.experiment_id], filter_string="params.face = 'AveragingTrainer'")
    assert len(runs) == 1 and runs[0].info.run_id != active.info.run_id
    assert runs[0].data.params["mode"] == "synchronous"
    assert len(_steps(store, runs[0].info.run_id, "loss")) == 2


def test_mlflow_keras_callback_in_callbacks(sc, store):
    x, y = make_blobs(80, seed=1)
    with mlflow.start_run() as active:
        history = SparkModel(make_dense_model()).fit(
            to_simple_rdd(sc, x, y), epochs=2, batch_size=16, callbacks=[mlflow.keras.MlflowCallback()]
        )
        mlflow.flush_async_logging()
    logged = _steps(store, active.info.run_id, "loss")
    assert [s for s, _ in logged] == [0, 1]
    np.testing.assert_allclose([v for _, v in logged], history.history["loss"], rtol=1e-6)
    assert "optimizer_name" in store.get_run(active.info.run_id).data.params


def test_pipeline_model_through_mlflow_spark_log_and_load(spark, store, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import VectorAssembler

    x, y = make_blobs(90, seed=7)
    columns = [f"f{i}" for i in range(4)]
    df = spark.createDataFrame(
        [(*map(float, a), float(b.argmax())) for a, b in zip(x, y)], [*columns, "label"]
    ).repartition(2)
    pipeline = Pipeline(
        stages=[
            VectorAssembler(inputCols=columns, outputCol="features"),
            ElephasEstimator(make_dense_model(), epochs=2, batch_size=16, categorical=True, nb_classes=3),
        ]
    )
    fitted = pipeline.fit(df)
    expected = [r["prediction"] for r in fitted.transform(df).orderBy(*columns).collect()]

    with mlflow.start_run():
        info = mlflow.spark.log_model(fitted, "pipeline", dfs_tmpdir=str(tmp_path / "dfs"))
    loaded = mlflow.spark.load_model(info.model_uri, dfs_tmpdir=str(tmp_path / "dfs-load"))
    assert isinstance(loaded, PipelineModel)
    assert [r["prediction"] for r in loaded.transform(df).orderBy(*columns).collect()] == expected

    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    frame = df.orderBy(*columns).select(*columns).toPandas()
    assert [float(p) for p in np.asarray(pyfunc.predict(frame)).ravel()] == expected


def test_without_mlflow_elephas_imports_and_autolog_says_what_to_install():
    code = (
        "import sys; sys.modules['mlflow'] = None\n"
        "import elephas, elephas.mlflow\n"
        "try:\n    elephas.mlflow.autolog()\nexcept ImportError as exc:\n    print('ImportError:', exc)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ImportError:" in run.stdout and 'pip install "elephas[mlflow]"' in run.stdout, run.stdout


def test_fit_params_name_the_automatic_window_and_the_workers(sc):
    spark_model = SparkModel(make_dense_model(), mode="synchronous", frequency="auto")
    params = elephas.mlflow.fit_params(spark_model, {"data": None, "epochs": 2, "batch_size": None})
    assert params["frequency"] == "auto" and params["window_initial"] == 16 and params["window_range"] == "8-32"
    assert params["workers"] == sc.defaultParallelism and params["batch_size"] == 32 and params["epochs"] == 2
    assert "port" not in params
    fixed = elephas.mlflow.fit_params(
        SparkModel(make_dense_model(), mode="hogwild", frequency=4, num_workers=3), {"data": None, "epochs": 1}
    )
    assert fixed["frequency"] == 4 and fixed["workers"] == 3 and "window_initial" not in fixed
