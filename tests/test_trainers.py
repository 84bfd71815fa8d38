"""The dist-keras trainer faces on small DataFrames: learning, history, the seed workflow, bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import make_blobs, make_dense_model

from elephas.trainers import (
    ADAG,
    AEASGD,
    DOWNPOUR,
    EAMSGD,
    AveragingTrainer,
    DynSGD,
    EnsembleTrainer,
    SingleTrainer,
)


@pytest.fixture(scope="module")
def blobs_df(spark):
    from pyspark.ml.linalg import Vectors

    x, y = make_blobs(120, seed=3)
    rows = [(Vectors.dense(a.tolist()), Vectors.dense(b.tolist()), float(b.argmax())) for a, b in zip(x, y)]
    return spark.createDataFrame(rows, ["features", "label", "label_index"]).repartition(2).cache()


def _accuracy(model, df):
    pdf = df.select("features", "label_index").toPandas()
    x = np.stack([v.toArray() for v in pdf["features"]]).astype("float32")
    return float(np.mean(model.predict(x, verbose=0).argmax(1) == pdf["label_index"].to_numpy()))


COMMON = dict(worker_optimizer="adam", loss="categorical_crossentropy", batch_size=8, num_epoch=3)

TRAINERS = [
    (SingleTrainer, {}),
    (AveragingTrainer, {"num_workers": 2}),
    (DOWNPOUR, {"num_workers": 2, "communication_window": 2}),
    (ADAG, {"num_workers": 2, "communication_window": 2}),
    (AEASGD, {"num_workers": 2, "communication_window": 4, "rho": 5.0, "learning_rate": 0.1}),
    (EAMSGD, {"num_workers": 2, "communication_window": 4, "momentum": 0.5}),
    (DynSGD, {"num_workers": 2, "communication_window": 2}),
]


@pytest.mark.parametrize("cls,kwargs", TRAINERS, ids=[c.__name__ for c, _ in TRAINERS])
@pytest.mark.backend
def test_trainer_learns_and_leaves_the_given_model_untouched(blobs_df, cls, kwargs):
    import keras

    model = make_dense_model(seed=0)
    before = [w.copy() for w in model.get_weights()]
    optimizer = keras.optimizers.Adam(0.05)
    trainer = cls(keras_model=model, **{**COMMON, "worker_optimizer": optimizer}, **kwargs)
    trained = trainer.train(blobs_df)
    assert trained is not model
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert _accuracy(trained, blobs_df) > 0.8  # chance is 1/3
    assert trainer.get_training_time() > 0
    history = trainer.get_history()
    assert history and all({"worker_id", "iteration", "timestamp", "loss", "accuracy"} <= set(r) for r in history)
    averaged = trainer.get_averaged_history()
    assert set(averaged) >= {"loss", "accuracy"} and len(averaged["loss"]) >= 1
    if cls not in (SingleTrainer, AveragingTrainer):
        assert {r["worker_id"] for r in history} == {"0", "1"}
        assert sum(r["samples"] for r in history) == 3 * 120
        assert all(r["timestamp"] > 0 for r in history)


def test_ensemble_trainer_returns_independent_models(blobs_df):
    import keras

    model = make_dense_model(seed=0)
    trainer = EnsembleTrainer(
        keras_model=model,
        worker_optimizer=keras.optimizers.Adam(0.05),
        loss="categorical_crossentropy",
        batch_size=8,
        num_ensembles=2,
        num_epoch=3,
    )
    models = trainer.train(blobs_df)
    assert len(models) == 2 and models[0] is not models[1]
    assert not np.allclose(models[0].get_weights()[0], models[1].get_weights()[0])
    assert all(_accuracy(m, blobs_df) > 0.6 for m in models)
    assert {r["worker_id"] for r in trainer.get_history()} == {"0", "1"}


def test_parallelism_factor_and_shuffle(blobs_df):
    trainer = DOWNPOUR(keras_model=make_dense_model(), num_workers=1, communication_window=3, **COMMON)
    trainer.set_parallelism_factor(2)
    trainer.train(blobs_df, shuffle=True)
    assert {r["worker_id"] for r in trainer.get_history()} == {"0", "1"}
    with pytest.raises(
        ValueError, match="Expected parallelism_factor to be an integer >= 1. Received: parallelism_factor=0"
    ):
        trainer.set_parallelism_factor(0)


def test_multi_input_model(spark):
    import keras

    rng = np.random.default_rng(0)
    a = rng.normal(size=(80, 2)).astype("float32")
    b = rng.normal(size=(80, 3)).astype("float32")
    cls = ((a[:, 0] + b[:, 1]) > 0).astype(int)
    rows = [(a[i].tolist(), b[i].tolist(), np.eye(2)[cls[i]].tolist()) for i in range(80)]
    df = spark.createDataFrame(rows, ["left", "right", "label"])
    keras.utils.set_random_seed(0)
    ia, ib = keras.Input((2,), name="left"), keras.Input((3,), name="right")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([ia, ib]))
    model = keras.Model([ia, ib], keras.layers.Dense(2, activation="softmax")(h))
    trainer = DOWNPOUR(
        keras_model=model,
        worker_optimizer=keras.optimizers.Adam(0.05),
        loss="categorical_crossentropy",
        num_workers=2,
        batch_size=8,
        num_epoch=4,
        features_col=["left", "right"],
        label_col="label",
        communication_window=2,
    )
    trained = trainer.train(df)
    acc = np.mean(trained.predict([a, b], verbose=0).argmax(1) == cls)
    assert acc > 0.75


def test_seed_workflow_end_to_end(spark):
    """VectorAssembler -> StandardScaler -> StringIndexer -> OneHot -> trainer -> predict -> accuracy."""
    import keras
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler

    from elephas.ml.transformers import (
        AccuracyEvaluator,
        LabelIndexTransformer,
        ModelPredictor,
        OneHotTransformer,
        shuffle,
    )

    rng = np.random.default_rng(7)
    x = rng.normal(size=(160, 4)) * [1, 10, 100, 1] + [0, 5, 50, 0]
    label = np.where(x[:, 0] + x[:, 1] / 10 > 0.5, "s", "b")
    raw = spark.createDataFrame(
        [(*map(float, r), str(lab)) for r, lab in zip(x, label)], ["f0", "f1", "f2", "f3", "Label"]
    )
    dataset = VectorAssembler(inputCols=["f0", "f1", "f2", "f3"], outputCol="features").transform(raw)
    dataset = (
        StandardScaler(inputCol="features", outputCol="features_normalized", withStd=True, withMean=True)
        .fit(dataset)
        .transform(dataset)
    )
    dataset = StringIndexer(inputCol="Label", outputCol="label_index").fit(dataset).transform(dataset)
    dataset = OneHotTransformer(output_dim=2, input_col="label_index", output_col="label").transform(dataset)
    dataset = shuffle(dataset.select("features_normalized", "label_index", "label"), seed=1)
    training_set, test_set = dataset.randomSplit([0.7, 0.3], seed=1)

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    trainer = AEASGD(
        keras_model=model,
        worker_optimizer=keras.optimizers.Adagrad(0.3),
        loss="categorical_crossentropy",
        num_workers=2,
        batch_size=8,
        features_col="features_normalized",
        label_col="label",
        num_epoch=4,
        communication_window=4,
        rho=5.0,
        learning_rate=0.1,
    )
    trainer.set_parallelism_factor(1)
    trained_model = trainer.train(training_set)

    predictor = ModelPredictor(keras_model=trained_model, features_col="features_normalized")
    predicted = LabelIndexTransformer(output_dim=2).transform(predictor.predict(test_set))
    score = AccuracyEvaluator(prediction_col="prediction_index", label_col="label_index").evaluate(predicted)
    assert score > 0.8


def test_plateau_schedule_and_target_loss_through_a_trainer(blobs_df):
    trainer = AEASGD(
        keras_model=make_dense_model(),
        communication_window=4,
        validation_df=blobs_df,
        plateau_every=1,
        plateau_factor=2.0,
        target_loss=-1.0,
        num_workers=2,
        **{**COMMON, "num_epoch": 3, "worker_optimizer": "sgd"},
    )
    trainer.train(blobs_df)
    assert len(trainer.history.history["loss"]) == 3
    strategy = trainer.spark_model._strategy
    assert strategy.learning_rate <= 0.1  # divided only when the validation loss stalls
    stop = AEASGD(keras_model=make_dense_model(), communication_window=4, target_loss=100.0, num_workers=2, **COMMON)
    stop.train(blobs_df)
    assert len(stop.history.history["loss"]) == 1  # target reached after the first epoch


def test_plateau_schedule_on_a_synchronous_trainer(blobs_df):
    """The driver optimizer's learning rate travels with every round, so synchronous trainers
    can be scheduled too; a stalled validation loss divides it."""
    trainer = AveragingTrainer(
        keras_model=make_dense_model(),
        validation_df=blobs_df,
        plateau_every=1,
        plateau_factor=4.0,
        plateau_patience=0,
        num_workers=2,
        **{**COMMON, "num_epoch": 2, "worker_optimizer": "sgd"},
    )
    model = trainer.train(blobs_df)
    assert len(trainer.history.history["loss"]) == 2
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert any(lr == pytest.approx(v) for v in (0.01, 0.0025, 0.000625))


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "cls,kwargs,message",
    [
        (AEASGD, {"rho": 0.0}, "rho must be a number > 0. Received: rho=0.0"),
        (AEASGD, {"learning_rate": -1.0}, "learning_rate must be a number > 0"),
        (EAMSGD, {"momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
        (
            DOWNPOUR,
            {"communication_window": 0},
            "Expected communication_window to be an integer >= 1. Received: communication_window=0",
        ),
        (ADAG, {"learning_rate": 0}, "learning_rate must be a number > 0"),
        (DOWNPOUR, {"num_workers": 0}, "Expected num_workers to be an integer >= 1. Received: num_workers=0"),
        (DOWNPOUR, {"worker_optimizer": "no-such-optimizer"}, "Could not interpret worker_optimizer"),
        (DOWNPOUR, {"plateau_every": 1}, "plateau_every needs validation_df"),
    ],
)
def test_bad_arguments(cls, kwargs, message):
    args = {**COMMON, **kwargs}
    with pytest.raises(ValueError, match=message):
        cls(keras_model=make_dense_model(), **args)


def test_bad_columns_and_label_width(blobs_df):
    trainer = DOWNPOUR(keras_model=make_dense_model(), features_col="nope", **COMMON)
    with pytest.raises(
        ValueError,
        match=r"Expected a features column 'nope'. Received: a DataFrame with columns "
        r"\['features', 'label', 'label_index'\]",
    ):
        trainer.train(blobs_df)
    wide = make_dense_model(classes=4)
    with pytest.raises(ValueError, match="must have 4 value"):
        DOWNPOUR(keras_model=wide, **COMMON).train(blobs_df)
    with pytest.raises(TypeError, match="keras_model must be a Keras model"):
        DOWNPOUR(keras_model="model", **COMMON)
