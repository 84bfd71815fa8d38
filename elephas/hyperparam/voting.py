"""A voting ensemble of Keras classifiers, e.g. the best models of a hyper-parameter search."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import saving
from ..utils import fs

logger = logging.getLogger(__name__)

_MANIFEST = "voting.json"
_VOTINGS = ("hard", "soft")


def check_voting(voting: str, weights: Sequence[float] | None, n_models: int | None) -> None:
    """Validate ``voting`` and ``weights`` (``n_models=None`` skips the length check).

    Raises:
        ValueError: Unknown voting, or weights of the wrong length, negative or all zero.
    """
    if voting not in _VOTINGS:
        raise ValueError(f"Could not interpret voting: {voting!r}. Expected one of {list(_VOTINGS)}.")
    if weights is None:
        return
    w = np.asarray(weights, dtype="float64")
    if w.ndim != 1 or (n_models is not None and len(w) != n_models):
        raise ValueError(f"Expected one weight per model ({n_models} models). Received: weights={list(weights)}.")
    if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"Weights must be finite, non-negative and not all zero. Received: weights={list(weights)}.")


def _is_distributed(data: Any) -> bool:
    module = type(data).__module__ or ""
    return module.startswith("pyspark")


class VotingModel:
    """Combine the predictions of several classifiers by (weighted) voting.

    Each member maps features to class scores: ``(n, classes)`` probabilities/logits, or ``(n,)`` /
    ``(n, 1)`` probabilities of class 1 for a binary sigmoid output.

    Args:
        models: The Keras models (at least one).
        voting: ``'hard'``: each model votes for its top class, the class with the largest total
            weight wins (ties: the lowest class index). ``'soft'``: the weighted mean of the members'
            outputs, then the top class.
        weights: One non-negative weight per model; ``None`` weighs all equally.

    Example:
        >>> ensemble = VotingModel([m1, m2, m3], voting='soft', weights=[2, 1, 1])  # doctest: +SKIP
        >>> ensemble.predict(x_test)  # class indices  # doctest: +SKIP
        >>> ensemble.save('/tmp/ensemble'); VotingModel.load('/tmp/ensemble')  # doctest: +SKIP
    """

    def __init__(self, models: Sequence[Any], voting: str = "hard", weights: Sequence[float] | None = None):
        models = list(models)
        if not models:
            raise ValueError("Expected at least one model for the ensemble. Received: models=[].")
        check_voting(voting, weights, len(models))
        self.models = models
        self.voting = voting
        self.weights = None if weights is None else [float(w) for w in weights]

    def __len__(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        return f"VotingModel({len(self.models)} models, voting={self.voting!r}, weights={self.weights})"

    # ------------------------------------------------------------------ predictions

    def member_predictions(self, x: Any, batch_size: int | None = None) -> list[np.ndarray]:
        """Each member's raw output for ``x``.

        Args:
            x: Numpy features, or an RDD of feature rows / a DataFrame with a ``features`` column
                (predicted on the executors, in input order; on a Spark Connect session, a DataFrame
                predicted through ``mapInArrow`` without a SparkContext).
            batch_size: Rows per forward pass.

        Returns:
            One array per member.
        """
        from elephas.engine.session import is_connect

        if is_connect(x):
            from elephas.engine.data import ModelIO
            from elephas.engine.frame_inference import predict_data
            from elephas.engine.inference import DEFAULT_BATCH_SIZE
            from elephas.engine.session import connect_runtime
            from elephas.engine.shipping import ModelSpec, model_weights

            session = x.sparkSession
            runtime = connect_runtime(session)
            return [
                np.asarray(
                    predict_data(
                        session,
                        ModelSpec.from_model(model, require_compiled=False),
                        model_weights(model),
                        ModelIO.of(model),
                        x,
                        "features",
                        runtime,
                        batch_size or DEFAULT_BATCH_SIZE,
                    )
                )
                for model in self.models
            ]
        if _is_distributed(x):
            from elephas.engine.inference import distributed_predict
            from elephas.engine.shipping import ModelSpec, model_weights

            outs = []
            for model in self.models:
                spec = ModelSpec.from_model(model, require_compiled=False)
                outs.append(np.asarray(distributed_predict(spec, model_weights(model), x, batch_size=batch_size)))
            return outs
        kwargs = {"verbose": 0}
        if batch_size is not None:
            kwargs["batch_size"] = batch_size
        return [np.asarray(m.predict(x, **kwargs)) for m in self.models]

    def _weights(self) -> np.ndarray:
        n = len(self.models)
        return np.ones(n) if self.weights is None else np.asarray(self.weights, dtype="float64")

    def predict_proba(self, x: Any, batch_size: int | None = None) -> np.ndarray:
        """Weighted mean of the members' outputs (soft voting only).

        Args:
            x: See :meth:`member_predictions`.
            batch_size: Rows per forward pass.

        Returns:
            ``(n, classes)`` (or the members' binary shape) averaged scores.

        Raises:
            AttributeError: The ensemble uses hard voting (class votes have no probabilities).
        """
        if self.voting != "soft":
            raise AttributeError(
                "predict_proba is only available with voting='soft'. Received: voting='hard'. "
                "Use predict(), or build the ensemble with voting='soft'."
            )
        return self._soft_scores(self.member_predictions(x, batch_size))

    def _soft_scores(self, outputs: list[np.ndarray]) -> np.ndarray:
        shapes = {o.shape for o in outputs}
        if len(shapes) != 1:
            raise ValueError(f"Members disagree on the output shape. Received: {sorted(shapes)}.")
        return np.average(np.stack(outputs), axis=0, weights=self._weights())

    def predict(self, x: Any, batch_size: int | None = None) -> np.ndarray:
        """Predicted class index per row.

        Args:
            x: See :meth:`member_predictions`.
            batch_size: Rows per forward pass.

        Returns:
            An ``int64`` array of shape ``(n,)``.
        """
        outputs = self.member_predictions(x, batch_size)
        if self.voting == "soft":
            return _classes(self._soft_scores(outputs))
        votes = [_classes(o) for o in outputs]
        n_classes = max(_n_classes(o) for o in outputs)
        tally = np.zeros((len(votes[0]), n_classes))
        rows = np.arange(len(votes[0]))
        for weight, vote in zip(self._weights(), votes, strict=True):
            np.add.at(tally, (rows, vote), weight)
        return tally.argmax(axis=1).astype("int64")

    # ------------------------------------------------------------------ persistence

    def save(self, path: str, overwrite: bool = False) -> None:
        """Write the ensemble to directory ``path``: ``member_<i>.keras`` files and ``voting.json``.

        Args:
            path: A local directory (created if missing) or a Hadoop-compatible URI (``hdfs://``,
                ``s3a://``, ``file://``, ...; see :mod:`elephas.saving`).
            overwrite: Replace an existing ensemble at ``path``.

        Raises:
            FileExistsError: ``path`` already holds an ensemble and ``overwrite`` is false.
        """
        manifest_path = saving.join(path, _MANIFEST)
        if fs.exists(manifest_path) and not overwrite:
            raise FileExistsError(f"An ensemble is already saved at {path!r}. Pass overwrite=True to replace it.")
        members = []
        for i, model in enumerate(self.models):
            name = f"member_{i}.keras"
            saving.save_model_file(model, saving.join(path, name), overwrite=True)
            members.append(name)
        manifest = {
            "format": "elephas.VotingModel",
            "version": 1,
            "voting": self.voting,
            "weights": self.weights,
            "members": members,
        }
        saving.write_json(manifest, manifest_path, overwrite=True)
        logger.info("saved a %d-model ensemble to %s", len(members), path)

    @classmethod
    def load(cls, path: str, custom_objects: dict[str, Any] | None = None) -> VotingModel:
        """Read an ensemble written by :meth:`save`.

        Args:
            path: The directory: a local path or a Hadoop-compatible URI.
            custom_objects: Objects needed to deserialize the members.

        Returns:
            The ensemble.

        Raises:
            FileNotFoundError: No ensemble at ``path``.
            ValueError: The manifest names a member outside ``path``.
        """
        manifest_path = saving.join(path, _MANIFEST)
        if not fs.exists(manifest_path):
            raise FileNotFoundError(f"No saved VotingModel at {path!r} (missing {_MANIFEST}).")
        manifest = saving.read_json(manifest_path)
        names = list(manifest["members"])
        outside = [n for n in names if not isinstance(n, str) or "/" in n or "\\" in n or n in ("", ".", "..")]
        if outside:
            raise ValueError(f"Expected member file names inside {path!r} in {_MANIFEST}. Received: members={names}.")
        models = [saving.load_model_file(saving.join(path, name), custom_objects) for name in names]
        return cls(models, voting=manifest["voting"], weights=manifest.get("weights"))


def _n_classes(output: np.ndarray) -> int:
    return 2 if output.ndim == 1 or output.shape[-1] == 1 else output.shape[-1]


def _classes(output: np.ndarray) -> np.ndarray:
    """Class index per row: argmax, or ``p > 0.5`` for a single binary column."""
    if output.ndim == 1 or output.shape[-1] == 1:
        return (output.reshape(len(output)) > 0.5).astype("int64")
    return output.argmax(axis=-1).astype("int64")
