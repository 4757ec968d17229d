"""Tests of helpers.ablation: model_6's variants, the choice rule, and that the test split is
never seen."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("keras")

from chapter_models import make_model_function

from helpers import ablation, bootstrap, data, evaluate, report

# Keras' TensorFlow backend trips a NumPy 2 deprecation inside fit/predict; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

#: model_6's network builder, from its chapter's model cell, and its AdamW settings there.
RECIPE = {"learning_rate": 2e-3, "weight_decay": 1e-4}


def build_network(input_shape, **options):
    return make_model_function("model_6")(input_shape, **options)


def test_each_variant_changes_one_choice_of_the_recipe():
    recipe = ablation.VARIANTS[0]
    assert recipe.name == "model_6"
    fields = (
        "color_mode",
        "augment",
        "standardize",
        "optimizer",
        "class_weights",
        "width",
        "image_scale",
        "tta",
        "seeds",
    )
    for variant in ablation.VARIANTS[1:]:
        changed = [f for f in fields if getattr(variant, f) != getattr(recipe, f)]
        assert len(changed) == 1, (variant.name, changed)
    with pytest.raises(ValueError, match="no variant 'bigger'"):
        ablation.variant_named("bigger")


def test_what_each_variant_gives_the_chapters_builder_optimiser_and_schedule():
    import keras

    recipe = ablation.VARIANTS[0]
    assert recipe.network_options() == {
        "width": 32,
        "augment": "geometric+intensity",
        "standardize": True,
    }
    assert recipe.color_mode == "grayscale" and recipe.class_weights is True
    adamw = recipe.make_optimizer(2e-3, 1e-4)
    assert isinstance(adamw, keras.optimizers.AdamW)
    assert float(adamw.learning_rate) == pytest.approx(
        2e-3
    ) and adamw.weight_decay == pytest.approx(1e-4)
    (schedule,) = recipe.callbacks(2e-3, 4)
    assert [schedule.schedule(e, None) for e in (0, 2)] == pytest.approx([2e-3, 1e-3])

    case_study = ablation.variant_named("case study's optimiser")
    rmsprop = case_study.make_optimizer(2e-3, 1e-4)
    assert isinstance(rmsprop, keras.optimizers.RMSprop)
    assert float(rmsprop.learning_rate) == pytest.approx(1e-4)
    assert case_study.callbacks(2e-3, 4) == []  # a constant rate
    # AdamW at a constant rate (no book row uses it now; the option stays in Variant).
    constant = ablation.Variant("constant", "AdamW, no decay", optimizer="adamw-constant")
    assert isinstance(constant.make_optimizer(2e-3, 1e-4), keras.optimizers.AdamW)
    assert constant.callbacks(2e-3, 4) == []
    assert ablation.variant_named("no class weights").class_weights is False
    assert ablation.variant_named("pixels / 255").network_options()["standardize"] is False
    assert ablation.Variant("half", "16-128 filters", width=16).network_options()["width"] == 16
    assert ablation.variant_named("no augmentation").network_options()["augment"] == "none"
    with pytest.raises(ValueError, match="optimizer must be"):
        ablation.Variant("x", "y", optimizer="sgd").make_optimizer(2e-3, 1e-4)


def test_compile_network_compiles_a_logit_network_with_the_variants_optimiser():
    import keras
    from chapter_models import make_model_function

    model = make_model_function("model_6")((32, 32, 1), width=4)
    ablation.compile_network(
        model,
        ablation.variant_named("case study's optimiser"),
        learning_rate=2e-3,
        weight_decay=1e-4,
    )
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    assert model.loss.get_config()["from_logits"] is True
    (accuracy,) = [
        m
        for m in model._compile_metrics._user_metrics
        if isinstance(m, keras.metrics.BinaryAccuracy)
    ]
    assert accuracy.threshold == 0.0  # logits are cut at 0, a probability of 0.5


def test_only_single_networks_at_the_chapters_size_can_be_adopted():
    adoptable = {v.name for v in ablation.VARIANTS if not v.not_adoptable}
    assert adoptable == {v.name for v in ablation.VARIANTS} - {
        "test-time augmentation",
        "ensemble of 3 seeds",
    }
    # Another image size is never adopted either (the book measures none: time budget).
    larger = ablation.Variant("1.5x resolution", "larger images", image_scale=1.5)
    assert larger.not_adoptable
    # The TTA and ensemble rows reuse the recipe's network instead of training it again.
    recipe = ablation.VARIANTS[0].training_key()
    assert ablation.variant_named("test-time augmentation").training_key() == recipe
    assert ablation.variant_named("ensemble of 3 seeds").training_key() == recipe


def test_a_variant_with_an_impossible_ensemble_or_scale_is_refused_when_built():
    with pytest.raises(ValueError, match="x: seeds must be an integer >= 1, got 0"):
        ablation.Variant("x", "y", seeds=0)
    with pytest.raises(ValueError, match="x: image_scale must be positive, got -1"):
        ablation.Variant("x", "y", image_scale=-1)


def rule_table(aucs, differences, p_values, *, adoptable=None, names=None) -> pd.DataFrame:
    """A made-up ablation table for the choice rule: the recipe first (difference 0, no p),
    each row's paired difference with a 95% interval of +-0.004 around it."""
    names = names or ["model_6", *(f"v{i}" for i in range(1, len(aucs)))]
    differences = np.asarray(differences, dtype=float)
    table = pd.DataFrame(
        {
            "val AUC": aucs,
            "AUC - first row": differences,
            "AUC - first row low": differences - 0.004,
            "AUC - first row high": differences + 0.004,
            "AUC - first row p": p_values,
        },
        index=names,
    )
    table.loc[names[0], ["AUC - first row low", "AUC - first row high"]] = 0.0
    if adoptable is not None:
        table["adoptable"] = adoptable
    return table


