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
                            base weights used, images skipped
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
