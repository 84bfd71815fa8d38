"""HTTP transport: a Flask app served by werkzeug's threaded server with HTTP/1.1 keep-alive.

Routes: ``GET /parameters[?compression=...]``, ``POST /update``, ``GET /stats`` (all signed)
and ``GET /health`` (open, reports nothing but liveness). Werkzeug's development handler closes
every connection after one response; :class:`KeepAliveRequestHandler` replaces its response
writer so a worker keeps one connection for the whole fit, and sends headers and payload with
one scatter-gather ``sendmsg`` call.

What a peer without the secret can make the server hold is bounded: connections (and their
threads) by a :class:`~elephas.utils.netio.ConnectionTable`, which also enforces the
whole-request deadline; a request head by :data:`MAX_HEAD_BYTES`; a body by
:meth:`~elephas.parameter.service.ParameterService.check_head`, which runs before a byte of it
is read.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from typing import Any

from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from elephas.parameter import netio
from elephas.parameter.auth import BodyMac
from elephas.parameter.service import ParameterService, Reply

logger = logging.getLogger(__name__)

_BODY_READ = "elephas.body_read"
_READ_BYTES = 1 << 20  # hash each MiB as it arrives
MAX_HEAD_BYTES = 16 * 1024
"""Longest request head (request line and headers) read."""
_local = threading.local()  # per connection thread: its receive buffer and its Connection entry
_BUSY = (
    b"HTTP/1.1 503 SERVICE UNAVAILABLE\r\nContent-Type: application/json\r\n"
    b"Content-Length: 55\r\nConnection: close\r\n\r\n"
    b'{"error":"too many connections; retry later","busy":1}\n'
)


def create_app(service: ParameterService) -> Flask:
    """The Flask app answering parameter server requests.

    Args:
        service: The transport-independent request handler.

    Returns:
        A Flask app (debug off).
    """
    app = Flask("elephas.parameter")
    app.debug = False

    def serve() -> Response:
        environ = request.environ
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return _response(
                service.refuse(
                    411, "malformed", "Expected a Content-Length, received a chunked body.", environ.get("REMOTE_ADDR")
                )
            )
        length = request.content_length or 0
        path = environ.get("RAW_URI") or request.full_path
        peer = environ.get("REMOTE_ADDR")
        refused = service.check_head(request.method, path, request.headers, length, peer)
        if refused is not None:
            return _response(refused)
        mac = service.body_mac(request.headers, length)
        try:
            body = _read_body(environ["wsgi.input"], length, mac)
        except (OSError, ConnectionError) as exc:
            return _response(service.refuse(400, "malformed", f"Expected {length} body bytes: {exc}", peer))
        environ[_BODY_READ] = True
        entry = getattr(_local, "entry", None)
        if entry is not None:
            entry.pause()  # handling may take long (a push waiting for its round): no deadline
        reply = service.handle(
            request.method,
            path,
            request.headers,
            body,
            mac,
            trust=entry.trust if entry is not None else None,
            peer=peer,
        )
        response = _response(reply)
        service.state.count_bytes(length, response.content_length or 0)
        return response

    app.add_url_rule("/parameters", "parameters", serve, methods=["GET"])
    app.add_url_rule("/update", "update", serve, methods=["POST"])
    app.add_url_rule("/stats", "stats", serve, methods=["GET"])
    app.add_url_rule("/health", "health", serve, methods=["GET"])
    return app


def _response(reply: Reply) -> Response:
    if reply.payload is not None:
        response = Response([reply.payload], status=reply.status, mimetype="application/octet-stream")
        response.headers["Content-Length"] = str(len(reply.payload))
        response.headers["X-Elephas-Version"] = str(reply.info.get("version", ""))
        return response
    return Response(reply.json_body(), status=reply.status, mimetype="application/json")


def _read_body(stream: Any, length: int, mac: BodyMac | None) -> memoryview:
    """Read exactly ``length`` bytes into this thread's reusable buffer, hashing as they come."""
    buffer = getattr(_local, "buffer", None)
    if buffer is None or len(buffer) < length:
        buffer = _local.buffer = bytearray(length)
    view = memoryview(buffer)[:length]
    got = 0
    while got < length:
        n = stream.readinto(view[got : got + _READ_BYTES])
        if not n:
            raise ConnectionError(f"connection closed after {got} bytes")
        got += n
        if mac is not None:
            mac.update(view, got)
    return view


