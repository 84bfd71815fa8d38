"""Parameter server contract, load, bad input and lifecycle tests (real servers on loopback)."""

from __future__ import annotations

import http.client
import os
import pickle
import socket
import tempfile
import threading
import time

import numpy as np
import pytest

from elephas.engine.strategies.base import Strategy
from elephas.parameter import (
    HOST_ENV_VAR,
    ParameterClient,
    ParameterServer,
    ParameterServerError,
    codec,
    netio,
    resolve_advertised_host,
)
from elephas.parameter.auth import (
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SIGNATURE_TRAILER,
    TRAILER_BYTES,
    Signer,
    new_secret,
)

MODES = ["http", "socket"]


class AddStrategy(Strategy):
    """C += Δ under the lock."""

    name = "test-add"
    locked = True


class StalenessStrategy(Strategy):
    """C += Δ / (staleness + 1), like DynSGD."""

    name = "test-dynsgd"
    locked = True

    def server_apply(self, center, update, staleness=0):
        for c, u in zip(center, update):
            c += u / (staleness + 1)


def _weights():
    return [np.zeros((2, 3), np.float32), np.arange(4, dtype=np.float32)]


def _ones(scale=1.0):
    return [np.full((2, 3), scale, np.float32), np.full(4, scale, np.float32)]


def _server_threads():
    return [t for t in threading.enumerate() if t.name.startswith("elephas-ps")]


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture
def server(mode):
    srv = ParameterServer(_weights(), AddStrategy(), mode=mode)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
    assert not _server_threads()


def _push(client, update, version_seen, **kw):
    kw.setdefault("worker_id", "w0")
    kw.setdefault("attempt_id", "a0")
    return client.push(update, version_seen=version_seen, **kw)


# ----- contract ---------------------------------------------------------------------------------
def test_pull_returns_current_weights_and_version(server):
    with server.client() as client:
        weights, version = client.pull()
    assert version == 0
    for got, want in zip(weights, _weights()):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_push_applies_strategy_rule_and_counts(server):
    with server.client() as client:
        assert _push(client, _ones(1.5), 0, samples=10, metrics={"loss": 2.0}, epoch=0) == 1
        assert _push(client, _ones(0.25), 1, worker_id="w1", samples=30, metrics={"loss": 1.0}) == 2
        weights, version = client.pull()
        stats = client.stats()
    assert version == 2
    np.testing.assert_array_equal(weights[0], np.full((2, 3), 1.75, np.float32))
    np.testing.assert_array_equal(weights[1], np.arange(4) + 1.75)
    assert stats["version"] == stats["updates_applied"] == 2
    assert stats["updates_refused"] == 0
    assert stats["workers"]["w0"] == {"updates": 1, "samples": 10, "refused": 0, "attempts": ["a0"]}
    assert stats["workers"]["w1"]["samples"] == 30
    assert stats["bytes_in"] > 2 * 40 and stats["bytes_out"] > 40
    assert [r["metrics"] for r in stats["window_records"]] == [{"loss": 2.0}, {"loss": 1.0}]
    records = server.state.records()
    assert [(r.worker_id, r.samples, r.version, r.staleness) for r in records] == [("w0", 10, 1, 0), ("w1", 30, 2, 0)]


@pytest.mark.parametrize("transport", MODES)
def test_staleness_scaled_rule(transport):
    with ParameterServer(_weights(), StalenessStrategy(), mode=transport) as srv:
        with srv.client() as a, srv.client() as b:
            _, seen_a = a.pull()
            _, seen_b = b.pull()
            assert _push(b, _ones(4.0), seen_b) == 1  # staleness 0: C += 4
            assert _push(a, _ones(4.0), seen_a) == 2  # staleness 1: C += 4 / 2
            _, seen_b = b.pull()
            assert _push(b, _ones(4.0), seen_b - 2) == 3  # staleness 2... from version 0
            weights, _ = a.pull()
    np.testing.assert_array_equal(weights[0], np.full((2, 3), 4 + 2 + 4 / 3, np.float32))
    assert [r.staleness for r in srv.state.records()] == [0, 1, 2]


