"""Socket helpers shared by every TCP service of the package (the parameter server, the collective
reducers, the hyper-parameter trial channel): binding, exact reads, scatter-gather sends, socket
tuning, connection limits and deadlines, and rate-limited logging of refused peers.

Nothing here knows a wire format; each service frames its own messages on top.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable

BIND_ENV_VAR = "ELEPHAS_PARAMETER_SERVER_BIND_HOST"
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_REQUEST_TIMEOUT_S = 120.0


def bind_listener(host: str, port: int, backlog: int = 128, purpose: str = "the parameter server") -> socket.socket:
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
        raise OSError(
            exc.errno, f"Could not bind {purpose} to {host}:{port}: {exc.strerror}. Use port=0 for a free port."
        ) from exc
    return sock


def default_bind_host(advertised: str, driver_bind_address: str | None = None) -> str:
    """The interface to listen on for executors that connect to ``advertised``.

    Order: the ``ELEPHAS_PARAMETER_SERVER_BIND_HOST`` environment variable; then
    ``driver_bind_address`` (what Spark calls ``spark.driver.bindAddress``); then the advertised
    address itself when it belongs to this machine (a loopback address, an address of one of its
    interfaces, or a name that resolves to one), as Spark binds its own driver; else all
    interfaces (``0.0.0.0``, or ``::`` for an IPv6 address), for an advertised address that is
    not local (a NAT or a proxy in between).

    Args:
        advertised: The address the executors are told to connect to.
        driver_bind_address: The driver's bind address, when the cluster sets one.

    Returns:
        The host to bind.
    """
    for explicit in (os.environ.get(BIND_ENV_VAR), driver_bind_address):
        if explicit:
            return explicit
    if advertised == "localhost":
        return "127.0.0.1"
    local = _local_address(advertised)
    if local is not None:
        return local
    return "::" if _is_ipv6(advertised) else "0.0.0.0"


def _local_address(host: str) -> str | None:
    """``host`` as an address of this machine (itself, or what the name resolves to), or ``None``
    when it is not one (binding it fails)."""
    try:
        candidates = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None
        candidates = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in candidates:
        if ipaddress.ip_address(address).is_loopback:
            return address
        family = socket.AF_INET6 if _is_ipv6(address) else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((address, 0))
        except OSError:
            continue
        return address
    return None


def default_max_connections(expected_workers: int | None) -> int:
    """The connection cap for ``expected_workers`` workers: twice as many (room for a worker whose
    connection is being replaced, a driver-side client and a retry) and at least 8, or
    :data:`DEFAULT_MAX_CONNECTIONS` when the number of workers is not known."""
    if not expected_workers:
        return DEFAULT_MAX_CONNECTIONS
    return max(8, 2 * int(expected_workers))


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


def recv_exactly(
    sock: socket.socket, view: memoryview, progress: Callable[[memoryview, int], None] | None = None
) -> bool:
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


class Connection:
    """One admitted connection of a :class:`ConnectionTable`: its socket, whether it has sent an
    authenticated request yet, and the monotonic time by which what it is sending (or being sent)
    must be done.

    An untrusted connection (nothing authenticated yet) keeps the deadline it was admitted with:
    it has ``request_timeout_s`` in all to authenticate a request. A trusted one is under a
    deadline only while a request arrives or its reply leaves (:meth:`begin` / :meth:`pause`),
    never while the server handles it (a handler may wait, e.g. for a round to close) or while
    the connection is idle between requests (the socket's idle time-out covers that).
    """

    __slots__ = ("sock", "trusted", "deadline", "timeout_s")

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        self.sock = sock
        self.trusted = False
        self.timeout_s = timeout_s
        self.deadline: float | None = time.monotonic() + timeout_s

    def begin(self) -> None:
        """A request started arriving (or a reply starts leaving): arm the deadline."""
        if self.trusted:
            self.deadline = time.monotonic() + self.timeout_s

    def pause(self) -> None:
        """The request is in and is being handled (or the reply is out): no deadline."""
        if self.trusted:
            self.deadline = None

    def trust(self) -> None:
        """The connection sent an authenticated request: no longer evictable, no deadline now."""
        self.trusted = True
        self.deadline = None

    def close_now(self) -> None:
        """Shut the socket down, so that whatever its handler is blocked in returns at once."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class ConnectionTable:
    """Bounds a server's connections (and so its handler threads) and enforces request deadlines.

    At most ``limit`` connections are admitted at a time. When a new one arrives at the cap, the
    oldest connection that has not authenticated anything yet is shut down to make room, so idle
    or slow unauthenticated peers cannot lock workers out. Workers' (trusted) connections are
    never shut down to make room, and when they alone fill the cap a new connection is still
    admitted: a job with more concurrent tasks than the cap keeps running, and beyond the cap
    at most one unauthenticated connection is served at a time. A reaper thread shuts down
    connections whose deadline has passed, which bounds how long a peer that sends (or reads) a
    byte at a time can hold a request, whatever the socket's per-call time-outs.

    Args:
        limit: Connections admitted at most.
        request_timeout_s: Whole-request deadline (see :class:`Connection`).
        name: Name of the reaper thread.
        tick_s: How often the reaper looks at the deadlines.
    """

    def __init__(self, limit: int, request_timeout_s: float, name: str, tick_s: float = 0.2) -> None:
        if limit < 1:
            raise ValueError(f"Expected max_connections >= 1, received {limit}.")
        self.limit = int(limit)
        self.request_timeout_s = float(request_timeout_s)
        self.tick_s = min(tick_s, self.request_timeout_s / 4)
        self._entries: dict[Connection, None] = {}  # insertion order: oldest first
        self._cond = threading.Condition()
        self._stopping = False
        self._reaper = threading.Thread(target=self._reap, daemon=True, name=f"{name}-reaper")
        self._reaper.start()

    def admit(self, sock: socket.socket, wait_s: float = 2.0) -> Connection | None:
        """Admit ``sock``, evicting the oldest untrusted connection when at the cap.

        Returns:
            The connection's entry, or ``None`` when it is refused (the server is stopping, or
            the evicted connection's handler did not end within ``wait_s``).
        """
        deadline = time.monotonic() + wait_s
        with self._cond:
            while len(self._entries) >= self.limit and not self._stopping:
                victim = next((c for c in self._entries if not c.trusted), None)
                if victim is None:  # all workers': admit over the cap
                    break
                victim.close_now()
                victim.deadline = 0.0
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.05))
            if self._stopping:
                return None
            entry = Connection(sock, self.request_timeout_s)
            self._entries[entry] = None
            return entry

    def release(self, entry: Connection) -> None:
        """Forget a connection whose handler is done with it."""
        with self._cond:
            self._entries.pop(entry, None)
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)

    def close_all(self) -> None:
        """Shut every admitted connection down and stop the reaper (the server is stopping)."""
        with self._cond:
            self._stopping = True
            entries = list(self._entries)
            self._cond.notify_all()
        for entry in entries:
            entry.close_now()
        self._reaper.join()

    def _reap(self) -> None:
        with self._cond:
            while not self._stopping:
                self._cond.wait(self.tick_s)
                now = time.monotonic()
                for entry in self._entries:
                    if entry.deadline is not None and entry.deadline <= now:
                        entry.deadline = None
                        entry.close_now()


def refuse_connection(sock: socket.socket, reply: bytes) -> None:
    """Send ``reply`` if the socket takes it at once, then close it (a refused connection)."""
    try:
        sock.setblocking(False)
        sock.send(reply)
    except OSError:
        pass
    finally:
        sock.close()


class RateLimitedLog:
    """Logs at most one line per ``interval_s``, saying how many were left out in between.

    Refused requests come from the network, where anyone can send them by the thousand; a line
    each (let alone a traceback) would let them flood the driver's log.

    Args:
        log: The logger.
        interval_s: Shortest time between two lines.
    """

    def __init__(self, log: logging.Logger, interval_s: float = 10.0) -> None:
        self._log = log
        self.interval_s = interval_s
        self._next = 0.0
        self._skipped = 0
        self._lock = threading.Lock()

    def __call__(self, level: int, message: str, *args: object) -> None:
        """Log ``message % args`` at ``level`` unless a line went out less than ``interval_s`` ago."""
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._skipped += 1
                return
            skipped, self._skipped, self._next = self._skipped, 0, now + self.interval_s
        if skipped:
            message += f" ({skipped} similar lines left out)"
        self._log.log(level, message, *args)
