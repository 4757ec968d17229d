"""A model card beside every saved model: ``results/<model-id>/MODEL_CARD.md``.

What a person reads before using a trained model (Mitchell et al. 2019, "Model Cards for
Model Reporting"; CLAIM 2024; TRIPOD+AI): what it is for and where it must not be used,
what it is and how it was trained, the data, its test metrics with person-level intervals
at its threshold and how that threshold was chosen, the spread over seeds where the recipe
was trained again, its sensitivity by kind of pneumonia, its calibration, what to expect at
another site, and what reproduces it (parameters, seed, package versions, commit).

Every number and setting on the card is read from the model's ``metrics.json``
(:func:`card_text`); the only text not read from it is what is true of every model of the
book (its intended use, where the book's data come from). The chapter writes the card with
its results (:func:`helpers.results.save_results`); replicates trained later
(``results/replicates/seed_*/<model>/``) are read by the comparison chapter, which writes
the card again with the spread over seeds (:func:`helpers.comparison.write_model_cards`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from helpers import config
from helpers.files import atomic_write_text
from helpers.report import interval_text

#: The public API (the rest is private by name).
__all__ = [
    "CARD_NAME",
    "INTENDED_USE",
    "code_version",
    "limits_sentence",
    "card_text",
    "write_model_card",
]

#: The card's file name in a model's results folder.
CARD_NAME = "MODEL_CARD.md"

#: What every model of the book is for (the same for all of them, so stated once here).
INTENDED_USE = (
    "Teaching and research: a worked example of training and evaluating a chest X-ray "
    "classifier honestly. It is not a medical device, it has not been validated for clinical "
    "use, and its output is not a diagnosis."
)

#: The book's data, as the embedded copy and the Kaggle download both are (data/README.md).
_BOOK_DATA = (
    "Kermany et al. 2018 (Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0): "
    "anterior-posterior chest X-rays of children aged one to five from one centre, Guangzhou "
    "Women and Children's Medical Center, graded NORMAL or PNEUMONIA (bacterial or viral) by "
    "expert physicians"
)

#: Parameters that are paths: shown relative to the repository when inside it.
_PATH_PARAMETERS = ("data_dir", "results_dir")

#: Rows of the metrics table: (key in a metrics block, what the card calls it).
_METRIC_ROWS = (
    ("auc", "AUC"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("ppv", "positive predictive value"),
    ("npv", "negative predictive value"),
    ("accuracy", "accuracy"),
)

#: Blocks of ``metrics.json`` that every model has; any other top-level block is the
#: chapter's own (``extra`` of :func:`helpers.results.save_results`).
_COMMON_BLOCKS = frozenset(
    {
        "model_id",
        "title",
        "parameters",
        "output",
        "base_weights",
        "threshold",
        "thresholds",
        "test",
        "test_at_youden",
        "test_at_0.5",
        "val",
        "test_image_level",
        "calibration",
        "sensitivity_by_kind",
        "n_images",
        "versions",
        "warnings",
        "epochs",
        "training_seconds",
        "skipped_images",
        "official_val_images",
        "official_val",
        "adapted",
        "n_weights",
        "commit",
    }
)


def code_version(folder: str | os.PathLike = config.REPO_ROOT) -> str:
    """The git commit checked out in ``folder`` now, for ``metrics.json``.

    :func:`helpers.results.save_results` records it when it writes a model's results: the
    code a build ran, unless the checkout changed while the model trained.

    Returns
    -------
    str
        The commit's hash, followed by ``" with uncommitted changes"`` when the working
        tree differs from it; ``"unknown (not a git checkout)"`` when ``folder`` is not in
        a git repository or git is not installed.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=30
        )
        if commit.returncode != 0:
            return "unknown (not a git checkout)"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (not a git checkout)"
    changed = " with uncommitted changes" if status.stdout.strip() else ""
    return commit.stdout.strip() + changed


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _shown_path(value) -> str:
    """A path inside the repository relative to it (``results/model_1``), else as given."""
    path = Path(str(value))
    try:
        return path.resolve().relative_to(config.REPO_ROOT).as_posix()
    except ValueError:
        return str(value)


