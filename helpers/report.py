"""What a chapter shows: result tables, figure panels and glued numbers, from an evaluation.

Each function displays one part of a model chapter (the test results, the operating points,
calibration, Grad-CAM, the misclassified images) from a :class:`helpers.evaluate.Evaluation`,
or one of the choices made on validation (model_6's ablation, model_7's search), and glues
the numbers the chapter's prose quotes (``{glue:text}`auc:.3f``` in a model chapter, see
:func:`start_chapter`), so that no
number in the text is typed by hand. Figures are drawn by :mod:`helpers.plots`, one
function per figure kind.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import metrics, plots
from helpers.data import ChestXrays, sample_indices


def show_warning(message: str) -> None:
    """Show a warning in the notebook's output (stdout), where the rendered book keeps it."""
    import html

    try:
        from IPython.display import HTML, display
    except ImportError:  # pragma: no cover - outside IPython
        print(message)
        return
    # An HTML admonition looks the same in Jupyter and in the rendered book.
    display(
        HTML(
            '<div class="admonition warning"><p class="admonition-title">Warning</p>'
            f"<p>{html.escape(message)}</p></div>"
        )
    )


def _show_warning_in_page(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, UserWarning) and category.__module__.startswith("helpers"):
        show_warning(str(message))
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


#: The model of the chapter being run (:func:`start_chapter`); None outside a model chapter.
_chapter_model: str | None = None


def start_chapter(model_id: str | None = None) -> None:
    """Set the book's figure style, show tables as :func:`table_html` writes them, and show
    the package's warnings (a skipped image, a leak between folders) in the page: Python
    sends warnings to stderr, which the rendered book leaves out.

    Parameters
    ----------
    model_id : str, optional
        A model chapter's model (its name in ``_toc.yml``). The numbers this chapter glues
        for it are then named without it: ``auc``, ``adapted_auc``, not ``model_1_auc``.
        myst-nb looks a ``{glue:text}`` key up in the page's own notebook, so the keys of
        two chapters never meet, and a copy of a chapter quotes its own numbers with the
        same markdown.
    """
    global _chapter_model
    _chapter_model = model_id
    plots.use_book_style()
    warnings.showwarning = _show_warning_in_page
    try:
        from IPython import get_ipython
    except ImportError:  # not in IPython: nothing displays HTML
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, table_html)
        # Before the inline backend shows (and closes) the cell's figures.
        checks = shell.events.callbacks["post_execute"]
        if _check_figure_labels not in checks:
            checks.insert(0, _check_figure_labels)


#: The words of the page's warning about a figure whose labels overlap (the built book's
#: test looks for them on every page).
FIGURE_LABELS_OVERLAP = "labels of this figure run into each other"


def _check_figure_labels() -> None:
    """Warn in the page about each open figure whose labels overlap
    (:func:`helpers.plots.figure_label_overlaps`)."""
    from matplotlib._pylab_helpers import Gcf

    for manager in Gcf.get_all_fig_managers():
        overlaps = plots.figure_label_overlaps(manager.canvas.figure)
        if overlaps:
            pairs = "; ".join(f"{a!r} and {b!r}" for a, b in overlaps[:5])
            show_warning(f"The {FIGURE_LABELS_OVERLAP}: {pairs}.")


#: An estimate and its interval as the tables write them: ``0.929 (0.908-0.948)``,
#: ``+0.012 (-0.010 to +0.030)``, ``0.91-0.95 (sd 0.01)``, ``0.500 (no interval)``.
ESTIMATE_WITH_INTERVAL = re.compile(
    r"(?<![\w.])(?P<value>[+-]?\d+\.\d+%?(?:-\d+\.\d+)?) (?P<interval>\([^()<>]*\))"
)
_CELL = re.compile(r"(<t[dh][^>]*>)(.*?)(</t[dh]>)", re.S)


