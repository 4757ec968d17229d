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

from helpers import bootstrap, comparison, evaluate, metrics, results
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
    table = comparison.paired_tests(all_metrics, all_predictions)
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
        comparison.paired_tests(all_metrics, shuffled)


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
        assert table.loc[model_id, "training s"] == "12"


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
    table = comparison.conclusions(all_metrics, all_predictions)
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
