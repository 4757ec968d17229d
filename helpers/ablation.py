"""model_6's ablation: its recipe against variants that change one choice, on validation only.

Every variant is trained on the training images and scored on the validation images of the
same person-aware split. The functions here are never given the test images
(:func:`run_ablation` replaces the test split by an empty one before training), so no
choice made from this table can have looked at the test set.

The validation images come from the same hospital folders as the training images, and the
models separate them almost perfectly: differences between variants are small, and the
95% intervals show how small. So a variant replaces the recipe only when it beats it by more
than the noise of choosing (:func:`decide`, fixed before anything runs): its paired
difference must be significant after Holm's adjustment and larger than the recipe's own
seed spread; otherwise the recipe is kept.

Some rows measure choices that are not one network scored in one pass at the chapter's
image size: test-time augmentation, an ensemble of seeds. They are
trained and scored like the others, so the table says what each is worth on validation,
but they can not be adopted (:attr:`Variant.not_adoptable`): the final model is one
network, saved, explained with Grad-CAM and served by ``helpers.predict`` as it is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import calibration, metrics
from helpers.data import ChestXrays, Split


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: model_6's recipe with (at most) one choice changed.

    Attributes
    ----------
    name : str
        Short label (``"model_6"`` for the recipe itself).
    change : str
        What differs from model_6, in words.
    color_mode : {"grayscale", "rgb"}
    augment : {"none", "geometric", "geometric+intensity"}
        The training-time augmentation of the chapter's network builder.
    standardize : bool
        Per-image standardisation (True) or pixels / 255.
    optimizer : {"adamw-cosine", "adamw-constant", "rmsprop-constant"}
        model_6's AdamW with cosine decay, the same AdamW at its constant initial rate, or
        the case study's RMSprop at a constant 1e-4.
    class_weights : bool
        Weight the loss by inverse class frequency (False: the threshold alone moves).
    width : int
        Filters of the first residual block (the architecture's size).
    image_scale : float
        Image size relative to the ablation's (1.5: 60 px when the ablation runs at 40).
    tta : bool
        Test-time augmentation: the score of an image is the mean logit over the image and
        four copies shifted by :data:`TTA_SHIFT` of its side (:func:`tta_logits`).
    seeds : int
        Ensemble size: the mean logit of this many networks trained with seeds ``seed``,
        ``seed + 1``, ...
    """

    name: str
    change: str
    color_mode: str = "grayscale"
    augment: str = "geometric+intensity"
    standardize: bool = True
    optimizer: str = "adamw-cosine"
    class_weights: bool = True
    width: int = 32
    image_scale: float = 1.0
    tta: bool = False
    seeds: int = 1

    def __post_init__(self):
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"{self.name}: seeds must be an integer >= 1, got {self.seeds!r}")
        if isinstance(self.image_scale, bool) or not self.image_scale > 0:
            raise ValueError(f"{self.name}: image_scale must be positive, got {self.image_scale!r}")

    @property
    def not_adoptable(self) -> str:
        """Why this row can not become the final model, or ``""`` if it can."""
        if self.image_scale != 1.0:
            return "another image size: the final model trains at the chapter's image_size"
        if self.tta:
            return "five forward passes per image: the saved model scores in one"
        if self.seeds > 1:
            return (
                f"{self.seeds} networks: {self.seeds}x the training time, and one model is "
                "saved and served"
            )
        return ""

    def training_key(self) -> tuple:
        """What the training of one network depends on (TTA and ensembles reuse networks)."""
        return (
            self.color_mode,
            self.augment,
            self.standardize,
            self.optimizer,
            self.class_weights,
            self.width,
            self.image_scale,
        )

    def network_options(self) -> dict:
        """Keyword arguments of the chapter's network builder for this variant."""
        return {"width": self.width, "augment": self.augment, "standardize": self.standardize}

    def make_optimizer(self, learning_rate: float, weight_decay: float):
        """The optimiser of this variant: AdamW at ``learning_rate`` with ``weight_decay``
        (the recipe), or the case study's RMSprop at a constant 1e-4."""
        import keras

        if self.optimizer in ("adamw-cosine", "adamw-constant"):
            return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
        if self.optimizer == "rmsprop-constant":
            return keras.optimizers.RMSprop(learning_rate=1e-4)
        raise ValueError(
            "optimizer must be 'adamw-cosine', 'adamw-constant' or 'rmsprop-constant', "
            f"got {self.optimizer!r}"
        )

    def callbacks(self, learning_rate: float, epochs: int) -> list:
        """The learning-rate schedule of this variant: cosine decay over ``epochs``, or none."""
        from helpers.train import cosine_schedule

        return [cosine_schedule(learning_rate, epochs)] if self.optimizer == "adamw-cosine" else []


