"""Tests of helpers.data.cache: each image decoded once per process and once per disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import save_image
from PIL import Image

from helpers import data
from helpers.data import decode as decode_module


def _count_decodes(monkeypatch):
    """The names of the files decoded from now on, in the order the loaders decode them."""
    calls = []
    real = decode_module.decode_image

    def counting(path, **kwargs):
        calls.append(Path(path).name)
        return real(path, **kwargs)

    # The cache's decoder looks decode_image up on its module at call time.
    monkeypatch.setattr(decode_module, "decode_image", counting)
    return calls


def test_each_image_is_decoded_once_per_process(mixed_folder, monkeypatch):
    data.clear_decoded_cache()
    calls = _count_decodes(monkeypatch)
    first = data.load_chest_xrays(mixed_folder.root, image_size=20, seed=42)
    assert sorted(calls) == sorted(Path(p).name for p in mixed_folder.images)
    second = data.load_chest_xrays(mixed_folder.root, image_size=20, seed=5)
    again = data.load_images([mixed_folder.root / mixed_folder.images[0]], image_size=20)
    assert len(calls) == len(mixed_folder.images)  # nothing decoded twice
    assert np.array_equal(first.test.images, second.test.images)
    assert again.shape == (1, 20, 20, 3)
    # Another size or colour mode is another conversion, decoded once more.
    data.load_images(
        [mixed_folder.root / mixed_folder.images[0]], image_size=20, color_mode="grayscale"
    )
    assert len(calls) == len(mixed_folder.images) + 1
    data.clear_decoded_cache(disk=True)
    data.load_images([mixed_folder.root / mixed_folder.images[0]], image_size=20)
    assert len(calls) == len(mixed_folder.images) + 2


def test_a_changed_file_is_decoded_again(tmp_path):
    path = save_image(tmp_path / "x.png", Image.fromarray(np.full((6, 6), 10, np.uint8)))
    assert (data.load_images([path], image_size=6) == 10).all()
    save_image(path, Image.fromarray(np.full((6, 9), 200, np.uint8)))  # other size and content
    assert (data.load_images([path], image_size=6) == 200).all()


def test_load_images_keeps_the_given_order(xray_folder):
    paths = [xray_folder.root / p for p in xray_folder.images[:6]]
    forward = data.load_images(paths, image_size=16)
    backward = data.load_images(paths[::-1], image_size=16, workers=2)
    assert np.array_equal(forward, backward[::-1])
    assert len({forward[i].tobytes() for i in range(6)}) == 6  # the images do differ


@pytest.fixture
def disk_cache(tmp_path, monkeypatch):
    """An empty disk cache of its own, at the default cap, and an empty memory cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", str(folder))
    monkeypatch.delenv(data.CACHE_BYTES_VARIABLE, raising=False)
    data.clear_decoded_cache()
    yield folder
    data.clear_decoded_cache()


def test_disk_cache_serves_a_later_process_without_decoding(make_xrays, disk_cache, monkeypatch):
    folder = make_xrays()
    first = data.load_chest_xrays(folder.root, image_size=16, seed=0)
    # one entry of decoded images per split's file list, and the person-aware split
    assert len([p for p in disk_cache.glob("*.npy") if not p.name.startswith("split-")]) == 3
    assert len(list(disk_cache.glob("split-*.npy"))) == 1
    data.clear_decoded_cache()  # what a new process starts with
    calls = _count_decodes(monkeypatch)
    second = data.load_chest_xrays(folder.root, image_size=16, seed=0)
    assert calls == []
    for name in ("train", "val", "test"):
        assert np.array_equal(first[name].images, second[name].images)


