"""Evaluation: score validation, fix the threshold there, then score the test set once.

The case study gathered predictions in one pass over a shuffled dataset and the labels in a
second, reshuffled pass, so labels and predictions belonged to different images. Here the
images, labels and paths of a split are arrays in one fixed (sorted) order, the model sees
the images in that order, and the scores come back in it: the three can not drift apart.
Logits are turned into probabilities here, before anything compares them with a threshold.

A chapter's evaluation is four calls, in this order, and the order is enforced:

1. :func:`score_validation` scores the validation images;
2. :func:`threshold_on_validation` chooses the operating point on them;
3. :func:`score_test_once` scores the test images, once per model, and only with a
   threshold that came from step 2;
4. :func:`summarise` computes the test metrics with their intervals (and the validation
   ones beside them), ready for :func:`helpers.results.save_results`.
"""

from __future__ import annotations

import platform
import weakref
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy.special import expit

from helpers import bootstrap, calibration, metrics
from helpers.data import ChestXrays, Split, persons_of
from helpers.metrics import MetricError

#: The public API (the rest is private by name).
__all__ = [
    "OutputKind",
    "Predictions",
    "output_kind",
    "model_outputs",
    "predict_split",
    "score_validation",
    "ValidationThreshold",
    "threshold_on_validation",
    "score_test_once",
    "claim_test_set",
    "Evaluation",
    "metrics_at",
    "image_level_metrics",
    "summarise",
    "adapted_to_each_folder",
    "ranking_ceiling",
]

OutputKind = Literal["probability", "logit"]


