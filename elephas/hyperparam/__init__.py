"""Distributed hyper-parameter search for hyperas-style Keras models, and voting ensembles.

Write ``data()`` and ``model(x_train, y_train, x_test, y_test)`` as plain functions with
``{{choice([...])}}``, ``{{uniform(a, b)}}``, ... templates, then::

    from elephas.hyperparam import HyperParamModel
    hyperparam_model = HyperParamModel(sc, num_workers=4)
    best_model = hyperparam_model.minimize(model=model, data=data, max_evals=16)
    ensemble = hyperparam_model.best_ensemble(nb_ensemble_models=3, model=model, data=data, max_evals=16)

The names are imported lazily, so the executors that run the trials (which import
``elephas.hyperparam.trial``) never import hyperopt, scipy or the template parser.

See ``docs/hyperparam.md``.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "HyperParamModel": "elephas.hyperparam.search",
    "TrialsFailedError": "elephas.hyperparam.search",
    "get_algo": "elephas.hyperparam.search",
    "ranked_trials": "elephas.hyperparam.search",
    "VotingModel": "elephas.hyperparam.voting",
    "Template": "elephas.hyperparam.templates",
    "TemplatedModel": "elephas.hyperparam.templates",
    "TemplateError": "elephas.hyperparam.templates",
    "parse_model": "elephas.hyperparam.templates",
    **{
        name: "elephas.hyperparam.distributions"
        for name in (
            "Distribution",
            "choice",
            "pchoice",
            "uniform",
            "quniform",
            "loguniform",
            "qloguniform",
            "normal",
            "qnormal",
            "lognormal",
            "qlognormal",
            "randint",
            "uniformint",
            "conditional",
        )
    },
}

__all__ = [
    "HyperParamModel",
    "VotingModel",
    "TrialsFailedError",
    "TemplateError",
    "Template",
    "TemplatedModel",
    "parse_model",
    "get_algo",
    "ranked_trials",
    "Distribution",
    "choice",
    "pchoice",
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "normal",
    "qnormal",
    "lognormal",
    "qlognormal",
    "randint",
    "uniformint",
    "conditional",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
