"""Background sending for workers: a push (and the pull after it) runs in a helper thread while
the worker trains its next window.

One exchange is in flight at most: :meth:`BackgroundExchange.submit` hands over an update and
returns at once; :meth:`BackgroundExchange.wait` returns the exchange's result (the version the
push produced and, when asked, the center right after it, from the same request:
:meth:`ParameterClient.push_and_pull`) and raises, in the calling thread,
whatever the helper thread raised. The helper thread owns the client while an exchange is in
flight, so the caller must :meth:`~BackgroundExchange.wait` before using the client itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from elephas.parameter.client import ParameterClient

logger = logging.getLogger(__name__)


@dataclass
class Exchange:
    """The result of one background exchange.

    Attributes:
        version: The server version right after the push was applied.
        center: The center weights pulled after the push (``None`` when no pull was asked).
        center_version: The version of ``center`` (``-1`` when no pull was asked).
    """

    version: int
    center: list[np.ndarray] | None = None
    center_version: int = -1


class BackgroundExchange:
    """Pushes updates (and pulls after them) from one helper thread.

    Args:
        client: The worker's client; while an exchange is in flight only the helper thread
            uses it.
        name: Suffix of the helper thread's name (``elephas-push-<name>``).

    Example:
        >>> with BackgroundExchange(client, name="0") as exchange:  # doctest: +SKIP
        ...     exchange.submit(delta, pull=True, worker_id="0", attempt_id=a, version_seen=v)
        ...     ...                                  # train the next window meanwhile
        ...     done = exchange.wait()               # Exchange(version, center, center_version)
    """

    def __init__(self, client: ParameterClient, name: str = "worker") -> None:
        self.client = client
        self._lock = threading.Condition()
        self._job: tuple[Sequence[np.ndarray], bool, dict[str, Any]] | None = None
        self._result: Exchange | None = None
        self._error: BaseException | None = None
        self._busy = False
        self._closing = False
        self.submitted = 0
        self.completed = 0
        self._thread = threading.Thread(target=self._run, name=f"elephas-push-{name}", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> bool:
        """Whether an exchange was submitted and not yet collected with :meth:`wait`."""
        with self._lock:
            return self._busy

    def submit(self, update: Sequence[np.ndarray], *, pull: bool, **push_kwargs: Any) -> None:
        """Start pushing ``update`` (then pulling, if ``pull``) in the helper thread.

        Args:
            update: The arrays to push. They must not be modified until the exchange is done.
            pull: Pull the center right after the push.
            **push_kwargs: Keyword arguments of :meth:`ParameterClient.push` (``worker_id``,
                ``attempt_id``, ``version_seen``, ``samples``, ``metrics``, ``epoch``).

        Raises:
            RuntimeError: If an exchange is still in flight (call :meth:`wait` first) or the
                exchange is closed.
        """
        with self._lock:
            if self._closing:
                raise RuntimeError("Expected an open BackgroundExchange, received submit() after close().")
            if self._busy:
                raise RuntimeError("Expected no exchange in flight, received a second submit; call wait() first.")
            self._job = (update, pull, push_kwargs)
            self._result = None
            self._error = None
            self._busy = True
            self.submitted += 1
            self._lock.notify_all()

    def wait(self, timeout: float | None = None) -> Exchange | None:
        """Wait for the exchange in flight and return its result (``None`` if none was).

        Raises:
            TimeoutError: If it is not done within ``timeout`` seconds.
            Exception: Whatever the push or pull raised in the helper thread (a
                :class:`~elephas.parameter.ParameterServerError`, ``ConnectionError``, ...).
        """
        with self._lock:
            if not self._busy:
                return None
            if not self._lock.wait_for(lambda: self._job is None, timeout):
                raise TimeoutError(f"Expected the background push to finish within {timeout} s.")
            self._busy = False
            error, self._error = self._error, None
            result, self._result = self._result, None
        if error is not None:
            raise error
        return result

    def close(self, timeout: float | None = None) -> None:
        """Stop the helper thread after the exchange in flight (if any) is done.

        A result or error not collected with :meth:`wait` is discarded; call :meth:`wait`
        first to see it. Idempotent.
        """
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("Background push thread %s still running after %s s.", self._thread.name, timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._job is not None or self._closing)
                if self._job is None:
                    return
                update, pull, kwargs = self._job
            result = error = None
            try:
                if pull:
                    result = Exchange(*self.client.push_and_pull(update, **kwargs))
                else:
                    result = Exchange(self.client.push(update, **kwargs))
            except BaseException as exc:  # handed to the task thread by wait()
                error = exc
            with self._lock:
                self._result, self._error = result, error
                self._job = None
                self.completed += 1
                self._lock.notify_all()

    def __enter__(self) -> BackgroundExchange:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
