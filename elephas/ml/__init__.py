"""Spark ML integration: estimator/transformer, DataFrame adapters and transformers."""
