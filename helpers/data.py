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

    The folder may be the one holding ``train/``, ``val/`` and ``test/``, or a folder above
    it: the Kaggle archive unpacks to ``chest_xray/chest_xray/{train,val,test}`` beside a
    ``__MACOSX/`` copy of resource forks, and people point at either level. The folder
    actually used is returned (see :func:`find_layout_root`).

    Parameters
    ----------
    data_dir : path-like or None
        Folder holding ``train/``, ``val/`` and ``test/`` (or a folder above it); None means
        the embedded copy (:data:`helpers.config.DEFAULT_DATA_DIR`).

    Raises
    ------
    DataError
        If the folder, a split folder or a class folder is missing, if a split holds class
        folders other than NORMAL and PNEUMONIA, or if a class folder holds no image.
    """
    given = Path(config.DEFAULT_DATA_DIR if data_dir is None else data_dir).expanduser()
    if not given.is_dir():
        raise DataError(
            f"data folder {given} does not exist or is not a folder; expected a folder with "
            f"train/, val/ and test/, each holding NORMAL/ and PNEUMONIA/"
        )
    root = given
    if not any((given / split).is_dir() for split in config.OFFICIAL_SPLITS):
        # No split folder at all here: the user may have pointed at the archive's top.
        try:
            root = find_layout_root(given)
        except DataError:
            pass  # fall through to the precise "split folder missing" message below
    for split in config.OFFICIAL_SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(
                f"split folder {split_dir} is missing; expected {root} (or a folder under "
                f"it, up to {_LAYOUT_SEARCH_DEPTH} levels down) to hold "
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
                    f"{', '.join(sorted(config.IMAGE_EXTENSIONS))}, in any case)"
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
    # The search for balanced folds takes seconds, most of a cached load's time: keep its
    # answer beside the decoded images, keyed by everything it depends on.
    cache, path = decoded_cache_dir(), None
    if cache is not None:
        import hashlib

        import sklearn

        digest = hashlib.sha256(f"split-v1 sklearn {sklearn.__version__} {val_fraction!r} {seed!r}".encode())
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
    ``image_dataset_from_directory``. A JPEG at least twice as large as the target in both
    sides is first decoded by libjpeg at a reduced scale (1/2, 1/4 or 1/8, keeping both
    sides at least twice the target): the same file always gives the same array.

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
            if img.format == "JPEG":
                # libjpeg can decode at 1/2, 1/4 or 1/8 scale: a 2,500 px X-ray wanted at
                # 128 px is decoded at about 320 px (never below twice the target), several
                # times faster, and then resized like any other image.
                img.draft(img.mode, (2 * image_size, 2 * image_size))
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

#: What to do with an image file that cannot be decoded.
BadImagePolicy = Literal["stop", "skip"]

#: Bumped whenever :func:`decode_image` changes what it returns, so old disk caches are
#: never read back.
_DECODER_VERSION = 2

#: How many decoded sets the disk cache keeps (least recently used go first).
DISK_CACHE_ENTRIES = 12


class DataWarning(UserWarning):
    """Something in the data was skipped or looks wrong, but loading went on."""


def _cache_key(path: Path, image_size: int, color_mode: str) -> tuple:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns, image_size, color_mode)


def decoded_cache_dir() -> Path | None:
    """The folder of the on-disk cache of decoded images, or None when it is switched off.

    ``$CHEST_XRAY_CACHE_DIR`` if set (an empty value or ``off`` switches the cache off),
    else :data:`helpers.config.DEFAULT_CACHE_DIR` (``_build/cache/decoded``).
    """
    value = os.environ.get("CHEST_XRAY_CACHE_DIR")
    if value is None:
        return config.DEFAULT_CACHE_DIR
    if value.strip().lower() in ("", "off", "none", "0"):
        return None
    return Path(value).expanduser()


def files_fingerprint(keys: Iterable[tuple]) -> str:
    """SHA-256 of a file list: each file's path, size and modification time, in order.

    A changed file (new size or time), an added, removed or renamed file, or another order
    gives another fingerprint; reading file contents is not needed.
    """
    import hashlib

    digest = hashlib.sha256(f"decoder-v{_DECODER_VERSION}".encode())
    for key in keys:
        digest.update(repr(key).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _read_disk_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # missing, or a file another process is still writing: decode instead
    if array.shape != shape or array.dtype != np.uint8:
        return None
    os.utime(path)  # recently used: pruned last
    return array


def _write_disk_cache(path: Path, array: np.ndarray) -> None:
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, array, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        entries = sorted(path.parent.glob("*.npy"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[DISK_CACHE_ENTRIES:]:
            old.unlink(missing_ok=True)
    except OSError as error:
        # A read-only or full disk costs speed, not correctness: say so and go on.
        import warnings

        warnings.warn(
            f"could not write the decoded-image cache {path}: {error}", DataWarning, stacklevel=3
        )


def _decode_many(
    paths: list[Path],
    *,
    image_size: int,
    color_mode: ColorMode,
    workers: int | None,
    skip_bad: bool,
    cache_dir: Path | None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode ``paths`` in order; returns the good images and ``{index: reason}`` of bad ones."""
    channels = 1 if color_mode == "grayscale" else 3
    bad: dict[int, str] = {}
    keys: list[tuple | None] = []
    for i, path in enumerate(paths):
        try:
            keys.append(_cache_key(path, image_size, color_mode))
        except OSError:
            if not skip_bad:
                raise DataError(f"image file {path} does not exist") from None
            keys.append(None)
            bad[i] = f"image file {path} does not exist"

    disk_file = None
    if cache_dir is not None and not bad:
        disk_file = Path(cache_dir) / f"{files_fingerprint(keys)}.npy"
        with _DECODED_LOCK:
            in_memory = all(k in _DECODED for k in keys)
        if not in_memory:
            cached = _read_disk_cache(disk_file, (len(paths), image_size, image_size, channels))
            if cached is not None:
                with _DECODED_LOCK:
                    _DECODED.update(zip(keys, cached))
                return cached, bad

    # Keyed by file identity: a path listed twice is still decoded once.
    missing: dict[tuple, Path] = {}
    for i, key in enumerate(keys):
        if key is not None and key not in _DECODED and key not in missing:
            missing[key] = paths[i]
    if missing:
        def decode(item):
            key, path = item
            try:
                return key, decode_image(path, image_size=image_size, color_mode=color_mode)
            except DataError as error:
                return key, error

        # Pillow releases the GIL while it decodes and resizes, so threads use every core.
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            decoded = list(pool.map(decode, missing.items()))
        errors = {k: r for k, r in decoded if isinstance(r, DataError)}
        with _DECODED_LOCK:
            _DECODED.update((k, r) for k, r in decoded if not isinstance(r, DataError))
        for i, key in enumerate(keys):
            if key in errors:
                if not skip_bad:
                    raise errors[key]  # the first bad file in the given order
                bad[i] = str(errors[key])

    good = [i for i in range(len(paths)) if i not in bad]
    out = np.empty((len(good), image_size, image_size, channels), dtype=np.uint8)
    for row, i in enumerate(good):
        out[row] = _DECODED[keys[i]]
    if disk_file is not None and not bad and not disk_file.exists():
        _write_disk_cache(disk_file, out)
    return out, bad


