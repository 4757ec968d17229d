"""The results contract: what each trained model leaves in ``results/<model-id>/``.

==========================  =======================================================
file                        content
==========================  =======================================================
``predictions_val.csv``     ``path,label,score``: validation images, in file order
``predictions_test.csv``    ``path,label,score``: test images, in file order
``metrics.json``            parameters, threshold and how it was chosen, test metrics
                            with 95% intervals, counts, epochs, training seconds,
                            base weights used
``history.csv``             per-epoch loss and accuracy, training and validation
``model.keras``             the trained model (Keras 3 format)
==========================  =======================================================

``results/split.csv`` (``path,split,label``) records the split. Labels: 0 = NORMAL,
1 = PNEUMONIA; score = probability of PNEUMONIA; paths are relative to the data folder.

Every file is written to a temporary name and renamed into place, and a model's folder is
assembled beside the old one and swapped in at the end, so an interrupted run leaves the
previous complete results (or none), never a half-written file.
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

PREDICTION_COLUMNS = ["path", "label", "score"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; results are ordinary files, readable as the umask allows.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    frame = pd.DataFrame({"path": list(paths), "label": np.asarray(labels), "score": np.asarray(scores, dtype=float)})
    if not frame["label"].isin([0, 1]).all():
        raise ValueError("labels must be 0 (NORMAL) or 1 (PNEUMONIA)")
    if not frame["score"].between(0, 1).all():
        raise ValueError("scores must be probabilities in [0, 1]")
    return frame


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``predictions_*.csv`` file and check its columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} does not exist; run the model's chapter first")
    frame = pd.read_csv(path)
    if list(frame.columns) != PREDICTION_COLUMNS:
        raise ValueError(f"{path} has columns {list(frame.columns)}; expected {PREDICTION_COLUMNS}")
    return frame


def read_metrics(results_dir: str | os.PathLike, model_id: str) -> dict:
    """Read ``results_dir/<model_id>/metrics.json``."""
    path = Path(results_dir) / model_id / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the {model_id} chapter first")
    return json.loads(path.read_text(encoding="utf-8"))


class ResultsWriter:
    """Assemble ``results_dir/<model_id>/`` in a staging folder, then swap it in.

    Use as a context manager; on an exception the staging folder is removed and the previous
    results stay as they were.
    """

    def __init__(self, results_dir: str | os.PathLike, model_id: str):
        self.final = Path(results_dir) / model_id
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".{model_id}.staging."))

    def __enter__(self) -> "ResultsWriter":
        return self

    def path(self, name: str) -> Path:
        return self.staging / name

    def write_predictions(self, name: str, frame: pd.DataFrame) -> None:
        atomic_write_text(self.path(name), frame[PREDICTION_COLUMNS].to_csv(index=False))

    def write_json(self, name: str, payload: dict) -> None:
        write_json(self.path(name), payload)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        os.chmod(self.staging, 0o777 & ~_umask())
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old.{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.staging, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
