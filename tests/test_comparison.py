"""Tests of helpers.comparison: the comparison chapter's tables, read from results folders.

The results are made by the evaluation code itself (``evaluate.summarise``) from scores
whose ranking is known: model_1 separates the test images perfectly, model_2 not at all,
and model_2 has the best *validation* AUC, so that choosing on test and choosing on
validation give different answers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import bootstrap, comparison, evaluate, metrics, replicates, results
from helpers.data import group_id
from helpers.report import interval_text

N_PER_CLASS = 20


def _paths(split: str) -> list[str]:
    normal = [f"{split}/NORMAL/IM-{i:04d}-0001.jpeg" for i in range(N_PER_CLASS)]
    pneumonia = [
        f"{split}/PNEUMONIA/person{i}_{'virus' if i % 2 else 'bacteria'}_{i}.jpeg"
        for i in range(N_PER_CLASS)
    ]
    return normal + pneumonia


LABELS = np.array([0] * N_PER_CLASS + [1] * N_PER_CLASS)
#: The person of each test image (here each file name is its own person).
PERSONS = [group_id(path) for path in _paths("test")]


def _scores(kind: str, rng: np.random.Generator) -> np.ndarray:
    noise = rng.uniform(0, 0.3, LABELS.size)
    if kind == "perfect":  # every PNEUMONIA image above every NORMAL one
        return np.where(LABELS == 1, 0.65, 0.05) + noise
    if kind == "good":
        return np.clip(0.5 + 0.4 * (LABELS - 0.5) + rng.normal(0, 0.2, LABELS.size), 0, 1)
    if kind == "chance":
        return rng.uniform(0, 1, LABELS.size)
    raise ValueError(kind)


#: (validation, test) score kinds: model_2 is best on validation, model_1 on test.
KINDS = {
    "model_1": ("good", "perfect"),
    "model_2": ("perfect", "chance"),
    "model_3": ("good", "good"),
    "model_4": ("good", "good"),
    "model_5": ("chance", "good"),
    "model_6": ("good", "perfect"),
}


@pytest.fixture(scope="module")
def evaluations():
    rng = np.random.default_rng(0)
    out = {}
    for model_id, (val_kind, test_kind) in KINDS.items():
        val = evaluate.Predictions("val", _paths("val"), LABELS.copy(), _scores(val_kind, rng))
        test = evaluate.Predictions("test", _paths("test"), LABELS.copy(), _scores(test_kind, rng))
        out[model_id] = evaluate.summarise(
            model_id, val, test, evaluate.threshold_on_validation(val, target_sensitivity=0.95)
        )
    return out


@pytest.fixture(scope="module")
def all_metrics(evaluations):
    return {
        model_id: {**e.metrics, "title": model_id, "training_seconds": 12.4, "base_weights": "none"}
        for model_id, e in evaluations.items()
    }


@pytest.fixture(scope="module")
def all_predictions(evaluations):
    return {model_id: e.test.to_frame() for model_id, e in evaluations.items()}


# ---------------------------------------------------------------------------------------
# Reading the results folders
# ---------------------------------------------------------------------------------------


def test_read_all_metrics_and_predictions_from_the_results_folders(
    tmp_path, all_metrics, all_predictions
):
    for model_id in ("model_1", "model_2"):
        with results.ResultsWriter(tmp_path, model_id) as writer:
            writer.write_json("metrics.json", all_metrics[model_id])
            writer.write_predictions("predictions_test.csv", all_predictions[model_id])
    read = comparison.read_all_metrics(tmp_path, ("model_1", "model_2"))
    assert list(read) == ["model_1", "model_2"]
    assert read["model_1"]["test"]["auc"] == pytest.approx(all_metrics["model_1"]["test"]["auc"])
    frames = comparison.read_all_predictions(tmp_path, ("model_1", "model_2"))
    pd.testing.assert_frame_equal(frames["model_2"], all_predictions["model_2"])
    with pytest.raises(FileNotFoundError, match="run the model_3 chapter first"):
        comparison.read_all_metrics(tmp_path, ("model_1", "model_3"))
    with pytest.raises(FileNotFoundError, match="model_3"):
        comparison.read_all_predictions(tmp_path, ("model_3",))


# ---------------------------------------------------------------------------------------
# The reference model and the paired tests
# ---------------------------------------------------------------------------------------


def test_p_value_text():
    assert comparison.p_value_text(0.04321) == "0.043"
    assert comparison.p_value_text(0.001) == "0.001"
    assert comparison.p_value_text(0.000999) == "<0.001"
    assert comparison.p_value_text(1.0) == "1.000"


def test_reference_model_is_chosen_on_validation_not_test(all_metrics):
    assert all_metrics["model_2"]["val"]["auc"] == 1.0
    assert all_metrics["model_1"]["test"]["auc"] == 1.0 > all_metrics["model_2"]["test"]["auc"]
    assert comparison.reference_model(all_metrics) == "model_2"


def test_paired_tests_against_the_reference_with_holm_adjusted_p_values(
    all_metrics, all_predictions
):
    table = comparison.paired_tests(all_metrics, all_predictions, persons=PERSONS)
    assert table.index.name == "minus model_2"
    assert list(table.index) == ["model_1", "model_3", "model_4", "model_5", "model_6"]
    ref = all_predictions["model_2"]
    raw = []
    for model_id in table.index:
        frame = all_predictions[model_id]
        raw.append(metrics.delong_test(frame.label, frame.score, ref.score).p_value)
        called = metrics.predict_labels(
            frame.score, all_metrics[model_id]["threshold"]["threshold"]
        )
        ref_called = metrics.predict_labels(
            ref.score, all_metrics["model_2"]["threshold"]["threshold"]
        )
        raw.append(metrics.mcnemar_test(frame.label, called, ref_called).p_value)
    adjusted = bootstrap.holm_adjust(raw)
    assert table["DeLong p (Holm)"].tolist() == [comparison.p_value_text(p) for p in adjusted[0::2]]
    assert table["McNemar p (Holm)"].tolist() == [
        comparison.p_value_text(p) for p in adjusted[1::2]
    ]
    # The AUC difference's point value is this model's test AUC minus the reference's.
    difference = all_metrics["model_1"]["test"]["auc"] - all_metrics["model_2"]["test"]["auc"]
    assert table.loc["model_1", "AUC difference"].startswith(f"{difference:+.3f} (")


def test_paired_tests_refuse_predictions_on_other_images(all_metrics, all_predictions):
    shuffled = dict(all_predictions)
    shuffled["model_3"] = shuffled["model_3"].iloc[::-1].reset_index(drop=True)
    with pytest.raises(
        ValueError, match="model_3's and model_2's test predictions are not on the same images"
    ):
        comparison.paired_tests(all_metrics, shuffled, persons=PERSONS)


# ---------------------------------------------------------------------------------------
# Tables and conclusions
# ---------------------------------------------------------------------------------------


def test_comparison_table_shows_each_models_test_metrics_with_intervals(all_metrics):
    table = comparison.comparison_table(all_metrics)
    assert list(table.index) == list(all_metrics)
    for model_id, m in all_metrics.items():
        assert table.loc[model_id, "AUC"] == interval_text(m["test"], "auc")
        assert table.loc[model_id, "NPV"] == interval_text(m["test"], "npv")
        assert table.loc[model_id, "threshold"] == f"{m['test']['threshold']:.3f}"
    assert "training s" not in table  # in the run-times appendix: the table fits the page


def test_calibration_table_reads_each_models_calibration_block(all_metrics):
    table = comparison.calibration_table(all_metrics)
    for model_id, m in all_metrics.items():
        c = m["calibration"]
        assert table.loc[model_id, "Brier"] == round(c["test_before"]["brier"], 4)
        assert table.loc[model_id, "ECE, temperature"] == round(c["test_after"]["ece"], 4)
        assert table.loc[model_id, "ECE, Platt"] == round(c["test_platt"]["ece"], 4)
    assert table.index.name == "test PNEUMONIA share 0.500"  # the same test images for all


def test_forest_table_holds_each_interval(all_metrics):
    table = comparison.forest_table(all_metrics)
    assert table.loc["model_3", "auc_ci_low"] == all_metrics["model_3"]["test"]["auc_ci_low"]
    assert table.attrs["method"] == all_metrics["model_1"]["test"]["interval_method"]


def test_conclusions_judge_each_claim_by_the_interval_of_a_difference(all_metrics, all_predictions):
    table = comparison.conclusions(all_metrics, all_predictions, persons=PERSONS)
    assert len(table) == 5
    chance = table.iloc[0]
    # model_2 ranks the test images at chance: its AUC's lower bound is below 0.5.
    assert all_metrics["model_2"]["test"]["auc_ci_low"] < 0.5
    assert chance["verdict"] == "holds for at least one model"
    dropout = table.loc["Dropout and batch normalisation (model 2) do not improve on model 1."]
    assert dropout["verdict"].startswith("holds: model_2 is worse than model_1")
    for verdict in table["verdict"].iloc[1:]:
        assert verdict.startswith(("holds: ", "does not hold: ", "these data cannot tell"))
    # Each group is represented by its best model on validation (model_4, model_2), never
    # on test (model_1 is the best small CNN there).
    transfer = table.iloc[4]
    assert transfer["evidence here"].startswith("AUC model_4 ")
    assert "model_4 minus model_2" in transfer["evidence here"]


def test_paired_tests_need_one_person_per_test_image(all_metrics, all_predictions):
    with pytest.raises(ValueError, match=r"persons has 39 entries but model_1's test predictions"):
        comparison.paired_tests(all_metrics, all_predictions, persons=PERSONS[:-1])


# ---------------------------------------------------------------------------------------
# Training noise: replicates of a recipe
# ---------------------------------------------------------------------------------------


def _seed_run(model_id: str, seed: int, val_kind: str, test_kind: str) -> replicates.SeedRun:
    rng = np.random.default_rng(seed * 101 + int(model_id[-1]))
    val = evaluate.Predictions("val", _paths("val"), LABELS.copy(), _scores(val_kind, rng))
    test = evaluate.Predictions("test", _paths("test"), LABELS.copy(), _scores(test_kind, rng))
    summary = evaluate.summarise(
        model_id, val, test, evaluate.threshold_on_validation(val, target_sensitivity=0.95)
    )
    return replicates.SeedRun(model_id, seed, summary.metrics, test.to_frame())


@pytest.fixture(scope="module")
def seed_runs(all_metrics, all_predictions):
    """model_1 and model_2 with two replicates each; the other models with their one run.

    model_2's chapter run is best on validation, but its replicates rank validation at
    chance, so over its seeds model_1 (good on validation every time) is better.
    """
    own = {m: replicates.SeedRun(m, 42, all_metrics[m], all_predictions[m]) for m in all_metrics}
    runs = {m: [run] for m, run in own.items()}
    runs["model_1"] += [_seed_run("model_1", s, "good", "perfect") for s in (43, 44)]
    runs["model_2"] += [_seed_run("model_2", s, "chance", "chance") for s in (43, 44)]
    return runs


def test_the_reference_is_chosen_on_mean_validation_auc_over_seeds(all_metrics, seed_runs):
    assert comparison.reference_model(all_metrics) == "model_2"  # its one lucky run
    means = {
        m: comparison.validation_auc(all_metrics, m, seed_runs) for m in ("model_1", "model_2")
    }
    assert means["model_2"] == pytest.approx(
        np.mean([r.metrics["val"]["auc"] for r in seed_runs["model_2"]])
    )
    assert means["model_2"] < means["model_1"]
    # The best on mean validation AUC among all models (model_6's one run may be higher).
    expected = max(
        all_metrics, key=lambda m: (comparison.validation_auc(all_metrics, m, seed_runs), m)
    )
    assert comparison.reference_model(all_metrics, seed_runs) == expected != "model_2"
    # A model without replicates keeps its chapter's validation AUC.
    assert comparison.validation_auc(all_metrics, "model_3", seed_runs) == pytest.approx(
        all_metrics["model_3"]["val"]["auc"]
    )


def test_training_noise_gives_the_spread_over_seeds_beside_one_runs_interval(seed_runs):
    table = comparison.training_noise(seed_runs)
    assert list(table.index) == ["model_1", "model_2"]  # only the replicated recipes
    assert len(table.columns) == 6  # the seeds are listed by seed_results
    aucs = [r.metrics["test"]["auc"] for r in seed_runs["model_2"]]
    low, high = min(aucs), max(aucs)
    assert table.loc["model_2", "AUC over seeds"].startswith(f"{low:.3f}-{high:.3f} (sd ")
    assert table.loc["model_2", "specificity, one run"] == interval_text(
        seed_runs["model_2"][0].metrics["test"], "specificity"
    )
    one_seed = {"model_3": seed_runs["model_3"]}
    for table in (comparison.training_noise(one_seed), comparison.seed_results(one_seed)):
        assert table.loc["no replicates", "note"] == comparison.NO_REPLICATES


def test_training_noise_sentence_names_the_recipes_and_the_widest_spreads(seed_runs):
    said = comparison.training_noise_sentence(seed_runs)
    assert said.startswith("This build trained model_1 and model_2 with 3 seeds each: ")
    aucs = {m: [r.metrics["test"]["auc"] for r in seed_runs[m]] for m in ("model_1", "model_2")}
    widest = max(aucs, key=lambda m: max(aucs[m]) - min(aucs[m]))
    low, high = min(aucs[widest]), max(aucs[widest])
    assert f"test AUC moved most for {widest}, from {low:.3f} to {high:.3f}" in said
    assert comparison.training_noise_sentence({"model_3": seed_runs["model_3"]}).startswith(
        "This build trained every recipe with one seed"
    )


def test_seed_results_list_every_seed_with_its_validation_and_test_numbers(seed_runs):
    table = comparison.seed_results(seed_runs)
    assert list(table.index) == [(m, s) for m in ("model_1", "model_2") for s in (42, 43, 44)]
    run = seed_runs["model_2"][1]
    assert table.loc[("model_2", 43), "val AUC"] == round(run.metrics["val"]["auc"], 3)
    assert table.loc[("model_2", 43), "specificity"] == round(run.metrics["test"]["specificity"], 3)
    assert table.loc[("model_2", 43), "threshold"] == round(run.threshold, 3)


def test_conclusions_with_training_noise_judge_replicated_claims_and_name_the_missing(
    all_metrics, all_predictions, seed_runs
):
    table = comparison.conclusions_with_training_noise(all_metrics, seed_runs, persons=PERSONS)
    claims = [claim for claim, _, _ in comparison.case_study_claims(all_metrics, seed_runs)]
    assert list(table.index) == claims
    dropout = table.loc[claims[0]]  # model_2 against model_1: both replicated
    judged = replicates.compare_recipes(seed_runs["model_2"], seed_runs["model_1"], persons=PERSONS)
    assert dropout["replicates support one run"] == ("yes" if judged["supported"] else "no")
    assert "model_2 minus model_1, mean over 3 and 3 seeds: " in dropout["with training noise"]
    assert dropout["one run"].startswith(("holds: ", "does not hold: ", "these data cannot tell"))
    adam = table.loc[claims[1]]  # model_3 has one run
    assert adam["with training noise"].startswith("not judged: model_3 trained with one seed")
    assert "--replicate-chapters model_3" in adam["with training noise"]
    assert adam["replicates support one run"] == ""
    one = comparison.conclusions(all_metrics, all_predictions, persons=PERSONS)
    assert adam["one run"] == one.loc[claims[1], "verdict"]  # one run is judged all the same
    said = comparison.verdicts_sentence(table)
    assert said.startswith("1 of the case study's 4 conclusions about recipes could be judged")
    if judged["supported"]:
        assert said.endswith("the replicates give each the verdict one seed gave.")
    else:
        assert said.endswith(f'gave: "{claims[0]}"')


def test_verdicts_sentence_names_a_verdict_the_replicates_do_not_support():
    table = pd.DataFrame(
        {"replicates support one run": ["no", "yes", ""]}, index=["claim a", "claim b", "claim c"]
    )
    assert comparison.verdicts_sentence(table) == (
        "2 of the case study's 3 conclusions about recipes could be judged with training "
        'noise; the replicates do not give 1 of them the verdict one seed gave: "claim a"'
    )
    none = table.assign(**{"replicates support one run": ""})
    assert comparison.verdicts_sentence(none).startswith("No conclusion could be judged")
