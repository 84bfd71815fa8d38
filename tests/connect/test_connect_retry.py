"""A synchronous fit on Spark Connect survives a Python worker that dies inside an epoch stage.

Partition 0's task of the first epoch kills its own Python worker with SIGKILL once it is training
(its rounds' reducer is open and the other task waits on it in the all-reduce): a real process death,
not an exception. Spark restarts the barrier stage as a whole, every attempt starts from the closure's
center, and the fit completes and learns. Afterwards no elephas thread is left in the client and no
Python worker of this test's Spark holds a listening socket (the in-stage reducers closed theirs).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import worker_kill
from conftest import make_blobs
from pyspark import cloudpickle
from pyspark.ml.linalg import Vectors

from elephas.spark_model import SparkModel

# The executors unpickle the layer by value (they cannot import a test module).
cloudpickle.register_pickle_by_value(worker_kill)


def _listeners_of_workers(root: int) -> dict[int, int]:
    """Listening TCP sockets held by Python workers that descend from process ``root`` (pid -> count).

    The daemon that forks the workers listens for the JVM; the workers themselves listen only while
    an in-stage reducer is open.
    """
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            listening.update(line.split()[9] for line in f if line.split()[3] == "0A")

    def parent(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])

    def cmdline(pid: int) -> bytes:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()

    found: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            if b"pyspark.daemon" not in cmdline(pid) or b"pyspark.daemon" not in cmdline(parent(pid)):
                continue  # not a worker (the daemon itself has a parent that is not a daemon)
            ancestor = pid
            while ancestor > 1 and ancestor != root:
                ancestor = parent(ancestor)
            if ancestor != root:
                continue  # another process's Spark
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in listening:
                    found[pid] = found.get(pid, 0) + 1
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def test_a_killed_python_worker_restarts_the_stage_and_the_fit_completes(spark, tmp_path):
    x, y = make_blobs(n=400, input_dim=4, classes=3, seed=5)
    frame = spark.createDataFrame(
        [(Vectors.dense(a.tolist()), Vectors.dense(b.tolist())) for a, b in zip(x, y)], ["features", "label"]
    )
    marker = str(tmp_path / "killed-worker-pid")
    model = worker_kill.kill_once_model(marker, hidden=8, learning_rate=0.01)
    before = {t.name for t in threading.enumerate()}
    spark_model = SparkModel(model, frequency=2, num_workers=2, custom_objects={"KillOnce": worker_kill.KillOnce})
    history = spark_model.fit(frame, epochs=3, batch_size=16)

    assert os.path.exists(marker), "no task killed its worker: the test did not exercise a restart"
    with open(marker) as f:
        killed = int(f.read())
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)  # the worker is really gone
    assert len(history.history["loss"]) == 3 and sum(history.partition_rows) == len(x)
    assert history.history["loss"][-1] < history.history["loss"][0]
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.9
    left = {t.name for t in threading.enumerate()} - before
    assert not [n for n in left if "elephas" in n], left
    deadline = time.monotonic() + 30
    while _listeners_of_workers(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _listeners_of_workers(os.getpid()) == {}
    assert np.isfinite(history.history["loss"]).all()
