"""Raw TCP transport: one persistent connection per worker, length-prefixed frames.

An accept thread hands each connection to its own handler thread; a handler ends as soon as its
peer closes (or stays silent past the idle time-out). Connections, and so handler threads, are
capped by a :class:`~elephas.utils.netio.ConnectionTable`, which also enforces the
whole-request deadline. A body is read only after its head passed
:meth:`~elephas.parameter.service.ParameterService.check_head`, into a buffer grown to the
body's length, so a peer without the secret costs at most a small, bounded buffer. Frames are
described in :mod:`elephas.parameter.netio`.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading

from elephas.parameter import netio
from elephas.parameter.service import ParameterService, Reply

logger = logging.getLogger(__name__)


class SocketTransport:
    """Serves a :class:`ParameterService` over raw TCP.

    Args:
        service: Answers the requests.
        host: Interface to bind.
        port: Port to bind (0: OS-assigned).
        idle_timeout_s: A connection silent this long between requests is closed.
        max_connections: Connections (and handler threads) at most; see
            :class:`~elephas.utils.netio.ConnectionTable`.
        request_timeout_s: Whole-request deadline (see :class:`~elephas.utils.netio.Connection`).
    """

    def __init__(
        self,
        service: ParameterService,
        host: str,
        port: int = 0,
        idle_timeout_s: float = 600.0,
        max_connections: int = netio.DEFAULT_MAX_CONNECTIONS,
        request_timeout_s: float = netio.DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        self.service = service
        self.idle_timeout_s = idle_timeout_s
        self._listener = netio.bind_listener(host, port)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._table = netio.ConnectionTable(max_connections, request_timeout_s, name=f"elephas-ps-socket-{self.port}")
        self._threads: list[threading.Thread] = []  # every handler thread not yet joined
        self._lock = threading.Lock()
        self._stopping = False
        self._accept_thread = threading.Thread(
            target=self._accept_loop, daemon=True, name=f"elephas-ps-socket-accept-{self.port}"
        )

    def start(self) -> None:
        """Start accepting connections."""
        self._accept_thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every connection and join all threads."""
        with self._lock:
            self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._accept_thread.is_alive():
            self._accept_thread.join(timeout)
        self._table.close_all()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                events = selector.select()
                if self._stopping or any(key.fileobj is self._wake_r for key, _ in events):
                    return
                try:
                    conn, peer = self._listener.accept()
                except OSError:
                    continue
                entry = self._table.admit(conn)
                if entry is None:
                    reply = self.service.refuse(
                        503,
                        "busy",
                        f"Expected at most {self._table.limit} connections, all in use by workers; retry later.",
                        peer,
                    )
                    netio.refuse_connection(conn, _frame(reply))
                    continue
                with self._lock:
                    if self._stopping:
                        self._table.release(entry)
                        conn.close()
                        return
                    thread = threading.Thread(
                        target=self._serve,
                        args=(conn, peer, entry),
                        daemon=True,
                        name=f"elephas-ps-socket-conn-{peer[1]}",
                    )
                    self._threads = [t for t in self._threads if t.is_alive()]
                    self._threads.append(thread)
                thread.start()

    def _serve(self, conn: socket.socket, peer: tuple, entry: netio.Connection) -> None:
        try:
            netio.tune(conn, self.idle_timeout_s)
            buffer = bytearray()
            prefix = bytearray(netio.REQUEST.size)
            while self._handle_one(conn, entry, peer, prefix, buffer):
                pass
        except (OSError, ConnectionError) as exc:
            logger.debug("Parameter server: connection from %s ended: %s", peer, exc)
        except Exception:
            logger.exception("Parameter server: error on connection from %s", peer)
        finally:
            self._table.release(entry)
            conn.close()

    def _handle_one(
        self, conn: socket.socket, entry: netio.Connection, peer: tuple, prefix: bytearray, buffer: bytearray
    ) -> bool:
        """Read one request and answer it; ``False`` ends the connection."""
        view = memoryview(prefix)
        got = conn.recv_into(view)  # waits for the next request up to the idle time-out
        if not got:
            return False
        entry.begin()  # from the first byte on, the whole request is under the deadline
        if got < len(view) and not netio.recv_exactly(conn, view[got:]):
            return False
        magic, version, auth_len, body_len = netio.REQUEST.unpack(prefix)
        if magic != netio.REQUEST_MAGIC or version != netio.PROTOCOL_VERSION:
            self._send(
                conn,
                self.service.refuse(
                    400,
                    "malformed",
                    f"Expected a frame starting with {netio.REQUEST_MAGIC!r} version "
                    f"{netio.PROTOCOL_VERSION}, received {bytes(magic)!r:.40} version "
                    f"{version}.",
                    peer,
                ),
            )
            return False
        if auth_len > netio.MAX_AUTH_BYTES:
            self._send(
                conn,
                self.service.refuse(
                    400,
                    "malformed",
                    f"Expected an auth block of at most {netio.MAX_AUTH_BYTES} bytes, received {auth_len}.",
                    peer,
                ),
            )
            return False
        auth_raw = bytearray(auth_len)
        if auth_len and not netio.recv_exactly(conn, memoryview(auth_raw)):
            return False
        auth = _parse_auth(auth_raw)
        if auth is None:
            self._send(
                conn,
                self.service.refuse(
                    400,
                    "malformed",
                    "Expected a JSON auth object with string fields 'method' and 'path', received something else.",
                    peer,
                ),
            )
            return False
        method, path, headers = auth
        refused = self.service.check_head(method, path, headers, body_len, peer)
        if refused is not None:  # the body is not read: the connection ends after the answer
            self._send(conn, refused)
            return False
        if len(buffer) < body_len:  # at most 64 KiB before a head signature checked out
            buffer.extend(bytes(body_len - len(buffer)))
        body = memoryview(buffer)[:body_len]
        mac = self.service.body_mac(headers, body_len)
        if body_len and not netio.recv_exactly(conn, body, mac.update if mac is not None else None):
            raise ConnectionError("Connection closed before the request body.")
        entry.pause()  # handling may take long (a push waiting for its round): no deadline
        reply = self.service.handle(method, path, headers, body, mac, trust=entry.trust, peer=peer)
        entry.begin()
        sent = self._send(conn, reply)
        entry.pause()
        self.service.state.count_bytes(netio.REQUEST.size + auth_len + body_len, sent)
        return True

    @staticmethod
    def _send(conn: socket.socket, reply: Reply) -> int:
        head, payload = _frame_parts(reply)
        return netio.send_segments(conn, [head, payload])


def _parse_auth(raw: bytearray) -> tuple[str, str, dict[str, str]] | None:
    """``(method, path, string headers)`` of a frame's auth block, or ``None`` if malformed."""
    if not raw:
        return "", "", {}
    try:
        auth = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(auth, dict):
        return None
    method, path = auth.get("method", ""), auth.get("path", "")
    if not isinstance(method, str) or not isinstance(path, str):
        return None
    return method, path, {k: v for k, v in auth.items() if isinstance(v, str)}


def _frame_parts(reply: Reply) -> tuple[bytes, bytes | bytearray | memoryview]:
    info = json.dumps(reply.info, separators=(",", ":")).encode()
    payload = reply.payload if reply.payload is not None else b""
    head = netio.RESPONSE.pack(netio.RESPONSE_MAGIC, netio.PROTOCOL_VERSION, reply.status, len(info), len(payload))
    return head + info, payload


def _frame(reply: Reply) -> bytes:
    """A reply without payload as one response frame."""
    head, payload = _frame_parts(reply)
    return head + bytes(payload)
