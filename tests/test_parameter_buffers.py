"""Pooled byte buffers: reused once unreferenced, never while anything made from them lives."""

from __future__ import annotations

import numpy as np
import pytest

from elephas.parameter import codec
from elephas.parameter.buffers import BufferPool

DERIVED = {
    "slice": lambda b: b[100:],
    "reshape": lambda b: b.reshape(256, 256),
    "dtype view": lambda b: b.view(np.float32)[3:],
    "memoryview": lambda b: memoryview(b).cast("B")[10:],
    "frombuffer": lambda b: np.frombuffer(memoryview(b).cast("B")[64:], np.float32),
}


@pytest.mark.parametrize("derive", list(DERIVED), ids=list(DERIVED))
def test_buffer_is_reused_only_when_nothing_refers_to_it(derive):
    pool = BufferPool()
    buffer = pool.get(1 << 16)
    address = buffer.ctypes.data
    keep = DERIVED[derive](buffer)
    del buffer
    other = pool.get(1 << 16)
    assert other.ctypes.data != address  # still used through `keep`: not handed out again
    del other, keep
    assert pool.get(1 << 16).ctypes.data == address  # released: the same block again


def test_idle_blocks_are_bounded():
    pool = BufferPool(keep=2)
    held = [pool.get(1000) for _ in range(5)]
    assert len(pool) == 5 and pool.idle() == 0
    del held
    assert pool.idle() == 5
    kept = pool.get(1000)  # an idle block is reused
    assert len(pool) == 5 and pool.idle() == 4
    bigger = pool.get(2000)  # bigger than every block: a new one; idle blocks are cut to keep - 1
    assert len(pool) == 3 and pool.idle() == 1
    del kept, bigger
    assert pool.idle() == 3
    for _ in range(3):
        pool.get(3000)
        assert pool.idle() <= 2


def test_encoding_into_a_pooled_buffer_equals_a_fresh_encoding():
    pool = BufferPool()
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2, 3], np.int64)]
    fresh = codec.encode(arrays, codec.KIND_PARAMETERS, "none", {"version": 7})
    dirty = pool.get(len(fresh))
    dirty[:] = 0xAB
    del dirty
    pooled = codec.encode(arrays, codec.KIND_PARAMETERS, "none", {"version": 7}, allocate=pool.get)
    assert bytes(pooled) == bytes(fresh)
    decoded = codec.decode(pooled)
    assert decoded.meta == {"version": 7}
    for got, want in zip(decoded.arrays, arrays):
        np.testing.assert_array_equal(got, want)
    zipped = codec.encode(arrays, codec.KIND_PARAMETERS, "zlib", allocate=pool.get)
    assert isinstance(zipped, bytearray)  # compressed payloads are not written into the pool
