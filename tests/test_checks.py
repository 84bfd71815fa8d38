"""elephas.utils.checks: each rule on its own, no Spark session (real pyspark schema types only)."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.linalg import VectorUDT
from pyspark.mllib.linalg import VectorUDT as MLlibVectorUDT
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    IntegerType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from elephas.utils.checks import (
    check_class_indices,
    check_column,
    check_int,
    check_nb_classes,
    check_positive_int,
    check_scalar_labels,
    check_single_output,
    class_indices_message,
    column_type,
    int_converter,
    is_feature_type,
    is_vector_type,
    model_output_width,
    output_width,
)

SCHEMA = StructType(
    [
        StructField("features", VectorUDT()),
        StructField("old", MLlibVectorUDT()),
        StructField("arr", ArrayType(DoubleType())),
        StructField("label", DoubleType()),
        StructField("name", StringType()),
        StructField("tags", MapType(StringType(), DoubleType())),
    ]
)


# ------------------------------------------------------------------------------------ integers
@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(2)])
def test_positive_int_accepts_python_and_numpy_ints(value):
    out = check_positive_int("batch_size", value)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -3, 1.0, 2.5, "4", True, None])
def test_positive_int_refuses_everything_else(value):
    with pytest.raises(ValueError) as info:
        check_positive_int("batch_size", value)
    assert str(info.value) == f"Expected batch_size to be an integer >= 1. Received: batch_size={value!r}."


def test_int_with_other_minimum_and_without_bound():
    assert check_int("patience", 0, minimum=0) == 0
    with pytest.raises(ValueError, match=r"Expected patience to be an integer >= 0. Received: patience=-1\."):
        check_int("patience", -1, minimum=0)
    assert check_int("seed", -5, minimum=None) == -5
    with pytest.raises(ValueError, match=r"Expected seed to be an integer. Received: seed='x'\."):
        check_int("seed", "x", minimum=None)


def test_int_converter_types_and_range():
    convert = int_converter("output_dim", 1)
    assert convert(3) == 3 and convert(3.0) == 3 and convert(np.int64(2)) == 2
    for bad in (2.5, "3", True, None, float("nan")):
        with pytest.raises(TypeError, match=r"Expected output_dim to be an integer >= 1. Received: output_dim="):
            convert(bad)
    for bad in (0, -2, 0.0):
        with pytest.raises(
            ValueError, match=rf"Expected output_dim to be an integer >= 1. Received: output_dim={int(bad)}\."
        ):
            convert(bad)
    assert int_converter("offset")(-4) == -4


# ------------------------------------------------------------------------------------- columns
def test_vector_and_feature_types():
    assert is_vector_type(VectorUDT()) and is_vector_type(MLlibVectorUDT())
    assert not is_vector_type(ArrayType(DoubleType()))
    for ok in (VectorUDT(), MLlibVectorUDT(), ArrayType(DoubleType()), DoubleType(), IntegerType()):
        assert is_feature_type(ok)
    for bad in (StringType(), MapType(StringType(), DoubleType())):
        assert not is_feature_type(bad)


def test_check_column_returns_the_type_of_usable_columns():
    assert check_column(SCHEMA, "features") == VectorUDT()
    assert check_column(SCHEMA, "old") == MLlibVectorUDT()
    assert check_column(SCHEMA, "arr") == ArrayType(DoubleType())
    assert check_column(SCHEMA, "label", role="label") == DoubleType()


def test_missing_column_names_the_columns_there_and_the_argument():
    with pytest.raises(ValueError) as info:
        check_column(SCHEMA, "feats", argument="featuresCol", owner="ElephasEstimator")
    assert str(info.value) == (
        "ElephasEstimator expected a features column 'feats' (featuresCol). Received: a DataFrame with columns "
        "['features', 'old', 'arr', 'label', 'name', 'tags']. Set featuresCol to one of them."
    )
    with pytest.raises(ValueError, match=r"^Expected a label column 'y'. Received: a DataFrame with columns \["):
        check_column(SCHEMA, "y", role="label")


def test_column_type_without_role_names_the_column():
    assert column_type(SCHEMA, "name") == StringType()
    with pytest.raises(ValueError, match=r"^OneHot expected a column named 'x' \(input_col\). Received: a DataFrame"):
        column_type(SCHEMA, "x", argument="input_col", owner="OneHot")


def test_column_of_wrong_type_says_how_to_fix_it():
    with pytest.raises(ValueError) as info:
        check_column(SCHEMA, "name", argument="featuresCol", owner="ElephasTransformer")
    assert str(info.value) == (
        "ElephasTransformer expected featuresCol 'name' to hold ml Vectors, numeric arrays or numbers. "
        "Received: type string. Assemble the features into one vector column with VectorAssembler first."
    )
    with pytest.raises(
        ValueError, match=r"^Expected the label column 'tags' to hold .*Received: type map<string,double>"
    ):
        check_column(SCHEMA, "tags", role="label")
    with pytest.raises(ValueError, match="Index string labels with StringIndexer"):
        check_column(SCHEMA, "name", role="label")


# ------------------------------------------------------------------------------------- outputs
def test_output_width():
    assert output_width((3,)) == 3
    assert output_width((2, 3)) == 6
    assert output_width((None, 4)) == 4
    assert output_width(()) == 1 and output_width(None) == 1


def test_model_output_width_of_real_models():
    import keras

    inp = keras.Input((4,))
    assert model_output_width(keras.Model(inp, keras.layers.Dense(3)(inp))) == 3
    assert model_output_width(keras.Model(inp, keras.layers.Reshape((2, 2))(inp))) == 4
    two = keras.Model(inp, [keras.layers.Dense(5)(inp), keras.layers.Dense(1)(inp)])
    assert model_output_width(two) == 5


def test_single_output():
    check_single_output(1)
    with pytest.raises(ValueError) as info:
        check_single_output(2)
    assert str(info.value).startswith(
        "Expected a single-output model for categorical labels. Received: a model with 2 outputs."
    )
    with pytest.raises(ValueError, match="^Expected a single-output model for predict"):
        check_single_output(0, needed_by="predict")


def test_nb_classes_must_match_the_output_width():
    assert check_nb_classes(None, 3) == 3 and check_nb_classes(3, 3) == 3
    with pytest.raises(ValueError) as info:
        check_nb_classes(5, 3)
    assert str(info.value).startswith(
        "Expected nb_classes to match the model's output width 3. Received: nb_classes=5."
    )


def test_scalar_labels_need_one_hot_encoding_for_a_dense_loss():
    check_scalar_labels("categorical_crossentropy", 1, "a scalar label column 'y' (double)")
    check_scalar_labels("sparse_categorical_crossentropy", 3, "a scalar label column 'y' (double)")
    import keras

    check_scalar_labels(keras.losses.SparseCategoricalCrossentropy(), 3, "labels")
    with pytest.raises(ValueError) as info:
        check_scalar_labels("Categorical_Crossentropy", 3, "a scalar label column 'y' (double)")
    assert str(info.value) == (
        "The loss 'categorical_crossentropy' expected labels with 3 values per row (the model has 3 output units). "
        "Received: a scalar label column 'y' (double) with categorical=False. Set categorical=True and "
        "nb_classes=3 to one-hot encode class indices, or use sparse_categorical_crossentropy."
    )


# ------------------------------------------------------------------------------ class indices
def test_class_indices_pass_through_as_int64():
    out = check_class_indices(np.array([[2.0], [0.0], [1.0]]), 3)
    assert out.dtype == np.int64 and out.tolist() == [2, 0, 1]
    assert check_class_indices(np.array([], dtype=np.float32), 3).tolist() == []


@pytest.mark.parametrize(
    "labels, received",
    [([0.0, 3.0], "[3.0]"), ([-1.0, 1.0], "[-1.0]"), ([0.5, 1.0, 2.5], "[0.5, 2.5]"), ([1.0, np.nan], "[nan]")],
)
def test_class_indices_outside_the_range_are_named(labels, received):
    with pytest.raises(ValueError) as info:
        check_class_indices(np.array(labels), 3)
    assert str(info.value) == class_indices_message(3, f"labels={received}")
    assert str(info.value).startswith(f"Expected labels to be class indices in [0, 3). Received: labels={received}.")


def test_class_indices_message_names_at_most_five_labels():
    with pytest.raises(ValueError, match=r"Received: labels=\[3, 4, 5, 6, 7\]\. Pass whole-number labels from 0 to 2"):
        check_class_indices(np.arange(10), 3)
