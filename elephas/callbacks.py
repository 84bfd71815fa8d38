"""Keras checkpoint callbacks that write to any Hadoop-compatible URI (hdfs://, s3a://, file://).

``keras.callbacks.ModelCheckpoint`` and ``keras.callbacks.BackupAndRestore`` write through
``tf.io.gfile`` when a path has a scheme: that needs the TensorFlow backend and a TensorFlow build
with the file system compiled in (``hdfs://`` needs libhdfs; ``s3a://`` is not one of them). These
subclasses let Keras write to a local directory and copy what changed to the remote directory with
the Hadoop ``FileSystem`` of the active SparkContext (:mod:`elephas.utils.fs`, as
:meth:`elephas.spark_model.SparkModel.save` does), so every file system Spark is configured for works,
whatever the backend. Local paths are passed to Keras unchanged.

They run on the driver between epochs, like every callback given to ``SparkModel.fit``.

Example:
    >>> from elephas.callbacks import BackupAndRestore, ModelCheckpoint
    >>> callbacks = [BackupAndRestore("hdfs:///jobs/run1/backup"),  # doctest: +SKIP
    ...              ModelCheckpoint("hdfs:///jobs/run1/model-{epoch:02d}.keras")]
    >>> spark_model.fit(rdd, epochs=10, callbacks=callbacks)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
from typing import Any

import keras

from .utils import fs

logger = logging.getLogger(__name__)


class _Mirror:
    """A local directory whose changed files are copied to a remote directory (and back)."""

    def __init__(self, remote_dir: str) -> None:
        self.remote_dir = remote_dir.rstrip("/")
        self.local_dir = tempfile.mkdtemp(prefix="elephas-ckpt-")
        self._sent: dict[str, float] = {}

    def upload_changed(self) -> None:
        for name in sorted(os.listdir(self.local_dir)):
            local = os.path.join(self.local_dir, name)
            stamp = os.path.getmtime(local)
            if self._sent.get(name) == stamp:
                continue
            target = f"{self.remote_dir}/{name}"
            fs.upload(local, target)  # overwrites
            self._sent[name] = stamp
            logger.debug("checkpoint file %s copied to %s", name, target)

    def download(self) -> None:
        if not fs.exists(self.remote_dir):
            return
        with fs.local_copy(self.remote_dir) as local:
            for name in os.listdir(local):
                src = os.path.join(local, name)
                (shutil.copytree if os.path.isdir(src) else shutil.copyfile)(src, os.path.join(self.local_dir, name))
                self._sent[name] = os.path.getmtime(os.path.join(self.local_dir, name))
        logger.info("restoring the backup from %s", self.remote_dir)

    def close(self) -> None:
        shutil.rmtree(self.local_dir, ignore_errors=True)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` with ``backup_dir`` on any Hadoop-compatible URI.

    After every backup the files go to ``backup_dir``; at the start of ``fit`` a backup found there
    restores the driver model's weights (and its optimizer's variables) and the epoch to resume
    from. With ``delete_checkpoint`` (default) a fit that ends normally deletes the backup.

    What a restart restores: the model's weights and the epoch. What it does not: the synchronous
    mode's server momentum (``server_optimizer`` 'momentum'/'nesterov', the default with several
    partitions) restarts from zero, and asynchronous servers hold no state across fits anyway.

    Args:
        backup_dir: A local path or a URI (``hdfs://``, ``s3a://``, ``file://``, ...).
        **kwargs: ``save_freq``, ``double_checkpoint``, ``delete_checkpoint`` as in Keras.

    Example:
        >>> backup = BackupAndRestore("file:///tmp/run1/backup")  # doctest: +SKIP
        >>> spark_model.fit(rdd, epochs=10, callbacks=[backup])  # doctest: +SKIP
    """

    def __init__(self, backup_dir: str, **kwargs: Any) -> None:
        self._mirror = None if fs.is_local(backup_dir) else _Mirror(backup_dir)
        super().__init__(self._mirror.local_dir if self._mirror else backup_dir, **kwargs)
        self.remote_dir = backup_dir

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._mirror is not None:
            self._mirror.download()
        super().on_train_begin(logs)

    def _save_model(self) -> None:
        super()._save_model()
        if self._mirror is not None:
            self._mirror.upload_changed()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_end(logs)
        if self._mirror is not None and self.delete_checkpoint:
            fs.remove(self.remote_dir)


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``keras.callbacks.ModelCheckpoint`` with ``filepath`` on any Hadoop-compatible URI.

    The file name may hold the usual ``{epoch}``/``{loss}`` placeholders; its directory is the
    remote directory the files are copied to after Keras wrote them locally.

    Args:
        filepath: A local path or a URI ending in ``.keras`` (or ``.weights.h5`` with
            ``save_weights_only=True``).
        **kwargs: Every other argument of ``keras.callbacks.ModelCheckpoint``.

    Example:
        >>> checkpoint = ModelCheckpoint("hdfs:///runs/m-{epoch:02d}.keras", save_best_only=True)  # doctest: +SKIP
    """

    def __init__(self, filepath: str, **kwargs: Any) -> None:
        filepath = str(filepath)
        self._mirror = None
        if not fs.is_local(filepath):
            remote_dir, name = posixpath.split(filepath)
            self._mirror = _Mirror(remote_dir)
            filepath = os.path.join(self._mirror.local_dir, name)
        super().__init__(filepath, **kwargs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if self._mirror is not None:
            self._mirror.upload_changed()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        if self._mirror is not None and self.save_freq != "epoch":
            self._mirror.upload_changed()
