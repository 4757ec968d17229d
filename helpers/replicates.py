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

import os
from numbers import Integral
from pathlib import Path

#: The chapters whose recipes the default book would replicate (the cheap ones), once the
#: whole-book time with them is measured (issue 24); ``--replicates K`` replicates these.
REPLICATED_CHAPTERS: tuple[str, ...] = ("model_1", "model_2", "model_3", "model_5")
#: Replicates per chapter when none are asked for: none yet (the whole-book time budget
#: with replicates has not been measured).
DEFAULT_REPLICATES = 0
#: The folder, inside a results folder, that holds one results folder per replicate seed.
REPLICATES_FOLDER = "replicates"

#: The public API (the rest is private by name).
__all__ = [
    "REPLICATED_CHAPTERS",
    "DEFAULT_REPLICATES",
    "REPLICATES_FOLDER",
    "replicate_seeds",
    "replicate_results_dir",
]


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
