"""VotingModel on hand-made models whose outputs are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from elephas.hyperparam import VotingModel


def linear(kernel):
    """A model computing x @ kernel exactly (no bias, no activation)."""
    import keras

    kernel = np.asarray(kernel, dtype="float32")
    model = keras.Sequential([keras.Input((kernel.shape[0],)), keras.layers.Dense(kernel.shape[1], use_bias=False)])
    model.set_weights([kernel])
    return model


# Inputs are one-hot rows, so each model's output for row i is row i of its kernel.
X = np.eye(3, dtype="float32")
K1 = [[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.4, 0.1, 0.5]]  # votes 0, 1, 2
K2 = [[0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]]  # votes 1, 2, 1
K3 = [[0.1, 0.5, 0.4], [0.5, 0.4, 0.1], [0.9, 0.0, 0.1]]  # votes 1, 0, 0


@pytest.fixture(scope="module")
def members():
    return [linear(K1), linear(K2), linear(K3)]


def test_hard_voting_majority_and_weights(members):
    # equal weights: row 0 -> 1 (two votes), row 1 -> tie 0/1/2 -> lowest index 0, row 2 -> tie 0/1/2
    assert VotingModel(members, "hard").predict(X).tolist() == [1, 0, 0]
    # weight 3 on the first model outvotes the other two everywhere
    assert VotingModel(members, "hard", weights=[3, 1, 1]).predict(X).tolist() == [0, 1, 2]
    assert VotingModel(members, "hard", weights=[0, 1, 2]).predict(X).tolist() == [1, 0, 0]
    with pytest.raises(AttributeError, match="only available with voting='soft'"):
        VotingModel(members, "hard").predict_proba(X)


def test_soft_voting_is_the_weighted_mean_of_outputs(members):
    weights = [1.0, 2.0, 1.0]
    expected = (np.array(K1) * 1 + np.array(K2) * 2 + np.array(K3) * 1) / 4
    ensemble = VotingModel(members, "soft", weights=weights)
    np.testing.assert_allclose(ensemble.predict_proba(X), expected, rtol=1e-6)
    assert ensemble.predict(X).tolist() == expected.argmax(axis=1).tolist() == [1, 2, 0]
    equal = (np.array(K1) + np.array(K2) + np.array(K3)) / 3
    assert VotingModel(members, "soft").predict(X).tolist() == equal.argmax(axis=1).tolist()


def test_binary_single_column_outputs():
    models = [linear([[0.9], [0.2]]), linear([[0.6], [0.7]]), linear([[0.1], [0.45]])]
    x = np.eye(2, dtype="float32")
    assert VotingModel(models, "hard").predict(x).tolist() == [1, 0]
    np.testing.assert_allclose(VotingModel(models, "soft").predict_proba(x).ravel(), [1.6 / 3, 1.35 / 3], rtol=1e-6)
    assert VotingModel(models, "soft").predict(x).tolist() == [1, 0]


def test_bad_arguments(members):
    with pytest.raises(ValueError, match="Could not interpret voting: 'majority'"):
        VotingModel(members, "majority")
    with pytest.raises(ValueError, match="one weight per model"):
        VotingModel(members, "hard", weights=[1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        VotingModel(members, "soft", weights=[1, -1, 1])
    with pytest.raises(ValueError, match="at least one model"):
        VotingModel([])


def test_save_and_load_round_trip(members, tmp_path):
    path = str(tmp_path / "ensemble")
    ensemble = VotingModel(members, "soft", weights=[1, 2, 1])
    ensemble.save(path)
    with pytest.raises(FileExistsError):
        ensemble.save(path)
    loaded = VotingModel.load(path)
    assert loaded.voting == "soft" and loaded.weights == [1.0, 2.0, 1.0] and len(loaded) == 3
    np.testing.assert_array_equal(loaded.predict_proba(X), ensemble.predict_proba(X))
    ensemble.save(path, overwrite=True)


def test_predicts_rdds_and_dataframes_through_the_distributed_path(members, sc, spark):
    from pyspark.ml.linalg import Vectors

    ensemble = VotingModel(members[:2], "hard", weights=[3, 1])
    rows = np.tile(X, (2, 1))  # 6 rows, in order
    expected = ensemble.predict(rows).tolist()
    assert expected == [0, 1, 2, 0, 1, 2]
    rdd = sc.parallelize([r for r in rows], 2)
    assert ensemble.predict(rdd).tolist() == expected
    soft = VotingModel(members[:2], "soft")
    df = spark.createDataFrame([(Vectors.dense(r.tolist()),) for r in rows], ["features"])
    np.testing.assert_allclose(soft.predict_proba(df), soft.predict_proba(rows), rtol=1e-6)
