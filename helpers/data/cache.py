"""The decoded-image cache: each image decoded once per process, and once per disk.

Two levels. In memory, every decoded image is kept for the life of the process, keyed by
the file's path, size and modification time, the image size and the colour mode, whichever
notebook cell or function asks for it. On disk, each *file list* decoded together (one
split at one size and colour mode, in practice) is kept as one ``.npy`` array in
:func:`decoded_cache_dir`, shared by every chapter of a build and by later builds; the
person-aware split keeps its answer there too (``split-*.npy``).

The disk cache is capped by bytes (:func:`decoded_cache_bytes`, default
:data:`DEFAULT_CACHE_BYTES`): when a new entry takes the folder's ``.npy`` files over the
cap, the least recently used ones (written or read longest ago) are deleted first, never
the one just written (:class:`helpers.files.DiskCache`, every cache's mechanism).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from helpers import config
from helpers.data import decode
from helpers.data.decode import ColorMode, _check_image_options
from helpers.data.dicom import dicom_decoder_versions, is_dicom_name
from helpers.data.errors import DataError, DataWarning
from helpers.files import DiskCache, cache_bytes_from_environment

# Decoded images, keyed by file identity and conversion: each image is decoded once per
# process, whichever notebook cell or function asks for it.
_DECODED: dict[tuple, np.ndarray] = {}
_DECODED_LOCK = threading.Lock()

#: Default cap on the disk cache, in bytes (4 GiB). A whole default build (chapters at
#: 128 px RGB, model_6 at 128 px grayscale, its ablation at 48 px in both modes and 72 px
#: grayscale, model_7's search at 160 px RGB) writes 918 MB: 5,856 images at 128 x 128 x 3
#: bytes alone are 288 MB. The CI-sized build (32 px, ablation at 16 and 24 px, 40 px for
#: model_7) writes 61 MB. 4 GiB holds both builds of the embedded data and of the
#: full-resolution download (whose decoded arrays are the same size), with room for
#: experiments at other sizes (224 px RGB: 882 MB). The former cap of 12 entries held less
#: than one default build (18 entries).
DEFAULT_CACHE_BYTES = 4 * 1024**3

#: Environment variable that overrides :data:`DEFAULT_CACHE_BYTES`.
CACHE_BYTES_VARIABLE = "CHEST_XRAY_CACHE_BYTES"


def decoded_cache_dir() -> Path | None:
    """The folder of the on-disk cache of decoded images, or None when it is switched off.

    ``$CHEST_XRAY_CACHE_DIR`` if set (an empty value or ``off`` switches the cache off),
    else :data:`helpers.config.DEFAULT_CACHE_DIR` (``_build/cache/decoded``).

    Returns
    -------
    pathlib.Path or None
    """
    value = os.environ.get("CHEST_XRAY_CACHE_DIR")
    if value is None:
        return config.DEFAULT_CACHE_DIR
    if value.strip().lower() in ("", "off", "none", "0"):
        return None
    return Path(value).expanduser()


def companion_cache_dir(name: str, default: Path) -> Path | None:
    """The folder of a cache that follows the decoded-image cache (:func:`decoded_cache_dir`):
    ``default`` when ``$CHEST_XRAY_CACHE_DIR`` is unset, the decoded cache's subfolder
    ``name`` when it names a folder, None when it switches caching off.

    Returns
    -------
    pathlib.Path or None
    """
    if os.environ.get("CHEST_XRAY_CACHE_DIR") is None:
        return default
    decoded = decoded_cache_dir()
    return None if decoded is None else decoded / name


def decoded_cache_bytes() -> int:
    """The cap on the disk cache's total size, in bytes.

    ``$CHEST_XRAY_CACHE_BYTES`` if set, else :data:`DEFAULT_CACHE_BYTES` (4 GiB). The value
    is a whole number of bytes, optionally with a binary unit: ``500000000``, ``512M``,
    ``8GiB`` (K, M, G, T are powers of 1024, in any case). ``0`` keeps only the entry just
    written.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If the variable is set to anything else, naming it and the value.
    """
    return cache_bytes_from_environment(CACHE_BYTES_VARIABLE, DEFAULT_CACHE_BYTES)


def files_fingerprint(keys: Iterable[tuple]) -> str:
    """SHA-256 of a file list: each file's path, size and modification time, in order.

    A changed file (new size or time), an added, removed or renamed file, or another order
    gives another fingerprint; reading file contents is not needed. The decoder's version
    is part of it, so arrays of an older decoder are never read back.

    Parameters
    ----------
    keys : iterable of tuple
        One tuple per file (path, size, modification time, and anything else that makes
        the entry, such as the image size and colour mode), in order.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    import hashlib

    digest = hashlib.sha256(f"decoder-v{decode._DECODER_VERSION}".encode())
    for key in keys:
        digest.update(repr(key).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _cache_key(path: Path, image_size: int, color_mode: str) -> tuple:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, image_size, color_mode)
    if is_dicom_name(path):
        # The DICOM rule's version and its decoders' versions change what a file decodes to.
        key += _dicom_decoders()
    return key


