"""Grad-CAM on tiny models whose answer is known, and on the book's models."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from helpers import explain, models  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def brightness_model(dense_sign: float):
    """features = relu(+x), relu(-x) (1x1 convs); score = sigmoid(sign * mean(features[0]))."""
    inputs = keras.Input((16, 16, 1))
    conv = layers.Conv2D(2, 1, use_bias=False, activation="relu", name="features")
    x = conv(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(x))
    conv.set_weights([np.array([1.0, -1.0], dtype="float32").reshape(1, 1, 1, 2)])
    dense.set_weights([np.array([[dense_sign], [0.0]], dtype="float32"), np.zeros(1, "float32")])
    return model


def quadrant_image():
    image = np.zeros((1, 16, 16, 1), dtype=np.uint8)
    image[0, :8, :8, 0] = 200
    return image


def test_heatmap_lights_up_where_the_evidence_is():
    heat = explain.grad_cam(brightness_model(+0.01), quadrant_image())
    assert heat.shape == (1, 16, 16) and heat.dtype == np.float32
    assert heat[0, :8, :8] == pytest.approx(np.ones((8, 8)))
    assert heat[0, 8:, :] == pytest.approx(np.zeros((8, 16)))
    assert heat[0, :, 8:] == pytest.approx(np.zeros((16, 8)))


def test_evidence_against_pneumonia_gives_no_heat():
    heat = explain.grad_cam(brightness_model(-0.01), quadrant_image())
    assert np.all(heat == 0)


def test_feature_layer_is_the_last_convolution_or_the_nested_base():
    small = models.build_model("model_1", image_size=32, channels=3).model
    name = explain.feature_layer_name(small)
    assert isinstance(small.get_layer(name), keras.layers.Conv2D)
    assert name == [l.name for l in small.layers if isinstance(l, keras.layers.Conv2D)][-1]
    mobile = models.build_model("model_5", image_size=32, channels=3, base_weights=None).model
    assert isinstance(mobile.get_layer(explain.feature_layer_name(mobile)), keras.Model)
    flat = keras.Sequential([keras.Input((4,)), layers.Dense(1)])
    with pytest.raises(ValueError, match="Grad-CAM needs feature maps"):
        explain.feature_layer_name(flat)


def test_grad_cam_on_a_case_study_model_and_the_overlay(tmp_path):
    model = models.build_model("model_1", image_size=32, channels=3).model
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    heat = explain.grad_cam(model, images, batch_size=2)
    assert heat.shape == (5, 32, 32)
    assert heat.min() >= 0 and heat.max() <= 1
    path = explain.save_overlay(tmp_path / "out" / "x.png", images[0], heat[0])
    from PIL import Image

    with Image.open(path) as img:
        assert img.size == (32, 32) and img.mode == "RGB"
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left
