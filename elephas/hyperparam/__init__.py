"""Distributed hyper-parameter search for hyperas-style Keras models, and voting ensembles.

Write ``data()`` and ``model(x_train, y_train, x_test, y_test)`` as plain functions with
``{{choice([...])}}``, ``{{uniform(a, b)}}``, ... templates, then::

    from elephas.hyperparam import HyperParamModel
    hyperparam_model = HyperParamModel(sc, num_workers=4)
    best_model = hyperparam_model.minimize(model=model, data=data, max_evals=16)
    ensemble = hyperparam_model.best_ensemble(nb_ensemble_models=3, model=model, data=data, max_evals=16)

See ``docs/hyperparam.md``.
"""

from elephas.hyperparam.distributions import (
    Distribution,
    choice,
    conditional,
    lognormal,
    loguniform,
    normal,
    pchoice,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
    uniformint,
)
from elephas.hyperparam.search import HyperParamModel, TrialsFailedError, get_algo, ranked_trials
from elephas.hyperparam.templates import Template, TemplatedModel, TemplateError, parse_model
from elephas.hyperparam.voting import VotingModel

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
