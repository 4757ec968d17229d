"""Splitting the images: training and validation by person, the official test folder untouched.

The official ``val`` folder holds only 16 images (8 per class): one image moves accuracy by
six points, far too few to choose a threshold or compare models. We keep the official test
folder untouched as the test set, split the official train folder into training and
validation *by person* (see :func:`person_aware_split`), and add the 16 official validation
images to our validation side. Their persons never occur in the train folder, so this adds
no leakage, and no image of the download is left unused. Copies without them (no ``val/``,
or an empty one) are split the same way, with nothing added; :func:`official_val_note` says
which happened. :func:`image_level_split` is the case study's split by image, kept only to
measure what it leaks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config
from helpers.data.cache import _read_disk_cache, _write_disk_cache, decoded_cache_dir
from helpers.data.folders import list_split
from helpers.files import atomic_write_text


def person_aware_split(
    labels: Iterable[int],
    groups: Iterable[str],
    *,
    val_fraction: float = config.VAL_FRACTION,
    seed: int,
) -> np.ndarray:
    """Choose validation images so that no person is on both sides, keeping class ratios.

    Uses scikit-learn's :class:`~sklearn.model_selection.StratifiedGroupKFold` with
    ``round(1 / val_fraction)`` folds, shuffled by ``seed``, and takes its first fold as
    validation.

    Parameters
    ----------
    labels : sequence of int, shape (n,)
        Class of each image.
    groups : sequence of str, shape (n,)
        Person (group) of each image, e.g. from :func:`helpers.data.group_id`.
    val_fraction : float, default 0.2
        Share of the images to hold out, in (0, 0.5].
    seed : int
        Fixes the split: the same seed gives the same split.

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
        True for images on the validation side.

    Raises
    ------
    ValueError
        If labels and groups differ in length, ``val_fraction`` is outside (0, 0.5], or
        there are fewer distinct persons than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(list(labels))
    groups = np.asarray(list(groups))
    if labels.shape != groups.shape:
        raise ValueError(
            f"labels and groups must have the same length, got {labels.size} and {groups.size}"
        )
    if not 0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5], got {val_fraction!r}")
    n_splits = max(2, round(1 / val_fraction))
    if len(np.unique(groups)) < n_splits:
        raise ValueError(
            f"need at least {n_splits} distinct persons to hold out {val_fraction:.0%}, "
            f"got {len(np.unique(groups))}"
        )
    # The search for balanced folds takes seconds, most of a cached load's time: keep its
    # answer beside the decoded images, keyed by everything it depends on.
    cache, path = decoded_cache_dir(), None
    if cache is not None:
        import hashlib

        import sklearn

        digest = hashlib.sha256(
            f"split-v1 sklearn {sklearn.__version__} {val_fraction!r} {seed!r}".encode()
        )
        digest.update(labels.astype(np.int64).tobytes())
        digest.update("\0".join(map(str, groups)).encode())
        path = cache / f"split-{digest.hexdigest()[:32]}.npy"
        cached = _read_disk_cache(path, (labels.size,))
        if cached is not None:
            return cached.astype(bool)
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val_index = next(folds.split(np.zeros(labels.size), labels, groups))
    is_val = np.zeros(labels.size, dtype=bool)
    is_val[val_index] = True
    if path is not None:
        _write_disk_cache(path, is_val.astype(np.uint8))
    return is_val


