"""elephas.saving: round trips for every class that persists a Keras model, on local paths, relative
paths and ``file://`` URIs (through Spark's Hadoop FileSystem, like hdfs:// and s3a://), and the files
written by the previous version (``tests/fixtures/previous``, see ``make_previous.py``) loading and
predicting as they did when they were saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import make_dense_model

from elephas import saving

PREVIOUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "previous")


@pytest.fixture(scope="module")
def expected():
    with open(os.path.join(PREVIOUS, "expected.json"), encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def inputs(expected):
    return np.asarray(expected["inputs"], dtype="float32")


@pytest.fixture(scope="module")
def frame(spark, inputs):
    from pyspark.ml.linalg import Vectors

    return spark.createDataFrame([(i, Vectors.dense(r.tolist())) for i, r in enumerate(inputs)], ["id", "features"])


def _column(df, name):
    return [r[name] for r in df.orderBy("id").select(name).collect()]


def _vectors(values):
    return np.array([v.toArray() for v in values])


def _same(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def _uri(tmp_path, name, kind, monkeypatch=None):
    if kind == "file":
        return (tmp_path / name).as_uri()
    if kind == "relative":
        monkeypatch.chdir(tmp_path)
        return name
    return str(tmp_path / name)


KINDS = ["local", "relative", "file"]


# --------------------------------------------------------------------------------- the module


@pytest.mark.parametrize("ext", [".keras", ".h5"])
@pytest.mark.parametrize("kind", KINDS)
def test_model_with_config_round_trip(spark, tmp_path, monkeypatch, ext, kind):
    model = make_dense_model()
    x = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")
    config = {"mode": "asynchronous", "nested": {"rho": 2.0, "names": ["a", "b"]}, "none": None}
    path = _uri(tmp_path, "model" + ext, kind, monkeypatch)
    saving.save_model_with_config(model, config, path)
    assert (tmp_path / ("model" + ext)).is_file()
    loaded, got = saving.read_model_with_config(path)
    assert got == config
    _same(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(FileExistsError, match="already exists"):
        saving.save_model_with_config(model, config, path)
    saving.save_model_with_config(model, {"mode": "synchronous"}, path, overwrite=True)
    assert saving.read_model_with_config(path)[1] == {"mode": "synchronous"}


def test_model_with_config_is_a_plain_keras_file_too(tmp_path):
    import keras

    model = make_dense_model()
    path = str(tmp_path / "m.keras")
    saving.save_model_with_config(model, {"a": 1}, path)
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("elephas.json")) == {"a": 1}
    keras.models.load_model(path)  # Keras ignores the extra member
    plain = str(tmp_path / "plain.keras")
    model.save(plain)
    assert saving.read_model_with_config(plain)[1] == {}


def test_model_with_config_errors(tmp_path):
    model = make_dense_model()
    with pytest.raises(ValueError, match=r"must end in \.keras or \.h5\. Received: '.*model\.pkl'"):
        saving.save_model_with_config(model, {}, str(tmp_path / "model.pkl"))
    with pytest.raises(TypeError):
        saving.save_model_with_config(model, {"bad": object()}, str(tmp_path / "model.keras"))
    assert not (tmp_path / "model.keras").exists()
    with pytest.raises(FileNotFoundError, match="No file or directory"):
        saving.read_model_with_config(str(tmp_path / "missing.keras"))


@pytest.mark.parametrize("kind", KINDS)
def test_model_file_and_json_round_trip(spark, tmp_path, monkeypatch, kind):
    model = make_dense_model(loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(2).normal(size=(3, 4)).astype("float32")
    folder = _uri(tmp_path, "folder", kind, monkeypatch)
    saving.save_model_file(model, saving.join(folder, "m.keras"))
    saving.write_json({"k": [1, 2.5, "x"]}, saving.join(folder, "m.json"))
    assert sorted(p.name for p in (tmp_path / "folder").iterdir() if not p.name.startswith(".")) == [
        "m.json",
        "m.keras",
    ]
    assert saving.read_json(saving.join(folder, "m.json")) == {"k": [1, 2.5, "x"]}
    loaded = saving.load_model_file(saving.join(folder, "m.keras"))
    assert "sparse_categorical" in str(loaded.loss)
    assert not saving.load_model_file(saving.join(folder, "m.keras"), compile=False).compiled
    _same(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(FileExistsError):
        saving.write_json({}, saving.join(folder, "m.json"))


def test_file_uri_without_a_spark_context_is_a_local_path(tmp_path):
    """No SparkContext (plain Python, or a Spark Connect client): ``file://`` URIs are local paths."""
    script = (
        "import sys, numpy as np, keras\n"
        "from elephas.hyperparam import VotingModel\n"
        "from elephas.utils import fs\n"
        "uri = sys.argv[1]\n"
        "assert fs.local_path(uri) == sys.argv[2], fs.local_path(uri)\n"
        "m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation='softmax')])\n"
        "VotingModel([m, m], 'soft').save(uri)\n"
        "x = np.ones((2, 2), 'float32')\n"
        "np.testing.assert_array_equal(VotingModel.load(uri).predict_proba(x), m.predict(x, verbose=0))\n"
        "from pyspark import SparkContext\n"
        "assert SparkContext._active_spark_context is None\n"
    )
    target = tmp_path / "ensemble dir"
    done = subprocess.run(
        [sys.executable, "-c", script, target.as_uri(), str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(PREVIOUS))),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (target / "voting.json").is_file() and (target / "member_1.keras").is_file()


