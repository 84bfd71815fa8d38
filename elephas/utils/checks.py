"""Checks shared by every face and converter, one function per rule.

Each check raises a built-in exception with a message in the Keras style: what was expected, then
``Received: name=...``, then how to fix it. The checks run on the driver, before any Spark job.
This module imports nothing from elephas; pyspark and keras are imported inside the functions that
need them, so importing it never needs either.

Example:
    >>> check_positive_int("batch_size", 32)
    32
    >>> check_int("batch_size", 0)
    Traceback (most recent call last):
    ...
    ValueError: Expected batch_size to be an integer >= 1. Received: batch_size=0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "check_class_indices",
    "check_column",
    "check_int",
    "check_nb_classes",
    "check_positive_int",
    "check_scalar_labels",
    "check_single_output",
    "class_indices_message",
    "column_type",
    "int_converter",
    "is_feature_type",
    "is_vector_type",
    "model_output_width",
    "output_width",
]


# ------------------------------------------------------------------------------------ integers
def _int_message(name: str, value: Any, minimum: int | None) -> str:
    bound = "" if minimum is None else f" >= {minimum}"
    return f"Expected {name} to be an integer{bound}. Received: {name}={value!r}."


def check_int(name: str, value: Any, minimum: int | None = 1) -> int:
    """``value`` as an ``int`` of at least ``minimum``; a ``ValueError`` naming ``name`` otherwise.

    Python and numpy integers are accepted; booleans, floats and strings are not.

    Args:
        name: The argument's name, used in the message.
        value: The value to check.
        minimum: The smallest value allowed (``None``: no bound).

    Returns:
        ``value`` as a Python ``int``.

    Raises:
        ValueError: If ``value`` is not an integer or is below ``minimum``.

    Example:
        >>> check_int("patience", 0, minimum=0)
        0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(_int_message(name, value, minimum))
    if minimum is not None and value < minimum:
        raise ValueError(_int_message(name, value, minimum))
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` >= 1; a ``ValueError`` naming ``name`` otherwise (see :func:`check_int`).

    Example:
        >>> check_positive_int("epochs", 3)
        3
    """
    return check_int(name, value, 1)


def int_converter(name: str, minimum: int | None = None) -> Callable[[Any], int]:
    """A Spark ML param type converter for integers of at least ``minimum``.

    Like ``pyspark.ml.param.TypeConverters.toInt`` it accepts integral floats (``3.0``). A value
    that is not an integer raises ``TypeError``, an integer below ``minimum`` ``ValueError``, both
    with the message of :func:`check_int`.

    Example:
        >>> int_converter("output_dim", 1)(3.0)
        3
    """

    def convert(value: Any) -> int:
        integral_float = isinstance(value, (float, np.floating)) and float(value).is_integer()
        if isinstance(value, bool) or not (isinstance(value, (int, np.integer)) or integral_float):
            raise TypeError(_int_message(name, value, minimum))
        return check_int(name, int(value), minimum)

    return convert


# ------------------------------------------------------------------------------------- columns
def is_vector_type(data_type: Any) -> bool:
    """Whether a Spark SQL type is an ml or mllib vector."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.mllib.linalg import VectorUDT as MLlibVectorUDT

    return isinstance(data_type, (VectorUDT, MLlibVectorUDT))


def is_feature_type(data_type: Any) -> bool:
    """Whether a Spark SQL type can feed a model input or label: a vector, an array or a number."""
    from pyspark.sql.types import ArrayType, NumericType

    return is_vector_type(data_type) or isinstance(data_type, (ArrayType, NumericType))


def _expected(owner: str | None) -> str:
    return f"{owner} expected" if owner else "Expected"


def column_type(
    schema: Any, column: str, *, role: str | None = None, argument: str | None = None, owner: str | None = None
) -> Any:
    """The data type of ``column`` in ``schema``; a ``ValueError`` when there is no such column.

    Args:
        schema: A ``pyspark.sql.types.StructType`` (``df.schema``).
        column: The column name, taken literally.
        role: What the column holds (``'features'``, ``'label'``), used in the message.
        argument: The argument or param that named the column, used in the message's fix.
        owner: The class whose check this is, used in the message.

    Returns:
        The column's Spark SQL data type.

    Raises:
        ValueError: If ``schema`` has no field ``column``.
    """
    for field in schema.fields:
        if field.name == column:
            return field.dataType
    what = f"a {role} column {column!r}" if role else f"a column named {column!r}"
    if argument:
        what += f" ({argument})"
    names = [f.name for f in schema.fields]
    raise ValueError(
        f"{_expected(owner)} {what}. Received: a DataFrame with columns {names}. "
        + (f"Set {argument} to one of them." if argument else "Name one of them.")
    )


def check_column(
    schema: Any, column: str, *, role: str = "features", argument: str | None = None, owner: str | None = None
) -> Any:
    """The type of a feature or label column: it exists and holds vectors, numeric arrays or numbers.

    Args:
        schema: A ``pyspark.sql.types.StructType`` (``df.schema``).
        column: The column name.
        role: ``'features'`` or ``'label'``, used in the message.
        argument: The argument or param that named the column, used in the message.
        owner: The class whose check this is, used in the message.

    Returns:
        The column's Spark SQL data type.

    Raises:
        ValueError: If the column is missing or holds another type (strings, maps, ...).

    Example:
        >>> from pyspark.sql.types import DoubleType, StructField, StructType
        >>> check_column(StructType([StructField("x", DoubleType())]), "x")
        DoubleType()
    """
    data_type = column_type(schema, column, role=role, argument=argument, owner=owner)
    if not is_feature_type(data_type):
        fix = (
            "Index string labels with StringIndexer first."
            if role == "label"
            else "Assemble the features into one vector column with VectorAssembler first."
        )
        name = f"{argument} {column!r}" if argument else f"the {role} column {column!r}"
        raise ValueError(
            f"{_expected(owner)} {name} to hold ml Vectors, numeric arrays or numbers. "
            f"Received: type {data_type.simpleString()}. {fix}"
        )
    return data_type


# ------------------------------------------------------------------------------------- outputs
def output_width(shape: Sequence[int | None] | None) -> int:
    """Values per row of one output of shape ``shape`` (batch axis excluded; ``None`` counts as 1).

    Example:
        >>> output_width((2, 3)), output_width(()), output_width((None, 4))
        (6, 1, 4)
    """
    if not shape:
        return 1
    return int(np.prod([d or 1 for d in shape], dtype=np.int64))


def model_output_width(model: Any) -> int:
    """Values per row of a Keras model's first output (``10`` for a ``Dense(10)`` head)."""
    return output_width(tuple(model.outputs[0].shape[1:]))


def check_single_output(
    n_outputs: int,
    needed_by: str = "categorical labels",
    fix: str = "Use a model with one output, or one-hot encode each label column yourself.",
) -> None:
    """A ``ValueError`` unless the model has exactly one output.

    Args:
        n_outputs: The model's number of outputs.
        needed_by: What needs a single output, used in the message.
        fix: How to fix it, the message's last sentence.
    """
    if n_outputs != 1:
        raise ValueError(
            f"Expected a single-output model for {needed_by}. Received: a model with {n_outputs} outputs. {fix}"
        )


def check_nb_classes(nb_classes: int | None, width: int) -> int:
    """``nb_classes``, which must equal the model's output width (``None`` means the width).

    Raises:
        ValueError: If ``nb_classes`` differs from ``width``.

    Example:
        >>> check_nb_classes(None, 3)
        3
    """
    if nb_classes is None:
        return int(width)
    if nb_classes != width:
        raise ValueError(
            f"Expected nb_classes to match the model's output width {width}. Received: nb_classes={nb_classes}. "
            "Leave nb_classes unset, or give the model's last layer nb_classes units."
        )
    return int(nb_classes)


def check_scalar_labels(loss: Any, width: int, received: str) -> None:
    """A ``ValueError`` when scalar labels meet a model with ``width`` > 1 output units and a dense loss.

    Class indices need one-hot encoding (``categorical=True``) unless the loss is a sparse one.

    Args:
        loss: The model's loss (a name or an object; compared by its lower-cased text).
        width: The model's output width (see :func:`model_output_width`).
        received: What the labels are, for the message (``"a scalar label column 'label' (double)"``).
    """
    name = str(loss).lower()
    if width > 1 and "sparse" not in name:
        raise ValueError(
            f"The loss {name!r} expected labels with {width} values per row (the model has {width} output units). "
            f"Received: {received} with categorical=False. Set categorical=True and nb_classes={width} to one-hot "
            "encode class indices, or use sparse_categorical_crossentropy."
        )


# ------------------------------------------------------------------------------ class indices
def class_indices_message(nb_classes: int, received: str) -> str:
    """The message for labels outside ``[0, nb_classes)``; ``received`` is e.g. ``'labels=[7.0]'``.

    Example:
        >>> class_indices_message(3, "labels=[7.0]")  # doctest: +ELLIPSIS
        'Expected labels to be class indices in [0, 3). Received: labels=[7.0]. ...'
    """
    return (
        f"Expected labels to be class indices in [0, {nb_classes}). Received: {received}. "
        f"Pass whole-number labels from 0 to {nb_classes - 1}, or set nb_classes to the number of classes."
    )


def check_class_indices(labels: Any, nb_classes: int) -> np.ndarray:
    """The labels as ``int64`` class indices, each checked to be a whole number in ``[0, nb_classes)``.

    Args:
        labels: An array (any shape) of numbers.
        nb_classes: The number of classes.

    Returns:
        The flattened labels as ``int64``.

    Raises:
        ValueError: Naming up to five offending labels.

    Example:
        >>> check_class_indices([2.0, 0.0], 3).tolist()
        [2, 0]
    """
    flat = np.asarray(labels).reshape(-1)
    with np.errstate(invalid="ignore"):
        idx = flat.astype(np.int64)
        bad = (idx < 0) | (idx >= nb_classes) | (idx != flat)
    if np.any(bad):
        raise ValueError(class_indices_message(nb_classes, f"labels={flat[bad][:5].tolist()}"))
    return idx
