"""Executor-local copies of training blocks, so that later rounds skip Spark's cache.

A synchronous fit runs one Spark job per communication window and an asynchronous fit one stage
per epoch. Reading a partition's block back from Spark's cache every time costs a pickle round
trip through the JVM (about 0.5 s for 30,000 × 784 floats), which is a sizeable part of an epoch.
Instead, a fit *stages* its blocks once: every task writes its block as ``.npy`` files under the
executor's Spark local directory (``SPARK_LOCAL_DIRS``, cleaned by Spark when the application
ends) and Spark caches only a tiny :class:`StagedBlock` handle per partition. Later tasks run over
the handles, so Spark schedules them where the handle (hence the files) lives, and map the files
read-only (``numpy.load(mmap_mode='r')``): every Python worker of the executor shares the same
page-cache pages and nothing is unpickled.

A task that cannot find its files (it ran on another host, or the directory was cleaned) reports
the partition as missing; the driver then trains that partition from the original blocks in the
same round (:func:`elephas.engine.driver.fit_synchronous`), so no partition is ever skipped.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import run_job

Block = tuple[int, list[np.ndarray], list[np.ndarray] | None]
"""A partition's rows stacked once: ``(partition id, feature arrays, label arrays or None)``."""


def block_size(block: Block) -> int:
    """Number of rows in a block."""
    xs = block[1]
    return 0 if not xs else int(xs[0].shape[0])


logger = logging.getLogger(__name__)

_ROOT = "elephas-blocks"


@dataclass(frozen=True)
class StagedBlock:
    """Where one partition's block was written: enough to find and map it again."""

    store_id: str
    partition: int
    rows: int
    inputs: int
    outputs: int


@dataclass(frozen=True)
class Missing:
    """A round result saying that this task could not map the files of ``partition``."""

    partition: int


def local_root() -> str:
    """This executor's directory for staged blocks (inside its first Spark local directory)."""
    dirs = os.environ.get("SPARK_LOCAL_DIRS", "")
    base = dirs.split(",")[0] if dirs else tempfile.gettempdir()
    return os.path.join(base, _ROOT)


def block_dir(store_id: str, partition: int) -> str:
    """The directory of one staged block on this executor."""
    return os.path.join(local_root(), store_id, str(partition))


def write_block(store_id: str, block: Block) -> StagedBlock:
    """Write ``block`` to this executor's local directory (atomically) and return its handle."""
    pid, xs, ys = block
    rows = block_size(block)
    handle = StagedBlock(store_id, int(pid), rows, len(xs), len(ys or []))
    if not rows:
        return handle
    final = block_dir(store_id, pid)
    if os.path.isdir(final):  # another attempt of this task already wrote it
        return handle
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{pid}-", dir=parent)
    try:
        for i, x in enumerate(xs):
            np.save(os.path.join(tmp, f"x{i}.npy"), np.ascontiguousarray(x), allow_pickle=False)
        for j, y in enumerate(ys or []):
            np.save(os.path.join(tmp, f"y{j}.npy"), np.ascontiguousarray(y), allow_pickle=False)
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(final):
            raise
    return handle


def read_block(handle: StagedBlock) -> Block | None:
    """Map a staged block read-only, or ``None`` when its files are not on this executor."""
    if not handle.rows:
        return handle.partition, [], []
    path = block_dir(handle.store_id, handle.partition)
    try:
        xs = [
            np.asarray(np.load(os.path.join(path, f"x{i}.npy"), mmap_mode="r", allow_pickle=False))
            for i in range(handle.inputs)
        ]
        ys = [
            np.asarray(np.load(os.path.join(path, f"y{j}.npy"), mmap_mode="r", allow_pickle=False))
            for j in range(handle.outputs)
        ]
    except (OSError, ValueError):
        return None
    if any(int(a.shape[0]) != handle.rows for a in xs + ys):
        return None
    return handle.partition, xs, ys


