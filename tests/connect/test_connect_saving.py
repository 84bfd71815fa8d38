"""elephas.saving on a Spark Connect session: files written on a classic session by the previous version
load through the session's own readers, and a VotingModel saves to a ``file://`` URI with no
SparkContext (a local path there)."""

from __future__ import annotations

import json
import os

import numpy as np
from conftest import make_dense_model

PREVIOUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "previous")


def _expected():
    with open(os.path.join(PREVIOUS, "expected.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _same(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_previous_stage_files_load_through_the_session(spark):
    from pyspark.ml.linalg import Vectors

    from elephas.ml.transformers import ModelPredictor
    from elephas.ml_model import ElephasTransformer

    expected = _expected()
    x = np.asarray(expected["inputs"], dtype="float32")
    frame = spark.createDataFrame([(i, Vectors.dense(r.tolist())) for i, r in enumerate(x)], ["id", "features"])
    transformer = ElephasTransformer.load(os.path.join(PREVIOUS, "transformer"))  # model.keras via binaryFile
    _same(transformer.get_model().predict(x, verbose=0), expected["transformer"])
    predictor = ModelPredictor.load(os.path.join(PREVIOUS, "predictor"))  # the old keras_model/ row
    rows = predictor.transform(frame).orderBy("id").select("raw").collect()
    _same([r.raw.toArray() for r in rows], expected["predictor"])


def test_voting_model_on_a_file_uri_without_a_spark_context(spark, tmp_path):
    from elephas.hyperparam import VotingModel

    x = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
    ensemble = VotingModel([make_dense_model(seed=1), make_dense_model(seed=2)], "soft")
    uri = (tmp_path / "ensemble").as_uri()
    ensemble.save(uri)
    assert (tmp_path / "ensemble" / "voting.json").is_file()
    np.testing.assert_array_equal(VotingModel.load(uri).predict_proba(x), ensemble.predict_proba(x))
