"""Grad-CAM's feature layer (the end of the last convolutional block) and its score (the logit).

Tiny models (32 px) built here the way the book's chapters build theirs: a case-study CNN
(Conv2D, MaxPooling2D, ..., Dropout, Flatten), model_6's residual network (a ReLU after each
residual addition) and a frozen nested base followed by GlobalAveragePooling2D.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("tensorflow")

import keras
import tensorflow as tf
from keras import layers

from helpers import explain

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIZE = 32


def random_images(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, channels), dtype=np.uint8)


def reference_grad_cam(model, images: np.ndarray, layer_name: str) -> np.ndarray:
    """The pre-fix algorithm: differentiates the model's output itself, whatever it is.

    Only for flat models, whose ``get_layer(name).output`` is connected to their inputs.
    """
    probe = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.outputs[0]])
    batch = tf.convert_to_tensor(images.astype("float32"))
    with tf.GradientTape() as tape:
        features, output = probe(batch, training=False)
        target = tf.reduce_sum(output[:, 0])
    grads = tape.gradient(target, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    cam = tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak).numpy()


def assert_heatmaps(heat: np.ndarray, n: int) -> None:
    assert heat.shape == (n, SIZE, SIZE) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() <= 1


# ---------------------------------------------------------------------------------------
# Models built as the chapters build them
# ---------------------------------------------------------------------------------------


def case_study_cnn(*, output: str = "sigmoid", channels: int = 1) -> keras.Model:
    """Models 2-3 in small: conv blocks, Dropout before Flatten, a sigmoid (or a logit)."""
    keras.utils.set_random_seed(0)
    last = (
        layers.Activation("sigmoid")
        if output == "activation"
        else layers.Dense(1, activation="sigmoid" if output == "sigmoid" else None)
    )
    stack = [
        keras.Input((SIZE, SIZE, channels)),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(name="last_pool"),
        layers.Dropout(0.2),
        layers.Flatten(),
        layers.Dense(8, activation="relu"),
    ]
    if output == "activation":
        stack.append(layers.Dense(1))
    model = keras.Sequential([*stack, last], name=f"cnn_{output}")
    # A positive last kernel: evidence for PNEUMONIA exists, so the maps are not blank (with
    # the random one, every pooled channel that raises the score was ~0 on noise images).
    score = [layer for layer in model.layers if isinstance(layer, layers.Dense)][-1]
    kernel, bias = score.get_weights()
    score.set_weights([np.abs(kernel), bias])
    return model


def residual_block(x, filters, stride):
    """model_6's block (book/model_6.ipynb), also returning the ReLU after the addition."""
    shortcut = x
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = layers.BatchNormalization()(shortcut)
    relu = layers.ReLU()
    return relu(layers.Add()([x, shortcut])), relu


