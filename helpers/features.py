"""The outputs of a frozen pretrained base, computed once per image set and kept on disk.

Models 4, 5 and 7 put the same ImageNet MobileNetV2, frozen, in front of a small head, and
several steps need the base's outputs for the same images: model_5's training (its head
trains on them), the frozen-feature probe of models 4 and 5, model_7's validation search
and its head stage. Computing them is most of those steps' time (about 20 s for the
training images at 128 px on 2 cores), and the answer depends only on the network up to
the base's output and on the images. :func:`frozen_features` keeps each answer as one
``.npy`` file in :func:`feature_cache_dir`, shared by the chapters of a build and by later
builds, capped by bytes like the decoded-image cache.

The key is what decides the numbers and nothing else:

* every layer from the input to the base's output, by class, configuration (layer names
  left out or replaced by positions) and weights, except the ``Random*`` augmentation
  layers, which are the identity outside training (model 4's extractor and model 5's
  compute the same function);
* the images' bytes, shape and dtype;
* the batch size of the forward pass, fixed by :func:`feature_batch_size` whatever the
  caller's training batch size, so that a cached answer is the answer a new computation
  would give;
* the Keras version and :data:`_FEATURES_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from helpers import config
from helpers.data import DataWarning, companion_cache_dir
from helpers.files import DiskCache, cache_bytes_from_environment

#: Pixels per forward pass when computing features: sixteen 128 x 128 images (not a training
#: parameter; a fixed rule makes the cached and the recomputed answer the same). On the book's
#: 2-core CPU, MobileNetV2 scored more images a second in batches of 16 than of 64, up to
#: twice as many, at 128 and 224 px (``benchmarks/run.py --inference-only``: large batches'
#: activations leave the processor's cache); at small sizes a step's fixed cost dominates,
#: so small images go in larger batches.
FEATURE_BATCH_PIXELS = 16 * 128 * 128
#: Fewest and most images per forward pass (:func:`feature_batch_size`).
FEATURE_BATCH_RANGE = (16, 256)

#: Default cap on the feature cache, in bytes (4 GiB). A whole default build writes about
#: 0.5 GB: the 5,856 images' MobileNetV2 outputs at 128 px (4 x 4 x 1280 float32 each,
#: 480 MB); a search row at another input size adds its own (160 px: 5 x 5 x 1280, 750 MB).
DEFAULT_FEATURE_CACHE_BYTES = 4 * 1024**3

#: Environment variable that overrides :data:`DEFAULT_FEATURE_CACHE_BYTES` (same syntax as
#: ``CHEST_XRAY_CACHE_BYTES``: ``512M``, ``8GiB``, ...).
FEATURE_CACHE_BYTES_VARIABLE = "CHEST_XRAY_FEATURE_CACHE_BYTES"

#: Where features are cached unless ``$CHEST_XRAY_CACHE_DIR`` says otherwise.
DEFAULT_FEATURE_CACHE_DIR = config.REPO_ROOT / "_build" / "cache" / "features"

#: Bumped whenever what is stored changes, so old entries are never read back.
_FEATURES_VERSION = 1

_computed_images = 0
_computed_lock = threading.Lock()


def feature_cache_dir() -> Path | None:
    """The folder of the feature cache, or None when caching is switched off.

    It follows the decoded-image cache (:func:`helpers.data.decoded_cache_dir`): unset
    ``$CHEST_XRAY_CACHE_DIR`` gives :data:`DEFAULT_FEATURE_CACHE_DIR`
    (``_build/cache/features``), a folder gives its ``features/`` subfolder, and ``off``
    gives None.

    Returns
    -------
    pathlib.Path or None
    """
    return companion_cache_dir("features", DEFAULT_FEATURE_CACHE_DIR)


def feature_cache_bytes() -> int:
    """The cap on the feature cache's total size, in bytes.

    ``$CHEST_XRAY_FEATURE_CACHE_BYTES`` if set, else :data:`DEFAULT_FEATURE_CACHE_BYTES`.

    Raises
    ------
    ValueError
        If the variable is set to something that is not a size, naming it and the value.
    """
    return cache_bytes_from_environment(FEATURE_CACHE_BYTES_VARIABLE, DEFAULT_FEATURE_CACHE_BYTES)


def computed_image_count() -> int:
    """How many images :func:`frozen_features` has passed through a network in this
    process (cache hits do not count): how the cache is checked to work."""
    return _computed_images


def is_identity_at_inference(layer) -> bool:
    """Whether ``layer`` is a Keras ``Random*`` augmentation layer, or a model made only of
    such layers: the identity outside training."""
    import keras

    if type(layer).__name__.startswith("Random"):
        return True
    if isinstance(layer, keras.Model) and not isinstance(layer, keras.layers.InputLayer):
        inner = [item for item in layer.layers if not isinstance(item, keras.layers.InputLayer)]
        return bool(inner) and all(is_identity_at_inference(item) for item in inner)
    return False


def feature_batch_size(shape: tuple[int, ...]) -> int:
    """Images per forward pass for images of ``shape`` (n, height, width, ...): as many as
    hold :data:`FEATURE_BATCH_PIXELS` pixels, within :data:`FEATURE_BATCH_RANGE`.

    Parameters
    ----------
    shape : tuple of int
        The images' array shape.

    Returns
    -------
    int
    """
    low, high = FEATURE_BATCH_RANGE
    return int(min(high, max(low, FEATURE_BATCH_PIXELS // max(1, shape[1] * shape[2]))))


def extractor_signature(extractor) -> str:
    """SHA-256 of what decides ``extractor``'s outputs at inference: each layer's class,
    configuration (without names, see :func:`_configuration_without_names`) and weights,
    in graph order, ``Random*`` augmentation layers left out; the Keras version; the feature
    batch size. (The top level is taken as a chain, which the book's extractors are.)

    Parameters
    ----------
    extractor : keras.Model
        Raw images in, a frozen base's outputs out (see :func:`helpers.train.split_at_layer`).

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    import keras

    version = f"features-v{_FEATURES_VERSION} keras {keras.__version__}"
    rule = f"batch {FEATURE_BATCH_PIXELS} pixels within {FEATURE_BATCH_RANGE}"
    digest = hashlib.sha256(f"{version} {rule}".encode())
    for layer in extractor.layers:
        if is_identity_at_inference(layer):
            continue
        digest.update(type(layer).__name__.encode())
        digest.update(_configuration_without_names(layer).encode())
        for weight in layer.weights:
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(value.data)
    return digest.hexdigest()


def _configuration_without_names(layer) -> str:
    """``layer``'s configuration as JSON, its own name left out and, for a nested model,
    each inner layer's name replaced by its position: Keras numbers automatic names
    (``input_layer_3``) by how many layers the process has made, which says nothing about
    the function; the positions keep the wiring."""
    import keras

    layer_config = dict(layer.get_config())
    layer_config.pop("name", None)
    text = json.dumps(layer_config, sort_keys=True, default=repr)
    if isinstance(layer, keras.Model):
        for position, inner in enumerate(layer.layers):
            text = text.replace(json.dumps(inner.name), json.dumps(f"#{position}"))
    return text


def images_signature(images: np.ndarray) -> str:
    """SHA-256 of an image array's dtype, shape and bytes."""
    array = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.data)
    return digest.hexdigest()


