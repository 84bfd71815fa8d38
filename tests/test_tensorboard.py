"""``keras.callbacks.TensorBoard`` on the driver writes the merged History's per-epoch scalars.

The event files are read back with TensorBoard's own ``EventAccumulator`` (the ``tensorboard``
package is in the test extra; ``tensorflow-cpu`` 2.21 no longer installs it).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import make_blobs, make_dense_model
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from elephas.spark_model import SparkModel
from elephas.utils.rdd_utils import to_simple_rdd


def _scalars(directory) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(directory), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    out = {
        tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
        for tag in events.Tags()["tensors"]
        if tag.startswith("epoch_")
    }
    out.update({tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]})
    return out


@pytest.mark.backend
def test_tensorboard_callback_writes_the_merged_history_per_epoch(sc, tmp_path):
    x, y = make_blobs(120, seed=8)
    model = make_dense_model(optimizer=keras.optimizers.Adam(0.05))
    logs = tmp_path / "logs"
    history = SparkModel(model).fit(
        to_simple_rdd(sc, x, y),
        epochs=3,
        batch_size=16,
        validation_split=0.25,
        callbacks=[keras.callbacks.TensorBoard(str(logs))],
    )

    train, validation = _scalars(logs / "train"), _scalars(logs / "validation")
    for scalars, prefix in ((train, ""), (validation, "val_")):
        for name in ("loss", "accuracy"):
            written = scalars[f"epoch_{name}"]
            assert [step for step, _ in written] == [0, 1, 2]
            np.testing.assert_allclose([v for _, v in written], history.history[prefix + name], rtol=1e-6)
