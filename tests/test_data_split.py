"""Tests of helpers.data.split: the person-aware split, on the real data set and on its own."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from conftest import REAL_DATA_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import config, data


@pytest.fixture(scope="module")
def real_split() -> pd.DataFrame:
    return data.split_table(seed=42)


def test_real_split_never_puts_a_person_on_both_sides(real_split):
    train_groups = set(real_split.loc[real_split.split == "train", "group"])
    val_groups = set(real_split.loc[real_split.split == "val", "group"])
    assert train_groups and val_groups
    assert train_groups.isdisjoint(val_groups)


def test_real_split_holds_out_a_fifth_of_the_train_folder_keeping_class_ratios(real_split):
    from_train_folder = real_split[real_split.path.str.startswith("train/")]
    val_share = (from_train_folder.split == "val").mean()
    assert val_share == pytest.approx(config.VAL_FRACTION, abs=0.02)
    pneumonia = real_split.groupby("split").label.mean()
    assert abs(pneumonia["train"] - pneumonia["val"]) < 0.02
    # Within the train folder alone the stratification must hold as well.
    folder_share = from_train_folder.groupby("split").label.mean()
    assert abs(folder_share["train"] - folder_share["val"]) < 0.02


def test_real_split_test_side_is_the_official_test_folder_untouched(real_split):
    test = real_split[real_split.split == "test"]
    assert len(test) == 624
    on_disk = sorted(
        f"test/{c}/{name}"
        for c in config.CLASS_NAMES
        for name in os.listdir(REAL_DATA_DIR / "test" / c)
        if not name.startswith(".")
    )
    assert test.path.tolist() == on_disk
    assert not real_split[real_split.split != "test"].path.str.startswith("test/").any()
    assert test.label.tolist() == [int(p.startswith("test/PNEUMONIA/")) for p in on_disk]


def test_real_split_puts_the_16_official_val_images_on_the_val_side(real_split):
    official = real_split[real_split.path.str.startswith("val/")]
    assert len(official) == 16
    assert (official.split == "val").all()
    assert official.label.value_counts().to_dict() == {0: 8, 1: 8}


def test_real_split_covers_every_image_once_with_labels_from_the_folder(real_split):
    n_files = sum(
        1
        for s in config.OFFICIAL_SPLITS
        for c in config.CLASS_NAMES
        for name in os.listdir(REAL_DATA_DIR / s / c)
        if not name.startswith(".")
    )
    assert len(real_split) == n_files == 5856
    assert real_split.path.is_unique
    assert (real_split.label == real_split.path.str.contains("/PNEUMONIA/").astype(int)).all()
    assert list(real_split.columns) == ["path", "split", "label", "group", "identity"]
    # Sorted by split (train, val, test), then path.
    order = real_split.split.map({"train": 0, "val": 1, "test": 2})
    assert order.is_monotonic_increasing
    for _, rows in real_split.groupby("split"):
        assert rows.path.is_monotonic_increasing


def test_real_split_is_fixed_by_the_seed(real_split):
    again = data.split_table(seed=42)
    pd.testing.assert_frame_equal(real_split, again)
    other = data.split_table(seed=42 + 1)
    assert set(other.path) == set(real_split.path)
    val_paths = set(real_split.loc[real_split.split == "val", "path"])
    assert set(other.loc[other.split == "val", "path"]) != val_paths
    # The test side never depends on the seed.
    assert (
        other[other.split == "test"].path.tolist()
        == real_split[real_split.split == "test"].path.tolist()
    )


def test_write_split_csv_writes_path_split_label_one_row_per_image(real_split, tmp_path):
    path = data.write_split_csv(real_split, tmp_path / "results")
    assert path == tmp_path / "results" / "split.csv"
    written = pd.read_csv(path)
    assert list(written.columns) == ["path", "split", "label"]
    assert len(written) == len(real_split)
    pd.testing.assert_frame_equal(written, real_split[["path", "split", "label"]])
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["split.csv"]  # no temp files


# ---------------------------------------------------------------------------------------
# person_aware_split on its own
# ---------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(5, 25).flatmap(
        lambda n_groups: st.tuples(
            st.just(n_groups),
            st.lists(
                st.tuples(st.integers(0, n_groups - 1), st.integers(0, 1)),
                min_size=n_groups,
                max_size=80,
            ),
        )
    ),
    st.integers(0, 2**31 - 1),
)
def test_person_aware_split_never_shares_a_group_for_any_seed(groups_and_rows, seed):
    n_groups, rows = groups_and_rows
    # Make sure every group occurs at least once, so there are n_groups distinct persons.
    rows = rows + [(g, g % 2) for g in range(n_groups)]
    groups = [f"person{g}" for g, _ in rows]
    labels = [label for _, label in rows]
    is_val = data.person_aware_split(labels, groups, seed=seed)
    assert is_val.dtype == bool and is_val.shape == (len(rows),)
    assert is_val.any() and not is_val.all()
    val_groups = {g for g, v in zip(groups, is_val) if v}
    train_groups = {g for g, v in zip(groups, is_val) if not v}
    assert val_groups.isdisjoint(train_groups)
    assert np.array_equal(is_val, data.person_aware_split(labels, groups, seed=seed))


def test_person_aware_split_is_cached_on_disk_by_everything_it_depends_on(tmp_path, monkeypatch):
    import sklearn.model_selection as ms

    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", str(tmp_path / "cache"))
    groups = [f"p{i // 2}" for i in range(40)]
    labels = [(i // 2) % 2 for i in range(40)]
    first = data.person_aware_split(labels, groups, seed=1)
    assert len(list((tmp_path / "cache").glob("split-*.npy"))) == 1
    calls = []
    real = ms.StratifiedGroupKFold

    class Counting(real):
        def split(self, *args, **kwargs):
            calls.append(self.random_state)
            return super().split(*args, **kwargs)

    monkeypatch.setattr(ms, "StratifiedGroupKFold", Counting)
    again = data.person_aware_split(labels, groups, seed=1)
    assert again.dtype == bool and np.array_equal(again, first) and calls == []  # read back
    data.person_aware_split(labels, groups, seed=2)  # another seed: computed
    data.person_aware_split(labels[::-1], groups, seed=1)  # other labels: computed
    assert calls == [2, 1]
    monkeypatch.setenv("CHEST_XRAY_CACHE_DIR", "off")
    assert np.array_equal(data.person_aware_split(labels, groups, seed=1), first)
    assert calls == [2, 1, 1]


def test_person_aware_split_rejects_bad_arguments():
    groups = [f"p{i}" for i in range(10)]
    labels = [i % 2 for i in range(10)]
    with pytest.raises(ValueError, match="same length"):
        data.person_aware_split(labels[:-1], groups, seed=42)
    with pytest.raises(ValueError, match="val_fraction"):
        data.person_aware_split(labels, groups, val_fraction=0.0, seed=42)
    with pytest.raises(ValueError, match="val_fraction"):
        data.person_aware_split(labels, groups, val_fraction=0.7, seed=42)
    with pytest.raises(ValueError, match="at least 5 distinct persons"):
        data.person_aware_split([0, 1, 0, 1], ["a", "a", "b", "c"], seed=42)


def test_small_split_keeps_persons_together_and_is_fixed_by_seed(xray_folder):
    table = data.split_table(xray_folder.root, seed=0)
    assert sorted(table.path) == xray_folder.images
    side = table.groupby("group").split.nunique()
    assert (side == 1).all()
    assert table[table.split == "test"].path.tolist() == xray_folder.images_of("test")
    assert set(xray_folder.images_of("val")) <= set(table[table.split == "val"].path)
    pd.testing.assert_frame_equal(table, data.split_table(xray_folder.root, seed=0))
    val_paths = set(table.loc[table.split == "val", "path"])
    others = [data.split_table(xray_folder.root, seed=s) for s in range(1, 4)]
    assert any(set(o.loc[o.split == "val", "path"]) != val_paths for o in others)


def test_persons_on_both_sides_counts_shared_groups(real_split):
    assert (
        data.persons_on_both_sides(["a", "a", "b", "c", "c"], [True, False, False, True, True]) == 1
    )
    assert data.persons_on_both_sides(["a", "b"], [True, False]) == 0
    train_folder = real_split[real_split.path.str.startswith("train/")]
    assert data.persons_on_both_sides(train_folder.group, train_folder.split == "val") == 0


def test_image_level_split_is_seeded_and_sized():
    a = data.image_level_split(50, val_fraction=0.2, seed=1)
    assert a.dtype == bool and a.sum() == 10
    assert np.array_equal(a, data.image_level_split(50, val_fraction=0.2, seed=1))
    assert not np.array_equal(a, data.image_level_split(50, val_fraction=0.2, seed=2))
