"""Comparing the models on the same test images: tables, paired tests, conclusions.

Every model chapter writes ``results/<model-id>/``; this module reads those folders (never
a model) and compares the models on the same test images in the same order: one row per
model, paired tests of each model against the one a study would carry forward (chosen on
validation), calibration side by side, and the case study's conclusions checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from helpers import bootstrap, config, metrics
from helpers.report import interval_text

#: The models the comparison reads, in the table's order.
MODEL_IDS: tuple[str, ...] = config.MODEL_IDS


def read_all_metrics(results_dir: str | os.PathLike, model_ids=config.MODEL_IDS) -> dict[str, dict]:
    """``metrics.json`` of every model, failing clearly if a chapter has not run."""
    from helpers.results import read_metrics

    return {model_id: read_metrics(results_dir, model_id) for model_id in model_ids}


def read_all_predictions(
    results_dir: str | os.PathLike, model_ids=config.MODEL_IDS, *, split: str = "test"
) -> dict[str, pd.DataFrame]:
    """``predictions_<split>.csv`` of every model."""
    from helpers.results import read_predictions

    return {
        m: read_predictions(Path(results_dir) / m / f"predictions_{split}.csv") for m in model_ids
    }


def p_value_text(p: float) -> str:
    """A p-value as reported in medical journals: three decimals, or "<0.001".

    >>> p_value_text(0.04321), p_value_text(2e-9)
    ('0.043', '<0.001')
    """
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def reference_model(all_metrics: dict[str, dict]) -> str:
    """The model with the highest *validation* AUC: the one a study would carry forward.

    Chosen on validation so that the paired tests on the test set are not tests of a
    winner picked by the test set itself.
    """
    return max(all_metrics, key=lambda k: (all_metrics[k]["val"]["auc"], k))


def _paired(
    all_metrics: dict[str, dict], all_predictions: dict[str, pd.DataFrame], a: str, b: str
) -> dict:
    """Paired person-level bootstrap of a - b (AUC, sensitivity, specificity) on the same
    test images, each model at its own validation threshold."""
    from helpers.data import group_id

    fa, fb = all_predictions[a], all_predictions[b]
    if list(fa["path"]) != list(fb["path"]):
        raise ValueError(
            f"{a}'s and {b}'s test predictions are not on the same images in the same order"
        )
    persons = [group_id(path) for path in fa["path"]]
    return bootstrap.paired_person_bootstrap(
        fa["label"],
        fa["score"],
        fb["score"],
        persons,
        threshold_a=all_metrics[a]["threshold"]["threshold"],
        threshold_b=all_metrics[b]["threshold"]["threshold"],
    )


def _difference_text(estimate) -> str:
    return f"{estimate.value:+.3f} ({estimate.ci_low:+.3f} to {estimate.ci_high:+.3f})"


def paired_tests(
    all_metrics: dict[str, dict], all_predictions: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """Each model against the reference model (:func:`reference_model`) on the same test images.

    For AUC, sensitivity and specificity: the difference (this model minus the reference)
    with a paired person-level bootstrap 95% interval
    (:func:`helpers.bootstrap.paired_person_bootstrap`), each model at its own
    validation-chosen threshold. Beside them DeLong's test of the AUC difference and
    McNemar's exact test on the decisions, their p-values adjusted by Holm's method for all
    the tests in the table.
    """
    reference = reference_model(all_metrics)
    ref = all_predictions[reference]
    ref_called = metrics.predict_labels(
        ref["score"], all_metrics[reference]["threshold"]["threshold"]
    )
    rows, raw_p = {}, []
    for model_id, frame in all_predictions.items():
        if model_id == reference:
            continue
        paired = _paired(all_metrics, all_predictions, model_id, reference)
        delong = metrics.delong_test(frame["label"], frame["score"], ref["score"])
        called = metrics.predict_labels(
            frame["score"], all_metrics[model_id]["threshold"]["threshold"]
        )
        mcnemar = metrics.mcnemar_test(frame["label"], called, ref_called)
        d = paired["differences"]
        rows[model_id] = {
            "AUC difference": _difference_text(d["auc"]["difference"]),
            "sensitivity difference": _difference_text(d["sensitivity"]["difference"]),
            "specificity difference": _difference_text(d["specificity"]["difference"]),
        }
        raw_p.append((model_id, delong.p_value, mcnemar.p_value))
    if raw_p:
        adjusted = bootstrap.holm_adjust([p for _, dp, mp in raw_p for p in (dp, mp)])
        for i, (model_id, _, _) in enumerate(raw_p):
            rows[model_id]["DeLong p (Holm)"] = p_value_text(adjusted[2 * i])
            rows[model_id]["McNemar p (Holm)"] = p_value_text(adjusted[2 * i + 1])
    table = pd.DataFrame(rows).T
    table.index.name = f"minus {reference}"
    return table


def forest_table(all_metrics: dict[str, dict]) -> pd.DataFrame:
    """Each model's test AUC, sensitivity and specificity with their person-level
    intervals, for :func:`helpers.plots.plot_forest`."""
    columns = [
        f"{n}{s}"
        for n in ("auc", "sensitivity", "specificity")
        for s in ("", "_ci_low", "_ci_high")
    ]
    table = pd.DataFrame({m: {c: v["test"][c] for c in columns} for m, v in all_metrics.items()}).T
    methods = {v["test"].get("interval_method") for v in all_metrics.values()}
    if len(methods) == 1:
        table.attrs["method"] = methods.pop()
    return table


def calibration_table(all_metrics: dict[str, dict]) -> pd.DataFrame:
    """Per model on test: mean score against the PNEUMONIA share, ECE as trained, after a
    temperature and after Platt scaling (both fitted on validation); sensitivity for
    bacterial and viral pneumonia at the validation threshold."""
    rows = {}
    for model_id, m in all_metrics.items():
        c = m["calibration"]
        kinds = {row["kind"]: row for row in m["sensitivity_by_kind"]}
        row = {
            "mean score": round(c["test_before"]["mean_score"], 3),
            "Brier": round(c["test_before"]["brier"], 4),
            "ECE": round(c["test_before"]["ece"], 4),
            "ECE, temperature": round(c["test_after"]["ece"], 4),
            "ECE, Platt": round(c["test_platt"]["ece"], 4),
        }
        for kind in ("bacteria", "virus"):
            if kind in kinds:
                k = kinds[kind]
                row[f"sensitivity, {kind}"] = (
                    f"{k['sensitivity']:.3f} ({k['ci_low']:.3f}-{k['ci_high']:.3f})"
                )
        rows[model_id] = row
    table = pd.DataFrame(rows).T
    shares = {m["calibration"]["test_prevalence"] for m in all_metrics.values()}
    table.index.name = f"test PNEUMONIA share {shares.pop():.3f}" if len(shares) == 1 else None
    return table


def book_questions(
    all_metrics: dict[str, dict],
    all_predictions: dict[str, pd.DataFrame],
    results_dir: str | os.PathLike,
) -> pd.DataFrame:
    """The book's own questions as paired comparisons on the same test images.

    model_7 (fine-tuned) against model_5 (the same base, frozen) and against model_6 (from
    scratch); each model with a ``predictions_test_adapted.csv`` against itself adapted to
    each folder's images. Differences in AUC, sensitivity and specificity with paired
    person-level bootstrap 95% intervals, each model at its own validation threshold, and
    the verdict on the AUC; p-values (bootstrap, AUC) Holm-adjusted over the table.
    """
    from helpers.results import read_predictions

    frames, thresholds = dict(all_predictions), dict(all_metrics)
    pairs = [
        (a, b)
        for a, b in (("model_7", "model_5"), ("model_7", "model_6"))
        if a in frames and b in frames
    ]
    for model_id, m in all_metrics.items():
        if "adapted" in m:
            name = f"{model_id} adapted"
            frames[name] = read_predictions(
                Path(results_dir) / model_id / "predictions_test_adapted.csv"
            )
            thresholds[name] = m["adapted"]
            pairs.append((name, model_id))
    rows, p_values = {}, []
    for a, b in pairs:
        paired = _paired(thresholds, frames, a, b)["differences"]
        rows[f"{a} minus {b}"] = {
            "AUC difference": _difference_text(paired["auc"]["difference"]),
            "sensitivity difference": _difference_text(paired["sensitivity"]["difference"]),
            "specificity difference": _difference_text(paired["specificity"]["difference"]),
            "AUC verdict": bootstrap.verdict(paired["auc"]["difference"], names=(a, b)),
        }
        p_values.append(paired["auc"]["p_value"])
    for key, p in zip(rows, bootstrap.holm_adjust(p_values) if p_values else []):
        rows[key]["AUC p (Holm)"] = p_value_text(float(p))
    return pd.DataFrame(rows).T


def comparison_table(all_metrics: dict[str, dict]) -> pd.DataFrame:
    """One row per model: test metrics at its validation-chosen threshold, with
    person-level 95% intervals; few, short columns so that the table fits the page
    (each model chapter has the full table)."""
    rows = {}
    for model_id, m in all_metrics.items():
        block = m["test"]
        row = {"threshold": f"{block['threshold']:.3f}"}
        for name, label in (
            ("auc", "AUC"),
            ("sensitivity", "sensitivity"),
            ("specificity", "specificity"),
            ("ppv", "PPV"),
            ("npv", "NPV"),
        ):
            row[label] = interval_text(block, name)
        row["training s"] = f"{m['training_seconds']:.0f}"
        rows[model_id] = row
        if "adapted" in m:  # beside the headline, never instead of it
            block = m["adapted"]["test"]
            rows[f"{model_id}, adapted (no labels)"] = {
                "threshold": f"{block['threshold']:.3f}",
                **{
                    label: interval_text(block, name)
                    for name, label in (
                        ("auc", "AUC"),
                        ("sensitivity", "sensitivity"),
                        ("specificity", "specificity"),
                        ("ppv", "PPV"),
                        ("npv", "NPV"),
                    )
                },
                "training s": "",
            }
    return pd.DataFrame(rows).T


def _best_by_validation(all_metrics: dict[str, dict], candidates) -> str:
    """Of ``candidates``, the model with the highest validation AUC (never chosen on test)."""
    return max(candidates, key=lambda k: (all_metrics[k]["val"]["auc"], k))


def conclusions(
    all_metrics: dict[str, dict], all_predictions: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """Each conclusion the case study drew, judged by the interval of a difference.

    A comparison of two models rests on the paired person-level bootstrap interval of their
    AUC difference (never on whether their own intervals overlap): the first model
    "improves", is "worse", or "these data cannot tell" with the interval given. The
    p-values of the comparisons are adjusted together by Holm's method. Where two models
    are grouped (the small CNNs, the MobileNetV2s), each group is represented by its model
    with the highest *validation* AUC.
    """
    m = {k: v for k, v in all_metrics.items() if k in config.CASE_STUDY_MODEL_IDS}
    rows = []
    worst = min(m, key=lambda k: m[k]["test"]["auc_ci_low"])
    worst_lo = m[worst]["test"]["auc_ci_low"]
    rows.append(
        {
            "case study's conclusion": "The models barely beat chance (52-58% test accuracy).",
            "evidence here": (
                f"lowest lower bound of a test AUC (person-level): {worst} {worst_lo:.3f}; "
                "chance is 0.5"
            ),
            "p (Holm)": "",
            "verdict": "does not hold" if worst_lo > 0.5 else "holds for at least one model",
        }
    )
    cnn = _best_by_validation(m, ("model_1", "model_2", "model_3"))
    mobile = _best_by_validation(m, ("model_4", "model_5"))
    claims = [
        (
            "Dropout and batch normalisation (model 2) do not improve on model 1.",
            "model_2",
            "model_1",
        ),
        ("Adam with lighter dropout (model 3) does not improve on model 2.", "model_3", "model_2"),
        ("Augmentation (model 4) does not improve on model 5.", "model_4", "model_5"),
        ("Transfer learning (models 4-5) does not beat the small CNNs (models 1-3).", mobile, cnn),
    ]
    paired = [
        _paired(all_metrics, all_predictions, a, b)["differences"]["auc"] for _, a, b in claims
    ]
    adjusted = bootstrap.holm_adjust([d["p_value"] for d in paired])
    for (claim, a, b), d, p in zip(claims, paired, adjusted):
        said = bootstrap.verdict(d["difference"], names=(a, b))
        if said.startswith(f"{a} improves"):
            outcome = f"does not hold: {said}"
        elif said.startswith(f"{a} is worse"):
            outcome = f"holds: {said}"
        else:
            outcome = said
        rows.append(
            {
                "case study's conclusion": claim,
                "evidence here": (
                    f"AUC {a} {d['a']:.3f}, {b} {d['b']:.3f}; "
                    f"{a} minus {b}: {_difference_text(d['difference'])}"
                ),
                "p (Holm)": p_value_text(float(p)),
                "verdict": outcome,
            }
        )
    return pd.DataFrame(rows).set_index("case study's conclusion")
