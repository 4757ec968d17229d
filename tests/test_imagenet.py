"""The embedded ImageNet MobileNetV2 converts to Keras faithfully, offline, and is cached.

The reference is the TFLite interpreter itself, run without delegates and with every tensor
kept, on two kinds of real photographs: the embedded cat photo and chest X-rays from the
embedded test folder. The TFLite model rounds every activation to int8 while the converted
Keras model computes in float32, so the two can only agree up to that rounding: each
convolution is checked exactly (TFLite's own input in, TFLite's output within its rounding
out), and the whole network by correlation and ranking of its logits.
"""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from helpers import config, imagenet

#: ImageNet classes (Keras' 1000-way indices come from the labels file) that are cats.
CAT_CLASSES = {
    "Egyptian cat",
    "tabby, tabby cat",
    "tiger cat",
    "Persian cat",
    "Siamese cat, Siamese",
}
XRAY_TEST_DIR = config.DEFAULT_DATA_DIR / "test"


def first_test_xrays(per_class: int) -> list:
    """The first ``per_class`` files (sorted by name) of each class of the test folder:
    a fixed rule, not a choice by result."""
    files = []
    for class_name in config.CLASS_NAMES:
        files += sorted((XRAY_TEST_DIR / class_name).iterdir())[:per_class]
    return files