def _unit(match: re.Match, *, own_line: bool) -> str:
    value = f'<span class="value">{match["value"]}</span>'
    interval = f'<span class="interval">{match["interval"]}</span>'
    return f'<span class="estimate">{value}{"<br>" if own_line else " "}{interval}</span>'


def table_html(table: pd.DataFrame) -> str:
    """A table's HTML as the book shows it: each estimate with its interval one unit.

    A cell that holds only an estimate and its interval (:data:`ESTIMATE_WITH_INTERVAL`)
    shows the interval on its own line, under the estimate: a table of several such
    columns then fits the page. Elsewhere in a cell the pair stays on one line. Either
    way the book's CSS (``book/_static/code.css``) never breaks an estimate or an
    interval across lines, so an estimate is never read apart from its interval.

    Parameters
    ----------
    table : DataFrame
        Any table; cells are escaped as :meth:`pandas.DataFrame.to_html` escapes them.

    Returns
    -------
    str
        ``<table class="dataframe">`` HTML; each pair is a ``<span class="estimate">`` of
        a ``value`` and an ``interval``.

    Examples
    --------
    >>> t = pd.DataFrame({"AUC": ["0.929 (0.908-0.948)"]}, index=["model_1"])
    >>> '<span class="value">0.929</span><br><span class="interval">' in table_html(t)
    True
    """

    def mark(cell: re.Match) -> str:
        text = cell.group(2)
        alone = ESTIMATE_WITH_INTERVAL.fullmatch(text.strip()) is not None
        text = ESTIMATE_WITH_INTERVAL.sub(lambda m: _unit(m, own_line=alone), text)
        return cell.group(1) + text + cell.group(3)

    return _CELL.sub(mark, table.to_html())


def _glue(key: str, value) -> None:
    """``myst_nb.glue(key, value, display=False)``, the chapter's model id taken off the
    front of ``key`` in a model chapter (:func:`start_chapter`)."""
    from myst_nb import glue

    if _chapter_model and key.startswith(f"{_chapter_model}_"):
        key = key[len(_chapter_model) + 1 :]
    glue(key, value, display=False)


def metrics_table(
    metrics_json: dict, *, keys=("test_at_0.5", "test", "test_image_level")
) -> pd.DataFrame:
    """Test metrics with 95% intervals, one column per threshold, as text ``v (lo-hi)``.

    Intervals are person-level (cluster bootstrap) except in the column marked
    image-level, shown beside them to say how much too narrow image-level intervals are.
    """
    names = {
        "test": "validation-chosen",
        "test_at_0.5": "0.5 (case study)",
        "test_at_youden": "Youden (validation)",
        "test_image_level": "validation-chosen, image-level intervals",
    }
    columns = {}
    for key in keys:
        block = metrics_json[key]
        column = {"threshold": f"{block['threshold']:.3f}"}
        for name in ("auc",) + metrics.RATE_NAMES:
            column[name] = interval_text(block, name)
        for name in ("tp", "fp", "tn", "fn"):
            column[name] = str(block[name])
        columns[names.get(key, key)] = column
    return pd.DataFrame(columns)


def interval_text(block: dict, name: str) -> str:
    value, low, high = block[name], block[f"{name}_ci_low"], block[f"{name}_ci_high"]
    if value is None:
        return "undefined"
    if low is None or high is None:  # no valid interval (F1: see metrics.summary)
        return f"{value:.3f} (no interval)"
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


