"""Find images shared between the official data folders (train, val, test).

A folder whose ``val/`` or ``test/`` was drawn from ``train/``, or that holds one X-ray twice
under other names, sizes or encodings, tests a model on pictures it was trained on. This
module compares each image of each official folder with every image of the two others, by
file name and by a perceptual hash of the decoded picture, and reports the pairs. Pairs
inside one folder are not leaks between folders and are not reported
(:func:`helpers.data.duplicate_groups` lists the byte-identical files inside a folder).

The hash is imagehash's DCT hash (``phash``) with 256 bits (``hash_size=16``) of the picture
as :func:`helpers.data.decode_image` reads it (grayscale, 64 x 64, any size, mode or format).
Measured on the embedded data (5,856 images):

- copies of 300 train images, resized to 96-300 px (some to another aspect ratio) and saved
  as JPEG at quality 30 to 90, lie at most 18 bits from their original (8 at quality 75 and
  above; 12 for a 10% brighter copy); PNG copies lie 0 bits away;
- distinct X-rays lie at least 36 bits apart inside train and 42 bits between folders;
- imagehash's 64-bit hashes cannot tell the two apart: with its default phash copies lie up
  to 4 bits apart, distinct X-rays of different classes from 2 bits apart;
- a copy cropped by 2% on each side is not found (33 bits on average): no hash of the whole
  picture survives cropping.

:data:`MAX_DISTANCE` (26 bits) lies midway between the copies (18) and the nearest distinct
X-rays inside train (36), chosen on train images alone. Half of the 256 coefficients lie
above their median, so two hashes almost always differ in an even number of bits.

Hashes are cached on disk (one file per data folder, under ``_build/cache/leaks``), keyed by
each file's path, size and modification time: a second check hashes only new or changed files.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config
from helpers.data import (
    DataWarning,
    check_data_dir,
    companion_cache_dir,
    decode_image,
    files_fingerprint,
    list_split,
)
from helpers.files import DiskCache

#: Side of the hash's bit square; bits per hash, and bytes per packed hash.
HASH_SIZE = 16
HASH_BITS = HASH_SIZE * HASH_SIZE
HASH_BYTES = HASH_BITS // 8
#: imagehash's phash takes the DCT of a picture 4 times the hash's side.
_DECODE_SIZE = 4 * HASH_SIZE
#: Largest Hamming distance (in bits, of :data:`HASH_BITS`) at which two images count as
#: the same picture; measured, see the module's docstring.
MAX_DISTANCE = 26

#: Where the hashes are cached unless ``$CHEST_XRAY_CACHE_DIR`` says otherwise.
DEFAULT_HASH_CACHE_DIR = config.REPO_ROOT / "_build" / "cache" / "leaks"
#: How many data folders' hash files the cache keeps (least recently used go first).
HASH_CACHE_ENTRIES = 12
#: Part of every cache file's name: bump the last number whenever :func:`image_hash`
#: changes what it returns, so that no older hash is read back.
_HASH_ID = ("imagehash.phash", HASH_SIZE, _DECODE_SIZE, 1)
#: Cache files start with this; pruning touches no other file of the cache folder.
_CACHE_PREFIX = "phash-"

#: Why a pair of images is reported (see :func:`find_shared_images`).
REASONS: tuple[str, str] = ("same picture", "same file name")
#: The pairs of official folders compared, earlier folder first.
FOLDER_PAIRS: tuple[tuple[str, str], ...] = (("train", "val"), ("train", "test"), ("val", "test"))
#: Distances are computed in blocks of at most this many pairs (~40 MB), to bound memory.
_BLOCK_PAIRS = 1_000_000
_PAIR_COLUMNS = ["path_a", "split_a", "path_b", "split_b", "reason", "distance", "same_name"]


class LeakWarning(UserWarning):
    """Images are shared between the official folders, and :func:`check_leaks` went on."""


class DataLeakError(ValueError):
    """Images are shared between the official folders, and :func:`check_leaks` stopped."""


# --- Hashes and distances ---------------------------------------------------------------


def image_hash(path: str | os.PathLike) -> np.ndarray:
    """The 256-bit perceptual hash of one image file, packed into 32 bytes.

    Parameters
    ----------
    path : path-like
        An image file Pillow reads (any size, mode or format).

    Returns
    -------
    numpy.ndarray of uint8, shape (:data:`HASH_BYTES`,)
        imagehash's ``phash`` (``hash_size=16``) of the grayscale 64 x 64 picture, bits
        packed with :func:`numpy.packbits`.

    Raises
    ------
    helpers.data.DataError
        If the file is missing, is not an image, or is corrupt (the message names it).
    ImportError
        If the imagehash package is not installed.
    """
    try:
        import imagehash
    except ImportError as error:
        raise ImportError(
            "helpers.leaks needs imagehash: pip install -r requirements.txt"
        ) from error
    from PIL import Image

    pixels = decode_image(path, image_size=_DECODE_SIZE, color_mode="grayscale")[..., 0]
    bits = imagehash.phash(Image.fromarray(pixels, "L"), hash_size=HASH_SIZE).hash
    return np.packbits(np.asarray(bits, dtype=bool).ravel())


def _as_words(hashes: np.ndarray, name: str) -> np.ndarray:
    """Packed uint8 hashes (n, k) -> uint64 words (n, k / 8), after checking them."""
    hashes = np.asarray(hashes)
    if hashes.ndim != 2 or hashes.dtype != np.uint8 or hashes.shape[1] % 8 != 0:
        raise ValueError(
            f"{name} must be a 2-D uint8 array of packed hashes with a multiple of 8 bytes "
            f"per row, got dtype {hashes.dtype} and shape {hashes.shape}"
        )
    return np.ascontiguousarray(hashes).view(np.uint64)


def _word_distances(words_a: np.ndarray, words_b: np.ndarray) -> np.ndarray:
    # XOR sets the bits in which two hashes differ; popcount counts them, word by word.
    return np.bitwise_count(words_a[:, None, :] ^ words_b[None, :, :]).sum(axis=-1, dtype=np.int64)


def hamming_distances(hashes_a: np.ndarray, hashes_b: np.ndarray) -> np.ndarray:
    """Number of differing bits between every hash of ``hashes_a`` and every one of ``hashes_b``.

    Parameters
    ----------
    hashes_a, hashes_b : numpy.ndarray of uint8, shape (n_a, k) and (n_b, k)
        Packed hashes (such as :func:`image_hash` returns), ``k`` a multiple of 8.

    Returns
    -------
    numpy.ndarray of int64, shape (n_a, n_b)

    Raises
    ------
    ValueError
        If either is not a 2-D uint8 array with a multiple of 8 bytes per row, or their
        rows differ in length.

    Examples
    --------
    >>> zero = np.zeros((1, 8), dtype=np.uint8)
    >>> other = np.array([[255, 1, 0, 0, 0, 0, 0, 0], [0] * 8], dtype=np.uint8)
    >>> hamming_distances(zero, other)
    array([[9, 0]])
    """
    words_a = _as_words(hashes_a, "hashes_a")
    words_b = _as_words(hashes_b, "hashes_b")
    if words_a.shape[1] != words_b.shape[1]:
        raise ValueError(
            f"hashes_a has {8 * words_a.shape[1]} bytes per hash, hashes_b "
            f"{8 * words_b.shape[1]}: hashes of different lengths cannot be compared"
        )
    return _word_distances(words_a, words_b)


def _row_blocks(n_rows: int, n_cols: int):
    """Row ranges such that each block of distances holds at most ~_BLOCK_PAIRS pairs."""
    step = max(1, _BLOCK_PAIRS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


# --- The hash cache ---------------------------------------------------------------------


def hash_cache_dir() -> Path | None:
    """The folder of the on-disk hash cache, or None when caching is switched off.

    It follows the decoded-image cache (:func:`helpers.data.decoded_cache_dir`): unset
    ``$CHEST_XRAY_CACHE_DIR`` gives :data:`DEFAULT_HASH_CACHE_DIR`
    (``_build/cache/leaks``), a folder gives its ``leaks/`` subfolder, and ``off`` gives None.

    Returns
    -------
    pathlib.Path or None
    """
    return companion_cache_dir("leaks", DEFAULT_HASH_CACHE_DIR)


def _cache_file(root: Path, cache_dir: Path) -> Path:
    # One file per data folder (and hash kind): the entries inside carry each file's key.
    return cache_dir / f"{_CACHE_PREFIX}{files_fingerprint([_HASH_ID, (str(root),)])[:32]}.npz"


def _hash_cache(folder: Path) -> DiskCache:
    """The hash cache in ``folder``: one ``.npz`` file per data folder, at most
    :data:`HASH_CACHE_ENTRIES` of them, the least recently used pruned first."""
    return DiskCache(
        folder,
        pattern=f"{_CACHE_PREFIX}*.npz",
        max_entries=HASH_CACHE_ENTRIES,
        what="image-hash cache",
        warning=DataWarning,
    )


def _load_cache(file: Path) -> dict[tuple[str, int, int], np.ndarray] | None:
    """``{(path, size, mtime_ns): hash}`` from a cache file; None if it is not one."""
    with np.load(file, allow_pickle=False) as stored:
        paths, sizes, mtimes, hashes = (stored[n] for n in ("paths", "sizes", "mtimes", "hashes"))
    lengths = {len(paths), len(sizes), len(mtimes), len(hashes)}
    if (
        hashes.dtype != np.uint8
        or hashes.ndim != 2
        or hashes.shape[1] != HASH_BYTES
        or len(lengths) != 1
    ):
        return None
    return {(str(p), int(s), int(m)): h for p, s, m, h in zip(paths, sizes, mtimes, hashes)}


def _read_cache(file: Path) -> dict[tuple[str, int, int], np.ndarray]:
    """``{(path, size, mtime_ns): hash}`` from a cache file; {} if missing or unreadable
    (hashing again is always correct)."""
    return _hash_cache(file.parent).read(file.name, _load_cache) or {}


def _write_cache(file: Path, keys: list[tuple[str, int, int]], hashes: np.ndarray) -> None:
    """Write the cache file atomically and prune the cache; warn on failure (the cache
    saves time, not correctness: the images will be hashed again)."""

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                paths=np.array([k[0] for k in keys], dtype=str),
                hashes=hashes,
                sizes=np.array([k[1] for k in keys], dtype=np.int64),
                mtimes=np.array([k[2] for k in keys], dtype=np.int64),
            )

    _hash_cache(file.parent).write(file.name, save)


# --- Hashing a data folder --------------------------------------------------------------


def _check_workers(workers: int | None) -> None:
    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")


def image_hashes(
    data_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Perceptual hashes of every image of the three official folders.

    Parameters
    ----------
    data_dir : path-like or None
        The data folder (checked with :func:`helpers.data.check_data_dir`); None means the
        embedded copy.
    cache_dir : path-like or None
        Folder of the hash cache; None means :func:`hash_cache_dir` (which may switch the
        cache off). Files whose path, size and modification time are in the cache are
        not hashed again.
    workers : int or None
        Threads that decode and hash; None means one per CPU core.

    Returns
    -------
    files : pandas.DataFrame
        One row per image, in the order train, val, test and by path within each:
        ``path`` (relative to the data folder), ``split``, ``label``, ``group``. Its
        ``attrs["data_dir"]`` is the data folder used.
    hashes : numpy.ndarray of uint8, shape (len(files), :data:`HASH_BYTES`)
        Row ``i`` is :func:`image_hash` of ``files.path[i]``.

    Raises
    ------
    helpers.data.DataError
        If the data folder's layout is wrong, or an image cannot be read (naming it).
    ValueError
        If ``workers`` is not a positive integer or None.
    """
    _check_workers(workers)
    root = check_data_dir(data_dir)
    tables = [list_split(root, split).assign(split=split) for split in config.OFFICIAL_SPLITS]
    files = pd.concat(tables, ignore_index=True)[["path", "split", "label", "group"]]
    files.attrs["data_dir"] = str(root)
    stats = [(root / path).stat() for path in files["path"]]
    keys = [(path, s.st_size, s.st_mtime_ns) for path, s in zip(files["path"], stats)]

    folder = hash_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    cache_file = None if folder is None else _cache_file(root, folder)
    cached = {} if cache_file is None else _read_cache(cache_file)

    hashes = np.zeros((len(files), HASH_BYTES), dtype=np.uint8)
    missing = [i for i, key in enumerate(keys) if key not in cached]
    for i, key in enumerate(keys):
        if key in cached:
            hashes[i] = cached[key]
    if missing:
        paths = [root / files["path"].iat[i] for i in missing]
        # Pillow releases the GIL while it decodes and resizes, so threads use every core.
        # The module's image_hash is looked up at each call, so a test can count them.
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for i, digest in zip(missing, pool.map(image_hash, paths)):
                hashes[i] = digest
    if cache_file is not None and (missing or set(cached) != set(keys)):
        _write_cache(cache_file, keys, hashes)
    return files, hashes


