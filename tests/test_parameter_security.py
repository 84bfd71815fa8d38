"""Attacks on the parameter server and the trial channel, run against real servers on loopback.

Each test stands for one weakness: what a peer without the secret can make the driver allocate
or hold, what malformed input does, what a replay returns, what a buggy executor holding the
secret can do to the center, and what a spoofed server can make a worker inflate.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import zlib

import numpy as np
import pytest
from test_parameter_server import MODES, AddStrategy

from elephas.engine.strategies.base import Strategy
from elephas.hyperparam.channel import ChannelClient, ChannelServer
from elephas.hyperparam.channel import new_secret as channel_secret
from elephas.parameter import ParameterClient, ParameterServer, ParameterServerError, codec, netio
from elephas.parameter.auth import (
    HEADER_HEAD_SIGNATURE,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    Signer,
    new_secret,
)


class HogwildStrategy(Strategy):
    name = "test-hogwild"
    locked = False


def _weights():
    return [np.zeros((2, 3), np.float32), np.arange(4, dtype=np.float32)]


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _conn_threads(prefix: str = "elephas-ps") -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and "conn" in t.name]


def _update_body(update, **meta):
    base = {"worker_id": "w", "attempt_id": "a", "version_seen": 0, "samples": 1, "epoch": 0}
    return codec.encode(update, codec.KIND_UPDATE, "none", {**base, **meta})


def _raw(server, method, path, headers, body):
    """One request through the transport, bypassing the client's checks."""
    from elephas.parameter import client as client_module

    channel_cls = {"http": client_module._HttpChannel, "socket": client_module._SocketChannel}[server.mode]
    channel = channel_cls(server.host, server.port, 10)
    try:
        return channel.request(method, path, headers, body)
    finally:
        channel.close()


def _request_bytes(mode: str, method: str, path: str, headers: dict, body: bytes) -> bytes:
    """A request as it goes on the wire."""
    if mode == "http":
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: x",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    auth = json.dumps({"method": method, "path": path, **headers}).encode()
    return netio.REQUEST.pack(netio.REQUEST_MAGIC, netio.PROTOCOL_VERSION, len(auth), len(body)) + auth + body