@dataclass(frozen=True)
class Predictions:
    """Paths, labels and probabilities of PNEUMONIA of one split, row for row."""

    split: str
    paths: list[str]
    labels: np.ndarray
    scores: np.ndarray
    #: The person of each image as the split knew it (:attr:`helpers.data.Split.groups`: a
    #: DICOM file's is a salted key of its PatientID); empty: read from the file names.
    #: Never part of :meth:`to_frame`, so never written.
    persons: tuple[str, ...] = ()

    def __post_init__(self):
        if not (len(self.paths) == len(self.labels) == len(self.scores)):
            raise ValueError(
                f"paths, labels and scores differ in length: {len(self.paths)}, "
                f"{len(self.labels)}, {len(self.scores)}"
            )
        if self.persons and len(self.persons) != len(self.paths):
            raise ValueError(
                f"persons and paths differ in length: {len(self.persons)}, {len(self.paths)}"
            )

    def person_of_each_image(self) -> list[str]:
        """:attr:`persons`, or each file name's person (:func:`helpers.data.persons_of`)."""
        return persons_of(self)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``path, label, score`` (the results contract)."""
        return pd.DataFrame({"path": self.paths, "label": self.labels, "score": self.scores})


def output_kind(model) -> OutputKind:
    """Read from the model's last layer whether it outputs a probability or a logit.

    A final layer with a sigmoid activation gives probabilities; a linear one gives
    logits. Anything else is refused, since evaluation must know which it gets.
    """
    import keras

    last = model.layers[-1]
    while isinstance(last, keras.Model) and last.layers:  # a nested head: its last layer
        last = last.layers[-1]
    activation = getattr(last, "activation", None)
    if activation is keras.activations.sigmoid:
        return "probability"
    if activation is keras.activations.linear:
        return "logit"
    raise ValueError(
        f"cannot tell whether model {model.name!r} outputs probabilities or logits: its last "
        f"layer {last.name!r} ({type(last).__name__}) has activation {activation!r}; expected "
        "a Dense layer with sigmoid or linear activation"
    )


def model_outputs(
    model, images: np.ndarray, *, batch_size: int = 128, reuse_cached_parts: bool = False
) -> np.ndarray:
    """The model's last-layer values (probabilities or logits, as it gives them) for
    ``images`` in their order, one float64 per image.

    With ``reuse_cached_parts`` the parts of a model that :func:`helpers.features.split_for_reuse`
    cuts (model_8's members) are computed through the feature cache, once per image set and
    weights (:func:`helpers.features.predict_reusing`); for the book's own images only.
    """
    from helpers.features import predict_reusing

    raw = np.asarray(
        predict_reusing(model, images, batch_size=batch_size)
        if reuse_cached_parts
        else model.predict(images, batch_size=batch_size, verbose=0)
    )
    raw = raw.reshape(len(images), -1)
    if raw.shape[1] != 1:
        raise ValueError(f"model must output one value per image, got shape {raw.shape}")
    return raw[:, 0].astype(np.float64)


def predict_split(model, split: Split, *, batch_size: int = 128) -> Predictions:
    """Score every image of ``split`` in its fixed order, in one pass.

    Parts of the model already computed for these images with the same weights (model_8's
    members) are read back from the feature cache, and the new ones are written to it
    (:func:`model_outputs` with ``reuse_cached_parts``): for the book's own images. Score a
    site's own images with :func:`helpers.predict.score_folder`, which writes nothing.

    Parameters
    ----------
    model : keras.Model
        A model whose last layer is a Dense with sigmoid (probabilities) or linear
        (logits) activation; which one is read from the model (:func:`output_kind`).
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
    # The book's own images: parts of a model already computed for them are read back.
    raw = model_outputs(model, split.images, batch_size=batch_size, reuse_cached_parts=True)
    bad = ~np.isfinite(raw)
    if bad.any():
        first = split.paths[int(np.argmax(bad))]
        raise MetricError(
            f"model {model.name!r} gave non-finite scores (NaN or infinity) for "
            f"{int(bad.sum())} of {len(split)} {split.name} images (the first: {first}). "
            "No metric is defined for them; training has probably diverged: look at the "
            "loss in the training history, and lower the learning rate or check the inputs."
        )
    scores = expit(raw) if kind == "logit" else raw
    return Predictions(
        split=split.name,
        paths=list(split.paths),
        labels=split.labels.copy(),
        scores=scores,
        persons=tuple(split.groups),
    )


def score_validation(model, xrays: ChestXrays, *, batch_size: int = 128) -> Predictions:
    """Step 1: the validation images' scores, in file order (:func:`predict_split`)."""
    return predict_split(model, xrays.val, batch_size=batch_size)


class ValidationThreshold(dict):
    """The operating point as :func:`threshold_on_validation` returns it: a dict whose type
    vouches that it was chosen on validation scores (a hand-made dict is refused)."""


def threshold_on_validation(val: Predictions, *, target_sensitivity: float) -> dict:
    """Step 2: the operating point, chosen on validation scores only.

    The highest threshold whose validation sensitivity reaches ``target_sensitivity``
    (:func:`helpers.metrics.threshold_for_sensitivity`), with Youden's threshold beside it.

    Returns
    -------
    dict
        ``threshold``, ``method``, ``target_sensitivity``, ``youden``, ``chosen_on``
        (``"validation"``) and ``warnings`` (non-empty when the model gives every
        validation image the same score: it ranks nothing, and 0.5 is used).

    Raises
    ------
    ValueError
        If ``val`` are not validation predictions.
    """
    if val.split != "val":
        raise ValueError(
            f"the threshold must be chosen on the validation images, got {val.split!r} "
            "predictions; choosing it on the test set would make the test result optimistic"
        )
    chosen = ValidationThreshold(
        chosen_on="validation", target_sensitivity=float(target_sensitivity), warnings=[]
    )
    if np.unique(val.scores).size < 2:
        chosen.update(threshold=0.5, method="none (constant scores)", youden=None)
        chosen["warnings"].append(
            f"the model gives every validation image the same score ({val.scores[0]:.6g}): it "
            "does not rank images, so no threshold can be chosen on validation; the case "
            "study's 0.5 is used and the test AUC is 0.5 by construction."
        )
        return chosen
    chosen.update(
        metrics.choose_threshold(
            val.labels, val.scores, method="sensitivity", target=target_sensitivity
        )
    )
    chosen["youden"] = metrics.youden_threshold(val.labels, val.scores)
    return chosen


#: (id of a test split in memory) -> names of the models already scored on it.
_TEST_SCORED: dict[int, set[str]] = {}


def score_test_once(
    model, xrays: ChestXrays, *, threshold: dict, batch_size: int = 128, name: str | None = None
) -> Predictions:
    """Step 3: score the test images, once per model, after the threshold was fixed.

    Parameters
    ----------
    model : keras.Model
    xrays : helpers.data.ChestXrays
    threshold : dict
        What :func:`threshold_on_validation` returned; anything else is refused.
    name : str, optional
        What the once-only rule counts as one model (default: ``model.name``), so that a
        model and its adapted copy (:func:`adapted_to_each_folder`) are two.

    Raises
    ------
    ValueError
        If the threshold was not chosen on validation, or if this model (by name) was
        already scored on this test split in this session: the test set is touched once
        per model, at the end. To evaluate a changed model, run the chapter from the top
        (which loads the data again).
    """
    if not isinstance(threshold, ValidationThreshold):
        raise ValueError(
            "score_test_once needs the threshold returned by threshold_on_validation (chosen "
            f"on the validation images before the test set is scored), got {threshold!r}"
        )
    claim_test_set(xrays, name or model.name)
    return predict_split(model, xrays.test, batch_size=batch_size)


def claim_test_set(xrays: ChestXrays, name: str) -> None:
    """Record that model ``name`` is about to score ``xrays.test``; refuse a second time.

    :func:`score_test_once` calls it; so does any other evaluation that scores the test
    images (a probe on frozen features), so that the once-only rule has one keeper.
    """
    key = id(xrays.test)
    if key not in _TEST_SCORED:
        _TEST_SCORED[key] = set()
        # Python reuses the id of a freed object: forget the record with its split.
        weakref.finalize(xrays.test, _TEST_SCORED.pop, key, None)
    scored = _TEST_SCORED[key]
    if name in scored:
        raise ValueError(
            f"the test set was already scored for {name!r} in this session; it is "
            "scored once per model, at the end. Run the chapter from the top to evaluate a "
            "changed model."
        )
    scored.add(name)


@dataclass
class Evaluation:
    """One model's evaluation: its predictions, the threshold and the metrics."""

    model_id: str
    val: Predictions
    test: Predictions
    threshold: dict
    metrics: dict = field(default_factory=dict)

    @property
    def chosen(self) -> float:
        """The threshold chosen on validation."""
        return float(self.threshold["threshold"])


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def metrics_at(
    predictions: Predictions, threshold: float, *, seed: int = bootstrap.DEFAULT_SEED
) -> dict:
    """Rates and AUC at ``threshold`` with **person-level** 95% intervals.

    The point values and counts are :func:`helpers.metrics.summary`'s; every interval is a
    person-level cluster bootstrap (persons as the split knew them,
    :meth:`Predictions.person_of_each_image`) (:func:`helpers.bootstrap.person_bootstrap`: persons
    resampled within each class, 2,000 resamples, percentile), because one person's images
    are not independent observations. ``interval_method`` names it.
    """
    block = metrics.summary(predictions.labels, predictions.scores, threshold=threshold)
    person_level = bootstrap.person_bootstrap(
        predictions.labels,
        predictions.scores,
        predictions.person_of_each_image(),
        threshold=threshold,
        seed=seed,
    )
    for name, estimate in person_level["estimates"].items():
        block[f"{name}_ci_low"], block[f"{name}_ci_high"] = estimate.ci_low, estimate.ci_high
    block["interval_method"] = person_level["method"]
    block["persons"] = person_level["n_clusters"]
    return block


def image_level_metrics(predictions: Predictions, threshold: float) -> dict:
    """The same metrics with image-level intervals (Wilson for rates, DeLong for the AUC),
    shown beside the person-level ones to say how much too narrow they are."""
    block = metrics.summary(predictions.labels, predictions.scores, threshold=threshold)
    block["interval_method"] = "image-level: Wilson score intervals for rates, DeLong for the AUC"
    return block


def summarise(model_id: str, val: Predictions, test: Predictions, threshold: dict) -> Evaluation:
    """Step 4: test metrics at the validation threshold, at Youden's and at 0.5, with
    person-level 95% intervals (:func:`metrics_at`); the same threshold's metrics on
    validation; image-level intervals beside the main block; calibration; sensitivity by
    kind of pneumonia.

    Returns
    -------
    Evaluation
        ``metrics`` holds the blocks of ``metrics.json`` that describe the evaluation:
        ``threshold``, ``thresholds``, ``test``, ``test_at_youden``, ``test_at_0.5``,
        ``val`` (person-level intervals), ``test_image_level``, ``calibration``,
        ``sensitivity_by_kind``, ``n_images``, ``versions``, ``warnings``.
    """
    if val.split != "val" or test.split != "test":
        raise ValueError(
            f"summarise needs validation and test predictions, got {val.split!r} and {test.split!r}"
        )
    if not isinstance(threshold, ValidationThreshold):
        raise ValueError("summarise needs the threshold returned by threshold_on_validation")
    chosen, youden = float(threshold["threshold"]), threshold.get("youden")
    block = {
        "model_id": model_id,
        "threshold": {k: v for k, v in threshold.items() if k not in ("warnings", "youden")},
        "thresholds": {"sensitivity": chosen, "youden": youden, "case_study": 0.5},
        "test": metrics_at(test, chosen),
        "test_at_youden": None if youden is None else metrics_at(test, youden),
        "test_at_0.5": metrics_at(test, 0.5),
        "val": metrics_at(val, chosen),
        "test_image_level": image_level_metrics(test, chosen),
        "calibration": calibration.recalibration_report(
            val.labels, val.scores, test.labels, test.scores
        ),
        "sensitivity_by_kind": metrics.sensitivity_by_kind(
            test.paths, test.labels, test.scores, threshold=chosen
        )
        .reset_index()
        .to_dict("records"),
        "n_images": {"val": len(val.labels), "test": len(test.labels)},
        "versions": _versions(),
        "warnings": list(threshold.get("warnings", [])),
    }
    return Evaluation(model_id=model_id, val=val, test=test, threshold=threshold, metrics=block)


def adapted_to_each_folder(
    model,
    xrays: ChestXrays,
    model_id: str,
    *,
    target_sensitivity: float,
    batch_size: int = 128,
) -> Evaluation:
    """The evaluation steps with batch-norm statistics re-estimated on each folder's own
    images, without their labels (AdaBN, :func:`helpers.adapt.adapt_batchnorm`).

    The threshold is chosen on validation, scored by the model adapted to the validation
    images; then the test folder is scored, once, by the model adapted to the **test
    images** (their pixels, never their labels), and the metrics are computed as in
    :func:`summarise`. ``model`` itself is not changed. A site can do the same with the
    unlabeled images it collects before deploying (``helpers.predict --adapt-to``).

    Returns
    -------
    Evaluation
        Its ``model_id`` is ``<model_id>_adapted``; ``metrics["adaptation"]`` says what was
        adapted to what.
    """
    from helpers.adapt import adapt_batchnorm, adapted_layer_names

    to_val = adapt_batchnorm(
        model, xrays.val.images, batch_size=batch_size, reuse_cached_parts=True
    )
    val = predict_split(to_val, xrays.val, batch_size=batch_size)
    threshold = threshold_on_validation(val, target_sensitivity=target_sensitivity)
    del to_val
    to_test = adapt_batchnorm(
        model, xrays.test.images, batch_size=batch_size, reuse_cached_parts=True
    )
    test = score_test_once(
        to_test, xrays, threshold=threshold, batch_size=batch_size, name=f"{model_id}_adapted"
    )
    evaluation = summarise(f"{model_id}_adapted", val, test, threshold)
    evaluation.metrics["adaptation"] = {
        "method": "AdaBN: batch-norm statistics re-estimated on each folder's images, no labels",
        "validation": f"{len(xrays.val)} validation images",
        "test": f"{len(xrays.test)} test images (pixels only, never their labels)",
        "layers": list(adapted_layer_names(to_test)),
    }
    return evaluation


def ranking_ceiling(evaluation: Evaluation) -> dict:
    """What the ranking alone allows on the test images: the book's threshold rule applied
    to the **test labels**, and the sensitivity and specificity it gives there.

    A diagnosis, not an operating point: nobody can choose a threshold on the labels of the
    images they are about to read, so these rates are optimistic (the evaluation chapter's
    exercise on the threshold chosen on the test set). Set beside the rates at the threshold
    chosen on validation, they split a missed specificity in two: what no threshold on these
    scores could give, and what the threshold lost on its way from validation to test.

    Parameters
    ----------
    evaluation : Evaluation
        A scored model (:func:`summarise`, :func:`adapted_to_each_folder`) whose threshold
        was chosen for a target sensitivity.

    Returns
    -------
    dict
        ``target_sensitivity``, ``threshold`` (the highest test threshold reaching it,
        :func:`helpers.metrics.threshold_for_sensitivity`), ``sensitivity`` and
        ``specificity`` there (point estimates: an interval around a threshold fitted to the
        same labels would claim too much).
    """
    target = evaluation.threshold.get("target_sensitivity")
    if target is None:
        raise ValueError(
            f"{evaluation.model_id}: the ranking's ceiling needs a threshold chosen for a "
            f"target sensitivity, got one chosen by {evaluation.threshold.get('method')!r}"
        )
    test = evaluation.test
    threshold = metrics.threshold_for_sensitivity(test.labels, test.scores, target=target)
    rates = metrics.rates_at_threshold(test.labels, test.scores, threshold=threshold)
    return {
        "target_sensitivity": float(target),
        "threshold": threshold,
        "sensitivity": float(rates["sensitivity"].value),
        "specificity": float(rates["specificity"].value),
    }
