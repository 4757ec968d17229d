"""Tests of helpers.replicates (a recipe's runs over seeds: layout, spread, verdicts with
training noise) and of helpers.bootstrap.seed_person_bootstrap, on small synthetic runs.

Synthetic runs: 150 NORMAL and 150 PNEUMONIA test images of 300 persons; a run's scores
are ``0.5 + separation * (label - 0.5)`` plus its own Gaussian noise (sd 0.25), so that
``separation`` sets its AUC (0.35 gives about 0.84, 0.15 about 0.66).
"""

from __future__ import annotations

import json
import re
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest

from helpers import bootstrap, replicates
from helpers.metrics import MetricError

N_PER_CLASS = 150
PATHS = [f"test/NORMAL/IM-{i:04d}-0001.jpeg" for i in range(N_PER_CLASS)] + [
    f"test/PNEUMONIA/person{i}_bacteria_{i}.jpeg" for i in range(N_PER_CLASS)
]
LABELS = np.array([0] * N_PER_CLASS + [1] * N_PER_CLASS)
PERSONS = [p.split("/")[-1].rsplit("-0001", 1)[0].split("_")[0] for p in PATHS]


def _scores(separation: float, noise_seed: int) -> np.ndarray:
    rng = np.random.default_rng(noise_seed)
    return np.clip(0.5 + separation * (LABELS - 0.5) + rng.normal(0, 0.25, LABELS.size), 0, 1)


def _run(model_id: str, seed: int, separation: float, **metrics) -> replicates.SeedRun:
    frame = pd.DataFrame(
        {
            "path": PATHS,
            "label": LABELS,
            "score": _scores(separation, zlib.crc32(f"{model_id} {seed}".encode())),
        }
    )
    payload = {
        # As helpers.results writes them: the seed also draws the split.
        "parameters": {"seed": seed, "split_seed": seed, "epochs": 10},
        "threshold": {"threshold": 0.5},
        "test": metrics,
    }
    return replicates.SeedRun(model_id, seed, payload, frame)


def _recipe(model_id: str, separations) -> list[replicates.SeedRun]:
    return [_run(model_id, 42 + k, s) for k, s in enumerate(separations)]


# ---------------------------------------------------------------------------------------
# The seed rule and the layout
# ---------------------------------------------------------------------------------------


def test_replicate_seeds_follow_the_chapters_seed_and_more_replicates_keep_the_first():
    assert replicates.replicate_seeds(42, 3) == [43, 44, 45]
    assert replicates.replicate_seeds(42, 5)[:3] == replicates.replicate_seeds(42, 3)
    assert replicates.replicate_seeds(0, 0) == []
    assert 42 not in replicates.replicate_seeds(42, 10)


@pytest.mark.parametrize("seed, count", [(-1, 2), (42, -1), (42, 2.0), (True, 2), (42, "2")])
def test_replicate_seeds_refuse_what_is_not_a_whole_number(seed, count):
    with pytest.raises(ValueError, match="must be a whole number >= 0"):
        replicates.replicate_seeds(seed, count)


def test_the_default_book_trains_three_seeds_of_each_cheap_recipe():
    assert replicates.REPLICATED_CHAPTERS == ("model_1", "model_2", "model_3", "model_5")
    assert replicates.DEFAULT_REPLICATES == 2  # the chapter's own seed and two more


def _write_run(folder, seed: int, separation: float, epochs: int = 10) -> None:
    folder.mkdir(parents=True)
    run = _run("model_1", seed, separation, auc=0.9, sensitivity=0.95, specificity=0.7)
    run.metrics["parameters"]["epochs"] = epochs
    (folder / "metrics.json").write_text(json.dumps(run.metrics))
    run.predictions.to_csv(folder / "predictions_test.csv", index=False)


