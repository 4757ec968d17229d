"""The case study's five models, in Keras 3 idiom, and a registry by model id.

Every builder returns a :class:`BuiltModel`: the Keras model plus what evaluation must know
about it: whether its output is a probability (sigmoid) or a logit, and which base weights
it really got. Evaluation reads the output kind from the model itself
(:func:`output_kind`), so a logit can never be cut at 0.5 as if it were a probability.

======== ==================================================== ========= ======
model    architecture (input 128 x 128 x 3)                   optimiser lr
======== ==================================================== ========= ======
model_1  Rescaling; 3 x (Conv 8/16/32 + MaxPool); Dense 128;  RMSprop   1e-4
         Dense 1 sigmoid
model_2  model_1 + Dropout 0.2 after the last pool,           RMSprop   1e-5
         BatchNorm after Dense 128
model_3  model_2 with Dropout 0.1                             Adam      1e-5
model_4  flip + rotate; MobileNetV2 (frozen, ImageNet);       RMSprop   1e-4
         GAP; Dropout 0.2; Dense 1 logit
model_5  model_4 without augmentation                         RMSprop   1e-4
======== ==================================================== ========= ======

model_6, the book's own model (not the case study's), takes grayscale input: a small residual
network trained from scratch with AdamW, a cosine learning-rate schedule and class weights
(:func:`build_residual_cnn`, :data:`MODEL_6_SETTINGS`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from helpers import config

OutputKind = Literal["probability", "logit"]


class BaseWeightsWarning(UserWarning):
    """ImageNet weights were asked for but could not be had; the base is random."""


@dataclass(frozen=True)
class ModelSpec:
    """What defines one case-study model: its builder and training settings."""

    model_id: str
    title: str
    builder: Callable
    optimizer: str
    learning_rate: float
    output: OutputKind
    uses_mobilenet: bool = False
    notes: str = ""
    #: "rgb" (the case study) or "grayscale" (model_6): how the images are decoded.
    color_mode: str = "rgb"
    #: Decoupled weight decay (AdamW only).
    weight_decay: float = 0.0
    #: "constant" learning rate (the case study) or "cosine" decay to 0 over the epochs.
    schedule: str = "constant"
    #: Weight the loss by inverse class frequency (:func:`helpers.data.class_weights`).
    use_class_weights: bool = False
    #: Keyword arguments of the builder beyond the input shape.
    builder_options: dict = field(default_factory=dict)
    #: False for the case study's five models, True for the book's own.
    case_study: bool = True


@dataclass
class BuiltModel:
    """A freshly built, compiled model and what evaluation needs to know of it.

    Attributes
    ----------
    model : keras.Model
    spec : ModelSpec
    output : {"probability", "logit"}
        What the last layer gives (also readable from the model: :func:`output_kind`).
    base_weights : str
        ``"imagenet"``, ``"random"``, a weights file path, or ``"none"`` (no pretrained base).
    """

    model: object
    spec: ModelSpec
    output: OutputKind
    base_weights: str = "none"
    messages: list[str] = field(default_factory=list)
    #: Name of a frozen layer whose outputs can be cached during training (model 5), or None.
    frozen_feature_layer: str | None = None
    #: Name of the frozen base (models 4 and 5), whose outputs on the un-augmented
    #: validation images can be cached for the per-epoch validation pass, or None.
    frozen_base_layer: str | None = None
    #: The ``tf.distribute`` strategy whose scope holds the variables (None: the default).
    strategy: object = None


# ---------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------


def conv_block(x, filters: int):
    """Conv2D(filters, 3, same, relu) followed by 2 x 2 max pooling, as in the case study."""
    from keras import layers

    x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    return layers.MaxPooling2D()(x)


def _small_cnn(
    input_shape: tuple[int, int, int], *, dropout: float | None, batch_norm: bool, name: str
):
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (8, 16, 32):
        x = conv_block(x, filters)
    if dropout is not None:
        x = layers.Dropout(dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    if batch_norm:
        x = layers.BatchNormalization()(x)
    outputs = layers.Dense(1, activation="sigmoid", name="pneumonia_probability")(x)
    return keras.Model(inputs, outputs, name=name)


def build_model_1(input_shape=(128, 128, 3), **_):
    """Case-study model 1: three conv blocks, Dense(128), sigmoid output."""
    return _small_cnn(input_shape, dropout=None, batch_norm=False, name="model_1")


def build_model_2(input_shape=(128, 128, 3), **_):
    """Case-study model 2: model 1 + Dropout(0.2) and BatchNormalization after Dense(128)."""
    return _small_cnn(input_shape, dropout=0.2, batch_norm=True, name="model_2")


def build_model_3(input_shape=(128, 128, 3), **_):
    """Case-study model 3: model 2 with Dropout(0.1) (trained with Adam)."""
    return _small_cnn(input_shape, dropout=0.1, batch_norm=True, name="model_3")


def mobilenet_weights_filename(image_size: int, alpha: float = 1.0) -> str:
    """File Keras looks for in ``~/.keras/models/`` for ImageNet MobileNetV2 without top."""
    rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5"


def mobilenet_base(input_shape: tuple[int, int, int], base_weights: str | os.PathLike | None):
    """A frozen MobileNetV2 base (no top) and the weights it really holds.

    Parameters
    ----------
    input_shape : (size, size, 3)
    base_weights : "imagenet", path to a weights file, or None
        With ``"imagenet"`` and no network (and no cached file), the base falls back to
        random weights with a :class:`BaseWeightsWarning` that names the file Keras needs
        and where to put it.

    Returns
    -------
    (keras.Model, str, list of str)
        The base, ``"imagenet"`` / ``"random"`` / the file path / ``"none"``, and any
        warning messages.
    """
    import keras

    if input_shape[-1] != 3:
        raise ValueError(
            f"MobileNetV2 needs 3-channel (RGB) input, got input shape {tuple(input_shape)}; "
            "load the data with color_mode='rgb'"
        )
    messages: list[str] = []
    if base_weights is None or base_weights == "none":
        weights, used = None, "none"
    elif base_weights == "imagenet":
        weights, used = "imagenet", "imagenet"
    else:
        path = Path(base_weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"base_weights file {path} does not exist; expected 'imagenet', None, or a "
                f"MobileNetV2 no-top weights file such as "
                f"{mobilenet_weights_filename(input_shape[0])}"
            )
        weights, used = str(path), str(path)
    try:
        base = keras.applications.MobileNetV2(
            input_shape=tuple(input_shape), include_top=False, weights=weights
        )
    except Exception as error:  # Keras raises a bare Exception ("URL fetch failure") offline
        if weights != "imagenet":
            raise
        filename = mobilenet_weights_filename(input_shape[0])
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
        message = (
            "WARNING: ImageNet weights for MobileNetV2 could not be downloaded "
            f"({type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}). The base network "
            "is RANDOMLY INITIALISED and frozen, so this model is NOT the case study's "
            "transfer-learning model and its results say nothing about ImageNet features. "
            f"For offline use, download {filename} from "
            "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/ "
            f"and put it in {cache}/ (or pass its path as base_weights)."
        )
        warnings.warn(message, BaseWeightsWarning, stacklevel=2)
        messages.append(message)
        base = keras.applications.MobileNetV2(
            input_shape=tuple(input_shape), include_top=False, weights=None
        )
        used = "random"
    base.trainable = False
    return base, used, messages


def _mobilenet_classifier(input_shape, base_weights, *, augment: bool, name: str):
    import keras
    from keras import layers

    base, used, messages = mobilenet_base(input_shape, base_weights)
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if augment:
        x = layers.RandomFlip("horizontal")(x)
        x = layers.RandomRotation(0.05)(x)
    # preprocess_input maps [0, 255] to [-1, 1], what MobileNetV2's ImageNet weights expect.
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="mobilenet_v2_preprocess")(x)
    # training=False keeps BatchNormalization in inference mode while the base is frozen.
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(1, name="pneumonia_logit")(x)
    return keras.Model(inputs, outputs, name=name), used, messages


def build_model_4(input_shape=(128, 128, 3), base_weights="imagenet", **_):
    """Case-study model 4: augmentation, frozen MobileNetV2, GAP, Dropout(0.2), logit."""
    return _mobilenet_classifier(input_shape, base_weights, augment=True, name="model_4")


def build_model_5(input_shape=(128, 128, 3), base_weights="imagenet", **_):
    """Case-study model 5: model 4 without augmentation."""
    return _mobilenet_classifier(input_shape, base_weights, augment=False, name="model_5")


# ---------------------------------------------------------------------------------------
# The book's own model (model_6): a small residual network trained from scratch
# ---------------------------------------------------------------------------------------

#: Augmentation strengths of :func:`build_residual_cnn`.
AUGMENTATIONS = ("none", "geometric", "geometric+intensity")


def residual_block(x, filters: int, stride: int):
    """Two 3 x 3 convolutions with batch normalisation and a shortcut (He et al., 2016)."""
    from keras import layers

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


def build_residual_cnn(
    input_shape=(128, 128, 1),
    *,
    width: int = 32,
    augment: str = "geometric",
    standardize: bool = True,
    dropout: float = 0.3,
    name: str = "model_6",
):
    """A small residual CNN: stride-2 stem, max pooling, four residual blocks, logit output.

    Parameters
    ----------
    input_shape : (size, size, channels)
        Grayscale (1 channel) suits X-rays; 3 works too.
    width : int
        Filters of the first block; the blocks have width, 2x, 4x and 8x (32 gives about
        1.2 M parameters).
    augment : {"none", "geometric", "geometric+intensity"}
        Training-time augmentation: small shifts, zooms and rotations (no flips: the heart
        is on the left); "+intensity" adds random contrast and brightness.
    standardize : bool
        Scale each image to mean 0 and standard deviation 1
        (:class:`helpers.layers.PerImageStandardization`) instead of dividing by 255.
    """
    import keras
    from keras import layers

    from helpers.layers import PerImageStandardization

    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    if augment != "none":
        x = layers.RandomTranslation(0.05, 0.05, fill_mode="constant")(x)
        x = layers.RandomZoom(0.1, fill_mode="constant")(x)
        x = layers.RandomRotation(0.03, fill_mode="constant")(x)
    if augment == "geometric+intensity":
        x = layers.RandomContrast(0.3)(x)
        x = layers.RandomBrightness(0.2, value_range=(0.0, 1.0))(x)
    if standardize:
        x = PerImageStandardization()(x)
    x = layers.Conv2D(width, 5, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    for multiple, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
        x = residual_block(x, width * multiple, stride)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, name="pneumonia_logit")(x)
    return keras.Model(inputs, outputs, name=name)


#: model_6's recipe (what the ablation in its chapter varies one at a time).
MODEL_6_SETTINGS = {"width": 32, "augment": "geometric+intensity", "standardize": True, "dropout": 0.3}


def build_model_6(input_shape=(128, 128, 1), **options):
    """The book's own model: :func:`build_residual_cnn` with :data:`MODEL_6_SETTINGS`."""
    return build_residual_cnn(input_shape, **{**MODEL_6_SETTINGS, **options, "name": "model_6"})