class KeepAliveRequestHandler(WSGIRequestHandler):
    """Werkzeug's request handler with persistent connections and zero-copy responses."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        netio.tune(self.connection, self.timeout)
        self.server.register(self)
        self._rfile = self.rfile

    def handle_one_request(self) -> None:
        """Wait for the next request (idle time-out), then read its head under the request
        deadline, at most :data:`MAX_HEAD_BYTES` of it."""
        try:
            first = self._rfile.peek(1)
        except (OSError, ValueError):
            first = b""
        if not first:
            self.close_connection = True
            return
        entry = getattr(_local, "entry", None)
        if entry is not None:
            entry.begin()
        self.rfile = _LimitedHead(self._rfile, MAX_HEAD_BYTES)
        try:
            super().handle_one_request()
        except http.client.LineTooLong:  # the request line alone is over the limit
            self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
            self.send_error(414, f"Expected a request head of at most {MAX_HEAD_BYTES} bytes")
        finally:
            self.rfile = self._rfile

    def parse_request(self) -> bool:
        """Parse the request line and headers (``http.server`` parses headers with the ``email``
        package, which took a third of werkzeug's time per request)."""
        try:
            return self._parse_head()
        finally:
            self.rfile = self._rfile  # the body is read from the socket's own reader

    def _parse_head(self) -> bool:
        self.command, self.request_version, self.close_connection = None, "HTTP/1.1", True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(400, "Expected a request line 'METHOD target HTTP/1.x'")
            return False
        self.command, self.path, self.request_version = words
        headers = http.client.HTTPMessage()
        while True:
            try:
                line = self.rfile.readline(65537)  # the head's total is limited by _LimitedHead
            except http.client.LineTooLong:
                self.send_error(431, f"Expected a request head of at most {MAX_HEAD_BYTES} bytes")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = str(line, "iso-8859-1").partition(":")
            if not sep or not name or name != name.strip() or len(headers) >= 100:
                self.send_error(400, "Expected header lines 'Name: value'")
                return False
            headers[name] = value.strip()
        self.headers = headers
        connection = headers.get("Connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        if headers.get("Expect", "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors of the request head (too long, malformed): answered, counted, the connection closed."""
        self.server.refused(code, message or "malformed request head", self.client_address)
        self.close_connection = True
        try:
            super().send_error(code, message, explain)
        except OSError:
            pass

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.unregister(self)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug("Parameter server: %s %s", self.requestline, code)

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        logger.debug("Parameter server: " + format, *args)

    def run_wsgi(self) -> None:
        try:
            environ = self.make_environ()
        except Exception:  # a request line werkzeug cannot make sense of
            self.send_error(400, "Expected a valid request target")
            return
        self.environ = environ
        started: list[Any] = []

        def start_response(status: str, headers: list, exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return _no_write

        try:
            result = self.server.app(environ, start_response)
            try:
                chunks = list(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:
            logger.exception("Parameter server: unhandled error in the WSGI app")
            started[:] = ["500 INTERNAL SERVER ERROR", [("Content-Type", "application/json")]]
            chunks = [b'{"error":"internal server error"}']
        status, headers = started
        declared = environ.get("CONTENT_LENGTH") or "0"
        body_done = environ.get(_BODY_READ) or declared == "0"  # else unread bytes: close
        keep_alive = bool(body_done) and not self.close_connection
        lines = [f"{self.protocol_version} {status}\r\n"]
        for key, value in headers:
            if key.lower() not in ("content-length", "connection"):
                lines.append(f"{key}: {value}\r\n")
        lines.append(f"Content-Length: {sum(len(c) for c in chunks)}\r\n")
        lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        self.close_connection = not keep_alive
        entry = getattr(_local, "entry", None)
        if entry is not None:
            entry.begin()
        netio.send_segments(self.connection, ["".join(lines).encode("latin-1"), *chunks])
        if entry is not None:
            entry.pause()
        self.log_request(status.split(" ", 1)[0])


def _no_write(data: bytes) -> None:
    raise RuntimeError("Expected the app to return its body, received a write() call.")


class _LimitedHead:
    """The socket's reader while a request head is read: ``readline`` fails once the head is
    longer than ``limit`` bytes (``http.server`` would read 100 header lines of 64 KiB each)."""

    def __init__(self, rfile: Any, limit: int) -> None:
        self._rfile = rfile
        self._left = limit

    def readline(self, size: int = -1) -> bytes:
        line = self._rfile.readline(self._left + 1 if size < 0 else min(size, self._left + 1))
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong(f"request head over {MAX_HEAD_BYTES} bytes")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rfile, name)


class _Server(BaseWSGIServer):
    """Type of the werkzeug server with the connection registry attached."""

    register: Any
    unregister: Any
    refused: Any


def _handle_error(request: Any, client_address: Any) -> None:
    """An error escaping a connection's handler: one debug line, not socketserver's traceback on
    stderr."""
    logger.debug(
        "Parameter server: connection from %s ended with an error",
        client_address,
        exc_info=logger.isEnabledFor(logging.DEBUG),
    )


class HttpTransport:
    """Serves a :class:`ParameterService` over HTTP/1.1.

    Args:
        service: Answers the requests.
        host: Interface to bind.
        port: Port to bind (0: OS-assigned).
        idle_timeout_s: An idle keep-alive connection is closed after this long.
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
        listener = netio.bind_listener(host, port)
        try:
            handler = type("Handler", (KeepAliveRequestHandler,), {"timeout": idle_timeout_s})
            self._server = make_server(
                host,
                listener.getsockname()[1],
                create_app(service),
                threaded=True,
                request_handler=handler,
                fd=listener.fileno(),
            )
        finally:
            listener.close()  # werkzeug serves a duplicate of the descriptor
        self.port: int = self._server.server_address[1]
        self._table = netio.ConnectionTable(max_connections, request_timeout_s, name=f"elephas-ps-http-{self.port}")
        self._handlers: dict[KeepAliveRequestHandler, threading.Thread] = {}
        self._connections: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._server.register = self._register
        self._server.unregister = self._unregister
        self._server.refused = lambda status, message, peer: service.refuse(status, "malformed", message, peer)
        self._server.handle_error = _handle_error
        # werkzeug runs each connection in a daemon thread that ``server_close`` does not join;
        # the threads are started here instead, so that ``stop`` can join every one of them.
        self._server.process_request = self._process_request
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            daemon=True,
            name=f"elephas-ps-http-{self.port}",
        )

    def _register(self, handler: KeepAliveRequestHandler) -> None:
        with self._lock:
            if self._stopping:
                _shutdown(handler)
            self._handlers[handler] = threading.current_thread()

    def _unregister(self, handler: KeepAliveRequestHandler) -> None:
        with self._lock:
            self._handlers.pop(handler, None)

    def _process_request(self, request: Any, client_address: Any) -> None:
        entry = self._table.admit(request)
        if entry is None:
            self.service.refuse(
                503,
                "busy",
                f"Expected at most {self._table.limit} connections, all in use by workers; retry later.",
                client_address,
            )
            netio.refuse_connection(request, _BUSY)
            return
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address, entry),
            daemon=True,
            name=f"elephas-ps-http-{self.port}-conn",
        )
        with self._lock:
            self._connections = {t for t in self._connections if t.is_alive()}
            self._connections.add(thread)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any, entry: netio.Connection) -> None:
        _local.entry = entry
        try:
            self._server.process_request_thread(request, client_address)
        finally:
            _local.entry = None
            self._table.release(entry)

    def start(self) -> None:
        """Start serving in a background thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, close keep-alive connections and join all threads (the serving thread
        and every connection's thread), waiting at most ``timeout`` seconds in all."""
        with self._lock:
            self._stopping = True
            handlers = list(self._handlers)
        if not self._thread.is_alive():
            self._table.close_all()
            self._server.server_close()
            return
        for handler in handlers:
            _shutdown(handler)
        deadline = time.monotonic() + timeout
        self._server.shutdown()
        self._thread.join(timeout)
        with self._lock:  # no connection is accepted any more: shut down late registrants too
            handlers = list(self._handlers)
            connections = list(self._connections)
        for handler in handlers:
            _shutdown(handler)
        self._table.close_all()
        for thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive() or any(t.is_alive() for t in connections):
            logger.warning("Parameter server: HTTP threads still running after %.0f s.", timeout)


def _shutdown(handler: KeepAliveRequestHandler) -> None:
    try:
        handler.connection.shutdown(2)
    except OSError:
        pass
