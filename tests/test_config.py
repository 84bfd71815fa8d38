"""Typed configuration: strategies, engine options and SparkModel round-trip through get_config.

``from_config(get_config())`` gives an equal configuration for every mode with its knobs, every
engine option and every server step, and so does ``save`` -> ``load_spark_model`` on ``.keras``
and ``.h5``; the workers' learning rate has one source (the driver model's optimizer) and is
saved with the model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_dense_model

from elephas.engine import strategies
from elephas.engine.config import EngineOptions, ServerSettings
from elephas.engine.schedules import LearningRateOnPlateau
from elephas.engine.strategies import EASGD, Downpour
from elephas.spark_model import SparkModel, load_spark_model

KNOBS = {
    "synchronous": {},
    "asynchronous": {},
    "hogwild": {},
    "downpour": {"learning_rate": 0.03},
    "adag": {"learning_rate": 0.02},
    "easgd": {"rho": 2.0, "learning_rate": 0.05},
    "eamsgd": {"rho": 3.0, "learning_rate": 0.04, "momentum": 0.5},
    "dynsgd": {"learning_rate": 0.07},
}

OPTIONS = {
    "seed": 7,
    "worker_threads": 2,
    "parameter_server_host": "127.0.0.1",
    "compression": "fp16",
    "timeout": 12.5,
    "background_push": True,
    "stage_blocks": False,
    "resources": {"cpus": 1},
}


def test_every_mode_is_covered():
    assert sorted(KNOBS) == sorted(strategies.names())


@pytest.mark.parametrize("mode", sorted(KNOBS))
def test_strategy_round_trips_by_name_config_and_instance(mode):
    strategy = strategies.get(mode, **KNOBS[mode])
    assert strategy.get_config() == {**strategy.get_config(), **KNOBS[mode]}
    config = strategies.serialize(strategy)
    assert json.loads(json.dumps(config)) == config
    again = strategies.get(config)
    assert again == strategy and again is not strategy and again.get_config() == strategy.get_config()
    assert strategies.get(strategy) is strategy


def test_get_refuses_unknown_modes_knobs_and_mixtures():
    with pytest.raises(ValueError, match=r"Could not interpret mode: 'asynch'. Expected one of \["):
        strategies.get("asynch")
    with pytest.raises(ValueError, match=r"does not take \['rho'\]"):
        strategies.get({"class_name": "downpour", "config": {"rho": 1.0}})
    with pytest.raises(ValueError, match="cannot be combined"):
        strategies.get(EASGD(), rho=1.0)
    with pytest.raises(ValueError, match="Expected a dict with 'class_name'"):
        strategies.get({"config": {}})


@pytest.mark.parametrize("mode", sorted(KNOBS))
def test_spark_model_config_round_trips_for_every_mode(mode):
    model = make_dense_model()
    spark_model = SparkModel(model, mode=mode, frequency=3, num_workers=2, batch_size=9, **KNOBS[mode])
    config = spark_model.get_config()
    assert json.loads(json.dumps(config)) == config
    assert config["mode"] == {"class_name": mode, "config": spark_model.strategy.get_config()}
    rebuilt = SparkModel.from_config(config, make_dense_model())
    assert rebuilt.get_config() == config
    assert rebuilt.strategy == spark_model.strategy


def test_a_strategy_instance_keeps_its_knobs():
    # an instance's knobs were lost once: rebuilding gave rho 5.0 and learning rate 0.1
    spark_model = SparkModel(make_dense_model(), mode=EASGD(rho=2.0, learning_rate=0.05))
    rebuilt = SparkModel.from_config(spark_model.get_config(), make_dense_model())
    assert (rebuilt.strategy.rho, rebuilt.strategy.learning_rate) == (2.0, 0.05)


@pytest.mark.parametrize("name, value", sorted(OPTIONS.items()))
def test_every_engine_option_round_trips(name, value):
    spark_model = SparkModel(make_dense_model(), **{name: value})
    config = spark_model.get_config()
    assert config[name] == (EngineOptions(**{name: value}).get_config()[name])
    assert getattr(spark_model.options, name) == config[name]
    assert SparkModel.from_config(config, make_dense_model()).get_config() == config


@pytest.mark.parametrize("step", [("sgd", 1.0, None), ("momentum", 0.5, 0.8), ("nesterov", 1.0, 0.9)])
def test_every_server_step_round_trips(step):
    name, lr, momentum = step
    kwargs = {"server_optimizer": name, "server_learning_rate": lr}
    if momentum is not None:
        kwargs["server_momentum"] = momentum
    config = SparkModel(make_dense_model(), **kwargs).get_config()
    assert config["server_optimizer"] == name and config["server_learning_rate"] == lr
    assert SparkModel.from_config(config, make_dense_model()).get_config() == config


def test_the_default_server_step_stays_the_default():
    config = SparkModel(make_dense_model()).get_config()
    assert config["server_optimizer"] is None and config["server_learning_rate"] is None


def test_engine_options_validate_once_with_clear_messages():
    assert EngineOptions.from_config(EngineOptions(**OPTIONS).get_config()) == EngineOptions(**OPTIONS)
    with pytest.raises(ValueError, match="stage_blocks must be True or False. Received: stage_blocks='yes'"):
        EngineOptions(stage_blocks="yes")
    with pytest.raises(ValueError, match="compression: 'lz4'"):
        EngineOptions(compression="lz4")
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0. Received: timeout=0"):
        EngineOptions(timeout=0)
    with pytest.raises(ValueError, match="Expected worker_threads to be an integer >= 1. Received: worker_threads=0"):
        SparkModel(make_dense_model(), worker_threads=0)
    with pytest.raises(ValueError, match=r"Could not interpret reducer: 'tree'"):
        EngineOptions(reducer="tree")
    with pytest.raises(ValueError, match="port must be an int in"):
        ServerSettings(port=70000)
    with pytest.raises(TypeError):
        EngineOptions.from_config({"no_such_option": 1})


def test_server_settings_come_from_the_options():
    options = EngineOptions(compression="zlib", timeout=5.0, parameter_server_host="127.0.0.1")
    settings = options.server_settings("socket", 1234)
    assert settings == ServerSettings(
        transport="socket", port=1234, host="127.0.0.1", compression="zlib", timeout=5.0, background_push=False
    )
    args = settings.server_args(timeout=300.0)
    assert args["mode"] == "socket" and args["client_timeout_s"] == 300.0 and args["compression"] == "zlib"


def test_the_rule_learning_rate_goes_to_the_driver_optimizer():
    model = make_dense_model(optimizer="sgd")
    spark_model = SparkModel(model, mode=Downpour(learning_rate=0.03))
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.03)
    assert spark_model.get_config()["worker_learning_rate"] == pytest.approx(0.03)


@pytest.mark.parametrize("ext", [".keras", ".h5"])
@pytest.mark.parametrize("mode", ["easgd", "downpour", "hogwild"])
def test_save_and_load_keep_the_whole_configuration(tmp_path, ext, mode):
    spark_model = SparkModel(
        make_dense_model(),
        mode=mode,
        frequency=4,
        parameter_server_mode="socket",
        server_optimizer="momentum",
        server_learning_rate=0.5,
        server_momentum=0.7,
        **KNOBS[mode],
        **OPTIONS,
    )
    path = str(tmp_path / f"model{ext}")
    spark_model.save(path)
    loaded = load_spark_model(path)
    assert loaded.get_config() == spark_model.get_config()


@pytest.mark.parametrize("ext", [".keras", ".h5"])
@pytest.mark.parametrize("mode", ["easgd", "downpour"])
def test_a_plateau_schedule_rate_survives_save_and_load(tmp_path, ext, mode):
    model = make_dense_model(optimizer="sgd")
    spark_model = SparkModel(model, mode=mode, **KNOBS[mode])
    losses = iter([1.0, 1.0])
    schedule = LearningRateOnPlateau(strategy=spark_model.strategy, evaluate=lambda: next(losses), factor=4.0)
    schedule.set_model(model)
    schedule.on_train_begin()
    for epoch in range(2):  # the second check does not improve: the rate is divided
        schedule.on_epoch_end(epoch, {})
    expected = KNOBS[mode]["learning_rate"] / 4.0
    config = spark_model.get_config()
    if mode == "easgd":  # the elastic step is the strategy's own
        assert config["mode"]["config"]["learning_rate"] == pytest.approx(expected)
    else:  # the workers' optimizer rate: the driver model's
        assert config["worker_learning_rate"] == pytest.approx(expected)
    path = str(tmp_path / f"model{ext}")
    spark_model.save(path)
    loaded = load_spark_model(path)
    assert loaded.get_config() == config
    if mode == "downpour":
        assert float(loaded.master_network.optimizer.learning_rate.numpy()) == pytest.approx(expected)
    else:
        assert loaded.strategy.learning_rate == pytest.approx(expected)


def test_a_configuration_written_by_the_previous_version_still_loads():
    # the previous version wrote the mode as a name with its knobs at the top level
    old = {"mode": "easgd", "frequency": 8, "parameter_server_mode": "http", "num_workers": 2, "batch_size": 16}
    old.update({"port": 0, "rho": 2.0, "learning_rate": 0.05, "seed": 3, "server_optimizer": None})
    spark_model = SparkModel.from_config(old, make_dense_model())
    assert spark_model.strategy == EASGD(rho=2.0, learning_rate=0.05)
    assert spark_model.options.seed == 3 and spark_model.frequency == 8
    np.testing.assert_equal(spark_model.get_config()["num_workers"], 2)