def glue_metrics(prefix: str, metrics_json: dict) -> None:
    """Glue the chapter's numbers as ``<prefix>_<name>`` for ``{glue:text}`` in the prose.

    Keys: ``_threshold``, ``_target_sensitivity`` (the sensitivity the threshold was chosen
    to reach on validation), and for the test set at the validation threshold ``_auc``,
    ``_sensitivity``, ``_specificity``, ``_ppv``, ``_npv``, ``_accuracy``, ``_f1`` (each
    with ``_lo`` and ``_hi``), ``_tp``, ``_fp``, ``_tn``, ``_fn``; at 0.5 the same with
    ``_05`` after the prefix (``model_1_05_specificity``); ``_val_auc``,
    ``_val_sensitivity``, ``_val_specificity`` on validation.
    """

    _glue(f"{prefix}_threshold", metrics_json["threshold"]["threshold"])
    target = metrics_json["threshold"]["target_sensitivity"]
    _glue(f"{prefix}_target_sensitivity", float(target))
    for name in ("auc", "sensitivity", "specificity"):  # the same threshold on validation
        _glue(f"{prefix}_val_{name}", _float(metrics_json["val"][name]))
    for key, tag in (("test", ""), ("test_at_0.5", "_05")):
        block = metrics_json[key]
        for name in ("auc",) + metrics.RATE_NAMES:
            _glue(f"{prefix}{tag}_{name}", _float(block[name]))
            _glue(f"{prefix}{tag}_{name}_lo", _float(block[f"{name}_ci_low"]))
            _glue(f"{prefix}{tag}_{name}_hi", _float(block[f"{name}_ci_high"]))
        for name in ("tp", "fp", "tn", "fn"):
            _glue(f"{prefix}{tag}_{name}", int(block[name]))


def glue_training(model_id: str, run, *, base_weights: str = "none") -> None:
    """Glue ``<model_id>_epochs``, ``_training_seconds`` and ``_base_weights`` for the prose."""

    _glue(f"{model_id}_epochs", int(run.epochs))
    _glue(f"{model_id}_training_seconds", float(run.training_seconds))
    _glue(f"{model_id}_base_weights", str(base_weights))


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def show_test_results(result, xrays: ChestXrays | None = None, *, per_class: int = 4) -> None:
    """Display a model's test evaluation: tables, reports, figures; glue its numbers.

    Shows, at the case study's threshold 0.5 and at the threshold chosen on validation:
    the metrics with 95% intervals, scikit-learn's classification report, the confusion
    matrices, and the ROC curve with both operating points; given ``xrays``, a grid of
    ``per_class`` test images of each class with score and decision (wrong ones in red).
    """
    import matplotlib.pyplot as plt
    from IPython.display import display

    m = result.metrics
    for message in m.get("warnings", []):
        show_warning(message)
    chosen = m["threshold"]["threshold"]
    y, s = result.test.labels, result.test.scores
    display(metrics_table(m))
    print(
        f"Intervals: {m['test']['interval_method']} (persons: {m['test']['persons']}); the last "
        f"column: {m['test_image_level']['interval_method']}."
    )
    for title, threshold in (
        ("threshold 0.5 (case study)", 0.5),
        (f"threshold {chosen:.3f} (chosen on validation)", chosen),
    ):
        print(f"Classification report at {title}:\n")
        print(metrics.classification_report(y, s, threshold=threshold))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    plots.plot_confusion_matrix(y, s, threshold=0.5, title="threshold 0.5 (case study)", ax=axes[0])
    plots.plot_confusion_matrix(
        y, s, threshold=chosen, title=f"threshold {chosen:.3f} (validation)", ax=axes[1]
    )
    plots.plot_roc(
        y,
        s,
        thresholds={"0.5": 0.5, "validation": chosen},
        label=result.model_id,
        color=plots.model_colours([result.model_id])[result.model_id],
        ax=axes[2],
    )
    fig.tight_layout()
    plt.show()
    if xrays is not None:
        if list(xrays.test.paths) != list(result.test.paths):
            raise ValueError("xrays.test is not the split these predictions were made on")
        picks = sample_indices(y, per_class=per_class, seed=xrays.seed)
        plots.plot_image_grid(
            xrays.test.images[picks],
            y[picks],
            scores=s[picks],
            threshold=chosen,
            titles=[result.test.paths[i].split("/")[-1] for i in picks],
        )
        plt.show()
    glue_metrics(result.model_id, m)


