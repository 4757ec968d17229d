"""Each figure function draws what it says, on given or new axes, from known inputs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from helpers import calibration, chapters, plots

Y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
S = np.array([0.1, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9, 0.2])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_roc_marks_each_operating_point_with_its_rates():
    ax = plots.plot_roc(Y, S, thresholds={"validation": 0.5})
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "AUC 0.938"  # 15 of 16 (positive, negative) pairs ranked right
    assert "sens 0.75, spec 0.75" in labels[1]  # at 0.5: 3 of 4 each way
    assert ax.get_xlim() == pytest.approx((-0.01, 1.01))


def test_precision_recall_shows_prevalence_and_ppv_at_the_threshold():
    ax = plots.plot_precision_recall(Y, S, thresholds={"t": 0.5})
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(item == "prevalence 0.500" for item in labels)
    assert any("sens 0.75, PPV 0.75" in item for item in labels)


def test_reliability_draws_one_line_per_curve_on_the_diagonal_frame():
    table = calibration.reliability_table(Y, S, n_bins=5)
    ax = plots.plot_reliability({"as trained": table, "scaled": table})
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "perfect calibration",
        "as trained",
        "scaled",
    ]
    assert list(ax.lines[1].get_xdata()) == pytest.approx(table["mean_score"].tolist())


def test_heatmap_grid_titles_every_image_and_refuses_none():
    images = np.zeros((3, 8, 8, 1), dtype=np.uint8)
    axes = plots.plot_heatmap_grid(images, np.ones((3, 8, 8)), ["a", "b", "c"], ncols=2)
    assert [ax.get_title() for ax in axes[:3]] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="no images"):
        plots.plot_heatmap_grid(images[:0], np.ones((0, 8, 8)), [])


def test_confusion_matrix_counts_and_roc_overlay_checks_alignment():
    ax = plots.plot_confusion_matrix(Y, S, threshold=0.5)
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["3\n75%", "1\n25%", "1\n25%", "3\n75%"]
    frame = pd.DataFrame({"path": list("abcdefgh"), "label": Y, "score": S})
    plots.plot_roc_overlay({"model_1": frame, "model_2": frame})
    with pytest.raises(ValueError, match="not on the same images"):
        plots.plot_roc_overlay({"model_1": frame, "model_2": frame.iloc[::-1]})


def test_roc_overlay_gives_each_of_the_book_s_models_its_own_colour():
    # The comparison overlays every model chapter's ROC (as many as _toc.yml lists), and any
    # other id (a variant a student adds) must not fall back on a colour already in it.
    frame = pd.DataFrame({"path": list("abcdefgh"), "label": Y, "score": S})
    ids = [*chapters.model_ids(), "model_variant", "my_variant"]
    ax = plots.plot_roc_overlay({model_id: frame for model_id in ids})
    curves = [line for line in ax.lines if line.get_label().split(" (AUC")[0] in ids]
    colours = [matplotlib.colors.to_hex(line.get_color()) for line in curves]
    assert len(curves) == len(ids)
    assert len(set(colours)) == len(ids), dict(zip(ids, colours))
    assert "#808080" not in colours  # the chance diagonal's grey


def test_model_colours_follow_the_toc_and_refuse_more_models_than_colours():
    book = ["model_1", "model_2", "model_3"]
    # A model chapter's colour is its place in the toc, whichever figure it is drawn in.
    assert plots.model_colours(["model_3"], book) == {"model_3": plots.MODEL_PALETTE[2]}
    assert plots.model_colours(["mine", "model_1"], book) == {
        "mine": plots.MODEL_PALETTE[3],
        "model_1": plots.MODEL_PALETTE[0],
    }
    # The book's own chapters: model_1 keeps the blue it always had.
    assert plots.model_colours(["model_1"]) == {"model_1": "#1f77b4"}
    spare = len(plots.MODEL_PALETTE) - len(book)
    with pytest.raises(ValueError, match=f"no colour left for 'extra_{spare}'"):
        plots.model_colours([f"extra_{i}" for i in range(spare + 1)], book)


def test_forest_plot_draws_each_model_s_point_and_interval_per_panel():
    table = pd.DataFrame(
        {
            "auc": [0.90, 0.95],
            "auc_ci_low": [0.86, 0.92],
            "auc_ci_high": [0.93, 0.97],
            "sensitivity": [0.97, 0.96],
            "sensitivity_ci_low": [0.94, 0.93],
            "sensitivity_ci_high": [0.99, 0.98],
            "specificity": [0.60, 0.75],
            "specificity_ci_low": [0.52, 0.68],
            "specificity_ci_high": [0.67, float("nan")],
        },
        index=["model_1", "model_6"],
    )
    table.attrs["method"] = (
        "person-level cluster bootstrap, 2000 resamples, percentile, stratified by class, seed 42"
    )
    axes = plots.plot_forest(table)
    assert [ax.get_title() for ax in axes] == ["AUC", "sensitivity", "specificity"]
    ticks = dict(zip(axes[0].get_yticks(), (t.get_text() for t in axes[0].get_yticklabels())))
    assert ticks == {1: "model_1", 0: "model_6"}  # the table's first model on top
    # Per model an interval line then a point; model_1 at y = 1, model_6 at y = 0.
    interval_line, point = axes[0].lines[0], axes[0].lines[1]
    assert list(interval_line.get_xdata()) == [0.86, 0.93] and list(interval_line.get_ydata()) == [
        1,
        1,
    ]
    assert list(point.get_xdata()) == [0.90] and list(point.get_ydata()) == [1]
    assert len(axes[2].lines) == 2  # model_6's specificity interval is NaN: left out
    assert axes[0].figure._suptitle.get_text().startswith("person-level cluster bootstrap")
    with pytest.raises(ValueError, match="specificity_ci_high"):
        plots.plot_forest(table.drop(columns="specificity_ci_high"))
    with pytest.raises(ValueError, match="three Axes"):
        plots.plot_forest(table, ax=plt.subplots(1, 2)[1])

    # Each seed of a replicated model: open diamonds just below its row.
    seeds = pd.DataFrame(
        {"auc": [0.90, 0.88, 0.93], "sensitivity": [0.97] * 3, "specificity": [0.6, 0.7, 0.65]},
        index=pd.MultiIndex.from_tuples(
            [("model_1", 42), ("model_1", 43), ("model_1", 44)], names=["model", "seed"]
        ),
    )
    axes = plots.plot_forest(table, seeds=seeds)
    diamonds = [line for line in axes[0].lines if line.get_marker() == "d"]
    assert len(diamonds) == 1  # model_1 only
    assert list(diamonds[0].get_xdata()) == [0.90, 0.88, 0.93]
    assert list(diamonds[0].get_ydata()) == [0.75] * 3
    assert "each seed" in axes[1].get_xlabel()  # one label, under the middle panel
    with pytest.raises(
        ValueError, match=r"seeds names models the table does not have: \['model_9'\]"
    ):
        plots.plot_forest(table, seeds=seeds.rename(index={"model_1": "model_9"}))
    with pytest.raises(ValueError, match="seeds lacks the columns"):
        plots.plot_forest(table, seeds=seeds.drop(columns="auc"))


def _forest_table(model_ids) -> pd.DataFrame:
    """A forest table of the comparison's shape: one row per model, every interval."""
    values = {"auc": 0.93, "sensitivity": 0.95, "specificity": 0.62}
    table = pd.DataFrame(
        {
            f"{name}{end}": [value + shift for _ in model_ids]
            for name, value in values.items()
            for end, shift in (("", 0.0), ("_ci_low", -0.03), ("_ci_high", 0.03))
        },
        index=list(model_ids),
    )
    table.attrs["method"] = (
        "person-level cluster bootstrap, 2000 resamples, percentile, stratified by class, seed 42"
    )
    return table


