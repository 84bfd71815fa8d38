"""Read and write files on local paths or any Hadoop-compatible URI (hdfs://, s3a://, file://).

Local paths are handled directly; anything with a URI scheme goes through the JVM's Hadoop
``FileSystem`` of the active SparkContext, so every file system Spark is configured for works.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse


def is_local(path: str) -> bool:
    """Whether ``path`` is a plain local path (no URI scheme, or a Windows drive letter)."""
    scheme = urlparse(str(path)).scheme
    return scheme == "" or len(scheme) == 1


def _hadoop(path: str) -> tuple[Any, Any]:
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
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
    if is_local(path):
        return os.path.exists(path)
    fs, jpath = _hadoop(path)
    return bool(fs.exists(jpath))


def remove(path: str) -> None:
    """Delete a file or directory tree at ``path`` if it exists."""
    if is_local(path):
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        return
    fs, jpath = _hadoop(path)
    if fs.exists(jpath):
        fs.delete(jpath, True)


def upload(local_path: str, path: str) -> None:
    """Copy a local file or directory to ``path`` (overwriting)."""
    if is_local(path):
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        if os.path.isdir(local_path):
            shutil.copytree(local_path, path, dirs_exist_ok=True)
        else:
            shutil.copyfile(local_path, path)
        return
    from pyspark import SparkContext

    fs, jpath = _hadoop(path)
    jvm = SparkContext._active_spark_context._jvm
    fs.copyFromLocalFile(False, True, jvm.org.apache.hadoop.fs.Path(os.path.abspath(local_path)), jpath)


@contextmanager
def local_copy(path: str) -> Iterator[str]:
    """Yield a local path holding the contents of ``path`` (downloaded if remote)."""
    if is_local(path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"No file or directory at {path!r}.")
        yield path
        return
    from pyspark import SparkContext

    fs, jpath = _hadoop(path)
    if not fs.exists(jpath):
        raise FileNotFoundError(f"No file or directory at {path!r}.")
    tmp = tempfile.mkdtemp(prefix="elephas-")
    try:
        target = os.path.join(tmp, os.path.basename(urlparse(path).path.rstrip("/")) or "data")
        jvm = SparkContext._active_spark_context._jvm
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
