"""The frame layout of the parameter server's raw TCP transport.

Socket transport frames (all integers little-endian)::

    request   "<4sBxxxIQ": magic b"ELPQ", protocol version, auth length, body length
              auth: JSON {"method", "path", X-Elephas-Timestamp, X-Elephas-Nonce,
              X-Elephas-Signature}; then the body
    response  "<4sBxHIQ": magic b"ELPR", protocol version, status, info length, body length
              info: JSON (version, error, stats); then the body (an encoded payload or empty)

The generic socket helpers the transport's modules use as ``netio.*`` (binding, exact reads,
scatter-gather sends, connection limits) live in :mod:`elephas.utils.netio` and are imported here.
"""

from __future__ import annotations

import struct

from elephas.utils.netio import (  # noqa: F401 - used by the transport's modules as netio.<name>
    BIND_ENV_VAR,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT_S,
    Connection,
    ConnectionTable,
    RateLimitedLog,
    bind_listener,
    default_bind_host,
    default_max_connections,
    recv_exactly,
    refuse_connection,
    send_segments,
    tune,
)

REQUEST = struct.Struct("<4sBxxxIQ")
RESPONSE = struct.Struct("<4sBxHIQ")
REQUEST_MAGIC = b"ELPQ"
RESPONSE_MAGIC = b"ELPR"
PROTOCOL_VERSION = 1
MAX_AUTH_BYTES = 16 * 1024
MAX_INFO_BYTES = 256 * 1024 * 1024
