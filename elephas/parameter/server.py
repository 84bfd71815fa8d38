"""The parameter server object the driver starts and stops around an asynchronous fit."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from elephas.parameter import codec
from elephas.parameter.auth import Signer, Verifier, coerce_secret, new_secret
from elephas.parameter.client import ParameterClient, check_mode
from elephas.parameter.http_server import HttpTransport
from elephas.parameter.service import ParameterService, default_max_body_bytes
from elephas.parameter.socket_server import SocketTransport
from elephas.parameter.state import ServerState
from elephas.utils.netio import DEFAULT_REQUEST_TIMEOUT_S, default_bind_host, default_max_connections

logger = logging.getLogger(__name__)

HOST_ENV_VAR = "ELEPHAS_PARAMETER_SERVER_HOST"


def resolve_advertised_host(host: str | None = None, driver_host: str | None = None) -> str:
    """The address executors should use to reach the server.

    Order: the ``host`` argument, then the ``ELEPHAS_PARAMETER_SERVER_HOST`` environment
    variable, then ``driver_host`` (the engine passes ``spark.driver.host``), then 127.0.0.1.
    """
    for candidate in (host, os.environ.get(HOST_ENV_VAR), driver_host):
        if candidate:
            return candidate
    return "127.0.0.1"


class ParameterServer:
    """Center weights served to asynchronous workers over HTTP or raw TCP, in the driver.

    Use it as a context manager: ``start()`` returns once the server answers ``/health``;
    leaving the block (normally, by an exception or by ``KeyboardInterrupt``) stops it, joins its
    threads and releases the port.

    Args:
        weights: Initial center weights.
        strategy: The update rule (its ``server_apply`` and ``locked`` policy are used).
        mode: ``'http'`` (Flask on werkzeug) or ``'socket'`` (raw TCP frames).
        host: Advertised host (overrides the environment variable and ``driver_host``).
        port: Port to bind; 0 (default) lets the OS choose a free one.
        driver_host: Fallback advertised host, e.g. ``spark.driver.host``.
        bind_host: Interface to bind. Default: the ``ELEPHAS_PARAMETER_SERVER_BIND_HOST``
            environment variable, then ``driver_bind_address``, then the advertised host when it
            is an address of this machine, else all interfaces
            (:func:`~elephas.utils.netio.default_bind_host`).
        driver_bind_address: The driver's bind address (``spark.driver.bindAddress``), if set.
        secret: Per-fit secret (bytes or hex); a random one by default.
        compression: Compression clients made by :meth:`client_config` use.
        max_body_bytes: Request size cap (default: model size + 25 % + 64 KiB).
        idle_timeout_s: Idle connections are closed after this long.
        replay_window_s: Accepted clock difference between executors and driver.
        client_timeout_s: Time-out written into :meth:`client_config`.
        max_records: Window records kept at most.
        expected_workers: How many workers (tasks) will connect at once, if known; sets the
            default ``max_connections``.
        max_connections: Connections served at once (each holds a thread). Default: twice
            ``expected_workers`` (at least 8), or 64 when that is not known. At the cap, the
            oldest connection that has not authenticated a request is closed to make room;
            workers' connections are never closed to make room (when they alone fill the cap, a
            new connection is still served, one unauthenticated connection at a time).
        request_timeout_s: Whole-request deadline: a request must arrive completely (and its
            reply leave) within this long, and a new connection must authenticate a request
            within it; time spent handling a request (a push waiting for its round) does not
            count.
        state: A ready server state to serve instead of a new :class:`ServerState` (e.g. the
            synchronous rounds of :class:`~elephas.parameter.rounds.RoundState`).

    Example:
        >>> with ParameterServer(weights, strategy, mode="socket") as server:
        ...     config = server.client_config()   # plain values, ship them to the tasks
        ...     ...                               # run the Spark stage
        ...     history = server.state.records()
    """

    def __init__(
        self,
        weights: Sequence[np.ndarray],
        strategy: Any,
        *,
        mode: str = "http",
        host: str | None = None,
        port: int = 0,
        driver_host: str | None = None,
        bind_host: str | None = None,
        secret: bytes | str | None = None,
        compression: str = "none",
        max_body_bytes: int | None = None,
        idle_timeout_s: float = 600.0,
        replay_window_s: float = 600.0,
        client_timeout_s: float = 60.0,
        max_records: int = 1_000_000,
        state: ServerState | None = None,
        driver_bind_address: str | None = None,
        expected_workers: int | None = None,
        max_connections: int | None = None,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        self.mode = check_mode(mode)
        self.compression = codec.check_compression(compression)
        self.host = resolve_advertised_host(host, driver_host)
        self.bind_host = bind_host or default_bind_host(self.host, driver_bind_address)
        self.requested_port = int(port)
        self.secret = coerce_secret(secret) if secret is not None else new_secret()
        self.state = state if state is not None else ServerState(weights, strategy, max_records=max_records)
        self.max_body_bytes = max_body_bytes or default_max_body_bytes(self.state.nbytes)
        self.idle_timeout_s = idle_timeout_s
        self.client_timeout_s = client_timeout_s
        self.max_connections = int(max_connections or default_max_connections(expected_workers))
        self.request_timeout_s = float(request_timeout_s)
        self._signer = Signer(self.secret)
        self.service = ParameterService(self.state, Verifier(self._signer, replay_window_s), self.max_body_bytes)
        self._transport: HttpTransport | SocketTransport | None = None
        self.port: int | None = None

    @property
    def address(self) -> str:
        """``host:port`` executors connect to (port known after :meth:`start`)."""
        return f"{self.host}:{self.port if self.port is not None else self.requested_port}"

    @property
    def running(self) -> bool:
        """Whether the server is started."""
        return self._transport is not None

    def start(self, timeout_s: float = 30.0) -> ParameterServer:
        """Bind, serve in background threads and wait until ``/health`` answers.

        Raises:
            OSError: If the port cannot be bound.
            ConnectionError: If the server does not answer at its advertised address.
        """
        if self._transport is not None:
            return self
        transport_cls = HttpTransport if self.mode == "http" else SocketTransport
        self._transport = transport_cls(
            self.service,
            self.bind_host,
            self.requested_port,
            self.idle_timeout_s,
            self.max_connections,
            self.request_timeout_s,
        )
        self.port = self._transport.port
        self._transport.start()
        try:
            with self.client(timeout=max(1.0, timeout_s / 8), retries=7, backoff_s=0.02) as c:
                c.health()
        except BaseException:
            self.stop()
            raise
        logger.info(
            "Parameter server (%s, %s) listening on %s (bound to %s).",
            self.mode,
            type(self.state.strategy).__name__,
            self.address,
            self.bind_host,
        )
        return self

    def stop(self) -> None:
        """Stop serving, close connections, join threads and release the port (idempotent)."""
        transport, self._transport = self._transport, None
        wake = getattr(self.state, "stop", None)
        if callable(wake):  # pushes waiting for a synchronous round are answered, not left hanging
            wake()
        if transport is not None:
            transport.stop()
            logger.info("Parameter server on %s stopped after %d updates.", self.address, self.state.version)

    def client_config(self) -> dict[str, Any]:
        """Plain values a task needs to build a :class:`ParameterClient` (picklable)."""
        if self.port is None:
            raise RuntimeError("Expected a started parameter server, received one not started; call start() first.")
        return {
            "host": self.host,
            "port": self.port,
            "mode": self.mode,
            "secret": self.secret.hex(),
            "compression": self.compression,
            "timeout": self.client_timeout_s,
            "max_payload_bytes": self.max_body_bytes,
        }

    def client(self, **overrides: Any) -> ParameterClient:
        """A client for this server (``overrides`` replace :meth:`client_config` values)."""
        return ParameterClient(**{**self.client_config(), **overrides})

    def __enter__(self) -> ParameterServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
