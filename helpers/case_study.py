"""The case study's evaluation, reproduced on purpose, to show what it got wrong.

Nothing else in the project uses this module: it exists for the chapter "What went wrong in
the original evaluation". Each function does one of the original's mistakes, or builds the
table that puts its number next to the correct one (read from the model chapters' results).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import chapters, config, metrics
from helpers.report import interval_text, show_warning

#: The extensions ``keras.utils.image_dataset_from_directory`` reads (in any case; Keras 3's
#: ``ALLOWLIST_FORMATS``). It skips every other file without a word, DICOM files included.
KERAS_LOADER_EXTENSIONS = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png"})


def keras_loader_reads_test_folder(data_dir: str | os.PathLike | None) -> bool:
    """True when Keras' directory loader reads every test image of the folder.

    False when the test split holds a file the book reads and Keras' loader does not (a
    DICOM or TIFF file): :func:`case_study_test_pass` then builds its dataset from the
    book's decoded images instead.

    Parameters
    ----------
    data_dir : path-like or None
        The data folder (None: the embedded copy).

    Returns
    -------
    bool

    Raises
    ------
    DataError
        If the data folder's layout is wrong (see :func:`helpers.data.check_data_dir`).
    """
    from helpers.data import list_split

    paths = list_split(data_dir, "test")["path"]
    return all(Path(path).suffix.lower() in KERAS_LOADER_EXTENSIONS for path in paths)


def case_study_test_pass(
    model,
    data_dir: str | os.PathLike | None,
    *,
    image_size: int,
    batch_size: int,
    shuffle: bool = True,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and raw outputs gathered the case study's way.

    The test folder is read with ``keras.utils.image_dataset_from_directory``, which
    shuffles by default and reshuffles on every pass. Predictions come from one pass
    (``model.predict(ds)``) and labels from a second (``[y for _, y in ds]``), so with
    ``shuffle=True`` the i-th label and the i-th prediction belong to different images.
    With ``shuffle=False`` the two passes agree.

    Keras' loader reads only BMP, GIF, JPEG and PNG files and skips the others silently.
    When the test folder holds any other image the book reads (DICOM, TIFF; see
    :func:`keras_loader_reads_test_folder`), the dataset is built by
    :func:`book_decoded_test_dataset` instead: the same images in the same orders, pass
    after pass, but decoded by the book's rule (:func:`helpers.data.decode_image`, Pillow's
    bilinear resize of the DICOM rule's picture) rather than by Keras' resize, so its
    outputs are those of :func:`helpers.evaluate.predict_split`, reordered.

    Parameters
    ----------
    model : keras.Model
        Takes RGB images with values 0-255.
    data_dir : path-like or None
        The data folder (None: the embedded copy).
    image_size, batch_size : int
        As the loader is given them.
    shuffle : bool
        The loader's ``shuffle``.
    seed : int, optional
        The loader's ``seed`` (None: a random one, as Keras draws it).

    Returns
    -------
    labels, outputs : numpy.ndarray
        As the case study had them: possibly misaligned, outputs raw (logits for 4-5).

    Raises
    ------
    DataError
        If the data folder's layout is wrong or a test image cannot be decoded, naming it.
    """
    import keras

    from helpers.data import class_folders

    if keras_loader_reads_test_folder(data_dir):
        # Keras matches class_names to folder names exactly: pass them as named on disk
        # (normal/ or NORMAL/), in label order.
        folders = class_folders(data_dir, "test")
        ds = keras.utils.image_dataset_from_directory(
            folders["NORMAL"].parent,
            labels="inferred",
            label_mode="int",
            class_names=[folder.name for folder in folders.values()],
            image_size=(image_size, image_size),
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            verbose=False,
        )
    else:
        ds = book_decoded_test_dataset(
            data_dir, image_size=image_size, batch_size=batch_size, shuffle=shuffle, seed=seed
        )
    outputs = np.asarray(model.predict(ds, verbose=0)).reshape(-1)
    labels = np.concatenate([y.numpy() for _, y in ds]).astype(np.int64)
    return labels, outputs


