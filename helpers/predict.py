"""Score X-ray images with a trained model from the book: ``python -m helpers.predict``.

::

    python -m helpers.predict --model results/model_7 scans/ --csv scores.csv
    python -m helpers.predict --model results/model_1 IMAGE [IMAGE ...]
    python -m helpers.predict --model results/model_1 --json scans/*.jpeg
    python -m helpers.predict --model results/model_1 --gradcam heatmaps/ IMAGE
    python -m helpers.predict --model results/model_6 --adapt-to hospital_b/ IMAGE

Each argument is an image file or a folder; a folder is searched at any depth by the
loader's rules (:func:`helpers.data.image_files_below`: image extensions in any case, DICOM
included, hidden folders and ``__MACOSX`` skipped). For each image it gives the path, the
probability of PNEUMONIA and the decision at the threshold stored in the model's
``metrics.json`` (chosen on validation data when the model was trained): a table on
standard output, JSON with ``--json``, and with ``--csv FILE`` a CSV of one row per file
(:data:`SCORE_COLUMNS`), written atomically: an interrupted run leaves no CSV, or the
previous one. The path of an image found in a folder is its path relative to that folder
when the folder is the only argument, else the folder as given joined with it. Images are
decoded on threads and scored :data:`BATCH_SIZE` at a time
(:func:`helpers.data.decoded_batches`), so the memory a run holds does not grow with the
number of files; :func:`score_folder` does the same from Python.

The model is loaded in Keras' safe mode: a file that would run arbitrary code (a ``Lambda``
layer's pickled function) is refused. The model's input size and colour mode are checked
against ``metrics.json``, and every image is converted to them by the same rule as in
training (:func:`helpers.data.decode_image`; a DICOM file, ``scan.dcm``, by its modality LUT,
window and photometric interpretation). Nothing of a DICOM header is printed or written:
the path given is the only identifier. Every run names the model's card
(``MODEL_CARD.md``, :mod:`helpers.model_card`) and says in one line where the model must
not be trusted, on standard error.

A missing file, a non-image or a corrupt image is reported by path with the reason (on
standard error, and in the CSV's ``error`` column); the other images are still scored, and
the exit status is then 1. Exit status 2: the model folder is unusable, a folder given does
not exist or holds no image file, or the CSV cannot be written; nothing is scored then.

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
import csv
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from helpers import config
from helpers.adapt import MIN_ADAPT_IMAGES, AdaptationError, adapt_batchnorm, adaptation_report
from helpers.data import DataError, decode_image, decoded_batches, image_files_below
from helpers.files import atomic_write
from helpers.model_card import CARD_NAME, limits_sentence

if TYPE_CHECKING:
    import pandas as pd

#: The public API (the rest is private by name).
__all__ = [
    "TRAINING_STATISTICS",
    "ModelFolderError",
    "AdaptFolderError",
    "LoadedModel",
    "load_model_folder",
    "adapt_to_folder",
    "BATCH_SIZE",
    "SCORE_COLUMNS",
    "Prediction",
    "Score",
    "ScoredBatch",
    "scored_batches",
    "predict_images",
    "score_files",
    "score_folder",
    "write_scores_csv",
    "main",
]

#: What the output says when the model keeps the statistics it was trained with.
TRAINING_STATISTICS = "training statistics"


class ModelFolderError(Exception):
    """The model folder is missing, incomplete, unsafe or inconsistent."""


class AdaptFolderError(Exception):
    """The folder to adapt to (``--adapt-to``) is missing or holds too few readable images."""


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
    #: The model's card (``MODEL_CARD.md`` in its folder), None if the folder has none.
    card: Path | None = None
    #: One line saying where the model must not be trusted
    #: (:func:`helpers.model_card.limits_sentence`).
    limits: str = ""


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
        limits = limits_sentence(metrics)
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
        card=folder / CARD_NAME if (folder / CARD_NAME).is_file() else None,
        limits=limits,
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
    try:
        files = image_files_below(folder)
    except DataError as error:
        raise AdaptFolderError(str(error)) from None
    for path in files:
        try:
            images.append(
                decode_image(path, image_size=loaded.image_size, color_mode=loaded.color_mode)
            )
        except DataError as error:
            unreadable[str(path)] = str(error)
    if len(images) < MIN_ADAPT_IMAGES:
        raise AdaptFolderError(
            f"{folder} holds {len(images)} readable image(s) (of {len(files)} image "
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


#: Images decoded and scored at a time: what a run holds in memory, whatever the number of
#: files (``--batch-size``).
BATCH_SIZE = 64

#: The CSV's columns (:func:`write_scores_csv`): an unreadable file has no probability and
#: no decision, and the reason in ``error``.
SCORE_COLUMNS = ("path", "probability", "decision", "error")


@dataclass
class Prediction:
    """One scored image."""

    path: str
    probability: float
    decision: str


@dataclass
class Score:
    """One file's row: its score and decision, or why it could not be scored."""

    path: str
    probability: float | None = None
    decision: str | None = None
    error: str | None = None


