"""Tests of helpers.finetune: unfreezing with BatchNormalization kept frozen, the validation
search (the test images never reach it), the frozen-feature probe, and combining runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("keras")

import keras

from helpers import bootstrap, evaluate, finetune, report, train

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def tiny_base(input_shape):
    """A frozen conv 'base' with batch normalisation, standing in for MobileNetV2."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    base = keras.Model(inputs, x, name="tiny_base")
    base.trainable = False
    return base


def make_parts(input_shape):
    head = keras.Sequential(
        [keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.2), keras.layers.Dense(1)],
        name="head",
    )
    return tiny_base(input_shape), head


def assemble(input_shape, base, head, *, augment=False):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.RandomRotation(0.03)(inputs) if augment else inputs
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = base(x, training=False)
    return keras.Model(inputs, head(x), name="model_7")


def test_unfreeze_top_keeps_batch_normalisation_frozen():
    base = tiny_base((16, 16, 3))
    names = finetune.unfreeze_top(base, 3)
    assert base.trainable
    assert names == ["conv2d_1"] or names[-1].startswith("conv2d")
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable
    assert all(not item.trainable for item in base.layers[:-3])
    assert finetune.unfreeze_top(base, 0) == [] and not base.trainable


@pytest.mark.parametrize("bad", [-1, 99, 1.5, True])
def test_unfreeze_top_refuses_impossible_counts(bad):
    with pytest.raises(ValueError, match="n_layers"):
        finetune.unfreeze_top(tiny_base((16, 16, 3)), bad)


@pytest.mark.slow
def test_search_scores_validation_only_and_picks_the_best(xray_folder):
    from helpers import data

    seen_sizes = []

    def load(size):
        seen_sizes.append(size)
        return data.load_chest_xrays(xray_folder.root, image_size=size, seed=0)

    configurations = (
        finetune.FineTuning("frozen", layers=0),
        finetune.FineTuning("top 3", layers=3),
        finetune.FineTuning("top 3, larger", layers=3, image_scale=1.5),
    )
    table = finetune.run_search(
        make_parts,
        assemble,
        load,
        configurations,
        image_size=16,
        head_epochs=1,
        fine_tune_epochs=1,
        batch_size=16,
        seed=0,
        target_sensitivity=0.95,
        recipe="top 3",
    )
    assert list(table.index) == ["frozen", "top 3", "top 3, larger"]
    assert seen_sizes == [16, 24]  # once per size
    assert table.loc["frozen", "fine-tuning s"] == 0
    assert table["val AUC"].between(0, 1).all()
    # Each row paired with the recipe on the same validation images (the larger input size
    # too): the difference is the AUCs' difference, inside its interval; the recipe's is 0.
    d = finetune.DIFFERENCE
    assert tuple(table.loc["top 3", [d, f"{d} low", f"{d} high"]]) == (0, 0, 0)
    assert table.loc["top 3", [f"{d} p", f"{d} p (Holm)"]].isna().all()
    np.testing.assert_allclose(
        table[d], table["val AUC"] - table.loc["top 3", "val AUC"], atol=1e-12
    )
    assert (table[f"{d} low"] <= table[d]).all() and (table[d] <= table[f"{d} high"]).all()
    others = table.drop(index="top 3")
    np.testing.assert_allclose(
        others[f"{d} p (Holm)"], bootstrap.holm_adjust(others[f"{d} p"].to_numpy())
    )
    decision = finetune.search_decision(table, recipe="top 3")
    assert finetune.best_configuration(table, recipe="top 3") == decision.choice
    assert decision.candidates == 2 and decision.recipe == "top 3"
    with pytest.raises(ValueError, match="no configuration"):
        finetune.configuration_named("nope")


def test_search_refuses_a_recipe_that_is_not_among_the_configurations():
    with pytest.raises(ValueError, match="the recipe 'top 24' is not one of the configurations"):
        finetune.run_search(
            make_parts,
            assemble,
            lambda size: None,
            (finetune.FineTuning("frozen", layers=0),),
            image_size=16,
            head_epochs=1,
            fine_tune_epochs=1,
            batch_size=16,
            seed=0,
            target_sensitivity=0.95,
            recipe="top 24",
        )


