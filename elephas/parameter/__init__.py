"""Parameter server for asynchronous training: one state in the driver, HTTP and socket transports.

Modules: :mod:`~elephas.parameter.codec` (wire format), :mod:`~elephas.parameter.auth` (request
MAC: Poly1305 body tag inside HMAC-SHA256, replay protection), :mod:`~elephas.parameter.state`
(center weights, lock policy, records),
:mod:`~elephas.parameter.service` (request handling shared by the transports),
:mod:`~elephas.parameter.http_server` and :mod:`~elephas.parameter.socket_server` (transports),
:mod:`~elephas.parameter.client` (worker side), :mod:`~elephas.parameter.background` (a worker's
push and pull in a helper thread) and :mod:`~elephas.parameter.server` (lifecycle).
"""

from elephas._lazy import lazy_exports

# Imported on first use, so that a worker importing only the client or the wire helpers does not
# load the server side (Flask, werkzeug).
_EXPORTS = {
    "AuthenticationError": "elephas.parameter.auth",
    "new_secret": "elephas.parameter.auth",
    "MODES": "elephas.parameter.client",
    "ParameterClient": "elephas.parameter.client",
    "ParameterServerError": "elephas.parameter.client",
    "COMPRESSIONS": "elephas.parameter.codec",
    "WireFormatError": "elephas.parameter.codec",
    "HOST_ENV_VAR": "elephas.parameter.server",
    "ParameterServer": "elephas.parameter.server",
    "resolve_advertised_host": "elephas.parameter.server",
    "ServerState": "elephas.parameter.state",
    "UpdateRejected": "elephas.parameter.state",
    "WindowRecord": "elephas.parameter.state",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