@dataclass
class ScoredBatch:
    """One batch of :func:`scored_batches`.

    Attributes
    ----------
    rows : list of Score
        One per file of the batch, in the order given.
    images : numpy.ndarray of uint8
        The decoded image of each row that has a probability, in that order (for Grad-CAM).
    """

    rows: list[Score]
    images: np.ndarray


def scored_batches(
    loaded: LoadedModel,
    paths: Iterable[str | os.PathLike],
    *,
    names: Sequence[str] | None = None,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
) -> Iterator[ScoredBatch]:
    """Score files ``batch_size`` at a time, decoding on threads; holds one batch at a time.

    Each file is decoded at the model's size and colour mode
    (:func:`helpers.data.decoded_batches`), logits are turned into probabilities, and the
    decision is taken at ``loaded.threshold``. A file that cannot be read, or that the model
    gives a non-finite score, gets the reason instead.

    Parameters
    ----------
    loaded : LoadedModel
        The model (:func:`load_model_folder`, or :func:`adapt_to_folder`'s).
    paths : iterable of path-like
        The files, scored in this order.
    names : sequence of str, optional
        What each row calls its file (default: the path as given).
    batch_size : int, default BATCH_SIZE
        Files per batch.
    workers : int or None
        Decoding threads; None uses every core.

    Yields
    ------
    ScoredBatch
    """
    from scipy.special import expit

    from helpers.evaluate import model_outputs

    paths = list(paths)
    names = [str(p) for p in paths] if names is None else list(names)
    if len(names) != len(paths):
        raise ValueError(f"names and paths differ in length: {len(names)} and {len(paths)}")
    done = 0
    for batch in decoded_batches(
        paths,
        image_size=loaded.image_size,
        color_mode=loaded.color_mode,
        batch_size=batch_size,
        workers=workers,
    ):
        rows = [Score(names[done + i]) for i in range(len(batch.paths))]
        done += len(batch.paths)
        for i, reason in batch.errors.items():
            rows[i].error = reason
        keep = []
        if len(batch.decoded):
            raw = model_outputs(loaded.model, batch.images, batch_size=batch_size)
            scores = expit(raw) if loaded.output == "logit" else raw
            for row, (i, score) in enumerate(zip(batch.decoded, scores)):
                if not np.isfinite(score):
                    rows[i].error = "the model gave a non-finite score"
                    continue
                rows[i].probability = float(score)
                rows[i].decision = config.CLASS_NAMES[int(score >= loaded.threshold)]
                keep.append(row)
        yield ScoredBatch(rows, batch.images[keep])


def predict_images(
    loaded: LoadedModel, paths: Sequence[str | os.PathLike], **batch_options
) -> tuple[list[Prediction], dict[str, str]]:
    """Score images, in batches; returns ``(predictions, errors)``.

    Parameters
    ----------
    loaded : LoadedModel
        The model.
    paths : sequence of path-like
        Image files, decoded at the model's size and colour mode.
    **batch_options
        ``batch_size`` and ``workers`` (see :func:`scored_batches`).

    Returns
    -------
    predictions : list of Prediction
        The images that were scored, in the order given.
    errors : dict of str to str
        Each path that could not be scored, and why.
    """
    predictions, errors = [], {}
    for batch in scored_batches(loaded, paths, **batch_options):
        for row in batch.rows:
            if row.error is None:
                predictions.append(Prediction(row.path, row.probability, row.decision))
            else:
                errors[row.path] = row.error
    return predictions, errors


