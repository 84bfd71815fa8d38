"""Arrays an epoch stage starts from (the center, the server step's state): in the closure, or as an artifact.

A DataFrame stage on Spark Connect reaches the server in one gRPC message, which PySpark's client caps
at 128 MiB, and the server's driver broadcasts the function as the stage's task binary, holding several
times its size in heap. Arrays up to :data:`ARTIFACT_THRESHOLD_BYTES` therefore travel in the function's
closure; on a Connect session, larger ones are encoded with the project's wire codec into one file that
the client uploads as a session artifact (``spark.addArtifacts(path, file=True)``, streamed in small
chunks, never one message) and every task reads from the session's files directory
(``SparkFiles.getRootDirectory()``), checking its SHA-256 before decoding. Nothing is unpickled.

Artifacts cannot be removed or overwritten by a client: every upload gets a fresh name and stays on the
server (and on the executors that fetched it) until the session ends.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..parameter import codec

logger = logging.getLogger(__name__)

ARTIFACT_THRESHOLD_BYTES = 32 << 20
"""Arrays above this many bytes go to a stage as a session artifact instead of in its closure."""
ARTIFACT_PREFIX = "elephas-weights-"


@dataclass(frozen=True)
class StageArrays:
    """Arrays shipped to the tasks of a stage (picklable; small in a closure whatever the model's size).

    Attributes:
        nbytes: The arrays' size.
        meta: Plain values that travel with them.
        arrays: The arrays themselves, when they travel in the closure (else ``None``).
        artifact: The artifact's file name among the session's files, when they travel as one.
        digest: The SHA-256 (hex) of the artifact file.
    """

    nbytes: int
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: tuple[np.ndarray, ...] | None = None
    artifact: str | None = None
    digest: str | None = None

    @property
    def in_closure(self) -> bool:
        """Whether the arrays travel in the function's closure."""
        return self.artifact is None

    def load(self) -> list[np.ndarray]:
        """The arrays, in a task (reads and checks the artifact file when there is one).

        Raises:
            FileNotFoundError: When the artifact is not among the session's files on this executor.
            ValueError: When the file's SHA-256 is not the one shipped.
        """
        if self.artifact is None:
            return list(self.arrays or ())
        from pyspark import SparkFiles

        path = os.path.join(SparkFiles.getRootDirectory(), self.artifact)
        with open(path, "rb") as handle:
            payload = handle.read()
        digest = hashlib.sha256(payload).hexdigest()
        if digest != self.digest:
            raise ValueError(f"Expected the artifact {self.artifact} with SHA-256 {self.digest}. Received: {digest}.")
        return [np.asarray(a) for a in codec.decode(payload).arrays]


def ship_arrays(
    session: Any,
    arrays: Sequence[np.ndarray],
    meta: dict[str, Any] | None = None,
    threshold: int | None = None,
) -> StageArrays:
    """Make ``arrays`` available to the tasks of the next stage.

    Args:
        session: The SparkSession the stage runs on. On a classic session the arrays always travel in
            the closure: PySpark broadcasts large closures there (and a classic ``addArtifacts`` serves the
            client's local file, which would have to outlive every stage).
        arrays: The arrays.
        meta: Plain values to keep with them.
        threshold: Largest size kept in the closure (default: :data:`ARTIFACT_THRESHOLD_BYTES`, read at call
            time).

    Returns:
        The :class:`StageArrays` to put in the stage's closure.

    Example:
        >>> ship_arrays(None, [np.zeros(4, np.float32)]).in_closure
        True
    """
    from .session import is_connect

    arrays = [np.asarray(a) for a in arrays]
    size = sum(int(a.nbytes) for a in arrays)
    limit = ARTIFACT_THRESHOLD_BYTES if threshold is None else int(threshold)
    if size <= limit or not is_connect(session):  # PySpark broadcasts a classic session's large closures itself
        return StageArrays(size, dict(meta or {}), arrays=tuple(arrays))
    started = time.perf_counter()
    payload = codec.encode(arrays, codec.KIND_PARAMETERS)
    name = f"{ARTIFACT_PREFIX}{uuid.uuid4().hex}.bin"
    folder = tempfile.mkdtemp(prefix="elephas-artifact-")
    try:
        path = os.path.join(folder, name)
        with open(path, "wb") as handle:
            handle.write(payload)
        digest = hashlib.sha256(payload).hexdigest()
        session.addArtifacts(path, file=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    logger.info(
        "%.1f MiB of weights shipped as the session artifact %s (above %.1f MiB, the closure's share) in %.2f s",
        size / (1 << 20),
        name,
        limit / (1 << 20),
        time.perf_counter() - started,
    )
    return StageArrays(size, dict(meta or {}), artifact=name, digest=digest)
