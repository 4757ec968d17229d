"""Tests of helpers.leaks: images shared between the official folders (same file or picture)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REAL_DATA_DIR, save_image, xray_array
from PIL import Image

from helpers import config, data, leaks
from helpers.data import DataError, DataWarning

SIZE = 224  # the embedded data's size: copies are made from it by resizing


# ---------------------------------------------------------------------------------------
# Generated folders
# ---------------------------------------------------------------------------------------


def textured_xray(seed: int) -> Image.Image:
    """A grayscale X-ray-like picture: a smooth body plus a coarse random texture.

    The texture (12 x 12 random values, enlarged) gives every seed its own low-frequency
    content, which is what the perceptual hash sees; smooth gradients alone look alike.
    """
    rng = np.random.default_rng(seed)
    body = xray_array(rng, size=(SIZE, SIZE), level=110, rgb=False).astype(np.float64)
    coarse = Image.fromarray(rng.uniform(0, 255, size=(12, 12)).astype(np.uint8), "L")
    texture = np.asarray(coarse.resize((SIZE, SIZE), Image.Resampling.BICUBIC), dtype=np.float64)
    return Image.fromarray(np.clip(0.5 * body + 0.6 * texture, 0, 255).astype(np.uint8), "L")


#: A clean folder: every image its own picture, no file name in two folders.
CLEAN_FILES = {
    "train/NORMAL": ["IM-0101-0001.jpeg", "IM-0102-0001.jpeg", "IM-0200-0001.jpeg"],
    "train/PNEUMONIA": [
        "person1_bacteria_1.jpeg",
        "person1_bacteria_2.jpeg",
        "person2_virus_3.jpeg",
    ],
    "val/NORMAL": ["NORMAL2-IM-0900-0001.jpeg"],
    "val/PNEUMONIA": ["person900_bacteria_1.jpeg"],
    "test/NORMAL": ["IM-0500-0001.jpeg", "IM-0501-0001.jpeg"],
    "test/PNEUMONIA": ["person500_virus_1.jpeg", "person2_virus_9.jpeg"],
}


def make_clean_folder(root: Path) -> Path:
    seed = 0
    for sub, names in CLEAN_FILES.items():
        for name in names:
            seed += 1
            save_image(root / sub / name, textured_xray(seed))
    return root


def copy_resized(source: Path, target: Path, *, size: int, quality: int) -> None:
    """Copy an image under another name, resized and re-encoded as JPEG at ``quality``."""
    with Image.open(source) as img:
        smaller = img.convert("L").resize((size, size), Image.Resampling.BICUBIC)
    target.parent.mkdir(parents=True, exist_ok=True)
    smaller.save(target, format="JPEG", quality=quality)


def copy_as_png(source: Path, target: Path) -> None:
    with Image.open(source) as img:
        img.load()
        save_image(target, img)


#: The leaks planted by :func:`make_leaky_folder`: (path_a, path_b) -> reason.
PLANTED = {
    ("train/NORMAL/IM-0777-0001.jpeg", "test/NORMAL/IM-0500-0001.jpeg"): "same picture",
    (
        "train/PNEUMONIA/person77_bacteria_5.png",
        "test/PNEUMONIA/person500_virus_1.jpeg",
    ): "same picture",
    ("val/NORMAL/NORMAL2-IM-0901-0001.jpeg", "test/NORMAL/IM-0501-0001.jpeg"): "same picture",
    ("train/NORMAL/IM-0200-0001.jpeg", "test/NORMAL/IM-0200-0001.jpeg"): "same file name",
}


def make_leaky_folder(root: Path) -> Path:
    """The clean folder plus the leaks of :data:`PLANTED`."""
    make_clean_folder(root)
    # A test image copied into train under another name, 224 -> 160 px, JPEG quality 70
    # (the originals are saved at quality 95).
    copy_resized(
        root / "test/NORMAL/IM-0500-0001.jpeg",
        root / "train/NORMAL/IM-0777-0001.jpeg",
        size=160,
        quality=70,
    )
    copy_as_png(
        root / "test/PNEUMONIA/person500_virus_1.jpeg",
        root / "train/PNEUMONIA/person77_bacteria_5.png",
    )
    copy_resized(
        root / "test/NORMAL/IM-0501-0001.jpeg",
        root / "val/NORMAL/NORMAL2-IM-0901-0001.jpeg",
        size=200,
        quality=85,
    )
    # Same file name, another picture.
    save_image(root / "test/NORMAL/IM-0200-0001.jpeg", textured_xray(1000))
    return root


@pytest.fixture
def clean(tmp_path) -> Path:
    return make_clean_folder(tmp_path / "clean")


@pytest.fixture
def leaky(tmp_path) -> Path:
    return make_leaky_folder(tmp_path / "leaky")


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hash-cache"


@pytest.fixture
def count_hashes(monkeypatch):
    """Spy on leaks.image_hash: returns the list of paths it was called with."""
    calls: list[Path] = []
    real = leaks.image_hash

    def spy(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(leaks, "image_hash", spy)
    return calls


# ---------------------------------------------------------------------------------------
# Hashes and distances
# ---------------------------------------------------------------------------------------


def test_hamming_distances_count_differing_bits():
    zero = np.zeros((1, 32), dtype=np.uint8)
    ones = np.full((1, 32), 255, dtype=np.uint8)
    one_bit_each_word = zero.copy()
    one_bit_each_word[0, [0, 8, 16, 24]] = 1  # one bit in each of the four uint64 words
    mixed = zero.copy()
    mixed[0, 5] = 0b1011_0001  # 4 bits
    mixed[0, 31] = 0b1000_0000  # 1 bit
    b = np.concatenate([zero, ones, one_bit_each_word, mixed])
    assert leaks.hamming_distances(zero, b).tolist() == [[0, 256, 4, 5]]
    assert leaks.hamming_distances(ones, mixed).tolist() == [[251]]
    distances = leaks.hamming_distances(b, b)
    assert np.array_equal(distances, distances.T) and not np.diag(distances).any()


def test_hamming_distances_match_a_bit_by_bit_count():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, size=(7, 32), dtype=np.uint8)
    b = rng.integers(0, 256, size=(5, 32), dtype=np.uint8)
    expected = (np.unpackbits(a, axis=1)[:, None, :] != np.unpackbits(b, axis=1)[None, :, :]).sum(
        -1
    )
    assert np.array_equal(leaks.hamming_distances(a, b), expected)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.zeros((1, 32), np.int64), np.zeros((1, 32), np.uint8), "hashes_a must be a 2-D uint8"),
        (np.zeros(32, np.uint8), np.zeros((1, 32), np.uint8), "hashes_a must be a 2-D uint8"),
        (
            np.zeros((1, 32), np.uint8),
            np.zeros((1, 30), np.uint8),
            "hashes_b must be .* multiple of 8",
        ),
        (np.zeros((1, 32), np.uint8), np.zeros((1, 16), np.uint8), "different lengths"),
    ],
)
def test_hamming_distances_reject_bad_arrays(a, b, match):
    with pytest.raises(ValueError, match=match):
        leaks.hamming_distances(a, b)


def test_image_hash_survives_resizing_and_reencoding_but_tells_pictures_apart(tmp_path):
    original = save_image(tmp_path / "a.jpeg", textured_xray(1))
    copy_resized(original, tmp_path / "small.jpeg", size=160, quality=60)
    copy_resized(original, tmp_path / "large.jpeg", size=300, quality=40)
    copy_as_png(original, tmp_path / "copy.png")
    save_image(tmp_path / "b.jpeg", textured_xray(2))
    hashes = np.stack(
        [
            leaks.image_hash(tmp_path / n)
            for n in ("a.jpeg", "small.jpeg", "large.jpeg", "copy.png", "b.jpeg")
        ]
    )
    assert hashes.shape == (5, leaks.HASH_BYTES) and hashes.dtype == np.uint8
    d = leaks.hamming_distances(hashes[:1], hashes)[0]
    assert d[3] == 0  # the PNG holds the very pixels the JPEG decodes to
    assert d[1] <= leaks.MAX_DISTANCE and d[2] <= leaks.MAX_DISTANCE
    assert d[4] > 2 * leaks.MAX_DISTANCE  # distinct random textures: about half the bits


def test_image_hash_names_a_corrupt_file(tmp_path):
    bad = tmp_path / "broken.jpeg"
    bad.write_bytes(b"\xff\xd8\xff not really a JPEG")
    with pytest.raises(DataError, match="broken.jpeg"):
        leaks.image_hash(bad)


# ---------------------------------------------------------------------------------------
# Pairs across folders
# ---------------------------------------------------------------------------------------


def test_planted_copies_and_names_are_found_and_nothing_else(leaky, cache):
    pairs = leaks.find_shared_images(leaky, cache_dir=cache)
    assert list(pairs.columns) == [
        "path_a",
        "split_a",
        "path_b",
        "split_b",
        "reason",
        "distance",
        "same_name",
    ]
    found = {
        (a, b): reason
        for a, b, reason in pairs[["path_a", "path_b", "reason"]].itertuples(index=False)
    }
    assert found == PLANTED
    assert (pairs["split_a"] == pairs["path_a"].str.split("/").str[0]).all()
    assert (pairs["split_b"] == pairs["path_b"].str.split("/").str[0]).all()
    # Sorted by folder pair: train-val (none), train-test, val-test; then by path.
    assert pairs["split_a"].tolist() == ["train", "train", "train", "val"]
    assert pairs["path_a"].tolist()[:3] == sorted(pairs["path_a"].tolist()[:3])
    by_reason = pairs.set_index("reason")
    assert (by_reason.loc["same picture", "distance"] <= leaks.MAX_DISTANCE).all()
    assert int(by_reason.loc["same file name", "distance"]) > leaks.MAX_DISTANCE
    assert pairs["same_name"].tolist() == [True, False, False, False]  # IM-0200 first by path
    assert pairs.attrs["data_dir"] == str(leaky.resolve())
    assert pairs.attrs["max_distance"] == leaks.MAX_DISTANCE


def test_the_archive_s_nested_layout_is_found_and_paths_are_relative_to_it(tmp_path, cache):
    inner = make_leaky_folder(tmp_path / "download" / "chest_xray" / "chest_xray")
    (tmp_path / "download" / "__MACOSX").mkdir()
    pairs = leaks.find_shared_images(tmp_path / "download", cache_dir=cache)
    assert set(zip(pairs["path_a"], pairs["path_b"])) == set(PLANTED)
    assert pairs.attrs["data_dir"] == str(inner.resolve())


def test_a_pair_with_the_same_name_and_picture_is_one_same_picture_row(clean, cache):
    copy_resized(
        clean / "test/NORMAL/IM-0501-0001.jpeg",
        clean / "train/NORMAL/IM-0501-0001.jpeg",
        size=180,
        quality=80,
    )
    pairs = leaks.find_shared_images(clean, cache_dir=cache)
    assert len(pairs) == 1
    row = pairs.iloc[0]
    assert (row["path_a"], row["path_b"]) == (
        "train/NORMAL/IM-0501-0001.jpeg",
        "test/NORMAL/IM-0501-0001.jpeg",
    )
    assert row["reason"] == "same picture" and bool(row["same_name"])


def test_file_names_are_compared_case_insensitively(clean, cache):
    copy_as_png(
        clean / "train/NORMAL/IM-0101-0001.jpeg", clean / "val/PNEUMONIA/x.png"
    )  # same picture
    save_image(clean / "val/NORMAL/im-0102-0001.JPEG", textured_xray(2000))  # same name only
    pairs = leaks.find_shared_images(clean, cache_dir=cache)
    assert pairs[["path_a", "path_b", "reason"]].values.tolist() == [  # sorted by path_a
        ["train/NORMAL/IM-0101-0001.jpeg", "val/PNEUMONIA/x.png", "same picture"],
        ["train/NORMAL/IM-0102-0001.jpeg", "val/NORMAL/im-0102-0001.JPEG", "same file name"],
    ]


def test_distinct_pictures_are_not_flagged(clean, cache):
    pairs = leaks.find_shared_images(clean, cache_dir=cache)
    assert pairs.empty and list(pairs.columns)[:4] == ["path_a", "split_a", "path_b", "split_b"]
    nearest = leaks.nearest_distances(clean, cache_dir=cache)
    assert nearest.groupby("folders", sort=False).size().to_dict() == {
        "train-val": 2,
        "train-test": 4,
        "val-test": 4,
    }
    assert (nearest["distance"] > 2 * leaks.MAX_DISTANCE).all()


def test_max_distance_is_the_hamming_threshold(leaky, cache):
    pairs = leaks.find_shared_images(leaky, cache_dir=cache)
    resized = pairs.loc[pairs["path_a"] == "train/NORMAL/IM-0777-0001.jpeg", "distance"].item()
    assert resized > 0  # JPEG at another size and quality: close, not equal
    # At a threshold just below its distance the resized copy is no longer reported; the
    # byte-for-byte PNG copy (distance 0) still is, even at max_distance 0.
    stricter = leaks.find_shared_images(leaky, max_distance=resized - 1, cache_dir=cache)
    assert "train/NORMAL/IM-0777-0001.jpeg" not in set(stricter["path_a"])
    exact = leaks.find_shared_images(leaky, max_distance=0, cache_dir=cache)
    assert ("train/PNEUMONIA/person77_bacteria_5.png", "same picture") in set(
        zip(exact["path_a"], exact["reason"])
    )


def test_nearest_distances_point_at_the_planted_copies(leaky, cache):
    nearest = leaks.nearest_distances(leaky, cache_dir=cache).set_index("path")
    train_test = nearest[nearest["folders"] == "train-test"]
    assert (
        train_test.loc["test/NORMAL/IM-0500-0001.jpeg", "nearest_path"]
        == "train/NORMAL/IM-0777-0001.jpeg"
    )
    assert train_test.loc["test/PNEUMONIA/person500_virus_1.jpeg", "distance"] == 0


def test_shared_counts_count_pairs_and_images_per_folder_pair():
    pairs = pd.DataFrame(
        [
            ("train/NORMAL/a.jpeg", "train", "test/NORMAL/x.jpeg", "test", "same picture"),
            ("train/NORMAL/b.jpeg", "train", "test/NORMAL/x.jpeg", "test", "same picture"),
            ("train/NORMAL/c.jpeg", "train", "test/NORMAL/c.jpeg", "test", "same file name"),
            ("val/NORMAL/d.jpeg", "val", "test/PNEUMONIA/y.jpeg", "test", "same picture"),
        ],
        columns=["path_a", "split_a", "path_b", "split_b", "reason"],
    )
    counts = leaks.shared_counts(pairs)
    assert counts.index.tolist() == ["train-val", "train-test", "val-test"]
    assert counts.loc["train-test"].to_dict() == {
        "same picture": 2,
        "same file name": 1,
        "pairs": 3,
        "images_a": 3,
        "images_b": 2,
    }
    assert counts.loc["val-test", "pairs"] == 1 and counts.loc["train-val"].sum() == 0


@pytest.mark.parametrize(
    "pairs, match",
    [
        ([("a", "train", "b", "test", "same picture")], "must be the table"),
        (pd.DataFrame({"path_a": ["a"]}), r"lacks the columns \['split_a'"),
        (
            pd.DataFrame(
                [("a", "train", "b", "test", "similar")],
                columns=["path_a", "split_a", "path_b", "split_b", "reason"],
            ),
            "unknown reasons",
        ),
        (
            pd.DataFrame(
                [("a", "test", "b", "train", "same picture")],
                columns=["path_a", "split_a", "path_b", "split_b", "reason"],
            ),
            "folder pairs",
        ),
    ],
)
def test_shared_counts_rejects_other_tables(pairs, match):
    with pytest.raises(ValueError, match=match):
        leaks.shared_counts(pairs)


# ---------------------------------------------------------------------------------------
# check_leaks
# ---------------------------------------------------------------------------------------


def test_check_leaks_warns_with_the_count_and_three_examples(leaky, cache):
    with pytest.warns(leaks.LeakWarning) as caught:
        pairs = leaks.check_leaks(leaky, cache_dir=cache)
    assert len(pairs) == 4 and len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("4 pair(s) of images are shared")
    assert (
        str(leaky.resolve()) in message and "train-test: 3" in message and "val-test: 1" in message
    )
    examples = message.split("for example ")[1]
    assert examples.count(" and ") == 3  # three examples, the same pictures first
    assert (
        "train/PNEUMONIA/person77_bacteria_5.png and test/PNEUMONIA/person500_virus_1.jpeg "
        "(same picture, 0 bits apart)" in examples
    )
    assert "same file name" not in examples


def test_check_leaks_stop_raises_a_data_leak_error(leaky, cache):
    with pytest.raises(
        leaks.DataLeakError, match=r"4 pair\(s\).*person77_bacteria_5.png"
    ) as caught:
        leaks.check_leaks(leaky, on_leak="stop", cache_dir=cache)
    assert isinstance(caught.value, ValueError)


def test_check_leaks_ignore_and_clean_folders_say_nothing(leaky, clean, cache):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(leaks.check_leaks(leaky, on_leak="ignore", cache_dir=cache)) == 4
        for on_leak in config.ON_LEAK:
            assert leaks.check_leaks(clean, on_leak=on_leak, cache_dir=cache).empty


@pytest.mark.parametrize("on_leak", ["raise", "WARN", None, 1])
def test_check_leaks_rejects_unknown_policies_before_reading_anything(tmp_path, on_leak):
    # The folder does not exist: the policy is checked first.
    with pytest.raises(ValueError, match=r"on_leak must be one of \['warn', 'stop', 'ignore'\]"):
        leaks.check_leaks(tmp_path / "nowhere", on_leak=on_leak)


def test_leak_classes():
    assert issubclass(leaks.LeakWarning, UserWarning)
    assert issubclass(leaks.DataLeakError, ValueError)
    assert config.ON_LEAK == ("warn", "stop", "ignore")


# ---------------------------------------------------------------------------------------
# The hash cache
# ---------------------------------------------------------------------------------------


def test_the_cache_is_reused_and_only_changed_files_are_hashed_again(leaky, cache, count_hashes):
    n_images = sum(1 for p in leaky.rglob("*") if p.is_file())
    first = leaks.find_shared_images(leaky, cache_dir=cache)
    assert len(count_hashes) == n_images
    assert [p.name for p in cache.iterdir()] == [
        p.name for p in cache.glob("*.npz")
    ]  # no temp file left
    assert len(list(cache.iterdir())) == 1

    count_hashes.clear()
    decoded_before = data.decode_count()
    second = leaks.find_shared_images(leaky, cache_dir=cache)
    assert count_hashes == [] and data.decode_count() == decoded_before
    pd.testing.assert_frame_equal(first, second)

    # A rewritten file (new size and time) and an added file are hashed; nothing else.
    changed = leaky / "val/NORMAL/NORMAL2-IM-0901-0001.jpeg"
    save_image(changed, textured_xray(3000))
    os.utime(changed, ns=(1, 1))  # another modification time, whatever the clock says
    save_image(leaky / "test/NORMAL/IM-0502-0001.jpeg", textured_xray(3001))
    third = leaks.find_shared_images(leaky, cache_dir=cache)
    assert sorted(p.name for p in count_hashes) == [
        "IM-0502-0001.jpeg",
        "NORMAL2-IM-0901-0001.jpeg",
    ]
    assert "val/NORMAL/NORMAL2-IM-0901-0001.jpeg" not in set(third["path_a"])  # no longer a copy


def test_cached_hashes_equal_fresh_ones(leaky, cache, tmp_path):
    files, fresh = leaks.image_hashes(leaky, cache_dir=tmp_path / "one")
    _, again = leaks.image_hashes(leaky, cache_dir=tmp_path / "one")
    _, one_thread = leaks.image_hashes(leaky, cache_dir=tmp_path / "two", workers=1)
    assert np.array_equal(fresh, again) and np.array_equal(fresh, one_thread)
    expected = np.stack([leaks.image_hash(leaky / p) for p in files["path"]])
    assert np.array_equal(fresh, expected)
    assert files["split"].tolist() == sorted(files["split"], key=config.OFFICIAL_SPLITS.index)


def test_a_damaged_cache_file_is_hashed_again_and_replaced(leaky, cache, count_hashes):
    first = leaks.find_shared_images(leaky, cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    cache_file.write_bytes(b"PK\x03\x04 half a zip file")
    count_hashes.clear()
    second = leaks.find_shared_images(leaky, cache_dir=cache)
    assert len(count_hashes) > 0
    pd.testing.assert_frame_equal(first, second)
    count_hashes.clear()
    leaks.find_shared_images(leaky, cache_dir=cache)
    assert count_hashes == []


def test_an_unwritable_cache_warns_and_the_result_stands(leaky, tmp_path):
    blocked = tmp_path / "a-file-not-a-folder"
    blocked.write_text("in the way")
    with pytest.warns(
        DataWarning, match="could not write the image-hash cache .*a-file-not-a-folder"
    ):
        pairs = leaks.find_shared_images(leaky, cache_dir=blocked)
    assert len(pairs) == 4


def test_the_cache_folder_follows_the_decoded_cache_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("CHEST_XRAY_CACHE_DIR", raising=False)
    assert leaks.hash_cache_dir() == config.REPO_ROOT / "_build" / "cache" / "leaks"
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", str(tmp_path))
    assert leaks.hash_cache_dir() == tmp_path / "leaks"
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", "off")
    assert leaks.hash_cache_dir() is None


def test_with_the_cache_off_every_call_hashes_again(leaky, monkeypatch, tmp_path, count_hashes):
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", "off")
    assert len(leaks.find_shared_images(leaky)) == 4
    n = len(count_hashes)
    leaks.find_shared_images(leaky)
    assert len(count_hashes) == 2 * n


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


def test_a_missing_data_folder_is_named(tmp_path, cache):
    with pytest.raises(DataError, match="nowhere"):
        leaks.find_shared_images(tmp_path / "nowhere", cache_dir=cache)


def test_an_empty_class_folder_is_named(clean, cache):
    for file in (clean / "val" / "NORMAL").iterdir():
        file.unlink()
    with pytest.raises(DataError, match=r"class folder .*val.NORMAL holds no image"):
        leaks.check_leaks(clean, cache_dir=cache)


def test_a_missing_split_folder_is_named(clean, cache):
    shutil.rmtree(clean / "test")
    with pytest.raises(DataError, match=r"split folder .*clean.test is missing"):
        leaks.check_leaks(clean, cache_dir=cache)
    with pytest.raises(DataError, match=r"split folder .*clean.test is missing"):
        leaks.shared_person_numbers(clean)


def test_a_corrupt_image_is_named_and_no_cache_is_written(clean, cache):
    (clean / "test/NORMAL/IM-0503-0001.jpeg").write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(DataError, match="IM-0503-0001.jpeg"):
        leaks.find_shared_images(clean, cache_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.parametrize("max_distance", [-1, 256, 2.5, True, "26"])
def test_max_distance_out_of_range_is_named(clean, max_distance):
    with pytest.raises(
        ValueError, match="max_distance must be a whole number of bits from 0 to 255"
    ):
        leaks.find_shared_images(clean, max_distance=max_distance)


@pytest.mark.parametrize("workers", [0, -2, 1.5, True])
def test_workers_out_of_range_is_named(clean, workers):
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        leaks.image_hashes(clean, workers=workers)


# ---------------------------------------------------------------------------------------
# Person numbers
# ---------------------------------------------------------------------------------------


def test_shared_person_numbers_counts_images_per_folder(clean):
    # CLEAN_FILES: person2 in train (1 image) and test (1 image); person1, 500, 900 in one
    # folder each. Add person1 to val twice, and a NORMAL file named like a person (ignored).
    for k in (7, 8):
        save_image(clean / f"val/PNEUMONIA/person1_virus_{k}.jpeg", textured_xray(4000 + k))
    save_image(clean / "test/NORMAL/person900_x_1.jpeg", textured_xray(4100))
    persons = leaks.shared_person_numbers(clean)
    assert persons.index.name == "person"
    assert persons.index.tolist() == ["person1", "person2"]
    assert persons[["train", "val", "test"]].values.tolist() == [[2, 2, 0], [1, 0, 1]]
    assert persons["folders"].tolist() == ["train, val", "train, test"]


def test_shared_person_numbers_with_no_person_names(tmp_path):
    root = tmp_path / "plain"
    for i, sub in enumerate(CLEAN_FILES):
        save_image(root / sub / f"scan_{i}.jpeg", textured_xray(5000 + i))
    persons = leaks.shared_person_numbers(root)
    assert persons.empty and list(persons.columns) == ["train", "val", "test", "folders"]


@pytest.mark.skipif(not REAL_DATA_DIR.is_dir(), reason="the embedded data is not present")
def test_on_the_official_data_170_person_numbers_occur_in_train_and_test():
    persons = leaks.shared_person_numbers(REAL_DATA_DIR)
    assert len(persons) == 170
    assert set(persons["folders"]) == {"train, test"}
