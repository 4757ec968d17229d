"""Grad-CAM heatmaps: which parts of an X-ray pushed a model's score up.

Grad-CAM [Selvaraju2017]_ weights each feature map of a convolutional layer by the
mean gradient of the model's score with respect to it, sums the weighted maps, keeps the
positive part and scales it to [0, 1].

The layer is the output of the model's last convolutional block (:func:`feature_layer_name`):
the last MaxPooling2D of the case-study CNNs, the ReLU after the last residual addition of
model_6, the frozen base's output for the MobileNetV2 models.

The score differentiated is the **logit**, never a probability. For a model ending in a
sigmoid, the probability's gradient is the logit's times ``p (1 - p)``; in float32 a
probability that rounds to 1.0 (a logit above about 17) has ``p (1 - p) = 0`` exactly, so its
gradient, and its heatmap, are all zeros, and the book shows the *most confident* images.
So for a last Dense layer with a sigmoid the pre-activation (its input times its kernel plus
its bias) is computed inside the gradient tape; a model with a linear last layer already
outputs a logit and is used as it is.

A heatmap shows where the evidence for PNEUMONIA was found, not that it is medically
meaningful: heat on a text marker, an image border or a device is a sign of shortcut
learning, and is what the book looks for.

References
----------
.. [Selvaraju2017] R. R. Selvaraju et al., "Grad-CAM: visual explanations from deep networks via
   gradient-based localization", ICCV 2017.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from helpers.files import atomic_write

#: The public API (the rest is private by name).
__all__ = [
    "MEMBER_FEATURES_PREFIX",
    "feature_layer_name",
    "feature_layer_names",
    "grad_cam",
    "overlay",
    "save_overlay",
]

# Layers that are the identity at inference: their output is the same feature map as their
# input's, so they never end a convolutional block.
_INFERENCE_IDENTITIES = (
    "Dropout",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)
# Augmentation layers not named Random*: training-time only, like the Random* ones.
_OTHER_AUGMENTATIONS = ("RandAugment", "AugMix", "CutMix", "MixUp")
# A sigmoid output must match the sigmoid of the logit rebuilt from its last layer; a larger
# gap means the layer computes something else (a quantized or custom layer) and is refused.
_LOGIT_CHECK_ATOL = 1e-3
#: An ensemble (:mod:`helpers.ensemble`) passes each member's feature maps through an identity
#: layer named with this prefix; its Grad-CAM is the sum of the members' maps.
MEMBER_FEATURES_PREFIX = "member_features_"


def _graph_nodes(model) -> set:
    """The call nodes of ``model``'s own graph (a Sequential model keeps it in ``_functional``).

    Keras 3 has no public way to ask which call of a layer belongs to a given model; the
    ``_nodes_by_depth`` map every functional graph keeps is that answer.
    """
    import keras

    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    nodes_by_depth = getattr(graph, "_nodes_by_depth", None)
    if nodes_by_depth is None:
        raise ValueError(
            f"model {model.name!r} has no layer graph: Grad-CAM needs a functional or Sequential "
            "model built on a keras.Input (a subclassed or unbuilt model has no feature-map tensor "
            "to read)"
        )
    return {node for nodes in nodes_by_depth.values() for node in nodes}


def _node_of(layer, nodes: set, model):
    """The one call of ``layer`` inside ``model``'s graph.

    A nested model such as a MobileNetV2 base has a second node, its own inner graph:
    ``layer.output`` is that one, and it is not connected to the outer model's inputs.
    """
    calls = [node for node in layer._inbound_nodes if node in nodes]
    if len(calls) != 1:
        raise ValueError(
            f"layer {layer.name!r} is called {len(calls)} times in model {model.name!r}: "
            "Grad-CAM needs a layer called exactly once"
        )
    return calls[0]


def _feature_map_shape(node) -> tuple | None:
    """The shape of the node's output if it is one 4-D tensor (batch, height, width, channels)."""
    outputs = node.output_tensors
    if len(outputs) != 1 or len(outputs[0].shape) != 4:
        return None
    return tuple(outputs[0].shape)


def _is_augmentation(layer) -> bool:
    """Random* layers (and RandAugment, AugMix, ...), or a nested model made only of them."""
    import keras

    if isinstance(layer, keras.Model):
        inner = [sub for sub in layer.layers if not isinstance(sub, keras.layers.InputLayer)]
        return bool(inner) and all(_is_augmentation(sub) for sub in inner)
    name = type(layer).__name__
    return name.startswith("Random") or name in _OTHER_AUGMENTATIONS


def _is_inference_identity(layer) -> bool:
    """Dropout and its kin (matched through the class hierarchy, so SpatialDropout2D too)."""
    return any(cls.__name__ in _INFERENCE_IDENTITIES for cls in type(layer).__mro__)


