"""Authenticated frames between the tasks of one barrier stage.

A frame is::

    header  struct "<4sBBHHHQQ8s": magic b"ELPC", protocol version, kind, step, sender rank,
            receiver rank, round, body length, layout digest (8 bytes)
    body    raw little-endian array bytes (the slice of the flattened arrays the step moves)
    tag     32 bytes: the project's request MAC (:class:`elephas.parameter.auth.Signer`: a
            Poly1305 tag of header and body under a one-time key, inside HMAC-SHA256) over
            method ``"COLLECTIVE"``, path ``"/{kind}/{step}/{sender}/{receiver}"``, the session
            id as timestamp and the round as nonce

The session id is agreed once per stage attempt (random per attempt), so every frame of a stage
is signed under a key that signs nothing else; a receiver knows exactly which kind, round, step,
sender and length it expects next and refuses anything else, so replayed frames, frames of another
round or another attempt, and bodies of another layout are refused before their bytes are used.
Nothing received is unpickled or parsed beyond the fixed header.
"""

from __future__ import annotations

import errno
import hmac
import logging
import socket
import struct
import time
from collections.abc import Sequence

from elephas.parameter.auth import AuthenticationError, Buffer, Signer
from elephas.utils.netio import recv_exactly, send_segments, tune

logger = logging.getLogger(__name__)

FRAME = struct.Struct("<4sBBHHHQQ8s")
MAGIC = b"ELPC"
PROTOCOL_VERSION = 1
TAG_BYTES = 32
METHOD = "COLLECTIVE"

KIND_HELLO = 1
KIND_PUSH = 2
KIND_RESULT = 3
KIND_SCATTER = 4
KIND_GATHER = 5
KIND_NAMES = {
    KIND_HELLO: "hello",
    KIND_PUSH: "push",
    KIND_RESULT: "result",
    KIND_SCATTER: "reduce-scatter",
    KIND_GATHER: "all-gather",
}
NO_DIGEST = b"\0" * 8


class CollectiveError(ConnectionError):
    """A reducer's peer closed, timed out or sent a frame that does not belong to this round."""


class Channel:
    """One connected, authenticated socket between two ranks of a reducer.

    Args:
        sock: The connected socket (the channel owns it).
        local: This side's rank.
        peer: The other side's rank.
        signer: Signs and verifies frames with the stage's secret.
        session: The stage attempt's session id (at most 32 characters).
        timeout: Seconds a single send or receive may block.
    """

    def __init__(
        self, sock: socket.socket, local: int, peer: int, signer: Signer, session: str, timeout: float
    ) -> None:
        self.sock = sock
        self.local = local
        self.peer = peer
        self._signer = signer
        self._session = session
        self.timeout = timeout
        tune(sock, timeout)

    def send(self, kind: int, round_: int, step: int, body: Buffer, digest: bytes = NO_DIGEST) -> None:
        """Send one frame to the peer.

        Args:
            kind: The frame kind (``KIND_*``).
            round_: The reducer's round number.
            step: The step within the round.
            body: The bytes to send (not copied).
            digest: The 8-byte layout digest of the arrays the body belongs to.

        Raises:
            CollectiveError: If the peer is gone or the send timed out.
        """
        view = memoryview(body).cast("B")
        header = FRAME.pack(MAGIC, PROTOCOL_VERSION, kind, step, self.local, self.peer, round_, len(view), digest)
        tag = self._tag(kind, round_, step, self.local, self.peer, [header, view])
        try:
            send_segments(self.sock, [header, view, tag])
        except OSError as exc:
            raise self._failure("send", kind, round_, exc) from exc

    def recv_into(self, kind: int, round_: int, step: int, out: Buffer, digest: bytes = NO_DIGEST) -> None:
        """Receive the expected frame from the peer into ``out`` and check it.

        The body lands in ``out`` before its tag is checked; on any error the caller must discard
        ``out`` (the reducer does: an error ends it).

        Args:
            kind: The frame kind expected.
            round_: The round expected.
            step: The step expected.
            out: Where the body goes; its length is the body length expected.
            digest: The layout digest expected.

        Raises:
            CollectiveError: If the peer closed or timed out, or the frame is not the one expected.
            AuthenticationError: If the tag does not match (a tampered or foreign frame).
        """
        view = memoryview(out).cast("B")
        header = bytearray(FRAME.size)
        try:
            if not recv_exactly(self.sock, memoryview(header)):
                raise CollectiveError(
                    f"Expected a {KIND_NAMES[kind]} frame of round {round_} from rank "
                    f"{self.peer}, received end of stream: rank {self.peer} closed the "
                    "connection (its task failed or finished early)."
                )
            got = FRAME.unpack(header)
            want = (MAGIC, PROTOCOL_VERSION, kind, step, self.peer, self.local, round_, len(view), digest)
            if got != want:
                raise CollectiveError(
                    f"Expected frame (magic, version, kind, step, sender, receiver, round, length, layout) = "
                    f"{want}, received {got} from rank {self.peer}. The ranks disagree on the round or on "
                    "the arrays' shapes and dtypes, or the frame belongs to another stage."
                )
            mac = self._signer.body_mac(self._session, str(round_), FRAME.size + len(view))
            mac.feed(header)
            done = 0

            def progress(buf: memoryview, received: int) -> None:
                nonlocal done
                mac.feed(buf[done:received])
                done = received

            if len(view) and not recv_exactly(self.sock, view, progress):
                raise CollectiveError(f"Rank {self.peer} closed the connection in the middle of a frame.")
            tag = bytearray(TAG_BYTES)
            if not recv_exactly(self.sock, memoryview(tag)):
                raise CollectiveError(f"Rank {self.peer} closed the connection before the frame's tag.")
        except OSError as exc:
            if isinstance(exc, CollectiveError):
                raise
            raise self._failure("receive", kind, round_, exc) from exc
        expected = self._tag(kind, round_, step, self.peer, self.local, None, mac)
        if not hmac.compare_digest(expected, bytes(tag)):
            raise AuthenticationError(
                f"Expected a {KIND_NAMES[kind]} frame from rank {self.peer} signed with "
                "this stage's secret, received one whose tag does not match."
            )

    def _tag(
        self,
        kind: int,
        round_: int,
        step: int,
        sender: int,
        receiver: int,
        segments: Sequence[Buffer] | None,
        mac: object = None,
    ) -> bytes:
        path = f"/{kind}/{step}/{sender}/{receiver}"
        return bytes.fromhex(self._signer.tag(METHOD, path, self._session, str(round_), segments or b"", mac))

    def _failure(self, what: str, kind: int, round_: int, exc: OSError) -> CollectiveError:
        if isinstance(exc, TimeoutError) or exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return CollectiveError(
                f"Expected to {what} a {KIND_NAMES[kind]} frame of round {round_} "
                f"{'to' if what == 'send' else 'from'} rank {self.peer} within "
                f"{self.timeout:g} s, received nothing in that time: rank {self.peer} "
                "is stuck or gone. Raise the reducer's timeout if its rounds are slow."
            )
        return CollectiveError(
            f"Could not {what} a {KIND_NAMES[kind]} frame of round {round_} "
            f"{'to' if what == 'send' else 'from'} rank {self.peer}: {exc}."
        )

    def check_hello(self, header: bytearray) -> None:
        """Check a hello whose header was already read (reads and checks its tag)."""
        got = FRAME.unpack(header)
        want = (MAGIC, PROTOCOL_VERSION, KIND_HELLO, 0, self.peer, self.local, 0, 0, NO_DIGEST)
        if got != want:
            raise CollectiveError(f"Expected a hello frame {want}, received {got}.")
        mac = self._signer.body_mac(self._session, "0", FRAME.size)
        mac.feed(header)
        tag = bytearray(TAG_BYTES)
        if not recv_exactly(self.sock, memoryview(tag)):
            raise CollectiveError("Connection closed before the hello's tag.")
        if not hmac.compare_digest(self._tag(KIND_HELLO, 0, 0, self.peer, self.local, None, mac), bytes(tag)):
            raise AuthenticationError(
                "Expected a hello signed with this stage's secret, received one whose tag does not match."
            )

    def close(self) -> None:
        """Shut the socket down (wakes a thread blocked on it) and close it."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def connect(address: str, local: int, peer: int, signer: Signer, session: str, timeout: float) -> Channel:
    """Connect to ``peer``'s listener at ``host:port`` and introduce this rank with a signed hello.

    Retries refused connections until ``timeout`` (the peer's listener is bound before addresses
    are exchanged, so refusals are rare and short).

    Raises:
        CollectiveError: If the peer could not be reached within ``timeout``.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host, int(port)), timeout=max(deadline - time.monotonic(), 0.001))
            break
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise CollectiveError(
                    f"Expected to reach rank {peer} at {address} within {timeout:g} s, "
                    f"received: {exc}. Check that executors can reach each other."
                ) from exc
            time.sleep(0.05)
    channel = Channel(sock, local, peer, signer, session, timeout)
    channel.send(KIND_HELLO, 0, 0, b"")
    return channel


