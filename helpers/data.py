"""Chest X-ray folders -> file tables, a person-aware split, and decoded images.

The data set comes in the layout of the Kaggle download::

    <data_dir>/{train,val,test}/{NORMAL,PNEUMONIA}/<image files>

Everything here works from a *file table* (one row per image: ``path`` relative to the data
folder, ``label``, ``split``, ``group``), which is sorted by path so that every pass over a
split sees the images in the same order. Images are decoded with Pillow, converted to one
colour mode and size by one rule, and cached in memory so that each image is decoded once per
process.

The official ``val`` folder holds only 16 images (8 per class): one image moves accuracy by
six points, far too few to choose a threshold or compare models. We keep the official test
folder untouched as the test set, split the official train folder into training and
validation *by person* (see :func:`person_aware_split`), and add the 16 official validation
images to our validation side. Their persons never occur in the train folder, so this adds
no leakage, and no image of the download is left unused.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal

import numpy as np
import pandas as pd

from helpers import config

if TYPE_CHECKING:  # TensorFlow is imported lazily: importing helpers.data must stay cheap.
    import tensorflow as tf

ColorMode = Literal["rgb", "grayscale"]

#: Files that operating systems and archives leave beside images; never images, never errors.
_IGNORED_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})

_PERSON = re.compile(r"^person(\d+)_", re.IGNORECASE)
# NORMAL files are named IM-<study>-<image>[...] or NORMAL2-IM-<study>-<image>; images that
# share the study number come from one examination, so we keep them together as well.
_STUDY = re.compile(r"^((?:NORMAL2-)?IM-\d+)", re.IGNORECASE)


class DataError(ValueError):
    """The data folder or one of its files is not what the loader expects."""


# ---------------------------------------------------------------------------------------
# Finding the files
# ---------------------------------------------------------------------------------------


def check_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data folder as an absolute path after checking its layout.

    Parameters
    ----------
    data_dir : path-like or None
        Folder holding ``train/``, ``val/`` and ``test/``; None means the embedded copy
        (:data:`helpers.config.DEFAULT_DATA_DIR`).

    Raises
    ------
    DataError
        If the folder, a split folder or a class folder is missing, if a split holds class
        folders other than NORMAL and PNEUMONIA, or if a class folder holds no image.
    """
    root = Path(config.DEFAULT_DATA_DIR if data_dir is None else data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data folder {root} does not exist or is not a folder; expected a folder with "
            f"train/, val/ and test/, each holding NORMAL/ and PNEUMONIA/"
        )
    for split in config.OFFICIAL_SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(
                f"split folder {split_dir} is missing; expected {root} to hold "
                f"{', '.join(s + '/' for s in config.OFFICIAL_SPLITS)}"
            )
        found = sorted(
            p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        unexpected = [name for name in found if name not in config.CLASS_NAMES]
        if unexpected:
            raise DataError(
                f"{split_dir} holds class folders {unexpected}; expected only "
                f"{list(config.CLASS_NAMES)}"
            )
        for class_name in config.CLASS_NAMES:
            class_dir = split_dir / class_name
            if not class_dir.is_dir():
                raise DataError(f"class folder {class_dir} is missing")
            if not any(_is_image_name(p.name) for p in class_dir.iterdir() if p.is_file()):
                raise DataError(
                    f"class folder {class_dir} holds no image files (expected "
                    f"{', '.join(sorted(config.IMAGE_EXTENSIONS))})"
                )
    return root.resolve()


def _is_image_name(name: str) -> bool:
    if name.startswith(".") or name.lower() in _IGNORED_NAMES:
        return False
    return Path(name).suffix.lower() in config.IMAGE_EXTENSIONS


def group_id(filename: str) -> str:
    """The person (or examination) an image belongs to, read from its file name.

    ``person1003_bacteria_2934.jpeg`` -> ``"person1003"``;
    ``IM-0115-0001.jpeg`` -> ``"IM-0115"``; ``NORMAL2-IM-1427-0001.jpeg`` ->
    ``"NORMAL2-IM-1427"``. Any other name is its own group (its stem).

    Examples
    --------
    >>> group_id("person12_virus_45.jpeg")
    'person12'
    >>> group_id("IM-0011-0001-0002.jpeg")
    'IM-0011'
    """
    name = Path(filename).name
    match = _PERSON.match(name)
    if match:
        return f"person{int(match.group(1))}"
    match = _STUDY.match(name)
    if match:
        return match.group(1).upper()
    return Path(name).stem


def pneumonia_kind(filename: str) -> str:
    """``"bacteria"``, ``"virus"`` or ``""`` (NORMAL images), from the file name."""
    name = Path(filename).name.lower()
    for kind in ("bacteria", "virus"):
        if f"_{kind}" in name:
            return kind
    return ""


def list_split(data_dir: str | os.PathLike | None, split: str) -> pd.DataFrame:
    """File table of one official split folder, sorted by path.

    Parameters
    ----------
    data_dir : path-like or None
        The data folder (checked with :func:`check_data_dir`).
    split : {"train", "val", "test"}
        An official split folder.

    Returns
    -------
    pandas.DataFrame
        Columns ``path`` (relative to ``data_dir``, with ``/``), ``label`` (0 NORMAL,
        1 PNEUMONIA) and ``group`` (see :func:`group_id`).
    """
    if split not in config.OFFICIAL_SPLITS:
        raise ValueError(f"split must be one of {config.OFFICIAL_SPLITS}, got {split!r}")
    root = check_data_dir(data_dir)
    rows = []
    for label, class_name in enumerate(config.CLASS_NAMES):
        for entry in (root / split / class_name).iterdir():
            if entry.is_file() and _is_image_name(entry.name):
                rows.append((f"{split}/{class_name}/{entry.name}", label, group_id(entry.name)))
    table = pd.DataFrame(rows, columns=["path", "label", "group"])
    return table.sort_values("path", ignore_index=True)


# ---------------------------------------------------------------------------------------
# The person-aware split
# ---------------------------------------------------------------------------------------


def person_aware_split(
    labels: Iterable[int],
    groups: Iterable[str],
    *,
    val_fraction: float = config.VAL_FRACTION,
    seed: int = config.SEED,
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
        Person (group) of each image, e.g. from :func:`group_id`.
    val_fraction : float, default 0.2
        Share of the images to hold out, in (0, 0.5].
    seed : int
        Fixes the split: the same seed gives the same split.

    Returns
    -------
    numpy.ndarray of bool, shape (n,)
        True for images on the validation side.
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
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val_index = next(folds.split(np.zeros(labels.size), labels, groups))
    is_val = np.zeros(labels.size, dtype=bool)
    is_val[val_index] = True
    return is_val


def split_table(
    data_dir: str | os.PathLike | None = None,
    *,
    val_fraction: float = config.VAL_FRACTION,
    seed: int = config.SEED,
) -> pd.DataFrame:
    """The split the project uses: one row per image with ``path, split, label, group``.

    ``split`` is ``"train"`` or ``"val"`` (from the official train folder by person, plus
    the official val folder on the validation side) or ``"test"`` (the official test
    folder, untouched). Rows are sorted by split (train, val, test), then by path.
    """
    train = list_split(data_dir, "train")
    is_val = person_aware_split(
        train["label"], train["group"], val_fraction=val_fraction, seed=seed
    )
    train["split"] = np.where(is_val, "val", "train")
    official_val = list_split(data_dir, "val").assign(split="val")
    test = list_split(data_dir, "test").assign(split="test")
    table = pd.concat([train, official_val, test], ignore_index=True)
    order = {"train": 0, "val": 1, "test": 2}
    table = table.sort_values(
        ["split", "path"], key=lambda col: col.map(order) if col.name == "split" else col
    )
    return table[["path", "split", "label", "group"]].reset_index(drop=True)


def write_split_csv(table: pd.DataFrame, results_dir: str | os.PathLike) -> Path:
    """Write ``results_dir/split.csv`` (columns ``path,split,label``) atomically."""
    from helpers.results import atomic_write_text

    path = Path(results_dir) / "split.csv"
    atomic_write_text(path, table[["path", "split", "label"]].to_csv(index=False))
    return path


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------


def decode_image(
    path: str | os.PathLike, *, image_size: int, color_mode: ColorMode = "rgb"
) -> np.ndarray:
    """Read one image file, convert it to ``color_mode`` and resize it to a square.

    Any size and any mode Pillow reads is accepted. The conversion rule is fixed:
    16- and 32-bit grayscale is scaled to 8 bits by its type's range, transparency is
    dropped (alpha ignored), palette and other modes go through RGB; grayscale output is
    ITU-R 601 luma of that RGB (Pillow's ``convert("L")``); RGB output of a grayscale image
    repeats it in three channels. The image is then squashed (not cropped) to
    ``image_size x image_size`` with bilinear filtering, like Keras'
    ``image_dataset_from_directory``.

    Returns
    -------
    numpy.ndarray of uint8, shape (image_size, image_size, 1 or 3)

    Raises
    ------
    DataError
        If the file is missing, is not an image, or is corrupt or truncated.
    """
    from PIL import Image, UnidentifiedImageError

    _check_image_options(image_size, color_mode)
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = _to_8bit_mode(img)
            img = img.convert("L" if color_mode == "grayscale" else "RGB")
            img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path} is a corrupt or truncated image: {error}") from None
    return array[..., np.newaxis] if array.ndim == 2 else array


def _to_8bit_mode(img):
    """Bring high-bit-depth grayscale to mode L by scaling, since Pillow would clip it."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(img).astype(np.float64)
        scale = 255.0 / 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 1.0
        if img.mode == "I" and values.max() > 65535:
            scale = 255.0 / float(values.max())
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        top = values.max() if values.max() > 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(values / top * 255), 0, 255).astype(np.uint8), "L")
    if img.mode in ("LA", "La"):
        return img.convert("L")
    if img.mode in ("RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        return img.convert("RGB")
    return img


def _check_image_options(image_size: int, color_mode: str) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if color_mode not in ("rgb", "grayscale"):
        raise ValueError(f"color_mode must be 'rgb' or 'grayscale', got {color_mode!r}")


# Decoded images, keyed by file identity and conversion: each image is decoded once per
# process, whichever notebook cell or function asks for it.
_DECODED: dict[tuple, np.ndarray] = {}
_DECODED_LOCK = threading.Lock()


def _cache_key(path: Path, image_size: int, color_mode: str) -> tuple:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns, image_size, color_mode)


def load_images(
    paths: Iterable[str | os.PathLike],
    *,
    image_size: int = config.IMAGE_SIZE,
    color_mode: ColorMode = config.COLOR_MODE,
    workers: int | None = None,
) -> np.ndarray:
    """Decode many image files, in the given order, each at most once per process.

    Parameters
    ----------
    paths : sequence of path-like
        Absolute paths (or relative to the working folder).
    image_size, color_mode
        See :func:`decode_image`.
    workers : int or None
        Decoding threads; None uses every core.

    Returns
    -------
    numpy.ndarray of uint8, shape (n, image_size, image_size, channels)
    """
    _check_image_options(image_size, color_mode)
    paths = [Path(p).absolute() for p in paths]
    if not paths:
        channels = 1 if color_mode == "grayscale" else 3
        return np.empty((0, image_size, image_size, channels), dtype=np.uint8)
    for path in paths:
        if not path.is_file():
            raise DataError(f"image file {path} does not exist")
    keys = [_cache_key(p, image_size, color_mode) for p in paths]
    # dict.fromkeys: a path listed twice is still decoded once.
    missing = list(dict.fromkeys((p, k) for p, k in zip(paths, keys) if k not in _DECODED))
    if missing:
        def decode(item):
            path, key = item
            return key, decode_image(path, image_size=image_size, color_mode=color_mode)

        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            decoded = list(pool.map(decode, missing))
        with _DECODED_LOCK:
            _DECODED.update(decoded)
    channels = 1 if color_mode == "grayscale" else 3
    out = np.empty((len(paths), image_size, image_size, channels), dtype=np.uint8)
    for i, key in enumerate(keys):
        out[i] = _DECODED[key]
    return out


def clear_decoded_cache() -> None:
    """Forget every decoded image (the next load decodes again)."""
    with _DECODED_LOCK:
        _DECODED.clear()


# ---------------------------------------------------------------------------------------
# Splits in memory
# ---------------------------------------------------------------------------------------


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
    """

    name: str
    paths: list[str]
    labels: np.ndarray
    images: np.ndarray
    data_dir: Path

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def class_counts(self) -> dict[str, int]:
        """Images per class name."""
        return {
            name: int(np.sum(self.labels == label))
            for label, name in enumerate(config.CLASS_NAMES)
        }


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

    def __getitem__(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise KeyError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)


def load_chest_xrays(
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int = config.IMAGE_SIZE,
    color_mode: ColorMode = config.COLOR_MODE,
    val_fraction: float = config.VAL_FRACTION,
    seed: int = config.SEED,
    results_dir: str | os.PathLike | None = None,
) -> ChestXrays:
    """Load the training, validation and test images with the person-aware split.

    Parameters
    ----------
    data_dir : path-like or None
        Folder in the Kaggle layout; None is the embedded copy.
    image_size : int
        Side of the square images, in pixels.
    color_mode : {"rgb", "grayscale"}
        RGB for ImageNet models (the case study used RGB for all five).
    val_fraction, seed
        See :func:`person_aware_split`.
    results_dir : path-like or None
        If given, the split is written to ``results_dir/split.csv``.

    Returns
    -------
    ChestXrays
    """
    _check_image_options(image_size, color_mode)
    root = check_data_dir(data_dir)
    table = split_table(root, val_fraction=val_fraction, seed=seed)
    splits = {}
    for name in ("train", "val", "test"):
        rows = table[table["split"] == name]
        paths = rows["path"].tolist()
        images = load_images(
            [root / p for p in paths], image_size=image_size, color_mode=color_mode
        )
        splits[name] = Split(
            name=name,
            paths=paths,
            labels=rows["label"].to_numpy(dtype=np.int64),
            images=images,
            data_dir=root,
        )
    # Written only once every image decoded: a bad file leaves no split.csv behind.
    if results_dir is not None:
        write_split_csv(table, results_dir)
    return ChestXrays(
        **splits, table=table, image_size=image_size, color_mode=color_mode, seed=seed,
        val_fraction=val_fraction,
    )


def class_weights(labels: Iterable[int]) -> dict[int, float]:
    """Balanced class weights ``n / (2 * n_class)`` for Keras' ``class_weight``.

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
    split: Split, *, batch_size: int, seed: int, shuffle: bool = True
) -> "tf.data.Dataset":
    """Batches of ``(images, labels)`` for ``fit``, reshuffled each epoch from ``seed``.

    Only for training: evaluation never goes through a shuffled dataset (see
    :func:`helpers.evaluate.predict_split`).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels.astype("float32")))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def download_kaggle() -> Path:
    """Download the original Kaggle data set and return its ``chest_xray`` folder.

    Uses ``kagglehub`` (dataset ``paultimothymooney/chest-xray-pneumonia``, about 1.2 GB,
    full-resolution images). Runs only when called, never on import. Pass the returned
    folder as ``data_dir`` (notebooks) or ``--data-dir`` (the runner).

    Raises
    ------
    RuntimeError
        If the download fails (for example with no network), with the reason.
    """
    try:
        import kagglehub
    except ImportError as error:  # pragma: no cover - kagglehub is in requirements.txt
        raise RuntimeError("download_kaggle needs kagglehub: pip install kagglehub") from error
    try:
        root = Path(kagglehub.dataset_download("paultimothymooney/chest-xray-pneumonia"))
    except Exception as error:  # kagglehub raises many types; the message is what matters
        raise RuntimeError(
            "could not download the Kaggle data set paultimothymooney/chest-xray-pneumonia "
            f"(are you online?): {type(error).__name__}: {error}. The embedded copy in "
            f"{config.DEFAULT_DATA_DIR} needs no download."
        ) from error
    return find_layout_root(root)


