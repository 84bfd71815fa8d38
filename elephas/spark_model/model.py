"""``SparkModel``: train, predict and evaluate a compiled Keras model on Spark data.

This face translates Keras-style arguments into one training request for the engine; it has no
training loop of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from typing import Any

import numpy as np

from ..engine import data as data_mod
from ..engine import strategies
from ..engine.async_driver import fit_asynchronous
from ..engine.config import EngineOptions, ServerSettings, check_port
from ..engine.console import spark_progress_paused
from ..engine.driver import TrainingSettings, check_reducer, fit_synchronous
from ..engine.inference import (
    default_runtime,
    evaluate_blocks,
    feature_blocks,
    format_like_keras,
    is_dataframe,
    is_rdd,
    predict_blocks,
)
from ..engine.modes import get_frequency, get_strategy
from ..engine.preflight import preflight_check
from ..engine.prepare import data_blocks, prepare_training_data
from ..engine.resources import resource_profile
from ..engine.runtime import WorkerRuntime
from ..engine.server_optimizer import ServerOptimizer
from ..engine.shipping import ModelSpec, check_keras_model
from ..engine.strategies.scheduled import ScheduledStrategy, check_positive
from ..engine.validation import (
    check_dataframe,
    check_features,
    check_fraction,
)
from ..engine.worker import apply_learning_rate, master_learning_rate
from ..parameter.client import MODES, check_mode
from ..saving import read_model_with_config, save_model_with_config
from ..utils.checks import check_positive_int

logger = logging.getLogger(__name__)

PARAMETER_SERVER_MODES = MODES
SERVER_STEP_KEYS = ("server_optimizer", "server_learning_rate", "server_momentum")


class SparkModel:
    """Distributed training, inference and evaluation of a compiled Keras model on Spark.

    Args:
        model: A compiled Keras model. It becomes ``master_network`` and is trained in place.
        mode: 'synchronous' (default), 'asynchronous', 'hogwild', or a dist-keras rule
            ('downpour', 'adag', 'easgd', 'eamsgd', 'dynsgd').
        frequency: Communication window: 'epoch', 'batch' or an int number of batches. ``None``
            uses the mode's default ('epoch' for synchronous, asynchronous and hogwild).
        parameter_server_mode: 'http' or 'socket' (asynchronous modes only).
        num_workers: Partitions to train on (the data is repartitioned to this number);
            ``None`` keeps the data's partitioning.
        custom_objects: Custom layers, losses, ... not registered with Keras.
        batch_size: Default batch size for ``fit``.
        port: Parameter server port (0: any free port).
        **kwargs: Strategy knobs (``rho``, ``learning_rate``, ``momentum``) and engine options:
            ``server_optimizer`` ('sgd', 'momentum', 'nesterov'), ``server_learning_rate``,
            ``server_momentum``, ``seed``, ``worker_threads``, ``parameter_server_host``,
            ``compression`` ('none', 'fp16', 'zlib'), ``timeout`` (seconds per server call),
            ``background_push`` (asynchronous modes: push each window's update, and pull the
            center after it, in a helper thread while the next window trains; default False),
            ``stage_blocks`` (write each partition's rows once to the executor's local directory
            and map them in every round or epoch instead of reading Spark's cache; default True),
            ``resources`` (e.g. ``{"gpu": 1, "cpus": 4}``: the stage-level resources of every
            training, prediction and evaluation task, see :mod:`elephas.engine.resources`),
            ``reducer`` (synchronous mode: where each round is reduced; ``'server'``, the
            driver's parameter server, the default on classic sessions; ``'ring'`` or ``'hub'``,
            an all-reduce among the stage's tasks, see :mod:`elephas.collective`; Spark Connect
            sessions always use ``'ring'``).

    Example:
        >>> spark_model = SparkModel(model, frequency="epoch", mode="synchronous")  # doctest: +SKIP
        >>> history = spark_model.fit(rdd, epochs=5, batch_size=32)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        mode: str = "synchronous",
        frequency: str | int | None = None,
        parameter_server_mode: str = "http",
        num_workers: int | None = None,
        custom_objects: dict[str, Any] | None = None,
        batch_size: int = 32,
        port: int = 0,
        **kwargs: Any,
    ):
        check_keras_model(model, require_compiled=True)
        check_mode(parameter_server_mode)
        if num_workers is not None:
            check_positive_int("num_workers", num_workers)
        check_positive_int("batch_size", batch_size)
        check_port(port)
        step = {k: kwargs.pop(k) for k in SERVER_STEP_KEYS if k in kwargs}
        worker_learning_rate = kwargs.pop("worker_learning_rate", None)
        self.options = EngineOptions(**{k: kwargs.pop(k) for k in list(kwargs) if k in EngineOptions.names()})
        self._strategy = get_strategy(mode, **kwargs)
        self._frequency = get_frequency(frequency, self._strategy)
        check_reducer(self.options.reducer, self._strategy.synchronous)
        explicit = any(v is not None for v in step.values())
        self._server_optimizer = (
            ServerOptimizer.get(
                step.get("server_optimizer"), step.get("server_learning_rate"), step.get("server_momentum")
            )
            if explicit
            else None
        )
        # The workers' optimizer rate has one source, the driver model's optimizer: a rule's
        # ``learning_rate`` knob (downpour, adag, dynsgd) and a saved current rate are set there.
        if isinstance(self._strategy, ScheduledStrategy) and not self._strategy.elastic:
            apply_learning_rate(model, self._strategy.learning_rate)
        if worker_learning_rate is not None:
            apply_learning_rate(model, check_positive("worker_learning_rate", worker_learning_rate))
        self._master_network = model
        self.mode = self._strategy.name
        self.parameter_server_mode = parameter_server_mode
        self.num_workers = num_workers
        self.custom_objects = dict(custom_objects or {})
        self.batch_size = batch_size
        self.port = port
        self.training_histories: list[Any] = []
        self._server_step: ServerOptimizer | None = None  # the last fit's server step, for initial_epoch

    # ----------------------------------------------------------------------------------- props
    @property
    def master_network(self) -> Any:
        """The Keras model being trained (the driver's copy, holding the current weights)."""
        return self._master_network

    @master_network.setter
    def master_network(self, model: Any) -> None:
        check_keras_model(model, require_compiled=True)
        self._master_network = model

    @property
    def strategy(self) -> Any:
        """The update rule (a :class:`~elephas.engine.strategies.base.Strategy`)."""
        return self._strategy

    @property
    def frequency(self) -> str | int:
        """The communication window."""
        return self._frequency

    def get_config(self) -> dict[str, Any]:
        """The distributed configuration (everything but the model), JSON-serialisable.

        It holds the strategy with its knobs (``mode``, as ``elephas.engine.strategies.serialize``
        writes it), the window, the engine options, the server step and the driver optimizer's
        current learning rate (``worker_learning_rate``: what the workers train with, e.g. after a
        plateau schedule divided it). ``SparkModel.from_config(spark_model.get_config(), model)``
        builds a SparkModel with the same configuration.

        Example:
            >>> SparkModel(model, mode="easgd", rho=2.0).get_config()["mode"]  # doctest: +SKIP
            {'class_name': 'easgd', 'config': {'rho': 2.0, 'learning_rate': 0.1}}
        """
        return {
            "mode": strategies.serialize(self._strategy),
            "frequency": self._frequency,
            "parameter_server_mode": self.parameter_server_mode,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "port": self.port,
            **self.options.get_config(),
            **(
                self._server_optimizer.get_config()
                if self._server_optimizer is not None
                else dict.fromkeys(SERVER_STEP_KEYS)
            ),
            "worker_learning_rate": master_learning_rate(self._master_network),
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], model: Any, custom_objects: dict[str, Any] | None = None
    ) -> SparkModel:
        """A SparkModel for ``model`` with a configuration from :meth:`get_config`.

        Configurations written by earlier versions (a mode name with its knobs at the top level)
        are read too.

        Args:
            config: What :meth:`get_config` returned.
            model: The compiled Keras model to wrap (its optimizer receives ``worker_learning_rate``).
            custom_objects: Custom layers, losses, ... not registered with Keras.
        """
        return cls(model, custom_objects=custom_objects, **config)

    # ------------------------------------------------------------------------------- plumbing
    def _spec(self) -> ModelSpec:
        model = self._master_network
        config_json = model.to_json()
        compile_config = model.get_compile_config()
        digest = hashlib.sha1(
            (
                config_json
                + json.dumps(compile_config, sort_keys=True, default=str)
                + ",".join(sorted(self.custom_objects))
            ).encode()
        ).hexdigest()
        return ModelSpec(f"{model.name}-{digest[:16]}", config_json, compile_config, self.custom_objects)

    def _profile(self) -> Any:
        """The stages' ``ResourceProfile`` for the ``resources`` option (``None``: none or local)."""
        return resource_profile(self.options.resources)

    def _runtime(self, sc: Any) -> WorkerRuntime:
        base = default_runtime(sc)
        threads = self.options.worker_threads
        return WorkerRuntime(base.backend, threads if threads is not None else base.threads)

    @staticmethod
    def _on_connect(data: Any, what: str) -> bool:
        """Whether ``data`` goes the DataFrame-only way of a Spark Connect session (RDDs raise there)."""
        from ..engine.session import is_connect, require_classic

        if is_connect(data) or (is_connect() and not is_dataframe(data)):
            if is_rdd(data):
                require_classic(what, data)
            return True
        return False

    def _connect_runtime(self, data: Any) -> tuple[Any, WorkerRuntime]:
        from ..engine.session import connect_runtime, session_of

        session = session_of(data)
        base = connect_runtime(session)
        threads = self.options.worker_threads
        return session, WorkerRuntime(base.backend, threads if threads is not None else base.threads)

    @staticmethod
    def _sc(what: str = "This SparkModel call", hint: str | None = None) -> Any:
        from ..engine.session import RDD_HINT, require_classic

        return require_classic(what, hint=hint or RDD_HINT)

    # ------------------------------------------------------------------------------------ fit
    def fit(
        self,
        data: Any,
        y: Any = None,
        epochs: int = 1,
        batch_size: int | None = None,
        verbose: int = 0,
        validation_split: float = 0.0,
        validation_data: Any = None,
        callbacks: list[Any] | None = None,
        shuffle: bool = True,
        features_col: str | list[str] = "features",
        label_col: str | list[str] = "label",
        nb_classes: int | None = None,
        initial_epoch: int = 0,
        **kwargs: Any,
    ) -> Any:
        """Train on an RDD of ``(features, label)`` pairs, a DataFrame, or numpy arrays.

        Args:
            data: RDD of pairs, DataFrame with ``features_col``/``label_col``, or numpy features.
            y: Numpy labels when ``data`` is numpy features.
            epochs: Number of epochs (``nb_epoch`` is accepted with a DeprecationWarning).
            batch_size: Batch size (default: the one given to the constructor).
            verbose: 0 silent, 1 progress bar, 2 one line per epoch.
            validation_split: Fraction of the training rows held out for validation (the last
                rows of the arrays, or of every partition for RDDs and DataFrames).
            validation_data: ``(x_val, y_val)`` numpy arrays, an RDD of pairs or a DataFrame.
            callbacks: Keras callbacks run on the driver at epoch ends.
            shuffle: Shuffle each partition's rows every epoch.
            features_col: Feature column(s) of a DataFrame (a list for multi-input models).
            label_col: Label column(s) of a DataFrame (a list for multi-output models).
            nb_classes: When set, labels are class indices, one-hot encoded to this width on the
                executors (checked to lie in ``[0, nb_classes)`` before training starts).
            initial_epoch: Epoch to start from (0-based; ``epochs`` is the last epoch, as in Keras),
                to continue an earlier fit. On the same SparkModel the synchronous server step
                (its momentum) continues from the earlier fit too, so ``fit(epochs=2)`` then
                ``fit(epochs=4, initial_epoch=2)`` reaches the weights of ``fit(epochs=4)`` for a
                fixed ``seed`` and explicit ``frequency``. A ``keras.callbacks.BackupAndRestore``
                that finds a backup sets the weights and this epoch itself.

        Returns:
            A ``keras.callbacks.History`` with per-epoch loss and metrics merged across workers
            by sample count, plus ``val_*`` entries when validation is asked for.

        Example:
            >>> history = SparkModel(model).fit(rdd, epochs=3, batch_size=64)  # doctest: +SKIP
            >>> history.history["loss"]  # doctest: +SKIP
        """
        if "nb_epoch" in kwargs:
            warnings.warn("nb_epoch is deprecated; use epochs.", DeprecationWarning, stacklevel=2)
            epochs = kwargs.pop("nb_epoch")
        if kwargs:
            raise TypeError(f"fit() got unexpected keyword arguments {sorted(kwargs)}.")
        epochs = check_positive_int("epochs", epochs)
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or not 0 <= initial_epoch < epochs:
            raise ValueError(
                f"initial_epoch must be an int in [0, epochs). Received: initial_epoch={initial_epoch!r}"
                f", epochs={epochs}."
            )
        batch_size = check_positive_int("batch_size", batch_size if batch_size is not None else self.batch_size)
        validation_split = check_fraction("validation_split", validation_split)
        if self._on_connect(data, "SparkModel.fit on an RDD"):
            history = self._fit_connect(
                data,
                y,
                epochs,
                batch_size,
                verbose,
                validation_split,
                validation_data,
                callbacks,
                shuffle,
                features_col,
                label_col,
                nb_classes,
                initial_epoch,
            )
            self.training_histories.append(history)
            self._server_step = getattr(history, "server_optimizer", None)
            return history
        sc = self._sc("SparkModel.fit")
        model = self._master_network
        prepared = prepare_training_data(
            sc,
            data,
            y,
            model,
            batch_size=batch_size,
            features_col=features_col,
            label_col=label_col,
            nb_classes=nb_classes,
            num_workers=self.num_workers,
            validation_split=validation_split,
            validation_data=validation_data,
            stage_blocks=self.options.stage_blocks,
        )
        try:
            spec = self._spec()
            preflight_check(spec, prepared.sample)  # what Keras cannot train fails here, before any job
            settings = TrainingSettings(
                strategy=self._strategy,
                frequency=self._frequency,
                batch_size=batch_size,
                epochs=epochs,
                verbose=verbose,
                shuffle=shuffle,
                seed=self.options.seed,
                runtime=self._runtime(sc),
                server_optimizer=self._server_optimizer or (self._server_step if initial_epoch else None),
                server=self._server_settings(sc),
                stage_blocks=self.options.stage_blocks,
                initial_epoch=initial_epoch,
                profile=self._profile(),
                reducer=self.options.reducer or "server",
            )
            run = fit_synchronous if self._strategy.synchronous else fit_asynchronous
            with spark_progress_paused(sc):  # the Keras bar (verbose=1) is the only one drawn
                history = run(
                    sc, model, spec, prepared.blocks, settings, callbacks, prepared.validation, prepared.sample
                )
        finally:
            prepared.release()
        self.training_histories.append(history)
        self._server_step = getattr(history, "server_optimizer", None)
        return history

    def _fit_connect(
        self,
        data: Any,
        y: Any,
        epochs: int,
        batch_size: int,
        verbose: int,
        validation_split: float,
        validation_data: Any,
        callbacks: Any,
        shuffle: bool,
        features_col: Any,
        label_col: Any,
        nb_classes: int | None,
        initial_epoch: int,
    ) -> Any:
        """``fit`` on a Spark Connect session: DataFrames or numpy, every mode (:mod:`.engine.frame_training`;
        the asynchronous modes run the parameter server inside each epoch's stage, :mod:`.engine.frame_async`)."""
        from ..engine.frame_training import fit_data

        if self._strategy.synchronous and self.options.reducer not in (None, "ring"):
            raise ValueError(
                "On a Spark Connect session the rounds are reduced by a ring all-reduce among the tasks (the "
                f"executors may not reach the client). Received: reducer={self.options.reducer!r}. Leave "
                "reducer unset or use reducer='ring'."
            )
        session, runtime = self._connect_runtime(data)
        settings = TrainingSettings(
            strategy=self._strategy,
            frequency=self._frequency,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            shuffle=shuffle,
            seed=self.options.seed,
            runtime=runtime,
            server_optimizer=self._server_optimizer or (self._server_step if initial_epoch else None),
            server=self.options.server_settings(self.parameter_server_mode, self.port),
            initial_epoch=initial_epoch,
        )
        return fit_data(
            session,
            self._master_network,
            self._spec(),
            data,
            y,
            settings,
            self.num_workers,
            features_col=features_col,
            label_col=label_col,
            nb_classes=nb_classes,
            callbacks=callbacks,
            validation_split=validation_split,
            validation_data=validation_data,
        )

    def _server_settings(self, sc: Any) -> ServerSettings:
        return self.options.server_settings(self.parameter_server_mode, self.port, sc.getConf())

    # -------------------------------------------------------------------------------- predict
    def predict(
        self, data: Any, batch_size: int | None = None, features_col: str | list[str] = "features"
    ) -> np.ndarray | list[np.ndarray]:
        """Predict on the executors; one array (a list for multi-output models) in input order.

        Args:
            data: Numpy features, an RDD of feature rows (arrays, lists, Vectors) or a DataFrame.
            batch_size: Rows per forward pass.
            features_col: Feature column(s) of a DataFrame.

        Example:
            >>> predictions = spark_model.predict(x_test)  # doctest: +SKIP
        """
        if self._on_connect(data, "SparkModel.predict on an RDD"):
            from ..engine.frame_inference import predict_data

            if batch_size is not None:
                check_positive_int("batch_size", batch_size)
            session, runtime = self._connect_runtime(data)
            model = self._master_network
            return predict_data(
                session,
                self._spec(),
                model.get_weights(),
                data_mod.ModelIO.of(model),
                data,
                features_col,
                runtime,
                batch_size or 1024,
                self.num_workers,
            )
        sc = self._sc()
        model = self._master_network
        io = data_mod.ModelIO.of(model)
        if batch_size is not None:
            check_positive_int("batch_size", batch_size)
        if is_dataframe(data):
            fcols = [features_col] if isinstance(features_col, str) else list(features_col)
            check_dataframe(data, fcols, {c: "features" for c in fcols})
        elif not is_rdd(data):
            xs = data_mod.as_list(data, len(io.input_shapes), "input")
            if xs[0].shape[0]:
                check_features(io, [x[0] for x in xs])
            data = xs[0] if len(xs) == 1 else xs
        blocks = feature_blocks(sc, data, io, self.num_workers or sc.defaultParallelism, features_col)
        return predict_blocks(
            sc, blocks, self._spec(), model.get_weights(), self._runtime(sc), batch_size, self._profile()
        )

    # ------------------------------------------------------------------------------- evaluate
    def evaluate(
        self,
        x: Any,
        y: Any = None,
        batch_size: int | None = None,
        verbose: int = 0,
        features_col: str | list[str] = "features",
        label_col: str | list[str] = "label",
    ) -> float | list[float]:
        """Evaluate on the executors; returns exactly what ``keras.Model.evaluate`` returns.

        The loss and every compiled metric are computed over all rows (metric states are summed
        across partitions), not as a mean of partition means.

        Example:
            >>> loss, acc = spark_model.evaluate(x_test, y_test)  # doctest: +SKIP
        """
        model = self._master_network
        io = data_mod.ModelIO.of(model)
        bs = check_positive_int("batch_size", batch_size if batch_size is not None else self.batch_size)
        if self._on_connect(x, "SparkModel.evaluate on an RDD"):
            from ..engine.frame_inference import evaluate_data

            session, runtime = self._connect_runtime(x)
            logs = evaluate_data(
                session,
                self._spec(),
                model.get_weights(),
                model,
                io,
                x,
                y,
                features_col,
                label_col,
                runtime,
                bs,
                self.num_workers,
            )
        else:
            sc = self._sc()
            blocks, sample = data_blocks(sc, x, y, model, features_col, label_col, num_workers=self.num_workers)
            logs = evaluate_blocks(
                sc, blocks, self._spec(), model.get_weights(), self._runtime(sc), bs, model, sample, self._profile()
            )
        if verbose:
            logger.info("evaluation: %s", " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        return format_like_keras(logs)

    # ------------------------------------------------------------------------------ save/load
    def save(self, path: str, overwrite: bool = False) -> None:
        """Save the model and the distributed configuration to ``.keras`` or ``.h5``.

        ``path`` may be local or any Hadoop-compatible URI (hdfs://, s3a://, file://).

        Raises:
            FileExistsError: If ``path`` exists and ``overwrite`` is false.
        """
        save_model_with_config(self._master_network, self.get_config(), path, overwrite)


def load_spark_model(path: str, custom_objects: dict[str, Any] | None = None) -> SparkModel:
    """Load a :class:`SparkModel` saved with :meth:`SparkModel.save`.

    Args:
        path: Local path or Hadoop-compatible URI of a ``.keras`` or ``.h5`` file.
        custom_objects: Objects needed to deserialize unregistered custom layers.

    Returns:
        A SparkModel with the saved weights and distributed configuration.
    """
    model, config = read_model_with_config(path, custom_objects)
    return SparkModel(model, custom_objects=custom_objects, **config)


class AsynchronousSparkModel(SparkModel):
    """``SparkModel`` defaulting to asynchronous training through the parameter server."""

    def __init__(
        self,
        model: Any,
        mode: str = "asynchronous",
        frequency: str | int | None = None,
        parameter_server_mode: str = "http",
        port: int = 0,
        **kwargs: Any,
    ):
        super().__init__(
            model, mode=mode, frequency=frequency, parameter_server_mode=parameter_server_mode, port=port, **kwargs
        )
