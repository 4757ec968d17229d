"""Batch-norm adaptation (helpers.adapt): exact statistics, restored scores, refusals.

The central property: for a model whose BatchNormalization layers follow linear layers, an
input change ``x -> a * x + b`` (a > 0) only shifts and scales each BN layer's input per
channel, so re-estimating the statistics on the changed inputs gives back the scores of the
unchanged inputs (up to the layers' epsilon). Any layer measured out of graph order, in
training mode, or with momentum instead of exact moments would break that.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

pytest.importorskip("keras")

import keras
from keras import layers

from helpers.adapt import (
    MIN_ADAPT_IMAGES,
    AdaptationError,
    adapt_batchnorm,
    adaptation_report,
    adapted_layer_names,
)
from helpers.layers import PerImageStandardization

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

#: Epsilon of the dense model's BN layers: small, so that restored scores are exact to
#: float32 rounding (BN normalises by sqrt(var + epsilon), and a scaled input scales var).
EPS = 1e-6


def bn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]


def scores(model, x):
    return np.asarray(model.predict(x, verbose=0), dtype=np.float64).ravel()


def moments(values, axis=-1):
    values = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    values = values.reshape(-1, values.shape[-1])
    return values.mean(axis=0), values.var(axis=0)  # population variance (ddof=0)


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------


def dense_model(n_features=5):
    """Dense, BN, ReLU, Dense, BN, ReLU, Dense(sigmoid): both BNs follow linear layers."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((n_features,))
    x = layers.Dense(6)(inputs)
    x = layers.BatchNormalization(epsilon=EPS, name="bn_1")(x)
    x = layers.ReLU()(x)
    x = layers.Dense(4)(x)
    x = layers.BatchNormalization(epsilon=EPS, name="bn_2")(x)
    x = layers.ReLU()(x)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x), name="dense_bn")


def numpy_forward(model, x):
    """The dense model in NumPy (float64), with its BN statistics set to the population
    moments of their inputs over ``x``; returns the scores."""
    (w1, b1), (w2, b2), (w3, b3) = (
        layer.get_weights() for layer in model.layers if isinstance(layer, layers.Dense)
    )
    bn_1, bn_2 = bn_layers(model)
    h = x.astype(np.float64)
    for (w, b), bn in (((w1, b1), bn_1), ((w2, b2), bn_2)):
        z = h @ w + b
        mean, var = z.mean(axis=0), z.var(axis=0)
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(var.astype(np.float32))
        gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
        h = np.maximum(gamma * (z - mean) / np.sqrt(var + EPS) + beta, 0.0)
    return 1.0 / (1.0 + np.exp(-(h @ w3 + b3).ravel()))


def randomise_batchnorm(model, seed=1):
    """Give every BN layer non-trivial scale, offset and (wrong) statistics, as training would."""
    rng = np.random.default_rng(seed)
    for bn in bn_layers(model):
        shape = bn.gamma.shape
        bn.gamma.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        bn.beta.assign(rng.normal(0, 0.5, shape).astype(np.float32))
        bn.moving_mean.assign(rng.normal(0, 1, shape).astype(np.float32))
        bn.moving_variance.assign(rng.uniform(0.5, 2, shape).astype(np.float32))


def conv_model(size=12):
    """Conv2D (valid padding, linear) -> BN twice: a constant shift stays a per-channel constant."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(4, 3, padding="valid")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(4, 3, padding="valid")(x)
    x = layers.BatchNormalization()(x)
    x = layers.GlobalAveragePooling2D()(layers.ReLU()(x))
    return keras.Model(inputs, layers.Dense(1)(x))  # a logit: no sigmoid to flatten differences


def residual_block(x, filters: int, stride: int):
    """The book's model_6 block (copied from helpers.models, which is being removed)."""
    shortcut = x
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = layers.BatchNormalization()(shortcut)
    return layers.ReLU()(layers.Add()([x, shortcut]))