def test_the_rule_adopts_a_clear_winner_beyond_the_seed_spread_and_the_adjusted_interval():
    table = rule_table([0.95, 0.99, 0.96], [0.0, 0.04, 0.01], [np.nan, 0.001, 0.002])
    seeds = {42: 0.950, 43: 0.952, 44: 0.949}  # the recipe moves by 0.003 between seeds
    decision = ablation.decide(table, seed_aucs=seeds)
    assert decision.choice == "v1" and decision.adopted
    assert decision.beyond_noise == ("v1", "v2")  # both pass; the larger difference wins
    assert decision.seed_range == pytest.approx(0.003)
    assert decision.p_holm == pytest.approx(0.002)  # Holm over the 2 candidates: 2 x 0.001
    assert decision.candidates == 2
    said = decision.statement
    assert said.startswith("'v1' is adopted over the recipe")
    assert (
        "+0.0400" in said and "p = 0.002 after Holm's adjustment over the 2 adoptable rows" in said
    )
    assert "more than the 0.0030" in said and "seed 43: 0.9520" in said
    assert ablation.best_variant(table, seeds) == "v1"
    as_json = decision.as_dict()
    assert as_json["adopted"] is True and as_json["seed_aucs"] == {
        "42": 0.95,
        "43": 0.952,
        "44": 0.949,
    }
    assert as_json["statement"] == said and as_json["alpha"] == ablation.ALPHA
    json.dumps(as_json, allow_nan=False)  # plain JSON values


def test_a_lead_in_the_third_decimal_within_the_noise_keeps_the_recipe_and_says_so():
    # The fine-tuning search's situation: AUCs 0.9938-0.9968, the highest row wins by the
    # third decimal, but its difference is within the recipe's seed spread.
    table = rule_table(
        [0.9950, 0.9968, 0.9938, 0.9955], [0.0, 0.0018, -0.0012, 0.0005], [np.nan, 0.01, 0.2, 0.6]
    )
    seeds = {42: 0.9950, 43: 0.9931, 44: 0.9962}  # range 0.0031 > 0.0018
    decision = ablation.decide(table, seed_aucs=seeds)
    assert decision.choice == "model_6" and not decision.adopted and decision.beyond_noise == ()
    assert decision.contender == "v1" and decision.margin == pytest.approx(0.0018)
    said = decision.statement
    assert said.startswith("validation cannot tell the rows apart, so the recipe is kept")
    assert "'v1', +0.0018" in said and "p = 0.030 after Holm's adjustment over the 3" in said
    assert "significant once adjusted but not larger than the 0.0031" in said
    # Without the seed range it would have been adopted: the range decided.
    assert ablation.decide(table, seed_aucs={}).choice == "v1"
    # Beyond the seed range but not significant once adjusted: still the recipe.
    table.loc["v1", "AUC - first row p"] = 0.03  # Holm: 3 x 0.03 = 0.09
    decision = ablation.decide(table, seed_aucs={42: 0.995, 43: 0.9951})
    assert decision.choice == "model_6"
    assert "is larger than the 0.0001" in decision.statement
    assert "but not significant once adjusted" in decision.statement
    decision = ablation.decide(table, seed_aucs=seeds)
    assert "is neither significant once adjusted nor larger than the 0.0031" in decision.statement


