"""Tests of helpers.report: what a model chapter shows and glues, from an evaluation.

Displays and glued values are caught (IPython's ``display`` and myst-nb's ``glue`` are
replaced by recorders), so the tests read what a chapter would show.
"""

from __future__ import annotations

import math
import re
import warnings

import matplotlib

matplotlib.use("Agg")  # no window: figures are drawn and closed

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from helpers import data, evaluate, report

# plt.show() under Agg says it shows nothing; that is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive:UserWarning")


@pytest.fixture
def shown(monkeypatch):
    """What the chapter displays, glues and warns about, in order."""
    import IPython.display
    import myst_nb

    record = {"display": [], "glue": {}, "warnings": []}
    monkeypatch.setattr(
        IPython.display, "display", lambda *objs, **kw: record["display"].extend(objs)
    )
    monkeypatch.setattr(
        myst_nb, "glue", lambda name, value, display=True: record["glue"].__setitem__(name, value)
    )
    monkeypatch.setattr(report, "show_warning", record["warnings"].append)
    yield record
    plt.close("all")


def _predictions(split: str, labels, scores, data_dir=None) -> evaluate.Predictions:
    paths = [
        f"{split}/{'PNEUMONIA' if y else 'NORMAL'}/"
        + (
            f"person{i}_{'virus' if i % 2 else 'bacteria'}_{i}.jpeg"
            if y
            else f"IM-{i:04d}-0001.jpeg"
        )
        for i, y in enumerate(labels)
    ]
    return evaluate.Predictions(split, paths, np.asarray(labels), np.asarray(scores, dtype=float))


@pytest.fixture(scope="module")
def evaluation():
    """A model that ranks well but not perfectly: some errors at every threshold."""
    rng = np.random.default_rng(0)
    labels = np.array([0] * 15 + [1] * 25)
    val = _predictions("val", labels, np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.15, 40), 0, 1))
    test = _predictions("test", labels, np.clip(0.3 + 0.3 * labels + rng.normal(0, 0.2, 40), 0, 1))
    return evaluate.summarise(
        "model_x", val, test, evaluate.threshold_on_validation(val, target_sensitivity=0.95)
    )


# ---------------------------------------------------------------------------------------
# Warnings in the page
# ---------------------------------------------------------------------------------------


def test_skipped_images_are_shown_in_the_chapter_not_only_on_stderr(make_xrays, shown, recwarn):
    folder = make_xrays()
    bad = folder.root / "train" / "PNEUMONIA" / "person1_bacteria_0.jpeg"
    bad.write_bytes(bad.read_bytes()[:200])
    data.clear_decoded_cache()
    # catch_warnings and rc_context put back what start_chapter changes.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("always")
        report.start_chapter()
        xrays = data.load_chest_xrays(folder.root, image_size=16, seed=0, on_bad_image="skip")
        warnings.warn("not the package's", UserWarning, stacklevel=1)  # goes where Python sends it
    # Here Python sends warnings to pytest's recorder: only the other one arrives there.
    assert [str(w.message) for w in recwarn] == ["not the package's"]
    assert (
        len(shown["warnings"]) == 1
        and "train/PNEUMONIA/person1_bacteria_0.jpeg" in shown["warnings"][0]
    )
    assert [path for path, _ in xrays.skipped] == ["train/PNEUMONIA/person1_bacteria_0.jpeg"]


