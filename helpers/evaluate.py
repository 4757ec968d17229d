"""The one way the project evaluates a model: a single ordered pass over a split.

The case study gathered predictions in one pass over a shuffled dataset and the labels in a
second, reshuffled pass, so labels and predictions belonged to different images. Here the
images, labels and paths of a split are arrays in one fixed (sorted) order, the model sees
the images in that order, and the scores come back in it: the three can not drift apart.
Logits are turned into probabilities here, before anything compares them with a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers.data import Split
from helpers.metrics import MetricError
from helpers.models import output_kind


@dataclass(frozen=True)
class Predictions:
    """Paths, labels and probabilities of PNEUMONIA of one split, row for row."""

    split: str
    paths: list[str]
    labels: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        if not (len(self.paths) == len(self.labels) == len(self.scores)):
            raise ValueError(
                f"paths, labels and scores differ in length: {len(self.paths)}, "
                f"{len(self.labels)}, {len(self.scores)}"
            )

    def to_frame(self) -> pd.DataFrame:
        """Columns ``path, label, score`` (the results contract)."""
        return pd.DataFrame({"path": self.paths, "label": self.labels, "score": self.scores})


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(logits)
    positive = logits >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-logits[positive]))
    exp = np.exp(logits[~positive])
    out[~positive] = exp / (1.0 + exp)
    return out


def model_outputs(model, images: np.ndarray, *, batch_size: int = 128) -> np.ndarray:
    """The model's last-layer values (probabilities or logits, as it gives them) for
    ``images`` in their order, one float64 per image."""
    raw = np.asarray(model.predict(images, batch_size=batch_size, verbose=0))
    raw = raw.reshape(len(images), -1)
    if raw.shape[1] != 1:
        raise ValueError(f"model must output one value per image, got shape {raw.shape}")
    return raw[:, 0].astype(np.float64)


def predict_split(model, split: Split, *, batch_size: int = 128) -> Predictions:
    """Score every image of ``split`` in its fixed order, in one pass.

    Parameters
    ----------
    model : keras.Model
        A model whose last layer is a Dense with sigmoid (probabilities) or linear
        (logits) activation; which one is read from the model (see
        :func:`helpers.models.output_kind`).
    split : helpers.data.Split
    batch_size : int

    Returns
    -------
    Predictions
        ``scores`` are probabilities of PNEUMONIA in [0, 1], whatever the model outputs.

    Raises
    ------
    helpers.metrics.MetricError
        If any score is NaN or infinite (a diverged model), naming how many and the first.
    """
    kind = output_kind(model)
    raw = model_outputs(model, split.images, batch_size=batch_size)
    bad = ~np.isfinite(raw)
    if bad.any():
        first = split.paths[int(np.argmax(bad))]
        raise MetricError(
            f"model {model.name!r} gave non-finite scores (NaN or infinity) for "
            f"{int(bad.sum())} of {len(split)} {split.name} images (the first: {first}). "
            "No metric is defined for them; training has probably diverged: look at the "
            "loss in the training history, and lower the learning rate or check the inputs."
        )
    scores = sigmoid(raw) if kind == "logit" else raw
    return Predictions(
        split=split.name, paths=list(split.paths), labels=split.labels.copy(), scores=scores
    )
