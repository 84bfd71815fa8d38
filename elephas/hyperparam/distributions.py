"""Hyper-parameter distributions usable in ``{{...}}`` templates and in plain hyperopt spaces.

Inside a template the distribution is written without a label (``{{choice([32, 64])}}``,
``{{uniform(0, 1)}}``): elephas names the search-space entry from where the template stands (see
:mod:`elephas.hyperparam.templates`). Called with a label first, the same functions are exactly
hyperopt's ``hp.*`` functions, so they also build plain search spaces::

    from elephas.hyperparam import choice, uniform
    space = {"units": choice("units", [32, 64]), "rate": uniform("rate", 0.0, 0.5)}

The names and argument orders are those of ``hyperas.distributions`` (which re-exports hyperopt's),
so ``from hyperas.distributions import choice`` and ``from elephas.hyperparam import choice`` are
interchangeable in templated code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hyperopt import hp

__all__ = [
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
    "DISTRIBUTIONS",
]

# name -> (hyperopt function, number of positional arguments after the label (min, max))
_HP: dict[str, tuple[Any, int, int]] = {
    "choice": (hp.choice, 1, 1),
    "pchoice": (hp.pchoice, 1, 1),
    "uniform": (hp.uniform, 2, 2),
    "quniform": (hp.quniform, 3, 3),
    "loguniform": (hp.loguniform, 2, 2),
    "qloguniform": (hp.qloguniform, 3, 3),
    "normal": (hp.normal, 2, 2),
    "qnormal": (hp.qnormal, 3, 3),
    "lognormal": (hp.lognormal, 2, 2),
    "qlognormal": (hp.qlognormal, 3, 3),
    "randint": (hp.randint, 1, 2),
    "uniformint": (hp.uniformint, 2, 3),
}

#: Names accepted inside ``{{...}}`` templates.
DISTRIBUTIONS: tuple[str, ...] = tuple(_HP)


@dataclass(frozen=True)
class Distribution:
    """A distribution written in a template, still without its search-space label.

    Attributes:
        name: Distribution name (``'choice'``, ``'uniform'``, ...).
        args: Positional arguments after the label.
        kwargs: Keyword arguments.
    """

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_hyperopt(self, label: str) -> Any:
        """The hyperopt expression for this distribution under ``label``.

        Args:
            label: The search-space name (``'Dense_units'``, ...).

        Returns:
            A hyperopt ``Apply`` node, as ``hp.<name>(label, ...)`` returns.
        """
        fn = _HP[self.name][0]
        return fn(label, *self.args, **self.kwargs)

    def __str__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


def _make(name: str) -> Any:
    fn, lo, hi = _HP[name]

    def distribution(*args: Any, **kwargs: Any) -> Any:
        # hp-style call: a string label first, then the usual arguments.
        if args and isinstance(args[0], str) and len(args) - 1 + _kw_positional(kwargs) >= lo:
            return fn(*args, **kwargs)
        n = len(args) + _kw_positional(kwargs)
        if not lo <= n <= hi:
            expected = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise TypeError(
                f"{name}() in a template takes {expected} argument(s) (no label). "
                f"Received: {name}{args!r}. Example: {{{{{name}({_example(name)})}}}}."
            )
        return Distribution(name, tuple(args), dict(kwargs))

    distribution.__name__ = name
    distribution.__qualname__ = name
    distribution.__doc__ = (
        f"``{name}`` distribution: ``{{{{{name}({_example(name)})}}}}`` in a template, or "
        f"``{name}(label, {_example(name)})`` for a plain hyperopt space (same as ``hp.{name}``)."
    )
    return distribution


def _kw_positional(kwargs: dict[str, Any]) -> int:
    """How many of ``kwargs`` stand for positional parameters (hyperopt's names)."""
    known = {"options", "p_options", "low", "high", "q", "mu", "sigma", "upper"}
    return sum(1 for k in kwargs if k in known)


def _example(name: str) -> str:
    return {
        "choice": "[32, 64, 128]",
        "pchoice": "[(0.7, 'relu'), (0.3, 'tanh')]",
        "uniform": "0.0, 0.5",
        "quniform": "8, 64, 8",
        "loguniform": "-7, -2",
        "qloguniform": "2, 6, 1",
        "normal": "0.0, 1.0",
        "qnormal": "32, 8, 1",
        "lognormal": "0.0, 1.0",
        "qlognormal": "3, 1, 1",
        "randint": "10",
        "uniformint": "1, 5",
    }[name]


choice = _make("choice")
pchoice = _make("pchoice")
uniform = _make("uniform")
quniform = _make("quniform")
loguniform = _make("loguniform")
qloguniform = _make("qloguniform")
normal = _make("normal")
qnormal = _make("qnormal")
lognormal = _make("lognormal")
qlognormal = _make("qlognormal")
randint = _make("randint")
uniformint = _make("uniformint")


def conditional(data: Any) -> Any:
    """hyperas' ``conditional``: returns its argument unchanged (kept for compatibility)."""
    return data