def load_images(
    paths: Iterable[str | os.PathLike],
    *,
    image_size: int = config.IMAGE_SIZE,
    color_mode: ColorMode = config.COLOR_MODE,
    workers: int | None = None,
    cache_dir: str | os.PathLike | None | Literal["default"] = "default",
) -> np.ndarray:
    """Decode many image files, in the given order, each at most once.

    Decoded images are kept in memory for the life of the process and, as one array per
    file list, in an on-disk cache shared by every notebook of a build and by later builds.
    The disk cache is keyed by the files' paths, sizes and modification times, the image
    size, the colour mode and the decoder's version: changing, adding or removing a file
    makes a new entry, and an entry is never read back for other files.

    Parameters
    ----------
    paths : sequence of path-like
        Absolute paths (or relative to the working folder).
    image_size, color_mode
        See :func:`decode_image`.
    workers : int or None
        Decoding threads; None uses every core.
    cache_dir : path-like, None or "default"
        Folder of the disk cache; None switches it off; "default" is
        :func:`decoded_cache_dir`.

    Returns
    -------
    numpy.ndarray of uint8, shape (n, image_size, image_size, channels)

    Raises
    ------
    DataError
        For the first file (in the given order) that is missing or cannot be decoded.
    """
    _check_image_options(image_size, color_mode)
    paths = [Path(p).absolute() for p in paths]
    if not paths:
        channels = 1 if color_mode == "grayscale" else 3
        return np.empty((0, image_size, image_size, channels), dtype=np.uint8)
    images, _ = _decode_many(
        paths, image_size=image_size, color_mode=color_mode, workers=workers, skip_bad=False,
        cache_dir=decoded_cache_dir() if cache_dir == "default" else cache_dir,
    )
    return images