def test_read_seed_runs_gives_the_chapters_run_first_then_its_replicates_by_seed(tmp_path):
    _write_run(tmp_path / "model_1", 42, 0.3)
    for seed in (44, 43):
        _write_run(replicates.replicate_results_dir(tmp_path, seed) / "model_1", seed, 0.3)
    _write_run(replicates.replicate_results_dir(tmp_path, 44) / "model_2", 44, 0.3)
    runs = replicates.read_seed_runs(tmp_path, "model_1")
    assert [r.seed for r in runs] == [42, 43, 44]
    assert runs[0].folder == tmp_path / "model_1"
    assert runs[1].folder == tmp_path / "replicates" / "seed_43" / "model_1"
    assert runs[1].threshold == 0.5 and runs[1].name == "model_1 (seed 43)"


def test_a_replicate_of_another_recipe_is_left_out_with_a_warning(tmp_path):
    _write_run(tmp_path / "model_1", 42, 0.3)
    _write_run(replicates.replicate_results_dir(tmp_path, 43) / "model_1", 43, 0.3)
    _write_run(replicates.replicate_results_dir(tmp_path, 44) / "model_1", 44, 0.3, epochs=1)
    with pytest.warns(
        UserWarning, match=r"seed_44/model_1 \(trained with other parameters"
    ) as seen:
        runs = replicates.read_seed_runs(tmp_path, "model_1")
    assert [r.seed for r in runs] == [42, 43]
    # A helpers warning: a chapter shows it on its page (helpers.report.start_chapter).
    assert seen[0].category is replicates.ReplicateLeftOut
    assert seen[0].category.__module__ == "helpers.replicates"


def test_a_replicate_folder_whose_seed_disagrees_with_its_name_is_refused(tmp_path):
    _write_run(tmp_path / "model_1", 42, 0.3)
    _write_run(replicates.replicate_results_dir(tmp_path, 43) / "model_1", 47, 0.3)
    with pytest.raises(ValueError, match=r"records seed 47, but its folder is seed_43"):
        replicates.read_seed_runs(tmp_path, "model_1")


def test_reading_the_runs_of_a_chapter_that_never_ran_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model_3/metrics.json does not exist"):
        replicates.read_seed_runs(tmp_path, "model_3")


# ---------------------------------------------------------------------------------------
# The spread over seeds
# ---------------------------------------------------------------------------------------


def _metrics(auc: float, sensitivity: float, specificity: float) -> dict:
    out = {}
    for name, value in (("auc", auc), ("sensitivity", sensitivity), ("specificity", specificity)):
        out |= {name: value, f"{name}_ci_low": value - 0.05, f"{name}_ci_high": value + 0.05}
    return out


def test_seed_spread_gives_min_max_mean_sd_beside_the_first_runs_interval():
    runs = [
        _run("model_1", 42, 0.3, **_metrics(0.92, 0.95, 0.70)),
        _run("model_1", 43, 0.3, **_metrics(0.90, 0.96, 0.78)),
        _run("model_1", 44, 0.3, **_metrics(0.94, 0.94, 0.69)),
    ]
    table = replicates.seed_table(runs)
    assert list(table.index) == [42, 43, 44]
    assert table.loc[43, "specificity"] == 0.78 and table.loc[44, "threshold"] == 0.5
    spread = replicates.seed_spread(runs)
    assert list(spread.index) == ["auc", "sensitivity", "specificity"]
    auc = spread.loc["auc"]
    assert auc["seeds"] == 3 and auc["min"] == 0.90 and auc["max"] == 0.94
    assert auc["mean"] == pytest.approx(0.92) and auc["sd"] == pytest.approx(0.02)
    assert (auc["one run"], auc["one run ci_low"], auc["one run ci_high"]) == pytest.approx(
        (0.92, 0.87, 0.97)
    )
    assert spread.loc["specificity", "max"] - spread.loc["specificity", "min"] == pytest.approx(
        0.09
    )


def test_seed_spread_needs_two_runs_with_different_seeds():
    one = _run("model_1", 42, 0.3, **_metrics(0.9, 0.9, 0.9))
    with pytest.raises(ValueError, match=r"at least 2 runs, got 1 .*--replicates K"):
        replicates.seed_spread([one])
    with pytest.raises(ValueError, match=r"seeds must differ, got \[42, 42\]"):
        replicates.seed_spread([one, one])


# ---------------------------------------------------------------------------------------
# The nested bootstrap and the verdicts
# ---------------------------------------------------------------------------------------