def test_a_chapter_shows_tables_with_marked_intervals_and_warns_about_overlapping_labels(
    shown, monkeypatch
):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    monkeypatch.setattr(shell.events, "callbacks", {**shell.events.callbacks, "post_execute": []})
    with warnings.catch_warnings(), matplotlib.rc_context():
        report.start_chapter()
        report.start_chapter()  # a chapter run twice checks its figures once
    table = pd.DataFrame({"AUC": ["0.929 (0.908-0.948)"], "n": [3]}, index=["model_1"])
    html = shell.display_formatter.formatters["text/html"](table)
    assert '<td><span class="estimate"><span class="value">0.929</span><br>' in html
    assert 'class="dataframe"' in html

    assert shell.events.callbacks["post_execute"] == [report._check_figure_labels]
    fig, axes = plt.subplots(1, 3, figsize=(6, 2))
    for ax in axes:
        ax.set_xlabel("point and interval; diamonds: each seed")
    shell.events.trigger("post_execute")  # what the kernel does after the cell
    assert len(shown["warnings"]) == 1 and report.FIGURE_LABELS_OVERLAP in shown["warnings"][0]
    axes[0].set_xlabel("")
    axes[2].set_xlabel("")
    shell.events.trigger("post_execute")
    assert len(shown["warnings"]) == 1  # one label: nothing runs into it


def test_table_html_marks_every_estimate_with_its_interval():
    table = pd.DataFrame(
        {
            "difference": ["+0.012 (-0.010 to +0.030)", "model_2 (p 0.03)"],
            "spread": ["0.91-0.95 (sd 0.010)", "0.500 (no interval)"],
        }
    )
    table.loc[2] = ["AUC 0.9 (0.8-1.0) at most", ""]
    cells = re.findall(r"<td>(.*?)</td>", report.table_html(table))
    unit = '<span class="estimate"><span class="value">{}</span>{}<span class="interval">{}</span>'
    assert cells == [
        unit.format("+0.012", "<br>", "(-0.010 to +0.030)") + "</span>",  # alone: two lines
        unit.format("0.91-0.95", "<br>", "(sd 0.010)") + "</span>",
        "model_2 (p 0.03)",  # no estimate: a name and a p-value
        unit.format("0.500", "<br>", "(no interval)") + "</span>",
        "AUC " + unit.format("0.9", " ", "(0.8-1.0)") + "</span> at most",  # in words: one line
        "",
    ]


# ---------------------------------------------------------------------------------------
# Tables and text
# ---------------------------------------------------------------------------------------


def test_interval_text():
    block = {
        "auc": 0.91234,
        "auc_ci_low": 0.8,
        "auc_ci_high": 0.97,
        "f1": 0.5,
        "f1_ci_low": None,
        "f1_ci_high": None,
        "ppv": None,
        "ppv_ci_low": None,
        "ppv_ci_high": None,
    }
    assert report.interval_text(block, "auc") == "0.912 (0.800-0.970)"
    assert report.interval_text(block, "f1") == "0.500 (no interval)"
    assert report.interval_text(block, "ppv") == "undefined"


def test_metrics_table_has_one_column_per_threshold(evaluation):
    m = evaluation.metrics
    table = report.metrics_table(m)
    assert list(table.columns) == [
        "0.5 (case study)",
        "validation-chosen",
        "validation-chosen, image-level intervals",
    ]
    assert table.loc["auc", "validation-chosen"] == report.interval_text(m["test"], "auc")
    assert table.loc["threshold", "0.5 (case study)"] == "0.500"
    assert table.loc["tp", "validation-chosen"] == str(m["test"]["tp"])


def _block(**values):
    block = {}
    for name, value in values.items():
        block.update({name: value, f"{name}_ci_low": value - 0.01, f"{name}_ci_high": value + 0.01})
    return block


def test_validation_test_gap_and_targets_are_read_from_the_metrics():
    rates = dict(sensitivity=0.95, ppv=0.9, npv=0.8)
    m = {
        "val": _block(auc=0.998, specificity=0.97, **rates),
        "test": _block(auc=0.96, specificity=0.80, **rates),
    }
    gap = report.validation_test_gap(m)
    assert gap.loc["auc", "validation"] == "0.998 (0.988-1.008)"
    assert gap.loc["auc", "test minus validation"] == "-0.038"
    assert gap.loc["specificity", "test minus validation"] == "-0.170"
    targets = report.target_table(m)
    assert list(targets["met"]) == [
        "no",
        "yes",
        "no",
    ]  # auc 0.96 < 0.975, sens 0.95, spec 0.80 < 0.85
    assert targets.loc["specificity", "estimate minus target"] == "-0.050"
    assert report.CEILING_COLUMN not in targets
    ceiling = {
        "target_sensitivity": 0.95,
        "threshold": 0.9,
        "sensitivity": 0.951,
        "specificity": 0.8334,
    }
    with_ceiling = report.target_table(m, ceiling=ceiling)
    assert list(with_ceiling[report.CEILING_COLUMN]) == [
        f"{m['test']['auc']:.3f}",
        "0.951",
        "0.833",
    ]
    assert with_ceiling.drop(columns=report.CEILING_COLUMN).equals(targets)


