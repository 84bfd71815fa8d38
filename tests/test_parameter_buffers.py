"""Pooled byte buffers (reused once unreferenced, never while anything made from them lives) and
the parameter server's center versions kept in the payloads that pulls send."""

from __future__ import annotations

import numpy as np
import pytest

from elephas.engine.strategies.base import Strategy
from elephas.parameter import codec
from elephas.parameter.buffers import BufferPool
from elephas.parameter.state import ServerState

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


class _Scaled(Strategy):
    """C ← C + Δ/(staleness + 1): a rule of its own, so server_apply_to copies then applies."""

    def server_apply(self, center, update, staleness=0):
        for c, u in zip(center, update):
            c += u / (staleness + 1)


class _Failing(Strategy):
    def server_apply(self, center, update, staleness=0):
        center[0] += update[0]
        raise RuntimeError("boom after the first array")


@pytest.mark.parametrize(
    "strategy, expected", [(Strategy(), 3.0), (_Scaled(), 2.0)], ids=["sum (fused)", "own rule (copy, then apply)"]
)
def test_server_apply_to_writes_the_result_and_leaves_the_center(strategy, expected):
    center = [np.ones((2, 3), np.float32), np.arange(4, dtype=np.float32)]
    update = [np.full((2, 3), 2.0, np.float32), np.full(4, 2.0, np.float32)]
    out = [np.empty_like(c) for c in center]
    strategy.server_apply_to(center, update, out, staleness=1)
    np.testing.assert_array_equal(center[0], np.ones((2, 3)))
    np.testing.assert_array_equal(center[1], np.arange(4))
    np.testing.assert_array_equal(out[0], np.full((2, 3), expected))
    np.testing.assert_array_equal(out[1], np.arange(4) + expected - 1.0)


def test_locked_center_versions_are_payloads_that_pulls_send_without_copying():
    state = ServerState([np.zeros(1000, np.float32), np.zeros((3, 4), np.float32)], Strategy())
    first, version = state.encoded_parameters()
    assert version == 0 and state.encoded_parameters()[0] is first  # no encoding per pull
    snapshot = bytes(first)
    ones = [np.ones(1000, np.float32), np.ones((3, 4), np.float32)]
    assert state.apply(ones, worker_id="w", attempt_id="a", version_seen=0) == 1
    second, version = state.encoded_parameters()
    assert version == 1 and second is not first
    assert bytes(first) == snapshot  # the payload of version 0 was not written again
    decoded = codec.decode(second)
    assert decoded.meta == {"version": 1}
    for got in decoded.arrays:
        np.testing.assert_array_equal(got, np.ones(got.shape))
    weights, _ = state.pull()
    np.testing.assert_array_equal(weights[1], np.ones((3, 4)))


def test_an_apply_that_raises_leaves_center_and_version_as_they_were():
    state = ServerState([np.zeros(5, np.float32), np.zeros(2, np.float32)], _Failing())
    with pytest.raises(RuntimeError, match="boom"):
        state.apply([np.ones(5, np.float32), np.ones(2, np.float32)], worker_id="w", attempt_id="a", version_seen=0)
    weights, version = state.pull()
    assert version == 0
    assert not any(w.any() for w in weights)
    payload, version = state.encoded_parameters()
    assert version == 0 and not any(a.any() for a in codec.decode(payload).arrays)