def book_decoded_test_dataset(
    data_dir: str | os.PathLike | None,
    *,
    image_size: int,
    batch_size: int,
    shuffle: bool = True,
    seed: int | None = None,
):
    """The test folder as ``keras.utils.image_dataset_from_directory`` gives it, decoded
    by the book.

    Mirrors Keras 3's loader (``keras/src/utils/image_dataset_utils.py``): files listed class
    folder by class folder in label order, each folder sorted by file name; with
    ``shuffle``, that list shuffled once by ``numpy.random.RandomState(seed)``, then
    ``Dataset.shuffle(buffer_size=batch_size * 8, seed=seed)``, which reshuffles on every
    pass; then batched. Elements are ``(images, labels)``: RGB float32 0-255 and int32
    labels (0 NORMAL, 1 PNEUMONIA), as Keras' ``label_mode="int"``. What differs is the
    decoding: each image is :func:`helpers.data.decode_image`'s (for DICOM, the book's rule;
    resized with Pillow's bilinear filter), not Keras' resize without antialiasing.

    Parameters
    ----------
    data_dir : path-like or None
        The data folder (None: the embedded copy).
    image_size, batch_size : int
        Image side in pixels; images per batch.
    shuffle : bool
        Shuffle as Keras' loader does (else one fixed order, the listing's).
    seed : int, optional
        The shuffles' seed (None: a random one, as Keras draws it).

    Returns
    -------
    tf.data.Dataset

    Raises
    ------
    ValueError
        If ``batch_size`` is not a positive integer.
    DataError
        If the data folder's layout is wrong or a test image cannot be decoded, naming it.
    """
    import tensorflow as tf

    from helpers.data import check_data_dir, list_split, load_images

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    root = check_data_dir(data_dir)
    table = list_split(root, "test")
    # Decoded in the file table's order, the one every chapter uses: the cached arrays serve.
    images = load_images(
        [root / path for path in table["path"]], image_size=image_size, color_mode="rgb"
    )
    labels = table["label"].to_numpy(dtype=np.int32)
    # Keras' listing: class by class in label order, then by file name (the paths of one
    # class differ only in it); the same order for class folders named in any case.
    order = np.array(sorted(range(len(table)), key=lambda i: (labels[i], table["path"][i])))
    if shuffle:
        seed = np.random.randint(1e6) if seed is None else seed
        np.random.RandomState(seed).shuffle(order)  # Keras' one shuffle of the file list
    ds = tf.data.Dataset.from_tensor_slices((images[order], labels[order]))
    if shuffle:
        ds = ds.shuffle(buffer_size=batch_size * 8, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda image, label: (tf.cast(image, tf.float32), label))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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
        t, p = y_true[start : start + batch_size], y_pred[start : start + batch_size]
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


def reported_vs_corrected(all_metrics: dict[str, dict]) -> pd.DataFrame:
    """The case study's reported test accuracy beside this book's numbers, per model."""
    low, high = config.CASE_STUDY_REPORTED_ACCURACY
    rows = {}
    case_study_models = chapters.case_study_model_ids()
    for model_id, m in all_metrics.items():
        if model_id not in case_study_models:
            continue
        rows[model_id] = {
            "reported accuracy (case study)": f"{low:.2f}-{high:.2f} (range over all five)",
            "accuracy at 0.5 (this book)": interval_text(m["test_at_0.5"], "accuracy"),
            "accuracy at validation threshold": interval_text(m["test"], "accuracy"),
            "AUC (this book)": interval_text(m["test"], "auc"),
        }
    return pd.DataFrame(rows).T


def results_path(results_dir: str | os.PathLike, model_id: str, name: str) -> Path:
    """``<results_dir>/<model_id>/<name>``, failing clearly if that chapter has not run."""
    path = Path(results_dir) / model_id / name
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the {model_id} chapter first")
    return path