def search_table(differences, p_values) -> pd.DataFrame:
    """A made-up search table, the recipe (:data:`finetune.RECIPE`) second as in the chapter."""
    names = [c.name for c in finetune.CONFIGURATIONS]
    names = [*names, *(f"made-up row {i}" for i in range(len(differences) - len(names)))]
    names = names[: len(differences)]
    differences = np.asarray(differences, dtype=float)
    d = finetune.DIFFERENCE
    return pd.DataFrame(
        {
            "image size": [32] * len(names),
            "val AUC": 0.9950 + differences,
            "val AUC low": 0.99 + differences,
            "val AUC high": 0.999 + differences,
            d: differences,
            f"{d} low": differences - 0.002,
            f"{d} high": differences + 0.002,
            f"{d} p": p_values,
        },
        index=names,
    )


def test_search_rule_adopts_only_a_configuration_clear_of_the_recipe_after_holm():
    # The measured search's situation: AUCs within 0.003, the best row ahead by the third
    # decimal but not significant once adjusted over the five other rows.
    table = search_table(
        [-0.0012, 0.0, -0.0008, 0.0018, 0.0002, -0.0004], [0.3, np.nan, 0.4, 0.02, 0.8, 0.6]
    )
    decision = finetune.search_decision(table)
    assert decision.choice == finetune.RECIPE.name and decision.candidates == 5
    assert decision.contender == table.index[3]
    assert decision.p_holm == pytest.approx(0.1)  # 5 x 0.02
    assert decision.statement.startswith("validation cannot tell the configurations apart")
    assert "is not significant once adjusted" in decision.statement
    assert "seed" not in decision.statement  # the search has no seed spread, and says nothing of it
    # A clear lead is adopted; a non-positive one never.
    table.loc[table.index[3], f"{finetune.DIFFERENCE} p"] = 0.001
    assert finetune.best_configuration(table) == table.index[3]
    worse = search_table([-0.01, 0.0], [0.001, np.nan])
    assert finetune.best_configuration(worse) == finetune.RECIPE.name


CHAPTER_PARAMS = {
    "data_dir": None,
    "image_size": 32,
    "head_epochs": 2,
    "search_epochs": 0,
    "batch_size": 8,
    "seed": 4,
    "target_sensitivity": 0.95,
}


