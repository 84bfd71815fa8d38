"""dist-keras style trainers on DataFrames, thin faces over :class:`elephas.spark_model.SparkModel`.

Each trainer clones the Keras model it is given (so one model object can seed several trainers),
compiles the clone with the trainer's optimizer, loss and metrics, translates the dist-keras
arguments (``num_epoch``, ``communication_window``, ``rho``, ``learning_rate``, ``momentum``,
``master_port``) into one ``SparkModel`` and calls ``fit`` on the DataFrame. There is no training
loop here.

Example:
    >>> trainer = DOWNPOUR(keras_model=model, worker_optimizer="adagrad",  # doctest: +SKIP
    ...                    loss="categorical_crossentropy", num_workers=2,
    ...                    features_col="features_normalized", label_col="label",
    ...                    communication_window=5)
    >>> trained_model = trainer.train(training_set)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from .engine import strategies
from .engine.config import EngineOptions
from .engine.schedules import LearningRateOnPlateau, StopOnTargetLoss
from .engine.strategies.scheduled import check_momentum, check_positive
from .engine.validation import check_dataframe
from .utils.checks import check_positive_int

logger = logging.getLogger(__name__)

__all__ = [
    "Trainer",
    "SingleTrainer",
    "AveragingTrainer",
    "EnsembleTrainer",
    "DOWNPOUR",
    "ADAG",
    "AEASGD",
    "EAMSGD",
    "DynSGD",
    "LearningRateOnPlateau",
    "StopOnTargetLoss",
]


def _columns(value: str | list[str], name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{name} must be a column name or a non-empty list of column names. Received: {name}={value!r}.")


def _optimizer(identifier: Any) -> Any:
    """A fresh Keras optimizer from a name, a config dict or an instance (copied, never shared)."""
    import keras

    if isinstance(identifier, keras.optimizers.Optimizer):
        return type(identifier).from_config(identifier.get_config())
    try:  # on a copy: Keras rewrites the class name of a config dict it deserializes
        return keras.optimizers.get(copy.deepcopy(identifier))
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"Could not interpret worker_optimizer: {identifier!r}. Expected an optimizer "
            "name ('adagrad', 'adam', 'sgd', ...), a config dict or a "
            f"keras.optimizers.Optimizer instance. ({err})"
        ) from None


def clone_compiled(keras_model: Any, worker_optimizer: Any, loss: Any, metrics: Any) -> Any:
    """A compiled copy of ``keras_model`` with the same weights; ``keras_model`` is untouched."""
    import keras

    if not isinstance(keras_model, keras.Model):
        raise TypeError(
            "keras_model must be a Keras model (keras.Model, keras.Sequential or a "
            f"functional model). Received: keras_model={type(keras_model).__name__}."
        )
    clone = keras.models.clone_model(keras_model)
    clone.set_weights(keras_model.get_weights())
    clone.compile(optimizer=_optimizer(worker_optimizer), loss=loss, metrics=list(metrics))
    return clone


class Trainer:
    """Base of the dist-keras trainer faces.

    Args:
        keras_model: The Keras model to train (compiled or not); it is cloned, never modified.
        worker_optimizer: Optimizer name, config dict or instance used for every local step.
        loss: Keras loss (name, function, or a list/dict for multi-output models).
        metrics: Keras metrics (``None``: ``['accuracy']`` as in dist-keras; ``[]`` for none).
        num_workers: Number of parallel workers (data partitions).
        batch_size: Mini-batch size.
        features_col: Feature column, or a list of columns for a multi-input model.
        label_col: Label column, or a list of columns for a multi-output model.
        num_epoch: Epochs over the data.
        validation_df: DataFrame evaluated by the plateau schedule / target-loss stop.
        plateau_every: Check the validation loss every this many epochs and divide the learning
            rate by ``plateau_factor`` when it stops improving (needs ``validation_df``).
        plateau_factor: Divisor of the learning rate (> 1).
        plateau_patience: Checks without improvement before dividing.
        target_loss: Stop after the epoch whose loss (validation loss with ``validation_df``)
            is at or below this value.
        callbacks: Extra Keras callbacks run on the driver at epoch ends.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        master_port: Parameter server port (0: any free port; asynchronous trainers only).
        **engine_options: Further ``SparkModel`` options (``parameter_server_mode`` and the
            engine options such as ``seed`` or ``compression``).
    """

    mode: ClassVar[str] = "synchronous"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any,
        loss: Any,
        metrics: Any = None,
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list[str] = "features",
        label_col: str | list[str] = "label",
        num_epoch: int = 1,
        *,
        validation_df: Any = None,
        plateau_every: int | None = None,
        plateau_factor: float = 2.0,
        plateau_patience: int = 0,
        target_loss: float | None = None,
        callbacks: list[Any] | None = None,
        verbose: int = 0,
        master_port: int = 0,
        **engine_options: Any,
    ) -> None:
        if master_port:
            engine_options["port"] = master_port
        self.num_workers = check_positive_int("num_workers", num_workers)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.num_epoch = check_positive_int("num_epoch", num_epoch)
        self.features_col = _columns(features_col, "features_col")
        self.label_col = _columns(label_col, "label_col")
        self.metrics = ["accuracy"] if metrics is None else ([metrics] if isinstance(metrics, str) else list(metrics))
        self.loss = loss
        self.worker_optimizer = worker_optimizer
        if plateau_every is not None:
            check_positive_int("plateau_every", plateau_every)
            if validation_df is None:
                raise ValueError(
                    "plateau_every needs validation_df, the DataFrame whose loss decides "
                    "when the learning rate is divided."
                )
        if target_loss is not None:
            StopOnTargetLoss(target_loss)  # validates
        self.validation_df = validation_df
        self.plateau = (plateau_every, plateau_factor, plateau_patience)
        self.target_loss = target_loss
        self.extra_callbacks = list(callbacks or [])
        self.verbose = verbose
        self.engine_options = dict(engine_options)
        # bad engine options fail here, before any job
        EngineOptions(**{k: v for k, v in engine_options.items() if k in EngineOptions.names()})
        self.parallelism_factor = 1
        # Build the clone now: bad models, optimizers or losses fail here, not in a job.
        self.keras_model = keras_model
        self.master_model = clone_compiled(keras_model, worker_optimizer, loss, self.metrics)
        self.training_time = 0.0
        self.history: Any = None
        self.spark_model: Any = None

    # ------------------------------------------------------------------------- dist-keras API
    def set_parallelism_factor(self, factor: int) -> None:
        """Use ``factor`` data partitions per worker (``num_workers * factor`` partitions)."""
        self.parallelism_factor = check_positive_int("parallelism_factor", factor)

    def get_training_time(self) -> float:
        """Wall-clock seconds the last ``train`` call spent training."""
        return self.training_time

    def get_history(self) -> list[dict[str, Any]]:
        """Per-window records of the last ``train``: worker id, iteration, timestamp, loss, metrics.

        Asynchronous trainers report every window a worker pushed to the parameter server
        (``iteration`` counts a worker's windows, plus ``epoch``, ``samples`` and ``staleness``);
        synchronous ones report one record per epoch with ``worker_id='all'`` (the
        sample-weighted merge of all workers, as the rounds see it).
        """
        if self.history is None:
            return []
        records = getattr(self.history, "window_records", None)
        if records is None:
            hist = self.history.history
            epochs = len(next(iter(hist.values()), []))
            return [
                {
                    "worker_id": "all",
                    "iteration": e,
                    "epoch": e,
                    "timestamp": None,
                    **{k: float(v[e]) for k, v in hist.items()},
                }
                for e in range(epochs)
            ]
        out = []
        counters: dict[str, int] = {}
        for r in records:
            wid = r["worker_id"]
            it = counters.get(wid, 0)
            counters[wid] = it + 1
            out.append(
                {
                    "worker_id": wid,
                    "iteration": it,
                    "epoch": r["epoch"],
                    "timestamp": r["timestamp"],
                    "samples": r["samples"],
                    "staleness": r["staleness"],
                    **r["metrics"],
                }
            )
        return out

    def get_averaged_history(self) -> dict[str, np.ndarray]:
        """Loss and metrics averaged over workers per iteration: ``{name: array[iterations]}``."""
        records = self.get_history()
        skip = {"worker_id", "iteration", "epoch", "timestamp", "samples", "staleness"}
        by_iter: dict[int, list[dict[str, Any]]] = {}
        for r in records:
            by_iter.setdefault(r["iteration"], []).append(r)
        names = sorted({k for r in records for k in r if k not in skip})
        iters = sorted(by_iter)
        return {n: np.array([np.mean([r[n] for r in by_iter[i] if n in r]) for i in iters]) for n in names}

    # ---------------------------------------------------------------------------- plumbing
    def _knobs(self) -> dict[str, Any]:
        """Strategy knobs passed to ``SparkModel`` (the synchronous trainers have none)."""
        return {}

    def _frequency(self) -> str | int:
        return "epoch"

    def _workers(self) -> int:
        return self.num_workers * self.parallelism_factor

    def _spark_model(self, model: Any, workers: int) -> Any:
        from .spark_model import SparkModel

        options = dict(self.engine_options)
        if self.mode == "synchronous":  # dist-keras's averaging is plain model averaging, no server momentum
            options.setdefault("server_optimizer", "sgd")
        # the trainer's params become the engine's typed objects: the strategy with its knobs
        return SparkModel(
            model,
            mode=strategies.get(self.mode, **self._knobs()),
            frequency=self._frequency(),
            num_workers=None,
            batch_size=self.batch_size,
            **options,
        )

    def _check(self, df: Any) -> None:
        from pyspark.sql import DataFrame

        if not isinstance(df, DataFrame):
            raise TypeError(f"train expects a Spark DataFrame. Received: {type(df).__name__}.")
        cols = self.features_col + self.label_col
        check_dataframe(
            df, cols, {**{c: "features" for c in self.features_col}, **{c: "label" for c in self.label_col}}
        )
        if self.validation_df is not None:
            check_dataframe(
                self.validation_df,
                cols,
                {**{c: "features" for c in self.features_col}, **{c: "label" for c in self.label_col}},
            )

    def _callbacks(self, spark_model: Any) -> list[Any]:
        cbs = list(self.extra_callbacks)
        evaluate = None
        if self.validation_df is not None:
            val = self.validation_df
            fcols = self.features_col if len(self.features_col) > 1 else self.features_col[0]
            lcols = self.label_col if len(self.label_col) > 1 else self.label_col[0]

            def evaluate() -> float:
                result = spark_model.evaluate(val, batch_size=self.batch_size, features_col=fcols, label_col=lcols)
                return float(result[0] if isinstance(result, list) else result)

        every, factor, patience = self.plateau
        if every is not None:
            cbs.append(
                LearningRateOnPlateau(
                    strategy=spark_model.strategy, evaluate=evaluate, every=every, factor=factor, patience=patience
                )
            )
        if self.target_loss is not None:
            cbs.append(StopOnTargetLoss(self.target_loss, evaluate=evaluate))
        return cbs

    def _fit(self, model: Any, df: Any, workers: int, shuffle: bool) -> tuple[Any, Any]:
        from .engine.session import is_connect

        spark_model = self._spark_model(model, workers)
        if is_connect(df):  # no RDD there: SparkModel.fit repartitions the DataFrame to its num_workers
            spark_model.num_workers = workers
        elif df.rdd.getNumPartitions() != workers:
            df = df.repartition(workers)
        fcols = self.features_col if len(self.features_col) > 1 else self.features_col[0]
        lcols = self.label_col if len(self.label_col) > 1 else self.label_col[0]
        history = spark_model.fit(
            df,
            epochs=self.num_epoch,
            batch_size=self.batch_size,
            verbose=self.verbose,
            shuffle=shuffle,
            features_col=fcols,
            label_col=lcols,
            callbacks=self._callbacks(spark_model),
        )
        return spark_model, history

    def train(self, dataframe: Any, shuffle: bool = False) -> Any:
        """Train on ``dataframe`` and return the trained Keras model (a new object).

        Args:
            dataframe: DataFrame with the feature and label columns.
            shuffle: Shuffle the DataFrame's rows (a full shuffle across partitions) first, and
                the rows of every partition each epoch.

        Returns:
            The trained, compiled Keras model.
        """
        self._check(dataframe)
        if shuffle:
            from .ml.transformers import shuffle as shuffle_df

            dataframe = shuffle_df(dataframe)
        model = clone_compiled(self.master_model, self.worker_optimizer, self.loss, self.metrics)
        started = time.perf_counter()
        self.spark_model, self.history = self._fit(model, dataframe, self._workers(), shuffle)
        self.training_time = time.perf_counter() - started
        logger.info("%s trained in %.2fs", type(self).__name__, self.training_time)
        return model


class SingleTrainer(Trainer):
    """All data on one worker, sequential training for ``num_epoch`` epochs (the baseline).

    Example:
        >>> trainer = SingleTrainer(keras_model=model, worker_optimizer="adagrad",  # doctest: +SKIP
        ...                         loss="categorical_crossentropy", num_epoch=1, batch_size=32,
        ...                         features_col="features_normalized", label_col="label")
    """

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any,
        loss: Any,
        metrics: Any = None,
        batch_size: int = 32,
        features_col: str | list[str] = "features",
        label_col: str | list[str] = "label",
        num_epoch: int = 1,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("num_workers", None)
        super().__init__(
            keras_model, worker_optimizer, loss, metrics, 1, batch_size, features_col, label_col, num_epoch, **kwargs
        )

    def _workers(self) -> int:
        return 1


class AveragingTrainer(Trainer):
    """Synchronous model averaging: one round per epoch, deltas averaged by sample count.

    Example:
        >>> trainer = AveragingTrainer(keras_model=model, worker_optimizer="adagrad",  # doctest: +SKIP
        ...                            loss="categorical_crossentropy", num_workers=4)
    """


class EnsembleTrainer(Trainer):
    """``num_ensembles`` independent models, each trained on one worker; returns a list of models.

    Args:
        num_ensembles: Number of models.
        use_all_data: Train every model on all the data instead of its own share.
        seed: Seed of the random split of the data into shares.
        **kwargs: As :class:`Trainer` (``num_workers`` is ignored: one worker per model).

    Example:
        >>> models = EnsembleTrainer(keras_model=model, worker_optimizer="adam",  # doctest: +SKIP
        ...                          loss="categorical_crossentropy", num_ensembles=3).train(df)
    """

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any,
        loss: Any,
        metrics: Any = None,
        features_col: str | list[str] = "features",
        label_col: str | list[str] = "label",
        batch_size: int = 32,
        num_ensembles: int = 2,
        num_epoch: int = 1,
        use_all_data: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        self.num_ensembles = check_positive_int("num_ensembles", num_ensembles)
        kwargs.pop("num_workers", None)
        super().__init__(
            keras_model, worker_optimizer, loss, metrics, 1, batch_size, features_col, label_col, num_epoch, **kwargs
        )
        self.use_all_data = bool(use_all_data)
        self.seed = int(seed)
        self.histories: list[Any] = []

    def get_history(self) -> list[dict[str, Any]]:
        """One record per model and epoch (``worker_id`` is the model's index)."""
        out = []
        for i, h in enumerate(self.histories):
            hist = h.history
            epochs = len(next(iter(hist.values()), []))
            out.extend(
                {
                    "worker_id": str(i),
                    "iteration": e,
                    "epoch": e,
                    "timestamp": None,
                    **{k: float(v[e]) for k, v in hist.items()},
                }
                for e in range(epochs)
            )
        return out

    def train(self, dataframe: Any, shuffle: bool = False) -> list[Any]:
        """Train the ensemble concurrently (one Spark job per model) and return the models."""
        self._check(dataframe)
        if shuffle:
            from .ml.transformers import shuffle as shuffle_df

            dataframe = shuffle_df(dataframe)
        n = self.num_ensembles
        shares = [dataframe] * n if self.use_all_data or n == 1 else dataframe.randomSplit([1.0] * n, seed=self.seed)
        models = [clone_compiled(self.master_model, self.worker_optimizer, self.loss, self.metrics) for _ in range(n)]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="elephas-ensemble") as pool:
            futures = [pool.submit(self._fit, m, share, 1, shuffle) for m, share in zip(models, shares)]
            results = [f.result() for f in futures]
        self.training_time = time.perf_counter() - started
        self.histories = [h for _, h in results]
        self.spark_model, self.history = results[-1]
        return models


class _AsyncTrainer(Trainer):
    """Base of the asynchronous trainers (parameter server in the driver)."""

    default_window: ClassVar[int] = 5

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any,
        loss: Any,
        metrics: Any = None,
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list[str] = "features",
        label_col: str | list[str] = "label",
        num_epoch: int = 1,
        communication_window: int | None = None,
        learning_rate: float | None = None,
        master_port: int = 0,
        **kwargs: Any,
    ) -> None:
        window = self.default_window if communication_window is None else communication_window
        self.communication_window = check_positive_int("communication_window", window)
        self.learning_rate = None if learning_rate is None else check_positive("learning_rate", learning_rate)
        super().__init__(
            keras_model,
            worker_optimizer,
            loss,
            metrics,
            num_workers,
            batch_size,
            features_col,
            label_col,
            num_epoch,
            master_port=int(master_port),
            **kwargs,
        )

    def _frequency(self) -> int:
        return self.communication_window

    def _knobs(self) -> dict[str, Any]:
        return {} if self.learning_rate is None else {"learning_rate": self.learning_rate}


