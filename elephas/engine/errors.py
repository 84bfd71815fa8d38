"""Make a failure inside a Spark task reach the user as an error naming the partition.

Executor code runs under :func:`guard`, which re-raises any exception with a marker line carrying
the partition id and the executor's traceback. On the driver, :func:`task_failure` finds that
marker inside whatever exception Spark raised and turns it into a :class:`TaskFailedError`.
"""

from __future__ import annotations

import math
import re
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_MARK = "[elephas task failure: partition "
_PATTERN = re.compile(r"\[elephas task failure: partition (\d+)\] (.*?)\[/elephas\]", re.S)


class TaskFailedError(RuntimeError):
    """A Spark task of an elephas job raised.

    Attributes:
        partition: The partition the failing task worked on (``None`` if unknown).
        remote_traceback: The executor's traceback text.
    """

    def __init__(self, message: str, partition: int | None, remote_traceback: str):
        super().__init__(message)
        self.partition = partition
        self.remote_traceback = remote_traceback

    @property
    def remote_type(self) -> str | None:
        """The class name of the exception raised in the task (``'NonFiniteLossError'``, ...)."""
        match = re.match(r"\s*([A-Za-z_][\w.]*): ", self.remote_traceback or "")
        return match.group(1).rsplit(".", 1)[-1] if match else None

    @property
    def non_finite_loss(self) -> bool:
        """Whether the task stopped because its loss or a metric became NaN or infinite."""
        return self.remote_type == NonFiniteLossError.__name__


class NonFiniteLossError(FloatingPointError):
    """A worker's loss (or a metric) became NaN or infinite while training."""


def check_finite_logs(logs: dict[str, Any], *, partition: int, epoch: int, window: int) -> dict[str, Any]:
    """Raise :class:`NonFiniteLossError` naming where it happened if a value in ``logs`` is NaN or infinite.

    Workers call it on each window's logs before they send anything to the driver or the parameter
    server, so a diverged worker never pushes NaN weights and the user reads where it diverged. On
    the driver a ``keras.callbacks.TerminateOnNaN`` turns this failure into a stop, as in Keras.

    Args:
        logs: Metric name -> value of one training window.
        partition: The partition the worker trains.
        epoch: 0-based epoch index (shown 1-based, as Keras prints epochs).
        window: 0-based index of the communication window in the epoch (shown 1-based).

    Returns:
        ``logs``, unchanged, when every value is finite.

    Raises:
        NonFiniteLossError: When a value is NaN or infinite.

    Example:
        >>> check_finite_logs({"loss": 0.5}, partition=0, epoch=0, window=0)
        {'loss': 0.5}
        >>> check_finite_logs({"loss": float("nan")}, partition=3, epoch=1, window=4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        elephas.engine.errors.NonFiniteLossError: Non-finite loss in partition 3, epoch 2, window 5. ...
    """
    bad = {}
    for name, value in logs.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(number):
            bad[name] = number
    if bad:
        names = ", ".join(bad)
        received = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteLossError(
            f"Non-finite {names} in partition {partition}, epoch {epoch + 1}, window {window + 1}. "
            f"Expected finite values. Received: {received}. Lower the learning rate, clip gradients "
            "(e.g. optimizer clipnorm=1.0) or check the data for NaN/inf; pass "
            "keras.callbacks.TerminateOnNaN() to stop training instead of failing."
        )
    return logs


class RemoteTaskError(RuntimeError):
    """Raised on the executor; its message carries the marker the driver looks for."""


def guard(fn: Callable[[int, Iterable[Any]], Iterator[T]]) -> Callable[[int, Iterable[Any]], Iterator[T]]:
    """Wrap a ``mapPartitionsWithIndex`` function so its exceptions name the partition."""

    def wrapped(pid: int, it: Iterable[Any]) -> Iterator[T]:
        try:
            yield from fn(pid, it)
        except Exception as exc:  # re-raised with evidence for the driver
            tb = traceback.format_exc()
            raise RemoteTaskError(f"{_MARK}{pid}] {type(exc).__name__}: {exc}\n{tb}[/elephas]") from exc

    return wrapped


def task_failure(exc: BaseException, what: str) -> TaskFailedError | None:
    """The :class:`TaskFailedError` hidden in a Spark exception, or ``None`` if there is none."""
    text = str(exc)
    match = _PATTERN.search(text)
    if not match:
        return None
    pid = int(match.group(1))
    body = match.group(2).strip()
    first = body.splitlines()[0] if body else "unknown error"
    tail = "\n".join(body.splitlines()[-25:])
    return TaskFailedError(
        f"{what} failed in the task for partition {pid}: {first}\nExecutor traceback (tail):\n{tail}", pid, body
    )


def run_job(action: Callable[[], T], what: str) -> T:
    """Run a Spark action; a task failure comes back as :class:`TaskFailedError`."""
    try:
        return action()
    except TaskFailedError:
        raise
    except Exception as exc:
        failure = task_failure(exc, what)
        if failure is not None:
            raise failure from None
        missing = re.search(r"ModuleNotFoundError: No module named '([^']+)'", str(exc))
        if missing:
            raise TaskFailedError(
                f"{what} failed: the executors cannot import module {missing.group(1)!r}, which "
                "the model, its custom objects or a callback comes from. Ship it with "
                "SparkContext.addPyFile(...) or --py-files, or define the objects in the main script.",
                None,
                str(exc),
            ) from None
        raise
