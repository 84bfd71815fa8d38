"""Hub against ring all-reduce: seconds per round with K processes on loopback.

Each of K processes holds one float32 array of P parameters plus an int64 count and calls
``allreduce`` a few times; the time of a round is the slowest rank's median. Loopback shares this
machine's memory bandwidth and cores among all ranks, so the figures measure the reducers' CPU
costs (copy, MAC, sum) more than a network; see docs/performance.md for what they say about a
cluster.

Usage::

    python benchmarks/bench_reducer.py                  # K in 2 4 8, P in 1M 10M
    python benchmarks/bench_reducer.py --workers 2 4 --params 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _rank(kind, rank, world, addresses, listener, secret, params, rounds, queue):
    from elephas.collective import get

    try:
        arrays = [np.full(params, rank + 1, np.float32), np.array(1, np.int64)]
        with get(kind)(rank, world, addresses, secret, listener=listener, session="bench", timeout=300) as reducer:
            reducer.allreduce(arrays)  # warm-up (allocations, first connection use)
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                total, count = reducer.allreduce(arrays)
                times.append(time.perf_counter() - start)
        assert int(count) == world and float(total[0]) == world * (world + 1) / 2
        queue.put((rank, times, None))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        queue.put((rank, [], repr(exc)))


def run(kind: str, world: int, params: int, rounds: int) -> float:
    """Median round time in seconds of the slowest rank."""
    from elephas.parameter.auth import new_secret
    from elephas.parameter.netio import bind_listener

    ctx = mp.get_context("fork")
    listeners = [bind_listener("127.0.0.1", 0) for _ in range(world)]
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in listeners]
    secret = new_secret()
    queue = ctx.Queue()
    procs = []
    for rank in range(world):
        listener = listeners[rank] if (kind == "ring" or rank == 0) else None
        procs.append(
            ctx.Process(target=_rank, args=(kind, rank, world, addresses, listener, secret, params, rounds, queue))
        )
    for p in procs:
        p.start()
    for s in listeners:
        s.close()
    results = [queue.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    errors = [e for _, _, e in results if e]
    if errors:
        raise RuntimeError(f"{kind} K={world} P={params}: {errors[0]}")
    per_round = [max(times[i] for _, times, _ in results) for i in range(rounds)]
    return statistics.median(per_round)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--params", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, rounds per cell: {args.rounds} (+1 warm-up), median of the slowest rank")
    print(
        f"{'K':>3} {'params':>11} {'MB':>7} {'hub s':>8} {'ring s':>8} {'hub/ring':>9} "
        f"{'hub MB/s/rank':>14} {'ring MB/s/rank':>15}"
    )
    for params in args.params:
        mb = params * 4 / 1e6
        for world in args.workers:
            hub = run("hub", world, params, args.rounds)
            ring = run("ring", world, params, args.rounds)
            print(
                f"{world:>3} {params:>11,} {mb:>7.1f} {hub:>8.3f} {ring:>8.3f} {hub / ring:>9.2f} "
                f"{mb / hub:>14.0f} {mb / ring:>15.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