def test_chapter_steps_without_search_epochs_keep_the_recipe_and_say_so(monkeypatch, tmp_path):
    shown, glued = [], {}
    monkeypatch.setattr(report, "show_warning", shown.append)
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display: glued.update({name: value}))
    search = finetune.search_on_validation(make_parts, assemble, CHAPTER_PARAMS)
    assert not search.ran and search.table.empty
    assert search.choice == finetune.RECIPE and search.image_size == 32
    assert finetune.write_search(search, tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # nothing written
    report.show_search(search)
    assert len(shown) == 1 and "no validation search ran" in shown[0]
    assert finetune.RECIPE.name in shown[0]
    report.glue_search(search)
    assert glued == {
        "model_7_head_epochs": 2,
        "model_7_search_epochs": 0,
        "model_7_choice": finetune.RECIPE.name,
        "model_7_recipe": finetune.RECIPE.name,
        "model_7_verdict": "no validation search ran (search_epochs is 0), so the guide's "
        "recipe is trained as registered",
    }


def test_chapter_steps_compute_write_show_and_glue_one_search(monkeypatch, tmp_path):
    d = finetune.DIFFERENCE
    table = pd.DataFrame(
        {
            "layers": [24, 30],
            "image size": [32, 48],
            "val AUC": [0.90, 0.95],
            "val AUC low": [0.85, 0.92],
            "val AUC high": [0.94, 0.97],
            d: [0.0, 0.05],
            f"{d} low": [0.0, 0.03],
            f"{d} high": [0.0, 0.07],
            f"{d} p": [np.nan, 0.001],
            f"{d} p (Holm)": [np.nan, 0.001],
        },
        index=[finetune.RECIPE.name, finetune.CONFIGURATIONS[0].name],
    )
    monkeypatch.setattr(finetune, "run_search", lambda *args, **kwargs: table)
    search = finetune.search_on_validation(
        make_parts, assemble, {**CHAPTER_PARAMS, "search_epochs": 1}
    )
    assert search.ran and search.choice == finetune.CONFIGURATIONS[0]
    assert search.image_size == 48  # the chosen configuration's own size
    folder = finetune.write_search(search, tmp_path)
    assert folder == tmp_path / "model_7_search"
    written = json.loads((folder / "choice.json").read_text())
    decision = written.pop("decision")
    assert written == {
        "choice": finetune.CONFIGURATIONS[0].name,
        "head_epochs": 2,
        "search_epochs": 1,
        "seed": 4,
    }
    assert decision == search.decision.as_dict() and decision["adopted"]
    assert decision["recipe"] == finetune.RECIPE.name and decision["seed_range"] is None
    displayed, glued = [], {}
    monkeypatch.setattr("IPython.display.display", displayed.append)
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display: glued.update({name: value}))
    report.show_search(search)
    assert {"val AUC (95% CI)", "AUC - recipe (95% CI)"} <= set(displayed[0].columns)
    report.glue_search(search)
    assert glued["model_7_choice"] == finetune.CONFIGURATIONS[0].name
    assert glued["model_7_recipe"] == finetune.RECIPE.name
    assert glued["model_7_verdict"] == search.decision.statement
    assert glued["model_7_verdict"].startswith(
        f"'{finetune.CONFIGURATIONS[0].name}' is adopted over the recipe"
    )


def test_search_never_sees_the_test_images(xray_folder, monkeypatch):
    from helpers import data

    scored = []
    real = evaluate.predict_split
    monkeypatch.setattr(
        evaluate,
        "predict_split",
        lambda m, split, **k: scored.append(split.name) or real(m, split, **k),
    )
    finetune.run_search(
        make_parts,
        assemble,
        lambda s: data.load_chest_xrays(xray_folder.root, image_size=s, seed=0),
        (finetune.FineTuning("frozen", layers=0),),
        image_size=16,
        head_epochs=1,
        fine_tune_epochs=0,
        batch_size=16,
        seed=0,
        target_sensitivity=0.95,
        recipe="frozen",
    )
    assert scored == ["val"]


@pytest.mark.slow
def test_probe_and_combined_runs(xray_folder):
    from helpers import data

    xrays = data.load_chest_xrays(xray_folder.root, image_size=16, seed=0)
    train.set_seed(0)
    base, head = make_parts((16, 16, 3))
    model = assemble((16, 16, 3), base, head)
    finetune.compile_logit_model(model, 1e-3)
    first = train.fit(model, xrays, epochs=1, batch_size=16, seed=0, verbose=0)
    second = train.fit(model, xrays, epochs=2, batch_size=16, seed=0, verbose=0)
    both = train.combine_runs(first, second)
    assert list(both.history["epoch"]) == [1, 2, 3] and list(both.history["stage"]) == [1, 2, 2]
    assert both.training_seconds == pytest.approx(first.training_seconds + second.training_seconds)
    val = evaluate.score_validation(model, xrays, batch_size=16)
    threshold = evaluate.threshold_on_validation(val, target_sensitivity=0.95)
    evaluation = evaluate.summarise(
        "model_7", val, evaluate.score_test_once(model, xrays, threshold=threshold), threshold
    )
    probe = finetune.frozen_feature_probe(model, xrays, "model_7", target_sensitivity=0.95)
    assert probe.model_id == "model_7_logistic_probe"
    assert probe.metrics["probe"]["C"] in finetune.PROBE_C
    assert 0 <= probe.metrics["test"]["auc"] <= 1 and evaluation.metrics["test"]["n"] == len(
        xrays.test
    )
    with pytest.raises(ValueError, match="already scored"):  # the probe scores the test set once
        finetune.frozen_feature_probe(model, xrays, "model_7", target_sensitivity=0.95)
