"""dist-keras style DataFrame utilities as persistable Spark ML transformers.

Every transformer here is a real :class:`pyspark.ml.Transformer`: its params are declared as class
attributes with type converters, its constructor takes dist-keras argument names as keywords only,
it implements ``_transform`` only, and it saves and loads (alone or inside a ``PipelineModel``)
through :class:`~pyspark.ml.util.DefaultParamsWritable` /
:class:`~pyspark.ml.util.DefaultParamsReadable`.

All transformations are native Spark expressions (vectors go through
:func:`pyspark.ml.functions.vector_to_array` and :func:`~pyspark.ml.functions.array_to_vector`),
never a per-row Python function. Schema problems
(missing column, wrong column type, unset param) raise on the driver before any job runs; problems
that depend on the data (an out-of-range index, a vector of the wrong length) raise from inside the
expression with an ``"expected ..., received ..."`` message. Null inputs give null outputs.

Example:
    >>> from elephas.ml.transformers import OneHotTransformer, LabelIndexTransformer, shuffle
    >>> df = spark.createDataFrame([(0.0,), (2.0,)], ["label_index"])
    >>> onehot = OneHotTransformer(output_dim=3, input_col="label_index", output_col="label")
    >>> onehot.transform(df).select("label").collect()
    [Row(label=DenseVector([1.0, 0.0, 0.0])), Row(label=DenseVector([0.0, 0.0, 1.0]))]
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType

from elephas.ml import _transformer_utils as U
from elephas.ml.evaluators import AccuracyEvaluator
from elephas.ml.persistence import ElephasReadable, ElephasWritable
from elephas.ml.transformer import ElephasTransformer
from elephas.utils.checks import is_feature_type

logger = logging.getLogger(__name__)

__all__ = [
    "AccuracyEvaluator",
    "BinaryLabelTransformer",
    "DenseTransformer",
    "LabelIndexTransformer",
    "MinMaxTransformer",
    "ModelPredictor",
    "OneHotTransformer",
    "ReshapeTransformer",
    "StandardTransformer",
    "shuffle",
]

_COLUMNS = {"input_col": "inputCol", "output_col": "outputCol"}


class _ColumnTransformer(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """Base of the single-column transformers: maps dist-keras argument names onto params."""

    _ARGUMENTS: dict[str, str] = _COLUMNS

    def _set_arguments(self, kwargs: dict[str, Any]) -> _ColumnTransformer:
        U.set_kwargs(self, kwargs, self._ARGUMENTS)
        return self

    def _input(self, df: DataFrame) -> tuple[str, Any, str]:
        """(input column name, its data type, output column name), checked on the driver."""
        owner = type(self).__name__
        name = U.require(self, self.inputCol, owner, "input_col")
        output = U.require(self, self.outputCol, owner, "output_col")
        return name, U.column_type(df, name, owner, "input_col"), output


class OneHotTransformer(_ColumnTransformer):
    """Turn a class index into a one-hot :class:`~pyspark.ml.linalg.DenseVector`.

    The index column may be of any numeric type (``StringIndexer`` output is ``double``); a
    value that is negative, ``>= output_dim``, NaN or not a whole number fails the job with a
    clear message.

    Args:
        output_dim: Length of the one-hot vector (number of classes).
        input_col: Column with the class index.
        output_col: Column to write the one-hot vector to.

    Example:
        >>> t = OneHotTransformer(output_dim=3, input_col="label_index", output_col="label")
        >>> t.transform(spark.createDataFrame([(1.0,)], ["label_index"])).first().label
        DenseVector([0.0, 1.0, 0.0])
    """

    outputDim: Param[int] = Param(
        Params._dummy(),
        "outputDim",
        "length of the one-hot vector (number of classes), > 0",
        typeConverter=U.positive_int("output_dim"),
    )

    _ARGUMENTS = {**_COLUMNS, "output_dim": "outputDim"}

    @keyword_only
    def __init__(
        self,
        *,
        output_dim: int | None = None,
        input_col: str | None = None,
        output_col: str | None = None,
    ) -> None:
        super().__init__()
        self._set_arguments(self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        output_dim: int | None = None,
        input_col: str | None = None,
        output_col: str | None = None,
    ) -> OneHotTransformer:
        """Set params by their dist-keras names."""
        return self._set_arguments(self._input_kwargs)

    def getOutputDim(self) -> int:
        """The length of the one-hot vector."""
        return self.getOrDefault(self.outputDim)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        owner = type(self).__name__
        dim = U.require(self, self.outputDim, owner, "output_dim")
        name, data_type, output = self._input(dataset)
        if not U.is_numeric(data_type):
            raise TypeError(
                f"{owner} expected column {name!r} to hold numeric class indices, received "
                f"{U.describe_type(data_type)}. Index string labels first, e.g. with StringIndexer."
            )
        index = U.col(name)
        expected = f"{owner} expected an integer index in [0, {dim}) in column {name!r}, received "
        received = F.concat(F.lit(expected), index.cast("string"))
        vector = F.when(index.isNull(), F.lit(None)).when((index < 0) | (index >= dim), U.fail(received))
        if U.is_fractional(data_type):
            # NaN compares greater than any number in Spark, so it is caught by `index >= dim`.
            vector = vector.when(index % 1 != 0, U.fail(received))
        vector = vector.otherwise(
            array_to_vector(
                F.transform(
                    F.sequence(F.lit(0), F.lit(dim - 1)),
                    lambda i: F.when(i == index, F.lit(1.0)).otherwise(F.lit(0.0)),
                )
            )
        )
        return dataset.withColumn(output, vector)


class LabelIndexTransformer(_ColumnTransformer):
    """Turn a prediction vector into a class index (``double``).

    By default the index is the argmax (the first one on ties). With ``activation_threshold``
    set, it is the first index whose value is ``>= activation_threshold``, or ``default_index``
    when none is.
    A vector whose length is not ``output_dim`` fails the job with a clear message.

    Args:
        output_dim: Expected length of the prediction vectors (number of classes).
        input_col: Column with the prediction vectors (vector or numeric array).
        output_col: Column to write the index to.
        default_index: Index used when no value reaches ``activation_threshold``.
        activation_threshold: Optional threshold; ``None`` (the default) means argmax.

    Example:
        >>> t = LabelIndexTransformer(output_dim=3)
        >>> df = spark.createDataFrame([(Vectors.dense([0.1, 0.7, 0.2]),)], ["prediction"])
        >>> t.transform(df).first().prediction_index
        1.0
    """

    outputDim: Param[int] = Param(
        Params._dummy(),
        "outputDim",
        "length of the prediction vectors (number of classes), > 0",
        typeConverter=U.positive_int("output_dim"),
    )
    defaultIndex: Param[int] = Param(
        Params._dummy(),
        "defaultIndex",
        "index used when no value reaches activationThreshold",
        typeConverter=U.integer("default_index"),
    )
    activationThreshold: Param[float] = Param(
        Params._dummy(),
        "activationThreshold",
        "if set, the first index whose value is >= this threshold (else defaultIndex); if unset, the argmax",
        typeConverter=U.finite_float("activation_threshold"),
    )

    _ARGUMENTS = {
        **_COLUMNS,
        "output_dim": "outputDim",
        "default_index": "defaultIndex",
        "activation_threshold": "activationThreshold",
    }

    @keyword_only
    def __init__(
        self,
        *,
        output_dim: int | None = None,
        input_col: str = "prediction",
        output_col: str = "prediction_index",
        default_index: int = 0,
        activation_threshold: float | None = None,
    ) -> None:
        super().__init__()
        self._setDefault(inputCol="prediction", outputCol="prediction_index", defaultIndex=0)
        self._set_arguments(self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        output_dim: int | None = None,
        input_col: str = "prediction",
        output_col: str = "prediction_index",
        default_index: int = 0,
        activation_threshold: float | None = None,
    ) -> LabelIndexTransformer:
        """Set params by their dist-keras names."""
        return self._set_arguments(self._input_kwargs)

    def getOutputDim(self) -> int:
        """The expected length of the prediction vectors."""
        return self.getOrDefault(self.outputDim)

    def getDefaultIndex(self) -> int:
        """The index used when no value reaches the threshold."""
        return self.getOrDefault(self.defaultIndex)

    def getActivationThreshold(self) -> float | None:
        """The activation threshold, or ``None`` for argmax."""
        if not self.isDefined(self.activationThreshold):
            return None
        return self.getOrDefault(self.activationThreshold)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        owner = type(self).__name__
        dim = U.require(self, self.outputDim, owner, "output_dim")
        name, data_type, output = self._input(dataset)
        U.check_vector_or_array(data_type, owner, name)
        values = U.as_double_array(U.col(name), data_type)
        threshold = self.getActivationThreshold()
        if threshold is None:
            position = F.array_position(values, F.array_max(values))
        else:
            first = F.array_position(F.transform(values, lambda v: v >= F.lit(threshold)), True)
            position = F.when(first == 0, F.lit(self.getDefaultIndex() + 1)).otherwise(first)
        wrong_size = F.concat(
            F.lit(f"{owner} expected vectors of length {dim} in column {name!r}, received length "),
            F.size(values).cast("string"),
        )
        index = (
            F.when(values.isNull(), F.lit(None))
            .when(F.size(values) != dim, U.fail(wrong_size))
            .otherwise((position - 1).cast(DoubleType()))
        )
        return dataset.withColumn(output, index)


class MinMaxTransformer(_ColumnTransformer):
    """Map values linearly from ``[o_min, o_max]`` onto ``[n_min, n_max]``.

    ``y = (x - o_min) * (n_max - n_min) / (o_max - o_min) + n_min``, element-wise for vectors.
    Values outside ``[o_min, o_max]`` are extrapolated, not clipped.

    Args:
        o_min: Lower end of the original range.
        o_max: Upper end of the original range (must differ from ``o_min``).
        n_min: Lower end of the new range.
        n_max: Upper end of the new range.
        input_col: Column to scale.
        output_col: Column to write the scaled values to.
        is_vector: ``True`` (default) for a vector or numeric-array column (output of the same
            kind, arrays become ``array<double>``), ``False`` for a numeric scalar column (output
            ``double``).

    Example:
        >>> t = MinMaxTransformer(o_min=0.0, o_max=255.0, n_min=0.0, n_max=1.0,
        ...                       input_col="pixels", output_col="pixels_scaled")
    """

    oMin: Param[float] = Param(
        Params._dummy(),
        "oMin",
        "lower end of the original range",
        typeConverter=U.finite_float("o_min"),
    )
    oMax: Param[float] = Param(
        Params._dummy(),
        "oMax",
        "upper end of the original range",
        typeConverter=U.finite_float("o_max"),
    )
    nMin: Param[float] = Param(
        Params._dummy(),
        "nMin",
        "lower end of the new range",
        typeConverter=U.finite_float("n_min"),
    )
    nMax: Param[float] = Param(
        Params._dummy(),
        "nMax",
        "upper end of the new range",
        typeConverter=U.finite_float("n_max"),
    )
    isVector: Param[bool] = Param(
        Params._dummy(),
        "isVector",
        "whether the input column holds vectors (or arrays)",
        typeConverter=TypeConverters.toBoolean,
    )

    _ARGUMENTS = {
        **_COLUMNS,
        "o_min": "oMin",
        "o_max": "oMax",
        "n_min": "nMin",
        "n_max": "nMax",
        "is_vector": "isVector",
    }

    @keyword_only
    def __init__(
        self,
        *,
        o_min: float | None = None,
        o_max: float | None = None,
        n_min: float | None = None,
        n_max: float | None = None,
        input_col: str | None = None,
        output_col: str | None = None,
        is_vector: bool = True,
    ) -> None:
        super().__init__()
        self._setDefault(isVector=True)
        self._set_arguments(self._input_kwargs)
        self._check_range(required=False)

    @keyword_only
    def setParams(
        self,
        *,
        o_min: float | None = None,
        o_max: float | None = None,
        n_min: float | None = None,
        n_max: float | None = None,
        input_col: str | None = None,
        output_col: str | None = None,
        is_vector: bool = True,
    ) -> MinMaxTransformer:
        """Set params by their dist-keras names."""
        self._set_arguments(self._input_kwargs)
        self._check_range(required=False)
        return self

    def _check_range(self, required: bool) -> tuple[float, float, float, float] | None:
        owner = type(self).__name__
        params = [(self.oMin, "o_min"), (self.oMax, "o_max"), (self.nMin, "n_min"), (self.nMax, "n_max")]
        if not required and not all(self.isDefined(p) for p, _ in params):
            return None
        o_min, o_max, n_min, n_max = (U.require(self, p, owner, arg) for p, arg in params)
        if o_min == o_max:
            raise ValueError(
                f"{owner} expected o_min != o_max (a non-empty original range), received "
                f"o_min={o_min!r}, o_max={o_max!r}."
            )
        return o_min, o_max, n_min, n_max

    def _transform(self, dataset: DataFrame) -> DataFrame:
        owner = type(self).__name__
        o_min, o_max, n_min, n_max = self._check_range(required=True)
        name, data_type, output = self._input(dataset)
        scale = (n_max - n_min) / (o_max - o_min)

        def rescale(x: Column) -> Column:
            return (x - F.lit(o_min)) * F.lit(scale) + F.lit(n_min)

        source = U.col(name)
        if self.getOrDefault(self.isVector):
            if U.is_vector(data_type):
                result = U.null_safe(
                    source,
                    array_to_vector(F.transform(vector_to_array(source, "float64"), rescale)),
                )
            elif U.is_numeric_array(data_type):
                result = F.transform(source.cast(ArrayType(DoubleType())), rescale)
            else:
                raise TypeError(
                    f"{owner} expected column {name!r} to hold vectors or numeric arrays "
                    f"(is_vector=True), received {U.describe_type(data_type)}. "
                    "Pass is_vector=False for a scalar column."
                )
        else:
            if not U.is_numeric(data_type):
                raise TypeError(
                    f"{owner} expected column {name!r} to hold numbers (is_vector=False), received "
                    f"{U.describe_type(data_type)}. Pass is_vector=True for a vector column."
                )
            result = rescale(source.cast(DoubleType()))
        return dataset.withColumn(output, result)


class BinaryLabelTransformer(_ColumnTransformer):
    """Encode "value equals ``label``" as a two-element one-hot vector.

    Matching rows get ``[0.0, 1.0]`` and all others ``[1.0, 0.0]``, so the positive class has
    index 1 (the same vector :class:`OneHotTransformer` gives for index 1, and
    :class:`LabelIndexTransformer` maps it back to ``1.0``). Note that dist-keras used the
    opposite order (``[1.0, 0.0]`` for a match). Null values give null.

    Args:
        input_col: Column to compare (strings, numbers or booleans).
        output_col: Column to write the vector to.
        label: The positive value; must be of the same kind as the column.

    Example:
        >>> t = BinaryLabelTransformer(input_col="Label", output_col="label", label="s")
    """

    label: Param[Any] = Param(
        Params._dummy(),
        "label",
        "the value that marks a positive row (compared with ==)",
        typeConverter=U.scalar_label,
    )

    _ARGUMENTS = {**_COLUMNS, "label": "label"}

    @keyword_only
    def __init__(
        self,
        *,
        input_col: str | None = None,
        output_col: str | None = None,
        label: Any = None,
    ) -> None:
        super().__init__()
        self._set_arguments(self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        input_col: str | None = None,
        output_col: str | None = None,
        label: Any = None,
    ) -> BinaryLabelTransformer:
        """Set params by their dist-keras names."""
        return self._set_arguments(self._input_kwargs)

    def getLabel(self) -> Any:
        """The positive value."""
        return self.getOrDefault(self.label)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        owner = type(self).__name__
        label = U.require(self, self.label, owner, "label")
        name, data_type, output = self._input(dataset)
        U.check_label_type(label, data_type, owner, name)
        value = U.col(name)
        positive = F.array(F.lit(0.0), F.lit(1.0))
        negative = F.array(F.lit(1.0), F.lit(0.0))
        encoded = (
            F.when(value.isNull(), F.lit(None))
            .when(value == F.lit(label), array_to_vector(positive))
            .otherwise(array_to_vector(negative))
        )
        return dataset.withColumn(output, encoded)


class StandardTransformer(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Standardize numeric columns: ``(x - mean) / std``, written to ``<column><suffix>``.

    The means and (sample) standard deviations of all ``columns`` are computed from the DataFrame
    being transformed in one aggregation job; a column whose std is 0 (or undefined: fewer than
    two non-null values) raises ``ValueError``. To apply statistics learned on a training set to
    another set, use :class:`pyspark.ml.feature.StandardScaler` instead.

    Args:
        columns: Names of the numeric columns to standardize.
        suffix: Appended to each column name to name its output column.

    Example:
        >>> t = StandardTransformer(columns=["pt", "eta"])
        >>> t.transform(df).select("pt_normalized", "eta_normalized")
    """

    columns: Param[list[str]] = Param(
        Params._dummy(),
        "columns",
        "names of the numeric columns to standardize",
        typeConverter=U.string_list("columns"),
    )
    suffix: Param[str] = Param(
        Params._dummy(),
        "suffix",
        "suffix appended to each column name for its output column",
        typeConverter=TypeConverters.toString,
    )

    _ARGUMENTS = {"columns": "columns", "suffix": "suffix"}

    @keyword_only
    def __init__(self, *, columns: list[str] | None = None, suffix: str = "_normalized") -> None:
        super().__init__()
        self._setDefault(suffix="_normalized")
        U.set_kwargs(self, self._input_kwargs, self._ARGUMENTS)

    @keyword_only
    def setParams(self, *, columns: list[str] | None = None, suffix: str = "_normalized") -> StandardTransformer:
        """Set params by their dist-keras names."""
        U.set_kwargs(self, self._input_kwargs, self._ARGUMENTS)
        return self

    def getColumns(self) -> list[str]:
        """The columns to standardize."""
        return self.getOrDefault(self.columns)

    def getSuffix(self) -> str:
        """The output column suffix."""
        return self.getOrDefault(self.suffix)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        owner = type(self).__name__
        columns = U.require(self, self.columns, owner, "columns")
        suffix = self.getSuffix()
        for name in columns:
            data_type = U.column_type(dataset, name, owner, "columns")
            if not U.is_numeric(data_type):
                raise TypeError(
                    f"{owner} expected column {name!r} to hold numbers, received {U.describe_type(data_type)}."
                )
        aggregates = []
        for i, name in enumerate(columns):
            value = U.col(name).cast(DoubleType())
            aggregates += [F.avg(value).alias(f"mean_{i}"), F.stddev_samp(value).alias(f"std_{i}")]
        stats = dataset.agg(*aggregates).first()
        outputs = {}
        for i, name in enumerate(columns):
            mean, std = stats[f"mean_{i}"], stats[f"std_{i}"]
            if std is None or not std > 0.0 or math.isinf(std):
                raise ValueError(
                    f"{owner} expected column {name!r} to have a positive, finite standard "
                    f"deviation, received std={std!r} (mean={mean!r}). A constant column (or one "
                    "with fewer than two non-null values) cannot be standardized; drop it."
                )
            logger.debug("%s: column %r mean=%r std=%r", owner, name, mean, std)
            outputs[name + suffix] = (U.col(name).cast(DoubleType()) - F.lit(mean)) / F.lit(std)
        return dataset.withColumns(outputs)