# ------------------------------------------------------------------------------- the classes


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_spark_model_round_trip(spark, tmp_path, ext):
    from elephas.spark_model import SparkModel, load_spark_model

    x = np.random.default_rng(3).normal(size=(5, 4)).astype("float32")
    spark_model = SparkModel(make_dense_model(), mode="synchronous", frequency="epoch", num_workers=2)
    path = (tmp_path / ("spark" + ext)).as_uri()
    spark_model.save(path)
    model, config = saving.read_model_with_config(path)
    assert config == json.loads(json.dumps(spark_model.get_config()))
    loaded = load_spark_model(path)
    assert loaded.get_config() == spark_model.get_config()
    _same(loaded.master_network.predict(x, verbose=0), spark_model.master_network.predict(x, verbose=0))


@pytest.mark.parametrize("kind", ["local", "file"])
def test_model_predictor_round_trip_in_the_stage_layout(frame, inputs, tmp_path, kind):
    from pyspark.ml import PipelineModel

    from elephas.ml.transformers import ModelPredictor

    model = make_dense_model(input_dim=3, classes=2)
    predictor = ModelPredictor(keras_model=model, output_col="p", batch_size=2)
    before = _vectors(_column(predictor.transform(frame), "p"))
    _same(before, model.predict(inputs, verbose=0))
    path = _uri(tmp_path, "predictor", kind)
    predictor.save(path)
    assert (tmp_path / "predictor" / "model.keras").is_file()
    assert (tmp_path / "predictor" / "metadata").is_dir()
    assert not (tmp_path / "predictor" / "keras_model").exists()
    loaded = ModelPredictor.load(path)
    assert loaded.uid == predictor.uid
    assert (loaded.getFeaturesCol(), loaded.getOutputCol(), loaded.getBatchSize()) == ("features", "p", 2)
    _same(_vectors(_column(loaded.transform(frame), "p")), before)
    with pytest.raises(Exception, match="already exists"):
        predictor.save(path)
    predictor.write().overwrite().save(path)
    pipeline = PipelineModel(stages=[predictor])
    pipeline.save(_uri(tmp_path, "pipeline", kind))
    reloaded = PipelineModel.load(_uri(tmp_path, "pipeline", kind))
    assert type(reloaded.stages[0]) is ModelPredictor
    _same(_vectors(_column(reloaded.transform(frame), "p")), before)
    with pytest.raises(ValueError, match="expected keras_model to be set before saving"):
        ModelPredictor().save(str(tmp_path / "empty"))


def test_model_predictor_is_a_vector_spelling_of_the_elephas_transformer(frame, inputs):
    """Whatever the model (a sparse categorical classifier here, a single unit below), ModelPredictor
    writes the raw outputs as a vector, where ElephasTransformer writes class indices or a value."""
    from elephas.ml.transformer import ElephasTransformer
    from elephas.ml.transformers import ModelPredictor

    classifier = make_dense_model(input_dim=3, classes=2, loss="sparse_categorical_crossentropy")
    raw = classifier.predict(inputs, verbose=0)
    vectors = _vectors(_column(ModelPredictor(keras_model=classifier).transform(frame), "prediction"))
    _same(vectors, raw)
    classes = _column(ElephasTransformer(classifier).transform(frame), "prediction")
    assert classes == raw.argmax(axis=1).astype(float).tolist()
    import keras

    unit = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    out = _column(ModelPredictor(keras_model=unit, batch_size=4).transform(frame), "prediction")
    _same(_vectors(out), unit.predict(inputs, verbose=0))
    with pytest.raises(TypeError, match="Expected a Keras model"):
        ModelPredictor(keras_model="not a model")


