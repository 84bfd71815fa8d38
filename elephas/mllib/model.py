"""``SparkMLlibModel``: train on an RDD of mllib ``LabeledPoint`` and predict mllib vectors/matrices.

A thin face over :class:`~elephas.spark_model.SparkModel` (the same engine, every mode): labeled
points become ``(features, label)`` pairs, class-index labels are one-hot encoded to
``nb_classes`` on the executors after a range check on the driver, and predictions come back as
mllib ``DenseVector``/``DenseMatrix`` values, or as an RDD of DenseVectors aligned with its input.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..engine.data import first_element
from ..engine.inference import is_rdd
from ..spark_model.model import SparkModel
from ..utils.checks import (
    check_nb_classes,
    check_scalar_labels,
    check_single_output,
    class_indices_message,
    model_output_width,
)

logger = logging.getLogger(__name__)

__all__ = ["SparkMLlibModel"]


class SparkMLlibModel(SparkModel):
    """Distributed Keras training on ``pyspark.mllib`` data.

    Args:
        model: A compiled Keras model (trained in place, it is ``master_network``).
        mode: 'synchronous' (default), 'asynchronous', 'hogwild' or a dist-keras rule.
        frequency: 'epoch', 'batch' or a number of batches.
        parameter_server_mode: 'http' or 'socket' (asynchronous modes).
        num_workers: Partitions to train on (``None`` keeps the RDD's partitioning).
        custom_objects: Unregistered custom Keras objects.
        batch_size: Default batch size.
        port: Parameter server port (0: any free port).
        **kwargs: Strategy knobs and engine options, as for ``SparkModel``.

    Example:
        >>> lp_rdd = to_labeled_point(sc, x_train, y_train, categorical=True)  # doctest: +SKIP
        >>> spark_model = SparkMLlibModel(model, frequency="epoch", mode="synchronous")  # doctest: +SKIP
        >>> spark_model.train(lp_rdd, epochs=20, batch_size=32, categorical=True,
        ...                   nb_classes=10)  # doctest: +SKIP
        >>> spark_model.predict(lp_rdd.map(lambda lp: lp.features))  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        mode: str = "synchronous",
        frequency: str | int | None = "epoch",
        parameter_server_mode: str = "http",
        num_workers: int | None = None,
        custom_objects: dict[str, Any] | None = None,
        batch_size: int = 32,
        port: int = 0,
        **kwargs: Any,
    ):
        from ..engine.session import is_connect, require_classic

        if is_connect():  # MLlib is RDDs only: say so before anything is built
            require_classic(
                "SparkMLlibModel",
                hint="MLlib works on RDDs of LabeledPoint; on a Spark Connect "
                "session use SparkModel with a DataFrame instead.",
            )
        super().__init__(
            model,
            mode=mode,
            frequency=frequency,
            parameter_server_mode=parameter_server_mode,
            num_workers=num_workers,
            custom_objects=custom_objects,
            batch_size=batch_size,
            port=port,
            **kwargs,
        )

    # ------------------------------------------------------------------------------ training
    def train(
        self,
        labeled_points: Any,
        epochs: int = 10,
        batch_size: int = 32,
        verbose: int = 0,
        validation_split: float = 0.1,
        categorical: bool = False,
        nb_classes: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Train on an RDD of ``pyspark.mllib.regression.LabeledPoint``.

        Args:
            labeled_points: RDD of LabeledPoint.
            epochs: Number of epochs (``nb_epoch`` accepted with a DeprecationWarning).
            batch_size: Batch size.
            verbose: Keras verbosity.
            validation_split: Fraction of every partition's rows held out for validation.
            categorical: Labels are class indices, one-hot encoded to ``nb_classes``.
            nb_classes: Number of classes (default: the model's output width).
            **kwargs: Passed to :meth:`SparkModel.fit` (``callbacks``, ``shuffle``, ``nb_epoch``).

        Returns:
            The merged ``keras.callbacks.History``.

        Raises:
            TypeError: When the input is not an RDD of LabeledPoint.
            ValueError: When a label is not a class index in ``[0, nb_classes)``.
        """
        from pyspark.mllib.regression import LabeledPoint

        if not is_rdd(labeled_points):
            raise TypeError(
                "SparkMLlibModel.train expected an RDD of LabeledPoint. Received: "
                f"{type(labeled_points).__name__}. Build one with "
                "elephas.utils.rdd_utils.to_labeled_point(sc, x, y)."
            )
        try:
            first = [first_element(labeled_points)]
        except ValueError:
            first = []
        if not first:
            raise ValueError("SparkMLlibModel.train expected a non-empty RDD of LabeledPoint. Received: an empty RDD.")
        if not isinstance(first[0], LabeledPoint):
            raise TypeError(
                f"SparkMLlibModel.train expected an RDD of LabeledPoint. Received an RDD of {type(first[0]).__name__}."
            )
        encode_to = None
        width = model_output_width(self.master_network)
        if not categorical:
            check_scalar_labels(getattr(self.master_network, "loss", ""), width, "scalar LabeledPoint labels")
        if categorical:
            encode_to = check_nb_classes(nb_classes, width)
            self._check_label_range(labeled_points, encode_to)
        pairs = labeled_points.map(_to_pair)
        return super().fit(
            pairs,
            epochs=epochs,
            batch_size=batch_size,
            verbose=verbose,
            validation_split=validation_split,
            nb_classes=encode_to,
            **kwargs,
        )

    fit = train
    """Train on an RDD of ``LabeledPoint``; the same method as :meth:`train` (Keras's name for it)."""

    @staticmethod
    def _check_label_range(labeled_points: Any, nb_classes: int) -> None:
        def first_bad(points: Any) -> list[float]:
            # reads its whole partition (``take`` would leave a Python worker with unread input,
            # and such a worker exits instead of being reused, TensorFlow import and all)
            found: list[float] = []
            for lp in points:
                label = float(lp.label)
                if len(found) < 5 and not (0 <= label < nb_classes and label.is_integer()):
                    found.append(label)
            return found

        offending = labeled_points.mapPartitions(first_bad).collect()[:5]
        if offending:
            raise ValueError(class_indices_message(nb_classes, f"labels={offending}"))

    # ----------------------------------------------------------------------------- predict
    def predict(self, x: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        """Predict an mllib Vector, Matrix or RDD of Vectors.

        Args:
            x: A ``pyspark.mllib.linalg`` (or ``pyspark.ml.linalg``) Vector -> one DenseVector;
                a Matrix (one row per sample) -> a DenseMatrix with one row per sample; an RDD of
                Vectors -> an RDD of DenseVectors, element ``i`` predicting input element ``i``
                (same partitioning, lazily evaluated). Numpy arrays and DataFrames are handled
                as by :meth:`SparkModel.predict`.
            batch_size: Rows per forward pass.

        Returns:
            A DenseVector, a DenseMatrix, an RDD of DenseVectors, or a numpy array.
        """
        from pyspark.ml.linalg import Vector as MLVector
        from pyspark.mllib.linalg import Matrix, Vector

        from .adapter import to_matrix, to_vector

        model = self.master_network
        check_single_output(len(model.outputs), "SparkMLlibModel.predict", "Use SparkModel.predict.")
        if isinstance(x, (Vector, MLVector)):
            row = np.asarray(x.toArray(), dtype=np.float32)[None]
            out = model.predict(row, verbose=0, batch_size=1)
            return to_vector(np.asarray(out).reshape(-1))
        if isinstance(x, Matrix):
            rows = np.asarray(x.toArray(), dtype=np.float32)
            out = np.asarray(model.predict(rows, verbose=0, batch_size=batch_size or 1024))
            return to_matrix(out.reshape(out.shape[0], -1))
        if is_rdd(x):
            return self._predict_rdd(x, batch_size)
        return super().predict(x, batch_size=batch_size, **kwargs)

    def _predict_rdd(self, rdd: Any, batch_size: int | None) -> Any:
        from ..engine.data import ModelIO, conform
        from ..engine.errors import guard
        from ..engine.inference import DEFAULT_BATCH_SIZE, _predict_arrays
        from ..engine.runtime import prepare_worker
        from ..engine.shipping import cached_model

        sc = self._sc()
        model = self.master_network
        spec = self._spec()
        runtime = self._runtime(sc)
        input_shape = ModelIO.of(model).input_shapes[0]
        bc = sc.broadcast(model.get_weights())
        bs = batch_size or DEFAULT_BATCH_SIZE

        def run(pid: int, rows: Iterable[Any]) -> Iterator[Any]:
            from pyspark.mllib.linalg import DenseVector

            feats = [np.asarray(r.toArray() if hasattr(r, "toArray") else r, dtype=np.float32) for r in rows]
            if not feats:
                return
            prepare_worker(runtime)
            net = cached_model(spec, bc.value)
            xs = [conform(np.stack(feats), input_shape)]
            out = _predict_arrays(net, xs, bs)[0]
            for row in out.reshape(out.shape[0], -1):
                yield DenseVector(row.astype(np.float64))

        return rdd.mapPartitionsWithIndex(guard(run), preservesPartitioning=True)


def _to_pair(lp: Any) -> tuple[np.ndarray, np.float32]:
    return np.asarray(lp.features.toArray(), dtype=np.float32), np.float32(lp.label)
