"""Keep Spark's console progress bar from drawing over Keras's progress bar during training.

PySpark starts its JVM through ``spark-submit`` with the primary resource ``pyspark-shell``, and
``SparkSubmit`` turns ``spark.ui.showConsoleProgress`` on for shells, so a plain Python program
gets Spark's ``ConsoleProgressBar``. It is created once with the SparkContext, has no switch at
run time, and redraws ``[Stage n:> (0 + 2) / 2]`` on standard error for every stage running more
than 500 ms after the last ``finishAll()``: every training round or epoch, interleaved with the
Keras bar. :func:`spark_progress_paused` calls ``finishAll()`` (public on the JVM object) more
often than that delay while training runs, so the bar never draws; afterwards it works as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

_HOLD_S = 0.2  # under ConsoleProgressBar's 500 ms first-draw delay


def _console_bar(sc: Any) -> Any:
    try:
        option = sc._jsc.sc().progressBar()
        return None if option.isEmpty() else option.get()
    except Exception:  # Spark Connect, another JVM layout: nothing to pause
        logger.debug("no Spark console progress bar to pause", exc_info=True)
        return None


@contextmanager
def spark_progress_paused(sc: Any) -> Iterator[None]:
    """Within the block, Spark's console progress bar (if on) does not draw.

    Args:
        sc: The SparkContext.

    Example:
        >>> with spark_progress_paused(sc):  # doctest: +SKIP
        ...     history = run_training()
    """
    bar = _console_bar(sc)
    if bar is None:
        yield
        return
    stop = threading.Event()

    def hold() -> None:
        while True:
            try:
                bar.finishAll()
            except Exception:  # the context is stopping
                return
            if stop.wait(_HOLD_S):
                return

    thread = threading.Thread(target=hold, name="elephas-spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
