"""Spark ML params of the elephas estimator and transformer, declared once as data.

Every param is one :class:`ParamSpec` row (name, doc, default, converter, setter aliases). A small
factory turns each row into a ``Has*`` mixin in the style of ``pyspark.ml.param.shared``: the
:class:`~pyspark.ml.param.Param` as a class attribute with its type converter, the default set in
``__init__``, and snake_case ``set_<name>``/``get_<name>`` accessors plus the old elephas spellings
(``set_nb_epoch``, ``set_categorical_labels``, ``set_verbosity``). The column params reuse
pyspark's own ``HasFeaturesCol``/``HasLabelCol``/``HasOutputCol`` with camelCase setters.

Converters raise ``TypeError``/``ValueError`` with an expected/received message, so a bad value is
rejected when it is set, long before any Spark job.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasLabelCol, HasOutputCol

from ..utils.checks import int_converter

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# converters


def _type_name(value: Any) -> str:
    return type(value).__name__


def to_model_config(value: Any) -> str:
    """A Keras model architecture as a JSON string (``model.to_json()``).

    Accepts the JSON string, its parsed dict, or a Keras model (whose compile config is embedded
    under ``"compile_config"`` so loss, metrics and optimizer travel with the architecture).
    """
    try:
        import keras

        if isinstance(value, keras.Model):
            return model_to_config_json(value)
    except ImportError:  # pragma: no cover - keras is a hard dependency
        pass
    if isinstance(value, dict):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                "keras_model_config expected a Keras model JSON string (model.to_json()). Received a "
                f"string that is not JSON: {value[:60]!r}... Keras 3 has no model.to_yaml(); pass "
                "model.to_json() or the model itself."
            ) from None
    else:
        raise TypeError(
            f"keras_model_config expected a JSON string (model.to_json()), its dict, or a "
            f"Keras model. Received: {_type_name(value)}."
        )
    if not isinstance(parsed, dict) or "class_name" not in parsed or "config" not in parsed:
        raise ValueError(
            "keras_model_config expected a Keras model config with 'class_name' and "
            f"'config' keys (model.to_json()). Received keys: "
            f"{sorted(parsed) if isinstance(parsed, dict) else _type_name(parsed)}."
        )
    return json.dumps(parsed)


def model_to_config_json(model: Any) -> str:
    """``model.to_json()`` with the model's compile config embedded (when it is compiled)."""
    config = json.loads(model.to_json())
    if getattr(model, "compiled", False) and not config.get("compile_config"):
        from keras.saving import serialize_keras_object

        config["compile_config"] = serialize_keras_object(model.get_compile_config())
    return json.dumps(config)


_NUMBERED = re.compile(r"^(.*?)(_\d+)?$")


def optimizer_from_config(config: str | dict[str, Any]) -> Any:
    """A new Keras optimizer from a name or ``keras.optimizers.serialize`` output; ``config`` is left as it was.

    ``keras.optimizers.deserialize`` rewrites the dict it is given (its ``class_name`` becomes the
    lower-case alias, e.g. ``'adadelta'``), and Keras cannot deserialize that dict a second time
    (``Could not deserialize 'keras.optimizers.adadelta'``). Every elephas path that turns a
    serialized optimizer into an object goes through here, on a deep copy.

    Args:
        config: An optimizer name or a serialized optimizer.

    Returns:
        The optimizer.

    Example:
        >>> import keras
        >>> config = keras.optimizers.serialize(keras.optimizers.SGD(0.1))
        >>> type(optimizer_from_config(config)).__name__, config["class_name"]
        ('SGD', 'SGD')
    """
    import copy

    import keras

    return keras.optimizers.deserialize(copy.deepcopy(config))


