"""One function per figure kind. Each takes ``ax=None`` and returns the axes it drew on.

Call :func:`use_book_style` once at the top of a notebook; importing this module changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from helpers import chapters
from helpers.config import CLASS_NAMES

#: One colour per class, used by every chapter.
CLASS_COLOURS = {"NORMAL": "#1b9e77", "PNEUMONIA": "#d95f02"}
#: The models' colours, in the order they are given out: matplotlib's tab10 without its grey
#: (the chance line's), black, then tab20's light blue, orange and green.
MODEL_PALETTE: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#000000",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
)


def model_colours(
    model_ids: Sequence[str], book_models: Sequence[str] | None = None
) -> dict[str, str]:
    """A distinct colour for each of ``model_ids``, the same in every chapter.

    The book's model chapters take :data:`MODEL_PALETTE`'s colours in the order
    ``_toc.yml`` lists them (model_1 blue, model_2 orange, ...), so a model has one colour
    in its chapter and in the comparison; any other model id (a variant a student adds)
    takes the next colour left. A model without a colour used to get matplotlib's next
    cycle colour, which restarts at blue on every new axes: two curves in one colour.

    Parameters
    ----------
    model_ids : sequence of str
        The models of one figure.
    book_models : sequence of str, optional
        The book's model chapters (:func:`helpers.chapters.model_ids` if not given).

    Returns
    -------
    dict
        Model id to colour (hex).

    Raises
    ------
    ValueError
        If the book's models and the others need more colours than the palette has.
    """
    book_models = list(chapters.model_ids() if book_models is None else book_models)
    order = [*book_models, *(m for m in model_ids if m not in book_models)]
    if len(order) > len(MODEL_PALETTE):
        extra = order[len(MODEL_PALETTE)]
        raise ValueError(
            f"no colour left for {extra!r}: helpers.plots.MODEL_PALETTE has "
            f"{len(MODEL_PALETTE)} colours for {len(book_models)} model chapters and "
            f"{len(order) - len(book_models)} other models; add colours there"
        )
    given = dict(zip(order, MODEL_PALETTE))
    return {m: given[m] for m in model_ids}


def use_book_style() -> None:
    """Set the book's matplotlib style (sizes, grid, resolution)."""
    import matplotlib as mpl

    # Tables show whole cells: the conclusions and interval columns are long text.
    pd.set_option("display.max_colwidth", None)
    mpl.rcParams.update(
        {
            "figure.figsize": (6.0, 4.0),
            "figure.dpi": 100,
            "savefig.dpi": 120,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.size": 10,
        }
    )


def _axes(ax, figsize=None):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _finish_unit_square(ax, xlabel: str, ylabel: str, legend_loc: str, *, equal: bool = True):
    """Label a plot whose axes both run over [0, 1] (ROC, precision-recall, reliability)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    if equal:
        ax.set_aspect("equal")
    ax.legend(loc=legend_loc, fontsize=8)
    return ax


def plot_training_curves(history: pd.DataFrame | dict, *, axes=None):
    """Loss and accuracy per epoch, training against validation, side by side.

    Parameters
    ----------
    history : DataFrame or dict
        Keras' ``History.history`` (keys ``loss``, ``val_loss``, ``accuracy``,
        ``val_accuracy``), optionally with an ``epoch`` column.
    axes : pair of Axes, optional

    Returns
    -------
    numpy.ndarray of two Axes
    """
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    epochs = frame["epoch"] if "epoch" in frame else np.arange(1, len(frame) + 1)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, title in zip(axes, ("loss", "accuracy"), ("Loss", "Accuracy")):
        if metric not in frame:
            raise KeyError(f"history has no {metric!r} column; columns: {list(frame.columns)}")
        ax.plot(epochs, frame[metric], "o-", label="training")
        if f"val_{metric}" in frame:
            ax.plot(epochs, frame[f"val_{metric}"], "s--", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    return np.asarray(axes)


def plot_roc(
    y_true: Iterable[int],
    scores: Iterable[float],
    *,
    thresholds: dict[str, float] | None = None,
    label: str | None = None,
    color: str | None = None,
    ax=None,
):
    """ROC curve, with operating points marked.

    Parameters
    ----------
    y_true, scores
        Labels (1 = PNEUMONIA) and probabilities of PNEUMONIA.
    thresholds : dict of name -> threshold, optional
        Each is marked on the curve with its sensitivity and specificity.
    label : str, optional
        Legend label; the AUC is appended.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    from helpers.metrics import predict_labels

    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=float)
    ax = _axes(ax, figsize=(4.8, 4.5))
    fpr, tpr, _ = roc_curve(y_true, scores)
    auc = roc_auc_score(y_true, scores)
    text = f"AUC {auc:.3f}" if label is None else f"{label} (AUC {auc:.3f})"
    ax.plot(fpr, tpr, color=color, label=text)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    markers = iter("o^sDv")
    for name, threshold in (thresholds or {}).items():
        predicted = predict_labels(scores, threshold)
        sens = predicted[y_true == 1].mean()
        spec = 1 - predicted[y_true == 0].mean()
        ax.plot(
            1 - spec,
            sens,
            next(markers),
            ms=8,
            color=color or "black",
            mfc="white",
            label=f"{name}: t={threshold:.3g}, sens {sens:.2f}, spec {spec:.2f}",
        )
    return _finish_unit_square(
        ax,
        "1 - specificity (false positive rate)",
        "sensitivity (true positive rate)",
        "lower right",
    )


