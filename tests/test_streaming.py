"""A saved PipelineModel with an ElephasTransformer on a Structured Streaming DataFrame.

The stream is a real file source of Parquet files with an ml Vector features column, read one
file per micro-batch into a memory sink; the query is stopped by the test. Predictions must equal
the batch transform of the same rows, and each Python worker must build the model once, however
many micro-batches it serves (a layer of this module leaves one marker file per construction).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter

import keras
import numpy as np
from conftest import make_blobs

from elephas.ml_model import ElephasTransformer

FILES = 6
ROWS_PER_FILE = 10


@keras.saving.register_keras_serializable("elephas_streaming_tests")
class CountingDense(keras.layers.Dense):
    """A Dense layer that leaves a file named after its process in ``marker`` whenever it is built."""

    def __init__(self, units, marker, **kwargs):
        super().__init__(units, **kwargs)
        self.marker = marker
        open(os.path.join(marker, f"{os.getpid()}-{uuid.uuid4().hex}"), "w").close()

    def get_config(self):
        return {**super().get_config(), "marker": self.marker}


def _builds_by_process(marker) -> Counter:
    return Counter(int(name.split("-")[0]) for name in os.listdir(marker))


def test_saved_pipeline_on_a_parquet_stream_matches_batch_and_builds_once_per_worker(spark, tmp_path):
    from pyspark.ml import PipelineModel
    from pyspark.ml.linalg import Vectors

    marker = tmp_path / "builds"
    marker.mkdir()
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            CountingDense(3, marker=str(marker), activation="softmax"),
        ]
    )
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    stage = ElephasTransformer(model, categorical=True, probabilityCol="probability")
    PipelineModel(stages=[stage]).save(str(tmp_path / "pipeline"))

    x, _ = make_blobs(FILES * ROWS_PER_FILE, seed=9)
    source = str(tmp_path / "source")
    for f in range(FILES):
        rows = [(float(i), Vectors.dense(x[i].tolist())) for i in range(f * ROWS_PER_FILE, (f + 1) * ROWS_PER_FILE)]
        spark.createDataFrame(rows, ["id", "features"]).coalesce(1).write.mode("append").parquet(source)
    schema = spark.read.parquet(source).schema

    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    # the layer's class travels to the Python workers by reference, as for any custom layer
    loaded.stages[-1].set_params(custom_objects={"CountingDense": CountingDense})
    driver = os.getpid()
    stream = spark.readStream.schema(schema).option("maxFilesPerTrigger", 1).parquet(source)
    name = f"elephas_stream_{uuid.uuid4().hex[:8]}"
    query = (
        loaded.transform(stream)
        .select("id", "prediction", "probability")
        .writeStream.format("memory")
        .queryName(name)
        .outputMode("append")
        .start()
    )
    try:
        query.processAllAvailable()
        batches = [p for p in query.recentProgress if p["numInputRows"] > 0]
    finally:
        query.stop()
    streamed = sorted(spark.table(name).collect(), key=lambda r: r["id"])
    builds = {pid: n for pid, n in _builds_by_process(marker).items() if pid != driver}

    assert len(batches) == FILES
    assert [r["id"] for r in streamed] == [float(i) for i in range(FILES * ROWS_PER_FILE)]
    assert builds, "no Python worker built the model"
    assert set(builds.values()) == {1}, f"model builds per worker process: {builds}"
    assert len(builds) < len(batches)

    batch = sorted(
        loaded.transform(spark.read.parquet(source)).select("id", "prediction", "probability").collect(),
        key=lambda r: r["id"],
    )
    assert [r["prediction"] for r in streamed] == [r["prediction"] for r in batch]
    np.testing.assert_allclose(
        [r["probability"].toArray() for r in streamed], [r["probability"].toArray() for r in batch], atol=1e-6
    )
    expected = model.predict(x, verbose=0)
    assert [r["prediction"] for r in streamed] == [float(c) for c in expected.argmax(axis=1)]
    np.testing.assert_allclose([r["probability"].toArray() for r in streamed], expected, atol=1e-5)