def to_optimizer_config(value: Any) -> dict[str, Any]:
    """An optimizer as ``keras.optimizers.serialize`` output (``{'class_name', 'config', ...}``).

    Accepts that output, an optimizer's ``get_config()`` (its ``name`` gives the class, e.g.
    ``'adadelta'``), a dict with ``class_name`` and the config keys inline, an optimizer name
    (``'adam'``), or an optimizer instance. The result is a new dict; ``value`` is not changed.
    """
    import copy

    import keras

    if isinstance(value, keras.optimizers.Optimizer):
        return dict(keras.optimizers.serialize(value))
    if isinstance(value, str):
        try:
            return dict(keras.optimizers.serialize(keras.optimizers.get(value)))
        except ValueError:
            raise ValueError(
                f"optimizer_config expected an optimizer name such as 'sgd' or 'adam'. Received: {value!r}."
            ) from None
    if not isinstance(value, dict):
        raise TypeError(
            "optimizer_config expected keras.optimizers.serialize(...) output, an "
            "optimizer's get_config(), an optimizer name or an optimizer. "
            f"Received: {_type_name(value)}."
        )
    if "class_name" in value:
        if "config" in value:
            serialized = copy.deepcopy(dict(value))
        else:
            serialized = {
                "class_name": value["class_name"],
                "config": copy.deepcopy({k: v for k, v in value.items() if k != "class_name"}),
            }
    elif "name" in value:
        base = _NUMBERED.match(str(value["name"])).group(1)
        try:
            cls = type(keras.optimizers.get(base))
        except ValueError:
            raise ValueError(
                f"optimizer_config: could not tell the optimizer class from the config's "
                f"name {value['name']!r}. Expected a name such as 'adam' or 'sgd', or a "
                "dict with 'class_name'."
            ) from None
        serialized = dict(keras.optimizers.serialize(cls.from_config(dict(value))))
    else:
        raise ValueError(
            "optimizer_config expected a dict with 'class_name' (keras.optimizers."
            "serialize output) or 'name' (an optimizer's get_config()). Received keys: "
            f"{sorted(value)}."
        )
    try:  # resolve now so a typo fails when it is set, not on the executors
        optimizer = optimizer_from_config(serialized)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"optimizer_config could not be turned into an optimizer: {exc}. Received: {value!r}."
        ) from None
    return dict(keras.optimizers.serialize(optimizer))  # canonical form (class name as Keras writes it)


def to_loss(value: Any) -> str | dict[str, Any]:
    """A loss name (``'categorical_crossentropy'``) or a serialized Keras loss."""
    import keras

    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, keras.losses.Loss):
        return dict(keras.losses.serialize(value))
    raise TypeError(f"loss expected a loss name or a serialized Keras loss. Received: {_type_name(value)}.")


def to_metrics(value: Any) -> list[Any]:
    """A list of metric names (or serialized metrics)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"metrics expected a list of metric names. Received: {_type_name(value)}.")
    out: list[Any] = []
    for m in value:
        if isinstance(m, (str, dict)):
            out.append(m)
        else:
            import keras

            if isinstance(m, keras.metrics.Metric):
                out.append(dict(keras.metrics.serialize(m)))
            else:
                raise TypeError(
                    f"metrics expected names or serialized metrics. Received an element of type {_type_name(m)}."
                )
    return out


def to_custom_objects(value: Any) -> dict[str, Any]:
    """A dict of custom Keras objects by name."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"custom_objects expected a dict of name -> object. Received: {_type_name(value)}.")
    return dict(value)


def to_frequency(value: Any) -> str:
    """'epoch', 'batch', or a positive number of batches (stored as its decimal string)."""
    if isinstance(value, bool):
        raise TypeError(f"frequency expected 'epoch', 'batch' or a positive int. Received: {value!r}.")
    value = value.value if isinstance(value, Enum) else value  # elephas.enums.frequency.Frequency
    if isinstance(value, str) and value.lower() in ("epoch", "batch"):
        return value.lower()
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"frequency expected 'epoch', 'batch' or a positive int. Received: {value!r}.") from None
    if n < 1 or n != float(value):
        raise ValueError(f"frequency expected 'epoch', 'batch' or a positive int. Received: {value!r}.")
    return str(n)


def to_mode(value: Any) -> str:
    """A training mode name (or ``elephas.enums.modes.Mode``), lower-cased (checked at fit time)."""
    value = value.value if isinstance(value, Enum) else value
    if not isinstance(value, str):
        raise TypeError(f"mode expected a mode name such as 'synchronous'. Received: {_type_name(value)}.")
    return value.lower()


def to_fraction(value: Any) -> float:
    """A float in [0, 1)."""
    v = TypeConverters.toFloat(value)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"validation_split expected a float in [0, 1). Received: validation_split={v}.")
    return v


def to_resources(value: Any) -> str | None:
    """Stage-level resources (``{"gpu": 1, "cpus": 4}``, a dict or its JSON) as canonical JSON.

    Validated with :func:`elephas.engine.resources.check_resources`; stored as a string so the param
    persists with the transformer.

    Example:
        >>> to_resources({"cpus": 4, "gpu": 1})
        '{"cpus": 4, "gpu": 1.0}'
    """
    from ..engine.resources import check_resources

    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                f"resources expected a dict such as {{'gpu': 1, 'cpus': 4}} or its JSON. Received: {value!r}."
            ) from None
    checked = check_resources(value)
    if checked is None:
        raise ValueError(f"resources expected at least one resource such as {{'gpu': 1}}. Received: {value!r}.")
    return json.dumps(checked, sort_keys=True)


def to_verbose(value: Any) -> int:
    """Keras verbosity: 0, 1 or 2."""
    n = int_converter("verbose", 0)(value)
    if n > 2:
        raise ValueError(f"verbose expected 0, 1 or 2. Received: verbose={n}.")
    return n