def _is_convolution(layer) -> bool:
    """A 2-D convolution, or a nested model with one inside (a pretrained base)."""
    import keras

    if isinstance(layer, keras.Model):
        return any(_is_convolution(sub) for sub in layer.layers)
    kinds = (
        keras.layers.Conv2D,
        keras.layers.DepthwiseConv2D,
        keras.layers.SeparableConv2D,
        keras.layers.Conv2DTranspose,
    )
    return isinstance(layer, kinds)


def feature_layer_name(model) -> str:
    """The layer Grad-CAM reads: the output of the model's last convolutional block.

    Walking the model's top-level layers in order, it is the last layer with a 4-D (feature
    map) output before the first layer whose output is not 4-D (Flatten,
    GlobalAveragePooling2D, ...). Layers that are the identity at inference (Dropout and its
    kin) and augmentation layers (Random*, or a nested model made only of them) are never
    picked. So it is the last MaxPooling2D of the case-study CNNs (not the Dropout after it),
    the ReLU after the last residual addition of model_6 (not a convolution inside the block
    or the shortcut's 1x1 convolution) and the nested base of the MobileNetV2 models.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model built on a ``keras.Input``.

    Returns
    -------
    str
        The layer's name, for ``model.get_layer``.

    Raises
    ------
    ValueError
        If the model has no layer graph, or no convolution comes before the first layer
        whose output is not 4-D (there are no feature maps to explain).
    """
    import keras

    nodes = _graph_nodes(model)
    candidate = None
    seen_convolution = False
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if _feature_map_shape(_node_of(layer, nodes, model)) is None:
            break  # the features are flattened or pooled from here on
        if _is_inference_identity(layer) or _is_augmentation(layer):
            continue
        seen_convolution = seen_convolution or _is_convolution(layer)
        candidate = layer
    if candidate is None or not seen_convolution:
        raise ValueError(
            f"model {model.name!r} has no convolutional layer or nested base with a 4-D "
            "output before it flattens or pools: Grad-CAM needs feature maps"
        )
    return candidate.name


def feature_layer_names(model) -> list[str]:
    """The layers Grad-CAM reads: an ensemble's member feature layers (named
    :data:`MEMBER_FEATURES_PREFIX` + member), else the one :func:`feature_layer_name`.

    Parameters
    ----------
    model : keras.Model

    Returns
    -------
    list of str
    """
    members = [
        layer.name for layer in model.layers if layer.name.startswith(MEMBER_FEATURES_PREFIX)
    ]
    return members or [feature_layer_name(model)]


def _logit_source(model):
    """The tensor the logit is computed from, and the function that computes it.

    Returns ``(tensor, to_logit, is_probability)``: for a last Dense layer with a sigmoid,
    the Dense layer's input and its pre-activation (input @ kernel + bias, as Dense computes
    it); for a last ``Activation("sigmoid")`` layer, its input as is; for a linear last layer
    (or one without an activation), the model's output as is.
    """
    import keras

    nodes = _graph_nodes(model)
    output = model.outputs[0]
    if len(model.outputs) != 1 or output.shape[-1] != 1:
        raise ValueError(
            f"model {model.name!r} must have one output with one unit (a PNEUMONIA score), "
            f"got outputs of shapes {[tuple(o.shape) for o in model.outputs]}"
        )
    last = model.layers[-1]
    node = _node_of(last, nodes, model)
    if node.output_tensors[0] is not output:
        raise ValueError(
            f"model {model.name!r}: its last layer {last.name!r} does not produce its output"
        )
    activation = getattr(last, "activation", None)
    if activation is None or activation is keras.activations.linear:
        return output, lambda x: x, False
    if activation is not keras.activations.sigmoid:
        raise ValueError(
            f"model {model.name!r}: the last layer {last.name!r} has the activation "
            f"{getattr(activation, '__name__', activation)!r}; Grad-CAM here needs a logit "
            "(a linear last layer) or a sigmoid it can undo"
        )
    source = node.input_tensors[0]
    if isinstance(last, keras.layers.Activation):
        return source, lambda x: x, True
    if isinstance(last, keras.layers.Dense):

        def pre_activation(x):
            x = keras.ops.matmul(x, last.kernel)  # the same two operations as Dense.call
            return x + last.bias if last.use_bias else x

        return source, pre_activation, True
    raise ValueError(
        f"model {model.name!r}: the last layer {last.name!r} ({type(last).__name__}) has a "
        "sigmoid but is not a Dense or Activation layer, so its logit cannot be computed"
    )