@pytest.mark.parametrize("kind", KINDS)
def test_voting_model_round_trip(spark, tmp_path, monkeypatch, kind):
    from elephas.hyperparam import VotingModel

    x = np.random.default_rng(4).normal(size=(7, 4)).astype("float32")
    ensemble = VotingModel([make_dense_model(seed=s) for s in (1, 2, 3)], "soft", weights=[1, 2, 1])
    path = _uri(tmp_path, "ensemble", kind, monkeypatch)
    ensemble.save(path)
    assert (tmp_path / "ensemble" / "voting.json").is_file()
    loaded = VotingModel.load(path)
    assert loaded.voting == "soft" and loaded.weights == [1.0, 2.0, 1.0] and len(loaded) == 3
    np.testing.assert_array_equal(loaded.predict_proba(x), ensemble.predict_proba(x))
    with pytest.raises(FileExistsError, match="already saved"):
        ensemble.save(path)
    hard = VotingModel(ensemble.models[:2], "hard")
    hard.save(path, overwrite=True)
    again = VotingModel.load(path)
    assert again.voting == "hard" and len(again) == 2
    assert again.predict(x).tolist() == hard.predict(x).tolist()
    with pytest.raises(FileNotFoundError, match="No saved VotingModel"):
        VotingModel.load(_uri(tmp_path, "nothing", "file" if kind == "file" else "local"))


def test_voting_model_refuses_member_names_outside_its_directory(tmp_path):
    from elephas.hyperparam import VotingModel

    VotingModel([make_dense_model()]).save(str(tmp_path / "e"))
    manifest = json.loads((tmp_path / "e" / "voting.json").read_text())
    manifest["members"] = ["../elsewhere.keras"]
    (tmp_path / "e" / "voting.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="Expected member file names inside"):
        VotingModel.load(str(tmp_path / "e"))


# ------------------------------------------------------------------- files of the previous version


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_previous_spark_model_files(spark, expected, inputs, ext):
    from elephas.spark_model import SparkModel, load_spark_model

    path = os.path.join(PREVIOUS, f"spark_model.{ext}")
    model, config = saving.read_model_with_config(path)
    assert config == expected["spark_model_config"]
    _same(model.predict(inputs, verbose=0), expected["spark_model"])
    loaded = load_spark_model(path)
    # make_previous.py built it as SparkModel(model, mode="synchronous", frequency="batch", num_workers=2)
    same_settings = SparkModel(loaded.master_network, mode="synchronous", frequency="batch", num_workers=2)
    assert loaded.get_config() == same_settings.get_config()
    _same(loaded.master_network.predict(inputs, verbose=0), expected["spark_model"])


def test_previous_transformer_and_pipeline(frame, expected, inputs):
    from pyspark.ml import PipelineModel

    from elephas.ml_model import ElephasTransformer

    transformer = ElephasTransformer.load(os.path.join(PREVIOUS, "transformer"))
    _same(transformer.get_model().predict(inputs, verbose=0), expected["transformer"])
    out = transformer.transform(frame)
    _same(_vectors(_column(out, "probability")), expected["transformer"])
    assert _column(out, "prediction") == np.argmax(expected["transformer"], axis=1).astype(float).tolist()
    pipeline = PipelineModel.load(os.path.join(PREVIOUS, "pipeline"))
    stage = pipeline.stages[0]
    assert isinstance(stage, ElephasTransformer)
    _same(stage.get_model().predict(inputs, verbose=0), expected["pipeline"])
    assert _column(pipeline.transform(frame), "prediction") == np.argmax(expected["pipeline"], axis=1).tolist()


def test_previous_estimator(spark):
    from elephas.ml_model import ElephasEstimator

    estimator = ElephasEstimator.load(os.path.join(PREVIOUS, "estimator"))
    assert (estimator.get_epochs(), estimator.get_batch_size(), estimator.get_categorical()) == (1, 4, True)
    weights = estimator.initial_weights()
    sidecar = saving.load_model_file(os.path.join(PREVIOUS, "estimator", "model.keras"))
    assert weights is not None and len(weights) == len(sidecar.get_weights())
    for a, b in zip(weights, sidecar.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_previous_model_predictor(frame, expected, inputs):
    from pyspark.ml.util import DefaultParamsReader

    from elephas.ml.transformers import ModelPredictor

    path = os.path.join(PREVIOUS, "predictor")
    assert os.path.isdir(os.path.join(path, "keras_model"))  # the model as a Parquet row, no model.keras
    assert not os.path.exists(os.path.join(path, "model.keras"))
    assert "model_store" not in DefaultParamsReader.loadMetadata(path, frame.sparkSession)
    predictor = ModelPredictor.load(path)
    assert (predictor.getOutputCol(), predictor.getBatchSize()) == ("raw", 3)
    _same(predictor.getKerasModel().predict(inputs, verbose=0), expected["predictor"])
    _same(_vectors(_column(predictor.transform(frame), "raw")), expected["predictor"])


def test_previous_voting_model(expected, inputs):
    from elephas.hyperparam import VotingModel

    ensemble = VotingModel.load(os.path.join(PREVIOUS, "voting"))
    assert ensemble.voting == "soft" and ensemble.weights == [2.0, 1.0]
    _same(ensemble.predict_proba(inputs), expected["voting"])