def test_the_rule_never_adopts_a_row_that_can_not_be_adopted():
    table = rule_table(
        [0.990, 0.991, 0.999],
        [0.0, 0.001, 0.009],
        [np.nan, 0.4, 0.0001],
        adoptable=["yes", "yes", "five forward passes"],
        names=["model_6", "a", "tta"],
    )
    decision = ablation.decide(table, seed_aucs={1: 0.99, 2: 0.991})
    assert decision.choice == "model_6" and decision.contender == "a"
    assert decision.candidates == 1  # the Holm family: the adoptable rows only
    holm = ablation.holm_over_candidates(table, recipe="model_6")
    assert np.isnan(holm["model_6"]) and np.isnan(holm["tta"]) and holm["a"] == 0.4
    with pytest.raises(ValueError, match="no adoptable row"):
        ablation.best_variant(table.iloc[2:])
    with pytest.raises(ValueError, match="no adoptable row"):
        ablation.best_variant(table.iloc[:0])
    with pytest.raises(ValueError, match="the recipe 'nope' is not a row"):
        ablation.decide(table, recipe="nope")
    # Only the recipe can be adopted: kept, and said so.
    alone = ablation.decide(table.drop(index="a"))
    assert alone.choice == "model_6" and alone.contender is None
    assert alone.statement.startswith("no other adoptable row was measured")


def test_without_the_ensemble_row_the_paired_interval_alone_decides_and_says_so():
    table = rule_table([0.95, 0.99], [0.0, 0.04], [np.nan, 0.001])
    assert ablation.SEED_AUCS not in table.attrs  # a table without the ensemble row
    decision = ablation.decide(table)
    assert decision.choice == "v1" and np.isnan(decision.seed_range) and decision.seed_aucs == {}
    assert "seed spread was not measured (no ensemble row)" in decision.statement
    assert decision.as_dict()["seed_range"] is None
    # The seed AUCs run_ablation records in the table's attrs are read by default.
    table.attrs[ablation.SEED_AUCS] = {5: 0.9, 6: 0.96}  # range 0.06 > 0.04
    assert ablation.decide(table).choice == "model_6"
    # No row above the recipe at all: kept, the closest named.
    worse = rule_table([0.95, 0.94], [0.0, -0.01], [np.nan, 0.01])
    said = ablation.decide(worse).statement
    assert said.startswith("no adoptable row scored above the recipe on validation (AUC 0.9500)")
    assert "the closest, 'v1', -0.0100" in said


def test_shifted_moves_the_image_and_fills_the_border_with_zero():
    images = np.arange(1, 17, dtype=np.uint8).reshape(1, 4, 4, 1)
    down = ablation.shifted(images, 1, 0)[0, :, :, 0]
    assert down[0].tolist() == [0, 0, 0, 0] and down[1].tolist() == [1, 2, 3, 4]
    left = ablation.shifted(images, 0, -1)[0, :, :, 0]
    assert left[:, -1].tolist() == [0, 0, 0, 0] and left[0].tolist() == [2, 3, 4, 0]
    assert ablation.shifted(images, 0, 0).tolist() == images.tolist()
    assert not ablation.shifted(images, 5, 0).any()


