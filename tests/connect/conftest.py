"""Fixtures of the Spark Connect tests: one local Connect session, and no SparkContext in sight.

A local Connect server (``SparkSession.builder.remote("local[2]")``) cannot start in a process that
already holds a classic SparkSession, so these tests run in a pytest process of their own
(``tests/test_connect.py`` starts it); in the main test run this directory is not collected.

A local server also creates a classic SparkContext in this very process, which a real remote client
never has. Every test here therefore runs with that SparkContext hidden: code that reaches for
``SparkContext._active_spark_context``, ``SparkContext.getOrCreate()`` or a new SparkContext fails
the test instead of passing where users would fail.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

RUN_ENV = "ELEPHAS_CONNECT_TESTS"

# The tiny models and data of the main suite (``from conftest import make_blobs`` in these tests
# finds this module, so the helpers are re-exported from tests/conftest.py).
_root = importlib.util.spec_from_file_location("elephas_tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
_helpers = importlib.util.module_from_spec(_root)
_root.loader.exec_module(_helpers)
make_blobs = _helpers.make_blobs
make_dense_model = _helpers.make_dense_model

if os.environ.get(RUN_ENV) != "1":
    collect_ignore_glob = ["test_*.py"]


class SparkContextUsed(AssertionError):
    """Code under test reached for a SparkContext, which a Spark Connect client does not have."""


@pytest.fixture(scope="session")
def spark():
    """The test session's Spark Connect session (a local server, local[2])."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.remote("local[2]")
        .appName("elephas-connect-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(autouse=True)
def no_spark_context(spark, monkeypatch):
    """Hide the local server's SparkContext from the code under test, for each test's duration."""
    from pyspark import SparkContext

    def refuse(*args, **kwargs):
        raise SparkContextUsed(
            "Expected no use of a SparkContext on a Spark Connect session, received a call "
            "to SparkContext (getOrCreate or a constructor)."
        )

    monkeypatch.setattr(SparkContext, "_active_spark_context", None)
    monkeypatch.setattr(SparkContext, "getOrCreate", classmethod(refuse))
    monkeypatch.setattr(SparkContext, "__init__", refuse)
    yield
