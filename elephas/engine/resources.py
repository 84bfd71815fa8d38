"""Stage-level scheduling: the ``ResourceProfile`` that training and inference stages run with.

``resources={"gpu": 1, "cpus": 4}`` asks that every training (and inference) task gets one GPU and
four CPU cores, so a cluster can keep its GPU executors for these stages. What Spark accepts depends
on the cluster manager:

* local masters (``local[...]``): Spark refuses any resource profile; the request is logged and the
  stages run without one.
* Standalone, YARN or Kubernetes without dynamic allocation: a task-only profile
  (``TaskResourceRequests``); the tasks go to the executors that already have the resources.
* with dynamic allocation (``spark.dynamicAllocation.enabled``): executor requests too (cores, GPUs
  with their discovery script, memory), so Spark can start executors of that shape.

Keys of ``resources``: ``gpu`` (GPUs per task, a fraction shares a GPU between tasks), ``cpus``
(cores per task), and, used with dynamic allocation only, ``executor_cores``, ``executor_gpus``,
``executor_memory`` (e.g. ``'8g'``) and ``gpu_discovery_script``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from ..utils.checks import check_positive_int

logger = logging.getLogger(__name__)

RESOURCE_KEYS = ("gpu", "cpus", "executor_cores", "executor_gpus", "executor_memory", "gpu_discovery_script")


def check_resources(resources: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Validate a ``resources`` request; return it as a plain dict (``None`` when empty).

    Raises:
        ValueError: An unknown key, or a value of the wrong type or range.

    Example:
        >>> check_resources({"gpu": 1, "cpus": 4})
        {'gpu': 1.0, 'cpus': 4}
    """
    if resources is None:
        return None
    if not isinstance(resources, Mapping):
        raise ValueError(
            f"resources must be a dict such as {{'gpu': 1, 'cpus': 4}}. Received: resources={resources!r}."
        )
    unknown = sorted(set(resources) - set(RESOURCE_KEYS))
    if unknown:
        raise ValueError(f"Unknown key(s) in resources: {unknown}. Expected keys among {list(RESOURCE_KEYS)}.")
    out: dict[str, Any] = {}
    for key, value in resources.items():
        if value is None:
            continue
        if key == "gpu":
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not value > 0
                or (value > 1 and value != int(value))
            ):
                raise ValueError(
                    "resources['gpu'] must be a number > 0: a whole number of GPUs, or a fraction "
                    f"<= 1 to share one GPU between tasks. Received: {value!r}."
                )
            out[key] = float(value)
        elif key in ("cpus", "executor_cores", "executor_gpus"):
            out[key] = check_positive_int(f"resources[{key!r}]", value)
        elif not isinstance(value, str) or not value:
            raise ValueError(f"resources[{key!r}] must be a non-empty string. Received: {value!r}.")
        else:
            out[key] = value
    return out or None


def resource_profile(resources: Mapping[str, Any] | None, conf: Any = None) -> Any:
    """The ``pyspark.resource.ResourceProfile`` for ``resources`` on this cluster, or ``None``.

    Args:
        resources: The request (see the module docstring); validated with :func:`check_resources`.
        conf: The Spark configuration (``SparkConf`` or a mapping with ``get``); default the active
            SparkContext's.

    Returns:
        ``None`` when nothing is asked for, the master is local (logged at INFO: Spark refuses
        stage-level scheduling there) or there is no SparkContext (Spark Connect, logged); a
        task-only profile without dynamic allocation; executor and task requests with dynamic
        allocation.

    Example:
        >>> profile = resource_profile({"gpu": 1, "cpus": 4}, {"spark.master": "spark://host:7077"})
        >>> profile.taskResources["gpu"].amount, profile.taskResources["cpus"].amount
        (1.0, 4.0)
    """
    request = check_resources(resources)
    if request is None:
        return None
    if conf is None:
        from pyspark import SparkContext

        sc = SparkContext._active_spark_context
        if sc is None:  # a Spark Connect session: profiles are not attached from here yet
            logger.info(
                "resources=%s: no SparkContext (Spark Connect?); the stages run without a resource profile.", request
            )
            return None
        conf = sc.getConf()
    master = str(conf.get("spark.master", "") or "")
    if master.startswith("local"):
        logger.info(
            "resources=%s: stage-level resource profiles are not supported on a local master (%s); "
            "the stages run without one.",
            request,
            master,
        )
        return None
    from pyspark.resource import ExecutorResourceRequests, ResourceProfileBuilder, TaskResourceRequests

    task = TaskResourceRequests()
    if "cpus" in request:
        task.cpus(request["cpus"])
    if "gpu" in request:
        task.resource("gpu", request["gpu"])
    builder = ResourceProfileBuilder().require(task)
    dynamic = str(conf.get("spark.dynamicAllocation.enabled", "false") or "false").lower() == "true"
    if dynamic:
        executor = ExecutorResourceRequests()
        executor.cores(request.get("executor_cores", request.get("cpus", 1)))
        if "executor_memory" in request:
            executor.memory(request["executor_memory"])
        gpus = request.get("executor_gpus", math.ceil(request.get("gpu", 0)))
        if gpus:
            executor.resource("gpu", gpus, request.get("gpu_discovery_script", ""))
        builder.require(executor)
    profile = builder.build
    logger.info(
        "resources=%s: training and inference stages run with a %s resource profile",
        request,
        "executor and task" if dynamic else "task",
    )
    return profile


def with_profile(rdd: Any, profile: Any) -> Any:
    """``rdd`` with ``profile`` attached (``rdd.withResources``), or ``rdd`` itself when ``None``.

    Example:
        >>> with_profile(rdd, None) is rdd  # doctest: +SKIP
        True
    """
    return rdd if profile is None else rdd.withResources(profile)