def load_trained(results_dir: str | os.PathLike, model_id: str):
    """The saved model of ``model_id`` (loaded in Keras' safe mode) and its metrics."""
    import keras

    import helpers.layers  # noqa: F401 - registers the book's own layers for safe loading
    from helpers.results import read_metrics

    model = keras.saving.load_model(
        results_path(results_dir, model_id, "model.keras"), safe_mode=True
    )
    return model, read_metrics(results_dir, model_id)


def evaluation_ways(ways: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """AUC and accuracy at 0.5 for each way of pairing labels with scores."""
    rows = {}
    for name, (labels, scores) in ways.items():
        rates = metrics.rates_at_threshold(labels, scores, threshold=0.5)
        auc = metrics.roc_auc_with_ci(labels, scores)
        rows[name] = {
            "AUC": round(auc.value, 4),
            "AUC 95% CI": f"{auc.ci_low:.3f}-{auc.ci_high:.3f}",
            "accuracy at 0.5": round(rates["accuracy"].value, 4),
            "sensitivity at 0.5": round(rates["sensitivity"].value, 4),
            "specificity at 0.5": round(rates["specificity"].value, 4),
        }
    return pd.DataFrame(rows).T


def logit_cut_table(results_dir: str | os.PathLike, model_id: str = "model_4") -> pd.DataFrame:
    """Test rates of a logit model cut the case study's way and the correct ways."""
    from scipy.special import expit

    from helpers.results import read_metrics, read_predictions

    frame = read_predictions(results_path(results_dir, model_id, "predictions_test.csv"))
    m = read_metrics(results_dir, model_id)
    if frame["score"].nunique() < 2:
        show_warning(
            f"{model_id} gives every test image the same score (base weights: "
            f"{m['base_weights']}), so every threshold below gives the same decisions: this "
            "table only shows the mistake with ImageNet weights."
        )
    # A logit cut at 0.5 is a probability cut at sigmoid(0.5).
    logit_cut = float(expit(0.5))
    rows = {}
    for name, threshold in (
        ("original: logit >= 0.5", logit_cut),
        ("probability >= 0.5", 0.5),
        ("probability >= validation threshold", m["threshold"]["threshold"]),
    ):
        rates = metrics.rates_at_threshold(frame["label"], frame["score"], threshold=threshold)
        rows[name] = {
            "probability threshold": f"{threshold:.3f}",
            **{k: f"{rates[k]:.3f}" for k in ("sensitivity", "specificity", "accuracy")},
        }
    return pd.DataFrame(rows).T


def metric_helpers_table(
    correct, metrics_json: dict, *, batch_size: int, seed: int
) -> pd.DataFrame:
    """The case study's metric helpers against the correct numbers, on the same scores."""
    labels, scores = correct.labels, correct.scores
    # Keras evaluates a shuffled dataset batch by batch: reproduce that order.
    order = np.random.default_rng(seed).permutation(labels.size)
    at_half = metrics.rates_at_threshold(labels, scores, threshold=0.5)
    rows = {
        "specificity, helper averaged over batches (0.5)": (
            batch_averaged_specificity(labels[order], scores[order], batch_size=batch_size),
            "mean of per-batch ratios",
        ),
        "specificity over the test set (0.5)": (at_half["specificity"].value, "tn / (tn + fp)"),
        "SensitivityAtSpecificity(0.5) on the test set": (
            keras_sensitivity_at_specificity(labels, scores, specificity=0.5),
            "threshold tuned on the test set itself",
        ),
        "sensitivity at the validation threshold": (
            metrics_json["test"]["sensitivity"],
            "threshold fixed on validation first",
        ),
    }
    return pd.DataFrame(
        {
            "value": {k: round(v, 4) for k, (v, _) in rows.items()},
            "what it is": {k: w for k, (_, w) in rows.items()},
        }
    )