def photo_uint8(path, size: int = 224) -> np.ndarray:
    """A photo as a (1, size, size, 3) uint8 batch: centre square crop, bilinear resize."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)[None]


class TFLiteReference:
    """The TFLite model with every intermediate tensor kept, dequantised on request."""

    def __init__(self):
        self.interpreter = imagenet.tflite_interpreter(
            imagenet.EMBEDDED_TFLITE, experimental_preserve_all_tensors=True
        )
        self.input = self.interpreter.get_input_details()[0]
        self.tensors = {d["index"]: d for d in self.interpreter.get_tensor_details()}
        ops = self.interpreter._get_ops_details()
        self.convolutions = [op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
        # The logits are the softmax's input (int8); the model's own output is the uint8 softmax.
        self.logits_index = next(op for op in ops if op["op_name"] == "SOFTMAX")["inputs"][0]

    def keras_input(self, image_uint8: np.ndarray) -> np.ndarray:
        """The float input TFLite actually computes with: (q - zero point) * scale.

        That is (q - 127) / 127.5, Keras' [-1, 1] range shifted by 1/127.5 from Keras'
        ``preprocess_input`` (q / 127.5 - 1); feeding the same real values to both models
        keeps that shift out of the comparison.
        """
        scale, zero_point = self.input["quantization"]
        return ((image_uint8.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def run(self, image_uint8: np.ndarray) -> None:
        assert self.input["dtype"] == np.uint8 and image_uint8.dtype == np.uint8
        self.interpreter.set_tensor(self.input["index"], image_uint8)
        self.interpreter.invoke()

    def dequantized(self, index: int) -> tuple[np.ndarray, float, int]:
        detail = self.tensors[index]
        scale, zero_point = detail["quantization"]
        values = self.interpreter.get_tensor(index).astype(np.float32)
        return (values - zero_point) * scale, scale, zero_point

    def logits(self, image_uint8: np.ndarray) -> np.ndarray:
        """The 1000 ImageNet logits (background dropped), as TFLite computes them."""
        self.run(image_uint8)
        return self.dequantized(self.logits_index)[0].reshape(-1)[1:]


@pytest.fixture(scope="module")
def reference() -> TFLiteReference:
    return TFLiteReference()


@pytest.fixture(scope="module")
def top_model() -> keras.Model:
    """The converted 224 px model with its classifier, giving logits."""
    return imagenet.convert_tflite(include_top=True, input_size=224, classifier_activation=None)


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("weights-cache")


@pytest.fixture(scope="module")
def weights_file(weights_cache):
    return imagenet.mobilenet_v2_weights(cache_dir=weights_cache)


@pytest.fixture(scope="module")
def class_names() -> tuple[str, ...]:
    return imagenet.imagenet_class_names()


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------------------------------
# Pieces, hand-computed
# ---------------------------------------------------------------------------------------


def test_dequantize_per_channel_and_per_tensor():
    values = np.array([[1, -2, 3], [4, 5, -6]], dtype=np.int8)
    per_row = imagenet.dequantize(values, np.array([0.5, 2.0]), np.array([1, 0]), axis=0)
    np.testing.assert_array_equal(per_row, [[0.0, -1.5, 1.0], [8.0, 10.0, -12.0]])
    per_column = imagenet.dequantize(
        values, np.array([1.0, 0.5, 0.25]), np.array([0, 0, 2]), axis=1
    )
    np.testing.assert_array_equal(per_column, [[1.0, -1.0, 0.25], [4.0, 2.5, -2.0]])
    whole = imagenet.dequantize(values, np.array([0.1]), np.array([0]), axis=0)
    np.testing.assert_allclose(whole, values * 0.1, rtol=1e-6)
    with pytest.raises(ValueError, match="expected 1 or 2 scales"):
        imagenet.dequantize(values, np.array([1.0, 2.0, 3.0]), np.array([0]), axis=0)


def test_folded_batch_norm_layers_add_the_bias(top_model):
    # x + beta to float32 rounding: the layer multiplies by rsqrt(variance + epsilon) =
    # rsqrt(1), which TensorFlow's vectorised rsqrt gives as 1 on some hosts (then the
    # sum is exact) and as 1 - 2**-24 on others (AVX-512, measured: up to 2 units in the
    # last place of the larger of |x| and |x + beta|).
    rng = np.random.default_rng(0)
    for name in ("bn_Conv1", "block_5_project_BN", "Conv_1_bn"):
        bn = top_model.get_layer(name)
        gamma, beta, mean, variance = bn.get_weights()
        x = rng.normal(scale=3.0, size=(2, 3, 3, beta.shape[0])).astype(np.float32)
        np.testing.assert_array_equal(gamma, 1.0)
        np.testing.assert_array_equal(mean, 0.0)
        assert np.float32(variance[0]) + np.float32(bn.epsilon) == 1.0
        # Inference mode, as the weights are meant to be used.
        expected = x + beta
        ulp = np.spacing(np.maximum(np.abs(x), np.abs(expected)))
        error_in_ulps = np.abs(bn(x, training=False).numpy() - expected) / ulp
        assert error_in_ulps.max() <= 2.0, f"{name}: {error_in_ulps.max()} ulps"


def test_class_names_follow_keras_order(class_names, tmp_path):
    assert len(class_names) == 1000
    assert class_names[0] == "tench, Tinca tinca" and class_names[285] == "Egyptian cat"
    bad = tmp_path / "labels.txt"
    bad.write_text("cat\ndog\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"labels.txt: expected 1001 lines starting with 'background'"
    ):
        imagenet.imagenet_class_names(bad)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        imagenet.imagenet_class_names(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------------------
# The conversion against the TFLite interpreter
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("photo", ["cat", "xray"])
def test_every_convolution_reproduces_tflite_within_its_rounding(top_model, reference, photo):
    """Fed TFLite's own (dequantised) input, each Keras convolution + folded BN (+ ReLU6)
    gives TFLite's output to within 0.75 of that output's quantisation step: half a step is
    TFLite's final rounding, the rest its fixed-point rescaling (measured worst: 0.625)."""
    path = imagenet.WEIGHTS_DIR / "cat_720p.jpg" if photo == "cat" else first_test_xrays(1)[0]
    reference.run(photo_uint8(path))
    layers = top_model.layers
    weighted = [
        i
        for i, layer in enumerate(layers)
        if isinstance(
            layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
        )
    ]
    assert len(weighted) == len(reference.convolutions) == 53
    for op, i in zip(reference.convolutions, weighted):
        x, _, _ = reference.dequantized(op["inputs"][0])
        expected, scale, zero_point = reference.dequantized(op["outputs"][0])
        layer = layers[i]
        if isinstance(layer, keras.layers.Dense):
            got = layer(x.reshape(1, -1)).numpy()
            expected = expected.reshape(1, -1)[:, 1:]  # background logit dropped
        else:
            if layer.padding == "valid" and layer.strides[0] == 2:
                # Keras pads these explicitly (ZeroPadding2D before the layer): bottom/right.
                x = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
            got = layers[i + 1](layer(x)).numpy()
            if isinstance(layers[i + 2], keras.layers.ReLU):
                got = layers[i + 2](got).numpy()
        # TFLite saturates at the ends of the int8 range; Keras does not.
        got = np.clip(got, (-128 - zero_point) * scale, (127 - zero_point) * scale)
        worst_in_steps = float(np.max(np.abs(got - expected)) / scale)
        assert worst_in_steps <= 0.75, (
            f"{layer.name}: off by {worst_in_steps:.3f} quantisation steps"
        )