def find_layout_root(folder: str | os.PathLike) -> Path:
    """The folder under ``folder`` that holds ``train/val/test`` (the archive nests it).

    The Kaggle archive unpacks to ``chest_xray/chest_xray/{train,val,test}`` beside a
    ``__MACOSX`` copy; this returns the first folder, breadth first, holding all three splits.
    """
    folder = Path(folder)
    queue = [folder]
    while queue:
        current = queue.pop(0)
        if all((current / s).is_dir() for s in config.OFFICIAL_SPLITS):
            return current
        queue.extend(
            sorted(p for p in current.iterdir() if p.is_dir() and p.name != "__MACOSX")
        )
    raise DataError(f"no folder holding train/, val/ and test/ found under {folder}")


def describe_files(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Size, mode and format of every image file, read from the headers (no decoding).

    Returns
    -------
    pandas.DataFrame
        One row per image: ``split`` (official folder), ``label``, ``path``, ``width``,
        ``height``, ``mode``, ``format``, ``bytes``.
    """
    from PIL import Image

    root = check_data_dir(data_dir)
    rows = []
    for split in config.OFFICIAL_SPLITS:
        for path, label in list_split(root, split)[["path", "label"]].itertuples(index=False):
            file = root / path
            try:
                with Image.open(file) as img:
                    rows.append((split, label, path, img.width, img.height, img.mode, img.format, file.stat().st_size))
            except OSError as error:
                raise DataError(f"{file} is not a readable image: {error}") from None
    return pd.DataFrame(
        rows, columns=["split", "label", "path", "width", "height", "mode", "format", "bytes"]
    )


def persons_on_both_sides(groups: Iterable[str], is_val: Iterable[bool]) -> int:
    """How many persons (groups) have images on both sides of a split."""
    frame = pd.DataFrame({"group": list(groups), "val": list(is_val)})
    sides = frame.groupby("group")["val"].nunique()
    return int((sides > 1).sum())


def image_level_split(n_images: int, *, val_fraction: float = config.VAL_FRACTION, seed: int = config.SEED) -> np.ndarray:
    """A plain random split by image (what the case study did), for comparison only."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(n_images, dtype=bool)
    is_val[rng.permutation(n_images)[: round(val_fraction * n_images)]] = True
    return is_val


def duplicate_groups(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Groups of byte-identical image files: one row per file that has a twin.

    Columns ``sha1``, ``path``, ``split`` (official folder), ``label``.
    """
    import hashlib

    root = check_data_dir(data_dir)
    rows = []
    for split in config.OFFICIAL_SPLITS:
        for path, label in list_split(root, split)[["path", "label"]].itertuples(index=False):
            digest = hashlib.sha1((root / path).read_bytes()).hexdigest()
            rows.append((digest, path, split, label))
    frame = pd.DataFrame(rows, columns=["sha1", "path", "split", "label"])
    return frame[frame.duplicated("sha1", keep=False)].sort_values(["sha1", "path"], ignore_index=True)
