"""Decoding one image file (any Pillow reads, or DICOM) -> one colour mode, one square size.

The rule is fixed (see :func:`decode_image`), so every image of the book, in training and in
prediction, goes through the same conversion. :func:`decode_count` says how many files this
process has decoded, which is how the caches are checked to work. :func:`decoded_batches`
decodes a file list of any length on threads, a batch at a time, keeping none of it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from helpers.data.dicom import dicom_to_8bit, is_dicom_name
from helpers.data.errors import DataError

ColorMode = Literal["rgb", "grayscale"]

#: Bumped whenever :func:`decode_image` changes what it returns, so old disk caches are
#: never read back.
_DECODER_VERSION = 2

# How many image files decode_image has read in this process (decoding threads included).
_decoded_files = 0
_decoded_files_lock = threading.Lock()


def decode_count() -> int:
    """How many images this process has decoded from image files so far.

    Every call of :func:`decode_image` that goes to a file counts once (a file that turns
    out missing or corrupt included), whatever calls it: the loaders, prediction or a
    notebook. Images served by the in-memory or the disk cache do not count. Compare the value before and after a load to see how
    many images it decoded.

    Returns
    -------
    int
        A count that only grows; it starts at 0 when the process starts.
    """
    return _decoded_files


def _count_one_decode() -> None:
    global _decoded_files
    with _decoded_files_lock:  # decoding runs on many threads
        _decoded_files += 1


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

    A DICOM file (``.dcm`` or ``.dicom``, in any case) has its own rule, which ends where a
    grayscale JPEG starts (:func:`helpers.data.dicom_rule_steps`): pydicom's modality
    LUT (rescale slope and intercept), then its VOI LUT or the file's first window, mapped
    from the window's output range to 0-255, MONOCHROME1 inverted (so air is dark). The
    8-bit grayscale result is then converted and resized as above. Multi-frame, colour,
    pixel-less files and transfer syntaxes without an installed decoder are refused.

    Parameters
    ----------
    path : path-like
        The image file.
    image_size : int
        Side of the square output, in pixels (a positive integer).
    color_mode : {"rgb", "grayscale"}
        Three channels or one.

    Returns
    -------
    numpy.ndarray of uint8, shape (image_size, image_size, 1 or 3)

    Raises
    ------
    DataError
        If the file is missing, is not an image, or is corrupt or truncated; for a DICOM
        file also if the rule cannot take it (see above), with the reason.
    ValueError
        If ``image_size`` or ``color_mode`` is not one of the values above.
    """
    from PIL import Image, UnidentifiedImageError

    _check_image_options(image_size, color_mode)
    path = Path(path)
    _count_one_decode()
    if is_dicom_name(path):
        # The DICOM rule gives 8-bit grayscale; from there on, the same steps as a JPEG's.
        gray = Image.fromarray(dicom_to_8bit(path), "L")
        gray = gray.convert("L" if color_mode == "grayscale" else "RGB")
        array = np.asarray(gray.resize((image_size, image_size), Image.Resampling.BILINEAR))
        return array[..., np.newaxis] if array.ndim == 2 else array
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


def decode_or_error(
    path: str | os.PathLike, *, image_size: int, color_mode: ColorMode
) -> np.ndarray | DataError:
    """:func:`decode_image`, with a file it cannot read returned as its :class:`DataError`
    (for decoding threads, which must not stop at one bad file)."""
    try:
        return decode_image(path, image_size=image_size, color_mode=color_mode)
    except DataError as error:
        return error


def decoding_threads(workers: int | None) -> ThreadPoolExecutor:
    """The decoding threads: ``workers``, or one per core. Pillow releases the GIL while it
    decodes and resizes, so threads use every core."""
    return ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)


@dataclass(frozen=True)
class DecodedBatch:
    """One batch of :func:`decoded_batches`: its files, and the images of those that decoded.

    Attributes
    ----------
    paths : list of pathlib.Path
        Every file of the batch, in the order given.
    images : numpy.ndarray of uint8, shape (n_decoded, image_size, image_size, channels)
        The images of the files that decoded, in that order.
    decoded : list of int
        Position in ``paths`` of each row of ``images``.
    errors : dict of int to str
        Position in ``paths`` of each file that could not be read, and why.
    """

    paths: list[Path]
    images: np.ndarray
    decoded: list[int]
    errors: dict[int, str]


def decoded_batches(
    paths: Iterable[str | os.PathLike],
    *,
    image_size: int,
    color_mode: ColorMode = "rgb",
    batch_size: int = 64,
    workers: int | None = None,
) -> Iterator[DecodedBatch]:
    """Decode files on threads, ``batch_size`` at a time, in the given order, keeping none.

    The files of the next batch decode while the caller works on the current one; no more
    than two batches of images are in memory at once, however many files are given. Nothing
    is cached (unlike :func:`helpers.data.load_images`): for files seen once, such as a
    folder scored by ``helpers.predict``.

    Parameters
    ----------
    paths : iterable of path-like
        The files.
    image_size, color_mode
        See :func:`decode_image`.
    batch_size : int, default 64
        Files per batch (a positive integer).
    workers : int or None
        Decoding threads; None uses every core.

    Yields
    ------
    DecodedBatch
        One per ``batch_size`` files (the last may hold fewer); a file that is missing or
        cannot be decoded is in its ``errors``, with the reason, and decoding goes on.

    Raises
    ------
    ValueError
        If ``image_size``, ``color_mode`` or ``batch_size`` is invalid.
    """
    _check_image_options(image_size, color_mode)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    paths = [Path(p) for p in paths]
    channels = 1 if color_mode == "grayscale" else 3

    def collect(chunk, futures) -> DecodedBatch:
        results = [future.result() for future in futures]
        decoded = [i for i, r in enumerate(results) if not isinstance(r, DataError)]
        images = np.empty((len(decoded), image_size, image_size, channels), dtype=np.uint8)
        for row, i in enumerate(decoded):
            images[row] = results[i]
        errors = {i: str(r) for i, r in enumerate(results) if isinstance(r, DataError)}
        return DecodedBatch(chunk, images, decoded, errors)

    pool = decoding_threads(workers)
    try:
        ahead = None  # the batch decoding while the caller works on the one before
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            futures = [
                pool.submit(decode_or_error, p, image_size=image_size, color_mode=color_mode)
                for p in chunk
            ]
            if ahead is not None:
                yield collect(*ahead)
            ahead = (chunk, futures)
        if ahead is not None:
            yield collect(*ahead)
    finally:  # also when the caller stops early or is interrupted: drop what is queued
        pool.shutdown(wait=True, cancel_futures=True)


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
    """Refuse an image size that is not a positive integer or an unknown colour mode."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if color_mode not in ("rgb", "grayscale"):
        raise ValueError(f"color_mode must be 'rgb' or 'grayscale', got {color_mode!r}")