#: model_6's recipe first, then one change at a time. Two rows measured in earlier builds
#: were cut for the build's time budget because validation never told them from the recipe,
#: so they could not be adopted: "half width" (residual blocks of 16-128 filters,
#: ``Variant(..., width=16)``; +0.0003, 95% interval about +-0.005, Holm p = 1) and "RGB
#: input" (three identical channels, ``Variant(..., color_mode="rgb")``, which also loads
#: the images a second time; -0.0001, -0.006 to +0.006, Holm p = 1, in the build of
#: 56e7abf). Both still run when added to the tuple.
VARIANTS: tuple[Variant, ...] = (
    Variant(
        "model_6",
        "the recipe: grayscale, geometric and intensity augmentation, per-image "
        "standardisation, AdamW with cosine decay, class weights",
    ),
    Variant("no augmentation", "no augmentation at all", augment="none"),
    Variant("pixels / 255", "no per-image standardisation", standardize=False),
    Variant(
        "no class weights",
        "unweighted loss; only the threshold corrects the imbalance",
        class_weights=False,
    ),
    Variant(
        "case study's optimiser",
        "RMSprop at a constant 1e-4 instead of AdamW with cosine decay",
        optimizer="rmsprop-constant",
    ),
    Variant(
        "test-time augmentation",
        "the recipe's network, each score the mean logit over the image and four shifted copies",
        tta=True,
    ),
    Variant("ensemble of 3 seeds", "mean logit of the recipe trained with three seeds", seeds=3),
)

