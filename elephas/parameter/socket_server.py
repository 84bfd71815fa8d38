"""Raw TCP transport: one persistent connection per worker, length-prefixed frames.

An accept thread hands each connection to its own handler thread; a handler ends as soon as its
peer closes (or stays silent past the idle time-out), so threads are bounded by live
connections. Frames are described in :mod:`elephas.parameter.netio`.
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
        idle_timeout_s: A connection silent this long (or stuck mid-frame) is closed.
    """

    def __init__(self, service: ParameterService, host: str, port: int = 0,
                 idle_timeout_s: float = 600.0) -> None:
        self.service = service
        self.idle_timeout_s = idle_timeout_s
        self._listener = netio.bind_listener(host, port)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._threads: list[threading.Thread] = []  # every handler thread not yet joined
        self._lock = threading.Lock()
        self._stopping = False
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name=f"elephas-ps-socket-accept-{self.port}")

    def start(self) -> None:
        """Start accepting connections."""
        self._accept_thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every connection and join all threads."""
        with self._lock:
            self._stopping = True
            connections = list(self._connections)
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._accept_thread.is_alive():
            self._accept_thread.join(timeout)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
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
                with self._lock:
                    if self._stopping:
                        conn.close()
                        return
                    thread = threading.Thread(target=self._serve, args=(conn, peer), daemon=True,
                                              name=f"elephas-ps-socket-conn-{peer[1]}")
                    self._connections[conn] = thread
                    self._threads = [t for t in self._threads if t.is_alive()]
                    self._threads.append(thread)
                thread.start()

    def _serve(self, conn: socket.socket, peer: tuple) -> None:
        try:
            netio.tune(conn, self.idle_timeout_s)
            buffer = bytearray()
            prefix = bytearray(netio.REQUEST.size)
            while self._handle_one(conn, prefix, buffer):
                pass
        except (OSError, ConnectionError) as exc:
            logger.debug("Parameter server: connection from %s ended: %s", peer, exc)
        except Exception:
            logger.exception("Parameter server: error on connection from %s", peer)
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            conn.close()

    def _handle_one(self, conn: socket.socket, prefix: bytearray, buffer: bytearray) -> bool:
        """Read one request and answer it; ``False`` ends the connection."""
        if not netio.recv_exactly(conn, memoryview(prefix)):
            return False
        magic, version, auth_len, body_len = netio.REQUEST.unpack(prefix)
        if magic != netio.REQUEST_MAGIC or version != netio.PROTOCOL_VERSION:
            self.service.state.count_refused("malformed")
            self._send(conn, Reply(400, {"error": f"Expected a frame starting with "
                                                  f"{netio.REQUEST_MAGIC!r} version "
                                                  f"{netio.PROTOCOL_VERSION}, received "
                                                  f"{bytes(magic)!r} version {version}."}))
            return False
        if auth_len > netio.MAX_AUTH_BYTES:
            self.service.state.count_refused("malformed")
            self._send(conn, Reply(400, {"error": f"Expected an auth block of at most "
                                                  f"{netio.MAX_AUTH_BYTES} bytes, received "
                                                  f"{auth_len}."}))
            return False
        too_large = self.service.check_length(body_len)
        if too_large is not None:
            self._send(conn, too_large)
            return False
        auth_raw = bytearray(auth_len)
        if not netio.recv_exactly(conn, memoryview(auth_raw)) and auth_len:
            return False
        try:
            auth = json.loads(auth_raw.decode("utf-8")) if auth_len else {}
            if not isinstance(auth, dict):
                raise ValueError("not an object")
            method, path = str(auth.get("method", "")), str(auth.get("path", ""))
            headers = {k: v for k, v in auth.items() if isinstance(v, str)}
        except (UnicodeDecodeError, ValueError) as exc:
            auth, headers, error = None, {}, exc
        if len(buffer) < body_len:
            buffer.extend(bytes(body_len - len(buffer)))
        body = memoryview(buffer)[:body_len]
        mac = self.service.body_mac(headers, body_len) if auth is not None else None
        if body_len and not netio.recv_exactly(conn, body, mac.update if mac is not None else None):
            raise ConnectionError("Connection closed before the request body.")
        if auth is None:
            self.service.state.count_refused("malformed")
            self._send(conn, Reply(400, {"error": f"Expected a JSON auth object, received "
                                                  f"undecodable bytes ({error})."}))
            return True
        reply = self.service.handle(method, path, headers, body, mac)
        sent = self._send(conn, reply)
        self.service.state.count_bytes(netio.REQUEST.size + auth_len + body_len, sent)
        return True

    @staticmethod
    def _send(conn: socket.socket, reply: Reply) -> int:
        info = json.dumps(reply.info, separators=(",", ":")).encode()
        payload = reply.payload if reply.payload is not None else b""
        head = netio.RESPONSE.pack(netio.RESPONSE_MAGIC, netio.PROTOCOL_VERSION, reply.status,
                                   len(info), len(payload))
        return netio.send_segments(conn, [head, info, payload])
