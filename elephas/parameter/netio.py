"""Socket helpers shared by servers and clients: binding, exact reads, scatter-gather sends,
and the frame layout of the raw TCP transport.

Socket transport frames (all integers little-endian)::

    request   "<4sBxxxIQ": magic b"ELPQ", protocol version, auth length, body length
              auth: JSON {"method", "path", X-Elephas-Timestamp, X-Elephas-Nonce,
              X-Elephas-Signature}; then the body
    response  "<4sBxHIQ": magic b"ELPR", protocol version, status, info length, body length
              info: JSON (version, error, stats); then the body (an encoded payload or empty)
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from collections.abc import Callable, Iterable

REQUEST = struct.Struct("<4sBxxxIQ")
RESPONSE = struct.Struct("<4sBxHIQ")
REQUEST_MAGIC = b"ELPQ"
RESPONSE_MAGIC = b"ELPR"
PROTOCOL_VERSION = 1
MAX_AUTH_BYTES = 16 * 1024
MAX_INFO_BYTES = 256 * 1024 * 1024


def bind_listener(host: str, port: int, backlog: int = 128,
                  purpose: str = "the parameter server") -> socket.socket:
    """A listening TCP socket with ``SO_REUSEADDR`` (``port=0``: the OS picks a free port).

    Args:
        host: Interface to bind (IPv4 or IPv6 literal, or a name).
        port: Port to bind.
        backlog: Pending connections the kernel queues.
        purpose: What listens, for the error message.

    Raises:
        OSError: If the address cannot be bound; the message names ``host:port``.
    """
    family = socket.AF_INET6 if _is_ipv6(host) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"Could not bind {purpose} to {host}:{port}: "
                                 f"{exc.strerror}. Use port=0 for a free port.") from exc
    return sock


def default_bind_host(advertised: str) -> str:
    """The interface to listen on for executors that connect to ``advertised``: that loopback
    address when it is one, else all interfaces."""
    if advertised == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(advertised)
    except ValueError:
        return "0.0.0.0"
    if address.is_loopback:
        return advertised
    return "::" if address.version == 6 else "0.0.0.0"


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


def tune(sock: socket.socket, timeout: float | None = None) -> None:
    """Disable Nagle's algorithm (small frames go out at once) and set the socket's time-out.

    Python implements ``settimeout`` by switching the socket to non-blocking mode and polling
    before every call, so a 4 MB send goes out in many partial writes with a poll and a wake-up
    between them; that made moving a payload up to twice as slow as a blocking socket. Where the
    kernel supports it (Linux, macOS) the time-out is therefore set as ``SO_RCVTIMEO`` /
    ``SO_SNDTIMEO`` on a blocking socket: a call that times out raises ``OSError`` (``EAGAIN``)
    instead of ``TimeoutError``, and each call blocks in the kernel until it is done.

    Args:
        sock: A connected TCP socket.
        timeout: Seconds a single receive or send may block (``None``: leave as it is).
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if timeout is None:
        return
    if _KERNEL_TIMEOUTS:
        seconds = max(float(timeout), 0.001)
        timeval = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    else:
        sock.settimeout(timeout)


_KERNEL_TIMEOUTS = sys.platform.startswith(("linux", "darwin"))


def recv_exactly(sock: socket.socket, view: memoryview,
                 progress: Callable[[memoryview, int], None] | None = None) -> bool:
    """Fill ``view`` from ``sock``.

    Args:
        sock: The connected socket.
        view: Where the bytes go.
        progress: Called with ``(view, bytes received so far)`` after each read (used to hash
            a body while it arrives).

    Returns:
        ``True`` when filled; ``False`` when the peer closed before sending anything.

    Raises:
        ConnectionError: If the peer closed part-way.
    """
    got = 0
    n = len(view)
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if got == 0:
                return False
            raise ConnectionError(f"Connection closed after {got} of {n} expected bytes.")
        got += k
        if progress is not None:
            progress(view, got)
    return True


def send_segments(sock: socket.socket, segments: Iterable[bytes | bytearray | memoryview]) -> int:
    """Send buffers back to back without joining them (``sendmsg`` scatter-gather).

    Returns:
        The number of bytes sent.
    """
    views = [memoryview(s).cast("B") for s in segments if len(s)]
    total = sum(len(v) for v in views)
    while views:
        sent = sock.sendmsg(views)
        while sent:
            if sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0
    return total