def residual_cnn(size=16, width=4, standardize=False):
    """A small model_6: augmentation, stem, residual blocks with shortcut BNs, dropout, logit."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.RandomTranslation(0.05, 0.05, fill_mode="constant")(x)
    x = layers.RandomZoom(0.1, fill_mode="constant")(x)
    x = layers.RandomRotation(0.03, fill_mode="constant")(x)
    if standardize:
        x = PerImageStandardization()(x)
    x = layers.Conv2D(width, 5, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    for multiple, stride in ((1, 1), (2, 2)):
        x = residual_block(x, width * multiple, stride)
    x = layers.Dropout(0.3)(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, layers.Dense(1)(x), name="small_model_6")
    randomise_batchnorm(model)
    # Inputs in [0, 1] give the stem small outputs, next to which BN's epsilon would matter;
    # larger stem weights keep the comparison about the statistics, not about epsilon.
    stem = model.get_layer("stem")
    stem.kernel.assign(stem.kernel * 10.0)
    return model


def case_study_model_2(size=16):
    """The case study's model_2: Rescaling, 3 x (Conv2D + MaxPool), Dropout, Flatten,
    Dense(128, relu), BatchNormalization, Dense(1, sigmoid)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (4, 8, 8):
        x = layers.MaxPooling2D()(layers.Conv2D(filters, 3, padding="same", activation="relu")(x))
    x = layers.Flatten()(layers.Dropout(0.5)(x))
    features = layers.Dense(128, activation="relu", name="features")(x)
    x = layers.BatchNormalization(name="bn")(features)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x), name="model_2")


@pytest.fixture(scope="module")
def uint8_images():
    return np.random.default_rng(0).integers(0, 256, size=(120, 16, 16, 1), dtype=np.uint8)


# ---------------------------------------------------------------------------------------
# Exact statistics
# ---------------------------------------------------------------------------------------


def test_statistics_are_the_exact_population_moments_whatever_the_batch_size():
    model = dense_model()
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(130, 5)).astype(np.float32)
    dense_1 = model.layers[1]
    expected_mean, expected_var = moments(
        x.astype(np.float64) @ dense_1.kernel.numpy() + dense_1.bias.numpy()
    )
    for batch_size in (32, 130, 1000):  # 130 = 4 batches of 32 and one of 2
        adapted = adapt_batchnorm(model, x, batch_size=batch_size)
        bn = adapted.get_layer("bn_1")
        np.testing.assert_allclose(bn.moving_mean.numpy(), expected_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy(), expected_var, rtol=1e-5)
        assert adapted_layer_names(adapted) == ("bn_1", "bn_2")
        assert adaptation_report(adapted).n_images == 130


def test_case_study_model_2_bn_after_dense_gets_the_inference_mode_feature_moments():
    model = case_study_model_2()
    images = np.random.default_rng(1).integers(0, 256, size=(110, 16, 16, 3), dtype=np.uint8)
    adapted = adapt_batchnorm(model, images)
    assert adapted_layer_names(adapted) == ("bn",)
    # Dropout active (training mode) would change these features; inference mode does not.
    features = keras.Model(model.inputs, model.get_layer("features").output).predict(
        images, verbose=0
    )
    mean, var = moments(features)
    np.testing.assert_allclose(
        adapted.get_layer("bn").moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        adapted.get_layer("bn").moving_variance.numpy(), var, rtol=1e-4, atol=1e-8
    )


# ---------------------------------------------------------------------------------------
# Shifted and scaled inputs: the scores come back
# ---------------------------------------------------------------------------------------


def test_dense_model_scores_are_restored_after_a_shift_and_scale_of_the_inputs():
    model = dense_model()
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 3.0, size=(200, 5)).astype(np.float32)
    reference = numpy_forward(model, x)  # BN statistics now the population moments over x
    assert scores(model, x) == pytest.approx(reference, abs=1e-5)
    a, b = 0.5, np.array([4.0, -3.0, 2.0, 6.0, -5.0])
    shifted = (a * x + b).astype(np.float32)
    assert np.abs(scores(model, shifted) - reference).max() > 0.2  # the shift matters
    adapted = adapt_batchnorm(model, shifted)
    assert scores(adapted, shifted) == pytest.approx(reference, abs=1e-5)


def test_conv_model_scores_are_restored_after_a_contrast_and_brightness_change():
    model = conv_model()
    randomise_batchnorm(model)
    images = np.random.default_rng(2).uniform(0, 255, size=(100, 12, 12, 3)).astype(np.float32)
    reference_model = adapt_batchnorm(model, images)
    reference = scores(reference_model, images)
    darker = 0.6 * images + 40.0
    assert np.abs(scores(reference_model, darker) - reference).max() > 0.3  # scores spread ~0.1
    assert scores(adapt_batchnorm(model, darker), darker) == pytest.approx(reference, abs=1e-5)