@pytest.mark.parametrize("change", ["rewrite", "add", "remove"])
def test_a_changed_added_or_removed_file_invalidates_the_disk_cache(
    make_xrays, disk_cache, monkeypatch, change
):
    folder = make_xrays()
    data.load_chest_xrays(folder.root, image_size=16, seed=0)
    target = folder.root / "test" / "NORMAL" / "IM-0500-0001.jpeg"
    if change == "rewrite":
        save_image(target, Image.new("RGB", (30, 30), (255, 255, 255)))
        os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    elif change == "add":
        save_image(
            folder.root / "test" / "NORMAL" / "IM-0600-0001.jpeg", Image.new("RGB", (30, 30), 0)
        )
    else:
        target.unlink()
    data.clear_decoded_cache()
    calls = _count_decodes(monkeypatch)
    xrays = data.load_chest_xrays(folder.root, image_size=16, seed=0)
    assert calls  # the test split's list changed: decoded again, not read from the old entry
    if change == "rewrite":
        row = xrays.test.paths.index("test/NORMAL/IM-0500-0001.jpeg")
        assert (xrays.test.images[row] == 255).all()
    assert (
        len(xrays.test)
        == len(folder.images_of("test")) + {"rewrite": 0, "add": 1, "remove": -1}[change]
    )


def test_disk_cache_keys_on_size_and_colour_mode(make_xrays, disk_cache, monkeypatch):
    folder = make_xrays()
    paths = [folder.root / p for p in folder.images_of("test")]
    rgb16 = data.load_images(paths, image_size=16)
    gray16 = data.load_images(paths, image_size=16, color_mode="grayscale")
    rgb8 = data.load_images(paths, image_size=8)
    assert (rgb16.shape, gray16.shape, rgb8.shape) == (
        (16, 16, 16, 3),
        (16, 16, 16, 1),
        (16, 8, 8, 3),
    )
    assert len(list(disk_cache.glob("*.npy"))) == 3


def test_a_damaged_cache_entry_is_decoded_again(make_xrays, disk_cache, monkeypatch):
    folder = make_xrays()
    paths = [folder.root / p for p in folder.images_of("test")]
    expected = data.load_images(paths, image_size=16)
    (entry,) = disk_cache.glob("*.npy")
    entry.write_bytes(entry.read_bytes()[:100])  # a truncated write from a killed process
    data.clear_decoded_cache()
    calls = _count_decodes(monkeypatch)
    assert np.array_equal(data.load_images(paths, image_size=16), expected)
    assert len(calls) == len(paths)


def test_cache_can_be_switched_off_and_an_unwritable_folder_only_warns(
    make_xrays, tmp_path, monkeypatch
):
    folder = make_xrays()
    paths = [folder.root / p for p in folder.images_of("test")]
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", "off")
    assert data.decoded_cache_dir() is None
    data.clear_decoded_cache()
    data.load_images(paths, image_size=16)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", str(blocker / "cache"))
    data.clear_decoded_cache()
    with pytest.warns(data.DataWarning, match="could not write the decoded-image cache"):
        images = data.load_images(paths, image_size=16)
    assert images.shape == (16, 16, 16, 3)


def test_files_fingerprint_depends_on_order_and_identity():
    a, b = ("x", 1, 2, 16, "rgb"), ("y", 1, 2, 16, "rgb")
    assert data.files_fingerprint([a, b]) == data.files_fingerprint([a, b])
    assert data.files_fingerprint([a, b]) != data.files_fingerprint([b, a])
    assert data.files_fingerprint([a]) != data.files_fingerprint([("x", 1, 3, 16, "rgb")])


# ---------------------------------------------------------------------------------------
# What a book build loads, and the cap on the disk cache's bytes
# ---------------------------------------------------------------------------------------

#: (image size, colour mode) of every load of a default build (chapters at 128 px RGB,
#: model_6 at 128 px grayscale, its ablation at 48 px in both modes and 1.5 x 48 = 72 px,
#: model_7's search at 1.25 x 128 = 160 px) and of the CI-sized build (32 px, ablation at
#: 16 px and 24 px, model_7 at 40 px).
DEFAULT_BUILD_LOADS = (
    (128, "rgb"),
    (128, "grayscale"),
    (48, "grayscale"),
    (48, "rgb"),
    (72, "grayscale"),
    (160, "rgb"),
)
CI_BUILD_LOADS = (
    (32, "rgb"),
    (32, "grayscale"),
    (16, "grayscale"),
    (16, "rgb"),
    (24, "grayscale"),
    (40, "rgb"),
)
NPY_HEADER_BYTES = 128  # np.save's header for these shapes (checked below)


