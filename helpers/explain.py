"""Grad-CAM heatmaps: which parts of an X-ray pushed a model's score up.

Grad-CAM (Selvaraju et al., 2017) weights each feature map of a convolutional layer by the
mean gradient of the model's output with respect to it, sums the weighted maps, keeps the
positive part and scales it to [0, 1]. For the case-study CNNs the layer is the last
convolution; for the MobileNetV2 models it is the frozen base's output (its last
convolutional feature map). The output differentiated is the model's last layer: a logit,
or a probability, whose gradient is the logit's times a positive number per image, which the
per-image scaling removes.

A heatmap shows where the evidence for PNEUMONIA was found, not that it is medically
meaningful: heat on a text marker, an image border or a device is a sign of shortcut
learning, and is what the book looks for.

References
----------
.. [1] R. R. Selvaraju et al., "Grad-CAM: visual explanations from deep networks via
   gradient-based localization", ICCV 2017.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def feature_layer_name(model) -> str:
    """The layer Grad-CAM reads: the last top-level layer with a 4-D (feature map) output
    that comes before the model flattens or pools its features."""
    import keras

    candidate = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and isinstance(
            layer, (keras.layers.Conv2D, keras.Model)
        ):
            candidate = layer.name
    if candidate is None:
        raise ValueError(
            f"model {model.name!r} has no convolutional layer or nested base with a 4-D "
            "output: Grad-CAM needs feature maps"
        )
    return candidate


def grad_cam(model, images: np.ndarray, *, layer_name: str | None = None, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM heatmaps of ``images``, one per image, at the images' size.

    Parameters
    ----------
    model : keras.Model
        A single-output model (probability or logit).
    images : numpy.ndarray, shape (n, height, width, channels)
        As the model takes them (uint8 is fine: the models rescale themselves).
    layer_name : str, optional
        The feature layer; :func:`feature_layer_name` when None.
    batch_size : int

    Returns
    -------
    numpy.ndarray of float32, shape (n, height, width), values in [0, 1]
        All zeros for an image where no feature map raised the score.
    """
    import keras
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (n, height, width, channels), got {images.shape}")
    name = layer_name or feature_layer_name(model)
    probe = keras.Model(model.inputs, [model.get_layer(name).output, model.outputs[0]])
    maps = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size].astype("float32"))
        with tf.GradientTape() as tape:
            features, output = probe(batch, training=False)
            target = tf.reduce_sum(output[:, 0])
        grads = tape.gradient(target, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
        cam = tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear")[..., 0]
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        maps.append(tf.math.divide_no_nan(cam, peak).numpy())
    return np.concatenate(maps).astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.4) -> np.ndarray:
    """The X-ray in gray with the heatmap in a colour map on top, as uint8 RGB."""
    from matplotlib import colormaps

    image = np.asarray(image)
    gray = image[..., 0] if image.ndim == 3 else image
    base = np.repeat(gray[..., None].astype(np.float32) / 255.0, 3, axis=-1)
    heat = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3]
    mixed = (1 - alpha) * base + alpha * heat
    return np.clip(np.rint(mixed * 255), 0, 255).astype(np.uint8)


def save_overlay(path: str | os.PathLike, image: np.ndarray, heatmap: np.ndarray) -> Path:
    """Write :func:`overlay` as a PNG (atomically: a temporary name, then a rename)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(overlay(image, heatmap), "RGB").save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
