"""Stage-level resources: the profile built per cluster manager, where it is attached, and the GPU
environment each backend gets. Spark refuses resource profiles on local masters (checked here), so
what a standalone/YARN/Kubernetes cluster gets is checked on the profile objects and a recording RDD."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import make_blobs, make_dense_model

from elephas.engine.resources import check_resources, resource_profile, with_profile
from elephas.engine.runtime import gpu_environment

STANDALONE = {"spark.master": "spark://host:7077"}
DYNAMIC = {"spark.master": "yarn", "spark.dynamicAllocation.enabled": "true"}


@pytest.mark.parametrize(
    "resources, match",
    [
        ({"tpu": 1}, "Unknown key"),
        ({"gpu": 0}, "gpu"),
        ({"gpu": 1.5}, "whole number"),
        ({"gpu": True}, "gpu"),
        ({"cpus": "4"}, r"Expected resources\['cpus'\] to be an integer >= 1. Received: resources\['cpus'\]='4'"),
        ({"executor_memory": 8}, "non-empty string"),
        ([("gpu", 1)], "must be a dict"),
    ],
)
def test_check_resources_rejects_bad_requests(resources, match):
    with pytest.raises(ValueError, match=match):
        check_resources(resources)


def test_profile_on_a_local_master_is_none_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="elephas.engine.resources"):
        assert resource_profile({"gpu": 1}, {"spark.master": "local[2]"}) is None
    assert "not supported on a local master" in caplog.text
    assert resource_profile(None, STANDALONE) is None


def test_task_profile_without_dynamic_allocation():
    profile = resource_profile({"gpu": 1, "cpus": 4}, STANDALONE)
    assert {k: r.amount for k, r in profile.taskResources.items()} == {"gpu": 1.0, "cpus": 4.0}
    assert profile.executorResources == {}


def test_executor_and_task_profile_with_dynamic_allocation():
    profile = resource_profile(
        {"gpu": 0.5, "cpus": 2, "executor_memory": "8g", "gpu_discovery_script": "/opt/getGpus.sh"}, DYNAMIC
    )
    assert {k: r.amount for k, r in profile.taskResources.items()} == {"gpu": 0.5, "cpus": 2.0}
    executor = profile.executorResources
    assert executor["cores"].amount == 2 and executor["memory"].amount == 8192
    assert (executor["gpu"].amount, executor["gpu"].discoveryScript) == (1, "/opt/getGpus.sh")


def test_with_profile_attaches_through_with_resources(sc):
    class Recording:
        def withResources(self, profile):  # noqa: N802 - the RDD method's name
            self.profile = profile
            return self

    profile = resource_profile({"gpu": 1}, STANDALONE)
    assert with_profile(Recording(), profile).profile is profile
    rdd = sc.parallelize(range(4), 2)
    assert with_profile(rdd, None) is rdd and rdd.getResourceProfile() is None
    with pytest.raises(Exception, match="only supported"):  # what a profile on local[2] would do
        rdd.withResources(profile)


@pytest.mark.parametrize(
    "backend, extra",
    [
        ("tensorflow", {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}),
        ("jax", {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}),
        ("torch", {}),
    ],
)
def test_gpu_environment_per_backend(backend, extra):
    class Info:
        addresses = ["2", " 0 "]

    assert gpu_environment({"gpu": Info()}, backend) == {
        "CUDA_VISIBLE_DEVICES": "2,0",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        **extra,
    }
    assert gpu_environment({}, backend) == {}
    assert gpu_environment({"gpu": []}, backend) == {}


def test_spark_model_with_resources_trains_and_predicts_on_local(sc):
    from elephas.spark_model import SparkModel

    with pytest.raises(ValueError, match="Unknown key"):
        SparkModel(make_dense_model(), resources={"gpus": 1})
    x, y = make_blobs(n=80)
    sm = SparkModel(make_dense_model(), resources={"gpu": 1, "cpus": 1}, frequency="epoch")
    assert sm.get_config()["resources"] == {"gpu": 1.0, "cpus": 1}
    assert sm._profile() is None  # local[2]: ignored, the stages run without a profile
    history = sm.fit(sc.parallelize(list(zip(x, y)), 2), epochs=1)
    assert np.isfinite(history.history["loss"][0])
    assert sm.predict(x[:10]).shape == (10, 3)


def test_estimator_resources_param_and_identity_profile_stage(spark):
    from elephas.engine.inference import _same_batches, under_profile
    from elephas.ml.estimator import ElephasEstimator
    from elephas.ml.params import to_resources

    est = ElephasEstimator()
    est.set_resources({"gpu": 1, "cpus": 4})
    assert est.get_resources_value() == {"gpu": 1.0, "cpus": 4}
    assert to_resources('{"gpu": 1}') == '{"gpu": 1.0}'
    with pytest.raises(ValueError, match="Unknown key"):
        est.set_resources({"memory": "8g"})
    from pyspark.ml.linalg import Vectors

    df = spark.createDataFrame([(1.0, Vectors.dense([1.0, 2.0]))], ["prediction", "probability"])
    assert under_profile(df, None) is df
    # what under_profile runs with a profile: an identity mapInArrow that keeps every column, vectors too
    assert df.mapInArrow(_same_batches, df.schema).collect() == df.collect()