def residual_model(width: int = 4) -> tuple[keras.Model, layers.Layer]:
    """model_6 in small (augmentation, stem, two residual blocks, GAP, Dropout, a logit)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1))
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.RandomTranslation(0.05, 0.05, fill_mode="constant")(x)
    x = layers.RandomContrast(0.3)(x)
    x = layers.Conv2D(width, 5, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    for multiple, stride in ((1, 1), (2, 2)):
        x, last_relu = residual_block(x, width * multiple, stride)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    return keras.Model(inputs, layers.Dense(1)(x), name="tiny_model_6"), last_relu


def nested_base_model() -> keras.Model:
    """Model 4 in small: augmentation Sequential, a frozen nested base, GAP, Dropout, a logit."""
    keras.utils.set_random_seed(0)
    base_inputs = keras.Input((SIZE, SIZE, 3))
    b = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(base_inputs)
    b = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(b)
    base = keras.Model(base_inputs, b, name="tiny_base")
    base.trainable = False
    augmentation = keras.Sequential(
        [layers.RandomFlip("horizontal"), layers.RandomRotation(0.05)], name="data_augmentation"
    )
    inputs = keras.Input((SIZE, SIZE, 3))
    x = augmentation(inputs)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess_input")(x)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    return keras.Model(inputs, layers.Dense(1)(x), name="tiny_model_4")


def brightness_cnn(dense_weight: float) -> keras.Model:
    """relu(+x), relu(-x) by 1x1 convolutions, max pooling, Dropout, Flatten, a sigmoid.

    The Dense layer weighs every pooled cell of the first channel by ``dense_weight`` and the
    second channel by 0, so logit = dense_weight * (sum of the pooled bright pixels).
    """
    conv = layers.Conv2D(2, 1, use_bias=False, activation="relu")
    dense = layers.Dense(1, activation="sigmoid")
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            conv,
            layers.MaxPooling2D(),
            layers.Dropout(0.2),
            layers.Flatten(),
            dense,
        ]
    )
    conv.set_weights([np.array([1.0, -1.0], dtype="float32").reshape(1, 1, 1, 2)])
    kernel = np.zeros((SIZE // 2, SIZE // 2, 2), dtype="float32")
    kernel[..., 0] = dense_weight  # Flatten's order is (row, column, channel)
    dense.set_weights([kernel.reshape(-1, 1), np.zeros(1, "float32")])
    return model


def quadrant_image() -> np.ndarray:
    """Black, with the top-left 16 x 16 quadrant at 200."""
    image = np.zeros((1, SIZE, SIZE, 1), dtype=np.uint8)
    image[0, : SIZE // 2, : SIZE // 2, 0] = 200
    return image


# ---------------------------------------------------------------------------------------
# The feature layer
# ---------------------------------------------------------------------------------------


def test_residual_network_gives_the_relu_after_the_last_addition():
    model, last_relu = residual_model()
    name = explain.feature_layer_name(model)
    assert name == last_relu.name
    # The rule it replaces (the last Conv2D) picked a convolution inside the block or the
    # shortcut's 1x1 convolution: a different layer.
    last_conv = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)][-1]
    assert name != last_conv.name
    assert_heatmaps(explain.grad_cam(model, random_images(3), batch_size=2), 3)


def test_case_study_cnn_gives_the_last_max_pooling_not_the_dropout_after_it():
    model = case_study_cnn()
    assert explain.feature_layer_name(model) == "last_pool"


def test_nested_frozen_base_is_picked_and_augmentation_is_not():
    model = nested_base_model()
    assert explain.feature_layer_name(model) == "tiny_base"
    # The base's own ``.output`` belongs to its inner graph: the heatmaps need the outer call.
    assert_heatmaps(explain.grad_cam(model, random_images(3, channels=3)), 3)


def test_augmentation_and_dropout_are_skipped_even_when_last():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            layers.Conv2D(2, 3, name="conv"),
            layers.RandomFlip("horizontal"),
            layers.SpatialDropout2D(0.1),
            layers.GlobalAveragePooling2D(),
            layers.Dense(1),
        ]
    )
    assert explain.feature_layer_name(model) == "conv"


def test_models_without_feature_maps_are_refused():
    dense_only = keras.Sequential([keras.Input((4,)), layers.Dense(1)], name="dense_only")
    with pytest.raises(ValueError, match="'dense_only'.*Grad-CAM needs feature maps"):
        explain.feature_layer_name(dense_only)
    no_convolution = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            layers.Rescaling(1.0 / 255),
            layers.Flatten(),
            layers.Dense(1),
        ],
        name="no_convolution",
    )
    with pytest.raises(ValueError, match="'no_convolution'.*Grad-CAM needs feature maps"):
        explain.feature_layer_name(no_convolution)
    unbuilt = keras.Sequential(
        [layers.Conv2D(2, 3), layers.Flatten(), layers.Dense(1)], name="unbuilt"
    )
    with pytest.raises(ValueError, match="'unbuilt' has no layer graph"):
        explain.feature_layer_name(unbuilt)


# ---------------------------------------------------------------------------------------
# The score: the logit
# ---------------------------------------------------------------------------------------


def test_saturated_probability_still_gets_a_map_from_the_logit():
    model = brightness_cnn(0.01)  # logit = 0.01 * 64 cells * 200 = 128
    image = quadrant_image()
    probability = np.asarray(model(image.astype("float32"), training=False))
    assert probability.dtype == np.float32 and probability[0, 0] == 1.0  # rounds to 1.0
    # Differentiating the probability gives nothing: p (1 - p) = 0 exactly.
    assert np.all(reference_grad_cam(model, image, explain.feature_layer_name(model)) == 0)
    heat = explain.grad_cam(model, image)
    assert_heatmaps(heat, 1)
    assert heat.max() > 0
    # By hand: the map is 1 on the pooled bright quadrant and 0 elsewhere; bilinear resizing
    # from 16 to 32 pixels keeps rows/columns 0-14 at 1 and 17-31 at 0.
    assert heat[0, :15, :15] == pytest.approx(np.ones((15, 15)))
    assert np.all(heat[0, 17:, :] == 0) and np.all(heat[0, :, 17:] == 0)
    # The same map as an unsaturated model's (logit 1.28): the logit scale is normalised away.
    unsaturated = brightness_cnn(1e-4)
    assert 0.5 < float(unsaturated(image.astype("float32"))[0, 0]) < 0.9
    np.testing.assert_allclose(explain.grad_cam(unsaturated, image), heat, atol=1e-6)


def test_logit_model_gives_the_same_map_as_before():
    model = case_study_cnn(output="logit")
    images = random_images(4)
    expected = reference_grad_cam(model, images, "last_pool")
    heat = explain.grad_cam(model, images)
    assert_heatmaps(heat, 4)
    assert np.all(heat.max(axis=(1, 2)) == 1)  # every map has heat, scaled to peak at 1
    np.testing.assert_allclose(heat, expected, atol=1e-6)


def test_unsaturated_sigmoid_model_gives_the_probability_map():
    # Unsaturated, the probability's gradient is the logit's times p (1 - p) > 0 per image,
    # which the per-image scaling removes: the maps agree.
    model = case_study_cnn(output="sigmoid")
    images = random_images(4, seed=1)
    probability = np.asarray(model(images.astype("float32"), training=False))
    assert np.all((probability > 0.01) & (probability < 0.99))
    heat = explain.grad_cam(model, images)
    np.testing.assert_allclose(heat, reference_grad_cam(model, images, "last_pool"), atol=1e-5)


def test_sigmoid_activation_layer_is_undone_like_a_sigmoid_dense():
    with_activation = case_study_cnn(output="activation")
    logit_twin = case_study_cnn(output="logit")
    logit_twin.set_weights(with_activation.get_weights())  # the same layers but the Activation
    images = random_images(3, seed=2)
    np.testing.assert_allclose(
        explain.grad_cam(with_activation, images), explain.grad_cam(logit_twin, images), atol=1e-6
    )


def test_batches_do_not_change_the_maps():
    model = case_study_cnn()
    images = random_images(5, seed=3)
    in_one_batch = explain.grad_cam(model, images, batch_size=5)
    # The same call twice is bit-identical on the CPU; other batch sizes differ by float32
    # rounding only (the kernels sum in a batch-dependent order).
    np.testing.assert_array_equal(explain.grad_cam(model, images, batch_size=5), in_one_batch)
    np.testing.assert_allclose(
        explain.grad_cam(model, images, batch_size=2), in_one_batch, atol=1e-6
    )


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


def test_bad_arguments_are_refused():
    model = case_study_cnn()
    with pytest.raises(ValueError, match=r"images must have shape \(n, height, width, channels\)"):
        explain.grad_cam(model, random_images(1)[0])
    with pytest.raises(ValueError, match="batch_size must be an integer of at least 1, got 0"):
        explain.grad_cam(model, random_images(1), batch_size=0)
    with pytest.raises(ValueError, match="no_such_layer"):
        explain.grad_cam(model, random_images(1), layer_name="no_such_layer")


def test_outputs_without_a_readable_logit_are_refused():
    def ending_in(last: layers.Layer, name: str) -> keras.Model:
        return keras.Sequential(
            [keras.Input((SIZE, SIZE, 1)), layers.Conv2D(2, 3), layers.Flatten(), last], name=name
        )

    with pytest.raises(ValueError, match="'softmax_model'.*activation 'softmax'"):
        explain.grad_cam(
            ending_in(layers.Dense(1, activation="softmax"), "softmax_model"), random_images(1)
        )
    with pytest.raises(ValueError, match="'two_units'.*one output with one unit"):
        explain.grad_cam(ending_in(layers.Dense(2), "two_units"), random_images(1))


class ShiftedDense(layers.Dense):
    """A Dense layer that adds 5 to its pre-activation: its logit is not input @ kernel + bias."""

    def call(self, inputs):
        return self.activation(keras.ops.matmul(inputs, self.kernel) + self.bias + 5.0)


def test_a_last_layer_whose_logit_cannot_be_rebuilt_is_refused():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            layers.Conv2D(2, 3),
            layers.Flatten(),
            ShiftedDense(1, activation="sigmoid"),
        ],
        name="shifted",
    )
    with pytest.raises(RuntimeError, match="'shifted': the sigmoid of the logit rebuilt"):
        explain.grad_cam(
            model, np.zeros((2, SIZE, SIZE, 1), np.uint8)
        )  # logit 0, output sigmoid(5)


# ---------------------------------------------------------------------------------------
# Overlays
# ---------------------------------------------------------------------------------------


def test_overlay_mixes_gray_and_heat_and_is_written_atomically(tmp_path):
    image = np.full((SIZE, SIZE, 1), 100, dtype=np.uint8)
    heat = np.zeros((SIZE, SIZE), dtype=np.float32)
    mixed = explain.overlay(image, heat, alpha=0.0)
    assert mixed.shape == (SIZE, SIZE, 3) and mixed.dtype == np.uint8
    assert np.all(mixed == 100)  # alpha 0: the gray image alone
    path = explain.save_overlay(tmp_path / "out" / "x.png", image, heat)
    from PIL import Image

    with Image.open(path) as written:
        assert written.size == (SIZE, SIZE) and written.mode == "RGB"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.png"]  # no temporary left


def test_overlay_refuses_a_heatmap_of_another_size_and_writes_nothing(tmp_path):
    image = np.zeros((SIZE, SIZE, 1), dtype=np.uint8)
    with pytest.raises(
        ValueError,
        match=r"heatmap must have the image's height and width \(32, 32\), got \(16, 16\)",
    ):
        explain.save_overlay(tmp_path / "x.png", image, np.zeros((16, 16)))
    with pytest.raises(ValueError, match="alpha must be in"):
        explain.overlay(image, np.zeros((SIZE, SIZE)), alpha=1.5)
    assert not list(tmp_path.iterdir())
