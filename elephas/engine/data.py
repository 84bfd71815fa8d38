"""Turn user data (RDD of pairs, DataFrame, numpy arrays) into an RDD of numpy blocks.

A *block* is one partition's rows stacked once: ``(partition_id, xs, ys)`` where ``xs`` is a list
with one array per model input and ``ys`` a list with one array per model output (or ``None`` for
inference). Rows are converted to numpy once per task, never row by row per batch.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..utils.checks import check_class_indices, is_vector_type
from .block_store import Block, StagedBlock, write_block

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class ModelIO:
    """Input and output shapes of a model (batch dimension dropped), as plain tuples."""

    input_shapes: tuple[tuple[int | None, ...], ...]
    output_shapes: tuple[tuple[int | None, ...], ...]
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, model: Any) -> ModelIO:
        """Read the shapes of a built Keras model."""
        ins = [tuple(t.shape[1:]) for t in model.inputs]
        outs = [tuple(t.shape[1:]) for t in model.outputs]
        return cls(
            tuple(ins),
            tuple(outs),
            tuple(t.name for t in model.inputs),
            tuple(getattr(model, "output_names", None) or [t.name for t in model.outputs]),
        )


def to_array(value: Any) -> np.ndarray:
    """One feature or label value as a numpy array (numpy, list, scalar, ml/mllib Vector)."""
    if isinstance(value, np.ndarray):
        return value
    to_arr = getattr(value, "toArray", None)
    if to_arr is not None:
        return to_arr()
    return np.asarray(value)


def _split_multi(value: Any, n: int, what: str) -> list[Any]:
    if n == 1:
        return [value]
    if not isinstance(value, (list, tuple)) or len(value) != n:
        got = (
            f"{type(value).__name__} of length {len(value)}"
            if isinstance(value, (list, tuple))
            else type(value).__name__
        )
        raise ValueError(
            f"The model has {n} {what}s, so each row's {what} must be a list or tuple of {n} arrays. Received: {got}."
        )
    return list(value)


def conform(arr: np.ndarray, shape: tuple[int | None, ...], float_cast: bool = True) -> np.ndarray:
    """Reshape a stacked block to ``(n, *shape)`` when the element counts agree; cast to float32.

    Flat feature vectors (DataFrame vectors, say) thereby feed image or sequence inputs.
    """
    if float_cast and arr.dtype.kind == "f" and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    elif float_cast and arr.dtype.kind in "biu" and arr.ndim > 1:
        arr = arr.astype(np.float32)
    if shape and None not in shape and arr.shape[1:] != tuple(shape):
        if int(np.prod(arr.shape[1:], dtype=np.int64)) == int(np.prod(shape, dtype=np.int64)):
            arr = arr.reshape((arr.shape[0],) + tuple(shape))
    return arr


def stack_rows(rows: Sequence[Any], io: ModelIO, labels: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Stack a partition's rows into per-input (and per-output) arrays."""
    n_in, n_out = len(io.input_shapes), len(io.output_shapes)
    if labels:
        feats = [_split_multi(r[0], n_in, "input") for r in rows]
        labs = [_split_multi(r[1], n_out, "output") for r in rows]
        ys = [conform(np.stack([to_array(lab[j]) for lab in labs]), (), float_cast=False) for j in range(n_out)]
    else:
        feats = [_split_multi(r, n_in, "input") for r in rows]
        ys = None
    xs = [conform(np.stack([to_array(f[i]) for f in feats]), io.input_shapes[i]) for i in range(n_in)]
    return xs, ys


def blocks_from_rdd(rdd: Any, io: ModelIO, labels: bool = True) -> Any:
    """Stack each partition of an RDD of ``(features, label)`` pairs (or feature rows) once."""

    def stack(pid: int, it: Iterable[Any]) -> Iterator[Block]:
        rows = list(it)
        if not rows:
            yield (pid, [], [] if labels else None)
            return
        xs, ys = stack_rows(rows, io, labels)
        yield (pid, xs, ys)

    return rdd.mapPartitionsWithIndex(stack, preservesPartitioning=True)


