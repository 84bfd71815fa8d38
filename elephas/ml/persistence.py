"""Spark ML persistence for the elephas stages (estimator, transformer, ``ModelPredictor``).

The layout is :mod:`elephas.saving`'s Spark ML stage: at ``path`` (local, ``file://``, ``hdfs://``,
``s3a://``, ...)::

    path/metadata/     DefaultParamsWriter.saveMetadata: class, uid, params (JSON), extra metadata
    path/model.keras   the Keras model (architecture, weights, compile config)
    path/keras_model/  instead of model.keras on a Spark Connect session (no Hadoop FileSystem on
                       the client): the same bytes as one binary row, written and read through the
                       session's own Parquet writer and reader

A stage saved on either kind of session loads on both (a ``model.keras`` file through the
``binaryFile`` reader on Connect).

``custom_objects`` are Python objects and are never written; pass them when loading
(``load_ml_transformer(path, custom_objects=...)``) or register the classes with
``keras.saving.register_keras_serializable`` so that ``PipelineModel.load`` finds them too.
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.ml.util import DefaultParamsReader, MLReadable, MLReader, MLWritable, MLWriter

from .. import saving
from ..engine.session import is_connect

logger = logging.getLogger(__name__)

_NOT_PERSISTED = ("custom_objects",)


class SessionWriter(MLWriter):
    """An ``MLWriter`` whose ``overwrite()`` also works on a Spark Connect session (where
    ``MLWriter`` reaches for the JVM): there the server deletes the old path."""

    def save(self, path: str) -> None:
        """Save to ``path`` (replacing what is there after ``overwrite()``)."""
        if self.shouldOverwrite and is_connect(self.sparkSession):
            from pyspark.ml.connect.readwrite import RemoteMLWriter

            RemoteMLWriter.handleOverwrite(path, True)
            self.saveImpl(path)
            return
        super().save(path)


class ElephasWriter(SessionWriter):
    """Writes Spark metadata plus a ``model.keras`` sidecar (``keras_model/`` rows on Spark Connect)
    for an elephas stage."""

    def __init__(self, instance: Any) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        """Write ``path/metadata`` and, when the stage holds a model, ``path/model.keras``."""
        instance = self.instance
        params = {p.name: v for p, v in instance._paramMap.items() if p.name not in _NOT_PERSISTED}
        extra = dict(instance._extra_metadata())
        if instance.hasParam("custom_objects"):
            extra["custom_object_names"] = sorted(instance.getOrDefault("custom_objects") or {})
        saving.save_stage(
            instance,
            path,
            self.sparkSession,
            params=params,
            extra=extra,
            model=instance._persisted_model(),
            connect=is_connect(self.sparkSession),
        )


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
        metadata = saving.load_stage_metadata(path, self.sparkSession)
        saved = metadata["class"].rsplit(".", 1)[-1]
        if saved != self.cls.__name__:
            raise ValueError(
                f"Expected a saved {self.cls.__name__} at {path!r}. Received a saved "
                f"{metadata['class']}. Load it with its own class (or load_ml_estimator / "
                "load_ml_transformer)."
            )
        missing = sorted(set(metadata.get("custom_object_names") or []) - set(self.custom_objects))
        instance = self.cls()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata, skipParams=list(_NOT_PERSISTED))
        if self.custom_objects:
            instance._set(custom_objects=self.custom_objects)
        try:
            model = saving.load_stage_model(
                path,
                self.sparkSession,
                metadata,
                connect=is_connect(self.sparkSession),
                custom_objects=self.custom_objects or None,
                compile=self.cls._compile_on_load,
            )
        except (TypeError, ValueError) as exc:
            if missing:
                raise ValueError(
                    f"Loading {path!r} needs the custom objects {missing}. Received "
                    "custom_objects=" + repr(sorted(self.custom_objects)) + ". Pass "
                    "them to load_ml_transformer/load_ml_estimator, or register them "
                    "with keras.saving.register_keras_serializable."
                ) from exc
            raise
        instance._restore(metadata, model)
        return instance


class ElephasWritable(MLWritable):
    """Mixin: ``save(path)`` / ``write()`` through :class:`ElephasWriter`.

    A stage implements ``_persisted_model`` (its Keras model or ``None``), ``_extra_metadata``
    (JSON written next to the params) and ``_restore(metadata, model)`` (called by the reader).
    """

    def write(self) -> ElephasWriter:
        """An :class:`ElephasWriter` for this stage (``.overwrite()`` to replace a saved one)."""
        return ElephasWriter(self)

    def _extra_metadata(self) -> dict[str, Any]:
        return {}

    def _persisted_model(self) -> Any:  # pragma: no cover - overridden
        return None


class ElephasReadable(MLReadable):
    """Mixin: ``load(path)`` / ``read()`` through :class:`ElephasReader`."""

    # Whether loading restores the model's compile config (training stages need it).
    _compile_on_load = True

    @classmethod
    def read(cls) -> ElephasReader:
        """An :class:`ElephasReader` for this class."""
        return ElephasReader(cls)
