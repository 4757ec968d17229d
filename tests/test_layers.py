"""The book's own layers and the residual CNN: shapes, behaviour, safe saving and loading."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from helpers import models  # noqa: E402
from helpers.layers import PerImageStandardization  # noqa: E402


def test_per_image_standardization_gives_mean_0_and_std_1_per_image():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(50, 5, (8, 8, 1)), rng.normal(200, 30, (8, 8, 1)), np.full((8, 8, 1), 7.0)])
    out = np.asarray(PerImageStandardization()(x.astype("float32")))
    assert out[:2].mean(axis=(1, 2, 3)) == pytest.approx([0, 0], abs=1e-5)
    assert out[:2].std(axis=(1, 2, 3)) == pytest.approx([1, 1], abs=1e-4)
    assert np.all(out[2] == 0)  # a flat image has no contrast to keep
    # Brightness and contrast of the film do not matter.
    again = np.asarray(PerImageStandardization()((3 * x[:1] + 40).astype("float32")))
    assert again == pytest.approx(out[:1], abs=1e-4)


@pytest.mark.parametrize("augment", models.AUGMENTATIONS)
def test_residual_cnn_outputs_one_logit_and_saves_safely(tmp_path, augment):
    model = models.build_residual_cnn((32, 32, 1), width=4, augment=augment)
    assert models.output_kind(model) == "logit"
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 1)).astype("float32")
    before = np.asarray(model.predict(images, verbose=0))
    assert before.shape == (3, 1)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # no pickled code needed
    assert np.asarray(loaded.predict(images, verbose=0)) == pytest.approx(before, abs=1e-5)


def test_residual_cnn_rejects_bad_options():
    with pytest.raises(ValueError, match="augment must be one of"):
        models.build_residual_cnn((32, 32, 1), augment="flips")
    with pytest.raises(ValueError, match="width must be a positive integer"):
        models.build_residual_cnn((32, 32, 1), width=0)