def validation_test_gap(metrics_json: dict) -> pd.DataFrame:
    """The same model and threshold on validation and on test: AUC, sensitivity,
    specificity, PPV and NPV with 95% intervals, and test minus validation."""
    rows = {}
    for name in ("auc", "sensitivity", "specificity", "ppv", "npv"):
        val, test = metrics_json["val"], metrics_json["test"]
        rows[name] = {
            "validation": interval_text(val, name),
            "test": interval_text(test, name),
            "test minus validation": f"{test[name] - val[name]:+.3f}",
        }
    return pd.DataFrame(rows).T


#: model_6's targets on the test set (issue 4), at the threshold chosen on validation.
MODEL_6_TARGETS = {"auc": 0.975, "sensitivity": 0.95, "specificity": 0.85}


#: The column :func:`target_table` adds for :func:`helpers.evaluate.ranking_ceiling`.
CEILING_COLUMN = "threshold read off test (diagnosis)"


def target_table(
    metrics_json: dict,
    targets: dict[str, float] = MODEL_6_TARGETS,
    *,
    ceiling: dict | None = None,
) -> pd.DataFrame:
    """Each target beside the test result (95% CI) and how far the estimate is from it.

    ``ceiling`` (:func:`helpers.evaluate.ranking_ceiling`) adds :data:`CEILING_COLUMN`: the
    sensitivity and specificity at the threshold the same rule would choose on the test
    labels (the AUC needs no threshold, so its cell repeats the test AUC). It is not a result:
    it says whether a better threshold alone could have met a target.
    """
    rows = {}
    for name, target in targets.items():
        value = metrics_json["test"][name]
        rows[name] = {
            "target": target,
            "test (95% CI)": interval_text(metrics_json["test"], name),
            "estimate minus target": f"{value - target:+.3f}",
            "met": "yes" if value >= target else "no",
        }
        if ceiling is not None:
            rows[name][CEILING_COLUMN] = f"{ceiling.get(name, value):.3f}"
    return pd.DataFrame(rows).T


def _prefix(result) -> str:
    return result.metrics["model_id"]