def test_tta_logits_is_the_mean_over_the_image_and_four_shifted_copies():
    import keras

    inputs = keras.Input((8, 8, 1))
    # Logit = sum of the top-left 4 x 4 pixels: shifting changes it in a known way.
    crop = keras.layers.Cropping2D(((0, 4), (0, 4)))(inputs)
    outputs = keras.layers.Dense(1, name="logit")(keras.layers.Flatten()(crop))
    model = keras.Model(inputs, outputs)
    model.get_layer("logit").set_weights([np.ones((16, 1), "float32"), np.zeros(1, "float32")])
    images = np.random.default_rng(0).integers(0, 5, (3, 8, 8, 1)).astype("float32")
    d = 1  # round(0.04 * 8) is 0: at least one pixel
    expected = np.mean(
        [
            ablation.shifted(images, dy, dx)[:, :4, :4].sum(axis=(1, 2, 3))
            for dy, dx in ((0, 0), (d, 0), (-d, 0), (0, d), (0, -d))
        ],
        axis=0,
    )
    np.testing.assert_allclose(
        ablation.tta_logits(model, images, batch_size=2), expected, rtol=1e-6
    )


def test_validation_row_matches_the_metrics_module_with_person_level_intervals():
    from helpers import bootstrap, calibration, metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 200), 0.01, 0.99)
    persons = [f"{'person' if label else 'IM-'}{i // 2}" for i, label in enumerate(y)]
    row = ablation.validation_row(y, s, persons, target_sensitivity=0.9, seed=3)
    auc = bootstrap.person_bootstrap(y, s, persons, threshold=0.5, seed=3)["estimates"]["auc"]
    assert (row["val AUC"], row["val AUC low"], row["val AUC high"]) == (
        auc.value,
        auc.ci_low,
        auc.ci_high,
    )
    # Every image twice under its person's name: the interval is unchanged, not narrower.
    doubled = ablation.validation_row(
        np.repeat(y, 2), np.repeat(s, 2), np.repeat(persons, 2), target_sensitivity=0.9, seed=3
    )
    assert doubled["val AUC high"] - doubled["val AUC low"] == pytest.approx(
        row["val AUC high"] - row["val AUC low"], abs=0.02
    )
    assert row["val log loss"] == pytest.approx(calibration.log_loss(y, s))
    threshold = metrics.threshold_for_sensitivity(y, s, target=0.9)
    expected = metrics.rates_at_threshold(y, s, threshold=threshold)["specificity"].value
    assert row["val specificity at sensitivity 0.9"] == expected


def _loader(root, loaded=None):
    """An ablation ``load(color_mode, image_size)`` over the tiny folder, noting each call."""

    def load(color_mode, image_size):
        if loaded is not None:
            loaded.append((color_mode, image_size))
        return data.load_chest_xrays(root, image_size=image_size, color_mode=color_mode, seed=0)

    return load


#: Rows the book no longer runs (cut for its time budget), which the tests still exercise:
#: one that loads other images (RGB), one at another size.
OFF_BOOK = {
    variant.name: variant
    for variant in (
        ablation.Variant("RGB input", "three identical channels", color_mode="rgb"),
        ablation.Variant("1.5x resolution", "images 1.5 times larger", image_scale=1.5),
    )
}

#: The rows of the one ablation run the tests share: the recipe, a variant that loads other
#: images (RGB), one at another size, and the two rows that reuse the recipe's network.
SHARED_ROWS = (
    "model_6",
    "RGB input",
    "1.5x resolution",
    "test-time augmentation",
    "ensemble of 3 seeds",
)


@pytest.fixture(scope="module")
def ablation_run(xray_folder):
    """One run_ablation of :data:`SHARED_ROWS` (32 px, one epoch, seed 5), with what it
    scored, trained and loaded (training a network costs seconds, mostly tracing, so the
    tests below check one run instead of training the recipe's network once each)."""
    from helpers import train

    scored, trained_seeds, loaded = [], [], []
    real_predict, real_fit = evaluate.predict_split, train.fit

    def spy_predict(model, split, **kwargs):
        scored.append((split.name, len(split)))
        return real_predict(model, split, **kwargs)

    def counting_fit(model, xrays, **kwargs):
        trained_seeds.append((xrays.image_size, kwargs["seed"]))
        return real_fit(model, xrays, **kwargs)

    variants = tuple(OFF_BOOK.get(n) or ablation.variant_named(n) for n in SHARED_ROWS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate, "predict_split", spy_predict)
        patch.setattr(train, "fit", counting_fit)
        table = ablation.run_ablation(
            build_network,
            _loader(xray_folder.root, loaded),
            variants,
            image_size=32,
            epochs=1,
            batch_size=8,
            seed=5,
            target_sensitivity=0.95,
            **RECIPE,
        )
    return SimpleNamespace(table=table, scored=scored, trained_seeds=trained_seeds, loaded=loaded)


