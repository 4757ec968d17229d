"""The steps every model chapter takes, so that the notebooks only tell the story.

A model chapter is: parameters -> :func:`setup` -> :func:`load_data` -> :func:`build`
-> :func:`fit` -> training curves -> :func:`evaluate` (threshold on validation, one test
pass, results written) -> :func:`report` (tables, figures and glued numbers).

Parameters can be overridden from the environment, for quick CI runs of the notebooks
(``pytest --nbval-lax`` cannot pass parameters): ``BOOK_EPOCHS``, ``BOOK_IMAGE_SIZE``,
``BOOK_BATCH_SIZE``, ``BOOK_SEED``, ``BOOK_DATA_DIR``, ``BOOK_RESULTS_DIR``,
``BOOK_BASE_WEIGHTS``, ``BOOK_ON_BAD_IMAGE`` and ``BOOK_STRATEGY`` replace the values of the notebook's
``parameters`` cell. Any other ``BOOK_*`` variable is an error (a misspelt override would
otherwise be ignored silently), and so is a parameter papermill injects that the notebook does
not declare.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers import config, metrics, plots
from helpers.data import ChestXrays, check_data_dir, load_chest_xrays

#: Parameters a chapter may take, their types, and the environment overrides.
PARAMETER_TYPES: dict[str, type] = {
    "data_dir": str,
    "results_dir": str,
    "image_size": int,
    "epochs": int,
    "batch_size": int,
    "seed": int,
    "base_weights": str,
    "target_sensitivity": float,
    "on_bad_image": str,
    "strategy": str,
    "ablation_epochs": int,
    "ablation_image_size": int,
}
ENV_PREFIX = "BOOK_"
#: ``BOOK_*`` variables that are not parameter overrides.
OTHER_BOOK_VARIABLES = frozenset({"BOOK_HTML_DIR", "BOOK_REQUIRE_BROWSER"})


def _check_book_variables() -> None:
    allowed = {ENV_PREFIX + name.upper() for name in PARAMETER_TYPES} | OTHER_BOOK_VARIABLES
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in allowed)
    if unknown:
        raise ValueError(
            f"unknown environment variable(s) {', '.join(unknown)}; the overrides are "
            f"{', '.join(sorted(ENV_PREFIX + n.upper() for n in PARAMETER_TYPES))}"
        )


def _papermill_injected_names() -> set[str]:
    """Names assigned in the cell papermill injects (it starts with the line ``# Parameters``)."""
    import ast

    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - outside IPython
        return set()
    shell = get_ipython()
    if shell is None:
        return set()
    names: set[str] = set()
    for source in shell.user_ns.get("In", []):
        if source.splitlines()[:1] != ["# Parameters"]:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _env_overrides(names) -> dict[str, Any]:
    out = {}
    for name in names:
        raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        kind = PARAMETER_TYPES[name]
        if name == "base_weights" and raw.lower() in ("none", "null", ""):
            out[name] = None
            continue
        try:
            out[name] = kind(raw)
        except ValueError:
            raise ValueError(
                f"environment variable {ENV_PREFIX + name.upper()}={raw!r} is not a valid "
                f"{kind.__name__}"
            ) from None
    return out


def setup(model_id: str | None = None, **values: Any) -> dict[str, Any]:
    """Check a chapter's parameters, apply ``BOOK_*`` overrides, and set the plot style.

    Parameters
    ----------
    model_id : str or None
        The chapter's model (None for chapters that train nothing).
    **values
        The parameters cell's values: ``data_dir``, ``results_dir``, ``image_size``,
        ``epochs``, ``batch_size``, ``seed`` and, for models 4-5, ``base_weights``.
        ``data_dir=None`` is the embedded data, ``results_dir=None`` is ``results/``.

    Returns
    -------
    dict
        The checked parameters (paths resolved), with ``model_id``.

    Raises
    ------
    ValueError
        For an unknown name or an impossible value, before any work starts.
    """
    unknown = sorted(set(values) - set(PARAMETER_TYPES))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown}; allowed: {', '.join(PARAMETER_TYPES)}"
        )
    injected = sorted(_papermill_injected_names() - set(values))
    if injected:
        raise ValueError(
            f"papermill passed parameter(s) {injected} that this notebook does not declare; "
            f"it declares: {', '.join(values)}"
        )
    _check_book_variables()
    params = {**values, **_env_overrides(values)}
    if model_id is not None:
        from helpers.models import get_spec

        get_spec(model_id)
    # The runner's value rules (helpers.book.RULES), so that a value the runner refuses is
    # refused here in the same words, and the other way round.
    from helpers.book import RULES

    for name, value in params.items():
        if name == "data_dir" or (name == "results_dir" and value is None) or name not in RULES:
            continue  # data_dir: check_data_dir below says what is wrong with the folder
        problem = RULES[name](value)
        if problem:
            raise ValueError(f"{name} must be {problem}, got {value!r}")
    if "data_dir" in params:
        params["data_dir"] = str(check_data_dir(params["data_dir"]))
    if "results_dir" in params:
        results = params["results_dir"]
        params["results_dir"] = str(Path(results).resolve() if results else config.DEFAULT_RESULTS_DIR)
    plots.use_book_style()
    params["model_id"] = model_id
    return params


