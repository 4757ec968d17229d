"""Seeded training, validation-chosen thresholds, one test pass, and the results folder.

The order is fixed by :func:`evaluate_and_save`: validation scores choose the threshold,
then the test set is scored once, and only then are test metrics computed.
"""

from __future__ import annotations

import os
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import calibration, config, metrics
from helpers.data import ChestXrays, class_weights, training_dataset
from helpers.evaluate import Predictions, predict_split
from helpers.models import BuiltModel, build_model, get_spec
from helpers.results import ResultsWriter


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
    for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass
class TrainingRun:
    """A trained model with its history and wall time."""

    built: BuiltModel
    history: pd.DataFrame
    epochs: int
    batch_size: int
    seed: int
    training_seconds: float
    class_weight: dict[int, float] | None = None

    @property
    def model(self):
        return self.built.model


#: Strategy names :func:`distribution_strategy` knows.
STRATEGIES = config.STRATEGIES


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
        For ``"mirrored"``: the devices to mirror over (``["/gpu:0", "/gpu:1"]``); all
        visible GPUs (or the CPU) when None.

    Returns
    -------
    tf.distribute.Strategy
        Build the model inside ``strategy.scope()`` (:func:`build` does) and give
        :func:`fit` the *per-replica* batch size: it multiplies it by
        ``strategy.num_replicas_in_sync``.
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
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")


def build(
    model_id: str,
    xrays: ChestXrays,
    *,
    seed: int = config.SEED,
    base_weights: str | os.PathLike | None = "imagenet",
    strategy=None,
    spec=None,
) -> BuiltModel:
    """Seed everything, then build and compile ``model_id`` for ``xrays``' image shape.

    ``strategy`` (a ``tf.distribute.Strategy`` or a name for
    :func:`distribution_strategy`) is the scope the model's variables are created in;
    None is the default single-device strategy. ``spec`` is a variant of the model's
    registered :class:`~helpers.models.ModelSpec` (model_6's ablation), None the registered.
    """
    get_spec(model_id)
    if strategy is None or isinstance(strategy, str):
        strategy = distribution_strategy(strategy)
    set_seed(seed)
    channels = xrays.train.images.shape[-1]
    with strategy.scope():
        built = build_model(
            model_id, image_size=xrays.image_size, channels=channels,
            base_weights=base_weights, spec=spec,
        )
    built.strategy = strategy
    return built


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


