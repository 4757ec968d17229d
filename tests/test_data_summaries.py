"""Tests of helpers.data.summaries: the data chapter's tables, on made-up tables and real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import config, data


def _files(rows):
    """A describe_files-like table from (split, label, width, height, mode, format) rows."""
    frame = pd.DataFrame(rows, columns=["split", "label", "width", "height", "mode", "format"])
    frame["path"] = [
        f"{s}/{config.CLASS_NAMES[lab]}/{i}.jpeg"
        for i, (s, lab) in enumerate(zip(frame.split, frame.label))
    ]
    return frame


FILES = _files(
    [
        ("train", 0, 100, 80, "L", "JPEG"),
        ("train", 0, 300, 90, "L", "JPEG"),
        ("train", 1, 50, 50, "RGB", "JPEG"),
        ("train", 1, 60, 70, "L", "PNG"),
        ("train", 1, 70, 60, "L", "JPEG"),
        ("val", 0, 40, 40, "L", "JPEG"),
        ("val", 1, 40, 40, "L", "JPEG"),
        ("test", 0, 20, 30, "L", "JPEG"),
        ("test", 1, 25, 35, "RGB", "JPEG"),
        ("test", 1, 26, 36, "RGB", "JPEG"),
        ("test", 1, 27, 37, "L", "JPEG"),
    ]
)


def test_official_counts_counts_each_folder_and_class():
    counts = data.official_counts(FILES)
    assert counts.index.tolist() == ["train", "val", "test"]  # the official order, not sorted
    assert counts[["NORMAL", "PNEUMONIA", "total"]].to_dict("index") == {
        "train": {"NORMAL": 2, "PNEUMONIA": 3, "total": 5},
        "val": {"NORMAL": 1, "PNEUMONIA": 1, "total": 2},
        "test": {"NORMAL": 1, "PNEUMONIA": 3, "total": 4},
    }
    assert counts["PNEUMONIA share"].tolist() == [0.6, 0.5, 0.75]


def test_size_summary_gives_ranges_modes_and_formats_per_folder_and_class():
    table = data.size_summary(FILES)
    train_pneumonia = table.loc[("train", "PNEUMONIA")]
    assert train_pneumonia["images"] == 3
    assert train_pneumonia["width min-max"] == "50-70"
    assert train_pneumonia["height min-max"] == "50-70"
    assert train_pneumonia["modes"] == "L (2), RGB (1)"  # most common first
    assert train_pneumonia["formats"] == "JPEG, PNG"
    train_normal = table.loc[("train", "NORMAL")]
    assert (train_normal["width min-max"], train_normal["height min-max"]) == ("100-300", "80-90")
    assert table.loc[("test", "PNEUMONIA"), "modes"] == "RGB (2), L (1)"
    assert table["images"].sum() == len(FILES)


def test_sample_indices_draws_per_class_fixed_by_the_seed():
    labels = np.array([0, 1] * 10 + [1] * 5)
    picks = data.sample_indices(labels, per_class=4, seed=3)
    assert picks.shape == (8,)
    assert (labels[picks[:4]] == 0).all() and (labels[picks[4:]] == 1).all()  # NORMAL first
    assert (np.diff(picks[:4]) > 0).all() and (np.diff(picks[4:]) > 0).all()  # sorted, distinct
    assert np.array_equal(picks, data.sample_indices(labels, per_class=4, seed=3))
    others = [data.sample_indices(labels, per_class=4, seed=s) for s in range(4, 8)]
    assert any(not np.array_equal(picks, o) for o in others)
    everything = data.sample_indices(labels, per_class=10, seed=0)
    assert np.array_equal(everything[:10], np.flatnonzero(labels == 0))
    with pytest.raises(ValueError):
        data.sample_indices(labels, per_class=11, seed=0)  # only 10 NORMAL images


def _xrays(table: pd.DataFrame) -> data.ChestXrays:
    """A ChestXrays holding only ``table`` (the summaries read nothing else)."""
    empty = {
        name: data.Split(
            name, [], np.zeros(0, np.int64), np.zeros((0, 1, 1, 1), np.uint8), Path(".")
        )
        for name in ("train", "val", "test")
    }
    return data.ChestXrays(**empty, table=table, image_size=1, color_mode="grayscale", seed=0)


# Train folder: persons a, b, c with 2 images each, d with 4; d is on the validation side.
# val/ and test/ rows never count as the train folder's.
TABLE = pd.DataFrame(
    [
        ("train/NORMAL/IM-0001-0001.jpeg", "train", 0, "a"),
        ("train/NORMAL/IM-0001-0002.jpeg", "train", 0, "a"),
        ("train/NORMAL/IM-0002-0001.jpeg", "train", 0, "b"),
        ("train/NORMAL/IM-0002-0002.jpeg", "train", 0, "b"),
        ("train/PNEUMONIA/person3_virus_1.jpeg", "train", 1, "c"),
        ("train/PNEUMONIA/person3_virus_2.jpeg", "train", 1, "c"),
        ("train/PNEUMONIA/person4_virus_1.jpeg", "val", 1, "d"),
        ("train/PNEUMONIA/person4_virus_2.jpeg", "val", 1, "d"),
        ("train/PNEUMONIA/person4_virus_3.jpeg", "val", 1, "d"),
        ("train/PNEUMONIA/person4_virus_4.jpeg", "val", 1, "d"),
        ("val/NORMAL/NORMAL2-IM-0900-0001.jpeg", "val", 0, "e"),
        ("test/NORMAL/IM-0500-0001.jpeg", "test", 0, "f"),
        ("test/PNEUMONIA/person500_virus_1.jpeg", "test", 1, "g"),
        ("test/PNEUMONIA/person500_virus_2.jpeg", "test", 1, "g"),
    ],
    columns=["path", "split", "label", "group"],
)


def test_split_summary_counts_images_classes_and_persons_per_split():
    summary = data.split_summary(_xrays(TABLE))
    assert summary.index.tolist() == ["train", "val", "test"]
    assert summary.to_dict("index") == {
        "train": {
            "images": 6,
            "NORMAL": 4,
            "PNEUMONIA": 2,
            "PNEUMONIA share": 0.333,
            "persons / studies": 3,
        },
        "val": {
            "images": 5,
            "NORMAL": 1,
            "PNEUMONIA": 4,
            "PNEUMONIA share": 0.8,
            "persons / studies": 2,
        },
        "test": {
            "images": 3,
            "NORMAL": 1,
            "PNEUMONIA": 2,
            "PNEUMONIA share": 0.667,
            "persons / studies": 2,
        },
    }


def test_leakage_summary_compares_the_split_by_person_with_one_by_image():
    table = data.leakage_summary(_xrays(TABLE), seed=7)
    assert table.index.tolist() == ["by person (this book)", "by image (case study)"]
    assert table.loc["by person (this book)"].to_dict() == {
        "validation images": 4,
        "persons on both sides": 0,
        "validation images whose person is also in training": 0,
        "persons in validation": 1,
    }
    # The split by image draws 2 of the train folder's 10 images (20%), by the seed.
    is_val = data.image_level_split(10, seed=7)
    groups = TABLE.group[:10].to_numpy()
    shared = set(groups[is_val]) & set(groups[~is_val])
    assert shared  # this seed does split a person, so the row is worth checking
    assert table.loc["by image (case study)"].to_dict() == {
        "validation images": 2,
        "persons on both sides": len(shared),
        "validation images whose person is also in training": int(
            np.isin(groups[is_val], list(shared)).sum()
        ),
        "persons in validation": len(set(groups[is_val])),
    }


def test_on_the_real_data_only_the_split_by_image_leaks():
    xrays = _xrays(data.split_table(seed=42))
    table = data.leakage_summary(xrays, seed=42)
    ours, theirs = table.loc["by person (this book)"], table.loc["by image (case study)"]
    assert (
        ours["persons on both sides"] == 0
        and ours["validation images whose person is also in training"] == 0
    )
    assert theirs["persons on both sides"] > 100  # most persons have several images
    assert (
        ours["validation images"] + data.split_summary(xrays).loc["train", "images"] == 5216
    )  # the train folder
    summary = data.split_summary(xrays)
    assert summary["images"].sum() == 5856
    assert summary.loc["test", "images"] == 624
    assert (
        summary.loc["val", "images"] == ours["validation images"] + 16
    )  # plus the official val folder
