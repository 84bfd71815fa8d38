"""Transport-independent request handling: authenticate, decode, check, apply, answer.

Both transports turn a request into ``(method, path, auth headers, body)`` and send back the
:class:`Reply` of :meth:`ParameterService.handle`, so they behave identically by construction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import numpy as np

from elephas.parameter import codec
from elephas.parameter.auth import AuthenticationError, BodyMac, Buffer, Verifier, split_trailer
from elephas.parameter.state import ServerState, UpdateRejected

logger = logging.getLogger(__name__)

HEADER_SLACK_BYTES = 64 * 1024
_ROUTES = {("GET", "/parameters"), ("POST", "/update"), ("GET", "/stats"), ("GET", "/health")}
"""Routes; ``POST /update?pull=1`` also answers with the center after the update (see
:meth:`ParameterService._with_center`)."""


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

    def __init__(self, state: ServerState, verifier: Verifier, max_body_bytes: int,
                 retry_wait_s: float = 60.0) -> None:
        self.state = state
        self.verifier = verifier
        self.max_body_bytes = max_body_bytes
        self.retry_wait_s = retry_wait_s

    def check_length(self, length: int) -> Reply | None:
        """A 413 reply when a declared body length is over the cap, else ``None``."""
        if length > self.max_body_bytes:
            self.state.count_refused("too_large")
            return Reply(413, {"error": f"Expected a body of at most {self.max_body_bytes} bytes,"
                                        f" received a declared length of {length}."})
        if length < 0:
            self.state.count_refused("malformed")
            return Reply(400, {"error": f"Expected a non-negative body length, received {length}."})
        return None

    def body_mac(self, headers: Mapping[str, str], length: int) -> BodyMac | None:
        """A MAC to feed while receiving a body of ``length`` bytes (``None`` when the
        authentication headers are missing or malformed: the request is refused anyway)."""
        return self.verifier.body_mac(headers, length)

    def handle(self, method: str, path: str, headers: Mapping[str, str],
               body: Buffer = b"", mac: BodyMac | None = None) -> Reply:
        """Answer one request.

        Args:
            method: ``'GET'`` or ``'POST'``.
            path: Path with query string (``/parameters?compression=fp16``).
            headers: The authentication headers.
            body: The request body.
            mac: The body's MAC, fed while it was received (optional, see :meth:`body_mac`).

        Returns:
            The reply to send.
        """
        route = urlsplit(path).path
        if (method, route) not in _ROUTES:
            return Reply(404, {"error": f"Expected one of {sorted(_ROUTES)}, received "
                                        f"{method} {route!r:.200}."})
        if route == "/health":
            return Reply(200, {"status": "ok"})
        too_large = self.check_length(len(body))
        if too_large is not None:
            return too_large
        try:
            headers, body = split_trailer(headers, body)
            entry, fresh = self.verifier.verify(method, path, headers, body, mac)
        except AuthenticationError as exc:
            self.state.count_refused(f"auth_{exc.reason}")
            return Reply(exc.status, {"error": str(exc)})
        if not fresh:
            if route != "/update":
                self.state.count_refused("auth_replayed")
                return Reply(403, {"error": "Expected a fresh nonce, received a replayed request."})
            earlier = entry.wait(self.retry_wait_s)
            if earlier is None:
                return Reply(503, {"error": "The first delivery of this request is still being "
                                            "handled; retry later."})
            return self._with_center(earlier, path)  # type: ignore[arg-type]
        try:
            reply = self._dispatch(route, path, body)
        except Exception as exc:  # keep serving; the caller sees a 500 with the reason
            logger.exception("Parameter server: error handling %s %s", method, route)
            reply = Reply(500, {"error": f"{type(exc).__name__}: {exc}"})
        if route != "/update":
            entry.complete(None)
            return reply
        entry.complete(reply)  # without the center: a retry gets the center of its own time
        return self._with_center(reply, path)

    def _dispatch(self, route: str, path: str, body: bytes | bytearray | memoryview) -> Reply:
        query = parse_qs(urlsplit(path).query)
        compression = query.get("compression", ["none"])[0]
        if compression not in codec.COMPRESSIONS:
            return Reply(400, {"error": f"Expected compression in {list(codec.COMPRESSIONS)},"
                                        f" received {compression!r:.40}."})
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
            decoded = codec.decode(body, max_data_bytes=max(2 * self.state.nbytes,
                                                            self.max_body_bytes))
        except codec.WireFormatError as exc:
            self.state.count_refused("malformed")
            return Reply(400, {"error": str(exc)})
        if decoded.kind != codec.KIND_UPDATE:
            self.state.count_refused("malformed")
            return Reply(400, {"error": f"Expected an update payload (kind "
                                        f"{codec.KIND_UPDATE}), received kind {decoded.kind}."})
        meta = decoded.meta
        try:
            worker_id = _str_field(meta, "worker_id")
            attempt_id = _str_field(meta, "attempt_id")
            version_seen = _int_field(meta, "version_seen")
            samples = _int_field(meta, "samples")
            epoch = _int_field(meta, "epoch")
            rounds = {name: _int_field(meta, name) for name in ("round", "stage_attempt") if name in meta}
            metrics = meta.get("metrics") or {}
            if not isinstance(metrics, dict) or not all(
                    isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                    for k, v in metrics.items()):
                raise UpdateRejected("Expected metrics as an object of names to numbers, "
                                     f"received {metrics!r:.200}.", reason="metadata")
        except UpdateRejected as exc:
            self.state.count_refused(exc.reason)
            return Reply(exc.status, {"error": str(exc), "reason": exc.reason})
        try:  # ServerState.apply counts its own refusals
            version = self.state.apply(decoded.arrays, worker_id=worker_id,
                                       attempt_id=attempt_id, version_seen=version_seen,
                                       samples=samples, metrics=metrics, epoch=epoch, **rounds)
        except UpdateRejected as exc:
            return Reply(exc.status, {"error": str(exc), "reason": exc.reason})
        return Reply(200, {"version": version})


def _str_field(meta: dict, name: str) -> str:
    value = meta.get(name)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise UpdateRejected(f"Expected metadata field {name!r} as a non-empty string, "
                             f"received {value!r:.100}.", reason="metadata")
    return value


def _int_field(meta: dict, name: str) -> int:
    value = meta.get(name)
    if type(value) is not int or value < 0:
        raise UpdateRejected(f"Expected metadata field {name!r} as a non-negative integer, "
                             f"received {value!r:.100}.", reason="metadata")
    return value
