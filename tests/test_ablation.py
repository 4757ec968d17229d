"""Tests of helpers.ablation: model_6's variants, the choice rule, and that the test split is
never seen."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("keras")

from helpers import ablation, data, evaluate  # noqa: E402


def test_each_variant_changes_one_choice_of_the_recipe():
    recipe = ablation.VARIANTS[0]
    assert recipe.name == "model_6"
    fields = ("color_mode", "augment", "standardize", "optimizer", "class_weights")
    for variant in ablation.VARIANTS[1:]:
        changed = [f for f in fields if getattr(variant, f) != getattr(recipe, f)]
        assert len(changed) == 1, (variant.name, changed)
    spec = ablation.variant_named("case study's optimiser").spec()
    assert (spec.optimizer, spec.learning_rate, spec.schedule) == ("rmsprop", 1e-4, "constant")
    assert ablation.variant_named("no class weights").spec().use_class_weights is False
    assert ablation.variant_named("pixels / 255").spec().builder_options["standardize"] is False
    with pytest.raises(ValueError, match="no variant 'bigger'"):
        ablation.variant_named("bigger")
    with pytest.raises(ValueError, match="optimizer must be"):
        ablation.Variant("x", "y", optimizer="sgd").spec()


def test_best_variant_takes_the_highest_rounded_auc_and_keeps_the_recipe_on_ties():
    table = pd.DataFrame({"val AUC": [0.9981, 0.9984, 0.9902]}, index=["model_6", "a", "b"])
    assert ablation.best_variant(table) == "model_6"  # 0.998 == 0.998: the first row wins
    table.loc["b", "val AUC"] = 0.9991
    assert ablation.best_variant(table) == "b"
    with pytest.raises(ValueError, match="empty"):
        ablation.best_variant(table.iloc[:0])


def test_validation_row_matches_the_metrics_module():
    from helpers import calibration, metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 200), 0.01, 0.99)
    row = ablation.validation_row(y, s, target_sensitivity=0.9)
    auc = metrics.roc_auc_with_ci(y, s)
    assert (row["val AUC"], row["val AUC low"], row["val AUC high"]) == (auc.value, auc.ci_low, auc.ci_high)
    assert row["val log loss"] == pytest.approx(calibration.log_loss(y, s))
    threshold = metrics.threshold_for_sensitivity(y, s, target=0.9)
    expected = metrics.rates_at_threshold(y, s, threshold=threshold)["specificity"].value
    assert row["val specificity at sensitivity 0.9"] == expected


def test_run_ablation_trains_every_variant_and_never_scores_the_test_split(xray_folder, monkeypatch):
    scored = []
    real = evaluate.predict_split

    def spy(model, split, **kwargs):
        scored.append((split.name, len(split)))
        return real(model, split, **kwargs)

    monkeypatch.setattr(evaluate, "predict_split", spy)
    loaded = []

    def load(color_mode):
        loaded.append(color_mode)
        return data.load_chest_xrays(xray_folder.root, image_size=32, color_mode=color_mode, seed=0)

    variants = (ablation.VARIANTS[0], ablation.variant_named("RGB input"))
    table = ablation.run_ablation(load, variants, epochs=1, batch_size=8, seed=0)
    assert list(table.index) == ["model_6", "RGB input"]
    assert loaded == ["grayscale", "rgb"]
    assert {name for name, _ in scored} == {"val"}  # only validation images were scored
    assert table["val AUC"].between(0, 1).all() and (table["training s"] > 0).all()
    assert (table["val AUC low"] <= table["val AUC"]).all()
    with pytest.raises(ValueError, match="unique"):
        ablation.run_ablation(load, (variants[0], variants[0]), epochs=1)
    with pytest.raises(ValueError, match="at least 1"):
        ablation.run_ablation(load, variants, epochs=0)


def test_run_ablation_is_repeatable_with_the_same_seed(xray_folder):
    def load(color_mode):
        return data.load_chest_xrays(xray_folder.root, image_size=32, color_mode=color_mode, seed=0)

    variants = (ablation.variant_named("no augmentation"),)
    first = ablation.run_ablation(load, variants, epochs=1, batch_size=8, seed=3)
    second = ablation.run_ablation(load, variants, epochs=1, batch_size=8, seed=3)
    assert first["val AUC"].iloc[0] == second["val AUC"].iloc[0]
    assert first["val log loss"].iloc[0] == pytest.approx(second["val log loss"].iloc[0], abs=1e-6)
