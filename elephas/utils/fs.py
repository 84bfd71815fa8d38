"""Read and write files on local paths or any Hadoop-compatible URI (hdfs://, s3a://, file://).

Local paths are handled directly; anything with a URI scheme goes through the JVM's Hadoop
``FileSystem`` of the active SparkContext, so every file system Spark is configured for works. A
``file://`` URI with no SparkContext active (no Spark, or only a Spark Connect client) is a local path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname


def is_local(path: str) -> bool:
    """Whether ``path`` is a plain local path (no URI scheme, or a Windows drive letter)."""
    scheme = urlparse(str(path)).scheme
    return scheme == "" or len(scheme) == 1


def _active_context() -> Any:
    try:
        from pyspark import SparkContext
    except ImportError:  # pragma: no cover - pyspark is a dependency
        return None
    return SparkContext._active_spark_context


def local_path(path: str) -> str | None:
    """The local file system path that ``path`` names, or ``None`` when it goes through Hadoop.

    Example:
        >>> local_path("models/m.keras")
        'models/m.keras'
    """
    if is_local(path):
        return str(path)
    parsed = urlparse(str(path))
    if parsed.scheme == "file" and _active_context() is None:
        return url2pathname(parsed.path)
    return None


def _hadoop(path: str) -> tuple[Any, Any]:
    sc = _active_context()
    if sc is None:
        raise RuntimeError(
            f"Reading or writing {path!r} needs an active SparkContext "
            "(Hadoop-compatible URIs go through Spark's Hadoop FileSystem API)."
        )
    jvm = sc._jvm
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = jpath.getFileSystem(sc._jsc.hadoopConfiguration())
    return fs, jpath


def exists(path: str) -> bool:
    """Whether a file or directory exists at ``path``."""
    local = local_path(path)
    if local is not None:
        return os.path.exists(local)
    fs, jpath = _hadoop(path)
    return bool(fs.exists(jpath))


def remove(path: str) -> None:
    """Delete a file or directory tree at ``path`` if it exists."""
    local = local_path(path)
    if local is not None:
        if os.path.isdir(local):
            shutil.rmtree(local)
        elif os.path.exists(local):
            os.remove(local)
        return
    fs, jpath = _hadoop(path)
    if fs.exists(jpath):
        fs.delete(jpath, True)


def upload(source: str, path: str) -> None:
    """Copy a local file or directory ``source`` to ``path`` (overwriting)."""
    target = local_path(path)
    if target is not None:
        parent = os.path.dirname(os.path.abspath(target))
        os.makedirs(parent, exist_ok=True)
        if os.path.isdir(source):
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)
        return
    fs, jpath = _hadoop(path)
    jvm = _active_context()._jvm
    fs.copyFromLocalFile(False, True, jvm.org.apache.hadoop.fs.Path(os.path.abspath(source)), jpath)


@contextmanager
def local_copy(path: str) -> Iterator[str]:
    """Yield a local path holding the contents of ``path`` (downloaded if remote)."""
    local = local_path(path)
    if local is not None:
        if not os.path.exists(local):
            raise FileNotFoundError(f"No file or directory at {path!r}.")
        yield local
        return
    fs, jpath = _hadoop(path)
    if not fs.exists(jpath):
        raise FileNotFoundError(f"No file or directory at {path!r}.")
    tmp = tempfile.mkdtemp(prefix="elephas-")
    try:
        target = os.path.join(tmp, os.path.basename(urlparse(path).path.rstrip("/")) or "data")
        jvm = _active_context()._jvm
        fs.copyToLocalFile(False, jpath, jvm.org.apache.hadoop.fs.Path(target), True)
        yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def local_target(path: str, overwrite: bool) -> Iterator[str]:
    """Yield a local file path to write; on success it ends up at ``path``.

    Raises:
        FileExistsError: When ``path`` exists and ``overwrite`` is false.
    """
    if exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} already exists. Pass overwrite=True to replace it.")
    tmp = tempfile.mkdtemp(prefix="elephas-")
    try:
        name = os.path.basename(urlparse(str(path)).path.rstrip("/")) or "model"
        local = os.path.join(tmp, name)
        yield local
        if exists(path):
            remove(path)
        upload(local, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
