"""Transport-independent request handling: authenticate, decode, check, apply, answer.

Both transports turn a request into ``(method, path, auth headers, body)`` and send back the
:class:`Reply` of :meth:`ParameterService.handle`, so they behave identically by construction.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import numpy as np

from elephas.parameter import codec, netio
from elephas.parameter.auth import AuthenticationError, BodyMac, Buffer, Verifier, split_trailer
from elephas.parameter.state import ServerState, UpdateRejected

logger = logging.getLogger(__name__)

HEADER_SLACK_BYTES = 64 * 1024
MAX_METRICS = 1024
MAX_METADATA_INT = 2**53
_ROUTES = {("GET", "/parameters"), ("POST", "/update"), ("GET", "/stats"), ("GET", "/health")}
"""Routes; ``POST /update?pull=1`` also answers with the center after the update (see
:meth:`ParameterService._with_center`), except when it is a replay of a request already
handled: that gets the first reply, without weights."""


@dataclass
class Reply:
    """A response: status, a JSON-ready info dict and an optional binary payload."""

    status: int
    info: dict
    payload: bytes | bytearray | memoryview | np.ndarray | None = None

    def json_body(self) -> bytes:
        """The info dict as JSON bytes."""
        return json.dumps(self.info, separators=(",", ":")).encode()


def default_max_body_bytes(model_nbytes: int) -> int:
    """The request size cap: the model's size with 25 % plus 64 KiB of slack for the header."""
    return int(model_nbytes * 1.25) + HEADER_SLACK_BYTES


class ParameterService:
    """Answers requests against one :class:`ServerState`.

    Args:
        state: The shared server state.
        verifier: Checks signatures and replays.
        max_body_bytes: Largest accepted request body.
        retry_wait_s: How long a retried push waits for its first delivery to finish.
    """

    def __init__(self, state: ServerState, verifier: Verifier, max_body_bytes: int, retry_wait_s: float = 60.0) -> None:
        self.state = state
        self.verifier = verifier
        self.max_body_bytes = max_body_bytes
        self.retry_wait_s = retry_wait_s
        self._log_refusal = netio.RateLimitedLog(logger)

    def refuse(self, status: int, reason: str, message: str, peer: object = None) -> Reply:
        """Count a refused request by ``reason``, log one line about it (at most one every few
        seconds: refusals come from the network, by the thousand if someone wants) and return
        the error reply."""
        self.state.count_refused(reason)
        self._log_refusal(
            logging.WARNING,
            "Parameter server: refused a request%s (%d, %s): %.200s",
            f" from {peer}" if peer else "",
            status,
            reason,
            message,
        )
        return Reply(status, {"error": message, "reason": reason})

    def check_length(self, length: int) -> Reply | None:
        """A 413 reply when a declared body length is over the cap, else ``None``."""
        if length > self.max_body_bytes:
            return self.refuse(
                413,
                "too_large",
                f"Expected a body of at most {self.max_body_bytes} bytes, received a declared length of {length}.",
            )
        if length < 0:
            return self.refuse(400, "malformed", f"Expected a non-negative body length, received {length}.")
        return None

    def check_head(
        self, method: str, path: str, headers: Mapping[str, str], length: int, peer: object = None
    ) -> Reply | None:
        """What a transport checks before reading a body of ``length`` bytes (the declared,
        transported length): the size cap, and for a body the headers, the time window and the
        head signature (see :meth:`Verifier.check_head`).

        Returns:
            The error reply (the body is then not read and the connection is closed), or
            ``None`` when the body may be read.
        """
        too_large = self.check_length(length)
        if too_large is not None or not length:
            return too_large
        try:
            self.verifier.check_head(method, path, headers, length)
        except AuthenticationError as exc:
            return self.refuse(exc.status, f"auth_{exc.reason}", str(exc), peer)
        return None

    def body_mac(self, headers: Mapping[str, str], length: int) -> BodyMac | None:
        """A MAC to feed while receiving a body of ``length`` bytes (``None`` when the
        authentication headers are missing or malformed: the request is refused anyway)."""
        return self.verifier.body_mac(headers, length)

    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: Buffer = b"",
        mac: BodyMac | None = None,
        trust: Callable[[], None] | None = None,
        peer: object = None,
    ) -> Reply:
        """Answer one request.

        Args:
            method: ``'GET'`` or ``'POST'``.
            path: Path with query string (``/parameters?compression=fp16``).
            headers: The authentication headers.
            body: The request body.
            mac: The body's MAC, fed while it was received (optional, see :meth:`body_mac`).
            trust: Called once the request is authenticated, before it is handled (the
                transport then treats its connection as a worker's).
            peer: The peer's address, for the log.

        Returns:
            The reply to send.
        """
        try:
            route = urlsplit(path).path
        except ValueError:
            route = ""
        if (method, route) not in _ROUTES:
            return self.refuse(
                404, "not_found", f"Expected one of {sorted(_ROUTES)}, received {method!r:.20} {route!r:.200}.", peer
            )
        if route == "/health":
            return Reply(200, {"status": "ok"})
        too_large = self.check_length(len(body))
        if too_large is not None:
            return too_large
        try:
            headers, body = split_trailer(headers, body)
            entry, fresh = self.verifier.verify(method, path, headers, body, mac)
        except AuthenticationError as exc:
            return self.refuse(exc.status, f"auth_{exc.reason}", str(exc), peer)
        if trust is not None:
            trust()
        if not fresh:
            if route != "/update":
                return self.refuse(403, "auth_replayed", "Expected a fresh nonce, received a replayed request.", peer)
            earlier = entry.wait(self.retry_wait_s)
            if earlier is None:
                return Reply(503, {"error": "The first delivery of this request is still being handled; retry later."})
            # The first response only, never the center: a replay is no way to read the weights
            # (the client of a retried push_and_pull pulls them with a fresh request).
            return earlier  # type: ignore[return-value]
        try:
            reply = self._dispatch(route, path, body)
        except Exception as exc:  # keep serving; the caller sees a 500 with the reason
            logger.exception("Parameter server: error handling %s %s", method, route)
            reply = Reply(500, {"error": f"{type(exc).__name__}: {exc}"})
        if route != "/update":
            entry.complete(None)
            return reply
        entry.complete(reply)  # without the center: a retry gets this reply and no weights
        return self._with_center(reply, path)

    def _dispatch(self, route: str, path: str, body: bytes | bytearray | memoryview) -> Reply:
        query = parse_qs(urlsplit(path).query)
        compression = query.get("compression", ["none"])[0]
        if compression not in codec.COMPRESSIONS:
            return self.refuse(
                400, "malformed", f"Expected compression in {list(codec.COMPRESSIONS)}, received {compression!r:.40}."
            )
        if route == "/parameters":
            payload, version = self.state.encoded_parameters(compression)
            return Reply(200, {"version": version}, payload)
        if route == "/stats":
            stats = self.state.stats()
            stats["window_records"] = [r.to_dict() for r in self.state.records(include_failed=True)]
            return Reply(200, stats)
        return self._push(body)

    def _with_center(self, reply: Reply, path: str) -> Reply:
        """A successful push's reply plus the encoded center, when the push asked for it
        (``POST /update?pull=1[&compression=...]``): one request instead of a push and a pull.
        The center is encoded after the update was applied, so it contains it."""
        query = parse_qs(urlsplit(path).query)
        if reply.status != 200 or query.get("pull", ["0"])[0] != "1":
            return reply
        payload, _ = self.state.encoded_parameters(query.get("compression", ["none"])[0])
        return Reply(200, dict(reply.info), payload)

    def _push(self, body: bytes | bytearray | memoryview) -> Reply:
        try:
            # bounds zlib inflation; loose enough that a float64 update reaches the dtype check
            decoded = codec.decode(body, max_data_bytes=max(2 * self.state.nbytes, self.max_body_bytes))
        except codec.WireFormatError as exc:
            return self.refuse(400, "malformed", str(exc))
        if decoded.kind != codec.KIND_UPDATE:
            return self.refuse(
                400,
                "malformed",
                f"Expected an update payload (kind {codec.KIND_UPDATE}), received kind {decoded.kind}.",
            )
        try:  # every metadata field is checked before anything is applied
            fields = push_fields(decoded.meta)
        except UpdateRejected as exc:
            return self.refuse(exc.status, exc.reason, str(exc))
        try:  # ServerState.apply counts its own refusals
            version = self.state.apply(decoded.arrays, **fields)
        except UpdateRejected as exc:
            return Reply(exc.status, {"error": str(exc), "reason": exc.reason})
        return Reply(200, {"version": version})


