"""A Keras layer that kills its own Spark Python worker once: a real process death inside an epoch stage.

The first time a training step runs in partition 0's barrier task, that task's Python worker
records its process id in ``marker`` and SIGKILLs itself; the marker exists afterwards, so the
restarted stage trains normally. Used by the classic and the Spark Connect retry tests.
"""

from __future__ import annotations

import os
import signal

import keras


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
    """The identity; when a training step runs in partition 0's barrier task, :func:`kill_once`."""

    def __init__(self, marker: str, **kwargs):
        super().__init__(**kwargs)
        self.marker = marker

    def call(self, inputs, training=None):
        if training:
            kill_once(self.marker)
        return inputs

    def get_config(self):
        return {**super().get_config(), "marker": self.marker}


def kill_once_model(marker: str, hidden: int, learning_rate: float) -> keras.Model:
    """A compiled 4-feature, 3-class MLP whose first layer is :class:`KillOnce`."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            KillOnce(marker),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(learning_rate), "categorical_crossentropy", metrics=["accuracy"])
    return model
