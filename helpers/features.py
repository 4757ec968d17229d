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

model_8 scores the same validation and test images many times (its members' logits, the
ensemble, the ensemble adapted to each folder). :func:`split_for_reuse` cuts a model at its
members' parts (:data:`FROZEN_PREFIX_END`, :data:`MEMBER_OUTPUT_SUFFIX`) and
:func:`predict_reusing` computes each part once per image set and weights through the same
cache: a part whose weights adaptation changed has another key and is computed again.
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
    if extractor.trainable_weights:
        names = ", ".join(w.path for w in extractor.trainable_weights[:3])
        raise ValueError(
            f"the extractor {extractor.name!r} has trainable weights ({names}, ...): its "
            "outputs would change with training, so they cannot be cached"
        )
    return cached_outputs(extractor, images, cache=cache)


def cached_outputs(extractor, images: np.ndarray, *, cache: bool = True) -> np.ndarray:
    """:func:`frozen_features` without its refusal of trainable weights: the key holds every
    weight, so an answer is never read back for other weights."""
    return _cached_parts([extractor], images, cache=cache)[0]


def _cached_parts(extractors: list, images: np.ndarray, *, cache: bool = True) -> list[np.ndarray]:
    """Each extractor's outputs for ``images``, read from the cache; those not there are
    computed in one pass (the extractors share their input) and stored."""
    import keras

    global _computed_images
    folder = feature_cache_dir() if cache else None
    disk, names = None, [None] * len(extractors)
    found: list[np.ndarray | None] = [None] * len(extractors)
    if folder is not None:
        # A bad cap setting fails here, before anything is computed.
        disk = DiskCache(
            folder,
            pattern="*.npy",
            max_bytes=feature_cache_bytes(),
            what="feature cache",
            warning=DataWarning,
        )
        images_key = images_signature(images)
        for i, extractor in enumerate(extractors):
            key = hashlib.sha256((extractor_signature(extractor) + images_key).encode())
            names[i] = f"features-{key.hexdigest()}.npy"
            expected = (len(images), *(int(d) for d in extractor.outputs[0].shape[1:]))
            found[i] = disk.read_array(names[i], expected, np.float32)
    missing = [i for i, value in enumerate(found) if value is None]
    if not missing:
        return found
    joint = (
        extractors[missing[0]]
        if len(missing) == 1
        else keras.Model(extractors[missing[0]].inputs, [extractors[i].outputs[0] for i in missing])
    )
    batch_size = feature_batch_size(images.shape)
    computed = joint.predict(images, batch_size=batch_size, verbose=0)
    computed = computed if isinstance(computed, list) else [computed]
    with _computed_lock:
        _computed_images += len(images) * len(missing)
    for i, values in zip(missing, computed):
        found[i] = np.asarray(values, dtype=np.float32)
        if disk is not None:
            disk.write_array(names[i], found[i])
    return found


# ---------------------------------------------------------------------------------------
# Scoring that reuses what the same weights computed before
# ---------------------------------------------------------------------------------------

#: A layer with this name starts a model's frozen prefix's use: its input depends on the
#: image alone (frozen weights, inference mode), and batch-norm adaptation reads it (model_8's
#: frozen member names its feature standardisation so, :func:`helpers.ensemble.frozen_member`).
FROZEN_PREFIX_END = "frozen_feature_standardisation"
#: A layer whose name ends so passes one member's output on unchanged (model_8's
#: ``<member>_logit``, :func:`helpers.ensemble.member_logits` and the ensemble alike).
MEMBER_OUTPUT_SUFFIX = "_logit"


def _reused_here(name: str) -> bool:
    return name == FROZEN_PREFIX_END or name.endswith(MEMBER_OUTPUT_SUFFIX)