def test_every_size_and_mode_the_book_loads_is_decoded_once_then_read_from_disk(
    make_xrays, disk_cache
):
    folder = make_xrays(test_per_class=2)
    loads = sorted(set(DEFAULT_BUILD_LOADS + CI_BUILD_LOADS))
    before = data.decode_count()
    first = {
        key: data.load_chest_xrays(folder.root, image_size=key[0], color_mode=key[1], seed=0)
        for key in loads
    }
    assert data.decode_count() - before == len(loads) * len(
        folder.images
    )  # each image once per size and mode
    # A fresh in-memory cache: what the next chapter's process starts with.
    data.clear_decoded_cache()
    before = data.decode_count()
    for (size, mode), expected in first.items():
        again = data.load_chest_xrays(folder.root, image_size=size, color_mode=mode, seed=0)
        for name in ("train", "val", "test"):
            assert np.array_equal(again[name].images, expected[name].images)
    assert data.decode_count() == before  # nothing decoded: every split came from the disk cache
    assert len([p for p in disk_cache.glob("*.npy") if not p.name.startswith("split-")]) == 3 * len(
        loads
    )


def test_the_default_cap_holds_a_default_and_a_ci_build_of_the_data_set():
    n_images = sum(len(data.list_split(None, split)) for split in ("train", "val", "test"))
    assert n_images == 5856

    def build_bytes(loads):
        # three entries (train, val, test) per load, together holding every image once
        return sum(
            n_images * size * size * (3 if mode == "rgb" else 1) + 3 * NPY_HEADER_BYTES
            for size, mode in loads
        )

    default_build = build_bytes(DEFAULT_BUILD_LOADS)
    both = build_bytes(sorted(set(DEFAULT_BUILD_LOADS + CI_BUILD_LOADS)))
    assert 5856 * 128 * 128 * 3 == 287_834_112  # the largest load: 288 MB
    assert default_build == 917_846_016 + 18 * NPY_HEADER_BYTES  # 918 MB
    assert 4 * both < data.DEFAULT_CACHE_BYTES == 4 * 1024**3
    assert data.DEFAULT_CACHE_BYTES // 2**30 == 4


def test_npy_header_is_128_bytes_for_cache_entries(tmp_path):
    from helpers.data.cache import _write_disk_cache

    entry = tmp_path / "x.npy"
    _write_disk_cache(entry, np.zeros((7, 128, 128, 3), np.uint8))
    assert entry.stat().st_size == 7 * 128 * 128 * 3 + NPY_HEADER_BYTES


def _entry_of(disk_cache, before: set) -> Path:
    (new,) = set(disk_cache.glob("*.npy")) - before
    return new


def _age(path: Path, seconds: int) -> None:
    """Make ``path`` look used ``seconds`` ago (file times are too coarse to order quick writes)."""
    stamp = path.stat().st_mtime_ns - seconds * 10**9
    os.utime(path, ns=(stamp, stamp))


def test_disk_cache_evicts_least_recently_used_entries_beyond_the_byte_cap(
    make_xrays, disk_cache, monkeypatch
):
    folder = make_xrays()
    paths = [folder.root / p for p in folder.images_of("test")]  # 16 images
    lists = [paths[0:4], paths[4:8], paths[8:12], paths[12:16]]
    entry_bytes = 4 * 8 * 8 * 3 + NPY_HEADER_BYTES  # four 8 x 8 RGB images
    monkeypatch.setenv(data.CACHE_BYTES_VARIABLE, str(2 * entry_bytes))
    entries = []
    for age, files in zip((300, 200, 100), lists[:3]):
        before = set(disk_cache.glob("*.npy"))
        data.load_images(files, image_size=8)
        entries.append(_entry_of(disk_cache, before))
        assert entries[-1].stat().st_size == entry_bytes
        _age(entries[-1], age)
    # The third entry took the folder over two entries' bytes: the oldest went.
    assert sorted(disk_cache.glob("*.npy")) == sorted(entries[1:3])
    # Reading the second entry back (a fresh process) makes it the most recently used ...
    data.clear_decoded_cache()
    before_count = data.decode_count()
    data.load_images(lists[1], image_size=8)
    assert data.decode_count() == before_count
    # ... so the next new entry evicts the third, not the second.
    before = set(disk_cache.glob("*.npy"))
    data.load_images(lists[3], image_size=8)
    fourth = _entry_of(disk_cache, before)
    assert sorted(disk_cache.glob("*.npy")) == sorted([entries[1], fourth])
    assert sum(p.stat().st_size for p in disk_cache.glob("*.npy")) == 2 * entry_bytes