def split_table(
    data_dir: str | os.PathLike | None = None,
    *,
    val_fraction: float = config.VAL_FRACTION,
    seed: int,
) -> pd.DataFrame:
    """The split the project uses: one row per image with ``path, split, label, group, identity``.

    ``split`` is ``"train"`` or ``"val"`` (from the official train folder by person, plus
    the official val folder, when the data folder has one, on the validation side) or
    ``"test"`` (the official test folder, untouched). Rows are sorted by split (train, val,
    test), then by path.

    Parameters
    ----------
    data_dir : path-like or None
        The data folder (see :func:`helpers.data.check_data_dir`); None is the embedded copy.
    val_fraction, seed
        See :func:`person_aware_split`.

    Returns
    -------
    pandas.DataFrame
        Columns ``path``, ``split``, ``label``, ``group``, ``identity`` (see
        :func:`helpers.data.list_split`). ``group`` may be a salted key of a person's
        PatientID: keep it in memory, never write it (:func:`write_split_csv` does not).

    Raises
    ------
    DataError
        If the data folder's layout is wrong.
    """
    train = list_split(data_dir, "train")
    is_val = person_aware_split(
        train["label"], train["group"], val_fraction=val_fraction, seed=seed
    )
    train["split"] = np.where(is_val, "val", "train")
    official_val = list_split(data_dir, "val").assign(split="val")  # no rows without val/
    test = list_split(data_dir, "test").assign(split="test")
    parts = [part for part in (train, official_val, test) if len(part)]
    table = pd.concat(parts, ignore_index=True)
    order = {"train": 0, "val": 1, "test": 2}
    table = table.sort_values(
        ["split", "path"], key=lambda col: col.map(order) if col.name == "split" else col
    )
    return table[["path", "split", "label", "group", "identity"]].reset_index(drop=True)


def official_val_note(official_val_images: int, *, val_fraction: float) -> str:
    """One sentence on the official validation images: added to validation, or absent.

    The data chapter shows it and every model's ``metrics.json`` keeps it
    (``official_val``), so a result made without ``val/`` says so wherever it is read.

    Parameters
    ----------
    official_val_images : int
        Images of the official ``val/`` folder on the validation side (0: none there).
    val_fraction : float
        Share of the train folder's persons held out for validation.

    Returns
    -------
    str

    Examples
    --------
    >>> official_val_note(0, val_fraction=0.2)[:60]
    'This data folder has no official validation images (its val/'
    """
    if official_val_images < 0:
        raise ValueError(f"official_val_images must be 0 or more, got {official_val_images!r}")
    if official_val_images == 0:
        return (
            "This data folder has no official validation images (its val/ folder is missing "
            f"or empty), so the validation side is only the {val_fraction:.0%} of the train "
            "folder's persons held out for validation; the book would have added the official "
            "val/ images to it."
        )
    return (
        f"The {official_val_images} images of the official val/ folder joined the validation "
        f"side, beside the {val_fraction:.0%} of the train folder's persons held out for it: "
        "their persons never occur in the train folder."
    )


def write_split_csv(table: pd.DataFrame, results_dir: str | os.PathLike) -> Path:
    """Write ``results_dir/split.csv`` (columns ``path,split,label``) atomically.

    Parameters
    ----------
    table : pandas.DataFrame
        A table from :func:`split_table`.
    results_dir : path-like
        Folder to write into; made if missing.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(results_dir) / "split.csv"
    atomic_write_text(path, table[["path", "split", "label"]].to_csv(index=False))
    return path


def persons_on_both_sides(groups: Iterable[str], is_val: Iterable[bool]) -> int:
    """How many persons (groups) have images on both sides of a split.

    Parameters
    ----------
    groups : sequence of str, shape (n,)
        Person (group) of each image.
    is_val : sequence of bool, shape (n,)
        True for images on the validation side.

    Returns
    -------
    int

    Examples
    --------
    >>> persons_on_both_sides(["a", "a", "b"], [True, False, False])
    1
    """
    frame = pd.DataFrame({"group": list(groups), "val": list(is_val)})
    sides = frame.groupby("group")["val"].nunique()
    return int((sides > 1).sum())


def image_level_split(
    n_images: int, *, val_fraction: float = config.VAL_FRACTION, seed: int
) -> np.ndarray:
    """A plain random split by image (what the case study did), for comparison only.

    Parameters
    ----------
    n_images : int
        How many images to split.
    val_fraction : float
        Share on the validation side (rounded to whole images).
    seed : int
        Fixes the split.

    Returns
    -------
    numpy.ndarray of bool, shape (n_images,)
        True for images on the validation side.
    """
    rng = np.random.default_rng(seed)
    is_val = np.zeros(n_images, dtype=bool)
    is_val[rng.permutation(n_images)[: round(val_fraction * n_images)]] = True
    return is_val
