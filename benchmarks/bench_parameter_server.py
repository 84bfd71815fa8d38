"""Benchmark of the parameter server: pull+push round trips over HTTP and raw sockets.

Measures, for a model of ``--params`` float32 parameters, the median latency of one pull
followed by one push and the round trips per second with 1 and 4 concurrent clients, for each
transport and compression, next to the raw loopback limit (plain sockets moving the same bytes
with no framing, no signature and no state), and prints the ratios. It also times the keyed
MACs considered for request signatures over a body of the model's size.

Usage::

    python benchmarks/bench_parameter_server.py                 # the full table
    python benchmarks/bench_parameter_server.py --clients 1 --compressions none --seconds 2
    python benchmarks/bench_parameter_server.py --compressions none --repeat 4   # ranges

With ``--repeat N`` every row is measured N times (rows interleaved, so a load change on a
shared machine spreads over all of them) and the ratios are reported as their range.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import multiprocessing
import os
import queue

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # keep all traffic on loopback
import socket
import statistics
import struct
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from elephas.engine.strategies.base import Strategy  # noqa: E402
from elephas.parameter import ParameterClient, ParameterServer  # noqa: E402
from elephas.parameter.auth import Signer, new_secret  # noqa: E402


class AddStrategy(Strategy):
    """C += Δ under the lock (the asynchronous rule)."""

    name = "bench-add"
    locked = True


# ----- raw loopback limit ----------------------------------------------------------------------
def _recv_into(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            raise ConnectionError("closed")
        got += n


class RawLoopback:
    """Plain sockets: 'P' -> nbytes back (pull), 'U' + nbytes -> 8-byte ack (push)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.payload = np.random.default_rng(0).bytes(nbytes)
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        buf = memoryview(bytearray(self.nbytes))
        op = bytearray(1)
        try:
            while True:
                if not conn.recv_into(op):
                    return
                if op[0] == ord("P"):
                    conn.sendall(self.payload)
                else:
                    _recv_into(conn, buf)
                    conn.sendall(struct.pack("<Q", 1))
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()
        for c in self.conns:
            c.close()