def clear_decoded_cache(*, disk: bool = False) -> None:
    """Forget every decoded image kept in memory (and on disk when ``disk`` is True)."""
    with _DECODED_LOCK:
        _DECODED.clear()
    folder = decoded_cache_dir()
    if disk and folder is not None and folder.is_dir():
        for entry in folder.glob("*.npy"):
            entry.unlink(missing_ok=True)


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
    #: Images left out with ``on_bad_image="skip"``: (path relative to the data folder, reason).
    skipped: tuple[tuple[str, str], ...] = ()

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
            [root / p for p in paths], image_size=image_size, color_mode=color_mode,
            workers=None, skip_bad=on_bad_image == "skip", cache_dir=decoded_cache_dir(),
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
        **splits, table=table, image_size=image_size, color_mode=color_mode, seed=seed,
        val_fraction=val_fraction, skipped=tuple(sorted(skipped.items())),
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
    split: Split, *, batch_size: int, seed: int, shuffle: bool = True, drop_remainder: bool = False
) -> "tf.data.Dataset":
    """Batches of ``(images, labels)`` for ``fit``, reshuffled each epoch from ``seed``.

    Only for training: evaluation never goes through a shuffled dataset (see
    :func:`helpers.evaluate.predict_split`). ``drop_remainder`` leaves out the last, short
    batch of each epoch (a different few images each epoch, since the order is reshuffled);
    training on several replicas needs it, because replicas must get equal shares.
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


#: How deep :func:`find_layout_root` looks below the folder it is given.
_LAYOUT_SEARCH_DEPTH = 3


def find_layout_root(folder: str | os.PathLike) -> Path:
    """The folder under ``folder`` that holds ``train/val/test`` (the archive nests it).

    The Kaggle archive unpacks to ``chest_xray/chest_xray/{train,val,test}`` beside a
    ``__MACOSX`` copy; this returns the first folder, breadth first and at most
    three levels down, holding all three splits. ``__MACOSX`` and hidden folders are never
    entered.

    Raises
    ------
    DataError
        If no such folder exists.
    """
    folder = Path(folder)
    queue = [(folder, 0)]
    while queue:
        current, depth = queue.pop(0)
        if all((current / s).is_dir() for s in config.OFFICIAL_SPLITS):
            return current
        if depth < _LAYOUT_SEARCH_DEPTH:
            queue.extend(
                (p, depth + 1)
                for p in sorted(current.iterdir())
                if p.is_dir() and p.name != "__MACOSX" and not p.name.startswith(".")
            )
    raise DataError(
        f"no folder holding train/, val/ and test/ found in {folder} or up to "
        f"{_LAYOUT_SEARCH_DEPTH} levels below it"
    )


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


def data_fingerprint(data_dir: str | os.PathLike | None = None) -> str:
    """SHA-256 of a data folder's image files: relative paths, sizes and modification times.

    Cheap (no file is read) and changes when a file is added, removed, renamed or
    rewritten. A folder that is not a valid data folder gives ``"invalid: <reason>"``.
    """
    try:
        root = check_data_dir(data_dir)
    except DataError as error:
        return f"invalid: {error}"
    entries = []
    for split in config.OFFICIAL_SPLITS:
        for class_name in config.CLASS_NAMES:
            for entry in os.scandir(root / split / class_name):
                if entry.is_file() and _is_image_name(entry.name):
                    stat = entry.stat()
                    entries.append((f"{split}/{class_name}/{entry.name}", stat.st_size, stat.st_mtime_ns))
    return files_fingerprint(sorted(entries))


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