def frozen_features(extractor, images: np.ndarray, *, cache: bool = True) -> np.ndarray:
    """``extractor``'s outputs for ``images``, in order, computed once per disk.

    Parameters
    ----------
    extractor : keras.Model
        Must be frozen (no trainable weights): its outputs must not change between calls.
    images : numpy.ndarray
        The extractor's inputs (raw pixels for the book's models), first axis the images.
    cache : bool
        False computes without reading or writing the cache.

    Returns
    -------
    numpy.ndarray of float32
        One row per image, as ``extractor.predict(images,
        batch_size=feature_batch_size(images.shape))``.

    Raises
    ------
    ValueError
        If ``extractor`` has trainable weights, or ``$CHEST_XRAY_FEATURE_CACHE_BYTES`` is
        not a size.
    """
    global _computed_images
    if extractor.trainable_weights:
        names = ", ".join(w.path for w in extractor.trainable_weights[:3])
        raise ValueError(
            f"the extractor {extractor.name!r} has trainable weights ({names}, ...): its "
            "outputs would change with training, so they cannot be cached"
        )
    folder = feature_cache_dir() if cache else None
    disk, name = None, None
    if folder is not None:
        # A bad cap setting fails here, before anything is computed.
        disk = DiskCache(
            folder,
            pattern="*.npy",
            max_bytes=feature_cache_bytes(),
            what="feature cache",
            warning=DataWarning,
        )
        key = hashlib.sha256(
            (extractor_signature(extractor) + images_signature(images)).encode()
        ).hexdigest()
        name = f"features-{key}.npy"
        expected = (len(images), *(int(d) for d in extractor.outputs[0].shape[1:]))
        cached = disk.read_array(name, expected, np.float32)
        if cached is not None:
            return cached
    batch_size = feature_batch_size(images.shape)
    features = extractor.predict(images, batch_size=batch_size, verbose=0)
    features = np.asarray(features, dtype=np.float32)
    with _computed_lock:
        _computed_images += len(images)
    if disk is not None:
        disk.write_array(name, features)
    return features