def _exchange(server, data: bytes, timeout: float = 10.0) -> int | None:
    """Send ``data`` on a new connection, half-close it, and return the response status (``None``
    when the server hung up without answering)."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        received = bytearray()
        try:
            while chunk := sock.recv(1 << 16):
                received += chunk
        except OSError:
            pass
    if not received:
        return None
    if server.mode == "http":
        status = received.split(b" ", 2)[1] if received.startswith(b"HTTP/1.1 ") else b""
        return int(status) if status.isdigit() else -1
    if len(received) < netio.RESPONSE.size:
        return -1
    return netio.RESPONSE.unpack_from(received)[2]


def _center(server):
    weights, version = server.state.pull()
    return version, [w.copy() for w in weights]


def _assert_same_center(before, after):
    assert before[0] == after[0]
    for a, b in zip(before[1], after[1]):
        np.testing.assert_array_equal(a, b)


# ----- 1. memory and threads before authentication ------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_unauthenticated_cap_sized_bodies_cost_bounded_memory(mode):
    """30 connections declaring a body at the cap of a 16 MB model and sending ~60 bytes."""
    weights = [np.zeros(4_000_000, np.float32)]
    with ParameterServer(weights, AddStrategy(), mode=mode) as server:
        cap = server.max_body_bytes
        forged = Signer(new_secret())
        before = _rss_bytes()
        socks = []
        try:
            for i in range(30):
                headers = forged.stamp()
                headers[HEADER_SIGNATURE] = "trailer"
                if i % 2:  # a head signature made with another secret
                    headers[HEADER_HEAD_SIGNATURE] = forged.head_tag(
                        "POST", "/update", headers[HEADER_TIMESTAMP], headers[HEADER_NONCE], cap
                    )
                head = _request_bytes(mode, "POST", "/update", headers, b"")
                if mode == "http":
                    head = head.replace(b"Content-Length: 0", f"Content-Length: {cap}".encode())
                else:
                    head = head[:8] + head[8:12] + cap.to_bytes(8, "little") + head[20:]
                sock = socket.create_connection((server.host, server.port), timeout=10)
                sock.sendall(head + os.urandom(60))
                socks.append(sock)
            time.sleep(1.0)  # let the server read what it would read
            grown = _rss_bytes() - before
        finally:
            for sock in socks:
                sock.close()
        assert grown < 64 * 2**20, f"RSS grew by {grown / 2**20:.0f} MB"
        refused = server.state.stats()["refused_by_reason"]
        assert refused.get("auth_missing", 0) + refused.get("auth_invalid", 0) == 30
        with server.client() as client:
            assert client.pull()[1] == 0


@pytest.mark.parametrize("mode", MODES)
def test_idle_connections_are_capped_and_a_worker_still_trains(mode):
    cap = 8
    with ParameterServer(_weights(), AddStrategy(), mode=mode, max_connections=cap) as server:
        idle = []
        try:
            for _ in range(200):
                idle.append(socket.create_connection((server.host, server.port), timeout=10))
            deadline = time.monotonic() + 5
            peak = 0
            while time.monotonic() < deadline:  # sample while the server works through them
                peak = max(peak, len(_conn_threads()))
                time.sleep(0.05)
            assert 0 < peak <= cap
            with server.client() as client:
                weights, version = client.pull()
                assert (
                    client.push([np.ones_like(w) for w in weights], worker_id="w", attempt_id="a", version_seen=version)
                    == 1
                )
            assert len(_conn_threads()) <= cap
        finally:
            for sock in idle:
                sock.close()


@pytest.mark.parametrize("mode", MODES)
def test_workers_beyond_the_cap_are_still_served(mode):
    """More concurrent tasks than expected: workers' connections are never refused or evicted."""
    with ParameterServer(_weights(), AddStrategy(), mode=mode, max_connections=2) as server:
        clients = [server.client(retries=0) for _ in range(4)]
        try:
            for client in clients:
                assert client.pull()[1] == 0
            for i, client in enumerate(clients):  # each still on its first connection
                assert (
                    client.push(
                        [np.ones((2, 3), np.float32), np.ones(4, np.float32)],
                        worker_id=str(i),
                        attempt_id="a",
                        version_seen=0,
                    )
                    == i + 1
                )
        finally:
            for client in clients:
                client.close()


def _drip(sock: socket.socket, data: bytes, every_s: float, limit_s: float) -> float | None:
    """Send ``data`` a byte at a time; the seconds until the server closed the connection, or
    ``None`` if it was still open after ``limit_s``."""
    start = time.monotonic()
    sock.settimeout(every_s)
    for i in range(int(limit_s / every_s)):
        try:
            sock.send(data[i % len(data) : i % len(data) + 1])
            if sock.recv(1 << 16) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
    return None


@pytest.mark.parametrize("mode", MODES)
def test_a_drip_is_closed_by_the_request_deadline(mode):
    """A byte every 0.2 s never trips the per-call idle time-out; the whole-request deadline does."""
    with ParameterServer(_weights(), AddStrategy(), mode=mode, idle_timeout_s=30, request_timeout_s=1.0) as server:
        body = _update_body(_weights())
        request = _request_bytes(
            mode, "POST", "/update", Signer(server.secret).sign("POST", "/update", body), bytes(body)
        )
        with socket.create_connection((server.host, server.port)) as sock:
            closed_after = _drip(sock, request, every_s=0.2, limit_s=8.0)
        assert closed_after is not None and closed_after < 4.0
        assert server.state.version == 0


def test_the_trial_channel_handshake_drip_is_cut_off():
    with ChannelServer(lambda r: {"ok": True}, channel_secret(), handshake_timeout_s=1.0) as server:
        with socket.create_connection(server.address) as sock:
            sock.recv(16)
            closed_after = _drip(sock, os.urandom(16) + (100).to_bytes(4, "big") + bytes(200), every_s=0.2, limit_s=8.0)
        assert closed_after is not None and closed_after < 4.0