@pytest.mark.slow
def test_run_ablation_trains_every_variant_and_never_scores_the_test_split(
    ablation_run, xray_folder
):
    table = ablation_run.table
    assert list(table.index) == list(SHARED_ROWS)
    # One load per colour mode and size, in the order the rows need them.
    assert ablation_run.loaded == [("grayscale", 32), ("rgb", 32), ("grayscale", 48)]
    assert {name for name, _ in ablation_run.scored} == {
        "val"
    }  # only validation images were scored
    assert table["val AUC"].between(0, 1).all() and (table["training s"] > 0).all()
    assert (table["val AUC low"] <= table["val AUC"]).all()
    # Each row against the first, paired on the same images: the first row's difference is 0.
    assert tuple(
        table.iloc[0][["AUC - first row", "AUC - first row low", "AUC - first row high"]]
    ) == (0, 0, 0)
    np.testing.assert_allclose(
        table["AUC - first row"], table["val AUC"] - table["val AUC"].iloc[0], atol=1e-12
    )
    assert (table["AUC - first row low"] <= table["AUC - first row"]).all()
    assert (table["AUC - first row"] <= table["AUC - first row high"]).all()
    # Holm over the adoptable rows compared with the first (here only RGB input): NaN for
    # the first row and for the rows measured but never chosen.
    assert table["adoptable"].tolist()[:2] == ["yes", "yes"]
    holm = table["AUC - first row p (Holm)"]
    assert holm.drop(index="RGB input").isna().all()
    assert (
        holm["RGB input"] == bootstrap.holm_adjust([table.loc["RGB input", "AUC - first row p"]])[0]
    )
    load = _loader(xray_folder.root)
    variants = (ablation.VARIANTS[0], OFF_BOOK["RGB input"])
    with pytest.raises(ValueError, match="unique"):
        ablation.run_ablation(
            build_network,
            load,
            (variants[0], variants[0]),
            image_size=32,
            epochs=1,
            seed=5,
            target_sensitivity=0.95,
            **RECIPE,
        )
    with pytest.raises(ValueError, match="at least 1"):
        ablation.run_ablation(
            build_network,
            load,
            variants,
            image_size=32,
            epochs=0,
            seed=5,
            target_sensitivity=0.95,
            **RECIPE,
        )


@pytest.mark.slow
def test_run_ablation_measures_resolution_tta_and_ensembles_reusing_the_recipe(ablation_run):
    table = ablation_run.table
    # The recipe's network (seed 5) serves TTA and the ensemble; RGB and 1.5x train their own.
    assert ablation_run.trained_seeds == [(32, 5), (32, 5), (48, 5), (32, 6), (32, 7)]
    assert table.loc["test-time augmentation", "training s"] == table.loc["model_6", "training s"]
    assert table.loc["ensemble of 3 seeds", "training s"] > table.loc["model_6", "training s"]
    assert (table["adoptable"] == "yes").tolist() == [True, True, False, False, False]
    assert table["val AUC"].between(0, 1).all()
    # Against the rows that can not be adopted, the recipe is kept whatever their AUC.
    assert ablation.best_variant(table.drop(index="RGB input")) == "model_6"
    # The recipe's seed spread: each ensemble network alone, on the same selection half;
    # seed 5's network is the recipe row's own.
    seed_aucs = table.attrs[ablation.SEED_AUCS]
    assert list(seed_aucs) == [5, 6, 7]
    assert seed_aucs[5] == pytest.approx(table.loc["model_6", "val AUC"], abs=1e-6)
    decision = ablation.decide(table)
    assert decision.seed_range == pytest.approx(max(seed_aucs.values()) - min(seed_aucs.values()))


