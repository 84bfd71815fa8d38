"""Checks run on the driver before any training job starts, with expected/received messages."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..utils.checks import check_column, output_width
from .data import ModelIO, as_list, to_array


def check_fraction(name: str, value: Any) -> float:
    """``value`` in [0, 1), else a ValueError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a float in [0, 1). Received: {name}={value!r}.") from None
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1). Received: {name}={value!r}.")
    return v


def _size(shape: tuple) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def check_features(io: ModelIO, rows: list[np.ndarray]) -> None:
    """Compare one row's features (one array per input) with the model's inputs."""
    for i, (row, shape) in enumerate(zip(rows, io.input_shapes)):
        row = np.asarray(row)
        name = io.input_names[i] if i < len(io.input_names) else f"#{i}"
        if None in shape:
            if row.ndim != len(shape):
                raise ValueError(
                    f"Features for input '{name}' must have {len(shape)} dimension(s) "
                    f"per row (the model's input shape is {(None,) + tuple(shape)}). "
                    f"Received: a row of shape {row.shape}."
                )
            fixed_ok = all(s is None or s == r for s, r in zip(shape, row.shape))
            if not fixed_ok:
                raise ValueError(
                    f"Features for input '{name}' do not fit the model's input shape "
                    f"{(None,) + tuple(shape)}. Received: a row of shape {row.shape}."
                )
            continue
        if row.shape != tuple(shape) and row.size != _size(shape):
            raise ValueError(
                f"Features for input '{name}' must have shape {tuple(shape)} per row "
                f"({_size(shape)} values; the model's input shape is "
                f"{(None,) + tuple(shape)}). Received: a row of shape {row.shape} "
                f"({row.size} values)."
            )
        if row.dtype.kind not in "biuf":
            raise ValueError(f"Features for input '{name}' must be numeric. Received dtype {row.dtype}.")


def check_labels(io: ModelIO, rows: list[np.ndarray], loss: Any) -> None:
    """Compare one row's labels (one array per output) with the model's outputs."""
    losses = loss if isinstance(loss, (list, tuple)) else [loss] * len(rows)
    for j, (row, shape) in enumerate(zip(rows, io.output_shapes)):
        row = np.asarray(row)
        name = io.output_names[j] if j < len(io.output_names) else f"#{j}"
        width = output_width(shape)
        loss_name = str(losses[j] if j < len(losses) else loss).lower()
        sparse = "sparse" in loss_name
        if row.size == width or None in shape:
            continue
        if row.size == 1 and sparse:
            continue
        hint = ""
        if row.size == 1 and width > 1:
            hint = (
                " Class indices need one-hot encoding (e.g. to_simple_rdd(..., categorical=True), "
                "encode_label, or keras.utils.to_categorical) or a sparse_categorical_crossentropy "
                "loss."
            )
        raise ValueError(
            f"Labels for output '{name}' must have {width} value(s) per row (the model's "
            f"output shape is {(None,) + tuple(shape)}). Received: a label of shape "
            f"{row.shape} ({row.size} values).{hint}"
        )


def sample_from_pair(pair: Any, io: ModelIO, labels: bool = True) -> tuple[list, list | None]:
    """Split one ``(features, label)`` row (or a feature row) into per-input/output arrays."""
    from .data import _split_multi

    if labels:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(
                "Each RDD element must be a (features, label) pair. Received: "
                f"{type(pair).__name__}" + (f" of length {len(pair)}" if isinstance(pair, (tuple, list)) else "") + "."
            )
        xs = [to_array(v) for v in _split_multi(pair[0], len(io.input_shapes), "input")]
        ys = [to_array(v) for v in _split_multi(pair[1], len(io.output_shapes), "output")]
        return xs, ys
    return [to_array(v) for v in _split_multi(pair, len(io.input_shapes), "input")], None


def numpy_sample(x: Any, y: Any, io: ModelIO) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Normalise numpy training arrays to lists and check their first row."""
    xs = as_list(x, len(io.input_shapes), "input")
    ys = None if y is None else as_list(y, len(io.output_shapes), "output")
    if xs[0].shape[0] == 0:
        raise ValueError("The training data is empty. Received: arrays with 0 rows.")
    return xs, ys


def check_dataframe(df: Any, columns: list[str], role: dict[str, str]) -> None:
    """Every column exists and has a usable type (ml/mllib Vector, array or number).

    Args:
        df: The DataFrame.
        columns: The feature and label columns.
        role: ``'features'`` or ``'label'`` for each column, used in the messages.
    """
    for c in columns:
        check_column(df.schema, c, role=role.get(c, "features"))
