"""Ship a compiled Keras model to executors as plain values and rebuild it there once per process.

A :class:`ModelSpec` holds the architecture (Keras JSON config), the compile configuration and the
``custom_objects`` a model needs; weights travel separately as a list of numpy arrays. Nothing in a
spec is a live Keras object, so it pickles cheaply and never drags a TensorFlow graph or a lock along.

On the executor, :func:`cached_model` builds the model from a spec once per Python worker process and
keeps it under the spec's id; later tasks only call ``set_weights``.
"""

from __future__ import annotations

import copy
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_LIMIT = 8


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a compiled Keras model, as plain values.

    Attributes:
        model_id: Id made on the driver; executors cache the built model under it.
        config_json: ``model.to_json()`` of the architecture.
        compile_config: ``model.get_compile_config()`` (optimizer, loss, metrics, ...), or ``None``
            for an uncompiled model (inference only).
        custom_objects: Classes and functions the config refers to that are not registered with
            ``keras.saving.register_keras_serializable``, plus (added when the spec is made) the
            registered ones the config names, under their registered names: a class registered
            in the driver's ``__main__`` (a script, a notebook) is unknown to the executors'
            registry, so it travels here (Spark's cloudpickle ships ``__main__`` classes by value).
    """

    model_id: str
    config_json: str
    compile_config: dict | None = None
    custom_objects: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        registered = registered_objects_named(self.config_json, self.compile_config)
        missing = {k: v for k, v in registered.items() if k not in self.custom_objects}
        if missing:
            object.__setattr__(self, "custom_objects", {**missing, **self.custom_objects})

    @classmethod
    def from_model(
        cls,
        model: Any,
        custom_objects: dict[str, Any] | None = None,
        require_compiled: bool = True,
        model_id: str | None = None,
    ) -> ModelSpec:
        """Describe ``model`` as a spec.

        Args:
            model: A Keras model.
            custom_objects: Extra objects needed to deserialize the model.
            require_compiled: Raise ``ValueError`` if the model was not compiled.
            model_id: Reuse an id (e.g. the one of a model already cached on executors).

        Returns:
            The spec.

        Example:
            >>> spec = ModelSpec.from_model(model)  # doctest: +SKIP
            >>> rebuilt = spec.build(); rebuilt.set_weights(model.get_weights())  # doctest: +SKIP
        """
        check_keras_model(model, require_compiled=require_compiled)
        compile_config = model.get_compile_config() if getattr(model, "compiled", False) else None
        return cls(
            model_id=model_id or uuid.uuid4().hex,
            config_json=model.to_json(),
            compile_config=compile_config,
            custom_objects=dict(custom_objects or {}),
        )

    def build(self, compile: bool = True) -> Any:
        """Build a fresh Keras model from this spec (compiled when the spec has a compile config)."""
        import keras

        with keras.saving.custom_object_scope(self.custom_objects):
            model = keras.models.model_from_json(self.config_json, custom_objects=self.custom_objects)
            if compile and self.compile_config is not None:  # a copy: Keras edits configs it deserializes
                model.compile_from_config(copy.deepcopy(self.compile_config))
        return model

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without ``custom_objects``, which are Python objects)."""
        return {"model_id": self.model_id, "config_json": self.config_json, "compile_config": self.compile_config}

    @classmethod
    def from_dict(cls, d: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> ModelSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(d["model_id"], d["config_json"], d.get("compile_config"), dict(custom_objects or {}))


def registered_objects_named(config_json: str | None, compile_config: dict | None = None) -> dict[str, Any]:
    """The objects registered with ``keras.saving.register_keras_serializable`` that a model's
    config and compile config name (``'package>Name'`` strings), by registered name.

    Args:
        config_json: ``model.to_json()``.
        compile_config: ``model.get_compile_config()`` (custom losses and metrics), or ``None``.

    Returns:
        ``{registered_name: class_or_function}``; empty when nothing registered is named (or
        Keras is not imported in this process, as on an executor before its first model).
    """
    import json
    import sys

    if "keras" not in sys.modules:  # nothing can be registered yet
        return {}
    from keras.saving import get_registered_object

    found: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)
        elif isinstance(node, str) and ">" in node and node not in found:
            obj = get_registered_object(node)
            if obj is not None:
                found[node] = obj

    try:
        walk(json.loads(config_json) if config_json else None)
    except ValueError:
        logger.debug("model config is not JSON; no registered objects collected")
    walk(compile_config)
    return found


def check_keras_model(model: Any, require_compiled: bool = True) -> None:
    """Raise a clear error unless ``model`` is a (compiled) Keras model."""
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected a Keras model (keras.Model, keras.Sequential or a functional model). "
            f"Received: model={type(model).__name__}."
        )
    if require_compiled and not getattr(model, "compiled", False):
        raise ValueError(
            "The Keras model must be compiled before it is distributed. "
            f"Received: an uncompiled model '{model.name}'. "
            "Call model.compile(optimizer=..., loss=..., metrics=[...]) first."
        )


def model_weights(model: Any) -> list[np.ndarray]:
    """The model's weights as a list of numpy arrays (copies)."""
    return [np.array(w, copy=True) for w in model.get_weights()]


def cached_model(spec: ModelSpec, weights: list[np.ndarray] | None = None, compile: bool = True) -> Any:
    """Return the model for ``spec`` built once in this process, with ``weights`` set if given.

    Args:
        spec: The model description made on the driver.
        weights: Weights to set (``None`` keeps the cached model's current weights).
        compile: Compile the model from the spec's compile config when it is first built.

    Returns:
        The cached Keras model.
    """
    key = f"{spec.model_id}:{int(compile)}"
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            logger.debug("building model %s in this worker", spec.model_id)
            model = spec.build(compile=compile)
            if len(_CACHE) >= _CACHE_LIMIT:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = model
    if weights is not None:
        model.set_weights(weights)
    return model


def clear_cache() -> None:
    """Forget every cached model of this process."""
    with _CACHE_LOCK:
        _CACHE.clear()