def push_fields(meta: dict) -> dict:
    """The keyword arguments of :meth:`ServerState.apply` from a push's metadata, all checked.

    Args:
        meta: The ``meta`` object of the update payload.

    Returns:
        ``worker_id``, ``attempt_id``, ``version_seen``, ``samples``, ``epoch``, ``metrics``
        (names to finite floats) and, when the push belongs to a synchronous round, ``round``
        and ``task_attempt``.

    Raises:
        UpdateRejected: (400, reason ``'metadata'``) for a missing, mistyped or out-of-range
            field, or a metric that is not a finite number.
    """
    metrics = meta.get("metrics") or {}
    if not isinstance(metrics, dict) or len(metrics) > MAX_METRICS:
        raise UpdateRejected(
            f"Expected metrics as an object of at most {MAX_METRICS} names to "
            f"numbers, received {type(metrics).__name__}"
            f"{f' of {len(metrics)}' if isinstance(metrics, dict) else ''}.",
            reason="metadata",
        )
    checked = {}
    for name, value in metrics.items():
        number = _finite(value)
        if not (isinstance(name, str) and 0 < len(name) <= 256) or number is None:
            raise UpdateRejected(
                f"Expected metrics as names to finite numbers, received {name!r:.100}: {value!r:.100}.",
                reason="metadata",
            )
        checked[name] = number
    fields = {
        "worker_id": _str_field(meta, "worker_id"),
        "attempt_id": _str_field(meta, "attempt_id"),
        "version_seen": _int_field(meta, "version_seen"),
        "samples": _int_field(meta, "samples"),
        "epoch": _int_field(meta, "epoch"),
        "metrics": checked,
    }
    for name in ("round", "task_attempt"):  # a push of a synchronous round
        if name in meta:
            fields[name] = _int_field(meta, name)
    return fields


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _str_field(meta: dict, name: str) -> str:
    value = meta.get(name)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise UpdateRejected(
            f"Expected metadata field {name!r} as a non-empty string, received {value!r:.100}.", reason="metadata"
        )
    return value


def _int_field(meta: dict, name: str) -> int:
    value = meta.get(name)
    if type(value) is not int or not 0 <= value < MAX_METADATA_INT:
        raise UpdateRejected(
            f"Expected metadata field {name!r} as an integer in [0, {MAX_METADATA_INT}), received {value!r:.100}.",
            reason="metadata",
        )
    return value