def test_an_entry_larger_than_the_cap_is_kept_and_everything_else_goes(
    make_xrays, disk_cache, monkeypatch
):
    folder = make_xrays()
    paths = [folder.root / p for p in folder.images_of("test")]
    data.load_images(paths[:4], image_size=8)
    data.load_images(paths[4:8], image_size=8)
    assert len(list(disk_cache.glob("*.npy"))) == 2  # the default cap keeps both
    monkeypatch.setenv(data.CACHE_BYTES_VARIABLE, "0")
    before = set(disk_cache.glob("*.npy"))
    expected = data.load_images(paths[8:16], image_size=8)
    just_written = _entry_of(disk_cache, before)
    assert list(disk_cache.glob("*.npy")) == [just_written]  # never the file just written
    assert np.array_equal(np.load(just_written), expected)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1000", 1000),
        ("0", 0),
        ("512M", 512 * 1024**2),
        ("4GiB", 4 * 1024**3),
        (" 7 kb ", 7 * 1024),
        ("2T", 2 * 1024**4),
    ],
)
def test_cache_bytes_variable_sets_the_cap(monkeypatch, value, expected):
    monkeypatch.setenv(data.CACHE_BYTES_VARIABLE, value)
    assert data.decoded_cache_bytes() == expected
    monkeypatch.delenv(data.CACHE_BYTES_VARIABLE)
    assert data.decoded_cache_bytes() == data.DEFAULT_CACHE_BYTES


@pytest.mark.parametrize("value", ["", "lots", "-1", "1.5G", "4 GB of disk", "12X"])
def test_a_bad_cache_bytes_value_fails_naming_the_variable_before_any_decoding(
    make_xrays, disk_cache, monkeypatch, value
):
    folder = make_xrays()
    paths = [folder.root / p for p in folder.images_of("test")]
    monkeypatch.setenv(data.CACHE_BYTES_VARIABLE, value)
    before = data.decode_count()
    with pytest.raises(
        ValueError, match="CHEST_XRAY_CACHE_BYTES must be a whole number of bytes"
    ) as info:
        data.load_images(paths, image_size=8)
    assert repr(value) in str(info.value)
    assert data.decode_count() == before
    assert not disk_cache.exists() or not list(disk_cache.iterdir())


@pytest.mark.parametrize("damage", ["truncated", "empty", "other shape", "not an array"])
def test_a_damaged_cache_entry_is_ignored_and_rewritten(make_xrays, disk_cache, damage):
    folder = make_xrays()
    paths = [folder.root / p for p in folder.images_of("test")]
    expected = data.load_images(paths, image_size=16)
    (entry,) = disk_cache.glob("*.npy")
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:100])  # a write cut short by a killed process
    elif damage == "empty":
        entry.write_bytes(b"")
    elif damage == "other shape":
        np.save(entry, np.zeros((3, 16, 16, 3), np.uint8))
    else:
        entry.write_text("not an array")
    data.clear_decoded_cache()
    before = data.decode_count()
    assert np.array_equal(data.load_images(paths, image_size=16), expected)
    assert data.decode_count() - before == len(paths)  # the damaged entry was not used
    assert np.array_equal(np.load(entry), expected)  # and is whole again
    data.clear_decoded_cache()
    before = data.decode_count()
    assert np.array_equal(data.load_images(paths, image_size=16), expected)
    assert data.decode_count() == before  # the next process reads it