def _validation_on_features(head, features, labels, batch_size):
    """A Keras callback: after each epoch, the loss and metrics of ``head`` on validation
    features computed once, logged as ``val_*`` as ``fit(validation_data=...)`` would."""
    import keras

    class ValidationOnFeatures(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            results = head.evaluate(
                features, labels.astype("float32"), batch_size=batch_size, verbose=0,
                return_dict=True,
            )
            if logs is not None:
                logs.update({f"val_{name}": value for name, value in results.items()})

    return ValidationOnFeatures()


def fit(
    built: BuiltModel,
    xrays: ChestXrays,
    *,
    epochs: int = config.EPOCHS,
    batch_size: int = config.BATCH_SIZE,
    seed: int = config.SEED,
    use_class_weights: bool | None = None,
    cache_frozen_features: bool = True,
    verbose: int = 2,
) -> TrainingRun:
    """Train on ``xrays.train``, watching ``xrays.val`` each epoch (as the case study did).

    Parameters
    ----------
    use_class_weights : bool, optional
        Weight the loss by :func:`helpers.data.class_weights`. None (default) follows the
        model's spec: off for the case study's models (it did not), on for model_6.
    cache_frozen_features : bool
        For a model with a frozen base that sees un-augmented images (model 5), compute the
        base's output once per image and train only the head on it. The head shares its
        layers with the model, the shuffling and dropout draw the same random numbers, so
        the trained model is the same as with the base in the loop (test scores agree to
        float32 rounding), several times faster. For model 4, whose augmentation comes
        before the base, only the per-epoch validation pass runs on base outputs computed
        once (the logged validation loss is the same to float32 rounding).
    batch_size : int
        Images per step *per replica*: under a strategy with several replicas (see
        :func:`distribution_strategy`) each step sees ``replicas x batch_size`` images.
    verbose : int
        Keras' verbosity; 2 prints one line per epoch.
    """
    check_training_parameters(epochs=epochs, batch_size=batch_size, seed=seed)
    if use_class_weights is None:
        use_class_weights = built.spec.use_class_weights
    weights = class_weights(xrays.train.labels) if use_class_weights else None
    callbacks = []
    if built.spec.schedule == "cosine":
        callbacks.append(cosine_schedule(built.spec.learning_rate, epochs))
    # batch_size is per replica (per device); each step sees replicas x batch_size images.
    replicas = built.strategy.num_replicas_in_sync if built.strategy is not None else 1
    global_batch = batch_size * replicas
    start = time.perf_counter()
    model, train_split, val_split = built.model, xrays.train, xrays.val
    if cache_frozen_features and built.frozen_feature_layer is not None and replicas == 1:
        from dataclasses import replace

        from helpers.models import compile_with_spec, split_at_frozen_features

        extractor, model = split_at_frozen_features(built.model, built.frozen_feature_layer)
        compile_with_spec(model, built.spec)
        train_split, val_split = (
            replace(s, images=extractor.predict(s.images, batch_size=batch_size, verbose=0))
            for s in (xrays.train, xrays.val)
        )
    elif cache_frozen_features and built.frozen_base_layer is not None and replicas == 1:
        # Model 4: augmentation comes before the frozen base, so training must run the base
        # on every batch; the validation images are not augmented, so the per-epoch
        # validation pass can run the head on features computed once.
        from helpers.models import compile_with_spec, split_at_frozen_features

        extractor, head = split_at_frozen_features(built.model, built.frozen_base_layer)
        compile_with_spec(head, built.spec)
        features = extractor.predict(val_split.images, batch_size=batch_size, verbose=0)
        callbacks.append(_validation_on_features(head, features, val_split.labels, batch_size))
        val_split = None
    train_ds = training_dataset(
        train_split, batch_size=global_batch, seed=seed, drop_remainder=replicas > 1
    )
    # Validation is a plain pass in file order, no shuffling.
    val_data = None if val_split is None else (val_split.images, val_split.labels.astype("float32"))
    if replicas > 1:
        # Replicas need equal shares of every batch, so the per-epoch validation curve uses
        # whole batches only; the threshold and every reported metric come from
        # evaluate_and_save's single pass over all validation images.
        val_data = training_dataset(
            val_split, batch_size=global_batch, seed=seed, shuffle=False, drop_remainder=True
        )
    history = model.fit(
        train_ds,
        validation_data=val_data,
        validation_batch_size=global_batch,
        epochs=epochs,
        class_weight=weights,
        callbacks=callbacks,
        shuffle=False,  # shuffling happens in tf.data, seeded
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", np.arange(1, len(frame) + 1))
    return TrainingRun(
        built=built,
        history=frame,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        training_seconds=seconds,
        class_weight=weights,
    )


@dataclass
class ModelResult:
    """What one model chapter reports: predictions, thresholds and metrics."""

    model_id: str
    val: Predictions
    test: Predictions
    threshold: dict
    metrics: dict
    results_dir: Path
    extra_thresholds: dict = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.results_dir / self.model_id


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def evaluate_and_save(
    run: TrainingRun,
    xrays: ChestXrays,
    *,
    results_dir: str | os.PathLike = config.DEFAULT_RESULTS_DIR,
    target_sensitivity: float = config.TARGET_SENSITIVITY,
    parameters: dict | None = None,
    save_model: bool = True,
) -> ModelResult:
    """Choose the threshold on validation, score the test set once, write the results.

    Parameters
    ----------
    run : TrainingRun
    xrays : ChestXrays
    results_dir : path-like
        Results go to ``results_dir/<model_id>/`` (see :mod:`helpers.results`).
    target_sensitivity : float
        The operating point: the highest validation threshold reaching this sensitivity.
        Youden's threshold and the case study's 0.5 are reported beside it.
    parameters : dict, optional
        The notebook's parameters, recorded in ``metrics.json``.

    Returns
    -------
    ModelResult
    """
    model_id = run.built.spec.model_id
    results_dir = Path(results_dir)
    val = predict_split(run.model, xrays.val, batch_size=run.batch_size)
    warnings_list: list[str] = []
    if np.unique(val.scores).size < 2:
        # A model that gives every image the same score ranks nothing: no threshold can be
        # chosen. Say so in the results instead of inventing an operating point.
        message = (
            f"{model_id} gives every validation image the same score ({val.scores[0]:.6g}): "
            "it does not rank images, so no threshold can be chosen on validation; the "
            "case study's 0.5 is used and the test AUC is 0.5 by construction."
        )
        warnings_list.append(message)
        chosen = {"threshold": 0.5, "method": "none (constant scores)", "target_sensitivity": float(target_sensitivity)}
        youden = None
    else:
        chosen = metrics.choose_threshold(
            val.labels, val.scores, method="sensitivity", target=target_sensitivity
        )
        youden = metrics.youden_threshold(val.labels, val.scores)
    chosen["chosen_on"] = "validation"
    # The test set is scored here, once, after the thresholds are fixed.
    test = predict_split(run.model, xrays.test, batch_size=run.batch_size)
    spec = run.built.spec
    payload = {
        "model_id": model_id,
        "title": spec.title,
        "parameters": {
            "data_dir": str(xrays.train.data_dir),
            "image_size": xrays.image_size,
            "color_mode": xrays.color_mode,
            "epochs": run.epochs,
            "batch_size": run.batch_size,
            "seed": run.seed,
            "val_fraction": xrays.val_fraction,
            "split_seed": xrays.seed,
            "optimizer": spec.optimizer,
            "learning_rate": spec.learning_rate,
            "weight_decay": spec.weight_decay,
            "schedule": spec.schedule,
            "use_class_weights": run.class_weight is not None,
            "target_sensitivity": target_sensitivity,
            **(parameters or {}),
        },
        "output": spec.output,
        "base_weights": run.built.base_weights,
        "threshold": chosen,
        "thresholds": {"sensitivity": chosen["threshold"], "youden": youden, "case_study": 0.5},
        "test": metrics.summary(test.labels, test.scores, threshold=chosen["threshold"]),
        "test_at_youden": (
            None if youden is None else metrics.summary(test.labels, test.scores, threshold=youden)
        ),
        "test_at_0.5": metrics.summary(test.labels, test.scores, threshold=0.5),
        "val": metrics.summary(val.labels, val.scores, threshold=chosen["threshold"]),
        "calibration": calibration.temperature_report(val.labels, val.scores, test.labels, test.scores),
        "sensitivity_by_kind": metrics.sensitivity_by_kind(
            test.paths, test.labels, test.scores, threshold=chosen["threshold"]
        ).reset_index().to_dict("records"),
        "epochs": run.epochs,
        "training_seconds": run.training_seconds,
        "n_images": {"train": len(xrays.train), "val": len(xrays.val), "test": len(xrays.test)},
        "skipped_images": [{"path": path, "reason": reason} for path, reason in xrays.skipped],
        "versions": _versions(),
        "warnings": warnings_list + list(run.built.messages),
    }
    with ResultsWriter(results_dir, model_id) as writer:
        writer.write_predictions("predictions_val.csv", val.to_frame())
        writer.write_predictions("predictions_test.csv", test.to_frame())
        run.history.to_csv(writer.path("history.csv"), index=False)
        if save_model:
            run.model.save(writer.path("model.keras"))
        writer.write_json("metrics.json", payload)
    return ModelResult(
        model_id=model_id,
        val=val,
        test=test,
        threshold=chosen,
        metrics=payload,
        results_dir=results_dir,
        extra_thresholds={"youden": youden, "case_study": 0.5},
    )
