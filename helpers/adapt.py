"""Re-estimate a model's batch-normalisation statistics on unlabeled images (AdaBN).

A BatchNormalization layer normalises with the mean and variance of its inputs it saw in
training. When the images come from another collection (another hospital, another
scanner), those statistics no longer centre and scale the features, and the scores drift,
so a threshold chosen on validation data no longer transfers. AdaBN (Li et al., 2016,
"Revisiting Batch Normalization for Practical Domain Adaptation") replaces each layer's
moving mean and variance with those of its inputs on the new images; it needs no labels.

:func:`adapt_batchnorm` returns an adapted copy of a model; :func:`adaptation_report`
and :func:`adapted_layer_names` say what was adapted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

#: The public API (the rest is private by name).
__all__ = [
    "MIN_ADAPT_IMAGES",
    "AdaptationError",
    "BatchNormAdaptation",
    "adapt_batchnorm",
    "adaptation_report",
    "adapted_layer_names",
]

#: Fewest images :func:`adapt_batchnorm` accepts by default: the mean and variance of a
#: handful of images are mostly noise, and a model normalised with them scores worse than
#: with its training statistics.
MIN_ADAPT_IMAGES = 100

#: Name of the attribute on an adapted model that holds its :class:`BatchNormAdaptation`.
_REPORT_ATTRIBUTE = "batchnorm_adaptation"


class AdaptationError(ValueError):
    """The model or the images cannot be used for batch-norm adaptation."""


@dataclass(frozen=True)
class BatchNormAdaptation:
    """What :func:`adapt_batchnorm` did to a model.

    Attributes
    ----------
    adapted : tuple of str
        The BatchNormalization layers whose statistics were re-estimated, in graph order;
        a layer inside a nested model is named ``"<nested model>/<layer>"``.
    skipped_nested : tuple of str
        BatchNormalization layers inside nested models that were left with their training
        statistics (``skip_nested_models=True``).
    n_images : int
        How many images the statistics were measured on.
    """

    adapted: tuple[str, ...]
    skipped_nested: tuple[str, ...]
    n_images: int


@dataclass(frozen=True)
class _Site:
    """A BatchNormalization layer and the chain of nested models that lead to it."""

    nested: tuple  # the nested models, outermost first (empty for a top-level layer)
    layer: object

    @property
    def name(self) -> str:
        return "/".join([m.name for m in self.nested] + [self.layer.name])


def adapt_batchnorm(
    model: keras.Model,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    skip_nested_models: bool = True,
    min_images: int = MIN_ADAPT_IMAGES,
    reuse_cached_parts: bool = False,
) -> keras.Model:
    """Copy ``model`` with each BatchNormalization layer's statistics measured on ``images``.

    The copy's every BatchNormalization layer gets as moving mean and moving variance the
    exact mean and population variance (divided by n, not n - 1) of that layer's inputs
    over all ``images``, per channel. The inputs are computed in inference mode (no
    augmentation, no dropout), layer by layer in graph order, so that every layer upstream
    of the one being measured is already adapted. Sums are accumulated over batches in
    float64, so the result does not depend on ``batch_size`` beyond rounding; it is
    deterministic. ``model`` itself is not changed. No labels are used.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model with one input and at least one
        BatchNormalization layer. Its custom layers must be serialisable (the copy is
        rebuilt from the model's config, then given its weights).
    images : numpy.ndarray of uint8 or float, shape (n, ...) as ``model`` takes them
        Unlabeled images of the collection to adapt to, e.g. (n, height, width, channels).
    batch_size : int
        Images per forward pass; only memory and speed depend on it.
    skip_nested_models : bool
        Leave BatchNormalization layers inside nested models (such as a pretrained
        MobileNetV2 base, whose statistics belong to its frozen, folded weights) with their
        training statistics. With False they are adapted too.
    min_images : int
        Fewest images accepted (default :data:`MIN_ADAPT_IMAGES`); lower it only in tests.
    reuse_cached_parts : bool
        Read the inputs of a top-level layer named
        :data:`helpers.features.FROZEN_PREFIX_END` (model_8's frozen member: its input
        depends on the image alone) from the feature cache, or compute them into it
        (:func:`helpers.features.split_for_reuse`), so that scoring the same images reads
        them back instead of computing them again. For the book's own images only: the
        cache keeps what the prefix computes on disk.

    Returns
    -------
    keras.Model
        The adapted copy; :func:`adaptation_report` and :func:`adapted_layer_names` read
        which layers were adapted.

    Raises
    ------
    AdaptationError
        If ``model`` is not a functional or Sequential model with one input, has no
        BatchNormalization layer to adapt (none at all, or only inside nested models that
        are skipped), uses a BatchNormalization layer or nested model more than once; if
        ``images`` is not a finite uint8 or float array of the model's input shape, or
        holds fewer than ``min_images`` images; if ``batch_size`` or ``min_images`` is
        not a positive integer.
    """
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("min_images", min_images)
    _check_model(model)
    images = _check_images(images, model, min_images)
    sites, skipped = _batchnorm_sites(model, skip_nested_models)
    if not sites:
        raise AdaptationError(_nothing_to_adapt(model, skipped))

    copy = _copy_model(model)
    copied_sites, _ = _batchnorm_sites(copy, skip_nested_models)
    for site in copied_sites:  # graph order: upstream layers are adapted first
        if reuse_cached_parts and _after_frozen_prefix(site):
            mean, variance = _frozen_prefix_moments(copy, site, images, batch_size)
        else:
            mean, variance = _input_moments(copy, site, images, batch_size)
        site.layer.moving_mean.assign(mean.astype(site.layer.moving_mean.dtype))
        site.layer.moving_variance.assign(variance.astype(site.layer.moving_variance.dtype))
    report = BatchNormAdaptation(
        adapted=tuple(site.name for site in copied_sites),
        skipped_nested=tuple(skipped),
        n_images=len(images),
    )
    object.__setattr__(copy, _REPORT_ATTRIBUTE, report)  # plain attribute, not tracked state
    return copy


def adaptation_report(model: keras.Model) -> BatchNormAdaptation:
    """What :func:`adapt_batchnorm` did to ``model``.

    Parameters
    ----------
    model : keras.Model
        A model returned by :func:`adapt_batchnorm`.

    Returns
    -------
    BatchNormAdaptation

    Raises
    ------
    AdaptationError
        If ``model`` was not made by :func:`adapt_batchnorm` (in this process: the report
        is not saved with the model).
    """
    report = getattr(model, _REPORT_ATTRIBUTE, None)
    if not isinstance(report, BatchNormAdaptation):
        raise AdaptationError(
            f"model {getattr(model, 'name', model)!r} was not made by adapt_batchnorm in this "
            "process, so there is no record of adapted layers"
        )
    return report


def adapted_layer_names(model: keras.Model) -> tuple[str, ...]:
    """Names of the BatchNormalization layers :func:`adapt_batchnorm` adapted, in graph order.

    Parameters
    ----------
    model : keras.Model
        A model returned by :func:`adapt_batchnorm`.

    Returns
    -------
    tuple of str
        Layer names; a layer inside a nested model is ``"<nested model>/<layer>"``.

    Raises
    ------
    AdaptationError
        If ``model`` was not made by :func:`adapt_batchnorm`.
    """
    return adaptation_report(model).adapted


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise AdaptationError(f"{name} must be a positive integer, got {value!r}")


def _check_model(model) -> None:
    import keras

    if not isinstance(model, keras.Model):
        raise AdaptationError(f"model must be a keras.Model, got {type(model).__name__}")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise AdaptationError(
            f"model {model.name!r} has no defined input (a subclassed or unbuilt model); "
            "adapt_batchnorm needs a functional or Sequential model built on keras.Input"
        )
    if len(inputs) != 1:
        raise AdaptationError(
            f"model {model.name!r} has {len(inputs)} inputs; adapt_batchnorm supports one"
        )


def _check_images(images, model, min_images: int) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise AdaptationError(f"images must be a NumPy array, got {type(images).__name__}")
    if not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
        raise AdaptationError(f"images must be of dtype uint8 or float, got {images.dtype}")
    expected = tuple(model.input_shape[1:])
    shown = "(n, " + ", ".join("any" if d is None else str(d) for d in expected) + ")"
    if images.ndim != len(expected) + 1 or any(
        want is not None and got != want for got, want in zip(images.shape[1:], expected)
    ):
        raise AdaptationError(
            f"images have shape {images.shape}; model {model.name!r} takes arrays of shape {shown}"
        )
    if len(images) < min_images:
        raise AdaptationError(
            f"{len(images)} image(s) given; at least {min_images} are needed, because a mean and "
            "variance measured on a few images are mostly noise and would make the model worse"
        )
    if images.dtype != np.uint8 and not np.all(np.isfinite(images)):
        raise AdaptationError("images hold NaN or infinite values")
    return images


def _nothing_to_adapt(model, skipped: list[str]) -> str:
    if skipped:
        return (
            f"model {model.name!r} has BatchNormalization layers only inside nested models "
            f"({', '.join(skipped)}), which skip_nested_models=True leaves alone; nothing to adapt"
        )
    return (
        f"model {model.name!r} has no BatchNormalization layer; adaptation re-estimates "
        "batch-norm statistics, so there is nothing to adapt"
    )


# ---------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------


def _batchnorm_sites(model, skip_nested: bool) -> tuple[list[_Site], list[str]]:
    """BatchNormalization layers of ``model`` to adapt (graph order); the nested ones skipped."""
    sites, skipped = [], []
    _collect_sites(model, (), skip_nested, sites, skipped)
    return sites, skipped


def _collect_sites(context, nested: tuple, skip_nested: bool, sites: list, skipped: list) -> None:
    import keras

    # A functional model's layers are in topological order: every layer comes after the
    # layers it reads from, so adapting in this order measures each layer downstream of
    # adapted ones.
    for layer in context.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            site = _Site(nested, layer)
            if nested and skip_nested:
                skipped.append(site.name)
            else:
                _single_input_tensor(layer, site.name)  # refuse shared layers before any work
                sites.append(site)
        elif isinstance(layer, keras.Model):
            if not skip_nested:  # its layers will be measured through it: it must be called once
                _single_input_tensor(layer, "/".join([m.name for m in nested] + [layer.name]))
            _collect_sites(layer, (*nested, layer), skip_nested, sites, skipped)


def _single_input_tensor(layer, name: str):
    """The one symbolic tensor ``layer`` is called on in its model's graph."""
    # Keras has no public way to ask a nested model on which tensor of its parent's graph it
    # is called (its ``input`` is its own Input); the inbound nodes hold that call.
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise AdaptationError(
            f"layer {name!r} is called {len(nodes)} times in the model; its statistics would "
            "mix different inputs, so adapt_batchnorm refuses shared layers"
        )
    tensors = nodes[0].input_tensors
    if len(tensors) != 1:
        raise AdaptationError(
            f"layer {name!r} takes {len(tensors)} inputs; adapt_batchnorm supports one"
        )
    return tensors[0]


def _copy_model(model):
    """An independent copy: same architecture (custom layers rebuilt from config), same weights."""
    import keras

    import helpers.layers  # noqa: F401 - registers the book's own layers for rebuilding

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _input_moments(
    copy, site: _Site, images: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population variance of ``site.layer``'s inputs over ``images``."""
    import keras
    import tensorflow as tf

    # One sub-model per step of the chain: the top model up to the first nested model's
    # input, that model up to the next, ..., the last one up to the layer's input.
    contexts = (copy, *site.nested)
    targets = (*site.nested, site.layer)
    feeders = [
        keras.Model(
            context.inputs[0], _single_input_tensor(target, site.name)
        )  # one input, not a list
        for context, target in zip(contexts, targets)
    ]
    axis = site.layer.axis

    # A traced function, not eager calls: eager passes took 1.5-1.8x the processor time and
    # 1.6-2.2x the wall time on model_6's network and model_8's frozen member
    # (benchmarks/RESULTS.md, "AdaBN passes"). Traced once for any number of images (a
    # last, smaller batch would trace it again). Each batch's moments are reduced in
    # float64 inside the graph and merged exactly below, so no feature map travels back
    # as a float64 copy.
    signature = tf.TensorSpec((None, *images.shape[1:]), tf.as_dtype(images.dtype))

    @tf.function(input_signature=[signature])
    def batch_moments(batch):
        features = batch
        for feeder in feeders:
            features = feeder(features, training=False)
        features = tf.cast(features, tf.float64)
        rank = len(features.shape)
        reduced = [i for i in range(rank) if i != axis % rank]
        mean = tf.reduce_mean(features, axis=reduced)
        shape = [1 if i in reduced else -1 for i in range(rank)]
        m2 = tf.reduce_sum(tf.square(features - tf.reshape(mean, shape)), axis=reduced)
        rows = tf.size(features, out_type=tf.int64) // tf.size(mean, out_type=tf.int64)
        return rows, mean, m2

    count, mean, m2 = 0, None, None
    for start in range(0, len(images), batch_size):
        rows, batch_mean, batch_m2 = batch_moments(images[start : start + batch_size])
        count, mean, m2 = _merge_moments(
            count, mean, m2, int(rows), batch_mean.numpy(), batch_m2.numpy()
        )
    return mean, m2 / count


def _after_frozen_prefix(site: _Site) -> bool:
    from helpers.features import FROZEN_PREFIX_END

    return not site.nested and site.layer.name == FROZEN_PREFIX_END


def _frozen_prefix_moments(copy, site: _Site, images: np.ndarray, batch_size: int):
    """:func:`_input_moments` of the layer after a frozen prefix, the prefix's outputs read
    from (or written to) the feature cache. Nothing upstream of it is adapted (the prefix
    is frozen), so the answer is :func:`_input_moments`' to rounding."""
    from helpers.features import FROZEN_PREFIX_END, cached_outputs, split_for_reuse

    split = split_for_reuse(copy)
    if split is None or FROZEN_PREFIX_END not in split[0]:
        return _input_moments(copy, site, images, batch_size)
    prefix = cached_outputs(split[0][FROZEN_PREFIX_END], images).astype(np.float64)
    axis = site.layer.axis % prefix.ndim
    reduced = tuple(i for i in range(prefix.ndim) if i != axis)
    return prefix.mean(axis=reduced), prefix.var(axis=reduced)


def _merge_moments(count: int, mean, m2, n: int, batch_mean: np.ndarray, batch_m2: np.ndarray):
    """Add a batch of ``n`` values per channel, given as its mean and sum of squared
    deviations, to the running count, mean and sum of squared deviations.

    Chan et al.'s pairwise update: exact, and stable where ``E[x^2] - E[x]^2`` would cancel.
    """
    if count == 0:
        return n, batch_mean, batch_m2
    total = count + n
    delta = batch_mean - mean
    return total, mean + delta * (n / total), m2 + batch_m2 + delta**2 * (count * n / total)
