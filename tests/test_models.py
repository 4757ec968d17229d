"""Tests of helpers.models: the five architectures, their training settings, output kinds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from helpers import models  # noqa: E402
from helpers.models import BaseWeightsWarning  # noqa: E402

SETTINGS = {  # model id: (optimizer class, learning rate, output, from_logits)
    "model_1": ("RMSprop", 1e-4, "probability", False),
    "model_2": ("RMSprop", 1e-5, "probability", False),
    "model_3": ("Adam", 1e-5, "probability", False),
    "model_4": ("RMSprop", 1e-4, "logit", True),
    "model_5": ("RMSprop", 1e-4, "logit", True),
    "model_6": ("AdamW", 2e-3, "logit", True),
}


@pytest.fixture(scope="module")
def built_models():
    """All five models at 32 px, MobileNetV2 without pretrained weights."""
    return {mid: models.build_model(mid, image_size=32, base_weights=None) for mid in models.MODELS}


def layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def of_type(model, name: str) -> list:
    return [layer for layer in model.layers if type(layer).__name__ == name]


def test_registry_lists_the_five_case_study_models_and_model_6():
    from helpers import config

    assert tuple(models.MODELS) == config.MODEL_IDS
    assert config.MODEL_IDS == ("model_1", "model_2", "model_3", "model_4", "model_5", "model_6")
    assert [m for m in models.MODELS if models.MODELS[m].case_study] == list(config.CASE_STUDY_MODEL_IDS)
    for mid, (optimizer, lr, output, _) in SETTINGS.items():
        spec = models.get_spec(mid)
        assert spec.model_id == mid
        assert (spec.optimizer, spec.learning_rate, spec.output) == (optimizer.lower(), lr, output)
        assert spec.uses_mobilenet == (mid in ("model_4", "model_5"))


def test_unknown_model_id_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        models.get_spec("model_9")
    message = str(info.value)
    assert "model_9" in message
    assert all(mid in message for mid in SETTINGS)
    with pytest.raises(ValueError, match="model_9"):
        models.build_model("model_9", image_size=32)


def _check_small_cnn(model, *, dropout, batch_norm):
    expected = ["InputLayer", "Rescaling"] + ["Conv2D", "MaxPooling2D"] * 3
    expected += ["Dropout"] if dropout is not None else []
    expected += ["Flatten", "Dense"]
    expected += ["BatchNormalization"] if batch_norm else []
    expected += ["Dense"]
    assert layer_types(model) == expected
    (rescaling,) = of_type(model, "Rescaling")
    assert rescaling.scale == pytest.approx(1 / 255) and rescaling.offset == 0
    convs = of_type(model, "Conv2D")
    assert [c.filters for c in convs] == [8, 16, 32]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    assert all(c.activation is keras.activations.relu for c in convs)
    assert all(p.pool_size == (2, 2) for p in of_type(model, "MaxPooling2D"))
    hidden, last = of_type(model, "Dense")
    assert hidden.units == 128 and hidden.activation is keras.activations.relu
    assert last.units == 1 and last.activation is keras.activations.sigmoid
    if dropout is not None:
        assert of_type(model, "Dropout")[0].rate == pytest.approx(dropout)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 1)


def test_model_1_layers(built_models):
    _check_small_cnn(built_models["model_1"].model, dropout=None, batch_norm=False)


def test_model_2_adds_dropout_and_batch_norm(built_models):
    _check_small_cnn(built_models["model_2"].model, dropout=0.2, batch_norm=True)


def test_model_3_lighter_dropout(built_models):
    _check_small_cnn(built_models["model_3"].model, dropout=0.1, batch_norm=True)


@pytest.mark.parametrize("mid", ["model_4", "model_5"])
def test_mobilenet_models_layers(built_models, mid):
    model = built_models[mid].model
    bases = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    assert len(bases) == 1
    base = bases[0]
    assert base.name.startswith("mobilenetv2")
    assert base.trainable is False
    assert base.trainable_weights == []
    assert base.output_shape[-1] == 1280
    types = layer_types(model)
    assert types[types.index(type(base).__name__) + 1 :] == ["GlobalAveragePooling2D", "Dropout", "Dense"]
    assert of_type(model, "Dropout")[0].rate == pytest.approx(0.2)
    last = model.layers[-1]
    assert last.units == 1 and last.activation is keras.activations.linear
    # Only the classifier head trains: its kernel and bias.
    assert [w.shape for w in model.trainable_weights] == [(1280, 1), (1,)]
    # MobileNetV2 expects [-1, 1]: the preprocessing maps 0 -> -1 and 255 -> 1.
    (pre,) = [layer for layer in of_type(model, "Rescaling")]
    assert pre.scale * 0 + pre.offset == pytest.approx(-1) and pre.scale * 255 + pre.offset == pytest.approx(1)
    augment = {"RandomFlip", "RandomRotation"} & set(types)
    if mid == "model_4":
        assert augment == {"RandomFlip", "RandomRotation"}
        assert types.index("RandomRotation") < types.index(type(base).__name__)
        assert of_type(model, "RandomFlip")[0].mode == "horizontal"
    else:
        assert augment == set()


@pytest.mark.parametrize("mid", list(SETTINGS))
def test_optimizer_learning_rate_and_loss(built_models, mid):
    optimizer, lr, output, from_logits = SETTINGS[mid]
    built = built_models[mid]
    model = built.model
    assert type(model.optimizer).__name__ == optimizer
    assert float(model.optimizer.learning_rate) == pytest.approx(lr, rel=1e-6)
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)
    assert model.loss.from_logits is from_logits
    assert built.output == output == models.output_kind(model) == built.spec.output
    assert built.base_weights == "none" and built.messages == []
    assert built.spec is models.get_spec(mid)


def test_logit_models_measure_accuracy_at_logit_zero(built_models):
    """A logit of 0.3 is a probability of 0.57: training accuracy must cut logits at 0."""
    for mid, (_, _, output, _) in SETTINGS.items():
        user_metrics = built_models[mid].model._compile_metrics._user_metrics  # Keras 3 internals
        (accuracy,) = [m for m in user_metrics if isinstance(m, keras.metrics.BinaryAccuracy)]
        assert accuracy.name == "accuracy"
        assert accuracy.threshold == (0.0 if output == "logit" else 0.5), mid


def test_builders_run_on_a_batch(built_models):
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3)).astype("float32")
    for mid, built in built_models.items():
        out = np.asarray(built.model(images, training=False))
        assert out.shape == (2, 1) and np.isfinite(out).all(), mid
        if built.output == "probability":
            assert ((out >= 0) & (out <= 1)).all()


def test_grayscale_small_cnn_and_rgb_only_mobilenet():
    built = models.build_model("model_1", image_size=32, channels=1)
    assert built.model.input_shape == (None, 32, 32, 1)
    with pytest.raises(ValueError, match="3-channel"):
        models.build_model("model_5", image_size=32, channels=1, base_weights=None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": -1}, "image_size"),
        ({"image_size": 1.5}, "image_size"),
        ({"image_size": True}, "image_size"),
        ({"channels": 2}, "channels"),
    ],
)
def test_build_model_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.build_model("model_1", **{"image_size": 32, **kwargs})


def test_mobilenet_needs_at_least_32_pixels():
    with pytest.raises(ValueError, match=">= 32"):
        models.build_model("model_4", image_size=16, base_weights=None)


def test_missing_base_weights_file_is_named(tmp_path):
    missing = tmp_path / "weights" / "mobilenet.h5"
    with pytest.raises(FileNotFoundError) as info:
        models.build_model("model_5", image_size=32, base_weights=missing)
    assert str(missing) in str(info.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels" in str(info.value)


def test_mobilenet_weights_filename():
    assert (
        models.mobilenet_weights_filename(128)
        == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5"
    )
    # Keras falls back to the 224 weights for other sizes.
    assert models.mobilenet_weights_filename(32).endswith("_1.0_224_no_top.h5")
    assert models.mobilenet_weights_filename(96, alpha=0.5).endswith("_0.5_96_no_top.h5")


# ---------------------------------------------------------------------------------------
# ImageNet weights without network
# ---------------------------------------------------------------------------------------


def _offline_mobilenet(monkeypatch, error: Exception):
    real = keras.applications.MobileNetV2
    calls = []

    def fake(*args, **kwargs):
        calls.append(kwargs.get("weights"))
        if kwargs.get("weights") == "imagenet":
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(keras.applications, "MobileNetV2", fake)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    return calls


def test_imagenet_without_network_warns_and_falls_back_to_random(monkeypatch):
    calls = _offline_mobilenet(
        monkeypatch,
        Exception(
            "URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/"
            "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5: "
            "None -- [Errno -3] Temporary failure in name resolution"
        ),
    )
    with pytest.warns(BaseWeightsWarning) as record:
        built = models.build_model("model_4", image_size=128, base_weights="imagenet")
    assert calls == ["imagenet", None]
    assert built.base_weights == "random"
    message = str(record[0].message)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5" in message
    assert ".keras/models" in message
    assert "URL fetch failure" in message and "RANDOMLY INITIALISED" in message
    assert built.messages == [message]
    base = [layer for layer in built.model.layers if isinstance(layer, keras.Model)][0]
    assert base.trainable is False
    assert built.output == "logit" == models.output_kind(built.model)


def test_imagenet_failure_with_an_empty_message_still_falls_back(monkeypatch):
    _offline_mobilenet(monkeypatch, ConnectionResetError())
    with pytest.warns(BaseWeightsWarning):
        built = models.build_model("model_5", image_size=32, base_weights="imagenet")
    assert built.base_weights == "random"


def test_failure_without_imagenet_is_not_hidden(monkeypatch):
    _offline_mobilenet(monkeypatch, Exception("unused"))

    def broken(*args, **kwargs):
        raise RuntimeError("broken build")

    monkeypatch.setattr(keras.applications, "MobileNetV2", broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BaseWeightsWarning)
        with pytest.raises(RuntimeError, match="broken build"):
            models.build_model("model_5", image_size=32, base_weights=None)


# ---------------------------------------------------------------------------------------
# output_kind
# ---------------------------------------------------------------------------------------


def _tiny(last_layer):
    inputs = keras.Input(shape=(4,))
    return keras.Model(inputs, last_layer(inputs))


def test_output_kind_reads_the_last_layer():
    assert models.output_kind(_tiny(layers.Dense(1, activation="sigmoid"))) == "probability"
    assert models.output_kind(_tiny(layers.Dense(1))) == "logit"
    assert models.output_kind(_tiny(layers.Dense(1, activation="linear"))) == "logit"


@pytest.mark.parametrize(
    "last",
    [
        lambda: layers.Dense(1, activation="relu"),
        lambda: layers.Dense(2, activation="softmax"),
        lambda: layers.Dense(1, activation="tanh"),
        lambda: layers.Dropout(0.5),
    ],
    ids=["relu", "softmax", "tanh", "no-activation"],
)
def test_output_kind_refuses_other_last_layers(last):
    model = _tiny(last())
    with pytest.raises(ValueError, match="probabilities or logits") as info:
        models.output_kind(model)
    assert model.layers[-1].name in str(info.value)


def test_model_6_is_a_grayscale_residual_cnn_with_its_own_training_recipe():
    spec = models.get_spec("model_6")
    assert (spec.color_mode, spec.schedule, spec.use_class_weights) == ("grayscale", "cosine", True)
    assert spec.weight_decay > 0 and not spec.uses_mobilenet and not spec.case_study
    built = models.build_model("model_6", image_size=32, channels=1)
    model = built.model
    assert model.input_shape == (None, 32, 32, 1)
    assert models.output_kind(model) == "logit"
    assert len(of_type(model, "Add")) == 4  # four residual blocks
    assert of_type(model, "PerImageStandardization")
    assert type(model.optimizer).__name__ == "AdamW"
    assert model.optimizer.weight_decay == pytest.approx(spec.weight_decay)
    assert model.loss.get_config()["from_logits"] is True
    # the case-study models keep their settings: no class weights, constant rate, RGB
    for mid in ("model_1", "model_4"):
        other = models.get_spec(mid)
        assert (other.color_mode, other.schedule, other.use_class_weights) == ("rgb", "constant", False)


def test_a_spec_variant_is_built_as_given_and_must_be_for_the_same_model():
    from dataclasses import replace

    spec = models.get_spec("model_6")
    variant = replace(spec, builder_options={**spec.builder_options, "augment": "none", "standardize": False},
                      optimizer="rmsprop", learning_rate=1e-4)
    model = models.build_model("model_6", image_size=32, channels=1, spec=variant).model
    assert not [t for t in layer_types(model) if t.startswith("Random")]
    assert not of_type(model, "PerImageStandardization")
    assert type(model.optimizer).__name__ == "RMSprop"
    with pytest.raises(ValueError, match="spec is for 'model_6', not 'model_1'"):
        models.build_model("model_1", image_size=32, spec=variant)
