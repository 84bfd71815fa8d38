"""Reducers: an elementwise sum of a list of arrays over all tasks of a barrier stage.

Two reducers share one interface (:class:`Reducer`) and one wire format (:mod:`.wire`):

- :class:`HubReducer`: every rank sends its arrays to rank 0, which sums them and sends the sum
  back. Rank 0 moves ``2 (K - 1) × model`` bytes per round; the others ``2 × model``.
- :class:`RingReducer`: a ring all-reduce (reduce-scatter, then all-gather) over the arrays'
  bytes laid out back to back and cut into ``K`` chunks; each rank sends ``2 (K - 1) / K × model``
  bytes per round to its right neighbour and receives as much from its left one, whatever ``K``.

Both give every rank the same bytes: the ring sums each chunk in one order and then copies the
result around; the hub sums in rank order and sends one result.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from elephas.collective import wire
from elephas.parameter.auth import Signer
from elephas.parameter.codec import wire_dtype

logger = logging.getLogger(__name__)

ALIGN = 8
"""Each array starts at a multiple of 8 bytes, and chunk bounds are multiples of 8 bytes, so no
element of any dtype (at most 8 bytes wide) straddles two chunks."""
DEFAULT_TIMEOUT_S = 120.0
REDUCERS = ("hub", "ring")


@dataclass(frozen=True)
class Layout:
    """Where each array lies in the flat byte buffer a round moves.

    Attributes:
        shapes: The arrays' shapes.
        dtypes: Their little-endian dtypes.
        offsets: Byte offset of each array (multiples of :data:`ALIGN`).
        nbytes: Total bytes (a multiple of :data:`ALIGN`).
        digest: 8 bytes naming shapes and dtypes; a frame of another layout is refused.
    """

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    offsets: tuple[int, ...]
    nbytes: int
    digest: bytes

    @classmethod
    def of(cls, arrays: Sequence[np.ndarray]) -> Layout:
        """The layout of ``arrays``.

        Raises:
            ValueError: For a dtype the wire format does not carry, or booleans (no sum).
        """
        shapes, dtypes, offsets, offset = [], [], [], 0
        for a in arrays:
            name = wire_dtype(a.dtype)
            if name == "|b1":
                raise ValueError(f"Expected arrays of a numeric dtype, received dtype={a.dtype}.")
            dtype = np.dtype(name)
            shapes.append(tuple(int(d) for d in a.shape))
            dtypes.append(dtype)
            offsets.append(offset)
            offset += -(-int(a.size) * dtype.itemsize // ALIGN) * ALIGN
        text = repr([(s, d.str) for s, d in zip(shapes, dtypes)]).encode()
        return cls(tuple(shapes), tuple(dtypes), tuple(offsets), offset, hashlib.sha256(text).digest()[:8])

    def pack(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """A new flat ``uint8`` buffer holding ``arrays`` (one copy)."""
        flat = np.zeros(self.nbytes, dtype=np.uint8)
        for a, view in zip(arrays, self.views(flat)):
            np.copyto(view, a, casting="equiv")
        return flat

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        """The arrays, as views of ``flat``."""
        out = []
        for shape, dtype, offset in zip(self.shapes, self.dtypes, self.offsets):
            count = int(np.prod(shape, dtype=np.int64))
            out.append(flat[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape))
        return out

    def add(self, flat: np.ndarray, incoming: np.ndarray, start: int) -> None:
        """``flat[start:start+len(incoming)] += incoming``, elementwise in each array's dtype.

        ``start`` and ``len(incoming)`` are multiples of :data:`ALIGN`; padding bytes are left alone.
        """
        stop = start + len(incoming)
        for shape, dtype, offset in zip(self.shapes, self.dtypes, self.offsets):
            end = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            lo, hi = max(start, offset), min(stop, end)
            if lo < hi:
                target = flat[lo:hi].view(dtype)
                np.add(target, incoming[lo - start : hi - start].view(dtype), out=target)


class Reducer:
    """Elementwise sum of arrays over the ``world`` ranks of a stage; every rank gets the sum.

    Subclasses implement :meth:`_reduce`. A reducer is single-use after an error: the stage fails
    and Spark restarts it as a whole.

    Args:
        rank: This task's rank (its partition id in the barrier stage).
        world: The number of ranks.
        timeout: Seconds any single send or receive may block before the round fails.
    """

    def __init__(self, rank: int, world: int, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"Expected 0 <= rank < world, received rank={rank}, world={world}.")
        self.rank = rank
        self.world = world
        self.timeout = timeout
        self.round = 0
        self._broken: BaseException | None = None
        self._closed = False

    def allreduce(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Sum ``arrays`` elementwise with the same list on every other rank.

        Args:
            arrays: Numeric arrays of any shapes (0-d included); every rank passes the same shapes
                and dtypes in the same order.

        Returns:
            New arrays (the inputs are not changed): the sums, the same bytes on every rank.

        Raises:
            CollectiveError: A peer closed, timed out, or sent a frame of another round or layout.
            AuthenticationError: A frame's tag does not match the stage's secret.
            RuntimeError: The reducer was closed or broken by an earlier error.
        """
        if self._closed or self._broken is not None:
            raise RuntimeError(
                f"Expected an open reducer, received one that is "
                f"{'closed' if self._closed else 'broken by: ' + repr(self._broken)}. "
                "Open a new reducer (a new stage attempt)."
            )
        layout = Layout.of(arrays)
        flat = layout.pack(arrays)
        self.round += 1
        try:
            if self.world > 1:
                self._reduce(layout, flat)
        except BaseException as exc:
            self._broken = exc
            raise
        return layout.views(flat)

    def _reduce(self, layout: Layout, flat: np.ndarray) -> None:
        """Sum ``flat`` over every rank in place (each kind of reducer implements it)."""
        raise NotImplementedError  # abstract: HubReducer and RingReducer implement it

    def close(self) -> None:
        """Close the connections (idempotent)."""
        self._closed = True

    def __enter__(self) -> Reducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class HubReducer(Reducer):
    """Rank 0 collects every rank's arrays, sums them and sends the sum back.

    Args:
        rank: This task's rank.
        world: The number of ranks.
        addresses: ``host:port`` of every rank's listener (only rank 0's is used).
        secret: The stage's secret (bytes or hex, at least 16 bytes).
        listener: This rank's bound, listening socket (rank 0 accepts on it; closed here after the
            connections are made). ``None`` for ranks other than 0.
        session: The stage attempt's id (at most 32 characters), the same on every rank.
        timeout: Seconds any single send or receive may block.

    Example:
        >>> HubReducer(0, 1, ["127.0.0.1:1"], b"s" * 32).allreduce([np.ones(2)])[0].tolist()
        [1.0, 1.0]
    """

    def __init__(
        self,
        rank: int,
        world: int,
        addresses: Sequence[str],
        secret: bytes | str,
        listener: socket.socket | None = None,
        session: str = "",
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(rank, world, timeout)
        signer = Signer(secret)
        self._peers: dict[int, wire.Channel] = {}
        try:
            if world == 1:
                return
            if rank == 0:
                if listener is None:
                    raise ValueError("Expected a listening socket for rank 0 of a hub reducer, received None.")
                self._peers = wire.accept(listener, 0, set(range(1, world)), signer, session, timeout)
            else:
                self._peers = {0: wire.connect(addresses[0], rank, 0, signer, session, timeout)}
        finally:
            if listener is not None:
                listener.close()

    def _reduce(self, layout: Layout, flat: np.ndarray) -> None:
        r, digest = self.round, layout.digest
        if self.rank == 0:
            incoming = np.empty_like(flat)
            for peer in range(1, self.world):
                self._peers[peer].recv_into(wire.KIND_PUSH, r, 0, incoming, digest)
                layout.add(flat, incoming, 0)
            for peer in range(1, self.world):
                self._peers[peer].send(wire.KIND_RESULT, r, 0, flat, digest)
        else:
            self._peers[0].send(wire.KIND_PUSH, r, 0, flat, digest)
            self._peers[0].recv_into(wire.KIND_RESULT, r, 0, flat, digest)

    def close(self) -> None:
        """Close the connections (idempotent)."""
        super().close()
        for channel in self._peers.values():
            channel.close()
        self._peers = {}


class RingReducer(Reducer):
    """Ring all-reduce: reduce-scatter then all-gather over ``world`` chunks of the flat bytes.

    Each rank connects to its right neighbour ``(rank + 1) % world`` and accepts its left one.
    In each of the ``2 (world - 1)`` steps of a round a rank sends one chunk right (in a helper
    thread) while it receives one chunk from the left.

    Args:
        rank: This task's rank.
        world: The number of ranks.
        addresses: ``host:port`` of every rank's listener.
        secret: The stage's secret (bytes or hex, at least 16 bytes).
        listener: This rank's bound, listening socket (closed here after the connections are
            made); required when ``world > 1``.
        session: The stage attempt's id (at most 32 characters), the same on every rank.
        timeout: Seconds any single send or receive may block.

    Example:
        >>> RingReducer(0, 1, ["127.0.0.1:1"], b"s" * 32).allreduce([np.arange(3)])[0].tolist()
        [0, 1, 2]
    """

    def __init__(
        self,
        rank: int,
        world: int,
        addresses: Sequence[str],
        secret: bytes | str,
        listener: socket.socket | None = None,
        session: str = "",
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(rank, world, timeout)
        signer = Signer(secret)
        self._right: wire.Channel | None = None
        self._left: wire.Channel | None = None
        self._sender: concurrent.futures.ThreadPoolExecutor | None = None
        try:
            if world == 1:
                return
            if listener is None:
                raise ValueError("Expected a listening socket for a ring reducer, received None.")
            right, left = (rank + 1) % world, (rank - 1) % world
            self._right = wire.connect(addresses[right], rank, right, signer, session, timeout)
            self._left = wire.accept(listener, rank, {left}, signer, session, timeout)[left]
            self._sender = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"elephas-ring-{rank}")
        except BaseException:
            self.close()
            raise
        finally:
            if listener is not None:
                listener.close()

    def _bounds(self, nbytes: int) -> list[int]:
        units = nbytes // ALIGN
        return [units * i // self.world * ALIGN for i in range(self.world + 1)]

    def _reduce(self, layout: Layout, flat: np.ndarray) -> None:
        bounds = self._bounds(layout.nbytes)
        k, r, digest = self.world, self.round, layout.digest
        incoming = np.empty(max(b - a for a, b in zip(bounds, bounds[1:])), dtype=np.uint8)

        def chunk(i: int) -> np.ndarray:
            i %= k
            return flat[bounds[i] : bounds[i + 1]]

        for step in range(k - 1):  # reduce-scatter: afterwards this rank holds chunk rank+1 summed
            sending = self._sender.submit(self._right.send, wire.KIND_SCATTER, r, step, chunk(self.rank - step), digest)
            i = (self.rank - step - 1) % k
            target = incoming[: bounds[i + 1] - bounds[i]]
            self._receive(sending, wire.KIND_SCATTER, step, target, digest)
            layout.add(flat, target, bounds[i])
        for step in range(k - 1):  # all-gather: pass the summed chunks around
            sending = self._sender.submit(
                self._right.send, wire.KIND_GATHER, r, step, chunk(self.rank + 1 - step), digest
            )
            self._receive(sending, wire.KIND_GATHER, step, chunk(self.rank - step), digest)

    def _receive(
        self, sending: concurrent.futures.Future, kind: int, step: int, out: np.ndarray, digest: bytes
    ) -> None:
        try:
            self._left.recv_into(kind, self.round, step, out, digest)
        except BaseException:
            self._right.close()  # unblock the sender thread if it waits on a full socket
            raise
        sending.result(timeout=self.timeout + 1.0)

    def close(self) -> None:
        """Close the connections and stop the sender thread (idempotent)."""
        super().close()
        for channel in (self._right, self._left):
            if channel is not None:
                channel.close()
        self._right = self._left = None
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None


def get(identifier: str) -> type[Reducer]:
    """The reducer class named ``identifier`` (``'hub'`` or ``'ring'``).

    Raises:
        ValueError: For any other name.
    """
    classes = {"hub": HubReducer, "ring": RingReducer}
    if identifier not in classes:
        raise ValueError(f"Could not interpret reducer: {identifier!r}. Expected one of {list(REDUCERS)}.")
    return classes[identifier]
