"""Score X-ray images with a trained model from the book: ``python -m helpers.predict``.

::

    python -m helpers.predict --model results/model_1 IMAGE [IMAGE ...]
    python -m helpers.predict --model results/model_1 --json scans/*.jpeg
    python -m helpers.predict --model results/model_1 --gradcam heatmaps/ IMAGE
    python -m helpers.predict --model results/model_6 --adapt-to hospital_b/ IMAGE

For each image it prints the path, the probability of PNEUMONIA and the decision at the
threshold stored in the model's ``metrics.json`` (chosen on validation data when the model
was trained). The model is loaded in Keras' safe mode: a file that would run arbitrary code
(a ``Lambda`` layer's pickled function) is refused. The model's input size and colour mode
are checked against ``metrics.json``, and every image is converted to them by the same rule
as in training (:func:`helpers.data.decode_image`; a DICOM file, ``scan.dcm``, by its
modality LUT, window and photometric interpretation, and nothing of its header is printed
beyond the path given). A missing file, a non-image or a corrupt
image is reported on standard error by path; the other images are still scored, and the
exit status is then 1. Exit status 2: the model folder is unusable.

``--adapt-to FOLDER`` first re-estimates the model's batch-normalisation statistics on the
images of FOLDER (all image files below it, no labels; :func:`helpers.adapt.adapt_batchnorm`,
AdaBN), for images from another collection than the training data, whose feature statistics
differ. The output says which statistics were used. Exit status 2 also when FOLDER holds fewer
than :data:`helpers.adapt.MIN_ADAPT_IMAGES` readable images or the model has no batch
normalisation to adapt.

This is a teaching tool, not a medical device: its output is not a diagnosis.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import numpy as np

from helpers import config
from helpers.adapt import MIN_ADAPT_IMAGES, AdaptationError, adapt_batchnorm, adaptation_report
from helpers.data import DataError, decode_image

#: The public API (the rest is private by name).
__all__ = [
    "TRAINING_STATISTICS",
    "ModelFolderError",
    "AdaptFolderError",
    "LoadedModel",
    "load_model_folder",
    "folder_image_files",
    "adapt_to_folder",
    "Prediction",
    "predict_images",
    "main",
]

#: What the output says when the model keeps the statistics it was trained with.
TRAINING_STATISTICS = "training statistics"


class ModelFolderError(Exception):
    """The model folder is missing, incomplete, unsafe or inconsistent."""


class AdaptFolderError(Exception):
    """The ``--adapt-to`` folder is missing or holds too few readable images."""


@dataclass
class LoadedModel:
    """A trained model with what inference needs from its ``metrics.json``."""

    model: object
    model_id: str
    threshold: float
    threshold_method: str
    image_size: int
    color_mode: str
    output: str
    #: Which batch-norm statistics the model uses (see :func:`adapt_to_folder`).
    statistics: str = TRAINING_STATISTICS
    #: The threshold of the chapter's adapted evaluation (chosen on validation scored by the
    #: model adapted to the validation images), used with :func:`adapt_to_folder`; None if
    #: the chapter made none.
    adapted_threshold: float | None = None
    #: The batch-normalisation layers re-estimated by :func:`adapt_to_folder`, if any.
    adapted_layers: tuple[str, ...] = ()


def load_model_folder(folder: str | os.PathLike) -> LoadedModel:
    """Load ``results/<model-id>/`` safely and check it is consistent.

    Raises
    ------
    ModelFolderError
        If ``model.keras`` or ``metrics.json`` is missing or unreadable, if the model holds
        code that safe mode refuses, or if its input shape does not match the image size
        and colour mode recorded in ``metrics.json``.
    """
    import keras

    import helpers.layers  # noqa: F401 - registers the book's own layers for safe loading
    from helpers.evaluate import output_kind

    folder = Path(folder)
    model_file, metrics_file = folder / "model.keras", folder / "metrics.json"
    for needed in (model_file, metrics_file):
        if not needed.is_file():
            raise ModelFolderError(
                f"{needed} does not exist; --model must be a results folder written by a model "
                f"chapter (results/<model-id>/ with model.keras and metrics.json)"
            )
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        params = metrics["parameters"]
        image_size, color_mode = int(params["image_size"]), params.get("color_mode", "rgb")
        threshold = float(metrics["threshold"]["threshold"])
        method = str(metrics["threshold"].get("method", "?"))
        adapted = metrics.get("adapted")
        adapted_threshold = None if not adapted else float(adapted["threshold"]["threshold"])
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFolderError(
            f"{metrics_file} is not a metrics file of this book: {error!r}"
        ) from None
    try:
        model = keras.saving.load_model(model_file, safe_mode=True)
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise ModelFolderError(
                f"{model_file} holds code (such as a Lambda layer) that safe mode will not run; "
                "refusing to load it"
            ) from None
        raise ModelFolderError(f"{model_file} could not be loaded: {error}") from None
    except Exception as error:  # zip, h5 and JSON errors have many types
        raise ModelFolderError(
            f"{model_file} could not be loaded: {type(error).__name__}: {error}"
        ) from None
    expected = (image_size, image_size, 1 if color_mode == "grayscale" else 3)
    actual = tuple(model.input_shape[1:])
    if actual != expected:
        raise ModelFolderError(
            f"{model_file} takes images of shape {actual}, but {metrics_file} says "
            f"{image_size} px {color_mode} (shape {expected}); the folder is inconsistent"
        )
    return LoadedModel(
        model,
        str(metrics.get("model_id", folder.name)),
        threshold,
        method,
        image_size,
        color_mode,
        output_kind(model),
        adapted_threshold=adapted_threshold,
    )


def folder_image_files(folder: str | os.PathLike) -> list[Path]:
    """Every image file below ``folder`` (recursively), sorted by path.

    Image files are those with an extension in :data:`helpers.config.IMAGE_EXTENSIONS`
    (in any case); hidden files (starting with ".") are left out.

    Parameters
    ----------
    folder : path-like
        The folder to search.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    AdaptFolderError
        If ``folder`` is not an existing folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AdaptFolderError(f"--adapt-to {folder} is not a folder")
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in config.IMAGE_EXTENSIONS
    )


