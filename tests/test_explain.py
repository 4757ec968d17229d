"""Grad-CAM on tiny models whose answer is known, and on the chapters' own models."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")

import keras
from chapter_models import chapter_model, make_model_function
from keras import layers

from helpers import explain

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


def test_a_probability_that_rounds_to_one_still_gets_its_heatmap():
    # sign 1.0 on a feature mean of 50: logit 50, probability exactly 1.0 in float32.
    model = brightness_model(+1.0)
    assert float(model.predict(quadrant_image(), verbose=0)[0, 0]) == 1.0
    heat = explain.grad_cam(model, quadrant_image())
    assert heat[0, :8, :8] == pytest.approx(np.ones((8, 8)))
    assert heat[0, 8:, :] == pytest.approx(np.zeros((8, 16)))


@pytest.mark.slow
def test_feature_layer_is_the_end_of_each_chapter_models_last_convolutional_block():
    small = chapter_model("model_1", image_size=32)
    name = explain.feature_layer_name(small)
    pools = [item.name for item in small.layers if isinstance(item, keras.layers.MaxPooling2D)]
    assert name == pools[-1]  # after the last convolution and its pooling, before Flatten
    dropout = chapter_model("model_2", image_size=32)  # Dropout after that pooling is skipped
    assert (
        explain.feature_layer_name(dropout)
        == [item.name for item in dropout.layers if isinstance(item, keras.layers.MaxPooling2D)][-1]
    )
    mobile = chapter_model("model_5", image_size=32, base_weights="random")
    assert isinstance(mobile.get_layer(explain.feature_layer_name(mobile)), keras.Model)
    augmented = chapter_model("model_4", image_size=32, base_weights="random")
    assert explain.feature_layer_name(augmented).startswith("mobilenetv2")  # not the augmentation
    residual = make_model_function("model_6")((32, 32, 1), width=4)
    layer = residual.get_layer(explain.feature_layer_name(residual))
    assert isinstance(layer, keras.layers.ReLU)
    adds = [item for item in residual.layers if isinstance(item, keras.layers.Add)]
    assert residual.layers.index(layer) == residual.layers.index(adds[-1]) + 1
    flat = keras.Sequential([keras.Input((4,)), layers.Dense(1)])
    with pytest.raises(ValueError, match="Grad-CAM needs feature maps"):
        explain.feature_layer_name(flat)


def test_grad_cam_on_a_case_study_model_and_the_overlay(tmp_path):
    model = chapter_model("model_1", image_size=32)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    heat = explain.grad_cam(model, images, batch_size=2)
    assert heat.shape == (5, 32, 32)
    assert heat.min() >= 0 and heat.max() <= 1
    path = explain.save_overlay(tmp_path / "out" / "x.png", images[0], heat[0])
    from PIL import Image

    with Image.open(path) as img:
        assert img.size == (32, 32) and img.mode == "RGB"
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


def test_grad_cam_on_the_residual_cnn_of_model_6():
    model = make_model_function("model_6")((32, 32, 1), width=4, augment="none")
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
    heat = explain.grad_cam(model, images)
    assert heat.shape == (3, 32, 32) and heat.min() >= 0 and heat.max() <= 1


def test_bad_images_and_batch_sizes_are_refused():
    model = brightness_model(+0.01)
    with pytest.raises(ValueError, match="images must have shape"):
        explain.grad_cam(model, np.zeros((16, 16, 1)))
    with pytest.raises(ValueError, match="batch_size must be an integer of at least 1"):
        explain.grad_cam(model, quadrant_image(), batch_size=0)
    with pytest.raises(ValueError, match="heatmap must have the image's height and width"):
        explain.overlay(np.zeros((16, 16), np.uint8), np.zeros((8, 8)))
