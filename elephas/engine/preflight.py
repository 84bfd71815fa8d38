"""Check on the driver, before any Spark job, that Keras can train the model at all.

A model that plain Keras cannot train (a Keras 2 positional ``compile(optimizer, loss, metrics)``,
whose third argument is ``loss_weights`` in Keras 3; a loss that does not fit the outputs; a
custom object that does not deserialize) would otherwise fail in the first task with a message
far from its cause. :func:`preflight_check` rebuilds the model the way executors do (from its
:class:`~elephas.engine.shipping.ModelSpec`) and trains one step on one sample row, leaving the
user's model, its weights and the random state untouched.
"""

from __future__ import annotations

import logging
import numbers
import random
from typing import Any

import numpy as np

from .shipping import ModelSpec

logger = logging.getLogger(__name__)

_PASSED: set[tuple[Any, ...]] = set()
"""Models (spec id: architecture and compile settings) and sample shapes that passed already: a
second ``fit`` of the same model on the same kind of rows builds nothing on the driver."""


def check_compile_arguments(compile_config: dict[str, Any] | None) -> None:
    """Reject compile arguments Keras 3 would only refuse inside a training step.

    Args:
        compile_config: ``model.get_compile_config()``.

    Raises:
        ValueError: When ``loss_weights`` holds something other than numbers (typically metric
            names given as Keras 2's third positional argument of ``compile``).

    Example:
        >>> check_compile_arguments({"loss": "mse", "loss_weights": [1.0]})
        >>> check_compile_arguments({"loss": "mse", "loss_weights": ["accuracy"]})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected compile(loss_weights=...) to be numbers (a list or a dict of floats). ...
    """
    weights = (compile_config or {}).get("loss_weights")
    if weights is None:
        return
    values = (
        weights.values()
        if isinstance(weights, dict)
        else (weights if isinstance(weights, (list, tuple)) else [weights])
    )
    if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        return
    raise ValueError(
        "Expected compile(loss_weights=...) to be numbers (a list or a dict of floats). "
        f"Received: loss_weights={weights!r}. In Keras 3 the third positional argument of compile() "
        "is loss_weights, not metrics: call model.compile(optimizer=..., loss=..., "
        "metrics=['accuracy']) with keywords."
    )


def preflight_check(spec: ModelSpec, sample: tuple[list[np.ndarray], list[np.ndarray]] | None) -> None:
    """Fail on the driver, with Keras's own message, when Keras cannot train the model.

    Args:
        spec: The spec shipped to the executors.
        sample: ``(xs, ys)``: one row per model input and output, each with a leading batch axis
            of 1 (``None`` skips the training step).

    Raises:
        ValueError: When the compile arguments are invalid, or when rebuilding the model from its
            spec or training one step on ``sample`` fails; the message is Keras's, and the
            original exception is chained.
    """
    check_compile_arguments(spec.compile_config)
    if sample is None or spec.compile_config is None:
        return
    key = (spec.model_id, tuple(tuple(a.shape[1:]) + (str(a.dtype),) for group in sample for a in group))
    if key in _PASSED:  # this model already trained a step on rows of these shapes
        return
    py_state, np_state = random.getstate(), np.random.get_state()  # building draws default seeds
    try:
        model = spec.build(compile=True)
        xs, ys = sample
        model.train_on_batch(xs[0] if len(xs) == 1 else list(xs), ys[0] if len(ys) == 1 else list(ys))
    except Exception as exc:
        raise ValueError(
            f"Keras cannot train this model; nothing was started on Spark. Keras says: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    _PASSED.add(key)
    logger.debug("pre-flight training step passed on the driver")
