"""Request authentication: a keyed MAC over method, path, timestamp, nonce and body.

The tag is ``HMAC-SHA256(secret, context || SHA256(chunk_0) || SHA256(chunk_1) || ...)`` where
``context`` is ``"elephas-mac-v1\\n{method}\\n{path}\\n{timestamp}\\n{nonce}\\n{body length}\\n"``
and the chunks are the body cut in fixed 512 KiB pieces. This is hash-then-MAC: sound as long as
SHA-256 is collision resistant, and it lets big bodies be hashed on several cores at once
(``hashlib`` releases the GIL), which matters because hashing a 4 MB update costs more than
moving it over loopback. SHA-256 was chosen over keyed BLAKE2b after measuring both: OpenSSL's
SHA-256 uses the CPU's SHA extensions and runs about twice as fast here (see
``docs/parameter_server.md``).

Replays are refused: the timestamp must be within ``window_s`` of the server clock and a nonce
is accepted once. A push retried with the same signed request (its first response was lost)
gets the first response back instead of being applied twice.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

CHUNK_BYTES = 512 * 1024
_PARALLEL_MIN_BYTES = 2 * CHUNK_BYTES
SECRET_BYTES = 32

HEADER_TIMESTAMP = "X-Elephas-Timestamp"
HEADER_NONCE = "X-Elephas-Nonce"
HEADER_SIGNATURE = "X-Elephas-Signature"


class AuthenticationError(PermissionError):
    """A request whose signature is missing, wrong, expired or replayed.

    Attributes:
        status: The HTTP status to answer with (401 missing, 403 invalid).
        reason: Short machine-readable reason (``'missing'``, ``'invalid'``, ``'expired'``,
            ``'replayed'``).
    """

    def __init__(self, message: str, status: int = 403, reason: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def new_secret() -> bytes:
    """A fresh random per-fit secret (32 bytes from :mod:`secrets`)."""
    return secrets.token_bytes(SECRET_BYTES)


def coerce_secret(secret: bytes | str) -> bytes:
    """Accept a secret as bytes or as its hex string (what travels in plain configs).

    Raises:
        ValueError: If the secret is shorter than 16 bytes or not hex.
    """
    if isinstance(secret, str):
        try:
            secret = bytes.fromhex(secret)
        except ValueError:
            raise ValueError("Expected the secret as bytes or a hex string, received a "
                             "non-hex string.") from None
    if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
        raise ValueError(f"Expected a secret of at least 16 bytes, received "
                         f"{type(secret).__name__} of length {len(secret)}.")
    return bytes(secret)


class Signer:
    """Computes request tags. Shared by the client (signing) and the server (verifying).

    Args:
        secret: The per-fit secret.
        hash_threads: Threads used to hash big bodies in parallel (0 or 1: in the caller).
    """

    def __init__(self, secret: bytes | str, hash_threads: int | None = None) -> None:
        self._key = coerce_secret(secret)
        if hash_threads is None:  # leave half the cores to the peer and to training
            hash_threads = min(4, (os.cpu_count() or 1) // 2)
        self._hash_threads = hash_threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def tag(self, method: str, path: str, timestamp: str, nonce: str,
            body: bytes | bytearray | memoryview = b"", digest: BodyDigest | None = None) -> str:
        """The hex tag of a request.

        Args:
            method: HTTP method (``'GET'``/``'POST'``).
            path: Request path including any query string.
            timestamp: Sender's clock, seconds since the epoch, as sent.
            nonce: Random per-request string, as sent.
            body: The request body.
            digest: The body's chunk digests, already computed while it was received
                (``body`` is then ignored).

        Returns:
            The tag as 64 hex characters.
        """
        if digest is None:
            digest = self.digest(len(body))
            digest.update(body, len(body))
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        mac.update(f"elephas-mac-v1\n{method}\n{path}\n{timestamp}\n{nonce}\n"
                   f"{digest.length}\n".encode())
        for chunk_digest in digest.digests():
            mac.update(chunk_digest)
        return mac.hexdigest()

    def digest(self, length: int) -> BodyDigest:
        """A :class:`BodyDigest` for a body of ``length`` bytes, fed while it arrives."""
        if length < _PARALLEL_MIN_BYTES or self._hash_threads <= 1:
            return BodyDigest(length, None)
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._hash_threads,
                                                thread_name_prefix="elephas-ps-mac")
            return BodyDigest(length, self._pool)

    def sign(self, method: str, path: str, body: bytes | bytearray | memoryview = b"") -> dict:
        """Headers that authenticate a request: timestamp, nonce and tag."""
        timestamp = f"{time.time():.6f}"
        nonce = secrets.token_hex(16)
        return {HEADER_TIMESTAMP: timestamp, HEADER_NONCE: nonce,
                HEADER_SIGNATURE: self.tag(method, path, timestamp, nonce, body)}

    def close(self) -> None:
        """Stop the hashing threads (a later call starts them again)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _sha256(chunk: memoryview) -> bytes:
    return hashlib.sha256(chunk).digest()


