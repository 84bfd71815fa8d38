"""Executor side of a hyper-parameter search: run one trial, return plain values.

:func:`make_trial_fn` is a factory that copies everything the trial needs into locals (the compiled
model factory or the user's objective, the broadcast data, the seed) and returns the function Spark
ships. A trial never raises: an exception comes back as ``TrialOutcome(ok=False, error=...)`` with
its traceback, and the trained Keras model comes back as architecture (``ModelSpec.to_dict()``)
plus weights (a list of numpy arrays), never as a live Keras object.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# hyperopt's status strings (hyperopt.STATUS_OK, hyperopt.STATUS_STRINGS), spelled out so that the
# executors never import hyperopt (and scipy with it) just to run a trial.
STATUS_OK = "ok"
STATUS_STRINGS = ("new", "running", "suspended", "ok", "fail")

EXPECTED_RESULT = "{'loss': ..., 'status': STATUS_OK, 'model': model}"


@dataclass
class TrialOutcome:
    """What one trial sends back to the driver.

    Attributes:
        tid: hyperopt trial id.
        ok: Whether the trial function returned (``False``: it raised).
        result: The normalised result dict (``loss``, ``status``, ``model_spec``, ``model_weights``,
            and the user's other keys) when ``ok``.
        error: ``(exception type, message, traceback text)`` when not ``ok``.
        duration: Seconds the trial ran.
        job_failed: The Spark job failed around the trial (worker crash, unpicklable closure).
    """

    tid: int
    ok: bool
    result: dict[str, Any] | None = None
    error: tuple[str, str, str] | None = None
    duration: float = 0.0
    job_failed: bool = False


def normalize_result(raw: Any) -> dict[str, Any]:
    """Check a trial's return value and turn it into plain, picklable values.

    Args:
        raw: What the model/objective function returned: a dict with ``loss`` and ``status``
            (optionally ``model``: a Keras model, or a JSON string of one), or a bare number.

    Returns:
        The result dict; a Keras model under ``model`` is replaced by ``model_spec`` (a
        ``ModelSpec.to_dict()``) and ``model_weights`` (numpy arrays).

    Raises:
        ValueError: ``loss``/``status`` missing or invalid.
    """
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return {"loss": float(raw), "status": STATUS_OK}
    if not isinstance(raw, dict):
        raise ValueError(f"The model function must return {EXPECTED_RESULT}. Received: a {type(raw).__name__}.")
    missing = [k for k in ("loss", "status") if k not in raw]
    if missing:
        raise ValueError(
            f"The model function must return {EXPECTED_RESULT}. "
            f"Received: a dict without {missing} (keys {sorted(map(str, raw))})."
        )
    result = dict(raw)
    if result["status"] not in STATUS_STRINGS:
        raise ValueError(
            f"Invalid trial status. Expected one of {list(STATUS_STRINGS)} (e.g. hyperopt.STATUS_OK). "
            f"Received: status={result['status']!r}."
        )
    if result["status"] == STATUS_OK:
        try:
            result["loss"] = float(result["loss"])
        except (TypeError, ValueError):
            raise ValueError(f"The trial's loss must be a number. Received: loss={result['loss']!r}.") from None
        if math.isnan(result["loss"]):
            raise ValueError("The trial's loss is NaN (the model diverged?).")
    model = result.pop("model", None)
    if model is not None:
        result["model_spec"], result["model_weights"] = _ship_model(model, result)
    for key, value in list(result.items()):
        result[key] = _plain(key, value)
    return result


def _ship_model(model: Any, result: dict[str, Any]) -> tuple[dict[str, Any], list[Any] | None]:
    import keras

    from elephas.engine.shipping import ModelSpec, model_weights

    if isinstance(model, keras.Model):
        spec = ModelSpec.from_model(model, require_compiled=False)
        return spec.to_dict(), model_weights(model)
    if isinstance(model, str):  # old code returning model.to_json(): architecture only
        weights = result.pop("weights", None)
        return {"model_id": uuid.uuid4().hex, "config_json": model, "compile_config": None}, weights
    raise TypeError(
        f"The 'model' entry of the trial's result must be a Keras model. "
        f"Received: {type(model).__name__}. Return {EXPECTED_RESULT}."
    )


def _plain(key: str, value: Any) -> Any:
    """A picklable stand-in for ``value`` (Keras History -> its dict, numpy scalars -> Python)."""
    if hasattr(value, "history") and type(value).__name__ == "History":
        return dict(value.history)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    try:
        pickle.dumps(value)
    except Exception:
        logger.warning("trial result %r is not picklable; keeping its repr", key)
        return repr(value)
    return value


def make_trial_fn(
    build: Callable[[dict[str, Any]], Callable[..., Any]],
    pass_values: bool,
    data_broadcast: Any,
    seed: int | None,
    source: tuple[str, str] | None,
    runtime: Any = None,
) -> Callable[[tuple[int, dict[str, Any]]], TrialOutcome]:
    """Build the function that runs one trial on an executor.

    Args:
        build: ``build(values)`` returns the function to call (the model function with the
            template values in, or the plain objective).
        pass_values: Call it as ``fn(values, *data)`` (plain-space objective) instead of
            ``fn(*data)`` (templated model).
        data_broadcast: Broadcast of the tuple ``data()`` returned (``None``: no data).
        seed: Base seed; trial ``tid`` seeds Keras with ``seed + tid``.
        source: ``(filename, text)`` to register in ``linecache`` for readable tracebacks.
        runtime: A :class:`~elephas.engine.runtime.WorkerRuntime` applied in the Python worker before
            the trial (framework threads per task); ``None`` when trials run in the driver process.

    Returns:
        ``run((tid, values)) -> TrialOutcome``.
    """

    def run(item: tuple[int, dict[str, Any]]) -> TrialOutcome:
        tid, values = item
        started = time.time()
        try:
            if runtime is not None:
                from elephas.engine.runtime import prepare_worker

                prepare_worker(runtime)  # also exempts Keras from the daemon's gc.collect()
            if source is not None:
                register_source(*source)
            data = tuple(data_broadcast.value) if data_broadcast is not None else ()
            if seed is not None:
                import keras

                keras.utils.set_random_seed((seed + tid) % (2**31 - 1))
            fn = build(dict(values))
            raw = fn(dict(values), *data) if pass_values else fn(*data)
            result = normalize_result(raw)
            return TrialOutcome(tid, True, result=result, duration=time.time() - started)
        except Exception as exc:  # recorded as a failed trial; the search goes on
            tb = traceback.format_exc()
            return TrialOutcome(tid, False, error=(type(exc).__name__, str(exc), tb), duration=time.time() - started)
        finally:
            _release_keras_state()

    return run


def register_source(filename: str, source: str) -> None:
    """Put ``source`` into ``linecache`` under ``filename`` (never invalidated), for tracebacks."""
    import linecache

    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)


def _release_keras_state() -> None:
    """Free the trial's graph/state in this (reused) Python worker."""
    import sys

    if "keras" in sys.modules:
        try:  # no gc.collect() here (it takes a good part of a second with TensorFlow loaded)
            sys.modules["keras"].backend.clear_session(free_memory=False)
        except Exception:  # never let clean-up hide the trial's own outcome
            logger.debug("clear_session failed", exc_info=True)


class TrialCall:
    """``fn(item)`` whatever the row it is mapped over: the trial rides in the task, not in the data.

    It lives here, not in the driver-side scheduler, so that the executors unpickle it without
    importing hyperopt.
    """

    def __init__(self, fn: Callable[[tuple[int, dict[str, Any]]], TrialOutcome], item: tuple[int, dict[str, Any]]):
        self.fn = fn
        self.item = item

    def __call__(self, _: Any) -> TrialOutcome:
        return self.fn(self.item)


class InlineValue:
    """Stands in for a broadcast: the value travels with the trial function (trials in this process,
    or on Spark Connect, which has no broadcast). It lives here so that the executors unpickle it
    without importing the driver-side search (and hyperopt with it)."""

    def __init__(self, value: Any):
        self.value = value


class constant_build:  # noqa: N801 - used like a function
    """``build`` for an objective whose source cannot be read: always returns the objective."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __call__(self, values: dict[str, Any]) -> Callable[..., Any]:
        return self.fn