class DOWNPOUR(_AsyncTrainer):
    """DOWNPOUR: push Δ every ``communication_window`` (5) batches; ``learning_rate`` sets the worker optimizer's."""

    mode: ClassVar[str] = "downpour"
    default_window: ClassVar[int] = 5


class ADAG(_AsyncTrainer):
    """ADAG: push Δ/τ every ``communication_window`` (12) batches; ``learning_rate`` sets the worker optimizer's."""

    mode: ClassVar[str] = "adag"
    default_window: ClassVar[int] = 12


class DynSGD(_AsyncTrainer):
    """DynSGD: push Δ every ``communication_window`` (5) batches; the server divides it by staleness + 1."""

    mode: ClassVar[str] = "dynsgd"
    default_window: ClassVar[int] = 5


class AEASGD(_AsyncTrainer):
    """Asynchronous EASGD: elastic exchange every ``communication_window`` (32) batches.

    Args:
        rho: Elastic coefficient ``ρ`` (default 5).
        learning_rate: Elastic step ``η`` (default 0.1).
        **kwargs: As the other trainers.
    """

    mode: ClassVar[str] = "easgd"
    default_window: ClassVar[int] = 32

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any,
        loss: Any,
        metrics: Any = None,
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list[str] = "features",
        label_col: str | list[str] = "label",
        num_epoch: int = 1,
        communication_window: int | None = None,
        rho: float = 5.0,
        learning_rate: float = 0.1,
        master_port: int = 0,
        **kwargs: Any,
    ) -> None:
        self.rho = check_positive("rho", rho)
        super().__init__(
            keras_model,
            worker_optimizer,
            loss,
            metrics,
            num_workers,
            batch_size,
            features_col,
            label_col,
            num_epoch,
            communication_window,
            learning_rate=check_positive("learning_rate", learning_rate),
            master_port=master_port,
            **kwargs,
        )

    def _knobs(self) -> dict[str, Any]:
        return {"rho": self.rho, "learning_rate": self.learning_rate}


class EAMSGD(AEASGD):
    """Asynchronous EAMSGD: AEASGD plus local Nesterov momentum (``momentum``, default 0.9)."""

    mode: ClassVar[str] = "eamsgd"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any,
        loss: Any,
        metrics: Any = None,
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list[str] = "features",
        label_col: str | list[str] = "label",
        num_epoch: int = 1,
        communication_window: int | None = None,
        rho: float = 5.0,
        learning_rate: float = 0.1,
        momentum: float = 0.9,
        master_port: int = 0,
        **kwargs: Any,
    ) -> None:
        self.momentum = check_momentum(momentum)
        super().__init__(
            keras_model,
            worker_optimizer,
            loss,
            metrics,
            num_workers,
            batch_size,
            features_col,
            label_col,
            num_epoch,
            communication_window,
            rho,
            learning_rate,
            master_port,
            **kwargs,
        )

    def _knobs(self) -> dict[str, Any]:
        return {**super()._knobs(), "momentum": self.momentum}
