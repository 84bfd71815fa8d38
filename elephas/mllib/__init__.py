"""Spark MLlib (``pyspark.mllib``) adapters."""