def _depends_on(tensor, sources: set[int]) -> bool:
    """Whether ``tensor`` is computed from one of the Keras tensors whose ``id`` is in
    ``sources`` (a walk up the graph it was built in)."""
    seen, stack = set(), [tensor]
    while stack:
        current = stack.pop()
        if id(current) in sources:
            return True
        if id(current) in seen:
            continue
        seen.add(id(current))
        history = getattr(current, "_keras_history", None)
        if history is None:
            continue
        node = history.operation._inbound_nodes[history.node_index]
        stack.extend(node.input_tensors)
    return False


def split_for_reuse(model):
    """Split ``model`` where its scoring can reuse earlier work.

    The cuts are the inputs of its top-level layers named :data:`FROZEN_PREFIX_END` or
    ending with :data:`MEMBER_OUTPUT_SUFFIX`, except where such an input is itself computed
    from an earlier cut (model_8's frozen member is cut at its features, not again at its
    logit, whose standardisation adaptation changes).

    Parameters
    ----------
    model : keras.Model
        A functional model with one input.

    Returns
    -------
    tuple, or None
        ``(extractors, rest)``: ``extractors`` maps each cut layer's name to a model from the
        images to that layer's input; ``rest`` maps ``[images, *cut values]`` (in the order
        of ``extractors``) to ``model``'s outputs. Both are built on a copy of ``model``
        (same weights), so ``model``'s own layers keep their one call, which batch-norm
        adaptation and Grad-CAM read. None when ``model`` has no such layer or more than
        one input.
    """
    import keras

    import helpers.layers  # noqa: F401 - registers the book's own layers for rebuilding

    if len(model.inputs) != 1 or not any(_reused_here(layer.name) for layer in model.layers):
        return None
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    images = keras.Input(shape=tuple(model.inputs[0].shape[1:]), name="images")
    cuts: dict[str, tuple] = {}  # layer name -> (the cut tensor, the Input replacing it)

    def operation_fn(operation):
        if not _reused_here(operation.name):
            return operation

        def from_cut(*args, **kwargs):
            inputs = {id(cut_input) for _, cut_input in cuts.values()}
            if _depends_on(args[0], inputs):
                return operation(*args, **kwargs)
            cut_input = keras.Input(shape=tuple(args[0].shape[1:]), name=f"cut_{len(cuts)}")
            cuts[operation.name] = (args[0], cut_input)
            return operation(cut_input, *args[1:], **kwargs)

        return from_cut

    graph = copy._functional if isinstance(copy, keras.Sequential) else copy
    # As helpers.ensemble._inline: Keras' Functional.call runs the graph this way.
    outputs = graph._run_through_graph(images, operation_fn=operation_fn)
    extractors = {
        name: keras.Model(images, tensor, name=f"cut_{position}")
        for position, (name, (tensor, _)) in enumerate(cuts.items())
    }
    rest = keras.Model(
        [images, *(cut_input for _, cut_input in cuts.values())], outputs, name="rest"
    )
    return extractors, rest


def predict_reusing(model, images: np.ndarray, *, batch_size: int):
    """``model.predict(images)``, each part of it that :func:`split_for_reuse` cuts computed
    once per image set and weights, and kept in the feature cache.

    A part is keyed as :func:`frozen_features` keys its answers (the weights and
    configuration of every layer it runs, the images' bytes), so a copy of the model whose
    batch normalisation was adapted computes again only the parts adaptation changed. For a
    model without such parts this is ``model.predict``. The outputs agree with
    ``model.predict``'s to float32 rounding (the parts run in batches of
    :func:`feature_batch_size`). For the book's own images only: the cache keeps what the
    parts compute from them on disk.

    Parameters
    ----------
    model : keras.Model
    images : numpy.ndarray
    batch_size : int
        Images per forward pass of what follows the parts.

    Returns
    -------
    numpy.ndarray or list of numpy.ndarray
        As ``model.predict`` returns them.
    """
    split = split_for_reuse(model)
    if split is None:
        return model.predict(images, batch_size=batch_size, verbose=0)
    extractors, rest = split
    parts = _cached_parts(list(extractors.values()), images)
    return rest.predict([images, *parts], batch_size=batch_size, verbose=0)
