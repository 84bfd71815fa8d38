"""Turn what a user passes to ``fit`` or ``evaluate`` into staged blocks, checked on the driver.

:func:`prepare_training_data` takes an RDD of ``(features, label)`` pairs, a DataFrame or numpy
arrays, checks them against the model before any training job (columns and their types, shapes,
class indices, emptiness), holds out validation rows, and returns a :class:`PreparedData`: the
blocks the training stages read, the validation source, and one row the driver builds metrics and
the preflight check with. Faces translate their arguments and call it; they never branch on the
kind of data themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..utils.checks import check_positive_int, check_single_output, class_indices_message
from . import data as data_mod
from .driver import Validation, split_validation
from .inference import is_dataframe, is_rdd
from .validation import check_dataframe, check_features, check_labels, numpy_sample, sample_from_pair

Sample = tuple[list[np.ndarray], list[np.ndarray]]


@dataclass
class PreparedData:
    """Training (or evaluation) data ready for the engine.

    Attributes:
        blocks: RDD of blocks (one per partition) the stages train on, persisted until
            :meth:`release`.
        sample: One row of inputs and targets, batch-shaped (``[x[None]]``, ``[y[None]]``).
        validation: Where validation metrics come from, or ``None``.
    """

    blocks: Any
    sample: Sample
    validation: Validation | None = None
    _persisted: Any = None

    def release(self) -> None:
        """Unpersist what :func:`prepare_training_data` persisted."""
        if self._persisted is not None:
            self._persisted.unpersist()
            self._persisted = None


def columns(col: str | Sequence[str]) -> list[str]:
    """A column name or a list of them, as a list."""
    return [col] if isinstance(col, str) else list(col)


def _repartition(data: Any, num_workers: int | None) -> Any:
    parts = data.rdd.getNumPartitions() if is_dataframe(data) else data.getNumPartitions()
    if num_workers and parts != num_workers:
        return data.repartition(num_workers)
    return data


def data_blocks(
    sc: Any,
    data: Any,
    labels: Any,
    model: Any,
    features_col: str | Sequence[str] = "features",
    label_col: str | Sequence[str] = "label",
    nb_classes: int | None = None,
    num_workers: int | None = None,
    store_id: str | None = None,
) -> tuple[Any, Sample]:
    """Check ``data`` against ``model`` on the driver and stack it into blocks.

    Args:
        sc: The SparkContext.
        data: An RDD of ``(features, label)`` pairs, a DataFrame, or numpy features.
        labels: Numpy labels with numpy features (``None`` otherwise).
        model: The Keras model the data is for.
        features_col: Feature column(s) of a DataFrame.
        label_col: Label column(s) of a DataFrame.
        nb_classes: When set, a single class-index label is one-hot encoded to this width on the
            executors (the indices are checked first).
        num_workers: Partitions to stack into (``None``: the data's own, or the default
            parallelism for numpy).
        store_id: Write DataFrame blocks to the executors' local directories under this id.

    Returns:
        ``(blocks, sample)``: the RDD of blocks and one batch-shaped row.
    """
    io = data_mod.ModelIO.of(model)
    if nb_classes is not None:
        check_positive_int("nb_classes", nb_classes)
        check_single_output(len(io.output_shapes))
    if is_dataframe(data):
        fcols, lcols = columns(features_col), columns(label_col)
        check_dataframe(data, fcols + lcols, {**dict.fromkeys(fcols, "features"), **dict.fromkeys(lcols, "label")})
        try:  # not DataFrame.first(): a Python worker feeding it (a DataFrame made from a Python
            # RDD) would be left with unread input, exit, and PySpark's daemon print a BrokenPipeError
            first = data_mod.first_element(data_mod.prepare_dataframe(data, fcols + lcols).rdd)
        except ValueError:
            raise ValueError("The training DataFrame is empty.") from None
        xs = [np.asarray(first[i]) for i in range(len(fcols))]
        ys = [np.asarray(first[len(fcols) + j]) for j in range(len(lcols))]
        if nb_classes is not None:
            from pyspark.sql import functions as F

            label = F.col(lcols[0])
            invalid = (label < 0) | (label >= nb_classes) | (label != F.floor(label))
            lo, hi, bad = data.agg(F.min(label), F.max(label), F.count(F.when(invalid, 1))).first()
            if bad:
                raise ValueError(class_indices_message(nb_classes, f"values from {lo} to {hi} in {lcols[0]!r}"))
            ys = [data_mod.one_hot_encode(ys[0], nb_classes)[0]]
        sample = (xs, ys)
        blocks = data_mod.blocks_from_dataframe(
            _repartition(data, num_workers), fcols, lcols, io, one_hot=nb_classes, store_id=store_id
        )
    elif is_rdd(data):
        if labels is not None:
            raise ValueError("With an RDD of (features, label) pairs, do not pass labels separately.")
        try:
            pair = data_mod.first_element(data)
        except ValueError:
            raise ValueError(
                "The training RDD is empty. Expected an RDD of (features, label) pairs with at least one element."
            ) from None
        sample = sample_from_pair(pair, io)
        rdd = _repartition(data, num_workers)
        if nb_classes is not None:
            nb = nb_classes
            sample = (sample[0], [data_mod.one_hot_encode(sample[1][0], nb)[0]])
            rdd = rdd.map(lambda p: (p[0], data_mod.one_hot_encode(np.asarray(p[1]), nb)[0]))
        blocks = data_mod.blocks_from_rdd(rdd, io)
    else:
        if labels is None:
            raise ValueError("With numpy features, pass labels too: fit(x, y, ...).")
        xs, ys = numpy_sample(data, labels, io)
        if nb_classes is not None:
            ys = [data_mod.one_hot_encode(ys[0], nb_classes)]
        sample = ([x[0] for x in xs], [y[0] for y in ys])
        blocks = data_mod.blocks_from_numpy(sc, xs, ys, io, num_workers or sc.defaultParallelism)
    check_features(io, sample[0])
    check_labels(io, sample[1], model.loss)
    return blocks, ([np.asarray(x)[None] for x in sample[0]], [np.asarray(y)[None] for y in sample[1]])


def _validation_source(
    sc: Any,
    validation_data: Any,
    model: Any,
    batch_size: int,
    features_col: Any,
    label_col: Any,
    nb_classes: int | None,
) -> Validation:
    if is_rdd(validation_data) or is_dataframe(validation_data):
        blocks, _ = data_blocks(sc, validation_data, None, model, features_col, label_col, nb_classes)
        return Validation(blocks=blocks, batch_size=batch_size)
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) < 2:
        raise ValueError(
            "validation_data must be (x_val, y_val), an RDD of pairs or a DataFrame. "
            f"Received: {type(validation_data).__name__}."
        )
    xs, ys = numpy_sample(validation_data[0], validation_data[1], data_mod.ModelIO.of(model))
    if nb_classes is not None:
        ys = [data_mod.one_hot_encode(ys[0], nb_classes)]
    return Validation(arrays=(xs, ys), batch_size=batch_size)


def prepare_training_data(
    sc: Any,
    data: Any,
    labels: Any,
    model: Any,
    *,
    batch_size: int,
    features_col: str | Sequence[str] = "features",
    label_col: str | Sequence[str] = "label",
    nb_classes: int | None = None,
    num_workers: int | None = None,
    validation_split: float = 0.0,
    validation_data: Any = None,
    stage_blocks: bool = True,
) -> PreparedData:
    """Check and stage the training data of one ``fit``; hold out validation rows.

    Args:
        sc: The SparkContext.
        data: An RDD of ``(features, label)`` pairs, a DataFrame, or numpy features.
        labels: Numpy labels with numpy features.
        model: The compiled Keras model.
        batch_size: Batch size of validation passes.
        features_col: Feature column(s) of a DataFrame.
        label_col: Label column(s) of a DataFrame.
        nb_classes: One-hot encode class-index labels to this width.
        num_workers: Partitions to train on (``None`` keeps the data's).
        validation_split: Fraction held out: the last rows of numpy arrays, else the last rows
            of every partition.
        validation_data: ``(x_val, y_val)``, an RDD of pairs or a DataFrame.
        stage_blocks: DataFrame rows may go straight to the executors' local directories.

    Returns:
        The :class:`PreparedData`; call :meth:`PreparedData.release` when training is done.
    """
    validation = None
    if validation_split and not (is_rdd(data) or is_dataframe(data)):
        xs, ys = numpy_sample(data, labels, data_mod.ModelIO.of(model))
        cut = int(xs[0].shape[0] * (1 - validation_split))
        validation = Validation(arrays=([x[cut:] for x in xs], [t[cut:] for t in ys]), batch_size=batch_size)
        data, labels = [x[:cut] for x in xs], [t[:cut] for t in ys]
        data, labels = (data[0] if len(data) == 1 else data), (labels[0] if len(labels) == 1 else labels)
    # DataFrame partitions can be written to the executors' local directories straight from
    # Arrow (no arrays back through the JVM) when nothing else needs them as arrays.
    store_id = uuid.uuid4().hex if stage_blocks and not validation_split else None
    blocks, sample = data_blocks(
        sc, data, labels, model, features_col, label_col, nb_classes, num_workers, store_id=store_id
    )
    blocks = blocks.persist()
    prepared = PreparedData(blocks=blocks, sample=sample, _persisted=blocks)
    try:
        if validation_split and validation is None:
            prepared.blocks, val_blocks = split_validation(blocks, validation_split)
            validation = Validation(blocks=val_blocks, batch_size=batch_size)
        if validation_data is not None:
            validation = _validation_source(sc, validation_data, model, batch_size, features_col, label_col, nb_classes)
    except BaseException:
        prepared.release()
        raise
    prepared.validation = validation
    return prepared
