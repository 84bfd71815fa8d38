"""ElephasEstimator params: defaults, setters/getters, converters, aliases, compile config (no Spark jobs)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import make_dense_model

from elephas.ml.params import PARAM_SPECS
from elephas.ml_model import ElephasEstimator, ElephasTransformer

EXPECTED_DEFAULTS = {
    "featuresCol": "features",
    "labelCol": "label",
    "outputCol": "prediction",
    "probabilityCol": "",
    "keras_model_config": None,
    "optimizer_config": None,
    "loss": None,
    "metrics": None,
    "custom_objects": None,
    "mode": "synchronous",
    "frequency": "epoch",
    "num_workers": None,
    "epochs": 10,
    "batch_size": 32,
    "verbose": 0,
    "validation_split": 0.1,
    "categorical": False,
    "nb_classes": None,
    "inference_batch_size": None,
    "resources": None,
}

VALUES = {
    "optimizer_config": ("sgd", lambda v: v["class_name"] == "SGD"),
    "loss": ("mse", lambda v: v == "mse"),
    "metrics": (["accuracy", "mae"], lambda v: v == ["accuracy", "mae"]),
    "custom_objects": ({"Foo": int}, lambda v: v == {"Foo": int}),
    "mode": ("Asynchronous", lambda v: v == "asynchronous"),
    "frequency": (5, lambda v: v == "5"),
    "num_workers": (3, lambda v: v == 3),
    "epochs": (4, lambda v: v == 4),
    "batch_size": (7, lambda v: v == 7),
    "verbose": (2, lambda v: v == 2),
    "validation_split": (0.25, lambda v: v == 0.25),
    "categorical": (True, lambda v: v is True),
    "nb_classes": (6, lambda v: v == 6),
    "inference_batch_size": (99, lambda v: v == 99),
    "resources": ({"gpu": 1, "cpus": 4}, lambda v: v == '{"cpus": 4, "gpu": 1.0}'),
}


def test_every_param_has_its_default():
    est = ElephasEstimator()
    assert {p.name for p in est.params} == set(EXPECTED_DEFAULTS)
    for name, default in EXPECTED_DEFAULTS.items():
        assert est.getOrDefault(name) == default, name
    assert {p.name for p in ElephasTransformer().params} == set(EXPECTED_DEFAULTS)


@pytest.mark.parametrize("name", sorted(VALUES))
def test_snake_case_setters_and_getters(name):
    est = ElephasEstimator()
    value, ok = VALUES[name]
    assert getattr(est, f"set_{name}")(value) is est
    assert ok(getattr(est, f"get_{name}")())
    assert ok(est.getOrDefault(name))
    assert est.isSet(getattr(est, name))


def test_every_spec_has_accessors():
    est = ElephasEstimator()
    for spec in PARAM_SPECS:
        assert callable(getattr(est, f"set_{spec.name}")) and callable(getattr(est, f"get_{spec.name}"))


def test_camel_case_column_setters():
    est = ElephasEstimator().setFeaturesCol("f").setLabelCol("l").setOutputCol("o").setProbabilityCol("p")
    assert (est.getFeaturesCol(), est.getLabelCol(), est.getOutputCol(), est.getProbabilityCol()) == (
        "f",
        "l",
        "o",
        "p",
    )


def test_seed_notebook_setter_sequence():
    import keras

    model = make_dense_model(input_dim=5, classes=3)
    est = ElephasEstimator()
    est.setFeaturesCol("scaled_features")
    est.setLabelCol("index_category")
    est.set_keras_model_config(model.to_json())
    est.set_optimizer_config(keras.optimizers.Adadelta().get_config())
    est.set_categorical_labels(True)
    est.set_nb_classes(3)
    est.set_num_workers(1)
    with pytest.warns(DeprecationWarning, match="set_epochs"):
        est.set_nb_epoch(20)
    est.set_batch_size(128)
    est.set_verbosity(1)
    est.set_validation_split(0.15)
    assert est.get_epochs() == 20 and est.get_categorical_labels() is True and est.get_verbosity() == 1
    assert est.get_categorical() is True and est.get_nb_classes() == 3 and est.get_num_workers() == 1
    assert est.getFeaturesCol() == "scaled_features" and est.getLabelCol() == "index_category"
    assert isinstance(keras.optimizers.deserialize(est.compile_config()["optimizer"]), keras.optimizers.Adadelta)
    assert est.compile_config()["loss"] == "categorical_crossentropy"  # from the model JSON


def test_constructor_keywords_and_aliases():
    model = make_dense_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        est = ElephasEstimator(
            model,
            nb_epoch=3,
            features_col="x",
            label_col="y",
            verbosity=2,
            categorical_labels=True,
            frequency="batch",
            mode="synchronous",
        )
    assert (est.get_epochs(), est.getFeaturesCol(), est.getLabelCol(), est.get_verbose()) == (3, "x", "y", 2)
    assert est.get_categorical() and est.get_frequency_value() == "batch"
    est2 = ElephasEstimator(featuresCol="a", outputCol="b", frequency=3)
    assert est2.getFeaturesCol() == "a" and est2.get_frequency_value() == 3
    with pytest.raises(TypeError, match="Unknown parameter 'epoch'"):
        ElephasEstimator(epoch=3)


def test_model_object_carries_compile_config_and_weights():
    model = make_dense_model(loss="categorical_crossentropy", metrics=("accuracy",), optimizer="adam")
    est = ElephasEstimator(model)
    config = json.loads(est.get_keras_model_config())
    assert config["compile_config"]["loss"] == "categorical_crossentropy"
    cc = est.compile_config()
    assert cc["optimizer"]["class_name"] == "Adam" and cc["metrics"] == ["accuracy"]
    built = est.build_model()
    assert built.compiled and built.loss == "categorical_crossentropy"
    for a, b in zip(built.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # another architecture set later: the old weights are not applied to it
    est.set_keras_model_config(make_dense_model(input_dim=6).to_json())
    assert est.initial_weights() is None


def test_explicit_loss_metrics_optimizer_override_the_model():
    est = ElephasEstimator(make_dense_model())
    est.set_loss("mse").set_metrics(["mae"]).set_optimizer_config("adam")
    cc = est.compile_config()
    assert cc["loss"] == "mse" and cc["metrics"] == ["mae"] and cc["optimizer"]["class_name"] == "Adam"
    model = est.build_model()
    assert model.loss == "mse" and type(model.optimizer).__name__ == "Adam"


@pytest.mark.parametrize("form", ["serialize", "get_config", "name", "inline_class_name", "instance"])
def test_optimizer_config_forms(form):
    import keras

    opt = keras.optimizers.SGD(learning_rate=0.05, momentum=0.5)
    value = {
        "serialize": keras.optimizers.serialize(opt),
        "get_config": opt.get_config(),
        "name": "sgd",
        "inline_class_name": {"class_name": "SGD", "learning_rate": 0.05, "momentum": 0.5},
        "instance": opt,
    }[form]
    est = ElephasEstimator(make_dense_model()).set_optimizer_config(value)
    built = keras.optimizers.deserialize(est.get_optimizer_config())
    assert isinstance(built, keras.optimizers.SGD)
    if form != "name":
        assert float(built.learning_rate) == pytest.approx(0.05) and built.momentum == 0.5


def test_copy_with_extra_params_keeps_weights_and_leaves_original():
    est = ElephasEstimator(make_dense_model(), epochs=1)
    other = est.copy({est.epochs: 5, est.batch_size: 8})
    assert other.get_epochs() == 5 and other.get_batch_size() == 8 and est.get_epochs() == 1
    assert other.initial_weights() is not None


@pytest.mark.parametrize(
    "setter,value,match",
    [
        ("set_epochs", 0, "Expected epochs to be an integer >= 1. Received: epochs=0"),
        ("set_batch_size", "x", "Expected batch_size to be an integer >= 1. Received: batch_size='x'"),
        ("set_validation_split", 1.5, r"validation_split expected a float in \[0, 1\)"),
        ("set_verbose", 3, "verbose expected 0, 1 or 2"),
        ("set_frequency", "weekly", "frequency expected 'epoch', 'batch' or a positive int"),
        ("set_optimizer_config", "not_an_optimizer", "optimizer_config expected an optimizer name"),
        ("set_optimizer_config", {"lr": 1}, "optimizer_config expected a dict with 'class_name'"),
        ("set_keras_model_config", "class_name: Sequential", "Keras 3 has no model.to_yaml"),
        ("set_keras_model_config", '{"a": 1}', "expected a Keras model config with 'class_name'"),
        ("set_nb_classes", 0, "Expected nb_classes to be an integer >= 1. Received: nb_classes=0"),
    ],
)
def test_bad_values_are_rejected_when_set(setter, value, match):
    with pytest.raises((TypeError, ValueError), match=match):
        getattr(ElephasEstimator(), setter)(value)


def test_no_model_config_and_no_loss_errors():
    with pytest.raises(ValueError, match="expected a Keras model config. Received: none"):
        ElephasEstimator().compile_config()
    import keras

    bare = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    est = ElephasEstimator().set_keras_model_config(bare.to_json())
    with pytest.raises(ValueError, match="expected a loss"):
        est.build_model()
    est.set_loss("mse")
    assert type(est.build_model().optimizer).__name__ == "RMSprop"
