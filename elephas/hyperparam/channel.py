"""An authenticated request/reply channel of small JSON messages between the driver and slot tasks.

The driver runs a :class:`ChannelServer`; each slot task of a search opens one connection with a
:class:`ChannelClient` and sends JSON requests, each answered by one JSON reply. Nothing received is
unpickled or evaluated: payloads are parsed with :func:`json.loads` only after their tag checked out.

Connection set-up: each side first sends 16 random bytes (its nonce). Every message after that is
a frame ``length (4 bytes, big-endian) | tag (32 bytes) | payload (UTF-8 JSON)`` with::

    tag = HMAC-SHA256(secret, "elephas-trials-v1\\n{direction}\\n{server nonce}\\n{client nonce}\\n"
                              "{sequence number}\\n" || payload)

``direction`` is ``request`` or ``reply`` and the sequence number counts the frames of that
direction on the connection from 0. The secret is random per search and reaches the executors
inside the Spark job, so only the search's own tasks can ask for trials or report outcomes, a frame
cannot be replayed on another connection (other nonces) or within one (other sequence number), and
a task only runs trials that the driver sent. A frame with a wrong tag closes the connection.

What a peer without the secret can cost the driver is bounded: the first frame of a connection
(read before anything is authenticated) may declare at most :data:`FIRST_FRAME_BYTES`; the set-up
and that frame must complete within :data:`HANDSHAKE_TIMEOUT_S` in all (a peer sending a byte at a
time is cut off then); and at most ``max_connections`` connections are served at once, the oldest
one that has not authenticated a frame being closed to make room for a new one.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from elephas.utils import netio

logger = logging.getLogger(__name__)

NONCE_BYTES = 16
TAG_BYTES = 32
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
FIRST_FRAME_BYTES = 64 * 1024
"""Largest first frame of a connection (a slot's first request is a few hundred bytes)."""
HANDSHAKE_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 64
_HEADER = struct.Struct(">I")
_CONTEXT = "elephas-trials-v1"

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ChannelError(ConnectionError):
    """The peer closed the connection, sent a malformed frame or failed authentication."""


def new_secret() -> bytes:
    """A fresh random per-search secret (32 bytes)."""
    return secrets.token_bytes(32)


class _Framer:
    """Signs and checks the frames of one connection (both directions)."""

    def __init__(self, sock: socket.socket, secret: bytes, server_nonce: bytes, client_nonce: bytes, outgoing: str):
        self.sock = sock
        self._secret = secret
        self._session = f"{server_nonce.hex()}\n{client_nonce.hex()}"
        self._out = outgoing
        self._in = "reply" if outgoing == "request" else "request"
        self._sent = 0
        self._received = 0

    def _tag(self, direction: str, seq: int, payload: bytes) -> bytes:
        context = f"{_CONTEXT}\n{direction}\n{self._session}\n{seq}\n".encode()
        return hmac.digest(self._secret, context + payload, "sha256")

    def send(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message, separators=(",", ":")).encode()
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"Expected a message of at most {MAX_PAYLOAD_BYTES} bytes. Received: {len(payload)} bytes."
            )
        tag = self._tag(self._out, self._sent, payload)
        self.sock.sendall(_HEADER.pack(len(payload)) + tag + payload)
        self._sent += 1

    def receive(self, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
        (length,) = _HEADER.unpack(recv_exactly(self.sock, _HEADER.size))
        if length > max_bytes:
            raise ChannelError(f"Expected a frame of at most {max_bytes} bytes. Received: a length of {length}.")
        tag = recv_exactly(self.sock, TAG_BYTES)
        payload = recv_exactly(self.sock, length)
        if not hmac.compare_digest(tag, self._tag(self._in, self._received, payload)):
            raise ChannelError("A frame failed authentication (wrong secret, replayed or altered).")
        self._received += 1
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise ChannelError(f"Expected a JSON message. Received: {type(exc).__name__}.") from None
        if not isinstance(message, dict):
            raise ChannelError(f"Expected a JSON object. Received: {type(message).__name__}.")
        return message


class ChannelClosed(ChannelError):
    """The peer closed the connection between two frames (how a slot task says goodbye)."""


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes.

    Raises:
        ChannelClosed: The peer closed the connection before the first of them.
        ChannelError: The peer closed the connection part-way.
    """
    buffer = bytearray(n)
    try:
        if not netio.recv_exactly(sock, memoryview(buffer)):
            raise ChannelClosed("The connection was closed.")
    except ChannelError:
        raise
    except ConnectionError as exc:
        raise ChannelError(str(exc)) from None
    return bytes(buffer)


class ChannelServer:
    """Answers each authenticated request with ``handler(request)``, one thread per connection.

    Use it as a context manager (or call :meth:`stop`): stopping closes the listening socket and
    every connection and joins all threads, whether the block ends normally, by an exception or
    by ``KeyboardInterrupt``. A handler may block (a slot waiting for its next trial); whoever
    stops the server must first make blocked handlers return.

    Args:
        handler: ``handler(request) -> reply`` (JSON objects).
        secret: The per-search secret.
        bind_host: Interface to listen on.
        advertised_host: Address the executors connect to.
        max_connections: Connections served at once (about twice the slots; see the module
            docstring for what happens at the cap).
        handshake_timeout_s: Time a new connection has to complete the set-up and send its
            first authenticated frame.
    """

    def __init__(
        self,
        handler: Handler,
        secret: bytes,
        bind_host: str = "127.0.0.1",
        advertised_host: str = "127.0.0.1",
        max_connections: int = MAX_CONNECTIONS,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
    ):
        self.handler = handler
        self._secret = secret
        self._listener = netio.bind_listener(bind_host, 0, backlog=64, purpose="the hyper-parameter trial channel")
        self.address = (advertised_host, self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._table = netio.ConnectionTable(max_connections, handshake_timeout_s, name="elephas-trial-channel")
        self._log_drop = netio.RateLimitedLog(logger)
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._acceptor = threading.Thread(target=self._accept, name="elephas-trial-channel", daemon=True)
        self._acceptor.start()

    def __enter__(self) -> ChannelServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self._listener.accept()
            except OSError:  # the listener was closed by stop()
                return
            entry = self._table.admit(conn)
            if entry is None:  # every connection is an authenticated slot's
                self._log_drop(
                    logging.WARNING,
                    "trial channel: refused a connection from %s: %d connections in use",
                    peer,
                    self._table.limit,
                )
                conn.close()
                continue
            with self._lock:
                if self._stopped:
                    self._table.release(entry)
                    conn.close()
                    return
                self._connections.add(conn)
                thread = threading.Thread(
                    target=self._serve, args=(conn, peer, entry), daemon=True, name=f"elephas-trial-channel-{peer[1]}"
                )
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, peer: Any, entry: netio.Connection) -> None:
        try:
            netio.tune(conn)
            conn.settimeout(HANDSHAKE_TIMEOUT_S)  # per call; the table's deadline bounds the whole
            server_nonce = secrets.token_bytes(NONCE_BYTES)
            conn.sendall(server_nonce)
            client_nonce = recv_exactly(conn, NONCE_BYTES)
            framer = _Framer(conn, self._secret, server_nonce, client_nonce, outgoing="reply")
            request = framer.receive(FIRST_FRAME_BYTES)
            entry.trust()  # the peer holds the secret: no deadline, not evictable
            conn.settimeout(None)  # a slot may run a long trial between two requests
            while True:
                framer.send(self.handler(request))
                request = framer.receive()
        except ChannelClosed:
            pass  # the slot task is done
        except ChannelError as exc:
            if not self._stopped:
                self._log_drop(logging.WARNING, "trial channel connection from %s dropped: %s", peer, exc)
        except OSError as exc:
            if not self._stopped:
                logger.debug("trial channel connection from %s ended: %s", peer, exc)
        except Exception:  # a handler bug: drop this connection, keep serving the others
            logger.exception("trial channel handler failed for a request from %s", peer)
        finally:
            self._table.release(entry)
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def stop(self) -> None:
        """Close the listener and every connection and join the server's threads (idempotent)."""
        with self._lock:
            self._stopped = True
            connections = list(self._connections)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join()
        self._table.close_all()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()

    @property
    def threads_alive(self) -> int:
        """Threads of this server still running (0 after :meth:`stop`)."""
        with self._lock:
            threads = [self._acceptor] + self._threads
        return sum(t.is_alive() for t in threads)


class ChannelClient:
    """One connection to a :class:`ChannelServer`, used from a slot task.

    Args:
        address: ``(host, port)`` of the server.
        secret: The per-search secret.
        connect_timeout: Seconds to wait for the connection and the server's nonce.
    """

    def __init__(self, address: tuple[str, int], secret: bytes, connect_timeout: float = HANDSHAKE_TIMEOUT_S):
        self.sock = socket.create_connection(tuple(address), timeout=connect_timeout)
        try:
            netio.tune(self.sock)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            client_nonce = secrets.token_bytes(NONCE_BYTES)
            self.sock.sendall(client_nonce)
            server_nonce = recv_exactly(self.sock, NONCE_BYTES)
            self.sock.settimeout(None)  # the driver may hold a request while a trial's history runs
            self._framer = _Framer(self.sock, secret, server_nonce, client_nonce, outgoing="request")
        except BaseException:
            self.sock.close()
            raise

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` and return the server's reply."""
        self._framer.send(message)
        return self._framer.receive()

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    def __enter__(self) -> ChannelClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