@pytest.mark.slow
def test_run_ablation_is_repeatable_with_the_same_seed(ablation_run, xray_folder):
    """The recipe's row again, alone, in this process after other networks were trained:
    the same seed gives the same augmentation draws, weights and validation scores."""
    again = ablation.run_ablation(
        build_network,
        _loader(xray_folder.root),
        (ablation.VARIANTS[0],),
        image_size=32,
        epochs=1,
        batch_size=8,
        seed=5,
        target_sensitivity=0.95,
        **RECIPE,
    )
    first = ablation_run.table.loc["model_6"]
    assert again.loc["model_6", "val AUC"] == first["val AUC"]
    assert again.loc["model_6", "val log loss"] == pytest.approx(first["val log loss"], abs=1e-6)


# ---------------------------------------------------------------------------------------
# The chapter's budget and prose (moved here from helpers.chapter)
# ---------------------------------------------------------------------------------------


def test_ablation_budget_never_exceeds_the_final_model():
    params = {"image_size": 128, "epochs": 12, "ablation_image_size": 64, "ablation_epochs": 3}
    assert ablation.ablation_budget(params) == {"image_size": 64, "epochs": 3}
    params.update(image_size=32, epochs=1)
    assert ablation.ablation_budget(params) == {"image_size": 32, "epochs": 1}


def test_displayed_table_puts_each_interval_in_one_column():
    table = pd.DataFrame(
        {
            "change": ["x", "y"],
            "val AUC": [0.95, 0.99],
            "val AUC low": [0.94, 0.985],
            "val AUC high": [0.96, 0.995],
            "AUC - first row": [0.0, 0.04],
            "AUC - first row low": [0.0, 0.03],
            "AUC - first row high": [0.0, 0.05],
        },
        index=["model_6", "no augmentation"],
    )
    shown = report.with_interval_column(table, position=1)
    assert list(shown.columns) == ["change", "val AUC (95% CI)", "AUC - first row (95% CI)"]
    assert (
        shown.loc["no augmentation", "AUC - first row (95% CI)"] == "+0.0400 (+0.0300 to +0.0500)"
    )
    assert shown.loc["model_6", "val AUC (95% CI)"] == "0.9500 (0.9400 to 0.9600)"


def test_displayed_table_splits_what_the_rule_reads_from_the_rest():
    shown = pd.DataFrame(
        {
            "change": ["x", "y"],
            "val AUC (95% CI)": ["0.9500 (0.9400 to 0.9600)", "0.9900 (0.9850 to 0.9950)"],
            "val Brier": [0.05, 0.04],
            "AUC - first row (95% CI)": [
                "+0.0000 (+0.0000 to +0.0000)",
                "+0.0400 (+0.03 to +0.05)",
            ],
            "AUC - first row p (Holm)": [float("nan"), 0.01],
            "training s": [3.0, 4.0],
            "adoptable": ["yes", "yes"],
        },
        index=["model_6", "no augmentation"],
    )
    choice, details = report.choice_and_details(shown)
    assert list(choice.columns) == [
        "val AUC (95% CI)",
        "AUC - first row (95% CI)",
        "AUC - first row p (Holm)",
        "adoptable",
    ]
    assert list(details.columns) == ["change", "val Brier", "training s"]
    assert list(choice.index) == list(details.index) == ["model_6", "no augmentation"]


def test_not_adopted_text_gives_each_measured_only_row_against_the_recipe():
    table = pd.DataFrame(
        {"val AUC": [0.95, 0.96, 0.9725], "adoptable": ["yes", "yes", "five forward passes"]},
        index=["model_6", "no augmentation", "test-time augmentation"],
    )
    assert (
        report.not_adopted_text(table)
        == "test-time augmentation: 0.9725 (+0.0225 against the recipe)"
    )
    assert report.not_adopted_text(table.iloc[:2]) == "every row could be adopted"


