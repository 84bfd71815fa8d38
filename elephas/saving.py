"""Save and load a Keras model plus a JSON config, on a local path or any Hadoop-compatible URI.

Every elephas object that holds a Keras model persists through this module, in one of three layouts:

``model file``
    One ``.keras`` or ``.h5`` file with the config inside it (``SparkModel.save``): a ``.keras`` file
    is a zip archive and gets an ``elephas.json`` member; an ``.h5`` file gets an ``elephas_config``
    attribute on its root group. Keras itself ignores both, so the file also loads with
    ``keras.models.load_model``. :func:`save_model_with_config` / :func:`read_model_with_config`.
``Spark ML stage``
    A directory: ``metadata/`` written by ``DefaultParamsWriter.saveMetadata`` (class, uid, params and
    the extra metadata as JSON) plus the model in a ``model.keras`` sidecar (the ML stages and
    ``ModelPredictor``). :func:`save_stage` / :func:`load_stage_metadata` / :func:`load_stage_model`.
``directory``
    JSON files and ``.keras`` files side by side (``VotingModel``). :func:`write_json` /
    :func:`read_json` with :func:`save_model_file` / :func:`load_model_file`.

Where the bytes go: a plain local path is written directly; a URI (``hdfs://``, ``s3a://``,
``file://``, ...) goes through the JVM Hadoop ``FileSystem`` of the active SparkContext, so every file
system Spark is configured for works; a ``file://`` URI without a SparkContext is a local path.

On a Spark Connect session the client has no Hadoop ``FileSystem``, so a stage's model goes through the
session's own writer instead: the ``.keras`` bytes as one binary row of a Parquet directory
``keras_model/`` (the metadata then says ``"model_store": "keras_model"``). A stage saved on either kind
of session loads on both, and so does the ``keras_model/`` directory that ``ModelPredictor`` wrote
before it used the stage layout.

Loading never unpickles anything: models go through ``keras.models.load_model`` (whose safe mode
refuses serialized Python lambdas), configs through ``json``.

Example:
    >>> import keras, os, tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> save_model_with_config(model, {"mode": "synchronous"}, path)
    >>> read_model_with_config(path)[1]
    {'mode': 'synchronous'}
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

from .utils import fs

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_DIR",
    "MODEL_FILE",
    "join",
    "load_model_file",
    "load_stage_metadata",
    "load_stage_model",
    "model_suffix",
    "read_json",
    "read_model_with_config",
    "save_model_file",
    "save_model_with_config",
    "save_stage",
    "write_json",
]

MODEL_FILE = "model.keras"
MODEL_DIR = "keras_model"
_CONFIG_MEMBER = "elephas.json"
_CONFIG_ATTR = "elephas_config"
_SUFFIXES = (".keras", ".h5", ".hdf5")


def join(path: str, name: str) -> str:
    """``name`` inside the directory ``path`` (a local path or a URI)."""
    return str(path).rstrip("/") + "/" + name


def model_suffix(path: str) -> str:
    """The model format of ``path``: ``'.keras'``, ``'.h5'`` or ``'.hdf5'``.

    Raises:
        ValueError: ``path`` ends in none of them.
    """
    lower = str(path).lower().rstrip("/")
    for ext in _SUFFIXES:
        if lower.endswith(ext):
            return ext
    raise ValueError(f"The path must end in .keras or .h5. Received: {path!r}.")


def _build_optimizer(model: Any) -> None:
    # Synchronous training never steps the driver's optimizer; build it so that the file holds a
    # complete optimizer state and loading does not warn about missing variables.
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


# ---------------------------------------------------------------------------------- model file


def save_model_with_config(model: Any, config: dict[str, Any], path: str, overwrite: bool = False) -> None:
    """Write ``model`` to one ``.keras`` or ``.h5`` file with ``config`` (JSON) inside it.

    Args:
        model: The Keras model.
        config: A JSON-serializable dict stored with it.
        path: Local path or Hadoop-compatible URI ending in ``.keras`` or ``.h5``.
        overwrite: Replace a file already at ``path``.

    Raises:
        ValueError: ``path`` has another suffix.
        TypeError: ``config`` is not JSON-serializable.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    ext = model_suffix(path)
    payload = json.dumps(config)
    _build_optimizer(model)
    with fs.local_target(path, overwrite) as local:
        model.save(local)
        if ext == ".keras":
            with zipfile.ZipFile(local, "a") as archive:
                archive.writestr(_CONFIG_MEMBER, payload)
        else:
            import h5py

            with h5py.File(local, "a") as handle:
                handle.attrs[_CONFIG_ATTR] = payload
    logger.info("saved model to %s", path)


