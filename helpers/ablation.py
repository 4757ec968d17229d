"""model_6's ablation: its recipe against variants that change one choice, on validation only.

Every variant is trained on the training images and scored on the validation images of the
same person-aware split. The functions here are never given the test images
(:func:`run_ablation` replaces the test split by an empty one before training), so no
choice made from this table can have looked at the test set.

The validation images come from the same hospital folders as the training images, and the
models separate them almost perfectly: differences between variants are small, and the
95% intervals show how small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd

from helpers import calibration, config, metrics
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
    augment : str
        See :data:`helpers.models.AUGMENTATIONS`.
    standardize : bool
        Per-image standardisation (True) or pixels / 255.
    optimizer : {"adamw-cosine", "rmsprop-constant"}
        model_6's AdamW with cosine decay, or the case study's RMSprop at a constant 1e-4.
    class_weights : bool
        Weight the loss by inverse class frequency (False: the threshold alone moves).
    """

    name: str
    change: str
    color_mode: str = "grayscale"
    augment: str = "geometric+intensity"
    standardize: bool = True
    optimizer: str = "adamw-cosine"
    class_weights: bool = True

    def spec(self):
        """model_6's :class:`~helpers.models.ModelSpec` with this variant's choices."""
        from helpers.models import get_spec

        base = get_spec("model_6")
        options = {**base.builder_options, "augment": self.augment, "standardize": self.standardize}
        if self.optimizer == "adamw-cosine":
            training = {}
        elif self.optimizer == "rmsprop-constant":
            training = {"optimizer": "rmsprop", "learning_rate": 1e-4, "weight_decay": 0.0, "schedule": "constant"}
        else:
            raise ValueError(
                f"optimizer must be 'adamw-cosine' or 'rmsprop-constant', got {self.optimizer!r}"
            )
        return replace(
            base, builder_options=options, use_class_weights=self.class_weights,
            color_mode=self.color_mode, **training,
        )


#: model_6's recipe first, then one change at a time.
VARIANTS: tuple[Variant, ...] = (
    Variant("model_6", "the recipe: grayscale, geometric and intensity augmentation, per-image standardisation, AdamW with cosine decay, class weights"),
    Variant("RGB input", "three identical channels instead of one", color_mode="rgb"),
    Variant("geometric augmentation only", "no random contrast and brightness", augment="geometric"),
    Variant("no augmentation", "no augmentation at all", augment="none"),
    Variant("pixels / 255", "no per-image standardisation", standardize=False),
    Variant("no class weights", "unweighted loss; only the threshold corrects the imbalance", class_weights=False),
    Variant("case study's optimiser", "RMSprop at a constant 1e-4 instead of AdamW with cosine decay", optimizer="rmsprop-constant"),
)


def _without_test(xrays: ChestXrays) -> ChestXrays:
    """``xrays`` with an empty test split, so nothing downstream can score it."""
    test = xrays.test
    empty = Split(
        name="test", paths=[], labels=np.zeros(0, dtype=test.labels.dtype),
        images=np.zeros((0, *test.images.shape[1:]), dtype=test.images.dtype),
        data_dir=test.data_dir,
    )
    return replace(xrays, test=empty)


def validation_row(labels: np.ndarray, scores: np.ndarray, *, target_sensitivity: float) -> dict:
    """Validation AUC (95% CI), log loss, Brier score and the specificity at the threshold
    reaching ``target_sensitivity``, all on the validation images.

    The threshold is chosen on the same images it is applied to, so the specificity is
    optimistic; it is comparable between rows, not an estimate for new images.
    """
    auc = metrics.roc_auc_with_ci(labels, scores)
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


def run_ablation(
    load: Callable[[str], ChestXrays],
    variants: tuple[Variant, ...] = VARIANTS,
    *,
    epochs: int,
    batch_size: int = 64,
    seed: int = config.SEED,
    target_sensitivity: float = config.TARGET_SENSITIVITY,
    verbose: int = 0,
) -> pd.DataFrame:
    """Train every variant with the same seed and budget, score each on validation only.

    Parameters
    ----------
    load : callable
        ``load(color_mode)`` returns the :class:`~helpers.data.ChestXrays` at the ablation's
        image size (decoded images are cached, so calling it per variant is cheap).
    variants : tuple of Variant
    epochs, batch_size, seed : int
        The same for every variant (the cosine schedule spans ``epochs``).
    target_sensitivity : float
        For the specificity column (see :func:`validation_row`).

    Returns
    -------
    pandas.DataFrame
        One row per variant, indexed by name, in the order given: what changed, the
        validation metrics of :func:`validation_row` and the training seconds.
    """
    from helpers.evaluate import predict_split
    from helpers.models import build_model
    from helpers.train import check_training_parameters, fit, set_seed

    check_training_parameters(epochs=epochs, batch_size=batch_size, seed=seed)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1 for an ablation, got {epochs}")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    rows = []
    for variant in variants:
        spec = variant.spec()
        xrays = _without_test(load(variant.color_mode))
        if xrays.color_mode != variant.color_mode:
            raise ValueError(
                f"load({variant.color_mode!r}) returned {xrays.color_mode} images"
            )
        set_seed(seed)
        built = build_model(
            "model_6", image_size=xrays.image_size,
            channels=xrays.train.images.shape[-1], spec=spec,
        )
        start = time.perf_counter()
        run = fit(built, xrays, epochs=epochs, batch_size=batch_size, seed=seed, verbose=verbose)
        seconds = time.perf_counter() - start
        val = predict_split(run.model, xrays.val, batch_size=batch_size)
        rows.append(
            {
                "variant": variant.name,
                "change": variant.change,
                **validation_row(val.labels, val.scores, target_sensitivity=target_sensitivity),
                "training s": seconds,
            }
        )
    return pd.DataFrame(rows).set_index("variant")


def best_variant(table: pd.DataFrame, *, decimals: int = 3) -> str:
    """The variant with the highest validation AUC, rounded to ``decimals``.

    Ties go to the earlier row, so model_6's recipe (the first row) is kept unless a
    variant ranks the validation images visibly better. Log loss is not the criterion:
    class weights move the scores towards a balanced prior on purpose, which log loss on
    74% PNEUMONIA would punish although the ranking (and the chosen threshold) is as good.
    """
    if table.empty:
        raise ValueError("the ablation table is empty")
    rounded = table["val AUC"].round(decimals)
    return str(rounded.index[int(np.argmax(rounded.to_numpy()))])


def variant_named(name: str, variants: tuple[Variant, ...] = VARIANTS) -> Variant:
    """The variant called ``name``, or a ValueError listing the names."""
    for variant in variants:
        if variant.name == name:
            return variant
    raise ValueError(f"no variant {name!r}; variants: {', '.join(v.name for v in variants)}")