def show_operating_points(result) -> None:
    """Test metrics at the validation-chosen thresholds (target sensitivity, Youden) and at
    0.5; the precision-recall curve; sensitivity for bacterial and viral pneumonia."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    m = result.metrics
    keys = (
        ("test", "test_at_youden", "test_at_0.5")
        if m.get("test_at_youden")
        else ("test", "test_at_0.5")
    )
    display(metrics_table(m, keys=keys))
    target = m["threshold"]["target_sensitivity"]
    thresholds = {
        f"sensitivity {target:g} (validation)": m["thresholds"]["sensitivity"],
        "0.5": 0.5,
    }
    if m["thresholds"].get("youden") is not None:
        thresholds["Youden (validation)"] = m["thresholds"]["youden"]
    plots.plot_precision_recall(result.test.labels, result.test.scores, thresholds=thresholds)
    plt.show()
    kinds = pd.DataFrame(m["sensitivity_by_kind"]).set_index("kind")
    display(
        kinds.assign(
            **{
                "sensitivity (95% CI)": [
                    f"{r.sensitivity:.3f} ({r.ci_low:.3f}-{r.ci_high:.3f})"
                    for r in kinds.itertuples()
                ]
            }
        )[["images", "detected", "sensitivity (95% CI)"]]
    )

    for row in m["sensitivity_by_kind"]:
        _glue(f"{_prefix(result)}_sensitivity_{row['kind']}", float(row["sensitivity"]))
    _glue(
        f"{_prefix(result)}_sensitivity_by_kind",
        sensitivity_by_kind_sentence(m["sensitivity_by_kind"]),
    )


def sensitivity_by_kind_sentence(rows) -> str:
    """One sentence on the sensitivity for bacterial and for viral pneumonia, for the prose.

    The kind comes from the file names (:func:`helpers.metrics.sensitivity_by_kind`); a folder
    whose names do not carry it (a DICOM export, renamed files) gets a sentence saying so.
    """
    by_kind = {row["kind"]: row for row in rows if row["images"] > 0}
    if "bacteria" not in by_kind or "virus" not in by_kind:
        return (
            "The file names of these test images do not say the kind of pneumonia (bacterial "
            "or viral), so the sensitivity is not split by kind."
        )
    return (
        f"At its validation threshold the model detects {by_kind['bacteria']['sensitivity']:.3f} "
        f"of the bacterial and {by_kind['virus']['sensitivity']:.3f} of the viral pneumonias."
    )


def show_calibration(result) -> None:
    """Brier score, ECE and mean score on test as trained, after a temperature and after
    Platt scaling (both fitted on validation), beside the share of PNEUMONIA; the
    reliability diagram of all three; and what the book adopts."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    from helpers import calibration

    block = result.metrics["calibration"]
    t, platt = block["temperature"], block["platt"]
    platt_name = f"Platt {platt['slope']:.2f} x logit {platt['intercept']:+.2f}"
    table = pd.DataFrame(
        {
            "as trained": block["test_before"],
            f"temperature {t:.2f}": block["test_after"],
            platt_name: block["test_platt"],
        }
    ).rename(
        index={
            "brier": "Brier score (test)",
            "ece": f"ECE, {block['n_bins']} bins (test)",
            "mean_score": f"mean score (test; PNEUMONIA share {block['test_prevalence']:.3f})",
        }
    )
    table.loc["validation log loss"] = [
        block["val_log_loss_before"],
        block["val_log_loss_after"],
        block["val_log_loss_platt"],
    ]
    val_mean = float(np.mean(result.val.scores))
    val_share = float(np.mean(result.val.labels))
    print(
        f"Mean score as trained: validation {val_mean:.3f} (PNEUMONIA share {val_share:.3f}), "
        f"test {block['test_before']['mean_score']:.3f} (share {block['test_prevalence']:.3f})."
    )
    display(table.round(4))
    print(f"Adopted: {block['adopted']}.")
    plots.plot_reliability(
        {
            "as trained": calibration.reliability_table(result.test.labels, result.test.scores),
            f"temperature {t:.2f}": calibration.reliability_table(
                result.test.labels, calibration.apply_temperature(result.test.scores, t)
            ),
            "Platt": calibration.reliability_table(
                result.test.labels,
                calibration.apply_platt(result.test.scores, platt["slope"], platt["intercept"]),
            ),
        }
    )
    plt.show()
    prefix = _prefix(result)
    _glue(f"{prefix}_brier", block["test_before"]["brier"])
    _glue(f"{prefix}_ece", block["test_before"]["ece"])
    _glue(f"{prefix}_ece_scaled", block["test_after"]["ece"])
    _glue(f"{prefix}_ece_platt", block["test_platt"]["ece"])
    _glue(f"{prefix}_mean_score", block["test_before"]["mean_score"])
    _glue(f"{prefix}_test_share", block["test_prevalence"])
    _glue(f"{prefix}_val_mean_score", val_mean)
    _glue(f"{prefix}_val_share", val_share)
    _glue(f"{prefix}_temperature", t)


def outcome_groups(result) -> dict[str, np.ndarray]:
    """Test image indices per outcome at the validation threshold, most confident first."""
    labels, scores = result.test.labels, result.test.scores
    called = metrics.predict_labels(scores, result.threshold["threshold"])
    order = {
        "false negative": (labels == 1) & (called == 0),
        "false positive": (labels == 0) & (called == 1),
        "true positive": (labels == 1) & (called == 1),
        "true negative": (labels == 0) & (called == 0),
    }
    out = {}
    for name, mask in order.items():
        index = np.flatnonzero(mask)
        # Most confident first: lowest scores for calls of NORMAL, highest for PNEUMONIA.
        ascending = name in ("false negative", "true negative")
        out[name] = index[np.argsort(scores[index] if ascending else -scores[index], kind="stable")]
    return out


