"""The data chapter's tables: what is in the folders, how it is split, and what a split leaks.

Each function turns a file table (:func:`helpers.data.describe_files`) or a loaded
:class:`~helpers.data.ChestXrays` into a small :class:`pandas.DataFrame` to show; none reads
or decodes a file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers import config
from helpers.data.load import ChestXrays
from helpers.data.split import image_level_split, persons_on_both_sides


def official_counts(files: pd.DataFrame) -> pd.DataFrame:
    """Images per official folder and class, with totals and the PNEUMONIA share.

    Parameters
    ----------
    files : pandas.DataFrame
        One row per image with columns ``split`` (official folder) and ``label``, as from
        :func:`helpers.data.describe_files`.

    Returns
    -------
    pandas.DataFrame
        Indexed by official folder (train, val, test); columns NORMAL, PNEUMONIA, ``total``
        and ``PNEUMONIA share`` (rounded to 3 decimals). A data folder without official
        validation images has a ``val`` row of zeros (its share NaN).
    """
    counts = (
        files.assign(cls=files["label"].map(dict(enumerate(config.CLASS_NAMES))))
        .groupby(["split", "cls"])
        .size()
        .unstack("cls")
        .reindex(index=list(config.OFFICIAL_SPLITS), columns=list(config.CLASS_NAMES))
        .fillna(0)
        .astype(np.int64)
    )
    counts["total"] = counts.sum(axis=1)
    counts["PNEUMONIA share"] = (counts["PNEUMONIA"] / counts["total"]).round(3)
    return counts


def official_val_size_note(official_val_images: int) -> str:
    """One sentence on the size of the official validation folder, for the data chapter.

    Parameters
    ----------
    official_val_images : int
        Images in the official ``val/`` folder (0: missing or empty).

    Returns
    -------
    str

    Examples
    --------
    >>> official_val_size_note(16)[:52]
    'The official validation folder holds only 16 images;'
    """
    if official_val_images < 0:
        raise ValueError(f"official_val_images must be 0 or more, got {official_val_images!r}")
    if official_val_images == 0:
        return (
            "This copy has no official validation images (its val/ folder is missing or "
            "empty); the book does not need them, since it chooses thresholds and compares "
            "models on persons held out of the train folder (see the split below)."
        )
    return (
        f"The official validation folder holds only {official_val_images} images; one image "
        "moves its accuracy by several points, far too few to choose a threshold or compare "
        "models."
    )


def size_summary(files: pd.DataFrame) -> pd.DataFrame:
    """Width, height, colour modes and file formats per official folder and class.

    Parameters
    ----------
    files : pandas.DataFrame
        The table of :func:`helpers.data.describe_files`.

    Returns
    -------
    pandas.DataFrame
        Indexed by (split, class); columns ``images``, ``width min-max``,
        ``height min-max``, ``modes`` (each with its count, most common first) and
        ``formats``.
    """
    grouped = files.assign(cls=files["label"].map(dict(enumerate(config.CLASS_NAMES)))).groupby(
        ["split", "cls"]
    )
    return pd.DataFrame(
        {
            "images": grouped.size(),
            "width min-max": grouped["width"].agg(lambda s: f"{s.min()}-{s.max()}"),
            "height min-max": grouped["height"].agg(lambda s: f"{s.min()}-{s.max()}"),
            "modes": grouped["mode"].agg(
                lambda s: ", ".join(f"{m} ({n})" for m, n in s.value_counts().items())
            ),
            "formats": grouped["format"].agg(lambda s: ", ".join(sorted(set(s)))),
        }
    )


def sample_indices(labels: np.ndarray, *, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` random indices of each class (NORMAL first), fixed by ``seed``.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (n,)
        Labels 0 and 1.
    per_class : int
        Indices to draw from each class, without replacement.
    seed : int
        Fixes the draw.

    Returns
    -------
    numpy.ndarray of int, shape (2 * per_class,)
        Sorted indices of NORMAL images, then sorted indices of PNEUMONIA images.

    Raises
    ------
    ValueError
        If a class has fewer than ``per_class`` images (NumPy's message).
    """
    rng = np.random.default_rng(seed)
    picks = [
        np.sort(rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False))
        for label in (0, 1)
    ]
    return np.concatenate(picks)


def leakage_summary(xrays: ChestXrays, *, seed: int) -> pd.DataFrame:
    """Persons on both sides: this project's split against a split by image (the case study's).

    Only the official train folder is compared, since only it is split.

    Parameters
    ----------
    xrays : ChestXrays
        The loaded data; its table gives each image's split and person.
    seed : int
        Seed of the split by image (:func:`helpers.data.image_level_split`).

    Returns
    -------
    pandas.DataFrame
        One row per split ("by person (this book)", "by image (case study)"); columns
        ``validation images``, ``persons on both sides``, ``validation images whose person
        is also in training`` and ``persons in validation``.
    """
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


def split_summary(xrays: ChestXrays) -> pd.DataFrame:
    """Images, persons and PNEUMONIA share per split.

    Parameters
    ----------
    xrays : ChestXrays
        The loaded data.

    Returns
    -------
    pandas.DataFrame
        Indexed by split (train, val, test); columns ``images``, NORMAL, PNEUMONIA,
        ``PNEUMONIA share`` (rounded to 3 decimals) and ``persons / studies``.
    """
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
