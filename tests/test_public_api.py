"""The public names users import, pinned."""

from __future__ import annotations

import importlib
import subprocess
import sys

import elephas

EXPECTED = {
    "AsynchronousSparkModel",
    "ElephasEstimator",
    "ElephasTransformer",
    "HyperParamModel",
    "SparkMLlibModel",
    "SparkModel",
    "VotingModel",
    "__version__",
    "load_ml_estimator",
    "load_ml_transformer",
    "load_spark_model",
}

PATHS = {
    "elephas.spark_model": ["SparkModel", "AsynchronousSparkModel", "SparkMLlibModel", "load_spark_model"],
    "elephas.ml_model": ["ElephasEstimator", "ElephasTransformer", "load_ml_estimator", "load_ml_transformer"],
    "elephas.hyperparam": [
        "HyperParamModel",
        "VotingModel",
        "choice",
        "uniform",
        "quniform",
        "loguniform",
        "qloguniform",
        "normal",
        "qnormal",
        "randint",
    ],
    "elephas.utils.rdd_utils": [
        "to_simple_rdd",
        "to_labeled_point",
        "from_labeled_point",
        "lp_to_simple_rdd",
        "encode_label",
    ],
    "elephas.ml.adapter": ["to_data_frame", "from_data_frame", "df_to_simple_rdd"],
    "elephas.utils": ["to_data_frame", "from_data_frame", "df_to_simple_rdd", "to_simple_rdd"],
    "elephas.mllib.adapter": ["to_vector", "from_vector", "to_matrix", "from_matrix"],
    "elephas.trainers": [
        "SingleTrainer",
        "AveragingTrainer",
        "EnsembleTrainer",
        "DOWNPOUR",
        "ADAG",
        "AEASGD",
        "EAMSGD",
        "DynSGD",
    ],
    "elephas.ml.transformers": [
        "OneHotTransformer",
        "LabelIndexTransformer",
        "MinMaxTransformer",
        "BinaryLabelTransformer",
        "StandardTransformer",
        "DenseTransformer",
        "ReshapeTransformer",
        "ModelPredictor",
        "AccuracyEvaluator",
        "shuffle",
    ],
}


def test_top_level_all_is_pinned():
    assert set(elephas.__all__) == EXPECTED
    for name in EXPECTED - {"__version__"}:
        assert getattr(elephas, name) is not None


def test_documented_import_paths():
    for module, names in PATHS.items():
        mod = importlib.import_module(module)
        missing = [n for n in names if not hasattr(mod, n)]
        assert not missing, f"{module} lacks {missing}"


def test_import_is_light():
    code = "import sys, elephas; print('tensorflow' in sys.modules, 'pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
