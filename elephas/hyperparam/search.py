"""Distributed hyper-parameter search: hyperopt suggests, Spark runs the trials.

``num_workers`` long-running slot tasks ask the driver for their next trial over an authenticated
channel (:mod:`elephas.hyperparam.slots`) as soon as they finish one, so a slow trial holds up only
its own slot and no Spark job is started per trial. On a Spark Connect session (no SparkContext,
and executors that may not reach the client) each trial runs as its own one-row DataFrame job
instead (:mod:`elephas.hyperparam.frame_trials`).

hyperopt drives the search through its public API: ``hyperopt.fmin`` with a
:class:`~elephas.hyperparam.runner_trials.RunnerTrials` (a ``hyperopt.Trials`` that starts each
trial fmin inserts, the way ``SparkTrials`` plugs in) and a
:class:`~elephas.hyperparam.scheduler.ReproducibleAlgo` wrapping the suggest function. A run with a
``seed`` stays reproducible because each suggestion sees a history fixed by the trial's id, not by
which trial happened to finish first (see :mod:`elephas.hyperparam.scheduler`).

Why not ``hyperopt.SparkTrials``: it works with PySpark 4 and can carry numpy weights back in the
result dict, but it launches each trial from a dispatcher thread that polls once a second, asks for
new points whenever a slot frees up with whatever has finished by then (so a seeded run is not
reproducible), needs a SparkSession and records failures only in ``misc['error']``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hyperopt import STATUS_OK, Trials, fmin, rand, space_eval, tpe
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, spec_from_misc
from hyperopt.exceptions import AllTrialsFailed

from elephas.hyperparam.runner_trials import RunnerTrials
from elephas.hyperparam.scheduler import LocalTrialRunner, ReproducibleAlgo, SparkTrialRunner, TrialRunner
from elephas.hyperparam.slots import SlotTrialRunner
from elephas.hyperparam.templates import TemplatedModel, has_templates, parse_model
from elephas.hyperparam.trial import InlineValue, constant_build, make_trial_fn
from elephas.hyperparam.values import space_is_sendable
from elephas.utils.checks import check_positive_int

logger = logging.getLogger(__name__)

_ALGOS: dict[str, Callable[..., Any]] = {"tpe": tpe.suggest, "random": rand.suggest, "rand": rand.suggest}


class TrialsFailedError(RuntimeError, AllTrialsFailed):
    """Every trial of a search failed.

    Attributes:
        trials: The ``hyperopt.Trials`` of the search (failures are in state ``JOB_STATE_ERROR``
            with ``misc['error'] == (type, traceback)``).
    """

    def __init__(self, message: str, trials: Trials):
        super().__init__(message)
        self.trials = trials


def get_algo(algo: str | Callable[..., Any]) -> Callable[..., Any]:
    """Resolve ``'tpe'``, ``'random'`` (or a hyperopt ``suggest`` function) to a suggest function.

    Raises:
        ValueError: Unknown name.
    """
    if callable(algo):
        return algo
    if isinstance(algo, str) and algo.lower() in _ALGOS:
        return _ALGOS[algo.lower()]
    raise ValueError(
        f"Could not interpret algo: {algo!r}. Expected one of ['tpe', 'random'] or a hyperopt "
        "suggest function such as hyperopt.anneal.suggest."
    )


class HyperParamModel:
    """Distributed hyper-parameter optimisation of hyperas-style Keras models on Spark.

    Args:
        sc: The SparkContext, or a SparkSession (classic or Spark Connect); ``None`` runs the trials
            in this process, one after the other.
        num_workers: Trials run at once (one long-running Spark task each; on Spark Connect one
            DataFrame job per trial, ``num_workers`` at a time).
        custom_objects: Objects needed to rebuild the trained models on the driver.

    Attributes:
        trials: The ``hyperopt.Trials`` of the last search.
        best_params: The best trial's hyper-parameters, by template name, with choices resolved to
            the chosen values (``hyperopt.space_eval``).
        best_loss: The best trial's loss.

    Example:
        >>> hyperparam_model = HyperParamModel(sc, num_workers=2)  # doctest: +SKIP
        >>> best = hyperparam_model.minimize(model=model, data=data, max_evals=8)  # doctest: +SKIP
        >>> hyperparam_model.best_params  # doctest: +SKIP
        {'Dense_units': 64, 'Dropout_rate': 0.21, 'batch_size': 32}
    """

    def __init__(self, sc: Any, num_workers: int = 4, custom_objects: dict[str, Any] | None = None):
        from pyspark.sql import SparkSession

        from elephas.engine.session import is_connect

        self.connect = sc is not None and is_connect(sc)
        if isinstance(sc, SparkSession) and not self.connect:
            sc = sc.sparkContext  # a classic SparkSession
        self.sc = sc
        self.num_workers = check_positive_int("num_workers", num_workers)
        self.custom_objects = dict(custom_objects or {})
        self.trials: Trials | None = None
        self.space: Any = None
        self.best_params: dict[str, Any] | None = None
        self.best_loss: float | None = None
        self.templated: TemplatedModel | None = None

    # ------------------------------------------------------------------ public API

    def compute_trials(
        self,
        model: Callable[..., Any],
        data: Callable[[], Any] | None = None,
        max_evals: int = 10,
        notebook_name: str | None = None,
        *,
        space: Any = None,
        functions: Sequence[Callable[..., Any]] = (),
        algo: str | Callable[..., Any] = "tpe",
        seed: int | None = None,
    ) -> Trials:
        """Run the search and return its trials.

        Args:
            model: A hyperas-style model function ``model(x_train, y_train, x_test, y_test)`` with
                ``{{...}}`` templates returning ``{'loss': ..., 'status': STATUS_OK, 'model': model}``;
                or, with ``space``, an objective ``model(params, *data)`` returning the same dict.
            data: ``data()`` returning the arrays passed to ``model`` (called once on the driver and
                broadcast). Optional with ``space``.
            max_evals: Total number of trials.
            notebook_name: Ignored (elephas reads notebook cells itself); kept for old code.
            space: A hyperopt search space, for an objective without templates.
            functions: Helper functions ``model`` calls (their source is compiled with it and may
                hold templates).
            algo: ``'tpe'`` (default), ``'random'``, or a hyperopt ``suggest`` function.
            seed: Makes the suggestions (and each trial's Keras seed, ``seed + tid``) reproducible.

        Returns:
            A ``hyperopt.Trials``. Successful trials carry ``result['loss']``, ``result['status']``,
            ``result['model_spec']`` and ``result['model_weights']``; failed ones are in state
            ``JOB_STATE_ERROR`` with ``misc['error'] == (type, traceback)``.

        Raises:
            ValueError: Invalid arguments (before any Spark job runs).
            TrialsFailedError: Every trial failed; names the first failure.
        """
        if notebook_name is not None:
            warnings.warn(
                "notebook_name is not needed any more: elephas reads notebook cells from "
                "IPython itself. It is ignored.",
                DeprecationWarning,
                stacklevel=2,
            )
        max_evals = check_positive_int("max_evals", max_evals)
        suggest = get_algo(algo)
        build, pass_values, space_, source, data_values = self._prepare(model, data, space, functions)
        self.space = space_
        fn_data = self._share(data_values)
        try:
            trials = self._search(build, pass_values, space_, source, fn_data, max_evals, suggest, seed)
        finally:
            if fn_data is not None and hasattr(fn_data, "unpersist"):
                fn_data.unpersist()
        self.trials = trials
        self._summarise(trials)
        return trials

    def minimize(
        self,
        model: Callable[..., Any],
        data: Callable[[], Any] | None = None,
        max_evals: int = 10,
        notebook_name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Search and return the best Keras model, with its trained weights.

        Args:
            model: See :meth:`compute_trials`.
            data: See :meth:`compute_trials`.
            max_evals: Total number of trials.
            notebook_name: Ignored, kept for old code.
            **kwargs: ``space``, ``functions``, ``algo``, ``seed`` (see :meth:`compute_trials`).

        Returns:
            The lowest-loss trial's model (a compiled Keras model when it was compiled in the trial).
        """
        return self.best_models(1, model, data, max_evals, notebook_name, **kwargs)[0]

    def best_models(
        self,
        nb_models: int,
        model: Callable[..., Any],
        data: Callable[[], Any] | None = None,
        max_evals: int = 10,
        notebook_name: str | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Search and return the ``nb_models`` lowest-loss models, lowest first.

        Args:
            nb_models: How many models (fewer come back if fewer trials produced one).
            model: See :meth:`compute_trials`.
            data: See :meth:`compute_trials`.
            max_evals: Total number of trials.
            notebook_name: Ignored, kept for old code.
            **kwargs: ``space``, ``functions``, ``algo``, ``seed``.

        Returns:
            Keras models with their trained weights.
        """
        nb_models = check_positive_int("nb_models", nb_models)
        trials = self.compute_trials(model, data, max_evals, notebook_name, **kwargs)
        return self.models_from_trials(trials, nb_models)

    def best_ensemble(
        self,
        nb_ensemble_models: int,
        model: Callable[..., Any],
        data: Callable[[], Any] | None = None,
        max_evals: int = 10,
        voting: str = "hard",
        weights: Sequence[float] | None = None,
        notebook_name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Search and return a :class:`~elephas.hyperparam.VotingModel` of the best models.

        Args:
            nb_ensemble_models: Members of the ensemble (the lowest-loss trials).
            model: See :meth:`compute_trials`.
            data: See :meth:`compute_trials`.
            max_evals: Total number of trials.
            voting: ``'hard'`` or ``'soft'``.
            weights: One weight per member, or ``None`` for equal weights.
            notebook_name: Ignored, kept for old code.
            **kwargs: ``space``, ``functions``, ``algo``, ``seed``.

        Returns:
            The voting ensemble.
        """
        from elephas.hyperparam.voting import VotingModel, check_voting

        check_voting(voting, weights, nb_ensemble_models)
        models = self.best_models(nb_ensemble_models, model, data, max_evals, notebook_name, **kwargs)
        if weights is not None and len(models) != len(weights):
            raise ValueError(f"Only {len(models)} trials produced a model, but {len(weights)} weights were given.")
        return VotingModel(models, voting=voting, weights=weights)

    def models_from_trials(self, trials: Trials, nb_models: int | None = None) -> list[Any]:
        """Rebuild the Keras models of the best successful trials, lowest loss first.

        Args:
            trials: Trials of a search.
            nb_models: How many (``None``: all).

        Returns:
            Keras models with their trained weights.

        Raises:
            ValueError: No successful trial returned a model.
        """
        from elephas.engine.shipping import ModelSpec

        ranked = [t for t in ranked_trials(trials) if "model_spec" in t["result"]]
        if not ranked:
            raise ValueError(
                "No successful trial returned a model. The model function must return "
                "{'loss': ..., 'status': STATUS_OK, 'model': model} with a Keras model."
            )
        models = []
        for trial in ranked[:nb_models]:
            spec = ModelSpec.from_dict(trial["result"]["model_spec"], self.custom_objects)
            keras_model = spec.build(compile=True)
            weights = trial["result"].get("model_weights")
            if weights is not None:
                keras_model.set_weights(weights)
            models.append(keras_model)
        return models

    @property
    def failed_trials(self) -> list[dict[str, Any]]:
        """Failed trials of the last search: ``{'tid', 'params', 'error', 'traceback'}`` each."""
        if self.trials is None:
            return []
        out = []
        for trial in all_trials(self.trials):
            if trial["state"] == JOB_STATE_ERROR:
                err_type, tb = trial["misc"].get("error", ("", ""))
                out.append({"tid": trial["tid"], "params": self._readable(trial), "error": err_type, "traceback": tb})
        return out

    # ------------------------------------------------------------------ internals

    def _prepare(
        self,
        model: Callable[..., Any],
        data: Callable[[], Any] | None,
        space: Any,
        functions: Sequence[Callable[..., Any]],
    ) -> tuple[Any, bool, Any, Any, tuple | None]:
        """Validate everything on the driver, before any Spark job."""
        if not callable(model):
            raise TypeError(f"Expected model to be a function. Received: model={model!r}.")
        if data is not None and not callable(data):
            raise TypeError(
                f"Expected data to be a function returning arrays (data() -> x_train, y_train, "
                f"x_test, y_test). Received: data={type(data).__name__}."
            )
        if space is None:
            templated = parse_model(model, functions)
            if not templated.space:
                raise ValueError(
                    f"No hyper-parameters to search: {model.__name__}() contains no {{{{...}}}} "
                    "templates and no space= was given. Add templates such as "
                    "Dense({{choice([32, 64])}}) or pass a hyperopt space, e.g. "
                    "space={'units': hp.choice('units', [32, 64])}."
                )
            if data is None:
                raise ValueError("A templated model needs data: pass data=<function returning arrays>.")
            values = self._call_data(data, templated)
            self.templated = templated
            return templated.factory, False, templated.space, (templated.filename, templated.source), values
        if has_templates(model):
            raise ValueError(
                f"{model.__name__}() contains {{{{...}}}} templates and space= was given too. "
                "Use one of the two: templates, or a plain objective with space=."
            )
        self.templated = None
        values = self._call_data(data, None) if data is not None else None
        try:  # compile from source like a templated model: shipped by value, not by module name
            compiled = parse_model(model, functions, check_returns=False)
            return compiled.factory, True, space, (compiled.filename, compiled.source), values
        except (TypeError, ValueError, SyntaxError):
            logger.debug("shipping %r as is (no readable source)", model)
            return constant_build(model), True, space, None, values

    @staticmethod
    def _call_data(data: Callable[[], Any], templated: TemplatedModel | None) -> tuple:
        """Call ``data()`` once on the driver and check it matches the model's arguments."""
        if has_templates(data):
            raise ValueError(
                f"{data.__name__}() contains {{{{...}}}} templates; templates belong in the model "
                "function (or in helper functions passed with functions=)."
            )
        values = data()
        values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
        if templated is not None:
            required, maximum = templated.n_args
            if len(values) < required or (maximum is not None and len(values) > maximum):
                args = ", ".join(templated.arg_names)
                kinds = ", ".join(type(v).__name__ for v in values)
                raise ValueError(
                    f"Expected data() to return {required} arrays to match "
                    f"{templated.model_name}({args}). Received: {len(values)} values ({kinds})."
                )
        return values

    def _share(self, values: tuple | None) -> Any:
        if values is None:
            return None
        if self.sc is None:
            return InlineValue(values)
        if self.connect:  # no broadcast: the arrays travel in each trial job's closure
            from elephas.hyperparam.frame_trials import check_closure_data

            check_closure_data(values)
            return InlineValue(values)
        return self.sc.broadcast(values)

    def _runtime(self) -> Any:
        """Thread settings for the trial tasks: the machine's cores shared by the concurrent tasks
        (``None`` for trials in this process)."""
        if self.sc is None:
            return None
        if self.connect:
            from elephas.engine.session import connect_runtime

            return connect_runtime(self.sc)
        from elephas.engine.inference import default_runtime

        return default_runtime(self.sc)

    def _search(
        self,
        build: Any,
        pass_values: bool,
        space: Any,
        source: Any,
        data: Any,
        max_evals: int,
        suggest: Callable[..., Any],
        seed: int | None,
    ) -> RunnerTrials:
        run = make_trial_fn(build, pass_values, data, seed, source, self._runtime())
        _check_picklable(build)
        trials = RunnerTrials(self._make_runner(), self.num_workers)
        try:
            fmin(
                run,
                space,
                algo=ReproducibleAlgo(suggest, self.num_workers),
                max_evals=max_evals,
                trials=trials,
                rstate=np.random.default_rng(seed),
                show_progressbar=False,
                return_argmin=False,
            )
        except AllTrialsFailed:
            pass  # raised below as TrialsFailedError, naming the first failure
        if trials.job_failures_only:
            err_type, message, tb = next(iter(trials.reports.values())).error or ("", "", "")
            raise RuntimeError(
                "The trials could not run on the executors (the Spark job itself failed, so "
                "every trial would). If the executor cannot import a module the model refers "
                "to, install it there or ship it with sc.addPyFile. Executor error:\n"
                + "\n".join(str(tb).strip().splitlines()[-12:])
            )
        _raise_if_all_failed(trials)
        return trials

    def _make_runner(self) -> TrialRunner:
        """The execution back-end: slot tasks on Spark (one-task jobs per trial for spaces whose
        values cannot travel as JSON), one DataFrame job per trial on Spark Connect, or in-process
        trials without a session."""
        if self.sc is None:
            return LocalTrialRunner()
        if self.connect:
            from elephas.hyperparam.frame_trials import FrameTrialRunner

            return FrameTrialRunner(self.sc, self.num_workers)
        if space_is_sendable(self.space):
            return SlotTrialRunner(self.sc, self.num_workers, self.space)
        logger.info(
            "the search space computes values with functions of its own: each trial runs as "
            "its own Spark job, with its values"
        )
        return SparkTrialRunner(self.sc, self.num_workers)

    def _readable(self, trial: dict[str, Any]) -> dict[str, Any]:
        try:
            return space_eval(self.space, _flat_vals(trial))
        except Exception:
            return _flat_vals(trial)

    def _summarise(self, trials: Trials) -> None:
        ranked = ranked_trials(trials)
        if ranked:
            self.best_loss = ranked[0]["result"]["loss"]
            self.best_params = self._readable(ranked[0])
            logger.info("best loss %s with %s", self.best_loss, self.best_params)


def ranked_trials(trials: Trials) -> list[dict[str, Any]]:
    """Successful trials (status ok, finite loss), lowest loss first (ties: lower tid first)."""
    ok = [
        t
        for t in trials.trials
        if t["state"] == JOB_STATE_DONE
        and t["result"].get("status") == STATUS_OK
        and t["result"].get("loss") is not None
        and np.isfinite(t["result"]["loss"])
    ]
    return sorted(ok, key=lambda t: (t["result"]["loss"], t["tid"]))


def _flat_vals(trial: dict[str, Any]) -> dict[str, Any]:
    """``{label: value}`` of a trial (hyperopt stores each as a 0- or 1-element list)."""
    return spec_from_misc(trial["misc"])


def all_trials(trials: Trials) -> list[dict[str, Any]]:
    """Every trial of a search, failed ones included (``Trials.trials`` leaves those out)."""
    if isinstance(trials, RunnerTrials):
        return trials.all_trials
    return list(trials.trials)


def _raise_if_all_failed(trials: Trials) -> None:
    dynamic = all_trials(trials)
    if not dynamic or ranked_trials(trials):
        return
    errors = [t for t in dynamic if t["state"] == JOB_STATE_ERROR]
    if errors:
        first = errors[0]
        err_type, tb = first["misc"]["error"]
        tail = "\n".join(str(tb).strip().splitlines()[-15:])
        raise TrialsFailedError(
            f"All {len(dynamic)} trials failed. First failure (trial {first['tid']}, "
            f"params {_flat_vals(first)}): {err_type}\n{tail}",
            trials,
        )
    statuses = sorted({str(t["result"].get("status")) for t in dynamic})
    raise TrialsFailedError(
        f"None of the {len(dynamic)} trials returned status 'ok' with a finite loss (statuses: {statuses}).", trials
    )


def _check_picklable(user_fn: Any) -> None:
    """Fail on the driver, before any job, if the trial function cannot be shipped."""
    from pyspark.serializers import CloudPickleSerializer

    try:
        CloudPickleSerializer().dumps(user_fn)
    except Exception as exc:
        raise TypeError(
            f"The model function (or something it refers to) cannot be sent to the executors: "
            f"{type(exc).__name__}: {exc}. Create unpicklable objects (sessions, open files, "
            "locks) inside the function instead of referring to them from outside."
        ) from exc
