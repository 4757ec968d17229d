"""Replicates: a chapter's recipe trained again with other seeds, and conclusions that survive it.

Every interval of the book resamples test persons: it says how much a number would move on
other children like these, not how much it would move if the same recipe were trained
again. A *replicate* is the same chapter notebook run again with another ``seed`` (which
fixes the train/validation split, the initial weights and the shuffling); its spread over
seeds is the training noise.

Where replicates live
---------------------
The chapter's own run stays ``<results_dir>/<model-id>/``. Replicate ``k`` of a chapter
whose seed is ``s`` is the same notebook run with ``seed = s + k`` (``k = 1 .. K``,
:func:`replicate_seeds`) and ``results_dir = <results_dir>/replicates/seed_<s + k>/``
(:func:`replicate_results_dir`), so it writes ``<results_dir>/replicates/seed_<s + k>/
<model-id>/`` with the layout of :mod:`helpers.results` (and that seed's ``split.csv``).
Asking for more replicates later adds seeds and keeps the earlier ones. The runner
(``python -m helpers.book --replicates K``) makes them; its executed copies stay in
``_build/replicates/`` and are not pages of the book.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the runner imports this module for its layout
    import pandas as pd

#: The chapters whose recipes the book replicates by default (the cheap ones);
#: ``--replicate-chapters`` names others.
REPLICATED_CHAPTERS: tuple[str, ...] = ("model_1", "model_2", "model_3", "model_5")
#: Replicates per chapter when none are asked for: two more seeds, three runs of each
#: recipe (the whole book, with them, measured within its 30-minute budget on 2 cores).
DEFAULT_REPLICATES = 2
#: The folder, inside a results folder, that holds one results folder per replicate seed.
REPLICATES_FOLDER = "replicates"

#: The public API (the rest is private by name).
__all__ = [
    "REPLICATED_CHAPTERS",
    "DEFAULT_REPLICATES",
    "REPLICATES_FOLDER",
    "SPREAD_METRICS",
    "replicate_seeds",
    "replicate_results_dir",
    "replicate_folders",
    "SeedRun",
    "ReplicateLeftOut",
    "read_seed_runs",
    "seed_table",
    "seed_spread",
    "seeds_by_model",
    "best_on_validation",
    "compare_recipes",
    "choose_beyond_noise",
]

#: The test metrics whose spread over seeds is reported (rates at each run's own threshold).
SPREAD_METRICS: tuple[str, ...] = ("auc", "sensitivity", "specificity")
#: Parameters that may differ between a chapter's run and its replicates (the seed also
#: draws the split, recorded as ``split_seed``); any other difference means the folder
#: holds another recipe.
_PER_RUN_PARAMETERS = ("seed", "split_seed", "results_dir")


class ReplicateLeftOut(UserWarning):
    """A replicate folder that does not belong to the recipe: it is not read. A chapter
    (``helpers.report.start_chapter``) shows this warning on its page."""


def _check_whole(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def replicate_seeds(seed: int, count: int) -> list[int]:
    """The seeds of a chapter's replicates: ``seed + 1, ..., seed + count``.

    Deterministic from the chapter's own seed, never equal to it, and a prefix of the
    seeds of more replicates (3 replicates then 5 re-use the first 3).

    Parameters
    ----------
    seed : int >= 0
        The chapter's seed.
    count : int >= 0
        How many replicates.

    Returns
    -------
    list of int

    Raises
    ------
    ValueError
        If ``seed`` or ``count`` is not a whole number >= 0.

    Examples
    --------
    >>> replicate_seeds(42, 3)
    [43, 44, 45]
    """
    seed = _check_whole(seed, "seed", 0)
    count = _check_whole(count, "the number of replicates", 0)
    return [seed + k for k in range(1, count + 1)]


def replicate_results_dir(results_dir: str | os.PathLike, seed: int) -> Path:
    """The results folder of the replicates trained with ``seed``.

    Parameters
    ----------
    results_dir : path-like
        The chapters' results folder (``results/``).
    seed : int >= 0
        The replicate's seed.

    Returns
    -------
    Path
        ``<results_dir>/replicates/seed_<seed>``; a replicate of ``model_1`` writes
        ``<that>/model_1/``.

    Examples
    --------
    >>> replicate_results_dir("results", 43).as_posix()
    'results/replicates/seed_43'
    """
    seed = _check_whole(seed, "seed", 0)
    return Path(results_dir) / REPLICATES_FOLDER / f"seed_{seed}"


def _seed_of_folder(name: str) -> int | None:
    prefix = "seed_"
    if name.startswith(prefix) and name[len(prefix) :].isdigit():
        return int(name[len(prefix) :])
    return None


def replicate_folders(results_dir: str | os.PathLike, model_id: str) -> dict[int, Path]:
    """The results folders of a model's replicates found under ``results_dir``, by seed.

    Parameters
    ----------
    results_dir : path-like
        The chapters' results folder.
    model_id : str
        The model (``"model_1"``).

    Returns
    -------
    dict
        Seed to ``<results_dir>/replicates/seed_<seed>/<model_id>`` for each seed folder
        holding that model's ``metrics.json``, by increasing seed; the chapter's own run is
        not among them.
    """
    root = Path(results_dir) / REPLICATES_FOLDER
    found: dict[int, Path] = {}
    if not root.is_dir():
        return found
    for folder in root.iterdir():
        seed = _seed_of_folder(folder.name)
        if seed is not None and (folder / model_id / "metrics.json").is_file():
            found[seed] = folder / model_id
    return dict(sorted(found.items()))


# ---------------------------------------------------------------------------------------
# Reading a recipe's runs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedRun:
    """One training run of a recipe: its seed, its ``metrics.json`` and its test predictions.

    Attributes
    ----------
    model_id : str
        The recipe (``"model_1"``).
    seed : int
        The seed it was trained with.
    metrics : dict
        Its ``metrics.json``.
    predictions : pandas.DataFrame
        Its ``predictions_test.csv`` (``path, label, score``).
    folder : Path or None
        Where it was read from (None for a run made in memory).
    """

    model_id: str
    seed: int
    metrics: dict
    predictions: pd.DataFrame
    folder: Path | None = None

    @property
    def threshold(self) -> float:
        """Its operating point, chosen on its own validation data."""
        return float(self.metrics["threshold"]["threshold"])

    @property
    def name(self) -> str:
        """``model_1 (seed 43)``."""
        return f"{self.model_id} (seed {self.seed})"


def _read_run(folder: Path, model_id: str) -> SeedRun:
    from helpers.results import read_predictions

    path = folder / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        seed = metrics["parameters"]["seed"]
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} does not exist; run the {model_id} chapter first"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path} is not a model's metrics.json with parameters.seed ({exc!r})"
        ) from None
    predictions = read_predictions(folder / "predictions_test.csv")
    return SeedRun(model_id, int(seed), metrics, predictions, folder)


def _recipe_parameters(metrics: dict) -> dict:
    return {k: v for k, v in metrics.get("parameters", {}).items() if k not in _PER_RUN_PARAMETERS}


def read_seed_runs(results_dir: str | os.PathLike, model_id: str) -> list[SeedRun]:
    """A recipe's runs: the chapter's own, then each replicate found, by increasing seed.

    Parameters
    ----------
    results_dir : path-like
        The chapters' results folder (``results/``).
    model_id : str
        The model (``"model_1"``).

    Returns
    -------
    list of SeedRun
        The chapter's own run (``<results_dir>/<model_id>/``) first. A replicate trained
        with other parameters than the chapter's run (left by an earlier build with, say,
        other epochs) is another recipe: it is left out with a warning naming its folder,
        and so is one whose seed is the chapter's own.

    Raises
    ------
    FileNotFoundError
        If the chapter's own run or a replicate's test predictions are missing.
    ValueError
        If a ``metrics.json`` has no ``parameters.seed``, or a replicate folder's name
        (``seed_43``) is not the seed its ``metrics.json`` records.
    """
    own = _read_run(Path(results_dir) / model_id, model_id)
    runs, left_out = [own], []
    for seed, folder in replicate_folders(results_dir, model_id).items():
        run = _read_run(folder, model_id)
        if run.seed != seed:
            raise ValueError(
                f"{folder / 'metrics.json'} records seed {run.seed}, but its folder is "
                f"{folder.parent.name}: the replicates' folders are named by their seed"
            )
        if seed == own.seed:
            left_out.append(f"{folder} (the chapter's own seed {seed})")
        elif _recipe_parameters(run.metrics) != _recipe_parameters(own.metrics):
            left_out.append(f"{folder} (trained with other parameters than {model_id}'s run)")
        else:
            runs.append(run)
    if left_out:
        warnings.warn(
            f"replicates of {model_id} left out: {'; '.join(left_out)}",
            ReplicateLeftOut,
            stacklevel=2,
        )
    return runs


# ---------------------------------------------------------------------------------------
# The spread over seeds
# ---------------------------------------------------------------------------------------


def seed_table(runs: list[SeedRun]) -> pd.DataFrame:
    """One row per seed: the threshold chosen on that seed's validation data, and the test
    AUC, sensitivity and specificity at it, as its ``metrics.json`` reports them.

    Parameters
    ----------
    runs : list of SeedRun
        A recipe's runs (:func:`read_seed_runs`).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``seed``; columns ``threshold`` and :data:`SPREAD_METRICS`.
    """
    import pandas as pd

    if not runs:
        raise ValueError("no runs: a recipe needs at least one run to tabulate")
    rows = {
        run.seed: {
            "threshold": run.threshold,
            **{name: float(run.metrics["test"][name]) for name in SPREAD_METRICS},
        }
        for run in runs
    }
    table = pd.DataFrame(rows).T
    table.index.name = "seed"
    return table


def seed_spread(runs: list[SeedRun]) -> pd.DataFrame:
    """The spread of test AUC, sensitivity and specificity over seeds, beside one run's
    person-level interval.

    The spread over seeds is the training noise (what another training of the same recipe
    could give); the person-level interval of one run is the test-set noise (what other
    children like these could give). Neither contains the other.

    Parameters
    ----------
    runs : list of SeedRun
        A recipe's runs, the chapter's own first (:func:`read_seed_runs`); at least 2.

    Returns
    -------
    pandas.DataFrame
        One row per name in :data:`SPREAD_METRICS`; columns ``seeds`` (how many), ``min``,
        ``max``, ``mean``, ``sd`` (sample standard deviation, ``ddof=1``), ``one run``
        (the first run's value), ``one run ci_low`` and ``one run ci_high`` (its
        person-level 95% interval from ``metrics.json``).

    Raises
    ------
    ValueError
        With fewer than 2 runs (no spread), or two runs with the same seed.
    """
    seeds = [run.seed for run in runs]
    if len(runs) < 2:
        raise ValueError(
            f"a spread over seeds needs at least 2 runs, got {len(runs)} "
            "(python -m helpers.book --replicates K trains more)"
        )
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the runs' seeds must differ, got {seeds}")
    import pandas as pd

    table = seed_table(runs)
    first = runs[0].metrics["test"]
    rows = {}
    for name in SPREAD_METRICS:
        values = table[name].to_numpy(dtype=float)
        rows[name] = {
            "seeds": len(values),
            "min": float(values.min()),
            "max": float(values.max()),
            "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)),
            "one run": float(first[name]),
            "one run ci_low": float(first[f"{name}_ci_low"]),
            "one run ci_high": float(first[f"{name}_ci_high"]),
        }
    table = pd.DataFrame(rows).T
    table["seeds"] = table["seeds"].astype(int)
    return table


def seeds_by_model(runs_by_model: Mapping[str, list[SeedRun]]) -> pd.DataFrame:
    """Every seed of every recipe: its threshold and its test AUC, sensitivity, specificity.

    Parameters
    ----------
    runs_by_model : mapping
        Model id to its runs (:func:`read_seed_runs`).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``(model, seed)``, the columns of :func:`seed_table`; models in the
        mapping's order, each model's chapter run first.
    """
    import pandas as pd

    if not runs_by_model:
        raise ValueError("no recipes: give at least one model's runs")
    return pd.concat(
        {model_id: seed_table(runs) for model_id, runs in runs_by_model.items()},
        names=["model", "seed"],
    )


def best_on_validation(runs_by_model: Mapping[str, list[SeedRun]]) -> str:
    """The recipe with the highest mean *validation* AUC over its seeds: the one a study
    carries forward, chosen over the replicates and never on test.

    Parameters
    ----------
    runs_by_model : mapping
        Model id to its runs (:func:`read_seed_runs`), each run's ``metrics["val"]["auc"]``.

    Returns
    -------
    str
        The model id; a tie goes to the later id in sort order, as
        :func:`helpers.comparison.reference_model` does.
    """
    if not runs_by_model or any(not runs for runs in runs_by_model.values()):
        raise ValueError("every recipe needs at least one run to be chosen on validation")

    def mean_val_auc(model_id: str) -> float:
        runs = runs_by_model[model_id]
        return sum(float(run.metrics["val"]["auc"]) for run in runs) / len(runs)

    return max(runs_by_model, key=lambda m: (mean_val_auc(m), m))


# ---------------------------------------------------------------------------------------
# Verdicts that count training noise
# ---------------------------------------------------------------------------------------


def _same_images(runs: list[SeedRun]) -> list[str]:
    paths = list(runs[0].predictions["path"])
    for run in runs[1:]:
        if list(run.predictions["path"]) != paths:
            raise ValueError(
                f"{run.name}'s test predictions are not on the same images in the same order "
                f"as {runs[0].name}'s"
            )
    return paths


def _kind(said: str, names: tuple[str, str]) -> str:
    a, b = names
    if said.startswith(f"{a} improves on {b}"):
        return "improves"
    if said.startswith(f"{a} is worse than {b}"):
        return "worse"
    return "cannot tell"


def compare_recipes(
    runs_a: list[SeedRun],
    runs_b: list[SeedRun],
    *,
    persons: Sequence[str],
    metric: str = "auc",
    n_resamples: int = 2000,
    seed: int = 42,
    confidence: float = 0.95,
) -> dict:
    """Does recipe A improve on recipe B? Judged on one seed each, and with training noise.

    The one-seed verdict is the comparison chapter's: a paired person-level bootstrap of
    the two chapters' own runs (the first of each list;
    :func:`helpers.bootstrap.paired_person_bootstrap`). The replicated verdict rests on
    :func:`helpers.bootstrap.seed_person_bootstrap` over all the runs: the interval of the
    difference of the means over seeds, with seeds and persons resampled. When one seed
    gives a verdict the replicates do not support, ``statement`` says so.

    Parameters
    ----------
    runs_a, runs_b : list of SeedRun
        Each recipe's runs, the chapter's own first (:func:`read_seed_runs`), at least 2
        each, all on the same test images in the same order.
    persons : sequence of str
        The person of each test image, in the predictions' order, as the split knew it
        (:func:`helpers.data.test_persons`: a DICOM file's person is not in its name).
    metric : {"auc", "sensitivity", "specificity"}
        The difference judged (the rates at each run's own threshold).
    n_resamples, seed, confidence
        As in :func:`helpers.bootstrap.person_bootstrap` (``seed`` is the resampling's,
        not a training seed).

    Returns
    -------
    dict
        ``one_seed`` and ``replicates``: each ``{"verdict": text of
        :func:`helpers.bootstrap.verdict`, "difference": Estimate, "kind": "improves" |
        "worse" | "cannot tell"}``; ``seeds`` (``{"a": [...], "b": [...]}``);
        ``supported`` (True when the replicates give the one seed's verdict);
        ``statement`` (one sentence for the page); ``method``.

    Raises
    ------
    ValueError
        Fewer than 2 runs of a recipe, an unknown metric, runs on different images, or
        not one person per image.
    """
    from helpers import bootstrap

    if metric not in bootstrap.PAIRED_METRICS:
        raise ValueError(f"metric must be one of {bootstrap.PAIRED_METRICS}, got {metric!r}")
    for runs, which in ((runs_a, "a"), (runs_b, "b")):
        if len(runs) < 2:
            raise ValueError(
                f"recipe {which} has {len(runs)} run(s); judging with training noise needs at "
                "least 2 seeds (python -m helpers.book --replicates K trains more)"
            )
    names = (runs_a[0].model_id, runs_b[0].model_id)
    paths = _same_images([*runs_a, *runs_b])
    labels = runs_a[0].predictions["label"].to_numpy()
    persons = list(persons)
    if len(persons) != len(paths):
        raise ValueError(
            f"persons has {len(persons)} entries for {len(paths)} test images: give the "
            "person of each image, in the predictions' order (helpers.data.test_persons)"
        )
    options = {"n_resamples": n_resamples, "seed": seed, "confidence": confidence}
    single = bootstrap.paired_person_bootstrap(
        labels,
        runs_a[0].predictions["score"],
        runs_b[0].predictions["score"],
        persons,
        threshold_a=runs_a[0].threshold,
        threshold_b=runs_b[0].threshold,
        **options,
    )["differences"][metric]["difference"]
    nested = bootstrap.seed_person_bootstrap(
        labels,
        [run.predictions["score"] for run in runs_a],
        [run.predictions["score"] for run in runs_b],
        persons,
        thresholds_a=[run.threshold for run in runs_a],
        thresholds_b=[run.threshold for run in runs_b],
        **options,
    )
    replicated = nested["differences"][metric]["difference"]
    one = bootstrap.verdict(single, names=names)
    many = bootstrap.verdict(replicated, names=names)
    kinds = _kind(one, names), _kind(many, names)
    n_a, n_b = len(runs_a), len(runs_b)
    seeds_text = f"{n_a} seeds of {names[0]} and {n_b} of {names[1]}"
    if kinds[0] == kinds[1]:
        statement = f"{metric}: one seed and {seeds_text} agree: {many}"
    elif kinds[0] != "cannot tell" and kinds[1] == "cannot tell":
        statement = (
            f"{metric}: one seed supports '{one}'; the replicates ({seeds_text}) do not: "
            f"with training noise counted, {many}"
        )
    else:
        statement = f"{metric}: one seed says '{one}'; the replicates ({seeds_text}): {many}"
    return {
        "one_seed": {"verdict": one, "difference": single, "kind": kinds[0]},
        "replicates": {"verdict": many, "difference": replicated, "kind": kinds[1]},
        "seeds": {"a": [run.seed for run in runs_a], "b": [run.seed for run in runs_b]},
        "supported": kinds[0] == kinds[1],
        "statement": statement,
        "method": nested["method"],
    }


# ---------------------------------------------------------------------------------------
# Choices on a saturated validation set
# ---------------------------------------------------------------------------------------


def choose_beyond_noise(
    scores: pd.DataFrame,
    *,
    recipe: str,
    candidates: Sequence[str] | None = None,
    higher_is_better: bool = True,
    confidence: float = 0.95,
) -> dict:
    """Adopt a variant over the recipe only when it beats it by more than the noise of choosing.

    The rule, fixed before any row is trained: each row is trained with the same seeds as
    the recipe (the ablation's and the search's rows share the split and the seed), so
    each seed gives a *margin*, the row's validation score minus the recipe's. A row beats
    the recipe when the Student-t interval of its mean margin over the seeds lies above 0,
    each interval at the Bonferroni level ``1 - (1 - confidence) / m`` for the ``m``
    candidates (choosing the best of ``m`` rows is ``m`` chances to be lucky). Of the rows
    that beat the recipe, the one with the largest mean margin is adopted; when none does,
    the recipe is kept and the statement says that validation cannot tell the rows apart.

    Parameters
    ----------
    scores : pandas.DataFrame
        One row per variant (the recipe among them), one column per seed, the validation
        criterion (validation AUC; or log loss or Brier score where AUC is saturated, with
        ``higher_is_better=False``).
    recipe : str
        The row of the recipe itself, kept unless a row beats it.
    candidates : sequence of str, optional
        The rows that may be adopted (default: every other row; a row that cannot be
        adopted, such as an ensemble, is measured but left out here).
    higher_is_better : bool
        Whether a larger score is better.
    confidence : float in (0, 1)
        The family-wise confidence of the intervals.

    Returns
    -------
    dict
        ``choice`` (the adopted row, or ``recipe``), ``adopted`` (bool), ``margins`` (a
        DataFrame, one row per candidate: ``seeds``, ``mean margin``, ``sd``, ``low``,
        ``high``, ``beats recipe``; margins are signed so that positive is better),
        ``level`` (each interval's confidence) and ``statement`` (one sentence for the
        page).

    Raises
    ------
    ValueError
        Fewer than 2 seeds (columns); the recipe or a candidate is not a row; a missing
        (NaN) score; no candidate; ``confidence`` outside (0, 1).

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({42: [0.9940, 0.9968], 43: [0.9961, 0.9950], 44: [0.9952, 0.9957]},
    ...                      index=["recipe", "wider"])
    >>> choose_beyond_noise(table, recipe="recipe")["choice"]
    'recipe'
    """
    import numpy as np
    import pandas as pd
    from scipy.stats import t as student_t

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    if scores.shape[1] < 2:
        raise ValueError(
            f"the noise of choosing needs every row trained with at least 2 seeds (columns); "
            f"got {scores.shape[1]}: {list(scores.columns)}"
        )
    rows = list(scores.index)
    if recipe not in rows:
        raise ValueError(f"the recipe {recipe!r} is not a row; rows: {rows}")
    candidates = [r for r in rows if r != recipe] if candidates is None else list(candidates)
    unknown = [c for c in candidates if c not in rows or c == recipe]
    if unknown:
        raise ValueError(f"candidates {unknown} are not rows other than the recipe; rows: {rows}")
    if not candidates:
        raise ValueError("no candidate to weigh against the recipe")
    values = scores.loc[[recipe, *candidates]].to_numpy(dtype=float)
    if np.isnan(values).any():
        raise ValueError("a score is missing (NaN): every row needs a score for every seed")
    sign = 1.0 if higher_is_better else -1.0
    margins = sign * (values[1:] - values[0])  # one row per candidate, one column per seed
    k, m = margins.shape[1], len(candidates)
    level = 1 - (1 - confidence) / m
    quantile = float(student_t.ppf(1 - (1 - level) / 2, df=k - 1))
    mean, sd = margins.mean(axis=1), margins.std(axis=1, ddof=1)
    half = quantile * sd / np.sqrt(k)
    table = pd.DataFrame(
        {
            "seeds": k,
            "mean margin": mean,
            "sd": sd,
            "low": mean - half,
            "high": mean + half,
            "beats recipe": mean - half > 0,
        },
        index=pd.Index(candidates, name=f"minus {recipe}"),
    )
    winners = table[table["beats recipe"]]
    best = str(table["mean margin"].idxmax())
    best_text = (
        f"the largest mean margin, {best}'s {table.loc[best, 'mean margin']:+.4f}, has the "
        f"interval {table.loc[best, 'low']:+.4f} to {table.loc[best, 'high']:+.4f} over {k} "
        f"seeds ({level:.1%} each, {m} candidates)"
    )
    if winners.empty:
        choice = recipe
        statement = f"validation cannot tell the rows from {recipe}: {best_text}; {recipe} is kept"
    else:
        choice = str(winners["mean margin"].idxmax())
        statement = (
            f"{choice} beats {recipe} by more than the noise of choosing: mean margin "
            f"{table.loc[choice, 'mean margin']:+.4f}, interval {table.loc[choice, 'low']:+.4f} "
            f"to {table.loc[choice, 'high']:+.4f} over {k} seeds ({level:.1%}, {m} candidates)"
        )
    return {
        "choice": choice,
        "adopted": choice != recipe,
        "margins": table,
        "level": level,
        "statement": statement,
    }
