"""The one place that tells a classic SparkSession from a Spark Connect one.

On a Spark Connect session (Spark 4's client; Databricks shared and serverless clusters) there is
no SparkContext, no RDD and no broadcast: everything runs through DataFrames. Code that needs a
SparkContext asks :func:`require_classic` first, so that a Connect user gets one clear error before
any job starts, and code that works on both asks :func:`is_connect` which path to take.
"""

from __future__ import annotations

import os
from typing import Any

from .runtime import WorkerRuntime


def _connect_dataframe_class() -> type | None:
    try:
        from pyspark.sql.connect.dataframe import DataFrame
    except Exception:  # noqa: BLE001 - the connect extra (grpcio, ...) is optional
        return None
    return DataFrame


def _connect_session_class() -> type | None:
    try:
        from pyspark.sql.connect.session import SparkSession
    except Exception:  # noqa: BLE001 - the connect extra (grpcio, ...) is optional
        return None
    return SparkSession


def is_connect(obj: Any = None) -> bool:
    """Whether ``obj`` (a DataFrame or SparkSession) belongs to a Spark Connect session.

    Args:
        obj: A DataFrame or a SparkSession; ``None`` asks about the process: whether PySpark runs
            as a Connect client (``pyspark.sql.utils.is_remote``).

    Example:
        >>> is_connect(None) in (True, False)
        True
    """
    if obj is None:
        try:
            from pyspark.sql.utils import is_remote
        except ImportError:  # pragma: no cover - PySpark < 3.4
            return False
        return bool(is_remote())
    for cls in (_connect_dataframe_class(), _connect_session_class()):
        if cls is not None and isinstance(obj, cls):
            return True
    return False


def active_session() -> Any:
    """The active SparkSession (classic or Connect).

    Raises:
        RuntimeError: If there is none.
    """
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is None:
        raise RuntimeError(
            "Expected an active SparkSession, received none. Create one first, e.g. "
            "SparkSession.builder.master('local[*]').getOrCreate() or, for Spark Connect, "
            "SparkSession.builder.remote('sc://host').getOrCreate()."
        )
    return session


def session_of(data: Any) -> Any:
    """The session a DataFrame belongs to, else the active session."""
    session = getattr(data, "sparkSession", None)
    return session if session is not None else active_session()


RDD_HINT = "On a Spark Connect session pass a DataFrame instead (e.g. spark.createDataFrame(...))."


def require_classic(what: str, received: Any = None, hint: str = RDD_HINT) -> Any:
    """The active SparkContext, or one clear error on a Spark Connect session.

    Args:
        what: What needs the SparkContext, for the message (e.g. ``'SparkModel.predict on an RDD'``).
        received: The value that needed it (its type is named in the message).
        hint: How to get along without a SparkContext.

    Returns:
        The classic ``SparkContext``.

    Raises:
        TypeError: On a Spark Connect session (or when ``received`` is a Connect DataFrame), before
            any job starts.
        RuntimeError: When there is no active SparkContext at all.

    Example:
        >>> require_classic("SparkModel.predict on an RDD")  # doctest: +SKIP
        TypeError: SparkModel.predict on an RDD needs RDDs and a SparkContext, which only a classic ...
    """
    if is_connect() or is_connect(received):
        shown = (
            f"{type(received).__module__}.{type(received).__name__}"
            if received is not None
            else "a Spark Connect session"
        )
        raise TypeError(
            f"{what} needs RDDs and a SparkContext, which only a classic SparkSession has. {hint} Received: {shown}."
        )
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    if sc is None:
        raise RuntimeError(
            f"{what} needs an active SparkContext, received none. Create a SparkSession first, "
            "e.g. SparkSession.builder.master('local[*]').getOrCreate()."
        )
    return sc


def connect_runtime(session: Any) -> WorkerRuntime:
    """Worker settings for a Connect session, from its SQL configuration (no SparkContext).

    Local masters (``local[N]``) share the machine's cores among ``N`` tasks; otherwise each task
    gets ``spark.task.cpus`` threads.
    """
    import keras

    def conf(key: str, default: str) -> str:
        try:
            value = session.conf.get(key, None)
        except Exception:  # noqa: BLE001 - a server may refuse to show some keys
            value = None
        return value if value else default

    master = conf("spark.master", "")
    task_cpus = int(conf("spark.task.cpus", "1"))
    threads = task_cpus
    if master.startswith("local"):
        cores = os.cpu_count() or 1
        inside = master[master.find("[") + 1 : master.find("]")] if "[" in master else "1"
        slots = cores if inside in ("*", "") else int(inside.split(",")[0])
        threads = max(1, cores // max(1, slots)) * task_cpus
    return WorkerRuntime(keras.backend.backend(), threads)
