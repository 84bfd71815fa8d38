"""Executor-side process set-up: framework threads and GPU pinning, done before TensorFlow starts.

Spark runs several Python workers per machine; left alone, each TensorFlow process would start one
thread per core and they would fight over the cores. The driver computes a thread count per task
and :func:`prepare_worker` applies it (and the task's GPU, if Spark assigned one) before Keras is
imported in the worker process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerRuntime:
    """Plain settings shipped to every task.

    Attributes:
        backend: The Keras backend name used on the driver ('tensorflow', 'jax', 'torch').
        threads: Intra-op threads per task (0 leaves the framework's default).
    """

    backend: str = "tensorflow"
    threads: int = 1


def gpu_environment(resources: Mapping[str, Any], backend: str = "tensorflow") -> dict[str, str]:
    """Environment variables that make only the task's assigned GPUs visible to ``backend``.

    Spark's GPU addresses are the indices ``nvidia-smi`` shows (PCI bus order); CUDA numbers devices
    fastest first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so that is set too. TensorFlow, JAX and
    PyTorch all read ``CUDA_VISIBLE_DEVICES`` when they initialise CUDA; on top of it TensorFlow gets
    memory growth and JAX no preallocation (several tasks may share a GPU). PyTorch allocates on
    demand already.

    Args:
        resources: ``TaskContext.resources()``: a mapping of resource name to an object with an
            ``addresses`` list (or the list itself).
        backend: The Keras backend ('tensorflow', 'jax', 'torch').

    Returns:
        ``{}`` when no GPU was assigned, else the variables to set before the framework starts.

    Example:
        >>> gpu_environment({"gpu": ["1"]})["CUDA_VISIBLE_DEVICES"]
        '1'
        >>> gpu_environment({"gpu": ["0", "2"]}, "jax")["XLA_PYTHON_CLIENT_PREALLOCATE"]
        'false'
    """
    gpu = resources.get("gpu") if resources else None
    if gpu is None:
        return {}
    addresses: Sequence[str] = getattr(gpu, "addresses", gpu)
    addresses = [str(a).strip() for a in addresses if str(a).strip()]
    if not addresses:
        return {}
    env = {"CUDA_VISIBLE_DEVICES": ",".join(addresses), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    if backend == "tensorflow":
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    elif backend == "jax":
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return env


def thread_environment(threads: int, backend: str = "tensorflow") -> dict[str, str]:
    """Environment variables that cap the framework's CPU threads at ``threads`` (0: no cap).

    ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` cap TensorFlow's and PyTorch's intra-op pools (PyTorch
    reads ``OMP_NUM_THREADS`` when it starts; :func:`prepare_worker` also calls
    ``torch.set_num_threads`` where torch is loaded already). XLA (the JAX backend) has no flag for
    a pool of N threads on the CPU; with one thread per task its Eigen pool is turned off through
    ``XLA_FLAGS`` (appended to flags already set), with more it keeps its default.

    Example:
        >>> thread_environment(1, "jax")["XLA_FLAGS"]
        '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
    """
    if threads <= 0:
        return {}
    n = str(int(threads))
    env = {"OMP_NUM_THREADS": n, "TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": "1", "MKL_NUM_THREADS": n}
    flags = os.environ.get("XLA_FLAGS", "")
    if backend == "jax" and int(threads) == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        env["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    return env


_PREPARED = False
_FROZEN = False


def _check_same_gpus(backend: str) -> None:
    """Warn when a reused Python worker is given other GPUs than the ones it pinned at start-up
    (CUDA is initialised by then: the task keeps running on the first ones)."""
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        wanted = gpu_environment(ctx.resources(), backend).get("CUDA_VISIBLE_DEVICES") if ctx else None
    except Exception:  # noqa: BLE001 - resources() is unavailable outside a task
        return
    pinned = os.environ.get("CUDA_VISIBLE_DEVICES")
    if wanted and pinned != wanted:
        logger.warning(
            "this Python worker pinned GPU(s) %s when it started; the task was assigned %s but keeps "
            "running on the first ones (set spark.python.worker.reuse=false to start a worker per "
            "task).",
            pinned,
            wanted,
        )


def prepare_worker(runtime: WorkerRuntime) -> None:
    """Apply thread and GPU settings in this Python worker, once, before the framework starts;
    then load the framework and exempt it from cyclic garbage collection
    (:func:`freeze_loaded_modules`)."""
    global _PREPARED
    if _PREPARED:
        _check_same_gpus(runtime.backend)
        freeze_loaded_modules()
        return
    env = dict(thread_environment(runtime.threads, runtime.backend))
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None:
            env.update(gpu_environment(ctx.resources(), runtime.backend))
    except Exception:  # resources() is unavailable outside a task
        logger.debug("no task resources", exc_info=True)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["KERAS_BACKEND"] = runtime.backend
    already = "tensorflow" in __import__("sys").modules
    for key, value in env.items():
        if key == "TF_CPP_MIN_LOG_LEVEL" and key in os.environ:
            continue
        os.environ[key] = value
    if already and runtime.backend == "tensorflow" and runtime.threads > 0:
        try:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(runtime.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised: the environment caps apply to new processes
            logger.debug("TensorFlow threads already fixed in this worker")
    if runtime.backend == "torch" and runtime.threads > 0 and "torch" in __import__("sys").modules:
        import torch

        torch.set_num_threads(runtime.threads)
    _PREPARED = True
    quiet_framework_import(runtime.backend)  # start-up lines to the log, not the executor's stderr
    freeze_loaded_modules()


_BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def quiet_framework_import(backend: str | None = None) -> bool:
    """Import Keras and its backend with the process's standard error captured; log what it wrote.

    TensorFlow 2.21 writes its C++ start-up lines ("oneDNN custom operations are on ...", "All log
    messages before absl::InitializeLog() is called are written to STDERR") through Abseil logging
    before that logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not silence them, in
    every process that imports it. Here file descriptor 2 points at a temporary file during the
    import; what was written is logged at DEBUG on this module's logger (or written back to
    standard error when the import fails, so no error is hidden).

    Args:
        backend: The Keras backend ('tensorflow', 'jax', 'torch'); default ``KERAS_BACKEND`` or
            'tensorflow'.

    Returns:
        Whether this call imported Keras (``False`` when it was imported already).

    Example:
        >>> from elephas.engine.runtime import quiet_framework_import
        >>> quiet_framework_import()  # before `import keras`  # doctest: +SKIP
        True
    """
    import importlib
    import sys
    import tempfile

    if "keras" in sys.modules:
        return False
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    module = _BACKEND_MODULES.get(backend)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            if module is not None:
                try:
                    importlib.import_module(module)
                except ImportError:  # Keras says which backend is missing
                    pass
            importlib.import_module("keras")
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            if failed and text:
                sys.stderr.write(text)
            elif text:
                logger.debug("framework start-up output:\n%s", text.rstrip())
    return True


def freeze_loaded_modules() -> bool:
    """Exempt what this Python worker has loaded (Keras, its backend, ...) from cyclic garbage
    collection, once per process.

    PySpark's daemon runs a full ``gc.collect()`` after every task of a reused Python worker. With
    TensorFlow imported that walks several hundred thousand objects, about 0.15 CPU-seconds
    after every task: every synchronous round, every asynchronous epoch and every prediction
    task. ``gc.freeze()`` moves the objects alive now into the collector's permanent generation,
    so later collections only walk what the tasks allocate. Frozen objects are still freed by
    reference counting; only cycles among them are never collected, which for loaded modules
    does not matter. Called in executors' Python workers only (through :func:`prepare_worker`).

    Returns:
        Whether this call froze the heap (``False`` when it was frozen already).
    """
    global _FROZEN
    if _FROZEN:
        return False
    import gc

    import keras  # noqa: F401 - the task imports it next anyway; freeze it with the rest

    gc.freeze()
    _FROZEN = True
    logger.debug("Froze %d objects in this Python worker.", gc.get_freeze_count())
    return True


def default_threads(conf: Any, default_parallelism: int, cpu_count: int | None = None) -> int:
    """Threads per task so that concurrent tasks on one machine share its cores.

    Uses ``spark.task.cpus`` on a cluster; in local mode, the machine's cores divided by the
    number of concurrent tasks.
    """
    master = conf.get("spark.master", "") or ""
    task_cpus = int(conf.get("spark.task.cpus", "1") or 1)
    if master.startswith("local"):
        cores = cpu_count or os.cpu_count() or 1
        return max(1, cores // max(1, default_parallelism)) * task_cpus
    return task_cpus
