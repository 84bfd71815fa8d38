"""Worker-side client of the parameter server (HTTP or raw socket).

Built from plain values only (host, port, mode, secret, compression, time-out), so the function
shipped to executors can construct it there. Every call has a socket time-out and bounded
retries with exponential backoff; a retried push resends the same signed request, which the
server recognises and answers with its first response instead of applying it twice.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from elephas.parameter import codec, netio
from elephas.parameter.auth import (
    HEADER_HEAD_SIGNATURE,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SIGNATURE_TRAILER,
    TRAILER_BYTES,
    Buffer,
    Signer,
)
from elephas.parameter.buffers import BufferPool

logger = logging.getLogger(__name__)

MODES = ("http", "socket")
_RETRYABLE = (OSError, ConnectionError)


def _segments(body: Buffer | list[Buffer]) -> list[memoryview]:
    parts = body if isinstance(body, list) else [body]
    return [memoryview(p).cast("B") for p in parts]


class SignedBody:
    """A request body sent with its signature after it (``X-Elephas-Signature: trailer``).

    Each chunk is hashed just before it is sent, so the client's hashing overlaps the transfer
    and the server's hashing of what already arrived, where signing first would hash the whole
    body before the first byte leaves. The timestamp and nonce are fixed at creation, so a
    retry resends the same signed request (the server answers it with its first response).

    Args:
        signer: The client's signer.
        method: The request method.
        path: The request path with query string.
        segments: The body, as buffers sent back to back.
    """

    CHUNK_BYTES = 1 << 19

    def __init__(self, signer: Signer, method: str, path: str, segments: list[memoryview]) -> None:
        self.signer, self.method, self.path, self.segments = signer, method, path, segments
        stamp = signer.stamp()
        self.timestamp, self.nonce = stamp[HEADER_TIMESTAMP], stamp[HEADER_NONCE]
        self.body_length = sum(len(v) for v in segments)
        self.length = self.body_length + TRAILER_BYTES
        head = signer.head_tag(method, path, self.timestamp, self.nonce, self.length)
        self.headers = {**stamp, HEADER_SIGNATURE: SIGNATURE_TRAILER, HEADER_HEAD_SIGNATURE: head}

    def send(self, sock: socket.socket, head: Buffer) -> None:
        """Send ``head``, then the body chunk by chunk while hashing it, then the signature."""
        mac = self.signer.body_mac(self.timestamp, self.nonce, self.body_length)
        pending: list[Buffer] = [head]
        for segment in self.segments:
            for start in range(0, len(segment), self.CHUNK_BYTES):
                chunk = segment[start : start + self.CHUNK_BYTES]
                mac.feed(chunk)
                pending.append(chunk)
                netio.send_segments(sock, pending)
                pending = []
        signature = self.signer.tag(self.method, self.path, self.timestamp, self.nonce, mac=mac)
        netio.send_segments(sock, [*pending, signature.encode("ascii")])


def _send_request(sock: socket.socket, head: Buffer, body: list[memoryview] | SignedBody) -> None:
    """Send a request's head and body (a :class:`SignedBody` hashes while it sends)."""
    if isinstance(body, SignedBody):
        body.send(sock, head)
    else:
        netio.send_segments(sock, [head, *body])


def _length(body: list[memoryview] | SignedBody) -> int:
    return body.length if isinstance(body, SignedBody) else sum(len(v) for v in body)


def _push_meta(
    worker_id: str, attempt_id: str, version_seen: int, samples: int, metrics: dict[str, float] | None, epoch: int
) -> dict[str, Any]:
    return {
        "worker_id": str(worker_id),
        "attempt_id": str(attempt_id),
        "version_seen": int(version_seen),
        "samples": int(samples),
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }


class ParameterServerError(RuntimeError):
    """The parameter server refused a request.

    Attributes:
        status: The HTTP (or socket frame) status code.
        address: ``host:port`` of the server.
    """

    def __init__(self, message: str, status: int, address: str) -> None:
        super().__init__(message)
        self.status = status
        self.address = address