def show_parameters(params: dict[str, Any]) -> pd.DataFrame:
    """The parameters as a one-column table (for display)."""
    return pd.DataFrame({"value": {k: str(v) for k, v in params.items()}})


def load_data(params: dict[str, Any], *, color_mode: str | None = None) -> ChestXrays:
    """Load the person-aware split at the chapter's image size; write ``split.csv``.

    ``color_mode`` None is the chapter's model's (grayscale for model_6, RGB otherwise).

    Images skipped with ``on_bad_image="skip"`` are named in a warning shown in the
    chapter itself (Python warnings go to stderr, which the rendered book leaves out).
    """
    import warnings

    from helpers.data import DataWarning

    if color_mode is None:
        from helpers.models import get_spec

        model_id = params.get("model_id")
        color_mode = get_spec(model_id).color_mode if model_id else config.COLOR_MODE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        xrays = _load(params, color_mode)
    for warning in caught:
        if issubclass(warning.category, DataWarning):
            _display_warning(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return xrays


def _load(params: dict[str, Any], color_mode: str) -> ChestXrays:
    return load_chest_xrays(
        params.get("data_dir"),
        image_size=params.get("image_size", config.IMAGE_SIZE),
        color_mode=color_mode,
        seed=params.get("seed", config.SEED),
        results_dir=params.get("results_dir"),
        on_bad_image=params.get("on_bad_image", "stop"),
    )


def split_summary(xrays: ChestXrays) -> pd.DataFrame:
    """Images, persons and PNEUMONIA share per split."""
    rows = []
    for name in ("train", "val", "test"):
        part = xrays.table[xrays.table["split"] == name]
        rows.append(
            {
                "split": name,
                "images": len(part),
                "NORMAL": int((part["label"] == 0).sum()),
                "PNEUMONIA": int((part["label"] == 1).sum()),
                "PNEUMONIA share": round(float(part["label"].mean()), 3),
                "persons / studies": part["group"].nunique(),
            }
        )
    return pd.DataFrame(rows).set_index("split")


def build(params: dict[str, Any], xrays: ChestXrays, *, spec=None):
    """Seed, build and compile the chapter's model; warn visibly if ImageNet is missing.

    ``spec`` replaces the registered :class:`~helpers.models.ModelSpec` (model_6 is built
    with the variant its ablation chose).
    """
    from helpers.train import build as build_seeded

    built = build_seeded(
        params["model_id"],
        xrays,
        seed=params.get("seed", config.SEED),
        base_weights=params.get("base_weights", "imagenet"),
        strategy=params.get("strategy", "default"),
        spec=spec,
    )
    for message in built.messages:
        _display_warning(message)
    return built


def _display_warning(message: str) -> None:
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


def fit(params: dict[str, Any], built, xrays: ChestXrays):
    """Train with the chapter's epochs, batch size and seed."""
    from helpers.train import fit as fit_model

    return fit_model(
        built,
        xrays,
        epochs=params.get("epochs", config.EPOCHS),
        batch_size=params.get("batch_size", config.BATCH_SIZE),
        seed=params.get("seed", config.SEED),
    )


def evaluate(params: dict[str, Any], run, xrays: ChestXrays):
    """Threshold on validation, test once, write ``results/<model-id>/``."""
    from helpers.train import evaluate_and_save

    return evaluate_and_save(
        run,
        xrays,
        results_dir=params["results_dir"],
        target_sensitivity=params.get("target_sensitivity", config.TARGET_SENSITIVITY),
        parameters={k: v for k, v in params.items() if k != "model_id"},
    )


def metrics_table(metrics_json: dict, *, keys=("test_at_0.5", "test")) -> pd.DataFrame:
    """Test metrics with 95% intervals, one column per threshold, as text ``v (lo-hi)``."""
    names = {"test": "validation-chosen", "test_at_0.5": "0.5 (case study)", "test_at_youden": "Youden (validation)"}
    columns = {}
    for key in keys:
        block = metrics_json[key]
        column = {"threshold": f"{block['threshold']:.3f}"}
        for name in ("auc",) + metrics.RATE_NAMES:
            column[name] = _interval_text(block, name)
        for name in ("tp", "fp", "tn", "fn"):
            column[name] = str(block[name])
        columns[names.get(key, key)] = column
    return pd.DataFrame(columns)


def _interval_text(block: dict, name: str) -> str:
    value, low, high = block[name], block[f"{name}_ci_low"], block[f"{name}_ci_high"]
    if value is None:
        return "undefined"
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


def glue_metrics(prefix: str, metrics_json: dict) -> None:
    """Glue the chapter's numbers as ``<prefix>_<name>`` for ``{glue:text}`` in the prose.

    Keys: ``_threshold``, and for the test set at the validation threshold ``_auc``,
    ``_sensitivity``, ``_specificity``, ``_ppv``, ``_npv``, ``_accuracy``, ``_f1`` (each
    with ``_lo`` and ``_hi``), ``_tp``, ``_fp``, ``_tn``, ``_fn``; at 0.5 the same with
    ``_05`` after the prefix (``model_1_05_specificity``); ``_val_auc``,
    ``_val_sensitivity``, ``_val_specificity`` on validation; ``_epochs``,
    ``_training_seconds``, ``_base_weights``.
    """
    from myst_nb import glue

    glue(f"{prefix}_threshold", metrics_json["threshold"]["threshold"], display=False)
    for name in ("auc", "sensitivity", "specificity"):  # the same threshold on validation
        glue(f"{prefix}_val_{name}", _float(metrics_json["val"][name]), display=False)
    for key, tag in (("test", ""), ("test_at_0.5", "_05")):
        block = metrics_json[key]
        for name in ("auc",) + metrics.RATE_NAMES:
            glue(f"{prefix}{tag}_{name}", _float(block[name]), display=False)
            glue(f"{prefix}{tag}_{name}_lo", _float(block[f"{name}_ci_low"]), display=False)
            glue(f"{prefix}{tag}_{name}_hi", _float(block[f"{name}_ci_high"]), display=False)
        for name in ("tp", "fp", "tn", "fn"):
            glue(f"{prefix}{tag}_{name}", int(block[name]), display=False)
    glue(f"{prefix}_epochs", int(metrics_json["epochs"]), display=False)
    glue(f"{prefix}_training_seconds", float(metrics_json["training_seconds"]), display=False)
    glue(f"{prefix}_base_weights", str(metrics_json["base_weights"]), display=False)


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def report(result, xrays: ChestXrays | None = None, *, per_class: int = 4) -> None:
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
        if not message.startswith("WARNING: ImageNet"):  # shown when the model was built
            _display_warning(message)
    chosen = m["threshold"]["threshold"]
    y, s = result.test.labels, result.test.scores
    display(metrics_table(m))
    for title, threshold in (("threshold 0.5 (case study)", 0.5), (f"threshold {chosen:.3f} (chosen on validation)", chosen)):
        print(f"Classification report at {title}:\n")
        print(metrics.classification_report(y, s, threshold=threshold))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    plots.plot_confusion_matrix(y, s, threshold=0.5, title="threshold 0.5 (case study)", ax=axes[0])
    plots.plot_confusion_matrix(y, s, threshold=chosen, title=f"threshold {chosen:.3f} (validation)", ax=axes[1])
    plots.plot_roc(
        y, s, thresholds={"0.5": 0.5, "validation": chosen}, label=result.model_id,
        color=plots.MODEL_COLOURS.get(result.model_id), ax=axes[2],
    )
    fig.tight_layout()
    plt.show()
    if xrays is not None:
        if list(xrays.test.paths) != list(result.test.paths):
            raise ValueError("xrays.test is not the split these predictions were made on")
        picks = sample_indices(y, per_class=per_class, seed=xrays.seed)
        plots.plot_image_grid(
            xrays.test.images[picks], y[picks], scores=s[picks], threshold=chosen,
            titles=[result.test.paths[i].split("/")[-1] for i in picks],
        )
        plt.show()
    glue_metrics(result.model_id, m)


# ---------------------------------------------------------------------------------------
# model_6: the ablation, the validation-test gap, the targets
# ---------------------------------------------------------------------------------------


def ablation_budget(params: dict[str, Any]) -> dict[str, int]:
    """Image size and epochs of model_6's ablation: the ``ablation_*`` parameters, never
    more than the final model's own ``image_size`` and ``epochs``."""
    return {
        "image_size": min(params["ablation_image_size"], params["image_size"]),
        "epochs": min(params["ablation_epochs"], params["epochs"]),
    }


def run_ablation(params: dict[str, Any]):
    """Run model_6's ablation on validation (:mod:`helpers.ablation`), write it, show it.

    Writes ``<results_dir>/model_6_ablation/ablation.csv`` and ``choice.json``, displays
    the table (AUC with its 95% interval) and glues the choice and the budget.

    Returns
    -------
    table : pandas.DataFrame
        Empty when ``ablation_epochs`` is 0.
    variant : helpers.ablation.Variant
        The chosen variant (:func:`helpers.ablation.best_variant`); the recipe itself when
        no ablation ran.
    """
    from IPython.display import display
    from myst_nb import glue

    from helpers import ablation
    from helpers.results import ResultsWriter

    budget = ablation_budget(params)
    if budget["epochs"] == 0:
        _display_warning(
            "ablation_epochs is 0: no ablation ran, and model_6 is trained with its recipe "
            "as registered, not as chosen on validation."
        )
        return pd.DataFrame(), ablation.VARIANTS[0]

    def load(color_mode: str, image_size: int) -> ChestXrays:
        return _load({**params, "image_size": image_size}, color_mode)

    table = ablation.run_ablation(
        load, image_size=budget["image_size"], epochs=budget["epochs"],
        batch_size=params["batch_size"], seed=params["seed"],
        target_sensitivity=params.get("target_sensitivity", config.TARGET_SENSITIVITY),
    )
    choice = ablation.variant_named(ablation.best_variant(table))
    with ResultsWriter(params["results_dir"], "model_6_ablation") as writer:
        table.to_csv(writer.path("ablation.csv"))
        writer.write_json("choice.json", {"choice": choice.name, **budget, "seed": params["seed"]})
    shown = table.drop(columns=["val AUC low", "val AUC high"]).copy()
    shown.insert(1, "val AUC (95% CI)", [
        f"{r['val AUC']:.4f} ({r['val AUC low']:.4f}-{r['val AUC high']:.4f})" for _, r in table.iterrows()
    ])
    display(shown.drop(columns=["val AUC"]).round(4))
    glue("model_6_ablation_choice", choice.name, display=False)
    glue("model_6_ablation_image_size", budget["image_size"], display=False)
    glue("model_6_ablation_epochs", budget["epochs"], display=False)
    glue("model_6_ablation_variants", len(table), display=False)
    glue("model_6_ablation_verdict", ablation_verdict(table, choice.name), display=False)
    glue("model_6_ablation_not_adopted", not_adopted_text(table), display=False)
    return table, choice


def ablation_verdict(table: pd.DataFrame, choice: str) -> str:
    """One sentence on the ablation's choice against the recipe (the first row), with the
    overlap of their 95% intervals, for the chapter's prose."""
    recipe = table.index[0]
    if choice == recipe:
        return (
            f"no variant ranked the validation images better than the recipe (validation AUC "
            f"{table.loc[recipe, 'val AUC']:.4f}, to three decimals), so the recipe is kept"
        )
    a, b = table.loc[choice], table.loc[recipe]
    overlap = a["val AUC low"] <= b["val AUC high"] and b["val AUC low"] <= a["val AUC high"]
    return (
        f"'{choice}' ranked the validation images better than the recipe (validation AUC "
        f"{a['val AUC']:.4f} against {b['val AUC']:.4f}); the two 95% intervals "
        + ("overlap, so the difference may be chance" if overlap
           else "do not overlap, so the difference is larger than the validation set's sampling noise")
    )


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


def validation_test_gap(metrics_json: dict) -> pd.DataFrame:
    """The same model and threshold on validation and on test: AUC, sensitivity,
    specificity, PPV and NPV with 95% intervals, and test minus validation."""
    rows = {}
    for name in ("auc", "sensitivity", "specificity", "ppv", "npv"):
        val, test = metrics_json["val"], metrics_json["test"]
        rows[name] = {
            "validation": _interval_text(val, name),
            "test": _interval_text(test, name),
            "test minus validation": f"{test[name] - val[name]:+.3f}",
        }
    return pd.DataFrame(rows).T


#: model_6's targets on the test set (issue 4), at the threshold chosen on validation.
MODEL_6_TARGETS = {"auc": 0.975, "sensitivity": 0.95, "specificity": 0.85}


def target_table(metrics_json: dict, targets: dict[str, float] = MODEL_6_TARGETS) -> pd.DataFrame:
    """Each target beside the test result (95% CI) and how far the estimate is from it."""
    rows = {}
    for name, target in targets.items():
        value = metrics_json["test"][name]
        rows[name] = {
            "target": target,
            "test (95% CI)": _interval_text(metrics_json["test"], name),
            "estimate minus target": f"{value - target:+.3f}",
            "met": "yes" if value >= target else "no",
        }
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------------------------------
# Beyond the case study: operating points, calibration, explanations, errors
# ---------------------------------------------------------------------------------------


def _prefix(result) -> str:
    return result.metrics["model_id"]


def show_operating_points(result) -> None:
    """Test metrics at the validation-chosen thresholds (sensitivity 0.95, Youden) and at
    0.5; the precision-recall curve; sensitivity for bacterial and viral pneumonia."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    m = result.metrics
    keys = ("test", "test_at_youden", "test_at_0.5") if m.get("test_at_youden") else ("test", "test_at_0.5")
    display(metrics_table(m, keys=keys))
    thresholds = {"sensitivity 0.95 (validation)": m["thresholds"]["sensitivity"], "0.5": 0.5}
    if m["thresholds"].get("youden") is not None:
        thresholds["Youden (validation)"] = m["thresholds"]["youden"]
    plots.plot_precision_recall(result.test.labels, result.test.scores, thresholds=thresholds)
    plt.show()
    kinds = pd.DataFrame(m["sensitivity_by_kind"]).set_index("kind")
    display(kinds.assign(**{"sensitivity (95% CI)": [
        f"{r.sensitivity:.3f} ({r.ci_low:.3f}-{r.ci_high:.3f})" for r in kinds.itertuples()
    ]})[["images", "detected", "sensitivity (95% CI)"]])
    from myst_nb import glue

    for row in m["sensitivity_by_kind"]:
        glue(f"{_prefix(result)}_sensitivity_{row['kind']}", float(row["sensitivity"]), display=False)


def show_calibration(result) -> None:
    """Brier score and ECE on test before and after temperature scaling (fitted on
    validation), and the reliability diagram of both."""
    import matplotlib.pyplot as plt
    from IPython.display import display
    from myst_nb import glue

    from helpers import calibration

    block = result.metrics["calibration"]
    t = block["temperature"]
    display(pd.DataFrame({
        "as trained": block["test_before"],
        f"temperature {t:.2f}": block["test_after"],
    }).rename(index={"brier": "Brier score (test)", "ece": f"ECE, {block['n_bins']} bins (test)"}).round(4))
    print(
        f"validation log loss {block['val_log_loss_before']:.4f} -> {block['val_log_loss_after']:.4f} "
        f"with temperature {t:.3f}: {'applied' if block['applied'] else 'not applied'} "
        "(decided on validation: it must lower the log loss by at least 1%)"
    )
    scaled = calibration.apply_temperature(result.test.scores, t)
    plots.plot_reliability({
        "as trained": calibration.reliability_table(result.test.labels, result.test.scores),
        f"temperature {t:.2f}": calibration.reliability_table(result.test.labels, scaled),
    })
    plt.show()
    prefix = _prefix(result)
    glue(f"{prefix}_brier", block["test_before"]["brier"], display=False)
    glue(f"{prefix}_ece", block["test_before"]["ece"], display=False)
    glue(f"{prefix}_ece_scaled", block["test_after"]["ece"], display=False)
    glue(f"{prefix}_temperature", t, display=False)


def _groups(result) -> dict[str, np.ndarray]:
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
        _display_warning(
            f"{_prefix(result)} gives every test image the same score: its output does not "
            "depend on the image, so there is nothing for Grad-CAM to show."
        )
        return
    picked, titles = [], []
    for name, index in _groups(result).items():
        for i in index[:per_group]:
            picked.append(i)
            titles.append(f"{name}\nscore {result.test.scores[i]:.2f}\n{Path(result.test.paths[i]).name}")
    heatmaps = grad_cam(model, xrays.test.images[picked])
    plots.plot_heatmap_grid(xrays.test.images[picked], heatmaps, titles, ncols=per_group * 2)
    plt.show()


def show_misclassified(result, xrays: ChestXrays, *, limit: int = 12) -> None:
    """The misclassified test images at the validation threshold, false negatives first
    (most confidently wrong first), with their scores and file names."""
    import matplotlib.pyplot as plt

    groups = _groups(result)
    wrong = np.concatenate([groups["false negative"], groups["false positive"]])
    print(
        f"{len(groups['false negative'])} false negatives and {len(groups['false positive'])} "
        f"false positives of {len(result.test.labels)} test images; showing {min(limit, len(wrong))}"
    )
    if len(wrong) == 0:
        return
    shown = wrong[:limit]
    plots.plot_image_grid(
        xrays.test.images[shown], result.test.labels[shown], scores=result.test.scores[shown],
        threshold=result.threshold["threshold"], titles=[Path(result.test.paths[i]).name for i in shown],
    )
    plt.show()


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


def paired_tests(all_metrics: dict[str, dict], all_predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each model against the reference model (:func:`reference_model`) on the same test images.

    DeLong's test for the difference of the two AUCs, and McNemar's exact test on the
    decisions, each model at its own validation-chosen threshold.
    """
    reference = reference_model(all_metrics)
    ref = all_predictions[reference]
    ref_called = metrics.predict_labels(ref["score"], all_metrics[reference]["threshold"]["threshold"])
    rows = {}
    for model_id, frame in all_predictions.items():
        if list(frame["path"]) != list(ref["path"]):
            raise ValueError(f"{model_id}'s test predictions are not on {reference}'s images in the same order")
        if model_id == reference:
            continue
        delong = metrics.delong_test(frame["label"], frame["score"], ref["score"])
        called = metrics.predict_labels(frame["score"], all_metrics[model_id]["threshold"]["threshold"])
        mcnemar = metrics.mcnemar_test(frame["label"], called, ref_called)
        half = 1.959963984540054 * delong.detail["se_difference"]
        rows[model_id] = {
            "validation AUC": round(all_metrics[model_id]["val"]["auc"], 3),
            "test AUC": round(delong.detail["auc_a"], 3),
            f"AUC minus {reference}'s (95% CI)": (
                f"{delong.difference:+.3f} ({delong.difference - half:+.3f} to {delong.difference + half:+.3f})"
            ),
            "DeLong p": p_value_text(delong.p_value),
            "only this model right": mcnemar.detail["only_a_right"],
            f"only {reference} right": mcnemar.detail["only_b_right"],
            "McNemar p": p_value_text(mcnemar.p_value),
        }
    table = pd.DataFrame(rows).T
    table.index.name = f"against {reference} (validation AUC {all_metrics[reference]['val']['auc']:.3f})"
    return table


def calibration_table(all_metrics: dict[str, dict]) -> pd.DataFrame:
    """Brier score and ECE on test per model, before and after temperature scaling, and
    sensitivity for bacterial and viral pneumonia at the validation threshold."""
    rows = {}
    for model_id, m in all_metrics.items():
        c = m["calibration"]
        kinds = {row["kind"]: row for row in m["sensitivity_by_kind"]}
        row = {
            "Brier": round(c["test_before"]["brier"], 4),
            "ECE": round(c["test_before"]["ece"], 4),
            "temperature (validation)": round(c["temperature"], 3),
            "ECE after": round(c["test_after"]["ece"], 4),
            "applied": "yes" if c["applied"] else "no",
        }
        for kind in ("bacteria", "virus"):
            if kind in kinds:
                k = kinds[kind]
                row[f"sensitivity, {kind}"] = f"{k['sensitivity']:.3f} ({k['ci_low']:.3f}-{k['ci_high']:.3f})"
        rows[model_id] = row
    return pd.DataFrame(rows).T


def read_all_metrics(results_dir: str | os.PathLike, model_ids=config.MODEL_IDS) -> dict[str, dict]:
    """``metrics.json`` of every model, failing clearly if a chapter has not run."""
    from helpers.results import read_metrics

    return {model_id: read_metrics(results_dir, model_id) for model_id in model_ids}


def comparison_table(all_metrics: dict[str, dict]) -> pd.DataFrame:
    """One row per model: test metrics at its validation-chosen threshold, with intervals."""
    rows = {}
    for model_id, m in all_metrics.items():
        block = m["test"]
        row = {"title": m["title"], "threshold": f"{block['threshold']:.3f}"}
        for name in ("auc", "sensitivity", "specificity", "ppv", "npv", "accuracy", "f1"):
            row[name] = _interval_text(block, name)
        row["accuracy at 0.5"] = _interval_text(m["test_at_0.5"], "accuracy")
        row["base weights"] = m["base_weights"]
        row["training s"] = f"{m['training_seconds']:.0f}"
        rows[model_id] = row
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------------------------------
# The data chapter
# ---------------------------------------------------------------------------------------


def official_counts(files: pd.DataFrame) -> pd.DataFrame:
    """Images per official folder and class, with totals and the PNEUMONIA share."""
    from helpers.config import CLASS_NAMES

    counts = (
        files.assign(cls=files["label"].map(dict(enumerate(CLASS_NAMES))))
        .groupby(["split", "cls"]).size().unstack("cls").reindex(list(config.OFFICIAL_SPLITS))
    )
    counts["total"] = counts.sum(axis=1)
    counts["PNEUMONIA share"] = (counts["PNEUMONIA"] / counts["total"]).round(3)
    return counts


def size_summary(files: pd.DataFrame) -> pd.DataFrame:
    """Width, height, colour modes and file formats per official folder and class."""
    from helpers.config import CLASS_NAMES

    grouped = files.assign(cls=files["label"].map(dict(enumerate(CLASS_NAMES)))).groupby(["split", "cls"])
    return pd.DataFrame(
        {
            "images": grouped.size(),
            "width min-max": grouped["width"].agg(lambda s: f"{s.min()}-{s.max()}"),
            "height min-max": grouped["height"].agg(lambda s: f"{s.min()}-{s.max()}"),
            "modes": grouped["mode"].agg(lambda s: ", ".join(f"{m} ({n})" for m, n in s.value_counts().items())),
            "formats": grouped["format"].agg(lambda s: ", ".join(sorted(set(s)))),
        }
    )


def sample_indices(labels: np.ndarray, *, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` random indices of each class (NORMAL first), fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    picks = [
        np.sort(rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False))
        for label in (0, 1)
    ]
    return np.concatenate(picks)


def leakage_summary(xrays: ChestXrays, *, seed: int) -> pd.DataFrame:
    """Persons on both sides: this project's split against a split by image (the case study's)."""
    from helpers.data import image_level_split, persons_on_both_sides

    official_train = xrays.table[xrays.table["path"].str.startswith("train/")]
    ours = official_train["split"].eq("val").to_numpy()
    naive = image_level_split(len(official_train), seed=seed)
    rows = {}
    for name, is_val in (("by person (this book)", ours), ("by image (case study)", naive)):
        groups = official_train["group"].to_numpy()
        val_groups = set(groups[is_val])
        train_groups = set(groups[~is_val])
        leaked_val_images = int(np.isin(groups[is_val], list(train_groups)).sum())
        rows[name] = {
            "validation images": int(is_val.sum()),
            "persons on both sides": persons_on_both_sides(groups, is_val),
            "validation images whose person is also in training": leaked_val_images,
            "persons in validation": len(val_groups),
        }
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------------------------------
# The comparison chapter
# ---------------------------------------------------------------------------------------


def read_all_predictions(results_dir: str | os.PathLike, model_ids=config.MODEL_IDS, *, split: str = "test") -> dict[str, pd.DataFrame]:
    """``predictions_<split>.csv`` of every model."""
    from helpers.results import read_predictions

    return {m: read_predictions(Path(results_dir) / m / f"predictions_{split}.csv") for m in model_ids}


def reported_vs_corrected(all_metrics: dict[str, dict]) -> pd.DataFrame:
    """The case study's reported test accuracy beside this book's numbers, per model."""
    low, high = config.CASE_STUDY_REPORTED_ACCURACY
    rows = {}
    for model_id, m in all_metrics.items():
        if model_id not in config.CASE_STUDY_MODEL_IDS:
            continue
        rows[model_id] = {
            "reported accuracy (case study)": f"{low:.2f}-{high:.2f} (range over all five)",
            "accuracy at 0.5 (this book)": _interval_text(m["test_at_0.5"], "accuracy"),
            "accuracy at validation threshold": _interval_text(m["test"], "accuracy"),
            "AUC (this book)": _interval_text(m["test"], "auc"),
        }
    return pd.DataFrame(rows).T


def _auc_interval(m: dict) -> tuple[float, float, float]:
    block = m["test"]
    return block["auc"], block["auc_ci_low"], block["auc_ci_high"]


def _compare_auc(a: dict, b: dict) -> str:
    """'higher', 'lower' or 'no clear difference' for AUC of a against b (interval overlap)."""
    a_auc, a_lo, a_hi = _auc_interval(a)
    b_auc, b_lo, b_hi = _auc_interval(b)
    if a_lo > b_hi:
        return "higher"
    if a_hi < b_lo:
        return "lower"
    return "no clear difference"


def conclusions(all_metrics: dict[str, dict]) -> pd.DataFrame:
    """Each conclusion the case study's results suggested, checked against these results.

    Differences are judged by whether the 95% AUC intervals overlap, a conservative
    reading (overlapping intervals can still hide a real difference).
    """
    m = {k: v for k, v in all_metrics.items() if k in config.CASE_STUDY_MODEL_IDS}
    # A MobileNetV2 model whose ImageNet weights could not be loaded is not the case study's
    # model: no conclusion about it can be checked with this build.
    untestable = {k for k, v in m.items() if v.get("base_weights") == "random"}
    note = f" ({', '.join(sorted(untestable))} left out: no ImageNet weights)" if untestable else ""
    rows = []
    testable = [k for k in m if k not in untestable]
    worst = min(testable, key=lambda k: m[k]["test"]["auc_ci_low"])
    worst_lo = m[worst]["test"]["auc_ci_low"]
    rows.append(
        {
            "case study's conclusion": "The models barely beat chance (52-58% test accuracy).",
            "evidence here": f"lowest AUC lower bound: {worst} {worst_lo:.3f} (chance is 0.5){note}",
            "verdict": "does not hold" if worst_lo > 0.5 else "holds for at least one model",
        }
    )
    for claim, a, b in (
        ("Dropout and batch normalisation (model 2) do not improve on model 1.", "model_2", "model_1"),
        ("Adam with lighter dropout (model 3) does not improve on model 2.", "model_3", "model_2"),
        ("Augmentation (model 4) does not improve on model 5.", "model_4", "model_5"),
    ):
        relation = _compare_auc(m[a], m[b])
        if {a, b} & untestable:
            verdict = "not testable here (no ImageNet weights)"
        else:
            verdict = "holds" if relation != "higher" else "does not hold"
        rows.append(
            {
                "case study's conclusion": claim,
                "evidence here": f"{a} AUC {m[a]['test']['auc']:.3f} vs {b} {m[b]['test']['auc']:.3f}: {relation}",
                "verdict": verdict,
            }
        )
    cnn_best = max(("model_1", "model_2", "model_3"), key=lambda k: m[k]["test"]["auc"])
    tl_best = max(("model_4", "model_5"), key=lambda k: m[k]["test"]["auc"])
    relation = _compare_auc(m[tl_best], m[cnn_best])
    weights = sorted({m[k]["base_weights"] for k in ("model_4", "model_5")})
    rows.append(
        {
            "case study's conclusion": "Transfer learning (models 4-5) does not beat the small CNNs.",
            "evidence here": (
                f"best MobileNetV2 {tl_best} AUC {m[tl_best]['test']['auc']:.3f} vs best CNN "
                f"{cnn_best} {m[cnn_best]['test']['auc']:.3f}: {relation}; base weights: {', '.join(weights)}"
            ),
            "verdict": (
                "not testable here (no ImageNet weights)" if "random" in weights
                else ("holds" if relation != "higher" else "does not hold")
            ),
        }
    )
    return pd.DataFrame(rows).set_index("case study's conclusion")


# ---------------------------------------------------------------------------------------
# The chapter on the original evaluation
# ---------------------------------------------------------------------------------------


def results_path(params: dict[str, Any], model_id: str, name: str) -> Path:
    """``<results_dir>/<model_id>/<name>``, failing clearly if that chapter has not run."""
    path = Path(params["results_dir"]) / model_id / name
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the {model_id} chapter first")
    return path


def load_trained(params: dict[str, Any], model_id: str):
    """The saved model of ``model_id`` (loaded in Keras' safe mode) and its metrics."""
    import keras

    import helpers.layers  # noqa: F401 - registers the book's own layers for safe loading
    from helpers.results import read_metrics

    model = keras.saving.load_model(results_path(params, model_id, "model.keras"), safe_mode=True)
    return model, read_metrics(params["results_dir"], model_id)


def predict(model, split, params: dict[str, Any]):
    """:func:`helpers.evaluate.predict_split` with the chapter's batch size."""
    from helpers.evaluate import predict_split

    return predict_split(model, split, batch_size=params.get("batch_size", config.BATCH_SIZE))


def evaluation_ways(ways: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """AUC and accuracy at 0.5 for each way of pairing labels with scores."""
    rows = {}
    for name, (labels, scores) in ways.items():
        rates = metrics.rates_at_threshold(labels, scores, threshold=0.5)
        auc = metrics.roc_auc_with_ci(labels, scores)
        rows[name] = {
            "AUC": round(auc.value, 4),
            "AUC 95% CI": f"{auc.ci_low:.3f}-{auc.ci_high:.3f}",
            "accuracy at 0.5": round(rates["accuracy"].value, 4),
            "sensitivity at 0.5": round(rates["sensitivity"].value, 4),
            "specificity at 0.5": round(rates["specificity"].value, 4),
        }
    return pd.DataFrame(rows).T


def logit_cut_table(params: dict[str, Any], model_id: str = "model_4") -> pd.DataFrame:
    """Test rates of a logit model cut the case study's way and the correct ways."""
    from helpers.evaluate import sigmoid
    from helpers.results import read_metrics, read_predictions

    frame = read_predictions(results_path(params, model_id, "predictions_test.csv"))
    m = read_metrics(params["results_dir"], model_id)
    if frame["score"].nunique() < 2:
        _display_warning(
            f"{model_id} gives every test image the same score (base weights: "
            f"{m['base_weights']}), so every threshold below gives the same decisions: this "
            "table only shows the mistake with ImageNet weights."
        )
    # A logit cut at 0.5 is a probability cut at sigmoid(0.5).
    logit_cut = float(sigmoid(np.array([0.5]))[0])
    rows = {}
    for name, threshold in (
        ("original: logit >= 0.5", logit_cut),
        ("probability >= 0.5", 0.5),
        ("probability >= validation threshold", m["threshold"]["threshold"]),
    ):
        rates = metrics.rates_at_threshold(frame["label"], frame["score"], threshold=threshold)
        rows[name] = {
            "probability threshold": f"{threshold:.3f}",
            **{k: f"{rates[k]:.3f}" for k in ("sensitivity", "specificity", "accuracy")},
        }
    return pd.DataFrame(rows).T


def metric_helpers_table(correct, metrics_json: dict, *, batch_size: int, seed: int = config.SEED) -> pd.DataFrame:
    """The case study's metric helpers against the correct numbers, on the same scores."""
    from helpers import case_study

    labels, scores = correct.labels, correct.scores
    # Keras evaluates a shuffled dataset batch by batch: reproduce that order.
    order = np.random.default_rng(seed).permutation(labels.size)
    at_half = metrics.rates_at_threshold(labels, scores, threshold=0.5)
    rows = {
        "specificity, helper averaged over batches (0.5)": (
            case_study.batch_averaged_specificity(labels[order], scores[order], batch_size=batch_size),
            "mean of per-batch ratios",
        ),
        "specificity over the test set (0.5)": (at_half["specificity"].value, "tn / (tn + fp)"),
        "SensitivityAtSpecificity(0.5) on the test set": (
            case_study.keras_sensitivity_at_specificity(labels, scores, specificity=0.5),
            "threshold tuned on the test set itself",
        ),
        "sensitivity at the validation threshold": (
            metrics_json["test"]["sensitivity"], "threshold fixed on validation first",
        ),
    }
    return pd.DataFrame({"value": {k: round(v, 4) for k, (v, _) in rows.items()}, "what it is": {k: w for k, (_, w) in rows.items()}})
