"""Tests of helpers.data.decode: one image file -> one array, by one fixed rule."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PALETTE, image_of_mode, palette_image, save_image
from PIL import Image

from helpers import data
from helpers.data import DataError


def test_decode_image_odd_sizes_and_upper_case_extensions(mixed_folder):
    for rel in (
        "train/NORMAL/IM-0102-0001.PNG",
        "train/NORMAL/IM-0104-0001.JPEG",
        "train/PNEUMONIA/person4_virus_5.jpg",
    ):
        for size in (1, 17, 64):
            img = data.decode_image(mixed_folder.root / rel, image_size=size)
            assert img.shape == (size, size, 3) and img.dtype == np.uint8


def test_grayscale_of_a_gray_rgb_image_equals_its_channel(tmp_path):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, size=(53, 37), dtype=np.uint8)
    path = save_image(
        tmp_path / "gray_rgb.png", Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    )
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
    assert np.array_equal(
        data.decode_image(path, image_size=8, color_mode="grayscale")[..., 0], gray
    )


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
    assert np.array_equal(
        data.decode_image(path, image_size=8, color_mode="grayscale")[..., 0], la[..., 0]
    )
    indices = rng.integers(0, 4, size=(8, 8)).astype(np.uint8)
    path = save_image(tmp_path / "p.png", palette_image(indices))
    assert Image.open(path).mode == "P"
    assert np.array_equal(data.decode_image(path, image_size=8), PALETTE[indices])


def test_missing_image_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="ghost.png"):
        data.decode_image(tmp_path / "ghost.png", image_size=8)
    with pytest.raises(DataError, match="ghost.png"):
        data.load_images([tmp_path / "ghost.png"], image_size=8)


def test_numpy_integer_image_size_is_accepted(tmp_path):
    path = save_image(tmp_path / "a.png", Image.fromarray(np.zeros((5, 5), np.uint8)))
    assert data.decode_image(path, image_size=np.int64(3)).shape == (3, 3, 3)


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


def test_decode_count_counts_every_file_decode_and_no_cache_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", "off")
    data.clear_decoded_cache()
    paths = [
        save_image(tmp_path / f"{i}.png", Image.fromarray(np.full((6, 6), 40 * i, np.uint8)))
        for i in range(3)
    ]
    before = data.decode_count()
    data.decode_image(paths[0], image_size=4)
    data.decode_image(paths[0], image_size=4)  # decode_image itself never caches
    assert data.decode_count() - before == 2
    with pytest.raises(DataError):
        data.decode_image(
            tmp_path / "ghost.png", image_size=4
        )  # a failed attempt went to a file too
    assert data.decode_count() - before == 3
    data.load_images(paths, image_size=4)
    assert data.decode_count() - before == 6
    data.load_images(paths[::-1], image_size=4)  # all in memory: nothing decoded
    assert data.decode_count() - before == 6
    with pytest.raises(ValueError):
        data.decode_image(paths[0], image_size=0)  # refused before any file is touched
    assert data.decode_count() - before == 6
    data.clear_decoded_cache()


def test_decode_count_is_exact_under_many_threads(xray_folder, monkeypatch):
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", "off")
    data.clear_decoded_cache()
    paths = [xray_folder.root / p for p in xray_folder.images]
    before = data.decode_count()
    data.load_images(paths, image_size=5, workers=8)
    assert data.decode_count() - before == len(set(paths))
    data.clear_decoded_cache()


def test_decoded_batches_stream_in_order_and_name_bad_files(mixed_folder, tmp_path, monkeypatch):
    from helpers.data import decode

    good = [mixed_folder.root / p for p in mixed_folder.images]
    bad = tmp_path / "cut.png"
    bad.write_bytes(b"\x89PNG\r\n")
    paths = [*good[:3], bad, *good[3:], tmp_path / "ghost.jpeg"]
    calls, real = [], decode.decode_image
    monkeypatch.setattr(decode, "decode_image", lambda p, **kw: calls.append(p) or real(p, **kw))
    batches = []
    for batch in data.decoded_batches(paths, image_size=8, batch_size=4, workers=2):
        # One batch ahead at most, never the whole list: memory does not grow with it.
        assert len(calls) <= 4 * (len(batches) + 2)
        batches.append(batch)
    assert [p for b in batches for p in b.paths] == paths
    assert [len(b.paths) for b in batches] == [4, 4, 4, 4, 2][: len(batches)]
    assert batches[0].errors.keys() == {3} and "cut.png" in batches[0].errors[3]
    assert "does not exist" in batches[-1].errors[len(batches[-1].paths) - 1]
    images = np.concatenate([b.images for b in batches])
    assert np.array_equal(images, data.load_images(good, image_size=8))
    assert batches[0].decoded == [0, 1, 2]


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_decoded_batches_refuse_a_batch_size_that_is_not_a_positive_integer(batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        next(data.decoded_batches([], image_size=8, batch_size=batch_size))