BOOK_MODELS = [f"model_{i}" for i in range(1, 8)]
FRAME = pd.DataFrame({"path": list("abcdefgh"), "label": Y, "score": S})
#: Every figure kind as the chapters draw it (the comparison's with all seven models).
FIGURES = {
    "forest": lambda: plots.plot_forest(_forest_table(BOOK_MODELS)),
    "forest with seeds": lambda: plots.plot_forest(
        _forest_table(BOOK_MODELS),
        seeds=pd.DataFrame(
            {"auc": [0.9, 0.92], "sensitivity": [0.95, 0.96], "specificity": [0.6, 0.7]},
            index=pd.MultiIndex.from_tuples([("model_1", 42), ("model_1", 43)]),
        ),
    ),
    "training curves": lambda: plots.plot_training_curves(
        {
            "loss": [0.7, 0.5],
            "val_loss": [0.6, 0.55],
            "accuracy": [0.6, 0.8],
            "val_accuracy": [0.7, 0.75],
        }
    ),
    "roc": lambda: plots.plot_roc(Y, S, thresholds={"validation": 0.5}),
    "confusion matrix": lambda: plots.plot_confusion_matrix(Y, S, threshold=0.5),
    "score histogram": lambda: plots.plot_score_histogram(Y, S, threshold=0.5),
    "roc overlay": lambda: plots.plot_roc_overlay({m: FRAME for m in BOOK_MODELS}),
    "precision-recall": lambda: plots.plot_precision_recall(Y, S, thresholds={"t": 0.5}),
    "reliability": lambda: plots.plot_reliability(
        {"as trained": calibration.reliability_table(Y, S, n_bins=5)}
    ),
    "class counts": lambda: plots.plot_class_counts(
        pd.DataFrame({"split": ["train", "val", "test"] * 2, "label": [0, 0, 0, 1, 1, 1]})
    ),
}


@pytest.mark.parametrize("kind", FIGURES)
def test_no_figure_kind_has_labels_that_run_into_each_other(kind):
    plots.use_book_style()
    drawn = np.ravel(np.asarray(FIGURES[kind](), dtype=object))
    assert plots.figure_label_overlaps(drawn[0].figure) == []


def test_label_overlaps_are_found():
    # Three panels of a 6-inch figure, each with a label wider than itself: the forest
    # plot's old x-axis labels, which ran into each other at the book's width.
    fig, axes = plt.subplots(1, 3, figsize=(6, 2))
    for ax in axes:
        ax.set_xlabel("point and interval; diamonds: each seed")
    overlaps = plots.figure_label_overlaps(fig)
    assert overlaps.count(("point and interval; diamonds: each seed",) * 2) == 2  # 1-2, 2-3