def test_the_trial_channel_pre_auth_memory_is_bounded():
    """30 connections whose first frame declares the 16 MiB maximum."""
    secret = channel_secret()
    with ChannelServer(lambda r: {"echo": r}, secret) as server:
        before = _rss_bytes()
        socks = []
        try:
            for _ in range(30):
                sock = socket.create_connection(server.address, timeout=10)
                sock.recv(16)
                sock.sendall(os.urandom(16) + (16 * 2**20).to_bytes(4, "big") + os.urandom(32 + 60))
                socks.append(sock)
            time.sleep(1.0)
            grown = _rss_bytes() - before
        finally:
            for sock in socks:
                sock.close()
        assert grown < 64 * 2**20, f"RSS grew by {grown / 2**20:.0f} MB"
        with ChannelClient(server.address, secret) as client:
            assert client.request({"n": 1}) == {"echo": {"n": 1}}


def test_the_trial_channel_caps_connections_and_keeps_serving_slots():
    secret = channel_secret()
    prefix = "elephas-trial-channel-"
    with ChannelServer(lambda r: {"echo": r}, secret, max_connections=4) as server:
        with ChannelClient(server.address, secret) as slot:
            assert slot.request({"n": 0}) == {"echo": {"n": 0}}
            idle = [socket.create_connection(server.address, timeout=10) for _ in range(50)]
            try:
                time.sleep(1.0)
                serving = [
                    t for t in threading.enumerate() if t.name.startswith(prefix) and not t.name.endswith("reaper")
                ]
                assert len(serving) <= 4
                assert slot.request({"n": 1}) == {"echo": {"n": 1}}  # the trusted slot was kept
            finally:
                for sock in idle:
                    sock.close()


# ----- 3. replay ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_a_replayed_pull_with_push_returns_no_weights(mode):
    with ParameterServer(_weights(), AddStrategy(), mode=mode, replay_window_s=1.0) as server:
        body = _update_body([np.ones((2, 3), np.float32), np.ones(4, np.float32)])
        path = "/update?pull=1&compression=none"
        headers = Signer(server.secret).sign("POST", path, body)
        status, _, payload = _raw(server, "POST", path, headers, body)
        assert status == 200 and payload is not None
        status, info, payload = _raw(server, "POST", path, headers, body)  # a retry, in the window
        assert status == 200 and info["version"] == 1 and payload is None
        time.sleep(1.5)
        status, info, payload = _raw(server, "POST", path, headers, body)  # after the window
        assert status == 403 and payload is None and "timestamp" in info["error"]
        assert server.state.version == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_nonce_is_accepted_for_one_request_only(mode):
    with ParameterServer(_weights(), AddStrategy(), mode=mode) as server:
        signer = Signer(server.secret)
        stamp = signer.stamp()
        first = {**stamp, HEADER_SIGNATURE: signer.tag("GET", "/stats", *stamp.values())}
        other = {**stamp, HEADER_SIGNATURE: signer.tag("GET", "/parameters", *stamp.values())}
        assert _raw(server, "GET", "/stats", first, b"")[0] == 200
        assert _raw(server, "GET", "/parameters", other, b"")[0] == 403
        assert server.state.stats()["refused_by_reason"] == {"auth_replayed": 1}


@pytest.mark.parametrize("mode", MODES)
def test_a_retried_push_and_pull_still_gets_the_center(mode):
    """The client's answer to a replayed reply without weights: a fresh pull."""
    with ParameterServer(_weights(), AddStrategy(), mode=mode) as server, server.client() as client:
        real = client._channel.request
        calls = []

        def lose_first_response(method, path, headers, body):
            reply = real(method, path, headers, body)
            calls.append(path)
            if len(calls) == 1:
                client._channel.close()
                raise ConnectionResetError("response lost")
            return reply

        client._channel.request = lose_first_response
        version, center, center_version = client.push_and_pull(
            [np.ones((2, 3), np.float32), np.ones(4, np.float32)], worker_id="w", attempt_id="a", version_seen=0
        )
        assert version == center_version == 1 and server.state.version == 1
        np.testing.assert_array_equal(center[1], np.arange(4, dtype=np.float32) + 1)
        assert calls[-1].startswith("/parameters")


