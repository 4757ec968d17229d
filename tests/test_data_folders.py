"""Tests of helpers.data.folders: the folder layout, file tables, and what file names say."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from conftest import JUNK_NAMES, REAL_DATA_DIR

from helpers import config, data
from helpers.data import DataError


@pytest.mark.parametrize(
    "name, expected",
    [
        ("person1003_bacteria_2934.jpeg", "person1003"),
        ("person12_virus_45.jpeg", "person12"),
        ("person0012_virus_45.jpeg", "person12"),  # leading zeros: same person
        ("PERSON7_bacteria_1.JPEG", "person7"),
        ("train/PNEUMONIA/person1000_virus_1681.jpeg", "person1000"),  # folders ignored
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("IM-0011-0001-0002.jpeg", "IM-0011"),
        ("im-0011-0002.png", "IM-0011"),
        ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
        ("normal2-im-1427-0002.jpeg", "NORMAL2-IM-1427"),
        ("scan_17.png", "scan_17"),  # anything else: its own group
    ],
)
def test_group_id_examples(name, expected):
    assert data.group_id(name) == expected


def test_images_of_one_study_or_person_share_a_group_and_others_do_not():
    assert data.group_id("IM-0115-0001.jpeg") == data.group_id("IM-0115-0002.jpeg")
    assert data.group_id("IM-0115-0001.jpeg") != data.group_id("NORMAL2-IM-0115-0001.jpeg")
    assert data.group_id("person1_bacteria_1.jpeg") == data.group_id("person1_virus_7.jpeg")
    assert data.group_id("person1_bacteria_1.jpeg") != data.group_id("person11_bacteria_1.jpeg")


@pytest.mark.parametrize(
    "name, kind",
    [
        ("person1_bacteria_1.jpeg", "bacteria"),
        ("person1_virus_7.jpeg", "virus"),
        ("IM-0001-0001.jpeg", ""),
    ],
)
def test_pneumonia_kind(name, kind):
    assert data.pneumonia_kind(name) == kind


def test_default_data_dir_is_the_embedded_copy():
    assert REAL_DATA_DIR == config.REPO_ROOT / "data" / "chest_xray"
    assert data.check_data_dir() == REAL_DATA_DIR.resolve()


def test_list_split_reads_every_flavour_and_skips_junk_silently(mixed_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # silently: no warning either
        table = data.list_split(mixed_folder.root, "train")
    assert table.path.tolist() == mixed_folder.images_of("train")
    assert list(table.columns) == ["path", "label", "group", "identity"]
    assert set(table.identity) == {"file name"}  # no DICOM file here
    assert not any(Path(p).name in JUNK_NAMES for p in table.path)
    assert table.label.tolist() == [int("/PNEUMONIA/" in p) for p in table.path]
    with pytest.raises(ValueError, match="split must be one of"):
        data.list_split(mixed_folder.root, "training")


def _kaggle_archive(make_xrays, tmp_path):
    """The Kaggle archive as unpacked: chest_xray/chest_xray/... beside __MACOSX/ and ._ files."""
    folder = make_xrays(name="archive/chest_xray/chest_xray")
    top = tmp_path / "archive"
    for rel in folder.images[:5]:
        fork = (
            top
            / "__MACOSX"
            / "chest_xray"
            / "chest_xray"
            / Path(rel).parent
            / f"._{Path(rel).name}"
        )
        fork.parent.mkdir(parents=True, exist_ok=True)
        fork.write_bytes(b"\x00\x05\x16\x07 resource fork")
        (folder.root / Path(rel).parent / f"._{Path(rel).name}").write_bytes(b"\x00\x05\x16\x07")
    return top, folder


@pytest.mark.parametrize(
    "level", ["archive", "archive/chest_xray", "archive/chest_xray/chest_xray"]
)
def test_loader_finds_the_data_from_any_level_of_the_kaggle_archive(make_xrays, tmp_path, level):
    top, folder = _kaggle_archive(make_xrays, tmp_path)
    given = tmp_path / level
    assert data.check_data_dir(given) == folder.root.resolve()
    xrays = data.load_chest_xrays(given, image_size=16, seed=0)
    assert xrays.train.data_dir == folder.root.resolve()
    assert (
        sorted(xrays.train.paths + xrays.val.paths + xrays.test.paths) == folder.images
    )  # no ._ files


def test_layout_too_deep_or_absent_is_a_clear_error(make_xrays, tmp_path):
    make_xrays(name="a/b/c/d/chest_xray")
    with pytest.raises(DataError, match=r"split folder .*a[/\\]train is missing.*3 levels down"):
        data.check_data_dir(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.train is missing.*to hold train/, val/, test/"):
        data.check_data_dir(tmp_path / "empty")


def test_find_layout_root_skips_macosx_copy(tmp_path):
    for s in config.OFFICIAL_SPLITS:
        (tmp_path / "chest_xray" / "__MACOSX" / s).mkdir(parents=True)
        (tmp_path / "chest_xray" / "chest_xray" / s).mkdir(parents=True)
    assert data.find_layout_root(tmp_path) == tmp_path / "chest_xray" / "chest_xray"
    with pytest.raises(DataError, match="no folder holding"):
        data.find_layout_root(tmp_path / "chest_xray" / "__MACOSX" / "train")


def test_describe_files_reads_headers(mixed_folder):
    table = data.describe_files(mixed_folder.root)
    assert sorted(table.path) == mixed_folder.images
    row = table.set_index("path").loc["train/NORMAL/IM-0101-0001.jpeg"]
    assert (row.width, row.height, row["mode"], row.format) == (37, 53, "L", "JPEG")
    modes = set(table["mode"])
    assert {"L", "RGB", "RGBA", "P", "I;16", "LA"} <= modes
    assert (table.bytes > 0).all()


def test_duplicate_groups_finds_byte_identical_files(make_xrays):
    folder = make_xrays(test_per_class=2)
    assert data.duplicate_groups(folder.root).empty
    src = folder.root / "train" / "NORMAL" / "IM-0100-0001.jpeg"
    twin = folder.root / "test" / "NORMAL" / "IM-0777-0001.jpeg"
    twin.write_bytes(src.read_bytes())
    dups = data.duplicate_groups(folder.root)
    assert sorted(dups.path) == ["test/NORMAL/IM-0777-0001.jpeg", "train/NORMAL/IM-0100-0001.jpeg"]
    assert dups.sha1.nunique() == 1
    assert set(dups.split) == {"train", "test"}


def test_download_kaggle_fails_clearly_offline(monkeypatch):
    kagglehub = pytest.importorskip("kagglehub")

    def offline(handle, *args, **kwargs):
        assert handle == "paultimothymooney/chest-xray-pneumonia"
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(RuntimeError, match="are you online") as info:
        data.download_kaggle()
    assert "chest-xray-pneumonia" in str(info.value)
    assert "embedded copy" in str(info.value)


def test_download_kaggle_returns_the_folder_holding_the_splits(monkeypatch, tmp_path):
    kagglehub = pytest.importorskip("kagglehub")
    nested = tmp_path / "chest_xray" / "chest_xray"
    for split in ("train", "val", "test"):
        (nested / split).mkdir(parents=True)
    (tmp_path / "chest_xray" / "__MACOSX").mkdir()
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, *a, **k: str(tmp_path))
    assert data.download_kaggle() == nested