def test_seed_person_bootstrap_of_repeated_runs_is_the_paired_person_bootstrap():
    a, b = _scores(0.35, 1), _scores(0.15, 2)
    nested = bootstrap.seed_person_bootstrap(
        LABELS, [a, a], [b, b], PERSONS, thresholds_a=[0.5, 0.5], thresholds_b=[0.5, 0.5]
    )
    paired = bootstrap.paired_person_bootstrap(
        LABELS, a, b, PERSONS, threshold_a=0.5, threshold_b=0.5
    )
    for name in bootstrap.PAIRED_METRICS:
        assert nested["differences"][name]["difference"] == pytest.approx(
            paired["differences"][name]["difference"]
        )
    assert nested["n_seeds"] == {"a": 2, "b": 2}
    assert "seeds drawn with replacement (2 and 2 seeds)" in nested["method"]


def test_seed_person_bootstrap_refuses_one_seed_and_a_wrong_threshold_count():
    s = _scores(0.3, 1)
    with pytest.raises(MetricError, match=r"at least 2 seeds .* got 1"):
        bootstrap.seed_person_bootstrap(
            LABELS, [s], [s, s], PERSONS, thresholds_a=[0.5], thresholds_b=[0.5, 0.5]
        )
    with pytest.raises(MetricError, match=r"thresholds_b must give one threshold per seed \(2\)"):
        bootstrap.seed_person_bootstrap(
            LABELS, [s, s], [s, s], PERSONS, thresholds_a=[0.5, 0.5], thresholds_b=[0.5]
        )


def test_a_one_seed_difference_the_seeds_overlap_on_is_not_supported_by_the_replicates():
    # The chapters' own runs: A strong, B weak. Over seeds the two recipes are alike.
    runs_a = _recipe("model_2", [0.35, 0.15, 0.25])
    runs_b = _recipe("model_1", [0.15, 0.35, 0.25])
    result = replicates.compare_recipes(runs_a, runs_b, persons=PERSONS)
    assert result["one_seed"]["kind"] == "improves", result["one_seed"]
    assert result["replicates"]["kind"] == "cannot tell", result["replicates"]
    assert result["supported"] is False
    assert result["seeds"] == {"a": [42, 43, 44], "b": [42, 43, 44]}
    assert re.match(
        r"auc: one seed supports 'model_2 improves on model_1 \(.*\)'; the replicates "
        r"\(3 seeds of model_2 and 3 of model_1\) do not: with training noise counted, "
        r"these data cannot tell \(difference between -0\.\d+ and 0\.\d+\)",
        result["statement"],
    ), result["statement"]
    single, nested = result["one_seed"]["difference"], result["replicates"]["difference"]
    assert nested.ci_high - nested.ci_low > single.ci_high - single.ci_low


def test_a_large_real_difference_survives_training_noise():
    runs_a = _recipe("model_4", [0.50, 0.45, 0.55])
    runs_b = _recipe("model_1", [0.05, 0.10, 0.08])
    result = replicates.compare_recipes(runs_a, runs_b, persons=PERSONS)
    assert result["one_seed"]["kind"] == result["replicates"]["kind"] == "improves"
    assert result["supported"] is True
    assert result["statement"].startswith(
        "auc: one seed and 3 seeds of model_4 and 3 of model_1 agree: model_4 improves on model_1"
    )
    assert result["replicates"]["difference"].ci_low > 0


def test_the_rates_are_judged_at_each_runs_own_threshold():
    runs_a = _recipe("model_4", [0.50, 0.45, 0.55])
    runs_b = _recipe("model_1", [0.50, 0.45, 0.55])
    # B's runs call everything PNEUMONIA: sensitivity 1, specificity 0.
    runs_b = [
        replicates.SeedRun(
            r.model_id, r.seed, {**r.metrics, "threshold": {"threshold": 0.0}}, r.predictions
        )
        for r in runs_b
    ]
    result = replicates.compare_recipes(runs_a, runs_b, metric="specificity", persons=PERSONS)
    assert result["replicates"]["kind"] == "improves"
    assert result["statement"].startswith("specificity: ")


