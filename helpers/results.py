"""The results contract: what each trained model leaves in ``results/<model-id>/``.

==========================  =======================================================
file                        content
==========================  =======================================================
``predictions_val.csv``     ``path,label,score``: validation images, in file order
``predictions_test.csv``    ``path,label,score``: test images, in file order
``metrics.json``            parameters, threshold and how it was chosen, test metrics
                            with 95% intervals at it, at Youden's and at 0.5, counts,
                            calibration (Brier, ECE, temperature fitted on validation),
                            sensitivity by kind of pneumonia, epochs, training seconds,
                            base weights used, images skipped, official validation
                            images used (``official_val_images``, ``official_val``),
                            the weight count (``n_weights``) and the code's commit
``history.csv``             per-epoch loss and accuracy, training and validation
``predictions_*_adapted``   models with batch normalisation: the same, adapted to each
                            folder's images without labels (``metrics.json["adapted"]``)
``model.keras``             the trained model (Keras 3 format)
``MODEL_CARD.md``           what a person reads before using the model, written from
                            ``metrics.json`` (:mod:`helpers.model_card`)
==========================  =======================================================

``results/split.csv`` (``path,split,label``) records the split. Labels: 0 = NORMAL,
1 = PNEUMONIA; score = probability of PNEUMONIA; paths are relative to the data folder.

Every file is written to a temporary name and renamed into place, and a model's folder is
assembled beside the old one and swapped in at the end (:mod:`helpers.files`), so an
interrupted run leaves the previous complete results (or none), never a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.evaluate import output_kind
from helpers.files import atomic_write_text, replace_folder
from helpers.model_card import code_version, write_model_card
from helpers.train import is_chief

#: The public API (the rest is private by name).
__all__ = [
    "PREDICTION_COLUMNS",
    "write_json",
    "predictions_frame",
    "read_predictions",
    "read_metrics",
    "recover_interrupted",
    "ResultsWriter",
    "save_results",
    "MissingResults",
    "require_chapters",
]

PREDICTION_COLUMNS = ["path", "label", "score"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` as indented JSON (NaN becomes null), atomically."""
    return atomic_write_text(path, json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")


def predictions_frame(paths, labels, scores) -> pd.DataFrame:
    """A ``path,label,score`` frame, checked: same lengths, labels in {0, 1}, scores in [0, 1]."""
    frame = pd.DataFrame(
        {"path": list(paths), "label": np.asarray(labels), "score": np.asarray(scores, dtype=float)}
    )
    if not frame["label"].isin([0, 1]).all():
        raise ValueError("labels must be 0 (NORMAL) or 1 (PNEUMONIA)")
    if not frame["score"].between(0, 1).all():
        raise ValueError("scores must be probabilities in [0, 1]")
    return frame


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``predictions_*.csv`` file and check its columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"predictions file {path} does not exist; run the model's chapter first"
        )
    frame = pd.read_csv(path)
    if list(frame.columns) != PREDICTION_COLUMNS:
        raise ValueError(f"{path} has columns {list(frame.columns)}; expected {PREDICTION_COLUMNS}")
    return frame


