"""Training: seeds, a device strategy, and ``fit`` on the person-aware split.

The chapters define and compile their own Keras models; this module trains them the same
way for every chapter: a seeded, shuffled ``tf.data`` pipeline over the training images,
the validation images watched each epoch in file order, and, for a model whose frozen base
sees un-augmented images (model 5), the base's outputs computed once instead of every epoch.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from helpers import config
from helpers.data import ChestXrays, training_dataset


def set_seed(seed: int, *, deterministic_ops: bool = False) -> None:
    """Seed Python, NumPy, TensorFlow and Keras.

    On the CPU this alone makes two runs with the same seed give the same weights and
    scores (measured: largest score difference 0.0). ``deterministic_ops=True`` also asks
    TensorFlow for deterministic kernels, which GPUs need for repeatable runs; on this CPU
    it makes training about 1.7x slower for nothing, so it is off by default.
    """
    import keras
    import tensorflow as tf

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(int(seed))
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def check_training_parameters(*, epochs: int, batch_size: int, seed: int) -> None:
    """Refuse impossible training parameters before any work starts."""
    for name, value, low in (
        ("epochs", epochs, 0),
        ("batch_size", batch_size, 1),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass
class TrainingRun:
    """A trained model with its history, its settings and its wall time."""

    model: object
    history: pd.DataFrame
    epochs: int
    batch_size: int
    seed: int
    training_seconds: float
    class_weight: dict[int, float] | None = None


def distribution_strategy(name: str | None = "default", *, devices: list[str] | None = None):
    """A ``tf.distribute`` strategy by name, for training on more than one device.

    Parameters
    ----------
    name : {"default", "mirrored", "multi_worker"} or None
        ``"default"`` (or None): TensorFlow's default strategy, one device, what a laptop
        uses. ``"mirrored"``: :class:`tf.distribute.MirroredStrategy`, one replica per GPU
        (or per device in ``devices``), gradients summed across replicas each step.
        ``"multi_worker"``: :class:`tf.distribute.MultiWorkerMirroredStrategy`, the cluster
        described by the ``TF_CONFIG`` environment variable.
    devices : list of str, optional
        For ``"mirrored"``: the devices to mirror over (``["/gpu:0", "/gpu:1"]``).

    Returns
    -------
    tf.distribute.Strategy
        Build and compile the model inside ``strategy.scope()``; :func:`fit` reads the
        strategy from the model and takes the *per-replica* batch size.
    """
    import tensorflow as tf

    if name in (None, "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if devices is not None:
            raise ValueError("devices applies to the 'mirrored' strategy only")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {', '.join(config.STRATEGIES)}, got {name!r}")


def is_chief(strategy) -> bool:
    """Whether this process is the one that writes the results under ``strategy``.

    Parameters
    ----------
    strategy : tf.distribute.Strategy
        What :func:`distribution_strategy` returned (or ``model.distribute_strategy``).

    Returns
    -------
    bool
        True for a strategy without a cluster (one machine: default or mirrored). In a
        cluster (``multi_worker``, from ``TF_CONFIG``): True for the task of type ``chief``,
        or, in a cluster without one, for worker 0, TensorFlow's own rule. Every worker
        trains and scores (both need all workers' collective steps); only the chief writes.

    Raises
    ------
    TypeError
        If ``strategy`` is not a ``tf.distribute.Strategy``.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(f"strategy must be a tf.distribute.Strategy, got {type(strategy).__name__}")
    resolver = strategy.cluster_resolver
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0


def cosine_schedule(initial: float, epochs: int):
    """A Keras callback that decays the learning rate from ``initial`` towards 0 by epoch.

    Epoch ``e`` (from 0) trains at ``initial * (1 + cos(pi * e / epochs)) / 2``: the full
    rate first, a small one last, whatever ``epochs`` the chapter runs.
    """
    import math

    import keras

    return keras.callbacks.LearningRateScheduler(
        lambda epoch, _rate: initial * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    )


def frozen_base(model) -> tuple[str | None, bool]:
    """The name of ``model``'s frozen nested base (a MobileNetV2), and whether its inputs are
    the same every epoch (no ``Random*`` augmentation layer before it), so that its outputs
    can be computed once. ``(None, False)`` for a model without a frozen base."""
    import keras

    def augments(layer) -> bool:
        if type(layer).__name__.startswith("Random"):
            return True
        return isinstance(layer, keras.Model) and any(augments(inner) for inner in layer.layers)

    augmented = False
    for layer in model.layers:
        if isinstance(layer, keras.Model) and not layer.trainable:
            return layer.name, not augmented
        augmented = augmented or augments(layer)
    return None, False


def split_at_layer(model, layer_name: str):
    """Split ``model`` into a feature extractor (up to the frozen ``layer_name``) and a head.

    The head is built from the *same layer objects* as the model's layers after
    ``layer_name`` (which must form a chain), so training the head trains the model.
    """
    import keras

    names = [layer.name for layer in model.layers]
    position = names.index(layer_name)
    if model.layers[position].trainable:
        raise ValueError(f"layer {layer_name!r} is trainable; only a frozen part can be cached")
    # The next layer's input is the frozen layer's output *in this model's graph* (a nested
    # model's own .output would be its inner graph's tensor).
    frozen_output = model.layers[position + 1].input
    extractor = keras.Model(model.inputs, frozen_output, name=f"{model.name}_features")
    features = keras.Input(shape=tuple(frozen_output.shape[1:]), name="features")
    x = features
    for layer in model.layers[position + 1 :]:
        x = layer(x)
    head = keras.Model(features, x, name=f"{model.name}_head")
    head.compile_from_config(model.get_compile_config())
    return extractor, head


def _validation_on_features(head, features, labels, batch_size):
    """A Keras callback: after each epoch, the loss and metrics of ``head`` on validation
    features computed once, logged as ``val_*`` as ``fit(validation_data=...)`` would."""
    import keras

    class ValidationOnFeatures(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            results = head.evaluate(
                features,
                labels.astype("float32"),
                batch_size=batch_size,
                verbose=0,
                return_dict=True,
            )
            if logs is not None:
                logs.update({f"val_{name}": value for name, value in results.items()})

    return ValidationOnFeatures()


def epoch_log(epochs: int):
    """A Keras callback that prints one line per epoch, when the epoch ends.

    ``epoch 3/12, 41.2 s: loss 0.2150 (val 0.5514), accuracy 0.9209 (val 0.7396),
    learning_rate 0.002``: each number beside its validation counterpart, in at most 100
    characters for up to 99 epochs of under 1,000 s (a book page wraps an output line
    longer than its block, never scrolls it). Keras' own ``verbose=2`` prints two lines per epoch
    (``Epoch 3/12``, then the numbers). The logs are read last, after every other callback
    (the validation pass on cached features adds its ``val_*`` there).
    """
    import keras

    def number(value) -> str:
        value = float(value)
        return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3g}"

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            names = sorted((n for n in logs if not n.startswith("val_")), key=lambda n: n != "loss")
            parts = [
                f"{name} {number(logs[name])}"
                + (f" (val {number(logs['val_' + name])})" if f"val_{name}" in logs else "")
                for name in names
            ]
            seconds = time.perf_counter() - self._start
            print(f"epoch {epoch + 1}/{epochs}, {seconds:.1f} s: {', '.join(parts)}", flush=True)

    return EpochLog()


def _several_workers(strategy) -> bool:
    """Whether ``strategy`` is a MultiWorkerMirroredStrategy over two or more workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return False
    return sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1


def _work_around_keras_multi_worker_fit(model) -> None:
    """Let Keras 3.15's ``Model.fit`` train ``model`` under a MultiWorkerMirroredStrategy of
    two or more workers, which it cannot do as released (keras-team/keras#20585).

    Two places in ``keras/src/backend/tensorflow/trainer.py`` fail as soon as more than one
    worker takes part; nothing in helpers/ or in the chapters causes either:

    1. ``_maybe_symbolic_build`` reads the first batch to build the metrics and calls
       ``strategy.reduce("MEAN", (images, labels), axis=None)`` on the whole *tuple* of
       per-replica values; with several workers TensorFlow's collective reduce tries to
       convert the tuple to one tensor: ``ValueError: Attempt to convert a value
       (PerReplica:{...}) with an unsupported type``. Only the batch's shapes and dtypes are
       needed, so this worker's own share of the batch is used instead.
    2. ``reduce_per_replica`` averages each step's logs across workers with
       ``strategy.reduce("MEAN", v, axis=0)``; the logs (loss, accuracy) are scalars, so
       every training step fails: ``ValueError: Invalid reduction dimension 0 for input
       with 0 dimensions``. The mean across replicas needs no axis (``axis=None``).

    Gradients are untouched: Keras scales the loss by 1 / replicas and TensorFlow sums the
    gradients across workers, which the test checks against a one-process run.
    """
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    strategy = model.distribute_strategy

    def build_from_local_share(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                shares = next(batches)
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], shares
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = build_from_local_share

    released = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy_, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
            strategy_
        ):
            return tree.map_structure(
                lambda v: (
                    strategy_.reduce("MEAN", v, axis=None)
                    if tf_trainer._is_per_replica_instance(v)
                    else v
                ),
                values,
            )
        return released(values, strategy_, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica


def fit(
    model,
    xrays: ChestXrays,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    class_weight: dict[int, float] | None = None,
    callbacks: Sequence = (),
    cache_frozen_features: bool = True,
    verbose: int = 2,
    patch_keras_multi_worker: bool = True,
) -> TrainingRun:
    """Train a compiled ``model`` on ``xrays.train``, watching ``xrays.val`` each epoch.

    Parameters
    ----------
    model : keras.Model
        Built and compiled (inside a ``tf.distribute`` strategy's scope for several devices).
    xrays : helpers.data.ChestXrays
        The person-aware split; the test images are never used here.
    epochs, batch_size, seed : int
        ``batch_size`` is *per replica*: under a strategy with several replicas each step
        sees ``replicas x batch_size`` images. ``seed`` fixes the shuffling of each epoch.
    class_weight : dict, optional
        Keras' ``class_weight`` (see :func:`helpers.data.class_weights`); None: unweighted.
    callbacks : sequence of keras.callbacks.Callback
    cache_frozen_features : bool
        For a model whose frozen base sees un-augmented images (model 5), compute the base's
        output once per image (kept on disk by :func:`helpers.features.frozen_features`, so
        another chapter or build with the same base and images reuses it) and train only the
        head on it: the head shares its layers with the model and the shuffling and dropout
        draw the same random numbers, so the trained model is the same (test scores agree to
        float32 rounding), several times faster. For model 4, whose augmentation comes before
        the base, only the per-epoch validation pass runs on base outputs computed once.
    verbose : int
        2 (the default) prints one line per epoch (:func:`epoch_log`); 0 prints nothing; 1 is
        Keras' progress bar.
    patch_keras_multi_worker : bool
        Under a ``MultiWorkerMirroredStrategy`` of two or more workers, work around Keras
        3.15's ``fit``, which cannot train there as released (keras-team/keras#20585; see
        :func:`_work_around_keras_multi_worker_fit`). False shows Keras' own failure.

    Returns
    -------
    TrainingRun
    """
    check_training_parameters(epochs=epochs, batch_size=batch_size, seed=seed)
    callbacks = list(callbacks)
    strategy = getattr(model, "distribute_strategy", None)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if patch_keras_multi_worker and _several_workers(strategy):
        _work_around_keras_multi_worker_fit(model)
    global_batch = batch_size * replicas
    start = time.perf_counter()
    trained, train_split, val_split = model, xrays.train, xrays.val
    base, fixed_inputs = frozen_base(model)
    if cache_frozen_features and base is not None and replicas == 1:
        from helpers.features import frozen_features

        extractor, head = split_at_layer(model, base)
        if fixed_inputs:
            trained = head
            train_split, val_split = (
                replace(s, images=frozen_features(extractor, s.images))
                for s in (xrays.train, xrays.val)
            )
        else:
            features = frozen_features(extractor, val_split.images)
            callbacks.append(_validation_on_features(head, features, val_split.labels, batch_size))
            val_split = None
    train_ds = training_dataset(
        train_split, batch_size=global_batch, seed=seed, drop_remainder=replicas > 1
    )
    # Validation is a plain pass in file order, no shuffling.
    val_data = None if val_split is None else (val_split.images, val_split.labels.astype("float32"))
    if replicas > 1:
        # Replicas need equal shares of every batch, so the per-epoch validation curve uses
        # whole batches only; the threshold and every reported metric come from a single
        # ordered pass over all validation images (helpers.evaluate).
        val_data = training_dataset(
            val_split, batch_size=global_batch, seed=seed, shuffle=False, drop_remainder=True
        )
    _build_optimizer(trained)
    history = trained.fit(
        train_ds,
        validation_data=val_data,
        validation_batch_size=global_batch,
        epochs=epochs,
        class_weight=class_weight,
        # The epoch line last: it prints the logs every other callback has added to.
        callbacks=callbacks + ([epoch_log(epochs)] if verbose == 2 else []),
        shuffle=False,  # shuffling happens in tf.data, seeded
        verbose=0 if verbose == 2 else verbose,
    )
    seconds = time.perf_counter() - start
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", np.arange(1, len(frame) + 1))
    return TrainingRun(
        model=model,
        history=frame,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        training_seconds=seconds,
        class_weight=class_weight,
    )


def _build_optimizer(model) -> None:
    """Create ``model``'s optimizer slots before ``fit``, in the model's strategy scope.

    Created by the first traced training step instead, they make ``tf.function`` trace
    that step twice (once to lift the new variables out): about 3 s a fit at the CI's image
    size on two cores, most of a one-epoch fit's overhead. The slots start at zero either
    way, so training is unchanged.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or optimizer.built:
        return
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None:
        optimizer.build(model.trainable_variables)
        return
    with strategy.scope():
        optimizer.build(model.trainable_variables)


def combine_runs(first: TrainingRun, second: TrainingRun) -> TrainingRun:
    """Two training stages of one model (a head, then fine-tuning) as one run: the
    histories one after the other (a ``stage`` column says which), epochs and seconds
    added, the second stage's model."""
    histories = []
    for stage, run in enumerate((first, second), start=1):
        if len(run.history):
            histories.append(run.history.assign(stage=stage))
    history = pd.concat(histories, ignore_index=True) if histories else first.history.iloc[:0]
    history["epoch"] = np.arange(1, len(history) + 1)
    return TrainingRun(
        model=second.model,
        history=history,
        epochs=first.epochs + second.epochs,
        batch_size=second.batch_size,
        seed=second.seed,
        training_seconds=first.training_seconds + second.training_seconds,
        class_weight=second.class_weight,
    )