def check_mode(mode: str) -> str:
    """Validate a ``parameter_server_mode`` value.

    Raises:
        ValueError: For an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"Could not interpret parameter_server_mode: {mode!r}. Expected one of {list(MODES)}.")
    return mode


class ReceiveBuffers:
    """Where response bodies are received: large ones into pooled buffers that are reused once
    the arrays decoded from them are gone (no page faults on every pull), small ones into new
    arrays."""

    POOLED_FROM_BYTES = 1 << 16

    def __init__(self) -> None:
        self._pool = BufferPool(keep=2)

    def get(self, nbytes: int) -> np.ndarray:
        """A writable ``uint8`` array of ``nbytes`` bytes."""
        if nbytes >= self.POOLED_FROM_BYTES:
            return self._pool.get(nbytes)
        return np.empty(nbytes, dtype=np.uint8)


class _HttpChannel:
    """One keep-alive HTTP/1.1 connection, spoken directly over a socket.

    The request line, headers and body leave in one scatter-gather ``sendmsg``; the response
    head is parsed here (status line, ``Content-Length``, ``Connection``, ``Content-Type``,
    ``X-Elephas-Version``) and the body is received straight into the array it is decoded from.
    (``http.client`` parses every response head with the ``email`` package and sends headers
    and body in separate calls.)
    """

    def __init__(self, host: str, port: int, timeout: float, max_bytes: int = netio.MAX_INFO_BYTES) -> None:
        self.host, self.port, self.timeout, self.max_bytes = host, port, timeout, max_bytes
        self._sock: socket.socket | None = None
        self._host_header = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        self._buffers = ReceiveBuffers()

    def request(
        self, method: str, path: str, headers: dict[str, str], body: Buffer | list[Buffer] | SignedBody
    ) -> tuple[int, dict, np.ndarray | None]:
        body = body if isinstance(body, SignedBody) else _segments(body)
        length = _length(body)
        if self._sock is None:  # first call, or the server closed the previous connection
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            netio.tune(sock, self.timeout)
            self._sock = sock
        sock = self._sock
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self._host_header}",
            f"Content-Length: {length}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        _send_request(sock, head, body)
        status, fields, rest = _read_head(sock)
        declared = fields.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()) or int(declared) > self.max_bytes:
                raise _oversized(self.max_bytes, f"a Content-Length of {declared[:40]!r}", self.host, self.port)
            payload = self._buffers.get(int(declared))
            view = memoryview(payload)
            got = min(len(rest), len(view))
            view[:got] = rest[:got]
            if got < len(view) and not netio.recv_exactly(sock, view[got:]):
                raise ConnectionError(f"Connection closed after {got} of {len(view)} bytes.")
        else:  # no length: the body runs to the end of the connection
            chunks, size = [bytes(rest)], len(rest)
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_bytes:
                    raise _oversized(self.max_bytes, "more", self.host, self.port)
            payload = np.frombuffer(b"".join(chunks), dtype=np.uint8)
            fields["connection"] = "close"
        if fields.get("connection", "").lower() == "close":
            self.close()
        if fields.get("content-type", "").startswith("application/octet-stream"):
            version = fields.get("x-elephas-version", "-1")
            info = {"version": int(version) if version.lstrip("-").isdigit() else -1}
            return status, info, payload
        raw = payload.tobytes()
        try:
            info = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            info = None
        if not isinstance(info, dict):
            info = {"error": raw[:200].decode("utf-8", "replace")}
        return status, info, None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


_MAX_HEAD_BYTES = 64 * 1024


def _oversized(limit: int, received: str, host: str, port: int) -> ParameterServerError:
    address = f"{host}:{port}"
    return ParameterServerError(
        f"Expected a response of at most {limit} bytes (the model's size "
        f"and some slack) from {address}, received {received}; refused "
        "before reading it.",
        502,
        address,
    )


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytearray]:
    """Read an HTTP response head: ``(status, lower-cased header fields, bytes read past it)``.

    Raises:
        ConnectionError: If the connection closes first or the head is malformed or too long.
    """
    buffer = bytearray()
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > _MAX_HEAD_BYTES:
            raise ConnectionError(f"Expected a response head under {_MAX_HEAD_BYTES} bytes.")
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("Connection closed by the server before a response.")
        buffer += chunk
    lines = buffer[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ConnectionError(f"Expected an HTTP/1.x status line, received {lines[0][:80]!r}.")
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return int(parts[1]), fields, buffer[end + 4 :]


class _SocketChannel:
    """One persistent TCP connection speaking the frames of :mod:`netio`."""

    def __init__(self, host: str, port: int, timeout: float, max_bytes: int = netio.MAX_INFO_BYTES) -> None:
        self.host, self.port, self.timeout, self.max_bytes = host, port, timeout, max_bytes
        self._sock: socket.socket | None = None
        self._prefix = bytearray(netio.RESPONSE.size)
        self._buffers = ReceiveBuffers()

    def request(
        self, method: str, path: str, headers: dict[str, str], body: Buffer | list[Buffer] | SignedBody
    ) -> tuple[int, dict, np.ndarray | None]:
        body = body if isinstance(body, SignedBody) else _segments(body)
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            netio.tune(sock, self.timeout)
            self._sock = sock
        sock = self._sock
        auth = json.dumps({"method": method, "path": path, **headers}).encode()
        head = netio.REQUEST.pack(netio.REQUEST_MAGIC, netio.PROTOCOL_VERSION, len(auth), _length(body)) + auth
        _send_request(sock, head, body)
        if not netio.recv_exactly(sock, memoryview(self._prefix)):
            raise ConnectionError("Connection closed by the server before a response.")
        magic, version, status, info_len, body_len = netio.RESPONSE.unpack(self._prefix)
        if magic != netio.RESPONSE_MAGIC or info_len > netio.MAX_INFO_BYTES:
            raise ConnectionError(
                f"Expected a response frame {netio.RESPONSE_MAGIC!r}, "
                f"received {bytes(magic)!r} (info length {info_len})."
            )
        if body_len > self.max_bytes:
            raise _oversized(self.max_bytes, f"a body length of {body_len}", self.host, self.port)
        raw = bytearray(info_len)
        if info_len and not netio.recv_exactly(sock, memoryview(raw)):
            raise ConnectionError("Connection closed before the response info.")
        payload = None
        if body_len:
            payload = self._buffers.get(body_len)
            if not netio.recv_exactly(sock, memoryview(payload)):
                raise ConnectionError("Connection closed before the response body.")
        try:
            info = json.loads(raw) if info_len else {}
        except (UnicodeDecodeError, ValueError, RecursionError):
            info = None
        if not isinstance(info, dict):
            raise ConnectionError("Expected a JSON object as the response info, received something else.")
        return status, info, payload

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class ParameterClient:
    """Pulls weights from and pushes updates to a :class:`~elephas.parameter.ParameterServer`.

    Args:
        host: Server host (the address the server advertises).
        port: Server port.
        mode: ``'http'`` or ``'socket'``.
        secret: The fit's secret, as bytes or hex string.
        compression: Wire compression for pulls and pushes: ``'none'``, ``'fp16'``, ``'zlib'``.
        timeout: Socket time-out of each attempt, in seconds.
        retries: Extra attempts after a connection error, time-out or 503.
        backoff_s: First wait between attempts (doubled each time, at most ``max_backoff_s``).
        max_backoff_s: Longest wait between attempts.
        max_payload_bytes: Largest response, and largest decoded center, accepted (a larger one
            raises :class:`ParameterServerError` before it is read or inflated);
            :meth:`ParameterServer.client_config` sets it from the model's size. Default:
            256 MiB.

    Example:
        >>> client = ParameterClient("127.0.0.1", port, mode="socket", secret=secret_hex)
        >>> weights, version = client.pull()
        >>> version = client.push(delta, worker_id="0", attempt_id="0.0", version_seen=version,
        ...                       samples=32, metrics={"loss": 0.5}, epoch=0)
        >>> client.close()
    """

    def __init__(
        self,
        host: str,
        port: int,
        mode: str = "http",
        secret: bytes | str = b"",
        compression: str = "none",
        timeout: float = 60.0,
        retries: int = 5,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        max_payload_bytes: int | None = None,
    ) -> None:
        self.host = str(host)
        self.port = int(port)
        self.mode = check_mode(mode)
        self.compression = codec.check_compression(compression)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_payload_bytes = int(max_payload_bytes or netio.MAX_INFO_BYTES)
        self._signer = Signer(secret)
        channel = _HttpChannel if mode == "http" else _SocketChannel
        self._channel = channel(self.host, self.port, self.timeout, self.max_payload_bytes)

    @property
    def address(self) -> str:
        """``host:port`` of the server."""
        return f"{self.host}:{self.port}"

    def pull(self) -> tuple[list[np.ndarray], int]:
        """The current center weights and the server version they correspond to."""
        path = f"/parameters?compression={self.compression}"
        info, payload = self._call("GET", path, b"", resign=True)
        return self._decode_parameters(payload, info)

    def _decode_parameters(self, payload: np.ndarray | None, info: dict) -> tuple[list[np.ndarray], int]:
        if payload is None:
            raise ParameterServerError(
                f"Expected weights from {self.address}, received an empty response.", 502, self.address
            )
        try:
            decoded = codec.decode(payload, max_data_bytes=self.max_payload_bytes)
        except codec.WireFormatError as exc:
            raise ParameterServerError(
                f"Expected weights of at most {self.max_payload_bytes} bytes "
                f"in the wire format from {self.address}, received a payload "
                f"that does not decode: {exc}",
                502,
                self.address,
            ) from None
        if decoded.kind != codec.KIND_PARAMETERS:
            raise ParameterServerError(
                f"Expected a parameters payload from {self.address}, received kind {decoded.kind}.", 502, self.address
            )
        return decoded.arrays, int(decoded.meta.get("version", info.get("version", -1)))

    def push(
        self,
        update: Sequence[np.ndarray],
        *,
        worker_id: str,
        attempt_id: str,
        version_seen: int,
        samples: int = 0,
        metrics: dict[str, float] | None = None,
        epoch: int = 0,
    ) -> int:
        """Send an update and the window's record.

        Args:
            update: Arrays shaped and typed like the model's weights (sent without a copy: do
                not modify them during the call).
            worker_id: Who pushes (e.g. the partition index).
            attempt_id: The Spark task attempt (so a failed attempt's updates can be identified).
            version_seen: The version returned by this worker's last :meth:`pull`.
            samples: Samples trained in the window.
            metrics: Loss and metrics of the window.
            epoch: Epoch of the window.

        Returns:
            The server version after the update.

        Raises:
            ParameterServerError: If the server refused the update (shape, dtype, NaN, auth).
            ConnectionError: If the server could not be reached; the message names the address.
        """
        meta = _push_meta(worker_id, attempt_id, version_seen, samples, metrics, epoch)
        segments = codec.encode_segments(update, codec.KIND_UPDATE, self.compression, meta)
        info, _ = self._call("POST", "/update", segments, resign=False)
        return int(info["version"])

    def push_and_pull(
        self,
        update: Sequence[np.ndarray],
        *,
        worker_id: str,
        attempt_id: str,
        version_seen: int,
        samples: int = 0,
        metrics: dict[str, float] | None = None,
        epoch: int = 0,
        round: int | None = None,
        task_attempt: int | None = None,  # noqa: A002
    ) -> tuple[int, list[np.ndarray], int]:
        """:meth:`push`, answered with the center weights after the update (one request, where
        a push and a pull take two).

        Arguments as for :meth:`push`, plus ``round`` and ``task_attempt`` for a synchronous
        round (see :mod:`elephas.parameter.rounds`): the request is then answered once every
        partition of the round has pushed.

        Returns:
            ``(version, center, center_version)``: the version the update produced, the center
            encoded right after it (it contains the update, and possibly later ones) and that
            center's version. A retried request is applied once and gets the center of its
            retry.

        Raises:
            ParameterServerError: If the server refused the update.
            ConnectionError: If the server could not be reached.
        """
        meta = _push_meta(worker_id, attempt_id, version_seen, samples, metrics, epoch)
        if round is not None:  # a synchronous round: the server answers once the round closed
            meta["round"] = int(round)
            meta["task_attempt"] = int(task_attempt or 0)
        segments = codec.encode_segments(update, codec.KIND_UPDATE, self.compression, meta)
        info, payload = self._call("POST", f"/update?pull=1&compression={self.compression}", segments, resign=False)
        if payload is None:  # the answer to a retry of an update already applied: no weights
            center, center_version = self.pull()
        else:
            center, center_version = self._decode_parameters(payload, info)
        return int(info["version"]), center, center_version

    def stats(self) -> dict[str, Any]:
        """The server's statistics and window records (``GET /stats``)."""
        info, _ = self._call("GET", "/stats", b"", resign=True)
        return info

    def health(self) -> bool:
        """Whether the server answers ``GET /health``."""
        info, _ = self._call("GET", "/health", b"", resign=True)
        return info.get("status") == "ok"

    def _call(
        self, method: str, path: str, body: Buffer | list[Buffer], resign: bool
    ) -> tuple[dict, np.ndarray | None]:
        segments: list[memoryview] | SignedBody = _segments(body)
        if any(len(v) for v in segments):  # signed while sent, signature after the body
            segments = SignedBody(self._signer, method, path, segments)
            headers = segments.headers
        else:
            headers = self._signer.sign(method, path, segments)
        delay = self.backoff_s
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                if resign and not isinstance(segments, SignedBody):
                    headers = self._signer.sign(method, path, segments)
            try:
                status, info, payload = self._channel.request(method, path, headers, segments)
            except ParameterServerError:  # a response refused unread: the connection is spent
                self._channel.close()
                raise
            except _RETRYABLE as exc:
                self._channel.close()
                last = exc
                logger.debug(
                    "Parameter client: %s %s to %s failed (attempt %d): %s",
                    method,
                    path,
                    self.address,
                    attempt + 1,
                    exc,
                )
                continue
            if status == 503:
                last = ParameterServerError(str(info.get("error")), status, self.address)
                continue
            if status >= 400:
                raise ParameterServerError(
                    f"The parameter server at {self.address} refused {method} "
                    f"{path.split('?')[0]} with status {status}: {info.get('error')}",
                    status,
                    self.address,
                )
            return info, payload
        raise ConnectionError(
            f"Could not reach the parameter server at {self.address} ({self.mode}) after "
            f"{self.retries + 1} attempts: {type(last).__name__}: {last}. Check that the "
            "driver address is reachable from the executors (ELEPHAS_PARAMETER_SERVER_HOST)."
        )

    def close(self) -> None:
        """Close the connection."""
        self._channel.close()

    def __enter__(self) -> ParameterClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