def test_cat_photo_logits_match_tflite(top_model, reference, class_names):
    image = photo_uint8(imagenet.WEIGHTS_DIR / "cat_720p.jpg")
    tflite_logits = reference.logits(image)
    keras_logits = top_model(reference.keras_input(image), training=False).numpy()[0]
    # Not 0.999: TFLite rounds every activation to int8 (up to 0.35 per step in the
    # projection layers), the float model does not; measured 0.996.
    assert pearson(tflite_logits, keras_logits) >= 0.99
    assert keras_logits.argmax() == tflite_logits.argmax()
    assert class_names[int(keras_logits.argmax())] in CAT_CLASSES


def test_chest_xray_logits_match_tflite(top_model, reference):
    """X-rays are far from ImageNet: logits are flat and the top two often differ by one
    int8 step (0.063), so the ranking check is that each model's top-1 is in the other's
    top 3; top-1 equality would test TFLite's rounding, not the conversion."""
    images = [photo_uint8(path) for path in first_test_xrays(2)]
    for image in images:
        tflite_logits = reference.logits(image)
        keras_logits = top_model(reference.keras_input(image), training=False).numpy()[0]
        assert pearson(tflite_logits, keras_logits) >= 0.985  # measured 0.990-0.996 on 20
        assert keras_logits.argmax() in np.argsort(-tflite_logits)[:3]
        assert tflite_logits.argmax() in np.argsort(-keras_logits)[:3]


# ---------------------------------------------------------------------------------------
# The cached weights file
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [128, 64])
def test_no_top_base_loads_the_weights_file_at_any_size(weights_file, top_model, size):
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, weights=str(weights_file)
    )
    # Every weight loaded is the converted one (the file is the conversion, at any size).
    for layer in (layer for layer in base.layers if layer.weights):
        for loaded, converted in zip(
            layer.get_weights(), top_model.get_layer(layer.name).get_weights()
        ):
            np.testing.assert_array_equal(loaded, converted)
    batch = np.concatenate([photo_uint8(path, size) for path in first_test_xrays(1)])
    features = (
        base(batch.astype(np.float32) / 127.5 - 1.0, training=False).numpy().mean(axis=(1, 2))
    )
    assert features.shape == (2, 1280)
    assert np.all(features.std(axis=1) > 0.1)  # not constant across channels
    assert np.abs(features[0] - features[1]).max() > 0.1  # two X-rays, two feature vectors


def test_conversion_is_deterministic_and_independent_of_input_size(top_model):
    again = imagenet.convert_tflite(include_top=False, input_size=64)
    for layer in (layer for layer in again.layers if layer.weights):
        for first, second in zip(
            top_model.get_layer(layer.name).get_weights(), layer.get_weights()
        ):
            np.testing.assert_array_equal(first, second)


def test_cache_hit_does_not_convert_again(weights_file, weights_cache, monkeypatch):
    mtime = weights_file.stat().st_mtime_ns
    assert weights_file.parent == weights_cache and weights_file.name.endswith(".weights.h5")
    assert (
        f"keras-{keras.__version__}" in weights_file.name
        and imagenet.EMBEDDED_SHA256[:16] in weights_file.name
    )

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted although the cache holds the file")

    monkeypatch.setattr(imagenet, "convert_tflite", no_conversion)
    assert imagenet.mobilenet_v2_weights(cache_dir=weights_cache) == weights_file
    monkeypatch.setenv(imagenet.WEIGHTS_CACHE_ENV, str(weights_cache))
    assert imagenet.mobilenet_v2_weights() == weights_file
    assert weights_file.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in weights_cache.iterdir()) == [weights_file.name]