def read_metrics(results_dir: str | os.PathLike, model_id: str) -> dict:
    """Read ``results_dir/<model_id>/metrics.json`` (after tidying an interrupted write)."""
    recover_interrupted(results_dir, model_id)
    path = Path(results_dir) / model_id / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the {model_id} chapter first")
    return json.loads(path.read_text(encoding="utf-8"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def recover_interrupted(results_dir: str | os.PathLike, model_id: str) -> list[str]:
    """Tidy what a killed writer of ``results_dir/<model_id>/`` left behind.

    A writer killed while assembling leaves a hidden staging folder: it is removed. One
    killed between its two renames leaves the previous results under a hidden ``.old``
    name and no results folder: they are put back. Folders of writers still running (by
    process id) are left alone.

    Returns
    -------
    list of str
        What was done, one line each (empty when there was nothing to tidy).
    """
    results_dir = Path(results_dir)
    final = results_dir / model_id
    done: list[str] = []
    if not results_dir.is_dir():
        return done
    for entry in sorted(results_dir.glob(f".{model_id}.*")):
        parts = entry.name.split(".")
        # .<model_id>.staging.<pid>.<random> and .<model_id>.old.<pid>
        kind = parts[2] if len(parts) > 3 else ""
        try:
            pid = int(parts[3])
        except (IndexError, ValueError):
            continue
        if kind not in ("staging", "old") or _pid_alive(pid) and pid != os.getpid():
            continue
        if kind == "old" and not final.exists():
            os.replace(entry, final)
            done.append(f"restored the previous results of {model_id} from {entry.name}")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed {entry.name}, left by an interrupted run")
    return done


class ResultsWriter:
    """Assemble ``results_dir/<model_id>/`` in a staging folder, then swap it in.

    Use as a context manager; on an exception the staging folder is removed and the previous
    results stay as they were. A process killed at any point (no exception, no clean-up)
    leaves the previous complete results visible or, in the instant between the two
    renames of the swap, hidden beside it; the next writer puts them back or tidies up
    (:func:`recover_interrupted`).
    """

    def __init__(self, results_dir: str | os.PathLike, model_id: str):
        self.final = Path(results_dir) / model_id
        self.final.parent.mkdir(parents=True, exist_ok=True)
        recover_interrupted(self.final.parent, model_id)
        self.staging = Path(
            tempfile.mkdtemp(dir=self.final.parent, prefix=f".{model_id}.staging.{os.getpid()}.")
        )

    def __enter__(self) -> ResultsWriter:
        return self

    def path(self, name: str) -> Path:
        return self.staging / name

    def write_predictions(self, name: str, frame: pd.DataFrame) -> None:
        checked = predictions_frame(frame["path"], frame["label"], frame["score"])
        atomic_write_text(self.path(name), checked.to_csv(index=False))

    def write_json(self, name: str, payload: dict) -> None:
        write_json(self.path(name), payload)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        # The previous results wait under a name recover_interrupted knows.
        old = self.final.with_name(f".{self.final.name}.old.{os.getpid()}")
        replace_folder(self.staging, self.final, old=old)


def _optimizer_settings(model) -> dict:
    """Optimiser name, learning rate and weight decay as compiled (for ``metrics.json``)."""
    # An uncompiled model (model_8's ensemble, assembled, not trained by fit) has none.
    optimizer = (model.get_compile_config() or {}).get("optimizer") or {}
    settings = optimizer.get("config", {}) if isinstance(optimizer, dict) else {}
    rate = settings.get("learning_rate")
    return {
        "optimizer": optimizer.get("class_name", str(optimizer))
        if isinstance(optimizer, dict)
        else str(optimizer),
        "learning_rate": rate if isinstance(rate, (int, float)) else str(rate),
        "weight_decay": settings.get("weight_decay"),
    }


def save_results(
    evaluation,
    *,
    model,
    run,
    xrays,
    parameters: dict,
    title: str,
    base_weights: str = "none",
    extra: dict | None = None,
    adapted=None,
    results_dir: str | os.PathLike | None = None,
    save_model: bool = True,
) -> Path:
    """Write ``results_dir/<model_id>/`` (see the table above), atomically.

    Parameters
    ----------
    evaluation : helpers.evaluate.Evaluation
        What :func:`helpers.evaluate.summarise` returned.
    model : keras.Model
        The trained model (saved as ``model.keras``).
    run : helpers.train.TrainingRun
        Its history, epochs, batch size, seed and training seconds.
    xrays : helpers.data.ChestXrays
        The data it was trained and evaluated on (image size, colour mode, split, skipped files).
    parameters : dict
        The chapter's parameters (:meth:`helpers.parameters.ChapterParameters.as_dict`).
    title : str
        One line saying what the model is.
    base_weights : str
        ``"imagenet"``, ``"random"``, a weights file, or ``"none"`` (no pretrained base).
    extra : dict, optional
        More blocks for ``metrics.json`` (a chapter's own measurements).
    adapted : helpers.evaluate.Evaluation, optional
        The evaluation adapted to each folder's images
        (:func:`helpers.evaluate.adapted_to_each_folder`): its metrics go to
        ``metrics.json["adapted"]`` and its predictions to ``predictions_*_adapted.csv``.
    results_dir : path-like, optional
        Default: ``parameters["results_dir"]``.

    Returns
    -------
    pathlib.Path
        The model's results folder. Under a multi-worker strategy every worker trains and
        scores, and only the chief (:func:`helpers.train.is_chief`) writes.
    """
    results_dir = Path(results_dir if results_dir is not None else parameters["results_dir"])
    model_id = evaluation.model_id
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and not is_chief(strategy):
        return results_dir / model_id
    payload = {
        "model_id": model_id,
        "title": title,
        "parameters": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in parameters.items()},
            "data_dir": str(xrays.train.data_dir),
            "image_size": xrays.image_size,
            "color_mode": xrays.color_mode,
            "epochs": run.epochs,
            "batch_size": run.batch_size,
            "seed": run.seed,
            "val_fraction": xrays.val_fraction,
            "split_seed": xrays.seed,
            **_optimizer_settings(model),
            "use_class_weights": run.class_weight is not None,
        },
        "output": output_kind(model),
        "base_weights": base_weights,
        "n_weights": int(model.count_params()),
        # The code that trained it, for the model card (git's commit, or "unknown").
        "commit": code_version(),
        **evaluation.metrics,
        "epochs": run.epochs,
        "training_seconds": run.training_seconds,
        "n_images": {"train": len(xrays.train), **evaluation.metrics.get("n_images", {})},
        "skipped_images": [{"path": path, "reason": reason} for path, reason in xrays.skipped],
        # 0 and a sentence saying so when the data folder has no val/ (helpers.data.folders).
        "official_val_images": xrays.official_val_images,
        "official_val": xrays.official_val_note,
        **(extra or {}),
    }
    if adapted is not None:
        payload["adapted"] = adapted.metrics
    with ResultsWriter(results_dir, model_id) as writer:
        writer.write_predictions("predictions_val.csv", evaluation.val.to_frame())
        writer.write_predictions("predictions_test.csv", evaluation.test.to_frame())
        if adapted is not None:
            writer.write_predictions("predictions_val_adapted.csv", adapted.val.to_frame())
            writer.write_predictions("predictions_test_adapted.csv", adapted.test.to_frame())
        run.history.to_csv(writer.path("history.csv"), index=False)
        if save_model:
            model.save(writer.path("model.keras"))
        writer.write_json("metrics.json", payload)
        write_model_card(writer.staging)  # from the metrics.json just written
    return results_dir / model_id


class MissingResults(FileNotFoundError):
    """A chapter needs results that another chapter writes and that are not there yet.

    In Jupyter it shows as its message alone, not as a traceback into the package
    (IPython calls ``_render_traceback_``): the message says which chapters to run first.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def require_chapters(results_dir: str | os.PathLike, model_ids) -> None:
    """Stop with :class:`MissingResults` unless every model in ``model_ids`` has written
    ``results_dir/<model_id>/metrics.json``; the message names the chapters to run first."""
    missing = [m for m in model_ids if not (Path(results_dir) / m / "metrics.json").is_file()]
    if missing:
        raise MissingResults(
            f"this chapter reads the results of {', '.join(missing)}, which are not in "
            f"{results_dir}: run the chapter(s) {', '.join(f'{m}.ipynb' for m in missing)} first "
            "(or build the book: make book)"
        )
