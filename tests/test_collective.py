"""In-stage reducers: hub and ring all-reduce against a numpy sum, authentication, dead peers, and one
real barrier stage."""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

from elephas.collective import CollectiveError, HubReducer, Layout, RingReducer, get, open_reducer, wire
from elephas.parameter.auth import AuthenticationError, new_secret
from elephas.parameter.netio import bind_listener

TIMEOUT = 5.0


def _listeners(world):
    listeners = [bind_listener("127.0.0.1", 0) for _ in range(world)]
    return listeners, [f"127.0.0.1:{s.getsockname()[1]}" for s in listeners]


def _tcp_pair():
    with bind_listener("127.0.0.1", 0) as listener:
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    return a, b


def _run_group(cls, world, work, secret=None, timeout=TIMEOUT, secrets=None):
    """Open ``world`` reducers in threads and run ``work(rank, reducer)`` on each; results by rank (an
    exception raised in a rank is its result)."""
    secret = secret or new_secret()
    listeners, addresses = _listeners(world)
    results = [None] * world

    def main(rank):
        try:
            key = secrets[rank] if secrets else secret
            listener = listeners[rank] if (cls is RingReducer or rank == 0) else None
            if listener is None:
                listeners[rank].close()
            with cls(rank, world, addresses, key, listener=listener, session="s", timeout=timeout) as reducer:
                results[rank] = work(rank, reducer)
        except BaseException as exc:  # noqa: B036 - handed back to the test
            results[rank] = exc

    threads = [threading.Thread(target=main, args=(rank,)) for rank in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return results


def _inputs(rank, seed=0):
    rng = np.random.default_rng(seed + rank)
    return [
        rng.normal(size=(7, 5)).astype(np.float32),
        rng.normal(size=(1,)).astype(np.float64),  # fewer elements than ranks
        rng.normal(size=(3, 2)).astype(np.float16),
        np.array(10 * (rank + 1), dtype=np.int64),  # a 0-d count
        rng.normal(size=(0,)).astype(np.float32),  # empty
        rng.normal(size=(2, 3, 4)).astype(np.float32),
    ]


@pytest.mark.parametrize("cls", [HubReducer, RingReducer])
@pytest.mark.parametrize("world", [2, 3])
def test_allreduce_matches_numpy_sum_on_every_rank(cls, world):
    def work(rank, reducer):
        return [reducer.allreduce(_inputs(rank, seed=r)) for r in range(3)]  # three rounds

    results = _run_group(cls, world, work)
    for result in results:
        assert not isinstance(result, BaseException), result
        for r, out in enumerate(result):
            inputs = [_inputs(k, seed=r) for k in range(world)]
            for i, got in enumerate(out):
                parts = [inp[i] for inp in inputs]
                assert got.shape == parts[0].shape and got.dtype == parts[0].dtype
                tol = 1e-2 if got.dtype == np.float16 else 1e-5
                np.testing.assert_allclose(
                    got.astype(np.float64), np.sum([p.astype(np.float64) for p in parts], 0), rtol=tol, atol=tol
                )
            # The same bytes on every rank.
            for i, got in enumerate(out):
                assert got.tobytes() == results[0][r][i].tobytes()
    assert int(results[0][0][3]) == sum(10 * (k + 1) for k in range(world))


@pytest.mark.parametrize("cls", [HubReducer, RingReducer])
def test_inputs_are_not_changed_and_world_of_one_copies(cls):
    a = np.arange(5, dtype=np.float32)
    with cls(0, 1, ["127.0.0.1:1"], new_secret()) as reducer:
        out = reducer.allreduce([a])
    out[0][:] = 0
    assert a.tolist() == [0, 1, 2, 3, 4]


def test_layout_aligns_arrays_and_refuses_booleans():
    layout = Layout.of([np.zeros(3, np.float16), np.zeros((), np.int64), np.zeros(1, np.float32)])
    assert layout.offsets == (0, 8, 16) and layout.nbytes == 24
    assert Layout.of([np.zeros(3, np.float32)]).digest != Layout.of([np.zeros(3, np.float64)]).digest
    with pytest.raises(ValueError, match="numeric dtype"):
        Layout.of([np.zeros(2, bool)])


def test_get_resolves_names():
    assert get("ring") is RingReducer and get("hub") is HubReducer
    with pytest.raises(ValueError, match="Could not interpret reducer: 'tree'"):
        get("tree")


@pytest.mark.parametrize("cls", [HubReducer, RingReducer])
def test_mismatched_layouts_are_refused(cls):
    def work(rank, reducer):
        dtype = np.float32 if rank == 0 else np.int32  # same byte size, another layout
        return reducer.allreduce([np.ones(4, dtype)])

    results = _run_group(cls, 2, work)
    assert any(isinstance(r, CollectiveError) and "disagree" in str(r) for r in results), results


@pytest.mark.parametrize("cls", [HubReducer, RingReducer])
def test_a_rank_with_another_secret_cannot_join(cls):
    secrets = [new_secret(), new_secret()]
    results = _run_group(cls, 2, lambda rank, reducer: reducer.allreduce([np.ones(2)]), secrets=secrets, timeout=2)
    assert all(isinstance(r, (CollectiveError, AuthenticationError)) for r in results), results


def test_tampered_frame_is_refused():
    """A frame whose body changed on the way (same header, valid length) fails its tag."""
    secret = new_secret()
    signer = wire.Signer(secret)
    a, b = _tcp_pair()
    sender = wire.Channel(a, 0, 1, signer, "s", TIMEOUT)
    receiver = wire.Channel(b, 1, 0, signer, "s", TIMEOUT)
    body = np.arange(4, dtype=np.float32)
    # Capture a genuine frame, flip one body bit, deliver it.
    c, d = _tcp_pair()
    wire.Channel(c, 0, 1, signer, "s", TIMEOUT).send(wire.KIND_PUSH, 1, 0, body)
    frame = bytearray(d.recv(1 << 16))
    assert len(frame) == wire.FRAME.size + body.nbytes + wire.TAG_BYTES
    frame[wire.FRAME.size + 3] ^= 1
    a.sendall(frame)
    with pytest.raises(AuthenticationError, match="tag does not match"):
        receiver.recv_into(wire.KIND_PUSH, 1, 0, np.empty(4, np.float32))
    # A genuine frame replayed into the next round is refused by its header.
    sender.send(wire.KIND_PUSH, 1, 0, body)
    with pytest.raises(CollectiveError, match="received"):
        receiver.recv_into(wire.KIND_PUSH, 2, 0, np.empty(4, np.float32))
    for s in (c, d):
        s.close()
    sender.close()
    receiver.close()


def test_frame_with_forged_length_is_refused_before_reading_the_body():
    signer = wire.Signer(new_secret())
    a, b = _tcp_pair()
    a.sendall(wire.FRAME.pack(wire.MAGIC, wire.PROTOCOL_VERSION, wire.KIND_PUSH, 0, 0, 1, 1, 1 << 40, wire.NO_DIGEST))
    receiver = wire.Channel(b, 1, 0, signer, "s", TIMEOUT)
    with pytest.raises(CollectiveError, match="length"):
        receiver.recv_into(wire.KIND_PUSH, 1, 0, np.empty(4, np.float32))
    a.close()
    receiver.close()
    assert struct.calcsize("<4sBBHHHQQ8s") == wire.FRAME.size


def _reducer_threads():
    return [t for t in threading.enumerate() if t.name.startswith("elephas-ring")]


@pytest.mark.parametrize("cls", [HubReducer, RingReducer])
def test_silent_peer_times_out_with_a_clear_error_and_no_thread_left(cls):
    """Rank 2 connects and then never takes part in a round: the others fail within the time-out."""
    stuck = threading.Event()

    def work(rank, reducer):
        if rank == 2:
            stuck.wait(10)
            return "idle"
        start = time.monotonic()
        try:
            reducer.allreduce([np.ones(1000, np.float32)])
        except CollectiveError as exc:
            return exc, time.monotonic() - start

    releaser = threading.Timer(3.5, stuck.set)
    releaser.start()
    results = _run_group(cls, 3, work, timeout=1.0)
    releaser.join()
    failures = [r for r in results[:2] if isinstance(r, tuple)]
    assert failures, results
    for exc, elapsed in failures:
        assert elapsed < 3.0
        assert "within 1 s" in str(exc) or "closed" in str(exc)
    assert _reducer_threads() == []


@pytest.mark.parametrize("cls", [HubReducer, RingReducer])
def test_closed_peer_fails_the_round_at_once(cls):
    def work(rank, reducer):
        if rank == 1:
            reducer.close()
            return "closed"
        start = time.monotonic()
        with pytest.raises(CollectiveError):
            reducer.allreduce([np.ones(10, np.float32)])
        with pytest.raises(RuntimeError, match="broken"):
            reducer.allreduce([np.ones(10, np.float32)])
        return time.monotonic() - start

    results = _run_group(cls, 2, work, timeout=20.0)
    assert isinstance(results[0], float) and results[0] < 5.0, results
    assert _reducer_threads() == []


def test_ring_in_a_real_barrier_stage(spark):
    secret = new_secret().hex()

    def stage(rows):
        from pyspark import BarrierTaskContext

        from elephas.collective import open_reducer as open_

        context = BarrierTaskContext.get()
        rank = context.partitionId()
        values = np.array([float(v) for v in rows], dtype=np.float32)
        with open_("ring", context, secret, timeout=30) as reducer:
            total, count = reducer.allreduce([np.full(3, values.sum(), np.float32), np.array(len(values), np.int64)])
            again = reducer.allreduce([np.array([rank], np.float64)])[0]
        yield rank, total.tolist(), int(count), again.tolist()

    out = sorted(spark.sparkContext.parallelize(range(10), 2).barrier().mapPartitions(stage).collect())
    assert [r for r, *_ in out] == [0, 1]
    for _, total, count, again in out:
        assert total == [45.0] * 3 and count == 10 and again == [1.0]
    assert open_reducer.__name__ == "open_reducer"
