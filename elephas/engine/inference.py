"""Distributed inference and evaluation with the model cached per Python worker.

* :func:`distributed_predict` returns one numpy array in input order for numpy, RDD and
  DataFrame input, on any partitioning (empty partitions included).
* :func:`predict_column` is the DataFrame column operation (each prediction stays on its row),
  shaped after ``pyspark.ml.functions.predict_batch_udf``: Arrow batches in, one cached model.
* :func:`distributed_evaluate` returns exactly what ``keras.Model.evaluate`` returns, computed
  over all rows by summing the metrics' state variables across partitions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..utils.checks import check_column, is_vector_type, output_width
from .block_store import Block, block_size
from .data import (
    ModelIO,
    arrow_to_numpy,
    as_list,
    blocks_from_dataframe,
    blocks_from_numpy,
    blocks_from_rdd,
    conform,
)
from .errors import guard, run_job
from .runtime import WorkerRuntime, prepare_worker
from .shipping import ModelSpec, cached_model
from .worker import unwrap

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1024


def is_rdd(data: Any) -> bool:
    """Whether ``data`` is a PySpark RDD."""
    from pyspark import RDD

    return isinstance(data, RDD)


def is_dataframe(data: Any) -> bool:
    """Whether ``data`` is a PySpark SQL DataFrame (classic or Connect)."""
    try:
        from pyspark.sql import DataFrame
    except ImportError:  # pragma: no cover
        return False
    return isinstance(data, DataFrame)


def _predict_arrays(model: Any, xs: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    n = int(xs[0].shape[0])
    outs: list[list[np.ndarray]] = []
    for a in range(0, n, batch_size):
        out = model.predict_on_batch(unwrap([x[a : a + batch_size] for x in xs]))
        out = out if isinstance(out, (list, tuple)) else [out]
        outs.append([np.asarray(o) for o in out])
    return [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]


def make_predict_fn(spec: ModelSpec, runtime: WorkerRuntime, broadcast: Any, batch_size: int):
    """The per-block predict function: ``(pid, outputs or None)`` for every block."""

    def run(pid: int, blocks: Iterable[Block]) -> Iterator[tuple[int, list[np.ndarray] | None]]:
        for part, xs, _ in blocks:
            if not block_size((part, xs, None)):
                yield part, None
                continue
            prepare_worker(runtime)
            model = cached_model(spec, broadcast.value)
            yield part, _predict_arrays(model, xs, batch_size)

    return run


def feature_blocks(
    sc: Any,
    data: Any,
    io: ModelIO,
    num_slices: int,
    features_col: str | Sequence[str] = "features",
    labels: Any = None,
    label_col: str | Sequence[str] | None = None,
) -> Any:
    """Blocks of features (and labels when given) from numpy, an RDD or a DataFrame."""
    if is_dataframe(data):
        fcols = [features_col] if isinstance(features_col, str) else list(features_col)
        lcols = None if label_col is None else ([label_col] if isinstance(label_col, str) else list(label_col))
        return blocks_from_dataframe(data, fcols, lcols, io)
    if is_rdd(data):
        return blocks_from_rdd(data, io, labels=label_col is not None)
    xs = as_list(data, len(io.input_shapes), "input")
    ys = None if labels is None else as_list(labels, len(io.output_shapes), "output")
    return blocks_from_numpy(sc, xs, ys, io, num_slices)


def predict_blocks(
    sc: Any,
    blocks: Any,
    spec: ModelSpec,
    weights: list[np.ndarray],
    runtime: WorkerRuntime,
    batch_size: int | None = None,
    profile: Any = None,
) -> np.ndarray | list[np.ndarray]:
    """Predict every block and concatenate the outputs in partition order (the stage runs with the
    ``pyspark.resource.ResourceProfile`` ``profile`` when given, see :mod:`.resources`)."""
    from .resources import with_profile

    bc = sc.broadcast(weights)
    try:
        fn = guard(make_predict_fn(spec, runtime, bc, batch_size or DEFAULT_BATCH_SIZE))
        results = run_job(lambda: with_profile(blocks.mapPartitionsWithIndex(fn), profile).collect(), "Prediction")
    finally:
        bc.unpersist()
    results.sort(key=lambda r: r[0])
    filled = [r[1] for r in results if r[1] is not None]
    if not filled:
        model = spec.build(compile=False)
        outs = [np.zeros((0,) + tuple(int(d or 0) for d in t.shape[1:]), dtype=np.float32) for t in model.outputs]
    else:
        outs = [np.concatenate([f[j] for f in filled]) for j in range(len(filled[0]))]
    return outs[0] if len(outs) == 1 else outs


def distributed_predict(
    spec: ModelSpec,
    weights: list[np.ndarray],
    data: Any,
    batch_size: int | None = None,
    features_col: str | Sequence[str] = "features",
    num_slices: int | None = None,
    runtime: WorkerRuntime | None = None,
) -> Any:
    """Predict ``data`` on the executors, in input order.

    Args:
        spec: The model to use (built once per worker).
        weights: Its weights.
        data: Numpy array(s), an RDD of feature rows (arrays, lists or Vectors), or a DataFrame.
        batch_size: Rows per forward pass (default 1024).
        features_col: Feature column(s) of a DataFrame.
        num_slices: Partitions for numpy input (default: Spark's default parallelism).
        runtime: Worker settings (default: derived from the active SparkContext).

    Returns:
        One array (a list for multi-output models) with one row per input row, in input order.
    """
    from pyspark import SparkContext

    sc = SparkContext.getOrCreate()
    model = spec.build(compile=False)
    io = ModelIO.of(model)
    runtime = runtime or default_runtime(sc)
    blocks = feature_blocks(sc, data, io, num_slices or sc.defaultParallelism, features_col)
    return predict_blocks(sc, blocks, spec, weights, runtime, batch_size)


def default_runtime(sc: Any) -> WorkerRuntime:
    """Worker settings for the current Keras backend and Spark configuration."""
    import keras

    from .runtime import default_threads

    return WorkerRuntime(keras.backend.backend(), default_threads(sc.getConf(), sc.defaultParallelism))


# ------------------------------------------------------------------------------------------------
# evaluation


def make_evaluate_fn(spec: ModelSpec, runtime: WorkerRuntime, broadcast: Any, batch_size: int):
    """Per-block evaluation: ``(rows, logs, metric state arrays)`` for non-empty blocks."""

    def run(pid: int, blocks: Iterable[Block]) -> Iterator[tuple[int, dict[str, float], list[np.ndarray]]]:
        for part, xs, ys in blocks:
            rows = block_size((part, xs, ys))
            if not rows:
                continue
            prepare_worker(runtime)
            model = cached_model(spec, broadcast.value)
            logs = model.evaluate(unwrap(xs), unwrap(ys), batch_size=batch_size, verbose=0, return_dict=True)
            state = [np.asarray(v) for v in model.metrics_variables]
            yield rows, {k: float(v) for k, v in logs.items()}, state

    return run


def evaluate_blocks(
    sc: Any,
    blocks: Any,
    spec: ModelSpec,
    weights: list[np.ndarray],
    runtime: WorkerRuntime,
    batch_size: int,
    model: Any,
    sample: tuple[list[np.ndarray], list[np.ndarray]] | None,
    profile: Any = None,
) -> dict[str, float]:
    """Evaluate every block and merge into one ``{name: value}`` over all rows (with the resource
    profile ``profile`` when given).

    Metric states (totals, counts, confusion counts, ...) are summed across partitions and read
    through ``model`` on the driver, so ratio metrics are exact too; when the state layout cannot
    be matched, the per-partition results are averaged weighted by rows.
    """
    from .resources import with_profile

    bc = sc.broadcast(weights)
    try:
        fn = guard(make_evaluate_fn(spec, runtime, bc, batch_size))
        results = run_job(lambda: with_profile(blocks.mapPartitionsWithIndex(fn), profile).collect(), "Evaluation")
    finally:
        bc.unpersist()
    return merge_evaluations(results, model, sample)


def merge_evaluations(
    results: list[tuple[int, dict[str, float], list[np.ndarray]]],
    model: Any,
    sample: tuple[list[np.ndarray], list[np.ndarray]] | None,
) -> dict[str, float]:
    """Merge per-partition ``(rows, logs, metric state arrays)`` into one ``{name: value}``.

    Args:
        results: One entry per non-empty partition.
        model: The compiled model on the driver (its metric variables read the summed states).
        sample: A few rows to build the model's metrics with, when they are not built yet.

    Raises:
        ValueError: If ``results`` is empty.
    """
    if not results:
        raise ValueError("Cannot evaluate on empty data: no partition had rows.")
    total = sum(r[0] for r in results)
    fallback = {k: sum(r[0] * r[1][k] for r in results) / total for k in results[0][1]}
    state = [np.sum([r[2][i] for r in results], axis=0) for i in range(len(results[0][2]))]
    try:
        if len(model.metrics_variables) != len(state) and sample is not None:
            model.evaluate(unwrap(sample[0]), unwrap(sample[1]), verbose=0)
        variables = model.metrics_variables
        if len(variables) != len(state) or any(tuple(v.shape) != s.shape for v, s in zip(variables, state)):
            return fallback
        for v, s in zip(variables, state):
            v.assign(s)
        merged = {k: float(v) for k, v in model.get_metrics_result().items()}
        return merged if set(merged) == set(fallback) else fallback
    except Exception:  # a metric that cannot be rebuilt on the driver: use the row-weighted mean
        logger.debug("metric state merge failed; using row-weighted means", exc_info=True)
        return fallback


def format_like_keras(logs: dict[str, float]) -> float | list[float]:
    """``model.evaluate``'s return shape: the loss alone, or ``[loss, *metrics]``."""
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


# ------------------------------------------------------------------------------------------------
# DataFrame column inference


def predict_column(
    df: Any,
    spec: ModelSpec,
    weights: list[np.ndarray],
    features_col: str | Sequence[str],
    output_col: str,
    batch_size: int | None = None,
    output: str = "raw",
    probability_col: str | None = None,
    runtime: WorkerRuntime | None = None,
    prefetch: int = 1,
    profile: Any = None,
) -> Any:
    """Add ``output_col`` with the model's prediction for each row (a column operation).

    Args:
        df: Input DataFrame.
        spec: The model (built once per Python worker).
        weights: Its weights (broadcast once).
        features_col: Feature column(s): ml Vector, array, or numeric.
        output_col: Name of the new column.
        batch_size: Rows per forward pass.
        output: ``'raw'`` (a double for one output unit, else an array of floats), ``'class'``
            (argmax as a double; 0/1 by a 0.5 threshold for one sigmoid unit), or ``'vector'``
            (an ml DenseVector).
        probability_col: Also add the raw outputs as an ml DenseVector column.
        runtime: Worker settings.
        prefetch: Input batches each Python worker reads ahead in a thread while the model runs
            (0: read each batch only when the previous one is done).
        profile: A ``pyspark.resource.ResourceProfile`` (see :mod:`.resources`) for the stage that
            predicts: the result then ends in ``mapInArrow(..., profile=profile)`` passing the batches
            through unchanged, which puts the stage (the prediction UDF with it) under the profile.

    Returns:
        ``df`` with the new column(s); every other column is kept as it was.

    Example:
        >>> spec = ModelSpec.from_model(model, require_compiled=False)  # doctest: +SKIP
        >>> predict_column(df, spec, model.get_weights(), "features", "prediction")  # doctest: +SKIP
    """
    from pyspark import SparkContext
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, DoubleType, FloatType, StructField, StructType

    if output not in ("raw", "class", "vector"):
        raise ValueError(f"output must be 'raw', 'class' or 'vector'. Received: output={output!r}.")
    fcols = [features_col] if isinstance(features_col, str) else list(features_col)
    schema = df.schema
    for c in fcols:
        check_column(schema, c, role="features", argument="features_col")
    from .session import connect_runtime, is_connect

    io = model_io(spec)
    out_width = output_width(io.output_shapes[0])
    if is_connect(df):  # no SparkContext, no broadcast: the weights travel in the UDF's closure
        runtime = runtime or connect_runtime(df.sparkSession)
        bc = _Shipped(weights)
    else:
        sc = SparkContext.getOrCreate()
        runtime = runtime or default_runtime(sc)
        bc = sc.broadcast(weights)
    bs = batch_size or DEFAULT_BATCH_SIZE
    scalar_out = output == "class" or (output == "raw" and out_width == 1)
    fields = [StructField("pred", DoubleType() if scalar_out else ArrayType(FloatType()))]
    if probability_col:
        fields.append(StructField("prob", ArrayType(FloatType())))
    n_feat = len(fcols)

    def outputs(model: Any, xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(pred, flat)``: the prediction column's values and the raw outputs, 2-D float32."""
        out = _predict_arrays(model, xs, bs)[0]
        flat = out.reshape(out.shape[0], -1).astype(np.float32)
        if output == "class":
            pred = (np.argmax(flat, axis=1) if flat.shape[1] > 1 else (flat[:, 0] > 0.5)).astype(np.float64)
        elif scalar_out:
            pred = flat[:, 0].astype(np.float64)
        else:
            pred = flat
        return pred, flat

    def infer_arrow(batches: Iterator[Any]) -> Iterator[Any]:
        # Arrow-native: list arrays reshape into numpy blocks without per-row objects
        import pyarrow as pa

        def features(cols: Any) -> list[np.ndarray]:
            cols = cols if isinstance(cols, tuple) else (cols,)
            return [conform(arrow_to_numpy(cols[i]), io.input_shapes[i]) for i in range(n_feat)]

        prepare_worker(runtime)
        model = cached_model(spec, bc.value)
        for xs in prefetched(batches, features, prefetch):
            pred, flat = outputs(model, xs)
            arrays = [pa.array(pred) if pred.ndim == 1 else _arrow_rows(pred)]
            if probability_col:
                arrays.append(_arrow_rows(flat))
            yield pa.StructArray.from_arrays(arrays, names=[f.name for f in fields])

    def infer_pandas(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.DataFrame]:
        def features(cols: Any) -> list[np.ndarray]:
            cols = cols if isinstance(cols, tuple) else (cols,)
            return [conform(_series_to_numpy(cols[i]), io.input_shapes[i]) for i in range(n_feat)]

        prepare_worker(runtime)
        model = cached_model(spec, bc.value)
        for xs in prefetched(batches, features, prefetch):
            pred, flat = outputs(model, xs)
            frame = {"pred": pred if pred.ndim == 1 else list(pred)}
            if probability_col:
                frame["prob"] = list(flat)
            yield pd.DataFrame(frame)

    infer = _scalar_iter_udf(infer_arrow, infer_pandas, StructType(fields))

    tmp = "__elephas_out"
    source, inputs, staged = _udf_inputs(df, fcols)
    result = source.withColumn(tmp, infer(*inputs))
    pred = F.col(f"{tmp}.pred")
    if output == "vector":
        pred = array_to_vector(pred)
    result = result.withColumn(output_col, pred)
    if probability_col:
        result = result.withColumn(probability_col, array_to_vector(F.col(f"{tmp}.prob")))
    return under_profile(result.drop(tmp, *staged), profile)


def _same_batches(batches: Iterator[Any]) -> Iterator[Any]:
    yield from batches


def under_profile(df: Any, profile: Any) -> Any:
    """``df`` computed in a stage that runs with the resource profile ``profile`` (``None``: ``df``).

    PySpark 4 attaches profiles to ``mapInArrow``/``mapInPandas`` only; an identity ``mapInArrow``
    at the end puts the stage that computes ``df`` (narrow operations and UDFs) under the profile.

    Example:
        >>> under_profile(df, None) is df  # doctest: +SKIP
        True
    """
    if profile is None:
        return df
    return df.mapInArrow(_same_batches, df.schema, profile=profile)


def prefetched(source: Iterable[Any], convert: Any, depth: int = 1) -> Iterator[Any]:
    """``convert(item)`` for every item of ``source``, read ahead by ``depth`` items in a thread.

    ``depth`` 0 reads in the calling thread, each item when it is asked for.

    A UDF's input batches arrive over the socket from the JVM; reading (and converting) the next
    batch while the model works on the current one lets the JVM keep serialising instead of
    waiting for the Python worker. Items keep their order; an error while reading is re-raised
    here; closing the generator early stops the reader.
    """
    import queue
    import threading

    if depth < 1:
        yield from (convert(item) for item in source)
        return
    items: queue.Queue = queue.Queue()
    slots = threading.Semaphore(depth)  # items read but not yet taken by the consumer
    stop = threading.Event()
    end = object()

    def read() -> None:
        try:
            source_iter = iter(source)
            while True:
                while not slots.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                try:
                    item = next(source_iter)
                except StopIteration:
                    items.put((end, None))
                    return
                items.put((convert(item), None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            items.put((end, exc))

    reader = threading.Thread(target=read, name="elephas-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is end:
                break
            slots.release()
            yield item
    finally:
        stop.set()
        reader.join(timeout=60)


class _Shipped:
    """Weights that travel inside the shipped function (a broadcast's ``.value`` where there is none)."""

    def __init__(self, value: list[np.ndarray]) -> None:
        self.value = value


_IO_CACHE: dict[tuple[str, str], ModelIO] = {}


def model_io(spec: ModelSpec) -> ModelIO:
    """The input and output shapes of ``spec``'s model, built once per spec on the driver."""
    key = (spec.model_id, spec.config_json)
    io = _IO_CACHE.get(key)
    if io is None:
        io = ModelIO.of(spec.build(compile=False))
        if len(_IO_CACHE) >= 16:
            _IO_CACHE.pop(next(iter(_IO_CACHE)))
        _IO_CACHE[key] = io
    return io


def _arrow_rows(matrix: np.ndarray) -> Any:
    """A 2-D array as an Arrow ``list<float>`` array, one list per row."""
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]).cast(pa.list_(pa.float32()))


def _scalar_iter_udf(arrow_fn: Any, pandas_fn: Any, return_type: Any) -> Any:
    """An Arrow-native scalar iterator UDF where PySpark has one (4.1+), else a pandas UDF."""
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf
    from pyspark.util import PythonEvalType

    arrow_iter = getattr(PythonEvalType, "SQL_SCALAR_ARROW_ITER_UDF", None)
    if hasattr(F, "arrow_udf") and arrow_iter is not None:
        return F.arrow_udf(arrow_fn, return_type, functionType=arrow_iter)
    return pandas_udf(pandas_fn, return_type, functionType=PythonEvalType.SQL_SCALAR_PANDAS_ITER_UDF)


def _series_to_numpy(series: Any) -> np.ndarray:
    values = series.to_numpy()
    if values.dtype == object:
        if not len(values):
            return np.zeros((0,), dtype=np.float32)
        return np.stack(
            [np.stack(v) if getattr(getattr(v, "dtype", None), "kind", "") == "O" else np.asarray(v) for v in values]
        )
    return values


def _feature_expr(df: Any, column: str) -> Any:
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    if is_vector_type(df.schema[column].dataType):
        return vector_to_array(F.col(column), "float32")
    return F.col(column)


def _udf_inputs(df: Any, fcols: Sequence[str]) -> tuple[Any, list[Any], list[str]]:
    """``(frame, input expressions, staged column names)`` for the prediction UDF over ``df``.

    Spark 4.3 feeds an Arrow UDF straight from a columnar scan (Parquet files, batch or streaming)
    and fails in the executors with ``[UNSUPPORTED_DATATYPE] Unsupported data type UDT(...)`` when a
    user-defined type such as an ml Vector is among the scan's columns. When ``df`` holds one, the
    feature arrays are computed in a projection of their own, which ``spark_partition_id()`` keeps
    the optimizer from folding into the UDF's input: the UDF then reads rows, and every column of
    ``df`` passes through unchanged. The staged columns are dropped again by the caller.
    """
    from pyspark.sql import functions as F

    exprs = [_feature_expr(df, c) for c in fcols]
    if not _has_udt(df.schema):
        return df, exprs, []
    names = [f"__elephas_in{i}" for i in range(len(fcols))]
    rows = F.spark_partition_id() >= 0  # always true, but not deterministic
    staged = df.withColumns({name: F.when(rows, expr) for name, expr in zip(names, exprs)})
    return staged, [F.col(name) for name in names], names


def _has_udt(data_type: Any) -> bool:
    """Whether ``data_type`` is or contains a user-defined type (an ml/mllib Vector, ...)."""
    from pyspark.sql.types import ArrayType, MapType, StructType, UserDefinedType

    if isinstance(data_type, UserDefinedType):
        return True
    if isinstance(data_type, StructType):
        return any(_has_udt(f.dataType) for f in data_type.fields)
    if isinstance(data_type, ArrayType):
        return _has_udt(data_type.elementType)
    if isinstance(data_type, MapType):
        return _has_udt(data_type.keyType) or _has_udt(data_type.valueType)
    return False
