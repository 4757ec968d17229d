"""Tests of helpers.data: file tables, the person-aware split, decoding, and bad input."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import JUNK_NAMES, PALETTE, REAL_DATA_DIR, image_of_mode, palette_image, save_image
from helpers import config, data
from helpers.data import DataError

# ---------------------------------------------------------------------------------------
# group_id and file names
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("person1003_bacteria_2934.jpeg", "person1003"),
        ("person12_virus_45.jpeg", "person12"),
        ("person0012_virus_45.jpeg", "person12"),  # leading zeros: same person
        ("PERSON7_bacteria_1.JPEG", "person7"),
        ("train/PNEUMONIA/person1000_virus_1681.jpeg", "person1000"),  # folders ignored
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("IM-0011-0001-0002.jpeg", "IM-0011"),
        ("im-0011-0002.png", "IM-0011"),
        ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
        ("normal2-im-1427-0002.jpeg", "NORMAL2-IM-1427"),
        ("scan_17.png", "scan_17"),  # anything else: its own group
    ],
)
def test_group_id_examples(name, expected):
    assert data.group_id(name) == expected


def test_images_of_one_study_or_person_share_a_group_and_others_do_not():
    assert data.group_id("IM-0115-0001.jpeg") == data.group_id("IM-0115-0002.jpeg")
    assert data.group_id("IM-0115-0001.jpeg") != data.group_id("NORMAL2-IM-0115-0001.jpeg")
    assert data.group_id("person1_bacteria_1.jpeg") == data.group_id("person1_virus_7.jpeg")
    assert data.group_id("person1_bacteria_1.jpeg") != data.group_id("person11_bacteria_1.jpeg")


@pytest.mark.parametrize(
    "name, kind",
    [("person1_bacteria_1.jpeg", "bacteria"), ("person1_virus_7.jpeg", "virus"), ("IM-0001-0001.jpeg", "")],
)
def test_pneumonia_kind(name, kind):
    assert data.pneumonia_kind(name) == kind


def test_class_weights_are_balanced():
    assert data.class_weights([0, 1, 1, 1]) == pytest.approx({0: 2.0, 1: 2 / 3})
    with pytest.raises(ValueError, match="both classes"):
        data.class_weights([1, 1, 1])


# ---------------------------------------------------------------------------------------
# The split on the real, embedded data set
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_split() -> pd.DataFrame:
    return data.split_table()


def test_default_data_dir_is_the_embedded_copy():
    assert REAL_DATA_DIR == config.REPO_ROOT / "data" / "chest_xray"
    assert data.check_data_dir() == REAL_DATA_DIR.resolve()


def test_real_split_never_puts_a_person_on_both_sides(real_split):
    train_groups = set(real_split.loc[real_split.split == "train", "group"])
    val_groups = set(real_split.loc[real_split.split == "val", "group"])
    assert train_groups and val_groups
    assert train_groups.isdisjoint(val_groups)


def test_real_split_holds_out_a_fifth_of_the_train_folder_keeping_class_ratios(real_split):
    from_train_folder = real_split[real_split.path.str.startswith("train/")]
    val_share = (from_train_folder.split == "val").mean()
    assert val_share == pytest.approx(config.VAL_FRACTION, abs=0.02)
    pneumonia = real_split.groupby("split").label.mean()
    assert abs(pneumonia["train"] - pneumonia["val"]) < 0.02
    # Within the train folder alone the stratification must hold as well.
    folder_share = from_train_folder.groupby("split").label.mean()
    assert abs(folder_share["train"] - folder_share["val"]) < 0.02


def test_real_split_test_side_is_the_official_test_folder_untouched(real_split):
    test = real_split[real_split.split == "test"]
    assert len(test) == 624
    on_disk = sorted(
        f"test/{c}/{name}"
        for c in config.CLASS_NAMES
        for name in os.listdir(REAL_DATA_DIR / "test" / c)
        if not name.startswith(".")
    )
    assert test.path.tolist() == on_disk
    assert not real_split[real_split.split != "test"].path.str.startswith("test/").any()
    assert test.label.tolist() == [int(p.startswith("test/PNEUMONIA/")) for p in on_disk]


def test_real_split_puts_the_16_official_val_images_on_the_val_side(real_split):
    official = real_split[real_split.path.str.startswith("val/")]
    assert len(official) == 16
    assert (official.split == "val").all()
    assert official.label.value_counts().to_dict() == {0: 8, 1: 8}


def test_real_split_covers_every_image_once_with_labels_from_the_folder(real_split):
    n_files = sum(
        1
        for s in config.OFFICIAL_SPLITS
        for c in config.CLASS_NAMES
        for name in os.listdir(REAL_DATA_DIR / s / c)
        if not name.startswith(".")
    )
    assert len(real_split) == n_files == 5856
    assert real_split.path.is_unique
    assert (real_split.label == real_split.path.str.contains("/PNEUMONIA/").astype(int)).all()
    assert list(real_split.columns) == ["path", "split", "label", "group"]
    # Sorted by split (train, val, test), then path.
    order = real_split.split.map({"train": 0, "val": 1, "test": 2})
    assert order.is_monotonic_increasing
    for _, rows in real_split.groupby("split"):
        assert rows.path.is_monotonic_increasing


def test_real_split_is_fixed_by_the_seed(real_split):
    again = data.split_table(seed=config.SEED)
    pd.testing.assert_frame_equal(real_split, again)
    other = data.split_table(seed=config.SEED + 1)
    assert set(other.path) == set(real_split.path)
    val_paths = set(real_split.loc[real_split.split == "val", "path"])
    assert set(other.loc[other.split == "val", "path"]) != val_paths
    # The test side never depends on the seed.
    assert other[other.split == "test"].path.tolist() == real_split[real_split.split == "test"].path.tolist()


def test_write_split_csv_writes_path_split_label_one_row_per_image(real_split, tmp_path):
    path = data.write_split_csv(real_split, tmp_path / "results")
    assert path == tmp_path / "results" / "split.csv"
    written = pd.read_csv(path)
    assert list(written.columns) == ["path", "split", "label"]
    assert len(written) == len(real_split)
    pd.testing.assert_frame_equal(written, real_split[["path", "split", "label"]])
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["split.csv"]  # no temp files


# ---------------------------------------------------------------------------------------
# person_aware_split on its own
# ---------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(5, 25).flatmap(
        lambda n_groups: st.tuples(
            st.just(n_groups),
            st.lists(
                st.tuples(st.integers(0, n_groups - 1), st.integers(0, 1)),
                min_size=n_groups,
                max_size=80,
            ),
        )
    ),
    st.integers(0, 2**31 - 1),
)
def test_person_aware_split_never_shares_a_group_for_any_seed(groups_and_rows, seed):
    n_groups, rows = groups_and_rows
    # Make sure every group occurs at least once, so there are n_groups distinct persons.
    rows = rows + [(g, g % 2) for g in range(n_groups)]
    groups = [f"person{g}" for g, _ in rows]
    labels = [label for _, label in rows]
    is_val = data.person_aware_split(labels, groups, seed=seed)
    assert is_val.dtype == bool and is_val.shape == (len(rows),)
    assert is_val.any() and not is_val.all()
    val_groups = {g for g, v in zip(groups, is_val) if v}
    train_groups = {g for g, v in zip(groups, is_val) if not v}
    assert val_groups.isdisjoint(train_groups)
    assert np.array_equal(is_val, data.person_aware_split(labels, groups, seed=seed))


def test_person_aware_split_is_cached_on_disk_by_everything_it_depends_on(tmp_path, monkeypatch):
    import sklearn.model_selection as ms

    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", str(tmp_path / "cache"))
    groups = [f"p{i // 2}" for i in range(40)]
    labels = [(i // 2) % 2 for i in range(40)]
    first = data.person_aware_split(labels, groups, seed=1)
    assert len(list((tmp_path / "cache").glob("split-*.npy"))) == 1
    calls = []
    real = ms.StratifiedGroupKFold

    class Counting(real):
        def split(self, *args, **kwargs):
            calls.append(self.random_state)
            return super().split(*args, **kwargs)

    monkeypatch.setattr(ms, "StratifiedGroupKFold", Counting)
    again = data.person_aware_split(labels, groups, seed=1)
    assert again.dtype == bool and np.array_equal(again, first) and calls == []  # read back
    data.person_aware_split(labels, groups, seed=2)  # another seed: computed
    data.person_aware_split(labels[::-1], groups, seed=1)  # other labels: computed
    assert calls == [2, 1]
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", "off")
    assert np.array_equal(data.person_aware_split(labels, groups, seed=1), first)
    assert calls == [2, 1, 1]


def test_person_aware_split_rejects_bad_arguments():
    groups = [f"p{i}" for i in range(10)]
    labels = [i % 2 for i in range(10)]
    with pytest.raises(ValueError, match="same length"):
        data.person_aware_split(labels[:-1], groups)
    with pytest.raises(ValueError, match="val_fraction"):
        data.person_aware_split(labels, groups, val_fraction=0.0)
    with pytest.raises(ValueError, match="val_fraction"):
        data.person_aware_split(labels, groups, val_fraction=0.7)
    with pytest.raises(ValueError, match="at least 5 distinct persons"):
        data.person_aware_split([0, 1, 0, 1], ["a", "a", "b", "c"])


# ---------------------------------------------------------------------------------------
# The loader on generated folders
# ---------------------------------------------------------------------------------------


def test_list_split_reads_every_flavour_and_skips_junk_silently(mixed_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # silently: no warning either
        table = data.list_split(mixed_folder.root, "train")
    assert table.path.tolist() == mixed_folder.images_of("train")
    assert list(table.columns) == ["path", "label", "group"]
    assert not any(Path(p).name in JUNK_NAMES for p in table.path)
    assert table.label.tolist() == [int("/PNEUMONIA/" in p) for p in table.path]
    with pytest.raises(ValueError, match="split must be one of"):
        data.list_split(mixed_folder.root, "training")


@pytest.mark.parametrize("color_mode, channels", [("rgb", 3), ("grayscale", 1)])
def test_load_chest_xrays_gives_requested_shape_dtype_and_channels(mixed_folder, tmp_path, color_mode, channels):
    xrays = data.load_chest_xrays(
        mixed_folder.root, image_size=24, color_mode=color_mode, seed=1, results_dir=tmp_path
    )
    assert xrays.image_size == 24 and xrays.color_mode == color_mode and xrays.seed == 1
    seen = []
    for name in ("train", "val", "test"):
        split = xrays[name]
        assert split.name == name
        assert split.images.dtype == np.uint8
        assert split.images.shape == (len(split), 24, 24, channels)
        assert split.labels.tolist() == [int("/PNEUMONIA/" in p) for p in split.paths]
        assert split.paths == sorted(split.paths)
        assert split.data_dir == mixed_folder.root.resolve()
        seen += split.paths
        for path, image in zip(split.paths, split.images):
            expected = data.decode_image(mixed_folder.root / path, image_size=24, color_mode=color_mode)
            assert np.array_equal(image, expected), path
    assert sorted(seen) == mixed_folder.images
    assert xrays.test.paths == mixed_folder.images_of("test")
    written = pd.read_csv(tmp_path / "split.csv")
    assert sorted(written.path) == mixed_folder.images
    with pytest.raises(KeyError):
        xrays["validation"]


def test_decode_image_odd_sizes_and_upper_case_extensions(mixed_folder):
    for rel in ("train/NORMAL/IM-0102-0001.PNG", "train/NORMAL/IM-0104-0001.JPEG", "train/PNEUMONIA/person4_virus_5.jpg"):
        for size in (1, 17, 64):
            img = data.decode_image(mixed_folder.root / rel, image_size=size)
            assert img.shape == (size, size, 3) and img.dtype == np.uint8


def test_grayscale_of_a_gray_rgb_image_equals_its_channel(tmp_path):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, size=(53, 37), dtype=np.uint8)
    path = save_image(tmp_path / "gray_rgb.png", Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB"))
    for size in (37, 16):
        as_gray = data.decode_image(path, image_size=size, color_mode="grayscale")
        as_rgb = data.decode_image(path, image_size=size, color_mode="rgb")
        assert as_gray.shape == (size, size, 1) and as_rgb.shape == (size, size, 3)
        for channel in range(3):
            assert np.array_equal(as_gray[..., 0], as_rgb[..., channel])


def test_grayscale_image_in_rgb_repeats_it_in_three_channels(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    path = save_image(tmp_path / "l.png", Image.fromarray(gray, "L"))
    rgb = data.decode_image(path, image_size=8, color_mode="rgb")
    assert np.array_equal(rgb, np.stack([gray] * 3, axis=-1))
    assert np.array_equal(data.decode_image(path, image_size=8, color_mode="grayscale")[..., 0], gray)


def test_16_bit_grayscale_scales_to_8_bit(tmp_path):
    k = np.arange(64, dtype=np.uint16).reshape(8, 8) * 4  # 0 .. 252
    values = k * 257  # 257 * k in 16 bits is k in 8 bits
    values[0, 0] = 65535
    path = save_image(tmp_path / "sixteen.png", Image.fromarray(values))
    assert Image.open(path).mode == "I;16"
    out = data.decode_image(path, image_size=8, color_mode="grayscale")[..., 0]
    expected = k.astype(np.uint8)
    expected[0, 0] = 255
    assert np.array_equal(out, expected)
    white = save_image(tmp_path / "white.png", Image.fromarray(np.full((5, 7), 65535, np.uint16)))
    assert (data.decode_image(white, image_size=4, color_mode="rgb") == 255).all()


def test_alpha_is_dropped_and_palette_is_expanded(tmp_path):
    rng = np.random.default_rng(4)
    rgba = rng.integers(0, 256, size=(8, 8, 4), dtype=np.uint8)
    path = save_image(tmp_path / "rgba.png", Image.fromarray(rgba, "RGBA"))
    assert np.array_equal(data.decode_image(path, image_size=8), rgba[..., :3])
    la = rng.integers(0, 256, size=(8, 8, 2), dtype=np.uint8)
    path = save_image(tmp_path / "la.png", Image.fromarray(la, "LA"))
    assert np.array_equal(data.decode_image(path, image_size=8, color_mode="grayscale")[..., 0], la[..., 0])
    indices = rng.integers(0, 4, size=(8, 8)).astype(np.uint8)
    path = save_image(tmp_path / "p.png", palette_image(indices))
    assert Image.open(path).mode == "P"
    assert np.array_equal(data.decode_image(path, image_size=8), PALETTE[indices])


def _count_decodes(monkeypatch):
    calls = []
    real = data.decode_image

    def counting(path, **kwargs):
        calls.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(data, "decode_image", counting)
    return calls


def test_each_image_is_decoded_once_per_process(mixed_folder, monkeypatch):
    data.clear_decoded_cache()
    calls = _count_decodes(monkeypatch)
    first = data.load_chest_xrays(mixed_folder.root, image_size=20)
    assert sorted(calls) == sorted(Path(p).name for p in mixed_folder.images)
    second = data.load_chest_xrays(mixed_folder.root, image_size=20, seed=5)
    again = data.load_images([mixed_folder.root / mixed_folder.images[0]], image_size=20)
    assert len(calls) == len(mixed_folder.images)  # nothing decoded twice
    assert np.array_equal(first.test.images, second.test.images)
    assert again.shape == (1, 20, 20, 3)
    # Another size or colour mode is another conversion, decoded once more.
    data.load_images([mixed_folder.root / mixed_folder.images[0]], image_size=20, color_mode="grayscale")
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


# ---------------------------------------------------------------------------------------
# Bad input: a clear DataError naming the file or folder, and nothing half-written
# ---------------------------------------------------------------------------------------


def _load_into(root, results, **options):
    return data.load_chest_xrays(root, image_size=16, results_dir=results, **options)


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere") as info:
        _load_into(missing, tmp_path / "results")
    assert "train/" in str(info.value)
    assert not (tmp_path / "results" / "split.csv").exists()
    file_instead = tmp_path / "file"
    file_instead.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        data.check_data_dir(file_instead)


def test_missing_split_folder(make_xrays, tmp_path):
    folder = make_xrays(test_per_class=2)
    shutil.rmtree(folder.root / "val")
    with pytest.raises(DataError) as info:
        _load_into(folder.root, tmp_path / "results")
    assert str(folder.root / "val") in str(info.value)
    assert not (tmp_path / "results" / "split.csv").exists()


def test_missing_class_folder(make_xrays, tmp_path):
    folder = make_xrays(test_per_class=2)
    shutil.rmtree(folder.root / "test" / "NORMAL")
    with pytest.raises(DataError, match="missing") as info:
        _load_into(folder.root, tmp_path / "results")
    assert str(folder.root / "test" / "NORMAL") in str(info.value)
    assert not (tmp_path / "results" / "split.csv").exists()


def test_class_folder_with_no_images(make_xrays, tmp_path):
    folder = make_xrays(test_per_class=2)
    class_dir = folder.root / "train" / "PNEUMONIA"
    shutil.rmtree(class_dir)
    class_dir.mkdir()
    (class_dir / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (class_dir / "notes.txt").write_text("scans to come")
    with pytest.raises(DataError, match="holds no image files") as info:
        _load_into(folder.root, tmp_path / "results")
    assert str(class_dir) in str(info.value)
    assert not (tmp_path / "results" / "split.csv").exists()


def test_extra_class_folder(make_xrays, tmp_path):
    folder = make_xrays(test_per_class=2)
    covid = folder.root / "train" / "COVID"
    covid.mkdir()
    save_image(covid / "covid1.jpeg", Image.fromarray(np.zeros((8, 8), np.uint8)))
    with pytest.raises(DataError, match="COVID") as info:
        _load_into(folder.root, tmp_path / "results")
    assert str(folder.root / "train") in str(info.value)
    assert not (tmp_path / "results" / "split.csv").exists()


def test_hidden_folders_beside_classes_are_ignored(make_xrays):
    folder = make_xrays(test_per_class=2)
    (folder.root / "train" / ".ipynb_checkpoints").mkdir()
    (folder.root / "train" / ".DS_Store").write_bytes(b"junk")
    assert data.check_data_dir(folder.root) == folder.root.resolve()


def _corrupt(folder):
    bad = folder.root / "train" / "NORMAL" / "IM-0999-0001.jpeg"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return bad


def _truncated(folder):
    good = folder.root / "test" / "PNEUMONIA" / "person500_virus_0.jpeg"
    bad = folder.root / "test" / "PNEUMONIA" / "person777_virus_1.jpeg"
    payload = good.read_bytes()
    bad.write_bytes(payload[: len(payload) // 2])
    return bad


@pytest.mark.parametrize("spoil", [_corrupt, _truncated], ids=["random-bytes", "truncated-jpeg"])
def test_corrupt_image_is_a_data_error_naming_the_file(make_xrays, spoil):
    folder = make_xrays(test_per_class=2)
    bad = spoil(folder)
    data.clear_decoded_cache()
    with pytest.raises(DataError) as info:
        data.load_chest_xrays(folder.root, image_size=16)
    assert str(bad) in str(info.value)
    with pytest.raises(DataError, match="person|IM-") as info:
        data.decode_image(bad, image_size=16)
    assert bad.name in str(info.value)


@pytest.mark.parametrize("spoil", [_corrupt, _truncated], ids=["random-bytes", "truncated-jpeg"])
def test_corrupt_image_leaves_no_split_csv(make_xrays, tmp_path, spoil):
    folder = make_xrays(test_per_class=2)
    spoil(folder)
    data.clear_decoded_cache()
    with pytest.raises(DataError):
        _load_into(folder.root, tmp_path / "results")
    assert not (tmp_path / "results" / "split.csv").exists()


@pytest.mark.parametrize("spoil", [_corrupt, _truncated], ids=["random-bytes", "truncated-jpeg"])
def test_skip_policy_leaves_out_bad_images_warns_with_paths_and_records_them(make_xrays, tmp_path, spoil):
    folder = make_xrays(test_per_class=2)
    bad = spoil(folder)
    relative = bad.relative_to(folder.root).as_posix()
    data.clear_decoded_cache()
    with pytest.warns(data.DataWarning, match="skipped 1 unreadable image") as caught:
        xrays = _load_into(folder.root, tmp_path / "results", on_bad_image="skip")
    assert relative in str(caught[0].message)
    assert [path for path, _ in xrays.skipped] == [relative]
    assert "corrupt or truncated" in xrays.skipped[0][1] or "not an image" in xrays.skipped[0][1]
    used = xrays.train.paths + xrays.val.paths + xrays.test.paths
    assert relative not in used and len(used) == len(folder.images)  # every good image kept
    assert relative not in (tmp_path / "results" / "split.csv").read_text()
    for split in (xrays.train, xrays.val, xrays.test):
        assert len(split.images) == len(split.labels) == len(split.paths)
    # Skipping never moves another image: the split of the good images is the same.
    folder_split = data.split_table(folder.root)
    kept = folder_split[folder_split["path"] != relative]
    assert kept["path"][kept["split"] == "val"].tolist() == xrays.val.paths


def test_skip_policy_that_empties_a_class_is_an_error(make_xrays):
    folder = make_xrays(test_per_class=1)
    for path in (folder.root / "test" / "NORMAL").iterdir():
        path.write_bytes(b"not a jpeg")
    data.clear_decoded_cache()
    with pytest.raises(DataError, match="test split, it holds no NORMAL") as info:
        data.load_chest_xrays(folder.root, image_size=16, seed=0, on_bad_image="skip")
    assert "test/NORMAL/IM-0500-0001.jpeg" in str(info.value)


def test_unknown_bad_image_policy_is_refused(xray_folder):
    with pytest.raises(ValueError, match="on_bad_image must be one of 'stop', 'skip'"):
        data.load_chest_xrays(xray_folder.root, image_size=16, on_bad_image="ignore")


def test_missing_image_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="ghost.png"):
        data.decode_image(tmp_path / "ghost.png", image_size=8)
    with pytest.raises(DataError, match="ghost.png"):
        data.load_images([tmp_path / "ghost.png"], image_size=8)


@pytest.mark.parametrize("image_size", [0, -1, 1.5, "128", True, None])
def test_invalid_image_size_fails_before_any_work(xray_folder, tmp_path, monkeypatch, image_size):
    def no_work(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("work started before the parameters were checked")

    monkeypatch.setattr(data, "check_data_dir", no_work)
    monkeypatch.setattr(data, "decode_image", no_work)
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        data.load_chest_xrays(xray_folder.root, image_size=image_size, results_dir=tmp_path)
    assert not (tmp_path / "split.csv").exists()
    with pytest.raises(ValueError, match="image_size"):
        data.load_images([xray_folder.root / xray_folder.images[0]], image_size=image_size)


@pytest.mark.parametrize("color_mode", ["cmyk", "RGB", "gray", None])
def test_invalid_color_mode_fails_before_any_work(xray_folder, tmp_path, monkeypatch, color_mode):
    monkeypatch.setattr(data, "check_data_dir", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match="color_mode must be 'rgb' or 'grayscale'"):
        data.load_chest_xrays(xray_folder.root, image_size=16, color_mode=color_mode, results_dir=tmp_path)
    assert not (tmp_path / "split.csv").exists()


def test_numpy_integer_image_size_is_accepted(tmp_path):
    path = save_image(tmp_path / "a.png", Image.fromarray(np.zeros((5, 5), np.uint8)))
    assert data.decode_image(path, image_size=np.int64(3)).shape == (3, 3, 3)


# ---------------------------------------------------------------------------------------
# Small data set: split properties, seeds, training batches
# ---------------------------------------------------------------------------------------


def test_small_split_keeps_persons_together_and_is_fixed_by_seed(xray_folder):
    table = data.split_table(xray_folder.root, seed=0)
    assert sorted(table.path) == xray_folder.images
    side = table.groupby("group").split.nunique()
    assert (side == 1).all()
    assert table[table.split == "test"].path.tolist() == xray_folder.images_of("test")
    assert set(xray_folder.images_of("val")) <= set(table[table.split == "val"].path)
    pd.testing.assert_frame_equal(table, data.split_table(xray_folder.root, seed=0))
    val_paths = set(table.loc[table.split == "val", "path"])
    others = [data.split_table(xray_folder.root, seed=s) for s in range(1, 4)]
    assert any(set(o.loc[o.split == "val", "path"]) != val_paths for o in others)


def test_training_dataset_batches_every_image_once_per_epoch(xrays32):
    import tensorflow as tf

    ds = data.training_dataset(xrays32.train, batch_size=8, seed=0)
    sums = []
    labels = []
    for images, batch_labels in ds:
        assert images.shape[1:] == (32, 32, 3) and images.dtype == tf.uint8
        assert batch_labels.dtype == tf.float32
        sums += [int(s) for s in tf.reduce_sum(tf.cast(images, tf.int64), axis=[1, 2, 3])]
        labels += batch_labels.numpy().tolist()
    expected = xrays32.train.images.reshape(len(xrays32.train), -1).sum(axis=1).tolist()
    assert sorted(sums) == sorted(expected)
    assert sorted(labels) == sorted(xrays32.train.labels.tolist())
    with pytest.raises(ValueError, match="batch_size"):
        data.training_dataset(xrays32.train, batch_size=0, seed=0)


def _kaggle_archive(make_xrays, tmp_path):
    """The Kaggle archive as unpacked: chest_xray/chest_xray/... beside __MACOSX/ and ._ files."""
    folder = make_xrays(name="archive/chest_xray/chest_xray")
    top = tmp_path / "archive"
    for rel in folder.images[:5]:
        fork = top / "__MACOSX" / "chest_xray" / "chest_xray" / Path(rel).parent / f"._{Path(rel).name}"
        fork.parent.mkdir(parents=True, exist_ok=True)
        fork.write_bytes(b"\x00\x05\x16\x07 resource fork")
        (folder.root / Path(rel).parent / f"._{Path(rel).name}").write_bytes(b"\x00\x05\x16\x07")
    return top, folder


@pytest.mark.parametrize("level", ["archive", "archive/chest_xray", "archive/chest_xray/chest_xray"])
def test_loader_finds_the_data_from_any_level_of_the_kaggle_archive(make_xrays, tmp_path, level):
    top, folder = _kaggle_archive(make_xrays, tmp_path)
    given = tmp_path / level
    assert data.check_data_dir(given) == folder.root.resolve()
    xrays = data.load_chest_xrays(given, image_size=16, seed=0)
    assert xrays.train.data_dir == folder.root.resolve()
    assert sorted(xrays.train.paths + xrays.val.paths + xrays.test.paths) == folder.images  # no ._ files


def test_layout_too_deep_or_absent_is_a_clear_error(make_xrays, tmp_path):
    make_xrays(name="a/b/c/d/chest_xray")
    with pytest.raises(DataError, match=r"split folder .*a[/\\]train is missing.*3 levels down"):
        data.check_data_dir(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.train is missing.*to hold train/, val/, test/"):
        data.check_data_dir(tmp_path / "empty")


def test_find_layout_root_skips_macosx_copy(tmp_path):
    for s in config.OFFICIAL_SPLITS:
        (tmp_path / "chest_xray" / "__MACOSX" / s).mkdir(parents=True)
        (tmp_path / "chest_xray" / "chest_xray" / s).mkdir(parents=True)
    assert data.find_layout_root(tmp_path) == tmp_path / "chest_xray" / "chest_xray"
    with pytest.raises(DataError, match="no folder holding"):
        data.find_layout_root(tmp_path / "chest_xray" / "__MACOSX" / "train")


# ---------------------------------------------------------------------------------------
# Data description helpers used by the data chapter
# ---------------------------------------------------------------------------------------


def test_persons_on_both_sides_counts_shared_groups(real_split):
    assert data.persons_on_both_sides(["a", "a", "b", "c", "c"], [True, False, False, True, True]) == 1
    assert data.persons_on_both_sides(["a", "b"], [True, False]) == 0
    train_folder = real_split[real_split.path.str.startswith("train/")]
    assert data.persons_on_both_sides(train_folder.group, train_folder.split == "val") == 0


def test_image_level_split_is_seeded_and_sized():
    a = data.image_level_split(50, val_fraction=0.2, seed=1)
    assert a.dtype == bool and a.sum() == 10
    assert np.array_equal(a, data.image_level_split(50, val_fraction=0.2, seed=1))
    assert not np.array_equal(a, data.image_level_split(50, val_fraction=0.2, seed=2))


def test_describe_files_reads_headers(mixed_folder):
    table = data.describe_files(mixed_folder.root)
    assert sorted(table.path) == mixed_folder.images
    row = table.set_index("path").loc["train/NORMAL/IM-0101-0001.jpeg"]
    assert (row.width, row.height, row["mode"], row.format) == (37, 53, "L", "JPEG")
    modes = set(table["mode"])
    assert {"L", "RGB", "RGBA", "P", "I;16", "LA"} <= modes
    assert (table.bytes > 0).all()


def test_duplicate_groups_finds_byte_identical_files(make_xrays):
    folder = make_xrays(test_per_class=2)
    assert data.duplicate_groups(folder.root).empty
    src = folder.root / "train" / "NORMAL" / "IM-0100-0001.jpeg"
    twin = folder.root / "test" / "NORMAL" / "IM-0777-0001.jpeg"
    twin.write_bytes(src.read_bytes())
    dups = data.duplicate_groups(folder.root)
    assert sorted(dups.path) == ["test/NORMAL/IM-0777-0001.jpeg", "train/NORMAL/IM-0100-0001.jpeg"]
    assert dups.sha1.nunique() == 1
    assert set(dups.split) == {"train", "test"}


def test_download_kaggle_fails_clearly_offline(monkeypatch):
    kagglehub = pytest.importorskip("kagglehub")

    def offline(handle, *args, **kwargs):
        assert handle == "paultimothymooney/chest-xray-pneumonia"
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(RuntimeError, match="are you online") as info:
        data.download_kaggle()
    assert "chest-xray-pneumonia" in str(info.value)
    assert "embedded copy" in str(info.value)


def test_download_kaggle_returns_the_folder_holding_the_splits(monkeypatch, tmp_path):
    kagglehub = pytest.importorskip("kagglehub")
    nested = tmp_path / "chest_xray" / "chest_xray"
    for split in ("train", "val", "test"):
        (nested / split).mkdir(parents=True)
    (tmp_path / "chest_xray" / "__MACOSX").mkdir()
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, *a, **k: str(tmp_path))
    assert data.download_kaggle() == nested


def test_importing_helpers_touches_no_network_and_no_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, helpers, helpers.data, helpers.metrics, helpers.config;"
        "print('tensorflow' in sys.modules, 'kagglehub' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------------------
# The on-disk cache of decoded images
# ---------------------------------------------------------------------------------------


@pytest.fixture
def disk_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", str(folder))
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
def test_a_changed_added_or_removed_file_invalidates_the_disk_cache(make_xrays, disk_cache, monkeypatch, change):
    folder = make_xrays()
    data.load_chest_xrays(folder.root, image_size=16, seed=0)
    target = folder.root / "test" / "NORMAL" / "IM-0500-0001.jpeg"
    if change == "rewrite":
        save_image(target, Image.new("RGB", (30, 30), (255, 255, 255)))
        os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    elif change == "add":
        save_image(folder.root / "test" / "NORMAL" / "IM-0600-0001.jpeg", Image.new("RGB", (30, 30), 0))
    else:
        target.unlink()
    data.clear_decoded_cache()
    calls = _count_decodes(monkeypatch)
    xrays = data.load_chest_xrays(folder.root, image_size=16, seed=0)
    assert calls  # the test split's list changed: decoded again, not read from the old entry
    if change == "rewrite":
        row = xrays.test.paths.index("test/NORMAL/IM-0500-0001.jpeg")
        assert (xrays.test.images[row] == 255).all()
    assert len(xrays.test) == len(folder.images_of("test")) + {"rewrite": 0, "add": 1, "remove": -1}[change]


def test_disk_cache_keys_on_size_and_colour_mode(make_xrays, disk_cache, monkeypatch):
    folder = make_xrays()
    paths = [folder.root / p for p in folder.images_of("test")]
    rgb16 = data.load_images(paths, image_size=16)
    gray16 = data.load_images(paths, image_size=16, color_mode="grayscale")
    rgb8 = data.load_images(paths, image_size=8)
    assert (rgb16.shape, gray16.shape, rgb8.shape) == ((16, 16, 16, 3), (16, 16, 16, 1), (16, 8, 8, 3))
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


def test_cache_can_be_switched_off_and_an_unwritable_folder_only_warns(make_xrays, tmp_path, monkeypatch):
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


def test_large_jpegs_are_decoded_at_reduced_scale_close_to_a_full_decode(tmp_path):
    rng = np.random.default_rng(4)
    big = image_of_mode(rng, "L", (1400, 1100), 120)
    path = save_image(tmp_path / "person1_virus_1.jpeg", big)
    fast = data.decode_image(path, image_size=64)
    with Image.open(path) as img:
        img.load()
        full = np.asarray(img.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
    assert fast.shape == full.shape == (64, 64, 3)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 2.0
    assert np.array_equal(fast, data.decode_image(path, image_size=64))  # the same every time
    # Never decoded below twice the target: a 200 px request keeps full detail of 1400 px.
    assert data.decode_image(path, image_size=200).shape == (200, 200, 3)