def show_explanations(model, result, xrays: ChestXrays, *, per_group: int = 2) -> None:
    """Grad-CAM heatmaps of the most confident test images of each outcome (FN, FP, TP, TN)."""
    import matplotlib.pyplot as plt

    from helpers.explain import grad_cam

    if np.unique(result.test.scores).size < 2:
        show_warning(
            f"{_prefix(result)} gives every test image the same score: its output does not "
            "depend on the image, so there is nothing for Grad-CAM to show."
        )
        return
    picked, titles = [], []
    for name, index in outcome_groups(result).items():
        for i in index[:per_group]:
            picked.append(i)
            titles.append(
                f"{name}\nscore {result.test.scores[i]:.2f}\n{Path(result.test.paths[i]).name}"
            )
    heatmaps = grad_cam(model, xrays.test.images[picked])
    plots.plot_heatmap_grid(xrays.test.images[picked], heatmaps, titles, ncols=per_group * 2)
    plt.show()


def show_misclassified(result, xrays: ChestXrays, *, limit: int = 12) -> None:
    """The misclassified test images at the validation threshold, false negatives first
    (most confidently wrong first), with their scores and file names."""
    import matplotlib.pyplot as plt

    groups = outcome_groups(result)
    wrong = np.concatenate([groups["false negative"], groups["false positive"]])
    print(
        f"{len(groups['false negative'])} false negatives and "
        f"{len(groups['false positive'])} false positives of {len(result.test.labels)} test "
        f"images; showing {min(limit, len(wrong))}"
    )
    if len(wrong) == 0:
        return
    shown = wrong[:limit]
    plots.plot_image_grid(
        xrays.test.images[shown],
        result.test.labels[shown],
        scores=result.test.scores[shown],
        threshold=result.threshold["threshold"],
        titles=[Path(result.test.paths[i]).name for i in shown],
    )
    plt.show()


def show_adapted(standard, adapted) -> None:
    """The standard evaluation beside the one adapted to each folder's images (AdaBN,
    :func:`helpers.evaluate.adapted_to_each_folder`): threshold, AUC, sensitivity and
    specificity with person-level intervals; the validation and test score histograms
    before and after; glue ``<model_id>_adapted_*`` for the prose (:func:`glue_metrics`)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    rows = {}
    for label, evaluation in (
        ("standard (headline)", standard),
        ("adapted to each folder's images, without their labels", adapted),
    ):
        block = evaluation.metrics["test"]
        rows[label] = {
            "threshold (validation)": f"{block['threshold']:.3f}",
            **{name: interval_text(block, name) for name in ("auc", "sensitivity", "specificity")},
        }
    display(pd.DataFrame(rows).T)
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True)
    for row, evaluation, label in ((0, standard, "standard"), (1, adapted, "adapted")):
        for col, predictions in ((0, evaluation.val), (1, evaluation.test)):
            ax = axes[row, col]
            plots.plot_score_histogram(
                predictions.labels, predictions.scores, threshold=evaluation.chosen, ax=ax
            )
            ax.set_title(f"{label}: {'validation' if col == 0 else 'test'} scores")
    fig.tight_layout()
    plt.show()
    glue_metrics(adapted.model_id, adapted.metrics)


def show_probe(evaluation, probe) -> None:
    """The chapter's model beside a logistic regression fitted to convergence on the same
    frozen features (:func:`helpers.finetune.frozen_feature_probe`): threshold, AUC,
    sensitivity and specificity with person-level intervals; glue the probe's numbers."""
    from IPython.display import display

    rows = {}
    for label, result in (
        (f"{evaluation.model_id} (the case study's head)", evaluation),
        (
            f"logistic regression on the same features (C {probe.metrics['probe']['C']:g}, "
            "chosen on validation)",
            probe,
        ),
    ):
        block = result.metrics["test"]
        rows[label] = {
            "validation AUC": f"{result.metrics['val']['auc']:.4f}",
            "threshold (validation)": f"{block['threshold']:.3f}",
            **{name: interval_text(block, name) for name in ("auc", "sensitivity", "specificity")},
        }
    display(pd.DataFrame(rows).T)
    glue_metrics(probe.model_id, probe.metrics)