def test_compare_recipes_refuses_one_run_another_metric_and_other_images():
    runs = _recipe("model_1", [0.3, 0.3])
    with pytest.raises(ValueError, match=r"recipe a has 1 run\(s\)"):
        replicates.compare_recipes(runs[:1], runs, persons=PERSONS)
    with pytest.raises(ValueError, match=r"metric must be one of"):
        replicates.compare_recipes(runs, runs, metric="ppv", persons=PERSONS)
    shuffled = runs[1].predictions.iloc[::-1].reset_index(drop=True)
    other = [runs[0], replicates.SeedRun("model_1", 43, runs[1].metrics, shuffled)]
    with pytest.raises(ValueError, match=r"model_1 \(seed 43\)'s test predictions are not on"):
        replicates.compare_recipes(runs, other, persons=PERSONS)
    with pytest.raises(ValueError, match=r"persons has 3 entries for \d+ test images"):
        replicates.compare_recipes(runs, runs, persons=PERSONS[:3])


def test_the_persons_given_are_the_unit_not_the_file_names():
    # DICOM files' names hide the person: the same runs judged with every image its own
    # person (file names) and with the true persons give other intervals.
    runs_a = _recipe("model_2", [0.35, 0.15, 0.25])
    runs_b = _recipe("model_1", [0.15, 0.35, 0.25])
    six_images_each = [f"patient-{i // 6}" for i in range(len(PATHS))]
    true = replicates.compare_recipes(runs_a, runs_b, persons=six_images_each)
    per_image = replicates.compare_recipes(runs_a, runs_b, persons=PERSONS)
    assert len(set(PERSONS)) == len(PATHS)  # the file names: every image its own person
    a, b = true["replicates"]["difference"], per_image["replicates"]["difference"]
    assert (a.ci_low, a.ci_high) != (b.ci_low, b.ci_high)


def test_the_default_resampling_seed_is_the_bootstraps():
    import inspect

    default = inspect.signature(replicates.compare_recipes).parameters["seed"].default
    assert default == bootstrap.DEFAULT_SEED


