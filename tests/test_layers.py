"""The book's own layers and model_6's residual CNN: shapes, behaviour, safe saving and loading."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")

import keras
from chapter_models import make_model_function

from helpers import ablation, evaluate
from helpers.layers import PerImageStandardization

# Keras' TensorFlow backend trips a NumPy 2 deprecation inside predict; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

#: Every augmentation model_6's builder is asked for (its recipe and the ablation's rows).
#: What model_6's builder accepts (its ablation runs two of them).
AUGMENTATIONS = ("geometric", "geometric+intensity", "none")


def test_per_image_standardization_gives_mean_0_and_std_1_per_image():
    rng = np.random.default_rng(0)
    x = np.stack(
        [rng.normal(50, 5, (8, 8, 1)), rng.normal(200, 30, (8, 8, 1)), np.full((8, 8, 1), 7.0)]
    )
    out = np.asarray(PerImageStandardization()(x.astype("float32")))
    assert out[:2].mean(axis=(1, 2, 3)) == pytest.approx([0, 0], abs=1e-5)
    assert out[:2].std(axis=(1, 2, 3)) == pytest.approx([1, 1], abs=1e-4)
    assert np.all(out[2] == 0)  # a flat image has no contrast to keep
    # Brightness and contrast of the film do not matter.
    again = np.asarray(PerImageStandardization()((3 * x[:1] + 40).astype("float32")))
    assert again == pytest.approx(out[:1], abs=1e-4)


def test_the_ablation_asks_only_for_augmentations_the_builder_has():
    asked = {variant.augment for variant in ablation.VARIANTS}
    assert asked == {"geometric+intensity", "none"} and asked <= set(AUGMENTATIONS)


@pytest.mark.parametrize("augment", AUGMENTATIONS)
def test_residual_cnn_outputs_one_logit_and_saves_safely(tmp_path, augment):
    model = make_model_function("model_6")((32, 32, 1), width=4, augment=augment)
    assert evaluate.output_kind(model) == "logit"
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 1)).astype("float32")
    before = np.asarray(model.predict(images, verbose=0))
    assert before.shape == (3, 1)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # no pickled code needed
    assert np.asarray(loaded.predict(images, verbose=0)) == pytest.approx(before, abs=1e-5)