# ----- 4. malformed input -------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_malformed_authentication_gets_4xx_without_tracebacks(mode, caplog, capfd):
    caplog.set_level(logging.WARNING)
    with ParameterServer(_weights(), AddStrategy(), mode=mode) as server:
        signer = Signer(server.secret)
        stamp = signer.stamp()
        non_ascii = {**stamp, HEADER_SIGNATURE: "\u00e9" * 64}
        assert _exchange(server, _request_bytes(mode, "GET", "/stats", non_ascii, b"")) in (401, 403)
        weird_nonce = {**signer.stamp(), HEADER_NONCE: "\u00e9\u00e8", HEADER_SIGNATURE: "0" * 64}
        assert _exchange(server, _request_bytes(mode, "POST", "/update", weird_nonce, b"x" * 100)) in (401, 403)
        if mode == "socket":
            nested = b"[" * 8000 + b"]" * 8000  # fits the 16 KiB auth block, too deep for json
            frame = netio.REQUEST.pack(netio.REQUEST_MAGIC, netio.PROTOCOL_VERSION, len(nested), 0) + nested
            assert _exchange(server, frame) == 400
            surrogate = (
                b'{"method": "GET", "path": "/stats", "X-Elephas-Nonce": "\\ud800", '
                b'"X-Elephas-Timestamp": "1", "X-Elephas-Signature": "' + b"0" * 64 + b'"}'
            )
            frame = netio.REQUEST.pack(netio.REQUEST_MAGIC, netio.PROTOCOL_VERSION, len(surrogate), 0) + surrogate
            assert _exchange(server, frame) in (401, 403)
        else:
            assert _exchange(server, b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n") == 400
            long_head = b"GET /stats HTTP/1.1\r\nX-Pad: " + b"a" * 60_000 + b"\r\n\r\n"
            assert _exchange(server, long_head) in (400, 431)
        for _ in range(50):  # refusals by the dozen: their log lines are rate-limited
            _exchange(server, _request_bytes(mode, "GET", "/stats", {}, b""))
        with server.client() as client:
            assert client.pull()[1] == 0
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    warnings = [r for r in caplog.records if r.name.startswith("elephas.parameter")]
    assert 1 <= len(warnings) <= 3
    assert "Traceback" not in capfd.readouterr().err


# ----- 5. a buggy or compromised executor (it holds the secret) ------------------------------
def _signed_push(server, body, path="/update"):
    return _raw(server, "POST", path, Signer(server.secret).sign("POST", path, body), body)[:2]


def _payload_with_header(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return codec.PREFIX.pack(codec.MAGIC, codec.FORMAT_VERSION, codec.KIND_UPDATE, 0, len(raw)) + raw + data


@pytest.mark.parametrize("mode", MODES)
def test_shapes_whose_product_overflows_get_400(mode):
    with ParameterServer(_weights(), AddStrategy(), mode=mode) as server:
        meta = {"worker_id": "w", "attempt_id": "a", "version_seen": 0, "samples": 1, "epoch": 0}
        for shape in ([2**32, 2**32], [2**39, 2**39, 2**39, 2**39], [2**16] * 4):
            body = _payload_with_header(
                {"arrays": [[shape, "<f4", "<f4"], [[4], "<f4", "<f4"]], "meta": meta}, bytes(16)
            )
            status, info = _signed_push(server, body)
            assert status == 400, info
        assert server.state.version == 0


@pytest.mark.parametrize("mode", MODES)
def test_bad_metrics_leave_the_version_unchanged(mode):
    with ParameterServer(_weights(), AddStrategy(), mode=mode) as server:
        before = _center(server)
        entries = [[[2, 3], "<f4", "<f4"], [[4], "<f4", "<f4"]]
        data = np.ones(10, np.float32).tobytes()
        for metrics in (
            b'{"loss": 1e400}',
            b'{"loss": -1e400}',
            b'{"loss": ' + b"9" * 400 + b"}",
            b'{"loss": NaN}',
            b'{"loss": [1]}',
            b'{"": 1.0}',
        ):
            header = (
                b'{"arrays": ' + json.dumps(entries).encode() + b', "meta": {"worker_id": "w", '
                b'"attempt_id": "a", "version_seen": 0, "samples": 1, "epoch": 0, "metrics": ' + metrics + b"}}"
            )
            status, info = _signed_push(server, _payload_with_header(header, data))
            assert status == 400 and info["reason"] == "metadata", (metrics, info)
        for meta in ({"samples": 2**64}, {"epoch": 10**30}):
            status, info = _signed_push(
                server, _update_body([np.ones((2, 3), np.float32), np.ones(4, np.float32)], **meta)
            )
            assert status == 400, info
        _assert_same_center(before, _center(server))
        assert not server.state.records()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", [AddStrategy, HogwildStrategy])
def test_pushes_near_the_float_maximum_leave_the_center_finite(mode, strategy):
    with ParameterServer(_weights(), strategy(), mode=mode) as server, server.client() as client:
        big = [np.full((2, 3), 3e38, np.float32), np.zeros(4, np.float32)]
        assert client.push(big, worker_id="w", attempt_id="a", version_seen=0) == 1
        with pytest.raises(ParameterServerError, match="status 422"):
            client.push(big, worker_id="w", attempt_id="a", version_seen=1)
        weights, version = client.pull()
    assert version == 1
    assert all(np.isfinite(w).all() for w in weights)
    np.testing.assert_array_equal(weights[0], np.full((2, 3), 3e38, np.float32))
    assert server.state.stats()["refused_by_reason"] == {"nonfinite_result": 1}


# ----- 6. the client's bound on what it decodes ---------------------------------------------
class _SpoofedServer:
    """Answers every HTTP request with one fixed response (a server impersonating the driver)."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                received += chunk
            try:
                conn.sendall(self.response)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def _http_response(payload: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: " + str(len(payload)).encode() + b"\r\nConnection: close\r\n\r\n" + payload
    )


def test_the_client_refuses_a_payload_that_inflates_past_the_model():
    inflated = 64 * 2**20
    compressor = zlib.compressobj(1)
    stream = b"".join(compressor.compress(bytes(2**20)) for _ in range(inflated // 2**20)) + compressor.flush()
    header = json.dumps({"arrays": [[[inflated // 4], "<f4", "<f4"]], "meta": {"version": 0}}).encode()
    payload = (
        codec.PREFIX.pack(codec.MAGIC, codec.FORMAT_VERSION, codec.KIND_PARAMETERS, 2, len(header)) + header + stream
    )
    spoofed = _SpoofedServer(_http_response(payload))
    try:
        client = ParameterClient(
            "127.0.0.1",
            spoofed.port,
            mode="http",
            secret=new_secret(),
            timeout=10,
            retries=0,
            max_payload_bytes=4 * 2**20,
        )
        with client, pytest.raises(ParameterServerError, match="at most") as err:
            client.pull()
        assert err.value.status == 502
    finally:
        spoofed.close()


def test_the_client_refuses_a_response_longer_than_the_model_before_reading_it():
    spoofed = _SpoofedServer(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1073741824\r\n\r\n"
    )
    try:
        client = ParameterClient(
            "127.0.0.1", spoofed.port, mode="http", secret=new_secret(), timeout=10, retries=0, max_payload_bytes=2**20
        )
        with client, pytest.raises(ParameterServerError, match="at most 1048576 bytes"):
            client.pull()
    finally:
        spoofed.close()


@pytest.mark.parametrize("mode", MODES)
def test_client_config_carries_the_model_bound(mode):
    with ParameterServer(_weights(), AddStrategy(), mode=mode) as server:
        assert server.client_config()["max_payload_bytes"] == server.max_body_bytes
        with server.client() as client:
            assert client.max_payload_bytes == server.max_body_bytes
            assert client.pull()[1] == 0


# ----- 2. binding ---------------------------------------------------------------------------
def test_bind_address_follows_the_advertised_address_and_the_overrides(monkeypatch):
    monkeypatch.delenv(netio.BIND_ENV_VAR, raising=False)
    assert netio.default_bind_host("127.0.0.1") == "127.0.0.1"
    assert netio.default_bind_host("localhost") == "127.0.0.1"
    assert netio.default_bind_host("127.0.0.2", driver_bind_address="127.0.0.3") == "127.0.0.3"
    assert netio.default_bind_host("192.0.2.1") == "0.0.0.0"  # TEST-NET: not an address of this host
    assert netio.default_bind_host("2001:db8::1") == "::"
    monkeypatch.setenv(netio.BIND_ENV_VAR, "127.0.0.4")
    assert netio.default_bind_host("192.0.2.1", driver_bind_address="127.0.0.3") == "127.0.0.4"
    server = ParameterServer(_weights(), AddStrategy(), host="192.0.2.1", bind_host="127.0.0.5")
    assert server.bind_host == "127.0.0.5"


def test_connection_cap_follows_the_expected_workers():
    assert ParameterServer(_weights(), AddStrategy()).max_connections == netio.DEFAULT_MAX_CONNECTIONS
    assert ParameterServer(_weights(), AddStrategy(), expected_workers=20).max_connections == 40
    assert ParameterServer(_weights(), AddStrategy(), expected_workers=1).max_connections == 8
    assert ParameterServer(_weights(), AddStrategy(), max_connections=5).max_connections == 5


# ----- fuzz ---------------------------------------------------------------------------------
def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 6))
        at = int(rng.integers(0, len(data) + 1))
        if kind == 0 and data:  # flip a byte
            at = min(at, len(data) - 1)
            data[at] ^= int(rng.integers(1, 256))
        elif kind == 1:  # truncate
            del data[at:]
        elif kind == 2:  # insert random bytes
            data[at:at] = rng.bytes(int(rng.integers(1, 64)))
        elif kind == 3:  # insert non-ASCII text
            data[at:at] = "\u00e9\u20ac\ud7ff".encode("utf-8") * int(rng.integers(1, 30))
        elif kind == 4:  # duplicate a slice
            data[at:at] = data[at : at + int(rng.integers(1, 200))]
        else:  # nested brackets
            data[at:at] = b"[" * int(rng.integers(1, 5000))
    return bytes(data)


@pytest.mark.parametrize("mode", MODES)
def test_fuzzed_requests_get_no_5xx_no_tracebacks_and_change_nothing(mode, caplog, capfd):
    caplog.set_level(logging.WARNING)
    rng = np.random.default_rng(20261201)
    with ParameterServer(_weights(), AddStrategy(), mode=mode) as server:
        signer = Signer(server.secret)
        corpus = []
        for i in range(8):
            body = bytes(_update_body([np.full((2, 3), i, np.float32), np.ones(4, np.float32)], metrics={"loss": 0.5}))
            path = ["/update", "/update?pull=1&compression=none", "/parameters?compression=fp16", "/stats"][i % 4]
            method = "POST" if path.startswith("/update") else "GET"
            body = body if method == "POST" else b""
            corpus.append(_request_bytes(mode, method, path, signer.sign(method, path, body), body))
        for request in corpus:  # each valid request once: its nonce is used up
            assert _exchange(server, request) == 200
        before = _center(server)
        statuses = {}
        for i in range(10_000):
            if i % 4 == 0:
                data = rng.bytes(int(rng.integers(0, 400)))
            else:
                data = _mutate(rng, corpus[int(rng.integers(0, len(corpus)))])
            status = _exchange(server, data)
            statuses[status] = statuses.get(status, 0) + 1
        _assert_same_center(before, _center(server))
    assert not [s for s in statuses if s is not None and s >= 500], statuses
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert "Traceback" not in capfd.readouterr().err


def test_fuzzed_frames_on_the_trial_channel_reach_no_handler(caplog, capfd):
    caplog.set_level(logging.WARNING)
    rng = np.random.default_rng(20261202)
    secret = channel_secret()
    handled = []
    with ChannelServer(lambda r: handled.append(r) or {"ok": True}, secret) as server:
        recorded = []

        class _Recorder:
            def __init__(self, sock):
                self._sock = sock

            def sendall(self, data):
                recorded.append(bytes(data))
                return self._sock.sendall(data)

            def __getattr__(self, name):
                return getattr(self._sock, name)

        client = ChannelClient(server.address, secret)
        client._framer.sock = _Recorder(client.sock)
        assert client.request({"slot": "s", "attempt": 0, "done": None, "leaving": False}) == {"ok": True}
        client.close()
        frame = recorded[0]
        for i in range(10_000):
            with socket.create_connection(server.address, timeout=10) as sock:
                try:
                    sock.recv(16)
                    nonce = os.urandom(16)
                    data = rng.bytes(int(rng.integers(0, 200))) if i % 4 == 0 else _mutate(rng, nonce + frame)
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)
                    while sock.recv(65536):
                        pass
                except OSError:
                    pass
        assert len(handled) == 1  # only the genuine slot's request reached the handler
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert "Traceback" not in capfd.readouterr().err
