"""Spark ML persistence for the elephas estimator and transformer.

Layout of a saved stage at ``path`` (local, ``file://``, ``hdfs://``, ``s3a://``, ...)::

    path/metadata/     DefaultParamsWriter.saveMetadata: class, uid, params (JSON), extra metadata
    path/model.keras   the Keras model (architecture, weights, compile config), written through
                       Spark's Hadoop FileSystem API (elephas.utils.fs)

``custom_objects`` are Python objects and are never written; pass them when loading
(``load_ml_transformer(path, custom_objects=...)``) or register the classes with
``keras.saving.register_keras_serializable`` so that ``PipelineModel.load`` finds them too.
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter

from ..utils import fs

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
_NOT_PERSISTED = ("custom_objects",)


def _join(path: str, name: str) -> str:
    return str(path).rstrip("/") + "/" + name


class ElephasWriter(MLWriter):
    """Writes Spark metadata plus a ``model.keras`` sidecar for an elephas stage."""

    def __init__(self, instance: Any) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        """Write ``path/metadata`` and, when the stage holds weights, ``path/model.keras``."""
        instance = self.instance
        params = {p.name: v for p, v in instance._paramMap.items() if p.name not in _NOT_PERSISTED}
        extra = dict(instance._extra_metadata())
        custom = instance.getOrDefault("custom_objects") or {}
        extra["custom_object_names"] = sorted(custom)
        DefaultParamsWriter.saveMetadata(instance, path, self.sparkSession, extraMetadata=extra,
                                         paramMap=params)
        model = instance._persisted_model()
        if model is not None:
            target = _join(path, MODEL_FILE)
            with fs.local_target(target, overwrite=True) as local:
                model.save(local)
            logger.info("saved %s to %s", type(instance).__name__, path)


class ElephasReader(MLReader):
    """Reads what :class:`ElephasWriter` wrote.

    Args:
        cls: The class to load (checked against the saved metadata).
        custom_objects: Objects needed to deserialize unregistered custom layers or losses.
    """

    def __init__(self, cls: type, custom_objects: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.cls = cls
        self.custom_objects = dict(custom_objects or {})

    def load(self, path: str) -> Any:
        """Load the stage saved at ``path``."""
        import keras

        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        saved = metadata["class"].rsplit(".", 1)[-1]
        if saved != self.cls.__name__:
            raise ValueError(f"Expected a saved {self.cls.__name__} at {path!r}. Received a saved "
                             f"{metadata['class']}. Load it with its own class (or load_ml_estimator / "
                             "load_ml_transformer).")
        missing = sorted(set(metadata.get("custom_object_names") or []) - set(self.custom_objects))
        instance = self.cls()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata, skipParams=list(_NOT_PERSISTED))
        if self.custom_objects:
            instance._set(custom_objects=self.custom_objects)
        model = None
        sidecar = _join(path, MODEL_FILE)
        if fs.exists(sidecar):
            try:
                with fs.local_copy(sidecar) as local:
                    model = keras.models.load_model(local, custom_objects=self.custom_objects or None)
            except (TypeError, ValueError) as exc:
                if missing:
                    raise ValueError(f"Loading {path!r} needs the custom objects {missing}. Received "
                                     "custom_objects=" + repr(sorted(self.custom_objects)) + ". Pass "
                                     "them to load_ml_transformer/load_ml_estimator, or register them "
                                     "with keras.saving.register_keras_serializable.") from exc
                raise
        instance._restore(metadata, model)
        return instance


class ElephasWritable(MLWritable):
    """Mixin: ``save(path)`` / ``write()`` through :class:`ElephasWriter`."""

    def write(self) -> ElephasWriter:
        """An :class:`ElephasWriter` for this stage (``.overwrite()`` to replace a saved one)."""
        return ElephasWriter(self)

    def _extra_metadata(self) -> dict[str, Any]:
        return {}

    def _persisted_model(self) -> Any:  # pragma: no cover - overridden
        return None


class ElephasReadable(MLReadable):
    """Mixin: ``load(path)`` / ``read()`` through :class:`ElephasReader`."""

    @classmethod
    def read(cls) -> ElephasReader:
        """An :class:`ElephasReader` for this class."""
        return ElephasReader(cls)