def test_residual_cnn_scores_are_restored_and_every_bn_is_adapted_in_graph_order(uint8_images):
    model = residual_cnn()
    names = [bn.name for bn in bn_layers(model)]
    assert len(names) == 6  # stem, 2 + 2 in the blocks, 1 shortcut
    reference_model = adapt_batchnorm(model, uint8_images)
    assert adapted_layer_names(reference_model) == tuple(names)
    reference = scores(reference_model, uint8_images)
    low_contrast = uint8_images.astype(np.float32) * 0.4  # zero padding keeps a pure scale exact
    assert np.abs(scores(reference_model, low_contrast) - reference).max() > 1.0
    # Downstream layers measured before their upstream ones were adapted would get the
    # statistics of wrongly normalised features, and the scores would not come back.
    restored = scores(adapt_batchnorm(model, low_contrast), low_contrast)
    assert restored == pytest.approx(reference, abs=5e-3)


def test_the_original_model_is_unchanged_and_the_copy_is_independent(uint8_images):
    model = residual_cnn()
    before = [w.copy() for w in model.get_weights()]
    adapted = adapt_batchnorm(model, uint8_images)
    after = model.get_weights()
    assert len(before) == len(after) and all(np.array_equal(b, a) for b, a in zip(before, after))
    assert adapted is not model
    assert not any(a is b for a, b in zip(adapted.weights, model.weights))
    # Only the BN statistics differ between original and copy.
    changed = {
        w.path
        for w, o in zip(adapted.weights, model.weights)
        if not np.array_equal(w.numpy(), o.numpy())
    }
    assert changed and all(path.endswith(("moving_mean", "moving_variance")) for path in changed)


def test_adaptation_is_deterministic(uint8_images):
    model = residual_cnn()
    first = adapt_batchnorm(model, uint8_images, batch_size=16).get_weights()
    second = adapt_batchnorm(model, uint8_images, batch_size=16).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_custom_layers_survive_the_copy(uint8_images):
    model = residual_cnn(standardize=True)
    adapted = adapt_batchnorm(model, uint8_images)
    copied = [layer for layer in adapted.layers if isinstance(layer, PerImageStandardization)]
    original = [layer for layer in model.layers if isinstance(layer, PerImageStandardization)]
    assert len(copied) == 1 and copied[0] is not original[0]
    assert copied[0].epsilon == pytest.approx(1e-6)
    # Per-image standardisation cancels a per-image scale, so adapting to scaled images
    # gives the same statistics as adapting to the originals.
    scaled = adapt_batchnorm(model, uint8_images.astype(np.float32) * 0.5)
    assert scores(scaled, uint8_images) == pytest.approx(scores(adapted, uint8_images), abs=1e-4)


# ---------------------------------------------------------------------------------------
# Nested models
# ---------------------------------------------------------------------------------------


def nested_model(top_bn=True):
    """A frozen nested base with its own BN (like MobileNetV2), then an optional top BN."""
    keras.utils.set_random_seed(0)
    base_in = keras.Input((5,))
    y = layers.BatchNormalization(name="inner_bn")(layers.Dense(4, name="inner_dense")(base_in))
    base = keras.Model(base_in, layers.ReLU()(y), name="base")
    base.trainable = False
    inputs = keras.Input((5,))
    x = layers.Dense(3, name="top_dense")(base(inputs))
    if top_bn:
        x = layers.BatchNormalization(name="top_bn")(x)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x))


def test_bn_inside_a_nested_base_is_left_alone_by_default():
    model = nested_model()
    randomise_batchnorm(model.get_layer("base"))
    x = np.random.default_rng(0).normal(2.0, 1.5, size=(100, 5)).astype(np.float32)
    adapted = adapt_batchnorm(model, x)
    report = adaptation_report(adapted)
    assert report.adapted == ("top_bn",) and report.skipped_nested == ("base/inner_bn",)
    inner = adapted.get_layer("base").get_layer("inner_bn")
    original_inner = model.get_layer("base").get_layer("inner_bn")
    assert np.array_equal(inner.moving_mean.numpy(), original_inner.moving_mean.numpy())
    assert np.array_equal(inner.moving_variance.numpy(), original_inner.moving_variance.numpy())
    assert adapted.get_layer("base").trainable is False


