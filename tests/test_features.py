"""Tests of helpers.features: a frozen base's outputs computed once per image set and disk,
keyed by what decides them (the chapters' models 4 and 5 share an entry; another weight,
preprocessing or image does not), refused for a base that can still learn."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")

import keras
from chapter_models import chapter_model, fake_pretrained_base

from helpers import features, finetune, train

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

BASE = "fake_mobilenet_base"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """The feature cache in a fresh folder (it follows CHEST_XRAY_CACHE_DIR)."""
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", str(tmp_path / "decoded"))
    monkeypatch.delenv(features.FEATURE_CACHE_BYTES_VARIABLE, raising=False)
    return tmp_path / "decoded" / "features"


@pytest.fixture
def extractors(monkeypatch):
    """The extractors of the chapters' own models 4 (augmentation first) and 5, on one
    small conv base that passes signal, with the same weights."""
    fake_pretrained_base(monkeypatch)
    model_4 = chapter_model("model_4", image_size=32, seed=3, base_weights="random")
    model_5 = chapter_model("model_5", image_size=32, seed=3, base_weights="random")
    model_5.get_layer(BASE).set_weights(model_4.get_layer(BASE).get_weights())
    return train.split_at_layer(model_4, BASE)[0], train.split_at_layer(model_5, BASE)[0]


def images(seed=0, n=20):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3)).astype("float32")


def test_features_are_computed_once_and_equal_a_fresh_computation(cache_dir, extractors):
    extractor = extractors[1]
    x = images()
    before = features.computed_image_count()
    first = features.frozen_features(extractor, x)
    assert features.computed_image_count() - before == len(x)
    assert len(list(cache_dir.glob("features-*.npy"))) == 1
    second = features.frozen_features(extractor, x)
    assert features.computed_image_count() - before == len(x)  # read back, not computed
    fresh = extractor.predict(x, batch_size=features.feature_batch_size(x.shape), verbose=0)
    assert first.dtype == np.float32 and np.ptp(fresh) > 0
    np.testing.assert_array_equal(second, fresh)
    np.testing.assert_array_equal(first, fresh)


def test_models_4_and_5_share_an_entry_and_other_inputs_do_not(cache_dir, extractors):
    extractor_4, extractor_5 = extractors
    # Model 4's augmentation is the identity outside training: the same function.
    assert features.extractor_signature(extractor_4) == features.extractor_signature(extractor_5)
    x = images()
    features.frozen_features(extractor_4, x)
    before = features.computed_image_count()
    features.frozen_features(extractor_5, x)
    assert features.computed_image_count() == before

    changed = images()
    changed[0, 0, 0, 0] += 1  # one pixel
    features.frozen_features(extractor_5, changed)
    assert features.computed_image_count() == before + len(x)

    weights = extractor_5.get_layer(BASE).get_weights()
    weights[0] = weights[0] + 1e-3
    extractor_5.get_layer(BASE).set_weights(weights)
    assert features.extractor_signature(extractor_5) != features.extractor_signature(extractor_4)

    other_scaling = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1.0 / 255),
            extractor_4.get_layer(BASE),
        ]
    )
    assert features.extractor_signature(other_scaling) != features.extractor_signature(extractor_4)


def test_a_base_that_can_learn_is_refused(cache_dir, extractors):
    extractor = extractors[1]
    extractor.get_layer(BASE).trainable = True
    with pytest.raises(ValueError, match="trainable weights.*cannot be cached"):
        features.frozen_features(extractor, images())
    assert not cache_dir.exists()


def test_a_damaged_entry_is_computed_again_and_rewritten(cache_dir, extractors):
    extractor = extractors[1]
    x = images()
    good = features.frozen_features(extractor, x)
    (entry,) = cache_dir.glob("features-*.npy")
    entry.write_bytes(b"not an array")
    before = features.computed_image_count()
    again = features.frozen_features(extractor, x)
    assert features.computed_image_count() == before + len(x)
    np.testing.assert_array_equal(again, good)
    np.testing.assert_array_equal(np.load(entry), good)


def test_cache_off_writes_nothing(tmp_path, monkeypatch, extractors):
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", "off")
    assert features.feature_cache_dir() is None
    before = features.computed_image_count()
    features.frozen_features(extractors[1], images())
    features.frozen_features(extractors[1], images())
    assert features.computed_image_count() == before + 2 * len(images())


def test_the_cap_keeps_the_newest_entries_and_a_bad_cap_is_named(
    cache_dir, extractors, monkeypatch
):
    extractor = extractors[1]
    one_entry = 20 * 7 * 7 * 16 * 4  # 20 images of 7 x 7 x 16 float32, plus a small header
    monkeypatch.setenv(features.FEATURE_CACHE_BYTES_VARIABLE, str(one_entry + 1000))
    for seed in range(3):
        features.frozen_features(extractor, images(seed))
    assert len(list(cache_dir.glob("features-*.npy"))) == 1
    before = features.computed_image_count()
    features.frozen_features(extractor, images(2))  # the newest is kept
    assert features.computed_image_count() == before
    monkeypatch.setenv(features.FEATURE_CACHE_BYTES_VARIABLE, "lots")
    with pytest.raises(
        ValueError, match="CHEST_XRAY_FEATURE_CACHE_BYTES must be a whole number of bytes"
    ):
        features.frozen_features(extractor, images(5))


def test_augmentation_only_models_are_the_identity_and_others_are_not():
    augmentation = keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.05)]
    )
    mixed = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.Rescaling(2.0)])
    assert features.is_identity_at_inference(augmentation)
    assert features.is_identity_at_inference(keras.layers.RandomZoom(0.1))
    assert not features.is_identity_at_inference(mixed)
    assert not features.is_identity_at_inference(keras.layers.Rescaling(2.0))


def test_the_probe_of_model_5_reuses_the_features_model_5_trained_on(
    cache_dir, xray_folder, monkeypatch
):
    from helpers import data

    xrays32 = data.load_chest_xrays(xray_folder.root, image_size=32, seed=0)  # its own test claim
    fake_pretrained_base(monkeypatch)
    model = chapter_model("model_5", image_size=32, seed=1, base_weights="random")
    train.fit(model, xrays32, epochs=1, batch_size=8, seed=1, verbose=0)
    before = features.computed_image_count()
    probe = finetune.frozen_feature_probe(model, xrays32, "model_5", target_sensitivity=0.95)
    # Training computed the training and validation features; the probe adds the test images.
    assert features.computed_image_count() - before == len(xrays32.test)
    assert 0 <= probe.metrics["test"]["auc"] <= 1


def test_the_batch_holds_a_fixed_number_of_pixels_within_its_range():
    # 16 images of 128 px or larger (their activations stay in cache); more of small ones,
    # whose forward pass costs less than a step's fixed overhead.
    sizes = {224: 16, 128: 16, 64: 64, 32: 256, 8: 256}
    for side, batch in sizes.items():
        assert features.feature_batch_size((100, side, side, 3)) == batch
