"""Template expansion and argument checks of elephas.hyperparam (no Spark needed)."""

from __future__ import annotations

import numpy as np
import pytest
from hyperopt import STATUS_OK, hp, space_eval
from hyperopt.pyll.stochastic import sample

from elephas.hyperparam import (  # noqa: F401 - the distributions are used inside {{...}} templates
    HyperParamModel,
    TemplateError,
    choice,
    loguniform,
    normal,
    parse_model,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from elephas.hyperparam import distributions as dists
from elephas.hyperparam.templates import find_templates


def _labels_and_kinds(space):
    """{label: hyperopt node name} of a flat templated space."""
    out = {}
    for _name, node in space.items():
        # hp.* returns float(hyperopt_param(label, dist)) or hyperopt_param(label, dist)
        param = node
        while param.name != "hyperopt_param":
            param = param.pos_args[0]
        out[param.pos_args[0].obj] = param.pos_args[1].name
    return out


def every_distribution(x_train, y_train, x_test, y_test):
    a = {{choice([1, 2, 3])}}
    b = {{uniform(0, 1)}}
    c = {{quniform(0, 10, 2)}}
    d = {{loguniform(-3, 0)}}
    e = {{qloguniform(0, 3, 1)}}
    f = {{normal(0, 1)}}
    g = {{qnormal(10, 2, 1)}}
    h = {{randint(5)}}
    return {"loss": 0.0, "status": STATUS_OK, "values": [a, b, c, d, e, f, g, h]}


def test_every_distribution_becomes_a_named_hyperopt_entry():
    tm = parse_model(every_distribution)
    kinds = _labels_and_kinds(tm.space)
    assert kinds == {
        "a": "randint",
        "b": "uniform",
        "c": "quniform",
        "d": "loguniform",
        "e": "qloguniform",
        "f": "normal",
        "g": "qnormal",
        "h": "randint",
    }
    # hp.choice is a switch over a randint index; its options are resolved by space_eval
    assert [t.name for t in tm.templates] == list("abcdefgh")
    assert tm.templates[0].text == "{{choice([1, 2, 3])}}"
    values = sample(tm.space, rng=np.random.default_rng(0))
    out = tm.factory(values)(None, None, None, None)
    assert out["values"] == [values[k] for k in "abcdefgh"]
    assert values["a"] in (1, 2, 3) and 0 <= values["b"] <= 1 and values["c"] % 2 == 0


def seed_style_model(x_train, y_train, x_test, y_test):
    from hyperas.distributions import choice, uniform  # noqa: F401 - dropped by elephas
    from keras.layers import Activation, Dense, Dropout
    from keras.models import Sequential
    from keras.optimizers import RMSprop

    model = Sequential()
    model.add(Dense(8, input_shape=(4,)))
    model.add(Activation({{choice(["relu", "tanh"])}}))
    model.add(Dropout({{uniform(0, 1)}}))
    model.add(Dense({{choice([256, 512, 1024])}}))
    model.add(Dropout({{uniform(0, 1)}}))
    model.compile(loss="categorical_crossentropy", optimizer=RMSprop(learning_rate={{loguniform(-5, -1)}}))
    model.fit(x_train, y_train, batch_size={{choice([64, 128])}}, epochs=1)
    return {"loss": 0.0, "status": STATUS_OK, "model": model}


def test_names_come_from_the_call_and_argument_and_repeat_with_suffixes():
    tm = parse_model(seed_style_model)
    assert [t.name for t in tm.templates] == [
        "Activation_activation",
        "Dropout_rate",
        "Dense_units",
        "Dropout_rate_1",
        "RMSprop_learning_rate",
        "batch_size",
    ]
    first_line = seed_style_model.__code__.co_firstlineno
    assert tm.templates[0].lineno == first_line + 8
    assert tm.templates[-1].lineno == first_line + 13  # the model.fit(...) line
    assert tm.n_args == (4, 4)
    values = space_eval(
        tm.space,
        {
            "Activation_activation": 1,
            "Dense_units": 2,
            "batch_size": 0,
            "Dropout_rate": 0.1,
            "Dropout_rate_1": 0.2,
            "RMSprop_learning_rate": 0.01,
        },
    )
    assert values["Activation_activation"] == "tanh" and values["Dense_units"] == 1024
    assert values["batch_size"] == 64


def nested(x_train, y_train, x_test, y_test):
    units = 2 * {{choice([4, 8])}} + 1
    config = {"rate": {{uniform(0.1, 0.2)}} / 2, "depth": int({{quniform(1, 3, 1)}})}
    widths = [int({{choice([1, 2])}}) for _ in range(2)]
    text = "{{not a template}}" + f"{{literal braces}}"  # noqa: F541 {{nor in a comment}}
    scale = max(1, {{randint(3)}}) * {{choice([{"a": 1}, {"b": {"c": 2}}])}}.get("a", 0)
    return {"loss": units, "status": STATUS_OK, "config": config, "widths": widths, "text": text, "scale": scale}


def test_nested_expressions_strings_and_comments():
    tm = parse_model(nested)
    assert [t.name for t in tm.templates] == ["units", "rate", "depth", "widths", "scale", "scale_1"]
    values = {"units": 8, "rate": 0.15, "depth": 2.0, "widths": 2, "scale": 2, "scale_1": {"a": 1}}
    out = tm.factory(values)(None, None, None, None)
    assert out["loss"] == 17
    assert out["config"] == {"rate": 0.075, "depth": 2}
    assert out["widths"] == [2, 2]
    assert out["text"] == "{{not a template}}{literal braces}"
    assert out["scale"] == 2


def make_layer(width):
    import keras

    return keras.layers.Dense(width, activation={{choice(["relu", "sigmoid"])}})


def with_helper(x_train, y_train, x_test, y_test):
    layer = make_layer({{choice([3, 5])}})
    return {"loss": 1.0, "status": STATUS_OK, "layer": (layer.units, layer.activation.__name__)}


def test_helper_functions_are_compiled_with_the_model_and_may_hold_templates():
    tm = parse_model(with_helper, functions=[make_layer])
    assert [t.name for t in tm.templates] == ["make_layer_width", "Dense_activation"]
    assert [t.function for t in tm.templates] == ["with_helper", "make_layer"]
    out = tm.factory({"make_layer_width": 5, "Dense_activation": "sigmoid"})(1, 2, 3, 4)
    assert out["layer"] == (5, "sigmoid")


def test_notebook_cell_source_through_ipython():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    cell = (
        "from hyperopt import STATUS_OK\n"
        "from elephas.hyperparam import choice, uniform\n"
        "def cell_model(x_train, y_train, x_test, y_test):\n"
        "    n = {{choice([16, 32])}}\n"
        "    return {'loss': float(n), 'status': STATUS_OK}\n"
    )
    result = shell.run_cell(cell)
    assert result.success, result.error_in_exec
    tm = parse_model(shell.user_ns["cell_model"])
    assert list(tm.space) == ["n"]
    assert tm.templates[0].lineno == 4
    assert tm.factory({"n": 32})(0, 0, 0, 0)["loss"] == 32.0


def broken_syntax(x_train, y_train, x_test, y_test):
    model = None
    model = {{*[1, 2]}}  # valid Python (a set display), not a valid template
    return {"loss": 0, "status": STATUS_OK, "model": model}


def unknown_distribution(x_train, y_train, x_test, y_test):
    x = {{gauss(0, 1)}}  # noqa: F821 - an unknown distribution on purpose
    return {"loss": x, "status": STATUS_OK}


def test_template_syntax_errors_name_the_template_and_its_line():
    line = broken_syntax.__code__.co_firstlineno + 2
    with pytest.raises(TemplateError, match=r"Invalid hyper-parameter template \{\{\*\[1, 2\]\}\}") as info:
        parse_model(broken_syntax)
    assert f"test_hyperparam_templates.py:{line}:" in str(info.value)
    # text that does not even parse as Python (e.g. a cell being edited) is reported the same way
    with pytest.raises(TemplateError, match=r"'\{\{choice\(\[1, 2\)' at line 2: unbalanced '\)'"):
        find_templates("x = 1\ny = {{choice([1, 2)}}\n")
    with pytest.raises(TemplateError, match=r"Unterminated hyper-parameter template at line 1"):
        find_templates("y = {{choice([1, 2])\n")
    with pytest.raises(TemplateError, match=r"Unknown hyper-parameter template \{\{gauss\(0, 1\)\}\}"):
        parse_model(unknown_distribution)


def no_return_keys(x_train, y_train, x_test, y_test):
    return {"score": {{uniform(0, 1)}}}


def no_templates(x_train, y_train, x_test, y_test):
    return {"loss": 0.0, "status": STATUS_OK}


def two_arrays():
    return np.zeros((2, 2)), np.zeros((2, 1))


def four_arrays():
    z = np.zeros((4, 2), dtype="float32")
    return z, z, z, z


class _NoSpark:
    """A SparkContext stand-in that fails the test if anything reaches Spark."""

    def __getattr__(self, name):
        raise AssertionError(f"Spark was used ({name}) before the arguments were checked")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"model": every_distribution, "data": four_arrays, "max_evals": 0},
            ValueError,
            r"max_evals to be an integer >= 1. Received: max_evals=0",
        ),
        (
            {"model": no_templates, "data": four_arrays, "max_evals": 2},
            ValueError,
            r"No hyper-parameters to search: no_templates\(\) contains no",
        ),
        (
            {"model": no_return_keys, "data": four_arrays, "max_evals": 2},
            ValueError,
            r"must return \{'loss'.*Received: a dict without \['loss', 'status'\]",
        ),
        (
            {"model": every_distribution, "data": two_arrays, "max_evals": 2},
            ValueError,
            r"Expected data\(\) to return 4 arrays to match every_distribution\(x_train, y_train, "
            r"x_test, y_test\). Received: 2 values",
        ),
        (
            {"model": every_distribution, "data": four_arrays, "max_evals": 2, "algo": "grid"},
            ValueError,
            r"Could not interpret algo: 'grid'",
        ),
        (
            {"model": every_distribution, "data": four_arrays, "max_evals": 2, "space": {"x": hp.uniform("x", 0, 1)}},
            ValueError,
            r"templates and space= was given",
        ),
    ],
)
def test_bad_input_fails_before_any_spark_job(kwargs, error, match):
    with pytest.raises(error, match=match):
        HyperParamModel(_NoSpark(), num_workers=2).compute_trials(**kwargs)


def test_distributions_double_as_hyperopt_functions():
    assert isinstance(choice([1, 2]), dists.Distribution)
    labelled = choice("units", [1, 2])
    assert space_eval({"units": labelled}, {"units": 1}) == {"units": 2}
    assert space_eval({"r": uniform("r", 0, 1)}, {"r": 0.25}) == {"r": 0.25}
    with pytest.raises(TypeError, match="takes 2 argument"):
        uniform(1)
    with pytest.raises(TemplateError, match="templates take no label"):

        def labelled_template(a, b, c, d):
            return {"loss": {{uniform("lr", 0, 1)}}, "status": STATUS_OK}

        parse_model(labelled_template)