class BodyDigest:
    """SHA-256 digests of a body's fixed-size chunks, computed as the body arrives.

    Feeding it while receiving overlaps hashing with the transfer (and, with a pool, spreads it
    over several cores).

    Args:
        length: The body's total length.
        pool: Executor hashing chunks in parallel, or ``None`` to hash in the caller.
    """

    def __init__(self, length: int, pool: ThreadPoolExecutor | None) -> None:
        self.length = length
        self._pool = pool
        self._done = 0
        self._parts: list = []

    def update(self, body: bytes | bytearray | memoryview, received: int) -> None:
        """Hash every chunk completed in ``body[:received]`` that is not hashed yet.

        Args:
            body: The whole body buffer (at least ``length`` bytes long once complete).
            received: How many bytes of it have arrived.
        """
        view = memoryview(body).cast("B")
        while self._done < self.length and (self._done + CHUNK_BYTES <= received
                                            or received >= self.length):
            end = min(self._done + CHUNK_BYTES, self.length)
            chunk = view[self._done:end]
            self._parts.append(self._pool.submit(_sha256, chunk) if self._pool is not None
                               else _sha256(chunk))
            self._done = end

    def digests(self) -> list[bytes]:
        """The chunk digests in order (waits for pending ones).

        Raises:
            ValueError: If the body was not fed completely.
        """
        if self._done != self.length:
            raise ValueError(f"Expected {self.length} body bytes hashed, received {self._done}.")
        return [p if isinstance(p, bytes) else p.result() for p in self._parts]


class Verifier:
    """Server-side checks: tag, freshness and single use of each nonce.

    Args:
        signer: A :class:`Signer` built from the server's secret.
        window_s: Accepted clock difference between sender and server, in seconds.
        max_nonces: Nonces remembered at most (the oldest are forgotten first, and requests
            older than the newest forgotten one are then refused as expired).
    """

    def __init__(self, signer: Signer, window_s: float = 600.0, max_nonces: int = 200_000) -> None:
        self.signer = signer
        self.window_s = window_s
        self.max_nonces = max_nonces
        self._seen: OrderedDict[str, tuple[float, ReplayEntry]] = OrderedDict()
        self._floor = 0.0
        self._lock = threading.Lock()

    def verify(self, method: str, path: str, headers: Mapping[str, str],
               body: bytes | bytearray | memoryview = b"",
               digest: BodyDigest | None = None) -> tuple[ReplayEntry, bool]:
        """Check a request.

        Args:
            method: The request method.
            path: The request path with query string.
            headers: Mapping holding the timestamp, nonce and signature headers.
            body: The request body.
            digest: The body's digests computed while it was received (optional).

        Returns:
            ``(entry, fresh)``: a new :class:`ReplayEntry` the caller completes with its response
            and ``True``; or, when the same signed request was seen before, that earlier entry
            and ``False``.

        Raises:
            AuthenticationError: If anything does not check out.
        """
        timestamp = headers.get(HEADER_TIMESTAMP)
        nonce = headers.get(HEADER_NONCE)
        signature = headers.get(HEADER_SIGNATURE)
        if not timestamp or not nonce or not signature:
            raise AuthenticationError(
                f"Expected headers {HEADER_TIMESTAMP}, {HEADER_NONCE} and {HEADER_SIGNATURE}; "
                "received a request without them.", status=401, reason="missing")
        if len(nonce) > 64 or len(timestamp) > 32 or len(signature) != 64:
            raise AuthenticationError("Expected a 64-hex-digit signature and short nonce and "
                                      "timestamp, received malformed values.")
        try:
            ts = float(timestamp)
        except ValueError:
            raise AuthenticationError(f"Expected a numeric timestamp, received {timestamp!r}.") from None
        expected = self.signer.tag(method, path, timestamp, nonce, body, digest)
        if not hmac.compare_digest(expected, signature):
            raise AuthenticationError("Expected a valid signature made with this fit's secret, "
                                      "received one that does not match.")
        now = time.time()
        key = signature
        with self._lock:
            known = self._seen.get(key)
            if known is not None:
                return known[1], False
            if not (ts == ts and abs(now - ts) <= self.window_s) or ts <= self._floor:
                raise AuthenticationError(
                    f"Expected a timestamp within {self.window_s:g} s of the server clock "
                    f"({now:.0f}), received {ts:.0f}; check the clocks of driver and executors.",
                    reason="expired")
            entry = ReplayEntry()
            self._seen[key] = (ts, entry)
            while self._seen and (len(self._seen) > self.max_nonces
                                  or next(iter(self._seen.values()))[0] < now - 2 * self.window_s):
                _, (old_ts, _) = self._seen.popitem(last=False)
                self._floor = max(self._floor, old_ts)
            return entry, True


class ReplayEntry:
    """The response to one signed request, shared with retries of the same request."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._response: object = None

    def complete(self, response: object) -> None:
        """Store the response of the first delivery."""
        self._response = response
        self._done.set()

    def wait(self, timeout: float) -> object:
        """The stored response (waits while the first delivery is still being handled)."""
        if not self._done.wait(timeout):
            return None
        return self._response
