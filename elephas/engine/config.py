"""Typed settings of the engine: one frozen dataclass per concern, one place for each default.

:class:`EngineOptions` holds what ``SparkModel(**options)`` accepts besides the mode, the window and
the server step; :class:`ServerSettings` is what the parameter server of one ``fit`` is started
with (the options plus what the session says about the driver's address). Both validate their
values when built, so a bad value fails in the constructor of the face, before any job, and both
round-trip through ``get_config()`` / ``from_config()`` as plain JSON values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..parameter.client import check_mode
from ..parameter.codec import check_compression
from ..utils.checks import check_int, check_positive_int
from .resources import check_resources

REDUCERS = ("server", "ring", "hub")
"""Where synchronous rounds can be reduced: the driver's parameter server, or an all-reduce among the tasks."""


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False. Received: {name}={value!r}.")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Could not interpret {name}: {value!r}. Expected one of {list(choices)}.")
    return value


def check_port(value: Any) -> int:
    """``value`` as an int in [0, 65535], else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
        raise ValueError(f"port must be an int in [0, 65535]. Received: port={value!r}.")
    return value


def _check_timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"timeout must be a number of seconds > 0. Received: timeout={value!r}.")
    return float(value)


@dataclass(frozen=True)
class EngineOptions:
    """The engine options of a ``SparkModel`` (every default lives here).

    Attributes:
        seed: Seed of the per-epoch shuffles and window plans.
        worker_threads: Intra-op threads of every task's Keras backend (``None``: the task's cores).
        parameter_server_host: Address the parameter server binds and advertises (``None``: the
            driver's ``spark.driver.host``).
        compression: Wire compression of weights and updates: 'none', 'fp16' or 'zlib'.
        timeout: Seconds one parameter-server call may take.
        background_push: Asynchronous modes: push each window's update, and pull the center after
            it, in a helper thread while the next window trains.
        stage_blocks: Write each partition's rows once to the executor's local directory and map
            them in every round or epoch instead of reading Spark's cache.
        resources: Stage-level resources of every training, prediction and evaluation task, e.g.
            ``{"gpu": 1, "cpus": 4}`` (see :mod:`.resources`).
        reducer: Where a synchronous round is reduced: 'server' (the driver's parameter server,
            the default on classic sessions), 'ring' or 'hub' (an all-reduce among the stage's
            tasks, :mod:`elephas.collective`; Spark Connect sessions always use 'ring'). ``None``:
            the session's default.

    Example:
        >>> EngineOptions(compression="fp16").get_config()["compression"]
        'fp16'
    """

    seed: int = 0
    worker_threads: int | None = None
    parameter_server_host: str | None = None
    compression: str = "none"
    timeout: float = 60.0
    background_push: bool = False
    stage_blocks: bool = True
    resources: dict[str, Any] | None = field(default=None, compare=True)
    reducer: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", 0 if self.seed is None else check_int("seed", self.seed, minimum=None))
        if self.worker_threads is not None:
            object.__setattr__(self, "worker_threads", check_positive_int("worker_threads", self.worker_threads))
        host = self.parameter_server_host
        if host is not None and not isinstance(host, str):
            raise ValueError(f"parameter_server_host must be a host name or None. Received: {host!r}.")
        check_compression(self.compression)
        object.__setattr__(self, "timeout", _check_timeout(self.timeout))
        _check_bool("background_push", self.background_push)
        _check_bool("stage_blocks", self.stage_blocks)
        object.__setattr__(self, "resources", check_resources(self.resources))
        if self.reducer is not None:
            _check_choice("reducer", self.reducer, REDUCERS)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, as ``SparkModel`` accepts them."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def get_config(self) -> dict[str, Any]:
        """The options as a JSON-serialisable dict (``from_config`` inverts it).

        ``reducer`` appears only when set (a configuration without it means the session's default).
        """
        config = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if config["reducer"] is None:
            del config["reducer"]
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EngineOptions:
        """Build from :meth:`get_config` output (unknown keys raise a ``TypeError``)."""
        return cls(**config)

    def server_settings(self, transport: str = "http", port: int = 0, session_conf: Any = None) -> ServerSettings:
        """The parameter-server settings of one ``fit``.

        Args:
            transport: 'http' or 'socket'.
            port: Port to bind (0: any free port).
            session_conf: A ``SparkConf`` whose ``spark.driver.host`` / ``spark.driver.bindAddress``
                tell where the server is reachable (``None`` on a Spark Connect session).
        """

        def conf(key: str) -> str | None:
            return None if session_conf is None else session_conf.get(key, None)

        return ServerSettings(
            transport=transport,
            port=port,
            host=self.parameter_server_host,
            driver_host=conf("spark.driver.host"),
            driver_bind_address=conf("spark.driver.bindAddress"),
            compression=self.compression,
            timeout=self.timeout,
            background_push=self.background_push,
        )


@dataclass(frozen=True)
class ServerSettings:
    """Where and how the parameter server of one ``fit`` runs.

    Attributes:
        transport: 'http' or 'socket'.
        port: Port to bind (0: any free port).
        host: Address to bind and advertise (``None``: ``driver_host``, else a local address).
        driver_host: The session's ``spark.driver.host``.
        driver_bind_address: The session's ``spark.driver.bindAddress``.
        compression: 'none', 'fp16' or 'zlib'.
        timeout: Seconds one server call may take.
        background_push: Asynchronous workers push and pull in a helper thread.
    """

    transport: str = "http"
    port: int = 0
    host: str | None = None
    driver_host: str | None = None
    driver_bind_address: str | None = None
    compression: str = "none"
    timeout: float = 60.0
    background_push: bool = False

    def __post_init__(self) -> None:
        check_mode(self.transport)
        check_port(self.port)
        check_compression(self.compression)
        object.__setattr__(self, "timeout", _check_timeout(self.timeout))
        _check_bool("background_push", self.background_push)

    def server_args(self, timeout: float | None = None) -> dict[str, Any]:
        """Keyword arguments of :class:`elephas.parameter.server.ParameterServer` for these settings.

        Args:
            timeout: The clients' per-call timeout (default: :attr:`timeout`).
        """
        return {
            "mode": self.transport,
            "host": self.host,
            "port": self.port,
            "driver_host": self.driver_host,
            "compression": self.compression,
            "client_timeout_s": self.timeout if timeout is None else float(timeout),
            "driver_bind_address": self.driver_bind_address,
        }
