"""Shared fixtures: small chest X-ray folders generated in temporary directories.

Every folder has the Kaggle layout ``{train,val,test}/{NORMAL,PNEUMONIA}/<files>`` with
file names in the data set's style (``person<N>_bacteria_<k>.jpeg``, ``IM-<study>-<k>.jpeg``,
``NORMAL2-IM-<study>-0001.jpeg``), so the person-aware split has persons to keep together.
Images are tiny and made with NumPy + Pillow; nothing needs the network.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any TensorFlow import
# Tests decode generated folders: their decoded-image cache goes to a temporary folder, not
# to the project's _build/cache (tests that check the cache set their own), removed at exit.
os.environ["CHEST_XRAY_CACHE_DIR"] = tempfile.mkdtemp(prefix="chest-xray-test-cache-")

import numpy as np
import pytest
from hypothesis import settings
from PIL import Image

from helpers import config

atexit.register(shutil.rmtree, os.environ["CHEST_XRAY_CACHE_DIR"], ignore_errors=True)

# Property tests explore the same examples on every run, so the suite cannot flicker.
settings.register_profile("helpers", derandomize=True, deadline=None)
settings.load_profile("helpers")

REPO = Path(__file__).resolve().parent.parent
REAL_DATA_DIR = config.DEFAULT_DATA_DIR
JUNK_NAMES = (".DS_Store", "Thumbs.db", "notes.txt")


# ---------------------------------------------------------------------------------------
# Writing images
# ---------------------------------------------------------------------------------------


def save_image(path: Path, img: Image.Image) -> Path:
    """Save ``img`` to ``path``; the format follows the extension, whatever its case."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpeg": "JPEG", ".jpg": "JPEG", ".png": "PNG"}[path.suffix.lower()]
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    img.save(path, format=fmt, **kwargs)
    return path