def adapt_to_folder(
    loaded: LoadedModel, folder: str | os.PathLike
) -> tuple[LoadedModel, dict[str, str]]:
    """Re-estimate the model's batch-norm statistics on the images below ``folder`` (no labels).

    Each image is decoded at the model's size and colour mode, as the scored images are.
    Unreadable files are left out and returned; the rest must number at least
    :data:`helpers.adapt.MIN_ADAPT_IMAGES`.

    Parameters
    ----------
    loaded : LoadedModel
        The model to adapt (it is not changed).
    folder : path-like
        A folder of unlabeled images of the collection to be scored, searched recursively.

    Returns
    -------
    (LoadedModel, dict)
        A copy of ``loaded`` holding the adapted model, whose ``statistics`` says
        "batch-norm statistics re-estimated on N images of FOLDER"; and the unreadable
        files, path -> reason.

    Raises
    ------
    AdaptFolderError
        If ``folder`` is not a folder or holds fewer than ``MIN_ADAPT_IMAGES`` readable images.
    AdaptationError
        If the model has no batch-normalisation layer to adapt.
    """
    images, unreadable = [], {}
    files = folder_image_files(folder)
    for path in files:
        try:
            images.append(
                decode_image(path, image_size=loaded.image_size, color_mode=loaded.color_mode)
            )
        except DataError as error:
            unreadable[str(path)] = str(error)
    if len(images) < MIN_ADAPT_IMAGES:
        raise AdaptFolderError(
            f"--adapt-to {folder} holds {len(images)} readable image(s) (of {len(files)} image "
            f"file(s) found); at least {MIN_ADAPT_IMAGES} are needed, because batch-norm "
            "statistics measured on a few images are noise"
        )
    model = adapt_batchnorm(loaded.model, np.stack(images))
    statistics = f"batch-norm statistics re-estimated on {len(images)} images of {folder}"
    # The chapter chose its adapted threshold on validation scored by the model adapted to
    # the validation images: the same protocol, so the same threshold.
    threshold, method = loaded.threshold, loaded.threshold_method
    if loaded.adapted_threshold is not None:
        threshold, method = (
            loaded.adapted_threshold,
            f"{method}, chosen on adapted validation scores",
        )
    adapted = replace(
        loaded,
        model=model,
        statistics=statistics,
        threshold=threshold,
        threshold_method=method,
        adapted_layers=adaptation_report(model).adapted,
    )
    return adapted, unreadable


