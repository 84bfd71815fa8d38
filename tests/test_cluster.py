"""Training on a real Spark standalone cluster (master + 2 workers on loopback).

The cluster is started from the pip package's ``bin/spark-class`` and every process it starts is
stopped by process id in a ``finally``. The driver runs in a subprocess (its own SparkContext).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.cluster

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> str:
    from pyspark.find_spark_home import _find_spark_home

    return _find_spark_home()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json", timeout=5) as r:
        return json.load(r)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = spark_home()
    cls = os.path.join(home, "bin", "spark-class")
    env = dict(
        os.environ,
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_HOME=home,
        PYSPARK_PYTHON=sys.executable,
        SPARK_LOG_DIR=str(tmp_path_factory.mktemp("logs")),
    )
    port, ui = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    logs = tmp_path_factory.mktemp("cluster")

    def launch(name: str, *args: str) -> subprocess.Popen:
        out = open(logs / f"{name}.log", "wb")
        p = subprocess.Popen([cls, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p

    try:
        launch(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        )
        wait_for(lambda: _answers(ui), 60, "the master")

        def start_worker(i: int) -> subprocess.Popen:
            return launch(
                f"worker{i}",
                "org.apache.spark.deploy.worker.Worker",
                f"spark://127.0.0.1:{port}",
                "--cores",
                "1",
                "--memory",
                "1g",
                "--host",
                "127.0.0.1",
                "--webui-port",
                str(free_port()),
                "--work-dir",
                str(tmp_path_factory.mktemp(f"work{i}")),
            )

        def alive() -> int:
            return len([w for w in master_state(ui)["workers"] if w["state"] == "ALIVE"])

        workers = [start_worker(i) for i in range(2)]
        wait_for(lambda: alive() == 2, 60, "2 workers to register")

        def revive() -> None:
            """Restart the workers an earlier test killed and wait until two are alive."""
            for i, w in enumerate(workers):
                if w.poll() is not None:
                    workers[i] = start_worker(i)
            wait_for(lambda: alive() == 2, 120, "2 workers to be alive")

        yield {"url": f"spark://127.0.0.1:{port}", "workers": workers, "env": env, "ui": ui, "revive": revive}
    finally:
        for p in reversed(procs):
            stop(p)


def _answers(ui: int) -> bool:
    try:
        master_state(ui)
        return True
    except OSError:
        return False


def run_driver(cluster, mode: str, transport: str, epochs: int, kill_during_epoch: int | None = None, rows: int = 4000):
    script = os.path.join(HERE, "cluster_fit_script.py")
    cmd = [sys.executable, script, cluster["url"], mode, transport, str(epochs), str(rows)]
    proc = subprocess.Popen(
        cmd, env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines = []
    killed = False
    try:
        deadline = time.time() + 420
        for line in proc.stdout:
            lines.append(line)
            if kill_during_epoch is not None and not killed and line.startswith(f"TRAINING {kill_during_epoch}"):
                victim = cluster["workers"][1]
                os.killpg(victim.pid, signal.SIGKILL)  # the worker and the executor it launched
                victim.wait(timeout=30)
                killed = True
            if time.time() > deadline:
                raise TimeoutError("driver did not finish in time")
        proc.wait(timeout=60)
    finally:
        stop(proc)
    return proc.returncode, "".join(lines), killed


def test_async_fit_on_standalone_cluster_learns(cluster):
    code, out, _ = run_driver(cluster, "asynchronous", "socket", 3)
    assert code == 0, out[-3000:]
    result = [line for line in out.splitlines() if line.startswith("RESULT")]
    assert result, out[-3000:]
    accuracy = float(result[0].split("accuracy=")[1].split()[0])
    assert accuracy > 0.8


def test_fit_survives_a_killed_worker(cluster):
    # 16,000 rows: an epoch's tasks run for seconds, so the kill lands while the victim's task trains
    # (with 4,000 rows the task could finish between the first progress report and the kill)
    code, out, killed = run_driver(cluster, "hogwild", "http", 4, kill_during_epoch=1, rows=16000)
    assert killed, out[-3000:]
    assert code == 0, out[-3000:]
    # the killed attempt's updates were seen and accounted for separately
    stats = [line for line in out.splitlines() if "parameter server stats" in line]
    assert stats and "'failed_attempts': []" not in stats[-1], out[-3000:]
    result = [line for line in out.splitlines() if line.startswith("RESULT")]
    assert result and "epochs=4" in result[0], out[-3000:]
    accuracy = float(result[0].split("accuracy=")[1].split()[0])
    assert accuracy > 0.6


def test_synchronous_fit_survives_a_killed_worker(cluster):
    # one barrier stage per epoch: the stage loses a task, cannot get its slots back, is cancelled
    # and the epoch runs again from its first center on the executor that is left
    cluster["revive"]()  # the asynchronous test killed a worker
    code, out, killed = run_driver(cluster, "synchronous", "http", 4, kill_during_epoch=1)
    assert killed, out[-3000:]
    assert code == 0, out[-3000:]
    result = [line for line in out.splitlines() if line.startswith("RESULT")]
    assert result and "epochs=4" in result[0], out[-3000:]
    accuracy = float(result[0].split("accuracy=")[1].split()[0])
    assert accuracy > 0.6
