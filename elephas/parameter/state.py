"""The parameter server's state: center weights, version counter, lock policy and records.

One :class:`ServerState` lives in the driver and is shared by every transport. Updates go
through the strategy's ``server_apply`` under the strategy's lock policy: ``locked=True`` reads
the staleness ``n - u``, applies and bumps the counter under one lock; ``locked=False``
(hogwild) applies without it (only the counter itself is protected).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from elephas.parameter import codec
from elephas.parameter.buffers import BufferPool

logger = logging.getLogger(__name__)


class UpdateRejected(ValueError):
    """An update the server refused (wrong shapes or dtypes, non-finite values, bad metadata).

    Attributes:
        status: The HTTP status to answer with.
        reason: Short machine-readable reason, counted in the statistics.
    """

    def __init__(self, message: str, status: int = 400, reason: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class WindowRecord:
    """What a worker reported with one pushed update (one communication window).

    Attributes:
        worker_id: The worker (usually the partition index) that pushed.
        attempt_id: The Spark task attempt that pushed.
        epoch: The epoch the window belongs to.
        samples: Samples trained in the window.
        metrics: Loss and metric values of the window.
        timestamp: Server time the update was applied (seconds since the epoch).
        version: Server version after the update was applied.
        staleness: Updates applied between the worker's pull and this update.
    """

    worker_id: str
    attempt_id: str
    epoch: int
    samples: int
    metrics: dict[str, float]
    timestamp: float
    version: int
    staleness: int

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict."""
        return asdict(self)


@dataclass
class _WorkerStats:
    updates: int = 0
    samples: int = 0
    refused: int = 0
    attempts: set[str] = field(default_factory=set)


