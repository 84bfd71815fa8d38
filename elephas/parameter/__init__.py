"""Parameter server for asynchronous training: one state in the driver, HTTP and socket transports.

Modules: :mod:`~elephas.parameter.codec` (wire format), :mod:`~elephas.parameter.auth` (request
MAC: Poly1305 body tag inside HMAC-SHA256, replay protection), :mod:`~elephas.parameter.state`
(center weights, lock policy, records),
:mod:`~elephas.parameter.service` (request handling shared by the transports),
:mod:`~elephas.parameter.http_server` and :mod:`~elephas.parameter.socket_server` (transports),
:mod:`~elephas.parameter.client` (worker side), :mod:`~elephas.parameter.background` (a worker's
push and pull in a helper thread) and :mod:`~elephas.parameter.server` (lifecycle).
"""

from elephas.parameter.auth import AuthenticationError, new_secret
from elephas.parameter.client import MODES, ParameterClient, ParameterServerError
from elephas.parameter.codec import COMPRESSIONS, WireFormatError
from elephas.parameter.server import HOST_ENV_VAR, ParameterServer, resolve_advertised_host
from elephas.parameter.state import ServerState, UpdateRejected, WindowRecord

__all__ = [
    "AuthenticationError",
    "COMPRESSIONS",
    "HOST_ENV_VAR",
    "MODES",
    "ParameterClient",
    "ParameterServer",
    "ParameterServerError",
    "ServerState",
    "UpdateRejected",
    "WindowRecord",
    "WireFormatError",
    "new_secret",
    "resolve_advertised_host",
]
