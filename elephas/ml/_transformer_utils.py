"""Shared checks and converters for the DataFrame transformers and evaluators.

Everything here runs on the driver: schema checks raise before any Spark job starts, with messages
of the form ``"<Owner> expected ..., received ..."``; the rules shared with the rest of elephas (a
column exists, integers, vector types) are those of :mod:`elephas.utils.checks`. The column helpers
build native Spark expressions only (no Python UDFs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from pyspark.ml.functions import vector_to_array
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DecimalType,
    DoubleType,
    FloatType,
    NumericType,
    StringType,
)

from ..utils import checks

logger = logging.getLogger(__name__)


def col(name: str) -> Column:
    """A column reference that takes ``name`` literally (dots and backticks are not parsed)."""
    return F.col("`" + name.replace("`", "``") + "`")


def is_vector(data_type: DataType) -> bool:
    """Whether ``data_type`` is a Spark ML (or MLlib) vector."""
    return checks.is_vector_type(data_type)


def is_numeric(data_type: DataType) -> bool:
    """Whether ``data_type`` is a numeric scalar (booleans are not numeric)."""
    return isinstance(data_type, NumericType)


def is_fractional(data_type: DataType) -> bool:
    """Whether ``data_type`` can hold non-integer values."""
    return isinstance(data_type, (DoubleType, FloatType, DecimalType))


def is_numeric_array(data_type: DataType) -> bool:
    """Whether ``data_type`` is an array of numeric scalars."""
    return isinstance(data_type, ArrayType) and is_numeric(data_type.elementType)


def describe_type(data_type: DataType) -> str:
    """A short human-readable name of a Spark SQL type (``'vector'`` for vectors)."""
    if is_vector(data_type):
        return "vector"
    return data_type.simpleString()


def column_type(df: DataFrame, name: str, owner: str, argument: str) -> DataType:
    """The data type of column ``name`` of ``df``; a clear ``ValueError`` when it is missing.

    Args:
        df: The input DataFrame.
        name: The column name, taken literally.
        owner: Class name used in the message.
        argument: Constructor argument that named the column, used in the message.

    Returns:
        The column's Spark SQL data type.

    Raises:
        ValueError: If ``df`` has no column ``name``.
    """
    return checks.column_type(df.schema, name, argument=argument, owner=owner)


def require(instance: Params, param: Param, owner: str, argument: str) -> Any:
    """The value of ``param``; a clear ``ValueError`` if it has neither a value nor a default."""
    if not instance.isDefined(param):
        raise ValueError(
            f"{owner} expected {argument} to be set, received nothing. "
            f"Pass {argument}=... to the constructor or to setParams()."
        )
    return instance.getOrDefault(param)


def null_safe(source: Column, result: Column) -> Column:
    """``result``, or null where ``source`` is null.

    The vector conversion functions do not accept nulls, so they must only see non-null rows.
    """
    return F.when(source.isNull(), F.lit(None)).otherwise(result)


def as_double_array(column: Column, data_type: DataType) -> Column:
    """``column`` (a vector or a numeric array) as ``array<double>`` (null stays null)."""
    if is_vector(data_type):
        return null_safe(column, vector_to_array(column, "float64"))
    return column.cast(ArrayType(DoubleType()))


def check_vector_or_array(data_type: DataType, owner: str, name: str) -> None:
    """Raise ``TypeError`` unless ``data_type`` is a vector or a numeric array."""
    if not (is_vector(data_type) or is_numeric_array(data_type)):
        raise TypeError(
            f"{owner} expected column {name!r} to hold vectors or numeric arrays, received {describe_type(data_type)}."
        )


def fail(message: Column | str) -> Column:
    """An expression that raises ``message`` on the executor when it is evaluated."""
    return F.raise_error(message if isinstance(message, Column) else F.lit(message))


def set_kwargs(instance: Params, kwargs: Mapping[str, Any], names: Mapping[str, str]) -> Params:
    """Set params from constructor keyword arguments (dist-keras names mapped to param names).

    An explicit ``None`` clears the param (back to its default, if it has one).
    """
    for argument, value in kwargs.items():
        param = instance.getParam(names[argument])
        if value is None:
            instance.clear(param)
        else:
            instance._set(**{param.name: value})
    return instance


def positive_int(argument: str) -> Callable[[Any], int]:
    """A type converter accepting integers > 0 only (``TypeError`` for non-integers, ``ValueError`` below 1)."""
    return checks.int_converter(argument, 1)


def integer(argument: str) -> Callable[[Any], int]:
    """A type converter accepting integers (and integral floats) only."""
    return checks.int_converter(argument)


def finite_float(argument: str) -> Callable[[Any], float]:
    """A type converter accepting finite real numbers."""

    def convert(value: Any) -> float:
        if isinstance(value, bool):
            raise TypeError(f"expected {argument} to be a number, received {value!r}.")
        number = TypeConverters.toFloat(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"expected {argument} to be a finite number, received {value!r}.")
        return number

    return convert


def shape(argument: str) -> Callable[[Any], list[int]]:
    """A type converter accepting a non-empty list/tuple of positive integers."""

    def convert(value: Any) -> list[int]:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"expected {argument} to be a tuple of positive integers, received {value!r}.")
        dims = [checks.int_converter(argument)(v) for v in value]
        if not dims or any(d <= 0 for d in dims):
            raise ValueError(f"expected {argument} to be a non-empty tuple of positive integers, received {value!r}.")
        return dims

    return convert


def string_list(argument: str) -> Callable[[Any], list[str]]:
    """A type converter accepting a non-empty list of distinct column names."""

    def convert(value: Any) -> list[str]:
        if isinstance(value, str):
            raise TypeError(f"expected {argument} to be a list of column names, received {value!r}.")
        names = TypeConverters.toListString(value)
        if not names or len(set(names)) != len(names):
            raise ValueError(
                f"expected {argument} to be a non-empty list of distinct column names, received {value!r}."
            )
        return names

    return convert


def scalar_label(value: Any) -> Any:
    """A type converter for a label compared with ``==``: a string, a number or a boolean."""
    if isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"expected label to be a string, a number or a boolean, received {value!r}.")


def check_label_type(label: Any, data_type: DataType, owner: str, name: str) -> None:
    """Raise ``TypeError`` when ``label`` cannot be compared with a ``data_type`` column."""
    if isinstance(data_type, StringType):
        ok = isinstance(label, str)
    elif isinstance(data_type, BooleanType):
        ok = isinstance(label, bool)
    elif is_numeric(data_type):
        ok = isinstance(label, (int, float)) and not isinstance(label, bool)
    else:
        raise TypeError(
            f"{owner} expected column {name!r} to hold strings, numbers or booleans, received "
            f"{describe_type(data_type)}."
        )
    if not ok:
        raise TypeError(
            f"{owner} expected a label of the same kind as column {name!r} "
            f"({describe_type(data_type)}), received {label!r} ({type(label).__name__})."
        )
