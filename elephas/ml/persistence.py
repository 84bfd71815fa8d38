"""Spark ML persistence for the elephas estimator and transformer.

Layout of a saved stage at ``path`` (local, ``file://``, ``hdfs://``, ``s3a://``, ...)::

    path/metadata/     DefaultParamsWriter.saveMetadata: class, uid, params (JSON), extra metadata
    path/model.keras   the Keras model (architecture, weights, compile config), written through
                       Spark's Hadoop FileSystem API (elephas.utils.fs)
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

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter

from ..engine.session import is_connect
from ..utils import fs

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
MODEL_DIR = "keras_model"
_NOT_PERSISTED = ("custom_objects",)


def _join(path: str, name: str) -> str:
    return str(path).rstrip("/") + "/" + name


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


def write_model_rows(session: Any, model: Any, path: str) -> None:
    """Write ``model`` as ``.keras`` bytes in one binary row of a Parquet directory at ``path``,
    through ``session``'s own writer (no local or Hadoop path on the client)."""
    with tempfile.TemporaryDirectory(prefix="elephas-") as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        model.save(local)
        with open(local, "rb") as handle:
            payload = bytearray(handle.read())
    session.createDataFrame([(payload,)], "model binary").coalesce(1).write.parquet(path)


def read_model_bytes(session: Any, path: str, rows: bool) -> bytes | None:
    """The ``.keras`` bytes saved at ``path`` through ``session``'s reader (``None``: nothing there).

    Args:
        session: The SparkSession.
        path: A Parquet directory of :func:`write_model_rows` (``rows``) or a ``.keras`` file.
        rows: Which of the two ``path`` is.
    """
    from pyspark.errors import AnalysisException

    try:
        if rows:
            first = session.read.parquet(path).first()
            return None if first is None else bytes(first["model"])
        first = session.read.format("binaryFile").load(path).select("content").first()
        return None if first is None else bytes(first["content"])
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc):
            return None
        raise


class ElephasWriter(SessionWriter):
    """Writes Spark metadata plus a ``model.keras`` sidecar (``keras_model/`` rows on Spark Connect)
    for an elephas stage."""

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
        connect = is_connect(self.sparkSession)
        model = instance._persisted_model()
        if model is not None and connect:
            extra["model_store"] = MODEL_DIR
        DefaultParamsWriter.saveMetadata(instance, path, self.sparkSession, extraMetadata=extra, paramMap=params)
        if model is not None:
            if connect:
                write_model_rows(self.sparkSession, model, _join(path, MODEL_DIR))
            else:
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
        model = None
        sidecar = _join(path, MODEL_FILE)
        rows = metadata.get("model_store") == MODEL_DIR
        if rows or is_connect(self.sparkSession):
            payload = read_model_bytes(self.sparkSession, _join(path, MODEL_DIR) if rows else sidecar, rows)
        else:
            payload = None
        if payload is not None or (not rows and not is_connect(self.sparkSession) and fs.exists(sidecar)):
            try:
                with _local_model(sidecar, payload) as local:
                    model = keras.models.load_model(local, custom_objects=self.custom_objects or None)
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


@contextlib.contextmanager
def _local_model(path: str, payload: bytes | None) -> Iterator[str]:
    """A local ``.keras`` file: ``payload`` written to a temporary file, else a local copy of ``path``."""
    if payload is None:
        with fs.local_copy(path) as local:
            yield local
        return
    with tempfile.TemporaryDirectory(prefix="elephas-") as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        with open(local, "wb") as handle:
            handle.write(payload)
        yield local


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