def plot_confusion_matrix(
    y_true: Iterable[int],
    scores: Iterable[float],
    *,
    threshold: float,
    title: str | None = None,
    ax=None,
):
    """Confusion matrix at ``threshold``: counts and row percentages, classes named."""
    from helpers.metrics import confusion_counts, predict_labels

    counts = confusion_counts(y_true, predict_labels(scores, threshold))
    matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
    ax = _axes(ax, figsize=(4.2, 3.8))
    ax.imshow(matrix, cmap="Blues")
    ax.grid(False)
    rows = matrix.sum(axis=1, keepdims=True)
    for (i, j), value in np.ndenumerate(matrix):
        share = value / rows[i, 0] if rows[i, 0] else float("nan")
        ax.text(
            j,
            i,
            f"{value}\n{share:.0%}",
            ha="center",
            va="center",
            color="white" if value > matrix.max() / 2 else "black",
        )
    ax.set_xticks([0, 1], [f"pred. {c}" for c in CLASS_NAMES])
    ax.set_yticks([0, 1], [f"true {c}" for c in CLASS_NAMES])
    ax.set_title(title or f"threshold {threshold:.3g}")
    return ax


def plot_image_grid(
    images: np.ndarray,
    labels: Sequence[int],
    *,
    scores: Sequence[float] | None = None,
    threshold: float | None = None,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    axes=None,
):
    """A grid of X-rays titled with true label and, given scores, score and prediction.

    Parameters
    ----------
    images : array, shape (n, h, w, 1 or 3)
    labels : sequence of int
    scores : sequence of float, optional
        Probabilities of PNEUMONIA; with ``threshold`` the predicted class is shown, and a
        wrong prediction is titled in red.
    titles : sequence of str, optional
        Extra first title line per image (e.g. the file name).
    """
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    n = len(images)
    if n == 0:
        raise ValueError("no images to show")
    nrows = int(np.ceil(n / ncols))
    if axes is None:
        _, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.7 * nrows), squeeze=False)
    axes = np.asarray(axes).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= n:
            continue
        image = images[i]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        lines = [titles[i]] if titles is not None else []
        lines.append(f"true {CLASS_NAMES[int(labels[i])]}")
        colour = "black"
        if scores is not None:
            line = f"score {scores[i]:.2f}"
            if threshold is not None:
                predicted = int(scores[i] >= threshold)
                line += f" -> {CLASS_NAMES[predicted]}"
                colour = "black" if predicted == int(labels[i]) else "red"
            lines.append(line)
        ax.set_title("\n".join(lines), fontsize=8, color=colour)
    return axes


def plot_class_counts(table: pd.DataFrame, *, ax=None):
    """Images per split and class, as grouped bars (from a split table)."""
    counts = (
        table.assign(cls=table["label"].map(dict(enumerate(CLASS_NAMES))))
        .groupby(["split", "cls"])
        .size()
        .unstack("cls")
        .reindex(["train", "val", "test"], fill_value=0)  # a missing val/ shows as zeros
    )
    ax = _axes(ax, figsize=(6, 3.5))
    counts.plot.bar(ax=ax, color=[CLASS_COLOURS[c] for c in counts.columns], rot=0)
    for container in ax.containers:
        ax.bar_label(container, fontsize=8)
    ax.set_ylabel("images")
    ax.set_xlabel("")
    return ax


def plot_score_histogram(
    y_true: Iterable[int], scores: Iterable[float], *, threshold: float | None = None, ax=None
):
    """Distribution of scores per true class, with the threshold as a line."""
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=float)
    ax = _axes(ax)
    bins = np.linspace(0, 1, 41)
    for label, name in enumerate(CLASS_NAMES):
        ax.hist(
            scores[y_true == label],
            bins=bins,
            alpha=0.6,
            label=f"true {name}",
            color=CLASS_COLOURS[name],
        )
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel("score (probability of PNEUMONIA)")
    ax.set_ylabel("images")
    ax.legend()
    return ax


