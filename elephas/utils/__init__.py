"""Utilities below every other package: RDD helpers, DataFrame adapters, checks, file systems, sockets."""

from .dataframe import df_to_simple_rdd, from_data_frame, to_data_frame
from .rdd_utils import encode_label, from_labeled_point, lp_to_simple_rdd, to_labeled_point, to_simple_rdd

__all__ = [
    "encode_label",
    "from_labeled_point",
    "lp_to_simple_rdd",
    "to_labeled_point",
    "to_simple_rdd",
    "df_to_simple_rdd",
    "from_data_frame",
    "to_data_frame",
]