def resolve(items: Iterable[Any]) -> Iterator[Block | Missing]:
    """Turn a partition's items (blocks or staged handles) into blocks, or :class:`Missing`."""
    for item in items:
        if isinstance(item, StagedBlock):
            block = read_block(item)
            yield Missing(item.partition) if block is None else block
        else:
            yield item


def remove_store(store_id: str) -> None:
    """Delete every staged block of ``store_id`` on this executor (missing ones are fine)."""
    shutil.rmtree(os.path.join(local_root(), store_id), ignore_errors=True)


class StagedBlocks:
    """The staged copy of a block RDD for the duration of one fit.

    Args:
        blocks: The RDD of blocks to stage (normally already cached by the caller).
        stage: ``False`` skips staging: rounds then read ``blocks`` from Spark every time.

    Attributes:
        rdd: The cached RDD of :class:`StagedBlock` handles, one per partition.
        sizes: Rows of every partition, in partition order.
        source: What a partition whose files went missing is read from instead: the blocks
            themselves when not staging, else the staging lineage run again.
    """

    def __init__(self, blocks: Any, stage: bool = True) -> None:
        self.store_id = uuid.uuid4().hex
        self.staged = stage
        if not stage:  # rounds read the (cached) blocks themselves
            self.rdd = self.source = blocks
            sizes = run_job(lambda: blocks.map(lambda b: (b[0], block_size(b))).collect(), "Data loading")
            self.sizes = [n for _, n in sorted(sizes)]
            return
        if getattr(blocks, "is_cached", False):
            # The staged files replace Spark's cached copy, and an uncached parent lets Spark
            # build and stage each block in one Python worker instead of two.
            blocks.unpersist()
        store_id = self.store_id

        def stage_items(pid: int, it: Iterable[Any]) -> Iterator[StagedBlock]:
            for item in it:  # blocks are written here; handles come from a source that wrote them
                yield item if isinstance(item, StagedBlock) else write_block(store_id, item)

        self.rdd = blocks.mapPartitionsWithIndex(stage_items, preservesPartitioning=True).persist()
        # Partitions whose files go missing are staged again (on the executor that runs them)
        # from a separate, uncached copy of the same lineage, then trained.
        self.source = blocks.mapPartitionsWithIndex(stage_items, preservesPartitioning=True)
        handles = run_job(self.rdd.collect, "Data loading")
        self.sizes = [h.rows for h in sorted(handles, key=lambda h: h.partition)]
        self.store_ids = sorted({h.store_id for h in handles} | {store_id})
        logger.debug("staged %d blocks (%d rows) as store(s) %s", len(handles), sum(self.sizes), self.store_ids)

    def rerun(self, fn: Any, partitions: list[int], what: str) -> list[Any]:
        """Run ``fn`` (a ``mapPartitionsWithIndex`` function) on ``partitions`` of :attr:`source`.

        For partitions whose staged files were not found: with staging, the source writes the
        block again on the executor that runs the task, so ``fn`` finds it there.

        Raises:
            RuntimeError: If a block still cannot be mapped (the local directory is unusable).
        """
        rdd = self.source.mapPartitionsWithIndex(fn)
        items = run_job(lambda: rdd.context.runJob(rdd, lambda it: list(it), partitions=sorted(partitions)), what)
        for item in items:
            if isinstance(item, Missing):
                raise RuntimeError(
                    f"The block of partition {item.partition} could not be staged "
                    "in the executor's local directory (SPARK_LOCAL_DIRS)."
                )
        return items

    def close(self) -> None:
        """Delete the staged files (best effort, on the executors holding them) and the handles."""
        if not self.staged:
            return
        store_ids = self.store_ids

        def remove(items: Iterable[StagedBlock]) -> None:
            for _ in items:  # drain the input: a worker that leaves input unread is not reused
                pass
            for store_id in store_ids:
                remove_store(store_id)

        try:
            self.rdd.foreachPartition(remove)
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the fit's own outcome
            logger.warning("could not remove staged blocks %s: %s", store_ids, exc)
        finally:
            self.rdd.unpersist()

    def __enter__(self) -> StagedBlocks:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