def score_files(loaded: LoadedModel, paths: Sequence[str | os.PathLike], **options) -> pd.DataFrame:
    """One row per file, :data:`SCORE_COLUMNS`, as :func:`scored_batches` scores them.

    Parameters
    ----------
    loaded : LoadedModel
        The model.
    paths : sequence of path-like
        The files.
    **options
        ``names``, ``batch_size`` and ``workers`` (see :func:`scored_batches`).

    Returns
    -------
    pandas.DataFrame
        ``path``, ``probability`` (of PNEUMONIA), ``decision`` (at ``loaded.threshold``),
        ``error`` (why a file was not scored, else missing), in the order given.
    """
    import pandas as pd

    rows = [
        row.__dict__ for batch in scored_batches(loaded, paths, **options) for row in batch.rows
    ]
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def score_folder(
    model: str | os.PathLike | LoadedModel,
    folder: str | os.PathLike,
    *,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
) -> pd.DataFrame:
    """Score every image file below ``folder``, at any depth, with a model of the book.

    The files are found by the loader's rules (:func:`helpers.data.image_files_below`),
    decoded on threads and scored ``batch_size`` at a time, so memory does not grow with the
    folder's size. Nothing of a DICOM header is returned.

    Parameters
    ----------
    model : path-like or LoadedModel
        A results folder written by a model chapter (``results/model_7``), or a model
        already loaded (:func:`load_model_folder`, :func:`adapt_to_folder`).
    folder : path-like
        The folder of images.
    batch_size : int, default BATCH_SIZE
        Images decoded and scored at a time.
    workers : int or None
        Decoding threads; None uses every core.

    Returns
    -------
    pandas.DataFrame
        One row per image file, sorted by path: ``path`` (relative to ``folder``, with
        ``/``), ``probability`` of PNEUMONIA, ``decision`` at the model's threshold, and
        ``error``, the reason a file could not be scored (its probability and decision are
        then missing).

    Raises
    ------
    ModelFolderError
        If ``model`` is a folder that cannot be used (see :func:`load_model_folder`).
    helpers.data.DataError
        If ``folder`` does not exist, is not a folder, or holds no image file.
    """
    files = _folder_files(folder)
    loaded = model if isinstance(model, LoadedModel) else load_model_folder(model)
    names = [path.relative_to(folder).as_posix() for path in files]
    return score_files(loaded, files, names=names, batch_size=batch_size, workers=workers)


def _folder_files(folder: str | os.PathLike) -> list[Path]:
    """:func:`helpers.data.image_files_below`, refusing a folder with no image file."""
    files = image_files_below(folder)
    if not files:
        raise DataError(
            f"folder {folder} holds no image files (expected "
            f"{', '.join(sorted(config.IMAGE_EXTENSIONS))}, in any case, at any depth; "
            "hidden and __MACOSX folders are skipped)"
        )
    return files


def write_scores_csv(rows: Iterable[Score], path: str | os.PathLike) -> int:
    """Write rows to a CSV of :data:`SCORE_COLUMNS` as they come, atomically.

    The rows are written to a temporary file beside ``path`` as they arrive (so a long run
    holds none of them) and renamed into place at the end (:func:`helpers.files.atomic_write`):
    a run that fails or is interrupted leaves no CSV, or the previous one as it was.

    Parameters
    ----------
    rows : iterable of Score
        The rows, for example from :func:`scored_batches`.
    path : path-like
        The CSV file; its folder is created.

    Returns
    -------
    int
        How many rows were written.
    """
    written = 0

    def write(tmp: Path) -> None:
        nonlocal written
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            out = csv.writer(handle, lineterminator="\n")
            out.writerow(SCORE_COLUMNS)
            for row in rows:
                probability = "" if row.probability is None else f"{row.probability:.6f}"
                out.writerow([row.path, probability, row.decision or "", row.error or ""])
                written += 1
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, write)
    return written


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


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
        metavar="FOLDER_OR_FILE",
        help="image files (any format Pillow reads, or DICOM .dcm files), or folders of them "
        "(searched at any depth; hidden and __MACOSX folders skipped)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--csv",
        metavar="FILE",
        type=Path,
        help="write one row per file to FILE (path, probability, decision, error), atomically",
    )
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
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=BATCH_SIZE,
        metavar="N",
        help=f"images decoded and scored at a time (default {BATCH_SIZE})",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="decoding threads (default: one per core)",
    )
    return parser


@dataclass
class _Inputs:
    """The files the arguments name: each file, what its row calls it, its overlay's name."""

    files: list[Path]
    names: list[str]
    overlays: list[Path]


def _inputs(arguments: Sequence[str]) -> _Inputs:
    """Expand folders into their image files (:func:`helpers.data.image_files_below`).

    Raises
    ------
    helpers.data.DataError
        For a folder with no image file, or an argument that does not exist and is not
        named like an image file (a missing image file is reported by its row instead).
    """
    inputs = _Inputs([], [], [])
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            for file in _folder_files(path):
                relative = file.relative_to(path)
                inputs.files.append(file)
                # Relative to the folder when it is the only argument; else, with it.
                name = relative if len(arguments) == 1 else path / relative
                inputs.names.append(name.as_posix())
                inputs.overlays.append(relative.parent / relative.stem)
        elif not path.exists() and path.suffix.lower() not in config.IMAGE_EXTENSIONS:
            raise DataError(f"{argument} does not exist; expected image files or folders of them")
        else:
            inputs.files.append(path)
            inputs.names.append(str(argument))
            inputs.overlays.append(Path(path.stem))
    return inputs


