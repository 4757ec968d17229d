"""Comparing the models on the same test images: tables, paired tests, conclusions.

Every model chapter writes ``results/<model-id>/``; this module reads those folders (never
a model) and compares the models on the same test images in the same order: one row per
model, paired tests of each model against the one a study would carry forward (chosen on
validation), calibration side by side, and the case study's conclusions checked.

A model whose recipe was also trained with other seeds (its replicates,
:mod:`helpers.replicates`) is chosen on its mean validation AUC over its seeds, and the
case study's conclusions about recipes are judged a second time with training noise
counted (:func:`training_noise`, :func:`conclusions_with_training_noise`).

The unit of every interval is the person: the functions that resample take ``persons``,
the person of each test image as the split knew it (:func:`helpers.data.test_persons`:
from the file name, or from a DICOM file's PatientID, which the file name does not tell).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from helpers import bootstrap, chapters, metrics
from helpers import replicates as seed_replicates
from helpers.model_card import write_model_card
from helpers.report import interval_text


def read_all_metrics(results_dir: str | os.PathLike, model_ids=None) -> dict[str, dict]:
    """``metrics.json`` of every model (by default the book's model chapters,
    :func:`helpers.chapters.model_ids`, in the table's order), failing clearly if a chapter
    has not run."""
    from helpers.results import read_metrics

    model_ids = chapters.model_ids() if model_ids is None else model_ids
    return {model_id: read_metrics(results_dir, model_id) for model_id in model_ids}


def read_all_predictions(
    results_dir: str | os.PathLike, model_ids=None, *, split: str = "test"
) -> dict[str, pd.DataFrame]:
    """``predictions_<split>.csv`` of every model (by default the book's model chapters)."""
    from helpers.results import read_predictions

    model_ids = chapters.model_ids() if model_ids is None else model_ids
    return {
        m: read_predictions(Path(results_dir) / m / f"predictions_{split}.csv") for m in model_ids
    }


def p_value_text(p: float) -> str:
    """A p-value as reported in medical journals: three decimals, or "<0.001".

    >>> p_value_text(0.04321), p_value_text(2e-9)
    ('0.043', '<0.001')
    """
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def read_all_seed_runs(
    results_dir: str | os.PathLike, model_ids=None
) -> dict[str, list[seed_replicates.SeedRun]]:
    """Every model's training runs (by default the book's model chapters): the chapter's
    own, then each replicate found (:func:`helpers.replicates.read_seed_runs`); a model
    without replicates has one."""
    model_ids = chapters.model_ids() if model_ids is None else model_ids
    return {m: seed_replicates.read_seed_runs(results_dir, m) for m in model_ids}


def replicated(
    seed_runs: dict[str, list[seed_replicates.SeedRun]] | None,
) -> dict[str, list[seed_replicates.SeedRun]]:
    """The models trained with at least two seeds, in the given order."""
    return {m: runs for m, runs in (seed_runs or {}).items() if len(runs) >= 2}


def write_model_cards(
    results_dir: str | os.PathLike,
    all_metrics: dict[str, dict],
    seed_runs: dict[str, list[seed_replicates.SeedRun]],
) -> dict[str, Path]:
    """Write every model's card again (``MODEL_CARD.md``) with its spread over seeds.

    A chapter writes its model's card before any replicate of its recipe is trained (they
    are trained after it); the comparison, which reads them, writes each card again from
    the same ``metrics.json``, with the spread of the recipe over its seeds
    (:func:`helpers.replicates.seed_spread`) or, for a model without replicates, a line
    saying so and how to train them.

    Parameters
    ----------
    results_dir : path-like
        The chapters' results folder.
    all_metrics : dict
        Model id to its ``metrics.json`` (:func:`read_all_metrics`).
    seed_runs : dict
        Model id to its runs (:func:`read_all_seed_runs`).

    Returns
    -------
    dict of str to pathlib.Path
        Model id to its card's path.
    """
    cards = {}
    for model_id, model_metrics in all_metrics.items():
        runs = seed_runs.get(model_id) or []
        folder = Path(results_dir) / model_id
        if len(runs) >= 2:
            spread = seed_replicates.seed_spread(runs)
            cards[model_id] = write_model_card(folder, model_metrics, spread=spread)
        else:
            note = (
                f"None: no replicate of this recipe was found under "
                f"`results/replicates/seed_*/{model_id}/` when the comparison chapter wrote this "
                f"card, so its training noise is not measured; `python -m helpers.book "
                f"--replicates K --replicate-chapters {model_id}` trains them."
            )
            cards[model_id] = write_model_card(folder, model_metrics, replicates_note=note)
    return cards


def validation_auc(
    all_metrics: dict[str, dict],
    model_id: str,
    seed_runs: dict[str, list[seed_replicates.SeedRun]] | None = None,
) -> float:
    """A model's validation AUC: the mean over its seeds when it has replicates, else its
    chapter's. Each seed's AUC is on that seed's own validation persons."""
    runs = (seed_runs or {}).get(model_id) or []
    if len(runs) >= 2:
        return sum(float(run.metrics["val"]["auc"]) for run in runs) / len(runs)
    return float(all_metrics[model_id]["val"]["auc"])


def reference_model(
    all_metrics: dict[str, dict],
    seed_runs: dict[str, list[seed_replicates.SeedRun]] | None = None,
) -> str:
    """The model with the highest *validation* AUC: the one a study would carry forward.

    Chosen on validation so that the paired tests on the test set are not tests of a
    winner picked by the test set itself. A model with replicates is judged on its mean
    validation AUC over its seeds (:func:`validation_auc`), so one lucky seed does not
    carry it forward. Ties go to the later model id.
    """
    return max(all_metrics, key=lambda k: (validation_auc(all_metrics, k, seed_runs), k))


def _checked_persons(persons, frame: pd.DataFrame, name: str) -> list[str]:
    persons = list(persons)
    if len(persons) != len(frame):
        raise ValueError(
            f"persons has {len(persons)} entries but {name}'s test predictions have "
            f"{len(frame)} rows: give the person of each test image, in the predictions' "
            "order (helpers.data.test_persons)"
        )
    return persons


def _paired(
    all_metrics: dict[str, dict],
    all_predictions: dict[str, pd.DataFrame],
    a: str,
    b: str,
    persons,
) -> dict:
    """Paired person-level bootstrap of a - b (AUC, sensitivity, specificity) on the same
    test images, each model at its own validation threshold."""
    fa, fb = all_predictions[a], all_predictions[b]
    if list(fa["path"]) != list(fb["path"]):
        raise ValueError(
            f"{a}'s and {b}'s test predictions are not on the same images in the same order"
        )
    persons = _checked_persons(persons, fa, a)
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
    all_metrics: dict[str, dict],
    all_predictions: dict[str, pd.DataFrame],
    *,
    persons,
    seed_runs: dict[str, list[seed_replicates.SeedRun]] | None = None,
) -> pd.DataFrame:
    """Each model against the reference model (:func:`reference_model`) on the same test images.

    For AUC, sensitivity and specificity: the difference (this model minus the reference)
    with a paired person-level bootstrap 95% interval
    (:func:`helpers.bootstrap.paired_person_bootstrap`), each model at its own
    validation-chosen threshold. Beside them DeLong's test of the AUC difference and
    McNemar's exact test on the decisions, their p-values adjusted by Holm's method for all
    the tests in the table. ``persons``: the person of each test image, in the
    predictions' order; ``seed_runs``: replicates for choosing the reference.
    """
    reference = reference_model(all_metrics, seed_runs)
    ref = all_predictions[reference]
    ref_called = metrics.predict_labels(
        ref["score"], all_metrics[reference]["threshold"]["threshold"]
    )
    rows, raw_p = {}, []
    for model_id, frame in all_predictions.items():
        if model_id == reference:
            continue
        paired = _paired(all_metrics, all_predictions, model_id, reference, persons)
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
    *,
    persons,
) -> pd.DataFrame:
    """The book's own questions as paired comparisons on the same test images.

    model_7 (fine-tuned) against model_5 (the same base, frozen) and against model_6 (from
    scratch); model_8 (their ensemble) against model_6 and model_7; each model with a
    ``predictions_test_adapted.csv`` against itself adapted to each folder's images.
    Differences in AUC, sensitivity and specificity with paired person-level bootstrap 95%
    intervals, each model at its own validation threshold, and the verdict on the AUC;
    p-values (bootstrap, AUC) Holm-adjusted over the table.
    """
    from helpers.results import read_predictions

    frames, thresholds = dict(all_predictions), dict(all_metrics)
    pairs = [
        (a, b)
        for a, b in (
            ("model_7", "model_5"),
            ("model_7", "model_6"),
            ("model_8", "model_6"),
            ("model_8", "model_7"),
        )
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
        paired = _paired(thresholds, frames, a, b, persons)["differences"]
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
    person-level 95% intervals; few, short columns so that the table fits the page at a
    1366 px window, each interval under its estimate (each model chapter has the full
    table; training times are in the run-times appendix)."""
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
        rows[model_id] = row
        if "adapted" in m:  # beside the headline, never instead of it
            block = m["adapted"]["test"]
            rows[f"{model_id} adapted (no labels)"] = {
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
            }
    return pd.DataFrame(rows).T


def _best_by_validation(
    all_metrics: dict[str, dict],
    candidates,
    seed_runs: dict[str, list[seed_replicates.SeedRun]] | None = None,
) -> str:
    """Of ``candidates``, the model with the highest validation AUC (mean over its seeds
    when it has replicates; never chosen on test)."""
    return max(candidates, key=lambda k: (validation_auc(all_metrics, k, seed_runs), k))


def case_study_claims(
    all_metrics: dict[str, dict],
    seed_runs: dict[str, list[seed_replicates.SeedRun]] | None = None,
) -> list[tuple[str, str, str]]:
    """The case study's conclusions about recipes, each as ``(claim, a, b)``: the claim is
    that recipe ``a`` does not improve on recipe ``b``.

    Where the case study compared groups (the small CNNs, the MobileNetV2s), each group is
    represented by its model with the highest validation AUC (:func:`_best_by_validation`).
    """
    m = {k: v for k, v in all_metrics.items() if k in chapters.case_study_model_ids()}
    cnn = _best_by_validation(m, ("model_1", "model_2", "model_3"), seed_runs)
    mobile = _best_by_validation(m, ("model_4", "model_5"), seed_runs)
    return [
        (
            "Dropout and batch normalisation (model 2) do not improve on model 1.",
            "model_2",
            "model_1",
        ),
        ("Adam with lighter dropout (model 3) does not improve on model 2.", "model_3", "model_2"),
        ("Augmentation (model 4) does not improve on model 5.", "model_4", "model_5"),
        ("Transfer learning (models 4-5) does not beat the small CNNs (models 1-3).", mobile, cnn),
    ]


def _claim_outcome(said: str, a: str) -> str:
    """A verdict on ``a`` against ``b`` read as the outcome of the claim "a does not improve"."""
    if said.startswith(f"{a} improves"):
        return f"does not hold: {said}"
    if said.startswith(f"{a} is worse"):
        return f"holds: {said}"
    return said


def conclusions(
    all_metrics: dict[str, dict],
    all_predictions: dict[str, pd.DataFrame],
    *,
    persons,
    seed_runs: dict[str, list[seed_replicates.SeedRun]] | None = None,
) -> pd.DataFrame:
    """Each conclusion the case study drew, judged by the interval of a difference.

    A comparison of two models rests on the paired person-level bootstrap interval of their
    AUC difference (never on whether their own intervals overlap): the first model
    "improves", is "worse", or "these data cannot tell" with the interval given. The
    p-values of the comparisons are adjusted together by Holm's method. Where two models
    are grouped (the small CNNs, the MobileNetV2s), each group is represented by its model
    with the highest *validation* AUC (over its seeds when ``seed_runs`` has replicates).
    This is one training run per recipe; :func:`conclusions_with_training_noise` judges
    the same claims over the replicates.
    """
    m = {k: v for k, v in all_metrics.items() if k in chapters.case_study_model_ids()}
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
    claims = case_study_claims(all_metrics, seed_runs)
    paired = [
        _paired(all_metrics, all_predictions, a, b, persons)["differences"]["auc"]
        for _, a, b in claims
    ]
    adjusted = bootstrap.holm_adjust([d["p_value"] for d in paired])
    for (claim, a, b), d, p in zip(claims, paired, adjusted):
        said = bootstrap.verdict(d["difference"], names=(a, b))
        rows.append(
            {
                "case study's conclusion": claim,
                "evidence here": (
                    f"AUC {a} {d['a']:.3f}, {b} {d['b']:.3f}; "
                    f"{a} minus {b}: {_difference_text(d['difference'])}"
                ),
                "p (Holm)": p_value_text(float(p)),
                "verdict": _claim_outcome(said, a),
            }
        )
    return pd.DataFrame(rows).set_index("case study's conclusion")


# ---------------------------------------------------------------------------------------
# Training noise: the recipes trained with other seeds
# ---------------------------------------------------------------------------------------


#: What a training-noise table says when no recipe was trained with several seeds.
NO_REPLICATES = (
    "this build trained every recipe with one seed; python -m helpers.book --replicates K "
    "trains the replicated recipes K more times"
)


def _no_replicates_table() -> pd.DataFrame:
    return pd.DataFrame({"note": [NO_REPLICATES]}, index=pd.Index(["no replicates"]))


def _spread_text(row) -> str:
    return f"{row['min']:.3f}-{row['max']:.3f} (sd {row['sd']:.3f})"


def training_noise(seed_runs: dict[str, list[seed_replicates.SeedRun]]) -> pd.DataFrame:
    """For each recipe with replicates: the spread over seeds of test AUC, sensitivity and
    specificity, beside the person-level 95% interval of the chapter's own run.

    Each seed's rates are at the threshold chosen on that seed's own validation persons.
    The spread is the training noise (another training of the same recipe); the interval
    is the test-set noise (other children like these); neither contains the other.

    Parameters
    ----------
    seed_runs : dict
        Model id to its runs (:func:`read_all_seed_runs`); models with one run are left out.

    Returns
    -------
    pandas.DataFrame
        One row per replicated recipe: for AUC, sensitivity and specificity, ``<name>
        over seeds`` (min-max and standard deviation) and ``<name>, one run`` (the
        chapter's run with its person-level interval); six columns, which fit the page
        (:func:`seed_results` lists the seeds). When no recipe has replicates, one row
        saying so (:data:`NO_REPLICATES`).
    """
    runs_by_model = replicated(seed_runs)
    if not runs_by_model:
        return _no_replicates_table()
    labels = {"auc": "AUC", "sensitivity": "sensitivity", "specificity": "specificity"}
    rows = {}
    for model_id, runs in runs_by_model.items():
        spread = seed_replicates.seed_spread(runs)
        row = {}
        for name, label in labels.items():
            row[f"{label} over seeds"] = _spread_text(spread.loc[name])
            row[f"{label}, one run"] = interval_text(runs[0].metrics["test"], name)
        rows[model_id] = row
    return pd.DataFrame(rows).T


def forest_seeds(seed_runs: dict[str, list[seed_replicates.SeedRun]]) -> pd.DataFrame | None:
    """Each seed's test AUC, sensitivity and specificity of every replicated recipe, for
    :func:`helpers.plots.plot_forest`'s ``seeds``; None when no recipe has replicates."""
    runs_by_model = replicated(seed_runs)
    return seed_replicates.seeds_by_model(runs_by_model) if runs_by_model else None


def seed_results(seed_runs: dict[str, list[seed_replicates.SeedRun]]) -> pd.DataFrame:
    """Every seed of every replicated recipe: its validation threshold, validation AUC and
    test AUC, sensitivity and specificity, rounded for the page
    (:func:`helpers.replicates.seeds_by_model`); one row saying so when no recipe has
    replicates."""
    runs_by_model = replicated(seed_runs)
    if not runs_by_model:
        return _no_replicates_table()
    table = seed_replicates.seeds_by_model(runs_by_model)
    table.insert(
        1,
        "val AUC",
        [float(run.metrics["val"]["auc"]) for runs in runs_by_model.values() for run in runs],
    )
    return table.round(3)


def conclusions_with_training_noise(
    all_metrics: dict[str, dict],
    seed_runs: dict[str, list[seed_replicates.SeedRun]],
    *,
    persons,
) -> pd.DataFrame:
    """The case study's conclusions about recipes judged on one run, then with training noise.

    For each claim of :func:`case_study_claims` whose two recipes both have replicates:
    the one-seed verdict (the paired person bootstrap of the chapters' own runs) and the
    verdict of :func:`helpers.replicates.compare_recipes` on all the seeds (seeds and
    persons resampled together), and whether the replicates support what one seed said.
    A claim whose recipes are not both replicated says which ones are missing.

    Parameters
    ----------
    all_metrics : dict
        Model id to its chapter's ``metrics.json`` (for choosing group representatives).
    seed_runs : dict
        Model id to its runs (:func:`read_all_seed_runs`).
    persons : sequence of str
        The person of each test image, in the predictions' order.

    Returns
    -------
    pandas.DataFrame
        Indexed by the claim: ``one run`` (the verdict on the AUC difference),
        ``with training noise`` (the verdict over the seeds, with their numbers),
        ``replicates support one run`` (``"yes"``, ``"no"`` or ``""``).
    """
    rows = []
    for claim, a, b in case_study_claims(all_metrics, seed_runs):
        runs_a, runs_b = seed_runs.get(a, []), seed_runs.get(b, [])
        missing = [m for m, runs in ((a, runs_a), (b, runs_b)) if len(runs) < 2]
        if missing:
            frames = {m: seed_runs[m][0].predictions for m in (a, b)}
            metrics_of = {m: seed_runs[m][0].metrics for m in (a, b)}
            one = _paired(metrics_of, frames, a, b, persons)["differences"]["auc"]["difference"]
            rows.append(
                {
                    "case study's conclusion": claim,
                    "one run": _claim_outcome(bootstrap.verdict(one, names=(a, b)), a),
                    "with training noise": (
                        f"not judged: {' and '.join(missing)} trained with one seed "
                        f"(python -m helpers.book --replicates K --replicate-chapters "
                        f"{' '.join(missing)})"
                    ),
                    "replicates support one run": "",
                }
            )
            continue
        judged = seed_replicates.compare_recipes(runs_a, runs_b, persons=persons)
        many = judged["replicates"]
        rows.append(
            {
                "case study's conclusion": claim,
                "one run": _claim_outcome(judged["one_seed"]["verdict"], a),
                "with training noise": (
                    f"{_claim_outcome(many['verdict'], a)}; {a} minus {b}, mean over "
                    f"{len(runs_a)} and {len(runs_b)} seeds: {many['difference'].value:+.3f}"
                ),
                "replicates support one run": "yes" if judged["supported"] else "no",
            }
        )
    return pd.DataFrame(rows).set_index("case study's conclusion")


def _names_text(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def training_noise_sentence(seed_runs: dict[str, list[seed_replicates.SeedRun]]) -> str:
    """One sentence for the page: which recipes were trained with how many seeds, and how
    far their test AUC and specificity moved.

    Examples
    --------
    >>> training_noise_sentence({})[:44]
    'This build trained every recipe with one see'
    """
    runs_by_model = replicated(seed_runs)
    if not runs_by_model:
        return f"{NO_REPLICATES[0].upper()}{NO_REPLICATES[1:]}."
    counts = {len(runs) for runs in runs_by_model.values()}
    seeds_text = (
        f"{counts.pop()} seeds each" if len(counts) == 1 else "several seeds (see the table)"
    )
    spreads = {m: seed_replicates.seed_spread(runs) for m, runs in runs_by_model.items()}
    parts = []
    for name, label in (("auc", "test AUC"), ("specificity", "specificity")):
        model_id = max(
            spreads, key=lambda m: spreads[m].loc[name, "max"] - spreads[m].loc[name, "min"]
        )
        spread = spreads[model_id].loc[name]
        parts.append(
            f"{label} moved most for {model_id}, from {spread['min']:.3f} to "
            f"{spread['max']:.3f} over its seeds"
        )
    return (
        f"This build trained {_names_text(list(runs_by_model))} with {seeds_text}: "
        f"{parts[0]}, and {parts[1]}."
    )


def verdicts_sentence(noise_table: pd.DataFrame) -> str:
    """One sentence for the page: how many claims were judged with training noise and which
    verdicts one seed gave that the replicates do not support.

    Parameters
    ----------
    noise_table : pandas.DataFrame
        :func:`conclusions_with_training_noise`'s table.
    """
    support = noise_table["replicates support one run"]
    judged = int((support != "").sum())
    if judged == 0:
        return "No conclusion could be judged with training noise in this build."
    changed = [claim for claim, said in support.items() if said == "no"]
    first = (
        f"{judged} of the case study's {len(noise_table)} conclusions about recipes could be "
        "judged with training noise"
    )
    if not changed:
        return f"{first}, and the replicates give each the verdict one seed gave."
    quoted = "; ".join(f'"{claim}"' for claim in changed)
    return (
        f"{first}; the replicates do not give {len(changed)} of them the verdict one seed "
        f"gave: {quoted}"
    )