# --- Validation choices: model_6's ablation, model_7's search, the gap ------------------


def with_interval_column(table: pd.DataFrame, *, position: int = 0) -> pd.DataFrame:
    """A validation table for display: "val AUC", "val AUC low" and "val AUC high" as one
    text column "val AUC (95% CI)" at ``position`` (and, when the table has them, the paired
    difference to the first row or to the recipe as "AUC - first row (95% CI)" or "AUC -
    recipe (95% CI)" after it), the other numbers rounded to 4 places."""
    groups = [
        ("val AUC", "val AUC (95% CI)", "{:.4f}"),
        ("AUC - first row", "AUC - first row (95% CI)", "{:+.4f}"),
        ("AUC - recipe", "AUC - recipe (95% CI)", "{:+.4f}"),
        ("AUC - all members", "AUC - all members (95% CI)", "{:+.4f}"),
    ]
    shown = table.copy()
    present = [g for g in groups if all(f"{g[0]}{s}" in table for s in ("", " low", " high"))]
    for offset, (name, title, number) in enumerate(present):
        columns = [name, f"{name} low", f"{name} high"]
        shown = shown.drop(columns=columns)
        shown.insert(
            position + offset,
            title,
            [
                f"{number.format(r[name])} "
                f"({number.format(r[columns[1]])} to {number.format(r[columns[2]])})"
                for _, r in table.iterrows()
            ],
        )
    return shown.round(4)


#: The columns of a validation table (:func:`with_interval_column`) that the choice rule
#: reads (:func:`helpers.ablation.decide`), shown first; the others follow in a second table.
CHOICE_COLUMNS = (
    "val AUC (95% CI)",
    "AUC - first row (95% CI)",
    "AUC - recipe (95% CI)",
    "AUC - all members (95% CI)",
    "AUC - first row p",
    "AUC - recipe p",
    "AUC - all members p",
    "AUC - first row p (Holm)",
    "AUC - recipe p (Holm)",
    "AUC - all members p (Holm)",
    "adoptable",
)


