"""Request authentication: a keyed MAC over method, path, timestamp, nonce and body.

The signature of a request is::

    body_key  = HMAC-SHA256(secret, "elephas-body-key-v2\n{timestamp}\n{nonce}\n{body length}\n")
    body_tag  = Poly1305(body_key, body)
    signature = HMAC-SHA256(secret, "elephas-mac-v2\n{method}\n{path}\n{timestamp}\n{nonce}\n"
                                    "{body length}\n" || body_tag)

Poly1305 (RFC 8439) is a one-time authenticator: it is secure as long as each key signs one
message, which the per-request key derived from the request's random 128-bit nonce guarantees
(the same key only ever tags the same signed request again, when a push is retried). It runs at
several GB/s with the vector instructions of the ``cryptography`` package's OpenSSL, where
HMAC-SHA256 manages about 1.5 GB/s; hashing a 4 MB update on both ends was the largest cost of a
round trip (see ``docs/security.md``). The body tag never travels: only the outer HMAC, which
also binds method, path, timestamp, nonce and length, does. The body is fed incrementally, so a
server hashes a body while it arrives and a client hashes the segments it sends without joining
them.

A request with a body may carry its signature after the body instead of in a header: the
header ``X-Elephas-Signature: trailer`` says so, and the last 64 bytes of the body are then the
signature (the hex digits it would have had as a header; the signed length is the body's length
without them). A client can then hash each chunk of the body just before sending it, so that
hashing overlaps the transfer and the server's hashing of the chunks already received, instead
of hashing the whole body before sending anything.

A request with a body larger than :data:`PREAUTH_BODY_BYTES` also carries a head signature,
checked before a byte of the body is read (so that a peer without the secret cannot make the
server allocate or wait for a large body)::

    head_signature = HMAC-SHA256(secret, "elephas-head-v2\n{method}\n{path}\n{timestamp}\n"
                                         "{nonce}\n{transported length}\n")

where the transported length is the body as sent (with a trailing signature, if any).

Replays: the timestamp must be within ``window_s`` of the server clock (checked first, so a
request captured earlier gets nothing once its window is over), and each nonce names one
request: the same nonce with another signature is refused, and the same signed request again (a
push retried because its first response was lost) gets the first response back instead of
being applied twice.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

SECRET_BYTES = 32

HEADER_TIMESTAMP = "X-Elephas-Timestamp"
HEADER_NONCE = "X-Elephas-Nonce"
HEADER_SIGNATURE = "X-Elephas-Signature"
HEADER_HEAD_SIGNATURE = "X-Elephas-Head-Signature"
PREAUTH_BODY_BYTES = 64 * 1024
"""Largest body read without a head signature (see the module docstring)."""
SIGNATURE_TRAILER = "trailer"
"""Value of the signature header of a request whose signature follows its body."""
TRAILER_BYTES = 64
MAX_NONCE_CHARS = 64
MAX_TIMESTAMP_CHARS = 32
_NONCE = re.compile(r"[0-9A-Za-z_-]{1,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{0,9})?")
_HEX64 = re.compile(r"[0-9a-f]{64}")

Buffer = bytes | bytearray | memoryview
"""A contiguous byte buffer (numpy arrays qualify through ``memoryview``)."""


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
            raise ValueError("Expected the secret as bytes or a hex string, received a non-hex string.") from None
    if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
        raise ValueError(
            f"Expected a secret of at least 16 bytes, received {type(secret).__name__} of length {len(secret)}."
        )
    return bytes(secret)


def _poly1305() -> type:
    try:
        from cryptography.hazmat.primitives.poly1305 import Poly1305
    except ImportError as exc:  # a declared dependency; say so instead of a bare ImportError
        raise ImportError(
            "The parameter server signs request bodies with Poly1305 from the "
            "'cryptography' package, which could not be imported. Install it "
            "with: pip install cryptography"
        ) from exc
    return Poly1305


class Signer:
    """Computes request signatures. Shared by the client (signing) and the server (verifying).

    Args:
        secret: The per-fit secret (bytes, or its hex string).

    Example:
        >>> signer = Signer(new_secret())
        >>> headers = signer.sign("GET", "/stats")
        >>> sorted(headers) == sorted([HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE])
        True
        >>> HEADER_HEAD_SIGNATURE in signer.sign("POST", "/update", b"body")
        True
    """

    def __init__(self, secret: bytes | str) -> None:
        self._key = coerce_secret(secret)
        self._poly1305 = _poly1305()

    def body_mac(self, timestamp: str, nonce: str, length: int) -> BodyMac:
        """A :class:`BodyMac` for the body of the request with this timestamp and nonce.

        Args:
            timestamp: The request's timestamp, as sent.
            nonce: The request's nonce, as sent.
            length: The body's length in bytes.
        """
        context = _encode(f"elephas-body-key-v2\n{timestamp}\n{nonce}\n{length}\n")
        one_time_key = hmac.digest(self._key, context, "sha256")
        return BodyMac(self._poly1305(one_time_key), timestamp, nonce, length)

    def tag(
        self,
        method: str,
        path: str,
        timestamp: str,
        nonce: str,
        body: Buffer | Sequence[Buffer] = b"",
        mac: BodyMac | None = None,
    ) -> str:
        """The hex signature of a request.

        Args:
            method: HTTP method (``'GET'``/``'POST'``).
            path: Request path including any query string.
            timestamp: Sender's clock, seconds since the epoch, as sent.
            nonce: Random per-request string, as sent.
            body: The request body, as one buffer or as a list of the segments sent back to
                back.
            mac: The body's MAC, already fed while the body was received (``body`` is then
                ignored). Used only when it was made for this ``timestamp`` and ``nonce``.

        Returns:
            The signature as 64 hex characters.
        """
        if mac is None or (mac.timestamp, mac.nonce) != (timestamp, nonce):
            segments = body if isinstance(body, (list, tuple)) else [body]
            views = [memoryview(s).cast("B") for s in segments]
            mac = self.body_mac(timestamp, nonce, sum(len(v) for v in views))
            for view in views:
                mac.feed(view)
        body_tag = mac.finalize()
        context = _encode(f"elephas-mac-v2\n{method}\n{path}\n{timestamp}\n{nonce}\n{mac.length}\n")
        return hmac.digest(self._key, context + body_tag, "sha256").hex()

    def head_tag(self, method: str, path: str, timestamp: str, nonce: str, length: int) -> str:
        """The hex head signature of a request whose body is ``length`` bytes as sent.

        Args:
            method: The request method.
            path: The request path with query string.
            timestamp: The request's timestamp, as sent.
            nonce: The request's nonce, as sent.
            length: The transported body length (including a trailing signature).
        """
        context = _encode(f"elephas-head-v2\n{method}\n{path}\n{timestamp}\n{nonce}\n{length}\n")
        return hmac.digest(self._key, context, "sha256").hex()

    def sign(self, method: str, path: str, body: Buffer | Sequence[Buffer] = b"") -> dict[str, str]:
        """Headers that authenticate a request: timestamp, nonce and signature.

        Args:
            method: The request method.
            path: The request path with query string.
            body: The body as one buffer or as the segments sent back to back.
        """
        headers = self.stamp()
        timestamp, nonce = headers[HEADER_TIMESTAMP], headers[HEADER_NONCE]
        headers[HEADER_SIGNATURE] = self.tag(method, path, timestamp, nonce, body)
        segments = body if isinstance(body, (list, tuple)) else [body]
        length = sum(len(memoryview(s).cast("B")) for s in segments)
        if length:
            headers[HEADER_HEAD_SIGNATURE] = self.head_tag(method, path, timestamp, nonce, length)
        return headers

    @staticmethod
    def stamp() -> dict[str, str]:
        """A fresh timestamp and 128-bit random nonce, for a request signed later (the socket
        transport signs a body while sending it and sends the signature after it)."""
        return {HEADER_TIMESTAMP: f"{time.time():.6f}", HEADER_NONCE: secrets.token_hex(16)}


class BodyMac:
    """The Poly1305 tag of one request body under its one-time key, fed as the body arrives.

    Args:
        authenticator: A fresh ``Poly1305`` object keyed with the request's one-time key.
        timestamp: The request timestamp the key was derived from.
        nonce: The request nonce the key was derived from.
        length: The body's total length.
    """

    def __init__(self, authenticator: object, timestamp: str, nonce: str, length: int) -> None:
        self._authenticator = authenticator
        self.timestamp = timestamp
        self.nonce = nonce
        self.length = length
        self._done = 0
        self._tag: bytes | None = None

    def update(self, body: Buffer, received: int) -> None:
        """Hash ``body[done:received]``: the bytes of the whole body buffer that arrived since
        the last call (the signature of a progress callback of :func:`netio.recv_exactly`).

        Args:
            body: The whole body buffer.
            received: How many bytes of it have arrived.
        """
        received = min(received, self.length)  # bytes past the signed length: a trailer
        if received > self._done:
            self.feed(memoryview(body).cast("B")[self._done : received])

    def feed(self, segment: Buffer) -> None:
        """Hash the next ``segment`` of the body.

        Raises:
            ValueError: If that runs past the declared length or the tag was already taken.
        """
        n = len(memoryview(segment).cast("B"))
        if self._tag is not None or self._done + n > self.length:
            raise ValueError(
                f"Expected at most {self.length} body bytes, received "
                f"{self._done + n} (or more after the tag was taken)."
            )
        if n:
            self._authenticator.update(segment)
        self._done += n

    def finalize(self) -> bytes:
        """The 16-byte tag (computed once; later calls return it again).

        Raises:
            ValueError: If the body was not fed completely.
        """
        if self._tag is None:
            if self._done != self.length:
                raise ValueError(f"Expected {self.length} body bytes hashed, received {self._done}.")
            self._tag = self._authenticator.finalize()
        return self._tag


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
        self._seen: OrderedDict[str, tuple[float, str, ReplayEntry]] = OrderedDict()
        self._floor = 0.0
        self._lock = threading.Lock()

    def check_head(self, method: str, path: str, headers: Mapping[str, str], length: int) -> None:
        """What is checked before the body is read: a body over :data:`PREAUTH_BODY_BYTES`
        needs a head signature; when there is one, the headers must be well formed, the
        timestamp fresh and the head signature valid.

        Args:
            method: The request method.
            path: The request path with query string.
            headers: The request's authentication headers.
            length: The declared (transported) body length.

        Raises:
            AuthenticationError: If the request is to be refused without reading its body.
        """
        head = headers.get(HEADER_HEAD_SIGNATURE)
        if head is None:
            if length > PREAUTH_BODY_BYTES:
                raise AuthenticationError(
                    f"Expected the header {HEADER_HEAD_SIGNATURE} with a body over "
                    f"{PREAUTH_BODY_BYTES} bytes, received a request without one.",
                    status=401,
                    reason="missing",
                )
            return  # a small body: read, then verified with the rest of the request
        timestamp, nonce = self._fresh(headers)
        expected = self.signer.head_tag(method, path, timestamp, nonce, length)
        if not (isinstance(head, str) and _HEX64.fullmatch(head) and hmac.compare_digest(expected, head)):
            raise AuthenticationError(
                "Expected a valid head signature made with this fit's secret, received one that does not match."
            )

    def _fresh(self, headers: Mapping[str, str]) -> tuple[str, str]:
        """The well-formed timestamp and nonce of ``headers``, the timestamp within the window.

        Raises:
            AuthenticationError: 401 when missing, 403 when malformed or expired.
        """
        timestamp = headers.get(HEADER_TIMESTAMP)
        nonce = headers.get(HEADER_NONCE)
        signature = headers.get(HEADER_SIGNATURE)
        if not timestamp or not nonce or not signature:
            raise AuthenticationError(
                f"Expected headers {HEADER_TIMESTAMP}, {HEADER_NONCE} and {HEADER_SIGNATURE}; "
                "received a request without them.",
                status=401,
                reason="missing",
            )
        if not (
            isinstance(timestamp, str)
            and isinstance(nonce, str)
            and isinstance(signature, str)
            and _TIMESTAMP.fullmatch(timestamp)
            and _NONCE.fullmatch(nonce)
            and (signature == SIGNATURE_TRAILER or _HEX64.fullmatch(signature))
        ):
            raise AuthenticationError(
                "Expected a decimal timestamp, a nonce of at most "
                f"{MAX_NONCE_CHARS} letters, digits, '-' or '_' and a "
                "64-hex-digit signature, received malformed values."
            )
        ts = float(timestamp)
        now = time.time()
        if abs(now - ts) > self.window_s or ts <= self._floor:
            raise AuthenticationError(
                f"Expected a timestamp within {self.window_s:g} s of the server clock "
                f"({now:.0f}), received {ts:.0f}; check the clocks of driver and executors.",
                reason="expired",
            )
        return timestamp, nonce

    def verify(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: Buffer | Sequence[Buffer] = b"",
        mac: BodyMac | None = None,
    ) -> tuple[ReplayEntry, bool]:
        """Check a request: well-formed headers, then the time window, then the signature, then
        the nonce.

        Args:
            method: The request method.
            path: The request path with query string.
            headers: Mapping holding the timestamp, nonce and signature headers.
            body: The request body (one buffer or its segments).
            mac: The body's MAC fed while it was received (optional; see :meth:`body_mac`).

        Returns:
            ``(entry, fresh)``: a new :class:`ReplayEntry` the caller completes with its response
            and ``True``; or, when the same signed request was seen before, that earlier entry
            and ``False``.

        Raises:
            AuthenticationError: If anything does not check out (a nonce seen with another
                signature is refused as replayed).
        """
        timestamp, nonce = self._fresh(headers)
        signature = headers[HEADER_SIGNATURE]
        expected = self.signer.tag(method, path, timestamp, nonce, body, mac)
        if not hmac.compare_digest(expected, signature):
            raise AuthenticationError(
                "Expected a valid signature made with this fit's secret, received one that does not match."
            )
        ts = float(timestamp)
        now = time.time()
        with self._lock:
            known = self._seen.get(nonce)
            if known is not None:
                if known[1] != signature:
                    raise AuthenticationError(
                        "Expected a fresh nonce, received one already used by another request.", reason="replayed"
                    )
                return known[2], False
            if ts <= self._floor:
                raise AuthenticationError(
                    f"Expected a timestamp after {self._floor:.0f} (older nonces are forgotten), received {ts:.0f}.",
                    reason="expired",
                )
            entry = ReplayEntry()
            self._seen[nonce] = (ts, signature, entry)
            while self._seen and (
                len(self._seen) > self.max_nonces or next(iter(self._seen.values()))[0] < now - 2 * self.window_s
            ):
                _, (old_ts, _, _) = self._seen.popitem(last=False)
                self._floor = max(self._floor, old_ts)
            return entry, True

    def body_mac(self, headers: Mapping[str, str], length: int) -> BodyMac | None:
        """A :class:`BodyMac` to feed while receiving the body of a request with ``headers``.

        Returns ``None`` when the headers lack a well-formed timestamp or nonce: such a request
        is refused by :meth:`verify` whatever its body. With a trailing signature the MAC covers
        ``length - TRAILER_BYTES`` bytes (and is fed nothing past them).
        """
        timestamp = headers.get(HEADER_TIMESTAMP)
        nonce = headers.get(HEADER_NONCE)
        if not (
            isinstance(timestamp, str)
            and isinstance(nonce, str)
            and _TIMESTAMP.fullmatch(timestamp)
            and _NONCE.fullmatch(nonce)
        ):
            return None
        if headers.get(HEADER_SIGNATURE) == SIGNATURE_TRAILER:
            if length < TRAILER_BYTES:
                return None
            length -= TRAILER_BYTES
        return self.signer.body_mac(timestamp, nonce, length)


def _encode(context: str) -> bytes:
    """UTF-8 bytes of a signing context (lone surrogates from a peer's JSON kept as bytes, so
    encoding never raises; such a request's signature simply does not match)."""
    return context.encode("utf-8", "surrogatepass")


def split_trailer(headers: Mapping[str, str], body: Buffer) -> tuple[Mapping[str, str], Buffer]:
    """Move a trailing signature (see the module docstring) from the body into the headers.

    Args:
        headers: The request's authentication headers.
        body: The whole received body.

    Returns:
        ``(headers, body)`` unchanged when the signature header is not ``'trailer'``; else the
        headers with the signature from the trailer and the body without it.

    Raises:
        AuthenticationError: If the body is shorter than a trailer or the trailer is not ASCII.
    """
    if headers.get(HEADER_SIGNATURE) != SIGNATURE_TRAILER:
        return headers, body
    view = memoryview(body).cast("B")
    if len(view) < TRAILER_BYTES:
        raise AuthenticationError(
            f"Expected a body ending in a {TRAILER_BYTES}-byte signature, received {len(view)} bytes."
        )
    try:
        signature = bytes(view[-TRAILER_BYTES:]).decode("ascii")
    except UnicodeDecodeError:
        raise AuthenticationError("Expected a hex signature after the body, received non-ASCII bytes.") from None
    return {**headers, HEADER_SIGNATURE: signature}, view[:-TRAILER_BYTES]


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
