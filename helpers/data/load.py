"""Loading the splits into memory: the training, validation and test images the models use.

:func:`load_chest_xrays` ties the other modules together: it checks the folder, makes the
person-aware split and decodes every image (through the caches) into a :class:`Split` per
side. :func:`class_weights` and :func:`training_dataset` turn a split into what Keras'
``fit`` takes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from helpers import config
from helpers.data.cache import _decode_many, decoded_cache_dir
from helpers.data.decode import ColorMode, _check_image_options
from helpers.data.errors import DataError, DataWarning
from helpers.data.folders import check_data_dir
from helpers.data.split import official_val_note, split_table, write_split_csv

if TYPE_CHECKING:  # TensorFlow is imported lazily: importing helpers.data must stay cheap.
    import tensorflow as tf

#: What to do with an image file that cannot be decoded.
BadImagePolicy = Literal["stop", "skip"]


@dataclass(frozen=True)
class Split:
    """One split in memory, in fixed file order.

    Attributes
    ----------
    name : str
        ``"train"``, ``"val"`` or ``"test"``.
    paths : list of str
        Paths relative to ``data_dir``, as in ``split.csv``; sorted.
    labels : numpy.ndarray of int, shape (n,)
    images : numpy.ndarray of uint8, shape (n, size, size, channels)
    data_dir : pathlib.Path
    groups : tuple of str
        The person of each image, as the split used it (from the file name, or a salted key
        of a DICOM file's PatientID); empty when unknown (then read from the file names).
        Kept in memory for person-level statistics, never written.
    """

    name: str
    paths: list[str]
    labels: np.ndarray
    images: np.ndarray
    data_dir: Path
    groups: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class ChestXrays:
    """The three splits the project uses, plus the table they came from."""

    train: Split
    val: Split
    test: Split
    table: pd.DataFrame
    image_size: int
    color_mode: ColorMode
    seed: int
    val_fraction: float = config.VAL_FRACTION
    #: Images left out with ``on_bad_image="skip"``: (path relative to the data folder, reason).
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def official_val_images(self) -> int:
        """Images of the official ``val/`` folder on the validation side (0 without one)."""
        return int(self.table["path"].str.startswith("val/").sum())

    @property
    def official_val_note(self) -> str:
        """One sentence saying whether the official validation images were used
        (:func:`helpers.data.official_val_note`)."""
        return official_val_note(self.official_val_images, val_fraction=self.val_fraction)

    def __getitem__(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise KeyError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)


def load_chest_xrays(
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int,
    color_mode: ColorMode = config.COLOR_MODE,
    val_fraction: float = config.VAL_FRACTION,
    seed: int,
    results_dir: str | os.PathLike | None = None,
    on_bad_image: BadImagePolicy = "stop",
) -> ChestXrays:
    """Load the training, validation and test images with the person-aware split.

    Parameters
    ----------
    data_dir : path-like or None
        Folder in the Kaggle layout, or a folder above it (see :func:`check_data_dir`);
        None is the embedded copy.
    image_size : int
        Side of the square images, in pixels.
    color_mode : {"rgb", "grayscale"}
        RGB for ImageNet models (the case study used RGB for all five).
    val_fraction, seed
        See :func:`person_aware_split`.
    results_dir : path-like or None
        If given, the split is written to ``results_dir/split.csv``.
    on_bad_image : {"stop", "skip"}
        A missing, unreadable, corrupt or truncated image file: ``"stop"`` (the default)
        raises :class:`DataError` naming it; ``"skip"`` leaves it out, warns with a
        :class:`DataWarning` giving the count and the paths, and records it in
        ``ChestXrays.skipped``. The split is made before skipping, so skipping a file never
        moves another image to the other side. Stopping is the default because a corrupt
        file in a medical data set is a finding to look at, not noise to hide.

    Returns
    -------
    ChestXrays

    Raises
    ------
    DataError
        If the folder's layout is wrong, if an image cannot be decoded (with ``"stop"``), or
        if skipping leaves a split without one of the classes; no ``split.csv`` is written.
    ValueError
        If ``image_size``, ``color_mode`` or ``on_bad_image`` is invalid (before any work).
    """
    _check_image_options(image_size, color_mode)
    if on_bad_image not in config.ON_BAD_IMAGE:
        raise ValueError(
            f"on_bad_image must be one of {', '.join(map(repr, config.ON_BAD_IMAGE))}, got {on_bad_image!r}"
        )
    root = check_data_dir(data_dir)
    table = split_table(root, val_fraction=val_fraction, seed=seed)
    splits = {}
    skipped: dict[str, str] = {}
    for name in ("train", "val", "test"):
        rows = table[table["split"] == name]
        paths = rows["path"].tolist()
        images, bad = _decode_many(
            [root / p for p in paths],
            image_size=image_size,
            color_mode=color_mode,
            workers=None,
            skip_bad=on_bad_image == "skip",
            cache_dir=decoded_cache_dir(),
        )
        keep = np.ones(len(paths), dtype=bool)
        for i, reason in bad.items():
            keep[i] = False
            skipped[paths[i]] = reason
        labels = rows["label"].to_numpy(dtype=np.int64)[keep]
        for label, class_name in enumerate(config.CLASS_NAMES):
            if not np.any(labels == label):
                listed = "\n".join(f"  {paths[i]}: {reason}" for i, reason in sorted(bad.items()))
                raise DataError(
                    f"after skipping {len(bad)} unreadable image(s) of the {name} split, it "
                    f"holds no {class_name} image:\n{listed}"
                )
        splits[name] = Split(
            name=name,
            paths=[p for p, k in zip(paths, keep) if k],
            labels=labels,
            images=images,
            data_dir=root,
            groups=tuple(g for g, k in zip(rows["group"], keep) if k),
        )
    if skipped:
        import warnings

        listed = "\n".join(f"  {path}: {reason}" for path, reason in sorted(skipped.items()))
        warnings.warn(
            f"skipped {len(skipped)} unreadable image(s) of {len(table)} in {root} "
            f"(on_bad_image='skip'):\n{listed}",
            DataWarning,
            stacklevel=2,
        )
        table = table[~table["path"].isin(skipped)].reset_index(drop=True)
    # Written only once every image decoded: a bad file leaves no split.csv behind.
    if results_dir is not None:
        write_split_csv(table, results_dir)
    return ChestXrays(
        **splits,
        table=table,
        image_size=image_size,
        color_mode=color_mode,
        seed=seed,
        val_fraction=val_fraction,
        skipped=tuple(sorted(skipped.items())),
    )


def persons_of(images) -> list[str]:
    """The person of each image of a split, as the split knew it.

    A :class:`Split`'s ``groups`` (or a :class:`helpers.evaluate.Predictions`' ``persons``)
    when it has them: a DICOM file's person is a salted key of its PatientID, which its file
    name does not tell. Otherwise each file name's person (:func:`helpers.data.group_id`).

    Parameters
    ----------
    images : Split or Predictions
        Anything with ``paths`` and optionally ``groups`` or ``persons``, row for row.

    Returns
    -------
    list of str
        One person per path, in order.
    """
    from helpers.data.folders import group_id

    known = tuple(getattr(images, "groups", ()) or getattr(images, "persons", ()))
    return list(known) if known else [group_id(path) for path in images.paths]


def class_weights(labels: Iterable[int]) -> dict[int, float]:
    """Balanced class weights ``n / (2 * n_class)`` for Keras' ``class_weight``.

    Parameters
    ----------
    labels : sequence of int
        Labels 0 and 1, both present.

    Returns
    -------
    dict
        ``{0: weight, 1: weight}``.

    Raises
    ------
    ValueError
        If the labels are not exactly the classes 0 and 1.

    Examples
    --------
    >>> class_weights([0, 1, 1, 1])
    {0: 2.0, 1: 0.6666666666666666}
    """
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(list(labels))
    classes = np.array([0, 1])
    present = np.unique(labels)
    if not np.array_equal(present, classes):
        raise ValueError(f"class weights need both classes 0 and 1, got {present.tolist()}")
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights)}


def training_dataset(
    split: Split, *, batch_size: int, seed: int, shuffle: bool = True, drop_remainder: bool = False
) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` for ``fit``, reshuffled each epoch from ``seed``.

    Only for training: evaluation never goes through a shuffled dataset (see
    :func:`helpers.evaluate.predict_split`). ``drop_remainder`` leaves out the last, short
    batch of each epoch (a different few images each epoch, since the order is reshuffled);
    training on several replicas needs it, because replicas must get equal shares.

    Parameters
    ----------
    split : Split
        The images and labels to batch.
    batch_size : int
        Images per batch, at least 1.
    seed : int
        Fixes the order of every epoch.
    shuffle : bool, default True
        Reshuffle each epoch; False keeps the split's order.
    drop_remainder : bool, default False
        Leave out each epoch's last, short batch.

    Returns
    -------
    tf.data.Dataset
        Batches of ``(uint8 images, float32 labels)``.

    Raises
    ------
    ValueError
        If ``batch_size`` is below 1.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    images = tf.convert_to_tensor(split.images)
    labels = tf.convert_to_tensor(split.labels.astype("float32"))
    # Shuffle and batch the image *indices*, then gather each batch from the in-memory
    # arrays in one op: shuffling whole images element by element through tf.data costs
    # about 40% of a small model's epoch on 2 cores.
    ds = tf.data.Dataset.range(len(split))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda index: (tf.gather(images, index), tf.gather(labels, index)))
    return ds.prefetch(tf.data.AUTOTUNE)