def test_chapter_steps_without_ablation_epochs_keep_the_recipe_and_say_so(monkeypatch, tmp_path):
    shown, glued = [], []
    monkeypatch.setattr(report, "show_warning", shown.append)
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display: glued.append(name))
    params = {
        "image_size": 32,
        "epochs": 1,
        "ablation_image_size": 32,
        "ablation_epochs": 0,
        "results_dir": str(tmp_path),
        "data_dir": None,
        "seed": 0,
        "batch_size": 8,
    }
    result = ablation.choose_on_validation(build_network, params, **RECIPE)
    assert ablation.write_ablation(result, params["results_dir"]) is None
    report.show_ablation(result)
    report.glue_ablation(result)
    table, choice = result.table, result.choice
    assert table.empty and choice == ablation.VARIANTS[0] and not result.ran
    assert len(shown) == 1 and "no ablation ran" in shown[0]
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert glued == []  # nothing to glue: the prose's ablation keys come only from a run


def test_chapter_steps_compute_write_show_and_glue_one_ablation(monkeypatch, tmp_path):
    table = pd.DataFrame(
        {
            "change": ["the recipe", "RGB"],
            "adoptable": ["yes", "yes"],
            "val AUC": [0.95, 0.99],
            "val AUC low": [0.94, 0.985],
            "val AUC high": [0.96, 0.995],
            "AUC - first row": [0.0, 0.04],
            "AUC - first row low": [0.0, 0.03],
            "AUC - first row high": [0.0, 0.05],
            "AUC - first row p": [np.nan, 0.001],
            "AUC - first row p (Holm)": [np.nan, 0.001],
        },
        index=["model_6", "no augmentation"],
    )
    table.attrs[ablation.SEED_AUCS] = {5: 0.95, 6: 0.953, 7: 0.947}
    calls = []

    def fake_run_ablation(build, load, **budget):
        calls.append(budget)
        return table

    monkeypatch.setattr(ablation, "run_ablation", fake_run_ablation)
    params = {
        "image_size": 32,
        "epochs": 2,
        "ablation_image_size": 64,
        "ablation_epochs": 3,
        "data_dir": None,
        "seed": 5,
        "batch_size": 8,
        "target_sensitivity": 0.95,
    }
    result = ablation.choose_on_validation(build_network, params, **RECIPE)
    assert calls[0]["image_size"] == 32 and calls[0]["epochs"] == 2  # never above the model's
    assert result.ran and result.choice.name == "no augmentation"

    folder = ablation.write_ablation(result, tmp_path)
    assert folder == tmp_path / "model_6_ablation"
    written = json.loads((folder / "choice.json").read_text())
    decision = written.pop("decision")
    assert written == {"choice": "no augmentation", "image_size": 32, "epochs": 2, "seed": 5}
    assert decision == result.decision.as_dict()
    assert decision["adopted"] and decision["seed_range"] == pytest.approx(0.006)
    assert decision["rule"] == ablation.RULE and decision["p_holm"] == 0.001
    assert pd.read_csv(folder / "ablation.csv", index_col=0).index.tolist() == list(table.index)
    seeds = pd.read_csv(folder / "recipe_seeds.csv", index_col="seed")
    assert seeds["val AUC"].to_dict() == {5: 0.95, 6: 0.953, 7: 0.947}

    displayed, glued = [], {}
    monkeypatch.setattr("IPython.display.display", displayed.append)
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display: glued.update({name: value}))
    report.show_ablation(result)
    # What the rule reads, then the rest: two tables that fit the page.
    assert len(displayed) == 2
    assert list(displayed[0].columns[:2]) == ["val AUC (95% CI)", "AUC - first row (95% CI)"]
    assert displayed[1].columns[0] == "change"
    report.glue_ablation(result)
    assert glued["model_6_ablation_choice"] == "no augmentation"
    assert glued["model_6_ablation_variants"] == 2
    assert glued["model_6_ablation_image_size"] == 32 and glued["model_6_ablation_epochs"] == 2
    assert glued["model_6_ablation_verdict"] == result.decision.statement
    assert glued["model_6_ablation_verdict"].startswith(
        "'no augmentation' is adopted over the recipe"
    )
    assert glued["model_6_ablation_not_adopted"] == "every row could be adopted"