def _short(value) -> str:
    """A setting as read: floats to 3 significant digits (1e-4 stored as 9.99999e-05)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def limits_sentence(metrics: Mapping) -> str:
    """One line saying where the model must not be trusted (printed by ``helpers.predict``).

    Parameters
    ----------
    metrics : mapping
        The model's ``metrics.json``.

    Returns
    -------
    str
    """
    threshold = metrics["threshold"]
    target = threshold.get("target_sensitivity")
    chosen = f"{float(threshold['threshold']):.3f}"
    aim = f" for sensitivity {target:.2f}" if target is not None else ""
    return (
        "not a medical device; trained and tested on one centre's X-rays of children aged one "
        f"to five; its threshold {chosen} was chosen{aim} on that centre's validation images "
        "and may not hold at another site: check it on labelled images of your own first"
    )


def _metrics_table(blocks: list[tuple[str, Mapping]]) -> list[str]:
    header = "| metric | " + " | ".join(name for name, _ in blocks) + " |"
    lines = [header, "|---|" + "---|" * len(blocks)]
    for key, label in _METRIC_ROWS:
        lines.append(f"| {label} | " + " | ".join(interval_text(b, key) for _, b in blocks) + " |")
    return lines


def _spread_lines(spread) -> list[str]:
    """The spread over seeds (:func:`helpers.replicates.seed_spread`) as a table."""
    lines = [
        f"The same recipe trained with {int(spread['seeds'].iloc[0])} seeds (this run and its "
        "replicates, each at the threshold chosen on its own validation persons): the spread "
        "is the training noise, the person-level interval above the test-set noise.",
        "",
        "| metric | min | max | mean | sd |",
        "|---|---|---|---|---|",
    ]
    for name, row in spread.iterrows():
        lines.append(
            f"| {name} | {_number(row['min'])} | {_number(row['max'])} | "
            f"{_number(row['mean'])} | {_number(row['sd'])} |"
        )
    return lines


def _data_lines(metrics: Mapping) -> list[str]:
    params, counts = metrics["parameters"], metrics.get("n_images", {})
    data_dir = Path(params.get("data_dir", str(config.DEFAULT_DATA_DIR)))
    if data_dir.resolve() == config.DEFAULT_DATA_DIR.resolve():
        source = f"the book's embedded copy of {_BOOK_DATA} (`data/README.md`)."
    else:
        source = (
            f"the folder `{_shown_path(data_dir)}`. The book's data are {_BOOK_DATA}; if this "
            "folder holds "
            "other images, this card cannot say where they come from."
        )
    persons = metrics["test"].get("persons")
    if isinstance(persons, Mapping):  # persons by class
        persons = " and ".join(f"{n} {name}" for name, n in persons.items())
    lines = [
        f"- Source: {source}",
        f"- Split by person: {counts.get('train', '?')} training and {counts.get('val', '?')} "
        f"validation images, drawn from the train folder with every person on one side "
        f"(validation fraction {params.get('val_fraction', '?')}, split seed "
        f"{params.get('split_seed', '?')}); the official test folder, {counts.get('test', '?')} "
        f"images of {persons if persons is not None else '?'} persons, scored once at the end.",
    ]
    if metrics.get("official_val"):
        lines.append(f"- Official validation images: {metrics['official_val']}")
    skipped = metrics.get("skipped_images") or []
    if skipped:
        lines.append(f"- {len(skipped)} unreadable image(s) skipped (named in metrics.json).")
    return lines


def _recipe_lines(metrics: Mapping) -> list[str]:
    params = metrics["parameters"]
    lines = [
        f"- Model: {metrics.get('title', metrics['model_id'])} (`{metrics['model_id']}`); "
        f"input {params['image_size']} x {params['image_size']} px "
        f"{params.get('color_mode', 'rgb')}; output a {metrics.get('output', 'probability')} "
        "of PNEUMONIA (the package turns logits into probabilities).",
        f"- Pretrained weights: {metrics.get('base_weights', 'none')}.",
    ]
    if metrics.get("n_weights"):
        lines.append(f"- Size: {metrics['n_weights']:,} weights.")
    lines.append(
        f"- Training: epochs {metrics.get('epochs', params.get('epochs'))}, batch size "
        f"{params.get('batch_size')}, {params.get('optimizer')} with learning rate "
        f"{_short(params.get('learning_rate'))} and weight decay "
        f"{_short(params.get('weight_decay'))}, "
        f"class weights {'on' if params.get('use_class_weights') else 'off'}, seed "
        f"{params.get('seed')}; {_number(metrics.get('training_seconds'), 0)} s of training."
    )
    own = {k: v for k, v in metrics.items() if k not in _COMMON_BLOCKS}
    for key, value in own.items():
        shown = value if isinstance(value, (str, int, float)) else "see metrics.json"
        lines.append(f"- The chapter's own record `{key}`: {shown}.")
    return lines


def _threshold_lines(metrics: Mapping) -> list[str]:
    threshold = metrics["threshold"]
    target = threshold.get("target_sensitivity")
    aim = (
        f"the highest threshold whose validation sensitivity reaches {target:.2f}"
        if threshold.get("method") == "sensitivity" and target is not None
        else f"method {threshold.get('method', '?')}"
    )
    return [
        f"Threshold {float(threshold['threshold']):.3f}: {aim}, chosen on the "
        f"{threshold.get('chosen_on', 'validation')} images before the test set was scored "
        "(never on test). Every interval is a person-level 95% interval "
        f"({metrics['test'].get('interval_method', 'person-level bootstrap')}): one child's "
        "X-rays are not independent observations.",
    ]


def _kind_lines(metrics: Mapping) -> list[str]:
    rows = metrics.get("sensitivity_by_kind") or []
    if not rows:
        return ["No PNEUMONIA image of a known kind in the test set."]
    lines = [
        "At the threshold above, on the test set (the kind is read from the file name; "
        "Wilson intervals over images):",
        "",
        "| kind | images | detected | sensitivity |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['kind']} | {row['images']} | {row['detected']} | "
            f"{_number(row['sensitivity'])} ({_number(row['ci_low'])}-"
            f"{_number(row['ci_high'])}) |"
        )
    return lines


def _calibration_lines(metrics: Mapping) -> list[str]:
    cal = metrics.get("calibration")
    if not cal:
        return ["Not measured."]
    before, after = cal["test_before"], cal["test_after"]
    return [
        f"On the test set, as trained: Brier score {_number(before['brier'])}, expected "
        f"calibration error {_number(before['ece'])} ({cal.get('n_bins', 10)} bins), mean "
        f"score {_number(before['mean_score'])} against a share of PNEUMONIA of "
        f"{_number(cal['test_prevalence'])} (validation: {_number(cal['val_prevalence'])}). "
        f"With a temperature of {_number(cal['temperature'])} fitted on validation: Brier "
        f"{_number(after['brier'])}, ECE {_number(after['ece'])}.",
        "",
        f"Applied: {cal.get('adopted', 'none')}",
    ]


def _site_lines(metrics: Mapping) -> list[str]:
    lines = [
        "The threshold was chosen on validation images of the same centre, machines and "
        "prevalence as the training images. At another site the scores shift (other machines, "
        "exposures, ages, prevalence) and the same threshold can give another sensitivity and "
        "specificity; its probabilities are not calibrated for another prevalence. Before "
        "relying on a decision, score labelled images of your own site and choose the "
        "threshold again on them.",
        "",
    ]
    adapted = metrics.get("adapted")
    if adapted:
        test = adapted["test"]
        lines.append(
            "This model has batch normalisation: `python -m helpers.predict --adapt-to FOLDER` "
            "re-estimates its statistics on a folder of unlabeled images of the new site "
            "(AdaBN) and decides at the threshold chosen on adapted validation scores "
            f"({float(adapted['threshold']['threshold']):.3f}). The chapter's adapted "
            f"evaluation on this test set: AUC {interval_text(test, 'auc')}, sensitivity "
            f"{interval_text(test, 'sensitivity')}, specificity "
            f"{interval_text(test, 'specificity')}."
        )
    else:
        lines.append(
            "`--adapt-to` (AdaBN) does not apply: the chapter made no adapted evaluation of "
            "this model (it has no batch normalisation to adapt, or none that was measured)."
        )
    return lines


def card_text(metrics: Mapping, *, spread=None, replicates_note: str | None = None) -> str:
    """The model card of one model, in Markdown, from its ``metrics.json``.

    Parameters
    ----------
    metrics : mapping
        The model's ``metrics.json`` as :func:`helpers.results.save_results` writes it.
    spread : pandas.DataFrame, optional
        The spread of its recipe over seeds (:func:`helpers.replicates.seed_spread`).
    replicates_note : str, optional
        Said instead when there is no spread (where replicates are, or that there are none).

    Returns
    -------
    str
        The card; the same ``metrics`` and ``spread`` always give the same text.

    Raises
    ------
    KeyError
        If ``metrics`` lacks a block every model's ``metrics.json`` has (``model_id``,
        ``parameters``, ``threshold``, ``test``, ``val``).
    """
    model_id, params = metrics["model_id"], metrics["parameters"]
    if spread is not None:
        seeds = _spread_lines(spread)
    else:
        seeds = [
            replicates_note
            or "Not measured when this card was written: this is one training run. Replicates "
            f"(`python -m helpers.book --replicates K`) are written to "
            f"`results/replicates/seed_*/{model_id}/`, and the comparison chapter writes this "
            "card again with their spread."
        ]
    warnings = [f"- {w}" for w in metrics.get("warnings") or []]
    versions = ", ".join(f"{k} {v}" for k, v in (metrics.get("versions") or {}).items())
    sections = [
        [
            f"# Model card: {model_id}, {metrics.get('title', model_id)}",
            "",
            f"Written from `{model_id}/metrics.json` by `helpers.model_card`; nothing on it is "
            "typed by hand.",
        ],
        ["## Intended use", "", INTENDED_USE, "", f"**Limits:** {limits_sentence(metrics)}."],
        ["## Model and training recipe", "", *_recipe_lines(metrics)],
        ["## Data", "", *_data_lines(metrics)],
        [
            "## Test metrics",
            "",
            *_threshold_lines(metrics),
            "",
            *_metrics_table([("test", metrics["test"]), ("validation", metrics["val"])]),
            "",
            f"Counts on test: {metrics['test'].get('tp')} true positives, "
            f"{metrics['test'].get('fn')} false negatives, {metrics['test'].get('tn')} true "
            f"negatives, {metrics['test'].get('fp')} false positives.",
        ],
        ["## Spread over seeds", "", *seeds],
        ["## Sensitivity by kind of pneumonia", "", *_kind_lines(metrics)],
        ["## Calibration", "", *_calibration_lines(metrics)],
        ["## At another site", "", *_site_lines(metrics)],
        *([["## Warnings of the run", "", *warnings]] if warnings else []),
        [
            "## Reproducing it",
            "",
            f"- Seed {params.get('seed')} (split seed {params.get('split_seed')}); commit "
            f"{metrics.get('commit', 'not recorded')}; {versions}.",
            "- The same commit, data, parameters and package versions on the same kind of "
            "machine give the same model. Another CPU family, core count, TensorFlow build or a "
            "GPU rounds differently, and over many epochs the model and the numbers above can "
            'move, by less than the spread over seeds (the README\'s paragraph "Determinism" '
            "measures how far).",
            "- Parameters:",
            "",
            "```json",
            json.dumps(
                {k: _shown_path(v) if k in _PATH_PARAMETERS else v for k, v in params.items()},
                indent=1,
                sort_keys=True,
            ),
            "```",
        ],
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def write_model_card(
    folder: str | os.PathLike, metrics: Mapping | None = None, **card_options
) -> Path:
    """Write ``folder/MODEL_CARD.md`` atomically from the folder's ``metrics.json``.

    Parameters
    ----------
    folder : path-like
        A model's results folder.
    metrics : mapping, optional
        Its ``metrics.json`` already read (default: read from ``folder``).
    **card_options
        ``spread`` and ``replicates_note``, passed to :func:`card_text`.

    Returns
    -------
    pathlib.Path
        The card's path.

    Raises
    ------
    FileNotFoundError
        If ``metrics`` is not given and ``folder/metrics.json`` does not exist.
    """
    folder = Path(folder)
    if metrics is None:
        path = folder / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; a model card needs its metrics.json")
        metrics = json.loads(path.read_text(encoding="utf-8"))
    return atomic_write_text(folder / CARD_NAME, card_text(metrics, **card_options))