def test_no_warning_when_every_replicate_belongs_to_the_recipe(tmp_path):
    _write_run(tmp_path / "model_1", 42, 0.3)
    _write_run(replicates.replicate_results_dir(tmp_path, 43) / "model_1", 43, 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(replicates.read_seed_runs(tmp_path, "model_1")) == 2


# ---------------------------------------------------------------------------------------
# Choosing a variant against the noise of choosing
# ---------------------------------------------------------------------------------------


def _seeds_table(rows: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, index=[42, 43, 44]).T


def test_on_a_saturated_validation_set_the_highest_third_decimal_does_not_win():
    # Six rows within 0.9938-0.9968 whose order changes from seed to seed.
    table = _seeds_table(
        {
            "recipe": [0.9950, 0.9962, 0.9941],
            "lr 1e-5": [0.9968, 0.9944, 0.9950],
            "lr 3e-5": [0.9955, 0.9958, 0.9939],
            "top 20": [0.9938, 0.9966, 0.9952],
            "top 40": [0.9961, 0.9949, 0.9945],
            "top 60": [0.9944, 0.9953, 0.9960],
        }
    )
    assert table[42].idxmax() == "lr 1e-5"  # one seed would adopt it
    result = replicates.choose_beyond_noise(table, recipe="recipe")
    assert result["choice"] == "recipe" and result["adopted"] is False
    assert not result["margins"]["beats recipe"].any()
    assert result["statement"].startswith("validation cannot tell the rows from recipe: ")
    assert "over 3 seeds (99.0% each, 5 candidates); recipe is kept" in result["statement"]


def test_a_variant_that_beats_the_recipe_on_every_seed_by_more_than_the_noise_is_adopted():
    table = _seeds_table(
        {
            "recipe": [0.950, 0.955, 0.948],
            "wider": [0.951, 0.954, 0.949],
            "augment": [0.975, 0.979, 0.972],
        }
    )
    result = replicates.choose_beyond_noise(table, recipe="recipe")
    assert result["choice"] == "augment" and result["adopted"] is True
    margins = result["margins"]
    assert margins.loc["augment", "mean margin"] == pytest.approx(0.0243333, abs=1e-6)
    assert margins.loc["augment", "low"] > 0 and not margins.loc["wider", "beats recipe"]
    assert result["statement"].startswith("augment beats recipe by more than the noise of choosing")


def test_more_candidates_ask_for_a_larger_margin():
    one = _seeds_table({"recipe": [0.0, 0.0, 0.0], "variant": [0.010, 0.012, 0.014]})
    assert replicates.choose_beyond_noise(one, recipe="recipe")["choice"] == "variant"
    many = _seeds_table(
        {
            "recipe": [0.0, 0.0, 0.0],
            "variant": [0.010, 0.012, 0.014],
            **{f"other {i}": [0.001 * i, -0.001 * i, 0.0] for i in range(1, 6)},
        }
    )
    result = replicates.choose_beyond_noise(many, recipe="recipe")
    assert result["choice"] == "recipe"
    assert result["level"] == pytest.approx(1 - 0.05 / 6)


def test_log_loss_decides_with_lower_is_better_and_rows_that_cannot_be_adopted_are_skipped():
    log_loss = _seeds_table(
        {
            "recipe": [0.120, 0.125, 0.118],
            "class weights": [0.090, 0.094, 0.088],
            "ensemble": [0.060, 0.062, 0.058],
        }
    )
    result = replicates.choose_beyond_noise(
        log_loss, recipe="recipe", candidates=["class weights"], higher_is_better=False
    )
    assert result["choice"] == "class weights"
    assert list(result["margins"].index) == ["class weights"]
    assert result["margins"].loc["class weights", "mean margin"] > 0  # positive is better
    as_if_higher = replicates.choose_beyond_noise(log_loss, recipe="recipe")
    assert as_if_higher["choice"] == "recipe"


@pytest.mark.parametrize(
    "table, options, message",
    [
        (pd.DataFrame({42: [0.9, 0.95]}, index=["recipe", "b"]), {}, r"at least 2 seeds"),
        (_seeds_table({"a": [0.9] * 3, "b": [0.9] * 3}), {}, r"the recipe 'recipe' is not a row"),
        (
            _seeds_table({"recipe": [0.9] * 3, "b": [0.9] * 3}),
            {"candidates": ["c"]},
            r"candidates \['c'\] are not rows",
        ),
        (_seeds_table({"recipe": [0.9] * 3}), {}, r"no candidate"),
        (
            _seeds_table({"recipe": [0.9] * 3, "b": [0.9, np.nan, 0.9]}),
            {},
            r"a score is missing \(NaN\)",
        ),
        (
            _seeds_table({"recipe": [0.9] * 3, "b": [0.9] * 3}),
            {"confidence": 1.0},
            r"confidence must lie strictly between 0 and 1",
        ),
    ],
)
def test_choose_beyond_noise_refuses_what_it_cannot_judge(table, options, message):
    with pytest.raises(ValueError, match=message):
        replicates.choose_beyond_noise(table, **{"recipe": "recipe", **options})


def test_seeds_by_model_lists_each_recipes_seeds_and_the_choice_is_on_validation():
    def run(model_id, seed, val_auc, test_auc):
        r = _run(model_id, seed, 0.3, **_metrics(test_auc, 0.95, 0.7))
        return replicates.SeedRun(
            model_id, seed, {**r.metrics, "val": {"auc": val_auc}}, r.predictions
        )

    runs = {
        "model_1": [run("model_1", 42, 0.990, 0.80), run("model_1", 43, 0.970, 0.95)],
        "model_2": [run("model_2", 42, 0.985, 0.90), run("model_2", 43, 0.984, 0.85)],
    }
    table = replicates.seeds_by_model(runs)
    assert list(table.index) == [("model_1", 42), ("model_1", 43), ("model_2", 42), ("model_2", 43)]
    assert table.loc[("model_1", 43), "auc"] == 0.95
    # model_1's chapter run has the best validation AUC, model_2 the best mean over seeds.
    assert replicates.best_on_validation(runs) == "model_2"
    with pytest.raises(ValueError, match="at least one run"):
        replicates.best_on_validation({"model_1": []})
