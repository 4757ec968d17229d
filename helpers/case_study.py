"""The case study's evaluation, reproduced on purpose, to show what it got wrong.

Nothing else in the project uses this module: it exists for the chapter "What went wrong in
the original evaluation". Each function does one of the original's mistakes, so the chapter
can put its number next to the correct one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from helpers import config


def case_study_test_pass(
    model, data_dir: str | os.PathLike, *, image_size: int, batch_size: int, shuffle: bool = True, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and raw outputs gathered the case study's way.

    The test folder is read with ``keras.utils.image_dataset_from_directory``, which
    shuffles by default and reshuffles on every pass. Predictions come from one pass
    (``model.predict(ds)``) and labels from a second (``[y for _, y in ds]``), so with
    ``shuffle=True`` the i-th label and the i-th prediction belong to different images.
    With ``shuffle=False`` the two passes agree.

    Returns
    -------
    labels, outputs : numpy.ndarray
        As the case study had them: possibly misaligned, outputs raw (logits for 4-5).
    """
    import keras

    test_dir = Path(data_dir) / "test"
    ds = keras.utils.image_dataset_from_directory(
        test_dir,
        labels="inferred",
        label_mode="int",
        class_names=list(config.CLASS_NAMES),
        image_size=(image_size, image_size),
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        verbose=False,
    )
    outputs = np.asarray(model.predict(ds, verbose=0)).reshape(-1)
    labels = np.concatenate([y.numpy() for _, y in ds]).astype(np.int64)
    return labels, outputs


def batch_averaged_specificity(y_true, y_pred, *, batch_size: int) -> float:
    """Specificity computed per batch and averaged over batches, as a Keras metric function is.

    ``tn / negatives`` per batch, with predictions rounded (``K.round``, i.e. a cut at 0.5
    whatever the output is), then the mean over batches. This is the usual hand-written
    ``specificity(y_true, y_pred)`` passed to ``compile(metrics=[...])``: the mean of
    per-batch ratios is not the ratio over the test set, and on logits the rounding cuts at
    the wrong place. (A reconstruction of the pattern: the case study's exact code is not
    part of this project.)
    """
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    ratios = []
    for start in range(0, y_true.size, batch_size):
        t, p = y_true[start:start + batch_size], y_pred[start:start + batch_size]
        negatives = np.sum(1 - t)
        true_negatives = np.sum(np.round(np.clip((1 - t) * (1 - p), 0, 1)))
        ratios.append(true_negatives / (negatives + 1e-7))
    return float(np.mean(ratios))


def keras_sensitivity_at_specificity(y_true, y_pred, *, specificity: float = 0.5) -> float:
    """``keras.metrics.SensitivityAtSpecificity`` on the given data.

    It searches the threshold *on the data it is given*: evaluated on the test set it picks
    the test set's own best threshold, an optimistic number no deployed model can reach,
    and on logits (outside [0, 1]) its 200 thresholds in [0, 1] do not cover the outputs.
    """
    import keras

    metric = keras.metrics.SensitivityAtSpecificity(specificity)
    metric.update_state(np.asarray(y_true, dtype="float32"), np.asarray(y_pred, dtype="float32"))
    return float(metric.result())