class DenseTransformer(_ColumnTransformer):
    """Turn sparse vectors into dense vectors (dense vectors pass through unchanged).

    Args:
        input_col: Column with (sparse) vectors.
        output_col: Column to write the dense vectors to.

    Example:
        >>> DenseTransformer(input_col="features", output_col="features_dense").transform(df)
    """

    @keyword_only
    def __init__(self, *, input_col: str | None = None, output_col: str | None = None) -> None:
        super().__init__()
        self._set_arguments(self._input_kwargs)

    @keyword_only
    def setParams(self, *, input_col: str | None = None, output_col: str | None = None) -> DenseTransformer:
        """Set params by their dist-keras names."""
        return self._set_arguments(self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        owner = type(self).__name__
        name, data_type, output = self._input(dataset)
        if not U.is_vector(data_type):
            raise TypeError(f"{owner} expected column {name!r} to hold vectors, received {U.describe_type(data_type)}.")
        source = U.col(name)
        dense = array_to_vector(vector_to_array(source, "float64"))
        return dataset.withColumn(output, U.null_safe(source, dense))


class ReshapeTransformer(_ColumnTransformer):
    """Reshape flat vectors into nested arrays, e.g. for convolutional or recurrent inputs.

    A ``shape`` of ``(28, 28, 1)`` turns a vector of 784 values into an
    ``array<array<array<double>>>`` in row-major (C) order, as ``numpy.reshape`` would. A vector
    whose length is not the product of ``shape`` fails the job with a clear message.

    Args:
        input_col: Column with vectors or numeric arrays.
        output_col: Column to write the nested arrays to.
        shape: Target shape, a tuple of positive integers.

    Example:
        >>> t = ReshapeTransformer(input_col="features", output_col="image", shape=(28, 28, 1))
    """

    shape: Param[list[int]] = Param(
        Params._dummy(),
        "shape",
        "target shape of each row (positive integers, row-major)",
        typeConverter=U.shape("shape"),
    )

    _ARGUMENTS = {**_COLUMNS, "shape": "shape"}

    @keyword_only
    def __init__(
        self,
        *,
        input_col: str | None = None,
        output_col: str | None = None,
        shape: tuple[int, ...] | list[int] | None = None,
    ) -> None:
        super().__init__()
        self._set_arguments(self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        input_col: str | None = None,
        output_col: str | None = None,
        shape: tuple[int, ...] | list[int] | None = None,
    ) -> ReshapeTransformer:
        """Set params by their dist-keras names."""
        return self._set_arguments(self._input_kwargs)

    def getShape(self) -> tuple[int, ...]:
        """The target shape."""
        return tuple(self.getOrDefault(self.shape))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        owner = type(self).__name__
        dims = U.require(self, self.shape, owner, "shape")
        name, data_type, output = self._input(dataset)
        U.check_vector_or_array(data_type, owner, name)
        values = U.as_double_array(U.col(name), data_type)
        total = math.prod(dims)

        def nest(offset: Column, rest: list[int]) -> Column:
            if len(rest) == 1:
                return F.slice(values, offset + 1, rest[0])
            stride = math.prod(rest[1:])
            return F.transform(
                F.sequence(F.lit(0), F.lit(rest[0] - 1)),
                lambda i: nest(offset + i * stride, rest[1:]),
            )

        wrong_size = F.concat(
            F.lit(
                f"{owner} expected vectors of length {total} (shape {tuple(dims)}) in column {name!r}, received length "
            ),
            F.size(values).cast("string"),
        )
        nested = (
            F.when(values.isNull(), F.lit(None))
            .when(F.size(values) != total, U.fail(wrong_size))
            .otherwise(nest(F.lit(0), list(dims)))
        )
        return dataset.withColumn(output, nested)


class _VectorPredictions(ElephasTransformer):
    """The :class:`ElephasTransformer` behind :class:`ModelPredictor`: ``outputCol`` always holds the
    flattened model output as an ml DenseVector, whatever the model's loss or width."""

    def _output_kind(self, model: Any) -> str:
        return "vector"


class ModelPredictor(Transformer, HasFeaturesCol, HasOutputCol, ElephasWritable, ElephasReadable):
    """Add the predictions of a Keras model as a vector column, in Arrow batches.

    The dist-keras spelling of :class:`~elephas.ml.transformer.ElephasTransformer`: its params are
    ``featuresCol``, ``outputCol`` and ``batchSize``, and ``transform`` runs the ElephasTransformer's
    inference (the model shipped once as a spec plus broadcast weights, built once per Python worker
    and fed Arrow batches of ``batch_size`` rows). Each prediction stays on its row and every other
    column is kept. The output is a :class:`~pyspark.ml.linalg.DenseVector` per row (the flattened
    model output), ready for :class:`LabelIndexTransformer`.

    Saving writes the ML stages' layout (Spark metadata plus a ``model.keras`` sidecar, see
    :mod:`elephas.saving`), on any Hadoop file system path; loading rebuilds both (also from what
    earlier versions wrote: the model as one binary row under ``keras_model/``).

    Args:
        keras_model: A Keras model (need not be compiled). Its current weights are used at every
            ``transform``.
        features_col: Column with the features (vector, array or numeric).
        output_col: Column to write the predictions to.
        batch_size: Rows per forward pass.

    Example:
        >>> predictor = ModelPredictor(keras_model=trained_model,
        ...                            features_col="features_normalized")
        >>> test_set = predictor.predict(test_set)  # same as predictor.transform(test_set)
    """

    batchSize: Param[int] = Param(
        Params._dummy(),
        "batchSize",
        "rows per forward pass, > 0",
        typeConverter=U.positive_int("batch_size"),
    )

    _ARGUMENTS = {"features_col": "featuresCol", "output_col": "outputCol", "batch_size": "batchSize"}
    _compile_on_load = False  # only predicts

    @keyword_only
    def __init__(
        self,
        *,
        keras_model: Any = None,
        features_col: str = "features",
        output_col: str = "prediction",
        batch_size: int = 1024,
    ) -> None:
        super().__init__()
        self._inference: _VectorPredictions | None = None
        self._setDefault(featuresCol="features", outputCol="prediction", batchSize=1024)
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        keras_model: Any = None,
        features_col: str = "features",
        output_col: str = "prediction",
        batch_size: int = 1024,
    ) -> ModelPredictor:
        """Set the model and params by their dist-keras names."""
        kwargs = dict(self._input_kwargs)
        if "keras_model" in kwargs:
            self.setKerasModel(kwargs.pop("keras_model"))
        U.set_kwargs(self, kwargs, self._ARGUMENTS)
        return self

    def setKerasModel(self, keras_model: Any) -> ModelPredictor:
        """Use ``keras_model`` (``None`` to unset)."""
        if keras_model is None:
            self._inference = None
            return self
        from elephas.engine.shipping import check_keras_model

        check_keras_model(keras_model, require_compiled=False)
        self._inference = _VectorPredictions(keras_model)
        return self

    def getKerasModel(self) -> Any:
        """The Keras model, or ``None``."""
        return None if self._inference is None else self._inference.get_model()

    def getBatchSize(self) -> int:
        """Rows per forward pass."""
        return self.getOrDefault(self.batchSize)

    def predict(self, dataframe: DataFrame) -> DataFrame:
        """dist-keras name of :meth:`transform`."""
        return self.transform(dataframe)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        owner = type(self).__name__
        if self._inference is None:
            raise ValueError(
                f"{owner} expected keras_model to be set, received nothing. "
                "Pass keras_model=... to the constructor or call setKerasModel()."
            )
        name = self.getFeaturesCol()
        data_type = U.column_type(dataset, name, owner, "features_col")
        if not is_feature_type(data_type):
            raise TypeError(
                f"{owner} expected column {name!r} to hold vectors, arrays or numbers, received "
                f"{U.describe_type(data_type)}."
            )
        logger.debug("%s: predicting column %r from %r", owner, self.getOutputCol(), name)
        self._inference._set(featuresCol=name, outputCol=self.getOutputCol(), inference_batch_size=self.getBatchSize())
        return self._inference.transform(dataset)

    # ------------------------------------------------------------------------ persistence
    def _persisted_model(self) -> Any:
        model = self.getKerasModel()
        if model is None:
            raise ValueError("ModelPredictor expected keras_model to be set before saving, received nothing.")
        return model

    def _restore(self, metadata: dict[str, Any], model: Any) -> None:
        if model is None:
            raise ValueError("ModelPredictor expected a saved Keras model next to its metadata. Received: none.")
        self.setKerasModel(model)


def shuffle(df: DataFrame, seed: int | None = None) -> DataFrame:
    """Randomly reorder the rows of ``df`` (a full shuffle across partitions).

    Rows are sorted by a uniform random key, so every permutation is possible regardless of the
    original partitioning. With ``seed``, the order is reproducible for the same input partitioning.

    Args:
        df: The DataFrame to shuffle.
        seed: Optional seed of the random key.

    Returns:
        A DataFrame with the same rows and columns in a random order.

    Example:
        >>> dataset = shuffle(dataset, seed=42)
    """
    if not isinstance(df, DataFrame):
        raise TypeError(f"shuffle expected a DataFrame, received {type(df).__name__}.")
    key = "__elephas_shuffle_key"
    while key in df.columns:
        key = "_" + key
    return df.withColumn(key, F.rand(seed)).orderBy(key).drop(key)
