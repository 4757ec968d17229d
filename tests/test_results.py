"""Tests of helpers.results: atomic writes, the staged results folder, and the file readers."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import results
from helpers.results import ResultsWriter, atomic_write_text


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary, staging or backup entries that a finished write must not leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------
# atomic_write_text and write_json
# ---------------------------------------------------------------------------------------


def test_atomic_write_text_writes_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "deep" / "folder" / "file.csv"
    assert atomic_write_text(target, "a,b\n1,2\n") == target
    assert target.read_text() == "a,b\n1,2\n"
    atomic_write_text(target, "new\r\n")
    assert target.read_bytes() == b"new\r\n"  # newline="" : written as given
    atomic_write_text(target, "é ü 😀")
    assert target.read_text(encoding="utf-8") == "é ü 😀"
    assert os.listdir(target.parent) == ["file.csv"]


def test_atomic_write_text_failure_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(TypeError):
        atomic_write_text(target, b"bytes are not text")  # fails inside the write
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_atomic_write_text_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        target = atomic_write_text(tmp_path / "split.csv", "x\n")
        with ResultsWriter(tmp_path, "model_1") as writer:
            writer.write_json("metrics.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model_1").stat().st_mode) == 0o755


def test_write_json_makes_numpy_and_nan_json_safe(tmp_path):
    payload = {
        "int": np.int64(3),
        "float": np.float32(0.5),
        "nan": float("nan"),
        "np_nan": np.float64("nan"),
        "path": Path("/data/x"),
        "nested": {1: [np.int32(1), (2.5, float("nan"))]},
    }
    path = results.write_json(tmp_path / "m.json", payload)
    text = path.read_text()
    assert "NaN" not in text and text.endswith("\n")
    assert json.loads(text) == {
        "int": 3,
        "float": 0.5,
        "nan": None,
        "np_nan": None,
        "path": "/data/x",
        "nested": {"1": [1, [2.5, None]]},
    }


# ---------------------------------------------------------------------------------------
# ResultsWriter
# ---------------------------------------------------------------------------------------


def _write_complete(results_dir, content):
    with ResultsWriter(results_dir, "model_1") as writer:
        writer.write_predictions(
            "predictions_test.csv",
            pd.DataFrame(
                {"score": [0.25], "label": [1], "path": ["test/PNEUMONIA/a.jpeg"], "extra": [0]}
            ),
        )
        writer.write_json("metrics.json", {"content": content})
        writer.path("history.csv").write_text("epoch\n1\n")


def test_results_writer_assembles_and_swaps_in(tmp_path):
    _write_complete(tmp_path, "first")
    folder = tmp_path / "model_1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "history.csv",
        "metrics.json",
        "predictions_test.csv",
    ]
    # Prediction files keep only the contract columns, in contract order.
    assert (folder / "predictions_test.csv").read_text().splitlines() == [
        "path,label,score",
        "test/PNEUMONIA/a.jpeg,1,0.25",
    ]
    _write_complete(tmp_path, "second")
    assert json.loads((folder / "metrics.json").read_text()) == {"content": "second"}
    assert leftovers(tmp_path) == []
    assert leftovers(folder) == []


def test_results_writer_leaves_the_previous_folder_intact_when_the_block_raises(tmp_path):
    _write_complete(tmp_path, "good")
    folder = tmp_path / "model_1"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(RuntimeError, match="training diverged"):
        with ResultsWriter(tmp_path, "model_1") as writer:
            writer.write_json("metrics.json", {"content": "half"})
            writer.path("model.keras").write_bytes(b"partial")
            raise RuntimeError("training diverged")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert leftovers(tmp_path) == []


def test_results_writer_failure_with_no_previous_results_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ResultsWriter(tmp_path / "results", "model_2") as writer:
            writer.write_json("metrics.json", {"a": 1})
            raise KeyboardInterrupt
    assert os.listdir(tmp_path / "results") == []


def test_other_models_are_untouched(tmp_path):
    (tmp_path / "model_2").mkdir()
    (tmp_path / "model_2" / "metrics.json").write_text("{}")
    _write_complete(tmp_path, "x")
    assert (tmp_path / "model_2" / "metrics.json").read_text() == "{}"


# ---------------------------------------------------------------------------------------
# Frames and readers
# ---------------------------------------------------------------------------------------


def test_predictions_frame_checks_labels_and_scores():
    frame = results.predictions_frame(["a", "b"], [0, 1], [0.0, 1.0])
    assert list(frame.columns) == ["path", "label", "score"]
    with pytest.raises(ValueError, match="labels"):
        results.predictions_frame(["a"], [2], [0.5])
    with pytest.raises(ValueError, match="probabilities"):
        results.predictions_frame(["a", "b"], [0, 1], [0.5, 1.7])
    with pytest.raises(ValueError, match="probabilities"):
        results.predictions_frame(["a"], [0], [float("nan")])
    with pytest.raises(ValueError):
        results.predictions_frame(["a", "b"], [0], [0.5])


def test_read_predictions_checks_the_file(tmp_path):
    good = tmp_path / "predictions_val.csv"
    good.write_text("path,label,score\nval/NORMAL/a.jpeg,0,0.125\n")
    frame = results.read_predictions(good)
    assert frame.to_dict("list") == {"path": ["val/NORMAL/a.jpeg"], "label": [0], "score": [0.125]}
    bad = tmp_path / "predictions_test.csv"
    bad.write_text("path,score,label\nx,0.1,0\n")
    with pytest.raises(ValueError, match="columns"):
        results.read_predictions(bad)
    with pytest.raises(FileNotFoundError, match="predictions_none.csv"):
        results.read_predictions(tmp_path / "predictions_none.csv")


def test_read_metrics(tmp_path):
    results.write_json(tmp_path / "model_3" / "metrics.json", {"auc": float("nan"), "n": 5})
    got = results.read_metrics(tmp_path, "model_3")
    assert got["n"] == 5 and got["auc"] is None
    with pytest.raises(FileNotFoundError, match="model_4"):
        results.read_metrics(tmp_path, "model_4")


def test_scores_round_trip_exactly_through_csv(tmp_path):
    scores = np.random.default_rng(0).random(50)
    with ResultsWriter(tmp_path, "model_1") as writer:
        writer.write_predictions(
            "predictions_val.csv",
            pd.DataFrame({"path": [f"p{i}" for i in range(50)], "label": 0, "score": scores}),
        )
    back = results.read_predictions(tmp_path / "model_1" / "predictions_val.csv")
    assert np.array_equal(back.score.to_numpy(), scores)
    assert not any(math.isnan(s) for s in back.score)


# ---------------------------------------------------------------------------------------
# Chapters that read other chapters' results
# ---------------------------------------------------------------------------------------


def test_require_chapters_names_the_missing_chapters(tmp_path):
    results.write_json(tmp_path / "model_1" / "metrics.json", {"model_id": "model_1"})
    (tmp_path / "model_3").mkdir()  # a folder without metrics.json: not a finished chapter
    results.require_chapters(tmp_path, ["model_1"])  # all there: no error
    with pytest.raises(results.MissingResults) as info:
        results.require_chapters(tmp_path, ["model_1", "model_2", "model_3"])
    message = str(info.value)
    assert "model_2, model_3" in message and "model_1," not in message
    assert "run the chapter(s) model_2.ipynb, model_3.ipynb first" in message
    assert str(tmp_path) in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_results_show_in_jupyter_as_their_message_alone(tmp_path):
    with pytest.raises(results.MissingResults) as info:
        results.require_chapters(tmp_path / "nowhere", ["model_6"])
    assert info.value._render_traceback_() == [f"MissingResults: {info.value}"]