# ------------------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class ParamSpec:
    """One param: its name, doc, default, type converter and extra setter/getter names."""

    name: str
    doc: str
    default: Any
    converter: Callable[[Any], Any]
    aliases: tuple[str, ...] = ()
    deprecated: tuple[str, ...] = ()


PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "keras_model_config",
        "Keras model architecture as JSON (model.to_json()); a "
        "'compile_config' entry carries loss, metrics and optimizer",
        None,
        to_model_config,
    ),
    ParamSpec(
        "optimizer_config",
        "Optimizer (keras.optimizers.serialize form); overrides the one in the model's compile config",
        None,
        to_optimizer_config,
    ),
    ParamSpec("loss", "Loss name or serialized loss; overrides the model's compile config", None, to_loss),
    ParamSpec("metrics", "Metric names; override the model's compile config", None, to_metrics),
    ParamSpec(
        "custom_objects",
        "Custom Keras objects by name (not persisted: pass them when "
        "loading, or register them with keras.saving.register_keras_serializable)",
        None,
        to_custom_objects,
    ),
    ParamSpec(
        "mode", "Training mode: 'synchronous', 'asynchronous', 'hogwild' or a dist-keras rule", "synchronous", to_mode
    ),
    ParamSpec("frequency", "Communication window: 'epoch', 'batch' or a number of batches", "epoch", to_frequency),
    ParamSpec(
        "num_workers",
        "Partitions to train on (None keeps the DataFrame's partitioning)",
        None,
        int_converter("num_workers", 1),
    ),
    ParamSpec("epochs", "Number of training epochs", 10, int_converter("epochs", 1), deprecated=("nb_epoch",)),
    ParamSpec("batch_size", "Training batch size", 32, int_converter("batch_size", 1)),
    ParamSpec("verbose", "Keras verbosity (0, 1, 2)", 0, to_verbose, aliases=("verbosity",)),
    ParamSpec("validation_split", "Fraction of rows held out for validation", 0.1, to_fraction),
    ParamSpec(
        "categorical",
        "Labels are class indices, one-hot encoded to nb_classes",
        False,
        TypeConverters.toBoolean,
        aliases=("categorical_labels",),
    ),
    ParamSpec("nb_classes", "Number of classes (None: the model's output width)", None, int_converter("nb_classes", 1)),
    ParamSpec(
        "inference_batch_size",
        "Rows per forward pass in transform (None: 1024)",
        None,
        int_converter("inference_batch_size", 1),
    ),
    ParamSpec(
        "resources",
        "Stage-level resources of every training and inference task as JSON, e.g. "
        '\'{"gpu": 1, "cpus": 4}\' (a dict is accepted); ignored on local masters',
        None,
        to_resources,
    ),
)

SPECS_BY_NAME = {s.name: s for s in PARAM_SPECS}


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _make_mixin(spec: ParamSpec) -> type:
    """A ``Has<Name>`` Params mixin for one spec (Param attribute, default, accessors)."""
    param = Param(Params._dummy(), spec.name, spec.doc, typeConverter=spec.converter)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        super(mixin, self).__init__(*args, **kwargs)
        self._setDefault(**{spec.name: spec.default})

    def setter(self: Any, value: Any) -> Any:
        return self._set(**{spec.name: value})

    def getter(self: Any) -> Any:
        return self.getOrDefault(spec.name)

    setter.__doc__ = f"Sets ``{spec.name}``: {spec.doc}."
    getter.__doc__ = f"Gets ``{spec.name}`` or its default ({spec.default!r})."
    namespace: dict[str, Any] = {
        "__doc__": f"Mixin for param ``{spec.name}``: {spec.doc}.",
        "__init__": __init__,
        spec.name: param,
        f"set_{spec.name}": setter,
        f"get_{spec.name}": getter,
    }
    for alias in spec.aliases:
        namespace[f"set_{alias}"] = setter
        namespace[f"get_{alias}"] = getter
    for old in spec.deprecated:
        namespace[f"set_{old}"] = _deprecated(setter, f"set_{old}", f"set_{spec.name}")
        namespace[f"get_{old}"] = _deprecated(getter, f"get_{old}", f"get_{spec.name}")
    mixin = type(f"Has{_camel(spec.name)}", (Params,), namespace)
    mixin.__module__ = __name__
    return mixin


def _deprecated(fn: Callable[..., Any], old: str, new: str) -> Callable[..., Any]:
    def wrapped(self: Any, *args: Any) -> Any:
        warnings.warn(f"{old} is deprecated; use {new}.", DeprecationWarning, stacklevel=2)
        return fn(self, *args)

    wrapped.__doc__ = f"Deprecated spelling of ``{new}``."
    return wrapped