# --- Pairs across folders ---------------------------------------------------------------


def _check_max_distance(max_distance: int) -> None:
    whole = isinstance(max_distance, (int, np.integer)) and not isinstance(max_distance, bool)
    if not whole or not 0 <= max_distance < HASH_BITS:
        raise ValueError(
            f"max_distance must be a whole number of bits from 0 to {HASH_BITS - 1}, got "
            f"{max_distance!r} (the measured default is {MAX_DISTANCE})"
        )


def _file_name(path: str) -> str:
    # Compared case-insensitively: IMG.JPEG and img.jpeg are one file on many disks.
    return path.rsplit("/", 1)[-1].lower()


def find_shared_images(
    data_dir: str | os.PathLike | None = None,
    *,
    max_distance: int = MAX_DISTANCE,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """Pairs of images in different official folders with the same file name or picture.

    Parameters
    ----------
    data_dir : path-like or None
        The data folder; None means the embedded copy.
    max_distance : int
        Largest Hamming distance (bits of :data:`HASH_BITS`) at which two images count as
        the same picture; the default :data:`MAX_DISTANCE` was measured (module docstring).
    cache_dir, workers
        As for :func:`image_hashes`.

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``path_a``, ``split_a`` (the earlier folder of train, val, test),
        ``path_b``, ``split_b``, ``reason`` (``"same picture"`` if the hashes lie at most
        ``max_distance`` bits apart, else ``"same file name"``), ``distance`` (bits),
        ``same_name`` (bool; file names compared case-insensitively). Rows are sorted by
        folder pair (train-val, train-test, val-test), then paths. ``attrs`` holds
        ``data_dir`` and ``max_distance``.

    Raises
    ------
    helpers.data.DataError
        If the data folder's layout is wrong, or an image cannot be read (naming it).
    ValueError
        If ``max_distance`` or ``workers`` is out of range.
    """
    _check_max_distance(max_distance)
    files, hashes = image_hashes(data_dir, cache_dir=cache_dir, workers=workers)
    words = _as_words(hashes, "hashes")
    names = files["path"].map(_file_name).to_numpy()
    splits = files["split"].to_numpy()
    rows = []
    for split_a, split_b in FOLDER_PAIRS:
        index_a = np.flatnonzero(splits == split_a)
        index_b = np.flatnonzero(splits == split_b)
        pairs: set[tuple[int, int]] = set()
        for start, stop in _row_blocks(len(index_a), len(index_b)):
            block = _word_distances(words[index_a[start:stop]], words[index_b])
            for r, c in zip(*np.nonzero(block <= max_distance)):
                pairs.add((int(index_a[start + r]), int(index_b[c])))
        by_name = pd.merge(
            pd.DataFrame({"i": index_a, "name": names[index_a]}),
            pd.DataFrame({"j": index_b, "name": names[index_b]}),
            on="name",
        )
        pairs.update(zip(by_name["i"].tolist(), by_name["j"].tolist()))
        for i, j in sorted(pairs):  # files are sorted by path within a folder: so are rows
            distance = int(np.bitwise_count(words[i] ^ words[j]).sum())
            rows.append(
                (
                    files["path"].iat[i],
                    split_a,
                    files["path"].iat[j],
                    split_b,
                    REASONS[0] if distance <= max_distance else REASONS[1],
                    distance,
                    bool(names[i] == names[j]),
                )
            )
    table = pd.DataFrame(rows, columns=_PAIR_COLUMNS).astype(
        {"distance": np.int64, "same_name": bool}
    )
    table.attrs.update(data_dir=files.attrs["data_dir"], max_distance=int(max_distance))
    return table


def nearest_distances(
    data_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """For each image, its nearest picture in each earlier official folder.

    This is how :data:`MAX_DISTANCE` is checked on a data folder: copies lie far below it,
    distinct X-rays far above it.

    Parameters
    ----------
    data_dir, cache_dir, workers
        As for :func:`image_hashes`.

    Returns
    -------
    pandas.DataFrame
        One row per image of the later folder of each pair in :data:`FOLDER_PAIRS`:
        ``folders`` (``"train-test"`` ...), ``path`` (in the later folder),
        ``nearest_path`` (in the earlier folder; the first by path at equal distance) and
        ``distance`` (bits).
    """
    files, hashes = image_hashes(data_dir, cache_dir=cache_dir, workers=workers)
    words = _as_words(hashes, "hashes")
    splits = files["split"].to_numpy()
    paths = files["path"].to_numpy()
    parts = []
    for split_a, split_b in FOLDER_PAIRS:
        index_a = np.flatnonzero(splits == split_a)
        index_b = np.flatnonzero(splits == split_b)
        nearest = np.empty(len(index_b), dtype=np.int64)
        distance = np.empty(len(index_b), dtype=np.int64)
        for start, stop in _row_blocks(len(index_b), len(index_a)):
            block = _word_distances(words[index_b[start:stop]], words[index_a])
            nearest[start:stop] = block.argmin(axis=1)
            distance[start:stop] = block.min(axis=1)
        parts.append(
            pd.DataFrame(
                {
                    "folders": f"{split_a}-{split_b}",
                    "path": paths[index_b],
                    "nearest_path": paths[index_a][nearest],
                    "distance": distance,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def shared_counts(pairs: pd.DataFrame) -> pd.DataFrame:
    """How many images each pair of official folders shares, by reason.

    Parameters
    ----------
    pairs : pandas.DataFrame
        What :func:`find_shared_images` returns.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``folders`` (``"train-val"``, ``"train-test"``, ``"val-test"``, all three
        always), with columns ``same picture`` and ``same file name`` (pairs of each
        reason), ``pairs`` (their sum), ``images_a`` and ``images_b`` (distinct images of
        the earlier and the later folder in those pairs).

    Raises
    ------
    ValueError
        If ``pairs`` is not a table with the columns :func:`find_shared_images` gives, or
        holds an unknown reason or folder pair.
    """
    if not isinstance(pairs, pd.DataFrame):
        raise ValueError(
            f"pairs must be the table find_shared_images returns, got {type(pairs).__name__}"
        )
    missing = [c for c in _PAIR_COLUMNS[:5] if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs lacks the columns {missing}; expected those of find_shared_images")
    unknown = sorted(set(pairs["reason"]) - set(REASONS))
    if unknown:
        raise ValueError(f"pairs holds unknown reasons {unknown}; expected {list(REASONS)}")
    others = sorted(set(zip(pairs["split_a"], pairs["split_b"])) - set(FOLDER_PAIRS))
    if others:
        raise ValueError(f"pairs holds folder pairs {others}; expected {list(FOLDER_PAIRS)}")
    rows = []
    for split_a, split_b in FOLDER_PAIRS:
        these = pairs[(pairs["split_a"] == split_a) & (pairs["split_b"] == split_b)]
        by_reason = [int((these["reason"] == reason).sum()) for reason in REASONS]
        images = (these["path_a"].nunique(), these["path_b"].nunique())
        rows.append((f"{split_a}-{split_b}", *by_reason, len(these), *images))
    columns = ["folders", *REASONS, "pairs", "images_a", "images_b"]
    return pd.DataFrame(rows, columns=columns).set_index("folders")


def _leak_message(pairs: pd.DataFrame) -> str:
    counts = shared_counts(pairs)
    per_folder = "; ".join(
        f"{folders}: {row['pairs']} ({row['same picture']} same picture, "
        f"{row['same file name']} same file name)"
        for folders, row in counts.iterrows()
        if row["pairs"]
    )
    # The strongest evidence first: the same picture, nearest first.
    examples = pairs.assign(_rank=(pairs["reason"] != REASONS[0]).astype(int))
    examples = examples.sort_values(["_rank", "distance", "path_a", "path_b"]).head(3)
    shown = "; ".join(
        f"{r.path_a} and {r.path_b} ({r.reason}, {r.distance} bits apart)"
        for r in examples.itertuples()
    )
    where = pairs.attrs.get("data_dir", "the data folder")
    return (
        f"{len(pairs)} pair(s) of images are shared between the official folders of {where} "
        f"({per_folder}); for example {shown}. A model tested on pictures it was trained on "
        f"scores too well: remove one image of each pair, or pass on_leak='ignore'."
    )


def check_leaks(
    data_dir: str | os.PathLike | None = None,
    *,
    on_leak: str = "warn",
    max_distance: int = MAX_DISTANCE,
    cache_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Find images shared between the official folders, and warn, stop, or say nothing.

    Parameters
    ----------
    data_dir : path-like or None
        The data folder; None means the embedded copy.
    on_leak : {"warn", "stop", "ignore"}
        What to do when a pair is found (see :data:`helpers.config.ON_LEAK`): issue a
        :class:`LeakWarning`, raise :class:`DataLeakError`, or nothing. The message gives
        the count per folder pair and up to 3 examples.
    max_distance, cache_dir
        As for :func:`find_shared_images`.

    Returns
    -------
    pandas.DataFrame
        The pairs :func:`find_shared_images` finds (empty when there is no leak).

    Raises
    ------
    DataLeakError
        If ``on_leak="stop"`` and a pair is found.
    ValueError
        If ``on_leak`` is not one of :data:`helpers.config.ON_LEAK` (checked before any
        image is read), or ``max_distance`` is out of range.
    helpers.data.DataError
        If the data folder's layout is wrong, or an image cannot be read.
    """
    if not isinstance(on_leak, str) or on_leak not in config.ON_LEAK:
        raise ValueError(f"on_leak must be one of {list(config.ON_LEAK)}, got {on_leak!r}")
    pairs = find_shared_images(data_dir, max_distance=max_distance, cache_dir=cache_dir)
    if len(pairs) and on_leak != "ignore":
        message = _leak_message(pairs)
        if on_leak == "stop":
            raise DataLeakError(message)
        warnings.warn(message, LeakWarning, stacklevel=2)
    return pairs


# --- Person numbers across folders ------------------------------------------------------


def shared_person_numbers(data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Person numbers of PNEUMONIA file names that occur in more than one official folder.

    On the official data 170 person numbers occur in both train and test, although the test
    set was collected separately and no file name or picture repeats across folders
    (:func:`find_shared_images`): a shared number is not evidence of a shared person, nor
    of a leak. This function measures the count, so that the book can say so.

    Parameters
    ----------
    data_dir : path-like or None
        The data folder; None means the embedded copy.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``person`` (``"person12"``, sorted by number), with one column of image
        counts per official folder (``train``, ``val``, ``test``) and ``folders`` (the
        folders it occurs in, joined with ``", "``). ``len()`` is the count.

    Raises
    ------
    helpers.data.DataError
        If the data folder's layout is wrong.
    """
    root = check_data_dir(data_dir)
    tables = [list_split(root, split).assign(split=split) for split in config.OFFICIAL_SPLITS]
    files = pd.concat(tables, ignore_index=True)
    persons = files[(files["label"] == 1) & files["group"].str.fullmatch(r"person\d+")]
    counts = persons.groupby(["group", "split"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(config.OFFICIAL_SPLITS), fill_value=0).astype(np.int64)
    counts = counts[(counts > 0).sum(axis=1) > 1]
    counts = counts.loc[sorted(counts.index, key=lambda g: int(g[len("person") :]))]
    counts = counts.rename_axis(index="person", columns=None)
    counts["folders"] = [", ".join(counts.columns[row > 0]) for row in counts.to_numpy()]
    return counts