def raw_round_trip(port: int, nbytes: int) -> callable:
    """A raw loopback client: 'P' then ``nbytes`` back; 'U' + ``nbytes`` then an 8-byte ack.

    It receives into one buffer it reuses (as the parameter server client does with its pooled
    receive buffers), so the limit is not inflated by page faults on fresh memory.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = np.random.default_rng(1).bytes(nbytes)
    ack = memoryview(bytearray(8))
    received = memoryview(np.empty(nbytes, np.uint8))

    def round_trip() -> None:
        sock.sendall(b"P")
        _recv_into(sock, received)
        sock.sendmsg([b"U", body])
        _recv_into(sock, ack)

    round_trip.close = sock.close  # type: ignore[attr-defined]
    return round_trip


# ----- measurement -----------------------------------------------------------------------------
def ps_round_trip(config: dict, params: int) -> callable:
    """A parameter server client doing one pull and one push of a ``params``-float32 delta."""
    client = ParameterClient(**config)
    delta = [np.random.default_rng(2).standard_normal(params).astype(np.float32) * 1e-3]
    state = {"version": 0}

    def round_trip() -> None:
        _, state["version"] = client.pull()
        client.push(
            delta,
            worker_id="bench",
            attempt_id="bench",
            version_seen=state["version"],
            samples=32,
            metrics={"loss": 0.1},
            epoch=0,
        )

    round_trip.close = client.close  # type: ignore[attr-defined]
    return round_trip


def make_round_trip(spec: tuple) -> callable:
    """Build a round trip from a picklable spec: ``('raw', port, nbytes)`` or
    ``('ps', client_config, params)``."""
    kind, *args = spec
    return raw_round_trip(*args) if kind == "raw" else ps_round_trip(*args)


def _client_loop(specs: list[tuple], seconds: float, max_iter: int, barrier, results) -> None:
    """One client: runs the round trips of ``specs`` in turn (a, b, a, b, ...) after a warm-up
    of each, and puts its latencies (seconds) into ``results``."""
    trips = [make_round_trip(spec) for spec in specs]
    for trip in trips:
        trip()  # warm-up: connection, buffers
    mine: list[list[float]] = [[] for _ in trips]
    barrier.wait()
    deadline = time.perf_counter() + seconds
    while len(mine[-1]) < max_iter and (time.perf_counter() < deadline or len(mine[-1]) < 3):
        for trip, out in zip(trips, mine):
            t0 = time.perf_counter()
            trip()
            out.append(time.perf_counter() - t0)
    for trip in trips:
        trip.close()
    results.put(mine)


def measure(
    specs: list[tuple], clients: int, seconds: float, max_iter: int, processes: bool = True
) -> list[tuple[float, float]]:
    """Median latency (ms) and round trips per second of each spec's round trip.

    Every client runs the specs' round trips alternately, so a load change on a shared machine
    hits all of them alike; the ratio of the medians is the comparable figure. With
    ``processes`` each client is its own process, as the Python workers of Spark executors are
    (client and server then do not share an interpreter lock); else a thread of this process.
    Round trips per second of a spec: its trips over the time the clients spent in it.
    """
    if processes:
        ctx = multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(clients + 1), ctx.Queue()
        workers = [
            ctx.Process(target=_client_loop, args=(specs, seconds, max_iter, barrier, results)) for _ in range(clients)
        ]
    else:
        barrier, results = threading.Barrier(clients + 1), queue.Queue()
        workers = [
            threading.Thread(target=_client_loop, args=(specs, seconds, max_iter, barrier, results))
            for _ in range(clients)
        ]
    for w in workers:
        w.start()
    barrier.wait()
    per_client = [results.get(timeout=seconds * 10 + 120) for _ in workers]
    for w in workers:
        w.join()
    out = []
    for k in range(len(specs)):
        latencies = [t for mine in per_client for t in mine[k]]
        out.append((statistics.median(latencies) * 1e3, len(latencies) / (sum(latencies) / clients)))
    return out


def mac_costs(nbytes: int, repeats: int = 20) -> dict[str, float]:
    """Median ms of candidate keyed MACs over ``nbytes``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    body = np.random.default_rng(3).bytes(nbytes)
    key = new_secret()
    signer = Signer(key)
    gmac = AESGCM(key)
    candidates = {
        "hmac-sha256 (one pass)": lambda: hmac.digest(key, body, "sha256"),
        "keyed blake2b (one pass)": lambda: hashlib.blake2b(body, key=key).digest(),
        "aes-256-gmac": lambda: gmac.encrypt(os.urandom(12), b"", body),
        "poly1305": lambda: Poly1305.generate_tag(key, body),
        "elephas signature (v2)": lambda: signer.tag("POST", "/update", "0", "n", body),
        "memcpy (reference)": lambda: np.frombuffer(body, np.uint8).copy(),
    }
    out = {}
    for name, fn in candidates.items():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times) * 1e3
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--modes", nargs="+", default=["http", "socket"])
    parser.add_argument("--compressions", nargs="+", default=["none", "fp16", "zlib"])
    parser.add_argument("--seconds", type=float, default=3.0, help="per configuration")
    parser.add_argument("--max-iterations", type=int, default=300)
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure every row this many times and report the range of its ratio"
    )
    parser.add_argument(
        "--client-threads",
        action="store_true",
        help="run the clients as threads of the server's process instead of as processes of their own",
    )
    args = parser.parse_args(argv)
    processes = not args.client_threads

    nbytes = args.params * 4
    print(
        f"# parameter server benchmark: {args.params:,} float32 parameters "
        f"({nbytes / 1e6:.1f} MB), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print("\n## keyed MAC over one body")
    for name, ms in mac_costs(nbytes).items():
        print(f"{name:28s} {ms:8.2f} ms  ({nbytes / ms / 1e6:6.2f} GB/s)")

    raw = RawLoopback(nbytes)
    raw_spec = ("raw", raw.port, nbytes)
    raw_results = {c: measure([raw_spec], c, args.seconds, args.max_iterations, processes)[0] for c in args.clients}

    print("\n## pull + push round trip")
    print(
        f"(clients: {'threads of the server process' if args.client_threads else 'one process each'}"
        "; raw ms of a row: the raw loopback measured by the same clients, alternating one "
        "raw round trip with one parameter server round trip, so that a shared machine's "
        "changing load hits both sides of the ratio; trips/s: of the parameter server alone)"
    )
    header = (
        f"{'transport':9s} {'compress':8s} {'clients':>7s} {'median ms':>10s} "
        f"{'trips/s':>9s} {'raw ms':>8s} {'ratio':>6s}"
    )
    print(header)
    print("-" * len(header))
    for c in args.clients:
        ms, rate = raw_results[c]
        print(f"{'raw':9s} {'-':8s} {c:7d} {ms:10.2f} {rate:9.1f} {ms:8.2f} {1.0:6.2f}")
    weights = [np.zeros(args.params, np.float32)]
    ratios: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(args.repeat):
        for mode in args.modes:
            for compression in args.compressions:
                for c in args.clients:
                    with ParameterServer(weights, AddStrategy(), mode=mode) as server:
                        ps_spec = ("ps", {**server.client_config(), "compression": compression}, args.params)
                        (raw_ms, _), (ms, rate) = measure(
                            [raw_spec, ps_spec], c, args.seconds, args.max_iterations, processes
                        )
                    ratios.setdefault((mode, compression, c), []).append(ms / raw_ms)
                    print(
                        f"{mode:9s} {compression:8s} {c:7d} {ms:10.2f} {rate:9.1f} {raw_ms:8.2f} {ms / raw_ms:6.2f}",
                        flush=True,
                    )
    raw.close()
    if args.repeat > 1:
        print(f"\n## ratio to raw loopback over {args.repeat} runs (min - median - max)")
        for (mode, compression, c), values in ratios.items():
            print(
                f"{mode:9s} {compression:8s} {c:7d}   {min(values):.2f} - "
                f"{statistics.median(values):.2f} - {max(values):.2f}"
            )
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