def test_outcome_groups_by_hand():
    labels = [1, 1, 1, 0, 0, 0, 1]
    scores = [0.9, 0.2, 0.4, 0.1, 0.7, 0.3, 0.6]
    test = _predictions("test", labels, scores)
    result = evaluate.Evaluation("m", val=test, test=test, threshold={"threshold": 0.5})
    groups = report.outcome_groups(result)
    # Most confident first: the lowest-scored false negative, the highest-scored true positive.
    assert {k: v.tolist() for k, v in groups.items()} == {
        "false negative": [1, 2],
        "false positive": [4],
        "true positive": [0, 6],
        "true negative": [3, 5],
    }


# ---------------------------------------------------------------------------------------
# Glued numbers
# ---------------------------------------------------------------------------------------


def _same(a, b) -> bool:
    return (math.isnan(a) and b is None) or a == b


def test_a_model_chapter_glues_its_numbers_without_its_name(evaluation, shown, monkeypatch):
    # myst-nb looks {glue:text}`auc` up in the page's own notebook: a model chapter's keys
    # need not carry its name, so a copy of the chapter quotes its own numbers unchanged.
    monkeypatch.setattr(report, "_chapter_model", None)  # start_chapter's, put back after
    with warnings.catch_warnings(), matplotlib.rc_context():
        report.start_chapter("model_x")
    report.glue_metrics("model_x", evaluation.metrics)
    report.glue_metrics("model_x_adapted", evaluation.metrics)
    report.glue_metrics("other_model", evaluation.metrics)  # not the chapter's: kept whole
    glued = shown["glue"]
    assert glued["auc"] == evaluation.metrics["test"]["auc"]
    assert "adapted_auc" in glued and "other_model_auc" in glued
    assert not [key for key in glued if key.startswith("model_x")]


def test_glue_metrics_glues_every_number_the_prose_quotes(evaluation, shown):
    m = evaluation.metrics
    report.glue_metrics("model_x", m)
    glued = shown["glue"]
    assert glued["model_x_threshold"] == m["threshold"]["threshold"]
    assert glued["model_x_target_sensitivity"] == 0.95  # what the fixture's threshold reached
    assert glued["model_x_val_auc"] == m["val"]["auc"]
    for name in ("auc", "sensitivity", "specificity", "ppv", "npv", "accuracy", "f1"):
        assert _same(glued[f"model_x_{name}"], m["test"][name]), name
        assert _same(glued[f"model_x_{name}_lo"], m["test"][f"{name}_ci_low"]), name
        assert _same(glued[f"model_x_05_{name}_hi"], m["test_at_0.5"][f"{name}_ci_high"]), name
    assert glued["model_x_fn"] == m["test"]["fn"] and isinstance(glued["model_x_fn"], int)
    assert glued["model_x_05_tp"] == m["test_at_0.5"]["tp"]


def test_glue_training(shown):
    from helpers.train import TrainingRun

    run = TrainingRun(
        model=None, history=pd.DataFrame(), epochs=3, batch_size=8, seed=0, training_seconds=12.5
    )
    report.glue_training("model_4", run, base_weights="imagenet")
    assert shown["glue"] == {
        "model_4_epochs": 3,
        "model_4_training_seconds": 12.5,
        "model_4_base_weights": "imagenet",
    }


# ---------------------------------------------------------------------------------------
# The chapter's displays
# ---------------------------------------------------------------------------------------