MODELS: dict[str, ModelSpec] = {
    spec.model_id: spec
    for spec in (
        ModelSpec("model_1", "Baseline CNN", build_model_1, "rmsprop", 1e-4, "probability"),
        ModelSpec(
            "model_2", "CNN with dropout and batch normalisation", build_model_2,
            "rmsprop", 1e-5, "probability",
        ),
        ModelSpec(
            "model_3", "CNN with lighter dropout, trained with Adam", build_model_3,
            "adam", 1e-5, "probability",
        ),
        ModelSpec(
            "model_4", "Frozen MobileNetV2 with augmentation", build_model_4,
            "rmsprop", 1e-4, "logit", uses_mobilenet=True,
        ),
        ModelSpec(
            "model_5", "Frozen MobileNetV2 without augmentation", build_model_5,
            "rmsprop", 1e-4, "logit", uses_mobilenet=True,
        ),
        ModelSpec(
            "model_6", "The book's own residual CNN, grayscale, from scratch", build_model_6,
            "adamw", 2e-3, "logit", color_mode="grayscale", weight_decay=1e-4,
            schedule="cosine", use_class_weights=True, case_study=False,
        ),
    )
}


def get_spec(model_id: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``model_id``, or a ValueError listing the known ids."""
    try:
        return MODELS[model_id]
    except KeyError:
        raise ValueError(
            f"unknown model id {model_id!r}; known ids: {', '.join(MODELS)}"
        ) from None


def build_model(
    model_id: str,
    *,
    image_size: int = config.IMAGE_SIZE,
    channels: int = 3,
    base_weights: str | os.PathLike | None = "imagenet",
    spec: ModelSpec | None = None,
) -> BuiltModel:
    """Build and compile one model with its training settings (the case study's for 1-5).

    Parameters
    ----------
    model_id : str
        ``"model_1"`` ... ``"model_6"``.
    image_size : int
        Input side in pixels (the case study: 128).
    channels : {1, 3}
        3 for RGB (all case-study models; the MobileNetV2 models need 3), 1 for grayscale
        (model_6's ``color_mode``).
    base_weights : "imagenet", path or None
        Only for models 4 and 5, see :func:`mobilenet_base`.
    spec : ModelSpec, optional
        A variant of ``model_id``'s registered spec (``dataclasses.replace`` of it), as
        model_6's ablation builds; None is the registered one.

    Returns
    -------
    BuiltModel
    """
    import keras

    registered = get_spec(model_id)
    if spec is None:
        spec = registered
    elif spec.model_id != model_id:
        raise ValueError(f"spec is for {spec.model_id!r}, not {model_id!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if spec.uses_mobilenet and image_size < 32:
        raise ValueError(f"{model_id} (MobileNetV2) needs image_size >= 32, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    image_size = int(image_size)
    input_shape = (image_size, image_size, channels)
    used, messages = "none", []
    if spec.uses_mobilenet:
        model, used, messages = spec.builder(input_shape, base_weights=base_weights)
    else:
        model = spec.builder(input_shape, **spec.builder_options)
    compile_with_spec(model, spec)
    if output_kind(model) != spec.output:  # the registry and the layers must agree
        raise AssertionError(f"{model_id}: spec says {spec.output}, layers say {output_kind(model)}")
    # Model 5's base is frozen and sees un-augmented images: its output per image never
    # changes during training, so it can be computed once (see helpers.train.fit).
    base = frozen = None
    if spec.uses_mobilenet:
        base = next(layer.name for layer in model.layers if isinstance(layer, keras.Model))
        if not any(type(layer).__name__.startswith("Random") for layer in model.layers):
            frozen = base
    return BuiltModel(
        model=model, spec=spec, output=spec.output, base_weights=used, messages=messages,
        frozen_feature_layer=frozen, frozen_base_layer=base,
    )


def compile_with_spec(model, spec: ModelSpec) -> None:
    """Compile ``model`` with the optimiser, learning rate, loss and metric of ``spec``."""
    import keras

    if spec.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(
            learning_rate=spec.learning_rate, weight_decay=spec.weight_decay
        )
    else:
        optimizer = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam}[
            spec.optimizer
        ](learning_rate=spec.learning_rate)
    from_logits = spec.output == "logit"
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(from_logits=from_logits),
        # A logit of 0 is a probability of 0.5: accuracy on logits must cut at 0, not 0.5.
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if from_logits else 0.5)],
    )


def split_at_frozen_features(model, layer_name: str):
    """Split ``model`` into a feature extractor (up to ``layer_name``) and a head.

    The head is built from the *same layer objects* as the model's layers after
    ``layer_name`` (which must form a chain), so training the head trains the model.
    """
    import keras

    names = [layer.name for layer in model.layers]
    position = names.index(layer_name)
    frozen = model.layers[position]
    if frozen.trainable:
        raise ValueError(f"layer {layer_name!r} is trainable; only a frozen part can be cached")
    # The next layer's input is the frozen layer's output *in this model's graph* (a nested
    # model's own .output would be its inner graph's tensor).
    frozen_output = model.layers[position + 1].input
    extractor = keras.Model(model.inputs, frozen_output, name=f"{model.name}_features")
    features = keras.Input(shape=tuple(frozen_output.shape[1:]), name="features")
    x = features
    for layer in model.layers[position + 1:]:
        x = layer(x)
    head = keras.Model(features, x, name=f"{model.name}_head")
    return extractor, head


def output_kind(model) -> OutputKind:
    """Read from the model's last layer whether it outputs a probability or a logit.

    A final Dense layer with a sigmoid activation gives probabilities; a linear one gives
    logits. Anything else is refused, since evaluation must know which it gets.
    """
    import keras

    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if activation is keras.activations.sigmoid:
        return "probability"
    if activation is keras.activations.linear:
        return "logit"
    raise ValueError(
        f"cannot tell whether model {model.name!r} outputs probabilities or logits: its last "
        f"layer {last.name!r} ({type(last).__name__}) has activation {activation!r}; expected "
        "a Dense layer with sigmoid or linear activation"
    )
