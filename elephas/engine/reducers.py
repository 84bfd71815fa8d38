"""Where a synchronous round is reduced: the small interface the in-stage epoch talks to.

A task of a synchronous epoch stage calls :meth:`RoundReducer.exchange` after every window with
its ``Σ samples·Δ``; the call returns once the round closed, with the new center. Which reducer
runs is chosen once, on the driver, by where the tasks can reach (:func:`open_round_reducer`
reads the plain config the driver shipped):

* ``'server'`` — the driver's parameter server in its synchronous-rounds policy
  (:mod:`elephas.parameter.rounds`): same codec, same authentication, same statistics. Used on
  classic sessions, where executors reach the driver.
* ``'collective'`` — the tasks of the stage themselves (:mod:`elephas.collective`, a ring or hub
  all-reduce opened once per stage through the barrier context). Every rank sums the round's
  ``Σ samples·Δ`` and samples, divides, and applies the server step locally: every rank holds an
  identical copy of the step (shipped with the config) and receives the same summed bytes, so every
  rank computes the same center. Used on Spark Connect, where executors cannot reach the client.
  Every rank must join every round (a rank out of rows pushes a zero delta with 0 samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class RoundReducer(Protocol):
    """What a task of a synchronous stage needs from the round's reducer."""

    def exchange(
        self, weighted_delta: list[np.ndarray], samples: int, metrics: dict[str, float], round_index: int
    ) -> list[np.ndarray]:
        """Contribute ``Σ samples·Δ`` to round ``round_index``; return the center after the round."""

    def close(self) -> None:
        """Release connections."""


class ServerRounds:
    """Rounds reduced by the driver's parameter server (:class:`~elephas.parameter.rounds.RoundState`).

    Args:
        client_config: The server's :meth:`~elephas.parameter.ParameterServer.client_config`.
        worker_id: The partition index.
        attempt_id: The Spark task attempt.
        epoch: The epoch of the stage.
        task_attempt: The task's ``taskAttemptId`` (a larger one for a partition restarts the epoch).
    """

    def __init__(
        self, client_config: dict[str, Any], worker_id: str, attempt_id: str, epoch: int, task_attempt: int
    ) -> None:
        from ..parameter.client import ParameterClient

        self._client = ParameterClient(**client_config)
        self._meta = {
            "worker_id": str(worker_id),
            "attempt_id": str(attempt_id),
            "epoch": int(epoch),
            "task_attempt": int(task_attempt),
        }

    def exchange(
        self, weighted_delta: list[np.ndarray], samples: int, metrics: dict[str, float], round_index: int
    ) -> list[np.ndarray]:
        """Push to the round and return the center it produced."""
        _, center, _ = self._client.push_and_pull(
            weighted_delta, version_seen=0, samples=int(samples), metrics=metrics, round=int(round_index), **self._meta
        )
        return center

    def close(self) -> None:
        """Close the connection to the server."""
        self._client.close()


class CollectiveRounds:
    """Rounds reduced inside the stage by an all-reduce among its tasks; the server step runs on every rank.

    Each round all-reduces ``[*Σ samples·Δ (as float64), samples]``, divides by the summed samples
    (a round without samples leaves the center as it was) and applies ``step`` to the center. The
    reducer sums the same bytes on every rank and ``step`` starts from the same state everywhere,
    so every rank holds the same center after every round.

    Args:
        reducer: An open :class:`elephas.collective.Reducer` of the stage (closed by :meth:`close`).
        step: This rank's copy of the server step (a
            :class:`~elephas.engine.server_optimizer.ServerOptimizer`; it is stepped in place).
        center: The center at the start of the epoch.

    Example:
        >>> from elephas.collective import HubReducer
        >>> from elephas.engine.server_optimizer import ServerOptimizer
        >>> rounds = CollectiveRounds(HubReducer(0, 1, ["127.0.0.1:1"], b"s" * 32), ServerOptimizer("sgd"),
        ...                           [np.zeros(2, np.float32)])
        >>> rounds.exchange([np.array([2.0, 4.0], np.float32)], 2, {}, 0)[0].tolist()
        [1.0, 2.0]
    """

    def __init__(self, reducer: Any, step: Any, center: Sequence[np.ndarray]) -> None:
        self._reducer = reducer
        self.step = step
        self.center = [np.asarray(c) for c in center]
        self.rounds = 0

    def exchange(
        self, weighted_delta: list[np.ndarray], samples: int, metrics: dict[str, float], round_index: int
    ) -> list[np.ndarray]:
        """All-reduce this rank's contribution; return the center after the round.

        Raises:
            FloatingPointError: When the round's step makes the center NaN or infinite.
        """
        arrays = [np.asarray(d, dtype=np.float64) for d in weighted_delta] + [np.array(int(samples), np.int64)]
        *total, count = self._reducer.allreduce(arrays)
        self.rounds += 1
        n = int(count)
        if n <= 0:
            return self.center
        mean = [(s / np.float64(n)).astype(c.dtype) for s, c in zip(total, self.center)]
        step = [np.asarray(s) for s in self.step(mean)]
        with np.errstate(over="ignore", invalid="ignore"):
            center = [(c + s.astype(c.dtype)).astype(c.dtype) for c, s in zip(self.center, step)]
        if not all(np.all(np.isfinite(c)) for c in center if c.dtype.kind == "f"):
            raise FloatingPointError(
                f"Expected a finite center after round {round_index + 1}, received NaN or "
                "infinity. Lower the learning rate or the server step, or clip gradients."
            )
        self.center = center
        return center

    def close(self) -> None:
        """Close the stage's reducer."""
        self._reducer.close()


def open_round_reducer(
    config: dict[str, Any],
    worker_id: str,
    attempt_id: str,
    epoch: int,
    task_attempt: int,
    center: Sequence[np.ndarray] | None = None,
) -> RoundReducer:
    """The reducer a task uses, from the plain ``config`` the driver shipped.

    Args:
        config: ``{'kind': 'server', 'client': ...}`` or ``{'kind': 'collective', 'reducer': 'ring' | 'hub',
            'secret': hex, 'step': ServerOptimizer, 'timeout': seconds}``.
        worker_id: The partition index.
        attempt_id: The Spark task attempt.
        epoch: The epoch of the stage.
        task_attempt: The task's ``taskAttemptId``.
        center: The center at the start of the epoch (needed by ``'collective'``).

    Raises:
        ValueError: For an unknown reducer kind.
    """
    kind = config.get("kind")
    if kind == "server":
        return ServerRounds(config["client"], worker_id, attempt_id, epoch, task_attempt)
    if kind == "collective":
        import copy

        from pyspark import BarrierTaskContext

        from ..collective import open_reducer

        if center is None:
            raise ValueError("Expected the epoch's start center for a 'collective' reducer, received None.")
        reducer = open_reducer(
            config.get("reducer", "ring"),
            BarrierTaskContext.get(),
            config["secret"],
            timeout=float(config.get("timeout", 300.0)),
        )
        return CollectiveRounds(reducer, copy.deepcopy(config["step"]), center)
    raise ValueError(f"Could not interpret reducer kind: {kind!r}. Expected one of ['server', 'collective'].")