def accept(
    listener: socket.socket, local: int, peers: set[int], signer: Signer, session: str, timeout: float
) -> dict[int, Channel]:
    """Accept one signed connection from each rank in ``peers``.

    A connection whose hello is not a valid frame from an expected rank of this session is closed
    and logged; accepting goes on until every expected rank arrived or ``timeout`` passed.

    Returns:
        The channels, by peer rank.

    Raises:
        CollectiveError: If some rank did not connect within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    channels: dict[int, Channel] = {}
    try:
        while len(channels) < len(peers):
            left = deadline - time.monotonic()
            if left <= 0:
                raise CollectiveError(
                    f"Expected connections from ranks {sorted(peers)} within {timeout:g} s, "
                    f"received them from {sorted(channels)}. A task of the stage is stuck or "
                    "cannot reach this executor."
                )
            listener.settimeout(left)
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            channel = _hello(sock, local, peers - set(channels), signer, session, min(left, timeout), timeout)
            if channel is not None:
                channels[channel.peer] = channel
    except BaseException:
        for channel in channels.values():
            channel.close()
        raise
    return channels


def _hello(
    sock: socket.socket, local: int, expected: set[int], signer: Signer, session: str, wait: float, timeout: float
) -> Channel | None:
    """Read and check, within ``wait`` seconds, the hello of a new connection; ``None`` (connection
    closed) if it fails, else the channel with the per-operation ``timeout``."""
    header = bytearray(FRAME.size)
    try:
        tune(sock, wait)
        if recv_exactly(sock, memoryview(header)):
            sender = FRAME.unpack(header)[4]
            if sender in expected:
                channel = Channel(sock, local, sender, signer, session, wait)
                channel.check_hello(header)  # the whole frame, tag included
                tune(sock, timeout)
                channel.timeout = timeout
                return channel
    except (OSError, AuthenticationError, struct.error) as exc:
        logger.warning("Refused a connection to the reducer of rank %d: %s", local, exc)
    else:
        logger.warning("Refused a connection to the reducer of rank %d: not a hello from an expected rank.", local)
    sock.close()
    return None
