"""Tests of helpers.data.load: the splits in memory, bad input, and batches for training."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import save_image
from PIL import Image

from helpers import data
from helpers.data import DataError
from helpers.data import decode as decode_module
from helpers.data import load as load_module


def test_class_weights_are_balanced():
    assert data.class_weights([0, 1, 1, 1]) == pytest.approx({0: 2.0, 1: 2 / 3})
    with pytest.raises(ValueError, match="both classes"):
        data.class_weights([1, 1, 1])


@pytest.mark.parametrize("color_mode, channels", [("rgb", 3), ("grayscale", 1)])
def test_load_chest_xrays_gives_requested_shape_dtype_and_channels(
    mixed_folder, tmp_path, color_mode, channels
):
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
            expected = data.decode_image(
                mixed_folder.root / path, image_size=24, color_mode=color_mode
            )
            assert np.array_equal(image, expected), path
    assert sorted(seen) == mixed_folder.images
    assert xrays.test.paths == mixed_folder.images_of("test")
    written = pd.read_csv(tmp_path / "split.csv")
    assert sorted(written.path) == mixed_folder.images
    with pytest.raises(KeyError):
        xrays["validation"]


def _load_into(root, results, **options):
    return data.load_chest_xrays(root, image_size=16, results_dir=results, seed=42, **options)


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


@pytest.mark.parametrize("split", ["train", "test"])  # val/ may be missing (test_data_folders)
def test_missing_split_folder(make_xrays, tmp_path, split):
    folder = make_xrays(test_per_class=2)
    shutil.rmtree(folder.root / split)
    with pytest.raises(DataError) as info:
        _load_into(folder.root, tmp_path / "results")
    assert str(folder.root / split) in str(info.value)
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
        data.load_chest_xrays(folder.root, image_size=16, seed=42)
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
def test_skip_policy_leaves_out_bad_images_warns_with_paths_and_records_them(
    make_xrays, tmp_path, spoil
):
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
    folder_split = data.split_table(folder.root, seed=42)
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
        data.load_chest_xrays(xray_folder.root, image_size=16, on_bad_image="ignore", seed=42)


@pytest.mark.parametrize("image_size", [0, -1, 1.5, "128", True, None])
def test_invalid_image_size_fails_before_any_work(xray_folder, tmp_path, monkeypatch, image_size):
    def no_work(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("work started before the parameters were checked")

    monkeypatch.setattr(load_module, "check_data_dir", no_work)
    monkeypatch.setattr(decode_module, "decode_image", no_work)
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        data.load_chest_xrays(
            xray_folder.root, image_size=image_size, results_dir=tmp_path, seed=42
        )
    assert not (tmp_path / "split.csv").exists()
    with pytest.raises(ValueError, match="image_size"):
        data.load_images([xray_folder.root / xray_folder.images[0]], image_size=image_size)


@pytest.mark.parametrize("color_mode", ["cmyk", "RGB", "gray", None])
def test_invalid_color_mode_fails_before_any_work(xray_folder, tmp_path, monkeypatch, color_mode):
    monkeypatch.setattr(load_module, "check_data_dir", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match="color_mode must be 'rgb' or 'grayscale'"):
        data.load_chest_xrays(
            xray_folder.root, image_size=16, color_mode=color_mode, results_dir=tmp_path, seed=42
        )
    assert not (tmp_path / "split.csv").exists()


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


def test_importing_helpers_touches_no_network_and_no_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, helpers, helpers.data, helpers.metrics, helpers.config;"
        "print('tensorflow' in sys.modules, 'kagglehub' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
