"""A trial's hyper-parameter values as JSON, for the trial channel.

The driver evaluates each suggested point (``hyperopt.space_eval``) and sends the values to a slot
task as JSON. Numbers, strings, booleans and ``None`` travel as themselves; numpy scalars, tuples
and dicts with any keys as small tagged objects; every other object can only be an option written
into the search space (``hp.choice(..., [Adam, SGD])``): those are pickled once on the driver, shipped
with the Spark job (Spark's own channel, like the trial function), and referred to by index. The
executor unpickles a fresh copy for each trial, as when the values travelled pickled in the task.

Decoding needs neither hyperopt nor the space; :func:`literal_table` and :func:`space_is_sendable`
(driver side) import hyperopt when called.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

_PRIMITIVES = (str, int, float, bool, type(None))  # exactly these types, not subclasses

# Nodes whose values are numbers, strings, lists, tuples, dicts or options of the space itself:
# hyperopt's distributions, choices, containers and arithmetic. Spaces with other nodes
# (``scope.define``-d functions) may produce objects that exist only on the driver.
_SENDABLE_NODES = frozenset(
    {
        "literal",
        "hyperopt_param",
        "switch",
        "pos_args",
        "dict",
        "float",
        "int",
        "uniform",
        "quniform",
        "loguniform",
        "qloguniform",
        "normal",
        "qnormal",
        "lognormal",
        "qlognormal",
        "randint",
        "randint_via_categorical",
        "categorical",
        "add",
        "sub",
        "mul",
        "truediv",
        "floordiv",
        "neg",
        "pow",
        "exp",
        "log",
        "sqrt",
        "maximum",
        "minimum",
    }
)


class UnsendableValueError(TypeError):
    """A hyper-parameter value that cannot be sent as JSON and is not an option of the space."""


def space_is_sendable(space: Any) -> bool:
    """Whether every value ``space_eval`` can make from ``space`` can be sent with :func:`encode`.

    Args:
        space: A hyperopt search space.

    Returns:
        ``True`` when the space is built from hyperopt's distributions, choices, containers and
        arithmetic only.
    """
    from hyperopt import pyll

    return all(node.name in _SENDABLE_NODES for node in pyll.dfs(pyll.as_apply(space)))


def literal_table(space: Any) -> list[Any]:
    """The objects written into ``space`` that do not travel as JSON, each once, in graph order."""
    from hyperopt import pyll

    table: list[Any] = []
    seen: set[int] = set()
    for node in pyll.dfs(pyll.as_apply(space)):
        obj = getattr(node, "obj", None) if node.name == "literal" else None
        if node.name == "literal" and type(obj) not in _PRIMITIVES and id(obj) not in seen:
            seen.add(id(obj))
            table.append(obj)
    return table


class ValueEncoder:
    """Encodes values for the channel; built on the driver from the space's :func:`literal_table`.

    Args:
        literals: The space's objects that travel by reference.

    Attributes:
        pickled: Each literal pickled (cloudpickle), in order; ship these with the Spark job.
    """

    def __init__(self, literals: Sequence[Any]):
        from pyspark import cloudpickle

        self._index = {id(obj): i for i, obj in enumerate(literals)}
        self._keep = list(literals)  # the ids stay valid while the encoder lives
        self.pickled = [cloudpickle.dumps(obj) for obj in literals]

    def encode(self, value: Any, where: str = "values") -> Any:
        """A JSON-serialisable form of ``value`` (see :func:`decode`).

        Raises:
            UnsendableValueError: An object that is neither JSON-like nor an option of the space.
        """
        if type(value) in _PRIMITIVES:
            return _finite_or_text(value)
        index = self._index.get(id(value))
        if index is not None:
            return {"$lit": index}
        if isinstance(value, (np.bool_, np.number)):
            return {"$np": value.dtype.str, "v": _finite_or_text(value.item())}
        if type(value) is list:
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if type(value) is tuple:
            return {"$tuple": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if type(value) is dict:
            return {
                "$dict": [[self.encode(k, f"{where} key"), self.encode(v, f"{where}[{k!r}]")] for k, v in value.items()]
            }
        raise UnsendableValueError(
            f"Expected the hyper-parameter values to be numbers, strings, booleans, None, numpy "
            f"scalars, lists, tuples, dicts or options written into the search space. Received: "
            f"a {type(value).__name__} at {where}."
        )


def _finite_or_text(value: Any) -> Any:
    """JSON has no NaN or infinities: send those as a tagged string."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    return value


def decode(data: Any, pickled_literals: Sequence[bytes]) -> Any:
    """The values :meth:`ValueEncoder.encode` encoded; literals are unpickled afresh each call.

    Args:
        data: The decoded JSON.
        pickled_literals: :attr:`ValueEncoder.pickled`, as shipped with the Spark job.

    Raises:
        ValueError: A malformed encoding.
    """
    if isinstance(data, list):
        return [decode(v, pickled_literals) for v in data]
    if not isinstance(data, dict):
        return data
    if len(data) == 1 and "$lit" in data:
        index = data["$lit"]
        if not isinstance(index, int) or not 0 <= index < len(pickled_literals):
            raise ValueError(f"Expected a literal index below {len(pickled_literals)}. Received: {index!r}.")
        return pickle.loads(pickled_literals[index])  # bytes shipped with the job, not received here
    if set(data) == {"$np", "v"}:
        return np.dtype(data["$np"]).type(decode(data["v"], pickled_literals))
    if set(data) == {"$float"} and data["$float"] in ("nan", "inf", "-inf"):
        return float(data["$float"])
    if set(data) == {"$tuple"} and isinstance(data["$tuple"], list):
        return tuple(decode(v, pickled_literals) for v in data["$tuple"])
    if set(data) == {"$dict"} and isinstance(data["$dict"], list):
        return {_hashable(decode(k, pickled_literals)): decode(v, pickled_literals) for k, v in data["$dict"]}
    raise ValueError(f"Expected an encoded hyper-parameter value. Received: keys {sorted(data)}.")


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        raise ValueError("Expected a hashable dict key. Received: a list.")
    return key