def choice_and_details(
    shown: pd.DataFrame, *, also: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a validation table for display into what the choice rule reads
    (:data:`CHOICE_COLUMNS`) and the rest, both indexed by row name: one table of about
    ten columns of estimates with intervals does not fit the page at the theme's size.
    Columns whose names start with one of ``also`` join the first table too."""
    choice = [c for c in CHOICE_COLUMNS if c in shown.columns]
    choice += [c for c in shown.columns if c.startswith(also) and c not in choice]
    details = [c for c in shown.columns if c not in choice]
    return shown[choice], shown[details]


def not_adopted_text(table: pd.DataFrame) -> str:
    """The rows measured but not adoptable (``adoptable`` other than "yes"), each with its
    validation AUC against the recipe's (the first row), for the chapter's prose."""
    recipe = table["val AUC"].iloc[0]
    rows = table[table["adoptable"] != "yes"] if "adoptable" in table else table.iloc[:0]
    if rows.empty:
        return "every row could be adopted"
    return "; ".join(
        f"{name}: {row['val AUC']:.4f} ({row['val AUC'] - recipe:+.4f} against the recipe)"
        for name, row in rows.iterrows()
    )


def show_ablation(ablation) -> None:
    """Display model_6's ablation (:func:`helpers.ablation.choose_on_validation`): each
    variant's validation AUC with its 95% interval and its paired difference to the recipe
    (:func:`with_interval_column`); a warning instead when no ablation ran."""
    from IPython.display import display

    if not ablation.ran:
        show_warning(
            "ablation_epochs is 0: no ablation ran, and model_6 is trained with its recipe "
            "as registered, not as chosen on validation."
        )
        return
    for part in choice_and_details(with_interval_column(ablation.table, position=1)):
        display(part)


def glue_ablation(ablation, *, prefix: str = "model_6_ablation") -> None:
    """Glue the ablation's choice for the prose: ``<prefix>_choice``, ``_image_size``,
    ``_epochs``, ``_variants``, ``_verdict`` (the choice rule's statement with its numbers,
    :attr:`helpers.ablation.Ablation.decision`) and ``_not_adopted``
    (:func:`not_adopted_text`); nothing when no ablation ran."""

    if not ablation.ran:
        return
    table, choice = ablation.table, ablation.choice.name
    decision = ablation.decision
    _glue(f"{prefix}_choice", choice)
    _glue(f"{prefix}_image_size", ablation.image_size)
    _glue(f"{prefix}_epochs", ablation.epochs)
    _glue(f"{prefix}_variants", len(table))
    _glue(f"{prefix}_verdict", decision.statement)
    _glue(f"{prefix}_not_adopted", not_adopted_text(table))


def show_search(search) -> None:
    """Display model_7's validation search (:func:`helpers.finetune.search_on_validation`):
    each configuration's validation AUC with its 95% interval and its paired difference to
    the recipe; a warning instead when no search ran."""
    from IPython.display import display

    if not search.ran:
        show_warning(
            "search_epochs is 0: no validation search ran, and model_7 is fine-tuned with the "
            f"guide's recipe ({search.choice.name}), not a configuration chosen on validation."
        )
        return
    # The search's settings fill its second table: its specificity goes with the rule's.
    shown = with_interval_column(search.table)
    for part in choice_and_details(shown, also=("val specificity at",)):
        display(part)


def glue_search(search, *, prefix: str = "model_7") -> None:
    """Glue ``<prefix>_head_epochs``, ``_search_epochs``, ``_choice`` (the configuration
    chosen, or the recipe when no search ran), ``_recipe`` (the guide's recipe) and
    ``_verdict`` (the choice rule's statement with its numbers,
    :attr:`helpers.finetune.Search.decision`; when no search ran, a sentence saying so) for
    the prose."""

    if search.ran:
        recipe, verdict = search.decision.recipe, search.decision.statement
    else:  # no search: the choice is the recipe
        recipe = search.choice.name
        verdict = (
            "no validation search ran (search_epochs is 0), so the guide's recipe is trained "
            "as registered"
        )
    _glue(f"{prefix}_head_epochs", int(search.head_epochs))
    _glue(f"{prefix}_search_epochs", int(search.search_epochs))
    _glue(f"{prefix}_choice", search.choice.name)
    _glue(f"{prefix}_recipe", recipe)
    _glue(f"{prefix}_verdict", verdict)


def gap_shown(gap: pd.DataFrame) -> pd.DataFrame:
    """:func:`helpers.ablation.gap_table` for display: images, and the AUC with its
    person-level 95% interval as one text column."""
    shown = gap.assign(
        **{
            "AUC (95% CI, person-level)": [
                f"{r['AUC']:.4f} ({r['AUC low']:.4f}-{r['AUC high']:.4f})"
                for _, r in gap.iterrows()
            ]
        }
    )[["images", "AUC (95% CI, person-level)"]]
    return shown.astype({"images": int})


def show_gap(gap: pd.DataFrame) -> None:
    """Display the validation-test gap (:func:`helpers.ablation.gap_table`, shown by
    :func:`gap_shown`)."""
    from IPython.display import display

    display(gap_shown(gap))


def glue_gap(gap: pd.DataFrame, model_id: str) -> None:
    """Glue ``<model_id>_optimism`` (selection half minus check half), ``_shift`` (check
    half minus test) and ``_check_auc`` from :func:`helpers.ablation.gap_table`."""

    auc = gap["AUC"].astype(float)
    optimism, shift = auc.iloc[0] - auc.iloc[1], auc.iloc[1] - auc.iloc[2]
    _glue(f"{model_id}_optimism", float(optimism))
    _glue(f"{model_id}_shift", float(shift))
    _glue(f"{model_id}_check_auc", float(auc.iloc[1]))