def read_model_with_config(path: str, custom_objects: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Load a file written by :func:`save_model_with_config` (or a plain Keras file: config ``{}``).

    Args:
        path: Local path or Hadoop-compatible URI of a ``.keras`` or ``.h5`` file.
        custom_objects: Objects needed to deserialize unregistered custom layers or losses.

    Returns:
        ``(model, config)``.

    Raises:
        FileNotFoundError: Nothing at ``path``.
    """
    import keras

    ext = model_suffix(path)
    with fs.local_copy(path) as local:
        model = keras.models.load_model(local, custom_objects=custom_objects)
        config: dict[str, Any] = {}
        if ext == ".keras":
            with zipfile.ZipFile(local) as archive:
                if _CONFIG_MEMBER in archive.namelist():
                    config = json.loads(archive.read(_CONFIG_MEMBER))
        else:
            import h5py

            with h5py.File(local, "r") as handle:
                if _CONFIG_ATTR in handle.attrs:
                    config = json.loads(handle.attrs[_CONFIG_ATTR])
    return model, config


def save_model_file(model: Any, path: str, overwrite: bool = False) -> None:
    """Write ``model`` as a ``.keras`` file at ``path`` (local or a Hadoop-compatible URI).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    with fs.local_target(path, overwrite) as local:
        model.save(local)


def load_model_file(path: str, custom_objects: dict[str, Any] | None = None, compile: bool = True) -> Any:
    """The Keras model in the ``.keras`` file at ``path`` (local or a Hadoop-compatible URI).

    Raises:
        FileNotFoundError: Nothing at ``path``.
    """
    import keras

    with fs.local_copy(path) as local:
        return keras.models.load_model(local, custom_objects=custom_objects, compile=compile)


def write_json(value: Any, path: str, overwrite: bool = False) -> None:
    """Write ``value`` as a JSON file at ``path`` (local or a Hadoop-compatible URI).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    text = json.dumps(value, indent=2)
    with fs.local_target(path, overwrite) as local:
        with open(local, "w", encoding="utf-8") as handle:
            handle.write(text)


def read_json(path: str) -> Any:
    """The JSON value in the file at ``path`` (local or a Hadoop-compatible URI).

    Raises:
        FileNotFoundError: Nothing at ``path``.
    """
    with fs.local_copy(path) as local, open(local, encoding="utf-8") as handle:
        return json.load(handle)


# ------------------------------------------------------------------------------ Spark ML stage


def save_stage(
    instance: Any,
    path: str,
    session: Any,
    *,
    params: dict[str, Any],
    extra: dict[str, Any],
    model: Any,
    connect: bool,
) -> None:
    """Write a Spark ML stage: ``path/metadata`` plus ``model`` in a ``model.keras`` sidecar.

    Args:
        instance: The stage (its class and uid go into the metadata).
        path: The stage directory (local or a Hadoop-compatible URI).
        session: The SparkSession that writes the metadata.
        params: The params to record (name -> JSON value).
        extra: More JSON metadata.
        model: The Keras model, or ``None`` for a stage without one.
        connect: Whether ``session`` is a Spark Connect session: the model then goes through the
            session's Parquet writer as one binary row under ``path/keras_model``.
    """
    from pyspark.ml.util import DefaultParamsWriter

    extra = dict(extra)
    if model is not None and connect:
        extra["model_store"] = MODEL_DIR
    DefaultParamsWriter.saveMetadata(instance, path, session, extraMetadata=extra, paramMap=params)
    if model is None:
        return
    if connect:
        _write_model_row(session, model, join(path, MODEL_DIR))
    else:
        save_model_file(model, join(path, MODEL_FILE), overwrite=True)
    logger.info("saved %s to %s", type(instance).__name__, path)


def load_stage_metadata(path: str, session: Any) -> dict[str, Any]:
    """The metadata of the stage saved at ``path`` (``DefaultParamsReader.loadMetadata``)."""
    from pyspark.ml.util import DefaultParamsReader

    return DefaultParamsReader.loadMetadata(path, session)


def load_stage_model(
    path: str,
    session: Any,
    metadata: dict[str, Any],
    *,
    connect: bool,
    custom_objects: dict[str, Any] | None = None,
    compile: bool = True,
) -> Any:
    """The Keras model of the stage saved at ``path``, or ``None`` when it was saved without one.

    Args:
        path: The stage directory.
        session: The SparkSession that reads it.
        metadata: What :func:`load_stage_metadata` returned.
        connect: Whether ``session`` is a Spark Connect session (no Hadoop ``FileSystem`` on the
            client: files are read through the session's own readers).
        custom_objects: Objects needed to deserialize unregistered custom layers or losses.
        compile: Restore the saved compile config.
    """
    sidecar, rows = join(path, MODEL_FILE), join(path, MODEL_DIR)
    if metadata.get("model_store") == MODEL_DIR:
        payload = _read_model_bytes(session, rows, as_rows=True)
    elif connect:
        payload = _read_model_bytes(session, sidecar, as_rows=False)
        if payload is None:
            payload = _read_model_bytes(session, rows, as_rows=True)
    elif fs.exists(sidecar):
        return load_model_file(sidecar, custom_objects, compile)
    elif fs.exists(rows):  # a ModelPredictor saved before it used the stage layout
        payload = _read_model_bytes(session, rows, as_rows=True)
    else:
        payload = None
    if payload is None:
        return None
    with _local_file(payload) as local:
        import keras

        return keras.models.load_model(local, custom_objects=custom_objects, compile=compile)


def _write_model_row(session: Any, model: Any, path: str) -> None:
    """``model`` as ``.keras`` bytes in one binary row of a Parquet directory, through ``session``."""
    with tempfile.TemporaryDirectory(prefix="elephas-") as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        model.save(local)
        with open(local, "rb") as handle:
            payload = bytearray(handle.read())
    session.createDataFrame([(payload,)], "model binary").coalesce(1).write.parquet(path)


def _read_model_bytes(session: Any, path: str, as_rows: bool) -> bytes | None:
    """The ``.keras`` bytes at ``path`` read through ``session`` (``None``: nothing there).

    ``path`` is a Parquet directory of :func:`_write_model_row` (``as_rows``) or a ``.keras`` file.
    """
    from pyspark.errors import AnalysisException

    try:
        if as_rows:
            first = session.read.parquet(path).first()
            return None if first is None else bytes(first["model"])
        first = session.read.format("binaryFile").load(path).select("content").first()
        return None if first is None else bytes(first["content"])
    except AnalysisException as exc:
        if "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc):
            return None
        raise


@contextlib.contextmanager
def _local_file(payload: bytes) -> Iterator[str]:
    """``payload`` in a temporary local ``.keras`` file."""
    with tempfile.TemporaryDirectory(prefix="elephas-") as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        with open(local, "wb") as handle:
            handle.write(payload)
        yield local
