"""model_8: the book's models combined into one Keras model, members chosen by a fixed rule.

An ensemble averages members whose errors differ. This module builds one from

* chapters' trained models, loaded from their results folders (:func:`load_member`), each
  refused unless it was trained on the chapter's own train/validation split
  (:func:`check_shared_split`): a member trained on another split has seen some of these
  validation persons, and the validation threshold would be chosen on images it learnt;
* a frozen ImageNet MobileNetV2 read at several depths with a linear head
  (:func:`frozen_member`): the pooled outputs of :data:`FROZEN_BLOCKS`, standardised, and a
  logistic regression fitted on the training images only.

Each member's logit is standardised by its mean and standard deviation on the validation
images, and the members' standardised logits are averaged with equal weights. Weights fitted
on validation would chase noise: every such ensemble scores a validation AUC near 0.997.
Which members: :func:`choose_members`, a rule fixed before anything runs, in the spirit of
:func:`helpers.ablation.decide`: all candidates with equal weights is the recipe; an ensemble
that leaves members out replaces it only when validation tells them apart beyond the noise.

:func:`build_ensemble` assembles the members into **one** Keras model: raw RGB images at the
largest member's size in, a probability out; inside, each member's own resizing, colour mode
and preprocessing, its layers called directly in the ensemble's graph (so that
:func:`helpers.adapt.adapt_batchnorm` reaches its batch normalisation), and a final Dense
sigmoid fitted on validation (monotone: it changes no ranking and no validation-threshold
decision, it only makes the output a probability). The linear member's feature
standardisation is a BatchNormalization layer holding the training images' mean and
variance, so AdaBN re-estimates it on a folder's own images: per-folder feature
standardisation, the linear head's counterpart of AdaBN. Each member's feature maps pass
through an identity layer named :data:`helpers.explain.MEMBER_FEATURES_PREFIX` + name, which
is what :func:`helpers.explain.grad_cam` explains for an ensemble.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.explain import MEMBER_FEATURES_PREFIX, feature_layer_name
from helpers.features import (
    FROZEN_PREFIX_END,
    MEMBER_OUTPUT_SUFFIX,
    frozen_features,
    is_identity_at_inference,
    predict_reusing,
)

#: The public API (the rest is private by name).
__all__ = [
    "FROZEN_BLOCKS",
    "FROZEN_MEMBER",
    "RECIPE",
    "DIFFERENCE",
    "EnsembleError",
    "Member",
    "check_shared_split",
    "load_member",
    "frozen_extractor",
    "frozen_member",
    "member_logits",
    "standardise",
    "ensemble_logit",
    "choice_table",
    "choose_members",
    "build_ensemble",
    "fit_frozen_member",
    "validation_errors",
    "prevalence_shift",
    "write_choice",
]

#: The MobileNetV2 layers whose globally pooled outputs the frozen member reads: early,
#: middle and late blocks (an X-ray's evidence is not all in ImageNet's last block).
FROZEN_BLOCKS: tuple[str, ...] = (
    "block_2_add",
    "block_5_add",
    "block_9_add",
    "block_12_add",
    "block_13_expand_relu",
    "block_15_add",
    "out_relu",
)
#: The frozen member's name.
FROZEN_MEMBER = "frozen_mobilenetv2"
#: The recipe row of :func:`choice_table`: every candidate, equal weights.
RECIPE = "all members"
#: The paired-difference columns of :func:`choice_table`.
DIFFERENCE = "AUC - all members"
#: The inverse regularisation strengths the frozen member's logistic regression tries, by
#: cross-validation over the *training* persons (validation chooses nothing here).
LOGISTIC_CS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
#: Added to each feature's variance before its square root (a feature that is zero on
#: every training image would otherwise divide by zero).
FEATURE_EPSILON = 1e-3
#: ITU-R 601 luma weights: Pillow's ``convert("L")``, the book's grayscale decoding.
LUMA = (0.299, 0.587, 0.114)


class EnsembleError(ValueError):
    """A member or its results folder cannot join the ensemble; the message says why."""


@dataclass
class Member:
    """One member of the ensemble.

    Attributes
    ----------
    name : str
        The member's name (a chapter's model id, or :data:`FROZEN_MEMBER`).
    model : keras.Model
        Raw images at ``image_size`` in ``color_mode`` in, one logit out.
    image_size : int
    color_mode : {"rgb", "grayscale"}
    description : str
        One line for the chapter's table.
    """

    name: str
    model: object
    image_size: int
    color_mode: str
    description: str = ""
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Members from results folders
# ---------------------------------------------------------------------------------------


def check_shared_split(folder: str | os.PathLike, xrays) -> None:
    """Refuse a member trained on another train/validation split than ``xrays``.

    The member's ``predictions_val.csv`` lists the validation images it was scored on, and
    its ``metrics.json`` the split's seed and validation fraction: both must match the
    chapter's split exactly.

    Parameters
    ----------
    folder : path-like
        The member's results folder (``results/<model-id>/``).
    xrays : helpers.data.ChestXrays
        The chapter's data, with its split.

    Raises
    ------
    EnsembleError
        If a file is missing, or the seed, the fraction or the validation images differ; the
        message names the file and how many images differ.
    """
    folder = Path(folder)
    metrics_file, val_file = folder / "metrics.json", folder / "predictions_val.csv"
    for needed in (metrics_file, val_file):
        if not needed.is_file():
            raise EnsembleError(
                f"{needed} does not exist: a member must be a results folder written by a model "
                "chapter (run that chapter first)"
            )
    params = json.loads(metrics_file.read_text(encoding="utf-8")).get("parameters", {})
    for key, ours in (("split_seed", xrays.seed), ("val_fraction", xrays.val_fraction)):
        if params.get(key) != ours:
            raise EnsembleError(
                f"{metrics_file}: the member was trained on a split with {key} = "
                f"{params.get(key)!r}, this chapter's split has {ours!r}; a member trained on "
                "another split has seen some of these validation persons"
            )
    theirs = set(pd.read_csv(val_file)["path"])
    ours = set(xrays.val.paths)
    if theirs != ours:
        raise EnsembleError(
            f"{val_file}: the member's validation images are not this chapter's "
            f"({len(theirs - ours)} only in the member's, {len(ours - theirs)} only in the "
            "chapter's); a member trained on another split has seen some of these validation "
            "persons"
        )


def load_member(folder: str | os.PathLike) -> Member:
    """A chapter's trained model as a member (check its split with :func:`check_shared_split`).

    Parameters
    ----------
    folder : path-like
        ``results/<model-id>/`` with ``model.keras`` and ``metrics.json``.

    Returns
    -------
    Member
        Its model outputs a logit (a model ending in a sigmoid is refused).

    Raises
    ------
    EnsembleError
        If a file is missing, the model cannot be loaded in safe mode, does not output a
        logit, or does not take the images its ``metrics.json`` describes.
    """
    import keras

    import helpers.layers  # noqa: F401 - registers the book's own layers for safe loading
    from helpers.evaluate import output_kind

    folder = Path(folder)
    model_file = folder / "model.keras"
    for needed in (model_file, folder / "metrics.json"):
        if not needed.is_file():
            raise EnsembleError(
                f"{needed} does not exist: a member must be a results folder written by a model "
                "chapter (run that chapter first)"
            )
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    try:
        model = keras.saving.load_model(model_file, safe_mode=True)
    except Exception as error:  # zip, h5, JSON and safe-mode errors have many types
        raise EnsembleError(
            f"{model_file} could not be loaded in safe mode: {type(error).__name__}: {error}"
        ) from None
    if output_kind(model) != "logit":
        raise EnsembleError(
            f"{model_file} outputs a probability; members must output a logit (their logits "
            "are standardised and averaged)"
        )
    params = metrics["parameters"]
    size, mode = int(params["image_size"]), params.get("color_mode", "rgb")
    if tuple(model.input_shape[1:]) != (size, size, 1 if mode == "grayscale" else 3):
        raise EnsembleError(
            f"{model_file} takes images of shape {tuple(model.input_shape[1:])}, but its "
            f"metrics.json says {size} px {mode}; the folder is inconsistent"
        )
    return Member(
        name=str(metrics.get("model_id", folder.name)),
        model=model,
        image_size=size,
        color_mode=mode,
        description=str(metrics.get("title", folder.name)),
    )


# ---------------------------------------------------------------------------------------
# The frozen multi-block member
# ---------------------------------------------------------------------------------------


def frozen_member(image_size: int, base_weights: str = "imagenet") -> Member:
    """The frozen ImageNet MobileNetV2 read at :data:`FROZEN_BLOCKS`, with a linear head.

    Raw RGB pixels -> MobileNetV2's ``preprocess_input`` (to [-1, 1]) -> the frozen base
    (inference mode), whose :data:`FROZEN_BLOCKS` outputs are each averaged over the image
    and concatenated -> a BatchNormalization layer without scale or offset (the features'
    standardisation; :func:`fit_frozen_member` sets its statistics to the training images')
    -> one Dense unit (the logit; its weights are the logistic regression's). Until
    :func:`fit_frozen_member` runs, the head is untrained.

    Parameters
    ----------
    image_size : int
        The member's input size (224 is the embedded weights' own).
    base_weights : str
        As for the chapters: ``"imagenet"`` (embedded, offline), ``"random"`` or a weights file.

    Returns
    -------
    Member
    """
    import keras
    from keras import layers

    from helpers import imagenet

    shape = (image_size, image_size, 3)
    base = keras.applications.MobileNetV2(
        input_shape=shape,
        include_top=False,
        weights=imagenet.base_weights_argument(base_weights),
    )
    blocks = keras.Model(
        base.inputs, [base.get_layer(name).output for name in FROZEN_BLOCKS], name="frozen_blocks"
    )
    blocks.trainable = False
    inputs = keras.Input(shape=shape)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="frozen_preprocess_input")(inputs)
    maps = blocks(x, training=False)
    pooled = [
        layers.GlobalAveragePooling2D(name=f"frozen_pool_{name}")(block)
        for name, block in zip(FROZEN_BLOCKS, maps)
    ]
    features = layers.Concatenate(name="frozen_features")(pooled)
    standardised = layers.BatchNormalization(
        center=False, scale=False, epsilon=FEATURE_EPSILON, name=FROZEN_PREFIX_END
    )(features)
    logit = layers.Dense(1, name="frozen_linear_head")(standardised)
    model = keras.Model(inputs, logit, name=FROZEN_MEMBER)
    return Member(
        name=FROZEN_MEMBER,
        model=model,
        image_size=image_size,
        color_mode="rgb",
        description=f"ImageNet MobileNetV2, frozen, {len(FROZEN_BLOCKS)} blocks pooled, "
        "logistic regression",
        extra={"feature_layer": "frozen_blocks"},
    )


def frozen_extractor(member: Member):
    """The frozen member up to its concatenated features (for :func:`frozen_features`)."""
    import keras

    return keras.Model(
        member.model.inputs,
        member.model.get_layer("frozen_features").output,
        name="frozen_extractor",
    )


def fit_frozen_member(member: Member, images: np.ndarray, labels, persons) -> dict:
    """Fit the frozen member's head on the training images, without validation.

    The features (cached on disk, :func:`helpers.features.frozen_features`) are
    standardised by their training mean and variance (stored in the member's
    BatchNormalization layer) and a logistic regression with balanced class weights is
    fitted; its regularisation is chosen among :data:`LOGISTIC_CS` by the AUC of a
    three-fold cross-validation that keeps each person's images in one fold. Validation
    chooses nothing.

    Parameters
    ----------
    member : Member
        From :func:`frozen_member`; its head is set in place.
    images : numpy.ndarray
        The training images, raw RGB (resized to the member's size as in the ensemble).
    labels : array-like of int
    persons : sequence of str
        The person of each image (for the folds).

    Returns
    -------
    dict
        ``C`` (the regularisation chosen), ``cv_auc`` (its mean cross-validated AUC),
        ``n_features``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score

    if images.shape[1] != member.image_size:  # as the ensemble's branch resizes them
        import tensorflow as tf

        size = (member.image_size, member.image_size)
        images = tf.image.resize(images, size, antialias=True).numpy()
    features = frozen_features(frozen_extractor(member), images).astype(np.float64)
    mean, variance = features.mean(axis=0), features.var(axis=0)
    standardised = (features - mean) / np.sqrt(variance + FEATURE_EPSILON)
    labels = np.asarray(labels)
    folds = GroupKFold(n_splits=3)

    def model(c):
        return LogisticRegression(C=c, class_weight="balanced", max_iter=2000)

    scores = {
        c: float(
            np.mean(
                cross_val_score(
                    model(c),
                    standardised,
                    labels,
                    groups=list(persons),
                    cv=folds,
                    scoring="roc_auc",
                )
            )
        )
        for c in LOGISTIC_CS
    }
    best = max(LOGISTIC_CS, key=lambda c: (scores[c], -c))  # a tie goes to the stronger penalty
    fitted = model(best).fit(standardised, labels)
    layer = member.model.get_layer(FROZEN_PREFIX_END)
    layer.set_weights([mean.astype("float32"), variance.astype("float32")])
    member.model.get_layer("frozen_linear_head").set_weights(
        [fitted.coef_.T.astype("float32"), fitted.intercept_.astype("float32")]
    )
    return {"C": best, "cv_auc": scores[best], "n_features": int(features.shape[1])}


# ---------------------------------------------------------------------------------------
# One graph
# ---------------------------------------------------------------------------------------


def _inline(model, x, *, tap: str | None, tap_name: str):
    """Call ``model``'s layers on ``x`` directly (not as one nested layer) and return its output.

    Training-only augmentation layers are left out (the ensemble is for inference). The
    output of the layer named ``tap`` (for a layer with several outputs, its last) passes
    through an identity layer named ``tap_name``, which the layers after it then read.
    """
    import keras

    def operation_fn(operation):
        if is_identity_at_inference(operation):
            return lambda *args, **kwargs: args[0]
        if operation.name != tap:
            return operation

        def tapped(*args, **kwargs):
            outputs = operation(*args, **kwargs)
            identity = keras.layers.Identity(name=tap_name)
            if isinstance(outputs, (list, tuple)):
                return [*outputs[:-1], identity(outputs[-1])]
            return identity(outputs)

        return tapped

    graph = model._functional if isinstance(model, keras.Sequential) else model
    # Keras' own Functional.call runs the graph this way; _run_through_graph is how a layer
    # is given a new input tensor without nesting the model.
    return graph._run_through_graph(x, operation_fn=operation_fn)


def _branch(member: Member, inputs, input_size: int):
    """The member's logit computed from the ensemble's raw RGB input tensor."""
    from keras import layers

    x = inputs
    if member.image_size != input_size:  # antialiased, as Pillow's bilinear resize in decoding
        x = layers.Resizing(
            member.image_size,
            member.image_size,
            interpolation="bilinear",
            antialias=True,
            name=f"{member.name}_resize",
        )(x)
    if member.color_mode == "grayscale":  # Pillow's convert("L"): ITU-R 601 luma
        gray = layers.Conv2D(1, 1, use_bias=False, trainable=False, name=f"{member.name}_luma")
        x = gray(x)
        gray.set_weights([np.asarray(LUMA, dtype="float32").reshape(1, 1, 3, 1)])
    tap = member.extra.get("feature_layer") or feature_layer_name(member.model)
    logit = _inline(member.model, x, tap=tap, tap_name=f"{MEMBER_FEATURES_PREFIX}{member.name}")
    # Named so that scoring reads the member's logit back from the feature cache where the
    # same weights computed it for the same images (helpers.features.split_for_reuse).
    return layers.Identity(name=f"{member.name}{MEMBER_OUTPUT_SUFFIX}")(logit)


def _input_size(members) -> int:
    return max(member.image_size for member in members)


def member_logits(members, images: np.ndarray, *, batch_size: int = 64) -> pd.DataFrame:
    """Each member's logit for ``images`` (raw RGB at the largest member's size), one pass.

    Each member sees the images as it will inside the ensemble (resized and converted by
    the ensemble's own layers).

    Returns
    -------
    pandas.DataFrame
        One column per member, one row per image, float64.
    """
    import keras

    size = _input_size(members)
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise EnsembleError(
            f"images have shape {images.shape}; the members take RGB images of the largest "
            f"member's size, (n, {size}, {size}, 3)"
        )
    inputs = keras.Input(shape=(size, size, 3))
    logits = [_branch(member, inputs, size) for member in members]
    probe = keras.Model(inputs, logits)
    # Each member's part goes to the feature cache: the ensemble's scoring and adaptation
    # on these images read it back instead of computing it again.
    values = predict_reusing(probe, images, batch_size=batch_size)
    values = values if isinstance(values, list) else [values]
    return pd.DataFrame(
        {
            member.name: np.asarray(v, dtype=np.float64).reshape(-1)
            for member, v in zip(members, values)
        }
    )


def standardise(val_logits: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Each member's validation mean and standard deviation: the standardisation the
    ensemble applies to its logit, so that every member counts alike in the average."""
    stats = {}
    for name in val_logits:
        values = val_logits[name].to_numpy(dtype=np.float64)
        sd = float(values.std())
        if not np.isfinite(sd) or sd == 0.0:
            raise EnsembleError(
                f"member {name!r} gives the same logit for every validation image; it cannot be "
                "standardised"
            )
        stats[name] = (float(values.mean()), sd)
    return stats


def ensemble_logit(logits: pd.DataFrame, stats: dict, names) -> np.ndarray:
    """The ensemble's score before its output layer: the mean of ``names``' standardised logits."""
    names = list(names)
    if not names:
        raise EnsembleError("an ensemble needs at least one member")
    z = [(logits[n].to_numpy(dtype=np.float64) - stats[n][0]) / stats[n][1] for n in names]
    return np.mean(z, axis=0)


def _names_of(row_members: str) -> list[str]:
    return [name.strip() for name in row_members.split("+")]


def choice_table(
    val_logits: pd.DataFrame, stats: dict, labels, persons, *, seed: int = 42
) -> pd.DataFrame:
    """The ensembles the rule chooses from, scored on the validation images.

    Rows: :data:`RECIPE` (every member, equal weights), each ensemble that leaves one
    member out (with three or more members) and each member alone; columns: the members,
    the validation AUC and the paired AUC difference to the recipe (persons resampled
    together for both, :func:`helpers.bootstrap.paired_person_bootstrap`) with its 95%
    interval, p-value and Holm-adjusted p-value over the other rows. Every row is adoptable.

    Parameters
    ----------
    val_logits : pandas.DataFrame
        :func:`member_logits` on the validation images.
    stats : dict
        :func:`standardise` of the same logits.
    labels : array-like of int
    persons : sequence of str
        The person of each validation image.
    seed : int
        The bootstrap's seed.

    Returns
    -------
    pandas.DataFrame
        Indexed by row name.
    """
    from scipy.special import expit
    from sklearn.metrics import roc_auc_score

    from helpers.ablation import holm_over_candidates
    from helpers.bootstrap import paired_person_bootstrap

    names = list(val_logits.columns)
    sets: dict[str, list[str]] = {RECIPE: names}
    if len(names) >= 3:
        sets.update({f"without {n}": [m for m in names if m != n] for n in names})
    if len(names) >= 2:
        sets.update({f"{n} alone": [n] for n in names})
    labels = np.asarray(labels)
    recipe = expit(ensemble_logit(val_logits, stats, names))
    rows = {}
    for row, members in sets.items():
        scores = expit(ensemble_logit(val_logits, stats, members))
        paired = paired_person_bootstrap(
            labels, scores, recipe, persons, threshold_a=0.5, threshold_b=0.5, seed=seed
        )["differences"]["auc"]
        difference = paired["difference"]
        rows[row] = {
            "members": " + ".join(members),
            "val AUC": float(roc_auc_score(labels, scores)),
            DIFFERENCE: difference.value,
            f"{DIFFERENCE} low": difference.ci_low,
            f"{DIFFERENCE} high": difference.ci_high,
            f"{DIFFERENCE} p": paired["p_value"] if row != RECIPE else np.nan,
        }
    table = pd.DataFrame(rows).T
    for column in table.columns.drop("members"):
        table[column] = table[column].astype(float)
    table[f"{DIFFERENCE} p (Holm)"] = holm_over_candidates(
        table, recipe=RECIPE, difference=DIFFERENCE
    )
    return table


def choose_members(table: pd.DataFrame):
    """The rule that chooses the members, fixed before anything runs.

    :func:`helpers.ablation.decide` with every candidate member, equal weights, as the
    recipe: another row of :func:`choice_table` (some members left out) replaces it only
    when its paired validation AUC difference to the recipe is positive with a p-value
    below :data:`helpers.ablation.ALPHA` after Holm's adjustment over the other rows; of
    those, the largest difference wins. On validation images this saturated (every
    ensemble near 0.997) the recipe is kept unless validation really tells them apart.

    Returns
    -------
    (helpers.ablation.Decision, list of str)
        The decision and the chosen members' names.
    """
    from helpers.ablation import decide

    decision = decide(
        table,
        recipe=RECIPE,
        difference=DIFFERENCE,
        seed_aucs={},
        seeds_expected=False,
        rows="ensembles",
    )
    return decision, _names_of(table.loc[decision.choice, "members"])


def build_ensemble(
    members, stats: dict, val_logits: pd.DataFrame, val_labels, *, name: str = "model_8"
):
    """One Keras model: raw RGB images in, the probability of PNEUMONIA out.

    Parameters
    ----------
    members : sequence of Member
        The chosen members.
    stats : dict
        Each member's validation mean and standard deviation (:func:`standardise`).
    val_logits : pandas.DataFrame
        The members' validation logits (:func:`member_logits`), for the output layer.
    val_labels : array-like of int
        The validation labels, for the output layer.
    name : str
        The model's name.

    Returns
    -------
    keras.Model
        Input: ``(size, size, 3)`` raw pixels, ``size`` the largest member's; each member's
        branch resizes, converts to grayscale and preprocesses as that member was trained;
        each standardised logit (``Rescaling`` by the member's validation mean and standard
        deviation) is averaged (``Average``) and mapped to a probability by a Dense sigmoid
        unit fitted on validation (a logistic regression on the averaged score: monotone, so
        it changes no ranking). The layers are the model's own (a clean copy), each called
        once.
    """
    import keras
    from keras import layers
    from sklearn.linear_model import LogisticRegression

    members = list(members)
    if not members:
        raise EnsembleError("an ensemble needs at least one member")
    size = _input_size(members)
    inputs = keras.Input(shape=(size, size, 3), name="image")
    standardised = []
    for member in members:
        mean, sd = stats[member.name]
        logit = _branch(member, inputs, size)
        standardised.append(
            layers.Rescaling(1.0 / sd, offset=-mean / sd, name=f"{member.name}_standardised")(logit)
        )
    averaged = (
        layers.Average(name="members_mean")(standardised)
        if len(standardised) > 1
        else standardised[0]
    )
    output = layers.Dense(1, activation="sigmoid", name="probability")
    model = keras.Model(inputs, output(averaged), name=name)
    score = ensemble_logit(val_logits, stats, [m.name for m in members]).reshape(-1, 1)
    fitted = LogisticRegression(C=1e6, max_iter=1000).fit(score, np.asarray(val_labels))
    output.set_weights(
        [fitted.coef_.astype("float32").reshape(1, 1), fitted.intercept_.astype("float32")]
    )
    # A clean copy: the members' layers were also called in their own models and probes, and
    # batch-norm adaptation and Grad-CAM read each layer's one call in this graph.
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def validation_errors(
    val_logits: pd.DataFrame, stats: dict, labels, members, *, target_sensitivity: float
) -> pd.DataFrame:
    """Which validation images each member, and their ensemble, gets wrong.

    Each score is thresholded where it reaches ``target_sensitivity`` on these images
    (the chapters' rule); the errors are then compared image by image.

    Parameters
    ----------
    val_logits : pandas.DataFrame
        :func:`member_logits` on the validation images.
    stats : dict
        :func:`standardise` of them.
    labels : array-like of int
    members : sequence of str
        The ensemble's members (its row averages their standardised logits).
    target_sensitivity : float

    Returns
    -------
    pandas.DataFrame
        One row per member and one for the ensemble: its errors, those every member makes
        (``"made by every member"``), and those no other member makes (``"made by no other
        member"``; for the ensemble, the errors no member makes).
    """
    from helpers.metrics import threshold_for_sensitivity

    labels = np.asarray(labels)

    def errors(score):
        threshold = threshold_for_sensitivity(labels, score, target=target_sensitivity)
        return (score >= threshold).astype(int) != labels

    wrong = {n: errors(ensemble_logit(val_logits, stats, [n])) for n in val_logits}
    everyone = np.logical_and.reduce(list(wrong.values()))
    rows = {}
    for name, made in wrong.items():
        others = [w for n, w in wrong.items() if n != name]
        alone = made & ~np.logical_or.reduce(others) if others else made
        rows[name] = {
            "errors": int(made.sum()),
            "made by every member": int((made & everyone).sum()),
            "made by no other member": int(alone.sum()),
        }
    combined = errors(ensemble_logit(val_logits, stats, members))
    rows[f"ensemble ({' + '.join(members)})"] = {
        "errors": int(combined.sum()),
        "made by every member": int((combined & everyone).sum()),
        "made by no other member": int(
            (combined & ~np.logical_or.reduce(list(wrong.values()))).sum()
        ),
    }
    return pd.DataFrame(rows).T


def prevalence_shift(
    model,
    images: np.ndarray,
    labels,
    *,
    share: float,
    thresholds: tuple[float, float],
    seed: int,
    scores: np.ndarray | None = None,
) -> pd.DataFrame:
    """What label-free adaptation does to a folder with another share of PNEUMONIA.

    A subset of ``images`` (validation images: their labels only pick the subset and
    score it) with ``share`` PNEUMONIA is scored by ``model`` as it is and by ``model``
    adapted to the subset itself (:func:`helpers.adapt.adapt_batchnorm`). Adaptation
    standardises features by the folder's own mean: when the share of sick children
    differs, the mean moves for that reason too, and the adapted model shifts scores that
    should not move.

    Parameters
    ----------
    model : keras.Model
        The ensemble.
    images, labels
        Validation images and their labels.
    share : float
        The subset's PNEUMONIA share (all NORMAL images are kept).
    thresholds : (float, float)
        The thresholds chosen on validation: unadapted, and adapted to validation.
    seed : int
    scores : numpy.ndarray, optional
        ``model``'s scores of ``images`` where they are already computed (the chapter's
        validation step): the "as trained" row reads them instead of scoring again.

    Returns
    -------
    pandas.DataFrame
        Rows "as trained" and "adapted to this folder": sensitivity and specificity on the
        subset at the matching threshold, and the mean score.
    """
    from helpers.adapt import MIN_ADAPT_IMAGES, adapt_batchnorm
    from helpers.evaluate import model_outputs

    labels = np.asarray(labels)
    normal, sick = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    n_sick = min(len(sick), max(1, round(len(normal) * share / (1 - share))))
    chosen = np.sort(
        np.concatenate([normal, np.random.default_rng(seed).choice(sick, n_sick, replace=False)])
    )
    if scores is not None and np.shape(scores) != (len(images),):
        raise EnsembleError(
            f"scores has shape {np.shape(scores)}; it must hold one score per image "
            f"({len(images)}), in the images' order"
        )
    subset, y = images[chosen], labels[chosen]
    minimum = min(MIN_ADAPT_IMAGES, len(subset))
    as_trained = (
        np.asarray(scores, dtype=np.float64)[chosen]
        if scores is not None
        else model_outputs(model, subset, reuse_cached_parts=True)
    )
    to_subset = adapt_batchnorm(model, subset, min_images=minimum, reuse_cached_parts=True)
    adapted = model_outputs(to_subset, subset, reuse_cached_parts=True)
    rows = {}
    for name, score, threshold in (
        ("as trained", as_trained, thresholds[0]),
        ("adapted to this folder", adapted, thresholds[1]),
    ):
        called = score >= threshold
        rows[name] = {
            "images": len(y),
            "PNEUMONIA share": float(y.mean()),
            "sensitivity": float(called[y == 1].mean()),
            "specificity": float((~called[y == 0]).mean()),
            "mean score": float(score.mean()),
        }
    return pd.DataFrame(rows).T


def write_choice(table: pd.DataFrame, decision, results_dir: str | os.PathLike) -> Path:
    """Write the choice table and the decision to ``results_dir/model_8_choice/``
    (``table.csv``, ``choice.json``), atomically."""
    from helpers.files import atomic_write_text
    from helpers.results import write_json

    folder = Path(results_dir) / "model_8_choice"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "table.csv", table.to_csv())
    write_json(folder / "choice.json", decision.as_dict())
    return folder
