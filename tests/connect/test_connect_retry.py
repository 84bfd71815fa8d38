"""A synchronous fit on Spark Connect survives a Python worker that dies inside an epoch stage.

Partition 0's task of the first epoch kills its own Python worker with SIGKILL once it is training
(its rounds' reducer is open and the other task waits on it in the all-reduce): a real process death,
not an exception. Spark restarts the barrier stage as a whole, every attempt starts from the closure's
center, and the fit completes and learns. Afterwards no elephas thread is left in the client and no
Python worker of this test's Spark holds a listening socket (the in-stage reducers closed theirs).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import keras
import numpy as np
import pytest
from conftest import make_blobs
from pyspark import cloudpickle
from pyspark.ml.linalg import Vectors

from elephas.spark_model import SparkModel

# The executors unpickle this module's layer by value (they cannot import a test module).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def kill_once(marker: str) -> None:
    """In the barrier task of partition 0, the first time only: record this process id and SIGKILL it."""
    from pyspark import BarrierTaskContext, TaskContext

    context = TaskContext.get()
    if not isinstance(context, BarrierTaskContext) or context.partitionId() != 0:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


class KillOnce(keras.layers.Layer):
    """The identity; when a training step is traced in partition 0's barrier task, :func:`kill_once`."""

    def __init__(self, marker: str, **kwargs):
        super().__init__(**kwargs)
        self.marker = marker

    def call(self, inputs, training=None):
        if training:
            kill_once(self.marker)
        return inputs

    def get_config(self):
        return {**super().get_config(), "marker": self.marker}


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
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            KillOnce(marker),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "categorical_crossentropy", metrics=["accuracy"])
    before = {t.name for t in threading.enumerate()}
    spark_model = SparkModel(model, frequency=2, num_workers=2, custom_objects={"KillOnce": KillOnce})
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
