"""MLflow autologging for elephas, after MLflow's own ``mlflow.<flavor>.autolog()`` convention.

After :func:`autolog`, every ``SparkModel.fit`` (and so ``ElephasEstimator.fit``, the dist-keras
style trainers and ``SparkMLlibModel.fit``, which all train through it) logs to the active MLflow
run, or to a new run it starts and ends:

* the distributed configuration as params: ``mode``, ``frequency`` (the communication window; with
  ``'auto'`` also ``window_initial`` and ``window_range``, where the engine's choice starts and stays),
  ``num_workers`` and ``workers`` (the partitions trained on), ``batch_size``, ``epochs``,
  ``validation_split``, the strategy and server-optimizer knobs, ``backend`` (the Keras backend)
  and ``face`` (the class the user called);
* per-epoch merged metrics, ``val_*`` included, through ``mlflow.keras.MlflowCallback`` run on the
  driver (with the optimizer's config as ``optimizer_*`` params and the model summary);
* the trained model as an MLflow Keras model with a tensor signature of its inputs and outputs.

``fit`` is patched with MLflow's ``safe_patch``: an error in the logging is reported as a warning and
never fails the training. ``mlflow`` is an optional dependency (``pip install "elephas[mlflow]"``);
importing this module without it works, calling :func:`autolog` raises an ``ImportError`` that says
what to install.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import logging
from typing import Any

logger = logging.getLogger(__name__)

FLAVOR_NAME = "elephas"

_FACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("elephas_mlflow_face", default=None)


def _import_mlflow() -> Any:
    try:
        return importlib.import_module("mlflow")
    except ImportError as exc:
        raise ImportError(
            "elephas.mlflow.autolog() requires the `mlflow` package. Received: it is not "
            'installed. Install it with `pip install "elephas[mlflow]"` (or `pip install '
            "mlflow`)."
        ) from exc


def autolog(
    log_models: bool = True,
    log_model_signatures: bool = True,
    disable: bool = False,
    exclusive: bool = False,
    silent: bool = False,
    registered_model_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> None:
    """Log elephas training to MLflow: params, per-epoch merged metrics and the trained model.

    Args:
        log_models: Log the trained Keras model (MLflow's Keras flavor) at the end of each fit.
        log_model_signatures: Give the logged model a tensor signature of its inputs and outputs.
        disable: Turn elephas autologging off again.
        exclusive: Log only to runs that autologging starts itself, never to a run the user started.
        silent: Suppress MLflow's event logs and warnings while autologging.
        registered_model_name: Also register each logged model as a new version of this name.
        extra_tags: Tags set on every run autologging starts.

    Raises:
        ImportError: When ``mlflow`` is not installed.

    Example:
        >>> import mlflow  # doctest: +SKIP
        >>> import elephas.mlflow  # doctest: +SKIP
        >>> elephas.mlflow.autolog()  # doctest: +SKIP
        >>> with mlflow.start_run():  # doctest: +SKIP
        ...     SparkModel(model, frequency="epoch").fit(rdd, epochs=5)  # doctest: +SKIP
    """
    _integration()(
        log_models=log_models,
        log_model_signatures=log_model_signatures,
        disable=disable,
        exclusive=exclusive,
        silent=silent,
        registered_model_name=registered_model_name,
        extra_tags=extra_tags,
    )


@functools.lru_cache(maxsize=1)
def _integration() -> Any:
    """MLflow's autologging wrapper around :func:`_autolog` (made once mlflow is importable)."""
    _import_mlflow()
    from mlflow.utils.autologging_utils import autologging_integration

    return autologging_integration(FLAVOR_NAME)(_autolog)


def _autolog(
    log_models: bool = True,
    log_model_signatures: bool = True,
    disable: bool = False,
    exclusive: bool = False,
    silent: bool = False,
    registered_model_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> None:
    from mlflow.utils.autologging_utils import safe_patch

    from .ml.estimator import ElephasEstimator
    from .spark_model import SparkModel
    from .trainers import EnsembleTrainer, Trainer

    def patched_fit(original: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
        return _logged_fit(original, self, args, kwargs, log_models, log_model_signatures, registered_model_name)

    def as_face(original: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _FACE.set(_FACE.get() or type(self).__name__)
        try:
            return original(self, *args, **kwargs)
        finally:
            _FACE.reset(token)

    safe_patch(FLAVOR_NAME, SparkModel, "fit", patched_fit, manage_run=True, extra_tags=extra_tags)
    safe_patch(FLAVOR_NAME, ElephasEstimator, "_fit", as_face)
    for cls in (Trainer, EnsembleTrainer):
        safe_patch(FLAVOR_NAME, cls, "train", as_face)


def _logged_fit(
    original: Any,
    spark_model: Any,
    args: tuple,
    kwargs: dict,
    log_models: bool,
    log_model_signatures: bool,
    registered_model_name: str | None,
) -> Any:
    """Log params, add the per-epoch metric callback, train, then log the model."""
    import mlflow
    import mlflow.keras

    signature = inspect.signature(original)
    bound = signature.bind(spark_model, *args, **kwargs)
    bound.apply_defaults()
    mlflow.log_params(fit_params(spark_model, bound.arguments))
    callbacks = list(bound.arguments.get("callbacks") or [])
    if not any(isinstance(cb, mlflow.keras.MlflowCallback) for cb in callbacks):
        callbacks.append(mlflow.keras.MlflowCallback(log_every_epoch=True))
    # the user's arguments go through as given; only the callbacks list grows
    args, kwargs = list(args), dict(kwargs)
    position = list(signature.parameters).index("callbacks") - 1  # without self
    if len(args) > position:
        args[position] = callbacks
    else:
        kwargs["callbacks"] = callbacks
    history = original(spark_model, *args, **kwargs)
    mlflow.flush_async_logging()
    if log_models:
        model = spark_model.master_network
        model_signature = None
        if log_model_signatures:
            from mlflow.keras.utils import get_model_signature

            model_signature = get_model_signature(model)
        mlflow.keras.log_model(
            model, name="model", signature=model_signature, registered_model_name=registered_model_name
        )
    return history


def fit_params(spark_model: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    """The params logged for one ``SparkModel.fit`` call.

    Args:
        spark_model: The ``SparkModel`` being fitted.
        arguments: ``fit``'s bound arguments (defaults applied).

    Returns:
        ``{name: value}``: the distributed configuration (``SparkModel.get_config()`` without the
        port; the strategy as ``mode`` plus one param per knob), the fit arguments that shape
        training, ``workers``, ``backend`` and ``face``; with ``frequency='auto'`` also the window
        the engine starts from (``window_initial``, in batches) and the range it chooses each
        epoch's window in (``window_range``).

    Example:
        >>> fit_params(spark_model, {"data": rdd, "epochs": 3})["mode"]  # doctest: +SKIP
        'synchronous'
    """
    import keras

    config = {k: v for k, v in spark_model.get_config().items() if k != "port"}
    strategy = config.pop("mode")  # {"class_name": ..., "config": {knob: value}}: one param per knob
    config = {"mode": strategy["class_name"], **strategy["config"], **config}
    batch_size = arguments.get("batch_size") or spark_model.batch_size
    params = {
        **config,
        "batch_size": batch_size,
        "epochs": arguments.get("epochs"),
        "validation_split": arguments.get("validation_split"),
        "shuffle": arguments.get("shuffle"),
        "backend": keras.backend.backend(),
        "face": _FACE.get() or type(spark_model).__name__,
    }
    if params["frequency"] == "auto":  # the engine picks the window per epoch, starting here
        from .engine.windows import bounds_for

        bounds = bounds_for(spark_model.mode)
        params.update(window_initial=bounds.initial, window_range=f"{bounds.low}-{bounds.high}")
    workers = _workers(spark_model, arguments.get("data"))
    if workers is not None:
        params["workers"] = workers
    return {k: v for k, v in params.items() if v is not None}


def _workers(spark_model: Any, data: Any) -> int | None:
    """The number of partitions (tasks) the fit trains on, when it can be told cheaply."""
    if spark_model.num_workers:
        return int(spark_model.num_workers)
    try:
        from .engine.inference import is_dataframe, is_rdd

        if is_rdd(data):
            return int(data.getNumPartitions())
        if is_dataframe(data):
            return int(data.rdd.getNumPartitions())
        from pyspark import SparkContext

        sc = SparkContext._active_spark_context
        return int(sc.defaultParallelism) if sc is not None else None
    except Exception:  # e.g. a Spark Connect DataFrame has no .rdd: leave the param out
        logger.debug("could not count the partitions of the training data", exc_info=True)
        return None
