"""Runs the Spark Connect tests (tests/connect/) in a pytest process of their own.

A local Spark Connect server cannot start in a process that already holds a classic SparkSession
(PySpark refuses with SESSION_ALREADY_EXIST), and the rest of the suite shares one classic session;
so the Connect tests get their own interpreter, and this test fails with their output when any of
them fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.timeout(1600)
def test_connect_suite_passes_in_its_own_process():
    # SPARK_TESTING: the local Connect server binds an ephemeral port (as PySpark's own Connect tests
    # do) instead of 15002, so another Connect server on the machine cannot make these tests fail
    env = dict(os.environ, ELEPHAS_CONNECT_TESTS="1", SPARK_TESTING="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "connect")],
        cwd=str(TESTS),
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-60:])
    assert done.returncode == 0, f"The Spark Connect tests failed (exit {done.returncode}):\n{tail}"
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, tail