class ServerState:
    """Center weights, version counter and per-worker statistics shared by all transports.

    Args:
        weights: Initial center weights (copied).
        strategy: An :class:`~elephas.engine.strategies.base.Strategy`; its ``server_apply`` folds
            updates in and its ``locked`` attribute picks the lock policy.
        max_records: Window records kept at most (the oldest are dropped beyond it).

    Example:
        >>> import numpy as np
        >>> from elephas.engine.strategies.base import Strategy
        >>> state = ServerState([np.zeros(2, np.float32)], Strategy())
        >>> state.apply([np.ones(2, np.float32)], worker_id="0", attempt_id="a", version_seen=0)
        1
        >>> state.pull()[0][0].tolist(), state.version
        ([1.0, 1.0], 1)
    """

    def __init__(self, weights: Sequence[np.ndarray], strategy: Any, max_records: int = 1_000_000) -> None:
        self._center = [np.array(w, copy=True, order="C") for w in weights]
        for w in self._center:
            codec.wire_dtype(w.dtype)
        self.spec: list[tuple[tuple[int, ...], np.dtype]] = [(w.shape, w.dtype) for w in self._center]
        self.nbytes = sum(w.nbytes for w in self._center)
        self.strategy = strategy
        self.locked = bool(getattr(strategy, "locked", True))
        self.max_records = max_records
        self._apply_lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self._version = 0
        self._records: list[WindowRecord] = []
        self._records_dropped = 0
        self._workers: dict[str, _WorkerStats] = defaultdict(_WorkerStats)
        self._attempt_updates: Counter[str] = Counter()
        self._failed_attempts: set[str] = set()
        self._refused: Counter[str] = Counter()
        self._bytes_in = 0
        self._bytes_out = 0
        self._payload_cache: dict[str, tuple[int, bytearray | np.ndarray]] = {}
        self._payloads = BufferPool()  # encoded centers, reused once no send refers to them
        self._scratch = threading.local()  # lock-free rules: where a result is checked first
        if self.locked:  # each version of the center lives in the payload pulls of it send
            self._center = self._publish(self._center, None, 0)
        self.started_at = time.time()

    # ----- reading --------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """Number of updates applied so far."""
        return self._version

    def pull(self) -> tuple[list[np.ndarray], int]:
        """A consistent copy of the center weights and the version it corresponds to."""
        with self._lock_for_read():
            return [w.copy() for w in self._center], self._version

    def encoded_parameters(self, compression: str = "none") -> tuple[bytearray | np.ndarray, int]:
        """The center weights encoded for the wire, cached per version and compression.

        Args:
            compression: Wire compression (see :mod:`elephas.parameter.codec`).

        Returns:
            ``(payload, version)``; the payload must not be modified.
        """
        cached = self._payload_cache.get(compression)
        if cached is not None and cached[0] == self._version:  # always so for locked + 'none'
            return cached[1], cached[0]
        if compression == "none":
            with self._lock_for_read():
                version = self._version
                payload = codec.encode(
                    self._center, codec.KIND_PARAMETERS, "none", {"version": version}, allocate=self._payloads.get
                )
        else:
            weights, version = self.pull()
            payload = codec.encode(weights, codec.KIND_PARAMETERS, compression, {"version": version})
        self._payload_cache[compression] = (version, payload)
        return payload, version

    def set_center(self, weights: Sequence[np.ndarray]) -> bool:
        """Make ``weights`` the center, as a new version, when they differ from it.

        Called by the driver between epochs, when no task runs: a callback (``BackupAndRestore``)
        may have set the driver model's weights.

        Returns:
            Whether the center changed.
        """
        with self._apply_lock:
            if all(np.array_equal(c, w) for c, w in zip(self._center, weights)):
                return False
            new = [np.array(w, dtype=c.dtype, copy=True, order="C") for c, w in zip(self._center, weights)]
            self._center = self._publish(new, None, self._version + 1) if self.locked else new
            self._version += 1
            return True

    def _lock_for_read(self) -> threading.Lock:
        return self._apply_lock if self.locked else self._meta_lock

    # ----- writing --------------------------------------------------------------------------
    def check_update(self, update: Sequence[np.ndarray], finite: bool = True) -> None:
        """Check an update against the model: count, shapes, dtypes and finiteness.

        Args:
            update: The arrays a worker sent.
            finite: Also check that the values are finite (:meth:`apply` checks the center the
                update produces instead, which is non-finite when the update is, under every
                rule of this package, and costs one pass over the model instead of two).

        Raises:
            UpdateRejected: With status 400 for wrong shapes/dtypes (reason ``'shape'`` or
                ``'dtype'``) and 422 for NaN or infinite values (reason ``'nonfinite'``).
        """
        if len(update) != len(self.spec):
            raise UpdateRejected(f"Expected {len(self.spec)} arrays, received {len(update)}.", reason="shape")
        for i, (u, (shape, dtype)) in enumerate(zip(update, self.spec)):
            if u.shape != shape:
                raise UpdateRejected(f"Expected array {i} of shape {shape}, received {u.shape}.", reason="shape")
            if u.dtype != dtype:
                raise UpdateRejected(f"Expected array {i} of dtype {dtype}, received {u.dtype}.", reason="dtype")
        if finite:
            _require_finite(update)

    def apply(
        self,
        update: Sequence[np.ndarray],
        *,
        worker_id: str,
        attempt_id: str,
        version_seen: int,
        samples: int = 0,
        metrics: dict[str, float] | None = None,
        epoch: int = 0,
    ) -> int:
        """Check an update, fold it into the center and record the window.

        Args:
            update: The arrays the worker sent.
            worker_id: Who pushed.
            attempt_id: The task attempt that pushed.
            version_seen: The version the worker last pulled (``u``).
            samples: Samples trained in the window.
            metrics: Loss and metrics of the window.
            epoch: Epoch of the window.

        Returns:
            The version after this update.

        Raises:
            UpdateRejected: If the update or its metadata is invalid, or if the center after it
                would not be finite (422, reason ``'nonfinite_result'``: e.g. two finite pushes
                near the float32 maximum); nothing changes then.
        """
        try:
            self.check_update(update, finite=False)  # the result is checked before it is used
            version_seen = int(version_seen)
            if not 0 <= version_seen <= self._version:
                raise UpdateRejected(
                    f"Expected version_seen between 0 and {self._version}, received {version_seen}.", reason="metadata"
                )
        except UpdateRejected as exc:
            self.count_refused(exc.reason, worker_id)
            raise
        try:
            if self.locked:
                with self._apply_lock:
                    staleness = self._version - version_seen
                    self._center = self._publish(self._center, list(update), self._version + 1, staleness)
                    self._version += 1
                    version = self._version
            else:
                with self._meta_lock:
                    staleness = self._version - version_seen
                self._check_result(self._center, list(update), staleness)
                self.strategy.server_apply(self._center, list(update), staleness)
                with self._meta_lock:
                    self._version += 1
                    version = self._version
        except UpdateRejected as exc:
            self.count_refused(exc.reason, worker_id)
            raise
        record = WindowRecord(
            worker_id=str(worker_id),
            attempt_id=str(attempt_id),
            epoch=int(epoch),
            samples=int(samples),
            metrics={k: float(v) for k, v in (metrics or {}).items()},
            timestamp=time.time(),
            version=version,
            staleness=staleness,
        )
        with self._meta_lock:
            self._records.append(record)
            if len(self._records) > self.max_records:
                drop = len(self._records) - self.max_records
                del self._records[:drop]
                self._records_dropped += drop
            stats = self._workers[record.worker_id]
            stats.updates += 1
            stats.samples += record.samples
            stats.attempts.add(record.attempt_id)
            self._attempt_updates[record.attempt_id] += 1
        return version

    def _publish(
        self, center: list[np.ndarray], update: list[np.ndarray] | None, version: int, staleness: int = 0
    ) -> list[np.ndarray]:
        """Compute the center of ``version`` (``center`` with ``update`` applied, or ``center``
        itself when ``update`` is ``None``) straight into a new uncompressed payload, cache that
        payload as what pulls of ``version`` send, and return the center's arrays (views of it).

        The arrays of earlier versions are never written again, so a pull being sent, or an
        apply that raises half-way, cannot expose a half-updated center; their buffers go back
        to the pool once no send refers to them. Called under the apply lock (or before any
        request is served).
        """
        payload, views = codec.encode_views(
            center, codec.KIND_PARAMETERS, {"version": version}, allocate=self._payloads.get
        )
        if update is None:
            for view, c in zip(views, center):
                np.copyto(view, c)
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # refused below, not warned about
                self.strategy.server_apply_to(center, update, views, staleness)
            _require_finite(views, update)  # before anything refers to the new version
        self._payload_cache["none"] = (version, payload)
        return views

    def _check_result(self, center: list[np.ndarray], update: list[np.ndarray], staleness: int) -> None:
        """For the lock-free rules, which apply in place: compute the result into this thread's
        scratch arrays first and refuse the update if it is not finite (checked against the center
        as read then, as the rule reads it without a lock)."""
        scratch = getattr(self._scratch, "arrays", None)
        if scratch is None:
            scratch = self._scratch.arrays = [np.empty_like(c) for c in center]
        with np.errstate(over="ignore", invalid="ignore"):
            self.strategy.server_apply_to(center, update, scratch, staleness)
        _require_finite(scratch, update)

    # ----- bookkeeping ----------------------------------------------------------------------
    def count_refused(self, reason: str, worker_id: str | None = None) -> None:
        """Count a refused request (by reason, and by worker when known)."""
        with self._meta_lock:
            self._refused[reason] += 1
            if worker_id is not None:
                self._workers[str(worker_id)].refused += 1

    def count_bytes(self, received: int, sent: int) -> None:
        """Add to the transport byte counters."""
        with self._meta_lock:
            self._bytes_in += received
            self._bytes_out += sent

    def mark_attempt_failed(self, attempt_id: str) -> None:
        """Mark a task attempt as failed or superseded.

        Its updates stay applied (they cannot be taken back), but its records leave
        :meth:`records` and the statistics report them separately.
        """
        with self._meta_lock:
            self._failed_attempts.add(str(attempt_id))
        logger.info(
            "Parameter server: attempt %s marked failed (%d updates applied from it).",
            attempt_id,
            self._attempt_updates.get(str(attempt_id), 0),
        )

    def records(self, include_failed: bool = False) -> list[WindowRecord]:
        """The window records in the order they were applied.

        Args:
            include_failed: Also return records of attempts marked failed.
        """
        with self._meta_lock:
            if include_failed:
                return list(self._records)
            return [r for r in self._records if r.attempt_id not in self._failed_attempts]

    def stats(self) -> dict[str, Any]:
        """Counters as a JSON-ready dict (what ``GET /stats`` returns, without the records)."""
        with self._meta_lock:
            failed = sorted(self._failed_attempts)
            from_failed = sum(self._attempt_updates[a] for a in failed)
            return {
                "version": self._version,
                "updates_applied": self._version,
                "updates_from_failed_attempts": from_failed,
                "updates_refused": sum(self._refused.values()),
                "refused_by_reason": dict(self._refused),
                "workers": {
                    w: {
                        "updates": s.updates,
                        "samples": s.samples,
                        "refused": s.refused,
                        "attempts": sorted(s.attempts),
                    }
                    for w, s in self._workers.items()
                },
                "failed_attempts": failed,
                "bytes_in": self._bytes_in,
                "bytes_out": self._bytes_out,
                "records": len(self._records),
                "records_dropped": self._records_dropped,
                "locked": self.locked,
                "uptime_s": time.time() - self.started_at,
            }


def _require_finite(arrays: Sequence[np.ndarray], update: Sequence[np.ndarray] | None = None) -> None:
    """Raise :class:`UpdateRejected` (422) if a float array of ``arrays`` holds NaN or infinity.

    Args:
        arrays: An update, or the center an update produced.
        update: When ``arrays`` is such a center: the update, to tell an update holding NaN or
            infinity (reason ``'nonfinite'``) from finite values that overflow the center
            (reason ``'nonfinite_result'``).
    """
    for i, a in enumerate(arrays):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            if update is None or not all(u.dtype.kind != "f" or np.isfinite(u).all() for u in update):
                raise UpdateRejected(
                    f"Expected finite values, received NaN or infinity in array {i}.", status=422, reason="nonfinite"
                )
            raise UpdateRejected(
                f"Expected a finite center after the update, received an update "
                f"that makes array {i} overflow to infinity or NaN; nothing was "
                "applied.",
                status=422,
                reason="nonfinite_result",
            )