def xray_array(
    rng: np.random.Generator, *, size: tuple[int, int], level: float, rgb: bool
) -> np.ndarray:
    """A smooth uint8 picture (width, height = ``size``) whose mean brightness is ~``level``."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    base = level + 30 * np.sin(xx / max(width, 1) * np.pi) * np.cos(yy / max(height, 1) * np.pi)
    if rgb:
        tint = rng.uniform(-25, 25, size=3)
        base = base[..., None] + tint
    return np.clip(np.rint(base), 0, 255).astype(np.uint8)


def image_of_mode(
    rng: np.random.Generator, mode: str, size: tuple[int, int], level: float
) -> Image.Image:
    """A Pillow image in ``mode`` ("L", "RGB", "RGBA", "P", "LA", "I;16")."""
    width, height = size
    if mode == "L":
        return Image.fromarray(xray_array(rng, size=size, level=level, rgb=False), "L")
    if mode == "RGB":
        return Image.fromarray(xray_array(rng, size=size, level=level, rgb=True), "RGB")
    if mode == "RGBA":
        rgb = xray_array(rng, size=size, level=level, rgb=True)
        alpha = rng.integers(0, 256, size=(height, width, 1), dtype=np.uint8)
        return Image.fromarray(np.concatenate([rgb, alpha], axis=-1), "RGBA")
    if mode == "LA":
        gray = xray_array(rng, size=size, level=level, rgb=False)[..., None]
        alpha = rng.integers(0, 256, size=(height, width, 1), dtype=np.uint8)
        return Image.fromarray(np.concatenate([gray, alpha], axis=-1), "LA")
    if mode == "P":
        return palette_image(rng.integers(0, 4, size=(height, width)).astype(np.uint8))
    if mode == "I;16":
        gray = xray_array(rng, size=size, level=level, rgb=False).astype(np.uint16) * 257
        img = Image.fromarray(gray)
        assert img.mode == "I;16"
        return img
    raise ValueError(mode)


#: Palette of :func:`palette_image` (index -> RGB).
PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 30]], dtype=np.uint8)


def palette_image(indices: np.ndarray) -> Image.Image:
    img = Image.fromarray(indices.astype(np.uint8), "L")
    img = img.convert("P")
    img.putpalette(PALETTE.ravel().tolist() + [0] * (768 - PALETTE.size))
    # Pillow's convert("P") of an "L" image keeps the index values: check it.
    assert np.array_equal(np.asarray(img), indices)
    return img


# ---------------------------------------------------------------------------------------
# Data folders
# ---------------------------------------------------------------------------------------


@dataclass
class XrayFolder:
    """A generated data folder and what is in it."""

    root: Path
    images: list[str] = field(default_factory=list)  # relative paths, with "/"
    junk: list[str] = field(default_factory=list)

    def images_of(self, split: str) -> list[str]:
        return sorted(p for p in self.images if p.startswith(f"{split}/"))


def make_xray_folder(
    root: Path,
    *,
    train_persons: tuple[int, int] = (6, 6),
    images_per_person: tuple[int, int] = (3, 4),
    val_per_class: int = 2,
    test_per_class: int = 8,
    size: tuple[int, int] = (44, 40),
    rgb: bool = True,
    seed: int = 0,
) -> XrayFolder:
    """A Kaggle-layout folder of small JPEGs; PNEUMONIA images are brighter than NORMAL ones.

    Every image has its own brightness, so that scores of any model reading brightness
    differ from image to image (a shuffled evaluation would show).
    """
    rng = np.random.default_rng(seed)
    folder = XrayFolder(root=Path(root))
    counter = iter(range(10_000))

    def add(split: str, class_name: str, name: str) -> None:
        k = next(counter)
        level = (60 if class_name == "NORMAL" else 150) + (k * 7) % 60
        img = image_of_mode(rng, "RGB" if rgb else "L", size, level)
        save_image(folder.root / split / class_name / name, img)
        folder.images.append(f"{split}/{class_name}/{name}")

    for p in range(train_persons[0]):
        for k in range(images_per_person[0]):
            add("train", "NORMAL", f"IM-{100 + p:04d}-{k + 1:04d}.jpeg")
    for p in range(train_persons[1]):
        kind = "bacteria" if p % 2 == 0 else "virus"
        for k in range(images_per_person[1]):
            add("train", "PNEUMONIA", f"person{p + 1}_{kind}_{10 * p + k}.jpeg")
    for i in range(val_per_class):
        add("val", "NORMAL", f"NORMAL2-IM-{900 + i:04d}-0001.jpeg")
        add("val", "PNEUMONIA", f"person{900 + i}_bacteria_{i}.jpeg")
    for i in range(test_per_class):
        add("test", "NORMAL", f"IM-{500 + i:04d}-0001.jpeg")
        add("test", "PNEUMONIA", f"person{500 + i}_virus_{i}.jpeg")
    folder.images.sort()
    return folder


def make_mixed_folder(root: Path) -> XrayFolder:
    """A folder of every image flavour the loader must read, plus files it must skip."""
    rng = np.random.default_rng(1)
    folder = XrayFolder(root=Path(root))
    files = {
        "train/NORMAL": [
            ("IM-0101-0001.jpeg", "L", (37, 53)),
            ("IM-0102-0001.PNG", "RGB", (300, 120)),
            ("IM-0103-0001.png", "I;16", (48, 48)),
            ("IM-0104-0001.JPEG", "RGB", (53, 37)),
            ("IM-0105-0001.png", "RGBA", (40, 40)),
            ("NORMAL2-IM-0106-0001.png", "P", (33, 33)),
        ],
        "train/PNEUMONIA": [
            ("person1_bacteria_1.jpeg", "L", (64, 64)),
            ("person1_bacteria_2.JPEG", "RGB", (37, 53)),
            ("person2_virus_3.png", "RGBA", (50, 30)),
            ("person3_bacteria_4.png", "I;16", (31, 29)),
            ("person4_virus_5.jpg", "L", (120, 300)),
            ("person5_bacteria_6.png", "P", (20, 20)),
        ],
        "val/NORMAL": [("NORMAL2-IM-0900-0001.jpeg", "L", (40, 40))],
        "val/PNEUMONIA": [("person900_bacteria_1.png", "RGB", (41, 39))],
        "test/NORMAL": [("IM-0500-0001.png", "LA", (45, 35))],
        "test/PNEUMONIA": [("person500_virus_1.jpeg", "RGB", (37, 53))],
    }
    for sub, entries in files.items():
        for i, (name, mode, size) in enumerate(entries):
            save_image(folder.root / sub / name, image_of_mode(rng, mode, size, 60 + 20 * i))
            folder.images.append(f"{sub}/{name}")
    for sub in ("train/NORMAL", "train/PNEUMONIA", "val/NORMAL", "test/PNEUMONIA"):
        for junk in JUNK_NAMES:
            (folder.root / sub / junk).write_bytes(b"not an image \x00\x01")
            folder.junk.append(f"{sub}/{junk}")
    folder.images.sort()
    return folder


@pytest.fixture
def make_xrays(tmp_path):
    """Factory: ``make_xrays(name="chest_xray", **options)`` -> a fresh :class:`XrayFolder`."""

    def factory(name: str = "chest_xray", **options) -> XrayFolder:
        return make_xray_folder(tmp_path / name, **options)

    return factory


@pytest.fixture(scope="session")
def xray_folder(tmp_path_factory) -> XrayFolder:
    """The standard small data set (42 train-folder, 4 val, 16 test images); do not modify."""
    return make_xray_folder(tmp_path_factory.mktemp("small") / "chest_xray")


@pytest.fixture(scope="session")
def mixed_folder(tmp_path_factory) -> XrayFolder:
    """Every image flavour and some junk files; do not modify."""
    return make_mixed_folder(tmp_path_factory.mktemp("mixed") / "chest_xray")


@pytest.fixture(scope="session")
def xrays32(xray_folder):
    """The standard small data set loaded at 32 x 32 RGB with seed 0."""
    from helpers import data

    return data.load_chest_xrays(xray_folder.root, image_size=32, seed=0)


@pytest.fixture(scope="session")
def cli_built_fixture_book(tmp_path_factory) -> dict:
    """The fixture book (tests/fixture_book.py), built once through ``python -m helpers.book``
    (a render costs seconds): test_book.py reads its HTML, test_browser.py opens it; do not
    modify."""
    from fixture_book import build_fixture_book_with_cli

    return build_fixture_book_with_cli(tmp_path_factory.mktemp("fixture"))