def test_cache_folder_comes_from_argument_then_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(imagenet.WEIGHTS_CACHE_ENV, raising=False)
    assert imagenet.weights_cache_dir() == config.REPO_ROOT / "_build" / "cache" / "weights"
    monkeypatch.setenv(imagenet.WEIGHTS_CACHE_ENV, str(tmp_path / "env"))
    assert imagenet.weights_cache_dir() == tmp_path / "env"
    assert imagenet.weights_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_failed_write_leaves_nothing_in_the_cache(monkeypatch, tmp_path):
    class FailingModel:
        def save_weights(self, path, overwrite=True):
            with open(path, "wb") as handle:
                handle.write(b"half a file")
            raise OSError("disk full")

    monkeypatch.setattr(imagenet, "convert_tflite", lambda *args, **kwargs: FailingModel())
    with pytest.raises(OSError, match="disk full"):
        imagenet.mobilenet_v2_weights(cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


# ---------------------------------------------------------------------------------------
# Refusing the wrong source
# ---------------------------------------------------------------------------------------


def test_source_with_another_hash_is_refused(tmp_path):
    other = tmp_path / "other.tflite"
    shutil.copyfile(imagenet.EMBEDDED_TFLITE, other)
    with open(other, "ab") as handle:
        handle.write(b"\0")
    other_sha = imagenet.file_sha256(other)
    for call in (
        lambda: imagenet.convert_tflite(other),
        lambda: imagenet.mobilenet_v2_weights(source=other, cache_dir=tmp_path / "cache"),
    ):
        with pytest.raises(imagenet.WeightsSourceError) as info:
            call()
        message = str(info.value)
        assert (
            str(other) in message and other_sha in message and imagenet.EMBEDDED_SHA256 in message
        )
    assert not (tmp_path / "cache").exists()
    # Deliberately passing another file is possible, by naming its hash.
    assert imagenet.verify_source(other, expected_sha256=other_sha) == other_sha


def test_missing_embedded_file_says_how_to_restore_it(monkeypatch, tmp_path):
    missing = tmp_path / imagenet.EMBEDDED_TFLITE.name
    monkeypatch.setattr(imagenet, "EMBEDDED_TFLITE", missing)
    for call in (
        lambda: imagenet.verify_source(missing),
        lambda: imagenet.base_weights_argument("imagenet"),
    ):
        with pytest.raises(FileNotFoundError) as info:
            call()
        message = str(info.value)
        assert str(missing) in message and "git checkout" in message
        assert "google-coral/test_data" in message and imagenet.SOURCE_COMMIT in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        imagenet.verify_source(tmp_path / "elsewhere.tflite")


def test_input_size_is_validated_before_converting():
    for bad in (16, 0, 128.0, True, "128"):
        with pytest.raises(ValueError, match="input_size must be an integer >= 32"):
            imagenet.convert_tflite(input_size=bad)


# ---------------------------------------------------------------------------------------
# base_weights_argument
# ---------------------------------------------------------------------------------------


def test_base_weights_argument_accepts_keywords_and_files(weights_file, weights_cache):
    assert imagenet.base_weights_argument("random") is None
    assert imagenet.base_weights_argument(None) is None
    assert imagenet.base_weights_argument("imagenet", cache_dir=weights_cache) == str(weights_file)
    assert imagenet.base_weights_argument("ImageNet", cache_dir=weights_cache) == str(weights_file)
    assert imagenet.base_weights_argument(weights_file) == str(weights_file)
    assert imagenet.base_weights_argument(str(weights_file)) == str(weights_file)


def test_base_weights_argument_refuses_everything_else(tmp_path):
    keras_name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_<size>_no_top.h5"
    with pytest.raises(FileNotFoundError) as info:
        imagenet.base_weights_argument(tmp_path / "absent_no_top.h5")
    assert "absent_no_top.h5" in str(info.value) and keras_name in str(info.value)
    assert "data/weights" in str(info.value)
    for bad in ("imagenet21k", "random_init", str(tmp_path / "model.keras"), "", 3):
        with pytest.raises(ValueError, match="'imagenet', 'random'") as info:
            imagenet.base_weights_argument(bad)
        assert keras_name in str(info.value)
    not_hdf5 = tmp_path / "junk.weights.h5"
    not_hdf5.write_bytes(b"not an HDF5 file")
    with pytest.raises(ValueError, match="junk.weights.h5 is not an HDF5 file"):
        imagenet.base_weights_argument(not_hdf5)
    folder = tmp_path / "folder.h5"
    folder.mkdir()
    with pytest.raises(ValueError, match="folder.h5 is a folder, not a file"):
        imagenet.base_weights_argument(folder)


def test_converting_leaves_the_random_streams_as_a_cache_hit_does(weights_file, tmp_path):
    """A chapter that converts the weights (empty cache, e.g. a fresh clone) must train like
    one that finds them: model_4 once scored test AUC 0.889 on a fresh clone and 0.841 with
    the cache warm, the same seed, because building the network drew from the seeded streams.
    """
    import random

    import tensorflow as tf

    from helpers import train

    def draws_after_weights(cache_dir):
        train.set_seed(7)
        imagenet.mobilenet_v2_weights(cache_dir=cache_dir)
        dense = keras.layers.Dense(3)
        dense.build((None, 4))  # initializer seeds come from Python's random
        return (
            np.asarray(dense.kernel),
            np.asarray(keras.random.normal((3,))),  # Keras' global SeedGenerator
            tf.random.uniform((3,)).numpy(),  # TensorFlow's op-level seeds
            np.random.rand(3),
            random.random(),
        )

    converted = draws_after_weights(tmp_path / "empty-cache")  # converts
    found = draws_after_weights(weights_file.parent)  # a cache hit: no conversion
    for a, b in zip(converted, found, strict=True):
        np.testing.assert_array_equal(a, b)
