"""Prediction and evaluation through DataFrames alone: no SparkContext, RDD or broadcast.

This is the path on a Spark Connect session. Numpy input becomes a DataFrame through Arrow
(``createDataFrame`` of an Arrow table with a row index); each partition runs in ``mapInArrow``
with the weights in the function's closure and the model cached per Python worker
(:func:`~elephas.engine.shipping.cached_model`); results come back as Arrow rows holding payloads
of the project's wire codec (typed header plus raw buffers; nothing is unpickled on the client).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..parameter import codec
from .data import ModelIO, arrow_to_numpy, conform, one_hot_encode, prepare_dataframe
from .runtime import WorkerRuntime, prepare_worker
from .shipping import ModelSpec, cached_model
from .worker import unwrap

logger = logging.getLogger(__name__)

ROW_COL = "__elephas_row"
_PAYLOAD_SCHEMA = "part long, payload binary"


def numpy_frame(
    session: Any, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray] | None = None, num_partitions: int | None = None
) -> tuple[Any, list[str], list[str] | None]:
    """A DataFrame of numpy rows made through Arrow: ``(df, feature columns, label columns)``.

    Every array becomes one ``array<float|double|...>`` column of its flattened rows
    (``x0``, ``x1``, ... and ``y0``, ...), next to a row index column.

    Args:
        session: The SparkSession (classic or Connect).
        xs: Feature arrays, one per model input, all with the same number of rows.
        ys: Label arrays (optional).
        num_partitions: Repartition to this many partitions (by range of the row index).
    """
    import pyarrow as pa

    def column(a: np.ndarray) -> Any:
        a = np.ascontiguousarray(a)
        if a.ndim == 1:
            return pa.array(a)
        width = int(np.prod(a.shape[1:], dtype=np.int64))
        return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), width).cast(
            pa.list_(pa.from_numpy_dtype(a.dtype))
        )

    n = int(xs[0].shape[0])
    data = {ROW_COL: pa.array(np.arange(n, dtype=np.int64))}
    fcols = [f"x{i}" for i in range(len(xs))]
    lcols = None if ys is None else [f"y{j}" for j in range(len(ys))]
    data.update({c: column(x) for c, x in zip(fcols, xs)})
    if ys is not None:
        data.update({c: column(y) for c, y in zip(lcols, ys)})
    df = session.createDataFrame(pa.table(data))
    if num_partitions:
        df = df.repartitionByRange(int(num_partitions), ROW_COL)
    return df, fcols, lcols


def _encode(arrays: Sequence[np.ndarray], meta: dict[str, Any] | None = None) -> bytes:
    return bytes(codec.encode([np.asarray(a) for a in arrays], codec.KIND_PARAMETERS, meta=meta))


def predict_frame(
    df: Any,
    spec: ModelSpec,
    weights: list[np.ndarray],
    io: ModelIO,
    feature_cols: Sequence[str],
    runtime: WorkerRuntime,
    batch_size: int,
    keep_row_index: bool = False,
) -> list[np.ndarray]:
    """Predict every row of ``df``; the outputs in the order the rows come back.

    Args:
        df: The DataFrame.
        spec: The model (built once per Python worker).
        weights: Its weights (travel in the function's closure).
        io: The model's input and output shapes.
        feature_cols: One column per model input (ml Vector, array or numeric).
        runtime: Worker settings.
        batch_size: Rows per forward pass.
        keep_row_index: ``df`` has the :data:`ROW_COL` column of :func:`numpy_frame`; the
            outputs are put back in that order.

    Returns:
        One array per model output, one row per input row.
    """
    cols = list(feature_cols) + ([ROW_COL] if keep_row_index else [])
    prepared = prepare_dataframe(df, cols)
    n_feat = len(feature_cols)
    shapes = list(io.input_shapes)

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        model = None
        for batch in batches:
            if not batch.num_rows:
                continue
            if model is None:
                prepare_worker(runtime)
                model = cached_model(spec, weights)
            xs = [conform(arrow_to_numpy(batch.column(i)), shapes[i]) for i in range(n_feat)]
            outs = []
            for a in range(0, batch.num_rows, batch_size):
                out = model.predict_on_batch(unwrap([x[a : a + batch_size] for x in xs]))
                outs.append([np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])])
            arrays = [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]
            if keep_row_index:
                arrays.append(batch.column(n_feat).to_numpy())
            yield pa.RecordBatch.from_pydict({"part": [part], "payload": [_encode(arrays)]})

    table = prepared.mapInArrow(run, _PAYLOAD_SCHEMA).toArrow()
    decoded = [codec.decode(p.as_py()).arrays for p in table.column("payload")]
    if not decoded:
        model = spec.build(compile=False)
        return [np.zeros((0,) + tuple(int(d or 0) for d in t.shape[1:]), dtype=np.float32) for t in model.outputs]
    n_out = len(decoded[0]) - (1 if keep_row_index else 0)
    outs = [np.concatenate([d[j] for d in decoded]) for j in range(n_out)]
    if keep_row_index:
        order = np.argsort(np.concatenate([d[-1] for d in decoded]), kind="stable")
        outs = [o[order] for o in outs]
    return outs


def evaluate_frame(
    df: Any,
    spec: ModelSpec,
    weights: list[np.ndarray],
    io: ModelIO,
    feature_cols: Sequence[str],
    label_cols: Sequence[str],
    runtime: WorkerRuntime,
    batch_size: int,
    one_hot: int | None = None,
) -> list[tuple[int, dict[str, float], list[np.ndarray]]]:
    """Evaluate each partition of ``df``: ``(rows, logs, metric state arrays)`` per non-empty one.

    The results merge like those of :func:`elephas.engine.inference.evaluate_blocks`
    (:func:`elephas.engine.inference.merge_evaluations`).
    """
    cols = list(feature_cols) + list(label_cols)
    prepared = prepare_dataframe(df, cols)
    n_feat = len(feature_cols)
    shapes = list(io.input_shapes)

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        parts: list[list[np.ndarray]] = [[] for _ in cols]
        for batch in batches:
            for i in range(len(cols)):
                parts[i].append(arrow_to_numpy(batch.column(i)))
        if not parts[0] or not sum(len(p) for p in parts[0]):
            return
        arrays = [np.concatenate(p) for p in parts]
        xs = [conform(a, s) for a, s in zip(arrays[:n_feat], shapes)]
        ys = [conform(a, (), float_cast=False) for a in arrays[n_feat:]]
        if one_hot:
            ys = [one_hot_encode(ys[0], one_hot)]
        prepare_worker(runtime)
        model = cached_model(spec, weights)
        logs = model.evaluate(unwrap(xs), unwrap(ys), batch_size=batch_size, verbose=0, return_dict=True)
        state = [np.asarray(v) for v in model.metrics_variables]
        # Log values travel as an array: JSON has no NaN or infinity.
        meta = {"rows": int(xs[0].shape[0]), "logs": list(logs)}
        values = np.array([float(v) for v in logs.values()], dtype=np.float64)
        yield pa.RecordBatch.from_pydict({"part": [part], "payload": [_encode([values, *state], meta)]})

    table = prepared.mapInArrow(run, _PAYLOAD_SCHEMA).toArrow()
    results = []
    for payload in table.column("payload"):
        decoded = codec.decode(payload.as_py())
        values, *state = decoded.arrays
        logs = {str(k): float(v) for k, v in zip(decoded.meta["logs"], values)}
        results.append((int(decoded.meta["rows"]), logs, [np.array(a) for a in state]))
    return results


def _columns(col: str | Sequence[str]) -> list[str]:
    return [col] if isinstance(col, str) else list(col)


def predict_data(
    session: Any,
    spec: ModelSpec,
    weights: list[np.ndarray],
    io: ModelIO,
    data: Any,
    features_col: str | Sequence[str],
    runtime: WorkerRuntime,
    batch_size: int,
    num_partitions: int | None = None,
) -> np.ndarray | list[np.ndarray]:
    """``SparkModel.predict`` without a SparkContext: numpy features or a DataFrame, outputs in input order.

    Args:
        session: The session numpy input is turned into a DataFrame with.
        spec: The model.
        weights: Its weights.
        io: Its input and output shapes.
        data: Numpy features (one array per input) or a DataFrame.
        features_col: Feature column(s) of a DataFrame.
        runtime: Worker settings.
        batch_size: Rows per forward pass.
        num_partitions: Partitions for numpy input (default: as ``createDataFrame`` makes them).

    Returns:
        One array (a list for multi-output models) with one row per input row.
    """
    from .data import as_list
    from .validation import check_dataframe, check_features

    if hasattr(data, "schema") and hasattr(data, "mapInArrow"):
        fcols = _columns(features_col)
        check_dataframe(data, fcols, {c: "features" for c in fcols})
        outs = predict_frame(data, spec, weights, io, fcols, runtime, batch_size)
    else:
        xs = as_list(data, len(io.input_shapes), "input")
        if not xs[0].shape[0]:  # nothing to run (and Arrow cannot make a DataFrame of no rows without a schema)
            outs = [
                np.zeros((0,) + tuple(int(d or 0) for d in t.shape[1:]), dtype=np.float32)
                for t in spec.build(compile=False).outputs
            ]
            return outs[0] if len(outs) == 1 else outs
        check_features(io, [x[0] for x in xs])
        df, fcols, _ = numpy_frame(session, xs, None, num_partitions)
        outs = predict_frame(df, spec, weights, io, fcols, runtime, batch_size, keep_row_index=True)
    return outs[0] if len(outs) == 1 else outs


def evaluate_data(
    session: Any,
    spec: ModelSpec,
    weights: list[np.ndarray],
    model: Any,
    io: ModelIO,
    x: Any,
    y: Any,
    features_col: str | Sequence[str],
    label_col: str | Sequence[str],
    runtime: WorkerRuntime,
    batch_size: int,
    num_partitions: int | None = None,
) -> dict[str, float]:
    """``SparkModel.evaluate`` without a SparkContext: ``{name: value}`` over all rows of numpy or a DataFrame.

    Args:
        session: The session numpy input is turned into a DataFrame with.
        spec: The model.
        weights: Its weights.
        model: The compiled model on the driver (merges the summed metric states).
        io: Its input and output shapes.
        x: Numpy features or a DataFrame.
        y: Numpy labels (``None`` with a DataFrame).
        features_col: Feature column(s) of a DataFrame.
        label_col: Label column(s) of a DataFrame.
        runtime: Worker settings.
        batch_size: Rows per ``evaluate`` batch.
        num_partitions: Partitions for numpy input.
    """
    from .inference import merge_evaluations
    from .validation import check_dataframe, check_features, check_labels, numpy_sample

    if hasattr(x, "schema") and hasattr(x, "mapInArrow"):
        fcols, lcols = _columns(features_col), _columns(label_col)
        check_dataframe(x, fcols + lcols, {**{c: "features" for c in fcols}, **{c: "label" for c in lcols}})
        first = prepare_dataframe(x, fcols + lcols).first()
        if first is None:
            raise ValueError("Cannot evaluate on empty data: the DataFrame has no rows.")
        sample = (
            [np.asarray(first[i]) for i in range(len(fcols))],
            [np.asarray(first[len(fcols) + j]) for j in range(len(lcols))],
        )
        df = x
    else:
        if y is None:
            raise ValueError("With numpy features, pass labels too: evaluate(x, y, ...).")
        xs, ys = numpy_sample(x, y, io)
        sample = ([a[0] for a in xs], [b[0] for b in ys])
        df, fcols, lcols = numpy_frame(session, xs, ys, num_partitions)
    check_features(io, sample[0])
    check_labels(io, sample[1], model.loss)
    results = evaluate_frame(df, spec, weights, io, fcols, lcols, runtime, batch_size)
    batch_sample = ([np.asarray(a)[None] for a in sample[0]], [np.asarray(b)[None] for b in sample[1]])
    return merge_evaluations(results, model, batch_sample)