@pytest.mark.parametrize("compression", ["fp16", "zlib"])
def test_compressed_pull_and_push(server, compression):
    with server.client(compression=compression) as client:
        assert _push(client, _ones(0.5), 0) == 1
        weights, version = client.pull()
    assert version == 1 and weights[1].dtype == np.float32
    np.testing.assert_array_equal(weights[1], np.arange(4) + 0.5)


def test_failed_attempts_leave_records_but_stay_applied(server):
    with server.client() as client:
        _push(client, _ones(), 0, attempt_id="t1.0", samples=5)
        _push(client, _ones(), 1, attempt_id="t1.1", samples=7)
    server.state.mark_attempt_failed("t1.0")
    assert [r.attempt_id for r in server.state.records()] == ["t1.1"]
    assert len(server.state.records(include_failed=True)) == 2
    stats = server.state.stats()
    assert stats["updates_applied"] == 2 and stats["updates_from_failed_attempts"] == 1
    assert stats["failed_attempts"] == ["t1.0"]


@pytest.mark.parametrize("transport", MODES)
def test_big_updates_are_sent_without_copies_and_verified_while_received(transport):
    """A 6 MB update arrives in many reads, each hashed as it comes; a flipped byte is refused."""
    weights = [np.zeros(1_000_000, np.float32), np.zeros((500, 1000), np.float32)]
    rng = np.random.default_rng(5)
    update = [rng.standard_normal(w.shape).astype(np.float32) for w in weights]
    with ParameterServer(weights, AddStrategy(), mode=transport) as srv:
        with srv.client() as client:
            assert _push(client, update, 0) == 1
            pulled, version = client.pull()
        body = _update_body(update)
        signer = Signer(srv.secret)
        headers = signer.sign("POST", "/update", body)
        tampered = bytearray(body)
        tampered[len(body) // 2] ^= 1
        assert _raw(srv, "POST", "/update", headers, tampered)[0] == 403
        assert srv.state.version == 1
    assert version == 1
    for got, want in zip(pulled, update):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("compression", ["none", "fp16"])
def test_push_and_pull_is_one_request_answered_with_the_center(server, compression):
    with server.client(compression=compression) as client, server.client() as other:
        assert client.push_and_pull(_ones(1.5), worker_id="w0", attempt_id="a0", version_seen=0)[0] == 1
        assert _push(other, _ones(0.25), 1, worker_id="w1") == 2
        version, center, center_version = client.push_and_pull(
            _ones(1.0), worker_id="w0", attempt_id="a0", version_seen=1, samples=3
        )
    assert version == center_version == 3
    assert center[0].dtype == np.float32
    np.testing.assert_array_equal(center[0], np.full((2, 3), 2.75, np.float32))
    np.testing.assert_array_equal(center[1], np.arange(4) + 2.75)
    assert [(r.worker_id, r.version, r.staleness) for r in server.state.records()] == [
        ("w0", 1, 0),
        ("w1", 2, 0),
        ("w0", 3, 1),
    ]
    refused = server.state.stats()["updates_refused"]
    assert refused == 0


def test_retried_push_and_pull_is_applied_once_and_bad_queries_change_nothing(server):
    with server.client() as client:
        body = codec.encode(
            _ones(),
            codec.KIND_UPDATE,
            "none",
            {"worker_id": "w", "attempt_id": "a", "version_seen": 0, "samples": 1, "epoch": 0},
        )
        bad = "/update?pull=1&compression=bogus"
        status, info = client._channel.request("POST", bad, client._signer.sign("POST", bad, body), body)[:2]
        assert status == 400 and "compression" in info["error"]
        path = "/update?pull=1&compression=none"
        headers = client._signer.sign("POST", path, body)
        first = client._channel.request("POST", path, headers, body)
        client._channel.close()
        second = client._channel.request("POST", path, headers, body)
    assert first[0] == second[0] == 200 and first[1]["version"] == second[1]["version"] == 1
    decoded = codec.decode(first[2])
    assert decoded.meta["version"] == 1
    np.testing.assert_array_equal(decoded.arrays[0], np.ones((2, 3), np.float32))
    assert second[2] is None  # a replay gets the first answer, never weights (docs/security.md)
    assert server.state.version == 1


def test_retried_push_is_applied_once(server):
    """A push whose response was lost is resent as is; the server answers it again."""
    with server.client() as client:
        body = codec.encode(
            _ones(),
            codec.KIND_UPDATE,
            "none",
            {"worker_id": "w", "attempt_id": "a", "version_seen": 0, "samples": 1, "epoch": 0},
        )
        headers = client._signer.sign("POST", "/update", body)
        first = client._channel.request("POST", "/update", headers, body)
        client._channel.close()  # a new connection, as after a lost response
        second = client._channel.request("POST", "/update", headers, body)
        _, version = client.pull()
    assert first[:2] == second[:2] == (200, {"version": 1})
    assert version == 1


def test_load_no_lost_update(mode):
    """16 clients x 200 pushes under the lock end with the exact sum, in bounded time."""
    clients_n, pushes = 16, 200
    weights = [np.zeros(8, np.float32), np.zeros((2, 2), np.float32)]
    errors = []
    with ParameterServer(weights, AddStrategy(), mode=mode) as srv:
        config = srv.client_config()

        def work(i):
            try:
                with ParameterClient(**config) as client:
                    delta = [np.full(8, i + 1, np.float32), np.full((2, 2), i + 1, np.float32)]
                    for k in range(pushes):
                        client.push(
                            delta, worker_id=f"w{i}", attempt_id=f"a{i}", version_seen=0 if k == 0 else client.pull()[1]
                        )
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(clients_n)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        elapsed = time.monotonic() - start
        assert not any(t.is_alive() for t in threads), "clients deadlocked"
        assert not errors, errors[:3]
        center, version = srv.state.pull()
    expected = pushes * sum(range(1, clients_n + 1))
    assert version == clients_n * pushes
    np.testing.assert_array_equal(center[0], np.full(8, expected, np.float32))
    np.testing.assert_array_equal(center[1], np.full((2, 2), expected, np.float32))
    assert elapsed < 120
    assert srv.state.stats()["workers"]["w3"]["updates"] == pushes


# ----- bad input --------------------------------------------------------------------------------
def _raw(server, method, path, headers, body):
    """Send a request through the transport, bypassing the client's checks."""
    channel_cls = {"http": "_HttpChannel", "socket": "_SocketChannel"}[server.mode]
    from elephas.parameter import client as client_module

    channel = getattr(client_module, channel_cls)(server.host, server.port, 10)
    try:
        return channel.request(method, path, headers, body)[:2]
    finally:
        channel.close()


def _update_body(update, **meta):
    base = {"worker_id": "w", "attempt_id": "a", "version_seen": 0, "samples": 1, "epoch": 0}
    return codec.encode(update, codec.KIND_UPDATE, "none", {**base, **meta})


def _assert_untouched(server):
    with server.client() as client:
        weights, version = client.pull()
        assert client.health()
    assert version == 0
    for got, want in zip(weights, _weights()):
        np.testing.assert_array_equal(got, want)


def test_unauthenticated_and_wrong_signature_are_refused(server):
    body = _update_body(_ones())
    assert _raw(server, "POST", "/update", {}, body)[0] == 401
    assert _raw(server, "GET", "/parameters", {}, b"")[0] == 401
    assert _raw(server, "GET", "/stats", {}, b"")[0] == 401
    wrong = Signer(new_secret())
    assert _raw(server, "POST", "/update", wrong.sign("POST", "/update", body), body)[0] == 403
    right = Signer(server.secret)
    tampered = bytearray(body)
    headers = right.sign("POST", "/update", body)
    tampered[-1] ^= 1
    assert _raw(server, "POST", "/update", headers, tampered)[0] == 403
    # a valid signature for another path or method does not carry over
    assert _raw(server, "POST", "/update", right.sign("GET", "/update", body), body)[0] == 403
    pull_headers = right.sign("GET", "/parameters?compression=none")
    assert _raw(server, "GET", "/parameters?compression=none", pull_headers, b"")[0] == 200
    assert _raw(server, "GET", "/parameters?compression=none", pull_headers, b"")[0] == 403
    _assert_untouched(server)
    refused = server.state.stats()["refused_by_reason"]
    assert refused["auth_missing"] == 3 and refused["auth_invalid"] == 3
    assert refused["auth_replayed"] == 1


def _trailer_request(secret, body, path="/update", tamper=None):
    """Headers and body of a request signed with a trailing signature (as the client sends)."""
    signer = Signer(secret)
    headers = {**signer.stamp(), HEADER_SIGNATURE: SIGNATURE_TRAILER}
    signature = signer.tag("POST", path, headers[HEADER_TIMESTAMP], headers[HEADER_NONCE], body)
    full = bytearray(bytes(body) + signature.encode())
    if tamper is not None:
        tamper(full)
    return headers, full


def test_trailing_signatures_are_checked_like_header_ones(server):
    body = _update_body(_ones())
    secret = server.secret

    def flip_body(b):
        b[len(body) // 2] ^= 1

    def flip_trailer(b):
        b[-1] = ord("0") if b[-1] != ord("0") else ord("1")

    def non_ascii(b):
        b[-1] = 0xFF

    refused = [
        _trailer_request(secret, body, tamper=flip_body),
        _trailer_request(secret, body, tamper=flip_trailer),
        _trailer_request(secret, body, tamper=non_ascii),
        _trailer_request(new_secret(), body),  # another fit's secret
        _trailer_request(secret, body, path="/update?pull=1"),  # signed for another path
    ]
    for headers, full in refused:
        assert _raw(server, "POST", "/update", headers, full)[0] == 403
    short = {**Signer(secret).stamp(), HEADER_SIGNATURE: SIGNATURE_TRAILER}
    assert _raw(server, "POST", "/update", short, b"0" * (TRAILER_BYTES - 1))[0] == 403
    _assert_untouched(server)
    assert server.state.stats()["refused_by_reason"]["auth_invalid"] == len(refused) + 1
    headers, full = _trailer_request(secret, body)
    assert _raw(server, "POST", "/update", headers, full)[0] == 200
    assert server.state.version == 1


def test_client_sends_bodies_with_trailing_signatures_in_chunks(server, monkeypatch):
    """The client hashes each chunk just before sending it; the server verifies the trailer."""
    from elephas.parameter import client as client_module

    monkeypatch.setattr(client_module.SignedBody, "CHUNK_BYTES", 7)  # many chunks per array
    sent_headers = []
    original = client_module.SignedBody.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        sent_headers.append(dict(self.headers))

    monkeypatch.setattr(client_module.SignedBody, "__init__", spy)
    with server.client() as client:
        assert _push(client, _ones(2.0), 0) == 1
        weights, version = client.pull()
    assert sent_headers and all(h[HEADER_SIGNATURE] == SIGNATURE_TRAILER for h in sent_headers)
    assert version == 1
    for got, start in zip(weights, _weights()):
        np.testing.assert_array_equal(got, start + 2.0)


def test_pulled_arrays_stay_valid_while_later_pulls_reuse_buffers(mode):
    """Receive buffers are pooled, but never reused while arrays decoded from them are alive."""
    weights = [np.zeros(100_000, np.float32)]
    with ParameterServer(weights, AddStrategy(), mode=mode) as srv, srv.client() as client:
        kept = []
        for i in range(6):
            pulled, version = client.pull()
            assert version == i
            kept.append(pulled[0][::1000].copy() if i % 2 else pulled[0])  # keep some alive
            _push(client, [np.ones(100_000, np.float32)], version)
        for i, arr in enumerate(kept):
            np.testing.assert_array_equal(arr, np.full(arr.shape, float(i), np.float32))
        del pulled
        addresses = set()
        for _ in range(4):  # nothing refers to these pulls: their buffers are reused
            pulled, _ = client.pull()
            addresses.add(pulled[0].ctypes.data)
            del pulled
        assert len(addresses) == 1


@pytest.mark.parametrize("transport", MODES)
def test_idle_connections_are_closed_and_their_threads_end(transport, capfd):
    """The idle time-out is enforced on blocking sockets (kernel time-outs) without noise."""
    with ParameterServer(_weights(), AddStrategy(), mode=transport, idle_timeout_s=0.3) as srv:
        idle = socket.create_connection((srv.host, srv.port))
        try:
            deadline = time.monotonic() + 5
            while not [t for t in _server_threads() if "conn" in t.name] and time.monotonic() < deadline:
                time.sleep(0.02)
            assert [t for t in _server_threads() if "conn" in t.name]
            idle.settimeout(5)
            assert idle.recv(16) == b""  # the server closed the silent connection
            while [t for t in _server_threads() if "conn" in t.name] and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not [t for t in _server_threads() if "conn" in t.name]
        finally:
            idle.close()
        with srv.client() as client:  # and keeps serving
            assert client.pull()[1] == 0
    assert "Traceback" not in capfd.readouterr().err


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_payload_is_refused_and_never_run(server):
    marker = os.path.join(tempfile.mkdtemp(), "pwned")
    body = pickle.dumps(_Exploit(marker))
    signer = Signer(server.secret)
    status, info = _raw(server, "POST", "/update", signer.sign("POST", "/update", body), body)
    assert status == 400 and "magic" in info["error"]
    assert _raw(server, "POST", "/update", {}, body)[0] == 401
    assert not os.path.exists(marker)
    _assert_untouched(server)


@pytest.mark.parametrize(
    "update, meta, status, reason",
    [
        ([np.ones((3, 2), np.float32), np.ones(4, np.float32)], {}, 400, "shape"),
        ([np.ones((2, 3), np.float32)], {}, 400, "shape"),
        ([np.ones((2, 3), np.float64), np.ones(4, np.float32)], {}, 400, "dtype"),
        ([np.full((2, 3), np.nan, np.float32), np.ones(4, np.float32)], {}, 422, "nonfinite"),
        ([np.ones((2, 3), np.float32), np.array([1, np.inf, 0, 0], np.float32)], {}, 422, "nonfinite"),
        (_ones(), {"version_seen": 5}, 400, "metadata"),
        (_ones(), {"worker_id": 3}, 400, "metadata"),
        (_ones(), {"metrics": {"loss": "x"}}, 400, "metadata"),
    ],
)
def test_invalid_updates_are_refused_and_counted(server, update, meta, status, reason):
    body = _update_body(update, **meta)
    signer = Signer(server.secret)
    got, info = _raw(server, "POST", "/update", signer.sign("POST", "/update", body), body)
    assert got == status, info
    assert server.state.stats()["refused_by_reason"] == {reason: 1}
    _assert_untouched(server)


def test_client_raises_on_refused_update(server):
    with server.client() as client:
        with pytest.raises(ParameterServerError, match="status 422") as err:
            _push(client, [np.full((2, 3), np.nan, np.float32), np.ones(4, np.float32)], 0)
    assert err.value.status == 422 and err.value.address == server.address


def test_oversized_and_truncated_bodies(server):
    cap = server.max_body_bytes
    if server.mode == "http":
        for length in (cap + 1, 10**12):
            conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
            try:
                conn.putrequest("POST", "/update")
                conn.putheader("Content-Length", str(length))
                conn.endheaders()
                assert conn.getresponse().status == 413
            finally:
                conn.close()
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"POST /update HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + bytes(10))
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(1000).startswith(b"HTTP/1.1 400")
    else:
        for length in (cap + 1, 2**62):
            with socket.create_connection((server.host, server.port), timeout=10) as sock:
                sock.sendall(netio.REQUEST.pack(netio.REQUEST_MAGIC, netio.PROTOCOL_VERSION, 0, length))
                head = sock.recv(netio.RESPONSE.size, socket.MSG_WAITALL)
                assert netio.RESPONSE.unpack(head)[2] == 413
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(netio.REQUEST.pack(netio.REQUEST_MAGIC, netio.PROTOCOL_VERSION, 2, 1000) + b"{}" + bytes(10))
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(100) == b""  # the handler ends at once on a closed peer
    assert server.state.stats()["refused_by_reason"]["too_large"] == 2
    _assert_untouched(server)


def test_random_bytes_are_refused_and_server_keeps_serving(server):
    rng = np.random.default_rng(7)
    signer = Signer(server.secret)
    statuses = set()
    for i in range(1000):
        body = rng.bytes(int(rng.integers(0, 300)))
        headers = signer.sign("POST", "/update", body) if i % 2 else {}
        statuses.add(_raw(server, "POST", "/update", headers, body)[0])
    assert statuses <= {400, 401}, statuses
    for _ in range(50):  # garbage straight onto the socket, then hang up
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            try:
                sock.sendall(rng.bytes(int(rng.integers(1, 300))))
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            except OSError:  # the server may answer with an error frame and hang up first
                pass
    _assert_untouched(server)


# ----- lifecycle --------------------------------------------------------------------------------
def _can_bind(port):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    return True


@pytest.mark.parametrize("transport", MODES)
def test_stop_releases_port_and_threads_with_live_connections(transport):
    before = set(threading.enumerate())
    srv = ParameterServer(_weights(), AddStrategy(), mode=transport).start()
    client = srv.client(retries=0, timeout=5)
    client.pull()  # keeps an idle keep-alive / socket connection open
    port = srv.port
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 5
    assert not _server_threads()
    assert set(threading.enumerate()) <= before
    assert _can_bind(port)
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        client.pull()
    client.close()


@pytest.mark.parametrize("transport", MODES)
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_context_manager_cleans_up_when_the_body_raises(transport, error):
    with pytest.raises(error):
        with ParameterServer(_weights(), AddStrategy(), mode=transport) as srv:
            port = srv.port
            with srv.client() as client:
                client.pull()
            raise error("boom")
    assert not srv.running and not _server_threads()
    assert _can_bind(port)


@pytest.mark.parametrize("transport", MODES)
def test_explicit_port_and_port_in_use(transport):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ParameterServer(_weights(), AddStrategy(), mode=transport, port=port) as srv:
        assert srv.port == port and srv.address == f"127.0.0.1:{port}"
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            ParameterServer(_weights(), AddStrategy(), mode=transport, port=port).start()
    assert not _server_threads()


@pytest.mark.parametrize("transport", MODES)
def test_unreachable_server_names_the_address(transport):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ParameterClient(
        "127.0.0.1", port, mode=transport, secret=new_secret(), timeout=1, retries=2, backoff_s=0.01
    )
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}.*3 attempts"):
        client.pull()
    assert time.monotonic() - started < 5
    client.close()


def test_advertised_host_resolution(monkeypatch):
    monkeypatch.delenv(HOST_ENV_VAR, raising=False)
    assert resolve_advertised_host() == "127.0.0.1"
    assert resolve_advertised_host(driver_host="10.0.0.5") == "10.0.0.5"
    monkeypatch.setenv(HOST_ENV_VAR, "10.0.0.6")
    assert resolve_advertised_host(driver_host="10.0.0.5") == "10.0.0.6"
    assert resolve_advertised_host("10.0.0.7", driver_host="10.0.0.5") == "10.0.0.7"


def test_client_config_is_plain_and_picklable(server):
    config = server.client_config()
    assert set(config) == {"host", "port", "mode", "secret", "compression", "timeout", "max_payload_bytes"}
    assert all(isinstance(v, (str, int, float)) for v in config.values())
    with ParameterClient(**pickle.loads(pickle.dumps(config))) as client:
        assert client.pull()[1] == 0


def test_unknown_mode_and_compression_are_refused():
    with pytest.raises(ValueError, match="parameter_server_mode: 'grpc'"):
        ParameterServer(_weights(), AddStrategy(), mode="grpc")
    with pytest.raises(ValueError, match="compression: 'lz4'"):
        ParameterServer(_weights(), AddStrategy(), compression="lz4")