@functools.cache
def _dicom_decoders() -> tuple[str, ...]:
    return dicom_decoder_versions()


def _disk_cache(folder: Path) -> DiskCache:
    """The decoded-image cache in ``folder``: ``.npy`` entries capped by
    :func:`decoded_cache_bytes` (which fails on a bad setting before anything is written)."""
    return DiskCache(
        folder,
        pattern="*.npy",
        max_bytes=decoded_cache_bytes(),
        what="decoded-image cache",
        warning=DataWarning,
    )


def _read_disk_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The decoded images stored at ``path`` if they have ``shape`` (uint8), else None
    (missing, damaged, or still being written by another process: decoded again)."""
    return _disk_cache(path.parent).read_array(path.name, shape, np.uint8)


def _write_disk_cache(path: Path, array: np.ndarray) -> None:
    """Store decoded images at ``path`` atomically, then bring the folder's ``.npy`` files
    back under the cap (least recently used first, never ``path``); a folder that cannot be
    written warns and goes on (:class:`helpers.files.DiskCache`)."""
    _disk_cache(path.parent).write_array(path.name, array)


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
    if cache_dir is not None:
        decoded_cache_bytes()  # a bad cap setting fails before any decoding
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

    disk_file, disk_unreadable = None, False
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
            disk_unreadable = True  # missing or damaged: (re)written below

    # Keyed by file identity: a path listed twice is still decoded once.
    missing: dict[tuple, Path] = {}
    for i, key in enumerate(keys):
        if key is not None and key not in _DECODED and key not in missing:
            missing[key] = paths[i]
    if missing:

        def decode_one(item):
            key, path = item
            return key, decode.decode_or_error(path, image_size=image_size, color_mode=color_mode)

        with decode.decoding_threads(workers) as pool:
            decoded = list(pool.map(decode_one, missing.items()))
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
    if disk_file is not None and not bad and (disk_unreadable or not disk_file.exists()):
        _write_disk_cache(disk_file, out)
    return out, bad


def load_images(
    paths: Iterable[str | os.PathLike],
    *,
    image_size: int,
    color_mode: ColorMode = config.COLOR_MODE,
    workers: int | None = None,
) -> np.ndarray:
    """Decode many image files, in the given order, each at most once.

    Decoded images are kept in memory for the life of the process and, as one array per
    file list, in an on-disk cache shared by every notebook of a build and by later builds.
    The disk cache is keyed by the files' paths, sizes and modification times, the image
    size, the colour mode and the decoder's version (for DICOM files also the DICOM rule's
    version and the versions of pydicom and its decoders): changing, adding or removing a file
    makes a new entry, and an entry is never read back for other files. A damaged entry is
    decoded again and rewritten.

    Parameters
    ----------
    paths : sequence of path-like
        Absolute paths (or relative to the working folder).
    image_size, color_mode
        See :func:`helpers.data.decode_image`.
    workers : int or None
        Decoding threads; None uses every core.

    Returns
    -------
    numpy.ndarray of uint8, shape (n, image_size, image_size, channels)

    Raises
    ------
    DataError
        For the first file (in the given order) that is missing or cannot be decoded.
    ValueError
        If ``image_size`` or ``color_mode`` is invalid, or ``$CHEST_XRAY_CACHE_BYTES`` is
        set to something that is not a size (see :func:`decoded_cache_bytes`).
    """
    _check_image_options(image_size, color_mode)
    paths = [Path(p).absolute() for p in paths]
    if not paths:
        channels = 1 if color_mode == "grayscale" else 3
        return np.empty((0, image_size, image_size, channels), dtype=np.uint8)
    images, _ = _decode_many(
        paths,
        image_size=image_size,
        color_mode=color_mode,
        workers=workers,
        skip_bad=False,
        cache_dir=decoded_cache_dir(),
    )
    return images


def clear_decoded_cache(*, disk: bool = False) -> None:
    """Forget every decoded image kept in memory (and on disk when ``disk`` is True).

    Parameters
    ----------
    disk : bool, default False
        Also delete the ``.npy`` files of :func:`decoded_cache_dir`.
    """
    with _DECODED_LOCK:
        _DECODED.clear()
    folder = decoded_cache_dir()
    if disk and folder is not None:
        DiskCache(folder, pattern="*.npy").clear()