def grad_cam(
    model, images: np.ndarray, *, layer_name: str | None = None, batch_size: int = 32
) -> np.ndarray:
    """Grad-CAM heatmaps of ``images``, one per image, at the images' size.

    The score differentiated is the model's logit: for a sigmoid model, the last Dense
    layer's pre-activation, so that images whose probability rounds to 1.0 still get a map.
    For an ensemble (:func:`feature_layer_names`) each member's map is computed from the
    ensemble's logit and its own feature layer, and the maps are summed before scaling: the
    ensemble's logit is a sum of the members' parts.

    Parameters
    ----------
    model : keras.Model
        A single-output functional or Sequential model: a logit (linear last layer) or a
        probability (a last Dense layer with a sigmoid, or a last ``Activation("sigmoid")``).
    images : numpy.ndarray, shape (n, height, width, channels)
        As the model takes them (uint8 is fine: the models rescale themselves).
    layer_name : str, optional
        The feature layer; :func:`feature_layer_names` when None.
    batch_size : int
        Images per gradient computation; at least 1.

    Returns
    -------
    numpy.ndarray of float32, shape (n, height, width), values in [0, 1]
        All zeros for an image where no feature map raised the score.

    Raises
    ------
    ValueError
        If ``images`` is not 4-D, ``batch_size`` is below 1, ``layer_name`` is not a layer of
        the model, or the model's output is not one score whose logit can be read (see
        :func:`feature_layer_name` for the feature layer's own errors).
    RuntimeError
        If the sigmoid of the rebuilt logit does not match the model's probability.
    """
    import keras
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (n, height, width, channels), got {images.shape}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}")
    names = [layer_name] if layer_name else feature_layer_names(model)
    nodes = _graph_nodes(model)
    feature_tensors = [_node_of(model.get_layer(n), nodes, model).output_tensors[0] for n in names]
    source, to_logit, is_probability = _logit_source(model)
    probe = keras.Model(model.inputs, [*feature_tensors, source, model.outputs[0]])
    maps = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start : start + batch_size].astype("float32"))
        with tf.GradientTape() as tape:
            *features, before_logit, output = probe(batch, training=False)
            logit = to_logit(before_logit)
            target = tf.reduce_sum(logit[:, 0])
        if is_probability:
            _check_logit(model, logit, output)
        cam = 0.0
        for feature, grads in zip(features, tape.gradient(target, features)):
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            part = tf.nn.relu(tf.reduce_sum(weights * feature, axis=-1))
            cam += tf.image.resize(part[..., None], images.shape[1:3], method="bilinear")[..., 0]
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        maps.append(tf.math.divide_no_nan(cam, peak).numpy())
    if not maps:
        return np.zeros((0, *images.shape[1:3]), dtype=np.float32)
    return np.concatenate(maps).astype(np.float32)


def _check_logit(model, logit, probability) -> None:
    """Refuse a rebuilt logit whose sigmoid is not the model's own probability."""
    from scipy.special import expit

    rebuilt = expit(np.asarray(logit, dtype=np.float64))
    gap = float(np.max(np.abs(rebuilt - np.asarray(probability, dtype=np.float64)), initial=0.0))
    if gap > _LOGIT_CHECK_ATOL:
        raise RuntimeError(
            f"model {model.name!r}: the sigmoid of the logit rebuilt from its last layer differs "
            f"from its output by {gap:.3g}; the last layer computes something else"
        )


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.4) -> np.ndarray:
    """The X-ray in gray with the heatmap in a colour map on top.

    Parameters
    ----------
    image : numpy.ndarray, shape (height, width) or (height, width, channels)
        Pixels 0-255; the first channel is used.
    heatmap : numpy.ndarray, shape (height, width)
        Values in [0, 1] (clipped), as :func:`grad_cam` gives them.
    alpha : float
        The heatmap's weight in the mix, in [0, 1].

    Returns
    -------
    numpy.ndarray of uint8, shape (height, width, 3)
        RGB.

    Raises
    ------
    ValueError
        If the heatmap's shape is not the image's height and width, or ``alpha`` is
        outside [0, 1].
    """
    from matplotlib import colormaps

    image = np.asarray(image)
    heatmap = np.asarray(heatmap)
    gray = image[..., 0] if image.ndim == 3 else image
    if gray.ndim != 2 or heatmap.shape != gray.shape:
        raise ValueError(
            f"heatmap must have the image's height and width {gray.shape}, got {heatmap.shape} "
            f"for an image of shape {image.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    base = np.repeat(gray[..., None].astype(np.float32) / 255.0, 3, axis=-1)
    heat = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3]
    mixed = (1 - alpha) * base + alpha * heat
    return np.clip(np.rint(mixed * 255), 0, 255).astype(np.uint8)


def save_overlay(path: str | os.PathLike, image: np.ndarray, heatmap: np.ndarray) -> Path:
    """Write :func:`overlay` as a PNG, atomically (a temporary name, then a rename).

    Parameters
    ----------
    path : str or os.PathLike
        The PNG to write; its folder is created.
    image, heatmap : numpy.ndarray
        As :func:`overlay` takes them.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        As :func:`overlay`; nothing is written then.
    """
    from PIL import Image

    picture = Image.fromarray(overlay(image, heatmap), "RGB")  # validated before any file exists
    return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