HasKerasModelConfig = _make_mixin(SPECS_BY_NAME["keras_model_config"])
HasOptimizerConfig = _make_mixin(SPECS_BY_NAME["optimizer_config"])
HasLoss = _make_mixin(SPECS_BY_NAME["loss"])
HasMetrics = _make_mixin(SPECS_BY_NAME["metrics"])
HasCustomObjects = _make_mixin(SPECS_BY_NAME["custom_objects"])
HasMode = _make_mixin(SPECS_BY_NAME["mode"])
HasFrequency = _make_mixin(SPECS_BY_NAME["frequency"])
HasNumWorkers = _make_mixin(SPECS_BY_NAME["num_workers"])
HasEpochs = _make_mixin(SPECS_BY_NAME["epochs"])
HasBatchSize = _make_mixin(SPECS_BY_NAME["batch_size"])
HasVerbose = _make_mixin(SPECS_BY_NAME["verbose"])
HasValidationSplit = _make_mixin(SPECS_BY_NAME["validation_split"])
HasCategorical = _make_mixin(SPECS_BY_NAME["categorical"])
HasNbClasses = _make_mixin(SPECS_BY_NAME["nb_classes"])
HasInferenceBatchSize = _make_mixin(SPECS_BY_NAME["inference_batch_size"])
HasResources = _make_mixin(SPECS_BY_NAME["resources"])


class HasProbabilityCol(Params):
    """Mixin for param ``probabilityCol``: class probabilities as a vector ('' = no column)."""

    probabilityCol: Param[str] = Param(
        Params._dummy(),
        "probabilityCol",
        "Column for the class probabilities as a vector ('' = none)",
        typeConverter=TypeConverters.toString,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setDefault(probabilityCol="")

    def setProbabilityCol(self, value: str) -> Any:
        """Sets ``probabilityCol`` ('' for none)."""
        return self._set(probabilityCol=value)

    def getProbabilityCol(self) -> str:
        """Gets ``probabilityCol`` or its default ('')."""
        return self.getOrDefault(self.probabilityCol)


class ColumnParams(HasFeaturesCol, HasLabelCol, HasOutputCol, HasProbabilityCol):
    """featuresCol ['features'], labelCol ['label'], outputCol ['prediction'], probabilityCol ['']."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setDefault(featuresCol="features", labelCol="label", outputCol="prediction")

    def setFeaturesCol(self, value: str) -> Any:
        """Sets ``featuresCol``."""
        return self._set(featuresCol=value)

    def setLabelCol(self, value: str) -> Any:
        """Sets ``labelCol``."""
        return self._set(labelCol=value)

    def setOutputCol(self, value: str) -> Any:
        """Sets ``outputCol``."""
        return self._set(outputCol=value)


class ElephasParams(
    ColumnParams,
    HasKerasModelConfig,
    HasOptimizerConfig,
    HasLoss,
    HasMetrics,
    HasCustomObjects,
    HasMode,
    HasFrequency,
    HasNumWorkers,
    HasEpochs,
    HasBatchSize,
    HasVerbose,
    HasValidationSplit,
    HasCategorical,
    HasNbClasses,
    HasInferenceBatchSize,
    HasResources,
):
    """Every param of :class:`~elephas.ml.estimator.ElephasEstimator` and its transformer."""

    #: Keyword spellings accepted by constructors besides the param names.
    KEYWORD_ALIASES = {
        "features_col": "featuresCol",
        "label_col": "labelCol",
        "output_col": "outputCol",
        "probability_col": "probabilityCol",
        "nb_epoch": "epochs",
        "verbosity": "verbose",
        "categorical_labels": "categorical",
        "optimizer": "optimizer_config",
    }

    def set_params(self, **kwargs: Any) -> Any:
        """Set several params by name (param names, snake_case column names or old spellings).

        Raises:
            TypeError: For a name that is not a param.
        """
        resolved: dict[str, Any] = {}
        for key, value in kwargs.items():
            name = self.KEYWORD_ALIASES.get(key, key)
            if key == "nb_epoch":
                warnings.warn("nb_epoch is deprecated; use epochs.", DeprecationWarning, stacklevel=3)
            if not self.hasParam(name):
                valid = sorted(p.name for p in self.params)
                raise TypeError(f"Unknown parameter {key!r}. Expected one of {valid}.")
            resolved[name] = value
        return self._set(**resolved)

    def get_resources_value(self) -> dict[str, Any] | None:
        """``resources`` as the engine takes it: a dict, or ``None`` when unset."""
        value = self.getOrDefault("resources")
        return json.loads(value) if value else None

    def get_frequency_value(self) -> str | int:
        """``frequency`` as the engine takes it: 'epoch', 'batch' or an int."""
        value = self.getOrDefault("frequency")
        return int(value) if str(value).isdigit() else value
