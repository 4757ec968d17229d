"""Project constants, in one place: paths, class names, splits, image formats.

A chapter's settings (image size, epochs, batch size, seed, target sensitivity, ...) are
not here: each chapter's cell tagged ``parameters`` holds its own defaults (papermill's
convention), and :mod:`helpers.parameters` their types, rules and help. Nor are the models:
the book's model chapters are listed by ``_toc.yml`` and their own metadata
(:func:`helpers.chapters.model_ids`).
"""

from __future__ import annotations

from pathlib import Path

#: The repository root (the folder holding ``helpers/``).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: The embedded copy of the Kermany et al. data set (official train/val/test layout).
DEFAULT_DATA_DIR = REPO_ROOT / "data" / "chest_xray"

#: Where every model writes ``results/<model-id>/`` and the split writes ``split.csv``.
DEFAULT_RESULTS_DIR = REPO_ROOT / "results"

#: The on-disk cache of decoded images (see :func:`helpers.data.load_images`); the
#: environment variable ``CHEST_XRAY_CACHE_DIR`` moves it, or switches it off with ``off``.
DEFAULT_CACHE_DIR = REPO_ROOT / "_build" / "cache" / "decoded"

#: Class folder names, in label order: label 0 = NORMAL, label 1 = PNEUMONIA.
CLASS_NAMES: tuple[str, str] = ("NORMAL", "PNEUMONIA")

#: Official split folders of the download.
OFFICIAL_SPLITS: tuple[str, str, str] = ("train", "val", "test")

#: File extensions read as images (compared case-insensitively); ``.dcm`` and ``.dicom`` are
#: DICOM files, read by their own rule (:mod:`helpers.data.dicom`).
IMAGE_EXTENSIONS = frozenset(
    {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".dcm", ".dicom"}
)

#: Colour mode the images are decoded in: every chapter's models take three channels.
COLOR_MODE = "rgb"
#: Fraction of the official train folder (by person) held out for validation.
VAL_FRACTION = 0.2

#: ``tf.distribute`` strategies by name (see :func:`helpers.train.distribution_strategy`).
STRATEGIES: tuple[str, ...] = ("default", "mirrored", "multi_worker")
#: What ``on_bad_image`` may be: stop at an unreadable image, or skip it (counted, named).
ON_BAD_IMAGE: tuple[str, ...] = ("stop", "skip")
#: What :func:`helpers.leaks.check_leaks` does when images are shared between folders.
ON_LEAK: tuple[str, ...] = ("warn", "stop", "ignore")


#: The case study's reported test accuracy: 52-58% for all five models (its own numbers,
#: quoted for comparison; they come from its misaligned evaluation).
CASE_STUDY_REPORTED_ACCURACY: tuple[float, float] = (0.52, 0.58)