def test_bn_inside_a_nested_base_is_adapted_when_asked_first():
    model = nested_model()
    randomise_batchnorm(model.get_layer("base"))
    x = np.random.default_rng(0).normal(2.0, 1.5, size=(100, 5)).astype(np.float32)
    adapted = adapt_batchnorm(model, x, skip_nested_models=False)
    assert adapted_layer_names(adapted) == ("base/inner_bn", "top_bn")
    dense = model.get_layer("base").get_layer("inner_dense")
    mean, var = moments(x.astype(np.float64) @ dense.kernel.numpy() + dense.bias.numpy())
    inner = adapted.get_layer("base").get_layer("inner_bn")
    np.testing.assert_allclose(inner.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inner.moving_variance.numpy(), var, rtol=1e-5)
    # The top BN was measured through the adapted base.
    features = keras.Model(adapted.inputs, adapted.get_layer("top_dense").output).predict(
        x, verbose=0
    )
    top_mean, _ = moments(features)
    np.testing.assert_allclose(
        adapted.get_layer("top_bn").moving_mean.numpy(), top_mean, rtol=1e-5, atol=1e-6
    )


def test_bn_only_inside_a_skipped_nested_base_is_refused():
    x = np.zeros((100, 5), dtype=np.float32)
    with pytest.raises(
        AdaptationError, match=r"only inside nested models \(base/inner_bn\).*nothing to adapt"
    ):
        adapt_batchnorm(nested_model(top_bn=False), x)


# ---------------------------------------------------------------------------------------
# The interface and its refusals
# ---------------------------------------------------------------------------------------


def test_signature_takes_no_labels():
    parameters = inspect.signature(adapt_batchnorm).parameters
    assert list(parameters) == [
        "model",
        "images",
        "batch_size",
        "skip_nested_models",
        "min_images",
        "reuse_cached_parts",
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(parameters.values())[2:])
    assert MIN_ADAPT_IMAGES == 100


def test_a_model_without_batchnorm_is_refused():
    inputs = keras.Input((5,))
    model = keras.Model(
        inputs, layers.Dense(1, activation="sigmoid")(layers.Dense(3)(inputs)), name="plain"
    )
    with pytest.raises(AdaptationError, match="model 'plain' has no BatchNormalization layer"):
        adapt_batchnorm(model, np.zeros((100, 5), dtype=np.float32))


def test_too_few_images_are_refused_unless_the_minimum_is_lowered():
    model = dense_model()
    x = np.random.default_rng(0).normal(size=(99, 5)).astype(np.float32)
    with pytest.raises(AdaptationError, match=r"99 image\(s\) given; at least 100 .* noise"):
        adapt_batchnorm(model, x)
    assert adapted_layer_names(adapt_batchnorm(model, x[:20], min_images=10)) == ("bn_1", "bn_2")


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (
            np.zeros((100, 16, 16, 3), np.uint8),
            r"images have shape \(100, 16, 16, 3\); .* \(n, 16, 16, 1\)",
        ),
        (np.zeros((100, 8, 8, 1), np.uint8), r"images have shape \(100, 8, 8, 1\)"),
        (np.zeros((100, 16, 16), np.uint8), r"images have shape \(100, 16, 16\)"),
        (np.zeros((100, 16, 16, 1), np.int32), "dtype uint8 or float, got int32"),
        (np.zeros((100, 16, 16, 1), bool), "dtype uint8 or float, got bool"),
        (np.full((100, 16, 16, 1), np.nan, np.float32), "NaN or infinite"),
        ([[0.0]] * 100, "NumPy array, got list"),
    ],
)
def test_bad_images_are_refused(images, message):
    with pytest.raises(AdaptationError, match=message):
        adapt_batchnorm(residual_cnn(), images)


@pytest.mark.parametrize(
    "option", [{"batch_size": 0}, {"batch_size": 2.5}, {"batch_size": True}, {"min_images": 0}]
)
def test_bad_options_are_refused(option, uint8_images):
    name = next(iter(option))
    with pytest.raises(AdaptationError, match=f"{name} must be a positive integer"):
        adapt_batchnorm(residual_cnn(), uint8_images, **option)


def test_shared_bn_layers_and_non_models_are_refused():
    shared = layers.BatchNormalization(name="shared_bn")
    inputs = keras.Input((4,))
    outputs = layers.Dense(1)(layers.Add()([shared(inputs), shared(inputs * 2.0)]))
    with pytest.raises(AdaptationError, match="layer 'shared_bn' is called 2 times"):
        adapt_batchnorm(keras.Model(inputs, outputs), np.zeros((100, 4), np.float32))
    with pytest.raises(AdaptationError, match="model must be a keras.Model, got str"):
        adapt_batchnorm("model.keras", np.zeros((100, 4), np.float32))


def test_a_model_not_made_by_adaptation_has_no_report():
    with pytest.raises(AdaptationError, match="was not made by adapt_batchnorm"):
        adapted_layer_names(dense_model())
