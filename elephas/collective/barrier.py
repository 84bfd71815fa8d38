"""Opening a reducer inside a Spark barrier stage: bind, exchange addresses once, connect."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from typing import Any

from elephas.collective.reducers import DEFAULT_TIMEOUT_S, Reducer, get
from elephas.utils.netio import bind_listener, default_bind_host

logger = logging.getLogger(__name__)

HOST_ENV_VAR = "ELEPHAS_COLLECTIVE_HOST"
"""Overrides the address a task advertises to the other tasks (e.g. a specific interface)."""


def open_reducer(
    kind: str, barrier_context: Any, secret: bytes | str, *, host: str | None = None, timeout: float = DEFAULT_TIMEOUT_S
) -> Reducer:
    """Open a reducer among the tasks of the current barrier stage.

    Binds a listener on an OS-assigned port of this executor's address, exchanges every rank's
    ``host:port`` and a random per-attempt nonce with ONE ``allGather`` call (about a second:
    call this once per stage, never per round), connects, and returns the reducer. Every task of
    the stage must call it, with the same ``kind`` and ``secret``.

    Args:
        kind: ``'hub'`` or ``'ring'``.
        barrier_context: The task's ``pyspark.BarrierTaskContext`` (``BarrierTaskContext.get()``).
        secret: The stage's secret, shipped to the tasks with the job (bytes or hex).
        host: The address other tasks reach this one at. Default: the ``ELEPHAS_COLLECTIVE_HOST``
            environment variable, else the executor's host as Spark lists it in the barrier
            context's task infos.
        timeout: Seconds any single connect, send or receive may block.

    Returns:
        The open reducer (use it as a context manager, so that it is closed when the task ends).

    Example:
        >>> def train(rows):  # doctest: +SKIP
        ...     context = BarrierTaskContext.get()
        ...     with open_reducer("ring", context, secret_hex) as reducer:
        ...         total, samples = reducer.allreduce([delta, np.array(n, dtype=np.int64)])
        ...     yield total
    """
    cls = get(kind)
    rank = barrier_context.partitionId()
    infos = barrier_context.getTaskInfos()
    world = len(infos)
    if host is None:
        host = os.environ.get(HOST_ENV_VAR) or infos[rank].address.rpartition(":")[0].strip("[]")
    listener = bind_listener(default_bind_host(host), 0, purpose="the in-stage reducer")
    try:
        port = listener.getsockname()[1]
        advertised = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        message = json.dumps({"address": advertised, "nonce": secrets.token_hex(16)})
        gathered = [json.loads(m) for m in barrier_context.allGather(message)]
        if len(gathered) != world:
            raise RuntimeError(f"Expected {world} addresses from the barrier's allGather, received {len(gathered)}.")
        addresses = [str(m["address"]) for m in gathered]
        session = hashlib.sha256("".join(str(m["nonce"]) for m in gathered).encode()).hexdigest()[:32]
        logger.debug("Rank %d of %d opens a %s reducer; addresses %s", rank, world, kind, addresses)
    except BaseException:
        listener.close()
        raise
    return cls(
        rank, world, addresses, secret, listener=listener if world > 1 else None, session=session, timeout=timeout
    )