def _check_writable(path: Path) -> None:
    """Fail before scoring, not after, when the CSV cannot be written."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path.parent):
        pass


def _card_lines(loaded: LoadedModel, model_folder: str) -> list[str]:
    card = (
        str(loaded.card)
        if loaded.card is not None
        else f"none in {model_folder} (written by the model chapters with their results)"
    )
    return [f"model card: {card}", f"limits: {loaded.limits}"]


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Command-line entry point; returns the exit status.

    0: every image scored; 1: some images could not be scored (named on standard error and
    in the CSV); 2: the model folder, a folder given, ``--adapt-to`` or the CSV is unusable
    (nothing scored); 130: interrupted (no CSV written).
    """
    out, err = out or sys.stdout, err or sys.stderr
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        loaded = load_model_folder(args.model)
    except ModelFolderError as error:
        print(f"error: {error}", file=err)
        return 2
    print(*_card_lines(loaded, args.model), sep="\n", file=err)
    if args.adapt_to is not None:
        try:
            loaded, unreadable = adapt_to_folder(loaded, args.adapt_to)
        except (AdaptFolderError, AdaptationError) as error:
            print(f"error: --adapt-to: {error}", file=err)
            return 2
        if unreadable:
            first = next(iter(unreadable.items()))
            print(
                f"note: {len(unreadable)} file(s) below {args.adapt_to} could not be read and were "
                f"left out of the adaptation (first: {first[0]}: {first[1]})",
                file=err,
            )
    try:
        inputs = _inputs(args.images)
    except DataError as error:
        print(f"error: {error}; nothing was scored", file=err)
        return 2
    if args.csv is not None:
        try:
            _check_writable(args.csv)
        except OSError as error:
            print(f"error: cannot write the CSV {args.csv}: {error}; nothing was scored", file=err)
            return 2
    table = not args.json and args.csv is None
    predictions, errors = [], {}
    if table:
        width = max([len(name) for name in inputs.names] + [4])
        print(
            f"{'path':<{width}}  p(PNEUMONIA)  decision at {loaded.threshold:.3f} "
            f"({loaded.model_id}, threshold {loaded.threshold_method}; {loaded.statistics})",
            file=out,
        )

    def rows() -> Iterator[Score]:
        done = 0
        for batch in scored_batches(
            loaded,
            inputs.files,
            names=inputs.names,
            batch_size=args.batch_size,
            workers=args.workers,
        ):
            scored = [done + i for i, row in enumerate(batch.rows) if row.error is None]
            if args.gradcam is not None and scored:
                _write_overlays(loaded, batch.images, [inputs.overlays[i] for i in scored], args)
            done += len(batch.rows)
            for row in batch.rows:
                if row.error is not None:
                    errors[row.path] = row.error
                elif table:
                    print(f"{row.path:<{width}}  {row.probability:12.4f}  {row.decision}", file=out)
                elif args.json:
                    predictions.append(Prediction(row.path, row.probability, row.decision))
                yield row  # every file has its row in the CSV, the unreadable ones too

    try:
        if args.csv is not None:
            written = write_scores_csv(rows(), args.csv)
            print(
                f"wrote {args.csv}: {written} row(s), {written - len(errors)} scored, "
                f"{len(errors)} could not be scored",
                file=err,
            )
        else:
            for _ in rows():
                pass
    except KeyboardInterrupt:
        print("interrupted: no CSV was written" if args.csv else "interrupted", file=err)
        return 130
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
    for path, reason in errors.items():
        print(f"error: {path}: {reason}", file=err)
    if errors:
        print(f"{len(errors)} of {len(inputs.files)} image(s) could not be scored", file=err)
        return 1
    return 0


def _write_overlays(loaded: LoadedModel, images: np.ndarray, names: list[Path], args) -> None:
    """Grad-CAM overlays of one batch's scored images, ``--gradcam DIR/<name>.gradcam.png``."""
    from helpers.explain import grad_cam, save_overlay

    for name, image, heatmap in zip(names, images, grad_cam(loaded.model, images)):
        save_overlay(args.gradcam / f"{name}.gradcam.png", image, heatmap)


if __name__ == "__main__":
    sys.exit(main())
