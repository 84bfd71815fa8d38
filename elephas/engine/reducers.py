"""Where a synchronous round is reduced: the small interface the in-stage epoch talks to.

A task of a synchronous epoch stage calls :meth:`RoundReducer.exchange` after every window with
its ``Σ samples·Δ``; the call returns once the round closed, with the new center. Which reducer
runs is chosen once, on the driver, by where the tasks can reach (:func:`open_round_reducer`
reads the plain config the driver shipped):

* ``'server'`` — the driver's parameter server in its synchronous-rounds policy
  (:mod:`elephas.parameter.rounds`): same codec, same authentication, same statistics. Used on
  classic sessions, where executors reach the driver.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class RoundReducer(Protocol):
    """What a task of a synchronous stage needs from the round's reducer."""

    def exchange(self, weighted_delta: list[np.ndarray], samples: int, metrics: dict[str, float],
                 round_index: int) -> list[np.ndarray]:
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

    def __init__(self, client_config: dict[str, Any], worker_id: str, attempt_id: str, epoch: int,
                 task_attempt: int) -> None:
        from ..parameter.client import ParameterClient

        self._client = ParameterClient(**client_config)
        self._meta = {"worker_id": str(worker_id), "attempt_id": str(attempt_id), "epoch": int(epoch),
                      "task_attempt": int(task_attempt)}

    def exchange(self, weighted_delta: list[np.ndarray], samples: int, metrics: dict[str, float],
                 round_index: int) -> list[np.ndarray]:
        """Push to the round and return the center it produced."""
        _, center, _ = self._client.push_and_pull(weighted_delta, version_seen=0, samples=int(samples),
                                                  metrics=metrics, round=int(round_index), **self._meta)
        return center

    def close(self) -> None:
        """Close the connection to the server."""
        self._client.close()


def open_round_reducer(config: dict[str, Any], worker_id: str, attempt_id: str, epoch: int,
                       task_attempt: int) -> RoundReducer:
    """The reducer a task uses, from the plain ``config`` the driver shipped.

    Raises:
        ValueError: For an unknown reducer kind.
    """
    kind = config.get("kind")
    if kind == "server":
        return ServerRounds(config["client"], worker_id, attempt_id, epoch, task_attempt)
    raise ValueError(f"Could not interpret reducer kind: {kind!r}. Expected one of ['server'].")
