"""Reuse of the large byte buffers that payloads are received into and encoded into.

A fresh 4 MB buffer costs a thousand page faults the first time it is written, which on a
loopback round trip is as much as the copy itself. :class:`BufferPool` hands out buffers of a
pooled block and takes a block back once nothing refers to what it handed out any more: it
keeps a weak reference to each handed-out buffer, and whatever is made from that buffer keeps
it alive. The block is a ``bytearray`` that only the pool refers to and the handed-out buffer is
a numpy array over it, so every numpy view, slice, reshape or ``frombuffer`` array made from
the buffer has the buffer itself as its base (numpy stops collapsing a base chain at an object
that is not an array), as does every memoryview of it. A block is therefore never reused while
a decoded array, a pending send or a cache still uses it.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np


class BufferPool:
    """Byte buffers of exact sizes, reused once unreferenced.

    Args:
        keep: Idle blocks kept at most (others are left to the allocator).

    Example:
        >>> pool = BufferPool()
        >>> a = pool.get(1 << 20)
        >>> address = a.ctypes.data
        >>> b = a[16:].view(np.float32)  # anything made from the buffer keeps it in use
        >>> del a
        >>> pool.get(1 << 20).ctypes.data == address
        False
        >>> del b
        >>> pool.get(1 << 20).ctypes.data == address
        True
    """

    def __init__(self, keep: int = 3) -> None:
        self.keep = int(keep)
        self._blocks: list[tuple[bytearray, weakref.ref | None]] = []
        self._lock = threading.Lock()

    def get(self, nbytes: int) -> np.ndarray:
        """A writable 1-D ``uint8`` array of ``nbytes`` bytes (contents undefined).

        The array is a view of a pooled block; the block goes back to the pool when the array
        and everything made from it are gone.
        """
        with self._lock:
            blocks = self._blocks
            for i, (block, handed) in enumerate(blocks):
                if (handed is None or handed() is None) and len(block) >= nbytes:
                    view = np.frombuffer(block, dtype=np.uint8, count=nbytes)
                    blocks[i] = (block, weakref.ref(view))
                    return view
            block = bytearray(nbytes)
            view = np.frombuffer(block, dtype=np.uint8, count=nbytes)
            idle = [i for i, (_, h) in enumerate(blocks) if h is None or h() is None]
            for i in reversed(idle[: max(0, len(idle) - self.keep + 1)]):  # the oldest idle ones
                del blocks[i]
            blocks.append((block, weakref.ref(view)))
            return view

    def idle(self) -> int:
        """How many pooled blocks nothing refers to now."""
        with self._lock:
            return sum(1 for _, h in self._blocks if h is None or h() is None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._blocks)