def first_element(rdd: Any) -> Any:
    """The first element of an RDD, reading whole partitions.

    ``RDD.first()`` stops reading a partition after one element, and a Spark Python worker that
    leaves input unread exits instead of being reused, so every ``fit`` would pay for a fresh
    worker (importing TensorFlow again). Partition 0 is tried first, then all the others.

    Raises:
        ValueError: If the RDD has no elements.
    """

    def first_and_drain(items: Iterable[Any]) -> list[Any]:
        found: list[Any] = []
        for item in items:
            if not found:
                found.append(item)
        return found

    n = rdd.getNumPartitions()
    for parts in ([0], list(range(1, n))):
        if parts and parts[0] < n:
            found = rdd.context.runJob(rdd, first_and_drain, parts)
            if found:
                return found[0]
    raise ValueError("The RDD is empty.")


def split_evenly(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges covering ``range(n)``, sizes differing by ≤ 1."""
    parts = max(1, min(parts, n)) if n else 1
    bounds = np.linspace(0, n, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def as_list(arrays: Any, n: int, what: str) -> list[np.ndarray]:
    """Normalise numpy input for a model with ``n`` inputs/outputs to a list of arrays."""
    if isinstance(arrays, dict):
        raise ValueError(f"Pass {what}s as a list in the model's order, not a dict.")
    if n == 1 and not isinstance(arrays, (list, tuple)):
        return [np.asarray(arrays)]
    if isinstance(arrays, (list, tuple)) and len(arrays) == n and all(hasattr(a, "shape") for a in arrays):
        return [np.asarray(a) for a in arrays]
    if n == 1:
        return [np.asarray(arrays)]
    raise ValueError(f"The model has {n} {what}s. Expected a list of {n} arrays. Received: {type(arrays).__name__}.")


def blocks_from_numpy(sc: Any, xs: list[np.ndarray], ys: list[np.ndarray] | None, io: ModelIO, num_slices: int) -> Any:
    """Split numpy arrays into ``num_slices`` contiguous blocks and parallelize them."""
    n = int(xs[0].shape[0])
    for a in xs + (ys or []):
        if a.shape[0] != n:
            raise ValueError(
                "All input and label arrays must have the same number of rows. "
                f"Received: row counts {[int(b.shape[0]) for b in xs + (ys or [])]}."
            )
    xs = [conform(a, s) for a, s in zip(xs, io.input_shapes)]
    blocks = []
    for pid, (a, b) in enumerate(split_evenly(n, num_slices)):
        blocks.append((pid, [x[a:b] for x in xs], None if ys is None else [y[a:b] for y in ys]))
    return sc.parallelize(blocks, len(blocks))


# ------------------------------------------------------------------------------------------------
# DataFrames through Arrow


def arrow_to_numpy(column: Any) -> np.ndarray:
    """An Arrow column (scalars, list<...> or nested lists of fixed length) as a dense array."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    shape: list[int] = [n]
    arr = column
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            raise ValueError("Feature arrays must not contain nulls.")
        offsets = None if pa.types.is_fixed_size_list(arr.type) else arr.offsets.to_numpy()
        if offsets is not None:
            lengths = np.diff(offsets)
            if len(lengths) and not np.all(lengths == lengths[0]):
                raise ValueError(
                    "All rows of an array column must have the same length. Received "
                    f"lengths from {int(lengths.min())} to {int(lengths.max())}."
                )
            width = int(lengths[0]) if len(lengths) else 0
            arr = arr.values[offsets[0] : offsets[-1]] if len(offsets) else arr.values
        else:
            width = arr.type.list_size
            arr = arr.flatten()
        shape.append(width)
    if arr.null_count:
        raise ValueError("Feature and label columns must not contain nulls.")
    out = arr.to_numpy(zero_copy_only=False)
    return out.reshape(shape)


def prepare_dataframe(df: Any, columns: Sequence[str]) -> Any:
    """Select ``columns``, turning ml Vector columns into arrays (native expression, no UDF)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    fields = {f.name: f.dataType for f in df.schema.fields}
    exprs = []
    for c in columns:
        dtype = fields[c]
        if is_vector_type(dtype):
            exprs.append(vector_to_array(F.col(c), "float32").alias(c))
        else:
            exprs.append(F.col(c))
    return df.select(*exprs)


def blocks_from_dataframe(
    df: Any,
    feature_cols: Sequence[str],
    label_cols: Sequence[str] | None,
    io: ModelIO,
    one_hot: int | None = None,
    store_id: str | None = None,
) -> Any:
    """Stack each DataFrame partition into a block through Arrow batches.

    Args:
        df: The DataFrame.
        feature_cols: One column per model input (ml Vector, array, or numeric).
        label_cols: One column per model output, or ``None`` for inference.
        io: The model's shapes.
        one_hot: When set, a single index label column is one-hot encoded to this width.
        store_id: When set, every task writes its block straight to the executor's local
            directory (see :mod:`.block_store`) and the RDD holds
            :class:`~elephas.engine.block_store.StagedBlock` handles instead of arrays, so
            the arrays never travel back through the JVM.
    """
    from pyspark.sql.types import BinaryType, IntegerType, StructField, StructType

    cols = list(feature_cols) + list(label_cols or [])
    prepared = prepare_dataframe(df, cols)
    n_feat = len(feature_cols)
    with_labels = label_cols is not None
    schema = StructType([StructField("pid", IntegerType()), StructField("payload", BinaryType())])

    def to_blocks(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        pid = TaskContext.get().partitionId()
        parts: list[list[np.ndarray]] = [[] for _ in cols]
        for batch in batches:
            for i in range(len(cols)):
                parts[i].append(arrow_to_numpy(batch.column(i)))
        arrays = [np.concatenate(p) if p else None for p in parts]
        if arrays and arrays[0] is not None and len(arrays[0]):
            xs = [conform(a, s) for a, s in zip(arrays[:n_feat], io.input_shapes)]
            ys = None
            if with_labels:
                ys = [conform(a, (), float_cast=False) for a in arrays[n_feat:]]
                if one_hot:
                    ys = [one_hot_encode(ys[0], one_hot)]
            n = xs[0].shape[0]
            if store_id is not None:
                handle = write_block(store_id, (pid, xs, ys))
                yield pa.RecordBatch.from_pydict(
                    {"pid": [pid], "rows": [handle.rows]}, schema=pa.schema([("pid", pa.int32()), ("rows", pa.int64())])
                )
                return
            row_bytes = max(1, sum(a.nbytes for a in xs + (ys or [])) // max(1, n))
            step = max(1, _CHUNK_BYTES // row_bytes)
            for a in range(0, n, step):
                chunk = ([x[a : a + step] for x in xs], None if ys is None else [y[a : a + step] for y in ys])
                payload = pickle.dumps(chunk, protocol=5)
                yield pa.RecordBatch.from_pydict(
                    {"pid": [pid], "payload": [payload]},
                    schema=pa.schema([("pid", pa.int32()), ("payload", pa.binary())]),
                )

    if store_id is not None:
        from pyspark.sql.types import LongType

        n_lab = len(label_cols or [])
        written = prepared.mapInArrow(
            to_blocks, StructType([StructField("pid", IntegerType()), StructField("rows", LongType())])
        )

        def handles(pid: int, it: Iterable[Any]) -> Iterator[Any]:
            rows = sum(int(r.rows) for r in it)
            yield StagedBlock(store_id, pid, rows, n_feat, n_lab)

        return written.rdd.mapPartitionsWithIndex(handles, preservesPartitioning=True)

    rows = prepared.mapInArrow(to_blocks, schema)

    def merge(pid: int, it: Iterable[Any]) -> Iterator[Block]:
        chunks = [pickle.loads(r.payload) for r in it]
        if not chunks:
            yield (pid, [], [] if with_labels else None)
            return
        xs = [np.concatenate([c[0][i] for c in chunks]) for i in range(n_feat)]
        ys = None
        if with_labels:
            ys = [np.concatenate([c[1][j] for c in chunks]) for j in range(len(chunks[0][1]))]
        yield (pid, xs, ys)

    return rows.rdd.mapPartitionsWithIndex(merge, preservesPartitioning=True)


def one_hot_encode(labels: np.ndarray, nb_classes: int) -> np.ndarray:
    """One-hot encode integer-valued class indices, checking they lie in ``[0, nb_classes)``."""
    return np.eye(nb_classes, dtype=np.float32)[check_class_indices(labels, nb_classes)]
