"""In-process simulation of synchronous-round and asynchronous update rules against plain Keras.

Chooses, by measurement, the default combination rule for synchronous rounds inside a Spark stage and
the default window for asynchronous/hogwild, without Spark: K Keras model copies, each with its OWN
compiled optimizer whose state persists across rounds (as a real worker keeps its cached model), train
on K equal partitions of the training set. Every epoch each worker shuffles its partition (seeded) and
trains windows of W batches (``train_on_batch`` per batch, in order); then the round combines
the workers' deltas Δᵢ = Wᵢ − C into the center C and every worker continues from the new C.

Rules (synchronous, one round per window):
  avg                C ← C + Σ nᵢΔᵢ / Σ nᵢ
  sum                C ← C + Σ Δᵢ                      (server learning rate K)
  nest<μ>            Δ̄ as pseudo-gradient: v ← μv + Δ̄;  C ← C + (μv + Δ̄)   (outer Nesterov)
  nestK              as nest with μ = 1 − 1/K
  nestK-wu<R>        as nestK, μ ramps linearly from 0 to its target over the first R rounds
  nest<μ>-wu<R>      likewise for a constant μ
Asynchronous (sequential simulation, round-robin over workers): worker i trains W batches from the
center it last pulled, pushes Δ, C ← C + Δ, pulls C.

Tasks (data generated here, seeded; labels = argmax of x @ T for a random teacher T):
  a        60,000 x 784 N(0,1) rows, 10 classes, test 10,000; MLP 128-128-10; SGD 0.05; batch 64; 3 epochs
  c        4,000 x 20, 3 classes, test 1,000; MLP 32-32-3; SGD 0.1; batch 32; 5 epochs
  c-adam   task c with Adam(1e-3)
  c-30     task c for 30 epochs (near convergence)
The reference is plain Keras: one model with the same initial weights fit over all rows for the same
epochs. Output: one JSON line per run (``--out``) and a table of test accuracy minus Keras, in points.

    python benchmarks/sim_sync_rules.py --task c --K 2 --rules avg,sum,nest0.5,nestK --windows 8,16,32
    python benchmarks/sim_sync_rules.py --task a --K 2 --rules nestK-wu10 --windows 16,epoch --seeds 0,1
    python benchmarks/sim_sync_rules.py --task c --K 2 --rules async --windows 1,4,8,16,32

Run single-threaded for reproducible timings: TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

TASKS = {
    "a": dict(
        rows=60000, test=10000, features=784, classes=10, hidden=(128, 128), opt="sgd", lr=0.05, batch=64, epochs=3
    ),
    "c": dict(rows=4000, test=1000, features=20, classes=3, hidden=(32, 32), opt="sgd", lr=0.1, batch=32, epochs=5),
}
TASKS["c-adam"] = dict(TASKS["c"], opt="adam", lr=1e-3)
TASKS["c-30"] = dict(TASKS["c"], epochs=30)


def make_data(spec, data_seed=1234):
    rng = np.random.default_rng(data_seed)
    n = spec["rows"] + spec["test"]
    x = rng.standard_normal((n, spec["features"]), dtype=np.float32)
    teacher = rng.standard_normal((spec["features"], spec["classes"])).astype(np.float32)
    y = np.argmax(x @ teacher, axis=1).astype(np.int32)
    r = spec["rows"]
    return x[:r], y[:r], x[r:], y[r:]


def make_optimizer(spec):
    if spec["opt"] == "sgd":
        return keras.optimizers.SGD(spec["lr"])
    return keras.optimizers.Adam(spec["lr"])


def build(spec, weights=None):
    layers = [keras.Input((spec["features"],))]
    layers += [keras.layers.Dense(h, activation="relu") for h in spec["hidden"]]
    layers += [keras.layers.Dense(spec["classes"], activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(optimizer=make_optimizer(spec), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if weights is not None:
        model.set_weights(weights)
    return model


_POOL = {}


def workers_for(spec, K, init):
    """K compiled worker models, reused across runs (tracing the train step once per model) and reset to
    ``init`` with fresh optimizer state (slots and iteration count restored to their built values)."""
    key = (json.dumps(spec, sort_keys=True), K)
    if key not in _POOL:
        models = []
        for _ in range(K):
            m = build(spec, init)
            m.optimizer.build(m.trainable_variables)
            models.append((m, [v.numpy().copy() for v in m.optimizer.variables]))
        _POOL[key] = models
    for m, fresh in _POOL[key]:
        m.set_weights(init)
        for v, val in zip(m.optimizer.variables, fresh):
            v.assign(val)
    return [m for m, _ in _POOL[key]]


def accuracy(weights, x, y):
    """Forward pass of the MLP in numpy (same result as model.evaluate, without its overhead)."""
    h = x
    for i in range(0, len(weights) - 2, 2):
        h = np.maximum(h @ weights[i] + weights[i + 1], 0.0)
    logits = h @ weights[-2] + weights[-1]
    return float(np.mean(np.argmax(logits, axis=1) == y))


def keras_reference(spec, init, data, seed):
    xtr, ytr, xte, yte = data
    keras.utils.set_random_seed(seed)
    model = build(spec, init)
    model.fit(xtr, ytr, batch_size=spec["batch"], epochs=spec["epochs"], shuffle=True, verbose=0)
    return accuracy(model.get_weights(), xte, yte)


def parse_rule(rule, K):
    """-> (kind, mu, warmup_rounds)."""
    if rule in ("avg", "sum", "async"):
        return rule, 0.0, 0
    m = re.fullmatch(r"nest(K|[0-9.]+)(?:-wu(\d+))?", rule)
    if not m:
        raise SystemExit(f"unknown rule {rule!r}")
    mu = 1.0 - 1.0 / K if m.group(1) == "K" else float(m.group(1))
    return "nest", mu, int(m.group(2) or 0)


def partitions(n, K):
    bounds = np.linspace(0, n, K + 1).astype(int)
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(K)]


def window_slices(n_rows, batch, W):
    """Row ranges of consecutive windows of W batches (the last may be short; nothing dropped)."""
    step = n_rows if W == "epoch" else W * batch
    return [(s, min(s + step, n_rows)) for s in range(0, n_rows, step)]


def simulate(spec, init, data, seed, K, rule, W):
    xtr, ytr, xte, yte = data
    kind, mu_target, warmup = parse_rule(rule, K)
    keras.utils.set_random_seed(seed)
    workers = workers_for(spec, K, init)
    parts = partitions(len(xtr), K)
    center = [w.copy() for w in init]
    velocity = [np.zeros_like(w) for w in init]
    rounds = 0
    batch = spec["batch"]

    def train(model, idx):
        # one optimizer step per batch, in order (train_on_batch: measured ~3x less overhead than a fit per window)
        xs, ys = xtr[idx], ytr[idx]
        for b in range(0, len(idx), batch):
            model.train_on_batch(xs[b : b + batch], ys[b : b + batch])

    for epoch in range(spec["epochs"]):
        orders = []
        for i, p in enumerate(parts):
            rng = np.random.default_rng([seed, epoch, i])
            orders.append(p[rng.permutation(len(p))])
        slices = [window_slices(len(o), batch, W) for o in orders]
        if kind == "async":
            # round-robin interleaving: worker i trains its next window from the center it last pulled
            cursors = [0] * K
            pulled = [[w.copy() for w in center] for _ in range(K)]
            while any(cursors[i] < len(slices[i]) for i in range(K)):
                for i in range(K):
                    if cursors[i] >= len(slices[i]):
                        continue
                    s, e = slices[i][cursors[i]]
                    cursors[i] += 1
                    train(workers[i], orders[i][s:e])
                    new = workers[i].get_weights()
                    center = [c + (n - p) for c, n, p in zip(center, new, pulled[i])]
                    pulled[i] = [c.copy() for c in center]
                    workers[i].set_weights(center)
            continue
        n_rounds = max(len(s) for s in slices)
        for r in range(n_rounds):
            deltas, counts = [], []
            for i in range(K):
                if r >= len(slices[i]):
                    continue
                s, e = slices[i][r]
                train(workers[i], orders[i][s:e])
                deltas.append([n - c for n, c in zip(workers[i].get_weights(), center)])
                counts.append(e - s)
            if not counts:
                continue
            total = float(sum(counts))
            if kind == "sum":
                step = [sum(d[j] for d in deltas) for j in range(len(center))]
            else:
                step = [sum(c * d[j] for c, d in zip(counts, deltas)) / total for j in range(len(center))]
            if kind == "nest":
                mu = mu_target * min(1.0, rounds / warmup) if warmup else mu_target
                velocity = [mu * v + d for v, d in zip(velocity, step)]
                step = [mu * v + d for v, d in zip(velocity, step)]
            center = [c + d for c, d in zip(center, step)]
            rounds += 1
            for m in workers:
                m.set_weights(center)
    return accuracy(center, xte, yte)


def table(path):
    groups = {}
    for line in open(path):
        r = json.loads(line)
        key = (r["task"], r["opt"], r["K"], r["rule"], str(r["W"]))
        groups.setdefault(key, {})[r["seed"]] = 100.0 * (r["acc"] - r["keras"])  # a repeated run overwrites
    print(f"{'task':7} {'opt':4} {'K':>2} {'rule':12} {'W':>5}  seeds   mean    min    max")
    for key in sorted(groups, key=lambda k: (k[0], k[2], k[3], (len(k[4]), k[4]))):
        d = list(groups[key].values())
        print(
            f"{key[0]:7} {key[1]:4} {key[2]:>2} {key[3]:12} {key[4]:>5}  {len(d):5} {np.mean(d):+6.1f} "
            f"{min(d):+6.1f} {max(d):+6.1f}"
        )
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="c", choices=sorted(TASKS))
    ap.add_argument("--K", default="2", help="comma-separated worker counts")
    ap.add_argument("--rules", default="avg,sum,nest0.5,nest0.8,nestK,nestK-wu10")
    ap.add_argument("--windows", default="8,16,32", help="comma-separated batches per window, or 'epoch'")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated model seeds")
    ap.add_argument("--rows", type=int, default=0, help="override the task's training rows")
    ap.add_argument("--out", default="", help="append one JSON line per run to this file")
    ap.add_argument("--table", default="", help="only summarise the JSON lines of this file (per task, K, rule, W)")
    args = ap.parse_args(argv)
    if args.table:
        return table(args.table)

    spec = dict(TASKS[args.task])
    if args.rows:
        spec["rows"] = args.rows
    data = make_data(spec)
    seeds = [int(s) for s in args.seeds.split(",")]
    Ks = [int(k) for k in args.K.split(",")]
    rules = args.rules.split(",")
    windows = [w if w == "epoch" else int(w) for w in args.windows.split(",")]

    refs, inits, known = {}, {}, {}
    if args.out and os.path.exists(args.out):  # plain Keras results of earlier runs with the same task/rows/seed
        for line in open(args.out):
            r = json.loads(line)
            if r["task"] == args.task and r["rows"] == spec["rows"]:
                known[r["seed"]] = r["keras"]
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        inits[seed] = build(spec).get_weights()
        t = time.perf_counter()
        refs[seed] = known[seed] if seed in known else keras_reference(spec, inits[seed], data, seed)
        print(
            f"# task {args.task} seed {seed}: plain Keras {refs[seed]:.4f} ({time.perf_counter() - t:.1f}s)", flush=True
        )

    print(f"{'task':7} {'opt':4} {'K':>2} {'rule':12} {'W':>5}  diff(points) per seed      mean  spread  s")
    for K in Ks:
        for rule in rules:
            for W in windows:
                t = time.perf_counter()
                diffs = []
                for seed in seeds:
                    acc = simulate(spec, inits[seed], data, seed, K, rule, W)
                    diffs.append(100.0 * (acc - refs[seed]))
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(
                                json.dumps(
                                    dict(
                                        task=args.task,
                                        opt=spec["opt"],
                                        rows=spec["rows"],
                                        K=K,
                                        rule=rule,
                                        W=W,
                                        seed=seed,
                                        acc=acc,
                                        keras=refs[seed],
                                    )
                                )
                                + "\n"
                            )
                per = " ".join(f"{d:+6.1f}" for d in diffs)
                print(
                    f"{args.task:7} {spec['opt']:4} {K:>2} {rule:12} {str(W):>5}  {per:26} "
                    f"{np.mean(diffs):+6.1f} {max(diffs) - min(diffs):6.1f} {time.perf_counter() - t:4.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    sys.exit(main())