def plot_roc_overlay(predictions: dict[str, pd.DataFrame], *, ax=None):
    """ROC curves of several models on the same images, one colour per model.

    Parameters
    ----------
    predictions : dict of model id -> DataFrame with ``label`` and ``score``
    """
    ax = _axes(ax, figsize=(5.5, 5.2))
    colours = model_colours(list(predictions))
    paths = None
    for model_id, frame in predictions.items():
        if paths is not None and list(frame["path"]) != paths:
            raise ValueError(
                f"{model_id}'s predictions are not on the same images, in the same order"
            )
        paths = list(frame["path"])
        plot_roc(frame["label"], frame["score"], label=model_id, color=colours[model_id], ax=ax)
    return ax


def plot_precision_recall(
    y_true: Iterable[int],
    scores: Iterable[float],
    *,
    thresholds: dict[str, float] | None = None,
    ax=None,
):
    """Precision (PPV) against recall (sensitivity), with operating points marked.

    The dotted line is the share of PNEUMONIA among the images: the precision of a model
    that does not rank at all.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from helpers.metrics import predict_labels

    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=float)
    ax = _axes(ax, figsize=(4.8, 4.5))
    precision, recall, _ = precision_recall_curve(y_true, scores)
    ax.plot(
        recall, precision, label=f"average precision {average_precision_score(y_true, scores):.3f}"
    )
    ax.axhline(y_true.mean(), ls=":", color="grey", lw=1, label=f"prevalence {y_true.mean():.3f}")
    markers = iter("o^sDv")
    for name, threshold in (thresholds or {}).items():
        predicted = predict_labels(scores, threshold)
        sens = predicted[y_true == 1].mean()
        ppv = y_true[predicted == 1].mean() if predicted.any() else float("nan")
        ax.plot(
            sens,
            ppv,
            next(markers),
            ms=8,
            color="black",
            mfc="white",
            label=f"{name}: t={threshold:.3g}, sens {sens:.2f}, PPV {ppv:.2f}",
        )
    return _finish_unit_square(
        ax, "recall (sensitivity)", "precision (PPV)", "lower left", equal=False
    )


def plot_reliability(curves: dict[str, pd.DataFrame], *, ax=None):
    """Reliability diagram: mean score against fraction of PNEUMONIA per score bin.

    Parameters
    ----------
    curves : dict of name -> table from :func:`helpers.calibration.reliability_table`
        One line per entry (e.g. before and after temperature scaling); marker area
        follows the number of images in the bin.
    """
    ax = _axes(ax, figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect calibration")
    for (name, table), marker in zip(curves.items(), "os^D"):
        sizes = 10 + 200 * table["images"] / max(table["images"].sum(), 1)
        (line,) = ax.plot(table["mean_score"], table["fraction_positive"], "-", label=name)
        ax.scatter(
            table["mean_score"],
            table["fraction_positive"],
            s=sizes,
            marker=marker,
            color=line.get_color(),
            zorder=3,
        )
    return _finish_unit_square(
        ax, "mean score in bin", "fraction of PNEUMONIA in bin", "upper left"
    )


def plot_heatmap_grid(
    images: np.ndarray,
    heatmaps: np.ndarray,
    titles: Sequence[str],
    *,
    ncols: int = 4,
    axes=None,
):
    """X-rays with their Grad-CAM heatmaps laid over them (see :mod:`helpers.explain`)."""
    import matplotlib.pyplot as plt

    from helpers.explain import overlay

    images = np.asarray(images)
    if len(images) == 0:
        raise ValueError("no images to show")
    nrows = int(np.ceil(len(images) / ncols))
    if axes is None:
        _, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.8 * nrows), squeeze=False)
    axes = np.asarray(axes).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < len(images):
            ax.imshow(overlay(images[i], heatmaps[i]))
            ax.set_title(titles[i], fontsize=8)
    return axes


def plot_forest(table: pd.DataFrame, *, seeds: pd.DataFrame | None = None, ax=None):
    """Forest plot: each model's AUC, sensitivity and specificity with its interval.

    One panel per metric, one row per model (top to bottom in the table's order), a dot
    at the point value and a bar over the interval. Reading a comparison off overlapping
    bars is not a test: compare models by the interval of their difference
    (:func:`helpers.bootstrap.paired_person_bootstrap`). With ``seeds``, each value of a
    model trained with several seeds is drawn as an open diamond just below its row: the
    training noise beside the test-set noise of the bar.

    Parameters
    ----------
    table : DataFrame
        Index: model ids; columns ``auc``, ``sensitivity``, ``specificity``, each with
        ``_ci_low`` and ``_ci_high`` (from :func:`helpers.bootstrap.interval_table`, or
        rows of :func:`helpers.metrics.summary`). ``table.attrs["method"]``, when set,
        becomes the figure's title. A NaN value or interval is left out of the panel.
    seeds : DataFrame, optional
        Indexed by ``(model, seed)`` with columns ``auc``, ``sensitivity``,
        ``specificity``: each seed's values (:func:`helpers.replicates.seeds_by_model`);
        models not in ``table`` are refused.
    ax : sequence of three Axes, optional
        The panels to draw on; new ones side by side if None.

    Returns
    -------
    numpy.ndarray of three Axes

    Raises
    ------
    ValueError
        If the table is empty, lacks a column, or ``ax`` is not three axes; if ``seeds``
        lacks a column or names a model the table does not have.
    """
    import matplotlib.pyplot as plt

    names = {"auc": "AUC", "sensitivity": "sensitivity", "specificity": "specificity"}
    needed = [f"{n}{end}" for n in names for end in ("", "_ci_low", "_ci_high")]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks the columns {missing}; it has {list(table.columns)}")
    if table.empty:
        raise ValueError("table has no rows: no model to plot")
    if seeds is not None and len(seeds):
        lacking = [n for n in names if n not in seeds.columns]
        if lacking:
            raise ValueError(f"seeds lacks the columns {lacking}; it has {list(seeds.columns)}")
        unknown = sorted(set(seeds.index.get_level_values(0)) - {str(m) for m in table.index})
        if unknown:
            raise ValueError(f"seeds names models the table does not have: {unknown}")
    if ax is None:
        _, ax = plt.subplots(1, 3, figsize=(10, 0.5 * len(table) + 1.6), sharey=True)
    axes = np.ravel(np.asarray(ax, dtype=object))
    if axes.size != 3:
        raise ValueError(f"ax must be three Axes (AUC, sensitivity, specificity), got {axes.size}")
    rows = np.arange(len(table))[::-1]  # the first model at the top
    colours = model_colours([str(m) for m in table.index])
    for panel, (name, title) in zip(axes, names.items()):
        values = table[[name, f"{name}_ci_low", f"{name}_ci_high"]].to_numpy(dtype=float)
        for y, model_id, (value, low, high) in zip(rows, table.index, values):
            if np.isnan([value, low, high]).any():
                continue
            colour = colours[str(model_id)]
            # A line from low to high, not error bars: a percentile interval need not
            # hold its point value, and error bars cannot be negative.
            panel.plot([low, high], [y, y], "-|", color=colour, lw=1.5)
            panel.plot([value], [y], "o", color=colour)
            if seeds is not None and str(model_id) in set(seeds.index.get_level_values(0)):
                values_over_seeds = seeds.loc[str(model_id), name].to_numpy(dtype=float)
                panel.plot(
                    values_over_seeds,
                    np.full(values_over_seeds.size, y - 0.25),
                    "d",
                    mfc="none",
                    color=colour,
                    ms=5,
                )
        panel.set_title(title)
        panel.set_yticks(rows, [str(m) for m in table.index])
        panel.set_ylim(-0.6, len(table) - 0.4)
    # One label under the middle panel: three of them, each as wide as a panel, ran into
    # each other (figure_label_overlaps).
    axes[1].set_xlabel(
        "point and interval; diamonds: each seed"
        if seeds is not None and len(seeds)
        else "point and interval"
    )
    if table.attrs.get("method"):
        axes[0].figure.suptitle(table.attrs["method"], fontsize=9)
    return axes


def figure_label_overlaps(figure) -> list[tuple[str, str]]:
    """The pairs of a figure's labels that run into each other, as the figure is laid out.

    Every visible tick label (of the ticks inside the view), axis label and title of every
    axes, and the figure's title and axis labels, are drawn and their bounding boxes
    compared: a figure of this module must give none.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        A figure, laid out as it will be saved.

    Returns
    -------
    list of tuple of str
        The texts of each pair whose boxes intersect; empty when no labels overlap.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> _ = ax.set_xlabel("time"), ax.set_ylabel("loss")
    >>> figure_label_overlaps(fig)
    []
    >>> plt.close(fig)
    """
    renderer = figure.canvas.get_renderer()
    figure.draw_without_rendering()
    texts = [t for t in (figure._suptitle, figure._supxlabel, figure._supylabel) if t is not None]
    for ax in figure.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            low, high = min(low, high), max(low, high)
            for tick in axis.get_major_ticks():
                if low <= tick.get_loc() <= high:
                    texts += [tick.label1, tick.label2]
    texts = [t for t in texts if t.get_visible() and t.get_text().strip()]
    boxes = [t.get_window_extent(renderer) for t in texts]
    return [
        (texts[i].get_text(), texts[j].get_text())
        for i in range(len(texts))
        for j in range(i + 1, len(texts))
        if boxes[i].overlaps(boxes[j])
    ]