@dataclass
class Prediction:
    """One scored image."""

    path: str
    probability: float
    decision: str


def predict_images(loaded: LoadedModel, paths: Sequence[str | os.PathLike]):
    """Score images one by one; returns ``(predictions, errors)``.

    ``errors`` maps each path that could not be read to the reason; the images are decoded
    at the model's size and colour mode.
    """
    from scipy.special import expit

    from helpers.evaluate import model_outputs

    predictions, errors, images = [], {}, []
    for path in paths:
        try:
            images.append(
                (
                    str(path),
                    decode_image(path, image_size=loaded.image_size, color_mode=loaded.color_mode),
                )
            )
        except DataError as error:
            errors[str(path)] = str(error)
    if images:
        batch = np.stack([image for _, image in images])
        raw = model_outputs(loaded.model, batch)
        scores = expit(raw) if loaded.output == "logit" else raw
        for (path, _), score in zip(images, scores):
            if not np.isfinite(score):
                errors[path] = "the model gave a non-finite score"
                continue
            decision = config.CLASS_NAMES[1] if score >= loaded.threshold else config.CLASS_NAMES[0]
            predictions.append(Prediction(path, float(score), decision))
    return predictions, errors, dict(images)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.predict",
        description="Score chest X-ray images with a model trained by the book. Not a diagnosis.",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="FOLDER",
        help="a results folder written by a model chapter, e.g. results/model_1",
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (any format Pillow reads, or DICOM .dcm files)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--gradcam",
        metavar="DIR",
        type=Path,
        help="also write a Grad-CAM overlay per image, DIR/<name>.gradcam.png",
    )
    parser.add_argument(
        "--adapt-to",
        metavar="FOLDER",
        type=Path,
        help="first re-estimate the model's batch-norm statistics on the images "
        f"below FOLDER (no labels; at least {MIN_ADAPT_IMAGES} images)",
    )
    return parser


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Command-line entry point; returns the exit status.

    0: every image scored; 1: some images failed; 2: the model folder is unusable.
    """
    out, err = out or sys.stdout, err or sys.stderr
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        loaded = load_model_folder(args.model)
    except ModelFolderError as error:
        print(f"error: {error}", file=err)
        return 2
    if args.adapt_to is not None:
        try:
            loaded, unreadable = adapt_to_folder(loaded, args.adapt_to)
        except (AdaptFolderError, AdaptationError) as error:
            print(f"error: {error}", file=err)
            return 2
        if unreadable:
            first = next(iter(unreadable.items()))
            print(
                f"note: {len(unreadable)} file(s) below {args.adapt_to} could not be read and were "
                f"left out of the adaptation (first: {first[0]}: {first[1]})",
                file=err,
            )
    predictions, errors, decoded = predict_images(loaded, args.images)
    if args.gradcam is not None and predictions:
        from helpers.explain import grad_cam, save_overlay

        names = [p.path for p in predictions]
        heatmaps = grad_cam(loaded.model, np.stack([decoded[n] for n in names]))
        for name, heatmap in zip(names, heatmaps):
            save_overlay(args.gradcam / f"{Path(name).stem}.gradcam.png", decoded[name], heatmap)
    if args.json:
        print(
            json.dumps(
                {
                    "model": loaded.model_id,
                    "threshold": loaded.threshold,
                    "threshold_method": loaded.threshold_method,
                    "statistics": loaded.statistics,
                    "adapted_layers": list(loaded.adapted_layers),
                    "predictions": [p.__dict__ for p in predictions],
                    "errors": [{"path": path, "error": reason} for path, reason in errors.items()],
                },
                indent=1,
            ),
            file=out,
        )
    else:
        width = max([len(p.path) for p in predictions] + [4])
        print(
            f"{'path':<{width}}  p(PNEUMONIA)  decision at {loaded.threshold:.3f} "
            f"({loaded.model_id}, threshold {loaded.threshold_method}; {loaded.statistics})",
            file=out,
        )
        for p in predictions:
            print(f"{p.path:<{width}}  {p.probability:12.4f}  {p.decision}", file=out)
    for path, reason in errors.items():
        print(f"error: {path}: {reason}", file=err)
    if errors:
        print(f"{len(errors)} of {len(args.images)} image(s) could not be scored", file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