#: Shift of the test-time augmentation copies, as a fraction of the image side (the
#: training augmentation shifts by up to 0.05).
TTA_SHIFT = 0.04


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``images`` (N, H, W, C) moved by ``dy`` rows and ``dx`` columns, the uncovered
    border filled with 0, as the training augmentation fills it."""
    out = np.zeros_like(images)
    h, w = images.shape[1:3]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[:, dst_y, dst_x] = images[:, src_y, src_x]
    return out


def _logits(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    from helpers.evaluate import model_outputs, output_kind

    if output_kind(model) != "logit":
        raise ValueError(f"model {model.name!r} must output logits to average them")
    return model_outputs(model, images, batch_size=batch_size)


def tta_logits(
    model, images: np.ndarray, *, batch_size: int = 64, shift: float = TTA_SHIFT
) -> np.ndarray:
    """Mean logit of ``model`` over ``images`` and four copies shifted up, down, left and
    right by ``shift`` of the side (at least one pixel)."""
    d = max(1, int(round(shift * images.shape[1])))
    views = ((0, 0), (d, 0), (-d, 0), (0, d), (0, -d))
    return np.mean(
        [_logits(model, shifted(images, dy, dx), batch_size) for dy, dx in views], axis=0
    )


def _without_test(xrays: ChestXrays) -> ChestXrays:
    """``xrays`` with an empty test split, so nothing downstream can score it."""
    test = xrays.test
    empty = Split(
        name="test",
        paths=[],
        labels=np.zeros(0, dtype=test.labels.dtype),
        images=np.zeros((0, *test.images.shape[1:]), dtype=test.images.dtype),
        data_dir=test.data_dir,
    )
    return replace(xrays, test=empty)


def validation_row(
    labels: np.ndarray,
    scores: np.ndarray,
    persons,
    *,
    target_sensitivity: float,
    seed: int,
) -> dict:
    """Validation AUC (95% CI, persons resampled), log loss, Brier score and the specificity
    at the threshold reaching ``target_sensitivity``, all on the validation images.

    ``persons`` names each image's person (:func:`helpers.data.persons_of`): the interval is
    :func:`helpers.bootstrap.person_bootstrap`'s, so a child's several images count once.
    The threshold is chosen on the same images it is applied to, so the specificity is
    optimistic; it is comparable between rows, not an estimate for new images.
    """
    from helpers.bootstrap import person_bootstrap

    auc = person_bootstrap(labels, scores, persons, threshold=0.5, seed=seed)["estimates"]["auc"]
    threshold = metrics.threshold_for_sensitivity(labels, scores, target=target_sensitivity)
    rates = metrics.rates_at_threshold(labels, scores, threshold=threshold)
    return {
        "val AUC": auc.value,
        "val AUC low": auc.ci_low,
        "val AUC high": auc.ci_high,
        "val log loss": calibration.log_loss(labels, scores),
        "val Brier": calibration.brier_score(labels, scores),
        f"val specificity at sensitivity {target_sensitivity:g}": rates["specificity"].value,
    }


def compile_network(model, variant: Variant, *, learning_rate: float, weight_decay: float) -> None:
    """Compile a logit-output network with ``variant``'s optimiser, the binary
    cross-entropy on logits, and an accuracy that cuts logits at 0 (probability 0.5)."""
    import keras

    model.compile(
        optimizer=variant.make_optimizer(learning_rate, weight_decay),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
    )


def check_half(val, *, seed: int) -> np.ndarray:
    """True for the validation images of the *check half*: half of the validation persons
    (stratified by class, fixed by ``seed``), which the ablation's choices never look at.

    ``val`` is the validation :class:`~helpers.data.Split` or its
    :class:`~helpers.evaluate.Predictions` (anything with ``paths`` and ``labels`` in file
    order). The ablation scores its rows on the other half (the selection half). Scoring the
    final model on both halves separates what choosing on one validation set flatters
    (selection half minus check half) from the shift between the training and test folders
    (check half minus test): :func:`gap_table`.
    """
    from helpers.data import person_aware_split, persons_of

    groups = persons_of(val)
    return person_aware_split(val.labels, groups, val_fraction=0.5, seed=seed)


def gap_table(evaluation, *, seed: int) -> pd.DataFrame:
    """The validation-test gap of the chosen model, split in two.

    The final model's AUC with its person-level interval on the selection half of the
    validation images (the ablation chose on it), on the check half (no choice looked at
    it), and on the test set. Selection half minus check half estimates the optimism of
    choosing on one validation set; check half minus test is what remains: the shift
    between the training folder and the separately collected test folder.
    """
    from helpers.evaluate import Predictions, metrics_at

    val, test = evaluation.val, evaluation.test
    check = check_half(val, seed=seed)
    parts = {
        "validation, selection half (the ablation chose on it)": ~check,
        "validation, check half (no choice looked at it)": check,
    }
    rows = {}
    for name, mask in parts.items():
        part = Predictions(
            split="val",
            paths=[p for p, m in zip(val.paths, mask) if m],
            labels=val.labels[mask],
            scores=val.scores[mask],
        )
        block = metrics_at(part, evaluation.chosen, seed=seed)
        rows[name] = {
            "images": int(mask.sum()),
            "AUC": block["auc"],
            "AUC low": block["auc_ci_low"],
            "AUC high": block["auc_ci_high"],
        }
    block = evaluation.metrics["test"]
    rows["test"] = {
        "images": len(test.labels),
        "AUC": block["auc"],
        "AUC low": block["auc_ci_low"],
        "AUC high": block["auc_ci_high"],
    }
    return pd.DataFrame(rows).T


def run_ablation(
    build_network: Callable,
    load: Callable[[str, int], ChestXrays],
    variants: tuple[Variant, ...] = VARIANTS,
    *,
    image_size: int,
    epochs: int,
    batch_size: int = 64,
    seed: int,
    learning_rate: float,
    weight_decay: float,
    target_sensitivity: float,
    verbose: int = 0,
) -> pd.DataFrame:
    """Train every variant with the same seed and budget, score each on validation only.

    Parameters
    ----------
    build_network : callable
        The chapter's builder: ``build_network(input_shape, width=, augment=, standardize=)``
        returns an uncompiled Keras model with one logit output.
    load : callable
        ``load(color_mode, image_size)`` returns the :class:`~helpers.data.ChestXrays` at
        that size; it is called once per colour mode and size.
    variants : tuple of Variant
    image_size : int
        The ablation's image size (a variant's ``image_scale`` multiplies it).
    epochs, batch_size, seed : int
        The same for every variant (the cosine schedule spans ``epochs``). Ensemble
        members use ``seed``, ``seed + 1``, ...
    learning_rate, weight_decay : float
        The recipe's AdamW settings (:meth:`Variant.make_optimizer`).
    target_sensitivity : float
        For the specificity column (see :func:`validation_row`).

    Returns
    -------
    pandas.DataFrame
        One row per variant, indexed by name, in the order given: what changed, the
        validation metrics of :func:`validation_row`, the paired difference of its AUC
        minus the first row's on the same images with its 95% interval (persons resampled
        together for both, :func:`helpers.bootstrap.paired_person_bootstrap`), its two-sided
        bootstrap p-value and that p-value Holm-adjusted over the adoptable rows compared
        with the first (:func:`holm_over_candidates`; NaN for the first row and for the rows
        that can not be adopted), the seconds spent training the networks the row
        uses (a network shared by rows, such as the recipe's with its test-time augmentation
        row, is trained once and counted in each), and "adoptable":
        ``"yes"`` or :attr:`Variant.not_adoptable`'s reason. ``attrs[SEED_AUCS]`` holds the
        recipe's seed spread: ``{seed: validation AUC}`` of each network of an ensemble row
        of the recipe (``seeds`` > 1, nothing else changed), each scored alone on the same
        images; empty without such a row.
    """
    from scipy.special import expit
    from sklearn.metrics import roc_auc_score

    from helpers.bootstrap import paired_person_bootstrap
    from helpers.data import class_weights, persons_of
    from helpers.evaluate import predict_split
    from helpers.train import check_training_parameters, fit, set_seed

    check_training_parameters(epochs=epochs, batch_size=batch_size, seed=seed)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1 for an ablation, got {epochs}")
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or image_size < 8
    ):
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")

    datasets: dict[tuple, ChestXrays] = {}

    def data_for(variant: Variant) -> ChestXrays:
        size = max(8, int(round(image_size * variant.image_scale)))
        key = (variant.color_mode, size)
        if key not in datasets:
            xrays = _without_test(load(variant.color_mode, size))
            if (xrays.color_mode, xrays.image_size) != key:
                raise ValueError(
                    f"load({variant.color_mode!r}, {size}) returned {xrays.color_mode} images "
                    f"of {xrays.image_size} px"
                )
            datasets[key] = xrays
        return datasets[key]

    networks: dict[tuple, tuple[object, float]] = {}

    def network(variant: Variant, xrays: ChestXrays, network_seed: int):
        key = (variant.training_key(), network_seed)
        if key not in networks:
            set_seed(network_seed)
            model = build_network(xrays.train.images.shape[1:], **variant.network_options())
            compile_network(model, variant, learning_rate=learning_rate, weight_decay=weight_decay)
            weights = class_weights(xrays.train.labels) if variant.class_weights else None
            start = time.perf_counter()
            run = fit(
                model,
                xrays,
                epochs=epochs,
                batch_size=batch_size,
                seed=network_seed,
                class_weight=weights,
                callbacks=variant.callbacks(learning_rate, epochs),
                verbose=verbose,
            )
            networks[key] = (run.model, time.perf_counter() - start)
        return networks[key]

    # The last row that uses each network: after it, the network is let go (memory).
    last_use = {
        (variant.training_key(), seed + i): position
        for position, variant in enumerate(variants)
        for i in range(variant.seeds)
    }
    rows = []
    recipe_key = variants[0].training_key() if variants else None
    seed_aucs: dict[int, float] = {}
    for position, variant in enumerate(variants):
        xrays = data_for(variant)
        trained = [network(variant, xrays, seed + i) for i in range(variant.seeds)]
        for key in [k for k, last in last_use.items() if last == position]:
            networks.pop(key, None)
        labels = xrays.val.labels
        persons = np.array(persons_of(xrays.val))
        select = ~check_half(xrays.val, seed=seed)  # choices look at this half only
        if variant.tta or variant.seeds > 1:
            per_network = [
                tta_logits(model, xrays.val.images, batch_size=batch_size)
                if variant.tta
                else _logits(model, xrays.val.images, batch_size)
                for model, _ in trained
            ]
            scores = expit(np.mean(per_network, axis=0))
            if variant.seeds > 1 and not variant.tta and variant.training_key() == recipe_key:
                # The ensemble's networks are the recipe trained with other seeds: each one
                # alone measures how far the recipe's AUC moves with only the seed changed.
                seed_aucs = {
                    seed + i: float(roc_auc_score(labels[select], expit(logits)[select]))
                    for i, logits in enumerate(per_network)
                }
        else:
            scores = predict_split(trained[0][0], xrays.val, batch_size=batch_size).scores
        # Every variant scores the same validation images (the split is made by file, not
        # by size or colour), so each row can be paired with the first, image by image.
        if position == 0:
            first_paths, first_scores = list(xrays.val.paths), scores[select]
            difference, p_value = (
                metrics.Estimate(0.0, 0.0, 0.0),
                np.nan,
            )  # the reference itself: no test
        elif list(xrays.val.paths) != first_paths:
            raise ValueError(
                f"variant {variant.name!r} was scored on other validation images than the first row"
            )
        else:
            paired = paired_person_bootstrap(
                labels[select],
                scores[select],
                first_scores,
                persons[select],
                threshold_a=0.5,
                threshold_b=0.5,
                seed=seed,
            )["differences"]["auc"]
            difference, p_value = paired["difference"], paired["p_value"]
        rows.append(
            {
                "variant": variant.name,
                "change": variant.change,
                **validation_row(
                    labels[select],
                    scores[select],
                    persons[select],
                    target_sensitivity=target_sensitivity,
                    seed=seed,
                ),
                "AUC - first row": difference.value,
                "AUC - first row low": difference.ci_low,
                "AUC - first row high": difference.ci_high,
                "AUC - first row p": p_value,
                "training s": sum(seconds for _, seconds in trained),
                "adoptable": variant.not_adoptable or "yes",
            }
        )
    table = pd.DataFrame(rows).set_index("variant")
    # Holm's adjustment over the rows the choice chooses from (:func:`decide`).
    table.insert(
        table.columns.get_loc("AUC - first row p") + 1,
        "AUC - first row p (Holm)",
        holm_over_candidates(table, recipe=str(table.index[0])),
    )
    table.attrs[SEED_AUCS] = seed_aucs
    return table


# --- The choice rule: adopt a row over the recipe only beyond the noise of choosing -------

#: The family-wise level of the rule: a row is adopted only when its Holm-adjusted p-value
#: against the recipe is below it.
ALPHA = 0.05

#: Where :func:`run_ablation` records the recipe's seed spread: ``table.attrs[SEED_AUCS]``
#: is ``{seed: validation AUC}`` of each network of the ensemble row scored alone.
SEED_AUCS = "recipe seed AUCs"


def holm_over_candidates(
    table: pd.DataFrame, *, recipe: str, difference: str = "AUC - first row"
) -> pd.Series:
    """The p-values of ``<difference> p`` Holm-adjusted over the *candidates*: the rows
    other than ``recipe`` whose "adoptable" column is ``"yes"`` (every other row when the
    table has no such column). The family is what the choice chooses from; rows that can
    not be adopted are measured, not chosen, and get NaN here, as does the recipe."""
    from helpers.bootstrap import holm_adjust

    candidates = _candidates(table, recipe)
    adjusted = pd.Series(np.nan, index=table.index, dtype=float)
    if candidates:
        adjusted[candidates] = holm_adjust(table.loc[candidates, f"{difference} p"].to_numpy())
    return adjusted


def _candidates(table: pd.DataFrame, recipe: str) -> list[str]:
    if recipe not in table.index:
        raise ValueError(f"the recipe {recipe!r} is not a row of the table: {list(table.index)}")
    rows = table.drop(index=recipe)
    if "adoptable" in rows:
        rows = rows[rows["adoptable"] == "yes"]
    return [str(name) for name in rows.index]


@dataclass(frozen=True)
class Decision:
    """What the choice rule (:func:`decide`) found, with its evidence.

    Attributes
    ----------
    choice : str
        The row adopted: a candidate that beat the recipe beyond the noise, or ``recipe``.
    recipe : str
    contender : str or None
        The candidate with the largest AUC difference to the recipe (adopted or not);
        None when there is no candidate.
    margin, low, high : float
        The contender's paired AUC difference to the recipe and its 95% interval (NaN
        without a contender).
    p_holm : float
        The contender's p-value, Holm-adjusted over the ``candidates``.
    candidates : int
        How many rows could have been adopted (the Holm family).
    recipe_auc : float
        The recipe's validation AUC.
    seed_aucs : dict
        ``{seed: validation AUC}`` of the recipe trained with each seed, scored alone on
        the same images; empty when not measured.
    seed_range : float
        Their range (max - min); NaN when not measured.
    beyond_noise : tuple of str
        Every candidate that met the whole rule.
    statement : str
        The rule's outcome in one sentence, with its numbers, for the chapter.
    """

    choice: str
    recipe: str
    contender: str | None
    margin: float
    low: float
    high: float
    p_holm: float
    candidates: int
    recipe_auc: float
    seed_aucs: dict
    seed_range: float
    beyond_noise: tuple[str, ...]
    statement: str

    @property
    def adopted(self) -> bool:
        """Whether a row replaced the recipe."""
        return self.choice != self.recipe

    def as_dict(self) -> dict:
        """The decision as plain JSON values (NaN as None, seeds as strings)."""

        def number(value: float):
            return None if value is None or np.isnan(value) else float(value)

        return {
            "rule": RULE,
            "adopted": self.adopted,
            "choice": self.choice,
            "recipe": self.recipe,
            "recipe_auc": number(self.recipe_auc),
            "contender": self.contender,
            "margin": number(self.margin),
            "margin_low": number(self.low),
            "margin_high": number(self.high),
            "p_holm": number(self.p_holm),
            "candidates": self.candidates,
            "alpha": ALPHA,
            "seed_aucs": {str(k): float(v) for k, v in self.seed_aucs.items()},
            "seed_range": number(self.seed_range),
            "beyond_noise": list(self.beyond_noise),
            "statement": self.statement,
        }


#: The rule in words, as recorded in ``choice.json``.
RULE = (
    "a row replaces the recipe only when its paired person-level AUC difference to the recipe "
    f"is positive with a p-value below {ALPHA} after Holm's adjustment over the adoptable rows, "
    "and, where the recipe's seed spread is measured, larger than that spread (the range of "
    "the recipe's validation AUC over the ensemble row's seeds); of those rows the largest "
    "difference wins, otherwise the recipe is kept"
)


def _seed_text(seed_aucs: dict) -> str:
    return ", ".join(f"seed {seed}: {auc:.4f}" for seed, auc in seed_aucs.items())


def decide(
    table: pd.DataFrame,
    *,
    recipe: str | None = None,
    difference: str = "AUC - first row",
    seed_aucs: dict | None = None,
    seeds_expected: bool = True,
    rows: str = "rows",
) -> Decision:
    """The choice rule, fixed before anything is trained: adopt a row over the recipe only
    when validation can tell it apart from the recipe.

    The validation images are nearly saturated (AUCs above 0.99 differ in the third
    decimal), so the highest AUC is mostly the luckiest row. A candidate (a row other than
    the recipe whose "adoptable" column is ``"yes"``) replaces the recipe only when

    1. its paired AUC difference to the recipe (column ``difference``, persons resampled
       together for both, :func:`helpers.bootstrap.paired_person_bootstrap`) is positive;
    2. its p-value (column ``<difference> p``), Holm-adjusted over the candidates
       (:func:`holm_over_candidates`), is below :data:`ALPHA`: the adjusted interval lies
       above 0; and
    3. that difference is larger than the recipe's *seed range*: the range of the
       validation AUCs of the recipe trained with different seeds and nothing else changed
       (``seed_aucs``, the ensemble row's networks scored alone). Without ``seed_aucs`` the
       range is not measured and (1) and (2) alone decide (said in the statement when
       ``seeds_expected``).

    Of the candidates that pass, the one with the largest difference is adopted; when
    none does, the recipe is kept and the statement says that validation cannot tell the
    rows apart, with the contender's difference, interval, adjusted p and the seed range.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`run_ablation`'s or :func:`helpers.finetune.run_search`'s table: "val AUC",
        ``difference`` with ``low``/``high``/``p`` columns, optionally "adoptable".
    recipe : str, optional
        The recipe's row (default: the first row).
    difference : str
        The name of the paired difference columns.
    seed_aucs : dict, optional
        ``{seed: AUC}``; default ``table.attrs[SEED_AUCS]`` when set.
    seeds_expected : bool
        Whether the statement says so when the seed range is missing.
    rows : str
        What the rows are called in the statement ("rows", "configurations").

    Returns
    -------
    Decision
    """
    if table.empty:
        raise ValueError("the table has no row to choose from")
    recipe = str(table.index[0]) if recipe is None else recipe
    if seed_aucs is None:
        seed_aucs = dict(table.attrs.get(SEED_AUCS, {}))
    values = list(seed_aucs.values())
    seed_range = float(max(values) - min(values)) if len(values) >= 2 else float("nan")
    candidates = _candidates(table, recipe)
    holm = holm_over_candidates(table, recipe=recipe, difference=difference)
    recipe_auc = float(table.loc[recipe, "val AUC"])
    beyond = [
        name
        for name in candidates
        if table.loc[name, difference] > 0
        and holm[name] < ALPHA
        and (np.isnan(seed_range) or table.loc[name, difference] > seed_range)
    ]
    if beyond:
        contender = max(beyond, key=lambda name: table.loc[name, difference])
    elif candidates:
        contender = max(candidates, key=lambda name: table.loc[name, difference])
    else:
        contender = None
    choice = contender if beyond else recipe
    nan = float("nan")
    margin, low, high, p_holm = (
        (
            float(table.loc[contender, difference]),
            float(table.loc[contender, f"{difference} low"]),
            float(table.loc[contender, f"{difference} high"]),
            float(holm[contender]),
        )
        if contender is not None
        else (nan, nan, nan, nan)
    )
    decision = Decision(
        choice=choice,
        recipe=recipe,
        contender=contender,
        margin=margin,
        low=low,
        high=high,
        p_holm=p_holm,
        candidates=len(candidates),
        recipe_auc=recipe_auc,
        seed_aucs=dict(seed_aucs),
        seed_range=seed_range,
        beyond_noise=tuple(beyond),
        statement="",
    )
    return replace(decision, statement=_statement(decision, seeds_expected, rows))


def _statement(d: Decision, seeds_expected: bool, rows: str) -> str:
    """The sentence on a :class:`Decision`, with its numbers."""
    row = rows[:-1] if rows.endswith("s") else rows
    if d.contender is None:
        return (
            f"no other adoptable {row} was measured, so the recipe is kept (validation AUC "
            f"{d.recipe_auc:.4f})"
        )
    numbers = (
        f"{d.margin:+.4f} (paired 95% interval {d.low:+.4f} to {d.high:+.4f}, persons "
        f"resampled; p = {d.p_holm:.3f} after Holm's adjustment over the {d.candidates} "
        f"adoptable {rows})"
    )
    evidence = f"'{d.contender}', {numbers}"
    measured = not np.isnan(d.seed_range)
    spread = (
        f"the {d.seed_range:.4f} by which the recipe's own validation AUC moves between seeds "
        f"({_seed_text(d.seed_aucs)})"
    )
    unmeasured = (
        "; the recipe's seed spread was not measured (no ensemble row), so the paired "
        "interval alone decides"
        if seeds_expected and not measured
        else ""
    )
    if d.adopted:
        return (
            f"'{d.choice}' is adopted over the recipe: its validation AUC exceeds the recipe's "
            f"({d.recipe_auc:.4f}) by {numbers}"
            + (f", more than {spread}" if measured else unmeasured)
        )
    if d.margin <= 0:
        return (
            f"no adoptable {row} scored above the recipe on validation (AUC {d.recipe_auc:.4f}), "
            f"so the recipe is kept; the closest, {evidence}"
            + (f"; for scale, {spread}" if measured else unmeasured)
        )
    significant = d.p_holm < ALPHA
    beyond_seeds = measured and d.margin > d.seed_range
    if measured and not significant and not beyond_seeds:
        why = f"is neither significant once adjusted nor larger than {spread}"
    elif measured and significant:
        why = f"is significant once adjusted but not larger than {spread}"
    elif measured:
        why = f"is larger than {spread}, but not significant once adjusted"
    else:
        why = f"is not significant once adjusted{unmeasured}"
    return (
        f"validation cannot tell the {rows} apart, so the recipe is kept (validation AUC "
        f"{d.recipe_auc:.4f}): the largest difference over it, {evidence}, {why}"
    )


def best_variant(table: pd.DataFrame, seed_aucs: dict | None = None) -> str:
    """The variant the rule adopts (:func:`decide`): model_6's recipe (the first row)
    unless an adoptable variant beats it beyond the noise of choosing.

    Rows whose "adoptable" column is not ``"yes"`` (another image size, test-time
    augmentation, an ensemble) are measured but never chosen. Log loss is not the
    criterion: class weights move the scores towards a balanced prior on purpose, which log
    loss on 74% PNEUMONIA would punish although the ranking (and the chosen threshold) is
    as good.
    """
    if table.empty or ("adoptable" in table and not (table["adoptable"] == "yes").any()):
        raise ValueError("the ablation table has no adoptable row")
    return decide(table, seed_aucs=seed_aucs).choice


def variant_named(name: str, variants: tuple[Variant, ...] = VARIANTS) -> Variant:
    """The variant called ``name``, or a ValueError listing the names."""
    for variant in variants:
        if variant.name == name:
            return variant
    raise ValueError(f"no variant {name!r}; variants: {', '.join(v.name for v in variants)}")


def ablation_budget(params) -> dict[str, int]:
    """Image size and epochs of model_6's ablation: the ``ablation_*`` parameters, never
    more than the final model's own ``image_size`` and ``epochs``."""
    return {
        "image_size": min(params["ablation_image_size"], params["image_size"]),
        "epochs": min(params["ablation_epochs"], params["epochs"]),
    }


@dataclass(frozen=True)
class Ablation:
    """What :func:`choose_on_validation` returns: the table, the chosen variant, the budget.

    Attributes
    ----------
    table : pandas.DataFrame
        :func:`run_ablation`'s table; empty when no ablation ran.
    choice : Variant
        The chosen variant (:func:`decide`); the recipe itself when no ablation ran.
    image_size, epochs : int
        The ablation's budget (:func:`ablation_budget`); ``epochs`` 0: no ablation ran.
    seed : int
    decision : Decision or None
        The rule's evidence and statement (:func:`decide`); None when no ablation ran.
    """

    table: pd.DataFrame
    choice: Variant
    image_size: int
    epochs: int
    seed: int
    decision: Decision | None = None

    @property
    def ran(self) -> bool:
        """Whether an ablation ran (``ablation_epochs`` above 0)."""
        return self.epochs > 0


def choose_on_validation(
    build_network: Callable, params, *, learning_rate: float, weight_decay: float
) -> Ablation:
    """Run model_6's ablation on validation (:func:`run_ablation`) and choose its variant.

    The chapter's first step of three: then :func:`write_ablation` writes it to the results,
    and :func:`helpers.report.show_ablation` and :func:`helpers.report.glue_ablation` show it.

    Parameters
    ----------
    build_network : callable
        The chapter's own network builder.
    params : helpers.parameters.ChapterParameters or mapping
        The chapter's parameters (``data_dir``, ``seed``, ``batch_size``, the
        ``ablation_*`` budget, ...).
    learning_rate, weight_decay : float
        The recipe's optimiser settings.

    Returns
    -------
    Ablation
        With an empty table and the recipe when ``ablation_epochs`` is 0.
    """
    from helpers.data import load_chest_xrays

    params = params.as_dict() if hasattr(params, "as_dict") else dict(params)
    budget = ablation_budget(params)
    if budget["epochs"] == 0:
        return Ablation(pd.DataFrame(), VARIANTS[0], seed=params["seed"], **budget)

    def load(color_mode: str, image_size: int) -> ChestXrays:
        return load_chest_xrays(
            params["data_dir"],
            image_size=image_size,
            color_mode=color_mode,
            seed=params["seed"],
            on_bad_image=params.get("on_bad_image", "stop"),
        )

    table = run_ablation(
        build_network,
        load,
        image_size=budget["image_size"],
        epochs=budget["epochs"],
        batch_size=params["batch_size"],
        seed=params["seed"],
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        target_sensitivity=params["target_sensitivity"],
    )
    decision = decide(table)
    return Ablation(
        table, variant_named(decision.choice), seed=params["seed"], decision=decision, **budget
    )


#: The results folder of model_6's ablation (``ablation.csv``, ``choice.json``).
ABLATION_RESULTS = "model_6_ablation"


def write_ablation(ablation: Ablation, results_dir: str | os.PathLike) -> Path | None:
    """Write ``<results_dir>/model_6_ablation/ablation.csv``, ``recipe_seeds.csv`` (the
    recipe's validation AUC for each seed of the ensemble row, scored alone; written when
    measured) and ``choice.json`` (the choice, the budget and the rule's evidence and
    statement, :meth:`Decision.as_dict`), atomically (:class:`helpers.results.ResultsWriter`).

    Returns
    -------
    pathlib.Path or None
        The folder written; None, with nothing written, when no ablation ran.
    """
    from helpers.results import ResultsWriter

    if not ablation.ran:
        return None
    with ResultsWriter(results_dir, ABLATION_RESULTS) as writer:
        ablation.table.to_csv(writer.path("ablation.csv"))
        decision = ablation.decision or decide(ablation.table)
        if decision.seed_aucs:
            pd.DataFrame(
                {"val AUC": list(decision.seed_aucs.values())},
                index=pd.Index(list(decision.seed_aucs), name="seed"),
            ).to_csv(writer.path("recipe_seeds.csv"))
        writer.write_json(
            "choice.json",
            {
                "choice": ablation.choice.name,
                "image_size": ablation.image_size,
                "epochs": ablation.epochs,
                "seed": ablation.seed,
                "decision": decision.as_dict(),
            },
        )
    return Path(results_dir) / ABLATION_RESULTS