def test_show_test_results_displays_the_table_and_glues(evaluation, shown, capsys):
    report.show_test_results(evaluation)
    assert isinstance(shown["display"][0], pd.DataFrame)
    pd.testing.assert_frame_equal(shown["display"][0], report.metrics_table(evaluation.metrics))
    out = capsys.readouterr().out
    assert "Classification report at threshold 0.5 (case study)" in out
    assert evaluation.metrics["test"]["interval_method"] in out
    assert shown["glue"]["model_x_auc"] == evaluation.metrics["test"]["auc"]
    assert shown["warnings"] == []


def test_show_test_results_refuses_images_of_another_split(xrays32, shown):
    model_scores = np.linspace(0.1, 0.9, len(xrays32.val))
    val = evaluate.Predictions("val", list(xrays32.val.paths), xrays32.val.labels, model_scores)
    test = evaluate.Predictions(
        "test",
        list(xrays32.test.paths)[::-1],
        xrays32.test.labels[::-1],
        np.linspace(0.1, 0.9, len(xrays32.test)),
    )
    result = evaluate.summarise(
        "model_y", val, test, evaluate.threshold_on_validation(val, target_sensitivity=0.95)
    )
    with pytest.raises(
        ValueError, match="xrays.test is not the split these predictions were made on"
    ):
        report.show_test_results(result, xrays32)


def test_show_operating_points_and_calibration_glue_their_numbers(evaluation, shown, capsys):
    m = evaluation.metrics
    report.show_operating_points(evaluation)
    for row in m["sensitivity_by_kind"]:
        assert shown["glue"][f"model_x_sensitivity_{row['kind']}"] == row["sensitivity"]
    assert shown["glue"]["model_x_sensitivity_by_kind"] == report.sensitivity_by_kind_sentence(
        m["sensitivity_by_kind"]
    )
    report.show_calibration(evaluation)
    assert shown["glue"]["model_x_brier"] == m["calibration"]["test_before"]["brier"]
    assert shown["glue"]["model_x_temperature"] == m["calibration"]["temperature"]
    assert "Adopted: " in capsys.readouterr().out


def test_show_misclassified_counts_the_errors(evaluation, xrays32, capsys, shown):
    groups = report.outcome_groups(evaluation)
    fake_images = data.Split(  # 40 blank images standing in for the evaluation's test images
        name="test",
        paths=evaluation.test.paths,
        labels=evaluation.test.labels,
        images=np.zeros((len(evaluation.test.labels), 8, 8, 3), np.uint8),
        data_dir=xrays32.test.data_dir,
    )
    from dataclasses import replace

    report.show_misclassified(evaluation, replace(xrays32, test=fake_images), limit=3)
    fn, fp = len(groups["false negative"]), len(groups["false positive"])
    assert fn + fp > 0
    assert (
        f"{fn} false negatives and {fp} false positives of 40 test images; "
        f"showing {min(3, fn + fp)}" in capsys.readouterr().out
    )


def test_show_explanations_of_a_constant_model_says_there_is_nothing_to_show(evaluation, shown):
    from dataclasses import replace

    constant = replace(evaluation, test=replace(evaluation.test, scores=np.full(40, 0.7)))
    report.show_explanations(model=None, result=constant, xrays=None)
    assert len(shown["warnings"]) == 1 and "same score" in shown["warnings"][0]


def test_the_sensitivity_by_kind_sentence_says_when_the_file_names_carry_no_kind():
    rows = [
        {"kind": "bacteria", "images": 10, "sensitivity": 0.9},
        {"kind": "virus", "images": 5, "sensitivity": 0.8},
    ]
    assert "detects 0.900 of the bacterial and 0.800 of the viral" in (
        report.sensitivity_by_kind_sentence(rows)
    )
    unknown = [{"kind": "unknown", "images": 15, "sensitivity": 0.85}]  # random DICOM names
    assert "do not say the kind" in report.sensitivity_by_kind_sentence(unknown)
